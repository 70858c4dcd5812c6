// What a target printer produces for one kernel, and what its runtime needs to launch it.
// The printers (targets/cuda, targets/wgsl, targets/native as 'c') and the runtimes
// (runtime/webgpu, runtime/cuda, runtime/native) meet here.
import type { KExpr, KHalf, KType } from '../compiler/kir.js';

export type TargetName = 'cuda' | 'wgsl' | 'c';

export interface EmittedBuffer {
  name: string;
  /** Element type in memory (bool as 0/1 i32), unless `storage` says otherwise. */
  type: KType;
  /** f32 buffers stored in half precision: 2-byte f16 or bf16 elements (compiler/kir.ts). */
  storage?: KHalf;
  access: 'read' | 'read_write';
  /** WGSL: @group(0) @binding(binding). CUDA: parameter position. C: index in rn_b and rn_n. */
  binding: number;
}

export interface EmittedScalar {
  name: string;
  type: 'i32' | 'f32';
  /** WGSL: byte offset in the uniform struct; CUDA: parameter position; C: index in rn_s (i32, f32 as its bits). */
  offset: number;
}

export interface EmittedKernel {
  target: TargetName;
  /** Entry point name (CUDA: extern "C" symbol; WGSL: the @compute fn; C: the function). */
  entry: string;
  /** The whole module's source: one kernel per module. */
  code: string;
  workgroup: [number, number, number];
  buffers: EmittedBuffer[];
  scalars: EmittedScalar[];
  /** WGSL: binding of the uniform struct holding the scalars (absent when there are none); its byte size. */
  uniform?: { binding: number; size: number };
  /** Workgroups per dimension, over the scalars (before any folding). */
  grid: [KExpr, KExpr, KExpr];
  /**
   * WGSL dispatches at most 65535 workgroups per dimension: the x count is dispatched as
   * (min(x, 65535), ceil(x / 65535) * y, z) and the kernel rebuilds its ids; `foldX` says so.
   */
  foldX: boolean;
  /**
   * CUDA launches at most 65535 blocks in y: where the kernel says so (targets/cuda/legalise.ts),
   * a y count above that is launched as (x * y, 1, z) and the kernel rebuilds its ids. WGSL
   * (targets/wgsl/legalise.ts): a y count (after the x fold) above 65535 is dispatched as
   * (x, 65535, ceil(y / 65535) * z) and the kernel rebuilds its ids.
   */
  foldY?: boolean;
  /** CUDA: bytes of dynamic shared memory to request at launch (0 when static). */
  dynamicSharedBytes: number;
  /** C: bytes of rn_scratch (workgroup memory) each calling thread passes, 64-byte aligned. */
  scratchBytes?: number;
}
