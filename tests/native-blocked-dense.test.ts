// Blocked dense products for CPUs (compiler/lower/dense-cpu.ts), lane loops printed as vector
// operations (targets/native/lanes.ts) and the reshape form of delta sums (targets/native/delta.ts):
//   - the blocked kernel equals the elementwise kernel of the same statement on the CPU executor
//     (the reference semantics of kernel IR) for every dense form RetNet has, ragged shapes that
//     are not multiples of any tile, specialised or runtime sizes and several blockings;
//   - the native target computes the blocked kernel bit for bit as the executor does, with and
//     without bounds checks (vector statements, vector locals, the lane-by-lane fallback);
//   - lane loops with cross-lane dependences are not vectorised; an out-of-range vector access
//     reports the out-of-bounds access the loop makes;
//   - delta sums of autodiff's reshapes (v % C == u && v / C == w with Python's floor fix-ups)
//     lose their loop and compute what the loop computes, bit for bit.
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { recogniseDense } from '../compiler/dense.js';
import * as K from '../compiler/kir.js';
import type { Kernel, KStmt } from '../compiler/kir.js';
import { chooseDenseCpuTile, DEFAULT_DENSE_CPU_TILE, type DenseCpuTile, denseCpuTileFor, denseCpuTileProblem, lowerDenseCpu, readsBInPlace } from '../compiler/lower/dense-cpu.js';
import { ExprLowering, sizeParam } from '../compiler/lower/expr.js';
import { lowerElementwise } from '../compiler/lower/generic.js';
import { runKernel } from '../targets/cpu/executor.js';
import { rewriteDeltaSums } from '../targets/native/delta.js';
import { lanePlan, vectorLocals } from '../targets/native/lanes.js';
import { findCompiler, NO_COMPILER } from '../targets/native/compile.js';
import { printNative } from '../targets/native/printer.js';
import { loadNativeAddon } from '../runtime/native/addon.js';
import { prepareKernels, runNativeKernel } from '../runtime/native/runner.js';
import { type Case, caseOf, inputsOf, type Kind, KINDS } from './helpers/dense-cases.js';
import { assertProperty, fcSeed, relErr, runsScale } from './helpers/harness.js';

const cc = findCompiler();
const addon = cc ? loadNativeAddon() : { error: NO_COMPILER };
const why = !cc ? NO_COMPILER : 'error' in addon ? addon.error : undefined;

type Arr = Float32Array | Int32Array;
type Args = { buffers: Record<string, Arr>; scalars: Record<string, number> };
const clone = (a: Args): Args => ({ buffers: Object.fromEntries(Object.entries(a.buffers).map(([k, v]) => [k, v.slice()])), scalars: { ...a.scalars } });
const bits = (a: Arr): number[] => (a instanceof Float32Array ? Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length), (u, i) => (a[i] !== a[i] ? 0x7fc00000 : u)) : Array.from(a));

function finish(k: Kernel, L: ExprLowering): Kernel {
  k.buffers = [...L.buffers.values()].map((b) => ({ name: b.name, type: b.type, access: b.written ? 'read_write' as const : 'read' as const }));
  k.scalars = [...L.sizes.runtime].sort().map((a) => ({ name: sizeParam(a), type: 'i32' as const }));
  return k;
}

/** The elementwise and the blocked kernel of a case, with the arguments to run them. */
function kernelsOf(c: Case, tile: DenseCpuTile, specialise: boolean, seed: number): { ew: Kernel; blocked: Kernel; args: Args; out: string } {
  const d = recogniseDense(c.s, c.vars);
  if (!d) throw new Error(`not dense: ${c.s.target}`);
  const consts = specialise ? c.sizes : new Map<string, number>();
  const ewL = new ExprLowering(c.vars, { constants: consts, runtime: new Set() });
  const ew = finish(lowerElementwise('ew', c.s, ewL, 64), ewL);
  const bL = new ExprLowering(c.vars, { constants: consts, runtime: new Set() });
  const blocked = finish(lowerDenseCpu('blocked', c.s, d, bL, tile), bL);
  const out = ewL.buffers.get(c.s.target)!.name;
  const n = c.vars.get(c.s.target)!.shape.reduce((a, x) => a * [...x].reduce((s, [mono, k]) => s + k * (mono ? mono.split('*').reduce((p, v) => p * c.sizes.get(v)!, 1) : 1), 0), 1);
  const scalars = Object.fromEntries(blocked.scalars.map((s) => [s.name, c.sizes.get([...c.sizes.keys()].find((a) => sizeParam(a) === s.name)!)!]));
  return { ew, blocked, out, args: { buffers: { ...Object.fromEntries(inputsOf(c, ewL, seed)), [out]: new Float32Array(n).fill(NaN) }, scalars } };
}

