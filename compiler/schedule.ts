// Schedules: small serialisable records, separate from the algorithm (Halide, TVM). The
// lowering takes (function, schedule) and returns kernels; a tuner searches these records.

export type Form = 'parallel' | 'recurrent' | 'chunkwise';
export const FORMS: readonly Form[] = ['parallel', 'recurrent', 'chunkwise'];

export interface Schedule {
  form: Form;
  /** Chunk length (chunkwise) or tile of positions (parallel). */
  chunk: number;
  /** Positions per tile along the key axis in the parallel form. */
  tiles: { cols: number };
  /** Threads per workgroup for contraction kernels (over the value index) and elementwise ones. */
  workgroup: { contraction: number; elementwise: number };
  /**
   * Storage dtype of the float tensors (inputs, outputs, intermediates): 'f16' or 'bf16' store
   * them in 2 bytes with f32 arithmetic (compiler/kir.ts). Decay tensors (what a contraction's
   * decay is computed from) and the gradients of decays stay f32 (compiler/plan.ts,
   * f32Tensors); state and accumulators are always f32.
   */
  dtype: StorageDtype;
}

export type StorageDtype = 'f32' | 'f16' | 'bf16';
export const STORAGE_DTYPES: readonly StorageDtype[] = ['f32', 'f16', 'bf16'];

export const DEFAULT_CHUNK = 64;

export function makeSchedule(form: Form, chunk = DEFAULT_CHUNK, overrides: Partial<Omit<Schedule, 'form' | 'chunk'>> = {}): Schedule {
  if (!Number.isInteger(chunk) || chunk < 1 || chunk > 1024) throw new RangeError(`chunk must be an integer in 1..1024, got ${chunk}`);
  const dtype = overrides.dtype ?? 'f32';
  if (!STORAGE_DTYPES.includes(dtype)) throw new RangeError(`dtype must be one of ${STORAGE_DTYPES.join(', ')}, got ${String(dtype)}`);
  return { form, chunk, tiles: { cols: overrides.tiles?.cols ?? chunk }, workgroup: overrides.workgroup ?? { contraction: 64, elementwise: 256 }, dtype };
}

export const scheduleKey = (s: Schedule): string => JSON.stringify(s);
