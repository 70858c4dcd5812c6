// SVG plots without a dependency, shared by the bench (bench/plot.ts) and the trainer's loss
// curves (runtime/train/plot.ts): line plots on linear or log axes (ticks at round steps or powers
// of ten, grid, axis labels, a legend, one polyline per series) and horizontal log-scale bars.
// The output is a standalone SVG document; PNGs are rendered from it (runtime/train/plot.ts).

export interface Series {
  name: string;
  points: [number, number][];
  dashed?: boolean;
  /** A CSS colour (default: the next of the palette). */
  color?: string;
  /** Stroke width (default 2). */
  width?: number;
  /** Stroke opacity in (0, 1] (default opaque). */
  opacity?: number;
  /** A dot at each point, with its value as a tooltip (default true; off for long series). */
  markers?: boolean;
}
export interface LinePlot {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  logX?: boolean;
  logY?: boolean;
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#7f7f7f', '#bcbd22'];
const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const fmt = (v: number): string => {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-3) return v.toExponential(0).replace('e+', 'e');
  return Number(v.toPrecision(3)).toString();
};

/** Ticks: powers of ten (log) or about five round steps (linear). */
function ticks(lo: number, hi: number, log: boolean): number[] {
  if (log) {
    const out: number[] = [];
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) out.push(10 ** e);
    return out.filter((t) => t >= lo * 0.999 && t <= hi * 1.001);
  }
  const step = 10 ** Math.floor(Math.log10((hi - lo) / 5 || 1));
  const k = [1, 2, 5, 10].find((m) => (hi - lo) / (m * step) <= 6) ?? 10;
  const s = k * step;
  const out: number[] = [];
  for (let t = Math.ceil(lo / s) * s; t <= hi + 1e-9 * s; t += s) out.push(t);
  return out;
}

export function linePlot(p: LinePlot): string {
  const W = 720, H = 440, L = 80, R = 200, T = 40, B = 60;
  const pts = p.series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!p.logX || x > 0) && (!p.logY || y > 0));
  const head = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">\n<rect width="${W}" height="${H}" fill="white"/>\n<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${esc(p.title)}</text>\n`;
  if (pts.length === 0) return `${head}<text x="${W / 2}" y="${H / 2}" text-anchor="middle">no data (every point was skipped)</text>\n</svg>\n`;
  let [x0, x1] = [Math.min(...pts.map((q) => q[0])), Math.max(...pts.map((q) => q[0]))];
  let [y0, y1] = [Math.min(...pts.map((q) => q[1])), Math.max(...pts.map((q) => q[1]))];
  if (p.logX) { x0 = 10 ** Math.floor(Math.log10(x0)); x1 = 10 ** Math.ceil(Math.log10(x1)); } else if (x0 === x1) { x0 -= 1; x1 += 1; }
  if (p.logY) { y0 = 10 ** Math.floor(Math.log10(y0)); y1 = 10 ** Math.ceil(Math.log10(y1)); } else { y0 = Math.min(0, y0); if (y0 === y1) y1 = y0 + 1; y1 *= 1.05; }
  const tx = (x: number) => L + (W - L - R) * (p.logX ? Math.log(x / x0) / Math.log(x1 / x0) : (x - x0) / (x1 - x0));
  const ty = (y: number) => H - B - (H - T - B) * (p.logY ? Math.log(y / y0) / Math.log(y1 / y0) : (y - y0) / (y1 - y0));
  const out: string[] = [head];
  out.push(`<rect x="${L}" y="${T}" width="${W - L - R}" height="${H - T - B}" fill="none" stroke="#444"/>`);
  for (const t of ticks(x0, x1, !!p.logX)) out.push(`<line x1="${tx(t)}" y1="${T}" x2="${tx(t)}" y2="${H - B}" stroke="#ddd"/><text x="${tx(t)}" y="${H - B + 16}" text-anchor="middle">${fmt(t)}</text>`);
  for (const t of ticks(y0, y1, !!p.logY)) out.push(`<line x1="${L}" y1="${ty(t)}" x2="${W - R}" y2="${ty(t)}" stroke="#ddd"/><text x="${L - 6}" y="${ty(t) + 4}" text-anchor="end">${fmt(t)}</text>`);
  out.push(`<text x="${(L + W - R) / 2}" y="${H - 18}" text-anchor="middle">${esc(p.xLabel)}</text>`);
  out.push(`<text transform="translate(18 ${(T + H - B) / 2}) rotate(-90)" text-anchor="middle">${esc(p.yLabel)}</text>`);
  p.series.forEach((s, i) => {
    const c = s.color ?? COLORS[i % COLORS.length]!;
    // The stroke's attributes after the colour; the defaults (width 2, opaque) print as they always have.
    const stroke = ` stroke-width="${s.width ?? 2}"${s.opacity !== undefined ? ` stroke-opacity="${s.opacity}"` : ''}${s.dashed ? ' stroke-dasharray="6 4"' : ''}`;
    const ok = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!p.logX || x > 0) && (!p.logY || y > 0)).sort((a, b) => a[0] - b[0]);
    if (ok.length) {
      out.push(`<polyline fill="none" stroke="${c}"${stroke} points="${ok.map(([x, y]) => `${tx(x).toFixed(1)},${ty(y).toFixed(1)}`).join(' ')}"/>`);
      if (s.markers ?? true) for (const [x, y] of ok) out.push(`<circle cx="${tx(x).toFixed(1)}" cy="${ty(y).toFixed(1)}" r="3" fill="${c}"><title>${esc(s.name)}: ${fmt(x)}, ${fmt(y)}</title></circle>`);
    }
    const ly = T + 10 + i * 18;
    out.push(`<line x1="${W - R + 12}" y1="${ly}" x2="${W - R + 36}" y2="${ly}" stroke="${c}"${stroke}/><text x="${W - R + 42}" y="${ly + 4}">${esc(s.name)}${ok.length ? '' : ' (skipped)'}</text>`);
  });
  out.push('</svg>\n');
  return out.join('\n');
}

