// The reference interpreter against numbers worked out by hand and against independent
// float64 implementations written here (the retention recurrence S = gamma S + k^T v, o = q S).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CheckedFn } from '../dsl/checked.js';
import { loadProgram } from '../dsl/program.js';
import { formatDiagnostic } from '../dsl/source.js';
import { makeValue, RunError, runFunction, type Value } from '../dsl/reference/interpreter.js';

const ROOT = path.resolve(fileURLToPath(new URL('..', import.meta.url)));

function loadFns(file: string): Map<string, CheckedFn> {
  const p = loadProgram(file);
  expect(p.diagnostics.map((d) => formatDiagnostic(d))).toEqual([]);
  return p.checked!.fns;
}

let dir = '';
beforeAll(() => { dir = mkdtempSync(path.join(tmpdir(), 'retnetc-ref-')); });
afterAll(() => { if (dir) rmSync(dir, { recursive: true, force: true }); });

/** Checks `source` as a .ret file in a temp dir and returns its functions. */
function fnsOf(name: string, source: string): Map<string, CheckedFn> {
  const file = path.join(dir, name);
  writeFileSync(file, source);
  return loadFns(file);
}

const run = (fn: CheckedFn, inputs: Record<string, Value>) => runFunction(fn, new Map(Object.entries(inputs)));
const val = (shape: number[], data: number[]) => {
  expect(data.length).toBe(shape.reduce((a, b) => a * b, 1));
  return makeValue(shape, data);
};
const arr = (v: Value | undefined) => Array.from(v!.data);

function expectClose(got: ArrayLike<number>, want: ArrayLike<number>, rel = 1e-15, abs = 1e-300): void {
  expect(got.length).toBe(want.length);
  for (let i = 0; i < want.length; i++) {
    const g = got[i]!;
    const w = want[i]!;
    const tol = Math.max(abs, rel * Math.abs(w));
    if (!(Math.abs(g - w) <= tol)) expect.fail(`element ${i}: got ${g}, want ${w} (tolerance ${tol})`);
  }
}

function relRmse(got: ArrayLike<number>, want: ArrayLike<number>): number {
  expect(got.length).toBe(want.length);
  let num = 0;
  let den = 0;
  for (let i = 0; i < want.length; i++) {
    num += (got[i]! - want[i]!) ** 2;
    den += want[i]! ** 2;
  }
  expect(den).toBeGreaterThan(0);
  return Math.sqrt(num / den);
}

// ---- an independent float64 retention ---------------------------------------------------

interface Dims { B: number; H: number; T: number; K: number; V: number }

/** S = gamma S + k_t^T v_t, o_t = q_t S, per (b, h), starting from s0 (zeros if absent). */
function recurrence(d: Dims, q: Float64Array, k: Float64Array, v: Float64Array, gamma: Float64Array, s0?: Float64Array) {
  const { B, H, T, K, V } = d;
  const o = new Float64Array(B * H * T * V);
  const sT = new Float64Array(B * H * K * V);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const S = new Float64Array(K * V);
      const base = (b * H + h) * K * V;
      if (s0) for (let x = 0; x < K * V; x++) S[x] = s0[base + x]!;
      for (let t = 0; t < T; t++) {
        const row = ((b * H + h) * T + t);
        for (let i = 0; i < K; i++) {
          for (let j = 0; j < V; j++) S[i * V + j] = gamma[h]! * S[i * V + j]! + k[row * K + i]! * v[row * V + j]!;
        }
        for (let j = 0; j < V; j++) {
          let acc = 0;
          for (let i = 0; i < K; i++) acc += q[row * K + i]! * S[i * V + j]!;
          o[row * V + j] = acc;
        }
      }
      sT.set(S, base);
    }
  }
  return { o, sT };
}

/** Deterministic values in [-1, 1) from a fast-check seed. */
function randoms(n: number, seed: number): Float64Array {
  let s = (seed >>> 0) || 0x9e3779b9;
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    out[i] = (s / 4294967296) * 2 - 1;
  }
  return out;
}

/** Positions [t0, t1) along T of a [B, H, T, X] tensor. */
function sliceT(x: Float64Array, d: { B: number; H: number; T: number }, X: number, t0: number, t1: number): Float64Array {
  const out = new Float64Array(d.B * d.H * (t1 - t0) * X);
  let p = 0;
  for (let bh = 0; bh < d.B * d.H; bh++) {
    for (let t = t0; t < t1; t++) for (let c = 0; c < X; c++) out[p++] = x[(bh * d.T + t) * X + c]!;
  }
  return out;
}

