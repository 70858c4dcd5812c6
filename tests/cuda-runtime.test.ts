// The CUDA runtime (runtime/cuda) on a machine without a GPU: the addon loads and says in one
// line why CUDA cannot run; runPlanCuda rejects with that line; nvcc builds real kernels; and,
// against a mock libcuda (runtime/cuda/mock/libcuda_mock.c), the runner's whole host side:
// allocation, uploads, parameter order, grids (against the manifest's formulas evaluated here),
// the checksum of every buffer at every launch against the host data bound to it (a swap of two
// buffers fails), grids of more than 65535 batch entries folded into x, tensors of 2^31 elements
// refused, dynamic shared memory, synchronisation errors. Running kernels needs a GPU:
// scripts/gpu-check.sh does that (tests/gpu-check.test.ts runs its logic on the CPU executor).
// Nothing here skips for a missing addon, C compiler, nvcc, printer or CLI target: those are
// failures; only the paths that need the absence (or presence) of a GPU driver may skip.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Kernel } from '../compiler/kir.js';
import { add, div, i32, load, store, un, v } from '../compiler/kir.js';
import { printCuda } from '../targets/cuda/printer.js';
import { compilePlan } from '../compiler/plan.js';
import { makeSchedule } from '../compiler/schedule.js';
import { loadProgram } from '../dsl/program.js';
import type { EmittedKernel } from '../targets/emitted.js';
import { fromFloat64, writeSafetensorsFile } from '../runtime/io/safetensors.js';
import { addonCandidates, loadCudaAddon } from '../runtime/cuda/addon.js';
import { compileCuda, findNvcc, NvccError, type NvccInfo, targetFor } from '../runtime/cuda/nvcc.js';
import { CudaUnavailableError, cudaStatus, evalGridExpr, runPlanCuda } from '../runtime/cuda/runner.js';
import { SMOKE_KERNEL } from '../runtime/cuda/smoke.js';

const ROOT = path.resolve(fileURLToPath(new URL('..', import.meta.url)));
const ADDON = path.join(ROOT, 'runtime', 'cuda', 'addon', 'build', 'Release', 'retnetc_cuda.node');
const which = (cmd: string): string | undefined =>
  (process.env['PATH'] ?? '').split(path.delimiter).map((d) => path.join(d, cmd)).find((p) => fs.existsSync(p));
const CC = which('cc') ?? which('gcc');
const CXX = which('g++') ?? which('c++');

let tmp = '';
let addonNote = '';
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'retnetc-cuda-'));
  // `npm ci` builds the addon; build it here when a compiler exists but it was not built.
  if (!fs.existsSync(ADDON) && CXX) {
    const r = spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'build-cuda-addon.mjs')], { encoding: 'utf8' });
    addonNote = `${r.stderr}`.trim();
  }
}, 120_000);
afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

const retention = () => loadProgram(path.join(ROOT, 'models', 'retention.ret')).checked!.fns.get('retention')!;
const nvcc = findNvcc();
const noNvcc = typeof nvcc === 'string' ? nvcc : undefined;

describe('the CUDA addon', () => {
  it('loads without a driver and reports why CUDA is unavailable in one line', (ctx) => {
    if (!fs.existsSync(ADDON)) throw new Error(CXX ? `the addon was not built although ${CXX} exists: ${addonNote}` : 'no C++ compiler: the CUDA addon cannot be built');
    const a = loadCudaAddon();
    if ('error' in a) throw new Error(a.error);
    const s = a.addon.available();
    if (s.ok) {
      console.warn(`[cuda-runtime] a CUDA driver is present: ${a.addon.deviceInfo().name}`);
      ctx.skip();
    }
    expect(s.reason).toBeTypeOf('string');
    expect(s.reason).not.toMatch(/\n/);
    if (!fs.existsSync('/usr/lib/x86_64-linux-gnu/libcuda.so.1') && !process.env['RETNETC_LIBCUDA']) {
      expect(s.reason).toBe('no CUDA driver: libcuda.so.1 not found');
    }
    // Every other call throws that same line.
    expect(() => a.addon.alloc(16)).toThrow(s.reason!);
    expect(() => a.addon.deviceInfo()).toThrow(s.reason!);
    // Argument errors are still argument errors.
    expect(() => a.addon.launch(1n, [1, 1] as unknown as [number, number, number], [1, 1, 1], 0, [])).toThrow(/grid must be an array of 3 numbers/);
  });

  it('is looked for next to the sources, in dist and beside a bundle', () => {
    const c = addonCandidates();
    expect(c).toContain(ADDON);
  });
});

