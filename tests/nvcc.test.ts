// Every CUDA kernel compilePlan produces for retention, retention_state, linear attention and
// gated retention (parallel, recurrent and chunkwise; forward and backward; chunk 64,
// K = V = 64), plus a chunk-128 kernel with dynamic shared memory, compiles with nvcc for
// sm_80 and sm_90, and ptxas -v reports no spills; the PTX has no f64. All kernels go into
// one translation unit per architecture (the modules' helpers are include-guarded), and
// the two architectures compile in parallel. The retention kernels also go in with f16 and
// bf16 storage (schedule dtype; names suffixed _f16 and _bf16).
// Without nvcc the suite is skipped with the reason printed, unless CI is set.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { Kernel } from '../compiler/kir.js';
import { compilePlan } from '../compiler/plan.js';
import { type Form, makeSchedule } from '../compiler/schedule.js';
import { loadProgram } from '../dsl/program.js';
import { emitKernel } from '../targets/emit.js';

const ARCHS = ['sm_80', 'sm_90'];
const CI = Boolean(process.env['CI']);
const version = spawnSync('nvcc', ['--version'], { encoding: 'utf8' });
const nvcc = version.status === 0 ? version.stdout.trim().split('\n').pop()! : '';
if (!nvcc) console.warn(`[nvcc] ${CI ? 'FAIL (CI is set)' : 'skipping'}: nvcc not found on PATH`);

const K64 = new Map([['K', 64], ['V', 64]]);
const MODELS: [string, string][] = [['retention', 'retention'], ['retention', 'retention_state'], ['linear_attention', 'linear_attention'], ['gated_retention', 'gated_retention']];
const FORMS: Form[] = ['parallel', 'recurrent', 'chunkwise'];

interface Unit { entry: string; label: string; code: string; dynamicSharedBytes: number }

/** Distinct CUDA modules of the test set; kernels with equal names and different code get a suffix. */
function modules(): Unit[] {
  const out: Unit[] = [];
  const seen = new Set<string>();
  const push = (label: string, k: Kernel): void => {
    const code = emitKernel(k, 'cuda').code;
    if (seen.has(code)) return; // the same kernel in another plan
    seen.add(code);
    let kk = k;
    for (let i = 2; out.some((u) => u.entry === kk.name); i++) kk = { ...k, name: `${k.name}_v${i}` };
    const e = emitKernel(kk, 'cuda');
    out.push({ entry: e.entry, label, code: e.code, dynamicSharedBytes: e.dynamicSharedBytes });
  };
  for (const [file, name] of MODELS) {
    const fn = loadProgram(`models/${file}.ret`).checked!.fns.get(name)!;
    for (const form of FORMS) for (const backward of [false, true]) {
      for (const l of compilePlan(fn, makeSchedule(form, 64), { backward, constants: K64 }).launches) push(`${name} ${form}${backward ? ' backward' : ''}`, l.kernel);
    }
  }
  const fn = loadProgram('models/retention.ret').checked!.fns.get('retention')!;
  for (const dtype of ['f16', 'bf16'] as const) for (const form of FORMS) for (const backward of [false, true]) {
    for (const l of compilePlan(fn, makeSchedule(form, 64, { dtype }), { backward, constants: K64 }).launches) {
      push(`retention ${form}${backward ? ' backward' : ''} ${dtype}`, { ...l.kernel, name: `${l.kernel.name}_${dtype}` });
    }
  }
  const big = compilePlan(fn, makeSchedule('parallel', 128), { constants: K64 }).launches[0]!.kernel;
  push('retention parallel chunk 128', { ...big, name: `${big.name}_c128` });
  return out;
}

interface Props { stack: number; spillStores: number; spillLoads: number; registers: number; smem: number }

/** Per-function numbers from `ptxas -v`. */
function parsePtxas(log: string): Map<string, Props> {
  const out = new Map<string, Props>();
  let cur: string | undefined;
  for (const line of log.split('\n')) {
    const f = /Function properties for (\S+)/.exec(line) ?? /Compiling entry function '([^']+)'/.exec(line);
    if (f) { cur = f[1]!; if (!out.has(cur)) out.set(cur, { stack: -1, spillStores: -1, spillLoads: -1, registers: -1, smem: 0 }); continue; }
    const p = cur ? out.get(cur) : undefined;
    if (!p) continue;
    const s = /(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads/.exec(line);
    if (s) { p.stack = +s[1]!; p.spillStores = +s[2]!; p.spillLoads = +s[3]!; }
    const r = /Used (\d+) registers/.exec(line);
    if (r) p.registers = +r[1]!;
    const m = /(\d+) bytes smem/.exec(line);
    if (m) p.smem = +m[1]!;
  }
  return out;
}

