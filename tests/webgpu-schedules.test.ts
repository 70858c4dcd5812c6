// The schedules on WebGPU (runtime/webgpu/runner.ts, Dawn; lavapipe on machines without a GPU).
//
// 1. Runtime machinery with hand-written WGSL (independent of the WGSL printer): exact results,
//    one submit per run, pipelines shared across sizes, buffer reuse, foldX dispatch, empty
//    grids, and the one-line errors (limits, WGSL compilation, printer contract, device loss).
// 2. Property tests, describe.each over the schedule forms: retention, retention_state,
//    linear_attention and gated_retention compiled for random B, H, T, decays, chunk sizes and
//    the real head sizes (K in {1..16, 64, 128, 256}, V in {1..16, 64, 128, 256, 432, 512}, T up
//    to 300; tests/helpers/schedule-cases.ts, the same cases as tests/schedules.test.ts and as
//    many random ones, drawn in groups of WEBGPU_CASES_PER_SHAPE that share K, V and the chunk:
//    lavapipe's cost is compiling pipelines, one per kernel shape, and a group compiles once),
//    run on WebGPU forward and backward, agree with an independent float64
//    computation (the recurrent form and its reverse scan, tests/helpers/fast-reference.ts) to
//    relative RMSE <= 1e-5. Decay gradients (grad.gamma, grad.g) are sums that can cancel far
//    below the size of their terms; they are measured against max(RMS ref, their natural scale),
//    and so are o and the q, k, v gradients, whose inner dot products can cancel too (scaleOf;
//    a seed drew one at T = 1, V = 256). For decay gradients the CPU executor's float32 run of the
//    same plan is held to the same bar: each
//    is bounded against the truth, neither against the other. A chunk whose workgroup memory
//    does not fit the adapter is lowered for that case (listed after the run); sizes never are.
//    Then the Done-when cases: retention at (K, V) = (256, 432) and (128, 128), every schedule.
//
// Without a WebGPU adapter everything is skipped with the reason printed, unless
// REQUIRE_WEBGPU=1, which makes that a failure. The fast-check seed is fresh on every run and
// printed (`[webgpu-schedules] fast-check seed N`); FC_SEED=N reproduces it; FC_RUNS_SCALE scales
// the number of random cases; RN_CASES=1 logs every case with its WebGPU time. Lavapipe compiles
// with its fast-JIT settings (tests/helpers/lavapipe-jit.ts; RN_LAVAPIPE_OPT=1 keeps its defaults).
import { lavapipeJit } from './helpers/lavapipe-jit.js'; // first: before the device exists
import { afterAll, describe, expect, test } from 'vitest';
import * as K from '../compiler/kir.js';
import { compilePlan, type Plan } from '../compiler/plan.js';
import { FORMS, makeSchedule, type Form } from '../compiler/schedule.js';
import type { CheckedFn } from '../dsl/checked.js';
import { checkFiles } from '../dsl/checker.js';
import { parseSource } from '../dsl/parser.js';
import type { Value } from '../dsl/reference/interpreter.js';
import { SourceFile } from '../dsl/source.js';
import type { EmittedKernel } from '../targets/emitted.js';
import { acquireWebGPU } from '../runtime/webgpu/device.js';
import { evalKExpr } from '../runtime/kexpr-eval.js';
import { kernelLimitProblem, limitsOf, sharedBytes } from '../runtime/webgpu/limits.js';
import {
  releaseRuntimeDevice, runPlanWebGPU, runtimeDevice, runtimeStats, WebGPURunError, type EmitWGSL,
} from '../runtime/webgpu/runner.js';
import { assertProperty, fastReference, fcSeed, loadFn, plan, prng, relErr, runPlan, runsScale, seedFor, tensor, uniform } from './helpers/harness.js';
import {
  caseGroupArb, checkTensor, DECAY_GRADS, RANDOM_RUNS, describeCase, DONE_WHEN, FAMILIES, scaleOf, TOL, truthOf, WEBGPU_CASES_PER_SHAPE, Worst, type Case, type Family, type Truth,
} from './helpers/schedule-cases.js';
import { acquireTestGpu, requireGpu } from './helpers/webgpu.js';
import { decayScale, rmsOf } from './helpers/fast-reference.js';

