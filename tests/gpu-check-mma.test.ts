// The tensor-core part of the GPU check (runtime/cuda/mma-check.ts, what scripts/gpu-check.sh runs
// after the main check) run here with the CPU executor as its device, at its --small sizes: its
// cases (ragged and split-K projections forward and backward against float64 and against dense
// tiled, the tiny RetNet's logits), its summary and its decision. A right device passes; one whose
// mma kernels return a wrong tensor fails, naming it, with exit code 1.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it, vi } from 'vitest';
import type { Plan } from '../compiler/plan.js';
import type { Value } from '../dsl/reference/interpreter.js';
import { type MmaDevice, mmaCheckMain } from '../runtime/cuda/mma-check.js';
import { runPlanCpu } from '../runtime/plan-runner.js';

const ROOT = path.resolve(fileURLToPath(new URL('..', import.meta.url)));
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'retnetc-mma-check-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const isMma = (p: Plan): boolean => p.launches.some((l) => l.kernel.shared.some((s) => s.storage));
const cpu: MmaDevice = { name: 'CPU executor', run: async (p, inputs) => runPlanCpu(p, inputs as ReadonlyMap<string, Value>) };

async function check(device: MmaDevice): Promise<{ code: number; out: string; json: { ok: boolean; failed: number; results: { case: string; dtype: string; tensor: string; vs: string; relRmse: number; ok: boolean }[] } }> {
  const json = path.join(dir, `summary-${Math.random().toString(36).slice(2)}.json`);
  let out = '';
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => { out += String(s); return true; });
  let code: number;
  try {
    code = await mmaCheckMain(['--small', '--root', ROOT, '--json', json], { device });
  } finally {
    spy.mockRestore();
  }
  return { code, out, json: JSON.parse(fs.readFileSync(json, 'utf8')) };
}

describe('the GPU check of dense mma, with the CPU executor as its device', () => {
  it('passes: every tensor within its bar of float64 and of dense tiled', async () => {
    const r = await check(cpu);
    expect(r.code, r.out).toBe(0);
    // 2 dtypes x (2 projection cases x 3 tensors x 2 comparisons + the model's logits).
    expect(r.json.results.length).toBe(2 * (2 * 3 * 2 + 1));
    expect(r.json.results.every((x) => x.ok)).toBe(true);
    expect(r.out).toMatch(/linear split-K +bf16 M=150 N=21 K=19: y [\d.e+-]+ {2}y [\d.e+-]+ vs tiled/);
    expect(r.out).toMatch(/\n== mma PASS in [\d.]+ s\n$/);
  }, 120_000);

  it('fails, naming the tensor, when the mma kernels return a wrong gradient', async () => {
    const wrong: MmaDevice = {
      ...cpu,
      run: async (p, inputs) => {
        const out = runPlanCpu(p, inputs as ReadonlyMap<string, Value>);
        const g = out.get('grad.w');
        if (g && isMma(p) && p.schedule.dtype === 'f16') out.set('grad.w', { ...g, data: Float32Array.from(g.data, (x) => x * 1.01) });
        return out;
      },
    };
    const r = await check(wrong);
    expect(r.code).toBe(1);
    expect(r.json.ok).toBe(false);
    const bad = r.json.results.filter((x) => !x.ok).map((x) => `${x.case} ${x.dtype} ${x.tensor} ${x.vs}`).sort();
    expect(bad).toEqual(['linear ragged f16 grad.w float64', 'linear ragged f16 grad.w tiled', 'linear split-K f16 grad.w float64', 'linear split-K f16 grad.w tiled']);
    expect(r.out).toMatch(/grad\.w 1\.0e-2 vs tiled FAIL/);
    expect(r.out).toMatch(/\n== mma FAIL \(4 failures\) in [\d.]+ s\n$/);
  }, 120_000);
});
