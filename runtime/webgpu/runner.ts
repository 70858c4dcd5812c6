// Executes a compiled plan on WebGPU: the GPU counterpart of runtime/plan-runner.ts's runPlanCpu.
//
//   - one GPUDevice per process, acquired on first use with the adapter's full limits
//     (device.ts) and reacquired if it is lost between runs; or the caller's device;
//   - every kernel is checked against the adapter's limits before anything is allocated
//     (workgroup memory, invocations, storage buffers, binding sizes, workgroups per dimension);
//   - kernels are printed to WGSL once per Kernel object and compiled once per distinct WGSL
//     text (pipeline-cache.ts); sizes travel in a uniform buffer, so one pipeline serves all
//     B, H, T;
//   - tensors live in pooled GPU buffers (buffer-pool.ts): parameters and outputs one each,
//     intermediates one per memory slot (compiler/memory.ts: tensors whose lives do not meet
//     share a buffer, bound at offset 0 with their own size; `reuse: false` gives each its own);
//     buffers the plan writes are cleared first, as the CPU runner's fresh arrays are zero;
//   - all launches of a plan are one compute pass in one command encoder and one submit,
//     followed by copies of the outputs (only) into one staging buffer (more only past
//     maxBufferSize) that is mapped once; runs on one device are serialised;
//   - a launch with an empty grid is skipped; zero-element tensors bind a 4-byte placeholder;
//   - tensors the plan stores as f16 (schedule dtype f16) are rounded to f16 on upload and read
//     back as f32 values; their buffers hold 2-byte elements (sizes rounded up to 4 bytes). They
//     need the device feature shader-f16; bf16 storage does not exist in WGSL;
//   - failures are one-line errors: WebGPUUnavailableError (no adapter), WebGPURunError with
//     kind 'limits' | 'feature' | 'shader' | 'validation' | 'out-of-memory' | 'device-lost' | 'input' | 'contract'.
import type { KHalf, Kernel } from '../../compiler/kir.js';
import type { Plan } from '../../compiler/plan.js';
import { defaultReuse, planMemory } from '../../compiler/memory.js';
import { emitKernel } from '../../targets/emit.js';
import type { EmittedKernel } from '../../targets/emitted.js';
import { fromHalfArray } from '../../targets/half.js';
import { RunError } from '../../dsl/reference/interpreter.js';
import { bindHostTensors, type HostBinding } from '../bind.js';
import { planSizes, type HostTensor } from '../plan-runner.js';
import { BufferPool, type PoolStats } from './buffer-pool.js';
import { acquireWebGPU, type AcquiredWebGPU, type DeviceLoss } from './device.js';
import { bytesStr, oneLine, WebGPURunError } from './errors.js';
import { evalKExpr, KExprEvalError } from '../kexpr-eval.js';
import { bindingProblem, kernelLimitProblem, limitsOf, type KernelLimits } from './limits.js';
import { PipelineCache, type PipelineCacheStats } from './pipeline-cache.js';

export { WebGPURunError } from './errors.js';
export { WebGPUUnavailableError } from './device.js';

/** WGSL's per-dimension dispatch limit that foldX kernels are printed for (targets/emitted.ts). */
export const FOLD_X = 65535;

export type EmitWGSL = (kernel: Kernel) => EmittedKernel | Promise<EmittedKernel>;

export interface RunPlanWebGPUOptions {
  /** The device to run on (default: the process-wide one, acquired on first use). */
  device?: AcquiredWebGPU | GPUDevice;
  /** The WGSL printer (default: targets/emit.ts's emitKernel(kernel, 'wgsl')). */
  emit?: EmitWGSL;
  /** Intermediates share buffers by liveness (default on; RETNETC_MEMORY_REUSE=0 turns it off). */
  reuse?: boolean;
}