const gpuInfo = await acquireTestGpu('webgpu-schedules');
if (lavapipeJit.length) console.log(`[webgpu-schedules] lavapipe fast JIT (where the adapter is lavapipe): ${lavapipeJit.join(' ')}`);
const gpu = gpuInfo.gpu;

function logStats(when: string): void {
  const s = runtimeStats();
  if (s) console.log(`[webgpu-schedules] runtime after ${when}: ${s.runs} runs, ${s.submits} submits, ${s.dispatches} dispatches (${s.skipped} empty grids skipped); pipelines compiled ${s.pipelines.compiled}, cache hits ${s.pipelines.hits}; buffers created ${s.pool.created} (${(s.pool.createdBytes / 2 ** 20).toFixed(1)} MiB), pool hits ${s.pool.hits}`);
}

afterAll(async () => {
  await releaseRuntimeDevice();
});

test('a WebGPU adapter is available (required when REQUIRE_WEBGPU=1)', (ctx) => requireGpu(gpuInfo, () => ctx.skip()));

// ---- helpers --------------------------------------------------------------------------

const numel = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);

function compileSource(text: string): Map<string, CheckedFn> {
  const { ast, diagnostics } = parseSource(new SourceFile('webgpu-test.ret', text));
  const r = checkFiles([ast]);
  const all = [...diagnostics, ...r.diagnostics];
  if (all.length) throw new Error(all.map((d) => d.message).join('; '));
  return r.fns;
}

const SMALL = compileSource(`
fn twice(x: f32[N]) -> y: f32[N] {
  y[n] = x[n] * 2.0
}
# y an output: map fusion (compiler/fuse-maps.ts) keeps it a kernel of its own, so the plan has two
# launches (the tests below replace both kernels by hand-written ones)
fn chain(x: f32[N]) -> (y: f32[N], z: f32[N]) {
  y[n] = x[n] * 2.0
  z[n] = y[n] + 1.0
}
`);

/**
 * A hand-written WGSL kernel `out[i] = in[i] * mul + add` for an elementwise launch, with
 * `wg` threads per workgroup, grid x = ceil(N / wg) folded when `fold`.
 */
function affineKernel(l: Plan['launches'][number], mul: number, add: number, wg = 256, fold = true): EmittedKernel {
  const input = l.kernel.buffers.find((b) => b.access === 'read')!.name;
  const output = l.kernel.buffers.find((b) => b.access === 'read_write')!.name;
  const gx = wg === 1 ? 'u.size_N' : `(u.size_N + ${wg - 1}) / ${wg}`;
  const code = [
    'struct Scalars { size_N: i32 }',
    `@group(0) @binding(0) var<storage, read> ${input}: array<f32>;`,
    `@group(0) @binding(1) var<storage, read_write> ${output}: array<f32>;`,
    '@group(0) @binding(2) var<uniform> u: Scalars;',
    `@compute @workgroup_size(${wg})`,
    'fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {',
    `  let gx = ${gx};`,
    fold ? '  let fx = (gx + 65534) / 65535;' : '  let fx = 1;',
    '  let wx = i32(wid.x) + 65535 * (i32(wid.y) % fx);',
    '  if (wx >= gx) { return; }',
    `  let gid = wx * ${wg} + i32(lid.x);`,
    `  if (gid < u.size_N) { ${output}[gid] = ${input}[gid] * ${mul.toFixed(1)} + ${add.toFixed(1)}; }`,
    '}',
  ].join('\n');
  const n = K.v('size_N');
  return {
    target: 'wgsl', entry: 'main', code, workgroup: [wg, 1, 1],
    buffers: [{ name: input, type: 'f32', access: 'read', binding: 0 }, { name: output, type: 'f32', access: 'read_write', binding: 1 }],
    scalars: [{ name: 'size_N', type: 'i32', offset: 0 }],
    uniform: { binding: 2, size: 4 },
    grid: [wg === 1 ? n : K.div(K.add(n, K.i32(wg - 1)), K.i32(wg)), K.i32(1), K.i32(1)],
    foldX: fold,
    dynamicSharedBytes: 0,
  };
}

/** An emitter from kernel name to hand-written kernels. */
const handEmit = (table: Record<string, (l: Plan['launches'][number]) => EmittedKernel>, plan: Plan): EmitWGSL => (k) => {
  const l = plan.launches.find((x) => x.kernel === k)!;
  const f = table[k.name];
  if (!f) throw new Error(`no hand-written kernel for ${k.name}`);
  return f(l);
};