const TILES: DenseCpuTile[] = [
  DEFAULT_DENSE_CPU_TILE,
  { m: 16, n: 32, k: 8, regM: 8, regN: 16, lanes: 8 },
  { m: 12, n: 16, k: 5, regM: 3, regN: 16, lanes: 16 }, // regM not a lane width: A values one by one
  { m: 8, n: 8, k: 3, regM: 4, regN: 8, lanes: 4 },
  // The defaults for 8 and 4 lanes (AVX2, SSE/NEON: 6 x 2 vectors), a k step cut to the test's sizes.
  { ...denseCpuTileFor(8), k: 7 },
  { ...denseCpuTileFor(4), m: 24, n: 16, k: 4 },
];

describe('blocked dense products (compiler/lower/dense-cpu.ts)', () => {
  test('tiles are checked; the default narrows rows for small outputs', () => {
    for (const t of TILES) expect(denseCpuTileProblem(t)).toBeUndefined();
    expect(denseCpuTileProblem({ ...DEFAULT_DENSE_CPU_TILE, regN: 24 })).toMatch(/register block/);
    expect(denseCpuTileProblem({ ...DEFAULT_DENSE_CPU_TILE, n: 96, regN: 24, lanes: 16 })).toMatch(/lanes/);
    expect(denseCpuTileProblem({ ...DEFAULT_DENSE_CPU_TILE, k: 4096 })).toMatch(/workgroup memory/);
    const w = caseOf('wgrad', 8, 256, 64, 128, 1);
    expect(chooseDenseCpuTile(recogniseDense(w.s, w.vars)!, w.sizes)).toMatchObject({ m: 64, n: 64 });
    // Small outputs: at least two workgroups (both cores), the tile no larger than the output needs.
    for (const [C, O] of [[64, 128], [128, 64], [64, 64], [64, 61], [19, 70], [512, 512]] as const) {
      const c = caseOf('wgrad', 8, 256, C, O, 1);
      const t = chooseDenseCpuTile(recogniseDense(c.s, c.vars)!, c.sizes);
      expect(Math.ceil(O / t.m) * Math.ceil(C / t.n), `${O}x${C}`).toBeGreaterThanOrEqual(2);
      expect(t.m / 2 < O && t.n - t.regN < C, `${O}x${C}: ${JSON.stringify(t)}`).toBe(true);
    }
    // Narrower vectors: their own register block, the same narrowing (rows stay whole register blocks).
    for (const lanes of [8, 4]) {
      for (const [C, O] of [[64, 128], [64, 61], [19, 70], [512, 512], [512, 4096]] as const) {
        const c = caseOf('wgrad', 8, 256, C, O, 1);
        const t = chooseDenseCpuTile(recogniseDense(c.s, c.vars)!, c.sizes, undefined, lanes);
        expect(t, `${O}x${C}`).toMatchObject({ regM: 6, regN: 2 * lanes, lanes });
        expect(denseCpuTileProblem(t), `${O}x${C}: ${JSON.stringify(t)}`).toBeUndefined();
        expect(Math.ceil(O / t.m) * Math.ceil(C / t.n), `${O}x${C}`).toBeGreaterThanOrEqual(2);
      }
    }
    expect(chooseDenseCpuTile(recogniseDense(w.s, w.vars)!, new Map())).toEqual(DEFAULT_DENSE_CPU_TILE);
    expect(chooseDenseCpuTile(recogniseDense(w.s, w.vars)!, new Map(), { k: 64, cols: 3 })).toEqual({ ...DEFAULT_DENSE_CPU_TILE, k: 64 });
  });

  test.each(KINDS)('%s: equals the elementwise kernel on the executor at ragged shapes, every tile', (kind) => {
    for (const [i, t] of TILES.entries()) {
      // [2, 37, 32, 64, 2]: columns a multiple of every tile's regN, so B is read in place where it allows it (specialised sizes).
      for (const [B, T, C, O, H] of [[1, 1, 1, 1, 1], [2, 37, 19, 70, 3], [2, 37, 32, 64, 2]] as const) {
        const { ew, blocked, args, out } = kernelsOf(caseOf(kind, B, T, C, O, H), t, i % 2 === 0, 3 + i);
        const a = clone(args), b = clone(args);
        runKernel(ew, a);
        runKernel(blocked, b);
        const e = relErr(b.buffers[out] as Float32Array, a.buffers[out] as Float32Array);
        expect(e.nonFinite, `${kind} ${JSON.stringify(t)} at ${[B, T, C, O, H]}`).toBe(0);
        expect(e.rel, `${kind} ${JSON.stringify(t)} at ${[B, T, C, O, H]}`).toBeLessThan(1e-6);
      }
    }
  }, 60_000);

  test.skipIf(why !== undefined)('native computes the blocked kernel bit for bit as the executor, checked and unchecked (random shapes)', async () => {
    const arb = fc.record({
      kind: fc.constantFrom<Kind>(...KINDS), tile: fc.integer({ min: 0, max: TILES.length - 1 }), specialise: fc.boolean(), checks: fc.boolean(),
      B: fc.integer({ min: 1, max: 2 }), T: fc.integer({ min: 1, max: 70 }), C: fc.integer({ min: 1, max: 150 }), O: fc.integer({ min: 1, max: 150 }), H: fc.integer({ min: 1, max: 3 }),
    });
    await assertProperty(arb, async (c) => {
      const { ew, blocked, args, out } = kernelsOf(caseOf(c.kind, c.B, c.T, c.C, c.O, c.H), TILES[c.tile]!, c.specialise, c.T + c.C);
      const want = clone(args), got = clone(args), ref = clone(args);
      runKernel(blocked, want);
      runKernel(ew, ref);
      const p = await prepareKernels([blocked], c.checks);
      runNativeKernel(p, blocked, got);
      expect(bits(got.buffers[out]!), JSON.stringify(c)).toEqual(bits(want.buffers[out]!));
      expect(relErr(got.buffers[out] as Float32Array, ref.buffers[out] as Float32Array).rel, JSON.stringify(c)).toBeLessThan(1e-6);
    }, { seed: fcSeed('native-blocked-dense'), examples: [{ kind: 'onehot' as Kind, tile: 0, specialise: false, checks: true, B: 2, T: 70, C: 150, O: 130, H: 3 }, { kind: 'onehot' as Kind, tile: 0, specialise: true, checks: true, B: 2, T: 70, C: 64, O: 40, H: 2 }], randomRuns: Math.max(3, Math.round(8 * runsScale())), timeLimitMs: 60_000 });
  }, 180_000);

  test('B is read in place where its columns are one unit-stride run that regN divides; the copies are pre-checked runs, no division per element', () => {
    const w = caseOf('onehot', 8, 256, 64, 64, 2);
    const d = recogniseDense(w.s, w.vars)!;
    expect(readsBInPlace(d, 32, w.sizes)).toBe(true);
    expect(readsBInPlace(d, 32, new Map())).toBe(false);
    expect(readsBInPlace(d, 48, w.sizes)).toBe(false);
    const nt = caseOf('nt', 8, 256, 64, 64, 1);
    expect(readsBInPlace(recogniseDense(nt.s, nt.vars)!, 32, nt.sizes)).toBe(false);
    // dw[u, c] = sum[b, h, t, j] dv[b, h, t, j] x[b, t, c] at runtime B and T: A's slab rows are
    // (h, j) runs, its k the (b, t) loops; every copy is a contiguous unchecked loop once its run passes the test.
    const { blocked } = kernelsOf(w, DEFAULT_DENSE_CPU_TILE, false, 1);
    const code = printNative([blocked], { checks: true }).code;
    expect(code).toMatch(/Ap_\[\(int64_t\)\([^\]]*\) \+ \(int64_t\)j\w*\] = dv\[\(int64_t\)\([^\]]*\) \+ \(int64_t\)j\w*\];/);
    expect(code).toMatch(/Bp_\[\(int64_t\)\([^\]]*\) \+ \(int64_t\)j\w*\] = x\[\(int64_t\)\([^\]]*\) \+ \(int64_t\)j\w*\];/);
    const k = kernelsOf(w, DEFAULT_DENSE_CPU_TILE, true, 1).blocked;
    expect(printNative([k], { checks: true }).code).toMatch(/bv_\w*\[0\] = rn_vld16\(x \+/);
  });

  test('the micro-kernel prints as vector fused multiply-adds with its accumulators as vector locals', () => {
    const { blocked } = kernelsOf(caseOf('nt', 1, 70, 40, 50, 1), DEFAULT_DENSE_CPU_TILE, true, 1);
    const code = printNative([blocked], { checks: true }).code;
    expect(code).toMatch(/rn_vf16 acc_\w*\[16\];/);
    expect(code).toMatch(/acc_\w*\[15\] = rn_vfmas16\(a7_\w*, bv_\w*\[1\], acc_\w*\[15\]\);/);
  });
});

