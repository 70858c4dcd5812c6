// `retnetc generate` end to end on a small random byte-level checkpoint (the layout retnetc train
// writes) and on a torchscale fixture (vocab 61, ids): greedy text identical in every mode (cpu)
// and on native and webgpu; stdout is exactly the continuation (bytes as UTF-8, matching the generate API's
// tokens), stderr one line of prefill and decode tokens/s; sampling is seeded; then the bad
// inputs, each one line with a non-zero exit.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { generate } from '../runtime/generate/generate.js';
import { cli, ensureBuilt, expectUserError } from './helpers/cli.js';
import { randomRetnet, writeCheckpointDir } from './helpers/random-retnet.js';
import { findCompiler } from '../targets/native/compile.js';

const FIXTURE = new URL('../../shared/fixtures/torchscale/retnet-tiny.safetensors', import.meta.url).pathname;
const { model, weights } = randomRetnet(77);
const PROMPT = 'Call me é';
const N = 12;

let dir = '';
let ck = '';
beforeAll(async () => {
  ensureBuilt();
  dir = mkdtempSync(path.join(tmpdir(), 'retnetc-cli-generate-'));
  ck = await writeCheckpointDir(path.join(dir, 'run'), model, weights);
}, 240_000);
afterAll(() => { if (dir) rmSync(dir, { recursive: true, force: true }); });

const STATS = /^prefill: (\d+) tokens? in \d+\.\d{3} s, [\d.e+]+ tokens\/s \((parallel|chunkwise|recurrent)(, chunk \d+)?\); decode: (\d+) tokens? in \d+\.\d{3} s, [\d.e+]+ tokens\/s; target (\w+) \(warm-up \d+\.\d{3} s\)\n$/;

