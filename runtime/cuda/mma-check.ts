// The tensor-core agreement cases of the GPU check (schedule dense 'mma', compiler/lower/dense-mma.ts,
// opt-in until this check has passed on hardware). scripts/gpu-check.sh runs it from its bundle
// (mma-check.mjs) after the main check:
//
//   mma-check [--json FILE] [--root DIR] [--time-budget S] [--no-bench] [--small]
//
// For f16 and bf16 storage, each case compiled twice, dense 'tiled' and dense 'mma', and run on
// the device:
//   - `linear` of models/retnet.ret (y = x W^T) forward and backward at ragged sizes (M = B*T,
//     N, K none a multiple of 16 or 8): y, grad.x and grad.w against a float64 reference of the
//     same (half-rounded) inputs, and mma against tiled;
//   - the same with a small output and a long sum (grad.w split over B*T: split-K);
//   - the tiny RetNet's forward (random weights): logits, mma against tiled;
// printing the relative RMSE of each tensor and the time of each lowering (CUDA events), then
// [4096, 512] x [512, 512] timed alone (--no-bench skips it). Bars (relative RMSE): against
// float64 5e-3 (f16) / 1e-2 (bf16), one rounding of each output; mma against tiled 1e-3 / 8e-3
// (the tensor cores sum the 16 products of a step in their own order); the model's logits 5e-3 /
// 2e-2. Exit 0 when everything agrees, 1 on a disagreement or error, 2 when CUDA is unusable.
// mmaCheckMain(args, { device }) runs the same cases with another device (tests: the CPU
// executor, whose mma is the reference semantics), without the timings.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { loadProgram } from '../../dsl/program.js';
import type { CheckedFn, CheckedModel } from '../../dsl/checked.js';
import { boundWeights } from '../../compiler/model-split.js';
import { compilePlan, type Plan } from '../../compiler/plan.js';
import { compileModel, modelProgram } from '../../compiler/pipeline.js';
import { type DenseMode, makeSchedule, type StorageDtype } from '../../compiler/schedule.js';
import { fromHalfArray, toHalfArray } from '../../targets/half.js';
import { type HostValue, runModelPlan } from '../model-runner.js';
import { relRmse } from './agreement.js';
import { cudaContext, CudaPlanRun, cudaStatus, type CudaInput, prepareCudaPlans, runPlanCuda, timeCuda } from './runner.js';

type Half = Exclude<StorageDtype, 'f32'>;
const HALVES: readonly Half[] = ['f16', 'bf16'];
/** Bars: against float64, mma against tiled, the model's logits (mma against tiled). */
export const MMA_BARS: Record<Half, { ref: number; tiled: number; model: number }> = {
  f16: { ref: 5e-3, tiled: 1e-3, model: 5e-3 },
  bf16: { ref: 1e-2, tiled: 8e-3, model: 2e-2 },
};

/** What the cases run on: CUDA, or for tests another executor (no timings). */
export interface MmaDevice {
  name: string;
  run(plan: Plan, inputs: ReadonlyMap<string, CudaInput>): Promise<ReadonlyMap<string, { data: ArrayLike<number> }>>;
  /** Builds every kernel of the plans at once (nvcc in parallel; later runs hit the cache). */
  prepare?(plans: readonly Plan[]): Promise<number>;
  /** Milliseconds per run of the plan's kernels, or undefined (no timer). */
  time?(plan: Plan, inputs: ReadonlyMap<string, CudaInput>): Promise<number>;
}

interface Result { case: string; dtype: Half; tensor: string; vs: 'float64' | 'tiled'; relRmse: number; bar: number; ok: boolean; error?: string }
interface Timing { case: string; dtype: Half; tiledMs?: number; mmaMs?: number; tflopsTiled?: number; tflopsMma?: number }

const say = (s: string) => process.stdout.write(`${s}\n`);
const oneLine = (e: unknown): string => (e instanceof Error ? e.message : String(e)).replace(/\s+/g, ' ').trim();
const fmtE = (x: number) => (Number.isFinite(x) ? x.toExponential(1) : String(x));

function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s / 4294967296 * 2 - 1; };
}

/** n values in [-1, 1) rounded to `h` (what the device stores), as f32. */
const halfData = (n: number, h: Half, r: () => number): Float32Array => fromHalfArray(toHalfArray(Float32Array.from({ length: n }, r), h), h);

