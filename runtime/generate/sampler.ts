// Choosing the next token from one position's logits: greedy (temperature 0: the argmax, ties to
// the lowest id) or a draw from the softmax at a temperature, restricted to the k most likely
// tokens (top-k) and then to the smallest most-likely set whose mass reaches p (top-p, nucleus).
// Everything is float64; the softmax subtracts the maximum before dividing by the temperature,
// so only non-positive numbers are exponentiated and no temperature overflows. Draws come from
// the seeded Rng of runtime/train/rng.ts, so a seed gives the same continuation every time.
import type { Rng } from '../train/rng.js';

export interface SamplerOptions {
  /** 0: greedy; otherwise logits are divided by it (finite, > 0). */
  temperature: number;
  /** Keep only the k most likely tokens (undefined or 0: all). */
  topK?: number;
  /** Keep the smallest most-likely set whose probability reaches p, in (0, 1] (undefined or 1: all). */
  topP?: number;
}

/** Logits that cannot be sampled from (NaN or infinite): a result that may be wrong. */
export class SamplingError extends Error {
  override readonly name = 'SamplingError';
}

/** A problem with the options as one line, or undefined when they are usable. */
export function samplerProblem(o: SamplerOptions): string | undefined {
  if (!Number.isFinite(o.temperature) || o.temperature < 0) return `the temperature must be a finite number >= 0 (0 is greedy), got ${o.temperature}`;
  if (o.topK !== undefined && (!Number.isInteger(o.topK) || o.topK < 0)) return `top-k must be an integer >= 1 (0: off), got ${o.topK}`;
  if (o.topP !== undefined && !(o.topP > 0 && o.topP <= 1)) return `top-p must be in (0, 1], got ${o.topP}`;
  return undefined;
}

function checkFinite(logits: ArrayLike<number>): void {
  for (let i = 0; i < logits.length; i++) {
    if (!Number.isFinite(logits[i]!)) throw new SamplingError(`logit ${i} of ${logits.length} is ${logits[i]}: cannot sample from non-finite logits`);
  }
  if (logits.length === 0) throw new SamplingError('no logits to sample from (vocabulary of 0 tokens)');
}

/** The argmax, ties to the lowest id. */
export function argmax(logits: ArrayLike<number>): number {
  checkFinite(logits);
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  return best;
}

/**
 * The ids of the k largest logits, largest first, ties lowest id first (the full sort's order), in
 * one pass: a decode step's draw at top-k 40 of 256 no longer sorts every id.
 */
function topIds(logits: ArrayLike<number>, k: number): number[] {
  const ids: number[] = [];
  for (let i = 0; i < logits.length; i++) {
    const x = logits[i]!;
    let j: number;
    if (ids.length < k) j = ids.length;
    else if (x > logits[ids[k - 1]!]!) j = k - 1; // the last kept one drops out
    else continue;
    while (j > 0 && logits[ids[j - 1]!]! < x) { ids[j] = ids[j - 1]!; j--; }
    ids[j] = i;
  }
  return ids;
}

/**
 * The tokens a draw can give and their probabilities (summing to 1), most likely first (ties:
 * lowest id first). Greedy gives one token with probability 1.
 */
export function candidates(logits: ArrayLike<number>, o: SamplerOptions): { ids: number[]; probs: Float64Array } {
  const why = samplerProblem(o);
  if (why) throw new RangeError(why);
  if (o.temperature === 0) return { ids: [argmax(logits)], probs: Float64Array.of(1) };
  checkFinite(logits);
  const n = logits.length;
  const k = o.topK ? Math.min(o.topK, n) : n;
  const ids = k < n ? topIds(logits, k) : Array.from({ length: n }, (_, i) => i).sort((a, b) => logits[b]! - logits[a]! || a - b);
  const max = logits[ids[0]!]!;
  // (x - max) <= 0 before the division: exp never overflows, whatever the temperature.
  const w = Float64Array.from(ids, (i) => Math.exp((logits[i]! - max) / o.temperature));
  let total = 0;
  for (const x of w) total += x;
  let keep = k;
  const p = o.topP ?? 1;
  if (p < 1) {
    let mass = 0;
    keep = 0;
    // The smallest prefix whose mass reaches p (at least the most likely token).
    while (keep < k && (keep === 0 || mass < p * total)) mass += w[keep++]!;
    total = mass;
  }
  const probs = new Float64Array(keep);
  for (let j = 0; j < keep; j++) probs[j] = w[j]! / total;
  return { ids: ids.slice(0, keep), probs };
}

/** One token drawn from `logits` (greedy without drawing at temperature 0). */
export function sampleToken(logits: ArrayLike<number>, o: SamplerOptions, rng: Rng): number {
  if (o.temperature === 0) {
    const why = samplerProblem(o);
    if (why) throw new RangeError(why);
    return argmax(logits);
  }
  const { ids, probs } = candidates(logits, o);
  const u = rng.uniform();
  let acc = 0;
  for (let j = 0; j < ids.length; j++) {
    acc += probs[j]!;
    if (u < acc) return ids[j]!;
  }
  // Rounding left the running sum just under 1 and u above it: the last candidate.
  return ids[ids.length - 1]!;
}
