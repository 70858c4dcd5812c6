// The target registry (runtime/targets.ts) is the one list of targets: the CLI's option values
// and usage lines, `compile --target`, the exec layer, the printers and the bench agree with it;
// every executing target runs a tiny plan (the same numbers as the CPU executor) or says in one
// line why not; `retnetc targets` prints one line per target.
import * as path from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { bindHostTensors, hostOutput } from '../runtime/bind.js';
import { COMPILE_OPTIONS, COMPILE_USAGE } from '../runtime/cli/compile.js';
import { LOGITS_OPTIONS, LOGITS_USAGE } from '../runtime/cli/logits.js';
import { RUN_OPTIONS, RUN_TARGETS, RUN_USAGE } from '../runtime/cli/run.js';
import { planExec } from '../runtime/exec.js';
import { runPlanCpu } from '../runtime/plan-runner.js';
import { deviceError, dtypeProblem, EXEC_TARGETS, PRINT_TARGETS, TARGETS, targetReports } from '../runtime/targets.js';
import { LIMIT_PROFILES } from '../runtime/webgpu/limits.js';
import { PRINTERS, TARGETS as PRINTER_NAMES } from '../targets/emit.js';
import { BENCH_TARGETS } from '../bench/run.js';
import { STORAGE_DTYPES } from '../compiler/schedule.js';
import { cli, ensureBuilt, ROOT } from './helpers/cli.js';
import { loadFn, plan, prng, uniform } from './helpers/harness.js';
import { REQUIRE_WEBGPU } from './helpers/webgpu.js';

describe('one list of targets', () => {
  test('names are unique; each target runs, prints or both', () => {
    const names = TARGETS.map((t) => t.name);
    expect(new Set(names).size).toBe(names.length);
    for (const t of TARGETS) expect(t.run || t.print, t.name).toBeTruthy();
    expect(EXEC_TARGETS).toEqual(TARGETS.filter((t) => t.run).map((t) => t.name));
    expect(PRINT_TARGETS).toEqual(TARGETS.filter((t) => t.print).map((t) => t.name));
  });

  test('printers: every printing target has one of targets/emit.ts, and every printer a target', () => {
    expect([...PRINT_TARGETS].sort()).toEqual([...PRINTER_NAMES].sort());
    for (const t of TARGETS) {
      if (t.print) {
        expect(t.print.printer).toBe(PRINTERS[t.name as keyof typeof PRINTERS]);
        expect(t.print.limits.length, t.name).toBeGreaterThan(0);
        for (const l of t.print.limits) expect(LIMIT_PROFILES[l], `${t.name} ${l}`).toBeDefined();
      }
      if (t.run?.code) expect(PRINTERS[t.run.code], `${t.name} runs ${t.run.code}`).toBeDefined();
    }
  });

  test('the CLI lists every target where it takes one', async () => {
    const bar = (xs: readonly string[]) => xs.join('|');
    expect(RUN_TARGETS).toEqual(['reference', ...EXEC_TARGETS]);
    expect(RUN_OPTIONS['target']!.value).toBe(bar(RUN_TARGETS));
    expect(RUN_USAGE).toContain(`[--target ${bar(RUN_TARGETS)}]`);
    expect(LOGITS_OPTIONS['target']!.value).toBe(bar(EXEC_TARGETS));
    expect(LOGITS_USAGE).toContain(`[--target ${bar(EXEC_TARGETS)}]`);
    expect(COMPILE_OPTIONS['target']!.value).toBe(bar(PRINT_TARGETS));
    expect(COMPILE_USAGE).toContain(`[--target ${bar(PRINT_TARGETS)}]`);
    const { main } = await import('../runtime/cli/commands.js');
    let help = '';
    const write = process.stdout.write;
    process.stdout.write = ((s: string) => { help += s; return true; }) as typeof process.stdout.write;
    try { expect(await main(['help'])).toBe(0); } finally { process.stdout.write = write; }
    expect(help).toContain(`[--target ${bar(RUN_TARGETS)}]`);
    expect(help).toContain(`[--target ${bar(PRINT_TARGETS)}]`);
    expect(help).toContain(`[--target ${bar(EXEC_TARGETS)}]`);
    for (const t of TARGETS) if (t.print) expect(help).toContain(`${t.print.limits.join('|')} for ${t.name}`);
    expect(help).toMatch(/^ {2}targets \[--json\]/m);
  });

  test('the bench times every executing target', () => {
    expect([...BENCH_TARGETS].sort()).toEqual([...EXEC_TARGETS].sort());
  });

  test('dtypes a target cannot hold are one line, naming where they go', () => {
    expect(dtypeProblem('webgpu', 'bf16', 'run', STORAGE_DTYPES)).toBe('--dtype bf16 does not apply to --target webgpu: WGSL has no bf16 (use --dtype f32 or f16 there; bf16 runs on cpu, native and cuda)');
    expect(dtypeProblem('wgsl', 'bf16', 'print', STORAGE_DTYPES)).toMatch(/^--dtype bf16 does not apply to --target wgsl: WGSL has no bf16 \(.*bf16 is printed on cuda and c\)$/);
    for (const t of EXEC_TARGETS) expect(dtypeProblem(t, 'f32', 'run', STORAGE_DTYPES), t).toBeUndefined();
  });

  test("each runner's device errors are one line; other errors are not device errors", () => {
    for (const t of TARGETS) {
      for (const name of t.run?.errors ?? []) {
        const e = new Error(`${t.name} failed\nmore`);
        e.name = name;
        expect(deviceError(e), `${t.name} ${name}`).toBe(`${t.name} failed`);
      }
    }
    expect(deviceError(new TypeError('x'))).toBeUndefined();
    expect(deviceError('x')).toBeUndefined();
  });
});

