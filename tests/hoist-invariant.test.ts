// Loop-invariant expensive subexpressions as tables (compiler/hoist-invariant.ts): the rotation's
// cos and sin become one table each over (t, d), shared by q and k and read by the backward too;
// small savings and causal contractions are left alone; and every plan computes bit for bit what
// the plan without the pass computes on the CPU executor (a second copy of the compiler, loaded
// with the pass replaced by the identity).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { beforeAll, describe, expect, test, vi } from 'vitest';
import type { CheckedFn } from '../dsl/checked.js';
import { devaluate } from '../dsl/dims.js';
import { loadProgram } from '../dsl/program.js';
import { type IrStmt, type Node, walk } from '../compiler/ir.js';
import { hoistInvariant } from '../compiler/hoist-invariant.js';
import { compilePlan, type CompileOptions, type Plan, toIr } from '../compiler/plan.js';
import { analyse } from '../compiler/analysis.js';
import { makeSchedule, type Form } from '../compiler/schedule.js';
import { runPlanCpu } from '../runtime/plan-runner.js';
import { prng, uniform, type Value } from './helpers/harness.js';

const retnet = loadProgram('models/retnet.ret');
const msr = retnet.checked!.fns.get('msr')!;
const SIZES = { H: 2, K: 4, V: 3 };
const constants = new Map(Object.entries(SIZES));

const calls = (n: Node, op: string): number => { let c = 0; walk(n, (m) => { if (m.op === 'unary' && m.arg === op) c++; }); return c; };
const reads = (s: IrStmt, id: string): boolean => { let r = false; walk(s.value, (m) => { if (m.op === 'load' && m.arg === id) r = true; }); return r; };
const tablesOf = (p: Plan, op: string): IrStmt[] => p.fn.body.filter((s) => s.target.startsWith('%h') && calls(s.value, op) > 0);

/** A .ret source in a temporary file, checked. */
function fnFrom(src: string, name: string): CheckedFn {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hoist-'));
  const file = path.join(dir, 'f.ret');
  fs.writeFileSync(file, src);
  const p = loadProgram(file);
  expect(p.diagnostics.map((d) => d.message)).toEqual([]);
  return p.checked!.fns.get(name)!;
}

