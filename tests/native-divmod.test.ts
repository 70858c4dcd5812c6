// Blocked work-item loops of the native printer (targets/native/divmod-blocks.ts): which
// divisions and remainders by constants the block rewrite takes (and which it must leave: unknown
// alignment, a divisor the block does not divide, a negative base, a coefficient too large, a
// block below 16), and that the blocked loop computes what the loop computes: on the CPU executor
// (the rewritten kernel IR itself, over scalars that make the premises fail and the int32 wrap),
// and through the native printer bit for bit against the executor, out-of-bounds reports included.
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import * as K from '../compiler/kir.js';
import type { Kernel, KExpr, KStmt } from '../compiler/kir.js';
import { compileKernel, runKernel } from '../targets/cpu/executor.js';
import { WORK_ITEM } from '../targets/native/barrier-split.js';
import { BLOCK_OUTER, blockPlan, type Form, outerForm, rangeOf, seqPlan } from '../targets/native/divmod-blocks.js';
import { findCompiler, NO_COMPILER } from '../targets/native/compile.js';
import { printNative } from '../targets/native/printer.js';
import { loadNativeAddon } from '../runtime/native/addon.js';
import { prepareKernels, runNativeKernel } from '../runtime/native/runner.js';

type For = Extract<KStmt, { k: 'for' }>;
const N = 256;
const t = K.v(WORK_ITEM);
/** gid = wg.x * 256 + rn_t, as the barrier split writes a work-item loop. */
const gid = K.add(K.mul(K.wg(), K.i32(N)), t);
const c = K.i32;
const mod = (a: KExpr, b: KExpr): KExpr => K.bin('%', a, b);
const div = (a: KExpr, b: KExpr): KExpr => K.bin('/', a, b);
const loopOf = (body: KStmt[]): For => K.loop(WORK_ITEM, c(0), c(N), body) as For;
/** The work-item loop storing each expression at out[(wg * J + j) * 256 + rn_t]. */
const storing = (es: KExpr[]): For => loopOf(es.map((e, j) => K.store('out', K.add(K.mul(K.add(K.mul(K.wg(), c(es.length)), c(j)), c(N)), t), e)));
const planOf = (es: KExpr[]) => blockPlan(storing(es), new Set());

const contains = (ss: readonly KStmt[], pred: (e: KExpr) => boolean): boolean => ss.some(function has(s: KStmt): boolean {
  const ex = (e: KExpr): boolean => pred(e) || (e.k === 'bin' ? ex(e.a) || ex(e.b) : e.k === 'un' || e.k === 'cast' ? ex(e.a) : e.k === 'select' ? ex(e.cond) || ex(e.a) || ex(e.b) : e.k === 'load' ? ex(e.index) : false);
  switch (s.k) {
    case 'decl': return ex(s.init);
    case 'store': return ex(s.index) || ex(s.value);
    case 'if': return ex(s.cond) || s.then.some(has) || s.else.some(has);
    case 'for': return s.body.some(has);
    default: return false;
  }
});
/** A division or remainder of the work-item by `k` is left in the block's body. */
const itemDivLeft = (ss: readonly KStmt[], k: number): boolean => contains(ss, (e) => e.k === 'bin' && (e.op === '/' || e.op === '%') && e.b.k === 'const' && e.b.value === k && contains([K.decl('x', 'i32', e.a)], (x) => x.k === 'var' && (x.name === 'rn_bi' || x.name === WORK_ITEM)));

