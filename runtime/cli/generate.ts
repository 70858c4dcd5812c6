// retnetc generate: text from a checkpoint (a `retnetc train` directory or a torchscale
// .safetensors file). The prompt is prefilled with the stateful form (--mode: chunkwise by
// default, parallel, or recurrent token by token), then tokens are decoded one at a time from the
// returned state and sampled (runtime/generate). The continuation streams to stdout as it comes
// (bytes as UTF-8 text for byte-level checkpoints; token ids otherwise); prefill and decode
// tokens/s go to stderr at the end (after a warm-up run of each plan, which compiles the kernels).
import { ScheduleError } from '../../compiler/plan.js';
import { MAX_CHUNK } from '../../compiler/schedule.js';
import { RunError } from '../../dsl/reference/interpreter.js';
import { type Mode, MODES } from '../exec.js';
import { deviceError, EXEC_TARGETS } from '../targets.js';
import { readCheckpoint } from './common.js';
import { BYTE_VOCAB, ByteText, bytesOfText, defaultTarget, generate, GenerateError, speedLine, vocabOf } from '../generate/generate.js';
import { SamplingError } from '../generate/sampler.js';
import { didYouMean, fail, type OptionSpecs, parseInteger, parseOptions, str, UsageError } from './options.js';

export const GENERATE_OPTIONS: OptionSpecs = {
  checkpoint: { type: 'string', value: 'PATH' },
  prompt: { type: 'string', value: 'TEXT' },
  'prompt-tokens': { type: 'string', value: 'ID,ID,...' },
  tokens: { type: 'string', value: 'N' },
  temperature: { type: 'string', value: 'X' },
  'top-k': { type: 'string', value: 'K' },
  'top-p': { type: 'string', value: 'P' },
  seed: { type: 'string', value: 'S' },
  mode: { type: 'string', value: MODES.join('|') },
  target: { type: 'string', value: EXEC_TARGETS.join('|') },
  chunk: { type: 'string', value: 'N' },
};

export const DEFAULT_TOKENS = 200;
export const DEFAULT_TEMPERATURE = 0.8;
const MAX_TOKENS = 1_000_000;

