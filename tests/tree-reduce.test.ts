// Tree reductions (compiler/lower/reduce.ts, schedule field reduce: 'tree'): sums over long
// extents into few outputs (RetNet's rmsnorm weight gradient over B*T, a sum over [B, T] with T
// not a multiple of the workgroup, the cross-entropy loss, the squared norm of a 100k vector,
// a sum with a range constraint and a tail) lowered as a workgroup per output with a
// workgroup-memory tree agree with the float64 reference (relative RMSE <= 1e-6) on the CPU
// executor, native (skipped without a C compiler unless REQUIRE_NATIVE=1) and WebGPU (skipped
// without an adapter unless REQUIRE_WEBGPU=1); the tiny RetNet's backward with trees (its three
// norm weight gradients) equals the serial one on the CPU executor; the trees' WGSL (the cases,
// RetNet tiny and base) validates in Dawn and their CUDA compiles with nvcc (sm_80, sm_90) with
// 0 spill bytes and 0 stack; the schedule field reads back from JSON; target defaults.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { verifyKernel } from '../compiler/kir-verify.js';
import { defaultTreeShape } from '../compiler/lower/reduce.js';
import { compileModelGrad } from '../compiler/model-grad.js';
import { boundWeights } from '../compiler/model-split.js';
import { modelProgram } from '../compiler/pipeline.js';
import { compilePlan, type Launch, type Plan, ScheduleError } from '../compiler/plan.js';
import { makeSchedule, type Schedule, scheduleFromJson, scheduleKey, scheduleToJson } from '../compiler/schedule.js';
import type { CheckedFn, CheckedModel } from '../dsl/checked.js';
import { checkFiles } from '../dsl/checker.js';
import { devaluate } from '../dsl/dims.js';
import { parseSource } from '../dsl/parser.js';
import { instantiateModel, loadProgram } from '../dsl/program.js';
import { runFunction, type Value } from '../dsl/reference/interpreter.js';
import { SourceFile } from '../dsl/source.js';
import { runModelBackward } from '../runtime/model-backward.js';
import type { PlanExec } from '../runtime/model-runner.js';
import { loadNativeAddon } from '../runtime/native/addon.js';
import { runPlanNative } from '../runtime/native/runner.js';
import { runPlanCpu } from '../runtime/plan-runner.js';
import { withTargetDefaults } from '../runtime/targets.js';
import { validateWGSL, acquireWebGPU, type AcquiredWebGPU, WebGPUUnavailableError } from '../runtime/webgpu/device.js';
import { releaseRuntimeDevice, runPlanWebGPU } from '../runtime/webgpu/runner.js';
import { emitKernel } from '../targets/emit.js';
import { findCompiler, NO_COMPILER } from '../targets/native/compile.js';
import { literalGradient, loadFn, prng, relErr, upstreams } from './helpers/harness.js';
import { acquireTestGpu, requireGpu } from './helpers/webgpu.js';

const FNS = (() => {
  const { ast, diagnostics } = parseSource(new SourceFile('tree-reduce.ret', `
fn mean_sq(x: f32[B, T]) -> l: f32 {
  l = sum[b, t] x[b, t]^2 / (B * T)
}
fn sqnorm(g: f32[N]) -> n2: f32 {
  n2 = sum[i] g[i]^2
}
fn col_norms(x: f32[R, C], eps: f32 = 0.5) -> y: f32[C] {
  y[c] = sqrt(sum[r < R - 3 * c] x[r, c] * x[r, c] + eps) * 2
}
`));
  const r = checkFiles([ast]);
  const all = [...diagnostics, ...r.diagnostics];
  if (all.length) throw new Error(all.map((d) => d.message).join('; '));
  return r.fns;
})();
const fnOf = (name: string): CheckedFn => FNS.get(name) ?? (name === 'cross_entropy_loss' ? loadFn('train', name) : loadFn('retnet', name));

const cc = findCompiler();
const addon = cc ? loadNativeAddon() : { error: NO_COMPILER };
const noNative = !cc ? NO_COMPILER : 'error' in addon ? addon.error : undefined;
if (noNative) console.log(`[tree-reduce] native runs skipped: ${noNative}`);
const gpuInfo = await acquireTestGpu('tree-reduce');
const gpu = gpuInfo.gpu;
afterAll(async () => { await releaseRuntimeDevice(); });

