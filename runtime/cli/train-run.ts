// One training run with its terminal side, shared by `retnetc train` and `retnetc demo`: the
// progress (a bar on a terminal, plain lines elsewhere), SIGINT / SIGTERM handling (stop after
// the current step, save the last completed step, exit 130 / 143 with how to resume; a repeated
// signal within two seconds is the same request, a later one stops at once) and the mapping of
// the trainer's and the devices' errors to one line.
import { ScheduleError } from '../../compiler/plan.js';
import { RunError } from '../../dsl/reference/interpreter.js';
import { deviceError } from '../targets.js';
import { createProgress, type Progress } from '../train/progress.js';
import { type StartInfo, type StepMetrics, train, TrainError, type TrainOptions, type TrainResult } from '../train/trainer.js';
import { fail } from './options.js';

const fmt = (x: number | undefined, d = 3): string => (x === undefined ? '-' : x.toFixed(d));

/** 4m07s, 1h02m, 12s. */
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

export function endLine(r: TrainResult): string {
  const plot = r.plots ? `, loss plot ${r.plots.png ?? r.plots.svg}` : '';
  return `trained ${r.stepsRun} step${r.stepsRun === 1 ? '' : 's'} (${r.steps} in all) in ${duration(r.elapsedS)} on ${r.device}: loss ${fmt(r.loss)}, validation loss ${fmt(r.valLoss)} nats/byte, ${Math.round(r.tokensPerS)} tokens/s; checkpoint in ${r.checkpoint}${plot}`;
}

/** Progress on standard output (runtime/train/progress.ts), the start line above it. */
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

/**
 * Trains with progress and signal handling. `code` is the exit code: 0 when the run finished
 * (`result` set), 130 / 143 when a signal stopped it (checkpoint saved, said on stderr), 1 after
 * a one-line error. Errors that are not the user's or the device's propagate.
 */
export async function trainWithProgress(opts: TrainOptions): Promise<{ code: number; result?: TrainResult }> {
  const ac = new AbortController();
  let signal: { name: NodeJS.Signals; at: number } | undefined;
  let lastSaved: { dir: string; step: number } | undefined;
  const report = reporter();
  const onSignal = (name: NodeJS.Signals): void => {
    if (!signal) { signal = { name, at: Date.now() }; ac.abort(); return; }
    if (Date.now() - signal.at < 2000) return;
    report.stop(); // the terminal's cursor back before exiting
    const kept = lastSaved ? `${lastSaved.dir} holds the checkpoint of step ${lastSaved.step}` : 'no checkpoint was written';
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
      process.stderr.write(`retnetc: interrupted by ${signal.name} after step ${r.steps}: checkpoint saved in ${r.checkpoint}; continue with: retnetc train --resume ${r.checkpoint}\n`);
      return { code: signal.name === 'SIGTERM' ? 143 : 130, result: r };
    }
    process.stdout.write(endLine(r) + '\n');
    return { code: 0, result: r };
  } catch (e) {
    report.stop();
    if (e instanceof TrainError) return { code: fail('retnetc', e.message) };
    const device = deviceError(e);
    if (device) return { code: fail('retnetc', device) };
    if (e instanceof RunError) return { code: fail('retnetc', e.message.split('\n')[0]!) };
    if (e instanceof ScheduleError) return { code: fail('retnetc', `--schedule ${opts.schedule ?? 'chunkwise'}: ${e.message.split('\n')[0]}`) };
    throw e;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