function concatT(a: Float64Array, b: Float64Array, d: { B: number; H: number }, Ta: number, Tb: number, X: number): Float64Array {
  const out = new Float64Array(a.length + b.length);
  let p = 0;
  for (let bh = 0; bh < d.B * d.H; bh++) {
    out.set(a.subarray(bh * Ta * X, (bh + 1) * Ta * X), p); p += Ta * X;
    out.set(b.subarray(bh * Tb * X, (bh + 1) * Tb * X), p); p += Tb * X;
  }
  return out;
}

// ---- retention --------------------------------------------------------------------------

describe('retention (models/retention.ret)', () => {
  const fns = loadFns(path.join(ROOT, 'models', 'retention.ret'));
  const retention = fns.get('retention')!;
  const retentionState = fns.get('retention_state')!;

  it('has the two functions with the documented signatures', () => {
    expect(retention.params.map((p) => p.name)).toEqual(['q', 'k', 'v', 'gamma']);
    expect(retention.outputs.map((p) => p.name)).toEqual(['o']);
    expect(retentionState.params.map((p) => p.name)).toEqual(['q', 'k', 'v', 'gamma', 's0']);
    expect(retentionState.outputs.map((p) => p.name)).toEqual(['o', 'sT']);
  });

  it('B=H=1, T=3, K=V=1 by hand', () => {
    // gamma = 0.5, q = [1, 2, 3], k = [1, -1, 2], v = [2, 1, -1]; k*v = [2, -1, -2].
    // o[0] = 1 * 2                                  = 2
    // o[1] = 2 * (0.5 * 2 + (-1))                   = 0
    // o[2] = 3 * (0.25 * 2 + 0.5 * (-1) + (-2))     = -6
    const o = run(retention, {
      q: val([1, 1, 3, 1], [1, 2, 3]), k: val([1, 1, 3, 1], [1, -1, 2]), v: val([1, 1, 3, 1], [2, 1, -1]), gamma: val([1], [0.5]),
    }).get('o');
    expect(o!.shape).toEqual([1, 1, 3, 1]);
    expect(arr(o)).toEqual([2, 0, -6]);
  });

  it('B=H=1, T=2, K=V=2 by hand', () => {
    // gamma = 0.5; q = [[1, 0], [1, 1]], k = [[1, 2], [0, 1]], v = [[1, 0], [2, 3]].
    // t=0: q0.k0 = 1                 -> o0 = 1 * v0                 = [1, 0]
    // t=1: q1.k0 = 3 (weight 0.5), q1.k1 = 1 (weight 1)
    //                                -> o1 = 1.5 * [1, 0] + [2, 3]   = [3.5, 3]
    const o = run(retention, {
      q: val([1, 1, 2, 2], [1, 0, 1, 1]), k: val([1, 1, 2, 2], [1, 2, 0, 1]), v: val([1, 1, 2, 2], [1, 0, 2, 3]), gamma: val([1], [0.5]),
    }).get('o');
    expect(o!.shape).toEqual([1, 1, 2, 2]);
    expect(arr(o)).toEqual([1, 0, 3.5, 3]);
  });

  it('two heads use their own gamma; batches are independent (by hand)', () => {
    // B=2, H=2, T=2, K=V=1; q = k = 1 everywhere; v = [1, 1] in every (b, h).
    // o[t=1] = gamma_h + 1: head 0 (gamma 0) -> 1, head 1 (gamma 0.25) -> 1.25.
    const ones = Array(8).fill(1);
    const o = run(retention, { q: val([2, 2, 2, 1], ones), k: val([2, 2, 2, 1], ones), v: val([2, 2, 2, 1], [1, 1, 1, 1, 1, 2, 1, 1]), gamma: val([2], [0, 0.25]) }).get('o');
    // (b=1, h=0) has v = [1, 2]: o = [1, 0 * 1 + 2] = [1, 2].
    expect(arr(o)).toEqual([1, 1, 1, 1.25, 1, 2, 1, 1.25]);
  });

  it('retention_state with s0 by hand (T=2, K=V=1)', () => {
    // gamma = 0.5, q = [1, 2], k = [1, 1], v = [2, 4], s0 = 10.
    // o[0] = q0 k0 v0 + gamma q0 s0                       = 2 + 5      = 7
    // o[1] = q1 (gamma k0 v0 + k1 v1) + gamma^2 q1 s0     = 10 + 5     = 15
    // sT   = gamma^2 s0 + gamma k0 v0 + k1 v1             = 2.5 + 1 + 4 = 7.5
    const out = run(retentionState, {
      q: val([1, 1, 2, 1], [1, 2]), k: val([1, 1, 2, 1], [1, 1]), v: val([1, 1, 2, 1], [2, 4]), gamma: val([1], [0.5]), s0: val([1, 1, 1, 1], [10]),
    });
    expect(arr(out.get('o'))).toEqual([7, 15]);
    expect(arr(out.get('sT'))).toEqual([7.5]);
    expect(out.get('sT')!.shape).toEqual([1, 1, 1, 1]);
  });

  const GAMMAS = [0, 0.5, 0.9, 0.96875, 1 - 2 ** -20, 1];
  const shapes = fc.record({
    B: fc.integer({ min: 1, max: 2 }), H: fc.integer({ min: 1, max: 3 }), T: fc.integer({ min: 1, max: 24 }),
    K: fc.integer({ min: 1, max: 4 }), V: fc.integer({ min: 1, max: 4 }),
    gammas: fc.array(fc.constantFrom(...GAMMAS), { minLength: 3, maxLength: 3 }), seed: fc.integer(),
  });
  const inputsFor = (d: Dims & { gammas: number[]; seed: number }) => {
    const { B, H, T, K, V } = d;
    const q = randoms(B * H * T * K, d.seed);
    const k = randoms(B * H * T * K, d.seed + 1);
    const v = randoms(B * H * T * V, d.seed + 2);
    const s0 = randoms(B * H * K * V, d.seed + 3);
    const gamma = Float64Array.from({ length: H }, (_, h) => d.gammas[h % d.gammas.length]!);
    return { q, k, v, s0, gamma };
  };
  const values = (d: Dims, x: ReturnType<typeof inputsFor>) => ({
    q: makeValue([d.B, d.H, d.T, d.K], x.q), k: makeValue([d.B, d.H, d.T, d.K], x.k), v: makeValue([d.B, d.H, d.T, d.V], x.v), gamma: makeValue([d.H], x.gamma),
  });

  it('matches the float64 recurrence on random shapes, gamma in {0, 0.5, .., 1 - 2^-20, 1}: relative RMSE <= 1e-12', () => {
    fc.assert(fc.property(shapes, (d) => {
      const x = inputsFor(d);
      const o = run(retention, values(d, x)).get('o')!;
      expect(o.shape).toEqual([d.B, d.H, d.T, d.V]);
      const want = recurrence(d, x.q, x.k, x.v, x.gamma);
      expect(relRmse(o.data, want.o)).toBeLessThanOrEqual(1e-12);
    }), { numRuns: 60 });
  });

  it('a long sequence (T=256) with gamma = 1 and 1 - 2^-20 stays within 1e-12', () => {
    const d = { B: 1, H: 2, T: 256, K: 3, V: 2, gammas: [1, 1 - 2 ** -20], seed: 99 };
    const x = inputsFor(d);
    const o = run(retention, values(d, x)).get('o')!;
    expect(relRmse(o.data, recurrence(d, x.q, x.k, x.v, x.gamma).o)).toBeLessThanOrEqual(1e-12);
  });

  it('retention_state: o and sT from a random s0 match the recurrence started from s0', () => {
    fc.assert(fc.property(shapes, (d) => {
      const x = inputsFor(d);
      const out = run(retentionState, { ...values(d, x), s0: makeValue([d.B, d.H, d.K, d.V], x.s0) });
      const want = recurrence(d, x.q, x.k, x.v, x.gamma, x.s0);
      expect(out.get('sT')!.shape).toEqual([d.B, d.H, d.K, d.V]);
      expect(relRmse(out.get('o')!.data, want.o)).toBeLessThanOrEqual(1e-12);
      expect(relRmse(out.get('sT')!.data, want.sT)).toBeLessThanOrEqual(1e-12);
    }), { numRuns: 60 });
  });

  it('retention_state with s0 = 0 equals retention', () => {
    const d = { B: 2, H: 2, T: 7, K: 3, V: 2, gammas: [0.9, 1], seed: 5 };
    const x = inputsFor(d);
    const a = run(retention, values(d, x)).get('o')!;
    const b = run(retentionState, { ...values(d, x), s0: makeValue([2, 2, 3, 2]) }).get('o')!;
    expect(relRmse(b.data, a.data)).toBeLessThanOrEqual(1e-15);
  });

  it('splitting a sequence in two (sT of the first half as s0 of the second) equals the whole', () => {
    fc.assert(fc.property(shapes.filter((d) => d.T >= 2), fc.nat(), (d, cut) => {
      const T1 = 1 + (cut % (d.T - 1));
      const T2 = d.T - T1;
      const x = inputsFor(d);
      const whole = run(retentionState, { ...values(d, x), s0: makeValue([d.B, d.H, d.K, d.V], x.s0) });
      const part = (t0: number, t1: number, s0: Value) => run(retentionState, {
        q: makeValue([d.B, d.H, t1 - t0, d.K], sliceT(x.q, d, d.K, t0, t1)),
        k: makeValue([d.B, d.H, t1 - t0, d.K], sliceT(x.k, d, d.K, t0, t1)),
        v: makeValue([d.B, d.H, t1 - t0, d.V], sliceT(x.v, d, d.V, t0, t1)),
        gamma: makeValue([d.H], x.gamma), s0,
      });
      const first = part(0, T1, makeValue([d.B, d.H, d.K, d.V], x.s0));
      const second = part(T1, d.T, first.get('sT')!);
      const o = concatT(first.get('o')!.data, second.get('o')!.data, d, T1, T2, d.V);
      expect(relRmse(o, whole.get('o')!.data)).toBeLessThanOrEqual(1e-12);
      expect(relRmse(second.get('sT')!.data, whole.get('sT')!.data)).toBeLessThanOrEqual(1e-12);
    }), { numRuns: 60 });
  });

  it('errors: a missing input names it and its type', () => {
    const d = { B: 1, H: 1, T: 3, K: 1, V: 1 };
    const x = values(d, inputsFor({ ...d, gammas: [0.5], seed: 1 }));
    const { gamma: _g, ...noGamma } = x;
    expect(() => run(retention, noGamma)).toThrow(RunError);
    expect(() => run(retention, noGamma)).toThrow("missing input 'gamma' of 'retention' (expected f32[H])");
  });

  it('errors: a wrong shape names both shapes', () => {
    const d = { B: 1, H: 1, T: 3, K: 1, V: 1 };
    const x = values(d, inputsFor({ ...d, gammas: [0.5], seed: 1 }));
    const bad = { ...x, k: makeValue([1, 1, 4, 1]) };
    expect(() => run(retention, bad)).toThrow(RunError);
    expect(() => run(retention, bad)).toThrow("input 'k' of 'retention' must have shape [B, H, T, K] = [1, 1, 3, 1], got [1, 1, 4, 1]");
    const rank = { ...x, gamma: makeValue([1, 1]) };
    expect(() => run(retention, rank)).toThrow("input 'gamma' of 'retention' must have 1 dimension [H], got [1, 1]");
  });

  it('errors: an input that is not a parameter is rejected', () => {
    const d = { B: 1, H: 1, T: 1, K: 1, V: 1 };
    const x = values(d, inputsFor({ ...d, gammas: [0.5], seed: 1 }));
    expect(() => run(retention, { ...x, s0: makeValue([1, 1, 1, 1]) })).toThrow("'retention' has no parameter 's0'");
  });
});

