// The native CPU target (targets/native, runtime/native): the kernel IR verifier, the barrier
// split, the C printer's semantics on edge cases (bit for bit against the CPU executor, the
// definition of kernel IR), workgroups over the thread pool, out-of-bounds errors and the
// no-compiler message. The schedules on native are in tests/native-schedules.test.ts.
//
// Without a C compiler or the addon (which is built on first use when `npm ci` did not build it)
// the native runs are skipped with the reason printed, unless REQUIRE_NATIVE=1.
import { describe, expect, test } from 'vitest';
import * as K from '../compiler/kir.js';
import type { Kernel, KExpr, KStmt } from '../compiler/kir.js';
import { verifyKernel } from '../compiler/kir-verify.js';
import { runKernel } from '../targets/cpu/executor.js';
import { splitBarriers } from '../targets/native/barrier-split.js';
import { rewriteDeltaSums } from '../targets/native/delta.js';
import { compileNative, findCompiler, NO_COMPILER } from '../targets/native/compile.js';
import { printNative } from '../targets/native/printer.js';
import { toBF16Bits, toF16Bits } from '../targets/half.js';
import { loadNativeAddon } from '../runtime/native/addon.js';
import { prepareKernels, runNativeKernel } from '../runtime/native/runner.js';
import { runPlanCpu } from '../runtime/plan-runner.js';
import { FORMS, makeSchedule } from '../compiler/schedule.js';
import { compileFunction } from '../compiler/pipeline.js';
import type { Value } from '../dsl/reference/interpreter.js';
import { loadFn, plan, prng, tensor, uniform } from './helpers/harness.js';

const cc = findCompiler();
const addon = cc ? loadNativeAddon() : { error: NO_COMPILER };
const why = !cc ? NO_COMPILER : 'error' in addon ? addon.error : undefined;
if (why) console.log(`[native] native runs skipped: ${why}`);
else console.log(`[native] ${cc!.version}; addon ${'file' in addon ? addon.file : ''} with ${'addon' in addon ? addon.addon.threads() : 0} threads`);

test('a C compiler and the native addon are available (required when REQUIRE_NATIVE=1)', (ctx) => {
  if (why && process.env['REQUIRE_NATIVE'] !== '1') ctx.skip();
  expect(why).toBeUndefined();
});

type Arr = Float32Array | Int32Array | Uint16Array;
type Args = { buffers: Record<string, Arr>; scalars: Record<string, number> };

const clone = (a: Args): Args => ({
  buffers: Object.fromEntries(Object.entries(a.buffers).map(([k, v]) => [k, v.slice()])),
  scalars: { ...a.scalars },
});

/** Bits of every element (NaN as one value: the executor and C may differ in NaN sign and payload). */
function bits(a: Arr): number[] {
  if (a instanceof Float32Array) {
    const u = new Uint32Array(a.buffer, a.byteOffset, a.length);
    return Array.from(a, (x, i) => (x !== x ? 0x7fc00000 : u[i]!));
  }
  return Array.from(a);
}

async function runBoth(k: Kernel, args: Args): Promise<{ cpu: Args; native: Args }> {
  const cpu = clone(args), native = clone(args);
  runKernel(k, cpu);
  const p = await prepareKernels([k]);
  runNativeKernel(p, k, native);
  return { cpu, native };
}

function expectSameBits(cpu: Args, native: Args): void {
  for (const name of Object.keys(cpu.buffers)) expect(bits(native.buffers[name]!), name).toEqual(bits(cpu.buffers[name]!));
}

const kernel = (name: string, workgroup: [number, number, number], grid: [number, number, number], buffers: Kernel['buffers'], body: KStmt[], extra: Partial<Kernel> = {}): Kernel => ({
  name, workgroup, grid: grid.map((g) => K.i32(g)) as Kernel['grid'], buffers, scalars: [], shared: [], body, ...extra,
});
const rd = (name: string, type: K.KType = 'f32'): K.KBuffer => ({ name, type, access: 'read' });
const rw = (name: string, type: K.KType = 'f32', storage?: K.KHalf): K.KBuffer => ({ name, type, access: 'read_write', ...(storage ? { storage } : {}) });

// ---- the verifier ----------------------------------------------------------------------