const ramp = (n: number): Value => ({ shape: [n], data: Float64Array.from({ length: n }, (_, i) => (i % 1000) - 500 + 0.25) });

async function expectRunError(p: Promise<unknown>, kind: WebGPURunError['kind'], re: RegExp): Promise<string> {
  let err: unknown;
  try { await p; } catch (e) { err = e; }
  expect(err, 'expected the run to fail').toBeInstanceOf(WebGPURunError);
  const e = err as WebGPURunError;
  expect(e.message).not.toMatch(/\n/);
  expect({ kind: e.kind, message: e.message }).toMatchObject({ kind });
  expect(e.message).toMatch(re);
  return e.message;
}

// ---- 1. runtime machinery (hand-written WGSL) ------------------------------------------

test('evalKExpr follows the kernel IR: i32 wraps, / truncates, x / 0 = 0, % takes the dividend sign', () => {
  const s = { a: -7, b: 2, big: 2147483647, z: 0 };
  const ev = (e: K.KExpr) => evalKExpr(e, s);
  expect(ev(K.div(K.v('a'), K.v('b')))).toBe(-3);
  expect(ev(K.bin('%', K.v('a'), K.v('b')))).toBe(-1);
  expect(ev(K.div(K.v('a'), K.v('z')))).toBe(0);
  expect(ev(K.bin('%', K.v('a'), K.v('z')))).toBe(0);
  expect(ev(K.add(K.v('big'), K.i32(1)))).toBe(-2147483648);
  expect(ev(K.mul(K.v('big'), K.v('big')))).toBe(1);
  expect(ev(K.select(K.lt(K.v('a'), K.v('b')), K.i32(5), K.i32(6)))).toBe(5);
  expect(ev(K.bin('max', K.v('a'), K.v('b')))).toBe(2);
  expect(ev(K.cast(K.f32(-2.75), 'i32'))).toBe(-2);
  expect(() => ev(K.tid('x'))).toThrow(/builtin/);
});

test('the limits check without a device: WebGPU\'s default 16 KiB of workgroup memory holds parallel chunk 64, not 128; chunkwise holds 128', () => {
  const fn = loadFn('retention', 'retention');
  const defaults = limitsOf({});
  const problems = (form: 'parallel' | 'chunkwise', chunk: number): string[] => {
    const plan = compilePlan(fn, makeSchedule(form, chunk), { backward: true, constants: new Map([['K', 64], ['V', 64]]) });
    return plan.launches.map((l) => kernelLimitProblem(l.kernel, { schedule: plan.schedule, how: l.how }, defaults)).filter((x): x is string => x !== undefined);
  };
  expect(problems('parallel', 64)).toEqual([]);
  const p = problems('parallel', 128);
  expect(p.length).toBeGreaterThan(0);
  expect(p[0]).toMatch(/^kernel retention_bwd_\d+_parallel: chunk 128 needs 64 KiB of workgroup memory \(P: 16384 f32\); this adapter allows 16 KiB \(maxComputeWorkgroupStorageSize\); use chunk 64 or smaller$/);
  // Chunkwise scores 8 rows of a chunk at a time: its workgroup memory grows linearly with the chunk.
  expect(problems('chunkwise', 128)).toEqual([]);
});


