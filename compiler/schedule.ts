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
  /** Storage dtype of tensors; state and accumulators are always f32. */
  dtype: 'f32';
}

export const DEFAULT_CHUNK = 64;

export function makeSchedule(form: Form, chunk = DEFAULT_CHUNK, overrides: Partial<Omit<Schedule, 'form' | 'chunk'>> = {}): Schedule {
  if (!Number.isInteger(chunk) || chunk < 1 || chunk > 1024) throw new RangeError(`chunk must be an integer in 1..1024, got ${chunk}`);
  return { form, chunk, tiles: { cols: overrides.tiles?.cols ?? chunk }, workgroup: overrides.workgroup ?? { contraction: 64, elementwise: 256 }, dtype: 'f32' };
}

export const scheduleKey = (s: Schedule): string => JSON.stringify(s);
