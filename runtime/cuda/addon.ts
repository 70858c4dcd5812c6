// Loading the CUDA addon (runtime/cuda/addon, built by scripts/build-cuda-addon.mjs during
// `npm ci`) and its types. The addon dlopen()s libcuda.so.1 when first used, so loading it never
// needs a driver; `available()` then says whether CUDA can run, and why not in one line.
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

/** A device pointer, module, function or event: an opaque 64-bit handle. */
export type CuHandle = bigint;

/** A kernel argument: a device pointer (bigint) or a 4-byte scalar. */
export type CuArg = bigint | { i32: number } | { f32: number };

export interface CudaDeviceInfo {
  name: string;
  major: number;
  minor: number;
  multiprocessors: number;
  warpSize: number;
  maxThreadsPerBlock: number;
  maxGrid: [number, number, number];
  maxSharedPerBlock: number;
  /** The most shared memory one block can have after cuFuncSetAttribute (227 KiB on Hopper). */
  maxSharedPerBlockOptin: number;
  clockKHz: number;
  memoryClockKHz: number;
  memoryBusWidth: number;
  l2Bytes: number;
  totalMemory: number;
  /** e.g. 13000 for CUDA 13.0. */
  driverVersion: number;
}

export interface CudaFuncAttributes {
  maxThreadsPerBlock: number;
  staticSharedBytes: number;
  localBytes: number;
  registers: number;
  ptxVersion: number;
  binaryVersion: number;
  maxDynamicSharedBytes: number;
}

/**
 * The addon's exports. Every failing driver call throws an Error whose message is one line:
 * "cuXxx: CUDA_ERROR_NAME: <driver's error string>"; without a usable driver every call but
 * available() throws available().reason.
 */
export interface CudaAddon {
  available(): { ok: boolean; reason?: string };
  deviceInfo(): CudaDeviceInfo;
  memInfo(): { free: number; total: number };
  /** A PTX (text) or cubin (ELF) image; returns a module handle. */
  loadModule(image: Uint8Array): CuHandle;
  unloadModule(module: CuHandle): void;
  getFunction(module: CuHandle, name: string): CuHandle;
  funcAttributes(fn: CuHandle): CudaFuncAttributes;
  /** Allows launches of `fn` with up to `bytes` of dynamic shared memory (needed above 48 KiB). */
  setMaxDynamicShared(fn: CuHandle, bytes: number): void;
  alloc(bytes: number): CuHandle;
  free(ptr: CuHandle): void;
  memsetZero(ptr: CuHandle, bytes: number): void;
  upload(ptr: CuHandle, data: ArrayBufferView | ArrayBuffer): void;
  download(ptr: CuHandle, dest: ArrayBufferView | ArrayBuffer): void;
  launch(fn: CuHandle, grid: [number, number, number], block: [number, number, number], dynamicSharedBytes: number, args: CuArg[]): void;
  synchronize(): void;
  eventCreate(): CuHandle;
  eventRecord(event: CuHandle): void;
  eventSynchronize(event: CuHandle): void;
  /** Milliseconds from `start` to `end` (both recorded and complete). */
  eventElapsed(start: CuHandle, end: CuHandle): number;
  eventDestroy(event: CuHandle): void;
  abiVersion: number;
}

export const ADDON_FILE = 'retnetc_cuda.node';

/** Where the built addon may be: $RETNETC_CUDA_ADDON, then next to the sources, dist and a bundle. */
export function addonCandidates(): string[] {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const out: string[] = [];
  if (process.env['RETNETC_CUDA_ADDON']) out.push(path.resolve(process.env['RETNETC_CUDA_ADDON']));
  out.push(
    path.join(here, 'addon', 'build', 'Release', ADDON_FILE), // runtime/cuda/*.ts
    path.join(here, '..', '..', '..', 'runtime', 'cuda', 'addon', 'build', 'Release', ADDON_FILE), // dist/runtime/cuda/*.js
    path.join(here, ADDON_FILE), // a bundle with the addon beside it
  );
  return out;
}

let loaded: { addon: CudaAddon; file: string } | { error: string } | undefined;

/** The addon, or a one-line reason why it cannot be loaded. Cached. */
export function loadCudaAddon(): { addon: CudaAddon; file: string } | { error: string } {
  if (loaded) return loaded;
  const file = addonCandidates().find((p) => fs.existsSync(p));
  if (!file) {
    loaded = { error: 'CUDA addon not built (runtime/cuda/addon/build/Release/retnetc_cuda.node is missing; run `npm run build:cuda`, which needs g++)' };
    return loaded;
  }
  try {
    const require = createRequire(import.meta.url);
    const addon = require(file) as CudaAddon;
    if (typeof addon.available !== 'function') throw new Error('not the retnetc CUDA addon');
    loaded = { addon, file };
  } catch (e) {
    const msg = (e instanceof Error ? e.message : String(e)).replace(/\s+/g, ' ').trim();
    loaded = { error: `CUDA addon ${file} does not load: ${msg.slice(0, 300)}` };
  }
  return loaded;
}
