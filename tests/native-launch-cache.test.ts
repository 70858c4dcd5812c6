// The native runner's launch lists (runtime/native/launch-list.ts): a plan's runs at one set of
// input shapes share one prepared list and one pooled buffer per memory slot. What that must not
// change: every run computes from its own inputs (new arrays, or the same array changed in
// place); outputs of a run are the caller's and stay as they were after later runs; a slot that
// an accumulation needs zeroed is zero again on every run; `poison` still shows a read of memory
// that no kernel wrote, on every run; the per kernel profile counts every launch; an
// out-of-bounds access names its kernel. Plans here are synthetic (a few small kernels) plus
// retention's chunkwise forward against the CPU executor.
import { describe, expect, test } from 'vitest';
import * as K from '../compiler/kir.js';
import { planMemory } from '../compiler/memory.js';
import type { Plan } from '../compiler/plan.js';
import { makeSchedule } from '../compiler/schedule.js';
import type { CVar } from '../dsl/checked.js';
import { devaluate, dsym } from '../dsl/dims.js';
import type { Value } from '../dsl/reference/interpreter.js';
import { loadNativeAddon } from '../runtime/native/addon.js';
import { LISTS_PER_PLAN } from '../runtime/native/launch-list.js';
import { runPlanNative, setNativeProfile } from '../runtime/native/runner.js';
import { runPlanCpu } from '../runtime/plan-runner.js';
import { findCompiler, NO_COMPILER } from '../targets/native/compile.js';
import { loadFn, plan as compilePlanOf, prng, tensor } from './helpers/harness.js';

const cc = findCompiler();
const addon = cc ? loadNativeAddon() : { error: NO_COMPILER };
const why = !cc ? NO_COMPILER : 'error' in addon ? addon.error : undefined;
if (why) console.log(`[native-launch-cache] native runs skipped: ${why}`);

test('a C compiler and the native addon are available (required when REQUIRE_NATIVE=1)', (ctx) => {
  if (why && process.env['REQUIRE_NATIVE'] !== '1') ctx.skip();
  expect(why).toBeUndefined();
});

// ---- synthetic plans: elementwise kernels over N elements, N a run-time size -----------------

const WG = 64;
type Body = (i: K.KExpr) => K.KStmt[];
interface Step { name: string; reads: string[]; write: string; accumulate?: boolean; body: Body }

/**
 * A plan of one input x[N] and the given steps, each a kernel over i < N (workgroups of 64) whose
 * buffers are its reads (read-only) and its target (written; also loaded when `accumulate`).
 */
function synthetic(steps: Step[], outputs: string[]): Plan {
  const N = dsym('N');
  const vars = new Map<string, CVar>();
  for (const s of steps) vars.set(s.write, { id: s.write, name: s.write, dtype: 'f32', shape: [N], role: 'local' } as unknown as CVar);
  const launches: Plan['launches'] = steps.map((s) => {
    const buffers: Record<string, string> = {};
    const kb: K.KBuffer[] = [];
    s.reads.forEach((r) => { buffers[r] = r; kb.push({ name: r, type: 'f32', access: 'read' }); });
    buffers[s.write] = s.write;
    kb.push({ name: s.write, type: 'f32', access: 'read_write' });
    const i = K.v('i');
    const body = [K.decl('i', 'i32', K.add(K.mul(K.wg(), K.i32(WG)), K.tid())), K.iff(K.lt(i, K.v('n')), s.body(i))];
    const kernel: K.Kernel = { name: s.name, workgroup: [WG, 1, 1], grid: [K.div(K.add(K.v('n'), K.i32(WG - 1)), K.i32(WG)), K.i32(1), K.i32(1)], buffers: kb, scalars: [{ name: 'n', type: 'i32' }], shared: [], body };
    return { kernel, buffers, scalars: { n: 'N' }, target: s.write, how: 'elementwise' as const };
  });
  return {
    fn: { name: 'synthetic', sizes: ['N'], params: [{ name: 'x', v: 'x', dtype: 'f32', shape: [N] }], outputs: outputs.map((o) => ({ name: o, v: o, dtype: 'f32', shape: [N] })), vars, body: [] },
    schedule: makeSchedule('parallel'), launches, constants: new Map(), contractions: new Map(), half: new Map(), states: [],
  } as unknown as Plan;
}

const ld = (a: string, i: K.KExpr): K.KExpr => K.load(a, i);
const st = (a: string, i: K.KExpr, v: K.KExpr): K.KStmt[] => [K.store(a, i, v)];
const input = (data: ArrayLike<number>): Map<string, Value> => new Map([['x', { shape: [data.length], data: data as Float64Array }]]);
const values = (n: number, seed: number): Float32Array => { const r = prng(seed); return Float32Array.from({ length: n }, () => Math.fround(r() * 4 - 2)); };
const f = Math.fround;

