// Every emitted WGSL module validates in Dawn (Tint's parser, resolver and uniformity
// analysis) and makes a compute pipeline. REQUIRE_WEBGPU=1 validates on the real adapter
// (lavapipe in CI) and fails without one; otherwise Dawn's null backend validates. Where a
// real adapter exists, kernels also run and are compared with the CPU executor: whole plans,
// the x fold beyond 65535 workgroups, and the helpers for what WGSL leaves open.
import { afterAll, describe, expect, test } from 'vitest';
import * as K from '../compiler/kir.js';
import type { Kernel, KExpr } from '../compiler/kir.js';
import { compilePlan, planBuffers, type Plan } from '../compiler/plan.js';
import { type Form, makeSchedule } from '../compiler/schedule.js';
import { devaluate } from '../dsl/dims.js';
import { loadProgram } from '../dsl/program.js';
import type { Value } from '../dsl/reference/interpreter.js';
import { planSizes, runPlanCpu } from '../runtime/plan-runner.js';
import { acquireWebGPU, validateWGSL, WebGPUUnavailableError, type AcquiredWebGPU } from '../runtime/webgpu/device.js';
import { runKernel } from '../targets/cpu/executor.js';
import { printWgsl } from '../targets/wgsl/printer.js';
import { emitKernel, emitPlan } from '../targets/emit.js';
import type { EmittedKernel } from '../targets/emitted.js';
import { WGSL_RESERVED } from '../targets/wgsl/legalise.js';

const REQUIRE = process.env['REQUIRE_WEBGPU'] === '1';

async function tryAcquire(opts: Parameters<typeof acquireWebGPU>[0]): Promise<[AcquiredWebGPU | null, string]> {
  try {
    return [await acquireWebGPU(opts), ''];
  } catch (e) {
    if (e instanceof WebGPUUnavailableError) return [null, e.message];
    throw e;
  }
}

// Validation: the real adapter when required, else the null backend (no Vulkan needed).
const [validator, whyNoValidator] = await tryAcquire(REQUIRE ? { label: 'wgsl-validate' } : { dawnOptions: ['backend=null'], label: 'wgsl-validate-null' });
// Execution: the real adapter if there is one.
const [runner, whyNoRunner] = REQUIRE ? [validator, whyNoValidator] : await tryAcquire({ label: 'wgsl-run' });
if (!validator) console.warn(`[wgsl-validate] ${REQUIRE ? 'FAIL (REQUIRE_WEBGPU=1)' : 'skipping validation'}: ${whyNoValidator}`);
else console.log(`[wgsl-validate] validating on ${validator.info.summary}`);
if (!runner) console.warn(`[wgsl-validate] not running kernels: ${whyNoRunner}`);

afterAll(() => {
  validator?.release();
  if (runner !== validator) runner?.release();
});

const K64 = new Map([['K', 64], ['V', 64]]);
const fnOf = (file: string, name: string) => loadProgram(`models/${file}.ret`).checked!.fns.get(name)!;
const MODELS: [string, string][] = [['retention', 'retention'], ['retention', 'retention_state'], ['linear_attention', 'linear_attention'], ['gated_retention', 'gated_retention']];
const FORMS: Form[] = ['parallel', 'recurrent', 'chunkwise'];

function testSet(): { label: string; kernel: Kernel }[] {
  const out: { label: string; kernel: Kernel }[] = [];
  const add = (label: string, p: Plan): void => { for (const l of p.launches) out.push({ label: `${label} ${l.kernel.name}`, kernel: l.kernel }); };
  for (const [file, name] of MODELS) {
    const fn = fnOf(file, name);
    // Gated chunkwise kernels at chunk 64 need 16.3 KiB of workgroup memory (P plus the
    // chunk-local gate sums), just above WebGPU's guaranteed 16 KiB that the null backend
    // offers; the runtime checks that against the adapter (lavapipe allows 32 KiB and runs them
    // in tests/webgpu-schedules.test.ts). Here they are validated at chunk 32.
    const chunk = (form: Form) => (name === 'gated_retention' && form === 'chunkwise' ? 32 : 64);
    for (const form of FORMS) for (const backward of [false, true]) add(`${name} ${form}${backward ? ' backward' : ''}`, compilePlan(fn, makeSchedule(form, chunk(form)), { backward, constants: K64 }));
  }
  const sm = fnOf('softmax_attention', 'softmax_attention');
  for (const backward of [false, true]) add(`softmax_attention parallel${backward ? ' backward' : ''}`, compilePlan(sm, makeSchedule('parallel', 64), { backward, constants: K64 }));
  return out;
}

