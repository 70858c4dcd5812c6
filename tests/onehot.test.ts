// One-hot sum elimination (compiler/onehot.ts): the gradient of a load at a computed index
// (e // c, e % c, d + 1, d - 1, e - 3) is a masked sum autodiff writes as
// sum[e] where(e // c == u1, ...); the pass turns it into the term at the inverted index.
//   - IR: the statements lose their sum (div-mod, affine) or keep a shorter one (div, mod where
//     no scatter-add takes the sum, and a mixed sum whose other indices stay), with guards only
//     where the extents do not prove them; masks that do not invert (a gathered token, e * e, a size divisor not dividing the
//     extent), the weight gradient of a head split (dense's h*V + j == u) and a max stay as
//     they were; index arithmetic folds only where the ranges allow it;
//   - numbers: the float64 reference interpreter gives the same gradient before and after the
//     pass (the same additions of the same terms: equal to 1e-15), and the compiled backward
//     plans (float32, CPU kernel-IR executor) agree with it to 1e-6 with no scatter kernel left,
//     on inputs where out-of-range reads matter (the shifted loads read 0 past the ends).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, test } from 'vitest';
import type { CheckedFn } from '../dsl/checked.js';
import { dconst, dsym } from '../dsl/dims.js';
import { loadProgram } from '../dsl/program.js';
import { runFunction } from '../dsl/reference/interpreter.js';
import { upstreamName } from '../compiler/autodiff.js';
import { binary, cnst, idx, type IrFn, type IrStmt, ld, type Node, nodeToString, reduce, select, toChecked } from '../compiler/ir.js';
import { recogniseScatter } from '../compiler/lower/scatter.js';
import { eliminateOneHot } from '../compiler/onehot.js';
import { bounds, foldIndices } from '../compiler/onehot-bounds.js';
import { compilePlan, toGradientIr, withoutDeadStatements } from '../compiler/plan.js';
import { makeSchedule } from '../compiler/schedule.js';
import { runPlanCpu } from '../runtime/plan-runner.js';
import { prng, relErr, uniform, type Value } from './helpers/harness.js';

const SRC = `
fn heads(o: f32[B, 2, T, 4], g: f32[B, T, 8]) -> y: f32[B, T, 8] {
  y[b, t, e] = o[b, e // 4, t, e % 4] * g[b, t, e]
}
fn heads_sym[H](o: f32[B, H, T, V], g: f32[B, T, H*V]) -> y: f32[B, T, H*V] {
  y[b, t, e] = o[b, e // V, t, e % V] * g[b, t, e]
}
fn rowscale(x: f32[B, T, 8], r: f32[B, 2, T]) -> y: f32[B, T, 8] {
  y[b, t, e] = x[b, t, e] * r[b, e // 4, t]
}
fn colscale(x: f32[T, 8], w: f32[4]) -> y: f32[T, 8] {
  y[t, e] = x[t, e] * w[e % 4]
}
fn rowscale4(x: f32[B, T, S, 8], r: f32[2]) -> y: f32[B, T, S, 8] {
  y[b, t, s, e] = x[b, t, s, e] * r[e // 4]
}
fn colscale4(x: f32[B, T, S, 8], w: f32[4]) -> y: f32[B, T, S, 8] {
  y[b, t, s, e] = x[b, t, s, e] * w[e % 4]
}
fn shift(x: f32[B, T, K]) -> y: f32[B, T, K] {
  y[b, t, d] = where(d % 2 == 0, -x[b, t, d + 1], x[b, t, d - 1]) * (t + 1)
}
fn offset(x: f32[8]) -> y: f32[8] {
  y[e] = x[e - 3] * 2.0
}
fn mixed(x: f32[2, 4], z: f32[B, T, 8]) -> y: f32[B] {
  y[b] = sum[t, e: 8] x[e // 4, e % 4] * z[b, t, e]
}
fn short(o: f32[3, 4], g: f32[8]) -> y: f32[8] {
  y[e] = o[e // 4, e % 4] * g[e]
}
fn gather(tok: i32[N], w: f32[V, C]) -> y: f32[N, C] {
  y[n, c] = w[tok[n], c]
}
fn square(x: f32[5]) -> y: f32[8] {
  y[e] = x[(e * e) % 5]
}
fn sizediv[K](x: f32[B, 3], g: f32[B, N]) -> y: f32[B, N] {
  y[b, n] = x[b, n // K] * g[b, n]
}
fn proj[H](x: f32[B, T, C], w: f32[H*V, C]) -> y: f32[B, H, T, V] {
  y[b, h, t, j] = sum[c] x[b, t, c] * w[h * V + j, c]
}
`;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'retnetc-onehot-'));
fs.writeFileSync(path.join(dir, 'onehot.ret'), SRC);
const prog = loadProgram(path.join(dir, 'onehot.ret'));
if (prog.diagnostics.length) throw new Error(prog.diagnostics.map((d) => d.message).join('; '));
const fnOf = (n: string): CheckedFn => prog.checked!.fns.get(n)!;

