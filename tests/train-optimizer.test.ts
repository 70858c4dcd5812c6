// AdamW of models/train.ret as runtime/train/optimizer.ts runs it over a FlatParams vector, on
// cpu, native and webgpu: several steps against a float64 reimplementation of torch.optim.AdamW
// after torch.nn.utils.clip_grad_norm_ (clipping on and off), the decay mask (matrices but not
// embeddings or norms), the state()/load() round trip, the non-finite-gradient error; and
// FlatParams: views into one array (with byte offsets, which every runner must honour), flat
// gradients and their errors.
import { describe, expect, test } from 'vitest';
import type { Value } from '../dsl/reference/interpreter.js';
import type { HostValue, PlanExec } from '../runtime/model-runner.js';
import { openTarget } from '../runtime/targets.js';
import { runPlanCpu } from '../runtime/plan-runner.js';
import { runPlanWebGPU } from '../runtime/webgpu/runner.js';
import { findCompiler, NO_COMPILER } from '../targets/native/compile.js';
import { loadNativeAddon } from '../runtime/native/addon.js';
import { FlatParams } from '../runtime/train/flat-params.js';
import { AdamW, type AdamWOptions } from '../runtime/train/optimizer.js';
import { sumsqBlocks, trainPlan } from '../runtime/train/train-fns.js';
import { loadFn, prng, relErr } from './helpers/harness.js';
import { acquireTestGpu, requireGpu } from './helpers/webgpu.js';

const cc = findCompiler();
const addon = cc ? loadNativeAddon() : { error: NO_COMPILER };
const noNative = !cc ? NO_COMPILER : 'error' in addon ? addon.error : undefined;
if (noNative) console.log(`[train-optimizer] native runs skipped: ${noNative}`);

test('a C compiler and the native addon are available (required when REQUIRE_NATIVE=1)', (ctx) => {
  if (noNative && process.env['REQUIRE_NATIVE'] !== '1') ctx.skip();
  expect(noNative).toBeUndefined();
});

/** A small RetNet-like parameter set: embeddings, matrices and norm weights (N = 3480). */
const SPECS = [
  { name: 'embed_tokens.weight', shape: [13, 8] },
  { name: 'layers.0.retention.q_proj.weight', shape: [8, 8] },
  { name: 'layers.0.final_layer_norm.weight', shape: [8] },
  { name: 'layers.0.ffn.fc1.weight', shape: [64, 50] },
  { name: 'output_projection.weight', shape: [13, 8] },
];

function randomParams(seed: number): FlatParams {
  const rand = prng(seed);
  const fp = new FlatParams(SPECS);
  for (let i = 0; i < fp.size; i++) fp.data[i] = rand() * 2 - 1;
  return fp;
}

function randomGrads(n: number, seed: number, scale: number): Float32Array {
  const rand = prng(seed);
  return Float32Array.from({ length: n }, () => (rand() * 2 - 1) * scale);
}

/** torch.optim.AdamW (decoupled decay, no amsgrad) after clip_grad_norm_(max_norm = clip), in float64. */
class ReferenceAdamW {
  p: Float64Array; m: Float64Array; v: Float64Array; t = 0;
  constructor(p: ArrayLike<number>, readonly wd: Float64Array, readonly o: Required<Omit<AdamWOptions, 'decayEmbeddings' | 'target'>>) {
    this.p = Float64Array.from(p); this.m = new Float64Array(p.length); this.v = new Float64Array(p.length);
  }
  step(g: ArrayLike<number>, lr: number): number {
    let n2 = 0;
    for (let i = 0; i < g.length; i++) n2 += g[i]! * g[i]!;
    const norm = Math.sqrt(n2);
    const coef = this.o.clip > 0 ? Math.min(1, this.o.clip / (norm + 1e-6)) : 1;
    this.t++;
    const bc1 = 1 - this.o.beta1 ** this.t, bc2 = 1 - this.o.beta2 ** this.t;
    for (let i = 0; i < g.length; i++) {
      const gi = g[i]! * coef;
      this.m[i] = this.o.beta1 * this.m[i]! + (1 - this.o.beta1) * gi;
      this.v[i] = this.o.beta2 * this.v[i]! + (1 - this.o.beta2) * gi * gi;
      this.p[i] = this.p[i]! * (1 - lr * this.wd[i]!);
      this.p[i] = this.p[i]! - (lr / bc1) * this.m[i]! / (Math.sqrt(this.v[i]!) / Math.sqrt(bc2) + this.o.eps);
    }
    return norm;
  }
}

const OPTS = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, clip: 1.0 };

