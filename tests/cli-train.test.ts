// retnetc train as a user runs it: SIGINT / SIGTERM save the last completed step and exit 130 /
// 143 with how to resume, and --resume then writes the metrics.jsonl of an uninterrupted run (bit
// for bit); `retnetc logits` reads DIR/model.safetensors as it is, and its logits are the
// trainer's forward (the cross-entropy of them is the validation loss the trainer logged); every
// bad input is one line and exit 1. Native target, tiny shapes; skipped without native unless
// REQUIRE_NATIVE=1.
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { findCompiler, NO_COMPILER } from '../targets/native/compile.js';
import { loadNativeAddon } from '../runtime/native/addon.js';
import { compileModelGrad } from '../compiler/model-grad.js';
import { makeSchedule } from '../compiler/schedule.js';
import { MODEL_FILE, OPTIMIZER_FILE } from '../runtime/io/checkpoint-path.js';
import { readSafetensorsFile, serializeSafetensors } from '../runtime/io/safetensors.js';
import { openTarget, withTargetDefaults } from '../runtime/targets.js';
import { loadCheckpoint } from '../runtime/train/checkpoint.js';
import { splitCorpus, validationBatches } from '../runtime/train/data.js';
import { forwardLogits, METRICS_FILE, readMetrics, type StepMetrics } from '../runtime/train/trainer.js';
import { cli, ensureBuilt, escapeRe, expectUserError, MAIN, ROOT } from './helpers/cli.js';
import { relErr } from './helpers/harness.js';

const cc = findCompiler();
const addon = cc ? loadNativeAddon() : { error: NO_COMPILER };
const why = !cc ? NO_COMPILER : 'error' in addon ? addon.error : undefined;
if (why) console.log(`[cli-train] native runs skipped: ${why}`);

const tmp = mkdtempSync(path.join(os.tmpdir(), 'retnetc-cli-train-'));
const words = 'call me ishmael some years ago never mind how long precisely'.split(' ');
let x = 7;
const text = Array.from({ length: 1600 }, () => words[(x = (x * 1103515245 + 12345) % 2 ** 31) % words.length]).join(' ');
const data = path.join(tmp, 'words.txt');
writeFileSync(data, text);
const ARGS = ['--data', data, '--target', 'native', '--batch', '2', '--seq', '16', '--lr', '3e-3', '--eval-every', '10', '--save-every', '1000'];
const losses = (ms: readonly StepMetrics[]) => ms.map(({ tokens_per_s: _, ...m }) => m);

beforeAll(() => ensureBuilt(), 300_000);

/** Runs train and sends `sig` once the plain progress line of step `at` is out. */
function interrupted(args: string[], at: number, sig: NodeJS.Signals): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, 'train', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let sent = false;
    child.stdout.setEncoding('utf8').on('data', (c: string) => {
      stdout += c;
      if (!sent && new RegExp(`^step +${at}/`, 'm').test(stdout)) { sent = true; child.kill(sig); }
    });
    child.stderr.setEncoding('utf8').on('data', (c: string) => { stderr += c; });
    const timer = setTimeout(() => child.kill('SIGKILL'), 500_000);
    child.on('error', reject);
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
  });
}

