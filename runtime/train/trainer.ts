// The trainer: a RetNet of models/retnet.ret (byte vocabulary) trained on a text with the
// kernels the compiler generated for a target. One optimizer step is `accum` micro-batches of
// forward + backward (compiler/model-grad.ts) with the cross-entropy's gradient, their mean
// gradient, and one AdamW update at the rate of a warm-up + cosine schedule. Everything random
// (weights, batches) comes from seeded streams, so the same seed on the same target gives the same
// losses, and a checkpoint holds every stream's state: a resumed run continues exactly where the
// interrupted one stopped (metrics.jsonl equal to an uninterrupted run's, bit for bit).
//
// `train(options, hooks)` is the programmatic API (`retnetc train` and `retnetc demo` use it).
// Stopping: `hooks.signal` (an AbortSignal) is checked after every step; the trainer then saves
// the last completed step and returns with `stopped` set.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { CheckedModel } from '../../dsl/checked.js';
import { RunError } from '../../dsl/reference/interpreter.js';
import { compileModelGrad, type ModelGrad } from '../../compiler/model-grad.js';
import { type Form, makeSchedule } from '../../compiler/schedule.js';
import { packagedProgram, instantiate } from '../io/torchscale.js';
import type { HostValue, PlanExec } from '../model-runner.js';
import { runModelPlan } from '../model-runner.js';
import { runModelBackward } from '../model-backward.js';
import { bestTarget } from '../best-target.js';
import { openTarget, targetChunk, targetNamed, withTargetDefaults } from '../targets.js';
import type { Tensor } from '../io/safetensors.js';
import { type CheckpointIo, CheckpointWriteError, holdsCheckpoint, loadCheckpoint, realIo, saveCheckpoint, TRAINER_FORMAT, TRAINER_VERSION, type TrainerJson } from './checkpoint.js';
import { type Batch, BatchSampler, BYTE_VOCAB, type Corpus, mobyDick, readCorpus, splitCorpus, validationBatches } from './data.js';
import { FlatParams } from './flat-params.js';
import { initWeights } from './init.js';
import { crossEntropy, crossEntropyLoss } from './loss.js';
import { defaultWarmup, type LrSchedule, lrAt } from './lr-schedule.js';
import { AdamW } from './optimizer.js';
import { type LossPlotFiles, writeLossPlots } from './plot.js';
import { Rng } from './rng.js';

/** A problem with the options, the data or the output directory: one line, nothing lost. */
export class TrainError extends Error {
  override readonly name = 'TrainError';
}

/** The options that define a run: a resumed run must keep them (it may change the others). */
export interface RunDefinition {
  /** A size of models/retnet.ret ('tiny', 'base', ...). */
  size: string;
  /** A UTF-8 text file, or undefined for Moby Dick. */
  data: string | undefined;
  batch: number;
  seq: number;
  accum: number;
  lr: number;
  warmup: number;
  /** The last step's rate as a share of lr. */
  lrFloor: number;
  weightDecay: number;
  seed: number;
}

/** The options a resumed run may change. */
export interface RunControl {
  /** The total number of optimizer steps (a resume may extend it). */
  steps: number;
  schedule: Form;
  chunk: number;
  target: string;
  evalEvery: number;
  saveEvery: number;
}

export type TrainOptions = Partial<RunDefinition> & Partial<RunControl> & {
  /** The checkpoint directory (created when missing). Default: the --resume directory. */
  out?: string;
  /** A checkpoint directory to continue from. */
  resume?: string;
};

/**
 * Defaults. lr NaN: defaultLr(size). warmup NaN: defaultWarmup(steps). chunk NaN: the target's
 * (runtime/targets.ts targetChunk: native 32, webgpu 16, else 64). On Moby Dick the tiny model
 * at B = 8, T = 256 reached validation loss 2.0 nats/byte after ~200 steps at lr 4e-3 (~250 at
 * 2e-3) and 1.74 after 600-800 steps.
 */