interface Case { name: string; fn: string; backward: boolean; sizes: Record<string, number>; trees: number }
const CASES: Case[] = [
  // grad.w[d] = sum over B*T = 903 positions, and the scalar grad.eps over B*T*D; grad.x is a map over [B, T, D].
  { name: 'rmsnorm weight gradient (sum over B*T into D)', fn: 'rmsnorm', backward: true, sizes: { B: 3, T: 301, D: 20 }, trees: 2 },
  { name: 'sum over [B, T], T = 333 not a multiple of the workgroup', fn: 'mean_sq', backward: false, sizes: { B: 3, T: 333 }, trees: 1 },
  { name: 'cross-entropy loss (scalar over B*T)', fn: 'cross_entropy_loss', backward: false, sizes: { B: 4, T: 150, V: 11 }, trees: 1 },
  { name: 'squared norm of a 100k vector', fn: 'sqnorm', backward: false, sizes: { N: 100_000 }, trees: 1 },
  { name: 'a range-constrained sum with a tail', fn: 'col_norms', backward: false, sizes: { R: 1500, C: 7 }, trees: 1 },
];

const TREE = makeSchedule('parallel', 16, { reduce: 'tree' });
const SERIAL = makeSchedule('parallel', 16);
/** Every size is a kernel constant (as a model's hypers are), but B and T stay runtime sizes where they exist. */
const constantsOf = (c: Case): Map<string, number> => new Map(Object.entries(c.sizes).filter(([k]) => k !== 'B' && k !== 'T'));
const planOf = (c: Case, s: Schedule): Plan => compilePlan(fnOf(c.fn), s, { backward: c.backward, constants: constantsOf(c) });

/** f32-representable inputs (targets as integers), the float64 reference of the plan's outputs. */
function inputsAndWant(c: Case): { inputs: Map<string, Value>; want: Map<string, Value> } {
  const fn = fnOf(c.fn);
  const rand = prng(c.name.length * 7 + 1);
  const sizes = new Map(Object.entries(c.sizes));
  const inputs = new Map<string, Value>();
  for (const q of fn.params) {
    if (q.shape.length === 0 && q.default !== undefined) continue;
    const shape = q.shape.map((d) => devaluate(d, sizes)!);
    const n = shape.reduce((a, b) => a * b, 1);
    const data = q.dtype === 'i32' ? Float64Array.from({ length: n }, () => Math.floor(rand() * sizes.get('V')!)) : Float64Array.from({ length: n }, () => Math.fround(rand() * 2 - 1));
    inputs.set(q.name, { shape, data });
  }
  if (!c.backward) return { inputs, want: runFunction(fn, inputs) };
  const outs = runFunction(fn, inputs);
  const ups = upstreams(fn, outs, rand);
  for (const [k, u] of ups) ups.set(k, { ...u, data: u.data.map((x) => Math.fround(x)) });
  const all = new Map([...inputs, ...ups]);
  return { inputs: all, want: runFunction(literalGradient(fn), all) };
}

function worst(got: ReadonlyMap<string, { data: ArrayLike<number> }>, want: ReadonlyMap<string, Value>): number {
  let w = 0;
  for (const [name, x] of want) {
    const g = got.get(name);
    expect(g, name).toBeDefined();
    const e = relErr(g!.data, x.data);
    expect(e.nonFinite, name).toBe(0);
    w = Math.max(w, e.rel);
  }
  return w;
}

