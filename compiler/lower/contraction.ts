// The three schedules of a recognised contraction (analysis.ts), in either direction:
//   y[t, j] = scale * sum_{s before t in scan order} w(t, s) (a[t, :] . b[s, :]) c[s, j]
// Causal sums scan positions forward, anti-causal ones (gradients) backward; in scan terms
// both read the same, so each form is written once. A workgroup owns one batch entry and
// a tile of value columns; in the recurrent and chunkwise forms each thread owns a slice of at
// most STATE_MAX state entries of one column j (tiling the key axis), so registers do not grow with K.
// Decay weights, factors and gates are contraction-common.ts's (shared with chunk-parallel.ts):
// exp(L(later) - L(earlier)) from differences, so only non-positive numbers are exponentiated.
import type { Contraction } from '../analysis.js';
import { POS } from '../analysis.js';
import type { IrStmt, Node } from '../ir.js';
import * as K from '../kir.js';
import type { Kernel, KExpr, KStmt } from '../kir.js';
import type { Schedule } from '../schedule.js';
import { accurateExp, batchOf, distance, exponent, factor, localGates, posOf, pow2AtLeast, type ScanCtx, weight, withSigns } from './contraction-common.js';
import { dimExpr, type ExprLowering, fold, LowerError } from './expr.js';

interface Ctx extends ScanCtx {
  Kc: number;
  /** Key entries per thread slice, slices per column, columns per workgroup, threads (WX * NK). */
  KT: number;
  NK: number;
  WX: number;
  WG: number;
}

/** The base of a fixed decay's lambda = log(base) (or its near-1 form select(.., log1p(base - 1), log(base))). */
function logBase(lambda: Node): Node | undefined {
  if (lambda.op === 'unary' && lambda.arg === 'log') return lambda.src[0];
  if (lambda.op === 'select') return logBase(lambda.src[2]!);
  return undefined;
}

/**
 * The decay of one scan step, arriving at position p: the gate itself where there is one, and
 * the base gamma itself for a fixed decay lambda = log gamma (exp(log gamma) is up to 5 ulp off
 * on lavapipe, an error that the recurrent state compounds over 1 / (1 - gamma) steps).
 */
function stepWeight(x: Ctx, p: KExpr, out: KStmt[]): KExpr {
  const prev = posOf(x, K.sub(K.v('n'), K.i32(1)));
  const bases: KExpr[] = [];
  const parts: KExpr[] = [];
  for (const term of x.c.decay) {
    const base = term.kind === 'fixed' ? logBase(term.lambda) : undefined;
    if (base) bases.push(K.cast(x.L.expr(base, x.batch, out), 'f32'));
    else if (term.kind === 'fixed') parts.push(x.L.expr(term.lambda, x.batch, out));
    // Causal: L(p) - L(p-1) = g[p]; anti-causal: L(p+1) - L(p) = g[p+1].
    else if (term.step) parts.push(x.L.expr(term.step, new Map([...x.batch, [POS, { expr: x.c.direction === 'causal' ? p : K.add(p, K.i32(1)) }]]), out));
    else parts.push(exponent({ ...x, c: { ...x.c, decay: [term] } }, p, prev, out));
  }
  const factors = parts.length ? [accurateExp(parts.reduce((a, b) => K.add(a, b)), out), ...bases] : bases;
  return withSigns(x, factors.reduce((a, b) => K.mul(a, b)), undefined, out);
}

/** The whole pairwise weight: the decay, times the distance for order-1 contractions. */
function pairWeight(x: Ctx, p: KExpr, q: KExpr, out: KStmt[], scan?: [KExpr, KExpr]): KExpr {
  const w = weight(x, p, q, out, scan);
  return x.c.order === 1 ? K.mul(w, distance(x, p, q)) : w;
}

/** Most state entries a thread keeps (all its state arrays together) unless the schedule's tiles.state says otherwise; longer key axes are tiled. */
const STATE_MAX = 64;
/** Most threads of a contraction workgroup (WebGPU's guaranteed maxComputeInvocationsPerWorkgroup). */
const MAX_THREADS = 256;
/** Rows of a chunk scored, then reduced, together in the chunkwise form. */
const ROW_BLOCK = 8;

/**
 * How a workgroup covers the state: WX value columns, each split into NK slices of KT key
 * entries (the last one zero-padded), one slice per thread: WG = WX * NK threads, thread
 * tid = kt * WX + (j mod WX). Each thread's registers hold `arrays` x KT <= STATE_MAX state
 * entries whatever K is (S, and S1 for order-1 contractions); q . S is the sum of the NK
 * threads' parts (a reduction in shared memory).
 */
