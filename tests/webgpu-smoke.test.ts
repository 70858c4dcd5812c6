// WebGPU smoke test: device acquisition (Dawn on lavapipe in Node), compute
// correctness, and WGSL validation diagnostics.
// Without a WebGPU adapter the suite is skipped (reason printed), unless
// REQUIRE_WEBGPU=1, in which case unavailability fails the run.
import { afterAll, describe, expect, it } from 'vitest';
import {
  acquireWebGPU,
  validateWGSL,
  WebGPUUnavailableError,
  type AcquiredWebGPU,
} from '../runtime/webgpu/device.js';

const REQUIRE = process.env['REQUIRE_WEBGPU'] === '1';
const ACQUIRE_TIMEOUT_MS = 30_000;
const TEST_TIMEOUT_MS = 30_000;

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
  gpu = await withTimeout(acquireWebGPU({ label: 'webgpu-smoke' }), ACQUIRE_TIMEOUT_MS, 'acquireWebGPU()');
} catch (e) {
  if (e instanceof WebGPUUnavailableError) unavailable = e.message;
  else if (e instanceof Error && /timed out/.test(e.message)) unavailable = `no WebGPU adapter: ${e.message}`;
  else unexpected = e;
}
if (gpu) {
  const l = gpu.info.limits;
  console.log(
    `[webgpu-smoke] ${gpu.info.summary}; features: ${gpu.info.features.join(',')}; ` +
      `subgroup size ${gpu.info.subgroupMinSize}..${gpu.info.subgroupMaxSize}; ` +
      `maxComputeWorkgroupStorageSize=${l['maxComputeWorkgroupStorageSize']} ` +
      `maxComputeInvocationsPerWorkgroup=${l['maxComputeInvocationsPerWorkgroup']} ` +
      `maxStorageBufferBindingSize=${l['maxStorageBufferBindingSize']} maxBufferSize=${l['maxBufferSize']}`,
  );
} else if (unavailable) {
  console.warn(`[webgpu-smoke] ${REQUIRE ? 'FAIL (REQUIRE_WEBGPU=1)' : 'skipping'}: ${unavailable}`);
}

afterAll(() => {
  gpu?.release();
});

describe('webgpu availability', () => {
  it('acquires a WebGPU device (required when REQUIRE_WEBGPU=1)', (ctx) => {
    if (unexpected) throw unexpected;
    if (!gpu) {
      if (REQUIRE) throw new Error(`REQUIRE_WEBGPU=1 but ${unavailable}`);
      ctx.skip();
      return;
    }
    expect(gpu.device).toBeTruthy();
    expect(gpu.lost).toBeNull();
    expect(gpu.info.limits['maxComputeInvocationsPerWorkgroup']).toBeGreaterThanOrEqual(256);
    // Full adapter limits were requested.
    expect(gpu.info.limits['maxStorageBufferBindingSize']).toBe(gpu.adapter.limits.maxStorageBufferBindingSize);
  });
});

async function runCompute(
  g: AcquiredWebGPU,
  code: string,
  inputs: Float32Array<ArrayBuffer>[],
  outputLength: number,
  workgroups: number,
): Promise<Float32Array> {
  const { device } = g;
  device.pushErrorScope('validation');
  const buffers = inputs.map((arr) => {
    const buf = device.createBuffer({
      size: arr.byteLength,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
    });
    device.queue.writeBuffer(buf, 0, arr);
    return buf;
  });
  const out = device.createBuffer({
    size: outputLength * 4,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC,
  });
  const readback = device.createBuffer({
    size: outputLength * 4,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  const module = device.createShaderModule({ code });
  const pipeline = device.createComputePipeline({
    layout: 'auto',
    compute: { module, entryPoint: 'main' },
  });
  const bindGroup = device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [...buffers, out].map((buffer, binding) => ({ binding, resource: { buffer } })),
  });
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, bindGroup);
  pass.dispatchWorkgroups(workgroups);
  pass.end();
  encoder.copyBufferToBuffer(out, 0, readback, 0, outputLength * 4);
  device.queue.submit([encoder.finish()]);
  const err = await device.popErrorScope();
  if (err) throw new Error(`WebGPU validation error: ${err.message}`);
  await readback.mapAsync(GPUMapMode.READ);
  const result = new Float32Array(readback.getMappedRange().slice(0));
  readback.unmap();
  for (const b of [...buffers, out, readback]) b.destroy();
  return result;
}