/** Horizontal bars (log scale), one per label: ratios such as retnetc / PyTorch. */
export function barPlot(title: string, xLabel: string, bars: { label: string; value: number }[]): string {
  const rowH = 20, L = 330, R = 60, T = 40, B = 50, W = 820;
  const H = T + B + rowH * Math.max(1, bars.length);
  const ok = bars.filter((b) => Number.isFinite(b.value) && b.value > 0);
  const out = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`, `<rect width="${W}" height="${H}" fill="white"/>`, `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${esc(title)}</text>`];
  if (!ok.length) { out.push(`<text x="${W / 2}" y="${H / 2}" text-anchor="middle">no data</text>`, '</svg>\n'); return out.join('\n'); }
  const lo = 10 ** Math.floor(Math.log10(Math.min(1, ...ok.map((b) => b.value))));
  const hi = 10 ** Math.ceil(Math.log10(Math.max(1, ...ok.map((b) => b.value))));
  const tx = (v: number) => L + (W - L - R) * Math.log(v / lo) / Math.log(hi / lo);
  for (const t of ticks(lo, hi, true)) out.push(`<line x1="${tx(t)}" y1="${T}" x2="${tx(t)}" y2="${H - B}" stroke="${t === 1 ? '#444' : '#ddd'}"/><text x="${tx(t)}" y="${H - B + 16}" text-anchor="middle">${fmt(t)}</text>`);
  bars.forEach((b, i) => {
    const y = T + i * rowH;
    out.push(`<text x="${L - 6}" y="${y + 14}" text-anchor="end">${esc(b.label)}</text>`);
    if (Number.isFinite(b.value) && b.value > 0) out.push(`<rect x="${Math.min(tx(1), tx(b.value))}" y="${y + 3}" width="${Math.abs(tx(b.value) - tx(1))}" height="${rowH - 6}" fill="${b.value > 1 ? '#d62728' : '#2ca02c'}"><title>${esc(b.label)}: ${fmt(b.value)}</title></rect><text x="${tx(b.value) + (b.value >= 1 ? 4 : -4)}" y="${y + 14}" text-anchor="${b.value >= 1 ? 'start' : 'end'}">${fmt(b.value)}</text>`);
  });
  out.push(`<text x="${(L + W - R) / 2}" y="${H - 16}" text-anchor="middle">${esc(xLabel)}</text>`, '</svg>\n');
  return out.join('\n');
}
