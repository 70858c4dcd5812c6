// Prefill then decode: a prompt processed chunkwise (or in parallel) returns the final
// state; recurrent steps continue from it; together they equal one pass over everything.
import { describe, expect, test } from 'vitest';
import { loadProgram } from '../dsl/program.js';
import { runFunction, type Value } from '../dsl/reference/interpreter.js';
import { compilePlan } from '../compiler/plan.js';
import { makeSchedule } from '../compiler/schedule.js';
import { runPlanCpu } from '../runtime/plan-runner.js';

const fn = loadProgram('models/retention.ret').checked!.fns.get('retention_state')!;
const relRmse = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let n = 0, d = 0;
  for (let i = 0; i < b.length; i++) { n += (a[i]! - b[i]!) ** 2; d += b[i]! ** 2; }
  return Math.sqrt(n / d);
};

function rng(seed: number) {
  return () => { seed = (seed * 16807) % 2147483647; return (seed / 2147483647) * 2 - 1; };
}

/** Positions [from, to) of a [B, H, T, X] tensor. */
function slice(v: Value, from: number, to: number): Value {
  const [B, H, T, X] = v.shape as [number, number, number, number];
  const out = new Float64Array(B * H * (to - from) * X);
  for (let bh = 0; bh < B * H; bh++) out.set(v.data.subarray((bh * T + from) * X, (bh * T + to) * X), bh * (to - from) * X);
  return { shape: [B, H, to - from, X], data: out };
}

describe('prefill then decode', () => {
  const [B, H, T, K, V, P] = [2, 2, 41, 6, 5, 29];
  const r = rng(11);
  const mk = (shape: number[]): Value => ({ shape, data: Float64Array.from({ length: shape.reduce((a, b) => a * b, 1) }, r) });
  const q = mk([B, H, T, K]);
  const k = mk([B, H, T, K]);
  const v = mk([B, H, T, V]);
  const gamma: Value = { shape: [H], data: Float64Array.of(0.9, 1 - 2 ** -20) };
  const s0: Value = { shape: [B, H, K, V], data: new Float64Array(B * H * K * V) };
  const whole = runFunction(fn, new Map([['q', q], ['k', k], ['v', v], ['gamma', gamma], ['s0', s0]]));
  const constants = new Map([['K', K], ['V', V]]);

  test.each(['chunkwise', 'parallel'] as const)('%s prefill of 29 of 41 positions, then recurrent steps one by one', (form) => {
    const prefill = runPlanCpu(compilePlan(fn, makeSchedule(form, 8), { constants }), new Map([
      ['q', slice(q, 0, P)], ['k', slice(k, 0, P)], ['v', slice(v, 0, P)], ['gamma', gamma], ['s0', s0],
    ]));
    let state: Value = { shape: [B, H, K, V], data: Float64Array.from(prefill.get('sT')!.data) };
    const step = compilePlan(fn, makeSchedule('recurrent'), { constants });
    const outs: Float64Array[] = [Float64Array.from(prefill.get('o')!.data)];
    for (let t = P; t < T; t++) {
      const o = runPlanCpu(step, new Map([['q', slice(q, t, t + 1)], ['k', slice(k, t, t + 1)], ['v', slice(v, t, t + 1)], ['gamma', gamma], ['s0', state]]));
      outs.push(Float64Array.from(o.get('o')!.data));
      state = { shape: [B, H, K, V], data: Float64Array.from(o.get('sT')!.data) };
    }
    // Reassemble [B, H, T, V] from the prefill block and the single steps.
    const got = new Float64Array(B * H * T * V);
    for (let bh = 0; bh < B * H; bh++) {
      got.set(outs[0]!.subarray(bh * P * V, (bh + 1) * P * V), bh * T * V);
      for (let t = P; t < T; t++) got.set(outs[t - P + 1]!.subarray(bh * V, (bh + 1) * V), (bh * T + t) * V);
    }
    expect(relRmse(got, whole.get('o')!.data)).toBeLessThan(1e-5);
    expect(relRmse(state.data, whole.get('sT')!.data)).toBeLessThan(1e-5);
  });
});