export interface WebGPURuntimeStats {
  runs: number;
  submits: number;
  dispatches: number;
  /** Launches not dispatched because their grid was empty. */
  skipped: number;
  pool: PoolStats;
  pipelines: PipelineCacheStats;
}

// ---- devices --------------------------------------------------------------------------

interface DeviceState {
  device: GPUDevice;
  limits: KernelLimits;
  pool: BufferPool;
  pipelines: PipelineCache;
  /** Runs on one device are serialised (error scopes are per device, not per run). */
  queue: Promise<void>;
  lost: DeviceLoss | null;
  /** Runs waiting on the GPU, told when the device is lost. */
  waiters: Set<(l: DeviceLoss) => void>;
  stats: { runs: number; submits: number; dispatches: number; skipped: number };
}

const states = new WeakMap<GPUDevice, DeviceState>();
let shared: Promise<AcquiredWebGPU> | null = null;
let sharedAcquired: AcquiredWebGPU | null = null;

function stateOf(device: GPUDevice): DeviceState {
  let s = states.get(device);
  if (!s) {
    const st: DeviceState = {
      device,
      limits: limitsOf(device.limits),
      pool: new BufferPool(device),
      pipelines: new PipelineCache(device),
      queue: Promise.resolve(),
      lost: null,
      waiters: new Set(),
      stats: { runs: 0, submits: 0, dispatches: 0, skipped: 0 },
    };
    void device.lost.then((l) => {
      const loss: DeviceLoss = { reason: l.reason, message: oneLine(l.message) };
      st.lost = loss;
      for (const w of st.waiters) w(loss);
      st.waiters.clear();
    });
    states.set(device, (s = st));
  }
  return s;
}

/** The process-wide device of the WebGPU runtime (acquired on first use, again after a loss). */
export async function runtimeDevice(): Promise<AcquiredWebGPU> {
  if (sharedAcquired && sharedAcquired.lost) {
    shared = null;
    sharedAcquired = null;
  }
  if (!shared) {
    shared = acquireWebGPU({ label: 'retnetc' }).then(
      (a) => (sharedAcquired = a),
      (e: unknown) => { shared = null; throw e; },
    );
  }
  return shared;
}

/** Frees the pooled buffers and cached pipelines of the process-wide device and destroys it. */
export async function releaseRuntimeDevice(): Promise<void> {
  const p = shared;
  shared = null;
  sharedAcquired = null;
  if (!p) return;
  const a = await p.catch(() => null);
  if (!a) return;
  const s = states.get(a.device);
  s?.pool.trim();
  s?.pipelines.clear();
  a.release();
}

/** Counters of the runtime on a device (default: the process-wide one, if acquired). */
export function runtimeStats(device?: AcquiredWebGPU | GPUDevice): WebGPURuntimeStats | undefined {
  const dev = device ? ('device' in device && 'adapter' in device ? device.device : (device as GPUDevice)) : sharedAcquired?.device;
  if (!dev) return undefined;
  const s = stateOf(dev);
  return { ...s.stats, pool: s.pool.getStats(), pipelines: s.pipelines.getStats() };
}

// ---- printing -------------------------------------------------------------------------

const defaultEmit: EmitWGSL = (k) => emitKernel(k, 'wgsl');
const emitted = new WeakMap<EmitWGSL, WeakMap<Kernel, Promise<EmittedKernel>>>();

function emitOnce(emit: EmitWGSL, k: Kernel): Promise<EmittedKernel> {
  let m = emitted.get(emit);
  if (!m) emitted.set(emit, (m = new WeakMap()));
  let p = m.get(k);
  if (!p) {
    p = Promise.resolve().then(() => emit(k));
    m.set(k, p);
    p.catch(() => m!.delete(k));
  }
  return p;
}

