// Contracting kernels (kir.ts Kernel.contract: f32 x * y + z is one fused multiply-add):
//   - the executor's fma32 is the correctly rounded f32 result, against an exact rational
//     computation (BigInt), on random f32 triples and on the cases where rounding the double sum
//     to f32 goes wrong (the double sum lands exactly halfway between two f32 values);
//   - a contracting kernel on the executor is fma32 of each sum with a product operand, the right
//     operand's product where both are; without `contract` the same kernel rounds twice;
//   - native (fmaf, vector fma in lane loops) computes such a kernel bit for bit as the executor,
//     scalar and lane loops, on those hard cases too; the printers print fmaf / fma / __fmaf_rn.
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import * as K from '../compiler/kir.js';
import type { Kernel } from '../compiler/kir.js';
import { fma32, runKernel } from '../targets/cpu/executor.js';
import { printCuda } from '../targets/cuda/printer.js';
import { printWgsl } from '../targets/wgsl/printer.js';
import { findCompiler, NO_COMPILER } from '../targets/native/compile.js';
import { printNative } from '../targets/native/printer.js';
import { loadNativeAddon } from '../runtime/native/addon.js';
import { prepareKernels, runNativeKernel } from '../runtime/native/runner.js';
import { assertProperty, fcSeed } from './helpers/harness.js';

const cc = findCompiler();
const addon = cc ? loadNativeAddon() : { error: NO_COMPILER };
const why = !cc ? NO_COMPILER : 'error' in addon ? addon.error : undefined;

// ---- the exact reference: x * y + z as an integer times a power of two, rounded to f32 -----------

/** A finite double as [mantissa, exponent] with value = m * 2^e (m a BigInt). */
function split(v: number): [bigint, number] {
  const dv = new DataView(new ArrayBuffer(8));
  dv.setFloat64(0, v);
  const hi = dv.getUint32(0), lo = dv.getUint32(4);
  const sign = hi >>> 31 ? -1n : 1n;
  const ex = (hi >>> 20) & 0x7ff;
  let m = (BigInt(hi & 0xfffff) << 32n) | BigInt(lo);
  if (ex !== 0) m |= 1n << 52n;
  return [sign * m, (ex === 0 ? 1 : ex) - 1075];
}

/** The exact x * y + z rounded once to f32 (to nearest, ties to even), for finite f32 inputs. */
function exactFma(x: number, y: number, z: number): number {
  const [mx, ex] = split(x), [my, ey] = split(y), [mz, ez] = split(z);
  const ep = ex + ey, e0 = Math.min(ep, ez);
  const n = mx * my * (1n << BigInt(ep - e0)) + mz * (1n << BigInt(ez - e0));
  if (n === 0n) return Object.is(x * y, -0) && Object.is(z, -0) ? -0 : 0;
  const neg = n < 0n, a = neg ? -n : n;
  const bits = a.toString(2).length;
  const top = e0 + bits - 1; // the exponent of the leading bit
  const q = Math.max(top - 23, -149); // the exponent of the result's last bit
  let r: bigint;
  if (q <= e0) r = a << BigInt(e0 - q);
  else {
    const s = BigInt(q - e0), half = 1n << (s - 1n);
    r = a >> s;
    const rem = a - (r << s);
    if (rem > half || (rem === half && (r & 1n) === 1n)) r += 1n;
  }
  const v = Number(r) * 2 ** q;
  return (neg ? -1 : 1) * (v >= 2 ** 128 ? Infinity : v); // rounded past the largest f32, 2^128 - 2^104
}

const f32 = Math.fround;
/** Triples where the double sum lies exactly halfway between two f32 values (see executor.ts fma32). */
function hardCases(): [number, number, number][] {
  const out: [number, number, number][] = [];
  for (const j of [12, 13, 15, 17, 20]) for (const k of [0, 1, 2, 3, 5, 1023, 4097]) for (const s of [1, -1]) for (const e of [-30, 0, 20]) {
    // (1 + 2^-j) (1 - 2^-j) 2^-24 = 2^-24 - 2^-(24 + 2j): half an ulp of z = 1 + k 2^-23, less a bit below the double's precision.
    const x = f32(1 + 2 ** -j), y = f32((1 - 2 ** -j) * 2 ** -24) * 2 ** e;
    const z = f32((1 + k * 2 ** -23) * 2 ** e) * s;
    out.push([x, y * s, z], [x, -y * s, z], [-x, y * s, z]);
  }
  return out;
}

