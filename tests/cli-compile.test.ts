// `retnetc compile` as a user runs it, each --emit and each --target: the files it says it
// wrote are the files in the directory; the JSON manifests parse and agree with the emitted
// text (every entry point, binding, parameter and scalar the manifest names is in the code,
// at its place); WGSL modules pass Dawn's validation; C modules the system C compiler; TypeScript bindings parse and export a
// launcher per kernel; the tensor and kernel IR are readable and say what was compiled.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import ts from 'typescript';
import { findCompiler, NO_COMPILER } from '../targets/native/compile.js';
import type { PlanManifest } from '../targets/emit.js';
import { acquireWebGPU, type AcquiredWebGPU, validateWGSL, WebGPUUnavailableError } from '../runtime/webgpu/device.js';
import { cli, ensureBuilt, expectOk } from './helpers/cli.js';
import { compilePlan } from '../compiler/plan.js';
import { makeSchedule } from '../compiler/schedule.js';
import { withTargetDefaults } from '../runtime/targets.js';
import { loadFn } from './helpers/harness.js';

const REQUIRE_WEBGPU = process.env['REQUIRE_WEBGPU'] === '1';

let dir = '';
beforeAll(() => {
  ensureBuilt();
  dir = mkdtempSync(path.join(tmpdir(), 'retnetc-cli-compile-'));
}, 240_000);
let dawn: AcquiredWebGPU | null = null;
afterAll(() => {
  dawn?.release();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Dawn's null backend: validates WGSL and pipelines without running them. */
async function validator(): Promise<AcquiredWebGPU | null> {
  if (!dawn) {
    try {
      dawn = await acquireWebGPU({ dawnOptions: ['backend=null'], optionalFeatures: ['shader-f16'] });
    } catch (e) {
      if (!(e instanceof WebGPUUnavailableError) || REQUIRE_WEBGPU) throw e;
      console.warn(`[cli-compile] not validating WGSL: ${e.message}`);
    }
  }
  return dawn;
}

let n = 0;
/** Runs compile into a fresh directory; checks exit 0, a quiet stderr and one `wrote` line per file written. */
async function compile(...args: string[]): Promise<{ out: string; files: string[]; stdout: string }> {
  const out = path.join(dir, `c${n++}`);
  const r = await cli(['compile', ...args, '--out', out]);
  expectOk(r);
  const files = readdirSync(out).sort();
  const lines = r.stdout.trim().split('\n');
  // The last line is the plan's activation memory (compiler/memory.ts).
  expect(lines.at(-1)).toMatch(/^memory: peak [0-9.]+ [KMG]?i?B \(naive [0-9.]+ [KMG]?i?B\) at /);
  const wrote = lines.slice(0, -1).map((l) => /^wrote (\S+) \(.+\)$/.exec(l)?.[1]);
  expect(wrote.every((w) => w !== undefined), r.stdout).toBe(true);
  expect(wrote.map((w) => path.basename(w!)).sort()).toEqual(files);
  for (const w of wrote) expect(path.dirname(w!)).toBe(out);
  return { out, files, stdout: r.stdout };
}

const read = (dirPath: string, f: string): string => readFileSync(path.join(dirPath, f), 'utf8');

/** The parameters of CUDA entry `entry`: [type, name] in order. */
function cudaParams(code: string, entry: string): { type: string; name: string }[] {
  const m = new RegExp(`extern "C" __global__ void (?:__launch_bounds__\\([^)]*\\) )?${entry}\\(([^)]*)\\)`).exec(code);
  expect(m, `no __global__ entry ${entry}`).not.toBeNull();
  return m![1]!.split(',').map((p) => p.trim()).filter(Boolean).map((p) => {
    const name = /([A-Za-z_][A-Za-z0-9_]*)$/.exec(p)![1]!;
    return { type: p.slice(0, p.length - name.length).trim(), name };
  });
}

/** Checks a target manifest against the files and texts in `out`. */
async function checkManifest(out: string, files: string[], manifestFile: string, want: { target: 'wgsl' | 'cuda' | 'c'; fn: string; form: string; chunk: number; dtype: string; constants: Record<string, number> }): Promise<PlanManifest> {
  const m = JSON.parse(read(out, manifestFile)) as PlanManifest;
  expect(m).toMatchObject({ format: 'retnetc-plan', version: 1, target: want.target, fn: want.fn, constants: want.constants });
  expect(m.schedule).toMatchObject({ form: want.form, chunk: want.chunk, dtype: want.dtype });
  const ext = want.target === 'wgsl' ? '.wgsl' : want.target === 'c' ? '.c' : '.cu';
  // Exactly one module per kernel, and every module is a kernel of the manifest.
  expect(m.kernels.map((k) => k.file).sort()).toEqual(files.filter((f) => f.endsWith(ext)).sort());
  const tensorIds = new Set(m.tensors.map((t) => t.id));
  for (const id of m.inputs) expect(m.tensors.find((t) => t.id === id)?.role, id).toBe('input');
  for (const id of m.outputs) expect(m.tensors.find((t) => t.id === id)?.role, id).toBe('output');
  const gpu = want.target === 'wgsl' ? await validator() : null;
  for (const k of m.kernels) {
    const code = read(out, k.file);
    if (want.target === 'wgsl') {
      expect(code, k.entry).toMatch(new RegExp(`@compute @workgroup_size\\(${k.workgroup.join(', ')}\\)\\s*\\n\\s*fn ${k.entry}\\(`));
      for (const b of k.buffers) {
        const type = b.storage === 'f16' ? 'f16' : b.type === 'f32' ? 'f32' : 'i32';
        const access = b.access === 'read' ? 'read' : 'read_write';
        expect(code, `${k.entry}: buffer ${b.name}`).toContain(`@binding(${b.binding}) var<storage, ${access}> ${b.name}: array<${type}>`);
      }
      if (k.scalars.length) {
        expect(k.uniform, k.entry).toBeDefined();
        expect(code).toContain(`@binding(${k.uniform!.binding}) var<uniform> params: Params;`);
        const struct = /struct Params \{([^}]*)\}/.exec(code)![1]!;
        expect(struct.split(',').map((f) => f.trim().split(':')[0]!).filter(Boolean)).toEqual(k.scalars.map((s) => s.name));
        expect(k.scalars.map((s) => s.offset)).toEqual(k.scalars.map((_, i) => 4 * i));
      }
      // f16 storage needs the extension; a kernel of f32 tensors only (decays) does without.
      expect(/^enable f16;/m.test(code), k.entry).toBe(k.buffers.some((b) => b.storage === 'f16'));
      if (gpu) {
        const v = await validateWGSL(code, gpu.device);
        expect(v.ok, `${k.file}: ${JSON.stringify(v.messages)}`).toBe(true);
      }
    } else if (want.target === 'c') {
      // The ABI of runtime/native's addon: buffer i is rn_b[i], scalar i is rn_s[i].
      expect(code, k.entry).toContain(`void ${k.entry}(void *const *rn_b, const int64_t *rn_n, const int32_t *rn_s, const int32_t *rn_g, int64_t rn_begin, int64_t rn_end, unsigned char *rn_scratch, int32_t *rn_err) {`);
      for (const b of k.buffers) {
        const elem = b.storage ? 'uint16_t' : b.type === 'f32' ? 'float' : 'int32_t';
        expect(code, `${k.entry}: buffer ${b.name}`).toMatch(new RegExp(`${b.access === 'read' ? 'const ' : ''}${elem} \\*const restrict \\w+ = \\(${b.access === 'read' ? 'const ' : ''}${elem} \\*\\)rn_b\\[${b.binding}\\];`));
      }
      expect(k.scalars.map((s) => s.offset)).toEqual(k.scalars.map((_, i) => i));
      expect(k.scratchBytes, k.entry).toBeGreaterThanOrEqual(0);
    } else {
      const params = cudaParams(code, k.entry);
      expect(params.length).toBe(k.buffers.length + k.scalars.length);
      for (const b of k.buffers) {
        const p = params[b.binding]!;
        expect(p.name, `${k.entry}: parameter ${b.binding}`).toBe(b.name);
        const elem = b.storage === 'bf16' ? '__nv_bfloat16' : b.storage === 'f16' ? '__half' : b.type === 'f32' ? 'float' : 'int';
        expect(p.type).toBe(`${b.access === 'read' ? 'const ' : ''}${elem}* __restrict__`);
      }
      for (const s of k.scalars) expect(params[s.offset], `${k.entry}: scalar ${s.name}`).toEqual({ type: 'int', name: s.name });
    }
  }
  for (const l of m.launches) {
    const k = m.kernels.find((x) => x.entry === l.kernel);
    expect(k, `launch of ${l.kernel}`).toBeDefined();
    expect(l.buffers.map((b) => [b.name, b.binding])).toEqual(k!.buffers.map((b) => [b.name, b.binding]));
    for (const b of l.buffers) expect(tensorIds.has(b.tensor), `${l.kernel}: tensor ${b.tensor}`).toBe(true);
    for (const s of l.scalars) expect([...m.sizes, ...Object.keys(m.constants)]).toContain(s.size);
  }
  return m;
}

/** TypeScript bindings: no syntax errors, a launcher per kernel and one for the plan. */
function checkBindings(text: string, m: PlanManifest): void {
  const r = ts.transpileModule(text, { reportDiagnostics: true, compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } });
  expect((r.diagnostics ?? []).map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'))).toEqual([]);
  const pascal = (s: string) => s.split('_').map((w) => w.charAt(0).toUpperCase() + w.slice(1)).join('');
  for (const k of m.kernels) expect(text).toContain(`export function launch${pascal(k.entry)}<`);
  expect(text).toContain('export function launchPlan<');
  for (const id of m.inputs) expect(text).toContain(m.tensors.find((t) => t.id === id)!.name);
}

describe.concurrent('retnetc compile', { timeout: 120_000 }, () => {
  it('--emit ir: the tensor IR, each statement annotated with what was recognised', async () => {
    const { out, files } = await compile('models/retention.ret', '--fn', 'retention', '--schedule', 'chunkwise', '--emit', 'ir', '--size', 'K=8', '--size', 'V=4');
    expect(files).toEqual(['retention.ir']);
    const text = read(out, 'retention.ir');
    expect(text).toMatch(/^# retention, schedule \{"form":"chunkwise"/);
    expect(text).toMatch(/^# o: causal contraction, row t, key position s/m);
    expect(text).toMatch(/decay fixed: L\(p\) = p \* /);
    expect(text).toContain('-> chunkwise kernel');
  });

  it('--emit ir --backward: the gradient IR, named .grad', async () => {
    const { out, files } = await compile('models/retention.ret', '--fn', 'retention', '--schedule', 'recurrent', '--emit', 'ir', '--backward', '--size', 'K=8', '--size', 'V=4');
    expect(files).toEqual(['retention.grad.ir']);
    const text = read(out, 'retention.grad.ir');
    expect(text).toMatch(/anticausal contraction/);
    expect(text).toMatch(/grad\.o\[b, h, t, j\]/);
    expect(text).toContain('-> recurrent kernel');
  });

  it('--emit kernel-ir: one .kir per launch and a plan manifest that names them', async () => {
    const { out, files } = await compile('models/retention.ret', '--fn', 'retention_state', '--schedule', 'parallel', '--chunk', '16', '--emit', 'kernel-ir', '--size', 'K=8', '--size', 'V=4');
    const m = JSON.parse(read(out, 'retention_state.plan.json')) as { fn: string; backward: boolean; schedule: { form: string; chunk: number }; constants: Record<string, number>; launches: { kernel: string; workgroup: number[]; buffers: Record<string, string> }[] };
    expect(m).toMatchObject({ fn: 'retention_state', backward: false, constants: { K: 8, V: 4 } });
    expect(m.schedule).toMatchObject({ form: 'parallel', chunk: 16 });
    expect(files.filter((f) => f.endsWith('.kir')).sort()).toEqual(m.launches.map((l) => `${l.kernel}.kir`).sort());
    expect(m.launches.length).toBeGreaterThanOrEqual(2);
    for (const l of m.launches) {
      const kir = read(out, `${l.kernel}.kir`);
      expect(kir).toContain(l.kernel);
      for (const b of Object.keys(l.buffers)) expect(kir).toMatch(new RegExp(`\\b${b}\\b`));
    }
    // Both outputs are computed by some launch.
    const written = new Set(m.launches.flatMap((l) => Object.values(l.buffers)));
    for (const t of ['o', 'sT']) expect(written.has(t), t).toBe(true);
  });

  it('--target wgsl: modules and a manifest that agree, valid WGSL', async () => {
    const { out, files } = await compile('models/retention.ret', '--fn', 'retention', '--schedule', 'chunkwise', '--chunk', '16', '--target', 'wgsl', '--size', 'K=8', '--size', 'V=4');
    expect(files).toContain('retention.wgsl.json');
    await checkManifest(out, files, 'retention.wgsl.json', { target: 'wgsl', fn: 'retention', form: 'chunkwise', chunk: 16, dtype: 'f32', constants: { K: 8, V: 4 } });
  });

  it('--target wgsl --backward --dtype f16 --emit ts: f16 storage, valid WGSL, bindings', async () => {
    const { out, files } = await compile('models/retention.ret', '--fn', 'retention', '--schedule', 'chunkwise', '--backward', '--dtype', 'f16', '--target', 'wgsl', '--emit', 'ts', '--size', 'K=8', '--size', 'V=4');
    expect(files).toContain('retention.grad.wgsl.json');
    expect(files).toContain('retention.grad.wgsl.ts');
    const m = await checkManifest(out, files, 'retention.grad.wgsl.json', { target: 'wgsl', fn: 'retention.grad', form: 'chunkwise', chunk: 16, dtype: 'f16', constants: { K: 8, V: 4 } });
    expect(m.tensors.find((t) => t.name === 'q')!.type).toBe('f16');
    expect(m.tensors.filter((t) => t.role === 'output').map((t) => t.name).sort()).toEqual(['grad.gamma', 'grad.k', 'grad.q', 'grad.v']);
    checkBindings(read(out, 'retention.grad.wgsl.ts'), m);
  });

  it('--target cuda --backward --emit ts: kernels whose parameters are the manifest bindings, and bindings', async () => {
    const { out, files } = await compile('models/retention.ret', '--fn', 'retention_state', '--schedule', 'recurrent', '--backward', '--target', 'cuda', '--emit', 'ts', '--size', 'K=8', '--size', 'V=4');
    const m = await checkManifest(out, files, 'retention_state.grad.cuda.json', { target: 'cuda', fn: 'retention_state.grad', form: 'recurrent', chunk: 64, dtype: 'f32', constants: { K: 8, V: 4 } });
    checkBindings(read(out, 'retention_state.grad.cuda.ts'), m);
  });

  it('--target cuda --dtype bf16: bf16 storage in the parameters', async () => {
    const { out, files } = await compile('models/gated_retention.ret', '--fn', 'gated_retention', '--schedule', 'parallel', '--chunk', '32', '--dtype', 'bf16', '--target', 'cuda', '--size', 'K=16', '--size', 'V=8');
    const m = await checkManifest(out, files, 'gated_retention.cuda.json', { target: 'cuda', fn: 'gated_retention', form: 'parallel', chunk: 32, dtype: 'bf16', constants: { K: 16, V: 8 } });
    expect(m.kernels.some((k) => k.buffers.some((b) => b.storage === 'bf16'))).toBe(true);
  });

  it('--target c --backward --dtype f16: C the system compiler accepts, one entry per kernel at the manifest bindings', async () => {
    const { out, files } = await compile('models/retention.ret', '--fn', 'retention', '--schedule', 'chunkwise', '--chunk', '16', '--backward', '--dtype', 'f16', '--target', 'c', '--size', 'K=64', '--size', 'V=32');
    const m = await checkManifest(out, files, 'retention.grad.c.json', { target: 'c', fn: 'retention.grad', form: 'chunkwise', chunk: 16, dtype: 'f16', constants: { K: 64, V: 32 } });
    expect(m.kernels.some((k) => k.buffers.some((b) => b.storage === 'f16'))).toBe(true);
    const cc = findCompiler();
    expect(cc, NO_COMPILER).toBeDefined();
    for (const k of m.kernels) {
      const r = spawnSync(cc!.command, [...cc!.args, '-std=gnu11', '-fsyntax-only', '-fopenmp-simd', '-Werror=implicit-function-declaration', path.join(out, k.file)], { encoding: 'utf8' });
      expect(r.status, `${k.file}: ${r.stderr}`).toBe(0);
    }
  });

  it("--target c writes the kernels native runs: native's defaults (blocked sums, the chunkwise walk, chunk 32), the manifest says so", async () => {
    const { out, files } = await compile('models/retention.ret', '--fn', 'retention', '--schedule', 'chunkwise', '--target', 'c', '--size', 'K=64', '--size', 'V=64');
    const m = await checkManifest(out, files, 'retention.c.json', { target: 'c', fn: 'retention', form: 'chunkwise', chunk: 32, dtype: 'f32', constants: { K: 64, V: 64 } });
    expect(m.schedule).toMatchObject({ dense: 'blocked', tiles: { cols: 32, state: 1024 } });
    expect(m.schedule).not.toHaveProperty('chunkDefault');
    const fn = loadFn('retention', 'retention');
    const native = compilePlan(fn, withTargetDefaults(makeSchedule('chunkwise'), 'native'), { constants: new Map([['K', 64], ['V', 64]]) });
    expect(m.kernels.map((k) => k.entry.replace(/^rn_k\d+_/, '')).sort()).toEqual([...new Set(native.launches.map((l) => l.kernel.name))].sort());
  });

  it('nothing is written when compile refuses', async () => {
    const out = path.join(dir, 'refused');
    const r = await cli(['compile', 'models/retention.ret', '--fn', 'retention', '--schedule', 'recurrent', '--target', 'wgsl', '--size', 'K=100000', '--size', 'V=4', '--out', out]);
    expect(r.code).toBe(1);
    expect(existsSync(out)).toBe(false);
  });
});
