// `retnetc export` end to end: a training checkpoint directory (DIR/model.safetensors beside the
// optimizer and trainer state) exported as one torchscale-format file (the bound weights only,
// f32 bit for bit, the config in the metadata), which `retnetc logits` reads back: its logits
// equal those computed directly from the weights (rel. RMSE <= 1e-5; in fact identical, the same
// plans on the same weights). A fixture round-trips with its tokens. Then the bad inputs.
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { fromFloat64, readSafetensorsFile, toFloat64, writeSafetensorsFile } from '../runtime/io/safetensors.js';
import { MODEL_FILE, OPTIMIZER_FILE, TRAINER_FILE } from '../runtime/io/checkpoint-path.js';
import { runModelMode } from '../runtime/exec.js';
import { openTarget } from '../runtime/targets.js';
import { cli, ensureBuilt, escapeRe, expectOk, expectUserError } from './helpers/cli.js';
import { randomRetnet, writeCheckpointDir } from './helpers/random-retnet.js';

const FIXTURE = new URL('../../shared/fixtures/torchscale/retnet-tiny.safetensors', import.meta.url).pathname;
const { model, weights } = randomRetnet(4242);

const relRmse = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let n = 0, d = 0;
  for (let i = 0; i < b.length; i++) { n += (a[i]! - b[i]!) ** 2; d += b[i]! ** 2; }
  return Math.sqrt(n / d);
};

let dir = '';
let ck = '';
beforeAll(async () => {
  ensureBuilt();
  dir = mkdtempSync(path.join(tmpdir(), 'retnetc-cli-export-'));
  ck = await writeCheckpointDir(path.join(dir, 'run'), model, weights);
  // What else a training checkpoint holds: none of it may reach the export.
  const first = [...weights][0]!;
  await writeSafetensorsFile(path.join(ck, OPTIMIZER_FILE), new Map([[`m.${first[0]}`, fromFloat64(first[1].data, first[1].shape, 'F32')]]));
  writeFileSync(path.join(ck, TRAINER_FILE), JSON.stringify({ step: 3 }));
}, 240_000);
afterAll(() => { if (dir) rmSync(dir, { recursive: true, force: true }); });