function tiling(Kc: number, Vc: number, cap: number, arrays: 0 | 1 | 2, stateMax = STATE_MAX, JT = 1): { KT: number; NK: number; WX: number } {
  const NK = arrays ? Math.max(1, Math.ceil((Kc * arrays * JT) / stateMax)) : 1;
  let WX = pow2AtLeast(Math.ceil(Vc / JT), cap);
  while (WX > 1 && WX * NK > MAX_THREADS) WX /= 2;
  return { KT: Math.ceil(Kc / NK), NK, WX };
}

function setup(name: string, s: IrStmt, c: Contraction, L: ExprLowering, sched: Schedule, tileK: boolean, JT = 1): { x: Ctx; body: KStmt[]; grid: [KExpr, KExpr, KExpr]; Vc: number } {
  const constOf = (d: typeof c.K, what: string): number => {
    const e = dimExpr(d, L.sizes);
    if (e.k !== 'const') throw new LowerError(`${name}: the ${what} size must be known when compiling a ${sched.form} kernel`);
    return e.value;
  };
  const Kc = constOf(c.K, 'key');
  const Vc = constOf(c.V, 'value');
  const { KT, NK, WX } = tiling(Kc, Vc, sched.workgroup.contraction, tileK ? (c.order === 1 ? 2 : 1) : 0, sched.tiles.state, JT);
  const body: KStmt[] = [];
  // wg.y enumerates batch entries, last batch index fastest.
  const { batch, nb } = batchOf(c, L, body);
  // The thread's (first) column: columns j + jc WX (jc < JT) when it has JT of them.
  body.push(K.decl('j', 'i32', K.add(K.mul(K.wg('x'), K.i32(WX * JT)), NK > 1 ? K.bin('%', K.tid('x'), K.i32(WX)) : K.tid('x'))));
  if (NK > 1) body.push(K.decl('kt', 'i32', K.div(K.tid('x'), K.i32(WX))));
  const x: Ctx = { c, s, L, T: dimExpr(c.T, L.sizes), Kc, KT, NK, WX, WG: WX * NK, batch };
  return { x, body, grid: [K.i32(Math.ceil(Vc / (WX * JT))), nb, K.i32(1)], Vc };
}

function storeOut(x: Ctx, p: KExpr, j: KExpr, value: KExpr, out: KStmt[]): void {
  const idxs = x.s.indices.map((v) => (v.name === x.c.row ? p : v.name === x.c.value ? j : x.batch.get(v.name)!.expr));
  const scale = x.L.expr(x.c.scale, x.batch, out);
  const buf = x.L.buffer(x.s.target, true);
  out.push(K.store(buf, x.L.offset(x.s.target, idxs), scale.k === 'const' && scale.value === 1 ? value : K.mul(value, K.cast(scale, 'f32'))));
}

const jv = K.v('j');

/** P[e] = w(row, col) a[row] . b[col]: one entry of a score tile. */
function storeScore(x: Ctx, out: KStmt[], row: KExpr, col: KExpr, scan?: [KExpr, KExpr]): void {
  out.push(K.decl('dot', 'f32', K.f32(0)));
  const dotBody: KStmt[] = [];
  out.push(K.loop('i', K.i32(0), K.i32(x.Kc), dotBody));
  dotBody.push(K.assign('dot', K.add(K.v('dot', 'f32'), K.mul(factor(x, 'a', row, K.v('i'), dotBody), factor(x, 'b', col, K.v('i'), dotBody)))));
  out.push(K.store('P', K.v('e'), K.mul(K.v('dot', 'f32'), pairWeight(x, row, col, out, scan))));
}

/** The thread's slice S[KT] of column j, and S1[KT] (distance-weighted) for order-1 contractions. */
function initState(body: KStmt[], KT: number, order: 0 | 1): void {
  const names = order === 1 ? ['S', 'S1'] : ['S'];
  for (const n of names) body.push(K.local(n, 'f32', KT));
  body.push(K.loop('i', K.i32(0), K.i32(KT), names.map((n) => K.store(n, K.v('i'), K.f32(0)))));
}
const inV = (Vc: number) => K.lt(jv, K.i32(Vc));

/** The key index gi of entry i of the thread's state slice (declared in `out`). */
function sliceIndex(x: Ctx, out: KStmt[]): KExpr {
  if (x.NK === 1) return K.v('i');
  out.push(K.decl('gi', 'i32', K.add(K.mul(K.v('kt'), K.i32(x.KT)), K.v('i'))));
  return K.v('gi');
}

/** The statements of `out` that run for key entries gi < K only (the last slice may be padded). */
function inK(x: Ctx, gi: KExpr, out: KStmt[]): KStmt[] {
  if (x.NK * x.KT <= x.Kc) return out;
  const body: KStmt[] = [];
  out.push(K.iff(K.lt(gi, K.i32(x.Kc)), body));
  return body;
}