describe('kernel IR verifier (compiler/kir-verify.ts)', () => {
  const base = (body: KStmt[], extra: Partial<Kernel> = {}): Kernel => kernel('vk', [4, 1, 1], [1, 1, 1], [rd('x'), rw('y')], body, extra);
  const cases: [string, Kernel, RegExp][] = [
    ['an unknown variable', base([K.store('y', K.tid(), K.v('nope', 'f32'))]), /unknown variable 'nope'/],
    ['an unknown array', base([K.store('z', K.tid(), K.f32(1))]), /unknown array 'z'/],
    ['a type mismatch', base([K.decl('a', 'f32', K.i32(1))]), /'a' is f32 but initialised with i32/],
    ['a mislabelled node', base([K.store('y', K.tid(), { k: 'bin', op: '+', a: K.f32(1), b: K.f32(2), type: 'i32' })]), /'\+' has type f32 but is marked i32/],
    ['a store to a read-only buffer', base([K.store('x', K.tid(), K.f32(1))]), /store to read-only buffer 'x'/],
    ['an assignment to a scalar parameter', base([K.assign('n', K.i32(1))], { scalars: [{ name: 'n', type: 'i32' }] }), /assignment to scalar parameter 'n'/],
    ['a decl twice in one scope', base([K.decl('a', 'i32', K.i32(1)), K.decl('a', 'i32', K.i32(2))]), /'a' declared twice in one scope/],
    ['an f32 index', base([K.store('y', K.f32(0), K.f32(1))]), /array index has type f32/],
    ['a barrier under a thread-dependent if', base([K.iff(K.lt(K.tid(), K.i32(2)), [K.barrier()])]), /barrier inside an if whose condition differs between threads/],
    ['a barrier in a loop with thread-dependent bounds', base([K.loop('i', K.i32(0), K.tid(), [K.barrier()])]), /barrier inside loop 'i' whose bounds differ between threads/],
    ['a barrier under an if on a loaded per-thread value', base([K.decl('a', 'f32', K.load('x', K.tid())), K.iff(K.lt(K.v('a', 'f32'), K.f32(0)), [K.barrier()])]), /barrier inside an if/],
    ['a grid reading a thread id', { ...base([]), grid: [K.tid(), K.i32(1), K.i32(1)] }, /grid uses builtin tid.x/],
    ['a zero step', base([K.loop('i', K.i32(0), K.i32(4), [], 0)]), /loop 'i' has step 0/],
    ['a bad shared size', base([], { shared: [{ name: 's', type: 'f32', size: 0 }] }), /shared array 's' has size 0/],
    ['half storage on an i32 buffer', base([], { buffers: [rd('x'), rw('y', 'i32', 'f16')] }), /buffer 'y' of type i32 has f16 storage/],
  ];
  test.each(cases)('rejects %s', (_what, k, re) => {
    expect(() => verifyKernel(k)).toThrow(re);
    expect(() => verifyKernel(k)).toThrow(/^kernel IR error in kernel vk: /);
  });
  test('shared arrays over a target limit', () => {
    const k = base([], { shared: [{ name: 's', type: 'f32', size: 4096 }, { name: 't', type: 'bool', size: 10 }] });
    expect(() => verifyKernel(k)).not.toThrow();
    expect(() => verifyKernel(k, { maxSharedBytes: 16384 })).toThrow(/shared arrays need 16394 bytes, more than the 16384/);
  });
  test('barriers in uniform control flow pass: loops over scalars, ifs on workgroup ids, tid on an axis of size 1', () => {
    const k = kernel('ok', [4, 1, 1], [2, 1, 1], [rd('x'), rw('y')], [
      K.decl('n', 'i32', K.div(K.v('size_N'), K.i32(2))),
      K.loop('c', K.i32(0), K.v('n'), [K.barrier(), K.iff(K.lt(K.wg(), K.i32(1)), [K.barrier()]), K.iff(K.lt(K.tid('y'), K.i32(1)), [K.barrier()])]),
    ], { scalars: [{ name: 'size_N', type: 'i32' }] });
    expect(() => verifyKernel(k)).not.toThrow();
  });
  test('a variable assigned under thread-dependent control is varying', () => {
    const k = kernel('va', [4, 1, 1], [1, 1, 1], [rd('x'), rw('y')], [
      K.decl('n', 'i32', K.i32(3)),
      K.iff(K.lt(K.tid(), K.i32(2)), [K.assign('n', K.i32(4))]),
      K.loop('c', K.i32(0), K.v('n'), [K.barrier()]),
    ]);
    expect(() => verifyKernel(k)).toThrow(/barrier inside loop 'c'/);
  });
});

// ---- the barrier split -----------------------------------------------------------------

/**
 * A workgroup of 8 x 2 threads: per-thread values and a local array live across barriers, a
 * tree reduction in shared memory runs in a loop with barriers, a uniform if holds barriers,
 * a uniform declaration (hoisted) and a per-thread index (rematerialised) are read after them.
 */
