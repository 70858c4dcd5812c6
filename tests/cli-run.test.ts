// `retnetc run` on compiled targets, as a user runs it: retention with an initial state on the
// CPU executor and on WebGPU with every --schedule, several --chunk values, --grad and --dtype,
// each output and gradient against the float64 reference (relative RMSE, ARCHITECTURE.md
// section 5: <= 1e-5 in f32, <= 5e-3 with half storage), the file's metadata, and the
// `wrote` lines on stdout.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fromFloat64, readSafetensorsFile, toFloat64 } from '../runtime/io/safetensors.js';
import { cli, ensureBuilt, expectOk, writeTensors } from './helpers/cli.js';
import { loadFn, prng, reference, relErr, uniform, type Value } from './helpers/harness.js';

const REQUIRE_WEBGPU = process.env['REQUIRE_WEBGPU'] === '1';

let dir = '';
beforeAll(() => {
  ensureBuilt();
  dir = mkdtempSync(path.join(tmpdir(), 'retnetc-cli-run-'));
}, 240_000);
afterAll(() => { if (dir) rmSync(dir, { recursive: true, force: true }); });

// T = 21 is a multiple of no chunk used below; V = 5 > K / 2, K = 8.
const [B, H, T, K, V] = [1, 2, 21, 8, 5];
const fn = loadFn('retention', 'retention_state');
const rand = prng(7);
const inputs = new Map<string, Value>([
  ['q', uniform([B, H, T, K], rand)], ['k', uniform([B, H, T, K], rand)], ['v', uniform([B, H, T, V], rand)],
  ['gamma', { shape: [H], data: Float64Array.from([0.75, 0.96875]) }], ['s0', uniform([B, H, K, V], rand)],
]);
const ref = reference(fn, inputs, rand);
const GRADS = ['grad.q', 'grad.k', 'grad.v', 'grad.gamma', 'grad.s0'];

let files: { inputs: string; grad: string } | undefined;
function dataFiles(): { inputs: string; grad: string } {
  if (!files) {
    const t = (v: Value) => fromFloat64(v.data, v.shape, 'F32');
    files = {
      inputs: writeTensors(path.join(dir, 'in.safetensors'), new Map([...inputs].map(([n, v]) => [n, t(v)] as const))),
      // Upstream gradients by output name.
      grad: writeTensors(path.join(dir, 'dout.safetensors'), new Map([['o', t(ref.ups.get('grad.o')!)], ['sT', t(ref.ups.get('grad.sT')!)]])),
    };
  }
  return files;
}

interface Case { target: 'cpu' | 'webgpu'; schedule: 'parallel' | 'recurrent' | 'chunkwise'; chunk?: number; dtype?: 'f16' | 'bf16'; grad: boolean }
const CASES: Case[] = [
  { target: 'cpu', schedule: 'parallel', chunk: 8, grad: true },
  { target: 'cpu', schedule: 'recurrent', grad: true },
  { target: 'cpu', schedule: 'chunkwise', chunk: 5, grad: true },
  { target: 'cpu', schedule: 'chunkwise', grad: false },
  { target: 'cpu', schedule: 'chunkwise', chunk: 4, dtype: 'f16', grad: true },
  { target: 'cpu', schedule: 'parallel', chunk: 16, dtype: 'bf16', grad: false },
  // Lavapipe compiles every pipeline with LLVM (seconds for a backward's many kernels):
  // one gradient run for two of the schedules; parallel runs forward, in f16.
  { target: 'webgpu', schedule: 'chunkwise', chunk: 8, grad: true },
  { target: 'webgpu', schedule: 'recurrent', grad: true },
  { target: 'webgpu', schedule: 'parallel', chunk: 4, dtype: 'f16', grad: false },
];

const name = (c: Case): string => `--target ${c.target} --schedule ${c.schedule}${c.chunk ? ` --chunk ${c.chunk}` : ''}${c.dtype ? ` --dtype ${c.dtype}` : ''}${c.grad ? ' --grad' : ''}`;

