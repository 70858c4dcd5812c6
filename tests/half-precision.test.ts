// Half-precision storage (schedule dtype f16 / bf16, compiler/kir.ts): tensors in 2 bytes,
// arithmetic, state and accumulators in f32.
//
// 1. Conversions (targets/half.ts) against the safetensors reference ones; the kernel IR
//    meaning on the CPU executor (exact loads, stores rounded to nearest even, +-inf, NaN).
// 2. Which tensors are half: every float tensor but the decay tensors and, in a gradient, the
//    tensors that only serve decay gradients; kernel buffers, printers and manifest say so.
// 3. Retention, every schedule, forward and backward, a few shapes (T up to 200, K = V up to
//    64): the f16 and bf16 plans on the CPU executor agree with the f32 plan on the same inputs
//    to relative RMSE <= 5e-3 (and not exactly: storage really is half). grad.gamma is computed
//    in f32 from the rounded inputs (asserted: equal to the f32 plan fed the rounded inputs);
//    it is a sum of O(T^2) terms that cancel, so its error is measured against
//    max(RMS ref, its natural scale) as in tests/webgpu-schedules.test.ts: <= 5e-3 for f16;
//    for bf16 the rounding of the inputs alone moves it up to ~6e-3 of that scale (the
//    conditioning of grad.gamma, not the storage), so the bound there is 2e-2.
// 4. WebGPU (f16; REQUIRE_WEBGPU=1 makes a missing adapter or a missing shader-f16 a failure, as in
//    tests/webgpu-schedules.test.ts): the same agreement; bf16 and a device without shader-f16
//    are one-line errors.
import { afterAll, describe, expect, test } from 'vitest';
import * as K from '../compiler/kir.js';
import type { Kernel } from '../compiler/kir.js';
import { compilePlan, type Plan, tensorStorage } from '../compiler/plan.js';
import { type Form, FORMS, makeSchedule, type StorageDtype } from '../compiler/schedule.js';
import { loadProgram } from '../dsl/program.js';
import type { Value } from '../dsl/reference/interpreter.js';
import { numberToBF16, numberToF16 } from '../runtime/io/safetensors.js';
import { runPlanCpu } from '../runtime/plan-runner.js';
import { acquireWebGPU, WebGPUUnavailableError, type AcquiredWebGPU } from '../runtime/webgpu/device.js';
import { releaseRuntimeDevice, runPlanWebGPU, runtimeDevice, WebGPURunError } from '../runtime/webgpu/runner.js';
import { runKernel } from '../targets/cpu/executor.js';
import { emitKernel, emitPlan } from '../targets/emit.js';
import { bf16Values, f16Values, fromHalfArray, toBF16Bits, toF16Bits, toHalfArray } from '../targets/half.js';

const REQUIRE = process.env['REQUIRE_WEBGPU'] === '1';
const TOL = 5e-3;
const retention = loadProgram('models/retention.ret').checked!.fns.get('retention')!;

// ---- helpers ----------------------------------------------------------------------------

function prng(seed: number): () => number {
  let s = seed % 2147483647 || 1;
  return () => { s = (s * 16807) % 2147483647; return (s / 2147483647) * 2 - 1; };
}
const tensor = (shape: number[], f: () => number): Value => ({ shape, data: Float64Array.from({ length: shape.reduce((a, b) => a * b, 1) }, f) });

/** RMS(a - b) / RMS(b) (RMS(a - b) when b is 0). */
function relErr(a: ArrayLike<number>, b: ArrayLike<number>, scale?: number): number {
  let n = 0, d = 0;
  for (let i = 0; i < b.length; i++) { n += (a[i]! - b[i]!) ** 2; d += b[i]! ** 2; }
  const len = Math.max(b.length, 1);
  const s = Math.max(Math.sqrt(d / len), scale ?? 0);
  return s > 0 ? Math.sqrt(n / len) / s : Math.sqrt(n / len);
}

