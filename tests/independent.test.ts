// The independent numpy check (tests/independent/retention_numpy.py) as a test: numpy float64
// retention, retention_state (s0, sT) and gated retention, with gradients derived by hand,
// against `retnetc run` on the reference (<= 1e-12), cpu and webgpu (<= 1e-5 relative RMSE),
// including K = 256, V = 432 and K = V = 128. The script exits non-zero on any failure; its
// output is printed here.
//
// It runs the built CLI (dist/, made by `npm test`'s build step; after changing sources run
// `npx tsc -p tsconfig.build.json` before running this file alone).
// Needs python3 with numpy (Debian: python3-numpy, installed by .ci/run). Without them the
// test fails under CI=true and is skipped with the reason printed elsewhere. Without a WebGPU
// adapter the webgpu runs are skipped with the reason printed, unless REQUIRE_WEBGPU=1.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, test } from 'vitest';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SCRIPT = path.join(ROOT, 'tests', 'independent', 'retention_numpy.py');
const CI = process.env.CI === 'true' || process.env.CI === '1';
const REQUIRE_WEBGPU = process.env.REQUIRE_WEBGPU === '1';

/** The first interpreter that imports numpy: Debian's (python3-numpy) first, then PATH's. */
function findPython(): { python?: string; tried: string[] } {
  const tried: string[] = [];
  for (const cand of ['/usr/bin/python3', 'python3']) {
    const r = spawnSync(cand, ['-c', 'import numpy, sys; print(numpy.__version__, sys.executable)'], { encoding: 'utf8', timeout: 30_000 });
    if (r.status === 0) return { python: cand, tried };
    tried.push(`${cand}: ${r.error ? r.error.message : (r.stderr.trim().split('\n').pop() ?? `exit ${r.status}`)}`);
  }
  return { tried };
}

test('numpy float64 truth vs retnetc run (reference, cpu, webgpu): retention, retention_state, gated retention', async (ctx) => {
  const { python, tried } = findPython();
  if (!python) {
    const why = `no python3 with numpy (${tried.join('; ')}); install python3-numpy`;
    if (CI) throw new Error(`CI=true but ${why}`);
    console.warn(`[independent] skipping: ${why}`);
    ctx.skip();
    return;
  }
  const cli = path.join(ROOT, 'dist', 'runtime', 'cli', 'main.js');
  expect(fs.existsSync(cli), `${cli} is missing: run npx tsc -p tsconfig.build.json`).toBe(true);
  const args = [SCRIPT, '--targets', 'reference,cpu,webgpu', '--jobs', '2', ...(REQUIRE_WEBGPU ? [] : ['--webgpu-optional'])];
  const t0 = performance.now();
  const { code, output } = await new Promise<{ code: number | null; output: string }>((resolve, reject) => {
    const p = spawn(python, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    p.stdout.on('data', (b: Buffer) => { output += b.toString(); });
    p.stderr.on('data', (b: Buffer) => { output += b.toString(); });
    p.on('error', reject);
    p.on('close', (c) => resolve({ code: c, output }));
  });
  console.log(`[independent] ${python} ${path.relative(ROOT, SCRIPT)} (${((performance.now() - t0) / 1000).toFixed(1)} s):\n${output}`);
  const failures = output.split('\n').filter((l) => l.startsWith('FAIL '));
  expect(failures, 'failures reported by the numpy check').toEqual([]);
  expect(code, `the numpy check exited with ${code}`).toBe(0);
  // The script really compared something: its self-check, and every run (46 with webgpu: 4
  // reference, 24 cpu, 18 webgpu; lines like `retention B=3 ... cpu parallel chunk 16`).
  expect(output).toMatch(/numpy self-check: mask form = recurrence/);
  const webgpu = !/skipping webgpu/.test(output);
  if (REQUIRE_WEBGPU) expect(webgpu, 'REQUIRE_WEBGPU=1 but the numpy check skipped webgpu').toBe(true);
  const runs = Number(/all (\d+) runs within their bars/.exec(output)?.[1]);
  expect(runs).toBe(webgpu ? 46 : 28);
  expect(output.split('\n').filter((l) => /^[a-z_]+ B=\d+ .* (reference|cpu|webgpu)( |$).*grad\./.test(l)).length).toBe(runs);
}, 600_000);
