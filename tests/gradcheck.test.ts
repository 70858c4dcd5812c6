// Gradients of every family function in models/ against an independent truth: central finite
// differences of the float64 reference interpreter (tests/helpers/fd.ts explains the stencil and
// its accuracy, ~1e-9), at several shapes (B, H, T with T not a multiple of the chunk, K != V).
//
// Three gradients are checked against the same differences:
//   literal     reverse-mode autodiff of the tensor IR, run by the reference interpreter (float64);
//   factorised  the gradient the compiler lowers (toGradientIr: decay gradients in factorised
//               form), run by the reference interpreter (float64);
//   compiled    the backward plans (compilePlan(..., { backward: true })) of every schedule,
//               run in float32 on the CPU kernel-IR executor.
// Each parameter is checked along three random directions (<grad.P, u> against the directional
// difference) and, when small (<= 64 elements) or a decay (gamma, g), coordinate by coordinate.
// Decay gradients are held to a plain relative bound (relative RMSE of the gradient itself, and
// per element) as well as to the natural-scale bound of tests/schedules.test.ts.
//
// Bars. Float64: 1e-7 (per element of a decay gradient 1e-6), over two orders above the
// differences' own error (measured: <= 4.4e-10 directional, 5.4e-8 on the smallest elements of
// grad.g), and far below what any wrong formula gives. Float32 plans: 1e-5, the project's bar
// for float32 schedules (ARCHITECTURE.md section 5), here against an independent truth; the
// plans' own float32 error at these shapes is <= ~1.5e-6 (measured worsts are printed at the
// end), so the bar leaves a margin of ~6x for rounding and none for a wrong formula. Per
// element, float32 grad.gamma[h] is bounded plainly too (1e-5; measured <= ~1.2e-6), but not
// grad.g[u]: an element that is a cancellation (|grad.g[u]| ~ 1e-3 with terms of 1e-1) carries
// float32 error relative to its terms (up to 4e-4 of itself, measured), so grad.g is bounded by
// the plain relative RMSE of the tensor and by its natural scale.
// Every check is shown to have teeth: the same gradients scaled by (1 + 30 bar) must fail it.
import { afterAll, describe, expect, test } from 'vitest';
import { runFunction, type Value } from '../dsl/reference/interpreter.js';
import { toChecked } from '../compiler/ir.js';
import { upstreamName } from '../compiler/autodiff.js';
import { toGradientIr } from '../compiler/plan.js';
import { FORMS, type Form } from '../compiler/schedule.js';
import { literalGradient, loadFn, plan, prng, runPlan, tensor, uniform } from './helpers/harness.js';
import { type Bars, compare, type FdCase, finiteDifferences, floatParams, type GradValues, scaled, Worst } from './helpers/fd.js';

const F64: Bars = { directional: 1e-7, coords: 1e-7, decayPlain: 1e-7, decayElement: 1e-6, decayNatural: 1e-7 };
const F32: Bars = { directional: 1e-5, coords: 1e-5, decayPlain: 1e-5, decayNatural: 1e-5 };
/** grad.gamma[h] sums a whole head (B T^2 terms): each element is held to the plain bound too. */
const F32_GAMMA: Bars = { ...F32, decayElement: 1e-5 };
const TEETH = 30;

interface Family { file: string; name: string; decay?: 'gamma' | 'g'; state?: boolean; forms: readonly Form[] }
const FAMILY: Family[] = [
  { file: 'retention', name: 'retention', decay: 'gamma', forms: FORMS },
  { file: 'retention', name: 'retention_state', decay: 'gamma', state: true, forms: FORMS },
  { file: 'gated_retention', name: 'gated_retention', decay: 'g', forms: FORMS },
  { file: 'linear_attention', name: 'linear_attention', forms: FORMS },
  // Its weight does not factorise: the parallel schedule only.
  { file: 'softmax_attention', name: 'softmax_attention', forms: ['parallel'] },
];

