// The tensor-core kernels (schedule dense 'mma', compiler/lower/dense-mma.ts) through nvcc: the
// whole tiny and base RetNet, forward and backward, f16 and bf16 storage, compiled by the CLI
// from a schedule file ({"dense": "mma", "dtype": ...}); every module with an mma goes into one
// translation unit per architecture (sm_80 and sm_90, entries suffixed by size, dtype and pass),
// and ptxas -v must report 0 bytes of spill stores and loads and a 0-byte stack frame for each,
// and the PTX must hold mma.sync m16n8k16 of the storage type. nvcc is required (fails without).
// Measured (2 cores shared with other work, nvcc 13.0): 34 mma kernels per (size, dtype) and 12 of
// the GPU check, 148 in all, registers 80..98 on both architectures (split-K ones included), 0
// spills; 2.5-4 min wall, ~80 s of CPU (nvcc's compile of one 148-kernel unit per architecture).
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { compilePlan } from '../compiler/plan.js';
import { makeSchedule } from '../compiler/schedule.js';
import { loadProgram } from '../dsl/program.js';
import { mmaCases } from '../runtime/cuda/mma-check.js';
import { findNvcc } from '../runtime/cuda/nvcc.js';
import { emitKernel } from '../targets/emit.js';
import { cli, ensureBuilt } from './helpers/cli.js';

const nvcc = findNvcc();
const ARCHS = ['sm_80', 'sm_90'] as const;
const CASES = ['tiny', 'base'].flatMap((size) => ['f16', 'bf16'].map((dtype) => ({ size, dtype, key: `${size}_${dtype}` })));

function sh(cmd: string, args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args);
    let out = '';
    p.stdout.on('data', (x: Buffer) => { out += x.toString(); });
    p.stderr.on('data', (x: Buffer) => { out += x.toString(); });
    p.on('close', (code) => resolve({ code: code ?? -1, out }));
    p.on('error', (e) => resolve({ code: -1, out: String(e) }));
  });
}

/** Runs `jobs` two at a time (two cores). */
async function twoAtATime(jobs: (() => Promise<void>)[]): Promise<void> {
  const queue = [...jobs];
  await Promise.all([0, 1].map(async () => { for (let j = queue.shift(); j; j = queue.shift()) await j(); }));
}

