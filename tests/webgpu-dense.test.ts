// Dense contractions on WebGPU (Dawn; lavapipe on machines without a GPU): plans whose dense
// statements (compiler/dense.ts) are lowered as tiled matrix products (compiler/lower/dense.ts)
// agree with the same plans lowered elementwise, forward and backward, for RetNet's msr and
// linear, a batched product, an NN product and a fused tail, at fixed and random ragged shapes
// with every tile; then a timing printout (not an assertion) of [4096, 512] x [512, 512]
// tiled against elementwise on WebGPU and, smaller, on the CPU executor.
// Without a WebGPU adapter the device cases are skipped with the reason printed, unless
// REQUIRE_WEBGPU=1, which makes that a failure. FC_SEED=N reproduces the random cases. Lavapipe
// compiles with its fast-JIT setting (tests/helpers/lavapipe-jit.ts: msr's pipelines are most of
// the file's time), which the timing printout names; RN_LAVAPIPE_OPT=1 times the driver's default.
import { lavapipeJit } from './helpers/lavapipe-jit.js'; // first: before the device exists
import fc from 'fast-check';
import { afterAll, describe, expect, test } from 'vitest';
import { recogniseDense } from '../compiler/dense.js';
import { ExprLowering, sizeParam } from '../compiler/lower/expr.js';
import { chooseDenseTile, DEFAULT_DENSE_TILE, type DenseTile, lowerDense, SMALL_DENSE_TILE, SPLITK_DENSE_TILE, UNSTAGED_DENSE_TILE } from '../compiler/lower/dense.js';
import { compilePlan, type Launch, type Plan } from '../compiler/plan.js';
import { makeSchedule } from '../compiler/schedule.js';
import type { CheckedFn } from '../dsl/checked.js';
import { checkFiles } from '../dsl/checker.js';
import { devaluate } from '../dsl/dims.js';
import { parseSource } from '../dsl/parser.js';
import { SourceFile } from '../dsl/source.js';
import { runPlanCpu } from '../runtime/plan-runner.js';
import { releaseRuntimeDevice, runPlanWebGPU } from '../runtime/webgpu/runner.js';
import { assertProperty, fcSeed, loadFn, prng, relErr, runsScale } from './helpers/harness.js';
import { acquireTestGpu, requireGpu } from './helpers/webgpu.js';

const gpuInfo = await acquireTestGpu('webgpu-dense');
const gpu = gpuInfo.gpu;
afterAll(async () => { await releaseRuntimeDevice(); });

test('a WebGPU adapter is available (required when REQUIRE_WEBGPU=1)', (ctx) => requireGpu(gpuInfo, () => ctx.skip()));

function compileSource(text: string): Map<string, CheckedFn> {
  const { ast, diagnostics } = parseSource(new SourceFile('webgpu-dense.ret', text));
  const r = checkFiles([ast]);
  const all = [...diagnostics, ...r.diagnostics];
  if (all.length) throw new Error(all.map((d) => d.message).join('; '));
  return r.fns;
}

const FNS = compileSource(`
fn linear_nn(x: f32[B, T, I], w: f32[I, O]) -> y: f32[B, T, O] {
  y[b, t, o] = sum[c] x[b, t, c] * w[c, o]
}
fn scores(q: f32[B, H, T, C], k: f32[B, H, S, C]) -> s: f32[B, H, T, S] {
  s[b, h, t, u] = sum[c] q[b, h, t, c] * k[b, h, u, c]
}
fn gated(x: f32[B, T, I], w: f32[O, I], r: f32[B, T, O], g: f32[B, T]) -> y: f32[B, T, O] {
  y[b, t, o] = swish(sum[c] x[b, t, c] * w[o, c] * g[b, t]) * r[b, t, o]
}
`);
const fnOf = (name: string): CheckedFn => FNS.get(name) ?? loadFn('retnet', name);

/** The plan with every dense statement lowered tiled (what compilePlan would do), and how many. */
function densePlan(p: Plan, tile: DenseTile | undefined): { plan: Plan; dense: number } {
  let dense = 0;
  const launches = p.launches.map((l): Launch => {
    const s = p.fn.body.find((x) => x.target === l.target)!;
    const d = l.how === 'elementwise' ? recogniseDense(s, p.fn.vars) : undefined;
    if (!d) return l;
    dense++;
    const runtime = new Set<string>();
    const L = new ExprLowering(p.fn.vars, { constants: p.constants, runtime });
    const kernel = lowerDense(`${l.kernel.name}_dense`, s, d, L, tile ?? chooseDenseTile(d, p.constants));
    const buffers: Record<string, string> = {};
    kernel.buffers = [...L.buffers].map(([id, b]) => {
      buffers[b.name] = id;
      const h = b.type === 'f32' ? p.half.get(id) : undefined;
      return { name: b.name, type: b.type, access: b.written ? 'read_write' as const : 'read' as const, ...(h ? { storage: h } : {}) };
    });
    const scalars: Record<string, string> = {};
    kernel.scalars = [...runtime].sort().map((a) => { scalars[sizeParam(a)] = a; return { name: sizeParam(a), type: 'i32' as const }; });
    return { ...l, kernel, buffers, scalars };
  });
  return { plan: { ...p, launches }, dense };
}

