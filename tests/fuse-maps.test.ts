// Elementwise fusion in tensor IR (compiler/fuse-maps.ts): which producers are inlined (chains,
// copies, bijective reads inside sums) and which stay (two readers, a sum re-reading an element,
// outputs, out-of-range reads, kept statements); and numerically: f32 plans compute bit for bit
// what the plans without the pass compute (a second copy of the compiler, loaded with the pass
// replaced by the identity) on the CPU executor and on native, f16 plans within the half bars,
// and the tiny RetNet's forward and gradient with fusion against the float64 reference.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { beforeAll, describe, expect, test, vi } from 'vitest';
import type { CheckedFn, CheckedModel } from '../dsl/checked.js';
import { devaluate, dimSymbols } from '../dsl/dims.js';
import { instantiateModel, loadProgram } from '../dsl/program.js';
import { runModel } from '../dsl/reference/interpreter.js';
import { analyse } from '../compiler/analysis.js';
import { recogniseDense } from '../compiler/dense.js';
import { fuseMaps, MAX_NODES } from '../compiler/fuse-maps.js';
import { type IrFn, type IrStmt, usedVars, walk } from '../compiler/ir.js';
import type { CompileOptions, Plan } from '../compiler/plan.js';
import { makeSchedule, type Form } from '../compiler/schedule.js';
import { runPlanCpu } from '../runtime/plan-runner.js';
import { type HostValue, type PlanExec, runModelPlan } from '../runtime/model-runner.js';
import { runModelBackward } from '../runtime/model-backward.js';
import { findCompiler, NO_COMPILER } from '../targets/native/compile.js';
import { loadNativeAddon } from '../runtime/native/addon.js';
import { runPlanNative } from '../runtime/native/runner.js';
import { prng, uniform, type Value } from './helpers/harness.js';
import * as planMod from '../compiler/plan.js';
import * as pipelineMod from '../compiler/pipeline.js';
import * as modelGradMod from '../compiler/model-grad.js';

/** A .ret source in a temporary file, checked. */
function fnFrom(src: string, name: string): CheckedFn {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fuse-'));
  const file = path.join(dir, 'f.ret');
  fs.writeFileSync(file, src);
  const p = loadProgram(file);
  expect(p.diagnostics.map((d) => d.message)).toEqual([]);
  return p.checked!.fns.get(name)!;
}

/** The pass as compilePlan runs it (contractions and dense sums kept). */
function fused(src: string, name = 'f'): { before: IrFn; after: IrFn } {
  const { fn, contractions } = analyse(planMod.toIr(fnFrom(src, name)));
  return { before: fn, after: fuseMaps(fn, contractions, { keep: (s) => contractions.has(s.target) || recogniseDense(s, fn.vars) !== undefined }) };
}
const targets = (f: IrFn): string[] => f.body.map((s) => s.target);
const stmt = (f: IrFn, t: string): IrStmt => f.body.find((s) => s.target === t)!;
const reads = (s: IrStmt): string[] => [...usedVars([s])].sort();

