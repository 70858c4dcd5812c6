// The schedules on WebGPU (runtime/webgpu/runner.ts, Dawn; lavapipe on machines without a GPU).
//
// 1. Runtime machinery with hand-written WGSL (independent of the WGSL printer): exact results,
//    one submit per run, pipelines shared across sizes, buffer reuse, foldX dispatch, empty
//    grids, and the one-line errors (limits, WGSL compilation, printer contract, device loss).
// 2. Property tests, describe.each over the schedule forms: retention, retention_state,
//    linear_attention and gated_retention compiled for random B, H, T, K, V, decays and chunk
//    sizes, run on WebGPU forward and backward, agree with the float64 reference interpreter
//    (forward) and the literal float64 gradient to relative RMSE <= 1e-5. Decay gradients
//    (grad.gamma, grad.g) are sums that can cancel far below the size of their terms; they are
//    measured against max(RMS ref, their natural scale) (decayScale below), and where even that
//    fails, must be within 2x of the CPU executor's float32 run of the same plan (the plan's own
//    float32 error, not WebGPU's; such cases are listed after the run).
//
// Without a WebGPU adapter everything is skipped with the reason printed, unless
// REQUIRE_WEBGPU=1, which makes that a failure. FC_SEED reproduces a fast-check failure;
// FC_RUNS_SCALE scales the number of random cases and FC_COST_CAP the reference cost per case;
// RN_CASES=1 logs every case with its WebGPU time.
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { afterAll, describe, expect, test } from 'vitest';
import { gradient, upstreamName } from '../compiler/autodiff.js';
import { lowerFn, toChecked } from '../compiler/ir.js';
import * as K from '../compiler/kir.js';
import { compilePlan, specialisedSizes, type Plan } from '../compiler/plan.js';
import { FORMS, makeSchedule, type Form } from '../compiler/schedule.js';
import type { CheckedFn } from '../dsl/checked.js';
import { checkFiles } from '../dsl/checker.js';
import { parseSource } from '../dsl/parser.js';
import { loadProgram } from '../dsl/program.js';
import { runFunction, type Value } from '../dsl/reference/interpreter.js';
import { SourceFile } from '../dsl/source.js';
import { runPlanCpu } from '../runtime/plan-runner.js';
import type { EmittedKernel } from '../targets/emitted.js';
import { acquireWebGPU, WebGPUUnavailableError, type AcquiredWebGPU } from '../runtime/webgpu/device.js';
import { evalKExpr } from '../runtime/kexpr-eval.js';
import { kernelLimitProblem, limitsOf, sharedBytes } from '../runtime/webgpu/limits.js';
import {
  releaseRuntimeDevice, runPlanWebGPU, runtimeDevice, runtimeStats, WebGPURunError, type EmitWGSL,
} from '../runtime/webgpu/runner.js';

const REQUIRE = process.env['REQUIRE_WEBGPU'] === '1';
const ACQUIRE_TIMEOUT_MS = 30_000;

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

let gpu: AcquiredWebGPU | null = null;
let unavailable = '';
let unexpected: unknown = null;
try {
  gpu = await withTimeout(runtimeDevice(), ACQUIRE_TIMEOUT_MS, 'acquireWebGPU()');
} catch (e) {
  if (e instanceof WebGPUUnavailableError) unavailable = e.message;
  else if (e instanceof Error && /timed out/.test(e.message)) unavailable = `no WebGPU adapter: ${e.message}`;
  else unexpected = e;
}
if (!gpu && unavailable) console.warn(`[webgpu-schedules] ${REQUIRE ? 'FAIL (REQUIRE_WEBGPU=1)' : 'skipping'}: ${unavailable}`);
if (gpu) console.log(`[webgpu-schedules] ${gpu.info.summary}; maxComputeWorkgroupStorageSize=${gpu.info.limits['maxComputeWorkgroupStorageSize']}`);

