// An independent float64 computation of the family functions of models/ (retention,
// retention_state, linear_attention, gated_retention), forward and backward, written here in
// plain TypeScript without the compiler: the recurrent form
//
//   S[-1] = s0 (or 0),   S[t] = a[t] S[t-1] + k[t]^T v[t],   o[t] = q[t] S[t],   sT = S[T-1]
//
// with a[t] = gamma[h] (retention, retention_state), 1 (linear_attention) or exp(g[b, h, t])
// (gated_retention: exp(G[t] - G[s]) is the product of exp(g[u]) for s < u <= t), and its
// gradient by a float64 reverse scan over the state gradient D[t] = dL/dS[t]:
//
//   D[T-1] = q[T-1]^T do[T-1] + dsT,   D[t] = q[t]^T do[t] + a[t+1] D[t+1],
//   dq[t] = S[t] do[t]^T,   dk[t] = D[t] v[t]^T,   dv[t] = k[t] D[t],   ds0 = a[0] D[0],
//   da[t] = <D[t], S[t-1]>,   dgamma[h] = sum_{b, t} da[t],   dg[b, h, t] = a[t] da[t].
//
// Value columns j are independent (S[:, j] and D[:, j] evolve alone), so each column is
// scanned on its own with O(T K) memory; the cost is O(B H T K V). The literal interpreter
// (dsl/reference/interpreter.ts) costs O(B H T^2 K V); tests/fast-reference.test.ts checks the
// two against each other to ~1e-12 at small sizes.
//
// decayScale gives the natural scale of the decay gradients (see its comment) in
// O(B H T^2 (K + V)) from Gram matrices.
import type { Value } from '../../dsl/reference/interpreter.js';

export type FamilyName = 'retention' | 'retention_state' | 'linear_attention' | 'gated_retention';
export const FAST_FAMILIES: readonly FamilyName[] = ['retention', 'retention_state', 'linear_attention', 'gated_retention'];

export function isFastFamily(name: string): name is FamilyName {
  return (FAST_FAMILIES as readonly string[]).includes(name);
}

/** Output names of each function, in declaration order (models/*.ret). */
export const OUTPUTS: Record<FamilyName, readonly string[]> = {
  retention: ['o'],
  retention_state: ['o', 'sT'],
  linear_attention: ['o'],
  gated_retention: ['o'],
};

interface Dims { B: number; H: number; T: number; K: number; V: number }

function need(inputs: ReadonlyMap<string, Value>, name: string, rank: number, fn: string): Value {
  const x = inputs.get(name);
  if (!x) throw new Error(`fast reference of ${fn}: missing input '${name}'`);
  if (x.shape.length !== rank) throw new Error(`fast reference of ${fn}: '${name}' has shape [${x.shape}], expected rank ${rank}`);
  return x;
}

function dimsOf(fn: FamilyName, inputs: ReadonlyMap<string, Value>): Dims {
  const q = need(inputs, 'q', 4, fn), k = need(inputs, 'k', 4, fn), v = need(inputs, 'v', 4, fn);
  const [B, H, T, K] = q.shape as [number, number, number, number];
  const V = v.shape[3]!;
  const same = (a: readonly number[], b: readonly number[]): boolean => a.join() === b.join();
  if (!same(k.shape, q.shape)) throw new Error(`fast reference of ${fn}: k [${k.shape}] vs q [${q.shape}]`);
  if (!same(v.shape, [B, H, T, V])) throw new Error(`fast reference of ${fn}: v [${v.shape}] vs q [${q.shape}]`);
  if (fn === 'retention' || fn === 'retention_state') {
    const g = need(inputs, 'gamma', 1, fn);
    if (g.shape[0] !== H) throw new Error(`fast reference of ${fn}: gamma [${g.shape}] but H = ${H}`);
  }
  if (fn === 'retention_state' && !same(need(inputs, 's0', 4, fn).shape, [B, H, K, V])) throw new Error(`fast reference of ${fn}: s0 must be [${[B, H, K, V]}]`);
  if (fn === 'gated_retention' && !same(need(inputs, 'g', 3, fn).shape, [B, H, T])) throw new Error(`fast reference of ${fn}: g must be [${[B, H, T]}]`);
  return { B, H, T, K, V };
}

