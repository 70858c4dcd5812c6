// The loss curves beside a training checkpoint: DIR/loss.svg and DIR/loss.png. Training loss per
// step (light), the same smoothed (a centred moving average), and validation loss where it was evaluated, against the step. The SVG comes
// from runtime/plot/svg.ts; the PNG is that SVG rendered by resvg. Both files are written
// atomically (a temporary file, fsync, rename): a reader sees the old plot or the new one.
import { randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { linePlot, type Series } from '../plot/svg.js';
import { realIo } from './checkpoint.js';

export const LOSS_SVG = 'loss.svg';
export const LOSS_PNG = 'loss.png';

export interface MetricPoint { step: number; loss: number; val_loss?: number }

export interface LossPlotFiles {
  svg: string;
  /** Absent when the PNG could not be rendered; `note` says why in one line. */
  png?: string;
  note?: string;
}

/**
 * A centred moving average over 2 * half + 1 points (fewer at the ends): unlike a running average
 * it does not lag behind a falling loss. half 0 returns the values.
 */
export function smooth(values: readonly number[], half: number): number[] {
  const prefix = [0];
  for (const v of values) prefix.push(prefix[prefix.length - 1]! + v);
  return values.map((_, i) => {
    const lo = Math.max(0, i - half), hi = Math.min(values.length, i + half + 1);
    return (prefix[hi]! - prefix[lo]!) / (hi - lo);
  });
}

/** The half-width for n points: none for a handful, about 1/60 of the run. */
export const smoothingHalfWidth = (n: number): number => Math.floor(n / 60);

const TRAIN = '#1f77b4';
const VAL = '#d62728';

/** The loss-curve SVG for a run's metrics (steps in any order; non-finite losses are left out). */
export function lossPlotSvg(metrics: readonly MetricPoint[], title = 'Training and validation loss'): string {
  const rows = metrics.filter((m) => Number.isFinite(m.step) && Number.isFinite(m.loss)).sort((a, b) => a.step - b.step);
  const train: [number, number][] = rows.map((m) => [m.step, m.loss]);
  const sm = smooth(rows.map((m) => m.loss), smoothingHalfWidth(rows.length));
  const val: [number, number][] = metrics.filter((m) => m.val_loss !== undefined && Number.isFinite(m.val_loss) && Number.isFinite(m.step)).map((m) => [m.step, m.val_loss!]);
  const series: Series[] = [
    { name: 'training loss', points: train, color: TRAIN, width: 1, opacity: 0.3, markers: false },
    { name: 'training (smoothed)', points: rows.map((m, i) => [m.step, sm[i]!]), color: TRAIN, markers: false },
    { name: 'validation loss', points: val, color: VAL, markers: val.length <= 200 },
  ];
  return linePlot({ title, xLabel: 'step', yLabel: 'loss (nats per token)', series });
}

/** A temporary file beside `file`, written and fsynced (the checkpoint writer's durable write), then renamed over it. */
async function writeAtomic(file: string, data: string | Uint8Array): Promise<void> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    await realIo.writeDurable(tmp, typeof data === 'string' ? new TextEncoder().encode(data) : data);
    await realIo.rename(tmp, file);
  } catch (e) {
    await fsp.rm(tmp, { force: true });
    throw e;
  }
}

/** The PNG of an SVG (2x its width), or why there is none (resvg missing or failing). */
export async function svgToPng(svg: string): Promise<Uint8Array | { why: string }> {
  let Resvg;
  try {
    ({ Resvg } = await import('@resvg/resvg-js'));
  } catch (e) {
    return { why: `@resvg/resvg-js does not load here (${(e instanceof Error ? e.message : String(e)).split('\n')[0]})` };
  }
  try {
    const width = Number(/width="(\d+)"/.exec(svg)?.[1] ?? 720);
    return new Resvg(svg, { fitTo: { mode: 'width', value: 2 * width }, font: { loadSystemFonts: true, defaultFontFamily: 'DejaVu Sans' } }).render().asPng();
  } catch (e) {
    return { why: `resvg could not render the plot (${(e instanceof Error ? e.message : String(e)).split('\n')[0]})` };
  }
}

/**
 * Writes DIR/loss.svg and DIR/loss.png for the metrics; returns their paths. A PNG that cannot be
 * rendered leaves the SVG alone and says why in `note`; a failed write rejects (the caller says so).
 */
export async function writeLossPlots(dir: string, metrics: readonly MetricPoint[], title?: string): Promise<LossPlotFiles> {
  const svg = lossPlotSvg(metrics, title);
  const svgFile = path.join(dir, LOSS_SVG);
  await writeAtomic(svgFile, svg);
  const png = await svgToPng(svg);
  if (!(png instanceof Uint8Array)) return { svg: svgFile, note: `no ${LOSS_PNG}: ${png.why}` };
  const pngFile = path.join(dir, LOSS_PNG);
  await writeAtomic(pngFile, png);
  return { svg: svgFile, png: pngFile };
}
