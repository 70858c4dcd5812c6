// The CPU executor is the executable meaning of Kernel IR: exact f32/i32 semantics, barriers,
// poisoned shared memory, bounds checks; and the kernel-IR printer.
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import {
  add, and, assign, barrier, bin, bool, cast, comment, decl, div, f32, i32, iff, lt, load, loop, mul, select, store,
  sub, tid, un, v, wg,
  type Kernel, type KBinOp, type KBuffer, type KExpr, type KShared, type KStmt, type KUnOp,
} from '../compiler/kir.js';
import { kernelToString } from '../compiler/kir-print.js';
import { erf } from '../dsl/math.js';
import { compileKernel, runKernel } from '../targets/cpu/executor.js';

const fr = Math.fround;
const one: [KExpr, KExpr, KExpr] = [i32(1), i32(1), i32(1)];

function kernel(name: string, body: KStmt[], o: Partial<Kernel> = {}): Kernel {
  return { name, workgroup: [1, 1, 1], grid: one, buffers: [], scalars: [], shared: [], body, ...o };
}
const rd = (name: string, type: KBuffer['type'] = 'f32'): KBuffer => ({ name, type, access: 'read' });
const rw = (name: string, type: KBuffer['type'] = 'f32'): KBuffer => ({ name, type, access: 'read_write' });
const sh = (name: string, size: number, type: KShared['type'] = 'f32'): KShared => ({ name, type, size });
const x = (i: number): KExpr => load('x', i32(i));
const xi = (i: number): KExpr => load('x', i32(i), 'i32');

/** Runs `exprs` on one thread, out[j] = exprs[j], with input buffer x. */
function evalF32(input: number[], exprs: KExpr[]): Float32Array {
  const out = new Float32Array(exprs.length);
  const k = kernel('f', exprs.map((e, j) => store('out', i32(j), e)), { buffers: [rd('x'), rw('out')] });
  runKernel(k, { buffers: { x: Float32Array.from(input), out }, scalars: {} });
  return out;
}
function evalI32(input: number[], exprs: KExpr[]): number[] {
  const out = new Int32Array(exprs.length);
  const k = kernel('i', exprs.map((e, j) => store('out', i32(j), e)), { buffers: [rd('x', 'i32'), rw('out', 'i32')] });
  runKernel(k, { buffers: { x: Int32Array.from(input), out }, scalars: {} });
  return [...out];
}

