// retnetc train: trains models/retnet.ret's retnet (byte vocabulary) on Moby Dick or --data FILE
// with runtime/train/trainer.ts, printing progress, writing DIR/metrics.jsonl and checkpoints.
// SIGINT / SIGTERM stop after the current step: the last completed step is saved and the exit
// code is 130 / 143, with one line saying where the checkpoint is and how to resume. A repeated
// signal within two seconds (a terminal's Ctrl-C reaches the WebGPU filter and this process both)
// is the same request; a later one stops at once, leaving the last saved checkpoint.
import { ScheduleError } from '../../compiler/plan.js';
import { FORMS, MAX_CHUNK, type Form } from '../../compiler/schedule.js';
import { RunError } from '../../dsl/reference/interpreter.js';
import { deviceError, EXEC_TARGETS } from '../targets.js';
import { type StepMetrics, train, TrainError, type TrainOptions, type StartInfo, type TrainResult } from '../train/trainer.js';
import { createProgress, type Progress } from '../train/progress.js';
import { didYouMean, fail, type OptionSpecs, parseInteger, parseOptions, str, UsageError } from './options.js';

export const TRAIN_OPTIONS: OptionSpecs = {
  size: { type: 'string', value: 'NAME' },
  data: { type: 'string', value: 'FILE' },
  steps: { type: 'string', value: 'N' },
  batch: { type: 'string', value: 'B' },
  seq: { type: 'string', value: 'T' },
  lr: { type: 'string', value: 'X' },
  warmup: { type: 'string', value: 'N' },
  schedule: { type: 'string', value: FORMS.join('|') },
  chunk: { type: 'string', value: 'N' },
  target: { type: 'string', value: EXEC_TARGETS.join('|') },
  seed: { type: 'string', value: 'S' },
  'eval-every': { type: 'string', value: 'N' },
  'save-every': { type: 'string', value: 'N' },
  accum: { type: 'string', value: 'N' },
  out: { type: 'string', value: 'DIR' },
  resume: { type: 'string', value: 'DIR' },
};

export const TRAIN_USAGE = `usage: retnetc train [--size NAME] [--data FILE] [--steps N] [--batch B] [--seq T] [--lr X] [--warmup N] [--schedule ${FORMS.join('|')}] [--chunk N] [--target ${EXEC_TARGETS.join('|')}] [--seed S] [--eval-every N] [--save-every N] [--accum N] --out DIR [--resume DIR]`;

const MAX_INT = 2 ** 31 - 1;