/** Validation messages of a module, plus pipeline creation; '' when it is fine. */
async function check(g: AcquiredWebGPU, e: EmittedKernel): Promise<string> {
  const r = await validateWGSL(e.code, g.device);
  if (!r.ok) return r.messages.map((m) => `${m.line}:${m.col} ${m.message}`).join('\n');
  g.device.pushErrorScope('validation');
  g.device.createComputePipeline({ layout: 'auto', compute: { module: g.device.createShaderModule({ code: e.code }), entryPoint: e.entry } });
  const err = await g.device.popErrorScope();
  return err ? `pipeline: ${err.message}` : '';
}

describe('WGSL validation in Dawn', { timeout: 300_000 }, () => {
  test('a WebGPU device validates (required when REQUIRE_WEBGPU=1)', (ctx) => {
    if (!validator) {
      if (REQUIRE) throw new Error(`REQUIRE_WEBGPU=1 but ${whyNoValidator}`);
      ctx.skip();
    }
  });

  test.skipIf(!validator)('every kernel of retention, retention_state, linear and gated retention (3 schedules, forward and backward) and softmax attention', async () => {
    const set = testSet();
    const t0 = performance.now();
    const failures: string[] = [];
    for (const { label, kernel } of set) {
      const msg = await check(validator!, emitKernel(kernel, 'wgsl'));
      if (msg) failures.push(`${label}:\n${msg}`);
    }
    console.log(`[wgsl-validate] ${set.length} modules validated in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    expect(failures).toEqual([]);
    expect(set.length).toBeGreaterThan(150);
  });

  test.skipIf(!validator)('f16 storage: every retention kernel (3 schedules, forward and backward) validates (enable f16)', async (ctx) => {
    if (!validator!.device.features.has('shader-f16')) {
      console.warn(`[wgsl-validate] skipping f16 storage: the device has no shader-f16 (${validator!.info.summary})`);
      ctx.skip();
    }
    const failures: string[] = [];
    let n = 0;
    for (const form of FORMS) for (const backward of [false, true]) {
      const plan = compilePlan(fnOf('retention', 'retention'), makeSchedule(form, 64, { dtype: 'f16' }), { backward, constants: K64 });
      for (const l of plan.launches) {
        const e = emitKernel(l.kernel, 'wgsl');
        if (l.kernel.buffers.some((b) => b.storage === 'f16')) expect(e.code).toMatch(/^enable f16;$/m);
        const msg = await check(validator!, e);
        if (msg) failures.push(`${form}${backward ? ' backward' : ''} ${l.kernel.name}:\n${msg}`);
        n++;
      }
    }
    expect(failures).toEqual([]);
    expect(n).toBeGreaterThan(20); // 3 forms x (1 forward + the backward launches)
  });

  test.skipIf(!validator)('chunk 128 (64 KiB of workgroup memory) validates; the pipeline needs the adapter limit', async () => {
    const k = compilePlan(fnOf('retention', 'retention'), makeSchedule('chunkwise', 128), { constants: K64 }).launches[0]!.kernel;
    const r = await validateWGSL(emitKernel(k, 'wgsl').code, validator!.device);
    expect(r.messages.filter((m) => m.type === 'error')).toEqual([]);
  });

  test.skipIf(!validator)('identifiers spelled as WGSL keywords, reserved words and builtins are renamed', async () => {
    const globals = new Set(['fn', 'let', 'target', 'var', 'sample', 'workgroup', 'loop']);
    const words = [...WGSL_RESERVED].filter((w) => !globals.has(w));
    const k: Kernel = {
      name: 'fn', workgroup: [4, 1, 1], grid: [K.v('var'), K.i32(1), K.i32(1)],
      buffers: [{ name: 'let', type: 'f32', access: 'read' }, { name: 'target', type: 'f32', access: 'read_write' }],
      scalars: [{ name: 'var', type: 'i32' }, { name: 'sample', type: 'f32' }],
      shared: [{ name: 'workgroup', type: 'f32', size: 4 }],
      body: [
        ...words.map((w, i) => K.decl(w, 'f32', i === 0 ? K.v('sample', 'f32') : K.add(K.v(words[i - 1]!, 'f32'), K.f32(1)))),
        K.store('workgroup', K.tid(), K.v(words[words.length - 1]!, 'f32')),
        K.barrier(),
        K.loop('loop', K.i32(0), K.i32(4), [K.store('target', K.v('loop'), K.add(K.load('let', K.v('loop')), K.load('workgroup', K.v('loop'))))]),
      ],
    };
    expect(await check(validator!, emitKernel(k, 'wgsl'))).toBe('');
  });

  test.skipIf(!validator)('the uniformity analysis is active: a barrier under a thread-dependent branch is rejected', async () => {
    const k: Kernel = {
      name: 'bad', workgroup: [64, 1, 1], grid: [K.i32(1), K.i32(1), K.i32(1)], buffers: [{ name: 'o', type: 'f32', access: 'read_write' }], scalars: [],
      shared: [{ name: 's', type: 'f32', size: 64 }],
      body: [K.iff(K.lt(K.tid(), K.i32(3)), [K.store('s', K.tid(), K.f32(1)), K.barrier()]), K.store('o', K.tid(), K.load('s', K.i32(0)))],
    };
    // The kernel IR verifier refuses it first (a barrier in non-uniform control flow); Dawn must too.
    expect(() => emitKernel(k, 'wgsl')).toThrow(/barrier/);
    const m = printWgsl(k, { verify: false });
    expect(await check(validator!, { ...emitKernel({ ...k, body: [] }, 'wgsl'), code: m.code, entry: m.legalised.kernel.name })).toMatch(/uniform control flow/);
  });
});

// ---- running kernels ---------------------------------------------------------------------

function evalGrid(e: KExpr, scalars: Readonly<Record<string, number>>): number {
  switch (e.k) {
    case 'const': return e.value;
    case 'var': return scalars[e.name]!;
    case 'bin': {
      const a = evalGrid(e.a, scalars), b = evalGrid(e.b, scalars);
      switch (e.op) {
        case '+': return (a + b) | 0;
        case '-': return (a - b) | 0;
        case '*': return Math.imul(a, b);
        case '/': return b === 0 ? 0 : (a / b) | 0;
        case '%': return b === 0 ? 0 : (a % b) | 0;
        case 'min': return Math.min(a, b);
        case 'max': return Math.max(a, b);
        default: break;
      }
    }
  }
  throw new Error(`grid expression ${JSON.stringify(e)} not supported here`);
}

const pipelines = new WeakMap<EmittedKernel, GPUComputePipeline>();

/** Dispatches one emitted kernel (contract of targets/emitted.ts) on `bufs` by kernel buffer name. */
function dispatch(g: AcquiredWebGPU, enc: GPUCommandEncoder, e: EmittedKernel, bufs: Record<string, GPUBuffer>, scalars: Record<string, number>): void {
  const { device } = g;
  let pipe = pipelines.get(e);
  if (!pipe) {
    pipe = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code: e.code }), entryPoint: e.entry } });
    pipelines.set(e, pipe);
  }
  const entries: GPUBindGroupEntry[] = e.buffers.map((b) => ({ binding: b.binding, resource: { buffer: bufs[b.name]! } }));
  if (e.uniform) {
    const data = new ArrayBuffer(e.uniform.size);
    const view = new DataView(data);
    for (const s of e.scalars) {
      if (s.type === 'i32') view.setInt32(s.offset, scalars[s.name]!, true);
      else view.setFloat32(s.offset, scalars[s.name]!, true);
    }
    const ub = device.createBuffer({ size: e.uniform.size, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    device.queue.writeBuffer(ub, 0, data);
    entries.push({ binding: e.uniform.binding, resource: { buffer: ub } });
  }
  const [x, y, z] = e.grid.map((d) => evalGrid(d, scalars)) as [number, number, number];
  const pass = enc.beginComputePass();
  pass.setPipeline(pipe);
  pass.setBindGroup(0, device.createBindGroup({ layout: pipe.getBindGroupLayout(0), entries }));
  if (x > 0 && y > 0 && z > 0) {
    if (e.foldX) pass.dispatchWorkgroups(Math.min(x, 65535), Math.ceil(x / 65535) * y, z);
    else pass.dispatchWorkgroups(x, y, z);
  }
  pass.end();
}

async function readBack(g: AcquiredWebGPU, buf: GPUBuffer, bytes: number): Promise<ArrayBuffer> {
  const rb = g.device.createBuffer({ size: buf.size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const enc = g.device.createCommandEncoder();
  enc.copyBufferToBuffer(buf, 0, rb, 0, buf.size);
  g.device.queue.submit([enc.finish()]);
  await rb.mapAsync(GPUMapMode.READ);
  const out = rb.getMappedRange().slice(0, bytes);
  rb.unmap();
  rb.destroy();
  return out;
}

function storage(g: AcquiredWebGPU, data: Float32Array | Int32Array): GPUBuffer {
  const b = g.device.createBuffer({ size: Math.max(16, data.byteLength), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
  if (data.byteLength) g.device.queue.writeBuffer(b, 0, data.buffer, data.byteOffset, data.byteLength);
  return b;
}

/** Runs a plan's WGSL kernels in order, as runPlanCpu runs its kernel IR. */
async function runPlanWebGPU(g: AcquiredWebGPU, plan: Plan, inputs: ReadonlyMap<string, Value>): Promise<Map<string, Float32Array>> {
  const sizes = planSizes(plan, inputs);
  const { kernels, manifest } = emitPlan(plan, 'wgsl');
  const byName = new Map(kernels.map((k) => [k.entry, k]));
  const bufs = new Map<string, { buf: GPUBuffer; bytes: number }>();
  for (const p of plan.fn.params) {
    const data = Float32Array.from(inputs.get(p.name)!.data);
    bufs.set(p.v, { buf: storage(g, data), bytes: data.byteLength });
  }
  for (const cv of planBuffers(plan)) {
    const n = cv.shape.reduce((a, d) => a * devaluate(d, sizes)!, 1);
    bufs.set(cv.id, { buf: storage(g, new Float32Array(n)), bytes: 4 * n });
  }
  const enc = g.device.createCommandEncoder();
  g.device.pushErrorScope('validation');
  for (const [i, l] of plan.launches.entries()) {
    const e = byName.get(manifest.launches[i]!.kernel)!;
    const b: Record<string, GPUBuffer> = {};
    for (const [name, id] of Object.entries(l.buffers)) b[name] = bufs.get(id)!.buf;
    const s: Record<string, number> = {};
    for (const [name, atom] of Object.entries(l.scalars)) s[name] = sizes.get(atom)!;
    dispatch(g, enc, e, b, s);
  }
  g.device.queue.submit([enc.finish()]);
  const err = await g.device.popErrorScope();
  if (err) throw new Error(`WebGPU: ${err.message}`);
  const out = new Map<string, Float32Array>();
  for (const o of plan.fn.outputs) {
    const { buf, bytes } = bufs.get(o.v)!;
    out.set(o.name, new Float32Array(await readBack(g, buf, bytes)));
  }
  for (const { buf } of bufs.values()) buf.destroy();
  return out;
}

function randomInputs(names: [string, number[]][], seed: number): Map<string, Value> {
  let s = seed;
  const r = (): number => { s = (s * 16807) % 2147483647; return (s / 2147483647) * 2 - 1; };
  return new Map(names.map(([n, shape]) => [n, { shape, data: Float64Array.from({ length: shape.reduce((a, b) => a * b, 1) }, r) }]));
}

const relErr = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let n = 0, d = 0;
  for (let i = 0; i < b.length; i++) { n += (a[i]! - b[i]!) ** 2; d += b[i]! ** 2; }
  return Math.sqrt(n / Math.max(d, 1e-30));
};

describe.skipIf(!runner)('WGSL kernels run on the adapter and match the CPU executor', { timeout: 300_000 }, () => {
  const [B, H, T] = [1, 2, 70];
  const base = (): Map<string, Value> => randomInputs([['q', [B, H, T, 64]], ['k', [B, H, T, 64]], ['v', [B, H, T, 64]]], 7);
  const cases: { name: string; file: string; form: Form; backward: boolean; extra: (m: Map<string, Value>) => void }[] = [
    { name: 'retention', file: 'retention', form: 'chunkwise', backward: false, extra: (m) => m.set('gamma', { shape: [H], data: Float64Array.of(0.9, 0.99) }) },
    { name: 'retention', file: 'retention', form: 'chunkwise', backward: true, extra: (m) => m.set('gamma', { shape: [H], data: Float64Array.of(0.9, 0.99) }) },
    { name: 'retention', file: 'retention', form: 'parallel', backward: false, extra: (m) => m.set('gamma', { shape: [H], data: Float64Array.of(0.9, 0.99) }) },
    { name: 'linear_attention', file: 'linear_attention', form: 'recurrent', backward: false, extra: () => {} },
    { name: 'gated_retention', file: 'gated_retention', form: 'chunkwise', backward: false, extra: (m) => m.set('g', { shape: [B, H, T], data: Float64Array.from({ length: B * H * T }, (_, i) => -0.05 - 0.1 * ((i * 7) % 5)) }) },
  ];
  for (const c of cases) {
    test(`${c.name} ${c.form}${c.backward ? ' backward' : ''} (B=${B} H=${H} T=${T} K=V=64)`, async () => {
      const fn = fnOf(c.file, c.name);
      const plan = compilePlan(fn, makeSchedule(c.form, 64), { backward: c.backward, constants: K64 });
      const inputs = base();
      c.extra(inputs);
      if (c.backward) for (const o of fn.outputs) inputs.set(`grad.${o.name}`, randomInputs([['x', [B, H, T, 64]]], 11).get('x')!);
      const want = runPlanCpu(plan, inputs);
      const got = await runPlanWebGPU(runner!, plan, inputs);
      for (const [name, w] of want) {
        const err = relErr(got.get(name)!, w.data);
        expect(err, name).toBeLessThan(2e-5);
      }
    });
  }

  test('the x grid folds beyond 65535 workgroups (70000 x 2 groups)', async () => {
    const n = 70000;
    const k: Kernel = {
      name: 'fold', workgroup: [1, 1, 1], grid: [K.v('n'), K.i32(2), K.i32(1)],
      buffers: [{ name: 'o', type: 'i32', access: 'read_write' }], scalars: [{ name: 'n', type: 'i32' }], shared: [],
      body: [K.store('o', K.add(K.mul(K.wg('y'), K.v('n')), K.wg('x')), K.add(K.wg('x'), K.mul(K.wg('y'), K.i32(1000000))))],
    };
    const e = emitKernel(k, 'wgsl');
    expect(e.foldX).toBe(true);
    const o = storage(runner!, new Int32Array(2 * n).fill(-1));
    const enc = runner!.device.createCommandEncoder();
    dispatch(runner!, enc, e, { o }, { n });
    runner!.device.queue.submit([enc.finish()]);
    const got = new Int32Array(await readBack(runner!, o, 8 * n));
    const want = new Int32Array(2 * n);
    runKernel(k, { buffers: { o: want }, scalars: { n } });
    expect(got[0]).toBe(0);
    expect(got[n + 65536]).toBe(1000000 + 65536);
    expect(got.every((x, i) => x === want[i])).toBe(true);
    o.destroy();
  });

  test('helpers: integer division by zero, f32 -> i32, NaN-propagating min/max, erf, log1p, tanh', async () => {
    const xs = [0, -0, 0.5, -0.5, 1e-6, -1e-7, 0.999, 1, 1.5, -2.25, 3.9, 4.5, -7, 30, 100, 1e10, -1e10, 3e9, -3e9, NaN, Infinity, -Infinity];
    const ints = [7, -7, 0, 2147483647, -2147483648, 5];
    const x = K.load('x', K.tid());
    const ia = K.load('ia', K.tid(), 'i32');
    const ib = K.load('ib', K.tid(), 'i32');
    const fl: [string, KExpr][] = [['erf', K.un('erf', x)], ['log1p', K.un('log1p', x)], ['tanh', K.un('tanh', x)], ['min', K.bin('min', x, K.f32(1))], ['max', K.bin('max', K.f32(1), x)]];
    const it: [string, KExpr][] = [['f2i', K.cast(x, 'i32')], ['div', K.bin('/', ia, ib)], ['mod', K.bin('%', ia, ib)]];
    const body = [
      ...fl.map(([, e], j) => K.store('of', K.add(K.mul(K.i32(j), K.i32(xs.length)), K.tid()), e)),
      ...it.map(([, e], j) => K.store('oi', K.add(K.mul(K.i32(j), K.i32(xs.length)), K.tid()), e)),
    ];
    const k: Kernel = {
      name: 'helpers', workgroup: [xs.length, 1, 1], grid: [K.i32(1), K.i32(1), K.i32(1)], scalars: [], shared: [], body,
      buffers: [{ name: 'x', type: 'f32', access: 'read' }, { name: 'ia', type: 'i32', access: 'read' }, { name: 'ib', type: 'i32', access: 'read' },
        { name: 'of', type: 'f32', access: 'read_write' }, { name: 'oi', type: 'i32', access: 'read_write' }],
    };
    const X = Float32Array.from(xs);
    const IA = Int32Array.from(xs, (_, i) => ints[i % ints.length]!);
    const IB = Int32Array.from(xs, (_, i) => [0, 3, -1, 0, -1, 2][i % 6]!);
    const want = { of: new Float32Array(fl.length * xs.length), oi: new Int32Array(it.length * xs.length) };
    runKernel(k, { buffers: { x: X, ia: IA, ib: IB, ...want }, scalars: {} });
    const e = emitKernel(k, 'wgsl');
    const bufs = { x: storage(runner!, X), ia: storage(runner!, IA), ib: storage(runner!, IB), of: storage(runner!, new Float32Array(want.of.length)), oi: storage(runner!, new Int32Array(want.oi.length)) };
    const enc = runner!.device.createCommandEncoder();
    dispatch(runner!, enc, e, bufs, {});
    runner!.device.queue.submit([enc.finish()]);
    const gotF = new Float32Array(await readBack(runner!, bufs.of, want.of.byteLength));
    const gotI = new Int32Array(await readBack(runner!, bufs.oi, want.oi.byteLength));
    const ulp = (a: number): number => { const f = Math.fround(Math.abs(a)); return Math.max(Math.fround(f * (1 + 2 ** -23)) - f, 2 ** -149); };
    fl.forEach(([name], j) => xs.forEach((xv, i) => {
      const w = want.of[j * xs.length + i]!, g = gotF[j * xs.length + i]!;
      if (Number.isNaN(w)) expect(g, `${name}(${xv})`).toBeNaN();
      else if (!Number.isFinite(w)) expect(g, `${name}(${xv})`).toBe(w);
      else if (w === 0) expect(Math.abs(g), `${name}(${xv})`).toBe(0); // the sign of zero is not kept by every backend
      else expect(Math.abs(g - w) / ulp(w), `${name}(${xv}) = ${g}, want ${w}`).toBeLessThanOrEqual(name === 'min' || name === 'max' ? 0 : 4);
    }));
    it.forEach(([name], j) => xs.forEach((xv, i) => expect(gotI[j * xs.length + i], `${name} #${i} (${xv}, ${IA[i]}, ${IB[i]})`).toBe(want.oi[j * xs.length + i])));
    for (const b of Object.values(bufs)) b.destroy();
  });
});
