// Every CUDA kernel compilePlan produces for every function of models/ that has the schedule
// (parallel, recurrent and chunkwise; forward and backward; chunk 64) at K = V = 64 and at
// K = V = 128 (H = 2 where a function has heads as a size), the retention kernels also with f16
// and bf16 storage, and a parallel kernel with 128 x 128 score tiles (dynamic shared memory),
// compiles with nvcc for sm_80 and sm_90; ptxas -v reports, for every one of them, 0 bytes of
// spill stores, 0 bytes of spill loads and a 0-byte stack frame (asserted, not only printed);
// the PTX has no f64. The registers, spills and stack of each kernel are printed as a table.
// Kernels go into one translation unit per (size, architecture) (the modules' helpers are
// include-guarded), compiled two at a time.
// nvcc is required: without it the suite fails (CI's machine has it), it does not skip.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { Kernel } from '../compiler/kir.js';
import { compilePlan, ScheduleError, specialisedSizes } from '../compiler/plan.js';
import { type Form, FORMS, makeSchedule } from '../compiler/schedule.js';
import { loadProgram } from '../dsl/program.js';
import { emitKernel } from '../targets/emit.js';

const ARCHS = ['sm_80', 'sm_90'] as const;
const SIZES = [64, 128] as const;
const version = spawnSync('nvcc', ['--version'], { encoding: 'utf8' });
const nvcc = version.status === 0 ? version.stdout.trim().split('\n').pop()! : '';
const MODELS = path.join(import.meta.dirname, '..', 'models');

interface Unit { entry: string; base: string; label: string; code: string; dynamicSharedBytes: number }

/** Distinct CUDA modules at K = V = kv; kernels with equal names and different code get a suffix. */
function modules(kv: number): Unit[] {
  const out: Unit[] = [];
  const seen = new Set<string>();
  const push = (label: string, k: Kernel): void => {
    const code = emitKernel(k, 'cuda').code;
    if (seen.has(code)) return; // the same kernel in another plan or file
    seen.add(code);
    let kk = { ...k, name: `${k.name}_k${kv}` };
    for (let i = 2; out.some((u) => u.entry === kk.name); i++) kk = { ...k, name: `${k.name}_v${i}_k${kv}` };
    const e = emitKernel(kk, 'cuda');
    out.push({ entry: e.entry, base: kk.name.slice(0, -`_k${kv}`.length), label, code: e.code, dynamicSharedBytes: e.dynamicSharedBytes });
  };
  const sizeOf = (s: string): number => (s === 'H' ? 2 : kv);
  for (const file of fs.readdirSync(MODELS).filter((f) => f.endsWith('.ret')).sort()) {
    for (const [name, fn] of loadProgram(path.join(MODELS, file)).checked!.fns) {
      for (const form of FORMS) for (const backward of [false, true]) {
        let plan;
        try {
          plan = compilePlan(fn, makeSchedule(form, 64), { backward, constants: new Map(specialisedSizes(fn, backward).map((s) => [s, sizeOf(s)])) });
        } catch (e) {
          if (e instanceof ScheduleError && / has no (recurrent|chunkwise) schedule: /.test(e.message)) continue; // softmax attention
          throw e;
        }
        for (const l of plan.launches) push(`${name} ${form}${backward ? ' backward' : ''}`, l.kernel);
      }
    }
  }
  const fn = loadProgram(path.join(MODELS, 'retention.ret')).checked!.fns.get('retention')!;
  const KV = new Map([['K', kv], ['V', kv]]);
  for (const dtype of ['f16', 'bf16'] as const) for (const form of FORMS) for (const backward of [false, true]) {
    for (const l of compilePlan(fn, makeSchedule(form, 64, { dtype }), { backward, constants: KV }).launches) {
      push(`retention ${form}${backward ? ' backward' : ''} ${dtype}`, { ...l.kernel, name: `${l.kernel.name}_${dtype}` });
    }
  }
  const big = compilePlan(fn, makeSchedule('parallel', 128), { constants: KV }).launches[0]!.kernel;
  push('retention parallel chunk 128', { ...big, name: `${big.name}_c128` });
  return out;
}

interface Props { stack: number; spillStores: number; spillLoads: number; registers: number; smem: number }