function logStats(when: string): void {
  const s = runtimeStats();
  if (s) console.log(`[webgpu-schedules] runtime after ${when}: ${s.runs} runs, ${s.submits} submits, ${s.dispatches} dispatches (${s.skipped} empty grids skipped); pipelines compiled ${s.pipelines.compiled}, cache hits ${s.pipelines.hits}; buffers created ${s.pool.created} (${(s.pool.createdBytes / 2 ** 20).toFixed(1)} MiB), pool hits ${s.pool.hits}`);
}

afterAll(async () => {
  await releaseRuntimeDevice();
});

test('a WebGPU adapter is available (required when REQUIRE_WEBGPU=1)', (ctx) => {
  if (unexpected) throw unexpected;
  if (!gpu) {
    if (REQUIRE) throw new Error(`REQUIRE_WEBGPU=1 but ${unavailable}`);
    ctx.skip();
  }
});

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
fn chain(x: f32[N]) -> z: f32[N] {
  let y[n] = x[n] * 2.0
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
          // scores of 8 rows and the sums over 2 key slices of 64 columns for those rows.
          const want = form === 'parallel' ? 4 * chunk * chunk : 4 * (Math.min(chunk, 8) * chunk + 8 * 128);
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

// ---- 2. the schedules, property-tested against the float64 reference -------------------

const TOL = 1e-5;
const GAMMA_MAX = 1 - 2 ** -20;
const RUNS_SCALE = Number(process.env['FC_RUNS_SCALE'] ?? '1') > 0 ? Number(process.env['FC_RUNS_SCALE'] ?? '1') : 1;
const SEED = process.env['FC_SEED'] ? Number(process.env['FC_SEED']) | 0 : 0x9e_b6_20_25;
/** The reference interpreter costs ~0.5 us per unit of B*H*T(T+1)/2*K*V (forward + gradient). */
const COST_CAP = Number(process.env['FC_COST_CAP'] ?? 600_000);

const programs = new Map<string, ReturnType<typeof loadProgram>>();
function loadFn(file: string, name: string): CheckedFn {
  let p = programs.get(file);
  if (!p) programs.set(file, (p = loadProgram(fileURLToPath(new URL(`../models/${file}.ret`, import.meta.url)))));
  const fn = p.checked?.fns.get(name);
  if (!fn) throw new Error(`models/${file}.ret: no fn '${name}' (${p.diagnostics.map((d) => d.message).join('; ')})`);
  return fn;
}

/** mulberry32 */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Values rounded to float32, so the reference and the GPU see the same inputs. */
const tensor = (shape: number[], f: () => number): Value => ({ shape, data: Float64Array.from({ length: numel(shape) }, () => Math.fround(f())) });

function retentionInputs(B: number, H: number, T: number, Kd: number, Vd: number): Map<string, Value> {
  const r = prng(1);
  const u = () => r() * 2 - 1;
  return new Map([['q', tensor([B, H, T, Kd], u)], ['k', tensor([B, H, T, Kd], u)], ['v', tensor([B, H, T, Vd], u)], ['gamma', tensor([H], () => 0.9)]]);
}

/** `runs`: cases per form, the edge cases (EXAMPLES) included. */
interface Family { file: string; name: string; decay: 'gamma' | 'gate' | 'none'; state: boolean; runs: number }
const FAMILIES: Family[] = [
  { file: 'retention', name: 'retention', decay: 'gamma', state: false, runs: 8 },
  { file: 'retention', name: 'retention_state', decay: 'gamma', state: true, runs: 7 },
  { file: 'linear_attention', name: 'linear_attention', decay: 'none', state: false, runs: 6 },
  { file: 'gated_retention', name: 'gated_retention', decay: 'gate', state: false, runs: 7 },
];

interface Case {
  B: number; H: number; T: number; K: number; V: number; chunk: number;
  /** Decay per head; exactly 1 is allowed (no decay). */
  gammas: number[];
  /** Scale of the log gates g = -gate * u^2 (0: every gate is 1). */
  gate: number;
  data: number;
}

const cost = (c: Case): number => c.B * c.H * (c.T * (c.T + 1)) / 2 * c.K * c.V;

/** Shrinks K and V (then B, H) until the reference cost is under the cap; T and the chunk stay. */
function fit(c0: Case): Case {
  const c = { ...c0, gammas: [...c0.gammas] };
  while (cost(c) > COST_CAP && (c.K > 4 || c.V > 4)) {
    if (c.K >= c.V) c.K = Math.max(4, Math.floor(c.K * 0.8)); else c.V = Math.max(4, Math.floor(c.V * 0.8));
  }
  while (cost(c) > COST_CAP && c.B * c.H > 1) { if (c.B > 1) c.B--; else c.H--; }
  while (cost(c) > COST_CAP && (c.K > 1 || c.V > 1)) { if (c.K >= c.V) c.K--; else c.V--; }
  c.gammas = c.gammas.slice(0, c.H);
  return c;
}

/** Chunk sizes whose workgroup memory (4 * chunk^2 bytes) fits the adapter. */
function chunkArb(): fc.Arbitrary<number> {
  const mem = gpu ? gpu.info.limits['maxComputeWorkgroupStorageSize'] ?? 16384 : 16384;
  const max = Math.floor(Math.sqrt(mem / 4));
  return fc.oneof(fc.constantFrom(...[1, 2, 4, 8, 16, 32, 64].filter((c) => c <= max)), fc.integer({ min: 1, max: Math.min(64, max) }));
}

const caseArb: fc.Arbitrary<Case> = fc.record({
  B: fc.integer({ min: 1, max: 2 }),
  H: fc.integer({ min: 1, max: 2 }),
  T: fc.oneof(fc.integer({ min: 1, max: 200 }), fc.integer({ min: 1, max: 24 })),
  K: fc.integer({ min: 1, max: 64 }),
  V: fc.integer({ min: 1, max: 64 }),
  chunk: chunkArb(),
  gammas: fc.array(fc.oneof(fc.constant(1), fc.constant(GAMMA_MAX), fc.double({ min: 0.5, max: GAMMA_MAX, noNaN: true })), { minLength: 2, maxLength: 2 }),
  gate: fc.constantFrom(0, 0.1, 1),
  data: fc.integer({ min: 0, max: 0x7fffffff }),
}).map(fit);

/** Edge cases, run first: T below the chunk, T = 1, T not a multiple, K = V = 64 (chunk 16 and 64), gamma 1. */
const EXAMPLES: Case[] = [
  { B: 1, H: 2, T: 11, K: 64, V: 64, chunk: 16, gammas: [1, GAMMA_MAX], gate: 1, data: 1 },
  { B: 2, H: 1, T: 200, K: 2, V: 7, chunk: 64, gammas: [0.5, 1], gate: 0.1, data: 2 },
  { B: 1, H: 1, T: 1, K: 7, V: 63, chunk: 32, gammas: [0.75, 1], gate: 0, data: 3 },
  { B: 1, H: 1, T: 12, K: 64, V: 64, chunk: 64, gammas: [GAMMA_MAX, 1], gate: 0.1, data: 4 },
].map(fit);

function familyInputs(f: Family, c: Case): Map<string, Value> {
  const r = prng(c.data);
  const u = () => r() * 2 - 1;
  const m = new Map<string, Value>([
    ['q', tensor([c.B, c.H, c.T, c.K], u)], ['k', tensor([c.B, c.H, c.T, c.K], u)], ['v', tensor([c.B, c.H, c.T, c.V], u)],
  ]);
  if (f.decay === 'gamma') m.set('gamma', { shape: [c.H], data: Float64Array.from(c.gammas.slice(0, c.H), (g) => Math.fround(g)) });
  if (f.decay === 'gate') m.set('g', tensor([c.B, c.H, c.T], () => -c.gate * r() ** 2));
  if (f.state) m.set('s0', tensor([c.B, c.H, c.K, c.V], u));
  return m;
}

interface Reference {
  inputs: Map<string, Value>; ups: Map<string, Value>; outs: Map<string, Value>; grads: Map<string, Value>;
  /** RMS of the natural scale of the decay gradient (see decayScale), 0 without one. */
  decayScale: number;
}
const refs = new Map<string, Reference>();
const gradFns = new Map<CheckedFn, CheckedFn>();
const refTime = { ms: 0, cases: 0 };

/** The float64 reference of a case, computed once and shared by the three forms. */
function reference(f: Family, fn: CheckedFn, c: Case): Reference {
  const key = `${f.name}|${JSON.stringify({ ...c, chunk: 0 })}`;
  let ref = refs.get(key);
  if (ref) return ref;
  const t0 = performance.now();
  const inputs = familyInputs(f, c);
  const outs = runFunction(fn, inputs);
  const r = prng(c.data ^ 0x55aa55aa);
  const ups = new Map<string, Value>();
  for (const o of fn.outputs) ups.set(upstreamName(o.name), tensor(outs.get(o.name)!.shape, () => r() * 2 - 1));
  let g = gradFns.get(fn);
  if (!g) gradFns.set(fn, (g = toChecked(gradient(lowerFn(fn)))));
  const grads = runFunction(g, new Map([...inputs, ...ups]));
  refTime.ms += performance.now() - t0;
  refTime.cases++;
  if (refs.size > 64) refs.clear();
  refs.set(key, (ref = { inputs, ups, outs, grads, decayScale: decayScale(f, c, inputs, ups) }));
  return ref;
}

/**
 * The natural scale of a decay gradient: grad.gamma[h] and grad.g[b, h, u] are sums of O(B T^2)
 * products of random sign, and a draw where they cancel leaves a result far below the size of
 * its terms, relative to which no float32 evaluation can reach 1e-5. Float32 summation error
 * scales with the root sum of squares of the summed terms, so that is the scale (its RMS over
 * the tensor). Terms, with d = grad.o, dS = grad.sT, s0 the initial state:
 *   gamma: (t-s) gamma^(t-s-1) (q[t].k[s]) (v[s].d[t]) for s < t; with a state also
 *          (t+1) gamma^t q[t] s0 d[t],  T gamma^(T-1) (s0 . dS),  (T-1-s) gamma^(T-2-s) k[s] dS v[s];
 *   g[u]:  exp(G[t] - G[s]) (q[t].k[s]) (v[s].d[t]) for s < u <= t (G the cumulative sum of g).
 */
function decayScale(f: Family, c: Case, inputs: ReadonlyMap<string, Value>, ups: ReadonlyMap<string, Value>): number {
  if (f.decay === 'none') return 0;
  const { B, H, T, K: Kd, V: Vd } = c;
  const q = inputs.get('q')!.data, k = inputs.get('k')!.data, v = inputs.get('v')!.data, d = ups.get('grad.o')!.data;
  const qk = (bh: number, t: number, s: number): number => { let x = 0; for (let i = 0; i < Kd; i++) x += q[(bh * T + t) * Kd + i]! * k[(bh * T + s) * Kd + i]!; return x; };
  const vd = (bh: number, t: number, s: number): number => { let x = 0; for (let j = 0; j < Vd; j++) x += v[(bh * T + s) * Vd + j]! * d[(bh * T + t) * Vd + j]!; return x; };
  let sumSq = 0; // over the tensor's elements, of each element's sum of squared terms
  let count = 0;
  if (f.decay === 'gate') {
    const g = inputs.get('g')!.data;
    for (let bh = 0; bh < B * H; bh++) {
      const G = new Float64Array(T);
      for (let t = 0, acc = 0; t < T; t++) G[t] = acc += g[bh * T + t]!;
      // Term (t, s) belongs to every u in s+1..t: a difference array over u.
      const diff = new Float64Array(T + 1);
      for (let t = 1; t < T; t++) for (let s = 0; s < t; s++) {
        const e = (Math.exp(G[t]! - G[s]!) * qk(bh, t, s) * vd(bh, t, s)) ** 2;
        diff[s + 1]! += e;
        diff[t + 1]! -= e;
      }
      for (let u = 0, acc = 0; u < T; u++) sumSq += Math.max(0, (acc += diff[u]!));
      count += T;
    }
    return Math.sqrt(sumSq / Math.max(count, 1));
  }
  const gam = inputs.get('gamma')!.data;
  for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) {
    const bh = b * H + h;
    const y = gam[h]!;
    for (let t = 1; t < T; t++) for (let s = 0; s < t; s++) sumSq += ((t - s) * y ** (t - s - 1) * qk(bh, t, s) * vd(bh, t, s)) ** 2;
    if (f.state) {
      const s0 = inputs.get('s0')!.data, dS = ups.get('grad.sT')!.data;
      const at = (i: number, j: number): number => (bh * Kd + i) * Vd + j;
      for (let t = 0; t < T; t++) {
        let x = 0;
        for (let i = 0; i < Kd; i++) for (let j = 0; j < Vd; j++) x += q[(bh * T + t) * Kd + i]! * s0[at(i, j)]! * d[(bh * T + t) * Vd + j]!;
        sumSq += ((t + 1) * y ** t * x) ** 2;
      }
      let x = 0;
      for (let i = 0; i < Kd * Vd; i++) x += s0[bh * Kd * Vd + i]! * dS[bh * Kd * Vd + i]!;
      sumSq += (T * y ** (T - 1) * x) ** 2;
      for (let s = 0; s + 1 < T; s++) {
        let z = 0;
        for (let i = 0; i < Kd; i++) for (let j = 0; j < Vd; j++) z += k[(bh * T + s) * Kd + i]! * dS[at(i, j)]! * v[(bh * T + s) * Vd + j]!;
        sumSq += ((T - 1 - s) * y ** (T - 2 - s) * z) ** 2;
      }
    }
  }
  return Math.sqrt(sumSq / H);
}