/**
 * After a barrier: the thread kt = 0 of each column j sums the NK parts red[base + r WX + j mod WX]
 * (r = 0..NK-1) of one output and stores it at position p.
 */
function reduceParts(x: Ctx, base: KExpr, p: KExpr, out: KStmt[], j: KExpr = jv): void {
  const at = (r: KExpr) => K.load('red', fold(K.add(base, K.add(K.mul(r, K.i32(x.WX)), K.tid('x')))));
  out.push(K.decl('tot', 'f32', at(K.i32(0))));
  out.push(K.loop('r', K.i32(1), K.i32(x.NK), [K.assign('tot', K.add(K.v('tot', 'f32'), at(K.v('r'))))]));
  storeOut(x, p, j, K.v('tot', 'f32'), out);
}
const leader = (Vc: number): KExpr => K.and(K.bin('==', K.v('kt'), K.i32(0)), inV(Vc));

/** One step per position; each thread keeps its slice of the state of column j in registers. */
export function lowerRecurrent(name: string, s: IrStmt, c: Contraction, L: ExprLowering, sched: Schedule): Kernel {
  const { x, body, grid, Vc } = setup(name, s, c, L, sched, true);
  const { Kc, KT, NK, WG } = x;
  const KP = NK * KT;
  initState(body, KT, c.order);
  const step: KStmt[] = [];
  body.push(K.loop('n', K.i32(0), x.T, step));
  step.push(K.decl('p', 'i32', posOf(x, K.v('n'))));
  const p = K.v('p');
  // Stage a[p, :] and b[p, :] in shared memory once for all columns (zero past K).
  const stage: KStmt[] = [];
  step.push(K.loop('i', K.tid('x'), K.i32(KP), stage, WG));
  const put: KStmt[] = [];
  put.push(K.store('sa', K.v('i'), factor(x, 'a', p, K.v('i'), put)));
  put.push(K.store('sb', K.v('i'), factor(x, 'b', p, K.v('i'), put)));
  if (KP > Kc) stage.push(K.iff(K.lt(K.v('i'), K.i32(Kc)), put, [K.store('sa', K.v('i'), K.f32(0)), K.store('sb', K.v('i'), K.f32(0))]));
  else stage.push(...put);
  step.push(K.barrier());
  const col: KStmt[] = [];
  step.push(K.iff(inV(Vc), col));
  // Decay from the previous position (none before the first).
  const decay: KStmt[] = [];
  if (c.decay.length) {
    col.push(K.decl('dec', 'f32', K.f32(1)));
    decay.push(K.assign('dec', stepWeight(x, p, decay)));
    col.push(K.iff(K.bin('>', K.v('n'), K.i32(0)), decay));
  }
  col.push(K.decl('cj', 'f32', factor(x, 'c', p, jv, col)));
  col.push(K.decl('acc', 'f32', K.f32(0)));
  const inner: KStmt[] = [];
  col.push(K.loop('i', K.i32(0), K.i32(KT), inner));
  const gi = sliceIndex(x, inner);
  const Si = K.load('S', K.v('i'));
  const sa = K.load('sa', gi);
  const kv = K.mul(K.load('sb', gi), K.v('cj', 'f32'));
  const decayed = (e: KExpr) => (c.decay.length ? K.mul(K.v('dec', 'f32'), e) : e);
  if (c.order === 1) {
    // S1[t] = sum_s (t - s) w(t, s) b[s] c[s] = dec (S1[t-1] + S[t-1]); the s = t term has weight 0.
    inner.push(K.store('S1', K.v('i'), decayed(K.add(K.load('S1', K.v('i')), Si))));
    inner.push(K.store('S', K.v('i'), K.add(decayed(Si), kv)));
    inner.push(K.assign('acc', K.add(K.v('acc', 'f32'), K.mul(sa, K.load('S1', K.v('i'))))));
  } else {
    inner.push(K.decl('sd', 'f32', decayed(Si)));
    if (c.strict) {
      inner.push(K.assign('acc', K.add(K.v('acc', 'f32'), K.mul(sa, K.v('sd', 'f32')))));
      inner.push(K.store('S', K.v('i'), K.add(K.v('sd', 'f32'), kv)));
    } else {
      inner.push(K.store('S', K.v('i'), K.add(K.v('sd', 'f32'), kv)));
      inner.push(K.assign('acc', K.add(K.v('acc', 'f32'), K.mul(sa, Si))));
    }
  }
  const shared = [{ name: 'sa', type: 'f32' as const, size: KP }, { name: 'sb', type: 'f32' as const, size: KP }];
  if (NK === 1) storeOut(x, p, jv, K.v('acc', 'f32'), col);
  else {
    col.push(K.store('red', K.tid('x'), K.v('acc', 'f32')));
    shared.push({ name: 'red', type: 'f32', size: WG });
  }
  step.push(K.barrier());
  // The next step's staging and partial sums come after its first barrier, so one pair suffices.
  if (NK > 1) {
    const fin: KStmt[] = [];
    step.push(K.iff(leader(Vc), fin));
    reduceParts(x, K.i32(0), p, fin);
  }
  return { name, workgroup: [WG, 1, 1], grid, buffers: [], scalars: [], shared, body };
}