describe('f32 semantics', () => {
  test('every operation rounds to float32', () => {
    const a = 1 + 2 ** -12;
    const out = evalF32([0.1, 0.2, 1, 1e-8, 3.3, a], [
      add(x(0), x(1)),
      sub(add(x(2), x(3)), x(2)), // 1 + 1e-8 rounds to 1 in f32: the difference is exactly 0
      mul(mul(x(4), x(4)), x(4)),
      add(f32(0.1), f32(0.2)),
      sub(mul(x(5), x(5)), f32(1)), // no fused multiply-add
      div(f32(1), f32(3)),
    ]);
    expect(out[0]).toBe(fr(fr(0.1) + fr(0.2)));
    expect(out[1]).toBe(0);
    const c = fr(3.3);
    expect(out[2]).toBe(fr(fr(c * c) * c));
    expect(out[2]).not.toBe(fr(c * c * c));
    expect(out[3]).toBe(fr(fr(0.1) + fr(0.2)));
    expect(out[4]).toBe(fr(fr(a * a) - 1));
    expect(out[4]).not.toBe(fr(a * a - 1));
    expect(out[5]).toBe(fr(1 / 3));
  });

  test('math functions are the float64 function rounded once', () => {
    const ops: [KUnOp, (t: number) => number][] = [
      ['exp', Math.exp], ['exp2', (t) => 2 ** t], ['log', Math.log], ['log2', Math.log2], ['log1p', Math.log1p],
      ['sqrt', Math.sqrt], ['rsqrt', (t) => 1 / Math.sqrt(t)], ['sin', Math.sin], ['cos', Math.cos], ['tanh', Math.tanh],
      ['erf', erf], ['abs', Math.abs], ['floor', Math.floor], ['ceil', Math.ceil], ['neg', (t) => -t],
    ];
    for (const t of [0.7, 2.3, 1e-5, 13.1]) {
      const out = evalF32([t], ops.map(([op]) => un(op, x(0))));
      ops.forEach(([op, f], j) => expect([op, out[j]]).toEqual([op, fr(f(fr(t)))]));
    }
    const bins: [KBinOp, (p: number, q: number) => number][] = [
      ['pow', Math.pow], ['min', Math.min], ['max', Math.max], ['%', (p, q) => p % q],
    ];
    const out = evalF32([2.7, -1.3], bins.map(([op]) => bin(op, x(0), x(1))));
    bins.forEach(([op, f], j) => expect([op, out[j]]).toEqual([op, fr(f(fr(2.7), fr(-1.3)))]));
    expect([...evalF32([NaN, 1], [bin('min', x(0), x(1)), bin('max', x(1), x(0))])]).toEqual([NaN, NaN]);
  });

  test('comparisons, select and casts', () => {
    const out = evalF32([2.5, -2.5, NaN, 1], [
      select(lt(x(0), x(1)), x(0), x(1)),
      select(bin('==', x(2), x(2)), f32(1), f32(0)), // NaN != NaN
      cast(bin('>=', x(0), x(1)), 'f32'),
      cast(i32(16777217), 'f32'),
      select(bin('&&', cast(x(3), 'bool'), un('not', bin('!=', x(0), x(0)))), f32(7), f32(8)),
    ]);
    expect([...out]).toEqual([-2.5, 0, 1, 16777216, 7]);
    expect(evalI32([], [
      cast(f32(2.7), 'i32'), cast(f32(-2.7), 'i32'), cast(f32(NaN), 'i32'), cast(f32(1e10), 'i32'),
      cast(f32(-1e10), 'i32'), cast(f32(-0.5), 'i32'), cast(bool(true), 'i32'), cast(cast(i32(-3), 'bool'), 'i32'),
    ])).toEqual([2, -2, 0, 2147483647, -2147483648, 0, 1, 1]);
  });
});

describe('i32 semantics', () => {
  const IN = [2147483647, 1, 65536, -2147483648, 7, -7, 2, -2, 0, -1];
  const [MAX, ONE, B16, MIN, P7, M7, P2, M2, ZERO, M1] = IN.map((_, i) => xi(i)) as KExpr[] as [KExpr, KExpr, KExpr, KExpr, KExpr, KExpr, KExpr, KExpr, KExpr, KExpr];

  test('+ - * wrap modulo 2^32', () => {
    expect(evalI32(IN, [
      add(MAX, ONE), sub(MIN, ONE), mul(B16, B16), mul(MAX, i32(3)), un('neg', MIN), un('abs', MIN), mul(B16, add(B16, ONE)),
    ])).toEqual([-2147483648, 2147483647, 0, 2147483645, -2147483648, -2147483648, 65536]);
  });

  test("'/' truncates toward zero, '%' takes the dividend's sign, division by zero gives 0", () => {
    const md = (a: KExpr, b: KExpr): KExpr => bin('%', a, b);
    expect(evalI32(IN, [
      div(P7, P2), div(M7, P2), div(P7, M2), div(M7, M2), md(P7, P2), md(M7, P2), md(P7, M2), md(M7, M2),
      div(P7, ZERO), md(P7, ZERO), div(MIN, M1), md(MIN, M1),
      div(M7, i32(2)), md(M7, i32(2)), div(M7, i32(0)), md(M7, i32(0)), // constant divisors take another path
      bin('min', M7, P2), bin('max', M7, P2),
    ])).toEqual([3, -3, -3, 3, 1, -1, 1, -1, 0, 0, -2147483648, 0, -3, -1, 0, 0, -7, 2]);
  });
});