describe('loop-invariant tables', () => {
  test('the rotation: one cos and one sin table over (t, d), read by both the q and the k rotation; no other statement calls cos or sin', () => {
    const p = compilePlan(msr, makeSchedule('chunkwise', 8), { constants });
    for (const op of ['cos', 'sin']) {
      const t = tablesOf(p, op);
      expect(t.length, op).toBe(1);
      expect(t[0]!.indices.map((v) => v.name), op).toEqual(['t', 'd']);
      const readers = p.fn.body.filter((s) => reads(s, t[0]!.target)).map((s) => s.target);
      expect(readers.sort(), op).toEqual(['kr', 'qr']);
      expect(p.fn.body.filter((s) => s !== t[0] && calls(s.value, op) > 0).map((s) => s.target), op).toEqual([]);
      // One launch computes the T x K table (not B x H times that).
      expect(p.launches.filter((l) => l.target === t[0]!.target).length).toBe(1);
    }
    // theta_shift was inlined twice; its theta is computed once.
    expect(p.fn.body.filter((s) => s.target.endsWith('.theta')).length).toBe(1);
  });

  test('the backward reads tables in its rotation gradients, never sin or cos per element', () => {
    const p = compilePlan(msr, makeSchedule('chunkwise', 8), { backward: true, constants });
    for (const op of ['cos', 'sin']) {
      const t = tablesOf(p, op);
      // cos: one table for the forward's rotations and their gradients. sin: the forward's
      // sin(t theta[d]) and, since the rotation gradient's one-hot sums are maps (compiler/onehot.ts),
      // the gradient's shifted angles theta[u - 1] and theta[u + 1]: small T x K tables.
      expect(t.length, op).toBe(op === 'cos' ? 1 : 3);
      const readers = p.fn.body.filter((s) => t.some((x) => reads(s, x.target)));
      // the forward's two rotations and the gradients of both (q and k)
      expect(readers.length, op).toBeGreaterThanOrEqual(4);
      expect(p.fn.body.filter((s) => !t.includes(s) && calls(s.value, op) > 0).map((s) => s.target), op).toEqual([]);
    }
  });

  test('the stateful form tables the shifted angle (t0 + t) once per block; a decode step (stateful, recurrent: B = T = 1) makes no tables', () => {
    const p = compilePlan(msr, makeSchedule('chunkwise', 8), { stateful: true, constants });
    const t = tablesOf(p, 'cos');
    expect(t.length).toBe(1);
    let t0 = false;
    walk(t[0]!.value, (m) => { if (m.op === 'load' && m.arg === 't0') t0 = true; });
    expect(t0).toBe(true);
    const step = compilePlan(msr, makeSchedule('recurrent'), { stateful: true, constants });
    expect(step.fn.body.filter((s) => s.target.startsWith('%h')).map((s) => s.target)).toEqual([]);
    // still one theta for both rotations
    expect(step.fn.body.filter((s) => s.target.endsWith('.theta')).length).toBe(1);
  });

  test('small savings, full-index subexpressions and causal contractions stay as they are', () => {
    const fn = fnFrom(`
fn f(x: f32[T, D], g: f32[D], w: f32[T, 2]) -> (y: f32[T, D], z: f32[T, 2], u: f32[T, D]) {
  y[t, d] = x[t, d] * exp(x[t, d]) + x[t, d] * sin(g[d])
  z[t, e] = w[t, e] * cos(float(t))
  u[t, d] = sum[s: T, s <= t] exp(float(t - s) * -0.5) * x[s, d]
}`, 'f');
    const ir = analyse(toIr(fn));
    const h = hoistInvariant(ir.fn, { keep: (s) => ir.contractions.has(s.target), constants: new Map([['D', 128]]), storage: () => 'f32' });
    const byTarget = new Map(h.fn.body.map((s) => [s.target, s] as const));
    // sin(g[d]) over [T, D]: T (symbolic, taken as 16) times fewer evaluations -> a table over d.
    const tables = [...h.tables].map((id) => byTarget.get(id)!);
    expect(tables.map((s) => s.indices.map((v) => v.name))).toEqual([['d']]);
    expect(calls(tables[0]!.value, 'sin')).toBe(1);
    // exp(x[t, d]) reads every index; cos(float(t)) over [T, 2] saves 2x only: both stay.
    expect(calls(byTarget.get('y')!.value, 'exp')).toBe(1);
    expect(calls(byTarget.get('z')!.value, 'cos')).toBe(1);
    // The causal sum keeps its decay in its own statement.
    expect(calls(byTarget.get('u')!.value, 'exp')).toBe(1);
  });

  test("a load's index expression that stays in its dimension indexes the table: rsqrt(ms[b, e // V, t] + eps) is a table over (b, e // V, t)", () => {
    // V = 8: 8 times fewer evaluations (at V = 3 the saving is below MIN_SAVING and it stays).
    const p = compilePlan(msr, makeSchedule('chunkwise', 8), { constants: new Map([['H', 2], ['K', 4], ['V', 8]]) });
    expect(tablesOf(compilePlan(msr, makeSchedule('chunkwise', 8), { constants }), 'rsqrt')).toEqual([]);
    const t = tablesOf(p, 'rsqrt');
    expect(t.length).toBe(1);
    expect(t[0]!.indices.map((v) => devaluate(v.extent, new Map([['B', 5], ['T', 7]])))).toEqual([5, 2, 7]);
    const gated = p.fn.body.find((s) => s.target === 'gated')!;
    expect(reads(gated, t[0]!.target)).toBe(true);
    expect(calls(gated.value, 'rsqrt')).toBe(0);
    // d + 1 runs past its dimension (a zero-padded read): that index stays a plain one.
    const fn = fnFrom(`
fn f(x: f32[T, D], g: f32[D]) -> y: f32[T, D] {
  y[t, d] = x[t, d] * exp(g[d + 1])
}`, 'f');
    const ir = analyse(toIr(fn));
    const h = hoistInvariant(ir.fn, { keep: () => false, constants: new Map([['D', 128]]), storage: () => 'f32' });
    const tab = h.fn.body.filter((s) => h.tables.has(s.target));
    expect(tab.map((s) => s.indices.map((v) => v.name))).toEqual([['d']]);
    // At sizes known only at run time taken as 1 (a decode step), T = 1 saves nothing.
    expect(hoistInvariant(ir.fn, { keep: () => false, constants: new Map([['D', 128]]), storage: () => 'f32', symbolic: 1 }).tables.size).toBe(0);
  });

  test('statements that compute the same value are one, unless one is an output', () => {
    const fn = fnFrom(`
fn f(x: f32[T, D]) -> (y: f32[T, D], a: f32[D]) {
  let p[d: D] = 2.0^(float(d) / D)
  let q[e: D] = 2.0^(float(e) / D)
  a[d: D] = 2.0^(float(d) / D)
  y[t, d] = x[t, d] * p[d] + x[t, d] * q[d] + a[d]
}`, 'f');
    const ir = analyse(toIr(fn));
    const h = hoistInvariant(ir.fn, { keep: () => false, constants: new Map(), storage: () => 'f32' });
    expect([...h.merged]).toHaveLength(1);
    expect(h.fn.body.map((s) => s.target)).toEqual(expect.arrayContaining(['a', 'y']));
    expect(h.fn.body.length).toBe(3);
  });
});