/** Checks the printer's output against the kernel (targets/emitted.ts); throws 'contract'. */
function checkContract(k: Kernel, e: EmittedKernel): void {
  const bad = (msg: string): never => { throw new WebGPURunError('contract', `WGSL printer output for kernel ${k.name}: ${msg}`); };
  if (e.target !== 'wgsl') bad(`target is '${e.target}', not 'wgsl'`);
  const bindings = new Set<number>();
  for (const b of k.buffers) {
    const eb = e.buffers.find((x) => x.name === b.name);
    if (!eb) bad(`buffer '${b.name}' has no binding`);
    else if (b.access === 'read_write' && eb.access !== 'read_write') bad(`buffer '${b.name}' is written but bound read-only`);
    else if (eb.storage !== b.storage) bad(`buffer '${b.name}' is stored as ${b.storage ?? b.type} but printed as ${eb.storage ?? eb.type}`);
  }
  for (const b of e.buffers) {
    if (bindings.has(b.binding)) bad(`binding ${b.binding} used twice`);
    bindings.add(b.binding);
    if (!k.buffers.some((x) => x.name === b.name)) bad(`binding for unknown buffer '${b.name}'`);
  }
  for (const s of k.scalars) {
    const es = e.scalars.find((x) => x.name === s.name);
    if (!es) bad(`scalar '${s.name}' has no uniform offset`);
    else if (!e.uniform || es.offset < 0 || es.offset + 4 > e.uniform.size || es.offset % 4 !== 0) bad(`scalar '${s.name}' at offset ${es.offset} is outside the uniform struct`);
  }
  if (e.uniform && bindings.has(e.uniform.binding)) bad(`uniform binding ${e.uniform.binding} is also a buffer binding`);
  if (e.workgroup.some((n) => !Number.isInteger(n) || n < 1)) bad(`workgroup ${JSON.stringify(e.workgroup)}`);
}

// ---- running --------------------------------------------------------------------------

interface Tensor {
  id: string;
  name: string;
  dtype: string;
  shape: number[];
  numel: number;
  /** Bytes of its GPU buffer (at least 4, a multiple of 4). */
  bytes: number;
  int: boolean;
  /** Stored as f16 (plan.half). */
  half?: KHalf;
  /** Host data for parameters (the f16 bits for half tensors, padded to a multiple of 4 bytes). */
  host?: Float32Array | Int32Array | Uint16Array;
  written: boolean;
  /** The memory slot of an intermediate (compiler/memory.ts). */
  slot?: number;
  gpu?: GPUBuffer;
}

interface Prepared {
  launch: Plan['launches'][number];
  e: EmittedKernel;
  dispatch: [number, number, number] | null;
  uniformData?: ArrayBuffer;
}

const roundUp = (n: number, m: number): number => Math.ceil(n / m) * m;
const STORAGE_USAGE = (): number => GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
/** GPU bytes of `n` elements: 4 each, 2 each when stored as a half type; at least 4, a multiple of 4. */
const bufferBytes = (n: number, half: KHalf | undefined): number => Math.max(4, roundUp(n * (half ? 2 : 4), 4));

function dispatchOf(p: Plan['launches'][number], e: EmittedKernel, scalars: Record<string, number>, limits: KernelLimits): [number, number, number] | null {
  let g: number[];
  try {
    g = e.grid.map((x) => evalKExpr(x, scalars));
  } catch (err) {
    if (err instanceof KExprEvalError) throw new WebGPURunError('contract', `grid of kernel ${p.kernel.name}: ${err.message}`);
    throw err;
  }
  if (g.some((n) => !(n > 0))) return null;
  let [x, y, z] = g as [number, number, number];
  const max = limits.maxComputeWorkgroupsPerDimension;
  if (e.foldX && x > FOLD_X) {
    y *= Math.ceil(x / FOLD_X);
    x = FOLD_X;
  }
  if (e.foldY && y > FOLD_X) {
    z *= Math.ceil(y / FOLD_X);
    y = FOLD_X;
  }
  const over = [x, y, z].findIndex((n) => n > max);
  if (over >= 0) {
    const axis = 'xyz'[over];
    throw new WebGPURunError('limits', `kernel ${p.kernel.name} needs ${[x, y, z][over]} workgroups in ${axis} (grid ${g.join('x')}${e.foldX || e.foldY ? ', folded' : ''}); this adapter allows ${max} (maxComputeWorkgroupsPerDimension); run with a smaller B, H or T`);
  }
  return [x, y, z];
}