export const DEFAULTS: RunDefinition & RunControl = {
  size: 'tiny', data: undefined, batch: 8, seq: 256, accum: 1, lr: NaN, warmup: NaN, lrFloor: 0.1, weightDecay: 0.1, seed: 0,
  steps: 1000, schedule: 'chunkwise', chunk: NaN, target: '', evalEvery: 100, saveEvery: 200,
};

export interface StepMetrics {
  step: number;
  loss: number;
  lr: number;
  tokens_per_s: number;
  grad_norm: number;
  val_loss?: number;
}

export interface StartInfo {
  startStep: number;
  steps: number;
  target: string;
  /** The target with what runs it ('native (gcc 12.2.0, 2 cores)'). */
  device: string;
  parameters: number;
  corpus: string;
  trainBytes: number;
  valTokens: number;
  out: string;
  resumed: boolean;
  options: RunDefinition & RunControl;
}

export interface TrainHooks {
  onStart?(info: StartInfo): void;
  onStep?(m: StepMetrics): void;
  onSave?(dir: string, step: number): void;
  /** Checked after every step: when aborted, the trainer saves and returns with `stopped`. */
  signal?: AbortSignal;
  /** The checkpoint writer's file operations (tests: a full disk). */
  io?: CheckpointIo;
  /** A one-line note that is not an error (a loss plot that could not be written). */
  onNote?(line: string): void;
  /** Write DIR/loss.svg and DIR/loss.png after each evaluation and at the end (default true). */
  plots?: boolean;
}

export interface TrainResult {
  /** Steps completed in all (with those before a resume). */
  steps: number;
  /** Steps this call ran. */
  stepsRun: number;
  /** The last step's training loss (nats per byte). */
  loss: number;
  /** The last validation loss (nats per byte), if any evaluation ran. */
  valLoss: number | undefined;
  /** Training tokens per second over this call's steps (evaluation and saving excluded). */
  tokensPerS: number;
  target: string;
  device: string;
  checkpoint: string;
  elapsedS: number;
  /** Set when hooks.signal stopped the run early. */
  stopped: boolean;
  /** The loss plots written (absent when none could be). */
  plots?: LossPlotFiles;
  /**
   * Seconds in forward + backward, the loss, the optimizer, the rest of the step's host loop,
   * evaluation, saving; `kernels`: inside the target's runner (all of those that run plans);
   * `steps`: the training steps in all.
   */
  timing: { forwardBackward: number; loss: number; optimizer: number; host: number; eval: number; save: number; kernels: number; steps: number };
}

export const METRICS_FILE = 'metrics.jsonl';

// ---- options -----------------------------------------------------------------------------------

const DEFINITION_KEYS: (keyof RunDefinition)[] = ['size', 'data', 'batch', 'seq', 'accum', 'lr', 'warmup', 'lrFloor', 'weightDecay', 'seed'];
const FLAG: Record<keyof RunDefinition, string> = {
  size: '--size', data: '--data', batch: '--batch', seq: '--seq', accum: '--accum', lr: '--lr', warmup: '--warmup', lrFloor: 'the lr floor', weightDecay: 'the weight decay', seed: '--seed',
};

/** The peak learning rate when none is given: tuned on tiny (4e-3); larger models want less. */
export const defaultLr = (size: string): number => (size === 'tiny' ? 4e-3 : 1e-3);

/** The default target: the fastest here (runtime/best-target.ts: a GPU, else native, else cpu). */
export async function defaultTarget(): Promise<string> {
  return (await bestTarget()).name;
}

async function device(target: string): Promise<string> {
  const a = await targetNamed(target)?.run?.available().catch((e: unknown) => ({ ok: false as const, reason: String(e) }));
  if (!a) throw new TrainError(`unknown target '${target}'`);
  if (!a.ok) throw new TrainError(`--target ${target} is not available here: ${a.reason}`);
  return `${target} (${a.detail})`;
}

interface SavedRun {
  definition: RunDefinition;
  control: RunControl;
  model: { name: string; size: string; hypers: Record<string, number | string> };
  corpus: { name: string; sha256: string; bytes: number };
  sampler: number[];
  /** Micro-batches drawn so far (the data position, with the sampler's state). */
  batches: number;
  optimizerT: number;
}