/** A decimal number (digits, an optional fraction and exponent; no sign, no hex, no Infinity). */
function parseDecimal(what: string, text: string): number {
  if (!/^(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$/.test(text)) throw new UsageError(`${what} must be a decimal number, got '${text}'`);
  const x = Number(text);
  if (!Number.isFinite(x)) throw new UsageError(`${what} must be a finite number, got '${text}'`);
  return x;
}

/** --prompt-tokens 1,2,3: ids in [0, vocab). */
function parseIds(text: string, vocab: number): number[] {
  const parts = text.split(',').map((s) => s.trim());
  if (parts.length === 1 && parts[0] === '') throw new UsageError('--prompt-tokens is empty: give at least one token id');
  return parts.map((p, i) => {
    if (!/^[0-9]+$/.test(p)) throw new UsageError(`--prompt-tokens: item ${i} '${p}' is not a token id (decimal digits, comma separated)`);
    const id = Number(p);
    if (id >= vocab) throw new UsageError(`--prompt-tokens: item ${i} is ${p}, outside the vocabulary [0, ${vocab})`);
    return id;
  });
}

export async function cmdGenerate(args: string[]): Promise<number> {
  const o = parseOptions('generate', args, GENERATE_OPTIONS);
  if (o.positionals.length) throw new UsageError(`unexpected argument '${o.positionals[0]}' (generate takes options only; retnetc generate --help for the usage)`);
  const ckPath = str(o, 'checkpoint');
  if (!ckPath) throw new UsageError('--checkpoint PATH is required (a checkpoint directory written by retnetc train, or a .safetensors file)');
  const promptText = str(o, 'prompt');
  const promptIds = str(o, 'prompt-tokens');
  if (promptText === undefined && promptIds === undefined) throw new UsageError('--prompt TEXT is required (or --prompt-tokens ID,ID,... for a checkpoint whose tokens are not bytes)');
  if (promptText !== undefined && promptIds !== undefined) throw new UsageError('--prompt and --prompt-tokens are both given: give one');
  if (promptText === '') throw new UsageError('--prompt is empty: give some text to continue');
  const n = str(o, 'tokens') === undefined ? DEFAULT_TOKENS : parseInteger('--tokens', str(o, 'tokens')!, 1, MAX_TOKENS);
  const temperature = str(o, 'temperature') === undefined ? DEFAULT_TEMPERATURE : parseDecimal('--temperature', str(o, 'temperature')!);
  if (temperature > 100) throw new UsageError(`--temperature must be from 0 (greedy) to 100, got ${str(o, 'temperature')}`);
  const topK = str(o, 'top-k') === undefined ? undefined : parseInteger('--top-k', str(o, 'top-k')!, 1, 2 ** 31 - 1);
  const topP = str(o, 'top-p') === undefined ? undefined : parseDecimal('--top-p', str(o, 'top-p')!);
  if (topP !== undefined && !(topP > 0 && topP <= 1)) throw new UsageError(`--top-p must be in (0, 1], got ${str(o, 'top-p')}`);
  const seed = str(o, 'seed') === undefined ? 0 : parseInteger('--seed', str(o, 'seed')!, 0, Number.MAX_SAFE_INTEGER);
  const modeText = str(o, 'mode') ?? 'chunkwise';
  if (!(MODES as readonly string[]).includes(modeText)) throw new UsageError(`unknown mode '${modeText}' (expected ${MODES.join(', ')})${didYouMean(modeText, MODES)}`);
  const mode = modeText as Mode;
  const chunkText = str(o, 'chunk');
  if (chunkText !== undefined && mode === 'recurrent') throw new UsageError('--chunk does not apply to --mode recurrent: it prefills one token at a time (--chunk sets the chunk of chunkwise and the tile of parallel)');
  const chunk = chunkText === undefined ? undefined : parseInteger('--chunk', chunkText, 1, MAX_CHUNK);
  const targetText = str(o, 'target');
  if (targetText !== undefined && !EXEC_TARGETS.includes(targetText)) throw new UsageError(`unknown target '${targetText}' (expected ${EXEC_TARGETS.join(', ')})${didYouMean(targetText, EXEC_TARGETS)}`);

  const read = await readCheckpoint(ckPath);
  if (typeof read === 'number') return read;
  const { ck } = read;
  const vocab = vocabOf(ck.model);
  const bytes = vocab === BYTE_VOCAB;
  let prompt: number[];
  if (promptText !== undefined) {
    if (!bytes) return fail(ckPath, `its vocabulary has ${vocab} tokens, not the ${BYTE_VOCAB} bytes of a byte-level model, so a text prompt has no tokens; give token ids with --prompt-tokens ID,ID,...`);
    prompt = Array.from(bytesOfText(promptText));
  } else {
    prompt = parseIds(promptIds!, vocab);
  }

  const target = targetText ?? await defaultTarget();
  // Bytes become text as they complete a character; other vocabularies print ids.
  const text = bytes && promptIds === undefined ? new ByteText() : undefined;
  let first = true;
  const out = (s: string): void => { if (s) process.stdout.write(s); };
  let r;
  try {
    const opts = { model: ck.model, weights: ck.weights, prompt, tokens: n, temperature, seed, mode, target, chunk, ...(topK !== undefined ? { topK } : {}), ...(topP !== undefined ? { topP } : {}) };
    r = await generate(opts, (id) => {
      if (text) out(text.push(id));
      else { out(`${first ? '' : ' '}${id}`); first = false; }
    });
  } catch (e) {
    if (text) out(text.end());
    const device = deviceError(e);
    if (device) return fail('retnetc', device);
    if (e instanceof GenerateError || e instanceof SamplingError) return fail(ckPath, e.message);
    if (e instanceof RunError) return fail(ckPath, e.message.split('\n')[0]!);
    if (e instanceof ScheduleError) return fail(ckPath, `--mode ${mode}: ${e.message.split('\n')[0]}`);
    throw e;
  }
  if (text) out(text.end());
  if (!text || process.stdout.isTTY) out('\n');
  process.stderr.write(speedLine(r) + '\n');
  return 0;
}
