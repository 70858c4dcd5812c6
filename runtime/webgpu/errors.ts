// Errors of the WebGPU runtime: each is one line (no newlines) so a CLI can print it as is.
// No adapter at all is device.ts's WebGPUUnavailableError ("no WebGPU adapter: ...").

export type WebGPURunErrorKind =
  /** A kernel or tensor of the plan does not fit the adapter's limits (chunk too big, ...). */
  | 'limits'
  /** The plan needs what the device or WGSL lacks: f16 storage without shader-f16, bf16 storage. */
  | 'feature'
  /** The WGSL of a kernel did not compile or its pipeline was rejected. */
  | 'shader'
  /** Some other WebGPU validation error while encoding or submitting. */
  | 'validation'
  | 'out-of-memory'
  | 'device-lost'
  /** Bad inputs: missing, wrong size, sizes out of i32 range. */
  | 'input'
  /** The printer's output breaks the emitted-kernel contract (targets/emitted.ts). */
  | 'contract';

export class WebGPURunError extends Error {
  override readonly name = 'WebGPURunError';
  constructor(readonly kind: WebGPURunErrorKind, message: string) {
    super(oneLine(message));
  }
}

export function oneLine(s: unknown): string {
  const text = s instanceof Error ? s.message : String(s);
  return text.replace(/\s+/g, ' ').trim();
}

/** 16384 -> "16 KiB", 1536 -> "1.5 KiB", 3 << 20 -> "3 MiB". */
export function bytesStr(n: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let u = 0;
  let x = n;
  while (x >= 1024 && u < units.length - 1) { x /= 1024; u++; }
  if (u === 0) return `${n} bytes`;
  const r = Math.round(x * 10) / 10;
  return `${Number.isInteger(r) ? r.toFixed(0) : r.toFixed(1)} ${units[u]}`;
}