/** RMS(a - b) and RMS(b). */
function rms(a: ArrayLike<number>, b: ArrayLike<number>): { diff: number; ref: number } {
  let n = 0;
  let d = 0;
  for (let i = 0; i < b.length; i++) { const e = a[i]! - b[i]!; n += e * e; d += b[i]! * b[i]!; }
  const len = Math.max(b.length, 1);
  return { diff: Math.sqrt(n / len), ref: Math.sqrt(d / len) };
}

const DECAY_GRADS = new Set(['grad.gamma', 'grad.g']);
const gpuTime = { ms: 0, runs: 0 };
/** Worst relative RMSE per (function, form, tensor); decay gradients against their scale. */
const worst = new Map<string, number>();
/** Decay gradients accepted because the CPU executor's float32 run of the same plan is no closer. */
const planLimited: string[] = [];

async function checkCase(f: Family, form: Form, c: Case): Promise<void> {
  const fn = loadFn(f.file, f.name);
  const ref = reference(f, fn, c);
  const sizes: Record<string, number> = { K: c.K, V: c.V };
  const planFor = (backward: boolean): Plan => {
    const constants = new Map(specialisedSizes(fn, backward).map((s) => [s, sizes[s]!] as const));
    return compilePlan(fn, makeSchedule(form, c.chunk), { backward, constants });
  };
  const bwdPlan = planFor(true);
  const bwdInputs = new Map([...ref.inputs, ...ref.ups]);
  const t0 = performance.now();
  const fwd = await runPlanWebGPU(planFor(false), ref.inputs);
  const bwd = await runPlanWebGPU(bwdPlan, bwdInputs);
  gpuTime.ms += performance.now() - t0;
  gpuTime.runs += 2;
  if (process.env['RN_CASES']) console.log(`[case] ${f.name} ${form} ${JSON.stringify(c)} gpu ${(performance.now() - t0).toFixed(0)} ms`);
  const errs: string[] = [];
  const label = `${f.name} ${form} ${JSON.stringify(c)}`;
  const check = (what: string, got: { shape: number[]; data: ArrayLike<number> } | undefined, want: Value): void => {
    if (!got) { errs.push(`${what}: missing`); return; }
    if (got.shape.join() !== want.shape.join()) { errs.push(`${what}: shape [${got.shape}] != [${want.shape}]`); return; }
    const e = rms(got.data, want.data);
    let nonFinite = 0;
    for (let i = 0; i < got.data.length; i++) if (!Number.isFinite(got.data[i]!)) nonFinite++;
    const decay = DECAY_GRADS.has(what);
    const scale = decay ? Math.max(e.ref, ref.decayScale) : e.ref;
    const relErr = scale > 0 ? e.diff / scale : e.diff;
    const key = `${f.name} ${form} ${what}${decay ? ' (vs its natural scale)' : ''}`;
    worst.set(key, Math.max(worst.get(key) ?? 0, relErr));
    if (nonFinite === 0 && relErr <= TOL) return;
    if (decay && nonFinite === 0) {
      // Is the error the plan's (its float32 arithmetic) rather than WebGPU's? The CPU executor
      // runs the same kernels with exact semantics (transcendentals to 0.5 ulp).
      const cpu = rms(runPlanCpu(bwdPlan, bwdInputs).get(what)!.data, want.data);
      if (e.diff <= 2 * cpu.diff) {
        planLimited.push(`${label} ${what}: RMS error ${e.diff.toExponential(2)} = ${relErr.toExponential(2)} of its scale; the CPU executor's ${cpu.diff.toExponential(2)}`);
        return;
      }
      errs.push(`${what}: RMS error ${e.diff.toExponential(2)} is ${relErr.toExponential(2)} of max(RMS ref, natural scale) = ${scale.toExponential(2)}, and the CPU executor's float32 run of the plan has ${cpu.diff.toExponential(2)}`);
      return;
    }
    errs.push(`${what}: relative RMSE ${relErr.toExponential(2)}${nonFinite ? ` (${nonFinite} non-finite values)` : ''}`);
  };
  for (const [name, v] of ref.outs) check(name, fwd.get(name), v);
  for (const [name, v] of ref.grads) check(name, bwd.get(name), v);
  if (errs.length) throw new Error(`${label}: ${errs.join('; ')}`);
}

