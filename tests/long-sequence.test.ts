// A long sequence: T = 65536 with gamma = 1 - 2^-20 (the state barely decays: gamma^T = e^-1/16),
// B = H = 1, K = V = 4. The chunkwise and recurrent plans (float32, CPU executor) must stay
// finite and within relative RMSE 1e-4 of a float64 recurrence written here
//   S[t] = gamma S[t-1] + k[t]^T v[t],   o[t] = q[t] S[t],
// and the chunkwise backward plan must give finite gradients; q, k and v gradients are also
// compared with float64 recurrences (dq[t] = S[t] do[t]^T; D[t] = gamma D[t+1] + q[t]^T do[t],
// dk[t] = D[t] v[t]^T, dv[t] = k[t] D[t]; dgamma = sum_t q[t] P[t] do[t]^T with
// P[t] = gamma P[t-1] + S[t-1] = dS[t]/dgamma).
//
// Two more long-sequence checks with the same bar (1e-4 against float64 recurrences):
//   - grad.gamma at gamma = 1 - 2^-5, the decay of RetNet's first head (models/retnet.ret),
//     where T is 2048 times the decay's time constant;
//   - gated_retention forward with gates in [0.5, 1] (log gates g in [log 0.5, 0]), whose
//     cumulative log gate G reaches about -20000 at T = 65536: the kernels build the weights
//     from chunk-local sums of g, never from differences of the large G.
import { describe, expect, test } from 'vitest';
import type { Form } from '../compiler/schedule.js';
import { loadFn, plan, prng, relErr, runPlan, tensor, uniform, type Value } from './helpers/harness.js';

const T = 65536;
const K = 4;
const V = 4;
const GAMMA = 1 - 2 ** -20;
const TOL = 1e-4;
/** Wall-clock limit for one plan run on the CPU executor. */

const rand = prng(65536);
const q = uniform([1, 1, T, K], rand);
const k = uniform([1, 1, T, K], rand);
const v = uniform([1, 1, T, V], rand);
const [qAll, kAll, vAll] = [q, k, v];
const gamma = tensor([1], () => GAMMA);
const dO = uniform([1, 1, T, V], rand);
const inputs = new Map<string, Value>([['q', q], ['k', k], ['v', v], ['gamma', gamma]]);

/** Float64 forward and backward recurrences. */
function recurrence(): { o: Float64Array; dq: Float64Array; dk: Float64Array; dv: Float64Array; dgamma: number } {
  const y = gamma.data[0]!;
  const Q = q.data, Kd = k.data, Vd = v.data, D = dO.data;
  const o = new Float64Array(T * V);
  const dq = new Float64Array(T * K);
  const S = new Float64Array(K * V);
  const P = new Float64Array(K * V);
  let dgamma = 0;
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < K; i++) {
      for (let j = 0; j < V; j++) {
        P[i * V + j] = y * P[i * V + j]! + (t > 0 ? S[i * V + j]! : 0);
        S[i * V + j] = y * S[i * V + j]! + Kd[t * K + i]! * Vd[t * V + j]!;
      }
    }
    for (let i = 0; i < K; i++) {
      for (let j = 0; j < V; j++) {
        o[t * V + j]! += Q[t * K + i]! * S[i * V + j]!;
        dq[t * K + i]! += S[i * V + j]! * D[t * V + j]!;
        dgamma += Q[t * K + i]! * P[i * V + j]! * D[t * V + j]!;
      }
    }
  }
  const dk = new Float64Array(T * K);
  const dv = new Float64Array(T * V);
  const Db = new Float64Array(K * V);
  for (let t = T - 1; t >= 0; t--) {
    for (let i = 0; i < K; i++) for (let j = 0; j < V; j++) Db[i * V + j] = y * Db[i * V + j]! + Q[t * K + i]! * D[t * V + j]!;
    for (let i = 0; i < K; i++) {
      for (let j = 0; j < V; j++) {
        dk[t * K + i]! += Db[i * V + j]! * Vd[t * V + j]!;
        dv[t * V + j]! += Kd[t * K + i]! * Db[i * V + j]!;
      }
    }
  }
  return { o, dq, dk, dv, dgamma };
}

const ref = recurrence();
const countNonFinite = (a: ArrayLike<number>): number => { let n = 0; for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i]!)) n++; return n; };

