// The loss curves (runtime/train/plot.ts): an SVG that parses as XML with the three series and
// axis labels, a PNG (magic bytes, the IHDR size: twice the SVG's), both written atomically
// into the directory (no temporary files left), a centred moving average for the smoothed line; and
// the bench's plots (runtime/plot/svg.ts) still well formed.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { lossPlotSvg, smooth, writeLossPlots } from '../runtime/train/plot.js';
import { linePlot } from '../runtime/plot/svg.js';

const dir = mkdtempSync(path.join(tmpdir(), 'retnetc-train-plot-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A minimal well-formedness check: every tag closes in order (no DOM parser in Node). */
function wellFormed(xml: string): boolean {
  const stack: string[] = [];
  for (const m of xml.matchAll(/<(\/?)([a-zA-Z][\w:-]*)([^>]*?)(\/?)>/g)) {
    const [, close, name, , self] = m;
    if (self) continue;
    if (close) { if (stack.pop() !== name) return false; } else stack.push(name!);
  }
  return stack.length === 0 && !/[<>]/.test(xml.replace(/<[^>]*>/g, ''));
}

const metrics = Array.from({ length: 300 }, (_, i) => ({ step: i + 1, loss: 5.5 * Math.exp(-i / 80) + 1.2 + 0.2 * Math.sin(i * 1.7), ...((i + 1) % 50 === 0 ? { val_loss: 5.6 * Math.exp(-i / 80) + 1.3 } : {}) }));

describe('loss plots', () => {
  test('smoothing: a centred moving average, shorter at the ends; half-width 0 is the identity', () => {
    expect(smooth([4, 2, 2], 0)).toEqual([4, 2, 2]);
    expect(smooth([3, 6, 9, 12], 1)).toEqual([4.5, 6, 9, 10.5]);
    expect(smooth([], 3)).toEqual([]);
  });

  test('the SVG: well formed, three series, labelled axes, validation points marked', () => {
    const svg = lossPlotSvg(metrics);
    expect(wellFormed(svg)).toBe(true);
    expect(svg).toMatch(/^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    expect(svg.match(/<polyline /g)).toHaveLength(3);
    for (const label of ['training loss', 'training (smoothed)', 'validation loss', '>step<', 'loss (nats per token)']) expect(svg).toContain(label);
    expect(svg.match(/<circle /g)).toHaveLength(6);
    expect(svg).toContain('stroke-opacity="0.3"');
  });

  test('writeLossPlots writes loss.svg and loss.png (PNG magic, twice the SVG size) and no temporary files', async () => {
    const r = await writeLossPlots(dir, metrics);
    expect(r.note).toBeUndefined();
    expect(r.svg).toBe(path.join(dir, 'loss.svg'));
    expect(r.png).toBe(path.join(dir, 'loss.png'));
    expect(wellFormed(readFileSync(r.svg, 'utf8'))).toBe(true);
    const png = readFileSync(r.png!);
    expect([...png.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    expect(png.toString('latin1', 12, 16)).toBe('IHDR');
    expect([png.readUInt32BE(16), png.readUInt32BE(20)]).toEqual([1440, 880]);
    expect(png.length).toBeGreaterThan(5000);
    // Again over the old files: replaced, nothing else left behind.
    await writeLossPlots(dir, metrics.slice(0, 10));
    expect(readdirSync(dir).sort()).toEqual(['loss.png', 'loss.svg']);
  });

  test('one step, no validation, non-finite losses: still a plot', async () => {
    const svg = lossPlotSvg([{ step: 1, loss: 3 }, { step: 2, loss: NaN }]);
    expect(wellFormed(svg)).toBe(true);
    expect(svg).toContain('validation loss (skipped)');
    await expect(writeLossPlots(path.join(dir, 'missing', 'sub'), metrics)).rejects.toThrow(/ENOENT/);
    expect(existsSync(path.join(dir, 'missing'))).toBe(false);
  });

  test('the bench plots keep their markers and defaults', () => {
    const svg = linePlot({ title: 't', xLabel: 'x', yLabel: 'y', series: [{ name: 'a', points: [[1, 2], [10, 20]] }], logX: true, logY: true });
    expect(wellFormed(svg)).toBe(true);
    expect(svg.match(/<circle /g)).toHaveLength(2);
    expect(svg).toContain('stroke-width="2" points=');
  });
});