describe('runPlanCuda without a GPU', () => {
  it('cudaStatus() gives one line and runPlanCuda rejects with it', async (ctx) => {
    const status = cudaStatus();
    if (status === undefined) {
      console.warn('[cuda-runtime] CUDA is available here; the unavailable path is not tested');
      ctx.skip();
    }
    expect(status).not.toMatch(/\n/);
    expect(status!.length).toBeLessThan(300);
    const fn = retention();
    const plan = compilePlan(fn, makeSchedule('chunkwise', 4), { constants: new Map([['K', 2], ['V', 2]]) });
    const x = { shape: [1, 1, 3, 2], data: new Float64Array(6) };
    const run = runPlanCuda(plan, new Map([['q', x], ['k', x], ['v', x], ['gamma', { shape: [1], data: Float64Array.of(0.9) }]]));
    await expect(run).rejects.toBeInstanceOf(CudaUnavailableError);
    await expect(run).rejects.toThrow(status!);
    // As the CLI prints it: one line.
    const line = await run.catch((e: Error) => `retnetc: error: ${e.message}`);
    expect(String(line).split('\n')).toHaveLength(1);
  });

  it('retnetc run --target cuda fails with that one line (once the CLI has the target)', async (ctx) => {
    const main = path.join(ROOT, 'dist', 'runtime', 'cli', 'main.js');
    const status = cudaStatus();
    if (status === undefined) ctx.skip(); // a GPU is here: the unavailable path cannot be seen
    expect(fs.existsSync(main), `${main} is missing: build the CLI (npx tsc -p tsconfig.build.json)`).toBe(true);
    const x = fromFloat64(new Float64Array(12), [1, 2, 3, 2], 'F32');
    const inputs = path.join(tmp, 'in.safetensors');
    await writeSafetensorsFile(inputs, new Map([['q', x], ['k', x], ['v', x], ['gamma', fromFloat64([0.9, 0.8], [2], 'F32')]]));
    const r = spawnSync(process.execPath, [main, 'run', path.join(ROOT, 'models', 'retention.ret'), '--fn', 'retention', '--inputs', inputs,
      '--out', path.join(tmp, 'out.safetensors'), '--target', 'cuda', '--schedule', 'chunkwise'], { encoding: 'utf8' });
    expect(r.stderr, 'the CLI must have the cuda target').not.toMatch(/unknown target 'cuda'/);
    expect(r.status).toBe(1);
    expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain(status!);
    expect(r.stderr).not.toMatch(/\bat .*\.js:\d+/);
  });
});

