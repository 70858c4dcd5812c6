// The chunk-parallel chunkwise form (chunk-parallel.ts: the same three phases, the same
// chunk-state tensor, chunk-state.ts) for CPU-like targets, where a workgroup is one thread
// (native: a core): its chunk products are register-blocked matrix products, as dense-cpu.ts
// builds them. Each workgroup packs the chunk's operands into workgroup memory (zero padded to
// whole micro tiles), then runs micro tiles of MR rows x NV W-lane vectors of accumulators over
// the summed index, k innermost; the accumulator updates are lane loops, which the native printer
// prints as vector operations (targets/native/lanes.ts) and the JavaScript executor runs as loops.
// In scan terms (chunk c: scan steps [cC, cC + len), a = row factor, b = column factor, c = value):
//   (a) a workgroup per (batch entry, chunk): H_c (R K x V) = Bw^T Cv over the chunk's steps m,
//       Bw[m][r K + i] = b[m, i] w(end, m) (times the distance for r = 1), Cv[m][j] = c[m, j];
//   (b) a workgroup per (batch entry, KT keys): the scan S_c = carry S_{c-1} + H_c over the chunks,
//       lane loops over columns, E_c = S_{c-1} stored over H_c;
//   (c) a workgroup per (batch entry, chunk): scores P = (A B^T) * D, one micro tile per block of
//       the lower triangle (B packed transposed, K x C; D from a table by distance for fixed
//       decays, else per pair), then the outputs [P | A'] [Cv ; E_c] in one product whose summed
//       index runs over the chunk's steps and then the state's R K rows, A'[m][r K + i] =
//       a[m, i] w(m, end_{c-1}) (times the distance to end_{c-1} for r = 0 in order 1).
// The numerics are chunk-parallel.ts's: weights exponentiate only non-positive numbers (tables by
// distance, pairs from chunk-local gate sums), the carry takes the accurate exp, state and
// accumulators are f32, every sum is f32 in a fixed order (bit for bit the same on native and on
// the JavaScript executor).
import type { Contraction } from '../analysis.js';
import type { IrStmt } from '../ir.js';
import * as K from '../kir.js';
import type { Kernel, KExpr, KShared, KStmt } from '../kir.js';
import { accurateExp, batchOf, distance, exponent, factor, kahan, localGates, posOf, type ScanCtx, weight, weightFrom } from './contraction-common.js';
import { type ChunkStateLayout, stateAt } from './chunk-state.js';
import { dimExpr, type ExprLowering, fold } from './expr.js';

/**
 * A micro tile's shape for Schedule.lanes: W lanes per vector (the native printer prints a lane
 * loop of 4, 8 or 16 as one vector operation), MR rows. MR x NV (at most 2) vectors of
 * accumulators: 16 of AVX-512's 32 registers (W 16, MR 8), 8 of AVX2's 16 (W 8, MR 4: MR 8 would
 * fill all 16 and leave none for the operands; not measured against MR 6).
 */
export interface Vec { W: number; MR: number }
export const vecOf = (lanes = 16): Vec => ({ W: lanes, MR: lanes >= 16 ? 8 : 4 });
/** Keys per scan workgroup. */
const SCAN_KEYS = 8;

export const up = (n: number, m: number): number => Math.ceil(n / m) * m;
export type Fresh = (p: string) => string;
export const freshSupply = (): Fresh => { let n = 0; return (p) => `${p}${n++}_`; };

/** One summed range of a micro tile: A's value of row i at k (a scalar), B's lane-0 index of vector c at k. */
export interface Seg { k: string; lo: KExpr; hi: KExpr; a: (i: number, k: KExpr) => KExpr; b: (c: number, k: KExpr) => [string, KExpr] }

/**
 * MR x (NV W) accumulators from 0, each segment's products added in k order (acc + a b, rounded
 * each time), then `epi(i, c, v, acc)`: a store of lane v of vector c of row i, in one lane loop.
 */