interface Shape { B: number; H: number; T: number; K: number; V: number; chunk: number; gammas: number[]; seed: number }
const SHAPES: Shape[] = [
  { B: 1, H: 2, T: 200, K: 64, V: 64, chunk: 64, gammas: [0.9, 0.99], seed: 1 },
  { B: 2, H: 1, T: 37, K: 16, V: 8, chunk: 16, gammas: [0.97], seed: 2 },
  { B: 1, H: 3, T: 70, K: 32, V: 64, chunk: 32, gammas: [0.5, 0.95, 1], seed: 3 },
];
/** On WebGPU only K = V = 64, chunk 64: one set of pipelines (each is seconds of LLVM on lavapipe). */
const WEBGPU_SHAPES: Shape[] = [SHAPES[0]!, { B: 2, H: 1, T: 37, K: 64, V: 64, chunk: 64, gammas: [0.97], seed: 4 }];
const label = (s: Shape): string => `B=${s.B} H=${s.H} T=${s.T} K=${s.K} V=${s.V} chunk ${s.chunk}`;

function inputsOf(s: Shape): Map<string, Value> {
  const r = prng(s.seed * 7919);
  return new Map<string, Value>([
    ['q', tensor([s.B, s.H, s.T, s.K], r)], ['k', tensor([s.B, s.H, s.T, s.K], r)], ['v', tensor([s.B, s.H, s.T, s.V], r)],
    ['gamma', { shape: [s.H], data: Float64Array.from(s.gammas) }], ['grad.o', tensor([s.B, s.H, s.T, s.V], r)],
  ]);
}

/** The inputs rounded to `dtype` where the plan stores them in it. */
function rounded(plan: Plan, inputs: ReadonlyMap<string, Value>): Map<string, Value> {
  const out = new Map<string, Value>();
  for (const [name, v] of inputs) {
    const p = plan.fn.params.find((x) => x.name === name);
    const h = p ? plan.half.get(p.v) : undefined;
    out.set(name, h ? { shape: v.shape, data: Float64Array.from(fromHalfArray(toHalfArray(v.data, h), h)) } : v);
  }
  return out;
}

/**
 * The natural scale of grad.gamma: the RMS over heads of the root sum of squares of its terms
 * (t - s) gamma^(t-s-1) (q[t] . k[s]) (v[s] . d[t]), s < t (tests/webgpu-schedules.test.ts).
 */
function gammaScale(s: Shape, inputs: ReadonlyMap<string, Value>): number {
  const q = inputs.get('q')!.data, k = inputs.get('k')!.data, v = inputs.get('v')!.data, d = inputs.get('grad.o')!.data;
  let sumSq = 0;
  for (let b = 0; b < s.B; b++) for (let h = 0; h < s.H; h++) {
    const bh = b * s.H + h;
    const y = s.gammas[h]!;
    for (let t = 1; t < s.T; t++) for (let u = 0; u < t; u++) {
      let qk = 0, vd = 0;
      for (let i = 0; i < s.K; i++) qk += q[(bh * s.T + t) * s.K + i]! * k[(bh * s.T + u) * s.K + i]!;
      for (let j = 0; j < s.V; j++) vd += v[(bh * s.T + u) * s.V + j]! * d[(bh * s.T + t) * s.V + j]!;
      sumSq += ((t - u) * y ** (t - u - 1) * qk * vd) ** 2;
    }
  }
  return Math.sqrt(sumSq / s.H);
}

const planOf = (s: Shape, form: Form, backward: boolean, dtype: StorageDtype): Plan =>
  compilePlan(retention, makeSchedule(form, s.chunk, { dtype }), { backward, constants: new Map([['K', s.K], ['V', s.V]]) });

/** f32 results and the natural scale of grad.gamma, per shape, form and direction (shared with the WebGPU part). */
const refs = new Map<string, { inputs: Map<string, Value>; out: Map<string, Float32Array | Int32Array>; scale: number }>();
const scales = new Map<string, number>();
function reference(s: Shape, form: Form, backward: boolean): { inputs: Map<string, Value>; out: Map<string, Float32Array | Int32Array>; scale: number } {
  const key = `${label(s)} ${form} ${backward}`;
  let r = refs.get(key);
  if (!r) {
    const inputs = inputsOf(s);
    const out = new Map([...runPlanCpu(planOf(s, form, backward, 'f32'), inputs)].map(([k, v]) => [k, v.data] as const));
    let scale = scales.get(label(s));
    if (backward && scale === undefined) scales.set(label(s), (scale = gammaScale(s, inputs)));
    refs.set(key, (r = { inputs, out, scale: scale ?? 0 }));
  }
  return r;
}

