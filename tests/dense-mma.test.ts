// Tensor-core dense sums (schedule dense 'mma', compiler/lower/dense-mma.ts; kernel IR's KMma,
// run by the CPU executor with its reference semantics): no GPU runs them here, so the lowering's
// tiling, staging, edges, split-K and epilogue are checked by running the same kernel IR on the
// CPU, and nvcc compiles what the CUDA printer makes of it:
//   - every dense statement form of RetNet (projections, transposed operands, head splits,
//     batched products, one-hot weight gradients, fused tails) at sizes where M, N and K are
//     not multiples of 16 or 8, f16 and bf16 storage, every tile (split-K included): without
//     split-K bit for bit the 'tiled' lowering (same products, same order), with split-K within
//     the output's rounding of it, and within the half bar (section 5) of the f32 map kernel;
//   - whole plans: the RetNet fixture's logits with dense 'mma' equal those of dense 'tiled'
//     (bit for bit: the forward has no split-K) and are within the f16 / bf16 bar of torchscale;
//     a small random RetNet's weight gradients equal the tiled ones;
//   - the schedule: 'mma' with f32 storage is one error naming the statement; a per-statement
//     choice lowers only that statement on tensor cores; WGSL and native refuse mma in one line;
//   (tests/nvcc-dense-mma.test.ts: nvcc compiles every mma kernel of the tiny and base RetNet.)
import { existsSync } from 'node:fs';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, test } from 'vitest';
import { recogniseDense } from '../compiler/dense.js';
import * as K from '../compiler/kir.js';
import type { KHalf, Kernel, KStmt } from '../compiler/kir.js';
import { lowerDense, UNSTAGED_DENSE_TILE } from '../compiler/lower/dense.js';
import { DEFAULT_MMA_TILE, lowerDenseMma, type MmaTile, mmaTileProblem, SPLITK_MMA_TILE } from '../compiler/lower/dense-mma.js';
import { ExprLowering, sizeParam } from '../compiler/lower/expr.js';
import { lowerElementwise } from '../compiler/lower/generic.js';
import { compileModelGrad } from '../compiler/model-grad.js';
import { compilePlan, ScheduleError } from '../compiler/plan.js';
import { compileModel, modelProgram } from '../compiler/pipeline.js';
import type { CheckedFn } from '../dsl/checked.js';
import { loadProgram } from '../dsl/program.js';
import { makeSchedule, scheduleFromJson } from '../compiler/schedule.js';
import { planExec } from '../runtime/exec.js';
import { loadTorchscale } from '../runtime/io/torchscale.js';
import { type HostValue, runModelPlan } from '../runtime/model-runner.js';
import { runModelBackward } from '../runtime/model-backward.js';
import { runKernel } from '../targets/cpu/executor.js';
import { emitKernel } from '../targets/emit.js';
import { fromHalfArray, toHalfArray } from '../targets/half.js';
import { printNative } from '../targets/native/printer.js';
import { type Case, caseOf, KINDS, numel, shapeOf } from './helpers/dense-cases.js';
import { randomRetnet } from './helpers/random-retnet.js';
import { cli, ensureBuilt } from './helpers/cli.js';
import { prng, relErr } from './helpers/harness.js';

/**
 * Relative RMSE bars of half storage against an f32 result: section 5's 5e-3 in f16; bf16 has 3
 * fewer mantissa bits (one rounding of a statement's output: measured 2e-4 in f16, 1.7e-3 in bf16).
 */
const BAR: Record<KHalf, number> = { f16: 5e-3, bf16: 1e-2 };
/** Whole-model logits (two layers of roundings; measured 1.1e-3 in f16, 9.3e-3 in bf16, the same as dense tiled). */
const MODEL_BAR: Record<KHalf, number> = { f16: 5e-3, bf16: 2e-2 };

// ---- one statement, three lowerings ---------------------------------------------------------

function finish(k: Kernel, L: ExprLowering, storage?: KHalf): Kernel {
  k.buffers = [...L.buffers.values()].map((b) => ({ name: b.name, type: b.type, access: b.written ? 'read_write' as const : 'read' as const, ...(storage && b.type === 'f32' ? { storage } : {}) }));
  k.scalars = [...L.sizes.runtime].sort().map((a) => ({ name: sizeParam(a), type: 'i32' as const }));
  return k;
}

type How = 'map' | 'tiled' | MmaTile;

function lowerCase(c: Case, how: How, storage: KHalf | undefined): { k: Kernel; L: ExprLowering } {
  const d = recogniseDense(c.s, c.vars)!;
  const L = new ExprLowering(c.vars, { constants: c.sizes, runtime: new Set() });
  const k = how === 'map' ? lowerElementwise('ew', c.s, L, 64) : how === 'tiled' ? lowerDense('tiled', c.s, d, L, UNSTAGED_DENSE_TILE) : lowerDenseMma('mma', c.s, d, L, how, storage!);
  return { k: finish(k, L, storage), L };
}