/**
 * Runs `plan` on WebGPU. Inputs are float64 host tensors by parameter name (converted to the
 * parameters' f32/i32); returns the function's outputs by name, read back as f32/i32.
 */
export async function runPlanWebGPU(
  plan: Plan,
  inputs: ReadonlyMap<string, { shape: number[]; data: Float64Array | Float32Array | Int32Array }>,
  opts: RunPlanWebGPUOptions = {},
): Promise<Map<string, HostTensor>> {
  // Host-side work first: a plan that cannot run fails before touching a device.
  const sizes = planSizes(plan, inputs);
  const tensors = new Map<string, Tensor>();
  let bound: HostBinding;
  try {
    bound = bindHostTensors(plan, inputs, sizes, { exact: true });
  } catch (e) {
    if (e instanceof RunError) throw new WebGPURunError('input', e.message);
    throw e;
  }
  for (const { host: h, ...t } of bound.params) {
    // Half bits padded to a multiple of 4 bytes.
    let host = h;
    if (t.half && t.numel % 2) (host = new Uint16Array(t.numel + 1)).set(h);
    tensors.set(t.id, { ...t, bytes: bufferBytes(t.numel, t.half), host, written: false });
  }
  for (const t of bound.buffers) tensors.set(t.id, { ...t, bytes: bufferBytes(t.numel, t.half), written: true });
  const mem = planMemory(plan, sizes, { reuse: opts.reuse ?? defaultReuse() });
  for (const [id, slot] of mem.slotOf) { const t = tensors.get(id); if (t) t.slot = slot; }
  const slotBytes = mem.slots.map((s) => bufferBytes(Math.ceil(s.bytes / 2), 'f16'));

  const acquired = opts.device ?? (await runtimeDevice());
  const device = 'adapter' in acquired && 'device' in acquired ? acquired.device : (acquired as GPUDevice);
  const st = stateOf(device);
  const run = st.queue.then(() => runOn(st, plan, sizes, tensors, slotBytes, opts));
  st.queue = run.then(() => undefined, () => undefined);
  return run;
}

