// The GPU check's own logic (runtime/cuda/gpu-check.ts, what scripts/gpu-check.sh runs on the
// first machine with a GPU) run here: its references (`refs`), its agreement cases (every
// schedule, forward and backward), its summary and its pass/fail decision, with the plans run by
// the CPU executor in place of the GPU (checkMain's device), at a small shape. A right device
// passes; a device that returns a wrong tensor, one that fails a plan, and stale references are
// each reported as failures with exit code 1 and a failed JSON summary.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { Plan } from '../compiler/plan.js';
import { AGREEMENT_CASES } from '../runtime/cuda/agreement.js';
import { type CheckDevice, checkMain, parseShape, refsMain } from '../runtime/cuda/gpu-check.js';
import { runPlanCpu } from '../runtime/plan-runner.js';

const ROOT = path.resolve(fileURLToPath(new URL('..', import.meta.url)));
// T = 70 crosses the check's chunk of 64; K = 33 gives the kernels a padded key slice.
const SHAPE = 'B=1,H=2,T=70,K=33,V=3';
let dir = '';

const cpu: CheckDevice = {
  name: 'CPU executor',
  prepare: async (p: Plan) => ({ kernels: p.launches.length, built: 0 }),
  run: async (p, inputs) => runPlanCpu(p, inputs),
};

/** Runs checkMain with `device`; its exit code, what it printed and its JSON summary. */
async function check(device: CheckDevice, ...extra: string[]): Promise<{ code: number; out: string; json: Record<string, unknown> }> {
  const json = path.join(dir, `summary-${Math.random().toString(36).slice(2)}.json`);
  let out = '';
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => { out += String(s); return true; });
  let code: number;
  try {
    code = await checkMain(['--refs', path.join(dir, 'refs'), '--root', ROOT, '--json', json, '--no-bench', '--shape', SHAPE, ...extra], { device });
  } finally {
    spy.mockRestore();
  }
  return { code, out, json: JSON.parse(fs.readFileSync(json, 'utf8')) as Record<string, unknown> };
}

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'retnetc-gpu-check-'));
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
  try {
    expect(await refsMain(['--out', path.join(dir, 'refs'), '--root', ROOT, '--shape', SHAPE])).toBe(0);
  } finally {
    spy.mockRestore();
  }
}, 120_000);
afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('the GPU check, with the CPU executor as its device', () => {
  it('passes when every schedule agrees with the float64 references', async () => {
    const r = await check(cpu);
    expect(r.code, r.out).toBe(0);
    const agree = r.json['agreement'] as { results: { ok: boolean; relRmse: number }[]; failed: number; worst: number };
    // 3 cases x 3 schedules x (forward outputs + backward gradients).
    expect(agree.results.length).toBeGreaterThanOrEqual(AGREEMENT_CASES.length * 3 * 4);
    expect(agree.failed).toBe(0);
    expect(agree.worst).toBeLessThan(1e-5);
    expect(r.json['ok']).toBe(true);
    expect(r.out).toMatch(/\n== PASS in [\d.]+ s\n$/);
    expect(r.out).toMatch(/summary: CPU executor\n {2}smoke not run; agreement \d+\/\d+ tensors, worst rel\. RMSE/);
  }, 120_000);

  it('fails, naming the tensor, when the device returns a wrong gradient (rel. RMSE 1e-4)', async () => {
    const wrong: CheckDevice = {
      ...cpu,
      run: async (p, inputs) => {
        const out = runPlanCpu(p, inputs);
        const g = out.get('grad.k');
        if (g && p.schedule.form === 'chunkwise') out.set('grad.k', { ...g, data: Float32Array.from(g.data, (x) => x * (1 + 1e-4)) });
        return out;
      },
    };
    const r = await check(wrong);
    expect(r.code).toBe(1);
    expect(r.json['ok']).toBe(false);
    const agree = r.json['agreement'] as { results: { case: string; form: string; tensor: string; ok: boolean }[]; failed: number };
    const bad = agree.results.filter((x) => !x.ok);
    expect(bad.map((x) => `${x.case} ${x.form} ${x.tensor}`).sort()).toEqual(AGREEMENT_CASES.map((c) => `${c.name} chunkwise grad.k`).sort());
    expect(r.out).toMatch(/chunkwise backward .*grad\.k 1\.0e-4 FAIL/);
    expect(r.out).toMatch(/\n== FAIL \(3 failures\) in [\d.]+ s\n$/);
  }, 120_000);

  it('fails when the device cannot run a plan, with its one-line error', async () => {
    const broken: CheckDevice = {
      ...cpu,
      run: async (p, inputs) => {
        if (p.schedule.form === 'recurrent' && p.fn.name.includes('linear_attention')) throw new Error('illegal address in kernel X');
        return runPlanCpu(p, inputs);
      },
    };
    const r = await check(broken);
    expect(r.code).toBe(1);
    const agree = r.json['agreement'] as { results: { ok: boolean; error?: string }[]; failed: number };
    expect(agree.failed).toBe(2); // forward and backward
    expect(agree.results.filter((x) => !x.ok).every((x) => x.error === 'illegal address in kernel X')).toBe(true);
    expect(r.out).toMatch(/linear_attention +recurrent +forward +FAIL illegal address in kernel X/);
  }, 120_000);

  it('fails on references made at another shape (stale), and on a bad --shape', async () => {
    const r = await check(cpu, '--shape', 'B=1,H=2,T=71,K=33,V=3');
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/retention: FAIL .*retention\.safetensors is stale \(shape /);
    expect(() => parseShape('B=1,H=2,T=0,K=4,V=4')).toThrow(/--shape: 'T=0' is not one of B, H, T, K, V = a positive integer/);
    expect(() => parseShape('B=1,H=2,T=3,K=4')).toThrow(/--shape: V is missing/);
  }, 120_000);
});