function run(cmd: string, args: string[]): Promise<{ code: number; out: string; ms: number }> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const p = spawn(cmd, args);
    let out = '';
    p.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    p.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    p.on('close', (code) => resolve({ code: code ?? -1, out, ms: performance.now() - t0 }));
    p.on('error', (e) => resolve({ code: -1, out: String(e), ms: performance.now() - t0 }));
  });
}

describe('CUDA kernels compile with nvcc without spills', { timeout: 900_000 }, () => {
  let dir = '';
  let units: Unit[] = [];
  const results = new Map<string, { ptx: string; log: string; props: Map<string, Props>; ok: boolean; nvccMs: number; ptxasMs: number }>();

  beforeAll(async () => {
    if (!nvcc) return;
    units = modules();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'retnetc-nvcc-'));
    const cu = path.join(dir, 'all.cu');
    fs.writeFileSync(cu, units.map((u) => u.code).join('\n'));
    await Promise.all(ARCHS.map(async (arch) => {
      const ptx = path.join(dir, `all.${arch}.ptx`);
      const a = await run('nvcc', [`-arch=${arch}`, '-ptx', '-diag-suppress', '177', cu, '-o', ptx]);
      if (a.code !== 0) { results.set(arch, { ptx: '', log: a.out, props: new Map(), ok: false, nvccMs: a.ms, ptxasMs: 0 }); return; }
      const b = await run('ptxas', [`-arch=${arch}`, '-v', ptx, '-o', path.join(dir, `all.${arch}.cubin`)]);
      results.set(arch, { ptx: fs.readFileSync(ptx, 'utf8'), log: a.out + b.out, props: parsePtxas(b.out), ok: b.code === 0, nvccMs: a.ms, ptxasMs: b.ms });
    }));
    for (const [arch, r] of results) {
      const regs = [...r.props.values()].map((p) => p.registers);
      console.log(`[nvcc] ${nvcc}; ${arch}: ${units.length} kernels, nvcc -ptx ${(r.nvccMs / 1000).toFixed(1)} s, ptxas ${(r.ptxasMs / 1000).toFixed(1)} s; registers ${Math.min(...regs)}..${Math.max(...regs)}; stack frames ${[...new Set([...r.props.values()].map((p) => p.stack))].join(', ')} bytes`);
    }
  }, 900_000);

  afterAll(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test('nvcc is present (required when CI is set)', (ctx) => {
    if (!nvcc) {
      if (CI) throw new Error('CI is set but nvcc is not on PATH');
      ctx.skip();
    }
    expect(units.length).toBeGreaterThan(50);
    expect(units.some((u) => u.dynamicSharedBytes > 48 * 1024)).toBe(true);
    for (const h of ['__half', '__nv_bfloat16']) expect(units.filter((u) => u.code.includes(`${h}* __restrict__`)).length, h).toBeGreaterThan(10);
  });

  for (const arch of ARCHS) {
    test.skipIf(!nvcc)(`${arch}: every kernel compiles and ptxas reports 0 spill stores and loads`, () => {
      const r = results.get(arch)!;
      expect(r.ok, r.log.split('\n').filter((l) => /error/i.test(l)).slice(0, 20).join('\n')).toBe(true);
      const problems: string[] = [];
      for (const u of units) {
        const p = r.props.get(u.entry);
        if (!p) { problems.push(`${u.entry} (${u.label}): not in the ptxas report`); continue; }
        if (p.spillStores !== 0 || p.spillLoads !== 0) problems.push(`${u.entry} (${u.label}): ${p.spillStores} bytes spill stores, ${p.spillLoads} bytes spill loads, ${p.stack} bytes stack, ${p.registers} registers`);
      }
      expect(problems).toEqual([]);
    });

    test.skipIf(!nvcc)(`${arch}: the PTX has no f64 and no 64-bit float registers`, () => {
      const ptx = results.get(arch)!.ptx;
      expect(ptx.length).toBeGreaterThan(0);
      expect(ptx.match(/\.f64\b|%fd\d/g) ?? []).toEqual([]);
      for (const u of units) expect(ptx, u.entry).toContain(`.entry ${u.entry}(`);
    });
  }
});