describe('which maps fuse', () => {
  test('a chain fuses into its last statement; the fused tensors leave vars; the span stays', () => {
    const { before, after } = fused(`
fn f(x: f32[T, D], g: f32[D]) -> y: f32[T, D] {
  let a[t, d] = x[t, d] * g[d]
  let b[t, d] = a[t, d] + 1.0
  y[t, d] = exp(b[t, d]) * a[t, d]
}`);
    expect(targets(before).length).toBe(3);
    // a has two loads in y once b is inlined (a[t, d] twice: one node), so it fuses too.
    expect(targets(after)).toEqual(['y']);
    expect(reads(stmt(after, 'y'))).toEqual(['g', 'x']);
    expect([...after.vars.keys()].filter((v) => v === 'a' || v === 'b')).toEqual([]);
    expect(stmt(after, 'y').span).toEqual(stmt(before, 'y').span);
  });

  test('a producer with two readers stays; a copy of one load goes into both', () => {
    const { after } = fused(`
fn f(x: f32[T, D]) -> (y: f32[T, D], z: f32[T, D]) {
  let a[t, d] = x[t, d] * x[t, d] + 1.0
  let c[t, d] = x[t, d]
  y[t, d] = a[t, d] * 2.0 + c[t, d]
  z[t, d] = a[t, d] + c[t, d]
}`);
    expect(targets(after)).toEqual(['a', 'y', 'z']);
    expect(reads(stmt(after, 'y'))).toEqual(['a', 'x']);
    expect(reads(stmt(after, 'z'))).toEqual(['a', 'x']);
  });

  test('inside a sum: inlined where the sum reads each element once, not where it re-reads one (an index the producer lacks)', () => {
    const { after } = fused(`
fn f(x: f32[T, D], w: f32[D]) -> (y: f32[D], z: f32[D]) {
  let a[t, d] = exp(x[t, d]) * w[d]
  let p[t] = exp(x[t, 0]) + 1.0
  y[d] = sum[t: T] a[t, d] * a[t, d]
  z[d] = sum[t: T] exp(p[t] * w[d])
}`);
    // y reads a at the statement's and the sum's indices: each element once.
    expect(targets(after)).toEqual(['p', 'y', 'z']);
    expect(reads(stmt(after, 'y'))).toEqual(['w', 'x']);
    // z evaluates p[t] for every d: inlining would compute it D times over.
    expect(reads(stmt(after, 'z'))).toEqual(['p', 'w']);
  });

  test('a broadcast read at top level (more points than elements) stays; outputs stay', () => {
    const { after } = fused(`
fn f(x: f32[T, D]) -> (y: f32[T, D], z: f32[T, D]) {
  let r[t] = sqrt(x[t, 0] * x[t, 0] + 1.0)
  y[t, d] = x[t, d] * 3.0
  z[t, d] = y[t, d] / r[t]
}`);
    expect(targets(after)).toEqual(['r', 'y', 'z']);
    expect(reads(stmt(after, 'z'))).toEqual(['r', 'y']);
  });

  test('a read that may leave the shape (reads 0 there) stays, unless the producer is a rename of the same shape', () => {
    const { after } = fused(`
fn f(x: f32[T, D], g: f32[D]) -> (y: f32[T, D], z: f32[T, D]) {
  let a[t, d] = x[t, d] * 2.0
  let c[t, d] = x[t, d]
  let e[t: T, d: D] = g[d]
  y[t, d] = a[t, d + 1] + c[t, d + 1]
  z[t: T, d: D] = e[t + 1, d]
}`);
    expect(targets(after)).toEqual(['a', 'e', 'y', 'z']);
    // c is x under another name: c[t, d + 1] and x[t, d + 1] are out of range together.
    expect(reads(stmt(after, 'y'))).toEqual(['a', 'x']);
    expect(reads(stmt(after, 'z'))).toEqual(['e']);
  });

  test('contractions and dense sums stay whole: a dense sum takes a rename (a load for a load) only, a contraction nothing', () => {
    const { before, after } = fused(`
fn f(x: f32[T, D], w: f32[E, D]) -> (y: f32[T, E], v: f32[T, E], u: f32[T, D]) {
  let c[t, d] = x[t, d]
  let a[t, d] = x[t, d] * 2.0
  let k[t, d] = x[t, d]
  y[t, e] = sum[d: D] c[t, d] * w[e, d]
  v[t, e] = sum[d: D] a[t, d] * w[e, d]
  u[t, d] = sum[s: T, s <= t] exp(float(t - s) * -0.5) * k[s, d]
}`);
    expect(recogniseDense(stmt(before, 'y'), before.vars)).toBeDefined();
    expect(targets(after)).toEqual(['a', 'k', 'y', 'v', 'u']);
    expect(reads(stmt(after, 'y'))).toEqual(['w', 'x']);
    expect(recogniseDense(stmt(after, 'y'), after.vars)).toBeDefined();
    expect(stmt(after, 'v')).toBe(stmt(before, 'v'));
    expect(stmt(after, 'u')).toBe(stmt(before, 'u'));
  });

  test(`a statement does not grow past ${MAX_NODES} nodes`, () => {
    // a and b about 50 nodes each: y takes one of them, not both.
    const terms = (f: (k: number) => string): string => Array.from({ length: 16 }, (_, k) => f(k)).join(' + ');
    const { after } = fused(`
fn f(x: f32[T, D]) -> y: f32[T, D] {
  let a[t, d] = ${terms((k) => `x[t, d] * ${k + 2}.0`)}
  let b[t, d] = ${terms((k) => `(x[t, d] + ${k + 100}.0)`)}
  y[t, d] = a[t, d] * b[t, d]
}`);
    let n = 0;
    walk(stmt(after, 'y').value, () => { n++; });
    expect(n).toBeLessThanOrEqual(MAX_NODES);
    expect(targets(after).length).toBe(2);
  });
});

// ---- numerics ---------------------------------------------------------------------------------

type Compilers = { plan: typeof planMod; pipeline: typeof pipelineMod; modelGrad: typeof modelGradMod };