type Inputs = Map<string, { shape: number[]; data: Float64Array }>;

function inputsFor(p: Plan, sizes: ReadonlyMap<string, number>, seed: number): Inputs {
  const rand = prng(seed);
  const out: Inputs = new Map();
  for (const q of p.fn.params) {
    if (q.shape.length === 0 && q.default !== undefined) continue;
    const shape = q.shape.map((d) => devaluate(d, sizes)!);
    out.set(q.name, { shape, data: Float64Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => Math.fround(rand() * 2 - 1)) });
  }
  return out;
}

const wanted = new Map<string, Map<string, { data: Float32Array | Int32Array }>>();

interface Spec { fn: string; backward: boolean; sizes: Record<string, number>; constants: Record<string, number> }

/** Runs a spec's plan elementwise and tiled on WebGPU; the worst relative RMSE over the outputs. */
async function agreeOnGpu(spec: Spec, tile: DenseTile | undefined, seed: number): Promise<{ worst: number; dense: number }> {
  const p = compilePlan(fnOf(spec.fn), makeSchedule('chunkwise', 16), { backward: spec.backward, constants: new Map(Object.entries(spec.constants)) });
  const { plan: dp, dense } = densePlan(p, tile);
  const inputs = inputsFor(p, new Map(Object.entries(spec.sizes)), seed);
  const key = JSON.stringify([spec, seed]);
  let want = wanted.get(key);
  if (!want) wanted.set(key, (want = await runPlanWebGPU(p, inputs, { device: gpu! })));
  const got = await runPlanWebGPU(dp, inputs, { device: gpu! });
  let worst = 0;
  for (const [name, w] of want) {
    const e = relErr(got.get(name)!.data, w.data);
    expect(e.nonFinite, `${spec.fn} ${name}`).toBe(0);
    worst = Math.max(worst, e.rel);
  }
  return { worst, dense };
}

const TILES: DenseTile[] = [DEFAULT_DENSE_TILE, SPLITK_DENSE_TILE, SMALL_DENSE_TILE, { m: 64, n: 64, k: 16, regM: 4, regN: 4, splitK: 1 }, { m: 16, n: 64, k: 8, regM: 2, regN: 4, splitK: 2 }, { m: 64, n: 64, k: 0, regM: 8, regN: 8, splitK: 1 }, { m: 32, n: 32, k: 0, regM: 4, regN: 4, splitK: 4 }];
const MSR = { H: 2, K: 8, V: 12 };
const UNSTAGED: DenseTile = UNSTAGED_DENSE_TILE;