export function microTile(f: Fresh, d: Vec, NV: number, segs: Seg[], epi: (i: number, c: number, v: KExpr, acc: KExpr) => KStmt): KStmt[] {
  const acc = f('acc'), bv = f('bv');
  const lanes = (make: (v: KExpr) => KStmt[]): KStmt => { const v = f('v'); return K.loop(v, K.i32(0), K.i32(d.W), make(K.v(v))); };
  const accAt = (i: number, c: number, v: KExpr): KExpr => fold(K.add(K.i32((i * NV + c) * d.W), v));
  const all = <T>(g: (i: number, c: number) => T): T[] => Array.from({ length: d.MR * NV }, (_, x) => g(Math.floor(x / NV), x % NV));
  const out: KStmt[] = [K.local(acc, 'f32', d.MR * NV * d.W), K.local(bv, 'f32', NV * d.W)];
  out.push(lanes((v) => all((i, c) => K.store(acc, accAt(i, c, v), K.f32(0)))));
  for (const s of segs) {
    const body: KStmt[] = [];
    const k = K.v(s.k);
    body.push(lanes((v) => Array.from({ length: NV }, (_, c) => { const [arr, at] = s.b(c, k); return K.store(bv, fold(K.add(K.i32(c * d.W), v)), K.load(arr, K.add(at, v))); })));
    const as = Array.from({ length: d.MR }, (_, i) => { const n = f('a'); body.push(K.decl(n, 'f32', s.a(i, k))); return K.v(n, 'f32'); });
    body.push(lanes((v) => all((i, c) => K.store(acc, accAt(i, c, v), K.add(K.load(acc, accAt(i, c, v)), K.mul(as[i]!, K.load(bv, fold(K.add(K.i32(c * d.W), v)))))))));
    out.push(K.loop(s.k, s.lo, s.hi, body));
  }
  out.push(lanes((v) => all((i, c) => epi(i, c, v, K.load(acc, accAt(i, c, v))))));
  return out;
}

/** for name in [lo, hi) step: body (the loop variable as an expression). */
export function loopOf(out: KStmt[], f: Fresh, p: string, lo: KExpr, hi: KExpr, make: (i: KExpr, body: KStmt[]) => void, step = 1): void {
  const n = f(p), body: KStmt[] = [];
  out.push(K.loop(n, lo, hi, body, step));
  make(K.v(n), body);
}

export const declI = (out: KStmt[], f: Fresh, p: string, e: KExpr): KExpr => { const n = f(p); out.push(K.decl(n, 'i32', fold(e))); return K.v(n); };
export const declF = (out: KStmt[], f: Fresh, p: string, e: KExpr): KExpr => { const n = f(p); out.push(K.decl(n, 'f32', e)); return K.v(n, 'f32'); };
export const min = (a: KExpr, b: KExpr): KExpr => K.bin('min', a, b);
export const NCof = (T: KExpr, C: number): KExpr => fold(K.div(K.add(T, K.i32(C - 1)), K.i32(C)));

/**
 * For decays fixed per batch entry (a function of the distance only): their lambdas declared once
 * (a log each, not one per weight), and wt[d] = w over d scan steps for d in [0, n) from them (an
 * exp of a non-positive number each), `name` a workgroup array of n entries.
 */
function distanceTable(x: ScanCtx, f: Fresh, out: KStmt[], name: string, n: number): KShared {
  const lams = x.c.decay.map((t) => (t.kind === 'fixed' ? declF(out, f, 'lam', K.cast(x.L.expr(t.lambda, x.batch, out), 'f32')) : undefined));
  loopOf(out, f, 'wd', K.i32(0), K.i32(n), (d, b) => {
    const e = (): KExpr => lams.map((l) => K.mul(K.cast(d, 'f32'), l!)).reduce((a, c) => K.add(a, c));
    b.push(K.store(name, d, weightFrom(x, d, K.i32(0), e, b)));
  });
  return { name, type: 'f32', size: n };
}

/** Shapes of a contraction's operands in the CPU form. */
export interface Dims extends Vec { C: number; Kc: number; Vc: number; R: number; RK: number; NV: number; NR: number; Vp: number }
export function dimsOf(lay: ChunkStateLayout, lanes?: number): Dims {
  const d = vecOf(lanes);
  const NV = lay.Vc > d.W ? 2 : 1;
  return { ...d, C: lay.C, Kc: lay.Kc, Vc: lay.Vc, R: lay.R, RK: lay.R * lay.Kc, NV, NR: NV * d.W, Vp: up(lay.Vc, NV * d.W) };
}

/** The workgroup's chunk: ci = wg.z, c0, len; local gates; `at(m)`: the position of step m. */
function chunkOf(x: ScanCtx, C: number, body: KStmt[], f: Fresh): { ci: KExpr; len: KExpr; at: (m: KExpr) => KExpr; shared: KShared[] } {
  const ci = declI(body, f, 'ci', K.wg('z'));
  const c0 = declI(body, f, 'c0', K.mul(ci, K.i32(C)));
  const len = declI(body, f, 'len', min(K.i32(C), K.sub(x.T, c0)));
  const shared = localGates(x, C, c0, len, body);
  return { ci, len, at: (m) => posOf(x, K.add(c0, m)), shared };
}

