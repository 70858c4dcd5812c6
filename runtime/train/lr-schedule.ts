// The learning rate of each optimizer step: a linear warm-up from lr / warmup to lr over the
// first `warmup` steps, then a cosine from lr down to `floor` (a share of lr) at the last step.
// A pure function of the step, so a resumed run's schedule is the uninterrupted run's.

export interface LrSchedule {
  /** The peak rate, reached at the end of the warm-up. */
  lr: number;
  /** Warm-up steps (0: none). */
  warmup: number;
  /** The total number of optimizer steps of the run. */
  steps: number;
  /** The rate at the last step, as a share of lr (default 0.1). */
  floor?: number;
}

/** The default warm-up for a run of `steps` steps: a tenth of it, at most 100. */
export const defaultWarmup = (steps: number): number => Math.min(100, Math.ceil(steps / 10));

/** The rate of optimizer step `step` (1 = the first). */
export function lrAt(s: LrSchedule, step: number): number {
  const floor = (s.floor ?? 0.1) * s.lr;
  if (step <= s.warmup) return (s.lr * step) / s.warmup;
  const decay = s.steps - s.warmup;
  if (decay <= 0) return s.lr;
  const p = Math.min(1, (step - s.warmup) / decay);
  return floor + 0.5 * (s.lr - floor) * (1 + Math.cos(Math.PI * p));
}