// ---- small functions written for the test ---------------------------------------------------

describe('RMSNorm', () => {
  const SRC = `
fn rmsnorm(x: f32[N, D], w: f32[D], eps: f32 = 1e-6) -> y: f32[N, D] {
  let ms[n] = sum[d] x[n, d]^2 / D
  y[n, d] = x[n, d] / sqrt(ms[n] + eps) * w[d]
}
`;
  let rms: CheckedFn;
  beforeAll(() => { rms = fnsOf('rmsnorm.ret', SRC).get('rmsnorm')!; });
  const x = () => val([2, 2], [1, 7, 2, -2]);
  const w = () => val([2], [1, 0.5]);

  it('by hand with eps = 0', () => {
    // Row 0: mean square (1 + 49) / 2 = 25, rms 5: [1/5, 7/5 * 0.5] = [0.2, 0.7].
    // Row 1: mean square (4 + 4) / 2 = 4,  rms 2: [2/2, -2/2 * 0.5] = [1, -0.5].
    const y = run(rms, { x: x(), w: w(), eps: val([], [0]) }).get('y')!;
    expect(y.shape).toEqual([2, 2]);
    expectClose(y.data, [0.2, 0.7, 1, -0.5], 1e-15);
  });

  it('by hand with the default eps = 1e-6 (the parameter may be omitted)', () => {
    // 1 / sqrt(25.000001) = 0.2 (1 + 4e-8)^(-1/2) = 0.2 - 4e-9 + 1.2e-16 = 0.19999999600000012
    // 1 / sqrt(4.000001)  = 0.5 (1 + 2.5e-7)^(-1/2) = 0.5 - 6.25e-8 + 1.171875e-14 = 0.4999999375000117
    const y = run(rms, { x: x(), w: w() }).get('y')!;
    expectClose(y.data, [0.19999999600000012, 7 * 0.5 * 0.19999999600000012, 2 * 0.4999999375000117, -0.4999999375000117], 1e-14);
  });

  it('a scalar given as a 1-element tensor is accepted', () => {
    const y = run(rms, { x: x(), w: w(), eps: val([1], [0]) }).get('y')!;
    expectClose(y.data, [0.2, 0.7, 1, -0.5], 1e-15);
  });

  it('a scalar given as a 2-element tensor is rejected with both shapes', () => {
    expect(() => run(rms, { x: x(), w: w(), eps: val([2], [0, 0]) })).toThrow("input 'eps' of 'rmsnorm' must have 0 dimensions [], got [2]");
  });

  it('a wrong shape names both shapes', () => {
    expect(() => run(rms, { x: x(), w: val([3], [1, 1, 1]) })).toThrow("input 'w' of 'rmsnorm' must have shape [D] = [2], got [3]");
  });
});