describe('the block rewrite (divmod-blocks.ts)', () => {
  test('gid % 128, gid / 128 and a head split by 64 become uniform or affine in blocks of 64, under one premise (u >= 0)', () => {
    const e = mod(gid, c(128));
    const p = planOf([e, div(gid, c(128)), div(e, c(64)), mod(e, c(64))])!;
    expect(p.size).toBe(64);
    expect(p.blocks).toBe(4);
    expect(p.rewritten).toBe(6); // e is gid % 128 again in e / 64 and e % 64
    // wg.x * 256 may wrap for a huge grid: its sign is tested per block.
    expect(p.premises).toEqual([K.bin('>=', K.add(K.mul(K.wg(), c(N)), K.mul(K.v(BLOCK_OUTER), c(64))), c(0))]);
    for (const k of [128, 64]) expect(itemDivLeft(p.inner.body, k)).toBe(false);
    expect(p.plain.body.slice(1)).toEqual(storing([e, div(gid, c(128)), div(e, c(64)), mod(e, c(64))]).body);
  });
  test('the work-item alone needs no premise (its range is known); tid.y = rn_t / 16 of a 16x16 workgroup is uniform in blocks of 16', () => {
    const p = planOf([mod(t, c(16)), div(t, c(16))])!;
    expect(p.size).toBe(16);
    expect(p.premises).toEqual([]);
  });
  test('leaves what it cannot show: unknown alignment, a coefficient past the alignment, a provably negative base, a divisor below 16', () => {
    expect(planOf([mod(K.add(gid, K.v('s')), c(64))])).toBeUndefined(); // s: any int32, gid + s aligned to nothing
    expect(planOf([mod(K.mul(gid, c(2)), c(64))])).toBeUndefined(); // 2 * 63 >= 64
    expect(planOf([div(K.sub(t, c(1000)), c(64))])).toBeUndefined(); // always negative: truncation is not the block's floor
    expect(planOf([mod(gid, c(2)), div(gid, c(2))])).toBeUndefined(); // d % 2 keeps the full vector
  });
  test('a divisor the block does not divide stays as written beside one it does', () => {
    const p = planOf([mod(gid, c(100)), mod(gid, c(64))])!;
    expect(p.size).toBe(64);
    expect(p.rewritten).toBe(1);
    expect(itemDivLeft(p.inner.body, 100)).toBe(true);
    expect(itemDivLeft(p.inner.body, 64)).toBe(false);
  });
  test('guards and clamps the ranges decide fold; a folded && keeps an operand with a load', () => {
    const ie = mod(gid, c(128)), ix = div(ie, c(64));
    const guarded = K.select(K.and(K.bin('>=', ix, c(0)), K.lt(ix, c(2))), K.load('h', K.bin('min', K.bin('max', ix, c(0)), c(1)), 'i32'), c(0));
    const p = planOf([guarded])!;
    expect(contains(p.inner.body, (e) => e.k === 'select')).toBe(false);
    expect(contains(p.inner.body, (e) => e.k === 'bin' && (e.op === 'min' || e.op === 'max'))).toBe(false);
    const withLoad = K.select(K.and(K.lt(c(0), K.load('h', t, 'i32')), K.lt(mod(gid, c(64)), c(0))), c(1), c(2));
    const q = planOf([withLoad])!;
    expect(contains(q.inner.body, (e) => e.k === 'load' && e.array === 'h')).toBe(true); // its out-of-bounds report stays
  });
});

describe('sequential loops (the CPU dense kernel\'s packing: gr = m01 + pr, pr < min(32, ...))', () => {
  const m01 = K.mul(K.v('s'), c(32)); // wg.y * 32 in the dense kernel; a scalar here, to reach the int32 wrap
  const pvInit = K.bin('min', c(32), K.sub(c(128), K.v('m01')));
  const outer = (name: string): Form | undefined => (name === 'm01' ? outerForm(m01, new Set()) : name === 'pv' ? outerForm(pvInit, new Set(), outer) : undefined);
  const gr = K.add(K.v('m01'), K.v('pr'));
  const pack = (extra: KStmt[] = []) => K.loop('pr', c(0), K.v('pv'), [K.decl('gr', 'i32', gr), ...extra,
    K.store('out', K.add(K.mul(K.v('pk'), c(32)), K.v('pr')), K.add(mod(K.v('gr'), c(64)), K.mul(div(K.v('gr'), c(64)), c(1000))))]) as For;
  test('gr % 64 and gr / 64 become m01 % 64 + pr and m01 / 64 under m01 >= 0', () => {
    const p = seqPlan(pack(), new Set(), outer)!;
    expect(p.premises).toEqual([K.bin('>=', K.v('m01'), c(0))]);
    expect(itemDivLeft(p.loop.body, 64)).toBe(false);
    // Without the bound on the trip count (pv unknown) or the alignment of m01, nothing.
    expect(seqPlan(pack(), new Set(), () => undefined)).toBeUndefined();
    expect(seqPlan(pack(), new Set(), (n) => (n === 'pv' ? outer(n) : undefined))).toBeUndefined();
    // An end the body changes is evaluated anew each iteration: not taken.
    expect(seqPlan(pack([K.assign('pv', c(3))]), new Set(['pv']), outer)).toBeUndefined();
  });
  test('computes what the loop computes on the executor, m01 negative (int32 wrap) or not', () => {
    const p = seqPlan(pack(), new Set(), outer)!;
    const kernelOf = (name: string, l: KStmt): Kernel => loopKernel(name, [K.decl('m01', 'i32', m01), K.decl('pv', 'i32', pvInit), K.loop('pk', c(0), c(2), [l])], 1);
    const orig = compileKernel(kernelOf('sorig', pack())), rew = compileKernel(kernelOf('srew', K.iff(p.premises[0]!, [p.loop], [pack()])));
    for (const sv of [0, 1, 2, 3, 4, -1, -3, 67108863, 67108864, 67108865, -67108864, 100000000]) {
      const a = new Int32Array(64), b = new Int32Array(64);
      orig.run({ buffers: { h: new Int32Array(1), out: a }, scalars: { s: sv, n: 0 } });
      rew.run({ buffers: { h: new Int32Array(1), out: b }, scalars: { s: sv, n: 0 } });
      expect(b).toEqual(a);
    }
  });
});

