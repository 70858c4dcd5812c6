// `retnetc logits` end to end on a torchscale fixture: every mode on cpu and one on webgpu
// against the fixture's `logits.recurrent` (rel. RMSE <= 1e-4), the file it writes (logits f32
// [B, T, vocab], metadata mode/chunk/target) and its one line on stdout; then the bad inputs,
// each one line with a non-zero exit that names what is wrong (the tensor and both shapes when
// a tensor is at fault): a missing, extra or misshaped tensor, a truncated file, configs the
// model cannot take, a token out of range, an unknown mode, a missing --out.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { fromFloat64, readSafetensorsFile, type Tensor, toFloat64, writeSafetensorsFile } from '../runtime/io/safetensors.js';
import { cli, ensureBuilt, escapeRe, expectOk, expectUserError } from './helpers/cli.js';

const REQUIRE_WEBGPU = process.env['REQUIRE_WEBGPU'] === '1';
const FIXTURES = new URL('../../shared/fixtures/torchscale/', import.meta.url).pathname;
const CK = `${FIXTURES}retnet-tiny.safetensors`;
const present = existsSync(CK);

const relRmse = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let n = 0;
  let d = 0;
  for (let i = 0; i < b.length; i++) { n += (a[i]! - b[i]!) ** 2; d += b[i]! ** 2; }
  return Math.sqrt(n / d);
};

let dir = '';
beforeAll(() => {
  ensureBuilt();
  dir = mkdtempSync(path.join(tmpdir(), 'retnetc-cli-logits-'));
}, 240_000);
afterAll(() => { if (dir) rmSync(dir, { recursive: true, force: true }); });

