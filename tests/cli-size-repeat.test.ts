// `retnetc run --size` (sizes that no input binds: the size parameter H of `fn msr[H]`) and
// `retnetc run --repeat N` (times the compiled plan on a device), as a user runs them: msr of
// models/retnet.ret on the reference, the CPU executor and WebGPU against the float64
// interpreter, and the one-line errors for a --size that is unknown, or bound by the inputs.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { runFunction, type Value } from '../dsl/reference/interpreter.js';
import { fromFloat64, readSafetensorsFile, toFloat64 } from '../runtime/io/safetensors.js';
import { cli, ensureBuilt, expectOk, expectUserError, writeTensors } from './helpers/cli.js';
import { loadFn, prng, relErr, tensor } from './helpers/harness.js';

const REQUIRE_WEBGPU = process.env['REQUIRE_WEBGPU'] === '1';
const MODEL = 'models/retnet.ret';

let dir = '';
beforeAll(() => {
  ensureBuilt();
  dir = mkdtempSync(path.join(tmpdir(), 'retnetc-cli-size-'));
}, 240_000);
afterAll(() => { if (dir) rmSync(dir, { recursive: true, force: true }); });

// H = 2 heads of K = 8, V = 12; T = 37 is a multiple of no chunk.
const [B, T, H, K, V] = [2, 37, 2, 8, 12];
const msr = loadFn('retnet', 'msr');
const rand = prng(2024);
const small = (shape: number[]): Value => tensor(shape, () => (rand() * 2 - 1) * 0.2);
const inputs = new Map<string, Value>([
  ['x', small([B, T, H * K])], ['wq', small([H * K, H * K])], ['wk', small([H * K, H * K])],
  ['wv', small([H * V, H * K])], ['wg', small([H * V, H * K])], ['wo', small([H * K, H * V])],
]);
const want = runFunction(msr, inputs, { sizes: new Map([['H', H]]) }).get('y')!;

let inFile = '';
const inputsFile = (): string => {
  if (!inFile) inFile = writeTensors(path.join(dir, 'msr.safetensors'), new Map([...inputs].map(([n, v]) => [n, fromFloat64(v.data, v.shape, 'F32')] as const)));
  return inFile;
};
const readY = async (file: string): Promise<Float64Array> => {
  const t = (await readSafetensorsFile(file)).tensors.get('y')!;
  expect(t.shape).toEqual([B, T, H * K]);
  return toFloat64(t);
};

describe('run --size', () => {
  it('a size parameter no input binds is an error that says to give it with --size', async () => {
    const r = await cli(['run', MODEL, '--fn', 'msr', '--inputs', inputsFile(), '--out', path.join(dir, 'none.safetensors')]);
    expectUserError(r, /error: cannot determine size 'H' of 'msr' from its inputs; give it with --size H=N$/);
  });

  const cases: [string, string[]][] = [
    ['reference', []],
    ['cpu', ['--schedule', 'chunkwise', '--chunk', '16']],
    ['cpu', ['--schedule', 'recurrent']],
    ['webgpu', ['--schedule', 'parallel']],
  ];
  for (const [target, extra] of cases) {
    it(`--size H=${H} runs msr on --target ${target} ${extra.join(' ')} and agrees with the float64 interpreter`, async (ctx) => {
      const out = path.join(dir, `y-${target}-${extra.join('')}.safetensors`);
      const r = await cli(['run', MODEL, '--fn', 'msr', '--inputs', inputsFile(), '--out', out, '--size', `H=${H}`, '--target', target, ...extra], { timeoutMs: 120_000 });
      if (target === 'webgpu' && !REQUIRE_WEBGPU && /no WebGPU adapter/.test(r.stderr)) { console.log(`[cli-size] skipped: ${r.stderr.trim()}`); ctx.skip(); }
      expectOk(r);
      expect(r.stdout).toContain(`wrote y ${target === 'reference' ? 'f64' : 'f32'}[${B}, ${T}, ${H * K}] to ${out}`);
      const e = relErr(await readY(out), want.data);
      expect(e.nonFinite).toBe(0);
      expect(e.rel, target).toBeLessThanOrEqual(target === 'reference' ? 1e-7 : 1e-5); // the reference reads float32 inputs, writes float64
    }, 150_000);
  }

  it('a --size that the inputs bind, an unknown one, or a malformed one: one line each', async () => {
    const out = path.join(dir, 'bad.safetensors');
    const run = (...size: string[]) => cli(['run', MODEL, '--fn', 'msr', '--inputs', inputsFile(), '--out', out, '--size', `H=${H}`, ...size.flatMap((s) => ['--size', s])]);
    expectUserError(await run('T=5'), /^retnetc: error: --size T: 'T' is bound by the inputs' shapes \(T = 37, not 5\); --size is for sizes that no input binds$/);
    expectUserError(await run('Q=2'), /^retnetc: error: --size Q: 'Q' is not a size of 'msr' \(its sizes: H, B, T, K, V\)/);
    expectUserError(await run('K=0x8'), /--size K/);
    expectUserError(await cli(['run', MODEL, '--fn', 'msr', '--inputs', inputsFile(), '--out', out, '--size', 'H=2', '--size', 'H=3']), /--size H is given more than once/);
  }, 120_000);

  it('--out-dtype i32 for float outputs: a user error before anything runs (was an internal error)', async () => {
    const r = await cli(['run', MODEL, '--fn', 'msr', '--inputs', inputsFile(), '--out', path.join(dir, 'int.safetensors'), '--size', `H=${H}`, '--target', 'cpu', '--out-dtype', 'i32']);
    expectUserError(r, /^retnetc: error: --out-dtype i32 cannot hold the float output 'y' of 'msr'/);
  });
});

describe('run --repeat', () => {
  it('--repeat 3 prints the compile time, the first run and the median of 3 more, and writes the same result', async () => {
    const out = path.join(dir, 'y-repeat.safetensors');
    const r = await cli(['run', MODEL, '--fn', 'msr', '--inputs', inputsFile(), '--out', out, '--size', `H=${H}`, '--target', 'cpu', '--schedule', 'chunkwise', '--repeat', '3']);
    expectOk(r);
    const m = /^timing: cpu chunkwise: compile ([\d.]+) ms, first run ([\d.]+) ms, median ([\d.]+) ms per run over 3 more \(min ([\d.]+), max ([\d.]+)\)$/m.exec(r.stdout);
    expect(m, r.stdout).not.toBeNull();
    const [compile, first, median, min, max] = m!.slice(1).map(Number) as [number, number, number, number, number];
    for (const x of [compile, first, median, min, max]) expect(x).toBeGreaterThan(0);
    expect(min).toBeLessThanOrEqual(median);
    expect(median).toBeLessThanOrEqual(max);
    expect(relErr(await readY(out), want.data).rel).toBeLessThanOrEqual(1e-5);
  }, 120_000);

  it('--repeat with the reference target, 0 or not a decimal integer: refused', async () => {
    const out = path.join(dir, 'y-bad-repeat.safetensors');
    const base = ['run', MODEL, '--fn', 'msr', '--inputs', inputsFile(), '--out', out, '--size', `H=${H}`];
    expectUserError(await cli([...base, '--repeat', '3']), /--repeat does not apply to --target reference/);
    expectUserError(await cli([...base, '--target', 'cpu', '--repeat', '0']), /--repeat/);
    expectUserError(await cli([...base, '--target', 'cpu', '--repeat', '1e1']), /--repeat/);
  }, 120_000);
});