describe('building kernels with nvcc', () => {
  it('compiles the contract kernel to PTX and cubin, and caches it', async (ctx) => {
    if (noNvcc) throw new Error(noNvcc);
    const cacheDir = path.join(tmp, 'cache');
    const ptx = await compileCuda(SMOKE_KERNEL.code, { arch: 'sm_90', format: 'ptx', name: SMOKE_KERNEL.entry, cacheDir });
    const text = ptx.image.toString('utf8');
    expect(text).toMatch(/\.target sm_90/);
    expect(text).toContain(`.entry ${SMOKE_KERNEL.entry}(`);
    expect(text.match(/\.param \.(u64|u32|f32|b32|s32)/g)).toHaveLength(4);
    expect(ptx.cached).toBe(false);
    const again = await compileCuda(SMOKE_KERNEL.code, { arch: 'sm_90', format: 'ptx', name: SMOKE_KERNEL.entry, cacheDir });
    expect(again.cached).toBe(true);
    expect(again.image.equals(ptx.image)).toBe(true);
    const cubin = await compileCuda(SMOKE_KERNEL.code, { arch: 'sm_80', format: 'cubin', cacheDir });
    expect(cubin.image.subarray(0, 4).toString('latin1')).toBe('\x7fELF');
  }, 120_000);

  it('reports a compile error in one line naming the kernel', async () => {
    if (noNvcc) throw new Error(noNvcc);
    const bad = 'extern "C" __global__ void broken(float* x) { x[0] = undeclared_name; }\n';
    const err = await compileCuda(bad, { arch: 'sm_90', format: 'ptx', name: 'broken', cacheDir: null }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NvccError);
    const msg = (err as Error).message;
    expect(msg).not.toMatch(/\n/);
    expect(msg).toMatch(/^nvcc failed on broken \(ptx, sm_90\): .*undeclared_name/);
    expect((err as NvccError).log).toContain('undeclared_name');
  }, 60_000);

  it('compiles every kernel of a real plan printed by targets/emit.ts to PTX (sm_90; sm_80 forward)', async () => {
    if (noNvcc) throw new Error(noNvcc);
    let emitKernel: ((k: Kernel, t: 'cuda') => EmittedKernel) | undefined;
    let why = '';
    try {
      const spec = '../targets/emit.js';
      emitKernel = ((await import(spec)) as { emitKernel: typeof emitKernel }).emitKernel;
    } catch (e) { why = String(e); }
    if (!emitKernel) throw new Error(`targets/emit.ts (the CUDA printer) cannot be loaded: ${why}`);
    const fn = retention();
    const constants = new Map([['K', 64], ['V', 64]]);
    const jobs: Promise<void>[] = [];
    for (const backward of [false, true]) {
      const plan = compilePlan(fn, makeSchedule('chunkwise', 64), { backward, constants });
      for (const l of plan.launches) {
        const ek = emitKernel(l.kernel, 'cuda');
        for (const arch of backward ? ['sm_90'] : ['sm_90', 'sm_80']) {
          jobs.push(compileCuda(ek.code, { arch, format: 'ptx', name: ek.entry, cacheDir: null }).then((img) => {
            const text = img.image.toString('utf8');
            const entry = new RegExp(`\\.entry ${ek.entry}\\(([^)]*)\\)`).exec(text);
            expect(entry, `${ek.entry} in its PTX`).not.toBeNull();
            expect(entry![1]!.match(/\.param/g) ?? []).toHaveLength(ek.buffers.length + ek.scalars.length);
          }));
        }
      }
    }
    await Promise.all(jobs);
  }, 300_000);

  it('picks cubin for a target nvcc has, else PTX for the newest older one', () => {
    const info: NvccInfo = { path: 'nvcc', version: '13.0.88', codes: ['sm_75', 'sm_80', 'sm_86', 'sm_89', 'sm_90', 'sm_100', 'sm_120'], archs: ['compute_75', 'compute_80', 'compute_86', 'compute_89', 'compute_90', 'compute_100', 'compute_120'] };
    expect(targetFor(9, 0, info)).toEqual({ arch: 'sm_90', format: 'cubin' });
    expect(targetFor(8, 0, info)).toEqual({ arch: 'sm_80', format: 'cubin' });
    expect(targetFor(12, 1, info)).toEqual({ arch: 'sm_120', format: 'ptx' });
    expect(() => targetFor(6, 0, info)).toThrow(/cannot build for compute capability 6.0/);
  });
});

// The host side of the CUDA printer's sinf and cosf (CUDA's own take a stack frame and f64 for
// huge arguments, which tests/nvcc.test.ts forbids): the helper text of a printed kernel compiled
// by the host C++ compiler with the few CUDA intrinsics it uses, against long double sin and cos.
const TRIG_HOST = String.raw`#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#define __device__
#define __forceinline__ inline
using std::fabs;
static inline unsigned __float_as_uint(float x) { unsigned u; memcpy(&u, &x, 4); return u; }
static inline float __uint_as_float(unsigned u) { float x; memcpy(&x, &u, 4); return x; }
static inline float __ull2float_rn(unsigned long long v) { return (float)v; }
HELPER
static double ulps(float got, long double want) {
  const float w = (float)want;
  const float step = w == 0 ? 1.4e-45f : std::nextafter(std::fabs(w), INFINITY) - std::fabs(w);
  return (double)(std::fabs((long double)got - want) / step);
}
int main() {
  std::mt19937 g(7);
  double ws = 0, wc = 0;
  for (long it = 0; it < 3000000; it++) {
    float x;
    if (it % 3 == 0) { x = __uint_as_float(g()); if (!std::isfinite(x)) continue; }
    else if (it % 3 == 1) x = std::uniform_real_distribution<float>(-300000.f, 300000.f)(g);
    else x = std::uniform_real_distribution<float>(-8.f, 8.f)(g);
    ws = std::fmax(ws, ulps(rn_sinf(x), sinl((long double)x)));
    wc = std::fmax(wc, ulps(rn_cosf(x), cosl((long double)x)));
  }
  const float z = -0.0f;
  printf("%.4f %.4f %d %d %d %d\n", ws, wc, (int)std::isnan(rn_sinf(INFINITY)), (int)std::isnan(rn_cosf(NAN)), (int)std::signbit(rn_sinf(z)), (int)(rn_cosf(z) == 1.0f));
}
`;

