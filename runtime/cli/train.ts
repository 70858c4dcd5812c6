// retnetc train: trains models/retnet.ret's retnet (byte vocabulary) on Moby Dick or --data FILE
// with runtime/train/trainer.ts, printing progress, writing DIR/metrics.jsonl and checkpoints.
// This file parses the options; runtime/cli/train-run.ts runs the training with its progress and
// signals (SIGINT / SIGTERM stop after the current step, save it, exit 130 / 143 with how to
// resume).
import { FORMS, MAX_CHUNK, type Form } from '../../compiler/schedule.js';
import { EXEC_TARGETS } from '../targets.js';
import type { TrainOptions } from '../train/trainer.js';
import { didYouMean, type OptionSpecs, parseInteger, parseOptions, str, UsageError } from './options.js';
import { trainWithProgress } from './train-run.js';

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

// ---- the command ------------------------------------------------------------------------------

/** Progress, signals and error lines are runtime/cli/train-run.ts's (shared with `retnetc demo`). */
export async function cmdTrain(args: string[]): Promise<number> {
  return (await trainWithProgress(trainOptions(args))).code;
}
