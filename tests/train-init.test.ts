// runtime/train/init.ts and lr-schedule.ts: weights from the declared initialisers (seeded, by
// name), xavier_uniform as torch computes it on [out, in]; warm-up then cosine to a floor.
import { describe, expect, test } from 'vitest';
import { byteModel } from '../runtime/train/trainer.js';
import { fans, initWeight, initWeights } from '../runtime/train/init.js';
import { defaultWarmup, lrAt } from '../runtime/train/lr-schedule.js';
import { Rng } from '../runtime/train/rng.js';

const stats = (d: Float32Array): { mean: number; std: number; min: number; max: number } => {
  let s = 0, s2 = 0, min = Infinity, max = -Infinity;
  for (const x of d) { s += x; s2 += x * x; min = Math.min(min, x); max = Math.max(max, x); }
  const mean = s / d.length;
  return { mean, std: Math.sqrt(s2 / d.length - mean * mean), min, max };
};

describe('initialisers', () => {
  test('zeros, ones, normal(mean, std), uniform(lo, hi)', () => {
    const w = (name: string, args: number[]) => initWeight({ name: 'w', shape: [200, 100], init: { name, args } }, new Rng(1));
    expect(w('zeros', []).every((x) => x === 0)).toBe(true);
    expect(w('ones', []).every((x) => x === 1)).toBe(true);
    const n = stats(w('normal', [0.5, 0.02]));
    expect(Math.abs(n.mean - 0.5)).toBeLessThan(0.001);
    expect(Math.abs(n.std / 0.02 - 1)).toBeLessThan(0.02);
    const u = stats(w('uniform', [-3, 1]));
    expect(u.min).toBeGreaterThanOrEqual(-3);
    expect(u.max).toBeLessThan(1);
    expect(Math.abs(u.mean + 1)).toBeLessThan(0.02);
  });

  test('xavier_uniform(gain): bound gain * sqrt(6 / (fan_in + fan_out)) with fan_in = shape[1] ([out, in] as nn.Linear)', () => {
    expect(fans([128, 64])).toEqual({ fanIn: 64, fanOut: 128 });
    expect(fans([8, 4, 3, 3])).toEqual({ fanIn: 36, fanOut: 72 });
    expect(() => fans([5])).toThrow(/rank 2/);
    const gain = 2 ** -2.5;
    const d = initWeight({ name: 'w', shape: [128, 64], init: { name: 'xavier_uniform', args: [gain] } }, new Rng(3));
    const bound = gain * Math.sqrt(6 / 192);
    const s = stats(d);
    expect(s.max).toBeLessThanOrEqual(bound);
    expect(s.min).toBeGreaterThanOrEqual(-bound);
    expect(s.max).toBeGreaterThan(0.99 * bound);
    // A uniform on [-b, b] has std b / sqrt(3).
    expect(Math.abs(s.std / (bound / Math.sqrt(3)) - 1)).toBeLessThan(0.02);
    const noGain = stats(initWeight({ name: 'w', shape: [128, 64], init: { name: 'xavier_uniform', args: [] } }, new Rng(3)));
    expect(noGain.max).toBeGreaterThan(0.99 * Math.sqrt(6 / 192));
  });

  test('the byte RetNet: every declared weight, seeded, each by its own name', () => {
    const model = byteModel('tiny');
    const a = initWeights(model, 7);
    expect([...a.keys()]).toEqual(model.weights.map((w) => w.name));
    expect(a.get('embed_tokens.weight')!.shape).toEqual([256, 64]);
    expect(a.get('layers.0.retention_layer_norm.weight')!.data.every((x) => x === 1)).toBe(true);
    const emb = stats(a.get('embed_tokens.weight')!.data);
    expect(Math.abs(emb.std / 64 ** -0.5 - 1)).toBeLessThan(0.05);
    const b = initWeights(model, 7);
    for (const [k, v] of a) expect(b.get(k)!.data).toEqual(v.data);
    const c = initWeights(model, 8);
    expect(c.get('layers.1.ffn.fc1.weight')!.data).not.toEqual(a.get('layers.1.ffn.fc1.weight')!.data);
    // Two weights of the same shape and initialiser draw different values (streams by name).
    expect(a.get('layers.0.ffn.fc1.weight')!.data).not.toEqual(a.get('layers.0.ffn.gate.weight')!.data);
  });
});

describe('learning-rate schedule', () => {
  const s = { lr: 1e-3, warmup: 10, steps: 110, floor: 0.1 };
  test('linear warm-up to the peak, then a cosine down to the floor at the last step', () => {
    expect(lrAt(s, 1)).toBeCloseTo(1e-4, 15);
    expect(lrAt(s, 5)).toBeCloseTo(5e-4, 15);
    expect(lrAt(s, 10)).toBe(1e-3);
    expect(lrAt(s, 60)).toBeCloseTo(0.55e-3, 12);
    expect(lrAt(s, 110)).toBeCloseTo(1e-4, 15);
    for (let t = 11; t <= 110; t++) expect(lrAt(s, t)).toBeLessThan(lrAt(s, t - 1));
  });
  test('no warm-up, and the default warm-up', () => {
    expect(lrAt({ lr: 2, warmup: 0, steps: 3 }, 1)).toBeLessThan(2);
    expect(lrAt({ lr: 2, warmup: 0, steps: 3 }, 3)).toBeCloseTo(0.2, 12);
    expect(lrAt({ lr: 2, warmup: 5, steps: 5 }, 5)).toBe(2);
    expect(defaultWarmup(30)).toBe(3);
    expect(defaultWarmup(5000)).toBe(100);
  });
});