const sameValue = (a: unknown, b: unknown): boolean => (typeof a === 'number' && typeof b === 'number' ? Object.is(a, b) || a === b : a === b);

/** The options of a resumed run: the checkpoint's definition (a different one is refused), the new control options. */
function resumedOptions(given: TrainOptions, saved: SavedRun, dir: string): RunDefinition & RunControl {
  for (const k of DEFINITION_KEYS) {
    const g = given[k];
    if (g === undefined) continue;
    const s = saved.definition[k];
    // --data names a file: the same text under another name is the same run.
    if (k === 'data') continue;
    if (!sameValue(g, s)) throw new TrainError(`--resume ${dir}: the checkpoint was trained with ${FLAG[k]} ${s ?? '(default)'}, not ${g}; a resumed run keeps the options that define it (leave out ${FLAG[k]}, or start a new run with another --out)`);
  }
  const control: RunControl = { ...saved.control };
  for (const k of ['steps', 'schedule', 'chunk', 'target', 'evalEvery', 'saveEvery'] as const) if (given[k] !== undefined) (control as unknown as Record<string, unknown>)[k] = given[k];
  return { ...saved.definition, data: given.data ?? saved.definition.data, ...control };
}

function checkNumbers(o: RunDefinition & RunControl): void {
  const int = (name: string, v: number, min: number): void => {
    if (!Number.isSafeInteger(v) || v < min) throw new TrainError(`${name} must be an integer of at least ${min}, got ${v}`);
  };
  int('--steps', o.steps, 1);
  int('--batch', o.batch, 1);
  int('--seq', o.seq, 1);
  int('--accum', o.accum, 1);
  int('--chunk', o.chunk, 1);
  int('--eval-every', o.evalEvery, 0);
  int('--save-every', o.saveEvery, 0);
  int('--warmup', o.warmup, 0);
  if (!(o.lr > 0 && Number.isFinite(o.lr))) throw new TrainError(`--lr must be a positive number, got ${o.lr}`);
  if (!Number.isSafeInteger(o.seed)) throw new TrainError(`--seed must be an integer, got ${o.seed}`);
}

// ---- the model ---------------------------------------------------------------------------------

/** models/retnet.ret's retnet at `size` with the byte vocabulary. */
export function byteModel(size: string): CheckedModel {
  const program = packagedProgram();
  const sizes = program.checked!.models.get('retnet')!.configs;
  if (!sizes.includes(size)) throw new TrainError(`unknown --size '${size}' (sizes of retnet: ${sizes.join(', ')})`);
  return instantiate(program, 'retnet', size, { vocab: BYTE_VOCAB });
}

/** The model's logits over `tokens` with the forward of a compiled model gradient (the trainer's own forward). */
export async function forwardLogits(mg: ModelGrad, weights: ReadonlyMap<string, HostValue>, tokens: HostValue, exec: PlanExec): Promise<HostValue> {
  return (await runModelPlan(mg.forward, weights, new Map([['tokens', tokens]]), exec)).outputs.get('logits')!;
}

/** The mean loss over the validation batches (each batch weighted by its tokens). */
async function validationLoss(mg: ModelGrad, weights: ReadonlyMap<string, HostValue>, batches: readonly Batch[], exec: PlanExec): Promise<number> {
  let sum = 0;
  let n = 0;
  for (const b of batches) {
    const logits = await forwardLogits(mg, weights, b.tokens, exec);
    const l = await crossEntropyLoss(logits, b.targets, exec);
    sum += l * b.targets.data.length;
    n += b.targets.data.length;
  }
  return sum / n;
}

// ---- metrics.jsonl -----------------------------------------------------------------------------

