// A training checkpoint is a directory of three files (runtime/io/checkpoint-path.ts names them):
//   model.safetensors      the weights, f32, under torchscale's names, with metadata `config` (the
//                          RetNetConfig JSON), `format: retnetc-checkpoint` and `step`: exactly
//                          the torchscale fixture format, so `retnetc logits` reads it as it is;
//   optimizer.safetensors  the optimizer state (AdamW moments) with metadata `step`;
//   trainer.json           the step, the options, the model, the data and RNG positions, a version.
// Writing is atomic as a set: all three go to temporary files in DIR, each written and fsynced,
// before any is renamed; a failed write (disk full) removes the temporaries and leaves the files
// of the previous checkpoint as they were. trainer.json is renamed last and records the step the
// other two belong to; the reader checks each file's step against it, so a set torn by a crash
// between the renames is refused rather than mixed.
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { MODEL_FILE, OPTIMIZER_FILE, TRAINER_FILE } from '../io/checkpoint-path.js';
import { fsReason } from '../io/fs-reason.js';
import { readSafetensorsFile, SafetensorsError, serializeSafetensors, type Tensor } from '../io/safetensors.js';
import { hypersToConfig, loadTorchscale, TorchscaleError } from '../io/torchscale.js';
import type { CheckedModel } from '../../dsl/checked.js';

/** The `format` metadata of a trainer checkpoint's weights and the version of trainer.json. */
export const CHECKPOINT_FORMAT = 'retnetc-checkpoint';
export const TRAINER_FORMAT = 'retnetc-trainer';
export const TRAINER_VERSION = 1;

/** A directory that is not a usable checkpoint: one line (without the directory, which the caller says). */
export class CheckpointError extends Error {
  override readonly name = 'CheckpointError';
}

/** A checkpoint that could not be written; the previous one is intact. One line. */
export class CheckpointWriteError extends Error {
  override readonly name = 'CheckpointWriteError';
}

/** What trainer.json holds (beyond format, version and step the trainer decides the fields). */
export interface TrainerJson {
  format: typeof TRAINER_FORMAT;
  version: number;
  step: number;
  [key: string]: unknown;
}

export interface CheckpointContents {
  step: number;
  model: CheckedModel;
  /** Weights by torchscale name, f32. */
  weights: Map<string, { shape: number[]; data: Float32Array }>;
  optimizer: { tensors: Map<string, Tensor>; metadata: Record<string, string> };
  trainer: TrainerJson;
}

/** The file operations a save uses (a test swaps in one that fails, as a full disk does). */
export interface CheckpointIo {
  /** Creates `file` (exclusively), writes `bytes` and fsyncs it. */
  writeDurable(file: string, bytes: Uint8Array): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  unlink(file: string): Promise<void>;
  /** fsyncs a directory, so the renames in it are durable (a no-op where directories cannot be opened). */
  syncDir(dir: string): Promise<void>;
}

export const realIo: CheckpointIo = {
  async writeDurable(file, bytes) {
    const fh = await fsp.open(file, 'wx');
    try {
      await fh.writeFile(bytes);
      await fh.sync();
    } finally {
      await fh.close();
    }
  },
  rename: (a, b) => fsp.rename(a, b),
  unlink: (f) => fsp.unlink(f),
  async syncDir(dir) {
    let fh;
    try { fh = await fsp.open(dir, 'r'); } catch { return; }
    try { await fh.sync(); } catch { /* some filesystems refuse fsync on directories */ } finally { await fh.close(); }
  },
};

/** True when `dir` holds any file of a checkpoint. */
export function holdsCheckpoint(dir: string): boolean {
  return [MODEL_FILE, OPTIMIZER_FILE, TRAINER_FILE].some((f) => fs.existsSync(path.join(dir, f)));
}

/** The weights file's tensors and metadata for `model` at `step`. */
export function modelFileBytes(model: CheckedModel, weights: ReadonlyMap<string, { shape: number[]; data: Float32Array }>, step: number): Uint8Array {
  const tensors = new Map<string, Tensor>();
  for (const [name, w] of weights) tensors.set(name, { dtype: 'F32', shape: [...w.shape], data: w.data });
  return serializeSafetensors(tensors, { config: JSON.stringify(hypersToConfig(model.hypers)), format: CHECKPOINT_FORMAT, step: String(step) });
}

/**
 * Writes a checkpoint into `dir` atomically as a set (see the file's head). Throws
 * CheckpointWriteError naming the file that failed; the previous checkpoint is then intact.
 */