/** Cv[m][j] = c[m, j] for the chunk's steps m (columns zero padded to Vp). */
function packValues(x: ScanCtx, d: Dims, f: Fresh, out: KStmt[], len: KExpr, at: (m: KExpr) => KExpr, arr: string): void {
  loopOf(out, f, 'pm', K.i32(0), len, (m, b) => {
    const p = declI(b, f, 'pp', at(m));
    loopOf(b, f, 'pj', K.i32(0), K.i32(d.Vc), (j, bj) => bj.push(K.store(arr, K.add(K.mul(m, K.i32(d.Vp)), j), factor(x, 'c', p, j, bj))));
    if (d.Vp > d.Vc) loopOf(b, f, 'pz', K.i32(d.Vc), K.i32(d.Vp), (j, bj) => bj.push(K.store(arr, K.add(K.mul(m, K.i32(d.Vp)), j), K.f32(0))));
  });
}

/**
 * Stores the micro tile staged in `ot` (MR x NR) at rows r0 + i < rows, columns j0 + jj < V:
 * `rowAt(row, b)` declares what a row needs into b and gives `put(col, value)`, its store. Where V
 * is a multiple of the tile's width, a row is one lane loop (vector copies; staging keeps the
 * accumulators' stores in range at compile time, so that only this loop has a checked scalar
 * fallback in C, not every accumulator), else element by element.
 */
function storeTile(f: Fresh, d: Dims, out: KStmt[], r0: KExpr, rows: KExpr, j0: KExpr, ot: string, rowAt: (row: KExpr, b: KStmt[]) => (col: KExpr, value: KExpr) => KStmt): void {
  loopOf(out, f, 'si', K.i32(0), min(K.i32(d.MR), K.sub(rows, r0)), (i, b) => {
    const put = rowAt(declI(b, f, 'sr', K.add(r0, i)), b);
    const from = (jj: KExpr): KExpr => K.load(ot, K.add(K.mul(i, K.i32(d.NR)), jj));
    if (d.Vc % d.NR === 0) {
      const v = f('v');
      b.push(K.loop(v, K.i32(0), K.i32(d.W), Array.from({ length: d.NV }, (_, c) => { const jj = K.add(K.i32(c * d.W), K.v(v)); return put(K.add(j0, jj), from(jj)); })));
    } else loopOf(b, f, 'sj', K.i32(0), min(K.i32(d.NR), K.sub(K.i32(d.Vc), j0)), (jj, bj) => bj.push(put(K.add(j0, jj), from(jj))));
  });
}

export const kernelOf = (name: string, grid: [KExpr, KExpr, KExpr], shared: KShared[], body: KStmt[]): Kernel =>
  ({ name, workgroup: [1, 1, 1], grid, buffers: [], scalars: [], shared, body });

/**
 * H = Bw^T Cv over a chunk's steps (Cv packed), Bw[m][r K + i] = b[m, i] w(end, m) (times the
 * distance for S1), rows zero to RKr; as micro tiles of rows i0.., columns j0.., each given to
 * `store` (the micro tile's epilogue, and what follows it). Returns Bw's declaration.
 */
