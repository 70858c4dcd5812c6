// Whole models against torchscale: every checkpoint fixture of shared/fixtures/torchscale
// (runtime/io/torchscale.ts loads it), compiled by compiler/pipeline.ts in every mode (parallel,
// chunkwise at the fixture's chunk and at other chunk sizes, recurrent = the derived stateful
// form one token at a time) and run on cpu and on webgpu (runtime/exec.ts), reaches relative
// RMSE <= 1e-4 against `logits.recurrent` (torchscale's token-by-token mode, which is exactly
// retnetc's semantics). In CI a missing fixture fails; without a WebGPU adapter the webgpu cases
// skip with the reason, unless REQUIRE_WEBGPU=1.
import { existsSync } from 'node:fs';
import { afterAll, describe, expect, test } from 'vitest';
import { readSafetensorsFile } from '../runtime/io/safetensors.js';
import { configToHypers, hypersToConfig, loadTorchscale, type LoadedCheckpoint, TorchscaleError } from '../runtime/io/torchscale.js';
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
  // The fixture's own chunk (torchscale's recurrent_chunk_size), known before the tests are made.
  const own = present ? (JSON.parse((await readSafetensorsFile(path)).metadata['config'] ?? '{}') as { recurrent_chunk_size?: number }).recurrent_chunk_size ?? 8 : 8;
  const chunks = [...new Set([own, 1, 5, 16])];
  describe.skipIf(!present && !process.env['CI'])(file, () => {
    let ck: LoadedCheckpoint;
    test('the fixture is there and loads (config mapped, weights checked)', async () => {
      expect(present, `${path} is missing`).toBe(true);
      ck = await loadTorchscale(path);
      expect(ck.config!.chunk).toBe(own);
      expect(ck.tokens!.shape).toEqual(ck.weights.get('logits.recurrent')!.shape.slice(0, 2));
      // The reverse mapping gives back a config that maps to the same hypers.
      expect(configToHypers(hypersToConfig(ck.model.hypers)).hypers).toEqual(ck.config!.hypers);
    });
    const cases: [Mode, number | undefined][] = [['parallel', undefined], ...chunks.map((c) => ['chunkwise', c] as [Mode, number]), ['recurrent', undefined]];
    for (const target of ['cpu', 'webgpu'] as const) {
      for (const [mode, chunk] of cases) {
        // WebGPU compiles its pipelines per chunk size (seconds each on lavapipe): three chunks there.
        if (target === 'webgpu' && chunk !== undefined && chunks.indexOf(chunk) > 2) continue;
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

describe('RetNetConfig -> hypers', () => {
  const base = { decoder_embed_dim: 64, decoder_value_embed_dim: 128, decoder_retention_heads: 2, decoder_ffn_embed_dim: 128, decoder_layers: 2, activation_fn: 'swish', vocab_size: 61 };
  const refused = (cfg: unknown): string => {
    try { configToHypers(cfg as Record<string, unknown>); } catch (e) { expect(e).toBeInstanceOf(TorchscaleError); return (e as Error).message; }
    throw new Error('accepted');
  };
  test('every key the fixtures use is mapped; torchscale defaults fill the rest', () => {
    const c = configToHypers(JSON.stringify({ ...base, recurrent_chunk_size: 8, layernorm_eps: 1e-5, dropout: 0.1, no_scale_embedding: false, layernorm_embedding: true }), '8.0');
    expect(c.hypers).toEqual({ embed_dim: 64, value_dim: 128, heads: 2, ffn_dim: 128, n_layers: 2, vocab: 61, act: 'swish', eps: 1e-5, scale_embedding: 1, layernorm_embedding: 1 });
    expect([c.chunk, c.qkGain]).toEqual([8, 8]);
    expect(configToHypers({ ...base }).hypers).toMatchObject({ eps: 1e-6, scale_embedding: 0, layernorm_embedding: 0 });
  });
  test("RetNetConfig's own rules: subln (true by default) makes the model pre-norm; deepnorm turns it off", () => {
    expect(() => configToHypers({ ...base, subln: true })).not.toThrow();
    // As in RetNetConfig.__init__: subln = True (the default) sets decoder_normalize_before = True.
    expect(() => configToHypers({ ...base, decoder_normalize_before: false })).not.toThrow();
    expect(refused({ ...base, subln: false, decoder_normalize_before: false })).toMatch(/^config: decoder_normalize_before: false \(with subln: false\) is not supported/);
    expect(refused({ ...base, deepnorm: true })).toMatch(/^config: deepnorm: true is not supported/);
  });
  test('options the model cannot take are one line naming the key and value', () => {
    expect(refused({ ...base, activation_fn: 'relu' })).toBe('config: activation_fn: "relu" is not supported (retnet takes swish or gelu)');
    expect(refused({ ...base, moe_freq: 2 })).toMatch(/^config: moe_freq: 2 is not supported: /);
    expect(refused({ ...base, no_output_layer: true })).toMatch(/^config: no_output_layer: true is not supported: /);
    expect(refused({ ...base, decoder_retention_heads: 3 })).toBe('config: decoder_embed_dim: 64 is not divisible by decoder_retention_heads: 3');
    expect(refused({ ...base, decoder_value_embed_dim: 100, decoder_retention_heads: 8 })).toBe('config: decoder_value_embed_dim: 100 is not divisible by decoder_retention_heads: 8');
    expect(refused({ ...base, decoder_embed_dim: 6, decoder_retention_heads: 2, decoder_value_embed_dim: 6 })).toMatch(/^config: decoder_embed_dim: 6 \/ decoder_retention_heads: 2 gives an odd key head dim 3/);
    expect(refused({ ...base, decoder_layers: 2.5 })).toBe('config: decoder_layers: 2.5 is not an integer');
    expect(refused({ ...base, vocab_size: -1 })).toBe('config: vocab_size: -1 must be at least 1');
    expect(refused({ ...base, decoder_embd_dim: 64 })).toBe("config: unknown RetNetConfig key 'decoder_embd_dim' (value 64) (did you mean decoder_embed_dim?)");
    expect(refused('[1, 2]')).toMatch(/^config must be a JSON object/);
    expect(refused('{"a": ')).toMatch(/^config is not JSON: /);
  });
  test('hypers -> config -> hypers is the identity', () => {
    const h = configToHypers({ ...base, activation_fn: 'gelu', layernorm_embedding: true, no_scale_embedding: false }).hypers;
    expect(configToHypers(hypersToConfig(h)).hypers).toEqual(h);
    expect(() => hypersToConfig({ ...h, act: 'relu' })).toThrow(/act = "relu" has no torchscale activation_fn/);
  });
});