/** Value columns a thread of the chunkwise form owns (fewer where the reduction buffer would pass RB x MAX_THREADS entries). */
const COLS_PER_THREAD = 4;
/**
 * The chunkwise form's own default where the schedule sets no state tile: WIDE_COLS columns of
 * a key slice of at most WIDE_SLICE keys per thread, WIDE_STATE state entries in all. Each key
 * or position a thread loads then serves 8 columns, and its loops over the slice (16 trips)
 * unroll, so the slice stays in registers on lavapipe (a 32-key slice did not: 1.6x slower).
 * Measured on lavapipe (CPU time, chunk 16, interleaved with recurrent): 0.65x recurrent's at
 * K = V = 64 where 4 columns x 16 keys took 0.98x; 0.60x at K = V = 128 where the 4-column
 * tiling, cut to 1 column by its reduction buffer, took 1.66x. Taken only where the reduction
 * buffer holds MIN_ROWS rows at once and the workgroup covers a chunk's positions (the score
 * phase's shape, byCol); otherwise the 4-column tiling, as before (chunk 64 at K = 64, and K = 256,
 * whose CUDA kernels nvcc keeps in registers).
 */
const WIDE_COLS = 8;
const WIDE_SLICE = 16;
const WIDE_STATE = 128;
const MIN_ROWS = 2;
/** Entries of the reduction buffer red (8 KiB of f32): RB x WG x JT at most. */
const RED_MAX = ROW_BLOCK * MAX_THREADS;

/** Columns per thread JT, rows per block RB and the state tile of the chunkwise form. */
function chunkTiling(c: Contraction, Kc: number, Vc: number, sched: Schedule): { JT: number; RB: number; state: number | undefined } {
  const C = sched.chunk;
  const arrays = c.order === 1 ? 2 : 1;
  const rowsFor = (t: { NK: number; WX: number }, JT: number): number => (t.NK === 1 ? Math.min(C, ROW_BLOCK) : Math.min(C, ROW_BLOCK, Math.floor(RED_MAX / (t.WX * t.NK * JT))));
  if (sched.tiles.state === undefined) {
    for (let JT = Math.min(WIDE_COLS, Vc); JT > COLS_PER_THREAD; JT = Math.floor(JT / 2)) {
      const t = tiling(Kc, Vc, sched.workgroup.contraction, arrays, WIDE_STATE, JT);
      const RB = rowsFor(t, JT);
      if (t.KT <= WIDE_SLICE && RB >= MIN_ROWS && (t.WX * t.NK) % C === 0) return { JT, RB, state: WIDE_STATE };
    }
  }
  const RB = Math.min(C, ROW_BLOCK);
  let JT = Math.max(1, Math.min(COLS_PER_THREAD, Vc));
  // Keep the reduction buffer RB x WG x JT within what JT = 1 may take (RB x MAX_THREADS).
  while (JT > 1) {
    const t = tiling(Kc, Vc, sched.workgroup.contraction, arrays, sched.tiles.state, JT);
    if (t.NK === 1 || RB * t.WX * t.NK * JT <= RB * MAX_THREADS) break;
    JT = Math.floor(JT / 2);
  }
  return { JT, RB, state: sched.tiles.state };
}

/**
 * Chunks of C positions: inside a chunk the parallel form, across chunks the state carries:
 * S <- w(end, prev end) S + sum_m w(end, m) b[m]^T c[m]. The chunk's rows go in blocks of RB:
 * their scores P[RB][C] in shared memory, then each thread's part of each row's output (its
 * share of the intra-chunk sum, every NK-th position, and of q . S over its key slice), summed
 * over the column's NK threads. A thread owns JT columns j + jc WX (jc < JT) of its key slice, so
 * that what it loads per key or position (a[m, i], b[m, i], P[m][m2]) serves JT columns: on
 * lavapipe, where a workgroup's threads are SIMD lanes and a load costs per lane whether or not
 * the lanes share its address, that load per column was the chunkwise form's main cost.
 */