/** The metrics lines of steps 1..step from `file` (a torn or later line ends them). */
export function readMetrics(file: string, upTo = Infinity): StepMetrics[] {
  let text: string;
  try { text = fs.readFileSync(file, 'utf8'); } catch { return []; }
  const out: StepMetrics[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    let m: StepMetrics;
    try { m = JSON.parse(line) as StepMetrics; } catch { break; }
    if (typeof m.step !== 'number' || m.step !== out.length + 1 || m.step > upTo) break;
    out.push(m);
  }
  return out;
}

const metricsLine = (m: StepMetrics): string => JSON.stringify(m) + '\n';

/** Writes `lines` as the whole of `file`, atomically. */
function rewriteMetrics(file: string, lines: readonly StepMetrics[]): void {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, lines.map(metricsLine).join(''));
  fs.renameSync(tmp, file);
}

// ---- the output directory ----------------------------------------------------------------------

function prepareOut(out: string, resumeDir: string | undefined): void {
  try {
    fs.mkdirSync(out, { recursive: true });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new TrainError(`--out ${out}: cannot create the directory (${code === 'EEXIST' || code === 'ENOTDIR' ? 'a file is in the way' : code === 'EACCES' || code === 'EPERM' ? 'permission denied' : code === 'EROFS' ? 'read-only file system' : code ?? String(e)})`);
  }
  if (!fs.statSync(out).isDirectory()) throw new TrainError(`--out ${out}: is a file, not a directory`);
  const probe = path.join(out, `.retnetc-write-test.${process.pid}`);
  try {
    fs.writeFileSync(probe, '');
    fs.unlinkSync(probe);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new TrainError(`--out ${out}: cannot write there (${code === 'EACCES' || code === 'EPERM' ? 'permission denied' : code === 'EROFS' ? 'read-only file system' : code === 'ENOSPC' ? 'no space left on device' : code ?? String(e)})`);
  }
  const same = resumeDir !== undefined && path.resolve(resumeDir) === path.resolve(out);
  if (!same && holdsCheckpoint(out)) {
    throw new TrainError(`--out ${out} already holds a checkpoint; resume it with --resume ${out}, or choose another --out (retnetc does not overwrite a checkpoint)`);
  }
}

// ---- training ----------------------------------------------------------------------------------

const now = (): number => performance.now() / 1000;

