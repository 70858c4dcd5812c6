// Does a kernel fit the adapter? Workgroup memory, invocations per workgroup, storage buffers
// per stage, bytes per storage binding and workgroups per dimension, each with a one-line
// explanation that names the kernel and says what to change.
import type { Kernel, KStmt, KType } from '../../compiler/kir.js';
import type { Schedule } from '../../compiler/schedule.js';
import { bytesStr } from './errors.js';

/** The limits this file reads (a GPUSupportedLimits or a plain record of numbers). */
export interface KernelLimits {
  maxComputeWorkgroupStorageSize: number;
  maxComputeInvocationsPerWorkgroup: number;
  maxComputeWorkgroupSizeX: number;
  maxComputeWorkgroupSizeY: number;
  maxComputeWorkgroupSizeZ: number;
  maxComputeWorkgroupsPerDimension: number;
  maxStorageBuffersPerShaderStage: number;
  maxStorageBufferBindingSize: number;
  maxBufferSize: number;
  /** Who grants these limits, for messages ('this adapter' when absent). */
  name?: string;
  /** Bytes of per-thread (function address space) arrays one kernel may declare; unchecked when absent. */
  maxFunctionMemory?: number;
  /** Elements of any one array (Tint refuses an array count of 65536 or more); unchecked when absent. */
  maxArrayElements?: number;
}

/** Tint (Dawn's and Chrome's WGSL compiler) refuses arrays of 65536 elements or more. */
export const WGSL_MAX_ARRAY_ELEMENTS = 65535;

/**
 * Limits a kernel is checked against when it is compiled rather than run: WebGPU's defaults
 * (what every adapter grants, from the WebGPU spec, plus WGSL's guaranteed 8192 bytes of
 * function memory), the lavapipe adapter of the CI machines (as Dawn reports it), and CUDA
 * devices of compute capability 8.0 and 9.0 (the shared memory a block may opt in to, 1024
 * threads, 512 KiB of local memory per thread), and a CPU (the native C target).
 */
export const LIMIT_PROFILES: Record<'default' | 'lavapipe' | 'sm_80' | 'sm_90' | 'cpu', KernelLimits> = {
  default: { ...webgpuDefaults(), name: "WebGPU's default limits", maxFunctionMemory: 8192, maxArrayElements: WGSL_MAX_ARRAY_ELEMENTS },
  lavapipe: {
    name: 'lavapipe', maxComputeWorkgroupStorageSize: 32768, maxComputeInvocationsPerWorkgroup: 1024, maxComputeWorkgroupSizeX: 1024,
    maxComputeWorkgroupSizeY: 1024, maxComputeWorkgroupSizeZ: 1024, maxComputeWorkgroupsPerDimension: 65535, maxStorageBuffersPerShaderStage: 16,
    maxStorageBufferBindingSize: 134217728, maxBufferSize: 4294967295, maxArrayElements: WGSL_MAX_ARRAY_ELEMENTS,
  },
  sm_80: cudaLimits('sm_80', 163 * 1024),
  sm_90: cudaLimits('sm_90', 227 * 1024),
  // The native C target: workgroup memory is a scratch allocation per calling thread, workgroups
  // run as loops; a work-item's arrays live on a thread's stack (8 MiB: a quarter of it).
  cpu: {
    name: 'a CPU (native C)', maxComputeWorkgroupStorageSize: 256 * 1024 * 1024, maxComputeInvocationsPerWorkgroup: 65536, maxComputeWorkgroupSizeX: 65536,
    maxComputeWorkgroupSizeY: 65536, maxComputeWorkgroupSizeZ: 65536, maxComputeWorkgroupsPerDimension: 2 ** 31 - 1, maxStorageBuffersPerShaderStage: 4096,
    maxStorageBufferBindingSize: 2 ** 40, maxBufferSize: 2 ** 40, maxFunctionMemory: 2 * 1024 * 1024,
  },
};

function webgpuDefaults(): KernelLimits {
  return limitsOf({});
}

function cudaLimits(name: string, sharedOptin: number): KernelLimits {
  return {
    name, maxComputeWorkgroupStorageSize: sharedOptin, maxComputeInvocationsPerWorkgroup: 1024, maxComputeWorkgroupSizeX: 1024,
    maxComputeWorkgroupSizeY: 1024, maxComputeWorkgroupSizeZ: 64, maxComputeWorkgroupsPerDimension: 65535,
    // Kernel parameters share 4 KiB (32 KiB from CUDA 12.1 on Volta and later): 8-byte pointers.
    maxStorageBuffersPerShaderStage: 512, maxStorageBufferBindingSize: 2 ** 40, maxBufferSize: 2 ** 40, maxFunctionMemory: 512 * 1024,
  };
}