export function chunkStateProduct(x: ScanCtx, d: Dims, f: Fresh, body: KStmt[], q: { len: KExpr; at: (m: KExpr) => KExpr; pl: KExpr; byDistance: boolean },
  store: { epi: (i0: KExpr, j0: KExpr) => (i: number, c: number, v: KExpr, acc: KExpr) => KStmt; after?: (i0: KExpr, j0: KExpr, out: KStmt[]) => void }): KShared {
  const { len, at, pl } = q, RKr = up(d.RK, d.MR);
  loopOf(body, f, 'pm', K.i32(0), len, (m, b) => {
    const p = declI(b, f, 'pq', at(m));
    const w = declF(b, f, 'sw', q.byDistance ? K.load('Wt', K.sub(K.sub(len, K.i32(1)), m)) : weight(x, pl, p, b, [K.sub(len, K.i32(1)), m]));
    const ws = d.R === 2 ? [w, declF(b, f, 'sw', K.mul(w, distance(x, pl, p)))] : [w];
    loopOf(b, f, 'pi', K.i32(0), K.i32(d.Kc), (i, bi) => {
      const bv = declF(bi, f, 'bk', factor(x, 'b', p, i, bi));
      ws.forEach((wr, r) => bi.push(K.store('Bw', K.add(K.mul(m, K.i32(RKr)), K.add(K.i32(r * d.Kc), i)), K.mul(bv, wr))));
    });
    if (RKr > d.RK) loopOf(b, f, 'pz', K.i32(d.RK), K.i32(RKr), (i, bi) => bi.push(K.store('Bw', K.add(K.mul(m, K.i32(RKr)), i), K.f32(0))));
  });
  loopOf(body, f, 'i0', K.i32(0), K.i32(d.RK), (i0, bi) => {
    loopOf(bi, f, 'j0', K.i32(0), K.i32(d.Vc), (j0, bj) => {
      const seg: Seg = { k: f('m'), lo: K.i32(0), hi: len, a: (i, k) => K.load('Bw', K.add(K.mul(k, K.i32(RKr)), K.add(i0, K.i32(i)))), b: (cc, k) => ['Cv', K.add(K.mul(k, K.i32(d.Vp)), K.add(j0, K.i32(cc * d.W)))] };
      bj.push(...microTile(f, d, d.NV, [seg], store.epi(i0, j0)));
      store.after?.(i0, j0, bj);
    }, d.NR);
  }, d.MR);
  return { name: 'Bw', type: 'f32', size: d.C * RKr };
}

/** Phase (a): H_c of every chunk, a workgroup per (batch entry, chunk). */
export function lowerChunkStatesCpu(name: string, s: IrStmt, c: Contraction, L: ExprLowering, lay: ChunkStateLayout, buf: string, lanes?: number): Kernel {
  const f = freshSupply();
  const d = dimsOf(lay, lanes);
  const body: KStmt[] = [K.comment(`chunk states (blocked for CPUs): H (${d.RK} x ${d.Vc}) over ${d.C} steps; micro ${d.MR}x${d.NR}, lanes ${d.W}`)];
  const { batch, nb } = batchOf(c, L, body);
  const x: ScanCtx = { c, s, L, T: dimExpr(c.T, L.sizes), batch };
  const { ci, len, at, shared } = chunkOf(x, d.C, body, f);
  const pl = declI(body, f, 'pl', at(K.sub(len, K.i32(1))));
  const byDistance = c.decay.every((t) => t.kind === 'fixed');
  if (byDistance) shared.push(distanceTable(x, f, body, 'Wt', d.C));
  packValues(x, d, f, body, len, at, 'Cv');
  shared.push(chunkStateProduct(x, d, f, body, { len, at, pl, byDistance }, {
    epi: () => (i, cc, v, acc) => K.store('Ot', fold(K.add(K.i32(i * d.NR + cc * d.W), v)), acc),
    after: (i0, j0, bj) => storeTile(f, d, bj, i0, K.i32(d.RK), j0, 'Ot', (row) => (col, value) => K.store(buf, stateAt(lay, x.T, ci, 0, row, col), value)),
  }));
  shared.push({ name: 'Cv', type: 'f32', size: d.C * d.Vp }, { name: 'Ot', type: 'f32', size: d.MR * d.NR });
  return kernelOf(name, [K.i32(1), nb, NCof(x.T, d.C)], shared, body);
}

/**
 * The carry w(end_c, end_{c-1}) of the chunk [c0, c0 + len) (pl, pe: the positions of its last
 * step and of the previous chunk's), with the accurate exp (it compounds over T / C chunks): a
 * variable declared into `chunk`, 0 for the first chunk.
 */
export function chunkCarry(x: ScanCtx, f: Fresh, chunk: KStmt[], ci: KExpr, c0: KExpr, len: KExpr, pl: KExpr, pe: KExpr): KExpr {
  const carryN = f('carry');
  chunk.push(K.decl(carryN, 'f32', K.f32(0)));
  const carry: KStmt[] = [];
  chunk.push(K.iff(K.bin('>', ci, K.i32(0)), carry));
  const parts: KExpr[] = [];
  x.c.decay.forEach((term, k) => {
    if (term.kind === 'gated' && term.step) parts.push(kahan(x, term.step, f(`g${k}`), c0, len, carry, []));
    else parts.push(exponent({ ...x, c: { ...x.c, decay: [term] } }, pl, pe, carry));
  });
  carry.push(K.assign(carryN, weightFrom(x, pl, pe, () => parts.reduce((a, b) => K.add(a, b)), carry, (e) => accurateExp(e, carry, f('dx')))));
  return K.v(carryN, 'f32');
}