describe.skipIf(!gpu)('webgpu compute', { timeout: TEST_TIMEOUT_MS }, () => {
  it('elementwise add of two f32 arrays is exact', async () => {
    const n = 1000; // not a multiple of the workgroup size: exercises the bounds check
    const a = Float32Array.from({ length: n }, (_, i) => i * 0.25);
    const b = Float32Array.from({ length: n }, (_, i) => 3 - i);
    const code = /* wgsl */ `
      @group(0) @binding(0) var<storage, read> a: array<f32>;
      @group(0) @binding(1) var<storage, read> b: array<f32>;
      @group(0) @binding(2) var<storage, read_write> c: array<f32>;
      @compute @workgroup_size(64)
      fn main(@builtin(global_invocation_id) gid: vec3u) {
        if (gid.x < arrayLength(&c)) {
          c[gid.x] = a[gid.x] + b[gid.x];
        }
      }`;
    const c = await runCompute(gpu!, code, [a, b], n, Math.ceil(n / 64));
    const expected = Float32Array.from({ length: n }, (_, i) => Math.fround(a[i]! + b[i]!));
    expect(Array.from(c)).toEqual(Array.from(expected));
  });

  it('workgroup shared-memory tree reduction with barriers is exact', async () => {
    const wg = 256;
    const groups = 7;
    const n = wg * groups - 13; // last group partially filled
    // Small integers: every partial sum is exactly representable in f32, so
    // the result is independent of summation order.
    const x = Float32Array.from({ length: n }, (_, i) => ((i * 37) % 101) - 50);
    const code = /* wgsl */ `
      @group(0) @binding(0) var<storage, read> x: array<f32>;
      @group(0) @binding(1) var<storage, read_write> partial: array<f32>;
      var<workgroup> shared_sum: array<f32, ${wg}>;
      @compute @workgroup_size(${wg})
      fn main(@builtin(local_invocation_index) lid: u32,
              @builtin(workgroup_id) wid: vec3u) {
        let i = wid.x * ${wg}u + lid;
        var v = 0.0;
        if (i < arrayLength(&x)) { v = x[i]; }
        shared_sum[lid] = v;
        workgroupBarrier();
        for (var stride = ${wg / 2}u; stride > 0u; stride = stride / 2u) {
          if (lid < stride) {
            shared_sum[lid] = shared_sum[lid] + shared_sum[lid + stride];
          }
          workgroupBarrier();
        }
        if (lid == 0u) { partial[wid.x] = shared_sum[0]; }
      }`;
    const partial = await runCompute(gpu!, code, [x], groups, groups);
    const expected = Array.from({ length: groups }, (_, g) => {
      let s = 0;
      for (let i = g * wg; i < Math.min(n, (g + 1) * wg); i++) s += x[i]!;
      return s;
    });
    expect(Array.from(partial)).toEqual(expected);
  });
});

describe.skipIf(!gpu)('validateWGSL', { timeout: TEST_TIMEOUT_MS }, () => {
  it('accepts a valid shader', async () => {
    const r = await validateWGSL(
      '@compute @workgroup_size(1)\nfn main() {\n  let x: f32 = 1.0;\n  _ = x;\n}\n',
      gpu!.device,
    );
    expect(r.messages.filter((m) => m.type === 'error')).toEqual([]);
    expect(r.ok).toBe(true);
  });

  it('reports an error with its line and column for a broken shader', async () => {
    const broken = [
      '@compute @workgroup_size(1)', // line 1
      'fn main() {', // line 2
      '  let x: f32 = 1.0;', // line 3
      '  let y = undefined_thing + x;', // line 4
      '}',
    ].join('\n');
    const r = await validateWGSL(broken, gpu!.device);
    expect(r.ok).toBe(false);
    const err = r.messages.find((m) => m.type === 'error');
    expect(err).toBeDefined();
    expect(err!.line).toBe(4);
    expect(err!.col).toBe(11);
    expect(err!.message).toMatch(/undefined_thing/);
  });

  it('uses the last acquired device when none is passed', async () => {
    const r = await validateWGSL('fn f() -> i32 { return 1.5; }');
    expect(r.ok).toBe(false);
    expect(r.messages[0]!.line).toBe(1);
  });

  it('accepts f16 / subgroup shaders when the features are enabled', async (ctx) => {
    const f = gpu!.info.features;
    if (!f.includes('shader-f16') || !f.includes('subgroups')) ctx.skip();
    const r = await validateWGSL(
      [
        'enable f16;',
        'enable subgroups;',
        '@group(0) @binding(0) var<storage, read_write> o: array<f32>;',
        '@compute @workgroup_size(64)',
        'fn main(@builtin(local_invocation_index) i: u32) {',
        '  let h: f16 = 1.5h;',
        '  o[i] = subgroupAdd(f32(h));',
        '}',
      ].join('\n'),
      gpu!.device,
    );
    expect(r.messages).toEqual([]);
    expect(r.ok).toBe(true);
  });
});
