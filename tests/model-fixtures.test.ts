// Whole models against torchscale: every checkpoint fixture of shared/fixtures/torchscale
// (runtime/io/torchscale.ts loads it), compiled by compiler/pipeline.ts in every mode (parallel,
// chunkwise at the fixture's chunk and at other chunk sizes, recurrent = the derived stateful
// form one token at a time) and run on cpu and on webgpu (runtime/exec.ts), reaches relative
// RMSE <= 1e-4 against `logits.recurrent` (torchscale's token-by-token mode, which is exactly
// retnetc's semantics). In CI a missing fixture fails; without a WebGPU adapter the webgpu cases
// skip with the reason, unless REQUIRE_WEBGPU=1.
import { existsSync } from 'node:fs';
import { afterAll, describe, expect, test } from 'vitest';
import { configToHypers, hypersToConfig, loadTorchscale, type LoadedCheckpoint } from '../runtime/io/torchscale.js';
import { type Mode, planExec, runModelMode } from '../runtime/exec.js';
import { acquireTestGpu, requireGpu } from './helpers/webgpu.js';

const FIXTURES = new URL('../../shared/fixtures/torchscale/', import.meta.url).pathname;
const FILES = ['retnet-tiny', 'retnet-tiny-gelu-pad'];
const TOL = 1e-4;

const relRmse = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let n = 0;
  let d = 0;
  for (let i = 0; i < b.length; i++) { n += (a[i]! - b[i]!) ** 2; d += b[i]! ** 2; }
  return Math.sqrt(n / d);
};

const gpuInfo = await acquireTestGpu('model-fixtures');
const cpu = planExec('cpu');
const webgpu = planExec('webgpu');
afterAll(async () => { await webgpu.release(); });

test('a WebGPU adapter is available (required when REQUIRE_WEBGPU=1)', (ctx) => requireGpu(gpuInfo, () => ctx.skip()));

const results: string[] = [];
afterAll(() => { if (results.length) console.log(`[model-fixtures] rel. RMSE vs logits.recurrent:\n  ${results.join('\n  ')}`); });

for (const file of FILES) {
  const path = `${FIXTURES}${file}.safetensors`;
  const present = existsSync(path);
  describe.skipIf(!present && !process.env['CI'])(file, () => {
    let ck: LoadedCheckpoint;
    test('the fixture is there and loads (config mapped, weights checked)', async () => {
      expect(present, `${path} is missing`).toBe(true);
      ck = await loadTorchscale(path);
      expect(ck.config!.chunk).toBe(8);
      expect(ck.tokens!.shape).toEqual(ck.weights.get('logits.recurrent')!.shape.slice(0, 2));
      // The reverse mapping gives back a config that maps to the same hypers.
      expect(configToHypers(hypersToConfig(ck.model.hypers)).hypers).toEqual(ck.config!.hypers);
    });
    const cases: [Mode, number | undefined][] = [['parallel', undefined], ['chunkwise', 8], ['chunkwise', 1], ['chunkwise', 5], ['chunkwise', 16], ['recurrent', undefined]];
    for (const target of ['cpu', 'webgpu'] as const) {
      for (const [mode, chunk] of cases) {
        // WebGPU compiles its pipelines per chunk size (seconds each on lavapipe): three chunks there.
        if (target === 'webgpu' && chunk === 16) continue;
        const name = `${target} ${mode}${chunk ? ` chunk ${chunk}` : ''}`;
        test(`${name}: rel. RMSE <= ${TOL} vs logits.recurrent`, async (ctx) => {
          if (!ck) ck = await loadTorchscale(path);
          if (target === 'webgpu' && !gpuInfo.gpu) { requireGpu(gpuInfo, () => ctx.skip()); return; }
          const exec = (target === 'cpu' ? cpu : webgpu).exec;
          const out = await runModelMode(ck.model, ck.weights, ck.tokens!, mode, exec, chunk);
          const ref = ck.weights.get('logits.recurrent')!;
          const logits = out.get('logits')!;
          expect(logits.shape).toEqual(ref.shape);
          const e = relRmse(logits.data, ref.data);
          results.push(`${file} ${name}: ${e.toExponential(2)}`);
          expect(e).toBeLessThanOrEqual(TOL);
        }, 60_000);
      }
    }
  });
}
