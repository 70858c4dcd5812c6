// The literal float64 gradient (reverse-mode autodiff of the tensor IR, run by the reference
// interpreter) against central finite differences of the reference itself, element by element,
// for every family function and for the RetNet building blocks of models/retnet.ret. The
// factorised gradient the compiler actually lowers (toGradientIr) is checked the same way.
//
// The loss is L = sum over outputs <u_OUT, OUT> with random upstream gradients u. Its partial
// derivatives are estimated with the fourth-order central difference
//   (8 (L(x + h) - L(x - h)) - (L(x + 2h) - L(x - 2h))) / (12 h),   h = 1e-3,
// which is exact for polynomials of degree <= 4 (these functions are multilinear in q, k, v
// and polynomials of degree <= T - 1 in gamma) and leaves ~1e-11 of truncation and rounding
// error otherwise (msr, with its group norm, needs h = 1e-5: at 1e-3 the truncation error is
// ~1e-5 relative). Accepted: |autodiff - fd| <= 1e-6 |fd| + 1e-9 max(1, max |fd| over the tensor).
import { describe, expect, test } from 'vitest';
import type { CheckedFn } from '../dsl/checked.js';
import { runFunction, type RunOptions } from '../dsl/reference/interpreter.js';
import { toChecked } from '../compiler/ir.js';
import { gradName, upstreamName } from '../compiler/autodiff.js';
import { toGradientIr } from '../compiler/plan.js';
import { literalGradient, loadFn, prng, tensor, uniform, type Value } from './helpers/harness.js';

const REL = 1e-6;
const ABS = 1e-9;

interface Problem { param: string; index: number; ad: number; fd: number }

/** Fourth-order central differences of L = sum <u, out> with respect to every element of `param`. */
function finiteDifferences(fn: CheckedFn, inputs: ReadonlyMap<string, Value>, ups: ReadonlyMap<string, Value>, param: string, h: number, opts: RunOptions): Float64Array {
  const loss = (x: ReadonlyMap<string, Value>): number => {
    const outs = runFunction(fn, x, opts);
    let L = 0;
    for (const o of fn.outputs) {
      const y = outs.get(o.name)!.data;
      const u = ups.get(upstreamName(o.name))!.data;
      for (let i = 0; i < y.length; i++) L += u[i]! * y[i]!;
    }
    return L;
  };
  const base = inputs.get(param)!;
  const out = new Float64Array(base.data.length);
  for (let i = 0; i < base.data.length; i++) {
    const at = (d: number): number => {
      const data = Float64Array.from(base.data);
      data[i] = data[i]! + d;
      return loss(new Map([...inputs, [param, { shape: base.shape, data }]]));
    };
    out[i] = (8 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12 * h);
  }
  return out;
}

/** Checks the gradient function `g` (parameters: fn's plus grad.OUT) against finite differences. */
function gradcheck(fn: CheckedFn, g: CheckedFn, inputs: Map<string, Value>, rand: () => number, steps: Record<string, number> = {}, opts: RunOptions = {}, h = 1e-3): { problems: Problem[]; checked: number; worst: number } {
  const outs = runFunction(fn, inputs, opts);
  const ups = new Map<string, Value>();
  for (const o of fn.outputs) ups.set(upstreamName(o.name), uniform(outs.get(o.name)!.shape, rand));
  const grads = runFunction(g, new Map([...inputs, ...ups]), opts);
  const problems: Problem[] = [];
  let checked = 0;
  let worst = 0;
  for (const p of fn.params) {
    if (p.dtype === 'i32' || p.dtype === 'i64') continue;
    const ad = grads.get(gradName(p.name));
    expect(ad, `gradient of '${p.name}'`).toBeDefined();
    const fd = finiteDifferences(fn, inputs, ups, p.name, steps[p.name] ?? h, opts);
    let scale = 1;
    for (const x of fd) scale = Math.max(scale, Math.abs(x));
    for (let i = 0; i < fd.length; i++) {
      const a = ad!.data[i]!;
      const f = fd[i]!;
      const err = Math.abs(a - f);
      worst = Math.max(worst, err / (Math.abs(f) + ABS * scale));
      checked++;
      if (!(err <= REL * Math.abs(f) + ABS * scale)) problems.push({ param: p.name, index: i, ad: a, fd: f });
    }
  }
  return { problems, checked, worst };
}

const show = (ps: Problem[]): string => ps.slice(0, 10).map((p) => `grad.${p.param}[${p.index}]: autodiff ${p.ad}, finite differences ${p.fd}`).join('\n');

const B = 2, H = 3, T = 6, K = 3, V = 2;
/** Decays: a plain one, exactly 1, and 1 - 2^-20. */
const GAMMAS = [0.8, 1, 1 - 2 ** -20];

function familyInputs(name: string, rand: () => number): Map<string, Value> {
  const m = new Map<string, Value>([['q', uniform([B, H, T, K], rand)], ['k', uniform([B, H, T, K], rand)], ['v', uniform([B, H, T, V], rand)]]);
  if (name === 'retention' || name === 'retention_state') m.set('gamma', tensor([H], (i) => GAMMAS[i]!));
  if (name === 'retention_state') m.set('s0', uniform([B, H, K, V], rand));
  // log gates in [log 0.5, 0], with some exact zeros (a gate of 1)
  if (name === 'gated_retention') m.set('g', tensor([B, H, T], (i) => (i % 5 === 2 ? 0 : Math.log(0.5 + 0.5 * rand()))));
  return m;
}

const FAMILY: [string, string][] = [
  ['retention', 'retention'], ['retention', 'retention_state'], ['linear_attention', 'linear_attention'],
  ['gated_retention', 'gated_retention'], ['softmax_attention', 'softmax_attention'],
];