function checkTarget(name: string, exec: () => PlanExec): void {
  for (const [label, opts, scale] of [
    ['clipping on (norm ~ 17 > 1)', OPTS, 0.5],
    ['clipping off (clip = 0), beta2 = 0.999, decayed embeddings', { ...OPTS, clip: 0, beta2: 0.999, decayEmbeddings: true }, 0.5],
    ['clip = 100 (not reached)', { ...OPTS, clip: 100 }, 0.01],
  ] as const) {
    test(`${name}: 6 steps vs float64 torch AdamW + clip_grad_norm_, ${label}`, async () => {
      const fp = randomParams(1);
      const p0 = fp.data.slice();
      const opt = new AdamW(fp, exec(), { ...opts, target: name });  // the target's schedule defaults
      const wd = Float64Array.from(fp.decayMask({ decayEmbeddings: 'decayEmbeddings' in opts }), (x) => x * opts.weightDecay);
      const ref = new ReferenceAdamW(fp.data, wd, { beta1: opts.beta1, beta2: opts.beta2, eps: opts.eps, weightDecay: opts.weightDecay, clip: opts.clip });
      const lrs = [1e-3, 3e-3, 1e-2, 1e-2, 5e-3, 1e-3];
      for (const [s, lr] of lrs.entries()) {
        const g = randomGrads(fp.size, 100 + s, scale);
        const { gradNorm } = await opt.step(g, lr);
        const norm = ref.step(g, lr);
        expect(Math.abs(gradNorm - norm) / norm).toBeLessThanOrEqual(1e-6);
      }
      expect(opt.t).toBe(lrs.length);
      const st = opt.state();
      // The updates themselves too, not only the weights they are added to.
      const du = Float64Array.from(fp.data, (x, i) => x - p0[i]!), dr = Float64Array.from(ref.p, (x, i) => x - p0[i]!);
      const [ep, em, ev, eu] = [relErr(fp.data, ref.p), relErr(st.get('adamw.m')!.data, ref.m), relErr(st.get('adamw.v')!.data, ref.v), relErr(du, dr)].map((e) => e.rel);
      console.log(`[train-optimizer] ${name}, ${label}: rel. RMSE p ${ep!.toExponential(1)}, m ${em!.toExponential(1)}, v ${ev!.toExponential(1)}, p - p0 ${eu!.toExponential(1)}`);
      expect(ep).toBeLessThanOrEqual(1e-6);
      expect(em).toBeLessThanOrEqual(1e-6);
      expect(ev).toBeLessThanOrEqual(1e-6);
      expect(eu).toBeLessThanOrEqual(1e-5);
    });
  }

  test(`${name}: weight decay only on matrices that are not embeddings (zero gradient: p (1 - lr wd) or p)`, async () => {
    for (const decayEmbeddings of [false, true]) {
      const fp = randomParams(2);
      const p0 = fp.data.slice();
      const views = fp.views();
      const opt = new AdamW(fp, exec(), { ...OPTS, decayEmbeddings });
      await opt.step(new Float32Array(fp.size), 0.5);
      for (const r of fp.ranges) {
        const decayed = r.shape.length >= 2 && (decayEmbeddings || r.name !== 'embed_tokens.weight');
        const got = views.get(r.name)!.data;  // a view made before the step sees the new weights
        const want = Float64Array.from(p0.subarray(r.offset, r.offset + r.size), (x) => (decayed ? x * (1 - 0.5 * 0.1) : x));
        expect(relErr(got, want).rel, r.name).toBeLessThanOrEqual(1e-7);
        if (!decayed) expect(Array.from(got), r.name).toEqual(Array.from(want));
      }
    }
  });

  test(`${name}: state() then load() into a fresh optimizer gives bit-identical next steps`, async () => {
    const a = randomParams(3);
    const optA = new AdamW(a, exec(), OPTS);
    for (let s = 0; s < 3; s++) await optA.step(randomGrads(a.size, 200 + s, 0.3), 1e-2);
    const b = FlatParams.fromWeights(new Map([...a.views()].map(([k, v]) => [k, { shape: v.shape, data: Float64Array.from(v.data) }])));
    const optB = new AdamW(b, exec(), OPTS);
    optB.load(optA.state());
    expect(optB.t).toBe(3);
    for (let s = 3; s < 5; s++) {
      const g = randomGrads(a.size, 200 + s, 0.3);
      const [na, nb] = [await optA.step(g, 2e-3), await optB.step(g, 2e-3)];
      expect(nb).toEqual(na);
    }
    expect(Array.from(b.data)).toEqual(Array.from(a.data));
    expect(Array.from(optB.state().get('adamw.v')!.data)).toEqual(Array.from(optA.state().get('adamw.v')!.data));
  });

  test(`${name}: a non-finite gradient norm is an error naming the step, and nothing changes`, async () => {
    const fp = randomParams(4);
    const opt = new AdamW(fp, exec(), OPTS);
    await opt.step(randomGrads(fp.size, 1, 0.1), 1e-3);
    const before = fp.data.slice(), state = opt.state();
    for (const [bad, why] of [[NaN, "gradient of 'layers.0.ffn.fc1.weight' [21, 8] is NaN"], [-Infinity, "gradient of 'layers.0.ffn.fc1.weight' [21, 8] is -Infinity"], [1e30, 'every gradient is finite, but their squares overflow f32']] as const) {
      const g = randomGrads(fp.size, 2, 0.1);
      g[1234] = bad;  // 1234 - 176 = 1058 = 21 * 50 + 8 in fc1.weight [64, 50]
      const msg = `step 2: the gradient norm is ${Number.isNaN(bad) ? 'NaN' : 'Infinity'} (${why}); the step was not applied`;
      await expect(opt.step(g, 1e-3)).rejects.toMatchObject({ message: msg });
      expect(opt.t).toBe(1);
      expect(Array.from(fp.data)).toEqual(Array.from(before));
      expect(Array.from(opt.state().get('adamw.m')!.data)).toEqual(Array.from(state.get('adamw.m')!.data));
    }
  });
}

