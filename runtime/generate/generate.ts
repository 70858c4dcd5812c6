// Generating tokens from a model: the prompt is prefilled with the derived stateful form
// (chunkwise by default; parallel; or recurrent, token by token), then decoding runs the
// recurrent stateful form one token at a time from the state the prefill returned. Only the
// last position's logits are sampled (runtime/generate/sampler.ts). `--mode` changes how the
// prompt is processed, not what it means: greedy decoding gives the same tokens in every mode.
import type { CheckedModel } from '../../dsl/checked.js';
import { compileModel } from '../../compiler/pipeline.js';
import { DEFAULT_CHUNK, type DenseMode, makeSchedule } from '../../compiler/schedule.js';
import type { Mode } from '../exec.js';
import { type HostValue, type ModelState, type PlanExec, runModelPlan } from '../model-runner.js';
import { bestTarget } from '../best-target.js';
import { openTarget, targetChunk, targetNamed } from '../targets.js';
import { Rng } from '../train/rng.js';
import { sampleToken, type SamplerOptions, samplerProblem } from './sampler.js';

export interface GenerateOptions {
  model: CheckedModel;
  weights: ReadonlyMap<string, HostValue>;
  /** Token ids, at least one, each in [0, vocab). */
  prompt: Int32Array | readonly number[];
  /** How many tokens to generate (>= 1). */
  tokens: number;
  /** 0: greedy (default 0). */
  temperature?: number;
  topK?: number;
  topP?: number;
  /** Seed of the sampler's Rng (default 0). */
  seed?: number;
  /** How the prompt is prefilled (default chunkwise). */
  mode?: Mode;
  /** Runs the plans; when absent, `target` is opened (and released at the end). */
  exec?: PlanExec;
  /** An executing target of runtime/targets.ts (default: defaultTarget()). */
  target?: string;
  /** chunkwise's chunk, parallel's tile (default: the target's, runtime/targets.ts targetChunk). */
  chunk?: number;
  /** Dense sums as maps or tiled products (default: the target's schedule default). */
  dense?: DenseMode;
  /**
   * Run each plan once on one token before timing (default true), so that compiling kernels
   * (native: C, cached on disk; WebGPU: pipelines) is not counted as prefill or decode time.
   */
  warmup?: boolean;
}

export interface GenerateResult {
  /** The generated ids (not the prompt). */
  tokens: number[];
  prefillTokens: number;
  prefillSeconds: number;
  prefillTokensPerS: number;
  /** Forward steps of decoding: one per generated token after the first (which the prefill gives). */
  decodeTokens: number;
  decodeSeconds: number;
  /** decodeTokens / decodeSeconds (0 when there was no decoding step). */
  decodeTokensPerS: number;
  /** The warm-up runs (kernel compilation, mostly); 0 without warm-up. */
  warmupSeconds: number;
  mode: Mode;
  chunk: number;
  target?: string;
}

/** A mistake in the options (one line). */
export class GenerateError extends Error {
  override readonly name = 'GenerateError';
}

/** The fastest target that runs here (runtime/best-target.ts: a GPU, else native, else cpu). */
export async function defaultTarget(): Promise<string> {
  return (await bestTarget()).name;
}

/** The vocabulary size of a retnet model (its `vocab` hyper parameter). */
export function vocabOf(model: CheckedModel): number {
  const v = Number(model.hypers.get('vocab'));
  if (!Number.isInteger(v) || v < 1) throw new GenerateError(`model '${model.name}' has no vocabulary size (hyper parameter 'vocab')`);
  return v;
}

const lastRow = (logits: HostValue): Float32Array | Float64Array => {
  const [, T, V] = logits.shape as [number, number, number];
  const d = logits.data;
  if (d instanceof Int32Array) throw new GenerateError('the model returned integer logits');
  return d.subarray((T - 1) * V, T * V);
};