describe.skipIf(!gpu)('WebGPU runtime machinery', { timeout: 60_000 }, () => {
  afterAll(() => logStats('the machinery tests'));

  test('an elementwise plan: exact, one submit per run, one pipeline for every N, pooled buffers', async () => {
    const plan = compilePlan(SMALL.get('twice')!, makeSchedule('parallel'));
    const emit = handEmit({ twice_0_map: (l) => affineKernel(l, 2, 0) }, plan);
    const before = runtimeStats()!;
    for (const n of [1000, 37, 1000, 1]) {
      const out = await runPlanWebGPU(plan, new Map([['x', ramp(n)]]), { emit });
      const y = out.get('y')!;
      expect(y.shape).toEqual([n]);
      expect(y.data).toBeInstanceOf(Float32Array);
      expect(Array.from(y.data)).toEqual(Array.from(ramp(n).data, (v) => Math.fround(v * 2)));
    }
    const after = runtimeStats()!;
    expect(after.submits - before.submits).toBe(4);
    expect(after.runs - before.runs).toBe(4);
    expect(after.pipelines.compiled - before.pipelines.compiled).toBeLessThanOrEqual(1);
    expect(after.pipelines.hits - before.pipelines.hits).toBeGreaterThanOrEqual(3);
    expect(after.pool.hits - before.pool.hits).toBeGreaterThanOrEqual(6); // x, y, uniforms, readback of runs 2..4
  });

  test('two launches in one pass and one submit: the second sees the first one\'s writes', async () => {
    const plan = compilePlan(SMALL.get('chain')!, makeSchedule('parallel'));
    const emit = handEmit({ chain_0_map: (l) => affineKernel(l, 2, 0), chain_1_map: (l) => affineKernel(l, 1, 1) }, plan);
    const before = runtimeStats()!;
    const n = 4099;
    const out = await runPlanWebGPU(plan, new Map([['x', ramp(n)]]), { emit });
    expect(Array.from(out.get('z')!.data)).toEqual(Array.from(ramp(n).data, (v) => Math.fround(Math.fround(v * 2) + 1)));
    const after = runtimeStats()!;
    expect(after.submits - before.submits).toBe(1);
    expect(after.dispatches - before.dispatches).toBe(2);
  });

  test('foldX: 70003 workgroups are dispatched as (65535, 2, 1) and every one runs', async () => {
    const plan = compilePlan(SMALL.get('twice')!, makeSchedule('parallel'));
    const n = 70_003;
    const out = await runPlanWebGPU(plan, new Map([['x', ramp(n)]]), { emit: handEmit({ twice_0_map: (l) => affineKernel(l, 2, 0, 1, true) }, plan) });
    const y = out.get('y')!.data;
    expect(y.length).toBe(n);
    let bad = -1;
    for (let i = 0; i < n; i++) if (y[i] !== Math.fround(((i % 1000) - 500 + 0.25) * 2)) { bad = i; break; }
    expect(bad).toBe(-1);
    // Without foldX the same grid does not fit one dimension.
    await expectRunError(
      runPlanWebGPU(plan, new Map([['x', ramp(n)]]), { emit: handEmit({ twice_0_map: (l) => affineKernel(l, 2, 0, 1, false) }, plan) }),
      'limits', /kernel twice_0_map needs 70003 workgroups in x .*maxComputeWorkgroupsPerDimension/);
  });

  test('B * H = 70000 (> 65535 workgroups in y): every schedule of retention, forward and backward, is folded into z and agrees with float64', async () => {
    const fn = loadFn('retention', 'retention');
    const B = 70_000, H = 1, T = 3;
    const rand = prng(70_000);
    const inputs = new Map<string, Value>([['q', uniform([B, H, T, 1], rand)], ['k', uniform([B, H, T, 1], rand)], ['v', uniform([B, H, T, 1], rand)], ['gamma', tensor([H], () => 0.75)]]);
    const truth = fastReference(fn, inputs, rand);
    for (const form of FORMS) {
      const fwd = await runPlanWebGPU(plan(fn, form, 2, false, { K: 1, V: 1 }), inputs);
      const bwd = await runPlanWebGPU(plan(fn, form, 2, true, { K: 1, V: 1 }), new Map([...inputs, ...truth.ups]));
      const got = new Map([...fwd, ...bwd]);
      for (const [name, want] of [...truth.outs, ...[...truth.grads].filter(([n]) => n !== 'grad.gamma')]) {
        const e = relErr(got.get(name)!.data, want.data);
        expect(e.nonFinite, `${form} ${name}`).toBe(0);
        // Every batch entry is written: a dropped workgroup leaves zeros, far above the bar.
        expect(e.rel, `${form} ${name}`).toBeLessThanOrEqual(TOL);
      }
      // grad.gamma, a sum over 70000 x 3 positions, against max(its RMS, its natural scale).
      const dg = relErr(got.get('grad.gamma')!.data, truth.grads.get('grad.gamma')!.data);
      const scale = rmsOf(decayScale('retention', inputs, truth.ups)!.data);
      expect(dg.rmsDiff / Math.max(dg.rmsRef, scale), `${form} grad.gamma`).toBeLessThanOrEqual(TOL);
    }
  });

  test('an empty tensor skips the dispatch and returns an empty output', async () => {
    const plan = compilePlan(SMALL.get('chain')!, makeSchedule('parallel'));
    const emit = handEmit({ chain_0_map: (l) => affineKernel(l, 2, 0), chain_1_map: (l) => affineKernel(l, 1, 1) }, plan);
    const before = runtimeStats()!;
    const out = await runPlanWebGPU(plan, new Map([['x', ramp(0)]]), { emit });
    expect(out.get('z')!.shape).toEqual([0]);
    expect(out.get('z')!.data.length).toBe(0);
    const after = runtimeStats()!;
    expect(after.dispatches - before.dispatches).toBe(0);
    expect(after.submits - before.submits).toBe(0);
    expect(after.skipped - before.skipped).toBe(2);
  });

  test('WGSL that does not compile is a one-line error naming the kernel and the line', async () => {
    const plan = compilePlan(SMALL.get('twice')!, makeSchedule('parallel'));
    const broken = (l: Plan['launches'][number]): EmittedKernel => {
      const e = affineKernel(l, 2, 0);
      return { ...e, code: e.code.replace('let gx = ', 'let gx = undefined_thing + ') };
    };
    const msg = await expectRunError(runPlanWebGPU(plan, new Map([['x', ramp(8)]]), { emit: handEmit({ twice_0_map: broken }, plan) }),
      'shader', /^WGSL of kernel twice_0_map \(entry main\) was rejected: line 7:\d+: .*undefined_thing/);
    console.log(`[webgpu-schedules] shader error: ${msg}`);
  });

  test('printer output that breaks the contract is reported as such', async () => {
    const plan = compilePlan(SMALL.get('twice')!, makeSchedule('parallel'));
    const noY = (l: Plan['launches'][number]): EmittedKernel => { const e = affineKernel(l, 2, 0); return { ...e, buffers: e.buffers.slice(0, 1) }; };
    await expectRunError(runPlanWebGPU(plan, new Map([['x', ramp(8)]]), { emit: handEmit({ twice_0_map: noY }, plan) }),
      'contract', /kernel twice_0_map: buffer 'y' has no binding/);
  });

  test('a chunk too big for workgroup memory is a one-line error that suggests a smaller chunk', async () => {
    const fn = loadFn('retention', 'retention');
    const lim = limitsOf(gpu!.info.limits);
    const big = 2 ** Math.ceil(Math.log2(Math.sqrt(lim.maxComputeWorkgroupStorageSize / 4) + 1)); // 128 on a 32 KiB adapter
    const plan = compilePlan(fn, makeSchedule('parallel', big), { constants: new Map([['K', 64], ['V', 64]]) });
    const inputs = retentionInputs(1, 1, 3, 64, 64);
    const msg = await expectRunError(runPlanWebGPU(plan, inputs, { emit: () => { throw new Error('the printer must not be reached'); } }),
      'limits', new RegExp(`^kernel retention_0_parallel: chunk ${big} needs ${(big * big * 4) / 1024} KiB of workgroup memory \\(P: ${big * big} f32\\); this adapter allows ${lim.maxComputeWorkgroupStorageSize / 1024} KiB \\(maxComputeWorkgroupStorageSize\\); use chunk ${big / 2} or smaller$`));
    console.log(`[webgpu-schedules] limits error: ${msg}`);
  });

  test('limits report: retention and its gradient with K = V = 64 at chunk 16, 32, 64', () => {
    const fn = loadFn('retention', 'retention');
    const lim = limitsOf(gpu!.info.limits);
    const lines: string[] = [];
    for (const form of ['chunkwise', 'parallel'] as const) {
      for (const chunk of [16, 32, 64]) {
        for (const backward of [false, true]) {
          const plan = compilePlan(fn, makeSchedule(form, chunk), { backward, constants: new Map([['K', 64], ['V', 64]]) });
          const mem = Math.max(...plan.launches.map((l) => sharedBytes(l.kernel)));
          const problems = plan.launches.map((l) => kernelLimitProblem(l.kernel, { schedule: plan.schedule, how: l.how }, lim)).filter(Boolean);
          const on16 = plan.launches.map((l) => kernelLimitProblem(l.kernel, { schedule: plan.schedule, how: l.how }, { ...lim, maxComputeWorkgroupStorageSize: 16384 })).filter(Boolean);
          lines.push(`${form} chunk ${chunk}${backward ? ' backward' : ''}: ${mem / 1024} KiB of workgroup memory at most; ${problems.length ? problems[0] : 'fits this adapter'}; on a 16 KiB adapter: ${on16.length ? on16[0] : 'fits'}`);
          // Parallel: 4 * chunk^2 bytes of scores, chunk 64 is exactly WebGPU's default 16 KiB. Chunkwise:
          // scores of 8 rows, three decay tables of a chunk (wr, we, wd), and the sums of 8 rows over the key
          // slices: 8 x 64 threads x 4 columns each (the decay gradient, with two states: 8 x 128 x 2).
          const want = form === 'parallel' ? 4 * chunk * chunk : 4 * (Math.min(chunk, 8) * chunk + 3 * chunk + 8 * 256);
          expect(mem).toBe(want);
          if (want <= lim.maxComputeWorkgroupStorageSize) expect(problems).toEqual([]);
        }
      }
    }
    console.log(`[webgpu-schedules] limits on ${gpu!.info.summary}:\n  ${lines.join('\n  ')}`);
  });

  test('a lost device is a one-line error', async () => {
    const plan = compilePlan(SMALL.get('twice')!, makeSchedule('parallel'));
    const emit = handEmit({ twice_0_map: (l) => affineKernel(l, 2, 0) }, plan);
    const other = await acquireWebGPU({ label: 'webgpu-schedules-loss' });
    const ok = await runPlanWebGPU(plan, new Map([['x', ramp(5)]]), { device: other, emit });
    expect(Array.from(ok.get('y')!.data)).toEqual(Array.from(ramp(5).data, (v) => v * 2));
    other.release();
    await other.device.lost;
    await expectRunError(runPlanWebGPU(plan, new Map([['x', ramp(5)]]), { device: other, emit }), 'device-lost', /^WebGPU device lost \(destroyed\) before running twice/);
  });
});

