// The fast float64 reference (tests/helpers/fast-reference.ts: recurrent form and reverse scan,
// O(B H T K V), no compiler) agrees with the literal float64 interpreter and the literal float64
// gradient (dsl/reference/interpreter.ts, O(B H T^2 K V)) to relative RMSE <= 1e-12 on every
// output and every gradient (decay gradients relative to max(RMS ref, their natural scale): they
// are sums that cancel, in float64 too; e.g. 4e-12 plain at T = 300, gamma = 0.5), at small shapes of every family function, so that the schedule
// property tests can use it at the real head sizes. Its decay-gradient scale (O(B H T^2 (K+V)))
// agrees with the direct O(B H T^2 K V) sum of squared terms written out here.
import { describe, expect, test } from 'vitest';
import { fastRun, decayScale, rmsOf, type FamilyName } from './helpers/fast-reference.js';
import { loadFn, prng, reference, relErr, tensor, uniform, type Value } from './helpers/harness.js';

const TOL = 1e-12;
const GAMMA_MAX = 1 - 2 ** -20;

interface Shape { B: number; H: number; T: number; K: number; V: number; gammas: number[]; gate: 'uniform' | 'zeros' | 'mixed' | 'near1' }
const SHAPES: Shape[] = [
  { B: 1, H: 1, T: 1, K: 1, V: 1, gammas: [0.9], gate: 'uniform' },
  { B: 2, H: 3, T: 17, K: 5, V: 7, gammas: [0.5, 1, GAMMA_MAX], gate: 'mixed' },
  { B: 1, H: 2, T: 40, K: 8, V: 3, gammas: [0.97, 0.75], gate: 'zeros' },
  { B: 1, H: 1, T: 64, K: 16, V: 13, gammas: [1 - 2 ** -5], gate: 'near1' },
  { B: 3, H: 1, T: 29, K: 2, V: 16, gammas: [0.6], gate: 'uniform' },
  { B: 1, H: 2, T: 300, K: 3, V: 2, gammas: [0.5, GAMMA_MAX], gate: 'uniform' },
];

const FAMILIES: { file: string; name: FamilyName }[] = [
  { file: 'retention', name: 'retention' },
  { file: 'retention', name: 'retention_state' },
  { file: 'linear_attention', name: 'linear_attention' },
  { file: 'gated_retention', name: 'gated_retention' },
];

function inputsOf(name: FamilyName, c: Shape, rand: () => number): Map<string, Value> {
  const { B, H, T, K, V } = c;
  const m = new Map<string, Value>([['q', uniform([B, H, T, K], rand)], ['k', uniform([B, H, T, K], rand)], ['v', uniform([B, H, T, V], rand)]]);
  if (name === 'retention' || name === 'retention_state') m.set('gamma', tensor([H], (i) => c.gammas[i]!));
  if (name === 'retention_state') m.set('s0', uniform([B, H, K, V], rand));
  if (name === 'gated_retention') {
    const gate = (): number => {
      switch (c.gate) {
        case 'zeros': return 0;
        case 'near1': return Math.log1p(-rand() * 2 ** -20);
        case 'mixed': { const u = rand(); return u < 0.3 ? 0 : u < 0.4 ? Math.log(0.5) : Math.log(0.5 + 0.5 * rand()); }
        default: return Math.log(0.5 + 0.5 * rand());
      }
    };
    m.set('g', tensor([B, H, T], gate));
  }
  return m;
}

