// Executes a compiled plan on an NVIDIA GPU: the CUDA counterpart of runPlanCpu
// (runtime/plan-runner.ts), with the same size binding, allocation and outputs.
//
// Each launch's kernel is printed as CUDA C++ (targets/emit.ts, emitKernel(kernel, 'cuda'),
// under the contract of targets/emitted.ts), compiled by nvcc at run time for the device (a cubin
// for its sm_XY, else PTX; cached on disk, runtime/cuda/nvcc.ts), loaded through the addon
// (runtime/cuda/addon) and launched in plan order with its buffers, then its scalars, as
// parameters; the grid comes from the emitted grid expressions over the scalars. Past 65535
// blocks in y (B * H batch entries) a kernel that rebuilds its ids (EmittedKernel.foldY) is
// launched as (x * y, 1, z). Kernels index with i32: a tensor of 2^31 elements or more is
// refused in one line before anything is allocated.
//
// Where CUDA cannot run, cudaStatus() gives the reason in one line and runPlanCuda rejects with
// a CudaUnavailableError carrying that line.
//
// Tensors a plan stores in half precision (plan.half: schedule dtype f16 or bf16) take 2 bytes
// an element on the device: inputs are rounded to them on upload (nearest even, targets/half.ts)
// and outputs read back as f32 values.
//
// Parameters and outputs have a device allocation each; intermediates one per memory slot
// (compiler/memory.ts: tensors whose lives do not meet share one; `reuse: false` or
// RETNETC_MEMORY_REUSE=0 gives each its own, as the mock driver's per-tensor checks in
// runtime/cuda/mock/harness.ts ask), zeroed once when allocated.
import { evalKExpr, KExprEvalError } from '../kexpr-eval.js';
import { createHash } from 'node:crypto';
import type { KHalf, Kernel, KExpr } from '../../compiler/kir.js';
import type { Launch, Plan } from '../../compiler/plan.js';
import { defaultReuse, planMemory } from '../../compiler/memory.js';
import type { EmittedKernel } from '../../targets/emitted.js';
import { bindBuffers, bindParams, hostOutput } from '../bind.js';
import { type HostTensor, planSizes } from '../plan-runner.js';
import { type CuArg, type CudaAddon, type CudaDeviceInfo, type CudaFuncAttributes, type CuHandle, loadCudaAddon } from './addon.js';
import { compileCuda, type CudaImageFormat, findNvcc, type NvccInfo, targetFor } from './nvcc.js';

export class CudaUnavailableError extends Error {
  override readonly name = 'CudaUnavailableError';
  constructor(readonly reason: string) {
    super(reason);
  }
}

/** A kernel failed to build, load or run; the message is one line naming the kernel. */
export class CudaRunError extends Error {
  override readonly name = 'CudaRunError';
}

export type CudaEmitFn = (kernel: Kernel) => EmittedKernel;

export interface CudaRunOptions {
  /** The CUDA printer; defaults to targets/emit.ts's emitKernel(kernel, 'cuda'). */
  emit?: CudaEmitFn;
  /** nvcc's cache directory (null: no cache). */
  cacheDir?: string | null;
  /** Synchronise after every launch, so that a failing kernel is named (slower). */
  syncEachLaunch?: boolean;
  /**
   * Intermediates share allocations by liveness. Default: on, unless RETNETC_MEMORY_REUSE=0.
   */
  reuse?: boolean;
}

// ---- the printer ------------------------------------------------------------------------------

let emitter: CudaEmitFn | undefined;
let emitterError: string | undefined;

/** Installs the CUDA printer (bundles do this; otherwise targets/emit.ts is imported on first use). */
export function setCudaEmitter(emit: CudaEmitFn): void {
  emitter = emit;
  emitterError = undefined;
}

// A variable specifier: the printer is another module of this package that may be built later.
const EMIT_MODULE = '../../targets/emit.js';

export async function cudaEmitter(): Promise<CudaEmitFn> {
  if (emitter) return emitter;
  if (emitterError) throw new CudaRunError(emitterError);
  try {
    const mod = (await import(EMIT_MODULE)) as { emitKernel?: (k: Kernel, target: 'cuda') => EmittedKernel };
    if (typeof mod.emitKernel !== 'function') throw new Error('targets/emit.js has no emitKernel export');
    const emitKernel = mod.emitKernel;
    emitter = (k) => emitKernel(k, 'cuda');
    return emitter;
  } catch (e) {
    emitterError = `the CUDA printer is not available (targets/emit.ts): ${oneLine(e)}`;
    throw new CudaRunError(emitterError);
  }
}