describe('grids, workgroups and loops', () => {
  test('3-D grid of 3-D workgroups: every cell is written once by the right thread', () => {
    const W = 11, H = 7, D = 2;
    const gx = add(mul(wg('x'), i32(4)), tid('x')), gy = add(mul(wg('y'), i32(3)), tid('y')), gz = add(mul(wg('z'), i32(2)), tid('z'));
    const k = kernel('grid3', [
      decl('gx', 'i32', gx), decl('gy', 'i32', gy), decl('gz', 'i32', gz),
      iff(and(and(lt(v('gx'), v('w')), lt(v('gy'), v('h'))), lt(v('gz'), v('d'))), [
        decl('at', 'i32', add(mul(add(mul(v('gz'), v('h')), v('gy')), v('w')), v('gx'))),
        store('out', v('at'), add(load('out', v('at'), 'i32'), add(add(v('gx'), mul(v('gy'), i32(100))), mul(v('gz'), i32(10000))))),
      ]),
    ], {
      workgroup: [4, 3, 2],
      grid: [div(add(v('w'), i32(3)), i32(4)), div(add(v('h'), i32(2)), i32(3)), div(add(v('d'), i32(1)), i32(2))],
      buffers: [rw('out', 'i32')], scalars: [{ name: 'w', type: 'i32' }, { name: 'h', type: 'i32' }, { name: 'd', type: 'i32' }],
    });
    const out = new Int32Array(W * H * D);
    runKernel(k, { buffers: { out }, scalars: { w: W, h: H, d: D } });
    for (let z = 0; z < D; z++) for (let y = 0; y < H; y++) for (let i = 0; i < W; i++) expect(out[(z * H + y) * W + i]).toBe(i + 100 * y + 10000 * z);
    // A zero-sized grid runs nothing; a negative one is an error.
    runKernel(k, { buffers: { out: new Int32Array(0) }, scalars: { w: 0, h: 5, d: 1 } });
    expect(() => runKernel(k, { buffers: { out }, scalars: { w: -9, h: 5, d: 1 } })).toThrow(/negative grid/);
  });

  test('loops with negative steps and empty ranges', () => {
    const k = kernel('rev', [
      decl('j', 'i32', i32(0)),
      loop('i', sub(v('n'), i32(1)), i32(-1), [store('out', v('j'), v('i')), assign('j', add(v('j'), i32(1)))], -1),
      loop('i', i32(10), i32(0), [store('out', v('j'), v('i')), assign('j', add(v('j'), i32(1)))], -3),
      loop('i', i32(5), i32(5), [store('out', i32(0), i32(99))]),
      loop('i', i32(0), i32(3), [store('out', v('j'), v('i')), assign('j', add(v('j'), i32(1)))], 2),
    ], { buffers: [rw('out', 'i32')], scalars: [{ name: 'n', type: 'i32' }] });
    const out = new Int32Array(11);
    runKernel(k, { buffers: { out }, scalars: { n: 5 } });
    expect([...out]).toEqual([4, 3, 2, 1, 0, 10, 7, 4, 1, 0, 2]);
  });

  test('local arrays are per thread, also across barriers', () => {
    for (const withBarrier of [false, true]) {
      const k = kernel('locals', [
        { k: 'local', name: 'a', type: 'f32', size: 8 },
        loop('j', i32(0), i32(8), [store('a', v('j'), cast(add(mul(tid(), i32(10)), v('j')), 'f32'))]),
        ...(withBarrier ? [barrier()] : []),
        loop('j', i32(0), i32(8), [store('out', add(mul(tid(), i32(8)), v('j')), load('a', sub(i32(7), v('j'))))]),
      ], { workgroup: [16, 1, 1], buffers: [rw('out')] });
      expect(compileKernel(k).usesBarriers).toBe(withBarrier);
      const out = new Float32Array(128);
      runKernel(k, { buffers: { out }, scalars: {} });
      for (let t = 0; t < 16; t++) for (let j = 0; j < 8; j++) expect(out[t * 8 + j]).toBe(t * 10 + 7 - j);
    }
  });

  test('decls are block-scoped and may shadow; initialisers see the outer name', () => {
    const k = kernel('scope', [
      decl('a', 'i32', i32(1)),
      iff(bool(true), [decl('a', 'i32', add(v('a'), i32(10))), store('out', i32(0), v('a'))]),
      store('out', i32(1), v('a')),
    ], { buffers: [rw('out', 'i32')] });
    const out = new Int32Array(2);
    runKernel(k, { buffers: { out }, scalars: {} });
    expect([...out]).toEqual([11, 1]);
  });
});