/** A positive decimal number (1e-3, 0.002). */
function parsePositive(what: string, text: string): number {
  if (!/^(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i.test(text)) throw new UsageError(`${what} must be a positive number, got '${text}'`);
  const x = Number(text);
  if (!(x > 0) || !Number.isFinite(x)) throw new UsageError(`${what} must be a positive number, got '${text}'`);
  return x;
}

/** The trainer's options from the command line (only those given: a resume keeps the rest). */
export function trainOptions(args: string[]): TrainOptions {
  const o = parseOptions('train', args, TRAIN_OPTIONS);
  if (o.positionals.length) throw new UsageError(`unexpected argument '${o.positionals[0]}' (train takes options only; ${TRAIN_USAGE})`);
  const out = str(o, 'out');
  const resume = str(o, 'resume');
  if (out === undefined && resume === undefined) throw new UsageError(`--out DIR is required: the directory for checkpoints and metrics (${TRAIN_USAGE})`);
  const t: TrainOptions = {};
  if (out !== undefined) t.out = out;
  if (resume !== undefined) t.resume = resume;
  const int = (flag: string, key: 'steps' | 'batch' | 'seq' | 'accum' | 'chunk' | 'evalEvery' | 'saveEvery' | 'warmup' | 'seed', min: number, max = MAX_INT): void => {
    const v = str(o, flag);
    if (v !== undefined) t[key] = parseInteger(`--${flag}`, v, min, max);
  };
  int('steps', 'steps', 1);
  int('batch', 'batch', 1);
  int('seq', 'seq', 1);
  int('accum', 'accum', 1);
  int('chunk', 'chunk', 1, MAX_CHUNK);
  int('eval-every', 'evalEvery', 0);
  int('save-every', 'saveEvery', 0);
  int('warmup', 'warmup', 0);
  int('seed', 'seed', 0, Number.MAX_SAFE_INTEGER);
  const lr = str(o, 'lr');
  if (lr !== undefined) t.lr = parsePositive('--lr', lr);
  const size = str(o, 'size');
  if (size !== undefined) t.size = size;
  const data = str(o, 'data');
  if (data !== undefined) t.data = data;
  const schedule = str(o, 'schedule');
  if (schedule !== undefined) {
    if (!(FORMS as readonly string[]).includes(schedule)) throw new UsageError(`unknown schedule '${schedule}' (expected ${FORMS.join(', ')})${didYouMean(schedule, FORMS)}`);
    t.schedule = schedule as Form;
  }
  if (t.schedule === 'recurrent' && t.chunk !== undefined) throw new UsageError('--chunk does not apply to the recurrent schedule: it steps one position at a time');
  const target = str(o, 'target');
  if (target !== undefined) {
    if (!EXEC_TARGETS.includes(target)) throw new UsageError(`unknown target '${target}' (expected ${EXEC_TARGETS.join(', ')})${didYouMean(target, EXEC_TARGETS)}`);
    t.target = target;
  }
  return t;
}

// ---- progress ---------------------------------------------------------------------------------

const fmt = (x: number | undefined, d = 3): string => (x === undefined ? '-' : x.toFixed(d));

export function duration(s: number): string {
  if (!Number.isFinite(s)) return '?';
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h ? `${h}h${String(m).padStart(2, '0')}m` : m ? `${m}m${String(r).padStart(2, '0')}s` : `${r}s`;
}

export function startLine(i: StartInfo): string {
  const o = i.options;
  const what = i.resumed ? `resuming at step ${i.startStep} of ${i.steps}` : `${i.steps} steps`;
  return `training retnet ${o.size} (${i.parameters.toLocaleString('en-US')} parameters) on ${i.corpus} (${i.trainBytes.toLocaleString('en-US')} training bytes, ${i.valTokens.toLocaleString('en-US')} validation tokens) with ${i.device}: ${what} of ${o.accum > 1 ? `${o.accum} x ` : ''}${o.batch} x ${o.seq} bytes, lr ${o.lr}, ${o.schedule}${o.schedule === 'recurrent' ? '' : ` chunk ${o.chunk}`}; checkpoints in ${i.out}`;
}

/**
 * Progress on standard output (runtime/train/progress.ts): a bar on a terminal, else plain lines
 * every 10 steps, at each evaluation and at the last step; the start line above it.
 */
function reporter(): { start(i: StartInfo): void; step(m: StepMetrics): void; log(line: string): void; stop(): void } {
  let p: Progress | undefined;
  return {
    start(i) {
      p = createProgress({ total: i.steps, start: i.startStep, stream: process.stdout });
      p.log(startLine(i));
    },
    step(m) {
      p?.update(m.step, { loss: m.loss, tokensPerS: m.tokens_per_s, lr: m.lr, ...(m.val_loss !== undefined ? { valLoss: m.val_loss } : {}) });
    },
    log(line) {
      if (p) p.log(line);
      else process.stdout.write(line + '\n');
    },
    stop() {
      p?.stop();
    },
  };
}

export function endLine(r: TrainResult): string {
  const plot = r.plots ? `, loss plot ${r.plots.png ?? r.plots.svg}` : '';
  return `trained ${r.stepsRun} step${r.stepsRun === 1 ? '' : 's'} (${r.steps} in all) in ${duration(r.elapsedS)} on ${r.device}: loss ${fmt(r.loss)}, validation loss ${fmt(r.valLoss)} nats/byte, ${Math.round(r.tokensPerS)} tokens/s; checkpoint in ${r.checkpoint}${plot}`;
}

// ---- the command ------------------------------------------------------------------------------

export async function cmdTrain(args: string[]): Promise<number> {
  const opts = trainOptions(args);
  const report = reporter();
  const ac = new AbortController();
  let signal: { name: NodeJS.Signals; at: number } | undefined;
  let lastSaved: { dir: string; step: number } | undefined;
  const onSignal = (name: NodeJS.Signals): void => {
    if (!signal) { signal = { name, at: Date.now() }; ac.abort(); return; }
    if (Date.now() - signal.at < 2000) return;
    const kept = lastSaved ? `${lastSaved.dir} holds the checkpoint of step ${lastSaved.step}` : 'no checkpoint was written';
    report.stop();
    process.stderr.write(`retnetc: ${name} again: stopped without saving; ${kept}\n`);
    process.exit(name === 'SIGTERM' ? 143 : 130);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const r = await train(opts, {
      signal: ac.signal,
      onStart: (i) => report.start(i),
      onStep: (m) => report.step(m),
      onSave: (dir, step) => { lastSaved = { dir, step }; },
      onNote: (line) => report.log(`retnetc: note: ${line}`),
    });
    report.stop();
    if (r.stopped && signal) {
      const resume = `retnetc train --resume ${r.checkpoint}`;
      process.stderr.write(`retnetc: interrupted by ${signal.name} after step ${r.steps}: checkpoint saved in ${r.checkpoint}; continue with: ${resume}\n`);
      return signal.name === 'SIGTERM' ? 143 : 130;
    }
    process.stdout.write(endLine(r) + '\n');
    return 0;
  } catch (e) {
    report.stop();
    if (e instanceof TrainError) return fail('retnetc', e.message);
    const device = deviceError(e);
    if (device) return fail('retnetc', device);
    if (e instanceof RunError) return fail('retnetc', e.message.split('\n')[0]!);
    if (e instanceof ScheduleError) return fail('retnetc', `--schedule ${opts.schedule ?? 'chunkwise'}: ${e.message.split('\n')[0]}`);
    throw e;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