describe('the plan takes a tree where the sizes suit it', () => {
  test.each(CASES)('$name', (c) => {
    const p = planOf(c, TREE);
    const trees = p.launches.filter((l) => l.how === 'reduce');
    expect(trees.length).toBe(c.trees);
    for (const l of trees) {
      expect(() => verifyKernel(l.kernel)).not.toThrow();
      expect(l.kernel.name).toMatch(/_tree$/);
    }
    expect(planOf(c, SERIAL).launches.some((l) => l.how === 'reduce')).toBe(false);
  });

  test('a short sum or many outputs stay serial; an unknown output count too', () => {
    const short = compilePlan(fnOf('sqnorm'), TREE, { constants: new Map([['N', 300]]) });
    expect(short.launches.map((l) => l.how)).toEqual(['elementwise']);
    const many = compilePlan(fnOf('col_norms'), TREE, { constants: new Map([['R', 4096], ['C', 5000]]) });
    expect(many.launches.map((l) => l.how)).toEqual(['elementwise']);
    const unknown = compilePlan(fnOf('col_norms'), TREE, {});
    expect(unknown.launches.map((l) => l.how)).toEqual(['elementwise']);
  });

  test('a statement choice forces a tree (any sizes) or keeps it serial, shaped by tiles outs and lanes', () => {
    const forced = compilePlan(fnOf('col_norms'), makeSchedule('parallel', 16, { statements: { y: { reduce: 'tree', tiles: { outs: 4, lanes: 32 } } } }), {});
    expect(forced.launches.map((l) => l.how)).toEqual(['reduce']);
    expect(forced.launches[0]!.kernel.workgroup).toEqual([128, 1, 1]);
    const kept = compilePlan(fnOf('sqnorm'), makeSchedule('chunkwise', 16, { reduce: 'tree', statements: { n2: { reduce: 'serial' } } }), { constants: new Map([['N', 100_000]]) });
    expect(kept.launches.map((l) => l.how)).toEqual(['elementwise']);
    expect(() => compilePlan(fnOf('retention'), makeSchedule('chunkwise', 16, { statements: { o: { reduce: 'tree' } } }), { constants: new Map([['K', 4], ['V', 4]]) })).toThrow(ScheduleError);
  });

  test('the default shape: 256 threads, adjacent threads on adjacent outputs, about 16 workgroups or more', () => {
    const shapeOf = (fn: string, constants: Record<string, number>) => compilePlan(fnOf(fn), TREE, { constants: new Map(Object.entries(constants)) }).launches.filter((l) => l.how === 'reduce').map((l) => l.kernel.workgroup[0] + ':' + JSON.stringify(l.kernel.grid[0]));
    expect(shapeOf('sqnorm', { N: 100_000 })).toEqual(['256:{"k":"const","type":"i32","value":1}']);
    expect(defaultTreeShape(compilePlan(fnOf('col_norms'), SERIAL, { constants: new Map([['R', 9000], ['C', 64]]) }).fn.body[0]!, new Map([['R', 9000], ['C', 64]]))).toEqual({ outs: 4, lanes: 64 });
    expect(defaultTreeShape(compilePlan(fnOf('col_norms'), SERIAL, { constants: new Map([['R', 9000], ['C', 512]]) }).fn.body[0]!, new Map([['R', 9000], ['C', 512]]))).toEqual({ outs: 32, lanes: 8 });
  });

  test('target defaults: cuda takes trees; cpu, native and webgpu keep serial sums', () => {
    const base = makeSchedule('chunkwise', 64);
    expect(withTargetDefaults(base, 'cuda').reduce).toBe('tree');
    for (const t of ['cpu', 'native', 'webgpu']) expect(withTargetDefaults(base, t).reduce).toBeUndefined();
  });

  test('the schedule field round-trips through JSON and keys', () => {
    const s = makeSchedule('chunkwise', 16, { reduce: 'tree', statements: { y: { reduce: 'serial' } } });
    const back = scheduleFromJson(JSON.parse(JSON.stringify(scheduleToJson(s))));
    expect(back).toEqual(s);
    expect(scheduleKey(back)).toBe(scheduleKey(s));
    expect(scheduleKey(s)).not.toBe(scheduleKey(makeSchedule('chunkwise', 16, { statements: { y: { reduce: 'serial' } } })));
    expect(() => scheduleFromJson({ form: 'chunkwise', reduce: 'pairwise' })).toThrow(/reduce must be one of serial, tree/);
    expect(() => scheduleFromJson({ form: 'chunkwise', statements: { y: { reduce: 1 } } })).toThrow(/reduce must be one of/);
  });
});

const BAR = 1e-6;