/** float64 y = x W^T, grad.x = dy W, grad.w = dy^T x for x [M, K], w [N, K], dy [M, N]. */
function linearRef(x: Float32Array, w: Float32Array, dy: Float32Array, M: number, N: number, K: number): Map<string, Float64Array> {
  const y = new Float64Array(M * N), gx = new Float64Array(M * K), gw = new Float64Array(N * K);
  for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) {
    let s = 0;
    for (let k = 0; k < K; k++) s += x[m * K + k]! * w[n * K + k]!;
    y[m * N + n] = s;
    const d = dy[m * N + n]!;
    for (let k = 0; k < K; k++) { gx[m * K + k]! += d * w[n * K + k]!; gw[n * K + k]! += d * x[m * K + k]!; }
  }
  return new Map([['y', y], ['grad.x', gx], ['grad.w', gw]]);
}

interface LinearCase { name: string; B: number; T: number; I: number; O: number }

/** The cases: ragged projections, a split-K weight gradient; smaller with --small (the CPU executor). */
export function mmaCases(small: boolean): { linear: LinearCase[]; model: { B: number; T: number }; bench: LinearCase } {
  return small
    ? { linear: [{ name: 'linear ragged', B: 1, T: 37, I: 41, O: 19 }, { name: 'linear split-K', B: 2, T: 75, I: 19, O: 21 }], model: { B: 1, T: 9 }, bench: { name: 'bench', B: 1, T: 64, I: 64, O: 64 } }
    : { linear: [{ name: 'linear ragged', B: 3, T: 1367, I: 517, O: 509 }, { name: 'linear split-K', B: 3, T: 1367, I: 203, O: 197 }], model: { B: 4, T: 256 }, bench: { name: '[4096,512]x[512,512]', B: 1, T: 4096, I: 512, O: 512 } };
}

const linearPlan = (fn: CheckedFn, c: LinearCase, dtype: Half, dense: DenseMode, backward: boolean): Plan =>
  compilePlan(fn, makeSchedule('chunkwise', 64, { dtype, dense }), { backward, constants: new Map([['B', c.B], ['T', c.T], ['I', c.I], ['O', c.O]]) });

async function linearCase(fn: CheckedFn, c: LinearCase, dtype: Half, device: MmaDevice, results: Result[], timings: Timing[], log: (s: string) => void): Promise<void> {
  const r = rng(11 + c.I + 7 * c.O);
  const [M, N, K] = [c.B * c.T, c.O, c.I];
  const x = halfData(M * K, dtype, r), w = halfData(N * K, dtype, r), dy = halfData(M * N, dtype, r);
  const ref = linearRef(x, w, dy, M, N, K);
  const inputs = new Map<string, CudaInput>([['x', { shape: [c.B, c.T, K], data: x }], ['w', { shape: [N, K], data: w }]]);
  const binputs = new Map([...inputs, ['grad.y', { shape: [c.B, c.T, N], data: dy }]]);
  const outs: Record<string, Map<string, ArrayLike<number>>> = {};
  const timing: Timing = { case: c.name, dtype };
  for (const dense of ['tiled', 'mma'] as const) {
    const fplan = linearPlan(fn, c, dtype, dense, false), bplan = linearPlan(fn, c, dtype, dense, true);
    const o = new Map<string, ArrayLike<number>>();
    for (const [plan, ins] of [[fplan, inputs], [bplan, binputs]] as const) for (const [k, v] of await device.run(plan, ins)) o.set(k, v.data);
    outs[dense] = o;
    if (device.time) {
      const ms = (await device.time(fplan, inputs)) + (await device.time(bplan, binputs));
      const tf = (3 * 2 * M * N * K) / (ms * 1e9);
      if (dense === 'tiled') { timing.tiledMs = ms; timing.tflopsTiled = tf; } else { timing.mmaMs = ms; timing.tflopsMma = tf; }
    }
  }
  const parts: string[] = [];
  for (const [name, want] of ref) {
    const got = outs['mma']!.get(name), tiled = outs['tiled']!.get(name);
    const add = (vs: Result['vs'], e: number, bar: number, error?: string) => {
      results.push({ case: c.name, dtype, tensor: name, vs, relRmse: e, bar, ok: e <= bar, ...(error ? { error } : {}) });
      parts.push(`${name} ${fmtE(e)}${vs === 'tiled' ? ' vs tiled' : ''}${e <= bar ? '' : ' FAIL'}`);
    };
    add('float64', got ? relRmse(got, want) : Infinity, MMA_BARS[dtype].ref, got ? undefined : `no output '${name}'`);
    add('tiled', got && tiled ? relRmse(got, tiled) : Infinity, MMA_BARS[dtype].tiled, got && tiled ? undefined : `no output '${name}'`);
  }
  timings.push(timing);
  const t = timing.mmaMs !== undefined ? `   fwd+bwd tiled ${timing.tiledMs!.toFixed(3)} ms (${timing.tflopsTiled!.toFixed(1)} TFLOP/s), mma ${timing.mmaMs.toFixed(3)} ms (${timing.tflopsMma!.toFixed(1)} TFLOP/s)` : '';
  log(`  ${c.name.padEnd(15)} ${dtype.padEnd(4)} M=${M} N=${N} K=${K}: ${parts.join('  ')}${t}`);
}