// ---- the device -------------------------------------------------------------------------------

export interface CudaContext {
  addon: CudaAddon;
  addonFile: string;
  device: CudaDeviceInfo;
  nvcc: NvccInfo;
  /** What kernels are built as for this device. */
  target: { arch: string; format: CudaImageFormat };
}

const oneLine = (e: unknown): string => (e instanceof Error ? e.message : String(e)).replace(/\s+/g, ' ').trim();

let context: CudaContext | undefined;
let contextError: string | undefined;

function openContext(): CudaContext | string {
  if (context) return context;
  if (contextError) return contextError;
  const a = loadCudaAddon();
  if ('error' in a) return (contextError = a.error);
  const av = a.addon.available();
  if (!av.ok) return (contextError = av.reason ?? 'CUDA is not available');
  let device: CudaDeviceInfo;
  try {
    device = a.addon.deviceInfo();
  } catch (e) {
    return (contextError = `CUDA device unusable: ${oneLine(e)}`);
  }
  const nvcc = findNvcc();
  if (typeof nvcc === 'string') return (contextError = `${nvcc} (needed to build kernels for ${device.name})`);
  let target: CudaContext['target'];
  try {
    target = targetFor(device.major, device.minor, nvcc);
  } catch (e) {
    return (contextError = oneLine(e));
  }
  // RETNETC_CUDA_FORMAT=ptx: build PTX for the device's own compute_XY and let the driver JIT it.
  if (process.env['RETNETC_CUDA_FORMAT'] === 'ptx') target = { arch: `sm_${device.major}${device.minor}`, format: 'ptx' };
  context = { addon: a.addon, addonFile: a.file, device, nvcc, target };
  return context;
}

/**
 * Why the CUDA target cannot run here, in one line (the addon is not built, no driver, no
 * device, no nvcc), or undefined when it can.
 */
export function cudaStatus(): string | undefined {
  const c = openContext();
  return typeof c === 'string' ? c : undefined;
}

/** The CUDA context; throws CudaUnavailableError (one line) where CUDA cannot run. */
export function cudaContext(): CudaContext {
  const c = openContext();
  if (typeof c === 'string') throw new CudaUnavailableError(c);
  return c;
}

// ---- kernels: print, compile, load ------------------------------------------------------------

export interface LoadedKernel {
  emitted: EmittedKernel;
  fn: CuHandle;
  attributes: CudaFuncAttributes;
  /** nvcc wall time (0 when the image came from the cache). */
  compileMs: number;
  cached: boolean;
}

const emittedCache = new WeakMap<Kernel, EmittedKernel>();
const loadedCache = new Map<string, Promise<LoadedKernel>>();

async function emitted(k: Kernel, opts: CudaRunOptions): Promise<EmittedKernel> {
  let e = emittedCache.get(k);
  if (!e) {
    const emit = opts.emit ?? (await cudaEmitter());
    try {
      e = emit(k);
    } catch (err) {
      throw new CudaRunError(`printing kernel ${k.name} as CUDA failed: ${oneLine(err)}`);
    }
    if (e.target !== 'cuda') throw new CudaRunError(`the printer returned a ${e.target} kernel for ${k.name}, not CUDA`);
    emittedCache.set(k, e);
  }
  return e;
}