// ---- 2. the schedules, property-tested against the float64 truth ------------------------

const SEED = fcSeed('webgpu-schedules');
/** Per-property time limit (runs only: a failure ends the property without shrinking). */
const TIME_LIMIT_MS = Number(process.env['FC_TIME_LIMIT_MS'] ?? 480_000);

function retentionInputs(B: number, H: number, T: number, Kd: number, Vd: number): Map<string, Value> {
  const r = prng(1);
  return new Map([['q', uniform([B, H, T, Kd], r)], ['k', uniform([B, H, T, Kd], r)], ['v', uniform([B, H, T, Vd], r)], ['gamma', tensor([H], () => 0.9)]]);
}

/**
 * One fixed case, run first: T = 1 with V = 63 (one workgroup, most of it idle). The time goes to
 * random cases (as many as on the CPU executor) and to the fixed real-size cases below.
 */
const EXAMPLES: Case[] = [
  { B: 1, H: 1, T: 1, K: 7, V: 63, chunk: 32, gammas: [0.75], gate: 'zeros', data: 3, tKind: 'one' },
  // Decay bases 0 and negative through the K-tiled state (K = 130: three key slices, one padded).
  { B: 1, H: 2, T: 50, K: 130, V: 40, chunk: 16, gammas: [-0.7, 0], gate: 'mixed', data: 130, tKind: 'ragged' },
];