describe('shared memory and barriers', () => {
  /** Sums blocks of 64 with a tree reduction: a barrier inside a loop. */
  const reduce = kernel('reduce64', [
    decl('i', 'i32', add(mul(wg(), i32(64)), tid())),
    iff(lt(v('i'), v('n')), [store('s', tid(), load('x', v('i')))], [store('s', tid(), f32(0))]),
    barrier(),
    decl('stride', 'i32', i32(32)),
    loop('l', i32(0), i32(6), [
      iff(lt(tid(), v('stride')), [store('s', tid(), add(load('s', tid()), load('s', add(tid(), v('stride')))))]),
      barrier(),
      assign('stride', div(v('stride'), i32(2))),
    ]),
    iff(bin('==', tid(), i32(0)), [store('out', wg(), load('s', i32(0)))]),
  ], {
    workgroup: [64, 1, 1], grid: [div(add(v('n'), i32(63)), i32(64)), i32(1), i32(1)],
    buffers: [rd('x'), rw('out')], scalars: [{ name: 'n', type: 'i32' }], shared: [sh('s', 64)],
  });

  test('tree reduction in shared memory matches the same tree in f32', () => {
    const n = 200;
    const xs = Float32Array.from({ length: n }, (_, i) => Math.sin(i * 1.7) * 3);
    const out = new Float32Array(4);
    runKernel(reduce, { buffers: { x: xs, out }, scalars: { n } });
    for (let g = 0; g < 4; g++) {
      const s = Array.from({ length: 64 }, (_, t) => (g * 64 + t < n ? xs[g * 64 + t]! : 0));
      for (let stride = 32; stride > 0; stride >>= 1) for (let t = 0; t < stride; t++) s[t] = fr(s[t]! + s[t + stride]!);
      expect(out[g]).toBe(s[0]);
    }
  });

  test('threads that diverge at a barrier are an error', () => {
    const half = kernel('half', [iff(lt(tid(), i32(2)), [barrier()])], { workgroup: [4, 1, 1] });
    expect(() => runKernel(half, { buffers: {}, scalars: {} }))
      .toThrow(/^barrier divergence in kernel half: thread \(3,0,0\) finished while thread \(0,0,0\) waits at a barrier/);
    const split = kernel('split', [iff(lt(tid('y'), i32(1)), [barrier()], [barrier()])], { workgroup: [1, 2, 1] });
    expect(() => runKernel(split, { buffers: {}, scalars: {} }))
      .toThrow('barrier divergence in kernel split: thread (0,1,0) waits at barrier #1 while thread (0,0,0) waits at barrier #0');
    const trip = kernel('trip', [loop('j', i32(0), tid(), [barrier()])], { workgroup: [3, 1, 1] });
    expect(() => runKernel(trip, { buffers: {}, scalars: {} })).toThrow(/barrier divergence in kernel trip: thread \(0,0,0\) finished/);
  });

  test('uninitialised shared and local memory reads as poison', () => {
    const k = kernel('uninit', [
      store('out', tid(), load('s', tid())),
      store('outi', tid(), load('si', tid(), 'i32')),
      { k: 'local', name: 'l', type: 'f32', size: 2 },
      store('out', add(tid(), i32(2)), load('l', i32(1))),
    ], { workgroup: [2, 1, 1], buffers: [rw('out'), rw('outi', 'i32')], shared: [sh('s', 2), sh('si', 2, 'i32')] });
    const out = new Float32Array(4), outi = new Int32Array(2);
    runKernel(k, { buffers: { out, outi }, scalars: {} });
    expect([...out]).toEqual([NaN, NaN, NaN, NaN]);
    expect([...outi]).toEqual([-2147483648, -2147483648]);
  });

  test('shared memory is re-poisoned for every workgroup', () => {
    const k = kernel('perwg', [
      iff(bin('==', wg(), i32(0)), [store('s', i32(0), f32(5))]),
      store('out', wg(), load('s', i32(0))),
    ], { grid: [i32(2), i32(1), i32(1)], buffers: [rw('out')], shared: [sh('s', 1)] });
    const out = new Float32Array(2);
    runKernel(k, { buffers: { out }, scalars: {} });
    expect([...out]).toEqual([5, NaN]);
  });
});