/** Compiles (nvcc, cached) and loads one emitted kernel on the device. Memoised by code and target. */
export function loadEmitted(ctx: CudaContext, ek: EmittedKernel, opts: Pick<CudaRunOptions, 'cacheDir'> = {}): Promise<LoadedKernel> {
  const key = createHash('sha256').update(`${ctx.target.arch}\0${ctx.target.format}\0${ek.entry}\0${ek.code}`).digest('hex');
  let p = loadedCache.get(key);
  if (!p) {
    p = (async () => {
      let img;
      try {
        img = await compileCuda(ek.code, { ...ctx.target, name: ek.entry, nvcc: ctx.nvcc, ...(opts.cacheDir !== undefined ? { cacheDir: opts.cacheDir } : {}) });
      } catch (e) {
        throw new CudaRunError(oneLine(e));
      }
      try {
        const mod = ctx.addon.loadModule(img.image);
        const fn = ctx.addon.getFunction(mod, ek.entry);
        const attributes = ctx.addon.funcAttributes(fn);
        if (ek.dynamicSharedBytes > 48 * 1024) {
          if (ek.dynamicSharedBytes + attributes.staticSharedBytes > ctx.device.maxSharedPerBlockOptin) {
            throw new Error(`needs ${ek.dynamicSharedBytes} bytes of dynamic shared memory; ${ctx.device.name} allows ${ctx.device.maxSharedPerBlockOptin} per block`);
          }
          ctx.addon.setMaxDynamicShared(fn, ek.dynamicSharedBytes);
        }
        return { emitted: ek, fn, attributes, compileMs: img.ms, cached: img.cached };
      } catch (e) {
        throw new CudaRunError(`kernel ${ek.entry}: ${oneLine(e)}`);
      }
    })();
    p.catch(() => loadedCache.delete(key));
    loadedCache.set(key, p);
  }
  return p;
}

/** Prints, compiles and loads every kernel of the plans, nvcc running in parallel. */
export async function prepareCudaPlans(plans: readonly Plan[], opts: CudaRunOptions = {}): Promise<LoadedKernel[][]> {
  const ctx = cudaContext();
  return Promise.all(plans.map((p) => Promise.all(p.launches.map(async (l) => loadEmitted(ctx, await emitted(l.kernel, opts), opts)))));
}

// ---- launching ----------------------------------------------------------------------------------

/** Value of a grid expression over the kernel's scalars (shared with the WebGPU runtime). */
export function evalGridExpr(e: KExpr, scalars: Readonly<Record<string, number>>): number {
  try {
    return evalKExpr(e, scalars);
  } catch (err) {
    if (err instanceof KExprEvalError) throw new CudaRunError(`grid expression: ${err.message}`);
    throw err;
  }
}

export interface PreparedLaunch {
  launch: Launch;
  kernel: LoadedKernel;
  grid: [number, number, number];
  block: [number, number, number];
  args: CuArg[];
}

const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

/** Input tensor data: any array of numbers with a shape (Value, HostTensor, ...). */
export interface CudaInput { shape: number[]; data: ArrayLike<number> }

/**
 * A plan bound to inputs on the device: sizes bound, every tensor allocated (written ones zeroed,
 * as runPlanCpu does), inputs uploaded, launches prepared. launch() queues every kernel in order
 * (asynchronously); read() waits and downloads the outputs; dispose() frees the device memory.
 */
export class CudaPlanRun {
  /** Tensor id -> its device pointer (an intermediate's is its slot's allocation). */
  private readonly ptrs = new Map<string, { ptr: CuHandle; bytes: number; int: boolean; half?: KHalf; shape: number[] }>();
  /** Every device allocation, freed once each. */
  private readonly allocations: { ptr: CuHandle; bytes: number }[] = [];
  readonly launches: PreparedLaunch[] = [];
  private disposed = false;

  private constructor(readonly ctx: CudaContext, readonly plan: Plan, private readonly opts: CudaRunOptions) {}

  static async create(plan: Plan, inputs: ReadonlyMap<string, CudaInput>, opts: CudaRunOptions = {}): Promise<CudaPlanRun> {
    const ctx = cudaContext();
    const sizes = planSizes(plan, inputs);
    const kernels = (await prepareCudaPlans([plan], opts))[0]!;
    const run = new CudaPlanRun(ctx, plan, opts);
    try {
      run.allocate(inputs, sizes);
      plan.launches.forEach((l, i) => run.launches.push(run.prepare(l, kernels[i]!, sizes)));
    } catch (e) {
      run.dispose();
      throw e;
    }
    return run;
  }

