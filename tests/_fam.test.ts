import { test } from 'vitest';
import { loadProgram } from '../dsl/program.js';
import { runFunction, type Value } from '../dsl/reference/interpreter.js';
import { compilePlan } from '../compiler/plan.js';
import { makeSchedule } from '../compiler/schedule.js';
import { runPlanCpu } from '../runtime/plan-runner.js';
import { toChecked, lowerFn } from '../compiler/ir.js';
import { gradient } from '../compiler/autodiff.js';
const rel = (a: ArrayLike<number>, b: ArrayLike<number>) => { let n = 0, d = 0; for (let i = 0; i < b.length; i++) { n += (a[i]! - b[i]!) ** 2; d += b[i]! ** 2; } return Math.sqrt(n / Math.max(d, 1e-300)); };
test('fam', () => {
  for (const [file, name] of [['linear_attention', 'linear_attention'], ['gated_retention', 'gated_retention'], ['softmax_attention', 'softmax_attention']]) {
  const fn = loadProgram(`models/${file}.ret`).checked!.fns.get(name)!;
  const [B,H,T,K,V] = [2,2,11,3,5];
  let seed = 3; const r = () => { seed = (seed * 16807) % 2147483647; return seed / 2147483647 * 2 - 1; };
  const mkv = (shape: number[], f = r) => ({ shape, data: Float64Array.from({ length: shape.reduce((a, b) => a * b, 1) }, f) });
  const inputs = new Map<string, Value>([['q', mkv([B,H,T,K])], ['k', mkv([B,H,T,K])], ['v', mkv([B,H,T,V])]]);
  if (name === 'gated_retention') inputs.set('g', mkv([B,H,T], () => -Math.abs(r()) * 0.3));
  const ref = runFunction(fn, inputs);
  const ups = new Map<string, Value>(); for (const o of fn.outputs) ups.set('grad.' + o.name, mkv(ref.get(o.name)!.shape));
  const gref = runFunction(toChecked(gradient(lowerFn(fn))), new Map([...inputs, ...ups]));
  for (const form of ['parallel', 'recurrent', 'chunkwise'] as const) for (const chunk of [4]) {
    try {
    const plan = compilePlan(fn, makeSchedule(form, chunk), { constants: new Map([['K', K], ['V', V]]) });
    const out = runPlanCpu(plan, inputs);
    for (const o of fn.outputs) console.log(name, form, chunk, o.name, rel(out.get(o.name)!.data, ref.get(o.name)!.data), plan.launches.map(l => l.how).join(','));
    const gplan = compilePlan(fn, makeSchedule(form, chunk), { backward: true, constants: new Map([['K', K], ['V', V]]) });
    const gout = runPlanCpu(gplan, new Map([...inputs, ...ups]));
    for (const [k, v] of gref) console.log(name, form, chunk, k, rel(gout.get(k)!.data, v.data), gplan.launches.map(l => l.how[0]).join(''));
    } catch (e) { console.log(name, form, String(e)); }
  }
  }
});