describe('retnetc generate', () => {
  test('greedy: the same text in every mode on cpu and on native; stdout is the continuation, stderr the rates', async () => {
    const want = await generate({ model, weights, prompt: Array.from(new TextEncoder().encode(PROMPT)), tokens: N, temperature: 0, target: 'cpu' });
    const text = new TextDecoder().decode(Uint8Array.from(want.tokens));
    // Every mode on cpu; native once (tests/generate.test.ts runs every mode there; each native plan compiles C).
    const runs = [...(['parallel', 'chunkwise', 'recurrent'] as const).map((mode) => ({ target: 'cpu', mode })), ...(findCompiler() ? [{ target: 'native', mode: 'chunkwise' as const }] : [])];
    const results = await Promise.all(runs.map(({ target, mode }) => cli(['generate', '--checkpoint', ck, '--prompt', PROMPT, '--tokens', String(N), '--temperature', '0', '--mode', mode, '--target', target, ...(mode === 'chunkwise' ? ['--chunk', '4'] : [])])));
    results.forEach((r, i) => {
      const { target, mode } = runs[i]!;
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout, `${target} ${mode}`).toBe(text);
      const m = STATS.exec(r.stderr);
      expect(m, r.stderr).not.toBeNull();
      expect(m![1]).toBe(String(new TextEncoder().encode(PROMPT).length));
      expect(m![2]).toBe(mode);
      expect(m![3]).toBe(mode === 'chunkwise' ? ', chunk 4' : mode === 'parallel' ? ', chunk 64' : undefined);
      expect(m![4]).toBe(String(N - 1));
      expect(m![5]).toBe(target);
    });
  }, 120_000);

  test('webgpu: the same greedy text as cpu', async (ctx) => {
    const args = ['generate', '--checkpoint', ck, '--prompt', PROMPT, '--tokens', String(N), '--temperature', '0', '--chunk', '4'];
    const [cpu, gpu] = await Promise.all([cli([...args, '--target', 'cpu']), cli([...args, '--target', 'webgpu'])]);
    if (gpu.code !== 0 && /no WebGPU adapter/.test(gpu.stderr) && process.env['REQUIRE_WEBGPU'] !== '1') { console.warn(`[cli-generate] skipping WebGPU: ${gpu.stderr.trim()}`); ctx.skip(); }
    expect(gpu.code, gpu.stderr).toBe(0);
    expect(gpu.stderr).toMatch(STATS);
    expect(gpu.stdout).toBe(cpu.stdout);
  }, 120_000);

  test('sampling: the same seed gives the same text, another seed another; the default target is named', async () => {
    const args = ['generate', '--checkpoint', path.join(ck, 'model.safetensors'), '--prompt', 'The whale', '--tokens', '16', '--temperature', '1.5', '--top-k', '200', '--top-p', '0.99', '--chunk', '4'];
    const [a, b, c] = await Promise.all([cli([...args, '--seed', '3']), cli([...args, '--seed', '3']), cli([...args, '--seed', '4'])]);
    for (const r of [a, b, c]) { expect(r.code, r.stderr).toBe(0); expect(r.stderr).toMatch(STATS); }
    expect(a.stdout).toBe(b.stdout);
    expect(a.stdout).not.toBe(c.stdout);
    expect(a.stdout.length).toBeGreaterThan(0);
  }, 120_000);

  test('a fixture with 61 tokens: --prompt-tokens prints ids; a text prompt is refused', async () => {
    const r = await cli(['generate', '--checkpoint', FIXTURE, '--prompt-tokens', '1,2,3', '--tokens', '5', '--temperature', '0', '--target', 'cpu']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^\d+( \d+){4}\n$/);
    for (const id of r.stdout.trim().split(' ')) expect(Number(id)).toBeLessThan(61);
    expectUserError(await cli(['generate', '--checkpoint', FIXTURE, '--prompt', 'hi', '--target', 'cpu']), /retnet-tiny\.safetensors: error: its vocabulary has 61 tokens, not the 256 bytes .*--prompt-tokens/);
    expectUserError(await cli(['generate', '--checkpoint', FIXTURE, '--prompt-tokens', '1,61', '--target', 'cpu']), /^retnetc: error: --prompt-tokens: item 1 is 61, outside the vocabulary \[0, 61\)$/);
    expectUserError(await cli(['generate', '--checkpoint', FIXTURE, '--prompt-tokens', '1,x', '--target', 'cpu']), /^retnetc: error: --prompt-tokens: item 1 'x' is not a token id/);
  }, 120_000);

  test('bad input: one line each, exit 1', async () => {
    const notCk = path.join(dir, 'empty-dir');
    mkdirSync(notCk, { recursive: true });
    const good = readFileSync(path.join(ck, 'model.safetensors'));
    const truncated = path.join(dir, 'truncated.safetensors');
    writeFileSync(truncated, good.subarray(0, Math.floor(good.length / 2)));
    const corrupt = path.join(dir, 'corrupt.safetensors');
    writeFileSync(corrupt, Buffer.from('this is not a safetensors file at all, just text'));
    // Another model's weights under this config: the embedding one token short.
    const emb = weights.get('embed_tokens.weight')!;
    const misshaped = await writeCheckpointDir(path.join(dir, 'misshaped'), model, new Map([...weights, ['embed_tokens.weight', { shape: [255, emb.shape[1]!], data: emb.data.subarray(0, 255 * emb.shape[1]!) }]]));
    const base = ['generate', '--checkpoint', ck, '--target', 'cpu'];
    const cases: [string[], RegExp][] = [
      [['generate', '--prompt', 'x'], /^retnetc: error: --checkpoint PATH is required/],
      [['generate', '--checkpoint', path.join(dir, 'nope'), '--prompt', 'x'], /^retnetc: error: .*nope: no such file or directory$/],
      [['generate', '--checkpoint', notCk, '--prompt', 'x'], /^retnetc: error: .*empty-dir: a directory without model\.safetensors, so not a retnetc checkpoint/],
      [['generate', '--checkpoint', truncated, '--prompt', 'x'], /^.*truncated\.safetensors: error: .+/],
      [['generate', '--checkpoint', corrupt, '--prompt', 'x'], /^.*corrupt\.safetensors: error: .+/],
      [['generate', '--checkpoint', misshaped, '--prompt', 'x'], /misshaped: error: weight 'embed_tokens\.weight' has shape \[255, 16\], but the model expects \[256, 16\]$/],
      [[...base], /^retnetc: error: --prompt TEXT is required/],
      [[...base, '--prompt', ''], /^retnetc: error: --prompt is empty/],
      [[...base, '--prompt', 'x', '--prompt-tokens', '1'], /^retnetc: error: --prompt and --prompt-tokens are both given/],
      [[...base, '--prompt', 'x', '--tokens', '0'], /^retnetc: error: --tokens must be an integer from 1 to/],
      [[...base, '--prompt', 'x', '--tokens', '-3'], /^retnetc: error: .*--tokens/],
      [[...base, '--prompt', 'x', '--temperature', '-1'], /^retnetc: error: .*--temperature/],
      [[...base, '--prompt', 'x', '--temperature', 'hot'], /^retnetc: error: --temperature must be a decimal number, got 'hot'$/],
      [[...base, '--prompt', 'x', '--top-p', '0'], /^retnetc: error: --top-p must be in \(0, 1\], got 0$/],
      [[...base, '--prompt', 'x', '--top-p', '1.5'], /^retnetc: error: --top-p must be in \(0, 1\], got 1\.5$/],
      [[...base, '--prompt', 'x', '--top-k', '0'], /^retnetc: error: --top-k must be an integer from 1/],
      [[...base, '--prompt', 'x', '--mode', 'recurent'], /^retnetc: error: unknown mode 'recurent' .*did you mean recurrent/],
      [[...base, '--prompt', 'x', '--mode', 'recurrent', '--chunk', '8'], /^retnetc: error: --chunk does not apply to --mode recurrent/],
      [['generate', '--checkpoint', ck, '--prompt', 'x', '--target', 'gpu'], /^retnetc: error: unknown target 'gpu'/],
      [[...base, '--prompt', 'x', 'extra'], /^retnetc: error: unexpected argument 'extra'/],
    ];
    const results = await Promise.all(cases.map(([args]) => cli(args)));
    results.forEach((r, i) => {
      expectUserError(r, cases[i]![1]);
      expect(r.stderr.trim().split('\n'), cases[i]![0].join(' ')).toHaveLength(1);
      expect(r.stdout).toBe('');
    });
    expect(existsSync(notCk)).toBe(true);
  }, 120_000);
});