describe.skipIf(!gpu).each(FORMS)('%s schedule on WebGPU', { timeout: 600_000 }, (form) => {
  afterAll(() => logStats(`the ${form} schedule`));
  test.each(FAMILIES)(`$name: outputs and gradients agree with the float64 reference to relative RMSE <= ${TOL.toExponential(0)}`, async (f) => {
    await fc.assert(fc.asyncProperty(caseArb, (c) => checkCase(f, form, c)), {
      seed: SEED ^ f.name.length, numRuns: Math.max(1, Math.round(f.runs * RUNS_SCALE)), examples: EXAMPLES.map((c) => [c]), endOnFailure: true,
    });
  });
});

afterAll(() => {
  if (refTime.cases || gpuTime.runs) {
    console.log(`[webgpu-schedules] reference: ${refTime.cases} cases in ${(refTime.ms / 1000).toFixed(1)} s; WebGPU: ${gpuTime.runs} plan runs in ${(gpuTime.ms / 1000).toFixed(1)} s`);
    console.log(`[webgpu-schedules] worst relative RMSE:\n  ${[...worst].map(([k, v]) => `${k}: ${v.toExponential(2)}`).join('\n  ')}`);
    if (planLimited.length) console.log(`[webgpu-schedules] decay gradients limited by the plan's float32 arithmetic (WebGPU within 2x of the CPU executor):\n  ${planLimited.join('\n  ')}`);
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