describe.skipIf(!present && !process.env['CI'])('retnetc logits', () => {
  test('the fixture is there', () => expect(present, `${CK} is missing`).toBe(true));

  const runs: [string, string, string[]][] = [
    ['cpu', 'parallel', []], ['cpu', 'chunkwise', ['--chunk', '5']], ['cpu', 'recurrent', []], ['webgpu', 'chunkwise', ['--chunk', '8']], ['native', 'chunkwise', ['--chunk', '6']], ['native', 'recurrent', []],
  ];
  for (const [target, mode, extra] of runs) {
    test(`${target} ${mode} ${extra.join(' ')}: logits within 1e-4 of torchscale's recurrent logits`, async (ctx) => {
      const out = path.join(dir, `logits-${target}-${mode}.safetensors`);
      const r = await cli(['logits', '--checkpoint', CK, '--mode', mode, ...extra, '--target', target, '--out', out]);
      if (target === 'webgpu' && r.code !== 0 && /no WebGPU adapter/.test(r.stderr) && !REQUIRE_WEBGPU) { console.warn(`[cli-logits] skipping WebGPU: ${r.stderr.trim()}`); ctx.skip(); }
      expectOk(r);
      const chunk = extra[1];
      expect(r.stdout).toMatch(new RegExp(`^wrote logits f32\\[2, 24, 61\\] to ${escapeRe(out)} \\(mode ${mode}${chunk ? `, chunk ${chunk}` : mode === 'recurrent' ? '' : ', chunk \\d+'}, target ${target}, \\d+ ms\\)\\n$`));
      const got = await readSafetensorsFile(out);
      expect([...got.tensors.keys()]).toEqual(['logits']);
      const logits = got.tensors.get('logits')!;
      expect(logits.dtype).toBe('F32');
      expect(logits.shape).toEqual([2, 24, 61]);
      expect(got.metadata['mode']).toBe(mode);
      expect(got.metadata['target']).toBe(target);
      if (chunk) expect(got.metadata['chunk']).toBe(chunk);
      const ref = (await readSafetensorsFile(CK)).tensors.get('logits.recurrent')!;
      const e = relRmse(toFloat64(logits), toFloat64(ref));
      console.log(`[cli-logits] ${target} ${mode} ${extra.join(' ')}: rel. RMSE ${e.toExponential(2)}`);
      expect(e).toBeLessThanOrEqual(1e-4);
    }, 90_000);
  }

  test('--tokens takes the tokens from another file', async () => {
    const tokens = path.join(dir, 'tokens.safetensors');
    await writeSafetensorsFile(tokens, new Map([['tokens', fromFloat64([1, 2, 3, 60, 0], [1, 5], 'I32')]]));
    const out = path.join(dir, 'tok-out.safetensors');
    const r = await cli(['logits', '--checkpoint', CK, '--mode', 'recurrent', '--tokens', tokens, '--out', out]);
    expectOk(r);
    expect(r.stdout).toMatch(/^wrote logits f32\[1, 5, 61\]/);
  }, 60_000);

  // ---- bad inputs ----------------------------------------------------------------------------

  /** The fixture with tensors changed (undefined removes one) and metadata changed. */
  async function modified(name: string, change: Record<string, Tensor | undefined>, meta: Record<string, string> = {}): Promise<string> {
    const { tensors, metadata } = await readSafetensorsFile(CK);
    for (const [k, t] of Object.entries(change)) { if (t) tensors.set(k, t); else tensors.delete(k); }
    const file = path.join(dir, `${name}.safetensors`);
    await writeSafetensorsFile(file, tensors, { ...metadata, ...meta });
    return file;
  }
  const logits = (file: string, more: string[] = []) => cli(['logits', '--checkpoint', file, '--mode', 'parallel', '--out', path.join(dir, 'bad-out.safetensors'), ...more]);
  const cfg = JSON.parse(readFileSync(CK).subarray(8, 8 + Number(readFileSync(CK).readBigUInt64LE(0))).toString('utf8'))['__metadata__']?.config ?? '{}';
  const withConfig = (patch: Record<string, unknown>) => JSON.stringify({ ...JSON.parse(cfg), ...patch });

  const cases: [string, () => Promise<string>, RegExp, string[]?][] = [
    ['a missing tensor', () => modified('missing', { 'layers.1.ffn.gate.weight': undefined }), /: error: missing weight 'layers\.1\.ffn\.gate\.weight' \(expected \[128, 64\]\)$/],
    ['an extra tensor', () => modified('extra', { 'layers.2.ffn.gate.weight': fromFloat64(new Float64Array(128 * 64), [128, 64], 'F32') }), /: error: unexpected tensor 'layers\.2\.ffn\.gate\.weight' \[128, 64\]: 'retnet' has no such weight$/],
    ['a misshaped tensor', () => modified('misshaped', { 'layers.0.retention.v_proj.weight': fromFloat64(new Float64Array(64 * 64), [64, 64], 'F32') }), /: error: weight 'layers\.0\.retention\.v_proj\.weight' has shape \[64, 64\], but the model expects \[128, 64\]$/],
    ['a truncated file', async () => { const f = path.join(dir, 'truncated.safetensors'); const b = readFileSync(CK); writeFileSync(f, b.subarray(0, b.length - 1000)); return f; }, /truncated\.safetensors: error: .*(truncat|short|end|size|length|bytes)/i],
    ['a file cut inside its header', async () => { const f = path.join(dir, 'cut.safetensors'); writeFileSync(f, readFileSync(CK).subarray(0, 100)); return f; }, /cut\.safetensors: error: truncated file: /],
    ['float tokens', () => modified('floattokens', { tokens: fromFloat64(new Float64Array(48), [2, 24], 'F32') }), /: error: 'tokens' must be int32 \[B, T\], got f32 \[2, 24\]; give the tokens with --tokens FILE\.safetensors$/],
    ['a config that is not JSON', () => modified('notjson', {}, { config: '{"decoder_embed_dim": 64,' }), /: error: config is not JSON: /],
    ['deepnorm: true', () => modified('deepnorm', {}, { config: withConfig({ deepnorm: true }) }), /: error: config: deepnorm: true is not supported: /],
    ['post-norm', () => modified('postnorm', {}, { config: withConfig({ subln: false, decoder_normalize_before: false }) }), /: error: config: decoder_normalize_before: false \(with subln: false\) is not supported: /],
    ['activation relu', () => modified('relu', {}, { config: withConfig({ activation_fn: 'relu' }) }), /: error: config: activation_fn: "relu" is not supported \(retnet takes swish or gelu\)$/],
    ['heads not dividing embed_dim', () => modified('heads', {}, { config: withConfig({ decoder_retention_heads: 3 }) }), /: error: config: decoder_embed_dim: 64 is not divisible by decoder_retention_heads: 3$/],
    ['an odd key head dim', () => modified('oddk', {}, { config: withConfig({ decoder_retention_heads: 64, decoder_value_embed_dim: 128 }) }), /: error: config: .*odd key head dim 1/],
    ['an unknown config key', () => modified('unknownkey', {}, { config: withConfig({ decoder_embd_dim: 64 }) }), /: error: config: unknown RetNetConfig key 'decoder_embd_dim' \(value 64\) \(did you mean decoder_embed_dim\?\)$/],
    ['a token out of range', () => modified('badtoken', { tokens: fromFloat64([...new Array(47).fill(1), 61], [2, 24], 'I32') }), /: error: tokens\[1, 23\] = 61 is outside the vocabulary \[0, 61\)$/],
    ['an unknown mode', async () => CK, /^retnetc: error: unknown mode 'paralel' \(expected parallel, chunkwise, recurrent\) \(did you mean parallel\?\)$/, ['--mode', 'paralel']],
  ];
  for (const [what, make, pattern, args] of cases) {
    test(`${what}: one line, exit 1`, async () => {
      const file = await make();
      const r = args ? await cli(['logits', '--checkpoint', file, '--out', path.join(dir, 'bad-out.safetensors'), ...args]) : await logits(file);
      expectUserError(r, pattern);
      expect(r.stderr.trim().split('\n'), r.stderr).toHaveLength(1);
      expect(r.stdout).toBe('');
    }, 60_000);
  }

  test('a missing --out or --mode is one line', async () => {
    for (const args of [['--checkpoint', CK, '--mode', 'parallel'], ['--checkpoint', CK, '--out', path.join(dir, 'x.safetensors')]]) {
      const r = await cli(['logits', ...args]);
      expectUserError(r, /^retnetc: error: --(out OUT|mode parallel\|chunkwise\|recurrent)[^\n]* is required \(retnetc logits --help for the usage\)$/);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
  }, 60_000);

  test.skipIf(existsSync('/usr/lib/x86_64-linux-gnu/libcuda.so.1') || !!process.env['RETNETC_LIBCUDA'])('--target cuda without a CUDA driver is one line', async () => {
    const r = await cli(['logits', '--checkpoint', CK, '--mode', 'parallel', '--target', 'cuda', '--out', path.join(dir, 'cuda.safetensors')]);
    expectUserError(r, /^retnetc: error: no CUDA driver: /);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  }, 60_000);

  test('--chunk with --mode recurrent is refused; --out cannot be the checkpoint', async () => {
    expectUserError(await cli(['logits', '--checkpoint', CK, '--mode', 'recurrent', '--chunk', '4', '--out', path.join(dir, 'x.safetensors')]), /^retnetc: error: --chunk does not apply to --mode recurrent/);
    expectUserError(await cli(['logits', '--checkpoint', CK, '--mode', 'parallel', '--out', CK]), /^retnetc: error: --out .* is the --checkpoint file/);
  }, 60_000);
});
