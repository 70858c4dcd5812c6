// runtime/train/checkpoint.ts: the three files of a checkpoint directory, written atomically as a
// set (a failed write, as on a full disk, leaves the previous checkpoint byte for byte), the weights
// file in torchscale's format, and the reader's one-line refusals of torn, truncated and foreign
// directories.
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, test } from 'vitest';
import { MODEL_FILE, OPTIMIZER_FILE, TRAINER_FILE } from '../runtime/io/checkpoint-path.js';
import { loadTorchscale } from '../runtime/io/torchscale.js';
import type { Tensor } from '../runtime/io/safetensors.js';
import { CheckpointError, type CheckpointIo, CheckpointWriteError, holdsCheckpoint, loadCheckpoint, realIo, saveCheckpoint, TRAINER_FORMAT, TRAINER_VERSION } from '../runtime/train/checkpoint.js';
import { initWeights } from '../runtime/train/init.js';
import { byteModel } from '../runtime/train/trainer.js';

const model = byteModel('tiny');
const fresh = (): string => mkdtempSync(path.join(os.tmpdir(), 'retnetc-ck-'));

function contents(step: number, seed: number) {
  const weights = initWeights(model, seed);
  const n = [...weights.values()].reduce((a, w) => a + w.data.length, 0);
  const optimizer = {
    tensors: new Map<string, Tensor>([
      ['adamw.m', { dtype: 'F32', shape: [n], data: new Float32Array(n).fill(seed) }],
      ['adamw.t', { dtype: 'I32', shape: [1], data: Int32Array.of(step) }],
    ]),
    metadata: {},
  };
  return { step, model, weights, optimizer, trainer: { format: TRAINER_FORMAT, version: TRAINER_VERSION, step, note: `seed ${seed}` } as const };
}

const snapshot = (dir: string): Record<string, string> => Object.fromEntries(readdirSync(dir).sort().map((f) => [f, readFileSync(path.join(dir, f)).toString('base64')]));

describe('saving and loading', () => {
  test('round trip: weights, optimizer state and trainer.json; no temporary files left', async () => {
    const dir = fresh();
    expect(holdsCheckpoint(dir)).toBe(false);
    const c = contents(12, 1);
    await saveCheckpoint(dir, c);
    expect(readdirSync(dir).sort()).toEqual([MODEL_FILE, OPTIMIZER_FILE, TRAINER_FILE].sort());
    expect(holdsCheckpoint(dir)).toBe(true);
    const back = await loadCheckpoint(dir);
    expect(back.step).toBe(12);
    expect(back.trainer['note']).toBe('seed 1');
    for (const [k, w] of c.weights) expect(back.weights.get(k)!.data).toEqual(w.data);
    expect(back.optimizer.tensors.get('adamw.m')!.data).toEqual(c.optimizer.tensors.get('adamw.m')!.data);
    expect(Array.from(back.optimizer.tensors.get('adamw.t')!.data as Int32Array)).toEqual([12]);
    expect(back.model.hypers).toEqual(model.hypers);
  });

  test('model.safetensors is a torchscale file: config in the metadata, read by loadTorchscale as it is', async () => {
    const dir = fresh();
    await saveCheckpoint(dir, contents(3, 2));
    const ts = await loadTorchscale(path.join(dir, MODEL_FILE));
    expect(ts.metadata['format']).toBe('retnetc-checkpoint');
    expect(ts.metadata['step']).toBe('3');
    expect(JSON.parse(ts.metadata['config']!)).toMatchObject({ decoder_embed_dim: 64, decoder_layers: 2, vocab_size: 256, activation_fn: 'swish' });
    expect(ts.model.hypers).toEqual(model.hypers);
    expect(ts.tensors.get('layers.1.retention.out_proj.weight')!.dtype).toBe('F32');
  });

  test.each([MODEL_FILE, OPTIMIZER_FILE, TRAINER_FILE])('a failed write of %s (disk full) leaves the previous checkpoint as it was', async (failing) => {
    const dir = fresh();
    await saveCheckpoint(dir, contents(5, 1));
    const before = snapshot(dir);
    const io: CheckpointIo = {
      ...realIo,
      async writeDurable(file, bytes) {
        if (path.basename(file).startsWith(`.${failing}.`)) {
          writeFileSync(file, bytes.subarray(0, 100)); // part of it made it to disk
          throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
        }
        return realIo.writeDurable(file, bytes);
      },
    };
    const err = await saveCheckpoint(dir, contents(10, 2), io).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CheckpointWriteError);
    expect((err as Error).message).toBe(`cannot write ${path.join(dir, failing)}: no space left on device`);
    expect(snapshot(dir)).toEqual(before);
    expect((await loadCheckpoint(dir)).step).toBe(5);
  });
});