export function limitsOf(l: GPUSupportedLimits | Record<string, number>): KernelLimits {
  const r = l as unknown as Record<string, number>;
  const get = (k: keyof KernelLimits, dflt: number): number => (typeof r[k] === 'number' ? r[k]! : dflt);
  return {
    // WebGPU's defaults, for a record that lacks a key.
    maxComputeWorkgroupStorageSize: get('maxComputeWorkgroupStorageSize', 16384),
    maxComputeInvocationsPerWorkgroup: get('maxComputeInvocationsPerWorkgroup', 256),
    maxComputeWorkgroupSizeX: get('maxComputeWorkgroupSizeX', 256),
    maxComputeWorkgroupSizeY: get('maxComputeWorkgroupSizeY', 256),
    maxComputeWorkgroupSizeZ: get('maxComputeWorkgroupSizeZ', 64),
    maxComputeWorkgroupsPerDimension: get('maxComputeWorkgroupsPerDimension', 65535),
    maxStorageBuffersPerShaderStage: get('maxStorageBuffersPerShaderStage', 8),
    maxStorageBufferBindingSize: get('maxStorageBufferBindingSize', 134217728),
    maxBufferSize: get('maxBufferSize', 268435456),
  };
}

/** Bytes of one element of a workgroup array (bool is stored as a 32-bit value). */
const ELEM_BYTES: Record<KType, number> = { f32: 4, i32: 4, bool: 4 };

export function sharedBytes(k: Pick<Kernel, 'shared'>): number {
  return k.shared.reduce((a, s) => a + s.size * ELEM_BYTES[s.type], 0);
}

/** The per-thread arrays a kernel declares (kernel IR `local` statements). */
export function localArrays(k: Pick<Kernel, 'body'>): { name: string; type: KType; size: number }[] {
  const out: { name: string; type: KType; size: number }[] = [];
  const visit = (ss: readonly KStmt[]): void => {
    for (const s of ss) {
      if (s.k === 'local') out.push({ name: s.name, type: s.type, size: s.size });
      else if (s.k === 'if') { visit(s.then); visit(s.else); } else if (s.k === 'for') visit(s.body);
    }
  };
  visit(k.body);
  return out;
}

/**
 * Largest power-of-two chunk below `chunk` whose workgroup memory fits. The parallel form's
 * memory is score tiles (quadratic in the chunk, or linear with fixed key tiles). The chunkwise
 * form's (compiler/lower/contraction.ts) is at most linear in the chunk (scores of a few rows,
 * chunk-local gate sums) except the sums over key slices, 'red', which do not depend on it.
 */
function suggestChunk(k: Pick<Kernel, 'shared'>, sched: Schedule, limit: number): number | undefined {
  const quadratic = sched.form === 'parallel' && sched.tiles.cols === sched.chunk;
  const fixed = sched.form === 'chunkwise' ? sharedBytes({ shared: k.shared.filter((s) => s.name === 'red') }) : 0;
  const scaled = sharedBytes(k) - fixed;
  for (let c = 2 ** Math.floor(Math.log2(sched.chunk)); c >= 1; c /= 2) {
    if (c >= sched.chunk) continue;
    const r = c / sched.chunk;
    // Chunkwise: + 4 bytes an array, as a size such as chunk + 1 shrinks by a little less than r.
    if (fixed + Math.ceil(scaled * (quadratic ? r * r : r)) + (sched.form === 'chunkwise' ? 4 * k.shared.length : 0) <= limit) return c;
  }
  return undefined;
}

export interface KernelContext {
  /** The schedule the plan was compiled for, and whether the kernel is a contraction (chunked) one. */
  schedule?: Schedule;
  how?: 'elementwise' | 'contraction' | 'dense' | 'reduce' | 'scatter';
  /** The printer's workgroup size and storage binding count, when known (else the kernel's). */
  workgroup?: [number, number, number];
  storageBuffers?: number;
}