describe('tree reductions agree with the float64 reference', () => {
  const refs = new Map<string, ReturnType<typeof inputsAndWant>>();
  const ref = (c: Case) => { let r = refs.get(c.name); if (!r) refs.set(c.name, (r = inputsAndWant(c))); return r; };

  test.each(CASES)('cpu: $name', (c) => {
    const { inputs, want } = ref(c);
    const e = worst(runPlanCpu(planOf(c, TREE), inputs), want);
    expect(e).toBeLessThan(BAR);
  }, 60_000);

  test('a native C compiler and addon are available (required when REQUIRE_NATIVE=1)', (ctx) => {
    if (noNative && process.env['REQUIRE_NATIVE'] !== '1') ctx.skip();
    expect(noNative).toBeUndefined();
  });
  test('cpu, f16 storage: the rmsnorm backward with trees equals it with serial sums (<= 1e-3, f16 rounding of the stores)', () => {
    const c = CASES[0]!;
    const { inputs } = ref(c);
    const tp = planOf(c, makeSchedule('parallel', 16, { reduce: 'tree', dtype: 'f16' }));
    expect(tp.launches.filter((l) => l.how === 'reduce').length).toBe(c.trees);
    const tree = runPlanCpu(tp, inputs);
    const serial = runPlanCpu(planOf(c, makeSchedule('parallel', 16, { dtype: 'f16' })), inputs);
    for (const [k, v] of serial) expect(relErr(tree.get(k)!.data, v.data).rel, k).toBeLessThan(1e-3);
  });

  test.skipIf(!!noNative).each(CASES)('native: $name', async (c) => {
    const { inputs, want } = ref(c);
    const p = planOf(c, TREE);
    const e = worst(await runPlanNative(p, inputs), want);
    expect(e).toBeLessThan(BAR);
    // Deterministic: the same bits on a second run.
    const again = await runPlanNative(p, inputs);
    const first = await runPlanNative(p, inputs);
    for (const [k, v] of first) expect(Array.from(again.get(k)!.data)).toEqual(Array.from(v.data));
  }, 120_000);

  test('a WebGPU adapter is available (required when REQUIRE_WEBGPU=1)', (ctx) => requireGpu(gpuInfo, () => ctx.skip()));
  test.skipIf(!gpu).each(CASES)('webgpu: $name', async (c) => {
    const { inputs, want } = ref(c);
    const e = worst(await runPlanWebGPU(planOf(c, TREE), inputs, { device: gpu! }), want);
    expect(e).toBeLessThan(BAR);
  }, 120_000);
});

// ---- the tiny RetNet: its backward with trees equals its backward with serial sums --------------

const retnet = loadProgram(new URL('../models/retnet.ret', import.meta.url).pathname);
const modelOf = (size: string): CheckedModel => instantiateModel(retnet, 'retnet', size);
const modelTrees = (size: string): Launch[] => compileModelGrad(modelOf(size), makeSchedule('chunkwise', 64, { reduce: 'tree' })).plans.flatMap((p) => p.launches.filter((l) => l.how === 'reduce'));

describe('the tiny RetNet backward with tree reductions', () => {
  const model = modelOf('tiny');
  const rand = prng(5);
  const weights = new Map<string, Value>();
  for (const [name, { shape }] of boundWeights(modelProgram(model))) {
    const dims = shape.map((x) => devaluate(x, new Map())!);
    weights.set(name, { shape: dims, data: Float64Array.from({ length: dims.reduce((a, b) => a * b, 1) }, () => Math.fround((dims.length === 1 ? 1 : 0) + (rand() * 2 - 1) * (dims.length === 1 ? 0.1 : 0.3))) });
  }
  const vocab = weights.get('embed_tokens.weight')!.shape[0]!;
  const [B, T] = [2, 9];
  const tokens: Value = { shape: [B, T], data: Float64Array.from({ length: B * T }, () => Math.floor(rand() * vocab)) };
  const dlogits: Value = { shape: [B, T, vocab], data: Float64Array.from({ length: B * T * vocab }, () => Math.fround(rand() * 2 - 1)) };
  const grads = async (reduce: 'serial' | 'tree', exec: PlanExec) => (await runModelBackward(compileModelGrad(model, makeSchedule('chunkwise', 16, { reduce })), weights, new Map([['tokens', tokens]]), new Map([['logits', dlogits]]), exec)).grads;
  const cpu: PlanExec = async (p, i) => runPlanCpu(p, i as ReadonlyMap<string, Value>);

  test('its norm weight gradients are trees (and nothing else is)', () => {
    const outs = compileModelGrad(model, makeSchedule('chunkwise', 16, { reduce: 'tree' })).plans.flatMap((p) => p.launches.filter((l) => l.how === 'reduce').map((l) => p.fn.outputs.find((o) => o.v === l.target)?.name));
    expect(outs.sort()).toEqual(['grad.final_layer_norm.weight', 'grad.layer_norm.weight', 'grad.retention_layer_norm.weight']);
  });

  // On the CPU executor only: native would compile the whole model's kernels twice (~40 s here).
  test('cpu: every weight gradient equals the serial one (relative RMSE <= 1e-6)', async () => {
    const serial = await grads('serial', cpu);
    const tree = await grads('tree', cpu);
    expect([...tree.keys()].sort()).toEqual([...serial.keys()].sort());
    for (const [w, g] of serial) {
      const e = relErr(tree.get(w)!.data, g.data);
      expect(e.nonFinite, w).toBe(0);
      expect(e.rel, w).toBeLessThan(BAR);
    }
  }, 120_000);
});

