// The built CLI (dist/runtime/cli/main.js) as a user runs it: exit codes, stdout/stderr,
// located one-line errors and never a stack trace.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { cli as runCli, ensureBuilt, expectUserError, ROOT } from './helpers/cli.js';
import { fromFloat64, readSafetensorsFile, serializeSafetensors, type Tensor, toFloat64 } from '../runtime/io/safetensors.js';

let dir = '';
beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'retnetc-cli-'));
  ensureBuilt();
}, 240_000);
afterAll(() => { if (dir) rmSync(dir, { recursive: true, force: true }); });

const cli = (...args: string[]) => runCli(args);

function firstLines(stderr: string): string[] {
  return stderr.split('\n').filter((l) => l.length > 0);
}

// ---- retention data -----------------------------------------------------------------------

interface Dims { B: number; H: number; T: number; K: number; V: number }
const D: Dims = { B: 1, H: 2, T: 5, K: 3, V: 2 };

function values(n: number, seed: number): Float64Array {
  const out = new Float64Array(n);
  let s = seed;
  // Multiples of 1/8 in [-1, 1]: exact in f32, so f32 files hold exactly these numbers.
  for (let i = 0; i < n; i++) { s = (s * 1103515245 + 12345) % 2147483648; out[i] = (Math.floor((s / 2147483648) * 17) - 8) / 8; }
  return out;
}

function recurrence(d: Dims, q: Float64Array, k: Float64Array, v: Float64Array, gamma: Float64Array): Float64Array {
  const { B, H, T, K, V } = d;
  const o = new Float64Array(B * H * T * V);
  for (let bh = 0; bh < B * H; bh++) {
    const h = bh % H;
    const S = new Float64Array(K * V);
    for (let t = 0; t < T; t++) {
      const row = bh * T + t;
      for (let i = 0; i < K; i++) for (let j = 0; j < V; j++) S[i * V + j] = gamma[h]! * S[i * V + j]! + k[row * K + i]! * v[row * V + j]!;
      for (let j = 0; j < V; j++) { let a = 0; for (let i = 0; i < K; i++) a += q[row * K + i]! * S[i * V + j]!; o[row * V + j] = a; }
    }
  }
  return o;
}

const q = values(D.B * D.H * D.T * D.K, 1);
const k = values(D.B * D.H * D.T * D.K, 2);
const v = values(D.B * D.H * D.T * D.V, 3);
const gamma = Float64Array.from([0.5, 0.875]);

function inputs(overrides: Record<string, Tensor | null> = {}): Map<string, Tensor> {
  const m = new Map<string, Tensor>([
    ['q', fromFloat64(q, [D.B, D.H, D.T, D.K], 'F32')],
    ['k', fromFloat64(k, [D.B, D.H, D.T, D.K], 'F32')],
    ['v', fromFloat64(v, [D.B, D.H, D.T, D.V], 'F32')],
    ['gamma', fromFloat64(gamma, [D.H], 'F32')],
  ]);
  for (const [name, t] of Object.entries(overrides)) {
    if (t === null) m.delete(name);
    else m.set(name, t);
  }
  return m;
}

function writeInputs(name: string, tensors: Map<string, Tensor>): string {
  const file = path.join(dir, name);
  writeFileSync(file, serializeSafetensors(tensors));
  return file;
}

// ---- check --------------------------------------------------------------------------------