  private allocate(inputs: ReadonlyMap<string, CudaInput>, sizes: Map<string, number>): void {
    const { addon } = this.ctx;
    // Kernels index with i32: refuse a tensor of 2^31 elements or more before allocating anything.
    const check = (name: string, shape: readonly number[]): void => {
      const n = numel(shape);
      if (n >= 2 ** 31) throw new CudaRunError(`tensor '${name}' has ${n} elements (shape [${shape.join(', ')}]); CUDA kernels index with 32-bit integers, so a tensor must have fewer than 2^31 = 2147483648`);
    };
    for (const p of this.plan.fn.params) { const v = inputs.get(p.name); if (p.shape.length && v) check(p.name, v.shape); }
    const buffers = bindBuffers(this.plan, sizes);
    for (const t of buffers) check(t.name, t.shape);
    const alloc = (id: string, shape: number[], int: boolean) => {
      const half = int ? undefined : this.plan.half.get(id);
      const bytes = numel(shape) * (half ? 2 : 4);
      const ptr = addon.alloc(bytes);
      this.allocations.push({ ptr, bytes });
      this.ptrs.set(id, { ptr, bytes, int, ...(half ? { half } : {}), shape });
      return ptr;
    };
    const mem = planMemory(this.plan, sizes, { reuse: this.opts.reuse ?? defaultReuse() });
    const slotPtrs = new Map<number, CuHandle>();
    for (const p of bindParams(this.plan, inputs)) addon.upload(alloc(p.id, p.shape, p.int), p.host);
    for (const cv of buffers) {
      const shape = cv.shape;
      const slot = mem.slotOf.get(cv.id);
      if (slot !== undefined) {
        // An intermediate: its slot's allocation, made and zeroed for the first tenant.
        let ptr = slotPtrs.get(slot);
        if (ptr === undefined) {
          const bytes = mem.slots[slot]!.bytes;
          ptr = addon.alloc(bytes);
          this.allocations.push({ ptr, bytes });
          addon.memsetZero(ptr, bytes);
          slotPtrs.set(slot, ptr);
        }
        const { int, half } = cv;
        this.ptrs.set(cv.id, { ptr, bytes: numel(shape) * (half ? 2 : 4), int, ...(half ? { half } : {}), shape });
        continue;
      }
      const old = this.ptrs.get(cv.id);
      if (old) {
        const k = this.allocations.findIndex((a) => a.ptr === old.ptr);
        if (k >= 0) this.allocations.splice(k, 1);
        addon.free(old.ptr);
      }
      const ptr = alloc(cv.id, shape, cv.int);
      addon.memsetZero(ptr, this.ptrs.get(cv.id)!.bytes);
    }
  }

  private prepare(l: Launch, k: LoadedKernel, sizes: Map<string, number>): PreparedLaunch {
    const ek = k.emitted;
    const name = l.kernel.name;
    const kbufs = l.kernel.buffers;
    const ebufs = [...ek.buffers].sort((a, b) => a.binding - b.binding);
    const escal = [...ek.scalars].sort((a, b) => a.offset - b.offset);
    if (ebufs.length !== kbufs.length || escal.length !== l.kernel.scalars.length) {
      throw new CudaRunError(`kernel ${name}: the printer gave ${ebufs.length} buffers and ${escal.length} scalars, the kernel has ${kbufs.length} and ${l.kernel.scalars.length}`);
    }
    const args: CuArg[] = [];
    // Buffers by name (or, where the printer renamed one, by position), then scalars.
    ebufs.forEach((eb, i) => {
      const kname = eb.name in l.buffers ? eb.name : kbufs[i]!.name;
      const kb = kbufs.find((b) => b.name === kname);
      if (kb && eb.storage !== kb.storage) throw new CudaRunError(`kernel ${name}: buffer '${eb.name}' is stored as ${kb.storage ?? kb.type} but the printer gave ${eb.storage ?? eb.type}`);
      const id = l.buffers[kname];
      const b = id === undefined ? undefined : this.ptrs.get(id);
      if (!b) throw new CudaRunError(`kernel ${name}: buffer '${eb.name}' is bound to no tensor`);
      args.push(b.ptr);
    });
    const scalarValues: Record<string, number> = {};
    escal.forEach((es, i) => {
      const kname = es.name in l.scalars ? es.name : l.kernel.scalars[i]!.name;
      const atom = l.scalars[kname];
      const v = atom === undefined ? undefined : sizes.get(atom);
      if (v === undefined) throw new CudaRunError(`kernel ${name}: scalar '${es.name}' has no value`);
      scalarValues[es.name] = v;
      scalarValues[kname] = v;
      args.push(es.type === 'f32' ? { f32: v } : { i32: v });
    });
    let grid = ek.grid.map((g) => evalGridExpr(g, scalarValues)) as [number, number, number];
    const max = this.ctx.device.maxGrid;
    // Past 65535 blocks in y (batch entries: B * H), a kernel that rebuilds its ids from the linear block index runs as (x * y, 1, z).
    if (ek.foldY && grid[1] > max[1]! && grid[0] * grid[1] <= max[0]!) grid = [grid[0] * grid[1], 1, grid[2]];
    grid.forEach((g, i) => {
      if (!Number.isInteger(g) || g < 0 || g > max[i]!) throw new CudaRunError(`kernel ${name}: grid ${grid.join('x')} exceeds the device's ${max.join('x')}`);
    });
    const block = [...ek.workgroup] as [number, number, number];
    const threads = numel(block);
    if (threads > k.attributes.maxThreadsPerBlock) {
      throw new CudaRunError(`kernel ${name}: ${threads} threads per block, but with ${k.attributes.registers} registers per thread it can have at most ${k.attributes.maxThreadsPerBlock}`);
    }
    return { launch: l, kernel: k, grid, block, args };
  }