/** Trains; see the file's head. Throws TrainError (one line) for a user's mistake. */
export async function train(given: TrainOptions, hooks: TrainHooks = {}): Promise<TrainResult> {
  const t0 = now();
  const out = given.out ?? given.resume;
  if (out === undefined) throw new TrainError('--out DIR is required (the checkpoint directory)');

  // A checkpoint to resume (read before anything is written).
  let resumed: Awaited<ReturnType<typeof loadCheckpoint>> | undefined;
  let saved: SavedRun | undefined;
  if (given.resume !== undefined) {
    try {
      resumed = await loadCheckpoint(given.resume);
    } catch (e) {
      if (e instanceof Error && e.name === 'CheckpointError') throw new TrainError(`--resume ${given.resume}: ${e.message}`);
      throw e;
    }
    saved = resumed.trainer['run'] as SavedRun | undefined;
    if (!saved || typeof saved !== 'object' || !saved.definition || !saved.control) throw new TrainError(`--resume ${given.resume}: trainer.json has no run description`);
  }
  const o: RunDefinition & RunControl = saved ? resumedOptions(given, saved, given.resume!) : { ...DEFAULTS, ...definedOnly(given) } as RunDefinition & RunControl;
  if (Number.isNaN(o.warmup)) o.warmup = defaultWarmup(o.steps);
  if (Number.isNaN(o.lr)) o.lr = defaultLr(o.size);
  if (!o.target) o.target = await defaultTarget();
  if (Number.isNaN(o.chunk)) o.chunk = targetChunk(o.target, o.schedule);
  checkNumbers(o);
  const startStep = resumed?.step ?? 0;
  if (resumed && o.steps <= startStep) throw new TrainError(`--resume ${given.resume}: the checkpoint is at step ${startStep} of ${saved!.control.steps}; give --steps above ${startStep} to train on`);

  const model = byteModel(o.size);
  if (saved) {
    if (saved.model.size !== o.size) throw new TrainError(`--resume ${given.resume}: the checkpoint is of retnet size ${saved.model.size}, not ${o.size}`);
    for (const [k, v] of model.hypers) {
      if (saved.model.hypers[k] !== v) throw new TrainError(`--resume ${given.resume}: the checkpoint's model has ${k} = ${saved.model.hypers[k]}, retnet ${o.size} ${k} = ${v}: another model`);
      // The weights file's own config too (a model.safetensors put there from another run).
      const w = resumed!.model.hypers.get(k);
      if (w !== v) throw new TrainError(`--resume ${given.resume}: model.safetensors holds a model with ${k} = ${w}, but the run is retnet ${o.size} with ${k} = ${v}: weights of another model or size`);
    }
  }

  // The data, its split, and (on resume) that it is the same text.
  let corpus: Corpus;
  try {
    if (o.data !== undefined) o.data = path.resolve(o.data);
    corpus = o.data === undefined ? mobyDick() : readCorpus(o.data);
  } catch (e) {
    if (e instanceof Error && e.name === 'DataError') throw new TrainError(`--data ${given.data ?? o.data}: ${e.message}`);
    throw e;
  }
  if (saved && saved.corpus.sha256 !== corpus.sha256) throw new TrainError(`--resume ${given.resume}: the checkpoint was trained on ${saved.corpus.name} (${saved.corpus.bytes} bytes), not on this text (${corpus.name}, ${corpus.bytes.length} bytes)`);
  let split;
  try {
    split = splitCorpus(corpus.bytes, o.batch, o.seq);
  } catch (e) {
    if (e instanceof Error && e.name === 'DataError') throw new TrainError(`${o.data === undefined ? 'the corpus' : `--data ${given.data ?? o.data}`}: ${e.message}`);
    throw e;
  }
  const valBatches = validationBatches(split.val, o.seq);

  const dev = await device(o.target);
  prepareOut(out, given.resume);
  const metricsFile = path.join(out, METRICS_FILE);
  const history = resumed ? readMetrics(path.join(given.resume!, METRICS_FILE), startStep) : [];
  if (resumed && history.length !== startStep) throw new TrainError(`--resume ${given.resume}: ${METRICS_FILE} has ${history.length} of the checkpoint's ${startStep} steps`);
  rewriteMetrics(metricsFile, history);

  // Weights, optimizer and the data stream: fresh from the seed, or the checkpoint's.
  const root = new Rng(o.seed);
  const sampler = new BatchSampler(split.train, o.batch, o.seq, root.fork('data'));
  // The flat layout (which the optimizer's moments follow) is the model's declaration order, not the file's.
  const source: ReadonlyMap<string, HostValue> = resumed ? resumed.weights : initWeights(model, o.seed);
  const ordered = new Map<string, HostValue>();
  for (const w of model.weights) {
    const v = source.get(w.name);
    if (!v) throw new TrainError(`--resume ${given.resume}: model.safetensors has no weight '${w.name}'`);
    ordered.set(w.name, v);
  }
  const params = FlatParams.fromWeights(ordered);
  const target = openTarget(o.target);
  const release = target.release;
  // Time inside the target's runner (kernels and its own copies), to tell host overhead from it.
  const exec: PlanExec = async (plan, inputs) => {
    const t = now();
    try { return await target.exec(plan, inputs); } finally { timing.kernels += now() - t; }
  };
  const schedule: LrSchedule = { lr: o.lr, warmup: o.warmup, steps: o.steps, floor: o.lrFloor };
  const timing = { forwardBackward: 0, loss: 0, optimizer: 0, host: 0, eval: 0, save: 0, kernels: 0, steps: 0 };

  let batches = saved?.batches ?? 0;
  try {
    const opt = new AdamW(params, exec, { weightDecay: o.weightDecay });
    if (resumed) {
      try {
        opt.load(optimizerState(resumed.optimizer.tensors, given.resume!));
      } catch (e) {
        if (e instanceof RunError) throw new TrainError(`--resume ${given.resume}: ${e.message}`);
        throw e;
      }
      sampler.restore(saved!.sampler);
    }
    const mg = compileModelGrad(model, withTargetDefaults(makeSchedule(o.schedule, o.chunk), o.target));
    const weights = params.views();
    const nParams = params.size;
    const gradBuf = new Float32Array(nParams);
    const accBuf = o.accum > 1 ? new Float32Array(nParams) : gradBuf;
    hooks.onStart?.({
      startStep, steps: o.steps, target: o.target, device: dev, parameters: nParams, corpus: corpus.name,
      trainBytes: split.train.length, valTokens: valBatches.reduce((a, b) => a + b.targets.data.length, 0), out, resumed: !!resumed, options: { ...o },
    });

    const metrics = [...history];
    const fd = fs.openSync(metricsFile, 'a');
    let step = startStep;
    let savedStep = startStep;
    let lastLoss = NaN;
    let lastVal = [...history].reverse().find((m) => m.val_loss !== undefined)?.val_loss;
    let tokens = 0;
    let trainTime = 0;
    const save = async (): Promise<void> => {
      const ts = now();
      const trainer: TrainerJson = {
        format: TRAINER_FORMAT, version: TRAINER_VERSION, step,
        run: {
          definition: definitionOf(o), control: controlOf(o),
          model: { name: 'retnet', size: o.size, hypers: Object.fromEntries(model.hypers) },
          corpus: { name: corpus.name, sha256: corpus.sha256, bytes: corpus.bytes.length },
          sampler: sampler.state(), batches, optimizerT: opt.t,
        } satisfies SavedRun,
      };
      try {
        await saveCheckpoint(out, { step, model, weights: new Map([...weights].map(([k, v]) => [k, { shape: v.shape, data: v.data as Float32Array }])), optimizer: { tensors: optimizerTensors(opt.state()), metadata: {} }, trainer }, hooks.io ?? realIo);
      } catch (e) {
        if (!(e instanceof CheckpointWriteError)) throw e;
        const kept = savedStep > 0 || resumed ? `the checkpoint of step ${savedStep} in ${out} is intact` : 'no checkpoint was written';
        throw new TrainError(`${e.message}; ${kept} (training stopped at step ${step})`);
      }
      savedStep = step;
      timing.save += now() - ts;
      hooks.onSave?.(out, step);
    };
    let stopped = false;
    let plots: LossPlotFiles | undefined;
    let noted = false;
    // The loss curves; a plot that cannot be written is a note, not the end of training.
    const plot = async (): Promise<void> => {
      if (hooks.plots === false) return;
      try {
        plots = await writeLossPlots(out, metrics);
        if (plots.note && !noted) { noted = true; hooks.onNote?.(plots.note); }
      } catch (e) {
        if (!noted) { noted = true; hooks.onNote?.(`cannot write the loss plot in ${out}: ${(e instanceof Error ? e.message : String(e)).split('\n')[0]}`); }
      }
    };
    try {
      while (step < o.steps) {
        // The kernels may run synchronously, so a step's awaits need not reach the event loop: yield
        // to it once a step, or a signal's handler would not run until training ends.
        await new Promise((r) => setImmediate(r));
        if (hooks.signal?.aborted) { stopped = true; break; }
        const tStep = now();
        let lossSum = 0;
        let grad: Float32Array | undefined;
        for (let a = 0; a < o.accum; a++) {
          const th = now();
          const batch = sampler.next();
          batches++;
          timing.host += now() - th;
          const tf = now();
          let loss = NaN;
          let lossTime = 0;
          // One forward: the loss (and its gradient) is computed from the backward's own forward.
          const { grads } = await runModelBackward(mg, weights, new Map([['tokens', batch.tokens]]), async (outs) => {
            const tl = now();
            const r = await crossEntropy(outs.get('logits')!, batch.targets, exec);
            loss = r.loss;
            lossTime = now() - tl;
            return new Map([['logits', r.dlogits]]);
          }, exec);
          timing.loss += lossTime;
          timing.forwardBackward += now() - tf - lossTime;
          const th2 = now();
          lossSum += loss;
          if (o.accum === 1) grad = params.flattenGrads(grads, gradBuf);
          else if (a === 0) grad = params.flattenGrads(grads, accBuf);
          else {
            const g = params.flattenGrads(grads, gradBuf);
            for (let i = 0; i < g.length; i++) grad![i]! += g[i]!;
          }
          timing.host += now() - th2;
        }
        if (o.accum > 1) { const s = 1 / o.accum; for (let i = 0; i < grad!.length; i++) grad![i]! *= s; }
        const lr = lrAt(schedule, step + 1);
        const to = now();
        const { gradNorm } = await opt.step(grad!, lr);
        timing.optimizer += now() - to;
        step++;
        const dt = now() - tStep;
        timing.steps += dt;
        // The first step of a call compiles the kernels: tokens/s is over the later ones when there are any.
        if (step > startStep + 1 || o.steps === startStep + 1) {
          trainTime += dt;
          tokens += o.batch * o.seq * o.accum;
        }
        lastLoss = lossSum / o.accum;
        const m: StepMetrics = { step, loss: lastLoss, lr, tokens_per_s: (o.batch * o.seq * o.accum) / dt, grad_norm: gradNorm };
        const evalNow = (o.evalEvery > 0 && step % o.evalEvery === 0) || step === o.steps;
        if (evalNow) {
          const te = now();
          m.val_loss = await validationLoss(mg, weights, valBatches, exec);
          lastVal = m.val_loss;
          timing.eval += now() - te;
        }
        fs.writeSync(fd, metricsLine(m));
        metrics.push(m);
        hooks.onStep?.(m);
        if (evalNow) await plot();
        if ((o.saveEvery > 0 && step % o.saveEvery === 0) || step === o.steps) await save();
      }
      if (step !== savedStep) await save();
    } finally {
      fs.closeSync(fd);
    }
    await plot();
    return {
      steps: step, stepsRun: step - startStep, loss: lastLoss, valLoss: lastVal, tokensPerS: trainTime > 0 ? tokens / trainTime : 0,
      target: o.target, device: dev, checkpoint: out, elapsedS: now() - t0, stopped, timing, ...(plots ? { plots } : {}),
    };
  } finally {
    await release();
  }
}