/** The output of a case's kernel on the CPU executor, from inputs that are half values (f32 or half buffers). */
function runCase(c: Case, how: How, storage: KHalf | undefined, kind: KHalf, seed: number): Float32Array {
  const { k, L } = lowerCase(c, how, storage);
  const rand = prng(seed);
  const buffers: Record<string, Float32Array | Uint16Array> = {};
  for (const [id, b] of L.buffers) {
    const n = numel(shapeOf(c, id));
    if (b.written) { buffers[b.name] = storage ? new Uint16Array(n).fill(0x7e00) : new Float32Array(n).fill(NaN); continue; }
    const bits = toHalfArray(Float32Array.from({ length: n }, () => rand() * 2 - 1), kind);
    buffers[b.name] = storage ? bits : fromHalfArray(bits, kind);
  }
  runKernel(k, { buffers, scalars: {} });
  const y = buffers[L.buffers.get(c.s.target)!.name]!;
  return y instanceof Uint16Array ? fromHalfArray(y, kind) : y;
}

const identical = (a: Float32Array, b: Float32Array): boolean => a.length === b.length && a.every((x, i) => Object.is(x, b[i]));

// M = B*T = 2*37 = 74, N = O = 19 (or H*O = 57), K = C = 41: no side a multiple of 16 or 8.
const SIZES = [2, 37, 41, 19, 3] as const;
const TILES: [string, MmaTile][] = [['64x64x32', DEFAULT_MMA_TILE], ['split-K 2', SPLITK_MMA_TILE], ['32x96x16 split-K 4', { m: 32, n: 96, k: 16, splitK: 4 }]];

describe('dense mma on the CPU executor: every RetNet dense form, ragged sizes', () => {
  for (const kind of ['f16', 'bf16'] as const) for (const form of KINDS) {
    test(`${kind} ${form}: bit for bit the tiled lowering without split-K, within rounding of it with split-K, within ${BAR[kind]} of the f32 map kernel`, () => {
      const c = caseOf(form, ...SIZES);
      const seed = 7 + KINDS.indexOf(form);
      const want = runCase(c, 'map', undefined, kind, seed);
      const tiled = runCase(c, 'tiled', kind, kind, seed);
      const errs: string[] = [];
      for (const [label, tile] of TILES) {
        const got = runCase(c, tile, kind, kind, seed);
        expect(got.every(Number.isFinite), label).toBe(true);
        if (tile.splitK === 1) expect(identical(got, tiled), label).toBe(true);
        else expect(relErr(got, tiled).rel, label).toBeLessThan(kind === 'f16' ? 5e-4 : 4e-3);
        const e = relErr(got, want).rel;
        errs.push(`${label} ${e.toExponential(1)}${tile.splitK > 1 ? ` (vs tiled ${relErr(got, tiled).rel.toExponential(1)})` : ''}`);
        expect(e, label).toBeLessThan(BAR[kind]);
        expect(e, `${label}: the storage is really half`).toBeGreaterThan(0);
      }
      console.log(`[dense-mma] ${kind} ${form}: rel. RMSE vs the f32 map kernel: ${errs.join(', ')}`);
    }, 60_000);
  }

  test('tile problems are one line each', () => {
    expect(mmaTileProblem({ m: 48, n: 64, k: 32, splitK: 1 })).toMatch(/not a multiple of the 32x32 warp tile/);
    expect(mmaTileProblem({ m: 64, n: 64, k: 24, splitK: 1 })).toMatch(/k 24 is not a multiple of 16/);
    expect(mmaTileProblem({ m: 64, n: 64, k: 32, splitK: 3 })).toMatch(/splitK 3 is not a power of two/);
    expect(mmaTileProblem({ m: 256, n: 256, k: 16, splitK: 1 })).toMatch(/needs 2048 threads; at most 1024/);
    expect(mmaTileProblem({ m: 128, n: 128, k: 128, splitK: 1 })).toMatch(/bytes of shared memory; at most 49152/);
    expect(mmaTileProblem(DEFAULT_MMA_TILE)).toBeUndefined();
    expect(mmaTileProblem(SPLITK_MMA_TILE)).toBeUndefined();
  });

  test('the verifier checks where an mma is (uniform control flow, whole warps) and the executor its operands', () => {
    const c = caseOf('nt', ...SIZES);
    const { k } = lowerCase(c, DEFAULT_MMA_TILE, 'f16');
    // An mma inside thread-dependent control flow is refused (a warp runs it together).
    const guard = (ss: KStmt[]): KStmt[] => ss.map((s) => (s.k === 'mma' ? K.iff(K.lt(K.tid('x'), K.i32(3)), [s]) : s.k === 'for' ? { ...s, body: guard(s.body) } : s));
    const bad: Kernel = { ...k, name: 'bad', body: guard(k.body) };
    expect(() => emitKernel(bad, 'cuda')).toThrow(/an mma inside an if whose condition differs between threads/);
    const wg: Kernel = { ...k, name: 'wg', workgroup: [100, 1, 1] };
    expect(() => emitKernel(wg, 'cuda')).toThrow(/mma needs a workgroup \[32 n, 1, 1\]/);
    // An operand offset past the staged slab is an out-of-bounds load, naming the array.
    const shift = (ss: KStmt[]): KStmt[] => ss.map((s) => (s.k === 'mma' ? { ...s, aOff: K.add(s.aOff, K.i32(8 * 1024)) } : s.k === 'for' ? { ...s, body: shift(s.body) } : s));
    const oob: Kernel = { ...k, name: 'oob', body: shift(k.body) };
    const x = new Uint16Array(74 * 41), w = new Uint16Array(19 * 41), y = new Uint16Array(74 * 19);
    expect(() => runKernel(oob, { buffers: { x, w, y }, scalars: {} })).toThrow(/out-of-bounds load in kernel oob: shared 'As__'/);
  });
});