function reduceKernel(): Kernel {
  const t = K.v('t');
  const f = (n: number): KExpr => K.f32(n);
  const x0 = K.v('x0', 'f32');
  return kernel('tree', [8, 2, 1], [5, 1, 1], [rd('x'), rw('out'), rw('out2')], [
    K.decl('t', 'i32', K.add(K.mul(K.tid('y'), K.i32(8)), K.tid('x'))),
    K.decl('half', 'i32', K.div(K.v('size_N'), K.i32(2))),
    K.local('acc', 'f32', 3),
    K.loop('i', K.i32(0), K.i32(3), [K.store('acc', K.v('i'), K.load('x', K.add(K.mul(K.add(K.mul(K.wg(), K.i32(16)), t), K.i32(3)), K.v('i'))))]),
    K.decl('x0', 'f32', K.mul(K.load('acc', K.i32(0)), f(2))),
    K.store('red', t, K.add(K.add(K.load('acc', K.i32(0)), K.load('acc', K.i32(1))), K.load('acc', K.i32(2)))),
    K.barrier(),
    K.loop('it', K.i32(0), K.i32(4), [
      K.decl('stride', 'i32', K.select(K.bin('==', K.v('it'), K.i32(0)), K.i32(8), K.select(K.bin('==', K.v('it'), K.i32(1)), K.i32(4), K.select(K.bin('==', K.v('it'), K.i32(2)), K.i32(2), K.i32(1))))),
      K.iff(K.lt(t, K.v('stride')), [K.store('red', t, K.add(K.load('red', t), K.load('red', K.add(t, K.v('stride')))))]),
      K.barrier(),
      K.assign('x0', K.add(x0, K.load('red', K.i32(0)))),
      K.barrier(),
    ]),
    K.iff(K.bin('==', K.bin('%', K.wg(), K.i32(2)), K.i32(0)), [
      K.store('red', t, x0),
      K.barrier(),
      K.store('out2', K.add(K.mul(K.wg(), K.i32(16)), t), K.add(K.load('red', K.sub(K.i32(15), t)), K.cast(K.v('half'), 'f32'))),
    ], [
      K.barrier(),
      K.store('out2', K.add(K.mul(K.wg(), K.i32(16)), t), K.load('acc', K.i32(1))),
    ]),
    K.store('out', K.add(K.mul(K.wg(), K.i32(16)), t), K.add(x0, K.load('acc', K.i32(2)))),
  ], { shared: [{ name: 'red', type: 'f32', size: 16 }], scalars: [{ name: 'size_N', type: 'i32' }] });
}

const hasBarrierStmt = (ss: readonly KStmt[]): boolean => ss.some((s) => s.k === 'barrier' || (s.k === 'if' && (hasBarrierStmt(s.then) || hasBarrierStmt(s.else))) || (s.k === 'for' && hasBarrierStmt(s.body)));

describe('delta sums (targets/native/delta.ts)', () => {
  // acc = x[i]; for j in [0, n): acc += (j + 3 == i ? x[j] * 2 : 0): the one hit before, inside
  // or after the range, acc starting at -0, NaN, infinities; trip counts 0, 1, 5, 8.
  const dk = (): Kernel => {
    const i = K.v('i');
    return kernel('delta', [8, 1, 1], [2, 1, 1], [{ name: 'x', type: 'f32', access: 'read' }, { name: 'out', type: 'f32', access: 'read_write' }], [
      K.decl('i', 'i32', K.add(K.mul(K.wg(), K.i32(8)), K.tid())),
      K.decl('acc', 'f32', K.load('x', i)),
      K.loop('j', K.i32(0), K.v('size_n'), [K.assign('acc', K.add(K.v('acc', 'f32'), K.select(K.bin('==', K.add(K.v('j'), K.i32(3)), i), K.mul(K.load('x', K.v('j')), K.f32(2)), K.f32(0))))]),
      K.store('out', i, K.v('acc', 'f32')),
    ], { scalars: [{ name: 'size_n', type: 'i32' }] });
  };
  const xs = [-0, 0, -0, NaN, Infinity, -Infinity, 1.5, -0, -2.25, 0, -0, 3, -0, 7, -1, -0];
  test('the rewrite computes what the loop computes, bit for bit, on the executor and natively', async () => {
    const k = dk();
    const r = rewriteDeltaSums(k);
    expect(r).not.toBe(k);
    expect(JSON.stringify(r.body)).not.toContain('"k":"for"');
    for (const n of [0, 1, 5, 8, 16]) {
      const args = (): Args => ({ buffers: { x: Float32Array.from(xs), out: new Float32Array(16) }, scalars: { size_n: n } });
      const a = args(), b = args();
      runKernel(k, a);
      runKernel(r, b);
      expect(bits(b.buffers['out']!), `n = ${n}`).toEqual(bits(a.buffers['out']!));
      if (!why) { const { cpu, native } = await runBoth(k, args()); expectSameBits(cpu, native); }
    }
  });
  test('loops that are not delta sums are left alone', () => {
    const k = dk();
    const body = k.body.map((st) => (st.k === 'for' ? { ...st, body: [...st.body, K.assign('acc', K.add(K.v('acc', 'f32'), K.f32(1)))] } : st));
    const k2 = { ...k, body };
    expect(rewriteDeltaSums(k2)).toBe(k2);
  });
});