/** The kernel of a work-item loop, one work-item per workgroup thread slot, run as a sequential loop (workgroup 1). */
function loopKernel(name: string, body: KStmt[], groups: number): Kernel {
  return {
    name, workgroup: [1, 1, 1], grid: [c(groups), c(1), c(1)],
    buffers: [{ name: 'h', type: 'i32', access: 'read' }, { name: 'out', type: 'i32', access: 'read_write' }],
    scalars: [{ name: 's', type: 'i32' }, { name: 'n', type: 'i32' }], shared: [], body,
  };
}

describe('a blocked loop computes what the loop computes (CPU executor, kernel IR semantics)', () => {
  const s = K.v('s'), n = K.v('n');
  const shifted = K.add(gid, K.mul(s, c(64)));
  const ie = mod(shifted, c(128));
  const floorDiv = (a: KExpr, k: number): KExpr => K.select(K.and(K.bin('!=', mod(a, c(k)), c(0)), K.bin('!=', K.lt(mod(a, c(k)), c(0)), K.lt(c(k), c(0)))), K.sub(div(a, c(k)), c(1)), div(a, c(k)));
  const es: KExpr[] = [
    ie, div(shifted, c(128)), div(ie, c(64)), mod(ie, c(64)), floorDiv(ie, 64), floorDiv(shifted, 64),
    K.bin('min', K.bin('max', div(ie, c(64)), c(0)), c(1)), mod(mod(gid, c(128)), c(64)), div(mod(gid, c(256)), c(16)),
    K.select(K.lt(shifted, n), c(1), c(0)), K.select(K.bin('>=', mod(shifted, c(64)), c(32)), div(gid, c(64)), mod(gid, c(48))),
    K.select(K.lt(mod(gid, c(64)), n), K.load('h', K.bin('min', K.bin('max', mod(gid, c(64)), c(0)), c(63)), 'i32'), c(-1)),
    div(K.sub(gid, K.mul(n, c(128))), c(64)), mod(t, c(16)), div(t, c(16)), mod(K.add(gid, s), c(64)),
  ];
  const loop = storing(es);
  const plan = blockPlan(loop, new Set())!;
  const blocked = K.loop(BLOCK_OUTER, c(0), c(plan.blocks), [plan.premises.length ? K.iff(plan.premises.reduce((a, b) => K.and(a, b)), [plan.inner], [plan.plain]) : plan.inner]);
  const G = 3, words = G * es.length * N;
  const original = loopKernel('orig', [loop], G), rewritten = loopKernel('blocked', [blocked], G);
  const h = Int32Array.from({ length: 64 }, (_, i) => i * 7 - 100);
  const compiled = new Map([original, rewritten].map((k) => [k, compileKernel(k)]));
  const run = (k: Kernel, sv: number, nv: number): Int32Array => {
    const out = new Int32Array(words);
    compiled.get(k)!.run({ buffers: { h, out }, scalars: { s: sv, n: nv } });
    return out;
  };
  test('the plan rewrites and keeps a premise (s * 64 may make the base negative or wrap)', () => {
    expect(plan.size).toBe(16);
    expect(plan.premises.length).toBeGreaterThan(0);
  });
  test('a ranged loop (end a variable the barrier split bounds by the workgroup) runs its last block short', () => {
    const wi = K.bin('min', K.bin('max', K.v('n'), c(0)), c(N));
    const ranged = { ...loop, end: K.v('rn_wi') };
    const p = blockPlan(ranged, new Set(), (name) => (name === 'rn_wi' ? rangeOf(wi, new Set()) : undefined))!;
    expect(p.limit).toEqual(K.v('rn_wi'));
    expect(blockPlan(ranged, new Set())).toBeUndefined(); // no bound known: not blocked
    const nest = K.loop(BLOCK_OUTER, c(0), c(p.blocks), [K.iff(K.lt(K.mul(K.v(BLOCK_OUTER), c(p.size)), K.v('rn_wi')), [p.premises.length ? K.iff(p.premises.reduce((a, b) => K.and(a, b)), [p.inner], [p.plain]) : p.inner])]);
    const a = loopKernel('rorig', [K.decl('rn_wi', 'i32', wi), ranged], G), b = loopKernel('rblocked', [K.decl('rn_wi', 'i32', wi), nest], G);
    for (const [sv, nv] of [[0, 0], [3, 1], [-5, 17], [2 ** 25 - 1, 255], [-1, 256], [7, 1000], [9, -4]]) {
      const outA = new Int32Array(words), outB = new Int32Array(words);
      runKernel(a, { buffers: { h, out: outA }, scalars: { s: sv!, n: nv! } });
      runKernel(b, { buffers: { h, out: outB }, scalars: { s: sv!, n: nv! } });
      expect(outB).toEqual(outA);
    }
  });
  test('over shifts that make some blocks fail their premise, wrap int32, or keep every block', () => {
    const INT_MAX = 2147483647;
    const shifts = fc.oneof(fc.integer({ min: -40, max: 40 }), fc.integer({ min: -(2 ** 25), max: 2 ** 25 }), fc.constantFrom(0, -1, -12, 2 ** 25 - 1, -(2 ** 25), Math.floor(INT_MAX / 64)));
    fc.assert(fc.property(shifts, fc.integer({ min: -1000, max: 1000 }), (sv, nv) => {
      expect(run(rewritten, sv, nv)).toEqual(run(original, sv, nv));
    }), { numRuns: 40 });
  }, 120_000);
});