describe('bounds checks and IR errors', () => {
  test('out-of-bounds accesses name the kernel, array, index and length', () => {
    const ld = kernel('oobload', [store('out', tid(), load('x', tid()))], { workgroup: [8, 1, 1], buffers: [rd('x'), rw('out')] });
    expect(() => runKernel(ld, { buffers: { x: new Float32Array(4), out: new Float32Array(8) }, scalars: {} }))
      .toThrow("out-of-bounds load in kernel oobload: buffer 'x' index 4, length 4 (workgroup (0,0,0), thread (4,0,0))");
    const st = kernel('oobstore', [store('out', sub(tid(), i32(1)), f32(1))], { workgroup: [2, 1, 1], buffers: [rw('out')] });
    expect(() => runKernel(st, { buffers: { out: new Float32Array(8) }, scalars: {} }))
      .toThrow("out-of-bounds store in kernel oobstore: buffer 'out' index -1, length 8");
    const shd = kernel('oobshared', [store('s', add(tid(), i32(3)), f32(1)), barrier()], { workgroup: [2, 1, 1], shared: [sh('s', 4)] });
    expect(() => runKernel(shd, { buffers: {}, scalars: {} })).toThrow("shared 's' index 4, length 4");
    const loc = kernel('ooblocal', [{ k: 'local', name: 'a', type: 'i32', size: 3 }, store('a', i32(0), i32(0)), store('a', load('a', i32(0), 'i32'), load('a', i32(3), 'i32'))]);
    expect(() => runKernel(loc, { buffers: {}, scalars: {} })).toThrow("out-of-bounds load in kernel ooblocal: local 'a' index 3, length 3");
  });

  test('ill-formed IR and bad arguments are rejected', () => {
    const compile = (body: KStmt[], o: Partial<Kernel> = {}) => () => compileKernel(kernel('bad', body, { buffers: [rd('x'), rw('y', 'i32')], ...o }));
    expect(compile([store('x', i32(0), f32(1))])).toThrow("kernel IR error in kernel bad: store to read-only buffer 'x'");
    expect(compile([store('y', i32(0), f32(1))])).toThrow('store of f32 into i32 array');
    expect(compile([store('y', f32(0), i32(1))])).toThrow('array index has type f32');
    expect(compile([store('y', i32(0), v('nope'))])).toThrow("unknown variable 'nope'");
    expect(compile([decl('a', 'i32', i32(0)), decl('a', 'i32', i32(1))])).toThrow("'a' declared twice");
    expect(compile([assign('n', i32(0))], { scalars: [{ name: 'n', type: 'i32' }] })).toThrow("assignment to scalar parameter 'n'");
    expect(compile([], { grid: [tid(), i32(1), i32(1)] })).toThrow('grid uses builtin tid.x');
    expect(compile([store('y', i32(0), { k: 'bin', op: '+', a: i32(1), b: f32(1), type: 'i32' })])).toThrow("'+' on i32 and f32");

    const k = kernel('args', [], { buffers: [rd('x')], scalars: [{ name: 'n', type: 'i32' }] });
    expect(() => runKernel(k, { buffers: { x: new Int32Array(1) }, scalars: { n: 1 } })).toThrow("buffer 'x' must be a Float32Array, got Int32Array");
    expect(() => runKernel(k, { buffers: {}, scalars: { n: 1 } })).toThrow("buffer 'x' must be a Float32Array, got nothing");
    expect(() => runKernel(k, { buffers: { x: new Float32Array(1) }, scalars: { n: 1.5 } })).toThrow("scalar 'n' = 1.5 is not an i32");
    expect(compileKernel(k)).toBe(compileKernel(k)); // cached
  });
});

// ---- matmul: nested loops with barriers in a loop body ---------------------------------

const dims = [{ name: 'm', type: 'i32' as const }, { name: 'n', type: 'i32' as const }, { name: 'k', type: 'i32' as const }];