describe(`T = ${T}, gamma = 1 - 2^-20, K = V = ${K}`, () => {
  for (const form of ['recurrent', 'chunkwise'] as Form[]) {
    test(`${form} forward: finite and within relative RMSE ${TOL} of a float64 recurrence`, () => {
      const p = plan(loadFn('retention', 'retention'), form, 64, false, { K, V });
      const t0 = performance.now();
      const o = runPlan(p, inputs).get('o')!;
      const seconds = (performance.now() - t0) / 1000;
      console.log(`long sequence: ${form} forward ${seconds.toFixed(2)} s, relative RMSE ${relErr(o.data, ref.o).rel.toExponential(2)}`);
      expect(o.shape).toEqual([1, 1, T, V]);
      expect(countNonFinite(o.data)).toBe(0);
      expect(relErr(o.data, ref.o).rel).toBeLessThanOrEqual(TOL);
    }, 180_000);
  }

  test(`chunkwise backward: finite gradients; q, k, v (relative RMSE) and gamma within ${TOL} of float64 recurrences`, () => {
    const p = plan(loadFn('retention', 'retention'), 'chunkwise', 64, true, { K, V });
    const t0 = performance.now();
    const g = runPlan(p, new Map([...inputs, ['grad.o', dO]]));
    const seconds = (performance.now() - t0) / 1000;
    const errs = { q: relErr(g.get('grad.q')!.data, ref.dq), k: relErr(g.get('grad.k')!.data, ref.dk), v: relErr(g.get('grad.v')!.data, ref.dv) };
    const dgamma = g.get('grad.gamma')!.data[0]!;
    console.log(`long sequence: chunkwise backward ${seconds.toFixed(2)} s; relative RMSE q ${errs.q.rel.toExponential(2)}, k ${errs.k.rel.toExponential(2)}, ` +
      `v ${errs.v.rel.toExponential(2)}; grad.gamma ${dgamma} vs float64 ${ref.dgamma} (relative error ${Math.abs(dgamma - ref.dgamma) / Math.abs(ref.dgamma)})`);
    for (const name of ['grad.q', 'grad.k', 'grad.v', 'grad.gamma']) expect(countNonFinite(g.get(name)!.data), name).toBe(0);
    expect(errs.q.rel).toBeLessThanOrEqual(TOL);
    expect(errs.k.rel).toBeLessThanOrEqual(TOL);
    expect(errs.v.rel).toBeLessThanOrEqual(TOL);
    expect(Math.abs(dgamma - ref.dgamma) / Math.abs(ref.dgamma)).toBeLessThanOrEqual(TOL);
  }, 180_000);
});

/** Float64 grad.gamma of retention by the recurrence P[t] = gamma P[t-1] + S[t-1]. */
function dgammaRecurrence(y: number, Q: Float64Array, Kd: Float64Array, Vd: Float64Array, D: Float64Array): number {
  const S = new Float64Array(K * V);
  const P = new Float64Array(K * V);
  let dgamma = 0;
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < K * V; i++) P[i] = y * P[i]! + (t > 0 ? S[i]! : 0);
    for (let i = 0; i < K; i++) for (let j = 0; j < V; j++) S[i * V + j] = y * S[i * V + j]! + Kd[t * K + i]! * Vd[t * V + j]!;
    for (let i = 0; i < K; i++) for (let j = 0; j < V; j++) dgamma += Q[t * K + i]! * P[i * V + j]! * D[t * V + j]!;
  }
  return dgamma;
}

describe(`T = ${T}, gamma = 1 - 2^-5 (RetNet's first head), K = V = ${K}`, () => {
  const y = 1 - 2 ** -5;
  const want = dgammaRecurrence(y, q.data, k.data, v.data, dO.data);
  for (const form of ['recurrent', 'chunkwise'] as Form[]) {
    test(`${form} backward: grad.gamma within relative error ${TOL} of the float64 recurrence`, () => {
      const p = plan(loadFn('retention', 'retention'), form, 64, true, { K, V });
      const t0 = performance.now();
      const g = runPlan(p, new Map([...inputs, ['gamma', tensor([1], () => y)], ['grad.o', dO]]));
      const seconds = (performance.now() - t0) / 1000;
      const got = g.get('grad.gamma')!.data[0]!;
      const rel = Math.abs(got - want) / Math.abs(want);
      console.log(`long sequence: gamma = 1 - 2^-5, ${form} backward ${seconds.toFixed(2)} s; grad.gamma ${got} vs float64 ${want} (relative error ${rel.toExponential(2)})`);
      for (const name of ['grad.q', 'grad.k', 'grad.v', 'grad.gamma']) expect(countNonFinite(g.get(name)!.data), name).toBe(0);
      expect(rel).toBeLessThanOrEqual(TOL);
    }, 180_000);
  }
});

const TG = T;
describe(`gated_retention, T = ${TG}, gates in [0.5, 1], K = V = ${K}`, () => {
  test(`chunkwise forward: finite and within relative RMSE ${TOL} of a float64 recurrence`, () => {
    const T = TG;
    const g = tensor([1, 1, T], () => Math.log(0.5 + 0.5 * rand()));
    const cut = (x: Value, n: number): Value => ({ shape: [1, 1, T, n], data: x.data.slice(0, T * n) });
    const [q, k, v] = [cut(qAll, K), cut(kAll, K), cut(vAll, V)];
    // S[t] = exp(g[t]) S[t-1] + k[t]^T v[t], o[t] = q[t] S[t]
    const want = new Float64Array(T * V);
    const S = new Float64Array(K * V);
    for (let t = 0; t < T; t++) {
      const a = Math.exp(g.data[t]!);
      for (let i = 0; i < K; i++) for (let j = 0; j < V; j++) S[i * V + j] = a * S[i * V + j]! + k.data[t * K + i]! * v.data[t * V + j]!;
      for (let i = 0; i < K; i++) for (let j = 0; j < V; j++) want[t * V + j]! += q.data[t * K + i]! * S[i * V + j]!;
    }
    const p = plan(loadFn('gated_retention', 'gated_retention'), 'chunkwise', 64, false, { K, V });
    const t0 = performance.now();
    const o = runPlan(p, new Map([['q', q], ['k', k], ['v', v], ['g', g]])).get('o')!;
    const seconds = (performance.now() - t0) / 1000;
    const e = relErr(o.data, want);
    console.log(`long sequence: gated chunkwise forward ${seconds.toFixed(2)} s, relative RMSE ${e.rel.toExponential(2)}`);
    expect(e.nonFinite).toBe(0);
    expect(e.rel).toBeLessThanOrEqual(TOL);
  }, 180_000);
});