/** The decay-gradient scale by its definition: every term (t, s) written out, O(B H T^2 K V). */
function directScale(name: FamilyName, c: Shape, inputs: ReadonlyMap<string, Value>, ups: ReadonlyMap<string, Value>): Float64Array {
  const { B, H, T, K, V } = c;
  const q = inputs.get('q')!.data, k = inputs.get('k')!.data, v = inputs.get('v')!.data, dO = ups.get('grad.o')!.data;
  // |q[t].k[s]| |v[s].do[t]| for every (bh, t, s), each dot product raised to the root sum of
  // squares of its products where that is larger (a dot product that cancels keeps an f32 error of
  // the size of its products).
  const terms = new Float64Array(B * H * T * T);
  const sized = (xs: number[]): number => Math.sqrt(Math.max(xs.reduce((a, b) => a + b, 0) ** 2, xs.reduce((a, b) => a + b * b, 0)));
  for (let bh = 0; bh < B * H; bh++) {
    for (let t = 0; t < T; t++) {
      for (let s = 0; s <= t; s++) {
        const qk = Array.from({ length: K }, (_, i) => q[(bh * T + t) * K + i]! * k[(bh * T + s) * K + i]!);
        const vd = Array.from({ length: V }, (_, j) => v[(bh * T + s) * V + j]! * dO[(bh * T + t) * V + j]!);
        terms[(bh * T + t) * T + s] = sized(qk) * sized(vd);
      }
    }
  }
  const term = (bh: number, t: number, s: number): number => terms[(bh * T + t) * T + s]!;
  if (name === 'gated_retention') {
    const g = inputs.get('g')!.data;
    const out = new Float64Array(B * H * T);
    for (let bh = 0; bh < B * H; bh++) {
      for (let u = 0; u < T; u++) {
        let e = 0;
        for (let s = 0; s < u; s++) {
          // log of the product of the gates s+1 .. t, for t = u .. T-1
          let G = 0;
          for (let w = s + 1; w < u; w++) G += g[bh * T + w]!;
          for (let t = u; t < T; t++) {
            G += g[bh * T + t]!;
            e += (Math.exp(G) * term(bh, t, s)) ** 2;
          }
        }
        // The diagonal term, which the factorised gradient sums into both of its halves: sized by
        // the products it sums (root sum of squares of q_i k_i and of v_j do_j) when they exceed it.
        let x = 0, x2 = 0, y = 0, y2 = 0;
        for (let i = 0; i < K; i++) { const p = q[(bh * T + u) * K + i]! * k[(bh * T + u) * K + i]!; x += p; x2 += p * p; }
        for (let j = 0; j < V; j++) { const p = v[(bh * T + u) * V + j]! * dO[(bh * T + u) * V + j]!; y += p; y2 += p * p; }
        e += Math.max(x * x, x2) * Math.max(y * y, y2);
        out[bh * T + u] = Math.sqrt(e);
      }
    }
    return out;
  }
  const gam = inputs.get('gamma')!.data;
  const out = new Float64Array(H);
  for (let h = 0; h < H; h++) {
    const y = gam[h]!;
    let e = 0;
    for (let b = 0; b < B; b++) {
      const bh = b * H + h;
      for (let t = 0; t < T; t++) for (let s = 0; s < t; s++) e += ((t - s) * y ** (t - s - 1) * term(bh, t, s)) ** 2;
      if (name === 'retention_state') {
        const s0 = inputs.get('s0')!.data, dS = ups.get('grad.sT')!.data;
        const st = (i: number, j: number): number => (bh * K + i) * V + j;
        for (let t = 0; t < T; t++) {
          let x = 0;
          for (let i = 0; i < K; i++) for (let j = 0; j < V; j++) x += q[(bh * T + t) * K + i]! * s0[st(i, j)]! * dO[(bh * T + t) * V + j]!;
          e += ((t + 1) * y ** t * x) ** 2;
        }
        let x = 0;
        for (let i = 0; i < K; i++) for (let j = 0; j < V; j++) x += s0[st(i, j)]! * dS[st(i, j)]!;
        e += (T * y ** (T - 1) * x) ** 2;
        for (let s = 0; s < T - 1; s++) {
          let z = 0;
          for (let i = 0; i < K; i++) for (let j = 0; j < V; j++) z += k[(bh * T + s) * K + i]! * dS[st(i, j)]! * v[(bh * T + s) * V + j]!;
          e += ((T - 1 - s) * y ** (T - 2 - s) * z) ** 2;
        }
      }
    }
    out[h] = Math.sqrt(e);
  }
  return out;
}

const worst = new Map<string, number>();