interface Shape { B: number; H: number; T: number; K: number; V: number; chunk: number }
const SHAPES: Shape[] = [
  { B: 1, H: 2, T: 7, K: 3, V: 2, chunk: 4 },
  { B: 2, H: 3, T: 19, K: 2, V: 5, chunk: 8 },
  { B: 1, H: 2, T: 37, K: 4, V: 3, chunk: 16 },
];
/** Degenerate sums: one position (the state terms only) and two. */
const EXTRA: Record<string, Shape[]> = {
  retention_state: [{ B: 2, H: 2, T: 1, K: 2, V: 3, chunk: 2 }],
  gated_retention: [{ B: 2, H: 2, T: 2, K: 3, V: 2, chunk: 1 }],
};

/** Decays per head: a plain one, exactly 1, 1 - 2^-20, 0.5. */
const GAMMAS = [0.8, 1, 1 - 2 ** -20, 0.5];

function inputsOf(f: Family, s: Shape, rand: () => number): Map<string, Value> {
  const { B, H, T, K, V } = s;
  const m = new Map<string, Value>([['q', uniform([B, H, T, K], rand)], ['k', uniform([B, H, T, K], rand)], ['v', uniform([B, H, T, V], rand)]]);
  if (f.decay === 'gamma') m.set('gamma', tensor([H], (h) => GAMMAS[h % GAMMAS.length]!));
  if (f.state) m.set('s0', uniform([B, H, K, V], rand));
  // log gates in [log 0.5, 0], one in five exactly 0 (a gate of 1)
  if (f.decay === 'g') m.set('g', tensor([B, H, T], (i) => (i % 5 === 2 ? 0 : Math.log(0.5 + 0.5 * rand()))));
  return m;
}

/**
 * The natural scale of a decay gradient (as tests/schedules.test.ts defines it): the root sum of
 * squares of the terms it sums, for each element.
 *   gamma[h]: (t-s) gamma^(t-s-1) (q[t].k[s]) (v[s].do[t]) for s < t; with a state also
 *             (t+1) gamma^t q[t] s0 do[t], T gamma^(T-1) <s0, dsT>, (T-1-s) gamma^(T-2-s) k[s] dsT v[s]
 *   g[u]:     exp(G[t] - G[s]) (q[t].k[s]) (v[s].do[t]) for s < u <= t, G = cumsum g
 */
function naturalScale(f: Family, s: Shape, x: ReadonlyMap<string, Value>, ups: ReadonlyMap<string, Value>): Float64Array {
  const { B, H, T, K, V } = s;
  const q = x.get('q')!.data, k = x.get('k')!.data, v = x.get('v')!.data, dO = ups.get('grad.o')!.data;
  const dot = (a: Float64Array, ai: number, b: Float64Array, bi: number, n: number): number => { let r = 0; for (let i = 0; i < n; i++) r += a[ai + i]! * b[bi + i]!; return r; };
  const qk = (bh: number, t: number, u: number): number => dot(q, (bh * T + t) * K, k, (bh * T + u) * K, K);
  const vd = (bh: number, t: number, u: number): number => dot(v, (bh * T + u) * V, dO, (bh * T + t) * V, V);
  if (f.decay === 'g') {
    const g = x.get('g')!.data;
    const out = new Float64Array(B * H * T);
    for (let bh = 0; bh < B * H; bh++) {
      const G = new Float64Array(T);
      for (let t = 0, acc = 0; t < T; t++) G[t] = acc += g[bh * T + t]!;
      for (let t = 1; t < T; t++) {
        for (let u = 0; u < t; u++) {
          const e = (Math.exp(G[t]! - G[u]!) * qk(bh, t, u) * vd(bh, t, u)) ** 2;
          for (let w = u + 1; w <= t; w++) out[bh * T + w]! += e;
        }
      }
    }
    return out.map(Math.sqrt);
  }
  const gam = x.get('gamma')!.data;
  const out = new Float64Array(H);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const bh = b * H + h;
      const y = gam[h]!;
      let e = 0;
      for (let t = 1; t < T; t++) for (let u = 0; u < t; u++) e += ((t - u) * y ** (t - u - 1) * qk(bh, t, u) * vd(bh, t, u)) ** 2;
      if (f.state) {
        const s0 = x.get('s0')!.data, dS = ups.get('grad.sT')!.data;
        for (let t = 0; t < T; t++) {
          let z = 0;
          for (let i = 0; i < K; i++) for (let j = 0; j < V; j++) z += q[(bh * T + t) * K + i]! * s0[(bh * K + i) * V + j]! * dO[(bh * T + t) * V + j]!;
          e += ((t + 1) * y ** t * z) ** 2;
        }
        e += (T * y ** (T - 1) * dot(s0, bh * K * V, dS, bh * K * V, K * V)) ** 2;
        for (let u = 0; u + 1 < T; u++) {
          let z = 0;
          for (let i = 0; i < K; i++) for (let j = 0; j < V; j++) z += k[(bh * T + u) * K + i]! * dS[(bh * K + i) * V + j]! * v[(bh * T + u) * V + j]!;
          e += ((T - 1 - u) * y ** (T - 2 - u) * z) ** 2;
        }
      }
      out[h]! += e;
    }
  }
  return out.map(Math.sqrt);
}

