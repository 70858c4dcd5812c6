// Common subexpressions of kernel IR statements bound to locals (compiler/kir-cse.ts): repeated
// calls and loads are computed once, a guarded load stays guarded (an unguarded copy would read
// out of bounds, which the CPU executor reports), a clamped one may be bound, and a kernel
// computes bit for bit what it computed before, on hand-made kernels, on random expressions
// (fast-check) and on whole plans (against a second copy of the compiler without the pass).
import fc from 'fast-check';
import { beforeAll, describe, expect, test, vi } from 'vitest';
import * as K from '../compiler/kir.js';
import type { Kernel, KExpr, KStmt } from '../compiler/kir.js';
import { cseKernel } from '../compiler/kir-cse.js';
import { verifyKernel } from '../compiler/kir-verify.js';
import { compilePlan, type Plan } from '../compiler/plan.js';
import { makeSchedule } from '../compiler/schedule.js';
import { loadProgram } from '../dsl/program.js';
import { devaluate } from '../dsl/dims.js';
import { runKernel } from '../targets/cpu/executor.js';
import { printWgsl } from '../targets/wgsl/printer.js';
import { printCuda } from '../targets/cuda/printer.js';
import { runPlanCpu } from '../runtime/plan-runner.js';
import { fcSeed, prng, uniform, type Value } from './helpers/harness.js';

const N = 37;
const gid = K.v('gid');
const n = K.v('n');

/** One thread per element of `out` (length N, scalar n = N): out[gid] = value. */
function kernelOf(value: KExpr, buffers = ['a', 'b']): Kernel {
  const body: KStmt[] = [
    K.decl('gid', 'i32', K.add(K.mul(K.wg('x'), K.i32(64)), K.tid('x'))),
    K.iff(K.lt(gid, n), [K.store('out', gid, value)]),
  ];
  return {
    name: 'k', workgroup: [64, 1, 1], grid: [K.i32(1), K.i32(1), K.i32(1)],
    buffers: [...buffers.map((name) => ({ name, type: 'f32' as const, access: 'read' as const })), { name: 'out', type: 'f32', access: 'read_write' }],
    scalars: [{ name: 'n', type: 'i32' }], shared: [], body,
  };
}

function count(k: Kernel, pred: (e: KExpr) => boolean): number {
  let c = 0;
  const ex = (e: KExpr): void => {
    if (pred(e)) c++;
    switch (e.k) {
      case 'load': ex(e.index); break;
      case 'un': case 'cast': ex(e.a); break;
      case 'bin': ex(e.a); ex(e.b); break;
      case 'select': ex(e.cond); ex(e.a); ex(e.b); break;
      default:
    }
  };
  const st = (ss: readonly KStmt[]): void => {
    for (const s of ss) {
      if (s.k === 'decl') ex(s.init);
      else if (s.k === 'assign') ex(s.value);
      else if (s.k === 'store') { ex(s.index); ex(s.value); }
      else if (s.k === 'if') { ex(s.cond); st(s.then); st(s.else); }
      else if (s.k === 'for') { ex(s.start); ex(s.end); st(s.body); }
    }
  };
  st(k.body);
  return c;
}
const loadsOf = (k: Kernel, array: string) => count(k, (e) => e.k === 'load' && e.array === array);
const callsOf = (k: Kernel, op: string) => count(k, (e) => e.k === 'un' && e.op === op);

function run(k: Kernel, a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(N);
  runKernel(k, { buffers: { a, b, out }, scalars: { n: N } });
  return out;
}
const bits = (x: Float32Array): number[] => Array.from(new Uint32Array(x.buffer));
const data = (seed: number) => { const r = prng(seed); return Float32Array.from({ length: N }, () => (r() * 2 - 1) * 3); };