/** Per-function numbers from `ptxas -v`. */
export function parsePtxas(log: string): Map<string, Props> {
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

type Result = { ptx: string; log: string; props: Map<string, Props>; ok: boolean; nvccMs: number; ptxasMs: number };
const key = (kv: number, arch: string) => `${kv} ${arch}`;

describe('CUDA kernels compile with nvcc with 0 spill bytes and 0 stack', { timeout: 900_000 }, () => {
  let dir = '';
  const units = new Map<number, Unit[]>();
  const results = new Map<string, Result>();

  beforeAll(async () => {
    if (!nvcc) return;
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'retnetc-nvcc-'));
    const jobs: (() => Promise<void>)[] = [];
    for (const kv of SIZES) {
      const us = modules(kv);
      units.set(kv, us);
      const cu = path.join(dir, `k${kv}.cu`);
      fs.writeFileSync(cu, us.map((u) => u.code).join('\n'));
      for (const arch of ARCHS) jobs.push(async () => {
        const ptx = path.join(dir, `k${kv}.${arch}.ptx`);
        const a = await run('nvcc', [`-arch=${arch}`, '-ptx', '-diag-suppress', '177', cu, '-o', ptx]);
        if (a.code !== 0) { results.set(key(kv, arch), { ptx: '', log: a.out, props: new Map(), ok: false, nvccMs: a.ms, ptxasMs: 0 }); return; }
        const b = await run('ptxas', [`-arch=${arch}`, '-v', ptx, '-o', path.join(dir, `k${kv}.${arch}.cubin`)]);
        results.set(key(kv, arch), { ptx: fs.readFileSync(ptx, 'utf8'), log: a.out + b.out, props: parsePtxas(b.out), ok: b.code === 0, nvccMs: a.ms, ptxasMs: b.ms });
      });
    }
    // Two compilations at a time (the machine has two cores).
    const queue = [...jobs];
    await Promise.all([0, 1].map(async () => { for (let j = queue.shift(); j; j = queue.shift()) await j(); }));
    for (const kv of SIZES) for (const arch of ARCHS) {
      const r = results.get(key(kv, arch))!;
      const regs = [...r.props.values()].map((p) => p.registers);
      console.log(`[nvcc] ${nvcc}; K = V = ${kv}, ${arch}: ${units.get(kv)!.length} kernels, nvcc -ptx ${(r.nvccMs / 1000).toFixed(1)} s, ptxas ${(r.ptxasMs / 1000).toFixed(1)} s; registers ${Math.min(...regs)}..${Math.max(...regs)}`);
    }
    // The table: registers / spill stores + loads / stack bytes, per kernel, size and architecture.
    const rows = new Map<string, { label: string; cells: Map<string, string> }>();
    for (const kv of SIZES) for (const u of units.get(kv)!) {
      const row = rows.get(u.base) ?? { label: u.label, cells: new Map<string, string>() };
      rows.set(u.base, row);
      for (const arch of ARCHS) {
        const p = results.get(key(kv, arch))!.props.get(u.entry);
        row.cells.set(key(kv, arch), p ? `${p.registers}/${p.spillStores + p.spillLoads}/${p.stack}` : '-');
      }
    }
    const cols = SIZES.flatMap((kv) => ARCHS.map((a) => key(kv, a)));
    const w = Math.max(...[...rows.keys()].map((k) => k.length));
    const lines = [`${'kernel'.padEnd(w)}  ${cols.map((c) => `K=V=${c.replace(' ', ' ').padEnd(11)}`).join(' ')}  (registers/spill bytes/stack bytes)`];
    for (const [base, row] of [...rows].sort((a, b) => a[0].localeCompare(b[0]))) lines.push(`${base.padEnd(w)}  ${cols.map((c) => (row.cells.get(c) ?? '').padEnd(16)).join(' ')}  ${row.label}`);
    console.log(`[nvcc] ptxas -v per kernel:\n${lines.join('\n')}`);
  }, 900_000);

  afterAll(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test('nvcc is present (required: the CUDA checks fail, not skip, without it)', () => {
    expect(nvcc, 'nvcc is not on PATH').not.toBe('');
    for (const kv of SIZES) {
      const us = units.get(kv)!;
      expect(us.length).toBeGreaterThan(150);
      expect(us.some((u) => u.dynamicSharedBytes > 48 * 1024)).toBe(true);
      for (const h of ['__half', '__nv_bfloat16']) expect(us.filter((u) => u.code.includes(`${h}* __restrict__`)).length, h).toBeGreaterThan(10);
      // Every function of models/ is in: the family, softmax attention and RetNet's pieces.
      for (const f of ['retention', 'retention_state', 'linear_attention', 'gated_retention', 'softmax_attention', 'msr', 'rmsnorm', 'theta_shift', 'linear']) {
        expect(us.some((u) => u.label.startsWith(`${f} `)), f).toBe(true);
      }
    }
  });

  test('parsePtxas reads spills and stack (a budget check that cannot read them would pass anything)', () => {
    const log = [
      "ptxas info    : Compiling entry function 'a' for 'sm_80'",
      'ptxas info    : Function properties for a',
      '    128 bytes stack frame, 360 bytes spill stores, 360 bytes spill loads',
      'ptxas info    : Used 255 registers, used 1 barriers, 128 bytes cumulative stack size, 10240 bytes smem, 404 bytes cmem[0]',
    ].join('\n');
    expect(parsePtxas(log).get('a')).toEqual({ stack: 128, spillStores: 360, spillLoads: 360, registers: 255, smem: 10240 });
  });

  for (const kv of SIZES) for (const arch of ARCHS) {
    test(`K = V = ${kv}, ${arch}: every kernel compiles; ptxas reports 0 spill stores, 0 spill loads, 0 stack`, () => {
      expect(nvcc, 'nvcc is not on PATH').not.toBe('');
      const r = results.get(key(kv, arch))!;
      expect(r.ok, r.log.split('\n').filter((l) => /error/i.test(l)).slice(0, 20).join('\n')).toBe(true);
      const problems: string[] = [];
      for (const u of units.get(kv)!) {
        const p = r.props.get(u.entry);
        if (!p || p.stack < 0 || p.registers < 0) { problems.push(`${u.entry} (${u.label}): not in the ptxas report`); continue; }
        if (p.spillStores !== 0 || p.spillLoads !== 0 || p.stack !== 0) problems.push(`${u.entry} (${u.label}): ${p.spillStores} bytes spill stores, ${p.spillLoads} bytes spill loads, ${p.stack} bytes stack, ${p.registers} registers`);
      }
      expect(problems).toEqual([]);
    });

    test(`K = V = ${kv}, ${arch}: the PTX has no f64 and no 64-bit float registers`, () => {
      expect(nvcc, 'nvcc is not on PATH').not.toBe('');
      const ptx = results.get(key(kv, arch))!.ptx;
      expect(ptx.length).toBeGreaterThan(0);
      expect(ptx.match(/\.f64\b|%fd\d/g) ?? []).toEqual([]);
      for (const u of units.get(kv)!) expect(ptx, u.entry).toContain(`.entry ${u.entry}(`);
    });
  }
});