describe('barrier split (targets/native/barrier-split.ts)', () => {
  const k = reduceKernel();
  const args = (): Args => ({
    buffers: { x: Float32Array.from({ length: 5 * 16 * 3 }, (_, i) => Math.fround(Math.sin(i) * 3)), out: new Float32Array(80), out2: new Float32Array(80) },
    scalars: { size_N: 11 },
  });

  test('the split kernel has one thread per workgroup, no barriers, context arrays for what lives across barriers', () => {
    const s = splitBarriers(k, new Set(), { fission: false });
    expect(s.kernel.workgroup).toEqual([1, 1, 1]);
    expect(s.threads).toBe(16);
    expect(hasBarrierStmt(s.kernel.body)).toBe(false);
    // acc (a local array) and x0 (assigned after barriers) live across barriers; t is recomputed; half is hoisted.
    expect(s.context.map((c) => [c.name, c.size]).sort()).toEqual([['acc_ctx', 48], ['x0_ctx', 16]]);
    expect(s.rematerialised).toEqual(['t']);
    expect(s.hoisted).toContain('half');
    expect(s.hoisted).toContain('stride');
    // Work-item loops: before the first barrier (half is hoisted before it), the reduction step,
    // the read of red[0], the two branches' halves and the final store.
    expect(s.workItemLoops.size).toBe(7);
  });

  test('the split kernel computes what the original computes, bit for bit, on the CPU executor', () => {
    const a = args(), b = args();
    runKernel(k, a);
    runKernel(splitBarriers(k).kernel, b);
    expect(bits(b.buffers['out']!)).toEqual(bits(a.buffers['out']!));
    expect(bits(b.buffers['out2']!)).toEqual(bits(a.buffers['out2']!));
    // The reduction did reduce: thread 0 of workgroup 0 has x0 = 2 acc[0] + the partial sums red[0] after each step.
    const x = a.buffers['x'] as Float32Array;
    const r = Array.from({ length: 16 }, (_, t) => x[3 * t]! + x[3 * t + 1]! + x[3 * t + 2]!);
    const s1 = r[0]! + r[8]!, s2 = s1 + r[4]! + r[12]!, s3 = s2 + r[2]! + r[10]! + r[6]! + r[14]!, s4 = r.reduce((p, c) => p + c, 0);
    expect(a.buffers['out']![0]).toBeCloseTo(2 * x[0]! + s1 + s2 + s3 + s4 + x[2]!, 3);
  });

  test('shadowed and reused names stay apart (every declaration gets its own name)', () => {
    const kk = kernel('shadow', [4, 1, 1], [1, 1, 1], [rw('y')], [
      K.decl('a', 'i32', K.tid()),
      K.barrier(),
      K.iff(K.bool(true), [K.decl('a', 'i32', K.add(K.v('a'), K.i32(10))), K.store('y', K.tid(), K.cast(K.v('a'), 'f32'))]),
      K.barrier(),
      K.decl('b', 'f32', K.cast(K.v('a'), 'f32')),
      K.barrier(),
      K.store('y', K.add(K.tid(), K.i32(4)), K.v('b', 'f32')),
    ]);
    const a: Args = { buffers: { y: new Float32Array(8) }, scalars: {} };
    const b = clone(a);
    runKernel(kk, a);
    runKernel(splitBarriers(kk).kernel, b);
    expect(Array.from(b.buffers['y']!)).toEqual([10, 11, 12, 13, 0, 1, 2, 3]);
    expect(Array.from(a.buffers['y']!)).toEqual([10, 11, 12, 13, 0, 1, 2, 3]);
  });

  test('with loop fission (opt-in) the split kernels still compute what the originals compute, bit for bit', () => {
    const a = args(), b = args();
    runKernel(k, a);
    const s = splitBarriers(k, new Set(), { fission: true });
    expect(s.workItemLoops.size).toBeGreaterThan(7); // the loop over acc's elements is fissioned
    runKernel(s.kernel, b);
    expect(bits(b.buffers['out']!)).toEqual(bits(a.buffers['out']!));
    expect(bits(b.buffers['out2']!)).toEqual(bits(a.buffers['out2']!));
    // Retention's kernels, every form, forward and backward: a thread-dependent guard around
    // uniform loops is pushed into them (if-conversion) and the loops are fissioned.
    const fn = loadFn('retention', 'retention');
    let pushed = 0;
    for (const form of FORMS) for (const backward of [false, true]) {
      const p = plan(fn, form, 8, backward, { K: 6, V: 5 });
      const r = prng(9);
      const inputs = new Map<string, Value>([['q', uniform([2, 2, 19, 6], r)], ['k', uniform([2, 2, 19, 6], r)], ['v', uniform([2, 2, 19, 5], r)], ['gamma', tensor([2], (h) => [0.9, 1][h]!)], ['grad.o', uniform([2, 2, 19, 5], r)]]);
      const split = { ...p, launches: p.launches.map((l) => { const s2 = splitBarriers(l.kernel, new Set(), { fission: true }); pushed += s2.kernel.body.length; return { ...l, kernel: s2.kernel }; }) };
      const want = runPlanCpu(p, inputs), got = runPlanCpu(split, inputs);
      for (const [name, t] of want) expect(bits(got.get(name)!.data as Float32Array), `${form}${backward ? ' backward' : ''} ${name}`).toEqual(bits(t.data as Float32Array));
    }
    expect(pushed).toBeGreaterThan(0);
  });

  test("the default fission ('innermost': uniform loops around straight-line code, ranged bounds guards) computes what the originals compute, bit for bit", () => {
    // Retention's kernels (every form, forward and backward) and tiled matrix products (two
    // tiles), ragged against the tiles so that the guards cut workgroups short.
    const fn = loadFn('retention', 'retention');
    const lin = loadFn('retnet', 'linear');
    let ranged = 0, items = 0;
    const plans: { p: ReturnType<typeof plan>; inputs: Map<string, Value> }[] = [];
    for (const form of FORMS) for (const backward of [false, true]) {
      const r = prng(11);
      plans.push({ p: plan(fn, form, 8, backward, { K: 6, V: 5 }), inputs: new Map<string, Value>([['q', uniform([2, 2, 19, 6], r)], ['k', uniform([2, 2, 19, 6], r)], ['v', uniform([2, 2, 19, 5], r)], ['gamma', tensor([2], (h) => [0.9, 1][h]!)], ['grad.o', uniform([2, 2, 19, 5], r)]]) });
    }
    for (const tiles of [undefined, { m: 32, n: 32, k: 8, regM: 4, regN: 4 }] as (Record<string, number> | undefined)[]) {
      const r = prng(12);
      const p = compileFunction(lin, makeSchedule('chunkwise', 8, { dense: 'tiled', ...(tiles ? { statements: { y: { tiles } } } : {}) }), { backward: false, constants: new Map() });
      plans.push({ p, inputs: new Map<string, Value>([['x', uniform([1, 37, 21], r)], ['w', uniform([19, 21], r)]]) });
    }
    for (const { p, inputs } of plans) {
      const split = { ...p, launches: p.launches.map((l) => {
        const s2 = splitBarriers(l.kernel, new Set(), { fission: 'innermost' });
        items += s2.workItemLoops.size;
        const walk = (ss: readonly KStmt[]): void => { for (const x of ss) { if (x.k === 'decl' && x.name.startsWith('rn_wi')) ranged++; if (x.k === 'if') { walk(x.then); walk(x.else); } if (x.k === 'for') walk(x.body); } };
        walk(s2.kernel.body);
        return { ...l, kernel: s2.kernel };
      }) };
      const want = runPlanCpu(p, inputs), got = runPlanCpu(split, inputs);
      for (const [name, t] of want) expect(bits(got.get(name)!.data as Float32Array), `${p.fn.name} ${name}`).toEqual(bits(t.data as Float32Array));
    }
    expect(ranged).toBeGreaterThan(0);
    expect(items).toBeGreaterThan(0);
  });

  test.skipIf(!!why)('native runs it bit for bit as the executor does', async () => {
    const { cpu, native } = await runBoth(k, args());
    expectSameBits(cpu, native);
  });
});