describe('AdamW on cpu', () => {
  const exec: PlanExec = async (p, i) => runPlanCpu(p, i as ReadonlyMap<string, Value>);
  checkTarget('cpu', () => exec);

  test('one step is one plan: two-level squared norm, clip scale, m, v, p (elementwise launches)', () => {
    const { P, S } = sumsqBlocks(3480);
    expect([P, S]).toEqual([59, 59]);
    const p = trainPlan('adamw_step', new Map([['P', P], ['S', S]]));
    expect(p.launches.map((l) => l.target)).toEqual(['sumsq#1.part', 'gnorm2', 'adamw#2.scale', 'm_new', 'v_new', 'p_new']);
    expect(p.launches.every((l) => l.how === 'elementwise')).toBe(true);
    for (const n of [1, 2, 1000, 999_999, 20_000_001]) {
      const b = sumsqBlocks(n);
      expect(b.P * b.S).toBeGreaterThanOrEqual(n);
      expect(b.P * (b.S - 1)).toBeLessThan(n);
    }
  });

  test('sumsq (two levels, P * S >= N, reads past N are 0) equals the float64 sum of squares', async () => {
    for (const n of [1, 2, 7, 1000, 12_345, 250_001]) {
      const { P, S } = sumsqBlocks(n);
      const g = randomGrads(n, n, 3);
      let want = 0;
      for (let i = 0; i < n; i++) want += g[i]! * g[i]!;
      const got = (await exec(trainPlan('sumsq', new Map([['P', P], ['S', S]])), new Map([['g', { shape: [n], data: g }]]))).get('n2')!.data[0]!;
      expect(Math.abs(got - want) / want, `N = ${n}`).toBeLessThanOrEqual(1e-6);
    }
  });

  test('load() refuses missing and misshaped tensors in one line; bad options and gradients are refused', async () => {
    const fp = randomParams(5);
    const opt = new AdamW(fp, exec, OPTS);
    const st = opt.state();
    const without = (k: string) => new Map([...st].filter(([n]) => n !== k));
    expect(() => opt.load(without('adamw.v'))).toThrow(/^optimizer state: missing tensor 'adamw\.v'$/);
    expect(() => opt.load(without('adamw.t'))).toThrow(/^optimizer state: missing tensor 'adamw\.t'$/);
    expect(() => opt.load(new Map([...st, ['adamw.m', { shape: [10], data: new Float32Array(10) }]]))).toThrow(/^optimizer state: 'adamw\.m' has shape \[10\], but the parameters need \[3480\] \(a checkpoint of another model or size\?\)$/);
    expect(() => opt.load(new Map([...st, ['adamw.t', { shape: [1], data: Float64Array.of(1.5) }]]))).toThrow(/'adamw\.t' must be one integer >= 0/);
    await expect(opt.step(new Float32Array(7), 1e-3)).rejects.toThrow(/^step 1: the gradient has 7 values, the parameters 3480$/);
    await expect(opt.step(new Float32Array(fp.size), NaN)).rejects.toThrow(/learning rate NaN/);
    expect(() => new AdamW(fp, exec, { beta2: 1 })).toThrow(/beta2 = 1 is out of range/);
  });
});