/** Worst error per (target, dtype, tensor), printed at the end. */
const worst = new Map<string, number>();
const note = (key: string, e: number): void => { worst.set(key, Math.max(worst.get(key) ?? 0, e)); };
afterAll(() => {
  if (worst.size) console.log(`[half-precision] worst relative RMSE against the f32 plan (grad.gamma: of max(RMS, natural scale)):\n  ${[...worst].map(([k, v]) => `${k}: ${v.toExponential(2)}`).join('\n  ')}`);
});

/** Checks a half plan's outputs against the f32 plan's; returns problems. */
function compare(where: string, dtype: 'f16' | 'bf16', target: string, got: ReadonlyMap<string, { data: ArrayLike<number> }>, ref: { out: Map<string, Float32Array | Int32Array>; scale: number }): string[] {
  const problems: string[] = [];
  for (const [name, want] of ref.out) {
    const g = got.get(name);
    if (!g) { problems.push(`${where}: no output ${name}`); continue; }
    const decay = name === 'grad.gamma';
    const e = relErr(g.data, want, decay ? ref.scale : undefined);
    note(`${target} ${dtype} ${name}`, e);
    const tol = decay && dtype === 'bf16' ? 2e-2 : TOL;
    if (!(e <= tol)) problems.push(`${where} ${name}: relative RMSE ${e.toExponential(2)} > ${tol}`);
    if (!(e > 0)) problems.push(`${where} ${name}: equal to the f32 plan's (is the storage half?)`);
  }
  return problems;
}

// ---- 1. conversions and the executor --------------------------------------------------------

describe('conversions and kernel IR meaning', () => {
  test('toF16Bits / toBF16Bits round like the safetensors reference (random f32s and doubles, every half value and midpoint)', () => {
    const r = prng(99);
    const u = new Uint32Array(1), f = new Float32Array(u.buffer);
    const xs: number[] = [0, -0, 65504, 65519.99, 65520, 65536, 2 ** -24, 2 ** -25, 3 * 2 ** -26, 5e-324, 3.4028234663852886e38, 3.4e38 * 1.01, Infinity, -Infinity, NaN];
    for (let i = 0; i < 50_000; i++) {
      u[0] = Math.floor((r() + 1) * 2 ** 31) >>> 0;
      xs.push(f[0]!, r() * 2 ** (r() * 40 - 20));
    }
    const h = f16Values(), b = bf16Values();
    for (let i = 0; i < 65536; i += 7) xs.push(h[i]!, (h[i]! + h[(i + 1) & 0xffff]!) / 2, b[i]!, (b[i]! + b[(i + 1) & 0xffff]!) / 2);
    const bad = xs.filter((x) => toF16Bits(x) !== numberToF16(x) || toBF16Bits(x) !== numberToBF16(x));
    expect(bad).toEqual([]);
    expect(Array.from(fromHalfArray(toHalfArray([1.5, -2, 65520, 1e-8], 'f16'), 'f16'))).toEqual([1.5, -2, Infinity, 0]);
    expect(Array.from(fromHalfArray(toHalfArray([1.5, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 3e38], 'bf16'), 'bf16'))).toEqual([1.5, 1, 1 + 2 ** -6, 3.00405527047391e38]);
  });

  test('CPU executor: half loads are exact, stores round to nearest even (+-inf past the range, NaN stays NaN); arrays are checked', () => {
    const k: Kernel = {
      name: 'halves', workgroup: [8, 1, 1], grid: [K.i32(1), K.i32(1), K.i32(1)],
      buffers: [
        { name: 'x', type: 'f32', access: 'read' }, { name: 'h', type: 'f32', access: 'read_write', storage: 'f16' },
        { name: 'b', type: 'f32', access: 'read_write', storage: 'bf16' }, { name: 'back', type: 'f32', access: 'read_write' },
      ],
      scalars: [], shared: [],
      body: [
        K.decl('v', 'f32', K.load('x', K.tid())),
        K.store('h', K.tid(), K.v('v', 'f32')),
        K.store('b', K.tid(), K.v('v', 'f32')),
        K.store('back', K.tid(), K.add(K.load('h', K.tid()), K.load('b', K.tid()))),
      ],
    };
    const xs = [1 + 2 ** -11, 1 + 3 * 2 ** -11, 65519, 65520, -1e9, NaN, 2 ** -25, 1 + 2 ** -8 + 2 ** -20];
    const x = Float32Array.from(xs);
    const h = new Uint16Array(8), b = new Uint16Array(8), back = new Float32Array(8);
    runKernel(k, { buffers: { x, h, b, back }, scalars: {} });
    expect(Array.from(h)).toEqual(Array.from(x, numberToF16));
    expect(Array.from(b)).toEqual(Array.from(x, numberToBF16));
    expect(Array.from(fromHalfArray(h, 'f16'))).toEqual([1, 1 + 2 ** -9, 65504, Infinity, -Infinity, NaN, 0, 1.00390625]);
    expect(Array.from(back)).toEqual(Array.from(h, (v, i) => Math.fround(f16Values()[v]! + bf16Values()[b[i]!]!)));
    expect(() => runKernel(k, { buffers: { x, h: new Float32Array(8), b, back }, scalars: {} })).toThrow(/buffer 'h' \(f16\) must be a Uint16Array, got Float32Array/);
    const bad: Kernel = { ...k, name: 'bad', buffers: [{ name: 'x', type: 'i32', access: 'read', storage: 'f16' }], body: [] };
    expect(() => runKernel(bad, { buffers: { x: new Uint16Array(1) }, scalars: {} })).toThrow(/buffer 'x' of type i32 has f16 storage/);
  });

  test('makeSchedule takes the dtype (default f32) and rejects others', () => {
    expect(makeSchedule('chunkwise', 64).dtype).toBe('f32');
    expect(makeSchedule('recurrent', 1, { dtype: 'bf16' }).dtype).toBe('bf16');
    expect(() => makeSchedule('parallel', 64, { dtype: 'f64' as StorageDtype })).toThrow(/dtype must be one of f32, f16, bf16, got f64/);
  });
});

