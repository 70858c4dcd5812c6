// The native target's vectorisable runtime helpers (targets/native/c-math.ts), run through
// small kernels on native: each transcendental against Math.fround(Math.f(x)) (the executor's
// definition) over edge values and wide random floats, reporting the largest ulp difference
// (bar: 0, the bit-for-bit contract of tests/native.test.ts), and integer division and modulo by
// a uniform divisor (multiply-high and shift) against JavaScript's semantics with the IR's
// x / 0 = 0, x % 0 = 0, INT_MIN / -1 = INT_MIN, x % -1 = 0.
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import * as K from '../compiler/kir.js';
import type { Kernel, KUnOp } from '../compiler/kir.js';
import { runKernel } from '../targets/cpu/executor.js';
import { findCompiler, NO_COMPILER } from '../targets/native/compile.js';
import { printNative } from '../targets/native/printer.js';
import { TRIG_FAST_LIMIT } from '../targets/native/c-math.js';
import { loadNativeAddon } from '../runtime/native/addon.js';
import { prepareKernels, runNativeKernel } from '../runtime/native/runner.js';

const cc = findCompiler();
const addon = cc ? loadNativeAddon() : { error: NO_COMPILER };
const why = !cc ? NO_COMPILER : 'error' in addon ? addon.error : undefined;
if (why) console.log(`[native-math] skipped: ${why}`);
const run = why ? test.skip : test;

const WG = 256;
const gid = K.add(K.mul(K.wg(), K.i32(WG)), K.tid());
/** y[i] = f(x[i]) for i < n, one work-item each. */
const unaryKernel = (op: KUnOp): Kernel => ({
  name: `m_${op}`, workgroup: [WG, 1, 1], grid: [K.div(K.add(K.v('n'), K.i32(WG - 1)), K.i32(WG)), K.i32(1), K.i32(1)],
  buffers: [{ name: 'x', type: 'f32', access: 'read' }, { name: 'y', type: 'f32', access: 'read_write' }],
  scalars: [{ name: 'n', type: 'i32' }], shared: [],
  body: [K.decl('g', 'i32', gid), K.iff(K.lt(K.v('g'), K.v('n')), [K.store('y', K.v('g'), K.un(op, K.load('x', K.v('g'))))])],
});

const REF: Record<string, (x: number) => number> = {
  exp: Math.exp, exp2: (x) => 2 ** x, log: Math.log, log2: Math.log2, log1p: Math.log1p, tanh: Math.tanh,
  sin: Math.sin, cos: Math.cos, rsqrt: (x) => 1 / Math.sqrt(x), sqrt: Math.sqrt,
};

const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);
const fromBits = (b: number): number => { u32[0] = b >>> 0; return f32[0]!; };
/** Distance in floats between two f32 values (0 for two NaNs, Infinity for NaN against a number, 1 for -0 against +0). */
function ulps(a: number, b: number): number {
  if (Number.isNaN(a) || Number.isNaN(b)) return Number.isNaN(a) && Number.isNaN(b) ? 0 : Infinity;
  const key = (x: number): number => { f32[0] = x; const u = u32[0]!; return u & 0x80000000 ? -(u & 0x7fffffff) - 1 : u; }; // -0 and +0 one apart
  return Math.abs(key(a) - key(b));
}

const EDGES = [0, -0, Infinity, -Infinity, NaN, 1, -1, 2, 0.5, 1e-45, -1e-45, 1.17549435e-38, 3.4028235e38, -3.4028235e38, 88.72283, 88.72284, -87.33654,
  -103.27893, -103.97208, -150, 128, 127.99999, -149, -149.5, 0.34657359, 1.0397208, 2 ** -29, -(2 ** -29), 2 ** -30, -0.9999999, -1.0000001, 9.01, 19.06,
  Math.PI / 4, Math.PI / 2, Math.PI, 3 * Math.PI / 2, 1e5, TRIG_FAST_LIMIT, TRIG_FAST_LIMIT * 1.0000001, 1e6, 1e20, 0.70710677, 1.4142135, 1e-7, 5e-8].map(Math.fround);

/** Random floats: every bit pattern (wide: subnormal to huge, NaN, inf), and moderate magnitudes. */
const floats = fc.oneof(
  fc.integer({ min: 0, max: 0xffffffff }).map(fromBits),
  fc.double({ min: -120, max: 120, noNaN: true }).map(Math.fround),
  fc.double({ min: -2, max: 2, noNaN: true }).map(Math.fround),
  fc.double({ min: -2000, max: 2000, noNaN: true }).map(Math.fround),
);

describe('native transcendentals against Math.fround(Math.f(x))', () => {
  for (const op of Object.keys(REF) as KUnOp[]) {
    run(`${op}: max ulp difference 0 over edge and random inputs`, async () => {
      const k = unaryKernel(op);
      const p = await prepareKernels([k]);
      let worst = 0, at = NaN;
      const check = (xs: number[]): void => {
        const x = Float32Array.from(xs), y = new Float32Array(xs.length);
        runNativeKernel(p, k, { buffers: { x, y }, scalars: { n: xs.length } });
        x.forEach((v, i) => { const d = ulps(y[i]!, Math.fround(REF[op]!(v))); if (d > worst) { worst = d; at = v; } });
      };
      check(EDGES);
      fc.assert(fc.property(fc.array(floats, { minLength: 1, maxLength: 3000 }), (xs) => { check(xs); return worst === 0; }), { numRuns: 40 });
      console.log(`[native-math] ${op}: max ulp difference ${worst}${worst ? ` at x = ${at}` : ''}`);
      expect(worst, `${op}(${at})`).toBe(0);
    });
  }
});