/** AdamW's state as safetensors tensors (moments f32, the step count i32). */
function optimizerTensors(state: ReadonlyMap<string, HostValue>): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  for (const [name, v] of state) {
    if (v.data instanceof Float32Array) out.set(name, { dtype: 'F32', shape: [...v.shape], data: v.data });
    else if (v.data instanceof Int32Array) out.set(name, { dtype: 'I32', shape: [...v.shape], data: v.data });
    else out.set(name, { dtype: 'F32', shape: [...v.shape], data: Float32Array.from(v.data) });
  }
  return out;
}

/** optimizer.safetensors as AdamW.load takes it (a corrupt file is one TrainError line). */
function optimizerState(tensors: ReadonlyMap<string, Tensor>, dir: string): Map<string, HostValue> {
  const out = new Map<string, HostValue>();
  for (const [name, t] of tensors) {
    if (t.dtype !== 'F32' && t.dtype !== 'I32') throw new TrainError(`--resume ${dir}: optimizer.safetensors: '${name}' is ${t.dtype.toLowerCase()}, not f32 or i32`);
    out.set(name, { shape: t.shape, data: t.data as Float32Array | Int32Array });
  }
  return out;
}

function definedOnly(o: TrainOptions): Partial<RunDefinition & RunControl> {
  const r: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined && k !== 'out' && k !== 'resume') r[k] = v;
  return r as Partial<RunDefinition & RunControl>;
}

const definitionOf = (o: RunDefinition): RunDefinition => Object.fromEntries(DEFINITION_KEYS.map((k) => [k, o[k]])) as unknown as RunDefinition;
const controlOf = (o: RunControl): RunControl => ({ steps: o.steps, schedule: o.schedule, chunk: o.chunk, target: o.target, evalEvery: o.evalEvery, saveEvery: o.saveEvery });