// ---- the printer's semantics ---------------------------------------------------------------

const INT_EDGES = [0, 1, -1, 2, -2, 3, 7, -7, 2147483647, -2147483648, 65536, -65536, 46341, 1000000007];
const F32_EDGES = [0, -0, 1, -1, 0.5, -2.5, 2.5, 3.7, -3.7, 1e-30, -1e-42, 1.4e-45, 65504, 65519.99, 65520, 1e5, 3e9, -3e9, 2147483520, 2147483648, -2147483904,
  16777217, 1e38, 3.4028234e38, Infinity, -Infinity, NaN, Math.PI, 100, -100, 0.1, 1e-8, 6.1e-5, 5.96e-8, 2.98e-8, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 1 + 2 ** -8, 0.693, 20, -20, 88.7, 89];

describe('the C printer: kernel IR semantics on edge cases, bit for bit against the CPU executor', () => {
  const n = INT_EDGES.length ** 2;
  const ia = Int32Array.from({ length: n }, (_, i) => INT_EDGES[Math.floor(i / INT_EDGES.length)]!);
  const ib = Int32Array.from({ length: n }, (_, i) => INT_EDGES[i % INT_EDGES.length]!);
  const m = F32_EDGES.length ** 2;
  const fa = Float32Array.from({ length: m }, (_, i) => F32_EDGES[Math.floor(i / F32_EDGES.length)]!);
  const fb = Float32Array.from({ length: m }, (_, i) => F32_EDGES[i % F32_EDGES.length]!);

  const a = K.load('a', K.v('i'), 'i32'), b = K.load('b', K.v('i'), 'i32');
  const INT_OPS: KExpr[] = [
    K.div(a, b), K.bin('%', a, b), K.add(a, b), K.sub(a, b), K.mul(a, b), K.un('neg', a), K.un('abs', a), K.bin('min', a, b), K.bin('max', a, b),
    K.div(a, K.i32(3)), K.bin('%', a, K.i32(-3)), K.div(a, K.i32(-1)), K.bin('%', a, K.i32(-1)), K.div(a, K.i32(0)), K.bin('%', a, K.i32(0)),
    K.cast(K.lt(a, b), 'i32'), K.select(K.bin('<=', a, b), a, b), K.cast(K.cast(a, 'f32'), 'i32'),
  ];
  const x = K.load('fa', K.v('i')), y = K.load('fb', K.v('i'));
  const F32_OPS: KExpr[] = [
    K.add(x, y), K.sub(x, y), K.mul(x, y), K.div(x, y), K.bin('%', x, y), K.bin('min', x, y), K.bin('max', x, y), K.bin('pow', x, y),
    K.un('neg', x), K.un('abs', x), K.un('floor', x), K.un('ceil', x), K.un('sqrt', x), K.un('rsqrt', x), K.un('exp', x), K.un('exp2', x),
    K.un('log', x), K.un('log2', x), K.un('log1p', x), K.un('sin', x), K.un('cos', x), K.un('tanh', x), K.un('erf', x),
    K.select(K.bin('>', x, y), x, y), K.cast(K.bin('==', x, y), 'f32'), K.cast(K.cast(x, 'bool'), 'f32'),
    K.add(K.mul(x, y), K.f32(1)), // no fma contraction: two roundings
  ];
  const intKernel = kernel('ints', [16, 1, 1], [Math.ceil(n / 16), 1, 1], [rd('a', 'i32'), rd('b', 'i32'), rw('r', 'i32')], [
    K.decl('i', 'i32', K.add(K.mul(K.wg(), K.i32(16)), K.tid())),
    K.iff(K.lt(K.v('i'), K.i32(n)), INT_OPS.map((e, j) => K.store('r', K.add(K.mul(K.v('i'), K.i32(INT_OPS.length)), K.i32(j)), e))),
  ]);
  const f32Kernel = kernel('floats', [32, 1, 1], [Math.ceil(m / 32), 1, 1], [rd('fa'), rd('fb'), rw('r'), rw('ri', 'i32')], [
    K.decl('i', 'i32', K.add(K.mul(K.wg(), K.i32(32)), K.tid())),
    K.iff(K.lt(K.v('i'), K.i32(m)), [
      ...F32_OPS.map((e, j) => K.store('r', K.add(K.mul(K.v('i'), K.i32(F32_OPS.length)), K.i32(j)), e)),
      K.store('ri', K.v('i'), K.cast(x, 'i32')),
    ]),
  ]);

  test('the printed C is one translation unit of plain C with the kernel functions', () => {
    const mod = printNative([intKernel, f32Kernel, reduceKernel()]);
    expect(mod.entries.map((e) => e.symbol)).toEqual(['rn_k0_ints', 'rn_k1_floats', 'rn_k2_tree']);
    expect(mod.code).toContain('void rn_k2_tree(void *const *rn_b, const int64_t *rn_n, const int32_t *rn_s, const int32_t *rn_g, int64_t rn_begin, int64_t rn_end, unsigned char *rn_scratch, int32_t *rn_err)');
    expect(mod.code).not.toMatch(/barrier|tid_x/);
    expect(mod.entries[2]!.scratchBytes).toBe(64 + 192 + 64); // red, acc_ctx, x0_ctx at 64-byte offsets
  });

  test.skipIf(!!why)('i32: wrapping + - * neg abs, x / 0 = x % 0 = 0, INT_MIN / -1 = INT_MIN, % takes the dividend\'s sign, min, max, casts', async () => {
    const { cpu, native } = await runBoth(intKernel, { buffers: { a: ia, b: ib, r: new Int32Array(n * INT_OPS.length) }, scalars: {} });
    expectSameBits(cpu, native);
    const r = native.buffers['r'] as Int32Array;
    const at = (av: number, bv: number, op: number): number => r[(INT_EDGES.indexOf(av) * INT_EDGES.length + INT_EDGES.indexOf(bv)) * INT_OPS.length + op]!;
    expect(at(7, 0, 0)).toBe(0);
    expect(at(7, 0, 1)).toBe(0);
    expect(at(-2147483648, -1, 0)).toBe(-2147483648);
    expect(at(-2147483648, -1, 1)).toBe(0);
    expect(at(-7, 2, 0)).toBe(-3);
    expect(at(-7, 2, 1)).toBe(-1);
    expect(at(2147483647, 1, 2)).toBe(-2147483648);
    expect(at(65536, 65536, 4)).toBe(0);
    expect(at(-2147483648, 0, 5)).toBe(-2147483648);
    expect(at(-2147483648, 0, 6)).toBe(-2147483648);
  });

  test.skipIf(!!why)('f32: one rounding per operation (no fma), NaN-propagating min / max with -0 < +0, f32 -> i32 saturating with NaN -> 0, math functions as the executor computes them', async () => {
    const { cpu, native } = await runBoth(f32Kernel, { buffers: { fa, fb, r: new Float32Array(m * F32_OPS.length), ri: new Int32Array(m) }, scalars: {} });
    expectSameBits(cpu, native);
    const r = native.buffers['r'] as Float32Array;
    const at = (av: number, bv: number, op: number): number => r[(F32_EDGES.findIndex((e) => Object.is(e, av)) * F32_EDGES.length + F32_EDGES.findIndex((e) => Object.is(e, bv))) * F32_OPS.length + op]!;
    expect(at(NaN, 1, 5)).toBeNaN();
    expect(at(1, NaN, 6)).toBeNaN();
    expect(Object.is(at(0, -0, 5), -0)).toBe(true);
    expect(Object.is(at(-0, 0, 6), 0)).toBe(true);
    expect(at(-2.5, 0.5, 7)).toBeNaN(); // pow of a negative base
    expect(at(0, 0, 7)).toBeNaN(); // 0^0
    const ri = native.buffers['ri'] as Int32Array;
    const atI = (av: number): number => ri[F32_EDGES.findIndex((e) => Object.is(e, av)) * F32_EDGES.length]!;
    expect([atI(NaN), atI(3e9), atI(-3e9), atI(Infinity), atI(-Infinity), atI(-3.7), atI(2147483648)]).toEqual([0, 2147483647, -2147483648, 2147483647, -2147483648, -3, 2147483647]);
    // 1 + 2^-11 squared plus 1: rounded twice (fma would give 2 + 2^-10 + 2^-22 rounded once, a different float).
    const s = Math.fround(1 + 2 ** -11);
    expect(at(1 + 2 ** -11, 1 + 2 ** -11, F32_OPS.length - 1)).toBe(Math.fround(Math.fround(s * s) + 1));
  });

  test.skipIf(!!why)('f16 and bf16 storage: stores round to nearest even (ties, subnormals, overflow to inf, NaN), loads are exact', async () => {
    const vals = Float32Array.from([...F32_EDGES, ...Array.from({ length: 2000 }, (_, i) => Math.fround((i - 1000) * 0.37 * 2 ** ((i % 40) - 20)))]);
    const N = vals.length;
    const hk = kernel('halves', [64, 1, 1], [Math.ceil(N / 64), 1, 1], [rd('x'), rw('h', 'f32', 'f16'), rw('bh', 'f32', 'bf16'), { ...rd('hin'), storage: 'f16' }, { ...rd('bin'), storage: 'bf16' }, rw('back')], [
      K.decl('i', 'i32', K.add(K.mul(K.wg(), K.i32(64)), K.tid())),
      K.iff(K.lt(K.v('i'), K.i32(N)), [
        K.store('h', K.v('i'), K.load('x', K.v('i'))),
        K.store('bh', K.v('i'), K.load('x', K.v('i'))),
        K.store('back', K.v('i'), K.add(K.load('hin', K.v('i')), K.load('bin', K.v('i')))),
      ]),
    ]);
    const allBits = Uint16Array.from({ length: N }, (_, i) => (i * 37) & 0xffff);
    const { cpu, native } = await runBoth(hk, {
      buffers: { x: vals, h: new Uint16Array(N), bh: new Uint16Array(N), hin: allBits, bin: allBits.map((v) => v ^ 0x5a5a), back: new Float32Array(N) }, scalars: {},
    });
    expectSameBits(cpu, native);
    expect(Array.from(native.buffers['h']!)).toEqual(Array.from(vals, (v) => toF16Bits(v)));
    expect(Array.from(native.buffers['bh']!)).toEqual(Array.from(vals, (v) => toBF16Bits(v)));
    // Every f16 bit pattern loads exactly.
    const every = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const lk = kernel('loads', [256, 1, 1], [256, 1, 1], [{ ...rd('hin'), storage: 'f16' }, { ...rd('bin'), storage: 'bf16' }, rw('o1'), rw('o2')], [
      K.decl('i', 'i32', K.add(K.mul(K.wg(), K.i32(256)), K.tid())),
      K.store('o1', K.v('i'), K.load('hin', K.v('i'))),
      K.store('o2', K.v('i'), K.load('bin', K.v('i'))),
    ]);
    const r = await runBoth(lk, { buffers: { hin: every, bin: every, o1: new Float32Array(65536), o2: new Float32Array(65536) }, scalars: {} });
    expectSameBits(r.cpu, r.native);
  });
});