export async function generate(opts: GenerateOptions, onToken?: (id: number) => void | Promise<void>): Promise<GenerateResult> {
  const { model, tokens: n } = opts;
  // Weights as f32 once (checkpoints load as float64): runners read f32 arrays in place, and would
  // otherwise convert every weight on every decode step.
  const weights = new Map([...opts.weights].map(([k, v]) => [k, v.data instanceof Float64Array ? { shape: v.shape, data: Float32Array.from(v.data) } : v] as const));
  const sampler: SamplerOptions = { temperature: opts.temperature ?? 0 };
  if (opts.topK !== undefined) sampler.topK = opts.topK;
  if (opts.topP !== undefined) sampler.topP = opts.topP;
  const why = samplerProblem(sampler);
  if (why) throw new GenerateError(why);
  if (!Number.isInteger(n) || n < 1) throw new GenerateError(`the number of tokens to generate must be an integer >= 1, got ${n}`);
  const prompt = Int32Array.from(opts.prompt);
  if (prompt.length === 0) throw new GenerateError('the prompt is empty: give at least one token');
  const vocab = vocabOf(model);
  const bad = prompt.findIndex((t) => !(t >= 0 && t < vocab));
  if (bad >= 0) throw new GenerateError(`prompt token ${bad} is ${prompt[bad]}, outside the vocabulary [0, ${vocab})`);
  const mode = opts.mode ?? 'chunkwise';

  let exec = opts.exec;
  let release = async (): Promise<void> => {};
  let target = opts.target;
  if (!exec) {
    target ??= await defaultTarget();
    ({ exec, release } = openTarget(target));
  }
  const dense = opts.dense ?? (target ? targetNamed(target)?.run?.schedule?.dense : undefined);
  const chunk = opts.chunk ?? targetChunk(target, mode);
  const extra = dense ? { dense } : {};
  try {
    const step = compileModel(model, makeSchedule('recurrent', DEFAULT_CHUNK, extra), { stateful: true });
    const one = (id: number): Map<string, HostValue> => new Map([['tokens', { shape: [1, 1], data: Int32Array.of(id) }]]);

    const prefill = mode === 'recurrent' ? undefined : compileModel(model, makeSchedule(mode, chunk, extra), { stateful: true });
    const tw = performance.now();
    if (opts.warmup ?? true) {
      for (const mp of prefill ? [prefill, step] : [step]) await runModelPlan(mp, weights, one(prompt[0]!), exec);
    }

    // Prefill: the whole prompt at once (parallel, chunkwise) or token by token (recurrent).
    const t0 = performance.now();
    let state: ModelState | undefined;
    let logits: HostValue;
    if (!prefill) {
      let last: HostValue | undefined;
      for (const id of prompt) {
        const r = await runModelPlan(step, weights, one(id), exec, state);
        last = r.outputs.get('logits')!;
        state = r.state;
      }
      logits = last!;
    } else {
      const r = await runModelPlan(prefill, weights, new Map([['tokens', { shape: [1, prompt.length], data: prompt }]]), exec);
      logits = r.outputs.get('logits')!;
      state = r.state;
    }
    const t1 = performance.now();

    // Decode: sample from the last logits, feed the sample back one token at a time.
    const rng = new Rng(opts.seed ?? 0);
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const id = sampleToken(lastRow(logits), sampler, rng);
      out.push(id);
      await onToken?.(id);
      if (i === n - 1) break;
      const r = await runModelPlan(step, weights, one(id), exec, state);
      logits = r.outputs.get('logits')!;
      state = r.state;
    }
    const t2 = performance.now();
    const prefillSeconds = (t1 - t0) / 1000;
    const decodeSeconds = (t2 - t1) / 1000;
    const result: GenerateResult = {
      tokens: out,
      prefillTokens: prompt.length, prefillSeconds, prefillTokensPerS: prompt.length / Math.max(prefillSeconds, 1e-9),
      decodeTokens: n - 1, decodeSeconds, decodeTokensPerS: n > 1 ? (n - 1) / Math.max(decodeSeconds, 1e-9) : 0,
      warmupSeconds: (t0 - tw) / 1000,
      mode, chunk,
    };
    if (target) result.target = target;
    return result;
  } finally {
    await release();
  }
}

const rate = (x: number): string => (x >= 100 ? x.toFixed(0) : x.toPrecision(3));
const plural = (n: number): string => `${n} token${n === 1 ? '' : 's'}`;

/**
 * One line of what a generation took: `prefill: 9 tokens in 0.006 s, 1530 tokens/s (chunkwise,
 * chunk 64); decode: 19 tokens in 0.149 s, 127 tokens/s; target webgpu (warm-up 4.926 s)`.
 */
export function speedLine(r: GenerateResult): string {
  return `prefill: ${plural(r.prefillTokens)} in ${r.prefillSeconds.toFixed(3)} s, ${rate(r.prefillTokensPerS)} tokens/s (${r.mode}${r.mode === 'recurrent' ? '' : `, chunk ${r.chunk}`}); `
    + `decode: ${plural(r.decodeTokens)} in ${r.decodeSeconds.toFixed(3)} s, ${rate(r.decodeTokensPerS)} tokens/s${r.target ? `; target ${r.target}` : ''} (warm-up ${r.warmupSeconds.toFixed(3)} s)`;
}

// ---- byte-level text ----------------------------------------------------------------------------

/** The vocabulary of byte-level checkpoints (what `retnetc train` writes): one token per UTF-8 byte. */
export const BYTE_VOCAB = 256;

/** The UTF-8 bytes of `text` as token ids. */
export const bytesOfText = (text: string): Int32Array => Int32Array.from(new TextEncoder().encode(text));

/**
 * Byte tokens to text as they come: a multi-byte character split across tokens is held back until
 * its last byte arrives (TextDecoder with stream: true); bytes that are not UTF-8 become U+FFFD.
 */
export class ByteText {
  private readonly decoder = new TextDecoder('utf-8', { fatal: false });

  /** The text that `id` completes ('' while a character is incomplete). */
  push(id: number): string {
    if (!(Number.isInteger(id) && id >= 0 && id < BYTE_VOCAB)) throw new RangeError(`token ${id} is not a byte`);
    return this.decoder.decode(Uint8Array.of(id), { stream: true });
  }

  /** What an unfinished character at the end leaves (U+FFFD), and a fresh start. */
  end(): string {
    return this.decoder.decode();
  }
}