/** C[m,n] = A[m,k] B[k,n] with T x T shared tiles; padding adds exact zeros. */
function tiledMatmul(T: number): Kernel {
  const ty = tid('y'), tx = tid('x'), Ti = i32(T);
  return kernel(`matmul_tiled${T}`, [
    decl('row', 'i32', add(mul(wg('y'), Ti), ty)),
    decl('col', 'i32', add(mul(wg('x'), Ti), tx)),
    decl('acc', 'f32', f32(0)),
    loop('t', i32(0), div(add(v('k'), i32(T - 1)), Ti), [
      comment('stage one tile of A and B'),
      decl('ka', 'i32', add(mul(v('t'), Ti), tx)),
      decl('kb', 'i32', add(mul(v('t'), Ti), ty)),
      iff(and(lt(v('row'), v('m')), lt(v('ka'), v('k'))),
        [store('As', add(mul(ty, Ti), tx), load('A', add(mul(v('row'), v('k')), v('ka'))))],
        [store('As', add(mul(ty, Ti), tx), f32(0))]),
      iff(and(lt(v('kb'), v('k')), lt(v('col'), v('n'))),
        [store('Bs', add(mul(ty, Ti), tx), load('B', add(mul(v('kb'), v('n')), v('col'))))],
        [store('Bs', add(mul(ty, Ti), tx), f32(0))]),
      barrier(),
      loop('kk', i32(0), Ti, [
        assign('acc', add(v('acc', 'f32'), mul(load('As', add(mul(ty, Ti), v('kk'))), load('Bs', add(mul(v('kk'), Ti), tx))))),
      ]),
      barrier(),
    ]),
    iff(and(lt(v('row'), v('m')), lt(v('col'), v('n'))), [store('C', add(mul(v('row'), v('n')), v('col')), v('acc', 'f32'))]),
  ], {
    workgroup: [T, T, 1],
    grid: [div(add(v('n'), i32(T - 1)), Ti), div(add(v('m'), i32(T - 1)), Ti), i32(1)],
    buffers: [rd('A'), rd('B'), rw('C')], scalars: dims, shared: [sh('As', T * T), sh('Bs', T * T)],
  });
}

/** One thread per output, no barriers (the plain, non-generator path). */
const simpleMatmul = kernel('matmul_simple', [
  decl('row', 'i32', wg('y')), decl('col', 'i32', add(mul(wg('x'), i32(16)), tid('x'))),
  iff(lt(v('col'), v('n')), [
    decl('acc', 'f32', f32(0)),
    loop('q', i32(0), v('k'), [
      assign('acc', add(v('acc', 'f32'), mul(load('A', add(mul(v('row'), v('k')), v('q'))), load('B', add(mul(v('q'), v('n')), v('col')))))),
    ]),
    store('C', add(mul(v('row'), v('n')), v('col')), v('acc', 'f32')),
  ]),
], {
  workgroup: [16, 1, 1], grid: [div(add(v('n'), i32(15)), i32(16)), v('m'), i32(1)],
  buffers: [rd('A'), rd('B'), rw('C')], scalars: dims,
});

function randomMatrix(len: number, seed: number): Float32Array {
  let s = seed >>> 0 || 1;
  return Float32Array.from({ length: len }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  });
}

function runMatmul(k: Kernel, m: number, n: number, kk: number, A: Float32Array, B: Float32Array): Float32Array {
  const C = new Float32Array(m * n).fill(-999);
  runKernel(k, { buffers: { A, B, C }, scalars: { m, n, k: kk } });
  return C;
}

/** The plain triple loop in f32, accumulating in the kernel's order. */
function f32Matmul(m: number, n: number, k: number, A: Float32Array, B: Float32Array): Float32Array {
  const C = new Float32Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) {
    let acc = 0;
    for (let q = 0; q < k; q++) acc = fr(acc + fr(A[i * k + q]! * B[q * n + j]!));
    C[i * n + j] = acc;
  }
  return C;
}