/** t = 2x + 1; u = t * x; y = u + t; z = t - 1 (t, u intermediates; y, z outputs). */
const chain = synthetic([
  { name: 'c_t', reads: ['x'], write: 't', body: (i) => st('t', i, K.add(K.mul(ld('x', i), K.f32(2)), K.f32(1))) },
  { name: 'c_u', reads: ['t', 'x'], write: 'u', body: (i) => st('u', i, K.mul(ld('t', i), ld('x', i))) },
  { name: 'c_y', reads: ['u', 't'], write: 'y', body: (i) => st('y', i, K.add(ld('u', i), ld('t', i))) },
  { name: 'c_z', reads: ['t'], write: 'z', body: (i) => st('z', i, K.sub(ld('t', i), K.f32(1))) },
], ['y', 'z']);
const chainWant = (x: ArrayLike<number>): { y: number[]; z: number[] } => {
  const t = Array.from(x, (v) => f(f(f(v) * 2) + 1));
  return { y: t.map((tv, i) => f(f(tv * f(x[i]!)) + tv)), z: t.map((tv) => f(tv - 1)) };
};

/** acc += x; acc += x * x; y = acc: acc's first launch loads it, so its slot must start zeroed. */
const accumulate = synthetic([
  { name: 'a_1', reads: ['x'], write: 'acc', accumulate: true, body: (i) => st('acc', i, K.add(ld('acc', i), ld('x', i))) },
  { name: 'a_2', reads: ['x'], write: 'acc', accumulate: true, body: (i) => st('acc', i, K.add(ld('acc', i), K.mul(ld('x', i), ld('x', i)))) },
  { name: 'a_y', reads: ['acc'], write: 'y', body: (i) => st('y', i, ld('acc', i)) },
], ['y']);
const accWant = (x: ArrayLike<number>): number[] => Array.from(x, (v) => f(f(0 + f(v)) + f(f(v) * f(v))));

/** h is written only where i is even; y = h + 1 reads all of it (a read of unwritten memory). */
const holes = synthetic([
  { name: 'h_w', reads: ['x'], write: 'h', body: (i) => [K.iff(K.bin('==', K.bin('%', i, K.i32(2)), K.i32(0)), st('h', i, ld('x', i)))] },
  { name: 'h_y', reads: ['h'], write: 'y', body: (i) => st('y', i, K.add(ld('h', i), K.f32(1))) },
], ['y']);

const arr = (t: { data: ArrayLike<number> } | undefined): number[] => Array.from(t!.data);