function randomWeights(model: CheckedModel, seed: number): Map<string, HostValue> {
  const r = rng(seed);
  const out = new Map<string, HostValue>();
  for (const name of boundWeights(modelProgram(model)).keys()) {
    const shape = model.weights.find((w) => w.name === name)!.shape;
    const n = shape.reduce((a, b) => a * b, 1);
    const scale = shape.length === 2 ? 2 / Math.sqrt(shape[1]!) : 0.1;
    out.set(name, { shape, data: Float32Array.from({ length: n }, () => (shape.length === 2 ? 0 : 1) + scale * r()) });
  }
  return out;
}

function tinyRetnet(root: string): CheckedModel {
  const model = loadProgram(path.join(root, 'models', 'retnet.ret')).checked?.models.get('retnet')?.instances.get('tiny');
  if (!model) throw new Error('models/retnet.ret has no retnet model of size tiny');
  return model;
}

async function modelCase(root: string, shape: { B: number; T: number }, dtype: Half, device: MmaDevice, results: Result[], log: (s: string) => void): Promise<void> {
  const model = tinyRetnet(root);
  const weights = randomWeights(model, 3);
  const r = rng(5);
  const vocab = weights.get('output_projection.weight')!.shape[0]!;
  const tokens: HostValue = { shape: [shape.B, shape.T], data: Int32Array.from({ length: shape.B * shape.T }, () => Math.floor((r() + 1) / 2 * vocab) % vocab) };
  const exec = async (plan: Plan, inputs: Map<string, HostValue>) => new Map([...(await device.run(plan, inputs))].map(([k, v]) => [k, v as HostValue] as const));
  const logits: Record<string, ArrayLike<number>> = {};
  for (const dense of ['tiled', 'mma'] as const) {
    const mp = compileModel(model, makeSchedule('chunkwise', 64, { dtype, dense }));
    logits[dense] = (await runModelPlan(mp, weights, new Map([['tokens', tokens]]), exec)).outputs.get('logits')!.data;
  }
  const e = relRmse(logits['mma']!, logits['tiled']!);
  const bar = MMA_BARS[dtype].model;
  results.push({ case: 'tiny RetNet', dtype, tensor: 'logits', vs: 'tiled', relRmse: e, bar, ok: e <= bar });
  log(`  ${'tiny RetNet'.padEnd(15)} ${dtype.padEnd(4)} B=${shape.B} T=${shape.T}: logits ${fmtE(e)} vs tiled${e <= bar ? '' : ' FAIL'}`);
}

const cudaMmaDevice = (): MmaDevice => {
  const ctx = cudaContext();
  return {
    name: `${ctx.device.name} ${ctx.target.arch} (${ctx.target.format}), nvcc ${ctx.nvcc.version}`,
    run: (plan, inputs) => runPlanCuda(plan, inputs, { syncEachLaunch: true }),
    prepare: async (plans) => (await prepareCudaPlans(plans)).flat().length,
    time: async (plan, inputs) => {
      const run = await CudaPlanRun.create(plan, inputs);
      try {
        const once = timeCuda(ctx, () => run.launch(), 1);
        return timeCuda(ctx, () => run.launch(), Math.max(1, Math.min(20, Math.floor(200 / Math.max(once, 1e-3)))));
      } finally {
        run.dispose();
      }
    },
  };
};