// ---- printed code: WGSL validates, CUDA compiles with 0 spills ------------------------------------

/** The test cases' trees and the RetNet tiny and base backward's (B and T at run time). */
const treeKernels = () => [...CASES.flatMap((c) => planOf(c, TREE).launches.filter((l) => l.how === 'reduce').map((l) => l.kernel)), ...['tiny', 'base'].flatMap((size) => modelTrees(size).map((l) => ({ ...l.kernel, name: `${l.kernel.name}_${size}` })))];

describe('printed tree kernels', () => {
  let validator: AcquiredWebGPU | null = null;
  let why = '';
  afterAll(() => validator?.release());

  test('their kernel IR verifies (barriers in uniform control flow), the RetNet trees included', () => {
    const ks = treeKernels();
    expect(ks.length).toBe(CASES.reduce((n, c) => n + c.trees, 0) + 6);
    for (const k of ks) expect(() => verifyKernel(k), k.name).not.toThrow();
  });

  test('WGSL validates in Dawn (null backend)', async (ctx) => {
    try { validator = await acquireWebGPU({ dawnOptions: ['backend=null'], label: 'tree-reduce-validate' }); } catch (e) { if (e instanceof WebGPUUnavailableError) why = e.message; else throw e; }
    if (!validator) {
      if (process.env['REQUIRE_WEBGPU'] === '1') throw new Error(`REQUIRE_WEBGPU=1 but ${why}`);
      console.warn(`[tree-reduce] skipping WGSL validation: ${why}`);
      ctx.skip();
    }
    for (const k of treeKernels()) {
      const e = emitKernel(k, 'wgsl');
      const r = await validateWGSL(e.code, validator!.device);
      expect(r.ok, `${k.name}: ${r.messages.map((m) => `${m.line}:${m.col} ${m.message}`).join('; ')}`).toBe(true);
    }
  }, 60_000);

  const nvcc = spawnSync('nvcc', ['--version'], { encoding: 'utf8' }).status === 0;
  test.skipIf(!nvcc)('CUDA compiles with nvcc (sm_80, sm_90) with 0 spill bytes and 0 stack', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'retnetc-tree-'));
    const cu = path.join(dir, 'tree.cu');
    const seen = new Set<string>();
    fs.writeFileSync(cu, treeKernels().map((k) => emitKernel(k, 'cuda').code).filter((c) => (seen.has(c) ? false : (seen.add(c), true))).join('\n'));
    for (const arch of ['sm_80', 'sm_90']) {
      const a = spawnSync('nvcc', [`-arch=${arch}`, '-cubin', '-Xptxas', '-v', '-diag-suppress', '177', cu, '-o', path.join(dir, `tree.${arch}.cubin`)], { encoding: 'utf8' });
      expect(a.status, a.stderr).toBe(0);
      const lines = (a.stdout + a.stderr).split('\n').filter((l) => /bytes stack frame/.test(l));
      expect(lines.length).toBeGreaterThanOrEqual(seen.size);
      for (const l of lines) expect(l).toMatch(/0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads/);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }, 120_000);
});
