// Torchscale-format checkpoints the other tests never saw: tests/independent/retnet_numpy.py
// (an independent numpy RetNet written from torchscale's RetNetDecoder, checked here against
// the torchscale golden files first) writes random configs — widths, heads, value and FFN dims,
// layers, vocabularies, swish/gelu, scale_embedding, layernorm_embedding, eps, batch sizes,
// lengths — with float64 logits. Every file is loaded as a user's checkpoint
// (runtime/io/torchscale.ts) and run in all three modes, chunkwise at several chunk sizes, on
// cpu and on webgpu: relative RMSE <= 1e-4, the fixtures' bar. The generator's seed is fresh per
// run and printed (FC_SEED reproduces). Needs python3 with numpy (CI installs python3-numpy);
// without it the test fails under CI and is skipped elsewhere.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { loadTorchscale } from '../runtime/io/torchscale.js';
import { type Mode, planExec, runModelMode } from '../runtime/exec.js';
import { fcSeed } from './helpers/harness.js';
import { acquireTestGpu, requireGpu } from './helpers/webgpu.js';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const SCRIPT = path.join(ROOT, 'tests', 'independent', 'retnet_numpy.py');
const FIXTURES = path.resolve(ROOT, '..', 'shared', 'fixtures', 'torchscale');
const CI = process.env.CI === 'true' || process.env.CI === '1';
const TOL = 1e-4;
const COUNT = 6;

const relRmse = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let n = 0, d = 0;
  for (let i = 0; i < b.length; i++) { n += (a[i]! - b[i]!) ** 2; d += b[i]! ** 2; }
  return Math.sqrt(n / d);
};

const python = ['/usr/bin/python3', 'python3'].find((p) => spawnSync(p, ['-c', 'import numpy'], { timeout: 30_000 }).status === 0);
const seed = fcSeed('independent-retnet') >>> 0;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'retnetc-independent-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const run = (args: string[]) => spawnSync(python!, [SCRIPT, ...args], { encoding: 'utf8', timeout: 120_000 });
const generated = python ? run([dir, '--count', String(COUNT), '--seed', String(seed)]) : undefined;
if (generated) console.log(`[independent-retnet] ${generated.stdout.trim()}`);
const files = fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors')).sort();

const gpu = await acquireTestGpu('independent-retnet');
const cpu = planExec('cpu');
const webgpu = planExec('webgpu');
afterAll(async () => { await webgpu.release(); });

describe('independent numpy RetNet checkpoints (random configs)', () => {
  test('python3 with numpy writes them, and its RetNet reproduces torchscale golden logits', (ctx) => {
    if (!python) {
      if (CI) throw new Error('CI=true but no python3 with numpy (install python3-numpy)');
      console.warn('[independent-retnet] skipping: no python3 with numpy');
      ctx.skip();
    }
    expect(generated!.status, generated!.stderr).toBe(0);
    expect(files).toHaveLength(COUNT);
    const golden = fs.existsSync(FIXTURES) ? fs.readdirSync(FIXTURES).filter((f) => f.endsWith('.safetensors')).map((f) => path.join(FIXTURES, f)) : [];
    if (CI) expect(golden.length).toBeGreaterThan(0);
    if (golden.length) {
      const r = run(['--check', ...golden]);
      console.log(`[independent-retnet] ${r.stdout.trim()}`);
      expect(r.status, r.stderr).toBe(0);
    }
  });

  test('a WebGPU adapter is available', (ctx) => requireGpu(gpu, () => ctx.skip()));

  const cases: [Mode, number][] = [['parallel', 64], ['chunkwise', 1], ['chunkwise', 7], ['chunkwise', 16], ['recurrent', 0]];
  for (const target of ['cpu', 'webgpu'] as const) {
    test.skipIf(!python || (target === 'webgpu' && !gpu.gpu))(`${target}: every file, every mode, chunkwise at chunks 1, 7, 16: logits within ${TOL} of the float64 truth`, async () => {
      const rows: string[] = [];
      let worst = 0;
      for (const f of files) {
        const ck = await loadTorchscale(path.join(dir, f));
        const want = ck.weights.get('logits.recurrent')!;
        // WebGPU: fewer chunk sizes (each compiles its own pipelines).
        for (const [mode, chunk] of target === 'cpu' ? cases : cases.filter(([, c]) => c !== 1)) {
          const exec = target === 'cpu' ? cpu.exec : webgpu.exec;
          const out = await runModelMode(ck.model, ck.weights, ck.tokens!, mode, exec, chunk || undefined);
          const got = out.get('logits')!;
          expect(got.shape).toEqual(want.shape);
          const e = relRmse(got.data, want.data);
          worst = Math.max(worst, e);
          rows.push(`${f} ${mode}${mode === 'chunkwise' ? ` ${chunk}` : ''}: ${e.toExponential(2)}`);
          if (!(e <= TOL)) throw new Error(`${f} (${JSON.stringify(ck.config?.raw)}) ${target} ${mode} chunk ${chunk}: rel. RMSE ${e.toExponential(2)} > ${TOL} (reproduce with FC_SEED=${seed})`);
        }
      }
      console.log(`[independent-retnet] ${target}: worst ${worst.toExponential(2)}\n  ${rows.join('\n  ')}`);
    }, 300_000);
  }
});