/** A second copy of the compiler with the pass replaced by the identity. */
async function unfusedCompiler(): Promise<Compilers> {
  vi.resetModules();
  vi.doMock('../compiler/fuse-maps.js', () => ({ fuseMaps: (fn: unknown) => fn, MAX_NODES }));
  const plan = await import('../compiler/plan.js');
  const pipeline = await import('../compiler/pipeline.js');
  const modelGrad = await import('../compiler/model-grad.js');
  vi.doUnmock('../compiler/fuse-maps.js');
  return { plan, pipeline, modelGrad };
}

const retnet = loadProgram('models/retnet.ret');
const msr = retnet.checked!.fns.get('msr')!;
const SIZES = { H: 2, K: 4, V: 3 };
const constants = new Map(Object.entries(SIZES));

function inputsFor(p: Plan, sizes: Record<string, number>, seed: number): Map<string, Value> {
  const rand = prng(seed);
  const env = new Map(Object.entries(sizes));
  const out = new Map<string, Value>();
  for (const prm of p.fn.params) {
    const shape = prm.shape.map((d) => devaluate(d, env)!);
    if (prm.name === 't0') out.set('t0', { shape: [], data: Float64Array.of(7) });
    else if (prm.name === 'eps') out.set('eps', { shape: [], data: Float64Array.of(1e-5) });
    else out.set(prm.name, uniform(shape, rand));
  }
  return out;
}

/** The first element that differs (or is not finite: the comparison must mean something), or -1. */
function firstDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i]) || !Number.isFinite(a[i]!)) return i;
  return -1;
}
const relRmse = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let d = 0, r = 0;
  for (let i = 0; i < b.length; i++) { d += (a[i]! - b[i]!) ** 2; r += b[i]! ** 2; }
  return Math.sqrt(d / Math.max(r, 1e-300));
};
const elementwiseLaunches = (p: Plan): number => p.launches.filter((l) => l.how === 'elementwise').length;

const cc = findCompiler();
const addon = cc ? loadNativeAddon() : { error: NO_COMPILER };
const noNative = !cc ? NO_COMPILER : 'error' in addon ? addon.error : undefined;

describe('msr plans against the plans without the pass', () => {
  let plain: Compilers;
  beforeAll(async () => { plain = await unfusedCompiler(); });
  const cases: { name: string; form: Form; opts: CompileOptions; fewer: boolean }[] = [
    { name: 'forward chunkwise', form: 'chunkwise', opts: {}, fewer: false },
    { name: 'forward parallel', form: 'parallel', opts: {}, fewer: false },
    { name: 'backward chunkwise', form: 'chunkwise', opts: { backward: true }, fewer: true },
    { name: 'backward recurrent', form: 'recurrent', opts: { backward: true }, fewer: true },
    { name: 'stateful chunkwise (t0 = 7)', form: 'chunkwise', opts: { stateful: true }, fewer: false },
    { name: 'stateful recurrent, a decode step', form: 'recurrent', opts: { stateful: true }, fewer: false },
  ];
  for (const c of cases) {
    test(`${c.name}: bit for bit on the CPU executor${c.fewer ? ', with fewer map launches' : ''}`, () => {
      const schedule = makeSchedule(c.form, 4);
      const a = planMod.compilePlan(msr, schedule, { ...c.opts, constants });
      const b = plain.plan.compilePlan(msr, schedule, { ...c.opts, constants });
      if (c.fewer) expect(elementwiseLaunches(a)).toBeLessThan(elementwiseLaunches(b));
      else expect(elementwiseLaunches(a)).toBeLessThanOrEqual(elementwiseLaunches(b));
      // Every tensor a launch binds is one of the plan's.
      for (const l of a.launches) for (const id of Object.values(l.buffers)) expect(a.fn.vars.has(id) || a.fn.params.some((p) => p.v === id), id).toBe(true);
      const sizes = { B: 2, T: c.opts.stateful && c.form === 'recurrent' ? 1 : 11, ...SIZES };
      const inputs = inputsFor(a, sizes, 23);
      const x = runPlanCpu(a, inputs), y = runPlanCpu(b, inputs);
      expect([...x.keys()].sort()).toEqual([...y.keys()].sort());
      for (const [k, v] of y) {
        const i = firstDifference(x.get(k)!.data, v.data);
        expect(i, `${k}[${i}]: ${x.get(k)!.data[i]} vs ${v.data[i]}`).toBe(-1);
      }
    });
  }

  for (const dtype of ['f16', 'bf16'] as const) {
    test(`backward chunkwise, ${dtype} storage: within the half bar of the f32 plan, no further than the unfused ${dtype} plan`, () => {
      const schedule = makeSchedule('chunkwise', 4, { dtype });
      const a = planMod.compilePlan(msr, schedule, { backward: true, constants });
      const b = plain.plan.compilePlan(msr, schedule, { backward: true, constants });
      const ref = plain.plan.compilePlan(msr, makeSchedule('chunkwise', 4), { backward: true, constants });
      expect(elementwiseLaunches(a)).toBeLessThan(elementwiseLaunches(b));
      const inputs = inputsFor(a, { B: 2, T: 11, ...SIZES }, 29);
      const x = runPlanCpu(a, inputs), y = runPlanCpu(b, inputs), r = runPlanCpu(ref, inputs);
      const bar = dtype === 'f16' ? 5e-3 : 4e-2;
      for (const [k, v] of r) {
        const ex = relRmse(x.get(k)!.data, v.data), ey = relRmse(y.get(k)!.data, v.data);
        expect(ex, `${k}: ${ex} (unfused ${ey})`).toBeLessThan(bar);
        expect(ex, `${k}: ${ex} (unfused ${ey})`).toBeLessThan(2 * ey + 1e-6);
      }
    });
  }

  test.skipIf(!!noNative)('backward chunkwise on native: bit for bit as the unfused plan on the CPU executor', async () => {
    const schedule = makeSchedule('chunkwise', 4);
    const a = planMod.compilePlan(msr, schedule, { backward: true, constants });
    const b = plain.plan.compilePlan(msr, schedule, { backward: true, constants });
    const inputs = inputsFor(a, { B: 2, T: 11, ...SIZES }, 31);
    const x = await runPlanNative(a, inputs), y = runPlanCpu(b, inputs);
    for (const [k, v] of y) {
      const i = firstDifference(x.get(k)!.data, v.data);
      expect(i, `${k}[${i}]: ${x.get(k)!.data[i]} vs ${v.data[i]}`).toBe(-1);
    }
  }, 120_000);
});