describe('fma32: the correctly rounded f32 fused multiply-add', () => {
  test('double rounding cases: exact, where fround(x * y + z) is not', () => {
    let naiveWrong = 0;
    for (const [x, y, z] of hardCases()) {
      const want = exactFma(x, y, z);
      expect(Object.is(fma32(x, y, z), want), `fma32(${x}, ${y}, ${z}) = ${fma32(x, y, z)}, exact ${want}`).toBe(true);
      if (!Object.is(f32(x * y + z), want)) naiveWrong++;
    }
    // The cases do exercise the fix: rounding the double sum is wrong on many of them.
    expect(naiveWrong).toBeGreaterThan(20);
  });

  test('random f32 triples, and products at the edges of the range, against the exact value', () => {
    const finite = fc.float({ noNaN: true, noDefaultInfinity: true });
    fc.assert(fc.property(finite, finite, finite, (x, y, z) => {
      const want = exactFma(x, y, z);
      expect(Object.is(fma32(x, y, z), want), `fma32(${x}, ${y}, ${z})`).toBe(true);
    }), { seed: fcSeed('fma32'), numRuns: 3000 });
    for (const [x, y, z] of [[2 ** 127, 1.5, 2 ** 127], [2 ** 127, 2, -(2 ** 127)], [2 ** -149, 0.5, 0], [2 ** -149, 0.75, 2 ** -149], [-0, 1, -0], [0, -1, -0], [f32(3.4028234663852886e38), 1, f32(2 ** 103)]] as const) {
      expect(Object.is(fma32(x, y, z), exactFma(x, y, z)), `${x} ${y} ${z}`).toBe(true);
    }
    expect(fma32(Infinity, 0, 1)).toBeNaN();
    expect(fma32(Infinity, 1, 1)).toBe(Infinity);
  });
});

// ---- kernels ------------------------------------------------------------------------------------

const N = 96;
/**
 * out[i] = a[i] * b[i] + c[i] (scalar, a workgroup each); out2[i] = a[i] * b[i] + c[i] * d (a lane loop of
 * 16 inside one work-item: both operands products, the right one fused); with contract or not.
 */
function kernel(contract: boolean): Kernel {
  // One thread per workgroup: the lane loop is not inside a work-item loop, so it prints as vectors.
  const i = K.wg('x');
  const l = (a: string, idx = K.v('i')): K.KExpr => K.load(a, idx);
  const lane = K.add(K.mul(K.v('j'), K.i32(16)), K.v('v'));
  return {
    name: contract ? 'fma_on' : 'fma_off', workgroup: [1, 1, 1], grid: [K.i32(N), K.i32(1), K.i32(1)],
    buffers: ['a', 'b', 'c', 'out', 'out2'].map((name) => ({ name, type: 'f32' as const, access: name.startsWith('out') ? 'read_write' as const : 'read' as const })),
    scalars: [{ name: 'd', type: 'f32' }], shared: [],
    body: [
      K.decl('i', 'i32', i),
      K.store('out', K.v('i'), K.add(K.mul(l('a'), l('b')), l('c'))),
      K.iff(K.bin('==', K.v('i'), K.i32(0)), [
        K.loop('j', K.i32(0), K.i32(N / 16), [K.loop('v', K.i32(0), K.i32(16), [
          K.store('out2', lane, K.add(K.mul(l('a', lane), l('b', lane)), K.mul(l('c', lane), K.v('d', 'f32')))),
        ])]),
      ]),
    ],
    ...(contract ? { contract: true } : {}),
  };
}