export async function mmaCheckMain(args: string[], inject: { device?: MmaDevice } = {}): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { json: { type: 'string' }, root: { type: 'string' }, 'time-budget': { type: 'string', default: '60' }, 'no-bench': { type: 'boolean', default: false }, small: { type: 'boolean', default: false } },
  });
  const started = performance.now();
  const deadline = started + Number(values['time-budget']) * 1000;
  const root = path.resolve(values.root ?? process.cwd());
  const summary: Record<string, unknown> = { started: new Date().toISOString(), host: os.hostname() };
  const writeJson = () => { if (values.json) fs.writeFileSync(values.json, JSON.stringify(summary, null, 2) + '\n'); };
  say("== retnetc GPU check: tensor cores (dense 'mma', opt-in) ==");
  let device: MmaDevice;
  if (inject.device) device = inject.device;
  else {
    const why = cudaStatus();
    if (why) { say(`CUDA unavailable: ${why}`); summary['unavailable'] = why; writeJson(); return 2; }
    device = cudaMmaDevice();
  }
  say(`device: ${device.name}`);
  summary['device'] = device.name;
  const cases = mmaCases(values.small!);
  const results: Result[] = [], timings: Timing[] = [];
  let skipped = 0;
  const guarded = async (what: string, dtype: Half, f: () => Promise<void>): Promise<void> => {
    if (performance.now() > deadline) { skipped++; say(`  ${what} ${dtype}: skipped (time budget)`); return; }
    try { await f(); } catch (e) { results.push({ case: what, dtype, tensor: '-', vs: 'tiled', relRmse: NaN, bar: 0, ok: false, error: oneLine(e) }); say(`  ${what} ${dtype}: FAIL ${oneLine(e)}`); }
  };
  const linear = loadProgram(path.join(root, 'models', 'retnet.ret')).checked?.fns.get('linear');
  if (!linear) throw new Error("models/retnet.ret has no function 'linear'");
  if (device.prepare) {
    const t0 = performance.now();
    const plans: Plan[] = [];
    for (const dtype of HALVES) for (const dense of ['tiled', 'mma'] as const) {
      for (const c of [...cases.linear, ...(dtype === 'f16' && !values['no-bench'] ? [cases.bench] : [])]) plans.push(linearPlan(linear, c, dtype, dense, false), linearPlan(linear, c, dtype, dense, true));
      plans.push(...compileModel(tinyRetnet(root), makeSchedule('chunkwise', 64, { dtype, dense })).plans);
    }
    await guarded('building the kernels', 'f16', async () => { say(`  built ${await device.prepare!(plans)} kernels of ${plans.length} plans in ${((performance.now() - t0) / 1000).toFixed(1)} s`); });
  }
  say(`-- agreement: mma against dense tiled and float64 (rel. RMSE bars f16 ${MMA_BARS.f16.ref} / ${MMA_BARS.f16.tiled} vs tiled, bf16 ${MMA_BARS.bf16.ref} / ${MMA_BARS.bf16.tiled})`);
  for (const dtype of HALVES) {
    for (const c of cases.linear) await guarded(c.name, dtype, () => linearCase(linear, c, dtype, device, results, timings, say));
    await guarded('tiny RetNet', dtype, () => modelCase(root, cases.model, dtype, device, results, say));
  }
  if (device.time && !values['no-bench']) {
    say(`-- dense contraction ${cases.bench.name}, forward + backward, f16`);
    await guarded(cases.bench.name, 'f16', () => linearCase(linear, cases.bench, 'f16', device, results, timings, say));
  }
  const bad = results.filter((r) => !r.ok);
  const failures = bad.length;
  const worst = (vs: Result['vs']) => results.filter((r) => r.vs === vs && Number.isFinite(r.relRmse)).reduce((m, r) => Math.max(m, r.relRmse / r.bar), 0);
  const secs = (performance.now() - started) / 1000;
  Object.assign(summary, { results, timings, failed: failures, skipped, seconds: secs, ok: failures === 0 && skipped === 0 });
  writeJson();
  say(`summary: ${device.name}`);
  say(`  mma agreement ${results.length - failures}/${results.length} tensors; worst rel. RMSE / bar: ${worst('float64').toFixed(2)} (vs float64), ${worst('tiled').toFixed(2)} (vs tiled)${skipped ? `; ${skipped} cases skipped (time budget)` : ''}`);
  for (const t of timings) if (t.mmaMs !== undefined) say(`  ${t.case} ${t.dtype}: tiled ${t.tiledMs!.toFixed(3)} ms, mma ${t.mmaMs.toFixed(3)} ms (${(t.tiledMs! / t.mmaMs).toFixed(2)}x)`);
  say(`== mma ${failures === 0 && skipped === 0 ? 'PASS' : `FAIL (${failures} failure${failures === 1 ? '' : 's'}${skipped ? `, ${skipped} skipped` : ''})`} in ${secs.toFixed(1)} s`);
  return failures === 0 && skipped === 0 ? 0 : 1;
}

export async function main(argv: string[]): Promise<number> {
  try {
    return await mmaCheckMain(argv);
  } catch (e) {
    process.stderr.write(`mma-check: error: ${oneLine(e)}\n`);
    return 1;
  }
}