/** The largest chunk whose score tile (4 chunk^2 bytes) fits this adapter's workgroup memory. */
const MAX_CHUNK = Math.min(128, Math.floor(Math.sqrt((gpu?.info.limits['maxComputeWorkgroupStorageSize'] ?? 16384) / 4)));
const limits = limitsOf(gpu?.info.limits ?? {});

const gpuTime = { ms: 0, runs: 0, cpuMs: 0, truthMs: 0, cases: 0 };
const worst = new Worst();
/** Chunks made smaller than drawn because the plan's workgroup memory did not fit the adapter. */
const refitted: string[] = [];
const truths = new Map<string, Truth>();

/** The float64 truth of a case, computed once and shared by the three forms. */
function truthFor(f: Family, fn: CheckedFn, c: Case): Truth {
  const key = `${f.name}|${JSON.stringify({ ...c, chunk: 0, tKind: '' })}`;
  let t = truths.get(key);
  if (!t) {
    t = truthOf(fn, f, c);
    gpuTime.truthMs += t.ms;
    gpuTime.cases++;
    if (truths.size > 32) truths.clear();
    truths.set(key, t);
  }
  return t;
}

/**
 * The plans of a case: its chunk if every kernel fits this adapter, else the largest smaller
 * chunk that does (a chunk too big is refused by the runtime in one line; here the size stays
 * and the chunk goes down, and the case is listed after the run).
 */
