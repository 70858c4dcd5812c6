// Where a checkpoint's weights are: `retnetc train --out DIR` writes a directory (weights in
// DIR/model.safetensors, torchscale's names and config; optimizer and trainer state beside
// them); every command that reads weights takes either that directory or a .safetensors file.
import fs from 'node:fs';
import path from 'node:path';

/** The weights file inside a training checkpoint directory. */
export const MODEL_FILE = 'model.safetensors';
/** The optimizer state (AdamW moments) inside a training checkpoint directory. */
export const OPTIMIZER_FILE = 'optimizer.safetensors';
/** The trainer state (step, RNG, data position, options) inside a training checkpoint directory. */
export const TRAINER_FILE = 'trainer.json';

export class CheckpointPathError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CheckpointPathError';
  }
}

/** The weights file `p` names: p itself, or p/model.safetensors when p is a directory. */
export function weightsFile(p: string): string {
  let st: fs.Stats;
  try {
    st = fs.statSync(p);
  } catch {
    throw new CheckpointPathError(`${p}: no such file or directory`);
  }
  if (!st.isDirectory()) return p;
  const f = path.join(p, MODEL_FILE);
  if (!fs.existsSync(f)) throw new CheckpointPathError(`${p}: a directory without ${MODEL_FILE}, so not a retnetc checkpoint (give a checkpoint directory written by 'retnetc train' or a .safetensors file)`);
  return f;
}
