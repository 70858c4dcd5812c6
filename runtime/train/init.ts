// Fresh weights from the initialisers a model declares (`weight W: f32[...] ~ normal(0, 0.1)`;
// dsl/builtins.ts INITIALISERS): zeros, ones, normal(mean, std), uniform(low, high) and
// xavier_uniform(gain) on a matrix stored as nn.Linear stores it, [out, in], as torch computes
// it (bound gain * sqrt(6 / (fan_in + fan_out)); fan_in = shape[1] * receptive field, fan_out =
// shape[0] * receptive field). Each weight draws from its own stream, forked by name from the
// seed, so a weight's values depend on the seed and its name only, not on declaration order.
import type { CheckedModel, CWeight } from '../../dsl/checked.js';
import { Rng } from './rng.js';

export class InitError extends Error {
  override readonly name = 'InitError';
}

const numel = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);

/** torch.nn.init._calculate_fan_in_and_fan_out for a weight of `shape`. */
export function fans(shape: readonly number[]): { fanIn: number; fanOut: number } {
  if (shape.length < 2) throw new InitError(`xavier_uniform needs a weight of rank 2 or more (torch's fan in and out), got [${shape.join(', ')}]`);
  const receptive = numel(shape.slice(2));
  return { fanIn: shape[1]! * receptive, fanOut: shape[0]! * receptive };
}

/** One weight's initial values (float32) from its initialiser, drawn from `rng`. */
export function initWeight(w: Pick<CWeight, 'name' | 'shape' | 'init'>, rng: Rng): Float32Array {
  const n = numel(w.shape);
  const out = new Float32Array(n);
  const [a = 0, b = 0] = w.init.args;
  switch (w.init.name) {
    case 'zeros':
      return out;
    case 'ones':
      return out.fill(1);
    case 'normal':
      for (let i = 0; i < n; i++) out[i] = a + b * rng.normal();
      return out;
    case 'uniform':
      for (let i = 0; i < n; i++) out[i] = a + (b - a) * rng.uniform();
      return out;
    case 'xavier_uniform': {
      const gain = w.init.args.length ? a : 1;
      const { fanIn, fanOut } = fans(w.shape);
      const bound = gain * Math.sqrt(6 / (fanIn + fanOut));
      for (let i = 0; i < n; i++) out[i] = bound * (2 * rng.uniform() - 1);
      return out;
    }
    default:
      throw new InitError(`weight '${w.name}': unknown initialiser '${w.init.name}'`);
  }
}

/** Every weight of `model`, by full name, initialised from `seed`. */
export function initWeights(model: CheckedModel, seed: number): Map<string, { shape: number[]; data: Float32Array }> {
  const root = new Rng(seed).fork('init');
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const w of model.weights) out.set(w.name, { shape: [...w.shape], data: initWeight(w, root.fork(w.name)) });
  return out;
}