const worst = new Worst();
const evals = { n: 0 };

/** Checks `grads` and, for teeth, the same scaled by (1 + TEETH bar): that must fail for every parameter. */
function checkWithTeeth(label: string, grads: GradValues, fd: ReturnType<typeof finiteDifferences>, bars: Bars, decays: Map<string, Float64Array | undefined>, params: string[], tag: string): string[] {
  const problems = compare(label, grads, fd, bars, decays, worst, tag);
  const bad = compare(label, scaled(grads, TEETH * Math.max(bars.directional, bars.coords, bars.decayPlain)), fd, bars, decays);
  for (const p of params) {
    if (!bad.some((m) => m.includes(`grad.${p}`))) problems.push(`${label}: no teeth: grad.${p} scaled by 1 + ${TEETH} bar still passes`);
  }
  return problems;
}

for (const f of FAMILY) {
  describe(`${f.name}: gradients vs finite differences of the float64 reference`, () => {
    const fn = loadFn(f.file, f.name);
    for (const [si, s] of [...SHAPES, ...(EXTRA[f.name] ?? [])].entries()) {
      const shape = `B=${s.B} H=${s.H} T=${s.T} K=${s.K} V=${s.V}`;
      test(`${shape}: literal, factorised and compiled (${f.forms.join(', ')}; chunk ${s.chunk}) gradients`, () => {
        const rand = prng(1000 * si + f.name.length);
        const inputs = inputsOf(f, s, rand);
        const outs = runFunction(fn, inputs);
        const ups = new Map<string, Value>(fn.outputs.map((o) => [upstreamName(o.name), uniform(outs.get(o.name)!.shape, rand)]));
        const c: FdCase = { label: `${f.name} ${shape}`, fn, inputs, ups };
        const decays = new Map<string, Float64Array | undefined>(f.decay ? [[f.decay, naturalScale(f, s, inputs, ups)]] : []);
        const fd = finiteDifferences(c, { alwaysCoords: f.decay ? [f.decay] : [] }, prng(77 + si));
        evals.n += fd.evals;
        const params = floatParams(fn);
        expect([...fd.dirs.keys()]).toEqual(params);
        // The decay is differenced coordinate by coordinate, and so are the small q, k, v.
        if (f.decay) expect(fd.coords.get(f.decay)?.length).toBe(inputs.get(f.decay)!.data.length);
        if (si === 0) expect([...fd.coords.keys()]).toEqual(expect.arrayContaining(['q', 'k', 'v']));
        const all = new Map([...inputs, ...ups]);
        const problems: string[] = [];
        problems.push(...checkWithTeeth(`${c.label} literal`, runFunction(literalGradient(fn), all), fd, F64, decays, params, `${f.name} literal`));
        problems.push(...checkWithTeeth(`${c.label} factorised`, runFunction(toChecked(toGradientIr(fn)), all), fd, F64, decays, params, `${f.name} factorised`));
        for (const form of f.forms) {
          const p = plan(fn, form, s.chunk, true, { K: s.K, V: s.V });
          problems.push(...checkWithTeeth(`${c.label} ${form} plan (float32)`, runPlan(p, all), fd, f.decay === 'gamma' ? F32_GAMMA : F32, decays, params, `${f.name} ${form}`));
        }
        expect(problems, problems.slice(0, 12).join('\n')).toEqual([]);
      }, 120_000);
    }
  });
}

afterAll(() => {
  console.log(`gradcheck: ${evals.n} reference evaluations for the differences; worst errors:\n  ${worst.lines().join('\n  ')}`);
});