export function lowerChunkwise(name: string, s: IrStmt, c: Contraction, L: ExprLowering, sched: Schedule): Kernel {
  const C = sched.chunk;
  let RB = Math.min(C, ROW_BLOCK);
  let JT = 1;
  let state = sched.tiles.state;
  {
    const [Vc, Kc] = [dimExpr(c.V, L.sizes), dimExpr(c.K, L.sizes)];
    // (setup reports a key or value size that is not a constant.)
    if (Vc.k === 'const' && Kc.k === 'const') ({ JT, RB, state } = chunkTiling(c, Kc.value, Vc.value, sched));
  }
  const { x, body, grid, Vc } = setup(name, s, c, L, state === sched.tiles.state ? sched : { ...sched, tiles: { ...sched.tiles, state } }, true, JT);
  const { KT, NK, WG, WX } = x;
  const colOf = (jc: KExpr): KExpr => fold(K.add(jv, K.mul(jc, K.i32(WX))));
  const jc = K.v('jc');
  const jcv = colOf(jc);
  // Columns past V exist only when the tile does not divide V.
  const ragged = Vc % (WX * JT) !== 0;
  const inCol = (out: KStmt[]): KStmt[] => {
    if (!ragged) return out;
    const b: KStmt[] = [];
    out.push(K.iff(K.lt(jcv, K.i32(Vc)), b));
    return b;
  };
  const perCol = (f: (b: KStmt[]) => void): KStmt => { const b: KStmt[] = []; f(inCol(b)); return K.loop('jc', K.i32(0), K.i32(JT), b); };
  const sIdx = (i: KExpr): KExpr => fold(K.add(K.mul(jc, K.i32(KT)), i));
  initState(body, JT * KT, c.order);
  const accs = c.order === 1 ? ['acc', 'qs', 'qs1'] : ['acc', 'qs'];
  for (const n of accs) body.push(K.local(n, 'f32', JT));
  body.push(K.local('wc', 'f32', JT));
  const E = (RB * C) / WG;
  const byCol = WG % C === 0 && Number.isInteger(E);
  if (byCol) body.push(K.local('dots', 'f32', E));
  const chunk: KStmt[] = [];
  body.push(K.loop('c0', K.i32(0), x.T, chunk, C));
  const c0 = K.v('c0');
  chunk.push(K.decl('len', 'i32', K.bin('min', K.i32(C), K.sub(x.T, c0))));
  const len = K.v('len');
  const at = (m: KExpr) => posOf(x, K.add(c0, m));
  const gates = localGates(x, C, c0, len, chunk);
  // The chunk's decay weights once (an exp each), not once per use and thread: wr[m] = w(m, pe)
  // for the cross term, we[m2] = w(pl, m2) for the state update and, for decays fixed per batch
  // entry (a function of the distance only), wd[d] = w over d scan steps for the scores.
  const byDistance = c.decay.every((t) => t.kind === 'fixed');
  const tables: KStmt[] = [];
  chunk.push(K.decl('pe', 'i32', at(K.i32(-1))), K.decl('pl', 'i32', at(K.sub(len, K.i32(1)))));
  chunk.push(K.loop('m', K.tid('x'), len, tables, WG));
  tables.push(K.decl('pm', 'i32', at(K.v('m'))));
  const rowW: KStmt[] = [];
  tables.push(K.iff(K.bin('>', c0, K.i32(0)), rowW));
  rowW.push(K.store('wr', K.v('m'), weight(x, K.v('pm'), K.v('pe'), rowW, [K.v('m'), K.i32(-1)])));
  tables.push(K.store('we', K.v('m'), weight(x, K.v('pl'), K.v('pm'), tables, [K.sub(len, K.i32(1)), K.v('m')])));
  if (byDistance) tables.push(K.store('wd', K.v('m'), weight(x, K.v('pm'), at(K.i32(0)), tables)));
  chunk.push(K.barrier());
  gates.push({ name: 'wr', type: 'f32', size: C }, { name: 'we', type: 'f32', size: C });
  if (byDistance) gates.push({ name: 'wd', type: 'f32', size: C });
  const blk: KStmt[] = [];
  chunk.push(K.loop('r0', K.i32(0), len, blk, RB));
  const r0 = K.v('r0');
  // Phase 1: P[mm][m2] = w(m, m2) a[m] . b[m2] for the rows m = r0 + mm and m2 before m.
  const valid = K.and(K.lt(K.v('m'), len), K.bin(c.strict ? '<' : '<=', K.v('m2'), K.v('m')));
  if (byCol) {
    // A thread's E entries e = tid + n WG share the key position m2 = tid mod C: b[m2, i] is
    // loaded once for E dots (rows past the chunk read its last row, and are not stored).
    blk.push(K.decl('m2', 'i32', K.bin('%', K.tid('x'), K.i32(C))), K.decl('pm2', 'i32', at(K.bin('min', K.v('m2'), K.sub(len, K.i32(1))))));
    const rowOf = (n: KExpr): KExpr => fold(K.add(r0, K.div(K.add(K.tid('x'), K.mul(n, K.i32(WG))), K.i32(C))));
    blk.push(K.loop('n', K.i32(0), K.i32(E), [K.store('dots', K.v('n'), K.f32(0))]));
    // Only key positions up to the block's last row have a score (lavapipe skips a branch that no
    // lane of a SIMD group takes: at C = 64 half the block's dots).
    const dot: KStmt[] = [];
    blk.push(K.iff(K.lt(K.v('m2'), K.bin('min', len, K.add(r0, K.i32(RB)))), [K.loop('i', K.i32(0), K.i32(x.Kc), dot)]));
    dot.push(K.decl('bi', 'f32', factor(x, 'b', K.v('pm2'), K.v('i'), dot)));
    const rowsD: KStmt[] = [];
    dot.push(K.loop('n', K.i32(0), K.i32(E), rowsD));
    const pmn = at(K.bin('min', rowOf(K.v('n')), K.sub(len, K.i32(1))));
    rowsD.push(K.store('dots', K.v('n'), K.add(K.load('dots', K.v('n')), K.mul(factor(x, 'a', pmn, K.v('i'), rowsD), K.v('bi', 'f32')))));
    const put: KStmt[] = [];
    blk.push(K.loop('n', K.i32(0), K.i32(E), put));
    put.push(K.decl('e', 'i32', K.add(K.tid('x'), K.mul(K.v('n'), K.i32(WG)))));
    put.push(K.decl('m', 'i32', rowOf(K.v('n'))));
    put.push(K.store('P', K.v('e'), K.f32(0)));
    const score: KStmt[] = [];
    put.push(K.iff(valid, score));
    score.push(K.decl('pm', 'i32', at(K.v('m'))));
    const pw = byDistance ? (c.order === 1 ? K.mul(K.load('wd', K.sub(K.v('m'), K.v('m2'))), distance(x, K.v('pm'), K.v('pm2'))) : K.load('wd', K.sub(K.v('m'), K.v('m2')))) : pairWeight(x, K.v('pm'), K.v('pm2'), score, [K.v('m'), K.v('m2')]);
    score.push(K.store('P', K.v('e'), K.mul(K.load('dots', K.v('n')), pw)));
  } else {
    const ph1: KStmt[] = [];
    blk.push(K.loop('e', K.tid('x'), K.i32(RB * C), ph1, WG));
    ph1.push(K.decl('m', 'i32', K.add(r0, K.bin('/', K.v('e'), K.i32(C)))), K.decl('m2', 'i32', K.bin('%', K.v('e'), K.i32(C))));
    const score: KStmt[] = [];
    ph1.push(K.store('P', K.v('e'), K.f32(0)));
    ph1.push(K.iff(valid, score));
    score.push(K.decl('pm', 'i32', at(K.v('m'))), K.decl('pm2', 'i32', at(K.v('m2'))));
    storeScore(x, score, K.v('pm'), K.v('pm2'), [K.v('m'), K.v('m2')]);
  }
  blk.push(K.barrier());
  // Phase 2: outputs = intra-chunk part + decayed state of the previous chunks.
  const col = blk;
  // Rows up to the chunk's end: a loop of a run-time trip count, which lavapipe does not unroll
  // (unrolled, its body made the kernel take seconds to compile there).
  const row: KStmt[] = [];
  const rowsEnd = K.bin('min', K.i32(RB), K.sub(len, r0));
  col.push(K.loop('mm', K.i32(0), rowsEnd, row));
  row.push(K.decl('m', 'i32', K.add(r0, K.v('mm'))));
  row.push(K.decl('pm', 'i32', at(K.v('m'))));
  row.push(K.loop('jc', K.i32(0), K.i32(JT), accs.map((n) => K.store(n, jc, K.f32(0)))));
  const intra: KStmt[] = [];
  row.push(K.loop('m2', NK > 1 ? K.v('kt') : K.i32(0), K.add(K.v('m'), K.i32(c.strict ? 0 : 1)), intra, NK));
  intra.push(K.decl('pv', 'f32', K.load('P', K.add(K.mul(K.v('mm'), K.i32(C)), K.v('m2')))));
  intra.push(K.decl('q2', 'i32', at(K.v('m2'))));
  intra.push(perCol((b) => b.push(K.store('acc', jc, K.add(K.load('acc', jc), K.mul(K.v('pv', 'f32'), factor(x, 'c', K.v('q2'), jcv, b)))))));
  const cross: KStmt[] = [];
  row.push(K.iff(K.bin('>', c0, K.i32(0)), cross));
  const qsLoop: KStmt[] = [];
  cross.push(K.loop('i', K.i32(0), K.i32(KT), qsLoop));
  const gq = sliceIndex(x, qsLoop);
  const qsBody = inK(x, gq, qsLoop);
  qsBody.push(K.decl('ai', 'f32', factor(x, 'a', K.v('pm'), gq, qsBody)));
  const qsCols: KStmt[] = [K.store('qs', jc, K.add(K.load('qs', jc), K.mul(K.v('ai', 'f32'), K.load('S', sIdx(K.v('i'))))))];
  if (c.order === 1) qsCols.push(K.store('qs1', jc, K.add(K.load('qs1', jc), K.mul(K.v('ai', 'f32'), K.load('S1', sIdx(K.v('i')))))));
  qsBody.push(K.loop('jc', K.i32(0), K.i32(JT), qsCols));
  cross.push(K.decl('wx', 'f32', K.load('wr', K.v('m'))));
  // Order 1: sum_{s <= pe} (pm - s) w b c = w(pm, pe) ((pm - pe) S + S1).
  const both = c.order === 1 ? K.add(K.mul(distance(x, K.v('pm'), K.v('pe')), K.load('qs', jc)), K.load('qs1', jc)) : K.load('qs', jc);
  cross.push(K.loop('jc', K.i32(0), K.i32(JT), [K.store('acc', jc, K.add(K.load('acc', jc), K.mul(both, K.v('wx', 'f32'))))]));
  const shared = [{ name: 'P', type: 'f32' as const, size: RB * C }, ...gates];
  // red[(mm JT + jc) WG + tid]: the thread's part of row mm, column jc.
  if (NK === 1) row.push(perCol((b) => storeOut(x, K.v('pm'), jcv, K.load('acc', jc), b)));
  else {
    row.push(K.loop('jc', K.i32(0), K.i32(JT), [K.store('red', fold(K.add(K.mul(K.add(K.mul(K.v('mm'), K.i32(JT)), jc), K.i32(WG)), K.tid('x'))), K.load('acc', jc))]));
    shared.push({ name: 'red', type: 'f32', size: RB * WG * JT });
  }
  // The next block's scores are written after this barrier, its parts after the next one.
  blk.push(K.barrier());
  if (NK > 1) {
    const fin: KStmt[] = [];
    blk.push(K.iff(K.bin('==', K.v('kt'), K.i32(0)), fin));
    const outRow: KStmt[] = [];
    fin.push(K.loop('mm', K.i32(0), rowsEnd, outRow));
    outRow.push(perCol((b) => reduceParts(x, fold(K.mul(K.add(K.mul(K.v('mm'), K.i32(JT)), jc), K.i32(WG))), at(K.add(r0, K.v('mm'))), b, jcv)));
  }
  // Phase 3: carry the state slice to the end of this chunk.
  const col3 = chunk;
  col3.push(K.decl('carry', 'f32', K.f32(0)));
  const carry: KStmt[] = [];
  col3.push(K.iff(K.bin('>', c0, K.i32(0)), carry));
  carry.push(K.assign('carry', weight(x, K.v('pl'), K.v('pe'), carry, [K.sub(len, K.i32(1)), K.i32(-1)], true)));
  const decayState: KStmt[] = [];
  col3.push(K.loop('i', K.i32(0), K.i32(JT * KT), decayState));
  if (c.order === 1) {
    // S1 <- w(pl, pe) (S1 + (pl - pe) S), before S itself moves on.
    decayState.push(K.store('S1', K.v('i'), K.mul(K.v('carry', 'f32'), K.add(K.load('S1', K.v('i')), K.mul(distance(x, K.v('pl'), K.v('pe')), K.load('S', K.v('i')))))));
  }
  decayState.push(K.store('S', K.v('i'), K.mul(K.v('carry', 'f32'), K.load('S', K.v('i')))));
  // One weight per position and column (not per state entry): S[i] += w(end, m2) c[m2, j] b[m2, gi].
  const sum: KStmt[] = [];
  col3.push(K.loop('m2', K.i32(0), len, sum));
  sum.push(K.decl('q2', 'i32', at(K.v('m2'))));
  sum.push(K.decl('w2', 'f32', K.load('we', K.v('m2'))));
  if (c.order === 1) sum.push(K.decl('d2', 'f32', distance(x, K.v('pl'), K.v('q2'))));
  // Columns past V take weight 0 (their state stays 0 and is never read out).
  if (ragged) sum.push(K.loop('jc', K.i32(0), K.i32(JT), [K.store('wc', jc, K.f32(0))]));
  sum.push(perCol((b) => b.push(K.store('wc', jc, K.mul(K.v('w2', 'f32'), factor(x, 'c', K.v('q2'), jcv, b))))));
  const updLoop: KStmt[] = [];
  sum.push(K.loop('i', K.i32(0), K.i32(KT), updLoop));
  const gu = sliceIndex(x, updLoop);
  const upd = inK(x, gu, updLoop);
  upd.push(K.decl('bi', 'f32', factor(x, 'b', K.v('q2'), gu, upd)));
  const updCols: KStmt[] = [K.store('S', sIdx(K.v('i')), K.add(K.load('S', sIdx(K.v('i'))), K.mul(K.load('wc', jc), K.v('bi', 'f32'))))];
  if (c.order === 1) updCols.push(K.store('S1', sIdx(K.v('i')), K.add(K.load('S1', sIdx(K.v('i'))), K.mul(K.mul(K.load('wc', jc), K.v('d2', 'f32')), K.v('bi', 'f32')))));
  upd.push(K.loop('jc', K.i32(0), K.i32(JT), updCols));
  chunk.push(K.barrier());
  return { name, workgroup: [WG, 1, 1], grid, buffers: [], scalars: [], shared, body };
}

