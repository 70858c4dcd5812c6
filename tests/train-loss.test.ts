// The cross-entropy of models/train.ret as runtime/train/loss.ts runs it, on cpu, native and
// webgpu: loss and dlogits against a float64 JavaScript reference, with huge logits (+-1e4: no
// overflow, no NaN); dlogits against finite differences of the float64 interpreter and against
// the gradient the compiler derives from cross_entropy_loss; bad targets. Native and WebGPU are
// skipped with the reason printed when absent, unless REQUIRE_NATIVE=1 / REQUIRE_WEBGPU=1.
import { describe, expect, test } from 'vitest';
import { runFunction, type Value } from '../dsl/reference/interpreter.js';
import { compileFunction } from '../compiler/pipeline.js';
import { makeSchedule } from '../compiler/schedule.js';
import type { HostValue, PlanExec } from '../runtime/model-runner.js';
import { openTarget } from '../runtime/targets.js';
import { runPlanCpu } from '../runtime/plan-runner.js';
import { runPlanWebGPU } from '../runtime/webgpu/runner.js';
import { findCompiler, NO_COMPILER } from '../targets/native/compile.js';
import { loadNativeAddon } from '../runtime/native/addon.js';
import { crossEntropy, crossEntropyLoss } from '../runtime/train/loss.js';
import { trainFn, trainPlan } from '../runtime/train/train-fns.js';
import { prng, relErr } from './helpers/harness.js';
import { acquireTestGpu, requireGpu } from './helpers/webgpu.js';

const cc = findCompiler();
const addon = cc ? loadNativeAddon() : { error: NO_COMPILER };
const noNative = !cc ? NO_COMPILER : 'error' in addon ? addon.error : undefined;
if (noNative) console.log(`[train-loss] native runs skipped: ${noNative}`);

test('a C compiler and the native addon are available (required when REQUIRE_NATIVE=1)', (ctx) => {
  if (noNative && process.env['REQUIRE_NATIVE'] !== '1') ctx.skip();
  expect(noNative).toBeUndefined();
});

/** Logits [B, T, V] (f32 values) and targets; `huge` puts +-1e4 in some rows. */
function batch(B: number, T: number, V: number, seed: number, huge = false): { logits: HostValue; targets: HostValue } {
  const rand = prng(seed);
  const logits = new Float32Array(B * T * V);
  for (let i = 0; i < logits.length; i++) logits[i] = (rand() * 2 - 1) * 4;
  const targets = new Int32Array(B * T);
  for (let i = 0; i < targets.length; i++) targets[i] = Math.floor(rand() * V);
  if (huge) {
    for (let r = 0; r < B * T; r++) {
      const row = logits.subarray(r * V, (r + 1) * V);
      if (r % 3 === 0) row[Math.floor(rand() * V)] = 1e4;                     // one dominant logit
      if (r % 3 === 1) for (let v = 0; v < V; v++) row[v] = row[v]! - 1e4;    // every logit very negative
      if (r % 3 === 2) { row[targets[r]!] = -1e4; row[(targets[r]! + 1) % V] = 1e4; }  // target far below the max
    }
  }
  return { logits: { shape: [B, T, V], data: logits }, targets: { shape: [B, T], data: targets } };
}

/** Float64 reference: mean loss and (softmax - onehot) / (B T). */
function reference(logits: HostValue, targets: HostValue): { loss: number; dlogits: Float64Array } {
  const [B, T, V] = logits.shape as [number, number, number];
  const d = new Float64Array(B * T * V);
  let loss = 0;
  for (let r = 0; r < B * T; r++) {
    let m = -Infinity;
    for (let v = 0; v < V; v++) m = Math.max(m, logits.data[r * V + v]!);
    let z = 0;
    for (let v = 0; v < V; v++) z += Math.exp(logits.data[r * V + v]! - m);
    const y = targets.data[r]!;
    loss += Math.log(z) + m - logits.data[r * V + y]!;
    for (let v = 0; v < V; v++) d[r * V + v] = (Math.exp(logits.data[r * V + v]! - m) / z - (v === y ? 1 : 0)) / (B * T);
  }
  return { loss: loss / (B * T), dlogits: d };
}

const f64 = (h: HostValue): Value => ({ shape: [...h.shape], data: Float64Array.from(h.data) });

