// `npm run bench` in its tiny configuration (`--quick --targets cpu`, seconds): the entry runs,
// writes latest.json, latest.md and the SVG plots, and they are well formed: the JSON parses
// and has a result or a reason for every cell, every timed case was checked (relative RMSE
// under the bench's bar), the Markdown table has a row per case with as many cells as its
// header, and each SVG parses as one <svg> element. Never asserts on a time. Without PyTorch
// the peer is skipped by the bench with its reason, which this test prints.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { main, MAX_SHORT_REPS, parseArgs, runCount } from '../bench/run.js';

const dir = mkdtempSync(path.join(tmpdir(), 'retnetc-bench-smoke-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Cell { status: string; reason?: string; medianMs?: number; n?: number; relRmse?: number; checkedAgainst?: string }
interface CaseJson { id: string; group: string; label: string; form: string; results: Record<string, Cell>; peer?: Cell; ratios: Record<string, number> }
interface BenchJson {
  meta: { quick: boolean; targets: { name: string; available: boolean; reason?: string }[]; peer: { skipped?: string; torch?: string }; options: { bar: number } };
  cases: CaseJson[];
  curves: { perToken: { name: string; points: [number, number][] }[]; decode: { name: string; points: [number, number][] }[] };
}

describe('bench --quick --targets cpu', () => {
  let json: BenchJson;

  test('runs and writes latest.json, latest.md and the plots', async () => {
    const code = await main(['--quick', '--targets', 'cpu', '--out', dir, '--reps', '1']);
    expect(code).toBe(0);
    const files = readdirSync(dir).sort();
    expect(files).toEqual(expect.arrayContaining(['latest.json', 'latest.md', 'per-token.svg', 'decode.svg', 'ratios.svg']));
    json = JSON.parse(readFileSync(path.join(dir, 'latest.json'), 'utf8')) as BenchJson;
    if (json.meta.peer.skipped) console.log(`[bench-smoke] the peer was skipped: ${json.meta.peer.skipped}`);
    else console.log(`[bench-smoke] peer: PyTorch ${json.meta.peer.torch}`);
  }, 240_000);

  test('the JSON has every group, a result or a reason in every cell, and each timed case checked', () => {
    expect(json.meta.quick).toBe(true);
    expect(json.meta.targets).toEqual([{ name: 'cpu', available: true }]);
    const groups = new Set(json.cases.map((c) => c.group));
    for (const g of ['retention', 'dense', 'model', 'decode']) expect(groups, g).toContain(g);
    for (const form of ['parallel', 'chunkwise', 'recurrent']) expect(json.cases.some((c) => c.group === 'retention' && c.form === form), form).toBe(true);
    for (const c of json.cases) {
      const cell = c.results['cpu'];
      expect(cell, c.id).toBeDefined();
      if (cell!.status === 'ok') {
        expect(Number.isFinite(cell!.medianMs), c.id).toBe(true);
        expect(cell!.n, c.id).toBeGreaterThanOrEqual(1);
        expect(typeof cell!.checkedAgainst, c.id).toBe('string');
        // Checked against the peer or another schedule; the first of a group may be the reference itself.
        if (cell!.relRmse !== undefined) expect(cell!.relRmse, c.id).toBeLessThanOrEqual(json.meta.options.bar);
      } else {
        expect(cell!.status, c.id).not.toBe('wrong');
        expect(cell!.reason, c.id).toBeTruthy();
      }
      if (json.meta.peer.skipped) expect(c.peer, c.id).toBeUndefined();
      else {
        expect(c.peer, c.id).toBeDefined();
        if (c.peer!.status === 'ok' && cell!.status === 'ok') expect(c.ratios['cpu'], c.id).toBeGreaterThan(0);
      }
    }
    // Most quick cases are timed (none is near the cap).
    expect(json.cases.filter((c) => c.results['cpu']!.status === 'ok').length).toBeGreaterThan(json.cases.length / 2);
    expect(json.curves.perToken.find((s) => s.name === 'cpu chunkwise')!.points.length).toBeGreaterThanOrEqual(2);
    expect(json.curves.decode.find((s) => s.name === 'cpu')!.points.length).toBe(2);
  });

  test('the Markdown table has a row per case, each with the header\'s cells', () => {
    const md = readFileSync(path.join(dir, 'latest.md'), 'utf8');
    const lines = md.split('\n');
    const head = lines.findIndex((l) => l.startsWith('| case | form |'));
    expect(head).toBeGreaterThan(0);
    const cols = lines[head]!.split('|').length;
    expect(lines[head + 1]).toMatch(/^\|(---\|)+$/);
    const rows = lines.slice(head + 2, lines.indexOf('', head));
    expect(rows.length).toBe(json.cases.length);
    for (const r of rows) expect(r.split('|').length, r).toBe(cols);
    expect(md).toContain('## Time per token against T');
    expect(md).toContain('## Decoding time per token against context length');
  });

  test('every SVG is one well-formed <svg> element', () => {
    for (const f of readdirSync(dir).filter((x) => x.endsWith('.svg'))) {
      const svg = readFileSync(path.join(dir, f), 'utf8').trim();
      expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"'), f).toBe(true);
      expect(svg.endsWith('</svg>'), f).toBe(true);
      // Tags balance (self-closing ones aside) and no text holds a raw '<' or '&'.
      const stack: string[] = [];
      for (const m of svg.matchAll(/<(\/?)([a-zA-Z]+)[^>]*?(\/?)>/g)) {
        if (m[3]) continue;
        if (m[1]) expect(stack.pop(), `${f}: </${m[2]}>`).toBe(m[2]);
        else stack.push(m[2]!);
      }
      expect(stack, f).toEqual([]);
      expect(svg.replace(/<[^>]*>/g, '')).not.toMatch(/[<]|&(?!amp;|lt;|gt;|quot;)/);
      expect(svg, f).toMatch(/<polyline|<rect x=/);
    }
  });
});

describe('how often the bench repeats a case', () => {
  test('reps, more for short cases (min-ms of them, at most MAX_SHORT_REPS), fewer within the budget, at least one', () => {
    const o = parseArgs([]);
    expect([o.reps, o.minMs, o.budgetMs]).toEqual([5, 400, 8000]);
    expect(parseArgs(['--quick']).minMs).toBe(0);
    expect(parseArgs(['--min-ms', '1000']).minMs).toBe(1000);
    expect(runCount(3, 5, 400, 8000)).toBe(MAX_SHORT_REPS);
    expect(runCount(10, 5, 400, 8000)).toBe(40);
    expect(runCount(100, 5, 400, 8000)).toBe(5);
    expect(runCount(3000, 5, 400, 8000)).toBe(2);
    expect(runCount(9000, 5, 400, 8000)).toBe(1);
    expect(runCount(3, 2, 0, 1000)).toBe(2);
  });
});