describe('the CUDA printer\'s sinf and cosf', () => {
  it('are within 2.5 ulp of long double sin and cos on 3 million floats (huge ones too); inf and NaN give NaN; sin(-0) = -0', () => {
    if (!CXX) throw new Error('no C++ compiler');
    const k: Kernel = { name: 'trig', workgroup: [1, 1, 1], grid: [i32(1), i32(1), i32(1)], buffers: [{ name: 'x', type: 'f32', access: 'read' }, { name: 'o', type: 'f32', access: 'read_write' }], scalars: [], shared: [],
      body: [store('o', i32(0), add(un('sin', load('x', i32(0))), un('cos', load('x', i32(0)))))] };
    const code = printCuda(k).code;
    expect(code).toContain('rn_sinf(x[0]) + rn_cosf(x[0])');
    const helper = /#ifndef RETNETC_RN_TRIG\n#define RETNETC_RN_TRIG\n([\s\S]*?)\n#endif/.exec(code)?.[1];
    expect(helper, 'the helper block').toBeDefined();
    const src = path.join(tmp, 'trig.cc');
    fs.writeFileSync(src, TRIG_HOST.replace('HELPER', helper!));
    const exe = path.join(tmp, 'trig');
    const cc = spawnSync(CXX, ['-O2', '-o', exe, src], { encoding: 'utf8' });
    expect(cc.status, cc.stderr).toBe(0);
    const r = spawnSync(exe, [], { encoding: 'utf8', timeout: 120_000 });
    const [ws, wc, nanInf, nanNan, negZero, cosZero] = r.stdout.trim().split(' ').map(Number);
    console.log(`[cuda-runtime] rn_sinf worst ${ws} ulp, rn_cosf worst ${wc} ulp`);
    expect(ws).toBeLessThan(2.5);
    expect(wc).toBeLessThan(2.5);
    expect([nanInf, nanNan, negZero, cosZero]).toEqual([1, 1, 1, 1]);
  }, 120_000);
});

describe('grid expressions', () => {
  it('evaluate with kernel IR i32 semantics', () => {
    const ceil = div(add(v('n'), i32(255)), i32(256));
    expect(evalGridExpr(ceil, { n: 1000 })).toBe(4);
    expect(evalGridExpr(ceil, { n: 1024 })).toBe(4);
    expect(evalGridExpr(ceil, { n: 0 })).toBe(0);
    expect(evalGridExpr(div(v('n'), v('m')), { n: 5, m: 0 })).toBe(0);
    expect(() => evalGridExpr(v('missing'), {})).toThrow(/grid expression: unknown scalar 'missing'/);
  });
});