describe('kernel IR common subexpressions', () => {
  test("swish's derivative: 1 / (1 + exp(-g)) three times becomes one exp and one load of g", () => {
    const g = K.load('a', gid);
    const sig = () => K.div(K.f32(1), K.add(K.f32(1), K.un('exp', K.un('neg', g))));
    const k = kernelOf(K.add(sig(), K.mul(K.mul(g, sig()), K.sub(K.f32(1), sig()))));
    const c = cseKernel(k);
    expect(callsOf(k, 'exp')).toBe(3);
    expect(callsOf(c, 'exp')).toBe(1);
    expect(loadsOf(c, 'a')).toBe(1);
    verifyKernel(c);
    expect(bits(run(c, data(1), data(2)))).toEqual(bits(run(k, data(1), data(2))));
  });

  test('a guarded load is not bound out of its select arm, nor out of the right of &&', () => {
    const guarded = K.select(K.lt(K.add(gid, K.i32(1)), n), K.mul(K.load('a', K.add(gid, K.i32(1))), K.load('a', K.add(gid, K.i32(1)))), K.f32(0));
    const k = kernelOf(guarded);
    const c = cseKernel(k);
    expect(loadsOf(c, 'a')).toBe(2);
    // The CSE'd kernel runs: a bound load would read a[N] at gid = N - 1 and the executor throws.
    expect(bits(run(c, data(3), data(4)))).toEqual(bits(run(k, data(3), data(4))));
    const ix = K.add(gid, K.i32(1));
    const cond = K.and(K.lt(ix, n), K.bin('>', K.load('a', ix), K.load('a', ix)));
    const k2 = kernelOf(K.select(cond, K.f32(1), K.f32(2)));
    expect(loadsOf(cseKernel(k2), 'a')).toBe(2);
    expect(bits(run(cseKernel(k2), data(5), data(6)))).toEqual(bits(run(k2, data(5), data(6))));
  });

  test('nothing is evaluated that the program skips (not even a clamped load under its guard); what is evaluated anyway is bound', () => {
    const ix = K.add(gid, K.i32(1));
    const clamped = () => K.load('a', K.bin('min', K.bin('max', ix, K.i32(0)), K.sub(n, K.i32(1))));
    const k = kernelOf(K.select(K.lt(ix, n), K.mul(clamped(), clamped()), K.f32(0)));
    const c = cseKernel(k);
    expect(loadsOf(c, 'a')).toBe(2);
    expect(bits(run(c, data(7), data(8)))).toEqual(bits(run(k, data(7), data(8))));
    const k2 = kernelOf(K.add(K.load('b', gid), K.select(K.lt(gid, K.i32(5)), K.un('sin', K.load('b', gid)), K.f32(0))));
    expect(loadsOf(cseKernel(k2), 'b')).toBe(1);
  });

  test('loop bounds and if conditions are left alone; decls go just before their statement, inside the loop', () => {
    const x = () => K.un('exp', K.load('a', K.v('i')));
    const loopBody: KStmt[] = [K.assign('acc', K.add(K.v('acc', 'f32'), K.mul(x(), x())))];
    const k = kernelOf(K.f32(0));
    k.body = [
      K.decl('gid', 'i32', K.add(K.mul(K.wg('x'), K.i32(64)), K.tid('x'))),
      K.iff(K.lt(gid, n), [
        K.decl('acc', 'f32', K.f32(0)),
        K.loop('i', K.i32(0), K.bin('min', K.add(gid, K.i32(1)), K.bin('min', K.add(gid, K.i32(1)), n)), loopBody),
        K.store('out', gid, K.v('acc', 'f32')),
      ]),
    ];
    const c = cseKernel(k);
    const inner = ((c.body[1] as Extract<KStmt, { k: 'if' }>).then[1] as Extract<KStmt, { k: 'for' }>);
    expect(inner.end).toEqual((((k.body[1] as Extract<KStmt, { k: 'if' }>).then[1]) as Extract<KStmt, { k: 'for' }>).end);
    expect(inner.body.map((s) => s.k)).toEqual(['decl', 'assign']);
    expect(callsOf(c, 'exp')).toBe(1);
    verifyKernel(c);
    expect(bits(run(c, data(9), data(10)))).toEqual(bits(run(k, data(9), data(10))));
  });

  test('a loop of stores only keeps that shape (the native lane loops vectorise it)', () => {
    const ix = () => K.add(K.mul(gid, K.i32(4)), K.v('v'));
    const k = kernelOf(K.f32(0));
    const lane = K.loop('v', K.i32(0), K.i32(4), [K.store('out', K.v('v'), K.mul(K.load('a', ix()), K.load('a', ix())))]);
    k.body = [K.decl('gid', 'i32', K.i32(0)), lane];
    expect(cseKernel(k).body[1]).toBe(lane);
  });

  test('names do not clash with the kernel\'s own (a local already called cse_0)', () => {
    const e = () => K.un('exp', K.load('a', gid));
    const k = kernelOf(K.f32(0));
    k.body = [
      K.decl('gid', 'i32', K.add(K.mul(K.wg('x'), K.i32(64)), K.tid('x'))),
      K.iff(K.lt(gid, n), [K.decl('cse_0', 'f32', K.f32(2)), K.store('out', gid, K.add(K.mul(e(), e()), K.v('cse_0', 'f32')))]),
    ];
    const c = cseKernel(k);
    verifyKernel(c);
    expect(callsOf(c, 'exp')).toBe(1);
    expect(bits(run(c, data(11), data(12)))).toEqual(bits(run(k, data(11), data(12))));
  });

  test('random expressions with shared subterms and guarded loads: the same bits, no out-of-bounds read, valid WGSL and CUDA text (fast-check)', () => {
    const seed = fcSeed('kir-cse');
    // Leaves: in-range loads, loads one past the end under their guard, constants, the thread id.
    const next = K.add(gid, K.i32(1));
    const leaves: KExpr[] = [
      K.load('a', gid), K.load('b', gid), K.f32(0.5), K.f32(-2), K.cast(gid, 'f32'),
      K.select(K.lt(next, n), K.load('a', next), K.f32(0)),
      K.load('b', K.bin('min', K.bin('max', next, K.i32(0)), K.sub(n, K.i32(1)))),
    ];
    type Op = { kind: 'bin'; op: '+' | '-' | '*' | '/' | 'min'; a: number; b: number } | { kind: 'un'; op: 'exp' | 'sin' | 'neg' | 'sqrt'; a: number } | { kind: 'sel'; a: number; b: number; c: number } | { kind: 'guard'; a: number };
    const opArb: fc.Arbitrary<Op> = fc.oneof(
      fc.record({ kind: fc.constant('bin' as const), op: fc.constantFrom('+' as const, '-' as const, '*' as const, '/' as const, 'min' as const), a: fc.nat(), b: fc.nat() }),
      fc.record({ kind: fc.constant('un' as const), op: fc.constantFrom('exp' as const, 'sin' as const, 'neg' as const, 'sqrt' as const), a: fc.nat() }),
      fc.record({ kind: fc.constant('sel' as const), a: fc.nat(), b: fc.nat(), c: fc.nat() }),
      fc.record({ kind: fc.constant('guard' as const), a: fc.nat() }),
    );
    fc.assert(fc.property(fc.array(opArb, { minLength: 1, maxLength: 14 }), fc.integer(), (ops, dseed) => {
      // Each op builds on earlier nodes (by index into the pool): shared subterms are common.
      const pool = [...leaves];
      const pick = (i: number) => pool[i % pool.length]!;
      for (const o of ops) {
        if (o.kind === 'bin') pool.push(K.bin(o.op, pick(o.a), pick(o.b)));
        else if (o.kind === 'un') pool.push(K.un(o.op, pick(o.a)));
        else if (o.kind === 'sel') pool.push(K.select(K.lt(pick(o.c), pick(o.a)), pick(o.a), pick(o.b)));
        // A guarded read one past the element of an expression that reuses earlier terms.
        else pool.push(K.select(K.lt(next, n), K.mul(K.load('a', next), pick(o.a)), pick(o.a)));
      }
      const k = kernelOf(K.add(pool[pool.length - 1]!, pool[Math.floor(pool.length / 2)]!));
      const c = cseKernel(k);
      verifyKernel(c);
      printWgsl(c);
      printCuda(c);
      const a = data(dseed), b = data(dseed + 1);
      expect(bits(run(c, a, b))).toEqual(bits(run(k, a, b)));
    }), { seed, numRuns: 150 });
  });
});