describe.skipIf(!!why)('native launch lists', () => {
  test('the same plan twice with different inputs: each run its own answer; run 1\'s outputs unchanged by run 2', async () => {
    const N = 300;
    const x1 = values(N, 1), x2 = values(N, 2);
    const r1 = await runPlanNative(chain, input(x1));
    const y1 = arr(r1.get('y')), z1 = arr(r1.get('z'));
    expect(y1).toEqual(chainWant(x1).y);
    expect(z1).toEqual(chainWant(x1).z);
    const r2 = await runPlanNative(chain, input(x2));
    expect(arr(r2.get('y'))).toEqual(chainWant(x2).y);
    expect(arr(r2.get('z'))).toEqual(chainWant(x2).z);
    // Run 1's arrays are the caller's: not reused by run 2.
    expect(arr(r1.get('y'))).toEqual(y1);
    expect(arr(r1.get('z'))).toEqual(z1);
    expect(r2.get('y')!.data.buffer).not.toBe(r1.get('y')!.data.buffer);
    // Writing into an output does not change the next run.
    (r2.get('y')!.data as Float32Array).fill(123);
    expect(arr((await runPlanNative(chain, input(x2))).get('y'))).toEqual(chainWant(x2).y);
    // The same input array changed in place between runs (an input read in place is re-read).
    const x = x1.slice();
    expect(arr((await runPlanNative(chain, input(x))).get('y'))).toEqual(chainWant(x1).y);
    x.set(x2);
    expect(arr((await runPlanNative(chain, input(x))).get('y'))).toEqual(chainWant(x2).y);
    // Inputs are never written; a float64 input is converted each run.
    expect(Array.from(x)).toEqual(Array.from(x2));
    expect(arr((await runPlanNative(chain, input(Float64Array.from(x1)))).get('y'))).toEqual(chainWant(x1).y);
    // Other shapes (a list of their own), more of them than are kept, then the first again.
    for (let k = 0; k <= LISTS_PER_PLAN; k++) {
      const xs = values(10 + 37 * k, 10 + k);
      expect(arr((await runPlanNative(chain, input(xs))).get('z')), `N = ${xs.length}`).toEqual(chainWant(xs).z);
    }
    expect(arr((await runPlanNative(chain, input(x2))).get('y'))).toEqual(chainWant(x2).y);
    // With memory reuse off too.
    expect(arr((await runPlanNative(chain, input(x1), { reuse: false })).get('y'))).toEqual(chainWant(x1).y);
  });

  test('a slot that an accumulation needs zeroed is zero again on every run', async () => {
    const N = 200;
    const m = planMemory(accumulate, new Map([['N', N]]));
    const slot = m.slotOf.get('acc')!;
    expect(m.slots[slot]!.zero).toBe(true);
    const x1 = values(N, 3), x2 = values(N, 4);
    for (const [x, tag] of [[x1, 'run 1'], [x1, 'run 2'], [x2, 'run 3'], [x1, 'run 4']] as const) {
      expect(arr((await runPlanNative(accumulate, input(x))).get('y')), tag).toEqual(accWant(x));
    }
    // Poison fills slots, but a slot that needs zeros still starts at zero.
    expect(arr((await runPlanNative(accumulate, input(x2), { poison: NaN })).get('y'))).toEqual(accWant(x2));
    expect(arr((await runPlanNative(accumulate, input(x2))).get('y'))).toEqual(accWant(x2));
  });

  test('poison shows a read of unwritten memory on every run, also after runs without it', async () => {
    const N = 130;
    const x = values(N, 5);
    const plain = arr((await runPlanNative(holes, input(x))).get('y'));
    for (let i = 0; i < N; i += 2) expect(plain[i]).toBe(f(x[i]! + 1));
    for (const p of [NaN, 7, NaN]) {
      const y = arr((await runPlanNative(holes, input(x), { poison: p })).get('y'));
      for (let i = 0; i < N; i++) {
        if (i % 2 === 0) expect(y[i], `poison ${p}, element ${i}`).toBe(f(x[i]! + 1));
        else expect(y[i], `poison ${p}, element ${i}`).toBe(p + 1);
      }
    }
    // The well-behaved plans are unaffected by poison.
    expect(arr((await runPlanNative(chain, input(x), { poison: NaN })).get('y'))).toEqual(chainWant(x).y);
  });

  test('the per kernel profile counts every launch of every run; an out-of-bounds access names its kernel', async () => {
    const prof = new Map<string, { launches: number; ms: number }>();
    setNativeProfile(prof);
    try {
      await runPlanNative(chain, input(values(64, 6)));
      await runPlanNative(chain, input(values(64, 7)));
    } finally { setNativeProfile(undefined); }
    expect([...prof.keys()].sort()).toEqual(['c_t', 'c_u', 'c_y', 'c_z']);
    for (const r of prof.values()) { expect(r.launches).toBe(2); expect(r.ms).toBeGreaterThanOrEqual(0); }
    await runPlanNative(chain, input(values(64, 8)));
    expect(prof.get('c_t')!.launches).toBe(2);
    // The second launch reads one past the end; the first launch's work is done.
    const bad = synthetic([
      { name: 'b_ok', reads: ['x'], write: 't', body: (i) => st('t', i, ld('x', i)) },
      { name: 'b_oob', reads: ['t'], write: 'y', body: (i) => st('y', i, ld('t', K.add(i, K.i32(1)))) },
    ], ['y']);
    await expect(runPlanNative(bad, input(values(50, 9)))).rejects.toThrow(/^out-of-bounds load in kernel b_oob: buffer 't' index 50, length 50 \(workgroup \(0,0,0\), thread \(49,0,0\)\)$/);
    // An input with fewer values than its shape is one line.
    await expect(runPlanNative(chain, new Map([['x', { shape: [10], data: new Float64Array(4) }]]))).rejects.toThrow(/^input 'x' has 4 values but shape \[10\] needs 10$/);
  });

  test('retention chunkwise forward and backward: repeated runs with new inputs agree with the CPU executor, also poisoned', async () => {
    const fn = loadFn('retention', 'retention');
    const sizes = new Map([['B', 1], ['H', 2], ['T', 21], ['K', 8], ['V', 8]]);
    for (const backward of [false, true]) {
      const p = compilePlanOf(fn, 'chunkwise', 8, backward, { K: 8, V: 8 });
      const mk = (seed: number): Map<string, Value> => {
        const r = prng(seed);
        return new Map(p.fn.params.map((q) => {
          const shape = q.shape.map((d) => devaluate(d, sizes)!);
          return [q.name, tensor(shape, () => (q.name === 'gamma' ? 0.8 + 0.19 * r() : r() * 2 - 1))] as const;
        }));
      };
      const runs = [mk(11), mk(12), mk(13)];
      const outs = [];
      for (const [i, inp] of runs.entries()) outs.push(await runPlanNative(p, inp, i === 1 ? { poison: NaN } : {}));
      for (const [i, inp] of runs.entries()) {
        for (const [name, v] of runPlanCpu(p, inp)) {
          const got = outs[i]!.get(name)!.data;
          let e = 0, s2 = 0;
          for (let j = 0; j < v.data.length; j++) { e += (got[j]! - v.data[j]!) ** 2; s2 += v.data[j]! ** 2; }
          expect(Math.sqrt(e / Math.max(s2, 1e-30)), `${backward ? 'backward' : 'forward'} run ${i} ${name}`).toBeLessThan(1e-5);
        }
      }
    }
  }, 120_000);
});