describe.skipIf(!gpu)('tiled dense kernels on WebGPU agree with elementwise ones', () => {
  // Each case with two tiles (pipelines compile slowly on lavapipe): the default choice and one more.
  const fixed: [string, Spec, number, DenseTile][] = [
    ['msr forward', { fn: 'msr', backward: false, sizes: { B: 2, T: 37, ...MSR }, constants: MSR }, 5, TILES[3]!],
    ['msr backward (weight gradients over B*T, one-hot head splits)', { fn: 'msr', backward: true, sizes: { B: 2, T: 37, ...MSR }, constants: MSR }, 14, SPLITK_DENSE_TILE],
    ['linear backward', { fn: 'linear', backward: true, sizes: { B: 3, T: 45, I: 70, O: 33 }, constants: {} }, 2, TILES[6]!],
    ['linear_nn backward', { fn: 'linear_nn', backward: true, sizes: { B: 1, T: 130, I: 9, O: 65 }, constants: {} }, 2, SPLITK_DENSE_TILE],
    ['scores (batched b, h)', { fn: 'scores', backward: false, sizes: { B: 2, H: 3, T: 19, S: 70, C: 33 }, constants: {} }, 1, TILES[5]!],
    ['gated (fused factor and tail)', { fn: 'gated', backward: false, sizes: { B: 2, T: 7, I: 129, O: 66 }, constants: {} }, 1, TILES[4]!],
  ];
  test.each(fixed)('%s', async (_, spec, count, tile) => {
    for (const t of [undefined, tile]) {
      const r = await agreeOnGpu(spec, t, 11);
      expect(r.dense).toBe(count);
      expect(r.worst, `${spec.fn} ${JSON.stringify(t)}`).toBeLessThan(1e-5);
    }
  }, 300_000);

  test('random ragged shapes and tiles', async () => {
    const seed = fcSeed('webgpu-dense');
    const arb = fc.record({
      fn: fc.constantFrom('linear', 'linear_nn', 'gated'), backward: fc.boolean(), tile: fc.integer({ min: 0, max: TILES.length - 1 }),
      B: fc.integer({ min: 1, max: 3 }), T: fc.integer({ min: 1, max: 100 }), I: fc.integer({ min: 1, max: 300 }), O: fc.integer({ min: 1, max: 200 }),
    });
    await assertProperty(arb, async (c) => {
      if (c.fn === 'gated' && c.backward) c.backward = false;
      const r = await agreeOnGpu({ fn: c.fn, backward: c.backward, sizes: { B: c.B, T: c.T, I: c.I, O: c.O }, constants: {} }, TILES[c.tile], c.I * 7 + c.T);
      expect(r.worst, JSON.stringify(c)).toBeLessThan(1e-5);
    }, { seed, examples: [], randomRuns: Math.max(3, Math.round(6 * runsScale())), timeLimitMs: 250_000 });
  }, 300_000);

  test('timing (printed, not asserted): [4096, 512] x [512, 512] tiled vs elementwise', async () => {
    const gflop = (m: number, n: number, k: number, ms: number) => ((2 * m * n * k) / (ms * 1e6)).toFixed(2);
    const time = async (f: () => Promise<unknown> | unknown, reps: number): Promise<number> => {
      await f();
      let best = Infinity;
      for (let i = 0; i < reps; i++) { const t0 = performance.now(); await f(); best = Math.min(best, performance.now() - t0); }
      return best;
    };
    const at = (T: number, I: number, O: number) => {
      const p = compilePlan(fnOf('linear'), makeSchedule('chunkwise', 16), {});
      return { p, dp: densePlan(p, undefined).plan, inputs: inputsFor(p, new Map([['B', 1], ['T', T], ['I', I], ['O', O]]), 3) };
    };
    const big = at(4096, 512, 512);
    const ew = await time(() => runPlanWebGPU(big.p, big.inputs, { device: gpu! }), 2);
    const tiled = await time(() => runPlanWebGPU(big.dp, big.inputs, { device: gpu! }), 3);
    const unstagedPlan = densePlan(big.p, UNSTAGED).plan;
    const unstaged = await time(() => runPlanWebGPU(unstagedPlan, big.inputs, { device: gpu! }), 3);
    console.log(`[webgpu-dense] ${gpu!.info.summary}: [4096, 512] x [512, 512] (whole run incl. upload/readback): elementwise ${ew.toFixed(0)} ms = ${gflop(4096, 512, 512, ew)} GFLOP/s; tiled (default tile, 128x128x16, 8x8 a thread) ${tiled.toFixed(0)} ms = ${gflop(4096, 512, 512, tiled)} GFLOP/s (${(ew / tiled).toFixed(1)}x); unstaged 64x64, 8x8 a thread ${unstaged.toFixed(0)} ms = ${gflop(4096, 512, 512, unstaged)} GFLOP/s (${(ew / unstaged).toFixed(1)}x)${lavapipeJit.length && /llvmpipe/.test(gpu!.info.summary) ? ` (on lavapipe with ${lavapipeJit.join(' ')}, slower kernels than its default; RN_LAVAPIPE_OPT=1 for that)` : ''}`);
    const small = at(512, 256, 256);
    const cew = await time(() => runPlanCpu(small.p, small.inputs), 1);
    const ctiled = await time(() => runPlanCpu(small.dp, small.inputs), 1);
    const cunPlan = densePlan(small.p, UNSTAGED).plan;
    const cun = await time(() => runPlanCpu(cunPlan, small.inputs), 1);
    console.log(`[webgpu-dense] CPU executor [512, 256] x [256, 256]: elementwise ${cew.toFixed(0)} ms = ${gflop(512, 256, 256, cew)} GFLOP/s; tiled ${ctiled.toFixed(0)} ms = ${gflop(512, 256, 256, ctiled)} GFLOP/s (its barriers make threads generators); unstaged ${cun.toFixed(0)} ms = ${gflop(512, 256, 256, cun)} GFLOP/s`);
  }, 300_000);
});