/** The per-step decays a[b, h, t] as a [B*H*T] array (float64). */
function decays(fn: FamilyName, inputs: ReadonlyMap<string, Value>, d: Dims): Float64Array {
  const a = new Float64Array(d.B * d.H * d.T);
  if (fn === 'linear_attention') a.fill(1);
  else if (fn === 'gated_retention') {
    const g = inputs.get('g')!.data;
    for (let i = 0; i < a.length; i++) a[i] = Math.exp(g[i]!);
  } else {
    const gamma = inputs.get('gamma')!.data;
    for (let bh = 0; bh < d.B * d.H; bh++) a.fill(gamma[bh % d.H]!, bh * d.T, (bh + 1) * d.T);
  }
  return a;
}

export interface FastResult {
  /** Forward outputs by name (o, and sT for retention_state). */
  outs: Map<string, Value>;
  /** Gradients by name (grad.q, grad.k, grad.v, grad.s0, grad.gamma, grad.g), when upstreams were given. */
  grads: Map<string, Value>;
}

/**
 * Forward, and the backward when `ups` (grad.o, and grad.sT for retention_state) is given, of a
 * family function in float64 by the recurrent form and a reverse scan.
 */
export function fastRun(fn: FamilyName, inputs: ReadonlyMap<string, Value>, ups?: ReadonlyMap<string, Value>): FastResult {
  const d = dimsOf(fn, inputs);
  const { B, H, T, K, V } = d;
  const q = inputs.get('q')!.data, k = inputs.get('k')!.data, v = inputs.get('v')!.data;
  const hasState = fn === 'retention_state';
  const s0 = hasState ? inputs.get('s0')!.data : undefined;
  const a = decays(fn, inputs, d);
  const o = new Float64Array(B * H * T * V);
  const sT = hasState ? new Float64Array(B * H * K * V) : undefined;
  const backward = ups !== undefined;
  let dO: Float64Array | undefined, dST: Float64Array | undefined;
  if (ups) {
    const go = ups.get('grad.o');
    if (!go || go.shape.join() !== [B, H, T, V].join()) throw new Error(`fast reference of ${fn}: grad.o must be [${[B, H, T, V]}]`);
    dO = go.data;
    if (hasState) {
      const gs = ups.get('grad.sT');
      if (!gs || gs.shape.join() !== [B, H, K, V].join()) throw new Error(`fast reference of ${fn}: grad.sT must be [${[B, H, K, V]}]`);
      dST = gs.data;
    }
  }
  const dq = backward ? new Float64Array(B * H * T * K) : undefined;
  const dk = backward ? new Float64Array(B * H * T * K) : undefined;
  const dv = backward ? new Float64Array(B * H * T * V) : undefined;
  const ds0 = backward && hasState ? new Float64Array(B * H * K * V) : undefined;
  /** dL/da[b, h, t]. */
  const da = backward ? new Float64Array(B * H * T) : undefined;

  // States of one column at every step: Sall[(t + 1) K + i] = S[t][i], Sall[i] = S[-1][i].
  const Sall = new Float64Array((T + 1) * K);
  const D = new Float64Array(K);
  for (let bh = 0; bh < B * H; bh++) {
    const qb = bh * T * K, vb = bh * T * V, sb = bh * K * V, ab = bh * T;
    for (let j = 0; j < V; j++) {
      for (let i = 0; i < K; i++) Sall[i] = s0 ? s0[sb + i * V + j]! : 0;
      for (let t = 0; t < T; t++) {
        const at = a[ab + t]!, vt = v[vb + t * V + j]!;
        const prev = t * K, cur = (t + 1) * K, qt = qb + t * K;
        let ot = 0;
        for (let i = 0; i < K; i++) {
          const s = at * Sall[prev + i]! + k[qt + i]! * vt;
          Sall[cur + i] = s;
          ot += q[qt + i]! * s;
        }
        o[vb + t * V + j] = ot;
        if (dq) {
          const dot = dO![vb + t * V + j]!;
          for (let i = 0; i < K; i++) dq[qt + i]! += Sall[cur + i]! * dot;
        }
      }
      if (sT) for (let i = 0; i < K; i++) sT[sb + i * V + j] = Sall[T * K + i]!;
      if (!backward) continue;
      // Reverse scan: D holds a[t+1] D[t+1] on entry to step t (dsT before the last step).
      for (let i = 0; i < K; i++) D[i] = dST ? dST[sb + i * V + j]! : 0;
      for (let t = T - 1; t >= 0; t--) {
        const qt = qb + t * K, dot = dO![vb + t * V + j]!, vt = v[vb + t * V + j]!, prev = t * K, at = a[ab + t]!;
        let dvt = 0, dat = 0;
        for (let i = 0; i < K; i++) {
          const Dt = D[i]! + q[qt + i]! * dot;
          dk![qt + i]! += Dt * vt;
          dvt += k[qt + i]! * Dt;
          dat += Dt * Sall[prev + i]!;
          D[i] = at * Dt;
        }
        dv![vb + t * V + j] = dvt;
        da![ab + t]! += dat;
      }
      if (ds0) for (let i = 0; i < K; i++) ds0[sb + i * V + j] = D[i]!;
    }
  }

  const outs = new Map<string, Value>([['o', { shape: [B, H, T, V], data: o }]]);
  if (sT) outs.set('sT', { shape: [B, H, K, V], data: sT });
  const grads = new Map<string, Value>();
  if (backward) {
    grads.set('grad.q', { shape: [B, H, T, K], data: dq! });
    grads.set('grad.k', { shape: [B, H, T, K], data: dk! });
    grads.set('grad.v', { shape: [B, H, T, V], data: dv! });
    if (ds0) grads.set('grad.s0', { shape: [B, H, K, V], data: ds0 });
    if (fn === 'retention' || fn === 'retention_state') {
      const dgamma = new Float64Array(H);
      for (let bh = 0; bh < B * H; bh++) for (let t = 0; t < T; t++) dgamma[bh % H]! += da![bh * T + t]!;
      grads.set('grad.gamma', { shape: [H], data: dgamma });
    } else if (fn === 'gated_retention') {
      const dg = new Float64Array(B * H * T);
      for (let i = 0; i < dg.length; i++) dg[i] = a[i]! * da![i]!;
      grads.set('grad.g', { shape: [B, H, T], data: dg });
    }
  }
  return { outs, grads };
}