describe.concurrent('retnetc run on compiled targets, against the float64 reference', { timeout: 120_000 }, () => {
  it.for(CASES)('$target $schedule chunk=$chunk dtype=$dtype grad=$grad', async (c, ctx) => {
    const f = dataFiles();
    const out = path.join(dir, `out-${CASES.indexOf(c)}.safetensors`);
    const args = ['run', 'models/retention.ret', '--fn', 'retention_state', '--inputs', f.inputs, '--out', out, '--target', c.target, '--schedule', c.schedule];
    if (c.chunk) args.push('--chunk', String(c.chunk));
    if (c.dtype) args.push('--dtype', c.dtype);
    if (c.grad) args.push('--grad', f.grad);
    const r = await cli(args);
    if (c.target === 'webgpu' && r.code !== 0 && /no WebGPU adapter/.test(r.stderr) && !REQUIRE_WEBGPU) {
      console.warn(`[cli-run] skipping ${name(c)}: ${r.stderr.trim()}`);
      ctx.skip();
    }
    expectOk(r);
    const got = await readSafetensorsFile(out);
    const want = ['o', 'sT', ...(c.grad ? GRADS : [])];
    expect([...got.tensors.keys()].sort()).toEqual([...want].sort());
    // One `wrote` line per tensor, with its dtype and shape.
    const wrote = r.stdout.trim().split('\n');
    expect(wrote.length).toBe(want.length);
    for (const [n, t] of got.tensors) {
      expect(t.dtype).toBe('F32');
      expect(wrote).toContain(`wrote ${n} f32[${t.shape.join(', ')}] to ${out}`);
    }
    // The metadata says what ran.
    expect(got.metadata['target']).toBe(c.target);
    const sched = JSON.parse(got.metadata['schedule']!) as { form: string; chunk: number; dtype: string };
    expect(sched).toMatchObject({ form: c.schedule, chunk: c.chunk ?? 64, dtype: c.dtype ?? 'f32' });

    const tol = c.dtype ? 5e-3 : 1e-5;
    const problems: string[] = [];
    for (const n of want) {
      const truth = n.startsWith('grad.') ? ref.grads.get(n)! : ref.outs.get(n)!;
      const t = got.tensors.get(n)!;
      expect(t.shape).toEqual(truth.shape);
      const e = relErr(toFloat64(t), truth.data);
      // The decay gradient under half storage: its natural scale (tests/half-precision.test.ts).
      const bar = n === 'grad.gamma' && c.dtype ? 2e-2 : tol;
      if (!(e.rel <= bar) || e.nonFinite) problems.push(`${n}: relative RMSE ${e.rel.toExponential(2)} > ${bar} (non-finite: ${e.nonFinite})`);
    }
    expect(problems, name(c)).toEqual([]);
    if (c.dtype) {
      // Half storage really happened: o is not the f32 answer.
      const e = relErr(toFloat64(got.tensors.get('o')!), ref.outs.get('o')!.data);
      expect(e.rel, `${name(c)}: o equals the f32 result, so --dtype ${c.dtype} was ignored`).toBeGreaterThan(1e-5);
    }
  });
});