function checkTarget(name: string, exec: () => PlanExec): void {
  test(`${name}: loss and dlogits vs a float64 reference (B=3 T=17 V=61, and rows with logits of +-1e4)`, async () => {
    for (const huge of [false, true]) {
      const { logits, targets } = batch(3, 17, 61, huge ? 7 : 3, huge);
      const ref = reference(logits, targets);
      const r = await crossEntropy(logits, targets, exec(), name);  // the target's schedule defaults
      expect(r.dlogits.shape).toEqual([3, 17, 61]);
      expect(Number.isFinite(r.loss)).toBe(true);
      expect(Math.abs(r.loss - ref.loss) / ref.loss).toBeLessThanOrEqual(1e-6);
      const e = relErr(r.dlogits.data, ref.dlogits);
      console.log(`[train-loss] ${name}${huge ? ', logits +-1e4' : ''}: loss rel. error ${(Math.abs(r.loss - ref.loss) / ref.loss).toExponential(1)}, dlogits rel. RMSE ${e.rel.toExponential(1)}`);
      expect(e.nonFinite).toBe(0);
      expect(e.rel).toBeLessThanOrEqual(1e-6);
      const val = await crossEntropyLoss(logits, targets, exec());
      expect(Math.abs(val - ref.loss) / ref.loss).toBeLessThanOrEqual(1e-6);
    }
  });

  test(`${name}: the demo's shape (B=8 T=256 V=256) and uniform logits give log V`, async () => {
    const { logits, targets } = batch(8, 256, 256, 11);
    const ref = reference(logits, targets);
    const r = await crossEntropy(logits, targets, exec());
    expect(Math.abs(r.loss - ref.loss) / ref.loss).toBeLessThanOrEqual(1e-6);
    expect(relErr(r.dlogits.data, ref.dlogits).rel).toBeLessThanOrEqual(1e-6);
    const flat = { shape: [2, 5, 256], data: new Float32Array(2 * 5 * 256).fill(3.5) };
    expect(Math.abs((await crossEntropyLoss(flat, { shape: [2, 5], data: new Int32Array(10).fill(9) }, exec())) - Math.log(256))).toBeLessThanOrEqual(1e-6);
  });
}

describe('cross-entropy on cpu', () => {
  const exec: PlanExec = async (p, i) => runPlanCpu(p, i as ReadonlyMap<string, Value>);
  checkTarget('cpu', () => exec);

  test('dlogits equals central finite differences of the float64 interpreter of cross_entropy_loss', async () => {
    const { logits, targets } = batch(2, 3, 7, 5);
    const r = await crossEntropy(logits, targets, exec);
    const fn = trainFn('cross_entropy_loss');
    const L = (x: Float64Array): number => runFunction(fn, new Map([['logits', { shape: logits.shape, data: x }], ['targets', f64(targets)]])).get('loss')!.data[0]!;
    const x0 = Float64Array.from(logits.data);
    const fd = new Float64Array(x0.length);
    const h = 1e-4;
    for (let i = 0; i < x0.length; i++) {
      const at = (t: number): number => { const x = x0.slice(); x[i] = x[i]! + t; return L(x); };
      fd[i] = (8 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12 * h);
    }
    expect(relErr(r.dlogits.data, fd).rel).toBeLessThanOrEqual(1e-6);
    // The interpreter's loss is the reference's.
    expect(Math.abs(L(x0) - reference(logits, targets).loss)).toBeLessThanOrEqual(1e-12);
  });

  test('dlogits equals the gradient the compiler derives from cross_entropy_loss (its backward plan)', async () => {
    const { logits, targets } = batch(4, 9, 33, 9, true);
    const r = await crossEntropy(logits, targets, exec);
    const g = compileFunction(trainFn('cross_entropy_loss'), makeSchedule('parallel'), { backward: true });
    const out = runPlanCpu(g, new Map([['logits', f64(logits)], ['targets', f64(targets)], ['grad.loss', { shape: [], data: Float64Array.of(1) }]]));
    expect(relErr(r.dlogits.data, out.get('grad.logits')!.data).rel).toBeLessThanOrEqual(1e-6);
  });

  test('the training plan is one plan of four launches (max, sum, loss, dlogits)', () => {
    const p = trainPlan('cross_entropy');
    expect(p.launches.map((l) => l.target)).toEqual(['m', 'z', 'loss', 'dlogits']);
    expect(p.launches.every((l) => l.how === 'elementwise')).toBe(true);
  });

  test('targets outside the vocabulary, misshaped targets and non-finite logits are one-line errors', async () => {
    const { logits, targets } = batch(2, 3, 5, 1);
    const bad = { shape: [2, 3], data: Int32Array.from(targets.data, (x, i) => (i === 4 ? 5 : x)) };
    await expect(crossEntropy(logits, bad, exec)).rejects.toThrow(/^target 5 at \[1, 1\] is outside the vocabulary 0\.\.4$/);
    await expect(crossEntropyLoss(logits, { shape: [2, 3], data: Int32Array.from(targets.data, (x, i) => (i === 0 ? -1 : x)) }, exec)).rejects.toThrow(/target -1 at \[0, 0\]/);
    await expect(crossEntropy(logits, { shape: [3, 2], data: targets.data }, exec)).rejects.toThrow(/targets must be \[2, 3\]/);
    await expect(crossEntropy({ shape: [6, 5], data: logits.data }, targets, exec)).rejects.toThrow(/logits must be \[B, T, vocab\]/);
    const nan = { shape: logits.shape, data: Float32Array.from(logits.data, (x, i) => (i === 7 ? NaN : x)) };
    await expect(crossEntropy(nan, targets, exec)).rejects.toThrow(/the loss is not finite/);
  });
});

describe.skipIf(!!noNative)('cross-entropy on native', () => {
  const t = openTarget('native');
  checkTarget('native', () => t.exec);
});

describe('cross-entropy on webgpu', async () => {
  const gpu = await acquireTestGpu('train-loss');
  test('a WebGPU adapter is available', (ctx) => requireGpu(gpu, () => ctx.skip()));
  if (gpu.gpu) checkTarget('webgpu', () => async (p, i) => runPlanWebGPU(p, i, { device: gpu.gpu! }) as Promise<Map<string, HostValue>>);
});