// ---- the schedule field ---------------------------------------------------------------------

/** The tiny RetNet's layer function (q, k, v, g, out projections, FFN). */
const layersFn = (): CheckedFn => modelProgram(loadProgram('models/retnet.ret').checked!.models.get('retnet')!.instances.get('tiny')!).fns.find((f) => f.name === 'retnet_layers')!;

describe('the schedule field dense mma', () => {
  test('it reads from a schedule file, top level and per statement, and is never a default', () => {
    expect(scheduleFromJson({ form: 'chunkwise', dense: 'mma', dtype: 'f16' }).dense).toBe('mma');
    expect(scheduleFromJson({ form: 'chunkwise', statements: { x: { dense: 'mma' } } }).statements!['x']!.dense).toBe('mma');
    expect(() => scheduleFromJson({ form: 'chunkwise', statements: { x: { dense: 'tensor' } } })).toThrow(/statement 'x': dense must be one of map, tiled, blocked, mma, got "tensor"/);
    expect(makeSchedule('chunkwise').dense).toBeUndefined();
  });

  test('on a causal contraction it is an error naming the statement', () => {
    let err: unknown;
    try { compilePlan(layersFn(), makeSchedule('chunkwise', 16, { dtype: 'f16', statements: { 'msr#2.r': { dense: 'mma' } } })); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(ScheduleError);
    expect((err as Error).message).toMatch(/statement 'msr#2\.r' is a causal contraction: dense mma does not apply to it/);
  });

  test('with f32 storage it is one error naming the statement', () => {
    const fn = layersFn();
    let err: unknown;
    try { compilePlan(fn, makeSchedule('chunkwise', 16, { dense: 'mma' })); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(ScheduleError);
    expect((err as Error).message).toMatch(/^retnet_layers: statement '[^']+': dense 'mma' \(tensor cores\) needs f16 or bf16 storage/);
    expect((err as Error).message.split('\n').length).toBe(1);
  });

  test('a per-statement choice lowers that statement only on tensor cores; other targets refuse mma in one line', () => {
    const fn = layersFn();
    const all = compilePlan(fn, makeSchedule('chunkwise', 16, { dense: 'mma', dtype: 'f16' }));
    const mma = all.launches.filter((l) => l.kernel.shared.some((s) => s.storage));
    expect(mma.length).toBeGreaterThanOrEqual(7);
    const one = mma[0]!.target;
    const plan = compilePlan(fn, makeSchedule('chunkwise', 16, { dtype: 'f16', statements: { [one]: { dense: 'mma' } } }));
    expect(plan.launches.filter((l) => l.kernel.shared.some((s) => s.storage)).map((l) => l.target)).toEqual([one]);
    const k = plan.launches.find((l) => l.target === one)!.kernel;
    expect(emitKernel(k, 'cuda').code).toMatch(/mma\.sync\.aligned\.m16n8k16\.row\.col\.f32\.f16\.f16\.f32/);
    const refusal = `kernel IR error in kernel ${k.name}: statement '${one}': dense 'mma' (tensor cores) is CUDA only; use dense 'tiled' or 'blocked' on this target`;
    for (const print of [() => emitKernel(k, 'wgsl'), () => printNative([k])]) {
      let msg = '';
      try { print(); } catch (e) { msg = (e as Error).message; }
      expect(msg).toBe(refusal);
    }
  });
});

describe('retnetc compile with dense mma', () => {
  test('--schedule-file with a per-statement dense mma: the CUDA module of that statement has mma.sync; --target wgsl and c refuse it in one line', async () => {
    ensureBuilt();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'retnetc-mma-cli-'));
    try {
      const sched = path.join(dir, 'schedule.json');
      fs.writeFileSync(sched, JSON.stringify({ form: 'chunkwise', chunk: 64, dtype: 'f16', statements: { 'retnet_layers/a': { dense: 'mma' } } }));
      const args = (target: string) => ['compile', 'models/retnet.ret', '--size', 'tiny', '--schedule-file', sched, '--target', target, '--out', path.join(dir, target)];
      const ok = await cli(args('cuda'), { timeoutMs: 120_000 });
      expect(ok.code, ok.stderr).toBe(0);
      const mma = fs.readdirSync(path.join(dir, 'cuda')).filter((f) => f.endsWith('.cu') && fs.readFileSync(path.join(dir, 'cuda', f), 'utf8').includes('mma.sync'));
      expect(mma).toHaveLength(1);
      for (const target of ['wgsl', 'c']) {
        const r = await cli(args(target), { timeoutMs: 120_000 });
        expect(r.code).toBe(1);
        expect(r.stderr).toBe(`retnetc: error: 'retnet_layers': statement 'a': dense 'mma' (tensor cores) is CUDA only, not --target ${target}; use dense 'tiled' or 'blocked' there\n`);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});

// ---- whole plans on the CPU executor --------------------------------------------------------

const FIXTURE = new URL('../../shared/fixtures/torchscale/retnet-tiny.safetensors', import.meta.url).pathname;
const cpu = planExec('cpu');

describe.skipIf(!existsSync(FIXTURE) && !process.env.CI)('dense mma in whole RetNet plans (the torchscale fixture)', () => {
  for (const dtype of ['f16', 'bf16'] as const) {
    test(`${dtype}: logits equal dense tiled bit for bit and are within ${MODEL_BAR[dtype]} of torchscale`, async () => {
      const ck = await loadTorchscale(FIXTURE);
      const run = async (dense: 'tiled' | 'mma') => {
        const mp = compileModel(ck.model, makeSchedule('chunkwise', 8, { dense, dtype }));
        return { n: mp.plans.flatMap((p) => p.launches).filter((l) => l.kernel.shared.some((s) => s.storage)).length, out: (await runModelPlan(mp, ck.weights, new Map([['tokens', ck.tokens!]]), cpu.exec)).outputs.get('logits')! };
      };
      const [tiled, mma] = [await run('tiled'), await run('mma')];
      expect(mma.n).toBeGreaterThanOrEqual(9);
      expect(identical(Float32Array.from(mma.out.data), Float32Array.from(tiled.out.data))).toBe(true);
      const e = relErr(mma.out.data, ck.weights.get('logits.recurrent')!.data).rel;
      console.log(`[dense-mma] ${dtype} logits: ${mma.n} mma launches, rel. RMSE vs torchscale ${e.toExponential(2)}`);
      expect(e).toBeLessThan(MODEL_BAR[dtype]);
    }, 120_000);
  }

  // B*T is a run-time size, so the plans do not split K (split-K is checked per statement above).
  test('f16: weight gradients of a small random RetNet equal dense tiled bit for bit', async () => {
    const { model, weights } = randomRetnet(3);
    const [B, T] = [2, 20];
    const rand = prng(5);
    const tokens: HostValue = { shape: [B, T], data: Int32Array.from({ length: B * T }, () => Math.floor(rand() * 256)) };
    // A loss-sized upstream gradient (at 1000x, f16 gradient intermediates overflow: NaN in tiled and mma alike).
    const d: HostValue = { shape: [B, T, 256], data: Float64Array.from({ length: B * T * 256 }, (_, i) => 1e-3 * Math.sin(i * 0.37)) };
    const mg = (dense: 'tiled' | 'mma') => compileModelGrad(model, makeSchedule('chunkwise', 16, { dense, dtype: 'f16' }));
    const mmas = mg('mma').plans.flatMap((p) => p.launches).filter((l) => l.kernel.shared.some((s) => s.storage));
    expect(mmas.length, 'mma launches').toBeGreaterThanOrEqual(15);
    const run = async (dense: 'tiled' | 'mma') => runModelBackward(mg(dense), weights, new Map([['tokens', tokens]]), new Map([['logits', d]]), cpu.exec);
    const [tiled, mma] = [await run('tiled'), await run('mma')];
    for (const [name, g] of tiled.grads) {
      expect(g.data.every(Number.isFinite), name).toBe(true);
      expect(identical(Float32Array.from(mma.grads.get(name)!.data), Float32Array.from(g.data)), name).toBe(true);
    }
    console.log(`[dense-mma] f16 weight gradients: ${mmas.length} mma launches, every gradient equal to dense tiled`);
  }, 120_000);
});