describe('retnetc run --target webgpu keeps Dawn and the Vulkan loader off the terminal', { timeout: 120_000 }, () => {
  it('a normal run: stderr is empty (Dawn prints two "artificially reduced" warnings on lavapipe)', async (ctx) => {
    const f = dataFiles();
    const out = path.join(dir, 'quiet.safetensors');
    // A driver manifest whose library is missing makes the loader talk too.
    const bad = path.join(dir, 'missing_icd.json');
    writeFileSync(bad, JSON.stringify({ file_format_version: '1.0.0', ICD: { library_path: path.join(dir, 'no-such-driver.so'), api_version: '1.3.0' } }));
    const lvp = '/usr/share/vulkan/icd.d/lvp_icd.json';
    const drivers = existsSync(lvp) ? `${bad}:${lvp}` : undefined;
    for (const env of [{}, ...(drivers ? [{ VK_DRIVER_FILES: drivers }] : [])]) {
      const r = await cli(['run', 'models/retention.ret', '--fn', 'retention_state', '--inputs', f.inputs, '--out', out, '--target', 'webgpu', '--schedule', 'chunkwise'], { env });
      if (r.code !== 0 && /no WebGPU adapter/.test(r.stderr) && !REQUIRE_WEBGPU) ctx.skip();
      expect(r.stderr, JSON.stringify(env)).toBe('');
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(`wrote o f32[${B}, ${H}, ${T}, ${V}] to ${out}`);
    }
    // Asked for with VK_LOADER_DEBUG, the loader's lines do reach the user.
    if (drivers) {
      const r = await cli(['run', 'models/retention.ret', '--fn', 'retention_state', '--inputs', f.inputs, '--out', out, '--target', 'webgpu', '--schedule', 'chunkwise'], { env: { VK_DRIVER_FILES: drivers, VK_LOADER_DEBUG: 'error' } });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toContain('no-such-driver.so');
    }
  });

  it('a real error still reaches the user, in one line', async () => {
    const bad = writeTensors(path.join(dir, 'bad-gamma.safetensors'), new Map([...inputs].map(([n, v]) => [n, n === 'gamma' ? fromFloat64([0.5, 0.5, 0.5], [3], 'F32') : fromFloat64(v.data, v.shape, 'F32')] as const)));
    const r = await cli(['run', 'models/retention.ret', '--fn', 'retention_state', '--inputs', bad, '--out', path.join(dir, 'x.safetensors'), '--target', 'webgpu']);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toEqual([`${bad}: error: input 'gamma' of 'retention_state' must have shape [H] = [2], got [3]`]);
  });

  it('with no adapter, the error is shown with the loader lines that explain it', async () => {
    const bad = path.join(dir, 'only_missing_icd.json');
    writeFileSync(bad, JSON.stringify({ file_format_version: '1.0.0', ICD: { library_path: path.join(dir, 'no-such-driver.so'), api_version: '1.3.0' } }));
    const f = dataFiles();
    const r = await cli(['run', 'models/retention.ret', '--fn', 'retention_state', '--inputs', f.inputs, '--out', path.join(dir, 'y.safetensors'), '--target', 'webgpu'], { env: { VK_DRIVER_FILES: bad, VK_ICD_FILENAMES: undefined } });
    expect(r.code).toBe(1);
    const lines = r.stderr.trim().split('\n');
    expect(lines[0]).toMatch(/^retnetc: error: no WebGPU adapter: /);
    // What the loader said about the driver it could not load comes after, as notes.
    expect(lines.length).toBeGreaterThan(1);
    for (const l of lines.slice(1)) expect(l).toMatch(/^retnetc: note: Dawn: /);
    expect(r.stderr).toContain('no-such-driver.so');
    expect(r.stderr).not.toMatch(/internal error|^\s{4}at /m);
  });
});

describe('retnetc run on a long sequence', { timeout: 120_000 }, () => {
  // Before, run evaluated the O(T^2) float64 reference first on every target (minutes here).
  it('--target webgpu at T = 4096, K = V = 64: agrees with a float64 recurrence, without waiting for the reference', async (ctx) => {
    const [b, h, t, kk, vv] = [1, 1, 4096, 64, 64];
    const rnd = prng(11);
    const q = uniform([b, h, t, kk], rnd);
    const k = uniform([b, h, t, kk], rnd);
    const v = uniform([b, h, t, vv], rnd);
    const g = 0.9990234375; // 1 - 2^-10
    const file = writeTensors(path.join(dir, 'long.safetensors'), new Map([['q', q], ['k', k], ['v', v], ['gamma', { shape: [1], data: Float64Array.from([g]) }]].map(([n, x]) => [n as string, fromFloat64((x as Value).data, (x as Value).shape, 'F32')] as const)));
    const out = path.join(dir, 'long-out.safetensors');
    const r = await cli(['run', 'models/retention.ret', '--fn', 'retention', '--inputs', file, '--out', out, '--target', 'webgpu', '--schedule', 'chunkwise'], { timeoutMs: 60_000 });
    if (r.code !== 0 && /no WebGPU adapter/.test(r.stderr) && !REQUIRE_WEBGPU) ctx.skip();
    expectOk(r);
    // S_t = g S_{t-1} + k_t^T v_t, o_t = q_t S_t, in float64.
    const S = new Float64Array(kk * vv);
    const want = new Float64Array(t * vv);
    for (let p = 0; p < t; p++) {
      for (let i = 0; i < kk; i++) for (let j = 0; j < vv; j++) S[i * vv + j] = g * S[i * vv + j]! + k.data[p * kk + i]! * v.data[p * vv + j]!;
      for (let j = 0; j < vv; j++) { let a = 0; for (let i = 0; i < kk; i++) a += q.data[p * kk + i]! * S[i * vv + j]!; want[p * vv + j] = a; }
    }
    const e = relErr(toFloat64((await readSafetensorsFile(out)).tensors.get('o')!), want);
    expect(e.nonFinite).toBe(0);
    expect(e.rel, `relative RMSE ${e.rel}`).toBeLessThanOrEqual(1e-5);
  });
});