// ---- the runtime -----------------------------------------------------------------------------

describe.skipIf(!!why)('native runtime', () => {
  test('workgroups spread over the pool: every one of 100003 workgroups runs once', async () => {
    const k = kernel('ids', [3, 1, 1], [1, 1, 1], [rw('y', 'i32')], [
      K.decl('i', 'i32', K.add(K.mul(K.add(K.mul(K.wg('z'), K.i32(7)), K.wg('y')), K.v('gx')), K.wg('x'))),
      K.store('y', K.add(K.mul(K.v('i'), K.i32(3)), K.tid()), K.add(K.load('y', K.add(K.mul(K.v('i'), K.i32(3)), K.tid()), 'i32'), K.add(K.v('i'), K.i32(1)))),
    ], { scalars: [{ name: 'gx', type: 'i32' }], grid: [K.v('gx'), K.i32(7), K.i32(2)] });
    const gx = 7143; // 7143 * 7 * 2 = 100002 workgroups
    const total = gx * 14;
    const p = await prepareKernels([k]);
    const y = new Int32Array(total * 3);
    runNativeKernel(p, k, { buffers: { y }, scalars: { gx } });
    let bad = 0;
    for (let i = 0; i < total * 3; i++) if (y[i] !== Math.floor(i / 3) + 1) bad++;
    expect(bad).toBe(0);
  });

  test('an out-of-bounds store is an error naming the kernel, the array, the index, the workgroup and the thread', async () => {
    const k = kernel('oob', [4, 1, 1], [3, 1, 1], [rw('y')], [K.store('y', K.add(K.add(K.mul(K.wg(), K.i32(4)), K.tid()), K.i32(1)), K.f32(1))]);
    const p = await prepareKernels([k]);
    expect(() => runNativeKernel(p, k, { buffers: { y: new Float32Array(12) }, scalars: {} }))
      .toThrow(/^out-of-bounds store in kernel oob: buffer 'y' index 12, length 12 \(workgroup \(2,0,0\), thread \(3,0,0\)\)$/);
    const k2 = kernel('oob2', [2, 2, 1], [1, 1, 1], [rd('x'), rw('y')], [K.local('l', 'f32', 2), K.store('y', K.tid('y'), K.load('l', K.tid('x'))), K.barrier(), K.store('l', K.i32(0), K.load('x', K.i32(-1)))]);
    const p2 = await prepareKernels([k2]);
    expect(() => runNativeKernel(p2, k2, { buffers: { x: new Float32Array(2), y: new Float32Array(2) }, scalars: {} }))
      .toThrow(/^out-of-bounds load in kernel oob2: buffer 'x' index -1, length 2 \(workgroup \(0,0,0\), thread \(0,0,0\)\)$/);
  });

  test('compiled libraries are cached by source, compiler and flags', async () => {
    const code = printNative([reduceKernel()]).code;
    const first = await compileNative(code);
    const again = await compileNative(code);
    expect(again.file).toBe(first.file);
    expect(again.cached).toBe(true);
  });
});

describe('no C compiler', () => {
  test('the native target says so in one line', async () => {
    const env = { ...process.env, PATH: '/nonexistent-dir', RETNETC_CC: '' };
    expect(findCompiler(env)).toBeUndefined();
    await expect(compileNative('int x;', env)).rejects.toThrow(new RegExp(`^${NO_COMPILER.replace(/[()]/g, '\\$&')}$`));
    expect(NO_COMPILER).toBe('native target: no C compiler found (looked for cc, gcc, clang); install one or use --target cpu');
    // And through the runner, with RETNETC_CC naming a compiler that is not there.
    const saved = process.env['RETNETC_CC'];
    process.env['RETNETC_CC'] = '/nonexistent-dir/cc';
    try {
      const k = kernel('nocc', [1, 1, 1], [1, 1, 1], [rw('y')], [K.store('y', K.i32(0), K.f32(1))]);
      await expect(prepareKernels([k])).rejects.toThrow(NO_COMPILER);
    } finally {
      if (saved === undefined) delete process.env['RETNETC_CC']; else process.env['RETNETC_CC'] = saved;
    }
  });
});