// ---- the tiny RetNet ----------------------------------------------------------------------------

describe('tiny RetNet with fusion', () => {
  const B = 2, T = 7, VOCAB = 11;
  const model: CheckedModel = instantiateModel(retnet, 'retnet', 'default', { embed_dim: 8, value_dim: 8, heads: 2, ffn_dim: 12, n_layers: 2, vocab: VOCAB, act: 'swish', eps: 1e-6, scale_embedding: 0, layernorm_embedding: 0 });
  const rand = prng(4321);
  const weights = new Map<string, Value>();
  for (const cw of model.weights) {
    const shape = [...cw.shape];
    const n = shape.reduce((a, b) => a * b, 1);
    const f = shape.length === 1 ? () => 0.5 + rand() : () => (rand() * 2 - 1) / Math.sqrt(shape[1] ?? 1);
    weights.set(cw.name, { shape, data: Float64Array.from({ length: n }, () => Math.fround(f())) });
  }
  const tokens: Value = { shape: [B, T], data: Float64Array.from({ length: B * T }, () => Math.floor(rand() * VOCAB)) };
  const toks: HostValue = { shape: [B, T], data: Int32Array.from(tokens.data) };
  const R = Float64Array.from({ length: B * T * VOCAB }, () => Math.fround(rand() * 2 - 1));
  const exec: PlanExec = async (p, i) => runPlanCpu(p, i as ReadonlyMap<string, Value>);
  let plain: Compilers;
  beforeAll(async () => { plain = await unfusedCompiler(); });

  for (const form of ['chunkwise', 'recurrent', 'parallel'] as const) {
    test(`${form}: forward within 1e-5 of the float64 reference, forward and gradient bit for bit as without fusion, fewer map launches`, async () => {
      const sched = makeSchedule(form, 3);
      const ref = runModel(model, weights, new Map([['tokens', tokens]])).get('logits')!.data;
      const fwd = await runModelPlan(pipelineMod.compileModel(model, sched), weights, new Map([['tokens', toks]]), exec);
      const logits = fwd.outputs.get('logits')!.data;
      expect(relRmse(logits, ref)).toBeLessThan(1e-5);
      const fwd0 = await runModelPlan(plain.pipeline.compileModel(model, sched), weights, new Map([['tokens', toks]]), exec);
      expect(firstDifference(logits, fwd0.outputs.get('logits')!.data)).toBe(-1);

      const mg = modelGradMod.compileModelGrad(model, sched), mg0 = plain.modelGrad.compileModelGrad(model, sched);
      const count = (ps: readonly Plan[]): number => ps.reduce((s, p) => s + elementwiseLaunches(p), 0);
      expect(count(mg.plans)).toBeLessThan(count(mg0.plans));
      const dOut = new Map([['logits', { shape: [B, T, VOCAB], data: R }]]);
      const g = await runModelBackward(mg, weights, new Map([['tokens', toks]]), dOut, exec);
      const g0 = await runModelBackward(mg0, weights, new Map([['tokens', toks]]), dOut, exec);
      expect([...g.grads.keys()].sort()).toEqual([...g0.grads.keys()].sort());
      for (const [k, v] of g0.grads) {
        const i = firstDifference(g.grads.get(k)!.data, v.data);
        expect(i, `${k}[${i}]`).toBe(-1);
      }
    }, 60_000);
  }
});