describe.skipIf(!!why)('retnetc train on native', { timeout: 600_000 }, () => {
  const whole = path.join(tmp, 'whole');
  beforeAll(async () => {
    const r = await cli(['train', ...ARGS, '--steps', '60', '--out', whole], { timeoutMs: 500_000 });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^training retnet tiny \(147,776 parameters\) on .*words\.txt .* with native \(.*\): 60 steps of 2 x 16 bytes, lr 0\.003, chunkwise chunk 32; checkpoints in /);
    expect(r.stdout).toMatch(/^step +20\/60  loss \d\.\d{4}  val \d\.\d{4}  \S+ tokens\/s  lr \S+  eta \S+$/m);
    expect(r.stdout).toMatch(new RegExp(`^trained 60 steps \\(60 in all\\) in \\S+ on native \\(.*\\): loss \\d\\.\\d{3}, validation loss \\d\\.\\d{3} nats/byte, \\d+ tokens/s; checkpoint in ${escapeRe(whole)}, loss plot ${escapeRe(path.join(whole, 'loss.png'))}$`, 'm'));
    expect(readFileSync(path.join(whole, 'loss.svg'), 'utf8')).toMatch(/^<svg/);
  }, 600_000);

  test('SIGINT: the last completed step is saved, exit 130 with how to resume; --resume gives the uninterrupted metrics bit for bit', async () => {
    const part = path.join(tmp, 'part');
    const r = await interrupted([...ARGS, '--steps', '60', '--out', part], 20, 'SIGINT');
    expect(r.code, r.stdout + r.stderr).toBe(130);
    const m = /^retnetc: interrupted by SIGINT after step (\d+): checkpoint saved in (.*); continue with: retnetc train --resume (.*)$/.exec(r.stderr.trimEnd());
    expect(m, r.stderr).not.toBeNull();
    const step = Number(m![1]);
    expect(step).toBeGreaterThanOrEqual(20);
    expect(step).toBeLessThan(60);
    expect(m![2]).toBe(part);
    expect((await loadCheckpoint(part)).step).toBe(step);
    expect(readMetrics(path.join(part, METRICS_FILE))).toHaveLength(step);
    const again = await cli(['train', '--resume', part], { timeoutMs: 500_000 });
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(again.stdout).toMatch(new RegExp(`resuming at step ${step} of 60`));
    expect(losses(readMetrics(path.join(part, METRICS_FILE)))).toEqual(losses(readMetrics(path.join(whole, METRICS_FILE))));
    expect(readFileSync(path.join(part, MODEL_FILE))).toEqual(readFileSync(path.join(whole, MODEL_FILE)));
  });

  test('SIGTERM: saved, exit 143', async () => {
    const out = path.join(tmp, 'term');
    const r = await interrupted([...ARGS, '--steps', '60', '--out', out], 10, 'SIGTERM');
    expect(r.code, r.stderr).toBe(143);
    expect(r.stderr).toMatch(/^retnetc: interrupted by SIGTERM after step \d+: checkpoint saved in /);
    expect((await loadCheckpoint(out)).step).toBeGreaterThanOrEqual(10);
  });

  test('retnetc logits reads DIR/model.safetensors as it is: the trainer forward\'s logits, whose cross-entropy is the logged validation loss', async () => {
    const val = validationBatches(splitCorpus(new TextEncoder().encode(text), 2, 16).val, 16);
    expect(val).toHaveLength(1);
    const tokens = val[0]!.tokens;
    const tokFile = path.join(tmp, 'tokens.safetensors');
    writeFileSync(tokFile, serializeSafetensors(new Map([['tokens', { dtype: 'I32', shape: tokens.shape, data: tokens.data }]])));
    const outFile = path.join(tmp, 'logits.safetensors');
    const r = await cli(['logits', '--checkpoint', path.join(whole, MODEL_FILE), '--mode', 'chunkwise', '--target', 'native', '--tokens', tokFile, '--out', outFile]);
    expect(r.code, r.stderr).toBe(0);
    const logits = (await readSafetensorsFile(outFile)).tensors.get('logits')!;
    expect(logits.shape).toEqual([tokens.shape[0], 16, 256]);
    // The trainer's own forward on the checkpoint's weights.
    const ck = await loadCheckpoint(whole);
    const mg = compileModelGrad(ck.model, withTargetDefaults(makeSchedule('chunkwise', 64), 'native'));
    const { exec, release } = openTarget('native');
    let mine;
    try { mine = await forwardLogits(mg, ck.weights, tokens, exec); } finally { await release(); }
    expect(relErr(logits.data as Float32Array, mine.data).rel).toBeLessThanOrEqual(1e-6);
    // Cross-entropy of logits' logits in float64 = the last logged validation loss.
    const l = logits.data as Float32Array;
    let sum = 0;
    const targets = val[0]!.targets.data;
    for (let i = 0; i < targets.length; i++) {
      const row = l.subarray(i * 256, (i + 1) * 256);
      let mx = -Infinity;
      for (const v of row) mx = Math.max(mx, v);
      let s = 0;
      for (const v of row) s += Math.exp(v - mx);
      sum += mx + Math.log(s) - row[targets[i]!]!;
    }
    const logged = readMetrics(path.join(whole, METRICS_FILE)).at(-1)!.val_loss!;
    expect(Math.abs(sum / targets.length - logged) / logged).toBeLessThan(1e-5);
  });

  describe('bad input: one line, exit 1, nothing lost', () => {
    const file = (name: string, bytes: Uint8Array | string): string => { const f = path.join(tmp, name); writeFileSync(f, bytes); return f; };
    const run = (args: string[]) => cli(['train', '--target', 'native', '--batch', '2', '--seq', '16', ...args]);
    const oneLine = (r: { stderr: string }) => expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);

    test.each([
      ['an empty data file', () => ['--data', file('empty.txt', ''), '--out', path.join(tmp, 'o-bad')], /^retnetc: error: --data \S+empty\.txt: is empty: there is no text to train on$/],
      ['a binary data file', () => ['--data', file('bin.dat', Uint8Array.from({ length: 5000 }, (_, i) => (i * 31) % 256)), '--out', path.join(tmp, 'o-bad')], /^retnetc: error: --data \S+bin\.dat: looks binary \(\d+ NUL bytes in 5000\); give a UTF-8 text file$/],
      ['a data file shorter than one batch', () => ['--data', file('short.txt', 'tiny text'), '--out', path.join(tmp, 'o-bad')], /^retnetc: error: --data \S+short\.txt: holds 9 bytes, fewer than one batch \(2 windows of 17 bytes for --batch 2 --seq 16\) plus the held-out validation text; it needs at least 51 bytes/],
      ['--steps 0', () => ['--data', data, '--steps', '0', '--out', path.join(tmp, 'o-bad')], /^retnetc: error: --steps must be an integer from 1 to \d+, got 0$/],
      ['no --out', () => ['--data', data], /^retnetc: error: --out DIR is required/],
      ['an --out below a file', () => ['--data', data, '--out', path.join(file('plain.txt', 'x'), 'sub')], /^retnetc: error: --out \S+plain\.txt\/sub: cannot create the directory \(a file is in the way\)$/],
      ['--out a file', () => ['--data', data, '--out', file('plain2.txt', 'x')], /^retnetc: error: --out \S+plain2\.txt: (is a file, not a directory|cannot create the directory \(a file is in the way\))$/],
      ['a resume directory that is not a checkpoint', () => { const d = path.join(tmp, 'emptydir'); mkdirSync(d, { recursive: true }); return ['--resume', d]; }, /^retnetc: error: --resume \S+emptydir: has no trainer\.json, so it is not a checkpoint of 'retnetc train'/],
      ['a missing resume directory', () => ['--resume', path.join(tmp, 'nowhere')], /^retnetc: error: --resume \S+nowhere: no such directory$/],
      ['an unknown size', () => ['--data', data, '--size', 'huge', '--out', path.join(tmp, 'huge')], /^retnetc: error: unknown --size 'huge' \(sizes of retnet: .*tiny.*\)$/],
      ['a bad --lr', () => ['--data', data, '--lr', '-1', '--out', path.join(tmp, 'lr')], /^retnetc: error: .*--lr/],
    ])('%s', async (_, args, re) => {
      const r = await run(args());
      expectUserError(r, re);
      oneLine(r);
    });

    test('an --out that holds a checkpoint, without --resume: refused, the checkpoint untouched', async () => {
      const before = readFileSync(path.join(whole, MODEL_FILE));
      const r = await run(['--data', data, '--steps', '5', '--out', whole]);
      expectUserError(r, new RegExp(`^retnetc: error: --out ${escapeRe(whole)} already holds a checkpoint; resume it with --resume ${escapeRe(whole)}, or choose another --out`));
      oneLine(r);
      expect(readFileSync(path.join(whole, MODEL_FILE))).toEqual(before);
    });

    test('truncated and corrupt checkpoint files; a resume with another size', async () => {
      const copy = (name: string): string => {
        const d = path.join(tmp, name);
        mkdirSync(d, { recursive: true });
        for (const f of [MODEL_FILE, OPTIMIZER_FILE, 'trainer.json', METRICS_FILE]) copyFileSync(path.join(whole, f), path.join(d, f));
        return d;
      };
      const t = copy('truncated');
      const m = readFileSync(path.join(t, MODEL_FILE));
      writeFileSync(path.join(t, MODEL_FILE), m.subarray(0, m.length >> 1));
      let r = await cli(['train', '--resume', t, '--steps', '70']);
      expectUserError(r, /^retnetc: error: --resume \S+truncated: model\.safetensors is corrupt: /);
      oneLine(r);
      const c = copy('corrupt');
      writeFileSync(path.join(c, OPTIMIZER_FILE), 'garbage');
      r = await cli(['train', '--resume', c, '--steps', '70']);
      expectUserError(r, /^retnetc: error: --resume \S+corrupt: optimizer\.safetensors is corrupt: /);
      const j = copy('badjson');
      writeFileSync(path.join(j, 'trainer.json'), '{"format": "retnetc-trainer", "ver');
      r = await cli(['train', '--resume', j, '--steps', '70']);
      expectUserError(r, /^retnetc: error: --resume \S+badjson: trainer\.json is corrupt \(not JSON/);
      r = await cli(['train', '--resume', copy('size'), '--size', 'base', '--steps', '70']);
      expectUserError(r, /^retnetc: error: --resume \S+size: the checkpoint was trained with --size tiny, not base; a resumed run keeps the options that define it/);
      expect(existsSync(path.join(whole, MODEL_FILE))).toBe(true);
    });
  });
});