/** Phase (b): the scan over chunk states, a workgroup per (batch entry, SCAN_KEYS keys); E_c over H_c in place. */
export function lowerChunkScanCpu(name: string, s: IrStmt, c: Contraction, L: ExprLowering, lay: ChunkStateLayout, buf: string, lanes?: number): Kernel {
  const f = freshSupply();
  const d = dimsOf(lay, lanes);
  const KT = Math.min(SCAN_KEYS, d.Kc), NKT = Math.ceil(d.Kc / KT), Vw = up(d.Vc, d.W);
  const body: KStmt[] = [K.comment(`chunk scan (blocked for CPUs): ${KT} keys x ${d.Vc} columns, ${d.R} state array(s), lanes ${d.W}`)];
  const { batch, nb } = batchOf(c, L, body);
  const x: ScanCtx = { c, s, L, T: dimExpr(c.T, L.sizes), batch };
  const gk0 = declI(body, f, 'gk0', K.mul(K.wg('x'), K.i32(KT)));
  const nk = declI(body, f, 'nk', min(K.i32(KT), K.sub(K.i32(d.Kc), gk0)));
  // S (and S1) of the workgroup's keys: Ss[(r KT + ii) Vw + j].
  const sAt = (r: number, ii: KExpr, j: KExpr): KExpr => K.add(K.mul(K.add(K.i32(r * KT), ii), K.i32(Vw)), j);
  loopOf(body, f, 'z', K.i32(0), K.i32(d.R * KT * Vw), (e, b) => b.push(K.store('Ss', e, K.f32(0))));
  const C = d.C;
  loopOf(body, f, 'ci', K.i32(0), NCof(x.T, C), (ci, chunk) => {
    const c0 = declI(chunk, f, 'c0', K.mul(ci, K.i32(C)));
    const len = declI(chunk, f, 'len', min(K.i32(C), K.sub(x.T, c0)));
    const pe = declI(chunk, f, 'pe', posOf(x, K.sub(c0, K.i32(1))));
    const pl = declI(chunk, f, 'pl', posOf(x, K.add(c0, K.sub(len, K.i32(1)))));
    const cw = chunkCarry(x, f, chunk, ci, c0, len, pl, pe);
    const dist = d.R === 2 ? declF(chunk, f, 'dd', distance(x, pl, pe)) : undefined;
    loopOf(chunk, f, 'ii', K.i32(0), nk, (ii, bk) => {
      const gi = declI(bk, f, 'gi', K.add(gk0, ii));
      // One column, or W of them in a lane loop (j = j0 + v): h = H; H <- E = S; S1 <- carry (S1 + d S) + h1; S <- carry S + h.
      const step = (j: KExpr, lane: KExpr, out: KStmt[]): void => {
        for (let r = 0; r < d.R; r++) out.push(K.store('Hs', K.add(K.i32(r * d.W), lane), K.load(buf, stateAt(lay, x.T, ci, r, gi, j))));
        for (let r = 0; r < d.R; r++) out.push(K.store(buf, stateAt(lay, x.T, ci, r, gi, j), K.load('Ss', sAt(r, ii, j))));
        const h = (r: number): KExpr => K.load('Hs', K.add(K.i32(r * d.W), lane));
        if (dist) out.push(K.store('Ss', sAt(1, ii, j), K.add(K.mul(cw, K.add(K.load('Ss', sAt(1, ii, j)), K.mul(dist, K.load('Ss', sAt(0, ii, j))))), h(1))));
        out.push(K.store('Ss', sAt(0, ii, j), K.add(K.mul(cw, K.load('Ss', sAt(0, ii, j))), h(0))));
      };
      loopOf(bk, f, 'j0', K.i32(0), K.i32(d.Vc), (j0, bj) => {
        const full: KStmt[] = [], part: KStmt[] = [];
        bj.push(K.iff(K.bin('<=', K.add(j0, K.i32(d.W)), K.i32(d.Vc)), full, part));
        const v = f('v'), lane: KStmt[] = [];
        full.push(K.loop(v, K.i32(0), K.i32(d.W), lane));
        step(K.add(j0, K.v(v)), K.v(v), lane);
        loopOf(part, f, 'j', j0, K.i32(d.Vc), (j, b) => step(j, K.sub(j, j0), b));
      }, d.W);
    });
  });
  const shared: KShared[] = [{ name: 'Ss', type: 'f32', size: d.R * KT * Vw }, { name: 'Hs', type: 'f32', size: d.R * d.W }];
  return kernelOf(name, [K.i32(NKT), nb, K.i32(1)], shared, body);
}