describe('lane loops (targets/native/lanes.ts)', () => {
  const f32 = () => true;
  const v = K.v('v');
  test('cross-lane dependences are not vectorised; disjoint and same-lane accesses are', () => {
    const loop = (body: KStmt[]) => K.loop('v', K.i32(0), K.i32(8), body) as Extract<KStmt, { k: 'for' }>;
    expect(lanePlan(loop([K.store('y', v, K.add(K.load('y', v), K.f32(1)))]), f32)).toBeDefined();
    expect(lanePlan(loop([K.store('y', K.add(v, K.i32(1)), K.load('y', v))]), f32)).toBeUndefined();
    expect(lanePlan(loop([K.store('y', K.add(K.v('b'), v), K.f32(0)), K.store('y', K.add(K.add(K.v('b'), K.i32(8)), v), K.f32(1))]), f32)).toBeDefined();
    expect(lanePlan(loop([K.store('y', K.add(K.v('b'), v), K.f32(0)), K.store('y', K.add(K.v('c'), v), K.f32(1))]), f32)).toBeUndefined();
    expect(lanePlan(loop([K.store('y', v, K.load('y', K.i32(0)))]), f32)).toBeUndefined();
    expect(lanePlan(loop([K.store('y', v, K.un('exp', K.load('x', v)))]), f32)).toBeUndefined();
    expect(lanePlan(K.loop('v', K.i32(0), K.i32(7), [K.store('y', v, K.f32(0))]) as Extract<KStmt, { k: 'for' }>, f32)).toBeUndefined();
    // A local accessed at a non-multiple of the width stays scalar.
    expect(vectorLocals([K.local('a', 'f32', 16), loop([K.store('a', K.add(K.i32(8), v), K.f32(0))]), K.local('b', 'f32', 16), loop([K.store('b', K.add(K.i32(4), v), K.f32(0))])])).toEqual(new Map([['a', 8]]));
  });

  test.skipIf(why !== undefined)('lane loops compute what the loop computes (-0, NaN, infinities); an out-of-range vector access reports the loop\'s first out-of-bounds access', async () => {
    const xs = Float32Array.from([-0, 0, NaN, Infinity, -Infinity, 1.5, -2.25, 3, 1e30, -1e-30, 7, -1, 0.1, -0, 5, 2, 9, -3, 4, 8]);
    const body = (n: number): KStmt[] => [
      K.decl('b', 'i32', K.mul(K.wg(), K.i32(8))),
      K.local('acc', 'f32', 8),
      K.loop('v', K.i32(0), K.i32(8), [K.store('acc', K.v('v'), K.f32(-0))]),
      K.loop('v', K.i32(0), K.i32(8), [K.store('acc', K.v('v'), K.add(K.load('acc', K.v('v')), K.mul(K.load('x', K.add(K.v('b'), K.v('v'))), K.f32(-2))))]),
      K.loop('v', K.i32(0), K.i32(8), [K.store('y', K.add(K.v('b'), K.v('v')), K.sub(K.load('acc', K.v('v')), K.un('neg', K.load('x', K.add(K.v('v'), K.add(K.v('b'), K.i32(n)))))))]),
    ];
    const mk = (n: number): Kernel => ({ name: 'lanes', workgroup: [1, 1, 1], grid: [K.i32(2), K.i32(1), K.i32(1)], buffers: [{ name: 'x', type: 'f32', access: 'read' }, { name: 'y', type: 'f32', access: 'read_write' }], scalars: [], shared: [], body: body(n) });
    const k = mk(2);
    expect(printNative([k]).code).toContain('lane loop, 8 wide');
    const args = (): Args => ({ buffers: { x: xs.slice(), y: new Float32Array(16) }, scalars: {} });
    const want = args(), got = args();
    runKernel(k, want);
    for (const checks of [true, false]) {
      runNativeKernel(await prepareKernels([k], checks), k, got);
      expect(bits(got.buffers['y']!)).toEqual(bits(want.buffers['y']!));
    }
    // x has 20 elements: workgroup 1 reads x[8 + 5 + v], out of range from v = 7 (index 20).
    const bad = mk(5);
    expect(() => runKernel(bad, args())).toThrow(/index 20/);
    const p = await prepareKernels([bad], true);
    expect(() => runNativeKernel(p, bad, args())).toThrow(/^out-of-bounds load in kernel lanes: buffer 'x' index 20, length 20 \(workgroup \(1,0,0\), uniform code\)$/);
  });
});

