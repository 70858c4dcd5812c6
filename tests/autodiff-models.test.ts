import { test, expect } from 'vitest';
import { loadProgram } from '../dsl/program.js';
import { runFunction, type Value } from '../dsl/reference/interpreter.js';
import { lowerFn, toChecked } from '../compiler/ir.js';
import { gradient } from '../compiler/autodiff.js';
import { toGradientIr } from '../compiler/plan.js';
test('autodiff of the RetNet building blocks (rotation, RMSNorm, linear, MSR) matches finite differences, literal and factorised', () => {
  const prog = loadProgram('models/retnet.ret');
  let seed = 3; const r = () => { seed = (seed * 16807) % 2147483647; return seed / 2147483647 * 2 - 1; };
  const mkv = (shape: number[]) => ({ shape, data: Float64Array.from({ length: shape.reduce((a, b) => a * b, 1) }, r) });
  const cases: [string, Record<string, number[]>, Map<string, number>?][] = [
    ['theta_shift', { x: [1, 2, 5, 4] }], ['rmsnorm', { x: [1, 3, 4], w: [4] }], ['linear', { x: [1, 3, 4], w: [2, 4] }],
    ['msr', { x: [1, 5, 8], wq: [8, 8], wk: [8, 8], wv: [6, 8], wg: [6, 8], wo: [8, 6] }, new Map([['H', 2]])],
  ];
  for (const [name, shapes] of cases) {
    const fn = prog.checked!.fns.get(name)!;
    const inputs = new Map<string, Value>(Object.entries(shapes).map(([k, s]) => [k, mkv(s)]));
    const out0 = runFunction(fn, inputs, { sizes: new Map([['H', 2]]) });
    const ups = new Map<string, Value>(); for (const o of fn.outputs) ups.set('grad.' + o.name, mkv(out0.get(o.name)!.shape));
    for (const g of [gradient(lowerFn(fn)), toGradientIr(fn)]) {
      const grads = runFunction(toChecked(g), new Map([...inputs, ...ups]), { sizes: new Map([['H', 2]]) });
      const loss = (inp: Map<string, Value>) => { const out = runFunction(fn, inp, { sizes: new Map([['H', 2]]) }); let s = 0; for (const [k, u] of ups) { const o = out.get(k.slice(5))!; for (let i = 0; i < u.data.length; i++) s += u.data[i]! * o.data[i]!; } return s; };
      let worst = 0;
      for (const [pn, pv] of inputs) {
        const gr = grads.get('grad.' + pn)!;
        for (let i = 0; i < pv.data.length; i++) {
          const e = 1e-6; const p = new Float64Array(pv.data); p[i] += e; const m = new Float64Array(pv.data); m[i] -= e;
          const fd = (loss(new Map([...inputs, [pn, { shape: pv.shape, data: p }]])) - loss(new Map([...inputs, [pn, { shape: pv.shape, data: m }]]))) / (2 * e);
          worst = Math.max(worst, Math.abs(fd - gr.data[i]!) / Math.max(1, Math.abs(fd)));
        }
      }
      console.log(name, g.name, worst);
      expect(worst).toBeLessThan(1e-6);
    }
  }
});