/** The decay of scores in a chunk as the table Dt, and where entry (row, col) of it lies. */
export interface ScoreDecay { shared: KShared[]; dAt: (row: KExpr, col: KExpr) => KExpr }

/**
 * For decays fixed per batch entry, a table by distance (built once per workgroup): Wt (Cr + 1
 * distances) and Dt[(Cr - 1) - m + m2] = w over m - m2 steps (times m - m2 for order 1; 0 where m2
 * is not before m).
 */
export function scoreDecayByDistance(x: ScanCtx, d: Vec, f: Fresh, body: KStmt[], C: number): ScoreDecay {
  const Cr = up(C, d.MR), Cp = up(C, d.W);
  const shared = [distanceTable(x, f, body, 'Wt', Cr + 1)];
  loopOf(body, f, 'di', K.i32(0), K.i32(Cr + Cp - 1), (e, b) => {
    const dd = declI(b, f, 'dd', K.sub(K.i32(Cr - 1), e));
    b.push(K.store('Dt', e, K.f32(0)));
    const put: KStmt[] = [];
    b.push(K.iff(K.bin('>=', dd, K.i32(x.c.strict ? 1 : 0)), put));
    const w = K.load('Wt', dd);
    put.push(K.store('Dt', e, x.c.order === 1 ? K.mul(w, K.cast(dd, 'f32')) : w));
  });
  shared.push({ name: 'Dt', type: 'f32', size: Cr + Cp - 1 });
  return { shared, dAt: (row, col) => K.add(K.sub(K.i32(Cr - 1), row), col) };
}

/** Otherwise one entry per pair of the chunk's steps (built per chunk): Dt[m Cp + m2]. */
export function scoreDecayByPair(x: ScanCtx, d: Vec, f: Fresh, body: KStmt[], C: number, len: KExpr, at: (m: KExpr) => KExpr): ScoreDecay {
  const Cr = up(C, d.MR), Cp = up(C, d.W), c = x.c;
  loopOf(body, f, 'dm', K.i32(0), K.i32(Cr), (m, b) => {
    loopOf(b, f, 'dn', K.i32(0), K.i32(Cp), (m2, b2) => {
      b2.push(K.store('Dt', K.add(K.mul(m, K.i32(Cp)), m2), K.f32(0)));
      const put: KStmt[] = [];
      b2.push(K.iff(K.and(K.and(K.lt(m, len), K.lt(m2, len)), K.bin(c.strict ? '<' : '<=', m2, m)), put));
      const pm = declI(put, f, 'pm', at(m)), pm2 = declI(put, f, 'pn', at(m2));
      const w = weight(x, pm, pm2, put, [m, m2]);
      put.push(K.store('Dt', K.add(K.mul(m, K.i32(Cp)), m2), c.order === 1 ? K.mul(w, distance(x, pm, pm2)) : w));
    });
  });
  return { shared: [{ name: 'Dt', type: 'f32', size: Cr * Cp }], dAt: (row, col) => K.add(K.mul(row, K.i32(Cp)), col) };
}

/** One chunk of a contraction, for chunkOutputs. */
export interface ChunkAt {
  ci: KExpr;
  len: KExpr;
  /** The position of scan step m of the chunk, and of the previous chunk's last (pe). */
  at: (m: KExpr) => KExpr;
  pe: KExpr;
  byDistance: boolean;
  decay: ScoreDecay;
  /**
   * Where the carried state E_c's row k (of R K), column j lies; `prepare` runs first, after the
   * first chunk only; `shared`: workgroup arrays it needs.
   */
  state: { at: (k: KExpr, j: KExpr) => [string, KExpr]; prepare?: (out: KStmt[]) => void; shared?: KShared[] };
}

/**
 * A chunk's outputs into the statement's target: scores P = (A B^T) * D over the lower triangle,
 * then [P | A'] [Cv ; E_c]. Packs Ap, Bt and Cv (which the caller may read afterwards); returns the
 * workgroup arrays it uses.
 */
