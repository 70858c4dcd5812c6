// runtime/train/trainer.ts on the native target with tiny shapes: training lowers the loss, the
// same seed gives the same metrics bit for bit (another seed others), a run stopped and resumed
// equals an uninterrupted one (with gradient accumulation too), a full disk stops training with
// the previous checkpoint intact, and a resume that would change the run is refused in one line.
// Without a C compiler or the native addon the runs are skipped with the reason, unless
// REQUIRE_NATIVE=1.
import { cpSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, test } from 'vitest';
import { findCompiler, NO_COMPILER } from '../targets/native/compile.js';
import { loadNativeAddon } from '../runtime/native/addon.js';
import { MODEL_FILE } from '../runtime/io/checkpoint-path.js';
import { type CheckpointIo, modelFileBytes, realIo } from '../runtime/train/checkpoint.js';
import { initWeights } from '../runtime/train/init.js';
import { instantiate, packagedProgram } from '../runtime/io/torchscale.js';
import { METRICS_FILE, readMetrics, type StepMetrics, train, TrainError, type TrainOptions } from '../runtime/train/trainer.js';

const cc = findCompiler();
const addon = cc ? loadNativeAddon() : { error: NO_COMPILER };
const why = !cc ? NO_COMPILER : 'error' in addon ? addon.error : undefined;
if (why) console.log(`[train] native runs skipped: ${why}`);

test('the native target is available (required when REQUIRE_NATIVE=1)', (ctx) => {
  if (why && process.env['REQUIRE_NATIVE'] !== '1') ctx.skip();
  expect(why).toBeUndefined();
});

const tmp = mkdtempSync(path.join(os.tmpdir(), 'retnetc-trainer-'));
let n = 0;
const fresh = (): string => path.join(tmp, `run${n++}`);
// A small repeated text: a few words in a seeded order, so there is something to learn.
const words = 'the whale and the sea and the ship of ahab'.split(' ');
let x = 1;
const text = Array.from({ length: 1500 }, () => words[(x = (x * 1103515245 + 12345) % 2 ** 31) % words.length]).join(' ');
const data = path.join(tmp, 'words.txt');
writeFileSync(data, text);

const base: TrainOptions = { data, target: 'native', batch: 2, seq: 16, steps: 16, lr: 3e-3, evalEvery: 8, saveEvery: 0 };
// Every field but the wall-clock rate.
const losses = (ms: readonly StepMetrics[]) => ms.map(({ tokens_per_s: _, ...m }) => m);

