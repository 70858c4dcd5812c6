// Does a kernel fit the adapter? Workgroup memory, invocations per workgroup, storage buffers
// per stage, bytes per storage binding and workgroups per dimension, each with a one-line
// explanation that names the kernel and says what to change.
import type { Kernel, KType } from '../../compiler/kir.js';
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

/** Largest power-of-two chunk below `chunk` whose workgroup memory fits, if the memory scales with it. */
function suggestChunk(bytes: number, sched: Schedule, limit: number): number | undefined {
  const quadratic = sched.form === 'chunkwise' || sched.tiles.cols === sched.chunk;
  for (let c = 2 ** Math.floor(Math.log2(sched.chunk)); c >= 1; c /= 2) {
    if (c >= sched.chunk) continue;
    const r = c / sched.chunk;
    if (bytes * (quadratic ? r * r : r) <= limit) return c;
  }
  return undefined;
}

export interface KernelContext {
  /** The schedule the plan was compiled for, and whether the kernel is a contraction (chunked) one. */
  schedule?: Schedule;
  how?: 'elementwise' | 'contraction';
  /** The printer's workgroup size and storage binding count, when known (else the kernel's). */
  workgroup?: [number, number, number];
  storageBuffers?: number;
}

/** Why `kernel` cannot run with `limits`, as one line; undefined when it fits. */
export function kernelLimitProblem(kernel: Kernel, ctx: KernelContext, limits: KernelLimits): string | undefined {
  const sched = ctx.schedule;
  const [wx, wy, wz] = ctx.workgroup ?? kernel.workgroup;
  const what = `kernel ${kernel.name}`;
  const mem = sharedBytes(kernel);
  if (mem > limits.maxComputeWorkgroupStorageSize) {
    const arrays = kernel.shared.map((s) => `${s.name}: ${s.size} ${s.type}`).join(', ');
    const isChunked = sched !== undefined && ctx.how !== 'elementwise' && (sched.form === 'chunkwise' || sched.form === 'parallel');
    const head = isChunked ? `${what}: chunk ${sched.chunk} needs` : `${what} needs`;
    let fix: string;
    if (isChunked) {
      const c = suggestChunk(mem, sched, limits.maxComputeWorkgroupStorageSize);
      fix = c !== undefined ? `use chunk ${c} or smaller` : 'use a smaller chunk';
    } else if (sched?.form === 'recurrent') {
      fix = 'the key size is too large for the recurrent schedule on this adapter; use the chunkwise schedule with a small chunk';
    } else {
      fix = 'use a schedule with less workgroup memory';
    }
    return `${head} ${bytesStr(mem)} of workgroup memory (${arrays}); this adapter allows ${bytesStr(limits.maxComputeWorkgroupStorageSize)} (maxComputeWorkgroupStorageSize); ${fix}`;
  }
  const inv = wx * wy * wz;
  if (inv > limits.maxComputeInvocationsPerWorkgroup) {
    return `${what} needs ${inv} invocations per workgroup (${wx}x${wy}x${wz}); this adapter allows ${limits.maxComputeInvocationsPerWorkgroup} (maxComputeInvocationsPerWorkgroup); use a smaller schedule.workgroup`;
  }
  for (const [n, lim, axis] of [[wx, limits.maxComputeWorkgroupSizeX, 'X'], [wy, limits.maxComputeWorkgroupSizeY, 'Y'], [wz, limits.maxComputeWorkgroupSizeZ, 'Z']] as const) {
    if (n > lim) return `${what} has workgroup size ${n} in ${axis.toLowerCase()}; this adapter allows ${lim} (maxComputeWorkgroupSize${axis}); use a smaller schedule.workgroup`;
  }
  const nb = ctx.storageBuffers ?? kernel.buffers.length;
  if (nb > limits.maxStorageBuffersPerShaderStage) {
    return `${what} binds ${nb} storage buffers; this adapter allows ${limits.maxStorageBuffersPerShaderStage} per shader stage (maxStorageBuffersPerShaderStage); split the statement into smaller ones`;
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