  /** Queues every launch, in plan order. */
  launch(): void {
    if (this.disposed) throw new CudaRunError('this CUDA run was disposed');
    const { addon } = this.ctx;
    const sync = this.opts.syncEachLaunch ?? process.env['RETNETC_CUDA_SYNC'] === '1';
    for (const p of this.launches) {
      if (p.grid.some((g) => g === 0)) continue; // nothing to do (CUDA rejects empty grids)
      try {
        addon.launch(p.kernel.fn, p.grid, p.block, p.kernel.emitted.dynamicSharedBytes, p.args);
        if (sync) addon.synchronize();
      } catch (e) {
        throw new CudaRunError(`kernel ${p.launch.kernel.name}: ${oneLine(e)}`);
      }
    }
  }

  /** Waits for the launches and downloads the function's outputs. */
  read(): Map<string, HostTensor> {
    const { addon } = this.ctx;
    try {
      addon.synchronize();
    } catch (e) {
      throw new CudaRunError(`running ${this.plan.fn.name} on ${this.ctx.device.name}: ${oneLine(e)}`);
    }
    const out = new Map<string, HostTensor>();
    for (const o of this.plan.fn.outputs) {
      const b = this.ptrs.get(o.v);
      if (!b) throw new CudaRunError(`output '${o.name}' was never allocated`);
      if (b.half) {
        const bits = new Uint16Array(b.bytes / 2);
        addon.download(b.ptr, bits);
        out.set(o.name, { shape: b.shape, data: hostOutput(bits, b.half) });
        continue;
      }
      const data = b.int ? new Int32Array(b.bytes / 4) : new Float32Array(b.bytes / 4);
      addon.download(b.ptr, data);
      out.set(o.name, { shape: b.shape, data });
    }
    return out;
  }

  /** Device bytes this run holds. */
  get deviceBytes(): number {
    let n = 0;
    for (const a of this.allocations) n += a.bytes;
    return n;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const a of this.allocations) {
      try {
        this.ctx.addon.free(a.ptr);
      } catch { /* the context may be broken after a kernel fault; nothing more to free */ }
    }
    this.allocations.length = 0;
    this.ptrs.clear();
  }
}

/**
 * Runs a plan on the GPU: binds sizes from the inputs, allocates every tensor, uploads the
 * inputs, launches the kernels in order and reads back the outputs. Rejects with a
 * CudaUnavailableError (one line) where CUDA cannot run.
 */
export async function runPlanCuda(plan: Plan, inputs: ReadonlyMap<string, CudaInput>, opts: CudaRunOptions = {}): Promise<Map<string, HostTensor>> {
  const run = await CudaPlanRun.create(plan, inputs, opts);
  try {
    run.launch();
    return run.read();
  } finally {
    run.dispose();
  }
}

/** Times `f` (which queues GPU work) with CUDA events: milliseconds per call. */
export function timeCuda(ctx: CudaContext, f: () => void, reps: number): number {
  const { addon } = ctx;
  const a = addon.eventCreate();
  const b = addon.eventCreate();
  try {
    addon.eventRecord(a);
    for (let i = 0; i < reps; i++) f();
    addon.eventRecord(b);
    addon.eventSynchronize(b);
    return addon.eventElapsed(a, b) / reps;
  } finally {
    addon.eventDestroy(a);
    addon.eventDestroy(b);
  }
}