function plansFor(fn: CheckedFn, form: Form, c: Case): { fwd: Plan; bwd: Plan; chunk: number } {
  const planOf = (chunk: number, backward: boolean): Plan => plan(fn, form, chunk, backward, { K: c.K, V: c.V });
  const fits = (p: Plan): boolean => p.launches.every((l) => kernelLimitProblem(l.kernel, { schedule: p.schedule, how: l.how }, limits) === undefined);
  for (let chunk = c.chunk; ; chunk = Math.max(1, Math.floor(chunk / 2))) {
    const fwd = planOf(chunk, false), bwd = planOf(chunk, true);
    if (fits(fwd) && fits(bwd)) {
      if (chunk !== c.chunk) refitted.push(`${fn.name} ${form} ${describeCase(c)}: chunk ${chunk}`);
      return { fwd, bwd, chunk };
    }
    if (chunk === 1) throw new Error(`${fn.name} ${form} K=${c.K} V=${c.V}: no chunk fits this adapter: ${[...fwd.launches, ...bwd.launches].map((l) => kernelLimitProblem(l.kernel, { schedule: fwd.schedule, how: l.how }, limits)).find(Boolean)}`);
  }
}

/**
 * One case on WebGPU: outputs and gradients within TOL of the float64 truth; decay gradients
 * against max(RMS ref, natural scale), and for those the CPU executor's float32 run of the same
 * backward plan is held to the same bar (each bounded against the truth, neither against the other).
 */
async function checkCase(f: Family, form: Form, c: Case, local?: Worst, plainDecay = false): Promise<void> {
  const fn = loadFn(f.file, f.name);
  const truth = truthFor(f, fn, c);
  const { fwd: fwdPlan, bwd: bwdPlan, chunk } = plansFor(fn, form, c);
  const bwdInputs = new Map([...truth.inputs, ...truth.ref.ups]);
  const t0 = performance.now();
  const fwd = await runPlanWebGPU(fwdPlan, truth.inputs);
  const bwd = await runPlanWebGPU(bwdPlan, bwdInputs);
  const ms = performance.now() - t0;
  gpuTime.ms += ms;
  gpuTime.runs += 2;
  if (process.env['RN_CASES']) console.log(`[case] ${f.name} ${form} ${describeCase(c)} webgpu ${ms.toFixed(0)} ms`);
  const problems: string[] = [];
  const label = (what: string): string => `${f.name} ${form} chunk=${chunk} ${what}`;
  const key = (what: string, dev = 'webgpu'): string => `${f.name} ${form} ${what}${dev === 'webgpu' ? '' : ` (${dev})`}`;
  const notes = [worst, ...(local ? [local] : [])];
  const check = (what: string, got: Parameters<typeof checkTensor>[2], want: Value, scale?: Value, dev = 'webgpu'): void => {
    for (const w of notes) checkTensor(`${label(what)}${dev === 'webgpu' ? '' : ` on the ${dev}`}`, key(what, dev), got, want, w === worst ? problems : [], w, scale);
  };
  // The fixed Done-when cases (plainDecay) are held to the plain relative RMSE; random cases
  // against max(RMS ref, natural scale) (helpers/schedule-cases.ts scaleOf).
  const scaleFor = (name: string): Value | undefined => (plainDecay ? undefined : scaleOf(truth, name));
  for (const [name, want] of truth.ref.outs) check(name, fwd.get(name), want, scaleFor(name));
  let cpu: Map<string, { shape: number[]; data: Float32Array | Int32Array }> | undefined;
  for (const [name, want] of truth.ref.grads) {
    if (!DECAY_GRADS.has(name)) { check(name, bwd.get(name), want, scaleFor(name)); continue; }
    const scale = scaleFor(name);
    check(name, bwd.get(name), want, scale);
    if (!cpu) {
      const c0 = performance.now();
      cpu = runPlan(bwdPlan, bwdInputs);
      gpuTime.cpuMs += performance.now() - c0;
    }
    check(name, cpu.get(name), want, scale, 'cpu executor');
  }
  if (problems.length) throw new Error(`${f.name} ${form}, ${describeCase(c)} (reproduce with FC_SEED=${SEED}):\n  ${problems.join('\n  ')}`);
}