describe('literal autodiff gradient vs finite differences of the reference', () => {
  for (const [file, name] of FAMILY) {
    test(`${name}: every element of every input gradient`, () => {
      const fn = loadFn(file, name);
      const g = literalGradient(fn);
      expect(g.outputs.map((o) => o.name)).toEqual(fn.params.map((p) => gradName(p.name)));
      const r = gradcheck(fn, g, familyInputs(name, prng(11)), prng(12));
      expect(r.problems, show(r.problems)).toEqual([]);
      expect(r.checked).toBeGreaterThan(0);
    });
  }
  for (const T1 of [1, 2]) {
    test(`retention_state and gated_retention at T = ${T1} (degenerate sums)`, () => {
      for (const [file, name] of [['retention', 'retention_state'], ['gated_retention', 'gated_retention']] as const) {
        const fn = loadFn(file, name);
        const rand = prng(13 + T1);
        const m = new Map<string, Value>([['q', uniform([1, 2, T1, 2], rand)], ['k', uniform([1, 2, T1, 2], rand)], ['v', uniform([1, 2, T1, 3], rand)]]);
        if (name === 'retention_state') { m.set('gamma', tensor([2], (i) => [0.5, 1][i]!)); m.set('s0', uniform([1, 2, 2, 3], rand)); }
        else m.set('g', tensor([1, 2, T1], (i) => (i === 0 ? 0 : Math.log(0.5 + 0.5 * rand()))));
        const r = gradcheck(fn, literalGradient(fn), m, rand);
        expect(r.problems, `${name}:\n${show(r.problems)}`).toEqual([]);
      }
    });
  }
});

describe('factorised gradient (what the compiler lowers) vs finite differences, in float64', () => {
  for (const [file, name] of FAMILY) {
    test(`${name}`, () => {
      const fn = loadFn(file, name);
      const r = gradcheck(fn, toChecked(toGradientIr(fn)), familyInputs(name, prng(21)), prng(22));
      expect(r.problems, show(r.problems)).toEqual([]);
    });
  }
});

describe('models/retnet.ret building blocks', () => {
  test('linear: gradients of x and w', () => {
    const fn = loadFn('retnet', 'linear');
    const rand = prng(31);
    const r = gradcheck(fn, literalGradient(fn), new Map([['x', uniform([2, 3, 4], rand)], ['w', uniform([5, 4], rand)]]), rand);
    expect(r.problems, show(r.problems)).toEqual([]);
    expect(r.checked).toBe(2 * 3 * 4 + 5 * 4);
  });

  test('rmsnorm: gradients of x, w and eps', () => {
    const fn = loadFn('retnet', 'rmsnorm');
    const rand = prng(32);
    // Rows of x with mean square well away from 0, so that x +- 2h stays in the smooth region.
    const x = tensor([2, 3, 4], () => (rand() < 0.5 ? -1 : 1) * (0.3 + 0.7 * rand()));
    const inputs = new Map<string, Value>([['x', x], ['w', uniform([4], rand)], ['eps', tensor([], () => 1e-6)]]);
    const r = gradcheck(fn, literalGradient(fn), inputs, rand, { eps: 1e-5 });
    expect(r.problems, show(r.problems)).toEqual([]);
    expect(r.checked).toBe(24 + 4 + 1);
  });

  // theta_shift reads x[.., d + 1] and x[.., d - 1] (shifted indices): autodiff sums them back
  // under masks. Pairs (2p, 2p + 1) with K = 6, so that three different angles turn.
  test('theta_shift: gradient of x (shifted indices)', () => {
    const fn = loadFn('retnet', 'theta_shift');
    const rand = prng(33);
    const r = gradcheck(fn, literalGradient(fn), new Map([['x', uniform([1, 2, 5, 6], rand)]]), rand);
    expect(r.problems, show(r.problems)).toEqual([]);
    expect(r.checked).toBe(60);
  });

  // msr: projections with head splits (h*K + i), theta_shift, retention with the per-head decay
  // 1 - 2^(-5 - h), the per-position scale, the group norm over e // V and e % V, a swish gate.
  test('msr: gradients of x, wq, wk, wv, wg, wo and eps (head splits, gathers)', () => {
    const fn = loadFn('retnet', 'msr');
    const rand = prng(34);
    const [Bm, Tm, Hm, Km, Vm] = [1, 4, 2, 2, 3];
    const w = (o: number, i: number): Value => tensor([o, i], () => (rand() * 2 - 1) / Math.sqrt(i));
    const inputs = new Map<string, Value>([
      ['x', uniform([Bm, Tm, Hm * Km], rand)], ['wq', w(Hm * Km, Hm * Km)], ['wk', w(Hm * Km, Hm * Km)], ['wv', w(Hm * Vm, Hm * Km)],
      ['wg', w(Hm * Vm, Hm * Km)], ['wo', w(Hm * Km, Hm * Vm)], ['eps', tensor([], () => 1e-6)],
    ]);
    const opts = { sizes: new Map([['H', Hm]]) };
    const r = gradcheck(fn, literalGradient(fn), inputs, rand, { eps: 1e-8 }, opts, 1e-5);
    expect(r.problems, show(r.problems)).toEqual([]);
    expect(r.checked).toBe(16 + 16 + 16 + 24 + 24 + 24 + 1);
    // The factorised gradient (decay gradient of the inlined retention in its factorised form).
    const rf = gradcheck(fn, toChecked(toGradientIr(fn)), inputs, prng(35), { eps: 1e-8 }, opts, 1e-5);
    expect(rf.problems, `factorised: ${show(rf.problems)}`).toEqual([]);
  });
});