export function chunkOutputs(x: ScanCtx, d: Dims, f: Fresh, body: KStmt[], q: ChunkAt): KShared[] {
  const C = d.C, Cr = up(C, d.MR), Cp = up(C, d.W), { ci, len, at, pe } = q, { L, s, c, batch } = x;
  // Packed operands: Ap[m][i] = a[m, i] (rows zero to Cr), Bt[i][m2] = b[m2, i] (columns zero to Cp), Cv[m2][j].
  loopOf(body, f, 'pm', K.i32(0), len, (m, b) => {
    const p = declI(b, f, 'pp', at(m));
    loopOf(b, f, 'pi', K.i32(0), K.i32(d.Kc), (i, bi) => {
      bi.push(K.store('Ap', K.add(K.mul(m, K.i32(d.Kc)), i), factor(x, 'a', p, i, bi)));
      bi.push(K.store('Bt', K.add(K.mul(i, K.i32(Cp)), m), factor(x, 'b', p, i, bi)));
    });
  });
  loopOf(body, f, 'zm', len, K.i32(Cr), (m, b) => loopOf(b, f, 'zi', K.i32(0), K.i32(d.Kc), (i, bi) => bi.push(K.store('Ap', K.add(K.mul(m, K.i32(d.Kc)), i), K.f32(0)))));
  loopOf(body, f, 'zi', K.i32(0), K.i32(d.Kc), (i, b) => loopOf(b, f, 'zm', len, K.i32(Cp), (m, bm) => bm.push(K.store('Bt', K.add(K.mul(i, K.i32(Cp)), m), K.f32(0)))));
  packValues(x, d, f, body, len, at, 'Cv');
  // The cross term's operand after the first chunk: A'[m][r K + i] = a[m, i] w(m, end_{c-1})
  // (times the distance to end_{c-1} for r = 0 in order 1).
  const nE = declI(body, f, 'nE', K.select(K.bin('>', ci, K.i32(0)), K.i32(d.RK), K.i32(0)));
  const cross: KStmt[] = [];
  body.push(K.iff(K.bin('>', ci, K.i32(0)), cross));
  q.state.prepare?.(cross);
  loopOf(cross, f, 'am', K.i32(0), K.i32(Cr), (m, b) => {
    const live: KStmt[] = [], dead: KStmt[] = [];
    b.push(K.iff(K.lt(m, len), live, dead));
    const pm = declI(live, f, 'pm', at(m));
    const wr = declF(live, f, 'wr', q.byDistance ? K.load('Wt', K.add(m, K.i32(1))) : weight(x, pm, pe, live, [m, K.i32(-1)]));
    const ws = d.R === 2 ? [declF(live, f, 'wr', K.mul(wr, distance(x, pm, pe))), wr] : [wr];
    loopOf(live, f, 'ai', K.i32(0), K.i32(d.Kc), (i, bi) => ws.forEach((w, r) => bi.push(K.store('A2', K.add(K.mul(m, K.i32(d.RK)), K.add(K.i32(r * d.Kc), i)), K.mul(K.load('Ap', K.add(K.mul(m, K.i32(d.Kc)), i)), w)))));
    loopOf(dead, f, 'az', K.i32(0), K.i32(d.RK), (i, bi) => bi.push(K.store('A2', K.add(K.mul(m, K.i32(d.RK)), i), K.f32(0))));
  });
  const scale = L.expr(c.scale, batch, body);
  const scaled = (v: KExpr): KExpr => (scale.k === 'const' && scale.value === 1 ? v : K.mul(v, K.cast(scale, 'f32')));
  const out = L.buffer(s.target, true);
  loopOf(body, f, 'r0', K.i32(0), len, (r0, blk) => {
    // Scores of the block's rows, vectors of W columns up to its last row (the lower triangle).
    loopOf(blk, f, 'n0', K.i32(0), min(len, K.add(r0, K.i32(d.MR))), (n0, bn) => {
      const seg: Seg = { k: f('i'), lo: K.i32(0), hi: K.i32(d.Kc), a: (i, k) => K.load('Ap', K.add(K.mul(K.add(r0, K.i32(i)), K.i32(d.Kc)), k)), b: (_, k) => ['Bt', K.add(K.mul(k, K.i32(Cp)), n0)] };
      bn.push(...microTile(f, d, 1, [seg], (i, _, v, acc) => {
        const row = K.add(r0, K.i32(i));
        return K.store('P', K.add(K.add(K.mul(row, K.i32(Cp)), n0), v), K.mul(acc, K.load('Dt', K.add(q.decay.dAt(row, n0), v))));
      }));
    }, d.W);
    // Outputs: [P | A'] [Cv ; E_c], the scores' columns up to the block's last row, then the state's rows.
    loopOf(blk, f, 'j0', K.i32(0), K.i32(d.Vc), (j0, bj) => {
      const intra: Seg = { k: f('m'), lo: K.i32(0), hi: min(len, K.add(r0, K.i32(d.MR))), a: (i, k) => K.load('P', K.add(K.mul(K.add(r0, K.i32(i)), K.i32(Cp)), k)), b: (cc, k) => ['Cv', K.add(K.mul(k, K.i32(d.Vp)), K.add(j0, K.i32(cc * d.W)))] };
      const carried: Seg = { k: f('e'), lo: K.i32(0), hi: nE, a: (i, k) => K.load('A2', K.add(K.mul(K.add(r0, K.i32(i)), K.i32(d.RK)), k)), b: (cc, k) => q.state.at(k, K.add(j0, K.i32(cc * d.W))) };
      bj.push(...microTile(f, d, d.NV, [intra, carried], (i, cc, v, acc) => K.store('Ot', fold(K.add(K.i32(i * d.NR + cc * d.W), v)), acc)));
      storeTile(f, d, bj, r0, len, j0, 'Ot', (row, b) => {
        const p = declI(b, f, 'op', at(row));
        return (col, value) => K.store(out, L.offset(s.target, s.indices.map((iv) => (iv.name === c.row ? p : iv.name === c.value ? col : batch.get(iv.name)!.expr))), scaled(value));
      });
    }, d.NR);
  }, d.MR);
  return [
    { name: 'Ap', type: 'f32', size: Cr * d.Kc }, { name: 'Bt', type: 'f32', size: d.Kc * Cp }, { name: 'P', type: 'f32', size: Cr * Cp },
    { name: 'Cv', type: 'f32', size: C * d.Vp }, ...(q.state.shared ?? []), { name: 'A2', type: 'f32', size: Cr * d.RK }, { name: 'Ot', type: 'f32', size: d.MR * d.NR },
  ];
}

