// The trainer's progress: on a terminal, a cli-progress bar (step/total, loss, validation loss,
// tokens/s, learning rate, ETA) redrawn in place, with log lines printed above it; anywhere else
// (a pipe, a file, CI), plain lines without escape codes, one every `every` steps, at every
// evaluation and at the last step. The ETA is this module's own (from the steps since the first,
// which compiles the kernels, so neither compilation nor a resumed run's earlier steps skew it)
// and is the same in both forms.
import cliProgress from 'cli-progress';

export interface ProgressFields {
  loss: number;
  /** Present at the steps where validation loss was evaluated. */
  valLoss?: number;
  tokensPerS: number;
  lr?: number;
}

export interface Progress {
  update(step: number, fields: ProgressFields): void;
  /** A line of its own (above the bar on a terminal). */
  log(line: string): void;
  /** Leaves the bar as it is and the cursor below it; safe to call twice. */
  stop(): void;
}

export interface ProgressOptions {
  /** The last step. */
  total: number;
  /** Default process.stderr. */
  stream?: NodeJS.WriteStream | NodeJS.WritableStream;
  /** Plain mode: a line every `every` steps (default 10). */
  every?: number;
  /** The step the run starts from (a resumed run's), default 0. */
  start?: number;
  /** Milliseconds now (for tests; default performance.now). */
  now?: () => number;
}

/** 42s, 3m05s, 1h02m. */
export function formatEta(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

const num = (x: number, digits = 4): string => (Number.isFinite(x) ? x.toFixed(digits) : String(x));
const rate = (x: number): string => (Number.isFinite(x) ? (x >= 100 ? x.toFixed(0) : x.toPrecision(3)) : '--');

/** The fields of a step as `loss 2.3456  val 2.4012  1234 tokens/s  lr 1.00e-3` (val and lr when given). */
export function formatFields(f: ProgressFields, lastVal?: number): string {
  const val = f.valLoss ?? lastVal;
  return [
    `loss ${num(f.loss)}`,
    ...(val !== undefined ? [`val ${num(val)}`] : []),
    `${rate(f.tokensPerS)} tokens/s`,
    ...(f.lr !== undefined ? [`lr ${f.lr.toExponential(2)}`] : []),
  ].join('  ');
}

export function createProgress(opts: ProgressOptions): Progress {
  const stream = opts.stream ?? process.stderr;
  const total = opts.total;
  const start = opts.start ?? 0;
  const every = Math.max(1, Math.floor(opts.every ?? 10));
  const now = opts.now ?? (() => performance.now());
  // The first step compiles the kernels (a minute on a cold cache): the ETA counts from its end.
  let first: { t: number; step: number } | undefined;
  /** Called by every update, printed or not: the first one marks the end of compilation. */
  const mark = (step: number): void => { first ??= { t: now(), step }; };
  const width = String(total).length;
  let lastVal: number | undefined;
  let stopped = false;
  const eta = (step: number): string => {
    if (step >= total) return formatEta(0);
    const done = first ? step - first.step : 0;
    if (done <= 0) return '--';
    return formatEta(((now() - first!.t) / 1000 / done) * (total - step));
  };

  if ((stream as NodeJS.WriteStream).isTTY) {
    const multi = new cliProgress.MultiBar({
      stream,
      format: 'step {value}/{total} {bar} {fields}  ETA {remaining}',
      barsize: 24,
      hideCursor: true,
      // The trainer handles SIGINT/SIGTERM (a last checkpoint) and calls stop(), which shows the cursor again.
      gracefulExit: false,
      clearOnComplete: false,
      stopOnComplete: false,
      autopadding: true,
    }, cliProgress.Presets.shades_classic);
    const bar = multi.create(total, start, { fields: 'loss --', remaining: '--' });
    return {
      update(step, f) {
        if (stopped) return;
        mark(step);
        if (f.valLoss !== undefined) lastVal = f.valLoss;
        bar.update(step, { fields: formatFields(f, lastVal), remaining: eta(step) });
        multi.update();
      },
      log(line) {
        if (stopped) stream.write(line + '\n');
        else {
          multi.log(line + '\n');
          multi.update(); // now, not at the next redraw (which stop() would skip)
        }
      },
      stop() {
        if (stopped) return;
        stopped = true;
        multi.stop();
      },
    };
  }

  return {
    update(step, f) {
      if (stopped) return;
      mark(step);
      const evaluated = f.valLoss !== undefined;
      if (evaluated) lastVal = f.valLoss;
      if (step % every !== 0 && !evaluated && step !== total) return;
      stream.write(`step ${String(step).padStart(width)}/${total}  ${formatFields(f, lastVal)}  eta ${eta(step)}\n`);
    },
    log(line) {
      stream.write(line + '\n');
    },
    stop() {
      stopped = true;
    },
  };
}