describe.concurrent('retnetc check', { timeout: 60_000 }, () => {
  it('models/retention.ret: exit 0 and both signatures on stdout', async () => {
    const r = await cli('check', 'models/retention.ret');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    const lines = r.stdout.trim().split('\n');
    expect(lines).toContain('fn retention(q: f32[B, H, T, K], k: f32[B, H, T, K], v: f32[B, H, T, V], gamma: f32[H]) -> o: f32[B, H, T, V]');
    expect(lines).toContain('fn retention_state(q: f32[B, H, T, K], k: f32[B, H, T, K], v: f32[B, H, T, V], gamma: f32[H], s0: f32[B, H, K, V]) -> (o: f32[B, H, T, V], sT: f32[B, H, K, V])');
  });

  it('a broken file: exit 1, file:line:col: error: on stderr with the source line, a count, no stack trace', async () => {
    const file = path.join(dir, 'broken.ret');
    writeFileSync(file, 'fn f(x: f32[N]) -> y: f32[N] {\n  y[n] = x[n] * alpha\n  let z[n] = w[n]\n}\n');
    const r = await cli('check', file);
    expectUserError(r, /:2:17: error: unknown name 'alpha'/);
    expect(r.stdout).toBe('');
    const lines = r.stderr.split('\n');
    expect(lines[0]).toBe(`${file}:2:17: error: unknown name 'alpha'`);
    expect(lines[1]).toBe('    y[n] = x[n] * alpha');
    expect(lines[2]).toBe('                  ^^^^^');
    expect(r.stderr).toContain(`${file}:3:14: error: unknown tensor 'w'`);
    expect(r.stderr.trimEnd().split('\n').at(-1)).toBe('2 errors');
  });

  it('a syntax error: exit 1, located', async () => {
    const file = path.join(dir, 'syntax.ret');
    writeFileSync(file, 'fn f(x: f32[N]) y: f32[N] {\n  y[n] = x[n]\n}\n');
    expectUserError(await cli('check', file), new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:1:17: error: expected '->', found 'y'`));
  });

  it('a malformed import declaration: exit 1 with a located error, not an internal error', async () => {
    const file = path.join(dir, 'bad-import.ret');
    writeFileSync(file, 'import x\n');
    expectUserError(await cli('check', file), /bad-import\.ret:1:\d+: error: /);
  });

  it('a missing file: exit 1, one line, no stack trace', async () => {
    const r = await cli('check', path.join(dir, 'nope.ret'));
    expectUserError(r, /nope\.ret:1:1: error: cannot read '.*nope\.ret': no such file/);
  });

  it('a directory: exit 1, no stack trace', async () => {
    const sub = path.join(dir, 'a-directory.ret');
    mkdirSync(sub, { recursive: true });
    expectUserError(await cli('check', sub), /a-directory\.ret:1:1: error: cannot read '.*': it is a directory/);
  });

  it('a binary file: exit 1, no stack trace', async () => {
    const file = path.join(dir, 'binary.ret');
    writeFileSync(file, Buffer.from([0x66, 0x6e, 0x20, 0x00, 0xff, 0x10]));
    expectUserError(await cli('check', file), /binary\.ret:1:4: error: this is a binary file/);
  });

  it('usage errors: no file, two files', async () => {
    expectUserError(await cli('check'), /^retnetc: error: usage: retnetc check FILE\.ret/);
    expectUserError(await cli('check', 'models/retention.ret', 'models/retention.ret'), /^retnetc: error: usage/);
  });
});

// ---- run ----------------------------------------------------------------------------------

describe.concurrent('retnetc run', { timeout: 60_000 }, () => {
  const runArgs = (inFile: string, out: string, ...extra: string[]): string[] =>
    ['run', 'models/retention.ret', '--fn', 'retention', '--inputs', inFile, '--out', out, ...extra];

  it('runs retention on safetensors inputs and writes o, equal to the recurrence', async () => {
    const inFile = writeInputs('in.safetensors', inputs());
    const out = path.join(dir, 'out.safetensors');
    const r = await cli(...runArgs(inFile, out));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    const got = await readSafetensorsFile(out);
    expect([...got.tensors.keys()]).toEqual(['o']);
    const o = got.tensors.get('o')!;
    expect(o.shape).toEqual([D.B, D.H, D.T, D.V]);
    expect(o.dtype).toBe('F64');
    const want = recurrence(D, q, k, v, gamma);
    const data = toFloat64(o);
    for (let i = 0; i < want.length; i++) expect(Math.abs(data[i]! - want[i]!)).toBeLessThanOrEqual(1e-12 * Math.max(1, Math.abs(want[i]!)));
    expect(got.metadata['fn']).toBe('retention');
  });

  it('--out-dtype F32 writes f32', async () => {
    const inFile = writeInputs('in32.safetensors', inputs());
    const out = path.join(dir, 'out32.safetensors');
    const r = await cli(...runArgs(inFile, out, '--out-dtype', 'f32'));
    expect(r.code, r.stderr).toBe(0);
    const o = (await readSafetensorsFile(out)).tensors.get('o')!;
    expect(o.dtype).toBe('F32');
    const want = recurrence(D, q, k, v, gamma);
    const data = toFloat64(o);
    for (let i = 0; i < want.length; i++) expect(data[i]).toBe(Math.fround(want[i]!));
  });

  it('a missing input: exit 1, one clear line naming the input', async () => {
    const inFile = writeInputs('no-gamma.safetensors', inputs({ gamma: null }));
    const r = await cli(...runArgs(inFile, path.join(dir, 'o1.safetensors')));
    expectUserError(r, /missing input 'gamma' of 'retention'/);
    expect(firstLines(r.stderr)).toEqual([`${inFile}: error: missing input 'gamma' of 'retention' (expected f32[H])`]);
    expect(existsSync(path.join(dir, 'o1.safetensors'))).toBe(false);
  });

  it('a shape mismatch: exit 1, the message names both shapes', async () => {
    const inFile = writeInputs('bad-shape.safetensors', inputs({ k: fromFloat64(new Float64Array(D.B * D.H * (D.T + 1) * D.K), [D.B, D.H, D.T + 1, D.K], 'F32') }));
    const r = await cli(...runArgs(inFile, path.join(dir, 'o2.safetensors')));
    expectUserError(r, /\[B, H, T, K\] = \[1, 2, 5, 3\], got \[1, 2, 6, 3\]/);
    expect(firstLines(r.stderr)).toEqual([`${inFile}: error: input 'k' of 'retention' must have shape [B, H, T, K] = [1, 2, 5, 3], got [1, 2, 6, 3]`]);
  });

  it('an extra tensor that is not a parameter: exit 1, named', async () => {
    const inFile = writeInputs('extra.safetensors', inputs({ s0: fromFloat64([0], [1], 'F32') }));
    const r = await cli(...runArgs(inFile, path.join(dir, 'o3.safetensors')));
    expectUserError(r, /'retention' has no parameter 's0'/);
    expect(firstLines(r.stderr).length).toBe(1);
  });

  it('a truncated safetensors file: exit 1, one clear line', async () => {
    const full = serializeSafetensors(inputs());
    for (const cut of [4, 8 + 10, full.length - 3]) {
      const inFile = path.join(dir, `trunc-${cut}.safetensors`);
      writeFileSync(inFile, full.subarray(0, cut));
      const r = await cli(...runArgs(inFile, path.join(dir, 'o4.safetensors')));
      expectUserError(r, new RegExp(`^${inFile.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: error: \\S`));
      expect(firstLines(r.stderr).length, r.stderr).toBe(1);
    }
  });

  it('a missing inputs file or a directory as inputs: exit 1', async () => {
    expectUserError(await cli(...runArgs(path.join(dir, 'none.safetensors'), path.join(dir, 'o5.safetensors'))), /none\.safetensors: error: cannot read: no such file or directory/);
    expectUserError(await cli(...runArgs(dir, path.join(dir, 'o5.safetensors'))), /error: cannot read: is a directory/);
  });

  it('an unwritable output path: exit 1, no stack trace', async () => {
    const inFile = writeInputs('in-ok.safetensors', inputs());
    expectUserError(await cli(...runArgs(inFile, path.join(dir, 'no', 'such', 'dir', 'o.safetensors'))), /error: /);
  });

  it('an unknown --fn: exit 1, lists the functions', async () => {
    const inFile = writeInputs('in2.safetensors', inputs());
    const r = await cli('run', 'models/retention.ret', '--fn', 'nosuch', '--inputs', inFile, '--out', path.join(dir, 'o6.safetensors'));
    expectUserError(r, /^models\/retention\.ret(:1:1)?: error: no function 'nosuch' \(functions: retention, retention_state\)/);
  });

  it('a missing or broken .ret for run: exit 1 with diagnostics', async () => {
    const inFile = writeInputs('in3.safetensors', inputs());
    expectUserError(await cli('run', path.join(dir, 'missing.ret'), '--fn', 'f', '--inputs', inFile, '--out', path.join(dir, 'o7.safetensors')), /missing\.ret:1:1: error: cannot read/);
    const bad = path.join(dir, 'bad-run.ret');
    writeFileSync(bad, 'fn f(x: f32[N]) -> y: f32[N] {\n  y[n] = q[n]\n}\n');
    expectUserError(await cli('run', bad, '--fn', 'f', '--inputs', inFile, '--out', path.join(dir, 'o7.safetensors')), /bad-run\.ret:2:10: error: unknown tensor 'q'/);
  });

  it('missing required options: exit 1, usage line', async () => {
    expectUserError(await cli('run', 'models/retention.ret'), /^retnetc: error: usage: retnetc run /);
    expectUserError(await cli('run', 'models/retention.ret', '--fn'), /^retnetc: error: /);
  });

  it('an unknown target or out-dtype: exit 1', async () => {
    const inFile = writeInputs('in4.safetensors', inputs());
    expectUserError(await cli(...runArgs(inFile, path.join(dir, 'o8.safetensors'), '--target', 'cuda9')), /unknown target 'cuda9'/);
    expectUserError(await cli(...runArgs(inFile, path.join(dir, 'o8.safetensors'), '--out-dtype', 'f8')), /unknown --out-dtype 'f8'/);
  });
});

// ---- general ------------------------------------------------------------------------------

describe.concurrent('retnetc usage', { timeout: 60_000 }, () => {
  it('an unknown command: exit 1, names it, no stack trace', async () => {
    expectUserError(await cli('frobnicate'), /^retnetc: error: unknown command 'frobnicate'/);
  });

  it('an unknown option: exit 1, names it, no stack trace', async () => {
    expectUserError(await cli('check', '--frob', 'models/retention.ret'), /^retnetc: error: .*'--frob'/);
    expectUserError(await cli('run', 'models/retention.ret', '--bogus', 'x'), /^retnetc: error: .*'--bogus'/);
  });

  it('help prints the usage and exits 0', async () => {
    const r = await cli('help');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^usage: retnetc <command>/);
    expect(r.stdout).toContain('check FILE.ret');
    expect(r.stdout).toContain('run FILE.ret');
  });

  it('no arguments: usage and exit 1', async () => {
    const r = await cli();
    expect(r.code).toBe(1);
    expect(r.stdout + r.stderr).toMatch(/usage: retnetc <command>/);
  });

  it('the built CLI prints no stack trace even for a 100,000-deep expression', async () => {
    const file = path.join(dir, 'deep.ret');
    writeFileSync(file, 'fn f(x: f32[N]) -> y: f32[N] {\n  y[n] = ' + '-'.repeat(100_000) + 'x[n]\n}\n');
    const r = await cli('check', file);
    expectUserError(r, /deep\.ret:\d+:\d+: error: /);
    expect(readFileSync(file, 'utf8').length).toBeGreaterThan(100_000);
  });
});

describe('the retnetc bin', () => {
  it('package.json bin points at an executable file that runs by its shebang (as npx runs it)', () => {
    const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string> };
    const bin = path.join(ROOT, pkg.bin.retnetc!);
    expect(statSync(bin).mode & 0o111).not.toBe(0);
    const r = spawnSync(bin, ['check', 'models/retention.ret'], { cwd: ROOT, encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^fn retention\(/m);
  });
});