/**
 * The natural size of a decay gradient. grad.gamma[h] (and grad.g[b, h, u]) is a sum of
 * O(B T^2) products with random signs; an unlucky draw makes it cancel to far below its usual
 * size (one seen: 21.7 from terms whose root sum of squares is 1262), and then no float32
 * evaluation, however careful, can reach 1e-5 relative to the result. Float32 summation errors
 * scale with the root sum of squares of the summed terms, so decay gradients are measured
 * relative to max(RMS(reference), RMS(scale)), scale being that root sum of squares per element:
 *   gamma: the terms (t-s) gamma^(t-s-1) (q[t].k[s]) (v[s].do[t]) for s < t, summed over b (each
 *          dot product as the larger of itself and the root sum of squares of its products), and
 *          with a state (t+1) gamma^t q[t] s0 do[t],  T gamma^(T-1) (s0 . dsT),
 *          (T-1-s) gamma^(T-2-s) k[s] dsT v[s]
 *   g[u]:  the terms exp(G[t] - G[s]) (q[t].k[s]) (v[s].do[t]) for s < u <= t (G = cumsum g),
 *          and the diagonal term (q[u].k[u]) (v[u].do[u]): the factorised gradient
 *          dy[u].y[u] - c[u].dc[u] (compiler/decay-grad.ts) sums it into both halves, where it
 *          cancels; at T = 1 it is all there is (grad.g = 0 exactly, computed as 25 - 25 at
 *          K = V = 256, which float32 leaves at ~1e-5); its size is taken as that of the summed
 *          products, |q_i k_i| and |v_j do_j| by root sum of squares (a CI seed once drew
 *          (q.k)(v.do) = 6.5e-3 from larger products, and float32 left 9e-8).
 * Cost O(B H T^2 (K + V)) (rows of the Gram matrices Q K^T and dO V^T), plus O(B H T K V) with
 * a state. Undefined for a function without a decay.
 */