describe('builtins and language features', () => {
  const SRC = `
fn act(x: f32[N]) -> (g: f32[N], e: f32[N], s: f32[N], w: f32[N]) {
  g[n] = gelu(x[n])
  e[n] = erf(x[n])
  s[n] = sigmoid(x[n])
  w[n] = swish(x[n])
}

fn recip(x: f32[N]) -> (y: f32[N], leaky: f32[N]) {
  y[n] = where(x[n] != 0, 1 / x[n], 0.0)
  leaky[n] = where(x[n] > 0, x[n], 0.25 * x[n])
}

fn rowmax(x: f32[B, T]) -> (m: f32[B], prefix: f32[B, T]) {
  m[b] = max[t] x[b, t]
  prefix[b, t] = max[s <= t] x[b, s]
}

fn shift(x: f32[T]) -> (prev: f32[T], next: f32[T]) {
  prev[t] = x[t - 1]
  next[t] = x[t + 1]
}

fn gather(table: f32[V, D], ids: i32[T]) -> y: f32[T, D] {
  y[t, d] = table[ids[t], d]
}

fn scans(x: f32[T]) -> (excl: f32[T], incl: f32[T], suffix: f32[T], after: f32[T]) {
  excl[t] = sum[s < t] x[s]
  incl[t] = sum[s <= t] x[s]
  suffix[t] = sum[s >= t] x[s]
  after[t] = sum[s > t] x[s]
}

fn ints(a: i32[N]) -> (q: i32[N], r: i32[N]) {
  q[n] = a[n] // 3
  r[n] = a[n] % 3
}
`;
  let F: Map<string, CheckedFn>;
  beforeAll(() => { F = fnsOf('builtins.ret', SRC); });

  it('erf at known points (and odd symmetry)', () => {
    const xs = [0, 0.5, 1, 2, 3.5, -0.5, -1, -2, -3.5, 6];
    const want = [0, 0.5204998778130465, 0.8427007929497149, 0.9953222650189527, 0.9999992569016276,
      -0.5204998778130465, -0.8427007929497149, -0.9953222650189527, -0.9999992569016276, 1];
    const e = run(F.get('act')!, { x: val([xs.length], xs) }).get('e')!;
    expectClose(e.data, want, 2e-15);
  });

  it('gelu = x Phi(x), at known points', () => {
    // Phi(1) = 0.8413447460685429, Phi(2) = 0.9772498680518208, Phi(-1) = 0.15865525393145705.
    const xs = [0, 1, 2, -1, -2, 10, -10];
    const want = [0, 0.8413447460685429, 1.9544997361036416, -0.15865525393145705, -0.04550026389635842, 10, -7.619853024160527e-23];
    const g = run(F.get('act')!, { x: val([xs.length], xs) }).get('g')!;
    expectClose(g.data, want, 2e-15, 1e-15); // erf form: the far negative tail is absolute-accurate only
  });

  it('sigmoid and swish, including saturation without NaN', () => {
    const xs = [0, 2, -2, 800, -800, -40];
    // sigmoid(2) = 1 / (1 + e^-2) = 0.8807970779778823; sigmoid(-40) = e^-40 / (1 + e^-40).
    const sWant = [0.5, 0.8807970779778823, 0.11920292202211755, 1, 0, 4.248354255291589e-18];
    const out = run(F.get('act')!, { x: val([xs.length], xs) });
    expectClose(out.get('s')!.data, sWant, 2e-15, 1e-300);
    expectClose(out.get('w')!.data, xs.map((x, i) => x * sWant[i]!), 2e-15, 1e-300);
    for (const v of [...out.get('s')!.data, ...out.get('w')!.data]) expect(Number.isNaN(v)).toBe(false);
  });

  it('where selects per element (the unused branch never leaks Infinity)', () => {
    const out = run(F.get('recip')!, { x: val([4], [2, 0, -4, 0.5]) });
    expect(arr(out.get('y'))).toEqual([0.5, 0, -0.25, 2]);
    expect(arr(out.get('leaky'))).toEqual([2, 0, -1, 0.5]);
  });

  it('max reductions: all negative rows, and a causal running max', () => {
    const out = run(F.get('rowmax')!, { x: val([2, 3], [-5, -1, -3, 4, 9, -9]) });
    expect(arr(out.get('m'))).toEqual([-1, 9]);
    expect(arr(out.get('prefix'))).toEqual([-5, -1, -1, 4, 9, 9]);
  });

  it('reads outside a tensor give 0', () => {
    const out = run(F.get('shift')!, { x: val([3], [1, 2, 3]) });
    expect(arr(out.get('prev'))).toEqual([0, 1, 2]);
    expect(arr(out.get('next'))).toEqual([2, 3, 0]);
  });

  it('gather with an i32 index tensor (out-of-range ids read 0)', () => {
    const table = val([3, 2], [1, 2, 3, 4, 5, 6]);
    const y = run(F.get('gather')!, { table, ids: val([5], [2, 0, 1, 3, -1]) }).get('y')!;
    expect(y.shape).toEqual([5, 2]);
    expect(arr(y)).toEqual([5, 6, 1, 2, 3, 4, 0, 0, 0, 0]);
  });

  it('an i32 input holding a non-integer is rejected', () => {
    expect(() => run(F.get('gather')!, { table: val([1, 1], [1]), ids: val([1], [0.5]) })).toThrow("input 'ids' of 'gather' is i32 but holds the non-integer 0.5");
  });

  it('causal (s < t, s <= t) and anti-causal (s >= t, s > t) range constraints', () => {
    const out = run(F.get('scans')!, { x: val([4], [1, 10, 100, 1000]) });
    expect(arr(out.get('excl'))).toEqual([0, 1, 11, 111]);
    expect(arr(out.get('incl'))).toEqual([1, 11, 111, 1111]);
    expect(arr(out.get('suffix'))).toEqual([1111, 1110, 1100, 1000]);
    expect(arr(out.get('after'))).toEqual([1110, 1100, 1000, 0]);
  });

  it('integer floor division and modulo round toward -infinity', () => {
    const out = run(F.get('ints')!, { a: val([4], [7, -7, 6, -1]) });
    expect(arr(out.get('q'))).toEqual([2, -3, 2, -1]);
    expect(arr(out.get('r'))).toEqual([1, 2, 0, 2]);
  });

  it('a size that appears only squared in a parameter is rejected by the checker, and the fix it suggests works', () => {
    // No input shape determines N from x: f32[N*N] (9 elements could be N = 3 or N = -3):
    // the checker says so at the parameter and suggests a size parameter.
    const file = path.join(dir, 'square.ret');
    writeFileSync(file, 'fn diag(x: f32[N*N]) -> y: f32[N] {\n  y[n] = x[n * N + n]\n}\n');
    const p = loadProgram(file);
    expect(p.diagnostics.map((d) => [d.span.line, d.span.col, d.message])).toEqual([
      [1, 9, "size 'N' appears only non-linearly (as in N*N), so no input shape determines it; declare it as fn diag[N](...)"],
    ]);
    const fixed = path.join(dir, 'square-fixed.ret');
    writeFileSync(fixed, 'fn diag[N](x: f32[N*N]) -> y: f32[N] {\n  y[n] = x[n * N + n]\n}\n');
    const q = loadProgram(fixed);
    expect(q.diagnostics).toEqual([]);
    const y = runFunction(q.checked!.fns.get('diag')!, new Map([['x', val([9], [1, 2, 3, 4, 5, 6, 7, 8, 9])]]), { sizes: new Map([['N', 3]]) }).get('y')!;
    expect(arr(y)).toEqual([1, 5, 9]);
  });
});
