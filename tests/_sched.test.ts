import { test, expect } from 'vitest';
import { loadProgram } from '../dsl/program.js';
import { runFunction, type Value } from '../dsl/reference/interpreter.js';
import { compilePlan, toGradientIr } from '../compiler/plan.js';
import { makeSchedule } from '../compiler/schedule.js';
import { runPlanCpu } from '../runtime/plan-runner.js';
import { toChecked, fnToString, lowerFn } from '../compiler/ir.js';
import { gradient } from '../compiler/autodiff.js';
import { kernelToString } from '../compiler/kir-print.js';
const rel = (a: ArrayLike<number>, b: ArrayLike<number>) => { let n = 0, d = 0; for (let i = 0; i < b.length; i++) { n += (a[i]! - b[i]!) ** 2; d += b[i]! ** 2; } return Math.sqrt(n / Math.max(d, 1e-300)); };
test('sched', () => {
  const prog = loadProgram('models/retention.ret');
  for (const name of ['retention', 'retention_state']) {
  const fn = prog.checked!.fns.get(name)!;
  const [B,H,T,K,V] = [2,2,13,3,5];
  let seed = 3; const r = () => { seed = (seed * 16807) % 2147483647; return seed / 2147483647 * 2 - 1; };
  const mkv = (shape: number[]) => ({ shape, data: Float64Array.from({ length: shape.reduce((a, b) => a * b, 1) }, r) });
  const inputs = new Map<string, Value>([['q', mkv([B,H,T,K])], ['k', mkv([B,H,T,K])], ['v', mkv([B,H,T,V])], ['gamma', { shape: [H], data: Float64Array.from([0.9, 1 - 2**-20]) }]]);
  if (name === 'retention_state') inputs.set('s0', mkv([B,H,K,V]));
  const ref = runFunction(fn, inputs);
  const ups = new Map<string, Value>(); for (const o of fn.outputs) ups.set('grad.' + o.name, mkv(ref.get(o.name)!.shape));
  const gref = runFunction(toChecked(gradient(lowerFn(fn))), new Map([...inputs, ...ups]));
  const gfac = runFunction(toChecked(toGradientIr(fn)), new Map([...inputs, ...ups]));
  for (const [k, v] of gref) console.log(name, 'factorised grad', k, rel(gfac.get(k)!.data, v.data));
  for (const form of ['parallel', 'recurrent', 'chunkwise'] as const) for (const chunk of [1, 4, 16]) {
    const plan = compilePlan(fn, makeSchedule(form, chunk), { constants: new Map([['K', K], ['V', V]]) });
    if (form === 'chunkwise' && chunk === 4 && name === 'retention') console.log(plan.launches.map((l) => kernelToString(l.kernel)).join('\n'));
    const out = runPlanCpu(plan, inputs);
    for (const o of fn.outputs) console.log(name, form, chunk, o.name, rel(out.get(o.name)!.data, ref.get(o.name)!.data));
    const gplan = compilePlan(fn, makeSchedule(form, chunk), { backward: true, constants: new Map([['K', K], ['V', V]]) });
    const gout = runPlanCpu(gplan, new Map([...inputs, ...ups]));
    for (const [k, v] of gref) console.log(name, form, chunk, k, rel(gout.get(k)!.data, v.data));
  }
  }
});