describe('nvcc compiles the mma kernels of the tiny and base RetNet (forward and backward, f16 and bf16), 0 spills', { timeout: 600_000 }, () => {
  let dir = '';
  /** Distinct mma modules by case, entries renamed `<entry>_<size>_<dtype>_<pass>`. */
  const units = new Map<string, { entry: string; code: string }[]>();
  const failures: string[] = [];
  let splitK = 0;
  beforeAll(async () => {
    ensureBuilt();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'retnetc-nvcc-mma-'));
    const jobs: (() => Promise<void>)[] = [];
    for (const c of CASES) {
      const sched = path.join(dir, `${c.dtype}.json`);
      fs.writeFileSync(sched, JSON.stringify({ form: 'chunkwise', chunk: 64, dtype: c.dtype, dense: 'mma' }));
      for (const pass of ['fwd', 'bwd']) jobs.push(async () => {
        const out = path.join(dir, `${c.key}-${pass}`);
        const r = await cli(['compile', 'models/retnet.ret', '--size', c.size, '--schedule-file', sched, ...(pass === 'bwd' ? ['--backward'] : []), '--target', 'cuda', '--out', out], { timeoutMs: 300_000 });
        if (r.code !== 0) { failures.push(`${c.key} ${pass}: exit ${r.code}: ${r.stderr}`); return; }
        const list = units.get(c.key) ?? [];
        const seen = new Set(list.map((u) => u.code));
        for (const f of fs.readdirSync(out).filter((x) => x.endsWith('.cu')).sort()) {
          const code = fs.readFileSync(path.join(out, f), 'utf8');
          if (!code.includes('mma.sync') || seen.has(code)) continue;
          seen.add(code);
          const base = f.slice(0, -3), entry = `${base}_${c.key}_${pass}`;
          list.push({ entry, code: code.replace(new RegExp(`\\b${base}\\b`, 'g'), entry) });
        }
        units.set(c.key, list);
      });
    }
    await twoAtATime(jobs);
    // The GPU check's cases (runtime/cuda/mma-check.ts): sizes known, so the weight gradient splits K.
    const linear = loadProgram('models/retnet.ret').checked!.fns.get('linear')!;
    const { linear: cases } = mmaCases(false);
    const list: { entry: string; code: string }[] = [];
    for (const c of cases) for (const dtype of ['f16', 'bf16'] as const) for (const backward of [false, true]) {
      const plan = compilePlan(linear, makeSchedule('chunkwise', 64, { dtype, dense: 'mma' }), { backward, constants: new Map([['B', c.B], ['T', c.T], ['I', c.I], ['O', c.O]]) });
      for (const l of plan.launches) {
        const e = emitKernel(l.kernel, 'cuda');
        if (!e.code.includes('mma.sync')) continue;
        const entry = `${e.entry}_${c.name.replace(/\W+/g, '_')}_${dtype}_${backward ? 'bwd' : 'fwd'}`;
        list.push({ entry, code: e.code.replace(new RegExp(`\\b${e.entry}\\b`, 'g'), entry) });
      }
    }
    splitK = list.filter((u) => u.code.includes('Red')).length;
    units.set('gpu-check linear', list);
  }, 600_000);
  afterAll(() => { if (dir) fs.rmSync(dir, { recursive: true, force: true }); });

  test('the CLI compiles every case with dense mma from --schedule-file; the GPU check\'s cases have split-K kernels', () => {
    expect(failures).toEqual([]);
    for (const c of CASES) expect(units.get(c.key)?.length ?? 0, c.key).toBeGreaterThanOrEqual(20);
    expect(units.get('gpu-check linear')!.length).toBeGreaterThanOrEqual(8);
    expect(splitK).toBeGreaterThanOrEqual(2);
  });

  test(`nvcc + ptxas for ${ARCHS.join(' and ')}: 0 spill bytes and 0 stack in every mma kernel; mma.sync in the PTX`, async () => {
    expect(typeof nvcc, 'nvcc is not on PATH').not.toBe('string');
    if (typeof nvcc === 'string') return;
    const all = [...units.values()].flat();
    expect(all.length).toBeGreaterThan(0);
    const cu = path.join(dir, 'mma.cu');
    fs.writeFileSync(cu, all.map((u) => u.code).join('\n'));
    const ptxas = path.join(path.dirname(nvcc.path), 'ptxas');
    const logs = new Map<string, string>();
    await twoAtATime(ARCHS.map((arch) => async () => {
      const ptx = path.join(dir, `mma.${arch}.ptx`);
      const a = await sh(nvcc.path, [`-arch=${arch}`, '-ptx', '-std=c++17', '-diag-suppress', '177', cu, '-o', ptx]);
      if (a.code !== 0) { logs.set(arch, `nvcc failed: ${a.out.slice(0, 4000)}`); return; }
      const b = await sh(ptxas, [`-arch=${arch}`, '-v', ptx, '-o', path.join(dir, `mma.${arch}.cubin`)]);
      logs.set(arch, b.code === 0 ? b.out : `ptxas failed: ${b.out.slice(0, 4000)}`);
      const text = fs.readFileSync(ptx, 'utf8');
      if (!/mma\.sync\.aligned\.m16n8k16\.row\.col\.f32\.f16\.f16\.f32/.test(text) || !/mma\.sync\.aligned\.m16n8k16\.row\.col\.f32\.bf16\.bf16\.f32/.test(text)) logs.set(arch, 'the PTX lacks the f16 or the bf16 mma.sync');
    }));
    for (const arch of ARCHS) {
      const log = logs.get(arch)!;
      expect(log, arch).not.toMatch(/^(nvcc failed|ptxas failed|the PTX lacks)/);
      // Per entry: its stack/spill line and registers.
      const props = new Map<string, { bad: number; regs: number }>();
      let cur = '';
      for (const line of log.split('\n')) {
        const f = /Compiling entry function '([^']+)'/.exec(line) ?? /Function properties for (\S+)/.exec(line);
        if (f) { cur = f[1]!; if (!props.has(cur)) props.set(cur, { bad: -1, regs: -1 }); continue; }
        const s = /(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads/.exec(line);
        if (s && props.has(cur)) props.get(cur)!.bad = +s[1]! + +s[2]! + +s[3]!;
        const r = /Used (\d+) registers/.exec(line);
        if (r && props.has(cur)) props.get(cur)!.regs = +r[1]!;
      }
      const problems = all.filter((u) => props.get(u.entry)?.bad !== 0).map((u) => `${u.entry}: ${props.has(u.entry) ? `${props.get(u.entry)!.bad} bytes stack + spills` : 'not in the ptxas report'}`);
      expect(problems, arch).toEqual([]);
      const regs = all.map((u) => props.get(u.entry)!.regs);
      console.log(`[nvcc-dense-mma] ${arch}: ${all.length} mma kernels (${CASES.map((c) => `${c.key} ${units.get(c.key)!.length}`).join(', ')}), registers ${Math.min(...regs)}..${Math.max(...regs)}, 0 spills, 0 stack`);
    }
  }, 600_000);
});