// ---- 2. which tensors are half; printers and manifest -------------------------------------

describe('storage of the plan tensors', () => {
  const s = SHAPES[0]!;
  test('f32 schedules store nothing in half (the kernels are the f32 ones)', () => {
    for (const form of FORMS) for (const backward of [false, true]) {
      const p = planOf(s, form, backward, 'f32');
      expect(p.half.size).toBe(0);
      expect(p.launches.every((l) => l.kernel.buffers.every((b) => b.storage === undefined))).toBe(true);
    }
  });

  test('forward: q, k, v, o half; gamma (a decay) f32. Backward: the decay and every tensor serving only grad.gamma f32', () => {
    for (const dtype of ['f16', 'bf16'] as const) {
      const fwd = planOf(s, 'chunkwise', false, dtype);
      expect(new Map([...fwd.half].map(([id, h]) => [fwd.fn.vars.get(id)?.name ?? id, h]))).toEqual(new Map(['q', 'k', 'v', 'o'].map((n) => [n, dtype])));
      const bwd = planOf(s, 'chunkwise', true, dtype);
      const out = (name: string): string => bwd.fn.outputs.find((o) => o.name === name)!.v;
      for (const n of ['q', 'k', 'v', 'grad.o']) expect(tensorStorage(bwd, n), n).toBe(dtype);
      for (const n of ['grad.q', 'grad.k', 'grad.v']) expect(tensorStorage(bwd, out(n)), n).toBe(dtype);
      expect(tensorStorage(bwd, 'gamma')).toBe('f32');
      expect(tensorStorage(bwd, out('grad.gamma'))).toBe('f32');
      // The log-decay, the order-1 contraction y1 and the sum over dy . y1 are f32 too.
      const f32Written = bwd.launches.filter((l) => tensorStorage(bwd, l.target) === 'f32').map((l) => l.target);
      expect(f32Written.length).toBeGreaterThanOrEqual(4);
      for (const l of bwd.launches) for (const b of l.kernel.buffers) expect(b.storage, `${l.kernel.name} ${b.name}`).toBe(bwd.half.get(l.buffers[b.name]!));
    }
  });

  test('CUDA prints __half / __nv_bfloat16 pointers with exact loads and rounding stores; WGSL array<f16> with enable f16; bf16 WGSL is an error', () => {
    const k16 = planOf(s, 'recurrent', false, 'f16').launches[0]!.kernel;
    const kb = planOf(s, 'recurrent', false, 'bf16').launches[0]!.kernel;
    const c16 = emitKernel(k16, 'cuda').code;
    expect(c16).toContain('#include <cuda_fp16.h>');
    expect(c16).toMatch(/const __half\* __restrict__ q,/);
    expect(c16).toMatch(/const float\* __restrict__ gamma,/);
    expect(c16).toMatch(/__half2float\(q\[/);
    expect(c16).toMatch(/o\[[^\]]+\] = __float2half_rn\(/);
    expect(c16).toMatch(/f32 arithmetic, f16 storage/);
    const cb = emitKernel(kb, 'cuda').code;
    expect(cb).toContain('#include <cuda_bf16.h>');
    expect(cb).toMatch(/__nv_bfloat16\* __restrict__ o,/);
    expect(cb).toMatch(/__bfloat162float\(k\[/);
    expect(cb).toMatch(/__float2bfloat16_rn\(/);
    const w = emitKernel(k16, 'wgsl').code;
    expect(w.split('\n')[1]).toBe('enable f16;');
    expect(w).toMatch(/var<storage, read> q: array<f16>;/);
    expect(w).toMatch(/var<storage, read> gamma: array<f32>;/);
    expect(w).toMatch(/f32\(q\[/);
    expect(w).toMatch(/o\[[^\]]+\] = rn_f16\(/);
    expect(() => emitKernel(kb, 'wgsl')).toThrow(/^WGSL has no bf16: kernel retention_0_recurrent stores buffer 'q' as bf16; compile for WebGPU with dtype f16 or f32$/);
  });

  test('the manifest records the storage: schedule dtype, tensor element types, kernel buffers', () => {
    const m = emitPlan(planOf(s, 'chunkwise', true, 'f16'), 'cuda').manifest;
    expect(m.schedule.dtype).toBe('f16');
    const type = (name: string): string | undefined => m.tensors.find((t) => t.name === name)?.type;
    expect([type('q'), type('grad.o'), type('grad.k'), type('gamma'), type('grad.gamma')]).toEqual(['f16', 'f16', 'f16', 'f32', 'f32']);
    const bufs = m.kernels.flatMap((k) => k.buffers);
    expect(bufs.filter((b) => b.storage === 'f16').length).toBeGreaterThan(10);
    expect(bufs.every((b) => b.type === 'f32' || b.type === 'i32')).toBe(true);
    const f32m = emitPlan(planOf(s, 'chunkwise', true, 'f32'), 'wgsl').manifest;
    expect(f32m.tensors.every((t) => t.type === 'f32')).toBe(true);
    expect(f32m.kernels.flatMap((k) => k.buffers).some((b) => 'storage' in b)).toBe(false);
  });
});

// ---- 3. agreement on the CPU executor -----------------------------------------------------------

describe.each(SHAPES)('CPU executor, retention $B x $H x $T, K=$K V=$V', (s) => {
  test.each(FORMS)(`%s: f16 and bf16 plans, forward and backward, within ${TOL} of the f32 plan`, (form) => {
    const problems: string[] = [];
    for (const backward of [false, true]) {
      const ref = reference(s, form, backward);
      for (const dtype of ['f16', 'bf16'] as const) {
        const plan = planOf(s, form, backward, dtype);
        const got = runPlanCpu(plan, ref.inputs);
        problems.push(...compare(`${form}${backward ? ' backward' : ''} ${dtype}`, dtype, 'cpu', got, ref));
        if (backward && s.T < 100) {
          // grad.gamma is computed in f32 from the rounded inputs: exactly the f32 plan's on those.
          const f32 = runPlanCpu(planOf(s, form, true, 'f32'), rounded(plan, ref.inputs));
          const e = relErr(got.get('grad.gamma')!.data, f32.get('grad.gamma')!.data);
          if (!(e <= 1e-6)) problems.push(`${form} backward ${dtype}: grad.gamma differs from the f32 plan on rounded inputs by ${e.toExponential(2)}`);
        }
      }
    }
    expect(problems).toEqual([]);
  }, 120_000);
});

// ---- 4. WebGPU ----------------------------------------------------------------------------------

let gpu: AcquiredWebGPU | null = null;
let unavailable = '';
try {
  gpu = await Promise.race([runtimeDevice(), new Promise<never>((_, reject) => setTimeout(() => reject(new WebGPUUnavailableError('acquireWebGPU() timed out after 30000 ms')), 30_000))]);
} catch (e) {
  if (e instanceof WebGPUUnavailableError) unavailable = e.message;
  else throw e;
}
const f16 = gpu?.device.features.has('shader-f16') ?? false;
if (!gpu) console.warn(`[half-precision] ${REQUIRE ? 'FAIL (REQUIRE_WEBGPU=1)' : 'skipping WebGPU'}: ${unavailable}`);
else if (!f16) console.warn(`[half-precision] skipping WebGPU f16 runs: the device has no shader-f16 (${gpu.info.summary})`);

afterAll(async () => {
  await releaseRuntimeDevice();
});

describe('WebGPU', { timeout: 300_000 }, () => {
  test('a WebGPU adapter is available (required when REQUIRE_WEBGPU=1)', (ctx) => {
    if (!gpu) {
      if (REQUIRE) throw new Error(`REQUIRE_WEBGPU=1 but ${unavailable}`);
      ctx.skip();
    }
  });

  // Lavapipe and every GPU CI uses have shader-f16: under REQUIRE_WEBGPU=1 its absence is a
  // failure, not a skip of the f16 runs below.
  test('the WebGPU device has shader-f16 (required when REQUIRE_WEBGPU=1)', (ctx) => {
    if (!gpu || !f16) {
      if (REQUIRE) throw new Error(`REQUIRE_WEBGPU=1 but ${gpu ? `the device has no shader-f16 (${gpu.info.summary})` : unavailable}`);
      ctx.skip();
    }
    expect(gpu!.device.features.has('shader-f16')).toBe(true);
  });

  describe.skipIf(!gpu || !f16).each(WEBGPU_SHAPES)('f16 plans, retention $B x $H x $T, K=$K V=$V', (s) => {
    test.each(FORMS)(`%s: forward and backward within ${TOL} of the f32 plan, and close to the CPU executor's f16 run`, async (form) => {
      const problems: string[] = [];
      for (const backward of [false, true]) {
        const ref = reference(s, form, backward);
        const plan = planOf(s, form, backward, 'f16');
        const got = await runPlanWebGPU(plan, ref.inputs);
        const where = `${form}${backward ? ' backward' : ''} f16 on WebGPU`;
        problems.push(...compare(where, 'f16', 'webgpu', got, ref));
        // Against the CPU executor's f16 run: f32 arithmetic differs in the last bits, which can
        // move a rounding to f16 by one ulp (2^-11) here and there.
        const cpu = runPlanCpu(plan, ref.inputs);
        for (const [name, v] of cpu) {
          const e = relErr(got.get(name)!.data, v.data);
          if (!(e <= 1e-4)) problems.push(`${where} ${name}: ${e.toExponential(2)} from the CPU executor's f16 run`);
        }
      }
      expect(problems).toEqual([]);
    });
  });

  test.skipIf(!gpu)('bf16 plans are a one-line error (WGSL has no bf16)', async () => {
    const s = SHAPES[1]!;
    let err: unknown;
    try { await runPlanWebGPU(planOf(s, 'chunkwise', false, 'bf16'), inputsOf(s)); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(WebGPURunError);
    expect((err as WebGPURunError).kind).toBe('feature');
    expect((err as Error).message).toBe('retention (chunkwise, chunk 16) stores tensors as bf16, which WGSL does not have; use dtype f16 or f32 on WebGPU');
  });

  test.skipIf(!gpu)('f16 plans on a device without shader-f16 are a one-line error', async () => {
    const plain = await acquireWebGPU({ optionalFeatures: [], label: 'no-f16' });
    try {
      expect(plain.device.features.has('shader-f16')).toBe(false);
      const s = SHAPES[1]!;
      let err: unknown;
      try { await runPlanWebGPU(planOf(s, 'recurrent', false, 'f16'), inputsOf(s), { device: plain }); } catch (e) { err = e; }
      expect(err).toBeInstanceOf(WebGPURunError);
      expect((err as WebGPURunError).kind).toBe('feature');
      expect((err as Error).message).toMatch(/^retention \(recurrent\) stores tensors as f16, which needs the WebGPU feature 'shader-f16'; this device does not have it .*; use dtype f32$/);
      expect((err as Error).message).not.toMatch(/\n/);
    } finally {
      plain.release();
    }
  });
});