// ---- bit for bit against the plan without the pass ------------------------------------------

async function unhoistedCompiler(): Promise<typeof import('../compiler/plan.js')> {
  vi.resetModules();
  vi.doMock('../compiler/hoist-invariant.js', () => ({ hoistInvariant: (fn: unknown) => ({ fn, tables: new Set(), merged: new Map() }) }));
  const m = await import('../compiler/plan.js');
  vi.doUnmock('../compiler/hoist-invariant.js');
  return m;
}

function inputsFor(p: Plan, sizes: Record<string, number>, seed: number): Map<string, Value> {
  const rand = prng(seed);
  const env = new Map(Object.entries(sizes));
  const out = new Map<string, Value>();
  for (const prm of p.fn.params) {
    const shape = prm.shape.map((d) => devaluate(d, env)!);
    if (prm.name === 't0') out.set('t0', { shape: [], data: Float64Array.of(7) });
    else out.set(prm.name, uniform(shape, rand));
  }
  return out;
}

/** The first element whose bits differ, or -1. */
export function firstDifference(a: Float32Array | Int32Array, b: Float32Array | Int32Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length), y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return i;
  return -1;
}

describe('bit for bit against the plan without the pass (CPU executor)', () => {
  let plain: typeof import('../compiler/plan.js');
  beforeAll(async () => { plain = await unhoistedCompiler(); });
  const cases: { name: string; form: Form; opts: CompileOptions; V?: number }[] = [
    { name: 'forward chunkwise', form: 'chunkwise', opts: {} },
    { name: 'forward at V = 8 (a table over e // V)', form: 'chunkwise', opts: {}, V: 8 },
    { name: 'backward at V = 8', form: 'chunkwise', opts: { backward: true }, V: 8 },
    { name: 'forward parallel', form: 'parallel', opts: {} },
    { name: 'backward chunkwise', form: 'chunkwise', opts: { backward: true } },
    { name: 'stateful chunkwise (t0 = 7)', form: 'chunkwise', opts: { stateful: true } },
    { name: 'stateful recurrent, a decode step (t0 = 7; no tables, theta merged)', form: 'recurrent', opts: { stateful: true } },
  ];
  for (const c of cases) {
    test(`msr ${c.name}`, () => {
      const schedule = makeSchedule(c.form, 4);
      const consts = new Map([...constants, ['V', c.V ?? SIZES.V]]);
      const hoisted = compilePlan(msr, schedule, { ...c.opts, constants: consts });
      const base = plain.compilePlan(msr, schedule, { ...c.opts, constants: consts });
      expect(base.fn.body.some((s) => s.target.startsWith('%h'))).toBe(false);
      const decode = c.opts.stateful && c.form === 'recurrent';
      expect(hoisted.fn.body.some((s) => s.target.startsWith('%h'))).toBe(!decode);
      expect(hoisted.fn.body.length).toBeLessThan(base.fn.body.length + (decode ? 0 : 20));
      const sizes = { B: 2, T: c.opts.stateful && c.form === 'recurrent' ? 1 : 11, ...SIZES, V: c.V ?? SIZES.V };
      const inputs = inputsFor(hoisted, sizes, 17);
      const a = runPlanCpu(hoisted, inputs), b = runPlanCpu(base, inputs);
      expect([...a.keys()].sort()).toEqual([...b.keys()].sort());
      for (const [k, v] of b) {
        const i = firstDifference(a.get(k)!.data, v.data);
        expect(i, `${k}[${i}]: ${a.get(k)!.data[i]} vs ${v.data[i]}`).toBe(-1);
      }
    });
  }
});