describe.skipIf(!gpu).each(FORMS)('%s schedule on WebGPU', { timeout: 600_000 }, (form) => {
  afterAll(() => logStats(`the ${form} schedule`));
  test.each(FAMILIES)(`$name: outputs and gradients agree with the float64 truth to relative RMSE <= ${TOL.toExponential(0)}`, async (f) => {
    // Random cases in groups that share a kernel shape: one compile of a group's plans, several inputs.
    const groups = Math.max(1, Math.round((RANDOM_RUNS * runsScale()) / WEBGPU_CASES_PER_SHAPE));
    let cases = 0;
    const runs = await assertProperty(caseGroupArb(MAX_CHUNK, WEBGPU_CASES_PER_SHAPE), async (group) => {
      for (const c of group) { cases++; await checkCase(f, form, c); }
    }, {
      seed: seedFor(SEED, f.name), randomRuns: groups, examples: EXAMPLES.map((c) => [c]), timeLimitMs: TIME_LIMIT_MS, endOnFailure: true,
    });
    expect(runs).toBe(EXAMPLES.length + groups);
    expect(cases).toBe(EXAMPLES.length + groups * WEBGPU_CASES_PER_SHAPE);
  });
});

// The Done-when cases as fixed examples: retention, every schedule, forward and backward (grad
// q, k, v, gamma), at K = 256, V = 432 and at K = V = 128, T ragged against the chunk, within
// relative RMSE 1e-5 of the float64 truth, grad.gamma under the plain relative RMSE (no natural
// scale), on WebGPU and (grad.gamma) on the CPU executor.
describe.skipIf(!gpu)('retention at the real head sizes on WebGPU (fixed cases)', { timeout: 300_000 }, () => {
  const f = FAMILIES[0]!;
  for (const c of DONE_WHEN) {
    test.each(FORMS)(`K=${c.K} V=${c.V} T=${c.T} chunk=${c.chunk} %s: o, grad.q, grad.k, grad.v, grad.gamma within ${TOL}`, async (form) => {
      const local = new Worst();
      const t0 = performance.now();
      let err: unknown;
      try { await checkCase(f, form, c, local, true); } catch (e) { err = e; }
      console.log(`[webgpu-schedules] ${describeCase(c)} ${form} (${((performance.now() - t0) / 1000).toFixed(1)} s): relative RMSE ${local.lines().join(', ')}`);
      if (err) throw err;
    });
  }
});

afterAll(() => {
  if (gpuTime.cases || gpuTime.runs) {
    console.log(`[webgpu-schedules] seed ${SEED}: float64 truth for ${gpuTime.cases} cases in ${(gpuTime.truthMs / 1000).toFixed(1)} s; WebGPU: ${gpuTime.runs} plan runs in ${(gpuTime.ms / 1000).toFixed(1)} s; CPU executor (decay gradients): ${(gpuTime.cpuMs / 1000).toFixed(1)} s`);
    console.log(`[webgpu-schedules] worst relative RMSE (decay gradients against max(RMS ref, natural scale)):\n  ${worst.lines().join('\n  ')}`);
    if (refitted.length) console.log(`[webgpu-schedules] chunks lowered to fit the adapter's workgroup memory:\n  ${refitted.join('\n  ')}`);
  }
});

// Runs last: the process-wide device is destroyed and must come back on the next run.
describe.skipIf(!gpu)('WebGPU runtime device', () => {
  test('the process-wide device is reacquired after it is lost', async () => {
    const plan = compilePlan(SMALL.get('twice')!, makeSchedule('parallel'));
    const emit = handEmit({ twice_0_map: (l) => affineKernel(l, 2, 0) }, plan);
    const first = await runtimeDevice();
    first.release();
    await first.device.lost;
    const out = await runPlanWebGPU(plan, new Map([['x', ramp(3)]]), { emit });
    expect(Array.from(out.get('y')!.data)).toEqual(Array.from(ramp(3).data, (v) => v * 2));
    expect((await runtimeDevice()).device).not.toBe(first.device);
  });
});