describe('delta sums of reshapes (targets/native/delta.ts)', () => {
  // acc = 0; for e in [0, 2C): acc += (pymod(e, C) == u ? (pyfloordiv(e, C) == w ? x[e] * 2 : 0) : 0),
  // with Python's floor fix-ups as autodiff prints them and a load-free declaration first.
  const C = 4;
  const e = K.v('e');
  const pymod = K.select(K.and(K.bin('!=', K.bin('%', e, K.i32(C)), K.i32(0)), K.bin('!=', K.lt(K.bin('%', e, K.i32(C)), K.i32(0)), K.lt(K.i32(C), K.i32(0)))), K.add(K.bin('%', e, K.i32(C)), K.i32(C)), K.bin('%', e, K.i32(C)));
  const pydiv = K.select(K.and(K.bin('!=', K.bin('%', e, K.i32(C)), K.i32(0)), K.bin('!=', K.lt(K.bin('%', e, K.i32(C)), K.i32(0)), K.lt(K.i32(C), K.i32(0)))), K.sub(K.div(e, K.i32(C)), K.i32(1)), K.div(e, K.i32(C)));
  const dk = (): Kernel => ({
    name: 'reshape', workgroup: [16, 1, 1], grid: [K.i32(1), K.i32(1), K.i32(1)], scalars: [{ name: 'n', type: 'i32' }], shared: [],
    buffers: [{ name: 'x', type: 'f32', access: 'read' }, { name: 'uw', type: 'i32', access: 'read' }, { name: 'out', type: 'f32', access: 'read_write' }],
    body: [
      K.decl('u', 'i32', K.load('uw', K.mul(K.tid(), K.i32(2)), 'i32')),
      K.decl('w', 'i32', K.load('uw', K.add(K.mul(K.tid(), K.i32(2)), K.i32(1)), 'i32')),
      K.decl('acc', 'f32', K.f32(0)),
      K.loop('e', K.i32(0), K.v('n'), [
        K.decl('q', 'i32', pydiv),
        K.assign('acc', K.add(K.v('acc', 'f32'), K.select(K.bin('==', pymod, K.v('u')), K.select(K.bin('==', K.v('q'), K.v('w')), K.mul(K.load('x', e), K.f32(2)), K.f32(0)), K.f32(0)))),
      ]),
      K.store('out', K.tid(), K.v('acc', 'f32')),
    ],
  });
  test('the loop goes; the result is the loop\'s bit for bit (misses, out-of-range u, huge w, -0, NaN)', async () => {
    const k = dk();
    const r = rewriteDeltaSums(k);
    expect(JSON.stringify(r.body)).not.toContain('"k":"for"');
    const x = Float32Array.from([-0, 0, NaN, Infinity, -Infinity, 1.5, -0, -2.25, 0, 3, -0, 7]);
    // (u, w) per thread: hits, u >= C, u < 0, w past the loop, w such that w * C + u wraps onto a valid e.
    const uw = Int32Array.from([0, 0, 1, 0, 3, 1, 2, 2, 0, 1, 4, 0, -1, 1, 3, 5, 2, 1 << 30, 1, -(1 << 30), 0, 2, 3, 2, 1, 1, 2, 0, 0, 2, 3, 0]);
    for (const n of [0, 1, 5, 8, 12]) {
      const args = (): Args => ({ buffers: { x: x.slice(), uw: uw.slice(), out: new Float32Array(16) }, scalars: { n } });
      const a = args(), b = args();
      runKernel(k, a);
      runKernel(r, b);
      expect(bits(b.buffers['out']!), `n = ${n}`).toEqual(bits(a.buffers['out']!));
      if (!why) {
        const c = args();
        runNativeKernel(await prepareKernels([k]), k, c);
        expect(bits(c.buffers['out']!), `native n = ${n}`).toEqual(bits(a.buffers['out']!));
      }
    }
  });
  test('a loop from a start that may be negative keeps its floor fix-ups and is left alone', () => {
    const k = dk();
    const body = k.body.map((s) => (s.k === 'for' ? { ...s, start: K.v('n') } : s));
    expect(rewriteDeltaSums({ ...k, body })).toEqual({ ...k, body });
  });
});