describe('retnetc export', () => {
  test('a checkpoint directory: torchscale format, weights bit for bit; logits on the file equal the direct ones', async () => {
    const out = path.join(dir, 'exported.safetensors');
    const r = await cli(['export', '--checkpoint', ck, '--out', out]);
    expectOk(r);
    expect(r.stdout).toMatch(new RegExp(`^wrote ${escapeRe(out)} \\(torchscale format: ${weights.size} weights, \\d+ parameters, f32, config in the metadata\\)\\n$`));
    const file = await readSafetensorsFile(out);
    expect([...file.tensors.keys()].sort()).toEqual([...weights.keys()].sort());
    const stored = await readSafetensorsFile(path.join(ck, MODEL_FILE));
    for (const [name, t] of file.tensors) {
      expect(t.dtype).toBe('F32');
      expect(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).equals(Buffer.from(stored.tensors.get(name)!.data.buffer, stored.tensors.get(name)!.data.byteOffset, stored.tensors.get(name)!.data.byteLength)), name).toBe(true);
    }
    const config = JSON.parse(file.metadata['config']!) as Record<string, unknown>;
    expect(config).toMatchObject({ decoder_embed_dim: 16, decoder_value_embed_dim: 16, decoder_retention_heads: 2, decoder_ffn_embed_dim: 24, decoder_layers: 2, vocab_size: 256, activation_fn: 'swish' });

    const tokens = Int32Array.from([84, 104, 101, 32, 119, 104, 97, 108, 101, 226, 130, 172, 10]);
    const tokFile = path.join(dir, 'tokens.safetensors');
    await writeSafetensorsFile(tokFile, new Map([['tokens', { dtype: 'I32' as const, shape: [1, tokens.length], data: tokens }]]));
    const { exec, release } = openTarget('cpu');
    for (const mode of ['chunkwise', 'recurrent'] as const) {
      const logitsOut = path.join(dir, `logits-${mode}.safetensors`);
      expectOk(await cli(['logits', '--checkpoint', out, '--tokens', tokFile, '--mode', mode, ...(mode === 'chunkwise' ? ['--chunk', '5'] : []), '--target', 'cpu', '--out', logitsOut]));
      const got = toFloat64((await readSafetensorsFile(logitsOut)).tensors.get('logits')!);
      const want = (await runModelMode(model, weights, { shape: [1, tokens.length], data: tokens }, mode, exec, 5)).get('logits')!;
      const e = relRmse(got, Float32Array.from(want.data));
      console.log(`[cli-export] ${mode}: logits of the export vs direct: rel. RMSE ${e.toExponential(2)}`);
      expect(e).toBeLessThanOrEqual(1e-5);
    }
    await release();
  }, 120_000);

  test('a torchscale fixture round-trips with its tokens: logits without --tokens equal the original file\'s', async () => {
    const out = path.join(dir, 'fixture-export.safetensors');
    const r = await cli(['export', '--checkpoint', FIXTURE, '--out', out]);
    expectOk(r);
    expect(r.stdout).toContain('23 weights and tokens');
    const [a, b] = [path.join(dir, 'fa.safetensors'), path.join(dir, 'fb.safetensors')];
    const [ra, rb] = await Promise.all([
      cli(['logits', '--checkpoint', FIXTURE, '--mode', 'parallel', '--target', 'cpu', '--out', a]),
      cli(['logits', '--checkpoint', out, '--mode', 'parallel', '--target', 'cpu', '--out', b]),
    ]);
    expectOk(ra);
    expectOk(rb);
    const la = (await readSafetensorsFile(a)).tensors.get('logits')!;
    const lb = (await readSafetensorsFile(b)).tensors.get('logits')!;
    expect(Buffer.from(lb.data.buffer, lb.data.byteOffset, lb.data.byteLength).equals(Buffer.from(la.data.buffer, la.data.byteOffset, la.data.byteLength))).toBe(true);
  }, 120_000);

  test('bad input: one line each, exit 1, nothing written', async () => {
    const notCk = path.join(dir, 'not-a-checkpoint');
    mkdirSync(notCk, { recursive: true });
    const truncated = path.join(dir, 'truncated.safetensors');
    const good = readFileSync(path.join(ck, MODEL_FILE));
    writeFileSync(truncated, good.subarray(0, good.length - 100));
    const locked = path.join(dir, 'locked');
    mkdirSync(locked, { recursive: true });
    chmodSync(locked, 0o500);
    const cases: [string[], RegExp][] = [
      [['export', '--out', path.join(dir, 'x.safetensors')], /^retnetc: error: --checkpoint PATH is required/],
      [['export', '--checkpoint', ck], /^retnetc: error: --out FILE\.safetensors is required$/],
      [['export', '--checkpoint', ck, '--out', path.join(dir, 'x.bin')], /^retnetc: error: --out .*x\.bin: the file name must end in \.safetensors$/],
      [['export', '--checkpoint', notCk, '--out', path.join(dir, 'x.safetensors')], /^retnetc: error: .*not-a-checkpoint: a directory without model\.safetensors/],
      [['export', '--checkpoint', truncated, '--out', path.join(dir, 'x.safetensors')], /^.*truncated\.safetensors: error: .+/],
      [['export', '--checkpoint', ck, '--out', path.join(ck, MODEL_FILE)], /^retnetc: error: --out .* is the checkpoint's weights file/],
    ];
    // Root ignores permissions: the unwritable --out only where they hold.
    if (process.getuid?.() !== 0) cases.push([['export', '--checkpoint', ck, '--out', path.join(locked, 'x.safetensors')], /^.*locked\/x\.safetensors: error: cannot write: permission denied$/]);
    const results = await Promise.all(cases.map(([args]) => cli(args)));
    results.forEach((r, i) => {
      expectUserError(r, cases[i]![1]);
      expect(r.stderr.trim().split('\n'), cases[i]![0].join(' ')).toHaveLength(1);
    });
    chmodSync(locked, 0o700);
    expect(() => readFileSync(path.join(dir, 'x.safetensors'))).toThrow();
    // The checkpoint's own weights are untouched.
    expect(readFileSync(path.join(ck, MODEL_FILE)).equals(good)).toBe(true);
  }, 120_000);
});