describe('FlatParams', () => {
  test('one array with named ranges; views share its memory; fromWeights rounds to f32 in map order', () => {
    const w = new Map<string, HostValue>([['a', { shape: [2, 3], data: Float64Array.of(1, 2, 3, 4, 5, 6) }], ['b', { shape: [4], data: Float64Array.of(0.1, 0.2, 0.3, 0.4) }]]);
    const fp = FlatParams.fromWeights(w);
    expect(fp.size).toBe(10);
    expect(fp.ranges.map((r) => [r.name, r.offset, r.size])).toEqual([['a', 0, 6], ['b', 6, 4]]);
    const b = fp.views().get('b')!;
    expect(b.shape).toEqual([4]);
    expect(b.data).toBeInstanceOf(Float32Array);
    expect((b.data as Float32Array).buffer).toBe(fp.data.buffer);
    expect((b.data as Float32Array).byteOffset).toBe(24);
    expect(b.data[0]).toBe(Math.fround(0.1));
    fp.data[7] = 42;
    expect(b.data[1]).toBe(42);
    expect(fp.decayed()).toEqual(['a']);
  });

  test('flattenGrads: every weight in order; a missing, misshaped or unknown gradient is an error', () => {
    const fp = new FlatParams([{ name: 'embed_tokens.weight', shape: [3, 2] }, { name: 'n', shape: [2] }]);
    const g = new Map<string, HostValue>([['embed_tokens.weight', { shape: [3, 2], data: Float64Array.of(1, 2, 3, 4, 5, 6) }], ['n', { shape: [2], data: Float64Array.of(7, 8) }]]);
    expect(Array.from(fp.flattenGrads(g))).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(() => fp.flattenGrads(new Map([...g].slice(0, 1)))).toThrow(/^missing gradient of 'n' \(expected \[2\]\)$/);
    expect(() => fp.flattenGrads(new Map([...g, ['n', { shape: [1, 2], data: Float64Array.of(7, 8) }]]))).toThrow(/^gradient of 'n' has shape \[1, 2\], but the parameter has \[2\]$/);
    expect(() => fp.flattenGrads(new Map([...g, ['x', { shape: [1], data: Float64Array.of(0) }]]))).toThrow(/^gradient of 'x', which is not a parameter$/);
    expect(fp.decayed()).toEqual([]);
    expect(fp.decayed({ decayEmbeddings: true })).toEqual(['embed_tokens.weight']);
  });
});

/** A weight read through a view at a byte offset gives what a copy of it gives (the model runner passes views). */
function checkViews(name: string, exec: () => PlanExec): void {
  test(`${name}: a plan reads weights through FlatParams views (byte offsets) as it reads copies`, async () => {
    const fp = randomParams(6);
    const views = fp.views();
    const w = views.get('layers.0.ffn.fc1.weight')!;  // [64, 50] at element offset 176
    expect((w.data as Float32Array).byteOffset).toBe(176 * 4);
    const rand = prng(9);
    const x = { shape: [1, 3, 50], data: Float32Array.from({ length: 150 }, () => rand() - 0.5) };
    const linear = trainPlanFree('linear');
    const viaView = (await exec()(linear, new Map([['x', x], ['w', w]]))).get('y')!.data;
    const viaCopy = (await exec()(linear, new Map([['x', x], ['w', { shape: w.shape, data: Float32Array.from(w.data) }]]))).get('y')!.data;
    expect(Array.from(viaView)).toEqual(Array.from(viaCopy));
  });
}

import { compileFunction } from '../compiler/pipeline.js';
import { makeSchedule } from '../compiler/schedule.js';
const trainPlanFree = (fn: string) => compileFunction(loadFn('retnet', fn), makeSchedule('parallel'));

describe('views on cpu', () => checkViews('cpu', () => async (p, i) => runPlanCpu(p, i as ReadonlyMap<string, Value>)));

describe.skipIf(!!noNative)('AdamW on native', () => {
  const t = openTarget('native');
  checkTarget('native', () => t.exec);
  checkViews('native', () => t.exec);
});

describe('AdamW on webgpu', async () => {
  const gpu = await acquireTestGpu('train-optimizer');
  test('a WebGPU adapter is available', (ctx) => requireGpu(gpu, () => ctx.skip()));
  if (gpu.gpu) {
    const exec: PlanExec = async (p, i) => runPlanWebGPU(p, i, { device: gpu.gpu! }) as Promise<Map<string, HostValue>>;
    checkTarget('webgpu', () => exec);
    checkViews('webgpu', () => exec);
  }
});