for (const f of FAMILIES) {
  describe(`${f.name}: the fast float64 reference vs the literal interpreter`, () => {
    test.each(SHAPES)(`B=$B H=$H T=$T K=$K V=$V: every output and gradient to relative RMSE <= ${TOL}`, (c) => {
      const fn = loadFn(f.file, f.name);
      const rand = prng(c.T * 1009 + c.K * 31 + c.V);
      const inputs = inputsOf(f.name, c, rand);
      const lit = reference(fn, inputs, rand);
      const fast = fastRun(f.name, inputs, lit.ups);
      const problems: string[] = [];
      // Decay gradients are sums that cancel (in float64 too): measured, as in the schedule
      // tests, against max(RMS ref, RMS of their natural scale).
      const scale = decayScale(f.name, inputs, lit.ups);
      const cmp = (name: string, got: Value | undefined, want: Value): void => {
        if (!got) { problems.push(`${name}: missing from the fast reference`); return; }
        expect(got.shape, name).toEqual(want.shape);
        const e = relErr(got.data, want.data);
        const decay = name === 'grad.gamma' || name === 'grad.g';
        const denom = decay ? Math.max(e.rmsRef, rmsOf(scale!.data)) : e.rmsRef;
        const rel = denom > 0 ? e.rmsDiff / denom : e.rmsDiff; // an all-zero reference: the RMS itself
        worst.set(`${f.name} ${name}`, Math.max(worst.get(`${f.name} ${name}`) ?? 0, rel));
        if (decay) worst.set(`${f.name} ${name} (plain)`, Math.max(worst.get(`${f.name} ${name} (plain)`) ?? 0, e.rel));
        if (!(rel <= TOL) || e.nonFinite) problems.push(`${name}: relative RMSE ${rel.toExponential(3)} (RMS ref ${e.rmsRef.toExponential(3)}, ${e.nonFinite} non-finite)`);
      };
      for (const [name, want] of lit.outs) cmp(name, fast.outs.get(name), want);
      for (const [name, want] of lit.grads) cmp(name, fast.grads.get(name), want);
      // Nothing extra: the fast reference gives exactly the literal function's outputs and gradients.
      expect([...fast.outs.keys()].sort()).toEqual([...lit.outs.keys()].sort());
      expect([...fast.grads.keys()].sort()).toEqual([...lit.grads.keys()].sort());
      // The comparison means something: the reference outputs are not all zero.
      for (const [name, want] of [...lit.outs, ...lit.grads]) {
        // At T = 1 a decay multiplies only the initial state, zero without one.
        if ((name === 'grad.g' || name === 'grad.gamma') && c.T === 1 && f.name !== 'retention_state') continue;
        expect(relErr(want.data, new Float64Array(want.data.length)).rmsDiff, `${name} is identically zero`).toBeGreaterThan(0);
      }
      expect(problems, `${f.name} B=${c.B} H=${c.H} T=${c.T} K=${c.K} V=${c.V}`).toEqual([]);

      if (f.name === 'linear_attention') expect(scale).toBeUndefined();
      else {
        const want = directScale(f.name, c, inputs, lit.ups);
        const e = relErr(scale!.data, want);
        worst.set(`${f.name} decay scale`, Math.max(worst.get(`${f.name} decay scale`) ?? 0, e.rel));
        expect(e.rel, `${f.name} decay scale`).toBeLessThanOrEqual(TOL);
      }
    });
  });
}

test('the fast reference refuses inputs of the wrong shape in one line', () => {
  const rand = prng(7);
  const inputs = inputsOf('retention_state', SHAPES[1]!, rand);
  inputs.set('s0', uniform([2, 3, 5, 6], rand));
  expect(() => fastRun('retention_state', inputs)).toThrow(/^fast reference of retention_state: s0 must be \[2,3,5,7\]$/);
  inputs.delete('gamma');
  expect(() => fastRun('retention', inputs)).toThrow(/missing input 'gamma'/);
});

test('report', () => {
  console.log(`[fast-reference] worst relative RMSE vs the literal interpreter:\n  ${[...worst].map(([k, v]) => `${k}: ${v.toExponential(2)}`).join('\n  ')}`);
  expect(worst.size).toBeGreaterThan(0);
});