export function decayScale(fn: FamilyName, inputs: ReadonlyMap<string, Value>, ups: ReadonlyMap<string, Value>): Value | undefined {
  if (fn === 'linear_attention') return undefined;
  const { B, H, T, K, V } = dimsOf(fn, inputs);
  const q = inputs.get('q')!.data, k = inputs.get('k')!.data, v = inputs.get('v')!.data, dO = ups.get('grad.o')!.data;
  const qk = new Float64Array(T), vd = new Float64Array(T);
  /**
   * qk[s] = q[t].k[s], vd[s] = v[s].do[t] for s < t, each as the larger of the dot product and the
   * root sum of squares of its products: float32 leaves a dot product that cancels with an error of
   * the size of its products (a CI seed drew v.do = 7e-4 at V = 64, T = 2, and grad.gamma missed
   * 1e-5 by 1.2e-5 on the CPU executor and WebGPU alike).
   */
  const rows = (bh: number, t: number): void => {
    const qt = (bh * T + t) * K, dt = (bh * T + t) * V;
    for (let s = 0; s < t; s++) {
      const ks = (bh * T + s) * K, vs = (bh * T + s) * V;
      let x = 0, x2 = 0;
      for (let i = 0; i < K; i++) { const p = q[qt + i]! * k[ks + i]!; x += p; x2 += p * p; }
      let y = 0, y2 = 0;
      for (let j = 0; j < V; j++) { const p = v[vs + j]! * dO[dt + j]!; y += p; y2 += p * p; }
      qk[s] = Math.sqrt(Math.max(x * x, x2));
      vd[s] = Math.sqrt(Math.max(y * y, y2));
    }
  };
  if (fn === 'gated_retention') {
    const g = inputs.get('g')!.data;
    const out = new Float64Array(B * H * T);
    const G = new Float64Array(T);
    const diff = new Float64Array(T + 1);
    for (let bh = 0; bh < B * H; bh++) {
      for (let t = 0, acc = 0; t < T; t++) G[t] = acc += g[bh * T + t]!;
      diff.fill(0);
      for (let t = 1; t < T; t++) {
        rows(bh, t);
        for (let s = 0; s < t; s++) {
          const e = (Math.exp(G[t]! - G[s]!) * qk[s]! * vd[s]!) ** 2;
          diff[s + 1]! += e;
          diff[t + 1]! -= e;
        }
      }
      for (let u = 0; u < T; u++) {
        // The diagonal term cancels between the two halves, each a float32 sum over its own
        // products: its size is that of the summed products (root sum of squares of q_i k_i and
        // of v_j do_j), which is larger than (q.k)(v.do) when those dot products cancel.
        const qu = (bh * T + u) * K, vu = (bh * T + u) * V;
        let x = 0, x2 = 0;
        for (let i = 0; i < K; i++) { const p = q[qu + i]! * k[qu + i]!; x += p; x2 += p * p; }
        let y = 0, y2 = 0;
        for (let j = 0; j < V; j++) { const p = v[vu + j]! * dO[vu + j]!; y += p; y2 += p * p; }
        const d = Math.max(x * x, x2) * Math.max(y * y, y2);
        diff[u]! += d;
        diff[u + 1]! -= d;
      }
      for (let u = 0, acc = 0; u < T; u++) out[bh * T + u] = Math.sqrt(Math.max(0, (acc += diff[u]!)));
    }
    return { shape: [B, H, T], data: out };
  }
  const gam = inputs.get('gamma')!.data;
  const out = new Float64Array(H);
  // (n) gamma^(n-1) for n = 0..T, in float64.
  const w = new Float64Array(T + 1);
  for (let h = 0; h < H; h++) {
    const y = gam[h]!;
    for (let n = 0; n <= T; n++) w[n] = n === 0 ? 0 : n * y ** (n - 1);
    for (let b = 0; b < B; b++) {
      const bh = b * H + h;
      let e = 0;
      for (let t = 1; t < T; t++) {
        rows(bh, t);
        for (let s = 0; s < t; s++) e += (w[t - s]! * qk[s]! * vd[s]!) ** 2;
      }
      if (fn === 'retention_state') {
        const s0 = inputs.get('s0')!.data, dS = ups.get('grad.sT')!.data;
        const sb = bh * K * V;
        const row = new Float64Array(V);
        for (let t = 0; t < T; t++) {
          // q[t] s0 do[t]^T
          row.fill(0);
          const qt = (bh * T + t) * K, dt = (bh * T + t) * V;
          for (let i = 0; i < K; i++) { const qi = q[qt + i]!; for (let j = 0; j < V; j++) row[j]! += qi * s0[sb + i * V + j]!; }
          let x = 0;
          for (let j = 0; j < V; j++) x += row[j]! * dO[dt + j]!;
          e += (w[t + 1]! * x) ** 2;
        }
        let x = 0;
        for (let i = 0; i < K * V; i++) x += s0[sb + i]! * dS[sb + i]!;
        e += (w[T]! * x) ** 2;
        for (let s = 0; s + 1 < T; s++) {
          // k[s] dsT v[s]^T
          row.fill(0);
          const ks = (bh * T + s) * K, vs = (bh * T + s) * V;
          for (let i = 0; i < K; i++) { const ki = k[ks + i]!; for (let j = 0; j < V; j++) row[j]! += ki * dS[sb + i * V + j]!; }
          let z = 0;
          for (let j = 0; j < V; j++) z += row[j]! * v[vs + j]!;
          e += (w[T - 1 - s]! * z) ** 2;
        }
      }
      out[h]! += e;
    }
  }
  return { shape: [H], data: out.map(Math.sqrt) };
}