/**
 * Tiled parallel form (as FlashAttention tiles softmax): a workgroup owns a tile of R rows;
 * key tiles of R positions are scored into shared memory; the T x T matrix never exists.
 */
export function lowerParallel(name: string, s: IrStmt, c: Contraction, L: ExprLowering, sched: Schedule): Kernel {
  const { x, body, grid, Vc } = setup(name, s, c, L, sched, false);
  const { Kc, WG } = x;
  const R = sched.chunk;
  const Cc = sched.tiles.cols;
  grid[2] = fold(K.div(K.add(x.T, K.i32(R - 1)), K.i32(R)));
  body.push(K.decl('r0', 'i32', K.mul(K.wg('z'), K.i32(R))));
  const r0 = K.v('r0');
  body.push({ k: 'local', name: 'acc', type: 'f32', size: R });
  body.push(K.loop('m', K.i32(0), K.i32(R), [K.store('acc', K.v('m'), K.f32(0))]));
  // Key tiles up to and including the row tile (in scan order).
  const tile: KStmt[] = [];
  body.push(K.loop('c0', K.i32(0), K.bin('min', x.T, K.add(r0, K.i32(R))), tile, Cc));
  const c0 = K.v('c0');
  const ph1: KStmt[] = [];
  tile.push(K.loop('e', K.tid('x'), K.i32(R * Cc), ph1, WG));
  ph1.push(K.decl('m', 'i32', K.bin('/', K.v('e'), K.i32(Cc))), K.decl('m2', 'i32', K.bin('%', K.v('e'), K.i32(Cc))));
  ph1.push(K.decl('ri', 'i32', K.add(r0, K.v('m'))), K.decl('ci', 'i32', K.add(c0, K.v('m2'))));
  ph1.push(K.store('P', K.v('e'), K.f32(0)));
  const score: KStmt[] = [];
  ph1.push(K.iff(K.and(K.and(K.lt(K.v('ri'), x.T), K.lt(K.v('ci'), x.T)), K.bin(c.strict ? '<' : '<=', K.v('ci'), K.v('ri'))), score));
  score.push(K.decl('pr', 'i32', posOf(x, K.v('ri'))), K.decl('pc', 'i32', posOf(x, K.v('ci'))));
  storeScore(x, score, K.v('pr'), K.v('pc'));
  tile.push(K.barrier());
  const col: KStmt[] = [];
  tile.push(K.iff(inV(Vc), col));
  const cols: KStmt[] = [];
  col.push(K.loop('m2', K.i32(0), K.bin('min', K.i32(Cc), K.sub(x.T, c0)), cols));
  cols.push(K.decl('cv', 'f32', factor(x, 'c', posOf(x, K.add(c0, K.v('m2'))), jv, cols)));
  const rows: KStmt[] = [];
  cols.push(K.loop('m', K.i32(0), K.i32(R), rows));
  rows.push(K.store('acc', K.v('m'), K.add(K.load('acc', K.v('m')), K.mul(K.load('P', K.add(K.mul(K.v('m'), K.i32(Cc)), K.v('m2'))), K.v('cv', 'f32')))));
  tile.push(K.barrier());
  const fin: KStmt[] = [];
  body.push(K.iff(inV(Vc), fin));
  const outRows: KStmt[] = [];
  fin.push(K.loop('m', K.i32(0), K.bin('min', K.i32(R), K.sub(x.T, r0)), outRows));
  storeOut(x, posOf(x, K.add(r0, K.v('m'))), jv, K.load('acc', K.v('m')), outRows);
  return { name, workgroup: [WG, 1, 1], grid, buffers: [], scalars: [], shared: [{ name: 'P', type: 'f32', size: R * Cc }], body };
}