// ---- per-statement schedules ------------------------------------------------------------------

describe('a schedule that names a fused statement', () => {
  const fn = fnFrom(`
fn f(x: f32[T, D]) -> y: f32[T, D] {
  let a[t, d] = x[t, d] * 2.0
  y[t, d] = exp(a[t, d])
}`, 'f');
  test('a forward map fused away: its choice is still checked (a map takes only a workgroup), and it has no kernel to apply to', () => {
    const p = planMod.compilePlan(fn, makeSchedule('chunkwise', 8, { statements: { a: { workgroup: 64 } } }));
    expect(p.launches.map((l) => l.target)).toEqual(['y']);
    expect(p.launches[0]!.kernel.workgroup[0]).toBe(256);
    expect(() => planMod.compilePlan(fn, makeSchedule('chunkwise', 8, { statements: { a: { form: 'recurrent' } } }))).toThrow(/statement 'a' is elementwise/);
    // The reader's own choice applies to the fused kernel.
    const q = planMod.compilePlan(fn, makeSchedule('chunkwise', 8, { statements: { y: { workgroup: 32 } } }));
    expect(q.launches[0]!.kernel.workgroup[0]).toBe(32);
  });
});

// ---- every function of models/ -------------------------------------------------------------------

describe('every function of models/, forward, backward and stateful: bit for bit as without fusion (CPU executor)', () => {
  let plain: Compilers;
  beforeAll(async () => { plain = await unfusedCompiler(); });
  const fns = new Map<string, CheckedFn>();
  for (const m of ['retention', 'gated_retention', 'linear_attention', 'softmax_attention', 'retnet', 'train']) {
    for (const [name, fn] of loadProgram(`models/${m}.ret`).checked!.fns) if (!fns.has(name)) fns.set(name, fn);
  }
  for (const [name, fn] of fns) {
    test(name, () => {
      const syms = new Set<string>();
      for (const p of fn.params) for (const d of p.shape) for (const s of dimSymbols(d)) syms.add(s);
      for (const s of fn.sizes) syms.add(s);
      // Sizes of a function's own (sumsq[P, S] over N = P * S: a whole last block).
      const sizes = new Map([...syms].map((s) => [s, s === 'T' ? 5 : s === 'B' ? 2 : s === 'N' ? 9 : 3] as const));
      const constants = new Map([...sizes].filter(([s]) => s !== 'B' && s !== 'T'));
      let compared = 0;
      const variants: CompileOptions[] = [{}, { backward: true }, { stateful: true }];
      for (const form of ['chunkwise', 'parallel', 'recurrent'] as const) for (const v of variants) {
        const schedule = makeSchedule(form, 2);
        let a: Plan;
        try { a = planMod.compilePlan(fn, schedule, { ...v, constants }); } catch (e) {
          if (e instanceof planMod.ScheduleError) continue; // no such schedule (softmax chunkwise), no backward (integers), no state
          throw e;
        }
        const b = plain.plan.compilePlan(fn, schedule, { ...v, constants });
        expect(elementwiseLaunches(a)).toBeLessThanOrEqual(elementwiseLaunches(b));
        const rand = prng(41);
        const inputs = new Map<string, Value>();
        for (const p of a.fn.params) {
          if (p.default !== undefined) continue;
          const shape = p.shape.map((d) => devaluate(d, sizes)!);
          const v = uniform(shape, rand);
          inputs.set(p.name, p.dtype === 'i32' || p.dtype === 'i64' ? { shape, data: v.data.map((x) => Math.floor((x + 1) * 1.5)) } : v);
        }
        const x = runPlanCpu(a, inputs), y = runPlanCpu(b, inputs);
        for (const [k, v] of y) {
          const got = x.get(k)!.data;
          expect(got.length, k).toBe(v.data.length);
          for (let i = 0; i < v.data.length; i++) if (!Object.is(got[i], v.data[i])) expect(`${k}[${i}] = ${got[i]}`).toBe(`${k}[${i}] = ${v.data[i]}`);
          if (Array.from(v.data).some(Number.isFinite)) compared++;
        }
      }
      expect(compared).toBeGreaterThan(0);
    }, 60_000);
  }
});