export async function saveCheckpoint(dir: string, ck: Omit<CheckpointContents, 'model'> & { model: CheckedModel }, io: CheckpointIo = realIo): Promise<void> {
  if (ck.trainer.step !== ck.step) throw new Error(`internal: trainer.json says step ${ck.trainer.step}, the checkpoint ${ck.step}`);
  const files: [string, Uint8Array][] = [
    [MODEL_FILE, modelFileBytes(ck.model, ck.weights, ck.step)],
    [OPTIMIZER_FILE, serializeSafetensors(ck.optimizer.tensors, { ...ck.optimizer.metadata, format: CHECKPOINT_FORMAT, step: String(ck.step) })],
    [TRAINER_FILE, new TextEncoder().encode(JSON.stringify(ck.trainer, null, 1) + '\n')],
  ];
  const tag = `${process.pid}.${randomBytes(4).toString('hex')}`;
  const temps: string[] = [];
  try {
    for (const [name, bytes] of files) {
      const tmp = path.join(dir, `.${name}.${tag}.tmp`);
      try {
        temps.push(tmp);
        await io.writeDurable(tmp, bytes);
      } catch (e) {
        throw new CheckpointWriteError(`cannot write ${path.join(dir, name)}: ${fsReason(e)}`);
      }
    }
    // Every file is on disk: now the renames, trainer.json (which names the step) last.
    for (const [i, [name]] of files.entries()) {
      try {
        await io.rename(temps[i]!, path.join(dir, name));
      } catch (e) {
        throw new CheckpointWriteError(`cannot rename into ${path.join(dir, name)}: ${fsReason(e)}`);
      }
      temps[i] = '';
    }
    await io.syncDir(dir);
  } finally {
    for (const t of temps) if (t) await io.unlink(t).catch(() => {});
  }
}

const oneLine = (s: string): string => s.split('\n')[0]!.trim();

/** Reads trainer.json of `dir` (the cheap part: options and step), or a CheckpointError. */
export function readTrainerJson(dir: string): TrainerJson {
  let st: fs.Stats;
  try { st = fs.statSync(dir); } catch { throw new CheckpointError('no such directory'); }
  if (!st.isDirectory()) throw new CheckpointError(`is not a directory, so not a checkpoint of 'retnetc train' (give the --out directory of a training run)`);
  const f = path.join(dir, TRAINER_FILE);
  if (!fs.existsSync(f)) throw new CheckpointError(`has no ${TRAINER_FILE}, so it is not a checkpoint of 'retnetc train' (give the --out directory of a training run)`);
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(f, 'utf8'));
  } catch (e) {
    throw new CheckpointError(`${TRAINER_FILE} is corrupt (${e instanceof SyntaxError ? `not JSON: ${oneLine(e.message)}` : fsReason(e)})`);
  }
  const t = json as Partial<TrainerJson> | null;
  if (!t || typeof t !== 'object' || t.format !== TRAINER_FORMAT) throw new CheckpointError(`${TRAINER_FILE} is not a retnetc trainer state (no "format": "${TRAINER_FORMAT}")`);
  if (t.version !== TRAINER_VERSION) throw new CheckpointError(`${TRAINER_FILE} has version ${JSON.stringify(t.version)}; this retnetc reads version ${TRAINER_VERSION}`);
  if (!Number.isSafeInteger(t.step) || t.step! < 0) throw new CheckpointError(`${TRAINER_FILE} is corrupt: step ${JSON.stringify(t.step)} is not a count of steps`);
  return t as TrainerJson;
}

/** Reads and cross-checks a whole checkpoint directory; every problem is one CheckpointError line. */
export async function loadCheckpoint(dir: string): Promise<CheckpointContents> {
  const trainer = readTrainerJson(dir);
  const step = trainer.step;
  const mf = path.join(dir, MODEL_FILE);
  const of = path.join(dir, OPTIMIZER_FILE);
  for (const f of [MODEL_FILE, OPTIMIZER_FILE]) {
    if (!fs.existsSync(path.join(dir, f))) throw new CheckpointError(`has ${TRAINER_FILE} but no ${f}: the checkpoint is incomplete`);
  }
  let ts;
  try {
    ts = await loadTorchscale(mf);
  } catch (e) {
    if (e instanceof TorchscaleError) throw new CheckpointError(`${MODEL_FILE} is corrupt: ${oneLine(e.message)}`);
    throw e;
  }
  if (ts.metadata['format'] !== CHECKPOINT_FORMAT) throw new CheckpointError(`${MODEL_FILE} was not written by 'retnetc train' (no format: ${CHECKPOINT_FORMAT} in its metadata)`);
  const check = (file: string, s: string | undefined): void => {
    if (s !== String(step)) throw new CheckpointError(`${file} is of step ${s ?? '(none)'} but ${TRAINER_FILE} of step ${step}: the checkpoint is inconsistent (a save was cut short)`);
  };
  check(MODEL_FILE, ts.metadata['step']);
  let opt;
  try {
    opt = await readSafetensorsFile(of);
  } catch (e) {
    if (e instanceof SafetensorsError) throw new CheckpointError(`${OPTIMIZER_FILE} is corrupt: ${oneLine(e.message.replace(`${of}: `, ''))}`);
    throw e;
  }
  check(OPTIMIZER_FILE, opt.metadata['step']);
  const weights = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, t] of ts.tensors) {
    if (t.dtype !== 'F32') throw new CheckpointError(`${MODEL_FILE}: weight '${name}' is ${t.dtype.toLowerCase()}, a trainer checkpoint holds f32`);
    weights.set(name, { shape: [...t.shape], data: t.data as Float32Array });
  }
  return { step, model: ts.model, weights, optimizer: { tensors: opt.tensors, metadata: opt.metadata }, trainer };
}