describe('tiled matmul', () => {
  test('37x29x41 with 8x8 tiles is within f32 error of a float64 matmul', () => {
    const m = 37, n = 29, k = 41;
    const A = randomMatrix(m * k, 1), B = randomMatrix(k * n, 2);
    const C = runMatmul(tiledMatmul(8), m, n, k, A, B);
    for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) {
      let ref = 0, mag = 0;
      for (let q = 0; q < k; q++) { ref += A[i * k + q]! * B[q * n + j]!; mag += Math.abs(A[i * k + q]! * B[q * n + j]!); }
      // Recursive summation: |error| <= ~k u sum|a b| with u = 2^-24 (one rounding per * and +).
      expect(Math.abs(C[i * n + j]! - ref)).toBeLessThanOrEqual(2 * k * 2 ** -24 * mag);
    }
    expect(C).toEqual(f32Matmul(m, n, k, A, B));
    expect(runMatmul(simpleMatmul, m, n, k, A, B)).toEqual(C);
  });

  test('property: random sizes and tiles match the plain f32 triple loop exactly', () => {
    const kernels = new Map<number, Kernel>();
    fc.assert(fc.property(
      fc.integer({ min: 1, max: 24 }), fc.integer({ min: 1, max: 24 }), fc.integer({ min: 1, max: 24 }),
      fc.constantFrom(1, 2, 3, 4, 8), fc.integer(),
      (m, n, k, T, seed) => {
        if (!kernels.has(T)) kernels.set(T, tiledMatmul(T));
        const A = randomMatrix(m * k, seed), B = randomMatrix(k * n, seed ^ 0x5bd1e995);
        const want = f32Matmul(m, n, k, A, B);
        expect(runMatmul(kernels.get(T)!, m, n, k, A, B)).toEqual(want);
        expect(runMatmul(simpleMatmul, m, n, k, A, B)).toEqual(want);
      }), { numRuns: 60 });
  });
});

describe('kernelToString', () => {
  test('prints a stable C-like dump with minimal parentheses', () => {
    const k = kernel('demo', [
      comment('a demo'),
      decl('i', 'i32', add(mul(wg(), i32(64)), tid())),
      { k: 'local', name: 'tmp', type: 'f32', size: 4 },
      iff(lt(v('i'), v('n')), [
        decl('a', 'f32', mul(add(load('x', v('i')), f32(0.1)), sub(f32(1), un('neg', load('x', v('i')))))),
        assign('a', sub(v('a', 'f32'), sub(f32(2), v('s', 'f32')))),
        store('s0', tid(), select(bin('>', v('a', 'f32'), f32(0)), un('exp', v('a', 'f32')), f32(-1.5))),
        barrier(),
      ], [iff(bin('==', bin('%', v('i'), i32(2)), i32(0)), [store('y', v('i'), cast(v('i'), 'f32'))], [store('y', v('i'), bin('pow', f32(2), f32(1e-7)))])]),
      loop('j', sub(v('n'), i32(1)), i32(-1), [store('y', v('j'), load('s0', bin('min', v('j'), i32(63))))], -1),
    ], {
      workgroup: [64, 1, 1], grid: [div(add(v('n'), i32(63)), i32(64)), i32(1), i32(1)],
      buffers: [rd('x'), rw('y')], scalars: [{ name: 'n', type: 'i32' }, { name: 's', type: 'f32' }], shared: [sh('s0', 64)],
    });
    expect(kernelToString(k)).toMatchInlineSnapshot(`
      "kernel demo workgroup(64, 1, 1) grid((n + 63) / 64, 1, 1)
        buffer f32 x[] read
        buffer f32 y[] read_write
        scalar i32 n
        scalar f32 s
        shared f32 s0[64]
      {
        // a demo
        i32 i = wg.x * 64 + tid.x;
        local f32 tmp[4];
        if (i < n) {
          f32 a = (x[i] + 0.1) * (1.0 - -x[i]);
          a = a - (2.0 - s);
          s0[tid.x] = a > 0.0 ? exp(a) : -1.5;
          barrier();
        } else if (i % 2 == 0) {
          y[i] = f32(i);
        } else {
          y[i] = pow(2.0, 1e-7);
        }
        for (i32 j = n - 1; j > -1; j -= 1) {
          y[j] = s0[min(j, 63)];
        }
      }
      "
    `);
  });
});