async function runOn(
  st: DeviceState,
  plan: Plan,
  sizes: Map<string, number>,
  tensors: Map<string, Tensor>,
  slotBytes: number[],
  opts: RunPlanWebGPUOptions,
): Promise<Map<string, HostTensor>> {
  const { device, limits } = st;
  const planName = `${plan.fn.name} (${plan.schedule.form}${plan.schedule.form === 'recurrent' ? '' : `, chunk ${plan.schedule.chunk}`})`;
  if (st.lost) throw new WebGPURunError('device-lost', `WebGPU device lost (${st.lost.reason}) before running ${planName}: ${st.lost.message || 'no message'}`);
  const halves = new Set(plan.half.values());
  if (halves.has('bf16')) throw new WebGPURunError('feature', `${planName} stores tensors as bf16, which WGSL does not have; use dtype f16 or f32 on WebGPU`);
  if (halves.has('f16') && !device.features.has('shader-f16')) {
    throw new WebGPURunError('feature', `${planName} stores tensors as f16, which needs the WebGPU feature 'shader-f16'; this device does not have it (the adapter lacks it or the device was created without it); use dtype f32`);
  }

  // Limits that do not depend on the printer, then printing, then the rest.
  for (const l of plan.launches) {
    const why = kernelLimitProblem(l.kernel, { schedule: l.schedule ?? plan.schedule, how: l.how }, limits);
    if (why) throw new WebGPURunError('limits', why);
  }
  const emit = opts.emit ?? defaultEmit;
  const ems = await Promise.all(plan.launches.map((l) => emitOnce(emit, l.kernel)));

  const scalarsOf = (l: Plan['launches'][number]): Record<string, number> => {
    const out: Record<string, number> = {};
    for (const [name, atom] of Object.entries(l.scalars)) {
      const n = sizes.get(atom);
      if (n === undefined) throw new WebGPURunError('input', `kernel ${l.kernel.name}: size '${atom}' is not bound by the inputs`);
      if (!Number.isInteger(n) || n < -2147483648 || n > 2147483647) throw new WebGPURunError('input', `size ${atom} = ${n} does not fit the kernels' i32 arithmetic`);
      out[name] = n;
    }
    return out;
  };

  const prepared: Prepared[] = plan.launches.map((launch, i) => {
    const e = ems[i]!;
    checkContract(launch.kernel, e);
    const why = kernelLimitProblem(launch.kernel, { schedule: launch.schedule ?? plan.schedule, how: launch.how, workgroup: e.workgroup, storageBuffers: e.buffers.length }, limits);
    if (why) throw new WebGPURunError('limits', why);
    for (const [bname, id] of Object.entries(launch.buffers)) {
      const t = tensors.get(id);
      if (!t) throw new WebGPURunError('contract', `kernel ${launch.kernel.name}: buffer '${bname}' is tensor '${id}', which the plan neither takes nor writes`);
      const bp = bindingProblem(launch.kernel.name, t.name, t.shape, t.half ?? t.dtype, t.bytes, limits);
      if (bp) throw new WebGPURunError('limits', bp);
    }
    const scalars = scalarsOf(launch);
    const dispatch = dispatchOf(launch, e, scalars, limits);
    let uniformData: ArrayBuffer | undefined;
    if (e.uniform) {
      uniformData = new ArrayBuffer(roundUp(Math.max(e.uniform.size, 4), 16));
      const dv = new DataView(uniformData);
      for (const s of e.scalars) {
        const v = scalars[s.name];
        if (v === undefined) continue; // a scalar the printer declares but the launch does not bind
        if (s.type === 'i32') dv.setInt32(s.offset, v, true);
        else dv.setFloat32(s.offset, v, true);
      }
    }
    return { launch, e, dispatch, ...(uniformData ? { uniformData } : {}) };
  });

  // Which tensors live on the GPU: those some launch binds.
  const used = new Set<string>();
  for (const p of prepared) if (p.dispatch) for (const id of Object.values(p.launch.buffers)) used.add(id);
  const outputs = plan.fn.outputs.map((o) => {
    const t = tensors.get(o.v);
    if (!t) throw new WebGPURunError('contract', `output '${o.name}' of ${planName} is neither a parameter nor computed by a launch`);
    return { o, t };
  });
  const toRead = outputs.filter(({ t }) => t.written && t.numel > 0 && used.has(t.id));

  // Pipelines compile (in parallel, on Dawn's threads) while buffers are set up.
  const pipelinesP = Promise.all(prepared.map((p) => (p.dispatch ? st.pipelines.get(p.e, p.launch.kernel.name) : Promise.resolve(null))));
  pipelinesP.catch(() => undefined);

  const held: GPUBuffer[] = [];
  let totalBytes = 0;
  // Error scopes are a per-device stack: whatever happens, pop what was pushed.
  let scoped = false;
  const popScopes = (): Promise<[GPUError | null, GPUError | null]> => {
    scoped = false;
    const validation = device.popErrorScope();
    const oom = device.popErrorScope();
    return Promise.all([validation, oom]);
  };
  // A device loss while waiting on the GPU ends the wait.
  let onLost: ((l: DeviceLoss) => void) | undefined;
  try {
    device.pushErrorScope('out-of-memory');
    device.pushErrorScope('validation');
    scoped = true;
    const usage = STORAGE_USAGE();
    const toClear: { gpu: GPUBuffer; bytes: number }[] = [];
    const slotGpu = new Map<number, GPUBuffer>();
    for (const id of used) {
      const t = tensors.get(id)!;
      if (t.slot !== undefined) {
        // An intermediate: its slot's buffer, acquired and cleared once for all its tenants.
        let g = slotGpu.get(t.slot);
        if (!g) {
          const bytes = slotBytes[t.slot]!;
          totalBytes += bytes;
          g = st.pool.acquire(bytes, usage, `slot ${t.slot}`);
          held.push(g);
          slotGpu.set(t.slot, g);
          toClear.push({ gpu: g, bytes });
        }
        t.gpu = g;
        continue;
      }
      const bytes = t.bytes;
      totalBytes += bytes;
      t.gpu = st.pool.acquire(bytes, usage, t.name);
      held.push(t.gpu);
      if (t.host && t.host.length > 0) device.queue.writeBuffer(t.gpu, 0, t.host.buffer, t.host.byteOffset, t.host.byteLength);
      else if (t.written && t.numel > 0) toClear.push({ gpu: t.gpu, bytes });
    }
    // Uniforms: one buffer, one slot per launch at the adapter's offset alignment.
    const align = Math.max(16, device.limits.minUniformBufferOffsetAlignment);
    const slots = new Map<Prepared, number>();
    let ubytes = 0;
    for (const p of prepared) {
      if (!p.dispatch || !p.uniformData) continue;
      slots.set(p, ubytes);
      ubytes = roundUp(ubytes + p.uniformData.byteLength, align);
    }
    let ubuf: GPUBuffer | undefined;
    if (ubytes > 0) {
      const staging = new Uint8Array(ubytes);
      for (const [p, off] of slots) staging.set(new Uint8Array(p.uniformData!), off);
      ubuf = st.pool.acquire(ubytes, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, 'uniforms');
      held.push(ubuf);
      device.queue.writeBuffer(ubuf, 0, staging);
    }
    // Staging for the outputs: as few buffers as maxBufferSize allows (usually one), each
    // output at a 4-byte aligned offset.
    const staging: { buf: GPUBuffer; bytes: number; items: { o: (typeof toRead)[number]['o']; t: Tensor; off: number }[] }[] = [];
    {
      let cur: { bytes: number; items: { o: (typeof toRead)[number]['o']; t: Tensor; off: number }[] } | undefined;
      const groups: NonNullable<typeof cur>[] = [];
      for (const { o, t } of toRead) {
        const n = t.bytes;
        if (!cur || cur.bytes + n > limits.maxBufferSize) groups.push((cur = { bytes: 0, items: [] }));
        cur.items.push({ o, t, off: cur.bytes });
        cur.bytes += n;
      }
      for (const g of groups) {
        const buf = st.pool.acquire(g.bytes, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, 'readback');
        held.push(buf);
        staging.push({ buf, ...g });
      }
    }

    const pipelines = await pipelinesP;

    const encoder = device.createCommandEncoder({ label: planName });
    for (const t of toClear) encoder.clearBuffer(t.gpu, 0, t.bytes);
    const pass = encoder.beginComputePass({ label: planName });
    let dispatches = 0;
    prepared.forEach((p, i) => {
      if (!p.dispatch) { st.stats.skipped++; return; }
      const pl = pipelines[i]!;
      const entries: GPUBindGroupEntry[] = p.e.buffers.map((b) => {
        const t = tensors.get(p.launch.buffers[b.name]!)!;
        return { binding: b.binding, resource: { buffer: t.gpu!, offset: 0, size: t.bytes } };
      });
      if (p.e.uniform && ubuf) entries.push({ binding: p.e.uniform.binding, resource: { buffer: ubuf, offset: slots.get(p)!, size: p.uniformData!.byteLength } });
      const bg = device.createBindGroup({ label: p.launch.kernel.name, layout: pl.layout, entries });
      pass.setPipeline(pl.pipeline);
      pass.setBindGroup(0, bg);
      pass.dispatchWorkgroups(...p.dispatch);
      dispatches++;
    });
    pass.end();
    for (const sg of staging) for (const it of sg.items) encoder.copyBufferToBuffer(it.t.gpu!, 0, sg.buf, it.off, it.t.bytes);
    const commands = encoder.finish();
    // Nothing to run and nothing to read (every grid empty): no submit at all.
    if (dispatches > 0 || staging.length > 0) {
      device.queue.submit([commands]);
      st.stats.submits++;
    }
    st.stats.dispatches += dispatches;
    st.stats.runs++;

    const [validation, oom] = await popScopes();
    if (oom) {
      for (const b of held.splice(0)) b.destroy();
      st.pool.trim();
      throw new WebGPURunError('out-of-memory', `WebGPU out of memory running ${planName} (${bytesStr(totalBytes)} of tensors; the largest ${largest(tensors, used)}): ${oneLine(oom.message)}; run with a smaller B, H or T`);
    }
    if (validation) {
      if (st.lost) throw lostError(st.lost, planName);
      throw new WebGPURunError('validation', `WebGPU validation error running ${planName}: ${oneLine(validation.message)}`);
    }

    const out = new Map<string, HostTensor>();
    if (staging.length > 0) {
      const lost = new Promise<never>((_, reject) => {
        onLost = (l) => reject(lostError(l, planName));
        st.waiters.add(onLost);
      });
      lost.catch(() => undefined);
      try {
        await Promise.race([Promise.all(staging.map((sg) => sg.buf.mapAsync(GPUMapMode.READ, 0, sg.bytes))), lost]);
      } catch (e) {
        if (e instanceof WebGPURunError) throw e;
        if (st.lost) throw lostError(st.lost, planName);
        throw new WebGPURunError('validation', `reading back the outputs of ${planName} failed: ${oneLine(e)}`);
      }
      for (const sg of staging) {
        const bytes = sg.buf.getMappedRange(0, sg.bytes);
        for (const { o, t, off } of sg.items) {
          const copy = bytes.slice(off, off + t.bytes);
          const data = t.int ? new Int32Array(copy, 0, t.numel) : t.half ? fromHalfArray(new Uint16Array(copy), t.half, t.numel) : new Float32Array(copy, 0, t.numel);
          out.set(o.name, { shape: t.shape, data });
        }
        sg.buf.unmap();
      }
    }
    for (const { o, t } of outputs) {
      if (out.has(o.name)) continue;
      // Parameters returned as they are, empty tensors, tensors no launch writes (zeros, as on the CPU).
      const data = t.host
        ? (t.int ? Int32Array.from(t.host) : t.half ? fromHalfArray(t.host as Uint16Array, t.half, t.numel) : Float32Array.from(t.host))
        : t.int ? new Int32Array(t.numel) : new Float32Array(t.numel);
      out.set(o.name, { shape: t.shape, data });
    }
    return out;
  } finally {
    if (onLost) st.waiters.delete(onLost);
    if (scoped) await popScopes().catch(() => undefined);
    for (const b of held) st.pool.release(b);
    for (const t of tensors.values()) delete t.gpu;
  }
}

function lostError(l: DeviceLoss, planName: string): WebGPURunError {
  return new WebGPURunError('device-lost', `WebGPU device lost (${l.reason}) while running ${planName}: ${l.message || 'no message'}`);
}

function largest(tensors: Map<string, Tensor>, used: Set<string>): string {
  let best: Tensor | undefined;
  for (const id of used) { const t = tensors.get(id)!; if (!best || t.numel > best.numel) best = t; }
  return best ? `'${best.name}' (${best.half ?? best.dtype}[${best.shape.join(', ')}], ${bytesStr(best.bytes)})` : '?';
}