describe('the runner against a mock driver', () => {
  let harness = '';
  let mockLib = '';
  let missing = '';
  beforeAll(async () => {
    if (!fs.existsSync(ADDON)) { missing = 'the addon is not built'; return; }
    if (!CC) { missing = 'no C compiler for the mock driver'; return; }
    if (noNvcc) { missing = noNvcc; return; }
    mockLib = path.join(tmp, 'libcuda_mock.so');
    const cc = spawnSync(CC, ['-shared', '-fPIC', '-O1', '-o', mockLib, path.join(ROOT, 'runtime', 'cuda', 'mock', 'libcuda_mock.c')], { encoding: 'utf8' });
    if (cc.status !== 0) throw new Error(`building the mock driver failed: ${cc.stderr}`);
    const esbuild = await import('esbuild');
    harness = path.join(tmp, 'harness.mjs');
    await esbuild.build({ entryPoints: [path.join(ROOT, 'runtime', 'cuda', 'mock', 'harness.ts')], bundle: true, platform: 'node', format: 'esm', target: 'node20', outfile: harness, logLevel: 'error' });
  }, 120_000);

  const run = (mode: string, env: Record<string, string>, ...args: string[]): Record<string, unknown> => {
    const r = spawnSync(process.execPath, [harness, mode, ROOT, ...args], {
      encoding: 'utf8', timeout: 240_000,
      env: { ...process.env, RETNETC_CUDA_ADDON: ADDON, RETNETC_LIBCUDA: mockLib, RETNETC_CUDA_CACHE: path.join(tmp, 'mock-cache'), ...env },
    });
    if (r.status !== 0) throw new Error(`harness ${mode} exited ${r.status}: ${r.stderr}`);
    return JSON.parse(r.stdout) as Record<string, unknown>;
  };

  it('reports the driver state in one line', (ctx) => {
    if (missing) throw new Error(missing);
    expect(run('status', {})).toEqual({ status: null });
    expect(run('status', { MOCK_CUDA_DEVICES: '0' })).toEqual({ status: 'no CUDA device: the driver reports none' });
    expect(run('status', { MOCK_CUDA_INIT_FAIL: '1' })).toEqual({ status: 'no CUDA device: cuInit: CUDA_ERROR_NO_DEVICE: no CUDA-capable device is detected' });
    expect(run('status', { RETNETC_LIBCUDA: path.join(tmp, 'nonexistent', 'libcuda.so.1') })).toEqual({ status: `no CUDA driver: ${path.join(tmp, 'nonexistent', 'libcuda.so.1')} not found` });
  }, 60_000);

  it('launches every kernel of real plans in order with the right buffers, scalars, grids and blocks', (ctx) => {
    if (missing) throw new Error(missing);
    const log = path.join(tmp, 'launches.log');
    const r = run('plumbing', { RETNETC_CUDA_FORMAT: 'ptx', MOCK_CUDA_LOG: log }, log);
    expect(r['crashed']).toBeUndefined();
    expect(r['problems']).toEqual([]);
    expect(r['launches']).toBeGreaterThan(5); // every launch of a chunkwise forward and a recurrent backward plan
    expect(r['hashes']).toBeGreaterThan(3 * (r['launches'] as number)); // every buffer of every launch
    expect(r['target']).toEqual({ arch: 'sm_90', format: 'ptx' });
  }, 240_000);

  it('a runner that binds q\'s buffer for k and k\'s for q (consistently) fails the checksum check', () => {
    if (missing) throw new Error(missing);
    const log = path.join(tmp, 'swap.log');
    const r = run('plumbing', { RETNETC_CUDA_FORMAT: 'ptx', MOCK_CUDA_LOG: log }, log, 'swap-q-k');
    expect(r['crashed']).toBeUndefined();
    const problems = r['problems'] as string[];
    expect(problems.length).toBeGreaterThan(0);
    expect(problems.every((p) => /checksum/.test(p)), problems.join('\n')).toBe(true);
    for (const t of ['q', 'k']) expect(problems.some((p) => new RegExp(`\\(${t}, tensor ${t}\\): the device buffer holds`).test(p)), t).toBe(true);
    expect(problems.some((p) => /\(v, tensor v\)/.test(p))).toBe(false);
  }, 240_000);

  it('folds B * H = 70000 batch entries into x (CUDA allows 65535 in y), kernels rebuilding their ids', () => {
    if (missing) throw new Error(missing);
    const log = path.join(tmp, 'fold.log');
    const r = run('fold', { RETNETC_CUDA_FORMAT: 'ptx', MOCK_CUDA_LOG: log }, log);
    expect(r['crashed']).toBeUndefined();
    expect(r['problems']).toEqual([]);
    expect(r['folded']).toBeGreaterThanOrEqual(5); // the forward and the backward's contractions
  }, 300_000);

  it('refuses a tensor of 2^31 elements in one line, before allocating', () => {
    if (missing) throw new Error(missing);
    const log = path.join(tmp, 'huge.log');
    const r = run('huge', { RETNETC_CUDA_FORMAT: 'ptx', MOCK_CUDA_LOG: log }, log);
    expect(r['name']).toBe('CudaRunError');
    expect(r['error']).toBe("tensor 'score' has 2147488281 elements (shape [1, 1, 46341, 46341]); CUDA kernels index with 32-bit integers, so a tensor must have fewer than 2^31 = 2147483648");
    expect(r['log']).not.toMatch(/alloc /); // the mock logs every cuMemAlloc
  }, 120_000);

  it('turns a failing kernel into a one-line error naming the driver error', (ctx) => {
    if (missing) throw new Error(missing);
    const r = run('run-error', { MOCK_CUDA_SYNC_FAIL: '1' });
    expect(r['name']).toBe('CudaRunError');
    expect(r['error']).toBe('running linear_attention on Mock CUDA Device: cuCtxSynchronize: CUDA_ERROR_ILLEGAL_ADDRESS: an illegal memory access was encountered');
  }, 120_000);
});