describe('refusals, one line each', () => {
  const refuse = async (dir: string, re: RegExp): Promise<void> => {
    const e = await loadCheckpoint(dir).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(CheckpointError);
    expect((e as Error).message).toMatch(re);
    expect((e as Error).message).not.toContain('\n');
  };

  test('no directory, a file, a directory without trainer.json', async () => {
    const dir = fresh();
    await refuse(path.join(dir, 'nope'), /no such directory/);
    writeFileSync(path.join(dir, 'f.txt'), 'x');
    await refuse(path.join(dir, 'f.txt'), /is not a directory, so not a checkpoint/);
    await refuse(dir, /has no trainer\.json, so it is not a checkpoint of 'retnetc train'/);
  });

  test('trainer.json that is not JSON, of another format or version', async () => {
    const dir = fresh();
    await saveCheckpoint(dir, contents(4, 1));
    const f = path.join(dir, TRAINER_FILE);
    const good = readFileSync(f, 'utf8');
    writeFileSync(f, good.slice(0, 30));
    await refuse(dir, /trainer\.json is corrupt \(not JSON/);
    writeFileSync(f, JSON.stringify({ format: 'something', step: 4 }));
    await refuse(dir, /is not a retnetc trainer state/);
    writeFileSync(f, JSON.stringify({ ...JSON.parse(good), version: 99 }));
    await refuse(dir, /has version 99; this retnetc reads version 1/);
  });

  test('a truncated or missing weights or optimizer file', async () => {
    const dir = fresh();
    await saveCheckpoint(dir, contents(4, 1));
    const m = path.join(dir, MODEL_FILE);
    const bytes = readFileSync(m);
    writeFileSync(m, bytes.subarray(0, bytes.length - 1000));
    await refuse(dir, /^model\.safetensors is corrupt: /);
    writeFileSync(m, bytes);
    const o = path.join(dir, OPTIMIZER_FILE);
    writeFileSync(o, readFileSync(o).subarray(0, 20));
    await refuse(dir, /^optimizer\.safetensors is corrupt: /);
    const d2 = fresh();
    await saveCheckpoint(d2, contents(4, 1));
    (await import('node:fs')).unlinkSync(path.join(d2, OPTIMIZER_FILE));
    await refuse(d2, /has trainer\.json but no optimizer\.safetensors: the checkpoint is incomplete/);
  });

  test('a set torn between renames (files of different steps) is refused, not mixed', async () => {
    const a = fresh();
    const b = fresh();
    await saveCheckpoint(a, contents(4, 1));
    await saveCheckpoint(b, contents(8, 2));
    writeFileSync(path.join(a, MODEL_FILE), readFileSync(path.join(b, MODEL_FILE)));
    await refuse(a, /model\.safetensors is of step 8 but trainer\.json of step 4: the checkpoint is inconsistent/);
  });

  const fixture = path.resolve(import.meta.dirname, '../../shared/fixtures/torchscale/retnet-tiny.safetensors');
  test.skipIf(!existsSync(fixture))('a torchscale file that retnetc train did not write', async () => {
    const dir = fresh();
    await saveCheckpoint(dir, contents(4, 1));
    writeFileSync(path.join(dir, MODEL_FILE), readFileSync(fixture));
    await refuse(dir, /was not written by 'retnetc train'/);
  });
});