describe('native sin and cos beyond the fast reduction', () => {
  // In place (y = sin(y)): the loop stores what it loads, so it cannot re-run; the select to libm
  // takes the large arguments. Out of place it re-runs with libm when one argument is large.
  const inPlace = (op: 'sin' | 'cos'): Kernel => ({
    name: `m_${op}_inplace`, workgroup: [WG, 1, 1], grid: [K.div(K.add(K.v('n'), K.i32(WG - 1)), K.i32(WG)), K.i32(1), K.i32(1)],
    buffers: [{ name: 'y', type: 'f32', access: 'read_write' }], scalars: [{ name: 'n', type: 'i32' }], shared: [],
    body: [K.decl('g', 'i32', gid), K.iff(K.lt(K.v('g'), K.v('n')), [K.store('y', K.v('g'), K.un(op, K.load('y', K.v('g'))))])],
  });
  test('the printed C re-runs a loop that can, and selects to libm in one that cannot', () => {
    expect(printNative([unaryKernel('sin')]).code).toMatch(/int32_t rn_big = 0;[\s\S]*reduction\(\|:rn_big\)[\s\S]*rn_sin_v\([\s\S]*if \(rn_big\) \{/);
    const code = printNative([inPlace('sin')]).code;
    expect(code).not.toContain('rn_big = 0');
    expect(code).toMatch(/y\[[^\]]*\] = rn_sin\(/);
  });
  for (const op of ['sin', 'cos'] as const) {
    run(`${op} in place equals Math.fround(Math.${op}) with small and huge arguments mixed in one workgroup`, async () => {
      const k = inPlace(op);
      const p = await prepareKernels([k]);
      const xs = [...EDGES, ...Array.from({ length: 3000 }, (_, i) => Math.fround((i % 3 ? 1 : 1e9) * Math.sin(i * 12.9898) * (i % 5 ? 100 : 3e5)))];
      const y = Float32Array.from(xs);
      runNativeKernel(p, k, { buffers: { y }, scalars: { n: y.length } });
      let worst = 0;
      xs.forEach((v, i) => { worst = Math.max(worst, ulps(y[i]!, Math.fround(Math[op](Math.fround(v))))); });
      expect(worst).toBe(0);
    });
  }
});

describe('native integer division by a uniform divisor', () => {
  // q = a / (d + e), r = a % (d + e): the divisor is an expression of two scalars, the same for every work-item.
  const k: Kernel = {
    name: 'm_div', workgroup: [WG, 1, 1], grid: [K.div(K.add(K.v('n'), K.i32(WG - 1)), K.i32(WG)), K.i32(1), K.i32(1)],
    buffers: [{ name: 'a', type: 'i32', access: 'read' }, { name: 'q', type: 'i32', access: 'read_write' }, { name: 'r', type: 'i32', access: 'read_write' }],
    scalars: [{ name: 'n', type: 'i32' }, { name: 'd', type: 'i32' }, { name: 'e', type: 'i32' }], shared: [],
    body: [K.decl('g', 'i32', gid), K.iff(K.lt(K.v('g'), K.v('n')), [
      K.decl('av', 'i32', K.load('a', K.v('g'), 'i32')),
      K.store('q', K.v('g'), K.bin('/', K.v('av'), K.add(K.v('d'), K.v('e')))),
      K.store('r', K.v('g'), K.bin('%', K.v('av'), K.add(K.v('d'), K.v('e')))),
    ])],
  };
  const jsDiv = (a: number, d: number): number => (d === 0 ? 0 : d === -1 ? -a | 0 : Math.trunc(a / d) | 0);
  const jsMod = (a: number, d: number): number => (d === 0 || d === -1 ? 0 : (a % d) | 0);
  const INT_MIN = -2147483648, INT_MAX = 2147483647;
  const special = [0, 1, -1, 2, -2, 3, 7, -7, 10, 32, 64, 255, 256, 1 << 30, -(1 << 30), (1 << 30) + 1, INT_MIN, INT_MAX, INT_MIN + 1, 46341, -46341, 65536, 65537];
  const divisor = fc.oneof(fc.constantFrom(...special), fc.integer({ min: -300, max: 300 }), fc.integer({ min: INT_MIN, max: INT_MAX }),
    fc.integer({ min: 0, max: 31 }).map((s) => (2 ** s) | 0), fc.integer({ min: 0, max: 31 }).map((s) => -(2 ** s) | 0));
  const dividend = fc.oneof(fc.constantFrom(...special), fc.integer({ min: INT_MIN, max: INT_MAX }), fc.integer({ min: -1000, max: 1000 }));

  test('the printed C divides by multiply-high and shift (rn_div_make at kernel entry)', () => {
    const code = printNative([k]).code;
    expect(code).toContain('rn_div_make(d + e)');
    expect(code).toMatch(/rn_divq\(av, rn_dv0\)/);
  });

  run('q and r equal JavaScript\'s truncating division for random divisors and dividends (and the executor)', async () => {
    const p = await prepareKernels([k]);
    fc.assert(fc.property(divisor, fc.integer({ min: INT_MIN, max: INT_MAX }), fc.array(dividend, { minLength: 1, maxLength: 1500 }), (dv, e, as) => {
      const d = (dv - e) | 0; // d + e wraps back to dv
      const a = Int32Array.from([...as, ...special, INT_MIN, INT_MAX]);
      const args = { buffers: { a, q: new Int32Array(a.length), r: new Int32Array(a.length) }, scalars: { n: a.length, d, e } };
      runNativeKernel(p, k, args);
      a.forEach((x, i) => {
        expect(args.buffers.q[i], `${x} / ${dv}`).toBe(jsDiv(x, dv));
        expect(args.buffers.r[i], `${x} % ${dv}`).toBe(jsMod(x, dv));
      });
      const cpu = { buffers: { a, q: new Int32Array(a.length), r: new Int32Array(a.length) }, scalars: { n: a.length, d, e } };
      runKernel(k, cpu);
      expect(Array.from(args.buffers.q)).toEqual(Array.from(cpu.buffers.q));
      expect(Array.from(args.buffers.r)).toEqual(Array.from(cpu.buffers.r));
    }), { numRuns: 150 });
  });
});

describe('native bounds pre-check of a work-item loop (targets/native/item-versions.ts)', () => {
  // y[g] = x[g / s + off] * 2 under g < n: indices through a uniform divisor, so no affine versioning; the
  // pre-check proves a workgroup in range (unchecked, vectorised body) or sends it to the checked body.
  const k: Kernel = {
    name: 'm_gather', workgroup: [64, 1, 1], grid: [K.div(K.add(K.v('n'), K.i32(63)), K.i32(64)), K.i32(1), K.i32(1)],
    buffers: [{ name: 'x', type: 'f32', access: 'read' }, { name: 'y', type: 'f32', access: 'read_write' }],
    scalars: [{ name: 'n', type: 'i32' }, { name: 's', type: 'i32' }, { name: 'off', type: 'i32' }], shared: [],
    body: [K.decl('g', 'i32', K.add(K.mul(K.wg(), K.i32(64)), K.tid())), K.iff(K.lt(K.v('g'), K.v('n')), [
      K.store('y', K.v('g'), K.mul(K.load('x', K.add(K.div(K.v('g'), K.v('s')), K.v('off'))), K.f32(2))),
    ])],
  };

  test('the printed C tests every index first: flat for a full workgroup, unchecked for the tail, checked for a workgroup that fails', () => {
    const code = printNative([k]).code;
    expect(code).toContain('reduction(&:rn_all) /* bounds pre-check */');
    expect(code).toContain('reduction(&:rn_ok) /* bounds pre-check */');
    expect(code).toMatch(/if \(rn_all\) \{\s*#pragma omp simd[^\n]*\n\s*for [^\n]*\n\s*int32_t g = [^\n]*\n\s*y\[\(int64_t\)\(wg_x \* 64\) \+ \(int64_t\)rn_t\] = x\[rn_divq\(g, rn_dv0\) \+ off\]/);
    expect(code).toMatch(/if \(rn_ok\) \{[\s\S]*if \(g < n\) \{\s*y\[\(int64_t\)\(wg_x \* 64\) \+ \(int64_t\)rn_t\] = x\[rn_divq\(g, rn_dv0\) \+ off\][\s\S]*\} else \{[\s\S]*rn_ldf\(x, /);
  });

  run('in range it computes what the executor computes; out of range both report an out-of-bounds load', async () => {
    const p = await prepareKernels([k]);
    fc.assert(fc.property(fc.integer({ min: 1, max: 700 }), fc.integer({ min: -4, max: 6 }), fc.integer({ min: -3, max: 3 }), fc.integer({ min: 0, max: 720 }),
      (n, s, off, len) => {
        const x = Float32Array.from({ length: len }, (_, i) => i * 0.5 - 7), mk = () => ({ buffers: { x, y: new Float32Array(n) }, scalars: { n, s, off } });
        const cpu = mk(), nat = mk();
        let cpuErr: unknown, natErr: unknown;
        try { runKernel(k, cpu); } catch (e) { cpuErr = e; }
        try { runNativeKernel(p, k, nat); } catch (e) { natErr = e; }
        expect(natErr === undefined, `native ${String(natErr)} / executor ${String(cpuErr)}`).toBe(cpuErr === undefined);
        if (cpuErr) expect(String(natErr)).toMatch(/out-of-bounds load in kernel m_gather: buffer 'x'/);
        else expect(Array.from(nat.buffers.y)).toEqual(Array.from(cpu.buffers.y));
      }), { numRuns: 200 });
  });
});