function inputs(): { buffers: Record<string, Float32Array>; scalars: Record<string, number> } {
  const hard = hardCases();
  const a = new Float32Array(N), b = new Float32Array(N), c = new Float32Array(N);
  let seed = 5;
  const rnd = (): number => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32) * 2 - 1;
  for (let i = 0; i < N; i++) {
    const h = hard[(i * 7) % hard.length]!;
    [a[i], b[i], c[i]] = i % 2 ? h : [rnd(), rnd(), rnd()];
  }
  return { buffers: { a, b, c, out: new Float32Array(N), out2: new Float32Array(N) }, scalars: { d: 1 } };
}

describe('contracting kernels', () => {
  test('executor: fma32 where the kernel contracts (right product first), two roundings where it does not', () => {
    const on = inputs(), off = inputs();
    runKernel(kernel(true), on);
    runKernel(kernel(false), off);
    const { a, b, c } = on.buffers;
    let differ = 0;
    for (let i = 0; i < N; i++) {
      expect(Object.is(on.buffers['out']![i], f32(fma32(a![i]!, b![i]!, c![i]!))), `out[${i}]`).toBe(true);
      expect(Object.is(off.buffers['out']![i], f32(f32(a![i]! * b![i]!) + c![i]!)), `unfused out[${i}]`).toBe(true);
      expect(Object.is(on.buffers['out2']![i], fma32(c![i]!, 1, f32(a![i]! * b![i]!))), `out2[${i}]`).toBe(true);
      if (!Object.is(on.buffers['out']![i], off.buffers['out']![i])) differ++;
    }
    expect(differ).toBeGreaterThan(0);
  });

  test('printers: fmaf on native, __fmaf_rn on CUDA, fma on WGSL, only where the kernel contracts', () => {
    const body = (c: boolean): string => printNative([kernel(c)], { checks: true }).code.split("// kernel IR '")[1]!;
    expect(body(true)).toMatch(/fmaf\(/);
    expect(body(true)).toMatch(/rn_vfmas?16\(/);
    expect(body(false)).not.toMatch(/fmaf\(|rn_vfmas?16\(/);
    expect(printCuda(kernel(true)).code).toMatch(/__fmaf_rn\(/);
    expect(printCuda(kernel(false)).code).not.toMatch(/__fmaf_rn\(/);
    expect(printWgsl(kernel(true)).code).toMatch(/fma\(/);
    expect(printWgsl(kernel(false)).code).not.toMatch(/fma\(/);
  });

  test.skipIf(why !== undefined)('native computes a contracting kernel bit for bit as the executor (scalar and lane loops, checked and unchecked)', async () => {
    for (const checks of [true, false]) {
      const want = inputs(), got = inputs(), k = kernel(true);
      runKernel(k, want);
      const p = await prepareKernels([k], checks);
      runNativeKernel(p, k, got);
      for (const o of ['out', 'out2']) {
        const g = Array.from(got.buffers[o]!), w = Array.from(want.buffers[o]!);
        expect(g, `${o} checks ${checks}`).toEqual(w);
      }
    }
  });

  test.skipIf(why !== undefined)('property: random f32 inputs, native fmaf equals fma32', async () => {
    const k = kernel(true), p = await prepareKernels([k]);
    await assertProperty(fc.array(fc.tuple(fc.float({ noNaN: true }), fc.float({ noNaN: true }), fc.float({ noNaN: true })), { minLength: N, maxLength: N }), async (rows) => {
      const mk = () => {
        const x = inputs();
        rows.forEach(([a, b, c], i) => { x.buffers['a']![i] = a; x.buffers['b']![i] = b; x.buffers['c']![i] = c; });
        return x;
      };
      const want = mk(), got = mk();
      runKernel(k, want);
      runNativeKernel(p, k, got);
      expect(Array.from(got.buffers['out']!)).toEqual(Array.from(want.buffers['out']!));
      expect(Array.from(got.buffers['out2']!)).toEqual(Array.from(want.buffers['out2']!));
    }, { seed: fcSeed('fma-native'), examples: [], randomRuns: 10, timeLimitMs: 30_000 });
  });
});
