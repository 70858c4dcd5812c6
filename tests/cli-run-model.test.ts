// `retnetc run FILE.ret --model NAME --checkpoint CK` on the torchscale fixtures: the model's
// forward with the checkpoint's weights (hypers from its config), on the reference and compiled
// targets, against torchscale's recurrent logits; --repeat times the forward; --size names a
// size (used when the checkpoint has no config, checked against it when it has one).
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { fromFloat64, readSafetensorsFile, toFloat64, writeSafetensorsFile } from '../runtime/io/safetensors.js';
import { cli, ensureBuilt, escapeRe, expectOk, expectUserError } from './helpers/cli.js';

const FIXTURES = new URL('../../shared/fixtures/torchscale/', import.meta.url).pathname;
const TINY = `${FIXTURES}retnet-tiny.safetensors`;
const GELU = `${FIXTURES}retnet-tiny-gelu-pad.safetensors`;
const present = existsSync(TINY) && existsSync(GELU);

const relRmse = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let n = 0;
  let d = 0;
  for (let i = 0; i < b.length; i++) { n += (a[i]! - b[i]!) ** 2; d += b[i]! ** 2; }
  return Math.sqrt(n / d);
};

let dir = '';
beforeAll(() => {
  ensureBuilt();
  dir = mkdtempSync(path.join(tmpdir(), 'retnetc-cli-run-model-'));
}, 240_000);
afterAll(() => { if (dir) rmSync(dir, { recursive: true, force: true }); });

const run = (args: string[]) => cli(['run', 'models/retnet.ret', '--model', 'retnet', ...args]);

async function expectLogits(out: string, ck: string, shape: number[], dtype = 'F32'): Promise<number> {
  const got = (await readSafetensorsFile(out)).tensors.get('logits')!;
  expect(got.shape).toEqual(shape);
  expect(got.dtype).toBe(dtype);
  const e = relRmse(toFloat64(got), toFloat64((await readSafetensorsFile(ck)).tensors.get('logits.recurrent')!));
  expect(e).toBeLessThanOrEqual(1e-4);
  return e;
}

describe.skipIf(!present && !process.env['CI'])('retnetc run --model', () => {
  test('the fixtures are there', () => expect(present).toBe(true));

  test('the reference on retnet-tiny (default target) writes f64 logits', async () => {
    const out = path.join(dir, 'ref.safetensors');
    const r = await run(['--checkpoint', TINY, '--out', out]);
    expectOk(r);
    expect(r.stdout).toBe(`wrote logits f64[2, 24, 61] to ${out}\n`);
    console.log(`[cli-run-model] reference retnet-tiny: rel. RMSE ${(await expectLogits(out, TINY, [2, 24, 61], 'F64')).toExponential(2)}`);
    const meta = (await readSafetensorsFile(out)).metadata;
    expect(meta['model']).toBe('retnet');
    expect(meta['target']).toBe('reference');
  }, 60_000);

  for (const [ck, shape, sched] of [[GELU, [1, 21, 61], ['--schedule', 'chunkwise', '--chunk', '4']], [TINY, [2, 24, 61], ['--schedule', 'recurrent']]] as const) {
    test(`cpu ${sched.join(' ')} on ${path.basename(ck)} with --repeat 2 prints the timing`, async () => {
      const out = path.join(dir, `cpu-${path.basename(ck)}`);
      const r = await run(['--checkpoint', ck, '--target', 'cpu', ...sched, '--repeat', '2', '--out', out]);
      expectOk(r);
      const L = ck === TINY ? 2 : 1;
      expect(r.stdout).toMatch(new RegExp(`^timing: cpu ${sched[1]} model retnet \\(${L} layers?\\) forward: compile [0-9.]+ ms, first run [0-9.]+ ms, median [0-9.]+ ms per run over 2 more \\(min [0-9.]+, max [0-9.]+\\)\\nwrote logits f32\\[${shape.join(', ')}\\] to ${escapeRe(out)}\\n$`));
      console.log(`[cli-run-model] cpu ${sched.join(' ')} ${path.basename(ck)}: rel. RMSE ${(await expectLogits(out, ck, [...shape])).toExponential(2)}`);
    }, 60_000);
  }

  test('--inputs gives the tokens; --size names the size when the checkpoint has no config', async () => {
    const { tensors } = await readSafetensorsFile(TINY);
    const bare = path.join(dir, 'noconfig.safetensors');
    await writeSafetensorsFile(bare, tensors); // no metadata: no config
    const toks = path.join(dir, 'toks.safetensors');
    await writeSafetensorsFile(toks, new Map([['tokens', tensors.get('tokens')!]]));
    const out = path.join(dir, 'sized.safetensors');
    expectOk(await run(['--checkpoint', bare, '--size', 'tiny', '--inputs', toks, '--target', 'cpu', '--out', out]));
    await expectLogits(out, TINY, [2, 24, 61]);
    // Without --size the default hypers do not fit the weights: one line naming the tensor and both shapes.
    expectUserError(await run(['--checkpoint', bare, '--target', 'cpu', '--out', out]), /noconfig\.safetensors: error: weight 'embed_tokens\.weight' has shape \[61, 64\], but the model expects \[32000, 512\]$/);
  }, 60_000);

  test('a --size that disagrees with the checkpoint config names the hyper', async () => {
    expectUserError(await run(['--checkpoint', GELU, '--size', 'tiny', '--out', path.join(dir, 'x.safetensors')]),
      /retnet-tiny-gelu-pad\.safetensors: error: --size tiny sets value_dim = 128, but the checkpoint's config has decoder_value_embed_dim: 64 \(value_dim = 64\)/);
    expectUserError(await run(['--checkpoint', TINY, '--size', 'huge', '--out', path.join(dir, 'x.safetensors')]), /^retnetc: error: --size huge: model 'retnet' has no size 'huge' \(sizes: default, tiny, /);
  }, 60_000);

  test('mistakes: --fn with --model, no --checkpoint, --grad, a token out of range, an unknown model', async () => {
    const out = path.join(dir, 'x.safetensors');
    expectUserError(await run(['--fn', 'msr', '--checkpoint', TINY, '--out', out]), /^retnetc: error: --fn and --model do not go together/);
    expectUserError(await run(['--out', out]), /^retnetc: error: --model needs --checkpoint CK\.safetensors/);
    expectUserError(await run(['--checkpoint', TINY, '--grad', TINY, '--out', out]), /^retnetc: error: --grad does not apply to --model/);
    const toks = path.join(dir, 'badtoks.safetensors');
    await writeSafetensorsFile(toks, new Map([['tokens', fromFloat64([0, -1, 3], [1, 3], 'I32')]]));
    expectUserError(await run(['--checkpoint', TINY, '--inputs', toks, '--target', 'cpu', '--out', out]), /badtoks\.safetensors: error: tokens\[0, 1\] = -1 is outside the vocabulary \[0, 61\)$/);
    expectUserError(await cli(['run', 'models/retnet.ret', '--model', 'retnt', '--checkpoint', TINY, '--out', out]), /^models\/retnet\.ret:1:1: error: no model 'retnt' \(models: retnet\) \(did you mean retnet\?\)$/);
  }, 60_000);
});