/** Phase (c): every chunk's outputs, a workgroup per (batch entry, chunk). */
export function lowerChunkOutputsCpu(name: string, s: IrStmt, c: Contraction, L: ExprLowering, lay: ChunkStateLayout, buf: string, lanes?: number): Kernel {
  const f = freshSupply();
  const d = dimsOf(lay, lanes);
  const C = d.C;
  const body: KStmt[] = [K.comment(`chunk outputs (blocked for CPUs): scores ${C} x ${C} over ${d.Kc}, outputs over ${C} + ${d.RK}; micro ${d.MR}x${d.W} and ${d.MR}x${d.NR}, lanes ${d.W}`)];
  const { batch, nb } = batchOf(c, L, body);
  const x: ScanCtx = { c, s, L, T: dimExpr(c.T, L.sizes), batch };
  const { ci, len, at, shared } = chunkOf(x, C, body, f);
  const pe = declI(body, f, 'pe', at(K.i32(-1)));
  const byDistance = c.decay.every((t) => t.kind === 'fixed');
  const decay = byDistance ? scoreDecayByDistance(x, d, f, body, C) : scoreDecayByPair(x, d, f, body, C, len, at);
  shared.push(...decay.shared);
  // E_c is read where it lies when its rows hold whole vectors, else packed with zero columns.
  const packE = d.Vp > d.Vc;
  const state: ChunkAt['state'] = packE
    ? {
        at: (k, j) => ['Ep', K.add(K.mul(k, K.i32(d.Vp)), j)],
        prepare: (cross) => loopOf(cross, f, 'ei', K.i32(0), K.i32(d.RK), (i, b) => {
          loopOf(b, f, 'ej', K.i32(0), K.i32(d.Vc), (j, bj) => bj.push(K.store('Ep', K.add(K.mul(i, K.i32(d.Vp)), j), K.load(buf, stateAt(lay, x.T, ci, 0, i, j)))));
          loopOf(b, f, 'ez', K.i32(d.Vc), K.i32(d.Vp), (j, bj) => bj.push(K.store('Ep', K.add(K.mul(i, K.i32(d.Vp)), j), K.f32(0))));
        }),
        shared: [{ name: 'Ep', type: 'f32', size: d.RK * d.Vp }],
      }
    : { at: (k, j) => [buf, stateAt(lay, x.T, ci, 0, k, j)] };
  shared.push(...chunkOutputs(x, d, f, body, { ci, len, at, pe, byDistance, decay, state }));
  return kernelOf(name, [K.i32(1), nb, NCof(x.T, C)], shared, body);
}
