// retnetc demo as a user runs it (with fewer steps): it names the device it chose and why,
// trains, prints a sampled continuation and a summary with the validation loss, the checkpoint
// and the loss plot; run again, it generates from the finished run without training; with more
// --steps it continues the run from its checkpoint; --fresh starts over; a directory that holds
// something else is one line. Native target; skipped without native unless REQUIRE_NATIVE=1.
import { existsSync, mkdirSync, mkdtempSync, truncateSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { findCompiler, NO_COMPILER } from '../targets/native/compile.js';
import { loadNativeAddon } from '../runtime/native/addon.js';
import { METRICS_FILE, readMetrics } from '../runtime/train/trainer.js';
import { cli, ensureBuilt, escapeRe, expectUserError } from './helpers/cli.js';

const cc = findCompiler();
const addon = cc ? loadNativeAddon() : { error: NO_COMPILER };
const why = !cc ? NO_COMPILER : 'error' in addon ? addon.error : undefined;
if (why) console.log(`[cli-demo] native runs skipped: ${why}`);
if (why && process.env['REQUIRE_NATIVE'] === '1') throw new Error(`REQUIRE_NATIVE=1 but the native target cannot run: ${why}`);

const tmp = mkdtempSync(path.join(os.tmpdir(), 'retnetc-cli-demo-'));
const T = { timeoutMs: 280_000 };

beforeAll(() => ensureBuilt(), 300_000);

describe.skipIf(!!why)('retnetc demo', { timeout: 300_000 }, () => {
  const dir = path.join(tmp, 'demo');

  test('trains, generates and says what it did; again: generates only; more --steps: continues; --fresh: starts over', async () => {
    const r = await cli(['demo', '--out', dir, '--steps', '3', '--tokens', '12', '--target', 'native'], T);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^device: native \(chosen with --target\)$/m);
    expect(r.stdout).toMatch(/^training retnet tiny \(147,776 parameters\) on Moby Dick .* 3 steps of 8 x 256 bytes, lr 0\.004/m);
    expect(r.stdout).toMatch(/^--- sampled continuation \(temperature 0\.8, top-k 40, seed 0\) ---\nCall me Ishmael\. /m);
    expect(r.stdout).toMatch(/^ {2}trained {5}3 steps of 8 x 256 bytes on native in \S+, [\d,]+ tokens\/s$/m);
    // Three steps cannot reach the bar: the demo says so rather than claiming success.
    expect(r.stdout).toMatch(/^ {2}validation {2}\d\.\d{3} nats\/byte \(above the 2 the demo aims for: train longer with --steps\)$/m);
    expect(r.stdout).toMatch(new RegExp(`^ {2}checkpoint {2}${escapeRe(dir)} `, 'm'));
    expect(r.stdout).toMatch(new RegExp(`^ {2}loss plot {3}${escapeRe(path.join(dir, 'loss.png'))}$`, 'm'));
    expect(r.stderr).toMatch(/^prefill: 17 tokens in .* decode: 11 tokens in .*; target native/m);
    for (const f of ['model.safetensors', 'optimizer.safetensors', 'trainer.json', 'metrics.jsonl', 'loss.svg', 'loss.png']) expect(existsSync(path.join(dir, f)), f).toBe(true);
    const m = readMetrics(path.join(dir, METRICS_FILE));
    expect(m.map((x) => x.step)).toEqual([1, 2, 3]);
    expect(m[2]!.val_loss).toBeGreaterThan(0);
    const text1 = /---\n(Call me Ishmael\. [\s\S]*)\n---/.exec(r.stdout)![1];

    const again = await cli(['demo', '--out', dir, '--steps', '3', '--tokens', '12', '--target', 'native'], T);
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(again.stdout).toMatch(/already holds the finished demo run \(step 3\); generating from it/);
    expect(again.stdout).not.toMatch(/^training /m);
    // Same checkpoint, same seed: the same continuation.
    expect(/---\n(Call me Ishmael\. [\s\S]*)\n---/.exec(again.stdout)![1]).toBe(text1);

    const more = await cli(['demo', '--out', dir, '--steps', '5', '--tokens', '4', '--target', 'native'], T);
    expect(more.code, more.stdout + more.stderr).toBe(0);
    expect(more.stdout).toMatch(/^continuing the demo run in .* from step 3$/m);
    expect(readMetrics(path.join(dir, METRICS_FILE)).map((x) => x.step)).toEqual([1, 2, 3, 4, 5]);

    const fresh = await cli(['demo', '--out', dir, '--steps', '2', '--tokens', '4', '--target', 'native', '--fresh'], T);
    expect(fresh.code, fresh.stdout + fresh.stderr).toBe(0);
    expect(readMetrics(path.join(dir, METRICS_FILE)).map((x) => x.step)).toEqual([1, 2]);
  });

  test('bad input: one line each', async () => {
    expectUserError(await cli(['demo', '--steps', '0']), /--steps must be/);
    expectUserError(await cli(['demo', '--target', 'nope']), /unknown target 'nope'/);
    expectUserError(await cli(['demo', '--prompt', '']), /--prompt is empty/);
    expectUserError(await cli(['demo', 'extra']), /unexpected argument 'extra'/);
    const bad = path.join(tmp, 'bad');
    mkdirSync(bad, { recursive: true });
    writeFileSync(path.join(bad, 'trainer.json'), '{ not json');
    expectUserError(await cli(['demo', '--out', bad, '--target', 'native']), /trainer\.json is corrupt/);
    // The finished run of the test above with its weights cut short: one line, nothing trained.
    const weights = path.join(dir, 'model.safetensors');
    if (existsSync(weights)) {
      truncateSync(weights, 100);
      expectUserError(await cli(['demo', '--out', dir, '--steps', '2', '--target', 'native']), /model\.safetensors: .*\(--fresh trains again\)/);
    }
  });
});