/** Why `kernel` cannot run with `limits`, as one line; undefined when it fits. */
export function kernelLimitProblem(kernel: Kernel, ctx: KernelContext, limits: KernelLimits): string | undefined {
  const sched = ctx.schedule;
  const [wx, wy, wz] = ctx.workgroup ?? kernel.workgroup;
  const what = `kernel ${kernel.name}`;
  const who = limits.name ? `${limits.name} allow${limits.name.endsWith('limits') ? '' : 's'}` : 'this adapter allows';
  if (limits.maxArrayElements !== undefined) {
    const big = [...kernel.shared, ...localArrays(kernel)].find((a) => a.size > limits.maxArrayElements!);
    if (big) return `${what} declares array '${big.name}' of ${big.size} elements; WGSL compilers allow at most ${limits.maxArrayElements}; use smaller sizes or a smaller chunk`;
  }
  const mem = sharedBytes(kernel);
  if (mem > limits.maxComputeWorkgroupStorageSize) {
    const arrays = kernel.shared.map((s) => `${s.name}: ${s.size} ${s.type}`).join(', ');
    const isChunked = sched !== undefined && ctx.how === 'contraction' && (sched.form === 'chunkwise' || sched.form === 'parallel');
    const head = isChunked ? `${what}: chunk ${sched.chunk} needs` : `${what} needs`;
    let fix: string;
    if (isChunked) {
      const c = suggestChunk(kernel, sched, limits.maxComputeWorkgroupStorageSize);
      fix = c !== undefined ? `use chunk ${c} or smaller` : 'use a smaller chunk';
    } else if (sched?.form === 'recurrent') {
      fix = 'the key size is too large for the recurrent schedule here; use the chunkwise schedule with a small chunk';
    } else {
      fix = 'use a schedule with less workgroup memory';
    }
    return `${head} ${bytesStr(mem)} of workgroup memory (${arrays}); ${who} ${bytesStr(limits.maxComputeWorkgroupStorageSize)} (maxComputeWorkgroupStorageSize); ${fix}`;
  }
  const inv = wx * wy * wz;
  if (inv > limits.maxComputeInvocationsPerWorkgroup) {
    return `${what} needs ${inv} invocations per workgroup (${wx}x${wy}x${wz}); ${who} ${limits.maxComputeInvocationsPerWorkgroup} (maxComputeInvocationsPerWorkgroup); use a smaller schedule.workgroup`;
  }
  for (const [n, lim, axis] of [[wx, limits.maxComputeWorkgroupSizeX, 'X'], [wy, limits.maxComputeWorkgroupSizeY, 'Y'], [wz, limits.maxComputeWorkgroupSizeZ, 'Z']] as const) {
    if (n > lim) return `${what} has workgroup size ${n} in ${axis.toLowerCase()}; ${who} ${lim} (maxComputeWorkgroupSize${axis}); use a smaller schedule.workgroup`;
  }
  const nb = ctx.storageBuffers ?? kernel.buffers.length;
  if (nb > limits.maxStorageBuffersPerShaderStage) {
    return `${what} binds ${nb} storage buffers; ${who} ${limits.maxStorageBuffersPerShaderStage} per shader stage (maxStorageBuffersPerShaderStage); split the statement into smaller ones`;
  }
  if (limits.maxFunctionMemory !== undefined) {
    const locals = localArrays(kernel);
    const bytes = locals.reduce((a, l) => a + l.size * ELEM_BYTES[l.type], 0);
    if (bytes > limits.maxFunctionMemory) {
      return `${what} needs ${bytesStr(bytes)} of per-thread arrays (${locals.map((l) => `${l.name}: ${l.size} ${l.type}`).join(', ')}); ${who} ${bytesStr(limits.maxFunctionMemory)} per thread; use smaller key and value sizes`;
    }
  }
  return undefined;
}

/** Why a tensor of `bytes` bytes cannot be bound as storage, or undefined. */
export function bindingProblem(kernelName: string, tensor: string, shape: readonly number[], dtype: string, bytes: number, limits: KernelLimits): string | undefined {
  const lim = Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize);
  if (bytes <= lim) return undefined;
  const which = limits.maxStorageBufferBindingSize <= limits.maxBufferSize ? 'maxStorageBufferBindingSize' : 'maxBufferSize';
  return `kernel ${kernelName}: tensor '${tensor}' (${dtype}[${shape.join(', ')}]) needs ${bytesStr(bytes)} in one storage binding; this adapter allows ${bytesStr(lim)} (${which}); run with a smaller B, H or T`;
}
