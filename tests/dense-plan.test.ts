// Dense sums tiled inside whole plans (schedule field `dense: 'tiled'`, compiler/plan.ts): the
// RetNet fixture's logits in every mode on cpu and webgpu stay within 1e-4 of torchscale, and the
// model's weight gradients equal those of the map lowering (one thread per output element).
import { existsSync } from 'node:fs';
import { afterAll, describe, expect, test } from 'vitest';
import { makeSchedule } from '../compiler/schedule.js';
import { compileModel } from '../compiler/pipeline.js';
import { compileModelGrad } from '../compiler/model-grad.js';
import { loadTorchscale } from '../runtime/io/torchscale.js';
import { planExec } from '../runtime/exec.js';
import { runModelPlan, type HostValue } from '../runtime/model-runner.js';
import { runModelBackward } from '../runtime/model-backward.js';
import { relErr } from './helpers/harness.js';
import { acquireTestGpu, requireGpu } from './helpers/webgpu.js';

const FIXTURE = new URL('../../shared/fixtures/torchscale/retnet-tiny.safetensors', import.meta.url).pathname;
const have = existsSync(FIXTURE) || !!process.env.CI;
const gpu = await acquireTestGpu('dense-plan');
const cpu = planExec('cpu');
const webgpu = planExec('webgpu');
afterAll(async () => { await webgpu.release(); });

describe.skipIf(!have)('dense sums tiled in whole-model plans', () => {
  test('a WebGPU adapter is available', (ctx) => requireGpu(gpu, () => ctx.skip()));

  for (const target of ['cpu', 'webgpu'] as const) {
    test.skipIf(target === 'webgpu' && !gpu.gpu)(`${target}: retnet-tiny logits with tiled projections (parallel, chunkwise 5) within 1e-4 of torchscale`, async () => {
      const ck = await loadTorchscale(FIXTURE);
      // WebGPU: one form (lavapipe compiles each tiled pipeline for seconds).
      for (const form of target === 'cpu' ? (['parallel', 'chunkwise'] as const) : (['chunkwise'] as const)) {
        const mp = compileModel(ck.model, makeSchedule(form, 5, { dense: 'tiled' }));
        const dense = mp.plans.flatMap((p) => p.launches).filter((l) => l.how === 'dense');
        // q, k, v, g and out projections, fc1, gate, fc2 and the output layer.
        expect(dense.length).toBeGreaterThanOrEqual(9);
        const exec = target === 'cpu' ? cpu.exec : webgpu.exec;
        const out = (await runModelPlan(mp, ck.weights, new Map([['tokens', ck.tokens!]]), exec)).outputs.get('logits')!;
        const e = relErr(out.data, ck.weights.get('logits.recurrent')!.data);
        console.log(`[dense-plan] ${target} ${form}: ${dense.length} dense launches, rel. RMSE ${e.rel.toExponential(2)}`);
        expect(e.rel).toBeLessThan(1e-4);
      }
    }, 120_000);
  }

  test('weight gradients with tiled dense sums (weight gradients split over B*T) equal the map lowering', async () => {
    const ck = await loadTorchscale(FIXTURE);
    const [B, T] = ck.tokens!.shape as [number, number];
    const vocab = ck.weights.get('output_projection.weight')!.shape[0]!;
    const d: HostValue = { shape: [B, T, vocab], data: Float64Array.from({ length: B * T * vocab }, (_, i) => Math.sin(i * 0.37)) };
    const run = async (dense: 'map' | 'tiled') => runModelBackward(compileModelGrad(ck.model, makeSchedule('chunkwise', 8, { dense })), ck.weights, new Map([['tokens', ck.tokens!]]), new Map([['logits', d]]), cpu.exec);
    const [map, tiled] = [await run('map'), await run('tiled')];
    const tiledPlans = compileModelGrad(ck.model, makeSchedule('chunkwise', 8, { dense: 'tiled' })).plans;
    expect(tiledPlans.flatMap((p) => p.launches).filter((l) => l.how === 'dense').length).toBeGreaterThan(10);
    for (const [name, g] of map.grads) {
      const e = relErr(tiled.grads.get(name)!.data, g.data);
      expect(e.rel, name).toBeLessThan(1e-5);
    }
  }, 300_000);
});