/**
 * The natural size of the outputs and of the q, k, v gradients: each is a sum over positions of
 * products whose inner factor is itself a dot product (q[t].k[s] over K, v[s].do[t] over V)
 * that can cancel to far below its terms (a CI seed drew, at T = 1, V = 256, a v.do whose
 * terms' root sum of squares was ~10x the result, and float32 on lavapipe left grad.q 1.1e-5 off
 * relative to the result). Float32 errors scale with the root sum of squares of the summed
 * products, so these tensors are measured against max(RMS ref, RMS scale), scale per element:
 *   o[t, j]:     D(t, s) |q[t] * k[s]| v[s, j]       over s <= t
 *   grad.q[t, i]: D(t, s) k[s, i] |v[s] * do[t]|     over s <= t
 *   grad.k[s, i]: D(t, s) q[t, i] |v[s] * do[t]|     over t >= s
 *   grad.v[s, j]: D(t, s) |q[t] * k[s]| do[t, j]     over t >= s
 * with |a * b| the root sum of squares of the elementwise products and D(t, s) the product of
 * the step decays a[s+1..t]. A state's terms (retention_state's s0, dsT) are left out: the scale
 * is then smaller than the errors' true scale, so the bar is never looser than float32 explains.
 * Cost O(B H T^2 (K + V)).
 */
export function productScales(fn: FamilyName, inputs: ReadonlyMap<string, Value>, ups: ReadonlyMap<string, Value>): Map<string, Value> {
  const d = dimsOf(fn, inputs);
  const { B, H, T, K, V } = d;
  const q = inputs.get('q')!.data, k = inputs.get('k')!.data, v = inputs.get('v')!.data, dO = ups.get('grad.o')!.data;
  const a = decays(fn, inputs, d);
  const so = new Float64Array(B * H * T * V), sq = new Float64Array(B * H * T * K), sk = new Float64Array(B * H * T * K), sv = new Float64Array(B * H * T * V);
  for (let bh = 0; bh < B * H; bh++) {
    const kb = bh * T * K, vb = bh * T * V;
    for (let t = 0; t < T; t++) {
      let D2 = 1;
      for (let s = t; s >= 0; s--) {
        if (s < t) { const x = a[bh * T + s + 1]!; D2 *= x * x; }
        if (D2 === 0) break;
        let qk2 = 0, vd2 = 0;
        for (let i = 0; i < K; i++) { const p = q[kb + t * K + i]! * k[kb + s * K + i]!; qk2 += p * p; }
        for (let j = 0; j < V; j++) { const p = v[vb + s * V + j]! * dO[vb + t * V + j]!; vd2 += p * p; }
        for (let j = 0; j < V; j++) {
          const vj = v[vb + s * V + j]!, dj = dO[vb + t * V + j]!;
          so[vb + t * V + j]! += D2 * qk2 * vj * vj;
          sv[vb + s * V + j]! += D2 * qk2 * dj * dj;
        }
        for (let i = 0; i < K; i++) {
          const ki = k[kb + s * K + i]!, qi = q[kb + t * K + i]!;
          sq[kb + t * K + i]! += D2 * vd2 * ki * ki;
          sk[kb + s * K + i]! += D2 * vd2 * qi * qi;
        }
      }
    }
  }
  const root = (x: Float64Array): Float64Array => x.map(Math.sqrt);
  return new Map<string, Value>([
    ['o', { shape: [B, H, T, V], data: root(so) }],
    ['grad.q', { shape: [B, H, T, K], data: root(sq) }],
    ['grad.k', { shape: [B, H, T, K], data: root(sk) }],
    ['grad.v', { shape: [B, H, T, V], data: root(sv) }],
  ]);
}

/** RMS of a tensor's elements (0 for an empty one). */
export function rmsOf(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i]! * x[i]!;
  return Math.sqrt(s / Math.max(x.length, 1));
}