describe('the shared host binding', () => {
  test('parameters in their storage type, computed tensors sized, half outputs back as f32', () => {
    const fn = loadFn('retention', 'retention');
    const p = plan(fn, 'chunkwise', 4, false, { K: 2, V: 2 });
    const rand = prng(3);
    const inputs = new Map([
      ['q', uniform([1, 2, 5, 2], rand)], ['k', uniform([1, 2, 5, 2], rand)], ['v', uniform([1, 2, 5, 2], rand)],
      ['gamma', { shape: [2], data: Float64Array.of(0.9, 0.5) }],
    ]);
    const sizes = new Map([['B', 1], ['H', 2], ['T', 5], ['K', 2], ['V', 2]]);
    const b = bindHostTensors(p, inputs, sizes);
    expect(b.params.map((x) => x.name)).toEqual(p.fn.params.map((x) => x.name));
    for (const x of b.params) {
      expect(x.host.length, x.name).toBe(x.numel);
      expect(x.host).toBeInstanceOf(x.int ? Int32Array : Float32Array);
    }
    expect(b.params.find((x) => x.name === 'gamma')!.host).toEqual(Float32Array.of(0.9, 0.5));
    for (const t of b.buffers) expect(t.numel, t.name).toBe(t.shape.reduce((a, c) => a * c, 1));
    expect(() => bindHostTensors(p, new Map([...inputs, ['gamma', { shape: [2], data: Float64Array.of(1) }]]), sizes)).toThrow(/input 'gamma' has 1 values but shape \[2\] needs 2/);
    expect(hostOutput(Uint16Array.of(0x3c00, 0xc000), 'f16')).toEqual(Float32Array.of(1, -2));
    const f = Float32Array.of(1);
    expect(hostOutput(f, undefined)).toBe(f);
  });
});

describe('every executing target runs a tiny plan or says why not', () => {
  const fn = loadFn('retention', 'retention');
  const p = plan(fn, 'recurrent', 64, false, { K: 2, V: 2 });
  const rand = prng(7);
  const inputs = new Map([
    ['q', uniform([1, 2, 3, 2], rand)], ['k', uniform([1, 2, 3, 2], rand)], ['v', uniform([1, 2, 3, 2], rand)],
    ['gamma', { shape: [2], data: Float64Array.of(0.9, 0.75) }],
  ]);
  const want = runPlanCpu(p, inputs).get('o')!;

  test.each(EXEC_TARGETS.map((t) => [t]))('%s', async (name) => {
    const t = TARGETS.find((x) => x.name === name)!;
    const avail = await t.run!.available();
    const { exec, release } = planExec(name);
    try {
      const got = (await exec(p, inputs)).get('o')!;
      expect(got.shape).toEqual(want.shape);
      const err = Math.max(...Array.from(got.data, (x, i) => Math.abs(x - want.data[i]!)));
      expect(err, name).toBeLessThan(1e-5);
      expect(avail.ok, `${name} ran, so it must say it is available`).toBe(true);
      console.log(`[targets] ${name}: ran; ${avail.ok ? avail.detail : ''}`);
    } catch (e) {
      const why = deviceError(e);
      expect(why, `${name}: ${String(e)}`).toBeDefined();
      expect(why).not.toContain('\n');
      if (name === 'cpu' || (name === 'webgpu' && REQUIRE_WEBGPU)) throw e;
      console.log(`[targets] ${name}: unavailable: ${why}`);
      if (!avail.ok) expect(avail.reason).not.toContain('\n');
    } finally {
      await release();
    }
  }, 120_000);
});

describe('retnetc targets', () => {
  beforeAll(() => ensureBuilt(), 300_000);

  test('one line per target, with its availability', async () => {
    const r = await cli(['targets']);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines.length).toBe(TARGETS.length);
    const w = Math.max(...TARGETS.map((t) => t.name.length));
    TARGETS.forEach((t, i) => {
      const line = lines[i]!;
      expect(line.startsWith(`${t.name.padEnd(w)}  `), line).toBe(true);
      if (t.run) expect(line, line).toMatch(/^\S+\s+(available \(.+\)|unavailable: .+)/);
      if (t.print) expect(line, line).toContain(`prints ${t.print.printer.language} (.${t.print.printer.extension}`);
    });
    expect(lines[0]).toMatch(/^cpu\s+available/);
    console.log(`[targets]\n${r.stdout.trimEnd()}`);
  }, 120_000);

  test('--json: the same reports; a stray argument is a usage error', async () => {
    const r = await cli(['targets', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const json = JSON.parse(r.stdout) as { name: string; run?: { ok: boolean } }[];
    expect(json.map((x) => x.name)).toEqual(TARGETS.map((t) => t.name));
    for (const x of json) expect(!!x.run, x.name).toBe(EXEC_TARGETS.includes(x.name));
    const bad = await cli(['targets', 'cpu']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^retnetc: error: unexpected argument 'cpu'/);
  }, 120_000);

  test('targetReports agrees with the registry', async () => {
    const reports = await targetReports();
    expect(reports.map((r) => r.name)).toEqual(TARGETS.map((t) => t.name));
    expect(reports.find((r) => r.name === 'cpu')!.run).toMatchObject({ ok: true });
  }, 120_000);
});