// ---- whole plans, against the compiler without the pass -------------------------------------------

async function plainCompiler(): Promise<typeof import('../compiler/plan.js')> {
  vi.resetModules();
  vi.doMock('../compiler/kir-cse.js', () => ({ cseKernel: (k: Kernel) => k }));
  const m = await import('../compiler/plan.js');
  vi.doUnmock('../compiler/kir-cse.js');
  return m;
}

function inputsFor(p: Plan, sizes: Record<string, number>, seed: number): Map<string, Value> {
  const rand = prng(seed);
  const env = new Map(Object.entries(sizes));
  return new Map(p.fn.params.map((prm) => [prm.name, uniform(prm.shape.map((d) => devaluate(d, env)!), rand)] as const));
}

describe('whole plans: the same bits as without the pass (CPU executor)', () => {
  let plain: typeof import('../compiler/plan.js');
  beforeAll(async () => { plain = await plainCompiler(); });
  const msr = loadProgram('models/retnet.ret').checked!.fns.get('msr')!;
  const constants = new Map([['H', 2], ['K', 4], ['V', 3]]);
  for (const backward of [false, true]) {
    test(`msr ${backward ? 'backward' : 'forward'}, chunkwise: fewer calls and loads, same outputs`, () => {
      const schedule = makeSchedule('chunkwise', 4);
      const withCse = compilePlan(msr, schedule, { backward, constants });
      const base = plain.compilePlan(msr, schedule, { backward, constants });
      const calls = (p: Plan) => p.launches.reduce((s, l) => s + count(l.kernel, (e) => e.k === 'load' || (e.k === 'un' && ['exp', 'rsqrt', 'sqrt', 'log1p', 'log'].includes(e.op))), 0);
      expect(calls(withCse)).toBeLessThan(calls(base));
      const inputs = inputsFor(withCse, { B: 2, T: 9, H: 2, K: 4, V: 3 }, 23);
      const a = runPlanCpu(withCse, inputs), b = runPlanCpu(base, inputs);
      for (const [name, v] of b) expect(bits(new Float32Array(a.get(name)!.data.buffer)), name).toEqual(bits(new Float32Array(v.data.buffer)));
    });
  }
});