const gradIr = (n: string): IrFn => withoutDeadStatements(toGradientIr(fnOf(n)));
/** The gradient statement of parameter `p` (its target %d.p.N) before and after the pass. */
function gradOf(n: string, p: string): { before: IrStmt; after: IrStmt } {
  const g = gradIr(n);
  const k = g.body.findIndex((s) => s.target.startsWith(`%d.${p}.`));
  if (k < 0) throw new Error(`no gradient statement for ${p} in ${n}: ${g.body.map((s) => s.target).join(', ')}`);
  return { before: g.body[k]!, after: eliminateOneHot(g).body[k]! };
}
const str = (s: IrStmt): string => nodeToString(s.value);

describe('the IR: one-hot sums that invert', () => {
  test('div-mod: o[b, e // 4, t, e % 4] gets the term at e = u1*4 + u2, no sum, no guard', () => {
    const { before, after } = gradOf('heads', 'o');
    expect(str(before)).toMatch(/^sum\[e: 8\] \(where\(/);
    const [, u1, , u2] = after.indices.map((v) => v.name);
    expect(str(after)).toBe(`(grad.y[b, t, ((${u1} * 4) + ${u2})] * g[b, t, ((${u1} * 4) + ${u2})])`);
  });
  test('div-mod with symbolic sizes: extent H*V, divisor V, the guards proven from the extents', () => {
    const { after } = gradOf('heads_sym', 'o');
    const [, u1, , u2] = after.indices.map((v) => v.name);
    expect(str(after)).toBe(`(grad.y[b, t, ((${u1} * V) + ${u2})] * g[b, t, ((${u1} * V) + ${u2})])`);
  });
  test('div alone (a sum no scatter-add takes: four summed indices): e of 8 becomes a fresh index of 4', () => {
    const { before, after } = gradOf('rowscale4', 'r');
    expect(str(before)).toMatch(/^sum\[b: B, t: T, s: S, e: 8\] \(where\(\(\(e \/\/ 4\) == u'\d+\)/);
    const u = after.indices[0]!.name;
    expect(str(after)).toBe(`sum[b: B, t: T, s: S, e'j1: 4] ((grad.y[b, t, s, ((${u} * 4) + e'j1)] * x[b, t, s, ((${u} * 4) + e'j1)]))`);
  });
  test('mod alone (four summed indices): e % 4 == u over e of 8 becomes a sum over the 2 blocks', () => {
    const { after } = gradOf('colscale4', 'w');
    const u = after.indices[0]!.name;
    expect(str(after)).toBe(`sum[b: B, t: T, s: S, e'j1: 2] ((grad.y[b, t, s, ((e'j1 * 4) + ${u})] * x[b, t, s, ((e'j1 * 4) + ${u})]))`);
  });
  test('div or mod alone where the sum is a scatter-add (one or two summed indices): left to the scatter, which does the same work faster', () => {
    for (const [n, p] of [['rowscale', 'r'], ['colscale', 'w']] as const) {
      const { before, after } = gradOf(n, p);
      expect(recogniseScatter(before, gradIr(n).vars), n).toBeDefined();
      expect(after, n).toBe(before);
    }
  });
  test('affine: d + 1 == u and d - 1 == u become maps with the one guard the extents leave, the parity carried along', () => {
    const g = gradIr('shift');
    const out = eliminateOneHot(g).body.filter((s, k) => s !== g.body[k]);
    expect(out.length).toBe(2);
    const texts = out.map((s) => [s.indices[2]!.name, str(s)] as const);
    const plus = texts.find(([, t]) => t.startsWith('where((0 <='))!;
    const minus = texts.find((x) => x !== plus)!;
    // d = u - 1 < K holds (u < K); 0 <= u - 1 does not (u = 0).
    expect(plus[1]).toMatch(new RegExp(`^where\\(\\(0 <= \\(${plus[0]} - 1\\)\\), where\\(\\(\\(\\(${plus[0]} - 1\\) % 2\\) == 0\\)`));
    expect(plus[1]).not.toContain('sum[');
    expect(plus[1]).not.toContain(' < K');
    // d = u + 1 >= 0 holds; u + 1 < K does not.
    expect(minus[1]).toMatch(new RegExp(`^where\\(\\(\\(${minus[0]} \\+ 1\\) < K\\), where\\(\\(\\(\\(${minus[0]} \\+ 1\\) % 2\\) == 0\\), 0,`));
    expect(minus[1]).not.toContain('sum[');
  });
  test('affine with a constant offset: e - 3 == u, guarded by u + 3 < 8', () => {
    const { after } = gradOf('offset', 'x');
    const u = after.indices[0]!.name;
    expect(str(after)).toBe(`where(((${u} + 3) < 8), (grad.y[(${u} + 3)] * 2), 0)`);
  });
  test('mixed: sum[b, t, e] with the mask on e only keeps the sum over b and t', () => {
    const { before, after } = gradOf('mixed', 'x');
    const e = /^sum\[b: B, t'\d+: T, (e'\d+): 8\]/.exec(str(before))?.[1];
    expect(e).toBeDefined();
    expect(str(after)).toMatch(/^sum\[b: B, t'\d+: T\] \(/);
    expect(str(after)).not.toContain(e);
  });
  test('an extent that does not match (o: [3, 4] read at e // 4 for e of 8): the range guard stays', () => {
    const { after } = gradOf('short', 'o');
    const [u1, u2] = after.indices.map((v) => v.name);
    expect(str(after)).toBe(`where((((${u1} * 4) + ${u2}) < 8), (grad.y[((${u1} * 4) + ${u2})] * g[((${u1} * 4) + ${u2})]), 0)`);
  });
});

test('before the pass these lower as scatter-adds; after it none does', () => {
  for (const [n, p] of [['heads', 'o'], ['shift', 'x'], ['offset', 'x'], ['short', 'o']] as const) {
    const g = gradIr(n);
    const e = eliminateOneHot(g);
    const scatters = (f: IrFn) => f.body.filter((s) => s.target.startsWith(`%d.${p}.`) && recogniseScatter(s, f.vars)).length;
    expect(scatters(g), n).toBeGreaterThan(0);
    expect(scatters(e), n).toBe(0);
  }
});

test('a mask under a product, where(e == u, x[e], 0) * (x[e] + 1), and under another where: the term at e = u, the same numbers', () => {
  const e = idx('e'), u = idx('u');
  const base = gradIr('offset');
  expect(base.body.length).toBe(1);
  expect(base.outputs.map((o) => o.v)).toEqual([base.body[0]!.target]);
  const one = (value: Node): IrFn => ({ ...base, body: [{ ...base.body[0]!, indices: [{ name: 'u', extent: dconst(8) }], value }] });
  const xe = ld('x', [e]);
  const masked = binary('*', select(binary('==', e, u), xe, cnst(0)), binary('+', xe, cnst(1)));
  const nested = select(binary('<', e, cnst(5, 'int')), masked, cnst(0));
  const ins = inputsOf({ fn: 'offset', inputs: { x: [8] } }, 7);
  for (const [value, want] of [[masked, '(x[u] * (x[u] + 1))'], [nested, 'where((u < 5), (x[u] * (x[u] + 1)), 0)']] as const) {
    const f = one(reduce({ op: 'sum', vars: [{ name: 'e', extent: dconst(8) }], cons: [] }, value, []));
    const g = eliminateOneHot(f);
    expect(nodeToString(g.body[0]!.value)).toBe(want);
    const [before, after] = [f, g].map((h) => runFunction(toChecked(h), ins).get(base.outputs[0]!.name)!.data);
    expect([...after!]).toEqual([...before!]);
  }
});

describe('the IR: what stays', () => {
  const unchanged = (n: string, p: string): string => {
    const { before, after } = gradOf(n, p);
    expect(after).toBe(before);
    return str(before);
  };
  test('a mask on a gathered token (the scatter-add of an embedding)', () => {
    expect(unchanged('gather', 'w')).toMatch(/^sum\[n: N\] \(where\(\(tok\[n\] == u'\d+\)/);
  });
  test('a mask on an index that does not invert: (e * e) % 5', () => {
    expect(unchanged('square', 'x')).toMatch(/^sum\[e: 8\] \(where\(\(\(\(e \* e\) % 5\) == u'\d+\)/);
  });
  test('a size divisor that does not divide the extent: n // K over n of N', () => {
    expect(unchanged('sizediv', 'x')).toMatch(/^sum\[n: N\] \(where\(\(\(n \/\/ K\) == u'\d+\)/);
  });
  test('the head-split weight gradient (h*V + j == u over summed h and j), a dense product', () => {
    expect(unchanged('proj', 'w')).toMatch(/where\(\(\(\(h \* V\) \+ j\) == u'\d+\)/);
  });
  test('a max over a mask is not a sum (the masked-out zeros take part): left alone, the same sum is not', () => {
    const e = idx('e'), u = idx('u');
    const body = select(binary('==', e, u), ld('x', [e]), cnst(0));
    const vars = [{ name: 'e', extent: dconst(8) }];
    const base = gradIr('offset');
    const fnWith = (op: 'max' | 'sum'): IrFn => ({ ...base, body: [{ target: base.body[0]!.target, indices: [{ name: 'u', extent: dconst(8) }], value: reduce({ op, vars, cons: [] }, body, []) }] });
    const mx = fnWith('max');
    expect(eliminateOneHot(mx)).toBe(mx);
    expect(nodeToString(eliminateOneHot(fnWith('sum')).body[0]!.value)).toBe('x[u]');
  });
});

describe('index folding', () => {
  const u = idx('u'), j = idx('j');
  const i = (k: number) => cnst(k, 'int');
  test('(u*64 + j) // 64 = u and % 64 = j where j < 64; not where j may reach 64', () => {
    const e = binary('+', binary('*', u, i(64)), j);
    const inRange = new Map([['u', dconst(2)], ['j', dconst(64)]]);
    expect(nodeToString(foldIndices(binary('//', e, i(64)), inRange))).toBe('u');
    expect(nodeToString(foldIndices(binary('%', e, i(64)), inRange))).toBe('j');
    const wide = new Map([['u', dconst(2)], ['j', dconst(65)]]);
    expect(nodeToString(foldIndices(binary('//', e, i(64)), wide))).toBe('(u + (j // 64))');
    expect(nodeToString(foldIndices(binary('%', e, i(64)), wide))).toBe('(j % 64)');
  });
  test('bounds: symbolic extents, products and remainders', () => {
    const sc = new Map([['u', dsym('H')], ['j', dsym('V')]]);
    const b = bounds(binary('+', binary('*', u, i(3)), j), sc)!;
    expect([...b.lo]).toEqual([]);
    expect(Object.fromEntries(b.hi)).toEqual({ H: 3, V: 1, '': -4 });
    expect(bounds(binary('%', idx('x'), i(5)), sc)).toEqual({ lo: dconst(0), hi: dconst(4) });
    expect(bounds(idx('x'), sc)).toBeUndefined();
  });
});

// ---- numbers ---------------------------------------------------------------------------------

interface Case { fn: string; inputs: Record<string, number[]> }
const CASES: Case[] = [
  { fn: 'heads', inputs: { o: [3, 2, 5, 4], g: [3, 5, 8] } },
  { fn: 'heads_sym', inputs: { o: [2, 3, 4, 5], g: [2, 4, 15] } },
  { fn: 'rowscale4', inputs: { x: [2, 3, 4, 8], r: [2] } },
  { fn: 'colscale4', inputs: { x: [3, 2, 5, 8], w: [4] } },
  { fn: 'shift', inputs: { x: [2, 5, 6] } },
  { fn: 'shift', inputs: { x: [1, 3, 7] } },
  { fn: 'offset', inputs: { x: [8] } },
  { fn: 'mixed', inputs: { x: [2, 4], z: [3, 5, 8] } },
  { fn: 'short', inputs: { o: [3, 4], g: [8] } },
];

function inputsOf(c: Case, seed: number): Map<string, Value> {
  const rand = prng(seed);
  const fn = fnOf(c.fn);
  const ins = new Map<string, Value>(Object.entries(c.inputs).map(([k, shape]) => [k, uniform(shape, rand)]));
  const outs = runFunction(fn, ins);
  for (const o of fn.outputs) ins.set(upstreamName(o.name), uniform(outs.get(o.name)!.shape, rand));
  return ins;
}

describe('numbers: the gradient before and after the pass', () => {
  for (const [k, c] of CASES.entries()) {
    const label = `${c.fn} ${Object.entries(c.inputs).map(([n, s]) => `${n}[${s.join(',')}]`).join(' ')}`;
    test(`${label}: float64 reference, the same before and after`, () => {
      const g = gradIr(c.fn);
      const e = eliminateOneHot(g);
      expect(e).not.toBe(g);
      const ins = inputsOf(c, 100 + k);
      const before = runFunction(toChecked(g), ins);
      const after = runFunction(toChecked(e), ins);
      expect([...after.keys()].sort()).toEqual([...before.keys()].sort());
      for (const [name, v] of before) {
        const w = after.get(name)!;
        expect(w.shape).toEqual(v.shape);
        const err = relErr(w.data, v.data);
        expect(err.nonFinite).toBe(0);
        expect(err.rel, `${name}`).toBeLessThan(1e-15);
        expect(err.rmsRef, `${name} is not all zero`).toBeGreaterThan(0);
      }
    });
    test(`${label}: the compiled backward plan (float32, CPU executor) within 1e-6, no scatter kernel`, () => {
      const ins = inputsOf(c, 200 + k);
      const truth = runFunction(toChecked(gradIr(c.fn)), ins);
      const p = compilePlan(fnOf(c.fn), makeSchedule('parallel', 16), { backward: true });
      expect(p.launches.map((l) => l.kernel.name).filter((n) => n.includes('scatter'))).toEqual([]);
      const got = runPlanCpu(p, ins, { poison: NaN });
      for (const [name, v] of truth) {
        const w = got.get(name);
        expect(w, `plan output ${name}`).toBeDefined();
        expect(w!.shape).toEqual(v.shape);
        const err = relErr(w!.data, v.data);
        expect(err.nonFinite).toBe(0);
        expect(err.rel, `${name}`).toBeLessThan(1e-6);
      }
    });
  }
});
