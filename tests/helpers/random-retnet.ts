// A small retnet (models/retnet.ret) with seeded random weights, and its checkpoint in the
// layout `retnetc train` writes (DIR/model.safetensors: torchscale names, f32, the config JSON in
// the metadata), for the generate and export tests. Independent of the trainer's initialisation
// (runtime/train/init.ts): norms near 1, matrices scaled by 1/sqrt(fan-in).
import { mkdirSync } from 'node:fs';
import * as path from 'node:path';
import type { CheckedModel } from '../../dsl/checked.js';
import { instantiateModel, loadProgram } from '../../dsl/program.js';
import { boundWeights } from '../../compiler/model-split.js';
import { modelProgram } from '../../compiler/pipeline.js';
import type { HostValue } from '../../runtime/model-runner.js';
import { fromFloat64, writeSafetensorsFile } from '../../runtime/io/safetensors.js';
import { hypersToConfig } from '../../runtime/io/torchscale.js';
import { MODEL_FILE } from '../../runtime/io/checkpoint-path.js';
import { prng } from './harness.js';

export const SMALL_HYPERS = { embed_dim: 16, value_dim: 16, heads: 2, ffn_dim: 24, n_layers: 2, vocab: 256, act: 'swish', scale_embedding: 0, layernorm_embedding: 0 };

/** The model and float32-exact weights (as float64) of a seeded random retnet. */
export function randomRetnet(seed: number, hypers: Record<string, number | string> = SMALL_HYPERS): { model: CheckedModel; weights: Map<string, HostValue> } {
  const model = instantiateModel(loadProgram('models/retnet.ret'), 'retnet', 'default', hypers);
  const rand = prng(seed);
  const weights = new Map<string, HostValue>();
  for (const name of boundWeights(modelProgram(model)).keys()) {
    const shape = model.weights.find((w) => w.name === name)!.shape;
    const n = shape.reduce((a, b) => a * b, 1);
    const scale = shape.length === 2 ? 2 / Math.sqrt(shape[1]!) : 0.1;
    const base = shape.length === 2 ? 0 : 1;
    // Rounded to float32, so a checkpoint holds exactly these values.
    weights.set(name, { shape, data: Float64Array.from(Float32Array.from({ length: n }, () => base + scale * (rand() * 2 - 1))) });
  }
  return { model, weights };
}

/** Writes DIR/model.safetensors for the model and weights; returns DIR. */
export async function writeCheckpointDir(dir: string, model: CheckedModel, weights: ReadonlyMap<string, HostValue>): Promise<string> {
  mkdirSync(dir, { recursive: true });
  const tensors = new Map([...weights].map(([k, v]) => [k, fromFloat64(v.data, v.shape, 'F32')] as const));
  await writeSafetensorsFile(path.join(dir, MODEL_FILE), tensors, { config: JSON.stringify(hypersToConfig(model.hypers)) });
  return dir;
}