describe.skipIf(!!why)('the trainer on native', { timeout: 600_000 }, () => {
  test('training lowers the loss; metrics.jsonl has one line per step; the result says what it did', async () => {
    const out = fresh();
    const r = await train({ ...base, out, steps: 40 });
    const ms = readMetrics(path.join(out, METRICS_FILE));
    expect(ms.map((m) => m.step)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
    const first = ms[0]!.loss;
    expect(first).toBeGreaterThan(4.5); // about ln 256 = 5.5 from the initial weights
    const late = ms.slice(-5).reduce((a, m) => a + m.loss, 0) / 5;
    expect(late).toBeLessThan(0.7 * first);
    expect(ms.filter((m) => m.val_loss !== undefined).map((m) => m.step)).toEqual([8, 16, 24, 32, 40]);
    expect(ms[39]!.val_loss!).toBeLessThan(ms[7]!.val_loss!);
    for (const m of ms) expect(m.grad_norm).toBeGreaterThan(0);
    expect(r).toMatchObject({ steps: 40, stepsRun: 40, loss: ms[39]!.loss, valLoss: ms[39]!.val_loss, target: 'native', checkpoint: out, stopped: false });
    expect(r.device).toMatch(/^native \(/);
    expect(r.tokensPerS).toBeGreaterThan(0);
    expect(existsSync(path.join(out, MODEL_FILE))).toBe(true);
  });

  test('the same seed gives the same metrics bit for bit; another seed does not', async () => {
    const [a, b, c] = [fresh(), fresh(), fresh()];
    await train({ ...base, out: a, steps: 10, seed: 3 });
    await train({ ...base, out: b, steps: 10, seed: 3 });
    await train({ ...base, out: c, steps: 10, seed: 4 });
    const [ma, mb, mc] = [a, b, c].map((d) => losses(readMetrics(path.join(d, METRICS_FILE))));
    expect(ma).toHaveLength(10);
    expect(mb).toEqual(ma);
    expect(mc.map((m) => m.loss)).not.toEqual(ma.map((m) => m.loss));
  });

  test.each([1, 2])('stopped after a few steps and resumed (--accum %i): the metrics of an uninterrupted run', async (accum) => {
    const whole = fresh();
    await train({ ...base, accum, out: whole });
    const part = fresh();
    const ac = new AbortController();
    const first = await train({ ...base, accum, out: part }, { signal: ac.signal, onStep: (m) => { if (m.step === 9) ac.abort(); } });
    expect(first).toMatchObject({ steps: 9, stopped: true });
    const second = await train({ resume: part });
    expect(second).toMatchObject({ steps: 16, stepsRun: 7, stopped: false });
    expect(losses(readMetrics(path.join(part, METRICS_FILE)))).toEqual(losses(readMetrics(path.join(whole, METRICS_FILE))));
    expect(readFileSync(path.join(part, MODEL_FILE))).toEqual(readFileSync(path.join(whole, MODEL_FILE)));
  });

  test('a resume into another --out copies the metrics up to the checkpoint; lines after it (a killed run) are dropped', async () => {
    const src = fresh();
    await train({ ...base, out: src, steps: 8 });
    // A run killed after its checkpoint logged two more steps.
    const f = path.join(src, METRICS_FILE);
    writeFileSync(f, readFileSync(f, 'utf8') + '{"step":9,"loss":1}\n{"step":10,"lo');
    const dst = fresh();
    await train({ resume: src, out: dst, steps: 12 });
    expect(readMetrics(path.join(dst, METRICS_FILE)).map((m) => m.step)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
    expect(readMetrics(path.join(dst, METRICS_FILE)).slice(0, 8)).toEqual(readMetrics(f).slice(0, 8));
  });

  test('a full disk at a save stops training with one line; the previous checkpoint is intact', async () => {
    const out = fresh();
    await train({ ...base, out, steps: 4 });
    const before = readFileSync(path.join(out, MODEL_FILE));
    const io: CheckpointIo = { ...realIo, writeDurable: () => Promise.reject(Object.assign(new Error('ENOSPC'), { code: 'ENOSPC' })) };
    const e = await train({ resume: out, steps: 8, saveEvery: 2 }, { io }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(TrainError);
    expect((e as Error).message).toBe(`cannot write ${path.join(out, MODEL_FILE)}: no space left on device; the checkpoint of step 4 in ${out} is intact (training stopped at step 6)`);
    expect(readFileSync(path.join(out, MODEL_FILE))).toEqual(before);
    // And it resumes from there.
    expect((await train({ resume: out, steps: 6 })).steps).toBe(6);
  });

  test('refusals: a changed run, a finished run, another size, other data, an --out holding a checkpoint', async () => {
    const out = fresh();
    await train({ ...base, out, steps: 4 });
    const refuse = async (o: TrainOptions, re: RegExp): Promise<void> => {
      const e = await train(o).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(TrainError);
      expect((e as Error).message).toMatch(re);
      expect((e as Error).message).not.toContain('\n');
    };
    await refuse({ resume: out, steps: 8, batch: 4 }, /the checkpoint was trained with --batch 2, not 4; a resumed run keeps the options that define it/);
    await refuse({ resume: out, steps: 8, size: 'base' }, /trained with --size tiny, not base/);
    await refuse({ resume: out }, /the checkpoint is at step 4 of 4; give --steps above 4/);
    const other = path.join(tmp, 'other.txt');
    writeFileSync(other, text.toUpperCase());
    await refuse({ resume: out, steps: 8, data: other }, /the checkpoint was trained on .*words\.txt \(\d+ bytes\), not on this text/);
    await refuse({ ...base, out }, /already holds a checkpoint; resume it with --resume/);
    const copy = fresh();
    cpSync(out, copy, { recursive: true });
    await refuse({ resume: copy, out, steps: 8 }, /already holds a checkpoint/);
    // Weights of another model (one layer) put in place of the checkpoint's, with the right step.
    const one = instantiate(packagedProgram(), 'retnet', 'tiny', { vocab: 256, n_layers: 1 });
    writeFileSync(path.join(copy, MODEL_FILE), modelFileBytes(one, initWeights(one, 0), 4));
    await refuse({ resume: copy, steps: 8 }, /model\.safetensors holds a model with n_layers = 1, but the run is retnet tiny with n_layers = 2: weights of another model or size/);
  });
});