const cc = findCompiler();
const addon = cc ? loadNativeAddon() : { error: NO_COMPILER };
const why = !cc ? NO_COMPILER : 'error' in addon ? addon.error : undefined;
if (why) console.log(`[native-divmod] skipped: ${why}`);
const runNative = why ? test.skip : test;

describe('native blocked map kernels against the executor', () => {
  const WG = 256;
  const g = K.add(K.mul(K.wg(), K.i32(WG)), K.tid());
  const B = K.v('B'), T = K.v('T'), s = K.v('s');
  const clamp = (x: KExpr, lo: KExpr, hi: KExpr): KExpr => K.bin('min', K.bin('max', x, lo), hi);
  const floorDiv = (a: KExpr, k: number): KExpr => K.select(K.and(K.bin('!=', mod(a, c(k)), c(0)), K.bin('!=', K.lt(mod(a, c(k)), c(0)), K.lt(c(k), c(0)))), K.sub(div(a, c(k)), c(1)), div(a, c(k)));
  const floorMod = (a: KExpr, k: number): KExpr => K.select(K.and(K.bin('!=', mod(a, c(k)), c(0)), K.bin('!=', K.lt(mod(a, c(k)), c(0)), K.lt(c(k), c(0)))), K.add(mod(a, c(k)), c(k)), mod(a, c(k)));
  /** The gate-gradient map of the tiny RetNet's backward: a row of 128 split into 2 heads of 64, guarded and clamped. */
  const gate: Kernel = {
    name: 'gate', workgroup: [WG, 1, 1], grid: [div(K.add(K.mul(K.mul(B, T), c(128)), c(WG - 1)), c(WG)), c(1), c(1)],
    buffers: [{ name: 'x', type: 'f32', access: 'read' }, { name: 'h', type: 'f32', access: 'read' }, { name: 'o', type: 'f32', access: 'read' }, { name: 'y', type: 'f32', access: 'read_write' }],
    scalars: [{ name: 'B', type: 'i32' }, { name: 'T', type: 'i32' }, { name: 's', type: 'i32' }], shared: [],
    body: [
      K.decl('gid', 'i32', g),
      K.iff(K.lt(K.v('gid'), K.mul(K.mul(B, T), c(128))), [
        K.decl('i_e', 'i32', mod(K.v('gid'), c(128))),
        K.decl('i_t', 'i32', mod(div(K.v('gid'), c(128)), T)),
        K.decl('i_b', 'i32', div(div(K.v('gid'), c(128)), T)),
        K.decl('ix1', 'i32', floorDiv(K.v('i_e'), 64)),
        K.decl('ix3', 'i32', floorMod(K.v('i_e'), 64)),
        K.decl('row', 'i32', K.add(K.mul(clamp(K.v('i_b'), c(0), K.sub(B, c(1))), c(2)), clamp(K.v('ix1'), c(0), c(1)))),
        K.decl('sh', 'i32', K.add(K.v('gid'), K.mul(s, c(64)))),
        K.store('y', K.v('gid'), K.mul(K.mul(K.load('x', K.v('gid')),
          K.select(K.and(K.bin('>=', K.v('ix1'), c(0)), K.lt(K.v('ix1'), c(2))), K.load('h', K.add(K.mul(K.v('row'), T), clamp(K.v('i_t'), c(0), K.sub(T, c(1))))), K.f32(0))),
          K.add(K.select(K.and(K.and(K.bin('>=', K.v('ix1'), c(0)), K.lt(K.v('ix1'), c(2))), K.and(K.bin('>=', K.v('ix3'), c(0)), K.lt(K.v('ix3'), c(64)))),
            K.load('o', K.add(K.mul(K.add(K.mul(K.v('row'), T), clamp(K.v('i_t'), c(0), K.sub(T, c(1)))), c(64)), clamp(K.v('ix3'), c(0), c(63)))), K.f32(0)),
          K.add(K.load('x', mod(K.add(mod(K.v('sh'), c(128)), c(128)), c(128))), K.cast(mod(K.v('sh'), c(128)), 'f32'))))),
      ]),
    ],
  };
  const rnd = (n: number, seed: number): Float32Array => { let x = seed; return Float32Array.from({ length: n }, () => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) / 2 ** 32) * 2 - 1); };
  const buffers = (b: number, tt: number) => ({ x: rnd(b * tt * 128, 1), h: rnd(b * 2 * tt, 2), o: rnd(b * 2 * tt * 64, 3), y: new Float32Array(b * tt * 128) });
  test('the gate map prints in blocks of 64 without a division of the work-item by 128 or 64 in its fast path', () => {
    const code = printNative([gate]).code;
    expect(code).toContain('blocks of 64 work-items');
  });
  runNative('bit for bit as the executor, full and partial workgroups, shifts that fail the premise in some blocks', async () => {
    const p = await prepareKernels([gate]);
    for (const [b, tt, sv] of [[2, 8, 0], [3, 5, -7], [1, 3, 2 ** 25 - 1], [2, 6, -(2 ** 25)]] as const) {
      const want = buffers(b, tt), got = buffers(b, tt);
      runKernel(gate, { buffers: want, scalars: { B: b, T: tt, s: sv } });
      runNativeKernel(p, gate, { buffers: got, scalars: { B: b, T: tt, s: sv } });
      expect(new Uint32Array(got.y.buffer)).toEqual(new Uint32Array(want.y.buffer));
    }
  });
  runNative('an out-of-bounds load reports what the executor reports', async () => {
    const k: Kernel = {
      name: 'oobmap', workgroup: [WG, 1, 1], grid: [c(2), c(1), c(1)],
      buffers: [{ name: 'x', type: 'f32', access: 'read' }, { name: 'y', type: 'f32', access: 'read_write' }],
      scalars: [{ name: 's', type: 'i32' }], shared: [],
      body: [K.decl('gid', 'i32', g), K.store('y', K.v('gid'), K.load('x', K.add(K.add(K.mul(div(K.v('gid'), c(128)), c(128)), mod(K.v('gid'), c(64))), s)))],
    };
    expect(printNative([k]).code).toContain('blocks of 64 work-items');
    const p = await prepareKernels([k]);
    for (const sv of [0, 70, -3, 200]) {
      const args = () => ({ buffers: { x: rnd(582, 4), y: new Float32Array(512) }, scalars: { s: sv } });
      let want = '', got = '';
      const a = args(), b = args();
      try { runKernel(k, a); } catch (e) { want = (e as Error).message; }
      try { runNativeKernel(p, k, b); } catch (e) { got = (e as Error).message; }
      expect(got).toBe(want);
      if (!want) expect(new Uint32Array(b.buffers.y.buffer)).toEqual(new Uint32Array(a.buffers.y.buffer));
    }
  });
});
