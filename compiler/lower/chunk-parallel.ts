// The chunkwise form of a recognised contraction (analysis.ts) parallel over chunks, as
// flash-linear-attention computes it (chunk_fwd_h, then chunk_fwd_o), in scan terms so that
// causal and anti-causal sums (gradients) are written once. With chunks of C scan steps,
// chunk c covering scan steps [cC, min(cC + C, T)) whose last position is end_c:
//   (a) chunk-local contributions, all chunks at once (a workgroup per batch entry, chunk, key
//       tile and value tile):  H_c = sum_{s in chunk c} w(end_c, s) b[s]^T c[s]
//   (b) a scan over chunk states, sequential only over T / C (a workgroup per batch entry, key
//       tile and value tile):  S_c = w(end_c, end_{c-1}) S_{c-1} + H_c, storing the state
//       entering each chunk, E_c = S_{c-1} (E_0 = 0), over H_c in place
//   (c) every chunk's outputs at once (a workgroup per batch entry, chunk and value tile): the
//       intra-chunk part from scores in workgroup memory, plus the cross term w(t, end_{c-1}) a[t] E_c.
//       Its decay weights are computed once per chunk (per row, and per distance for fixed
//       decays), not once per score: an exp each.
// Order-1 contractions (decay gradients) carry the distance-weighted state S1 next to S:
// S1_c = w(end_c, end_{c-1}) (S1_{c-1} + (end_c - end_{c-1}) S_{c-1}) + H1_c.
// The chunk states are f32 in a temporary tensor of the plan (plan.ts): per batch entry
// ceil(T / C) states of R K V entries (R = 2 for order 1), each padded to a multiple of C
// entries, KVp, so that the tensor's shape [batch.., T + C - 1, KVp / C] is a polynomial in the
// sizes (ceil(T / C) KVp <= (T + C - 1) KVp / C): no ceiling division in shapes.
// Where the schedule's dense mode is 'blocked' (CPU-like targets: native's default), the same three
// phases are lowered by chunk-cpu.ts instead, as single-thread workgroups of register-blocked chunk
// products (the SIMT shape below runs a workgroup's threads as work-item loops there, which
// vectorise only across them).
// The numerics are lowerChunkwise's (contraction.ts): weights exponentiate only non-positive
// numbers, gated weights come from chunk-local (compensated) sums of the step, the chunk carry
// takes the accurate exp, state and accumulators are f32 whatever the storage.
import type { Contraction } from '../analysis.js';
import type { IrStmt } from '../ir.js';
import * as K from '../kir.js';
import type { Kernel, KExpr, KShared, KStmt } from '../kir.js';
import type { Schedule } from '../schedule.js';
import { accurateExp, batchOf, distance, exponent, factor, kahan, localGates, posOf, pow2AtLeast, type ScanCtx, weight, weightFrom } from './contraction-common.js';
import { lowerChunkOutputsCpu, lowerChunkScanCpu, lowerChunkStatesCpu } from './chunk-cpu.js';
import { type ChunkStateLayout, chunkStateLayout, stateAt } from './chunk-state.js';
import { dimExpr, type ExprLowering, fold } from './expr.js';

export { type ChunkStateLayout, chunkStateLayout, chunkStateShape } from './chunk-state.js';

/**
 * Most state entries a thread keeps in registers in phases (a) and (b) unless the schedule's
 * tiles.state says otherwise; longer key axes are tiled over workgroups. 16 measured best on
 * lavapipe (a longer per-thread array is indexed through memory there: phase (a) at K = V = 64
 * took 2.3x as long with 64).
 */
const STATE_MAX = 16;
/** Most threads of a workgroup (WebGPU's guaranteed maxComputeInvocationsPerWorkgroup). */
const MAX_THREADS = 256;
/** Rows of a chunk scored, then reduced, together in phase (c). */
const ROW_BLOCK = 16;

/** Keys per staged slice of b in phase (c): the largest divisor of K with a slice of WX positions in 4 KiB. */
function keySlice(Kc: number, WX: number): number {
  let kb = Math.max(1, Math.min(Kc, Math.floor(1024 / WX)));
  while (Kc % kb) kb--;
  return kb;
}

/** Key slices and value tiles of phases (a) and (b): KT keys per thread, WX columns per workgroup. */
function stateTiling(lay: ChunkStateLayout, sched: Schedule): { KT: number; NKT: number; WX: number; NVT: number } {
  const cap = sched.workgroup.contraction;
  const NKT = Math.max(1, Math.ceil((lay.Kc * lay.R) / (sched.tiles.state ?? STATE_MAX)));
  const KT = Math.ceil(lay.Kc / NKT);
  const WX = pow2AtLeast(lay.Vc, Math.min(cap, MAX_THREADS));
  return { KT, NKT, WX, NVT: Math.ceil(lay.Vc / WX) };
}

const kernelOf = (name: string, WG: number, grid: [KExpr, KExpr, KExpr], shared: KShared[], body: KStmt[]): Kernel =>
  ({ name, workgroup: [WG, 1, 1], grid, buffers: [], scalars: [], shared, body });

/** Declares j (the thread's column) and gk0 (its first key) for phases (a) and (b); returns the in-range condition of j. */
function stateThread(t: ReturnType<typeof stateTiling>, lay: ChunkStateLayout, body: KStmt[]): KExpr {
  body.push(K.decl('vt', 'i32', K.bin('%', K.wg('x'), K.i32(t.NVT))), K.decl('kt', 'i32', K.div(K.wg('x'), K.i32(t.NVT))));
  body.push(K.decl('j', 'i32', K.add(K.mul(K.v('vt'), K.i32(t.WX)), K.tid('x'))));
  body.push(K.decl('gk0', 'i32', K.mul(K.v('kt'), K.i32(t.KT))));
  return K.lt(K.v('j'), K.i32(lay.Vc));
}

/** Loop over the thread's key slice: i = 0..KT-1, gi = gk0 + i < K; `f` fills the body. */
function sliceLoop(t: { KT: number; NKT: number }, lay: ChunkStateLayout, out: KStmt[], f: (gi: KExpr, body: KStmt[]) => void): void {
  const body: KStmt[] = [];
  out.push(K.loop('i', K.i32(0), K.i32(t.KT), body));
  body.push(K.decl('gi', 'i32', K.add(K.v('gk0'), K.v('i'))));
  if (t.NKT * t.KT > lay.Kc) {
    const inK: KStmt[] = [];
    body.push(K.iff(K.lt(K.v('gi'), K.i32(lay.Kc)), inK));
    f(K.v('gi'), inK);
  } else f(K.v('gi'), body);
}

/** Phase (a): H_c (and H1_c) of every chunk, one workgroup per (key tile x value tile, batch entry, chunk). */
function lowerChunkStates(name: string, s: IrStmt, c: Contraction, L: ExprLowering, sched: Schedule, lay: ChunkStateLayout, buf: string): Kernel {
  const body: KStmt[] = [];
  const { batch, nb } = batchOf(c, L, body);
  const x: ScanCtx = { c, s, L, T: dimExpr(c.T, L.sizes), batch };
  const t = stateTiling(lay, sched);
  const C = lay.C;
  const okJ = stateThread(t, lay, body);
  body.push(K.decl('ci', 'i32', K.wg('z')), K.decl('c0', 'i32', K.mul(K.v('ci'), K.i32(C))));
  const c0 = K.v('c0');
  body.push(K.decl('len', 'i32', K.bin('min', K.i32(C), K.sub(x.T, c0))));
  const len = K.v('len');
  const at = (m: KExpr) => posOf(x, K.add(c0, m));
  const shared = localGates(x, C, c0, len, body);
  // Weights w(end, m2) (times the distance, for H1) once per position, shared by the workgroup.
  body.push(K.decl('pl', 'i32', at(K.sub(len, K.i32(1)))));
  const fillW: KStmt[] = [];
  body.push(K.loop('m2', K.tid('x'), len, fillW, t.WX));
  fillW.push(K.decl('q2', 'i32', at(K.v('m2'))));
  fillW.push(K.store('sw', K.v('m2'), weight(x, K.v('pl'), K.v('q2'), fillW, [K.sub(len, K.i32(1)), K.v('m2')])));
  shared.push({ name: 'sw', type: 'f32', size: C });
  body.push(K.barrier());
  const names = lay.R === 2 ? ['H', 'H1'] : ['H'];
  for (const n of names) body.push(K.local(n, 'f32', t.KT));
  body.push(K.loop('i', K.i32(0), K.i32(t.KT), names.map((n) => K.store(n, K.v('i'), K.f32(0)))));
  // Sub-blocks of SB positions: their rows of b over the key slice staged in sb[SB][KT] (0 past K and the chunk).
  const SB = Math.max(1, Math.min(C, Math.floor(1024 / t.KT)));
  const sub: KStmt[] = [];
  body.push(K.loop('mb', K.i32(0), len, sub, SB));
  // Rows are a uniform loop and a thread takes consecutive keys (contiguous reads: vectorised
  // over work-items on CPUs, coalesced on GPUs).
  const stage: KStmt[] = [];
  sub.push(K.loop('ms', K.i32(0), K.i32(SB), stage));
  const rowOf = (live: boolean): KStmt[] => {
    const keys: KStmt[] = [];
    keys.push(K.decl('ib', 'i32', K.add(K.v('i0'), K.tid('x'))));
    const inSlice: KStmt[] = [];
    keys.push(K.iff(K.lt(K.v('ib'), K.i32(t.KT)), inSlice));
    const at2 = K.add(K.mul(K.v('ms'), K.i32(t.KT)), K.v('ib'));
    const gi = K.add(K.v('gk0'), K.v('ib'));
    if (!live) inSlice.push(K.store('sb', at2, K.f32(0)));
    else if (t.NKT * t.KT <= lay.Kc) inSlice.push(K.store('sb', at2, factor(x, 'b', at(K.add(K.v('mb'), K.v('ms'))), gi, inSlice)));
    else {
      const put: KStmt[] = [];
      inSlice.push(K.iff(K.lt(gi, K.i32(lay.Kc)), put, [K.store('sb', at2, K.f32(0))]));
      put.push(K.store('sb', at2, factor(x, 'b', at(K.add(K.v('mb'), K.v('ms'))), gi, put)));
    }
    return [K.loop('i0', K.i32(0), K.i32(t.KT), keys, t.WX)];
  };
  stage.push(K.iff(K.lt(K.add(K.v('mb'), K.v('ms')), len), rowOf(true), rowOf(false)));
  sub.push(K.barrier());
  const col: KStmt[] = [];
  sub.push(K.iff(okJ, col));
  const sum: KStmt[] = [];
  col.push(K.loop('mm', K.i32(0), K.bin('min', K.i32(SB), K.sub(len, K.v('mb'))), sum));
  sum.push(K.decl('m2', 'i32', K.add(K.v('mb'), K.v('mm'))), K.decl('q2', 'i32', at(K.v('m2'))));
  sum.push(K.decl('wc', 'f32', K.mul(K.load('sw', K.v('m2')), factor(x, 'c', K.v('q2'), K.v('j'), sum))));
  if (lay.R === 2) sum.push(K.decl('wc1', 'f32', K.mul(K.v('wc', 'f32'), distance(x, K.v('pl'), K.v('q2')))));
  const upd: KStmt[] = [];
  sum.push(K.loop('i', K.i32(0), K.i32(t.KT), upd));
  upd.push(K.decl('bi', 'f32', K.load('sb', K.add(K.mul(K.v('mm'), K.i32(t.KT)), K.v('i')))));
  upd.push(K.store('H', K.v('i'), K.add(K.load('H', K.v('i')), K.mul(K.v('wc', 'f32'), K.v('bi', 'f32')))));
  if (lay.R === 2) upd.push(K.store('H1', K.v('i'), K.add(K.load('H1', K.v('i')), K.mul(K.v('wc1', 'f32'), K.v('bi', 'f32')))));
  sub.push(K.barrier());
  shared.push({ name: 'sb', type: 'f32', size: SB * t.KT });
  const fin: KStmt[] = [];
  body.push(K.iff(okJ, fin));
  sliceLoop(t, lay, fin, (gi, b) => {
    names.forEach((n, r) => b.push(K.store(buf, stateAt(lay, x.T, K.v('ci'), r, gi, K.v('j')), K.load(n, K.v('i')))));
  });
  const NC = fold(K.div(K.add(x.T, K.i32(C - 1)), K.i32(C)));
  return kernelOf(name, t.WX, [K.i32(t.NKT * t.NVT), nb, NC], shared, body);
}

/** Phase (b): the scan over chunk states, one workgroup per (key tile x value tile, batch entry); E_c over H_c in place. */
function lowerChunkScan(name: string, s: IrStmt, c: Contraction, L: ExprLowering, sched: Schedule, lay: ChunkStateLayout, buf: string): Kernel {
  const body: KStmt[] = [];
  const { batch, nb } = batchOf(c, L, body);
  const x: ScanCtx = { c, s, L, T: dimExpr(c.T, L.sizes), batch };
  const t = stateTiling(lay, sched);
  const C = lay.C;
  const okJ = stateThread(t, lay, body);
  const col: KStmt[] = [];
  body.push(K.iff(okJ, col));
  const names = lay.R === 2 ? ['S', 'S1'] : ['S'];
  for (const n of names) col.push(K.local(n, 'f32', t.KT));
  col.push(K.loop('i', K.i32(0), K.i32(t.KT), names.map((n) => K.store(n, K.v('i'), K.f32(0)))));
  const NC = fold(K.div(K.add(x.T, K.i32(C - 1)), K.i32(C)));
  const chunk: KStmt[] = [];
  col.push(K.loop('ci', K.i32(0), NC, chunk));
  chunk.push(K.decl('c0', 'i32', K.mul(K.v('ci'), K.i32(C))));
  const c0 = K.v('c0');
  chunk.push(K.decl('len', 'i32', K.bin('min', K.i32(C), K.sub(x.T, c0))));
  const len = K.v('len');
  chunk.push(K.decl('pe', 'i32', posOf(x, K.sub(c0, K.i32(1)))), K.decl('pl', 'i32', posOf(x, K.add(c0, K.sub(len, K.i32(1))))));
  // The carry w(end_c, end_{c-1}) over the whole chunk, with the accurate exp (it compounds over T / C chunks).
  chunk.push(K.decl('carry', 'f32', K.f32(0)));
  const carry: KStmt[] = [];
  chunk.push(K.iff(K.bin('>', K.v('ci'), K.i32(0)), carry));
  const parts: KExpr[] = [];
  x.c.decay.forEach((term, k) => {
    if (term.kind === 'gated' && term.step) {
      const sum = kahan(x, term.step, `g${k}`, c0, len, carry, []);
      parts.push(sum);
    } else parts.push(exponent({ ...x, c: { ...c, decay: [term] } }, K.v('pl'), K.v('pe'), carry));
  });
  carry.push(K.assign('carry', weightFrom(x, K.v('pl'), K.v('pe'), () => parts.reduce((a, b) => K.add(a, b)), carry, (e) => accurateExp(e, carry, 'dx'))));
  sliceLoop(t, lay, chunk, (gi, b) => {
    const at = (r: number) => stateAt(lay, x.T, K.v('ci'), r, gi, K.v('j'));
    names.forEach((n, r) => {
      b.push(K.decl(`h${r}`, 'f32', K.load(buf, at(r))));
      b.push(K.store(buf, at(r), K.load(n, K.v('i'))));
    });
    if (lay.R === 2) b.push(K.store('S1', K.v('i'), K.add(K.mul(K.v('carry', 'f32'), K.add(K.load('S1', K.v('i')), K.mul(distance(x, K.v('pl'), K.v('pe')), K.load('S', K.v('i'))))), K.v('h1', 'f32'))));
    b.push(K.store('S', K.v('i'), K.add(K.mul(K.v('carry', 'f32'), K.load('S', K.v('i'))), K.v('h0', 'f32'))));
  });
  return kernelOf(name, t.WX, [K.i32(t.NKT * t.NVT), nb, K.i32(1)], [], body);
}

/** Phase (c): every chunk's outputs, one workgroup per (value tile, batch entry, chunk). */
function lowerChunkOutputs(name: string, s: IrStmt, c: Contraction, L: ExprLowering, sched: Schedule, lay: ChunkStateLayout, buf: string): Kernel {
  const body: KStmt[] = [];
  const { batch, nb } = batchOf(c, L, body);
  const x: ScanCtx = { c, s, L, T: dimExpr(c.T, L.sizes), batch };
  const C = lay.C;
  // Rows per block: RB K <= tiles.state, by default 512 (8 rows at K = 64, 2 at K = 256: their
  // accumulators stay in registers on GPUs beside the staged key slices); CPUs, which keep them in
  // memory, take more rows (fewer stagings of the key slices).
  const RB = Math.max(1, Math.min(C, ROW_BLOCK, Math.floor((sched.tiles.state ?? 512) / lay.Kc)));
  const WX = pow2AtLeast(lay.Vc, Math.min(sched.workgroup.contraction, MAX_THREADS));
  const jv = K.v('j');
  body.push(K.decl('j', 'i32', K.add(K.mul(K.wg('x'), K.i32(WX)), K.tid('x'))));
  body.push(K.decl('ci', 'i32', K.wg('z')), K.decl('c0', 'i32', K.mul(K.v('ci'), K.i32(C))));
  const c0 = K.v('c0');
  body.push(K.decl('len', 'i32', K.bin('min', K.i32(C), K.sub(x.T, c0))));
  const len = K.v('len');
  const at = (m: KExpr) => posOf(x, K.add(c0, m));
  const shared = localGates(x, C, c0, len, body);
  body.push(K.decl('pe', 'i32', at(K.i32(-1))));
  // The decay weights once per chunk, not once per output (an exp each): the cross term's
  // wr[m] = w(m, pe) per row, and for decays that are fixed per batch entry (a function of the
  // distance only) the intra-chunk wd[d] = w over d scan steps (times d for order 1).
  const tables: KStmt[] = [];
  body.push(K.loop('m', K.tid('x'), len, tables, WX));
  const rowW: KStmt[] = [];
  tables.push(K.iff(K.bin('>', K.v('ci'), K.i32(0)), rowW));
  rowW.push(K.decl('pm', 'i32', at(K.v('m'))));
  rowW.push(K.store('wr', K.v('m'), weight(x, K.v('pm'), K.v('pe'), rowW, [K.v('m'), K.i32(-1)])));
  shared.push({ name: 'wr', type: 'f32', size: C });
  const byDistance = c.decay.every((t) => t.kind === 'fixed');
  if (byDistance) {
    const [pd, p0] = [at(K.v('m')), at(K.i32(0))];
    const w = weight(x, pd, p0, tables);
    tables.push(K.store('wd', K.v('m'), c.order === 1 ? K.mul(w, distance(x, pd, p0)) : w));
    shared.push({ name: 'wd', type: 'f32', size: C });
  }
  body.push(K.barrier());
  const blk: KStmt[] = [];
  body.push(K.loop('r0', K.i32(0), len, blk, RB));
  const r0 = K.v('r0');
  // The block's rows of a, staged once: sa[mm][i] = a[r0 + mm, i] (0 past the chunk). Rows and
  // key offsets are uniform loops and a thread takes consecutive keys: contiguous in memory, so
  // vectorised over work-items on CPUs and coalesced on GPUs.
  const stageA: KStmt[] = [];
  blk.push(K.loop('mm', K.i32(0), K.i32(RB), stageA));
  const rowOf = (value: (i: KExpr, out: KStmt[]) => KExpr): KStmt[] => {
    const keys: KStmt[] = [];
    keys.push(K.decl('ia', 'i32', K.add(K.v('i0'), K.tid('x'))));
    const inK: KStmt[] = [];
    keys.push(K.iff(K.lt(K.v('ia'), K.i32(lay.Kc)), inK));
    inK.push(K.store('sa', K.add(K.mul(K.v('mm'), K.i32(lay.Kc)), K.v('ia')), value(K.v('ia'), inK)));
    return [K.loop('i0', K.i32(0), K.i32(lay.Kc), keys, WX)];
  };
  stageA.push(K.iff(K.lt(K.add(r0, K.v('mm')), len), rowOf((i, out) => factor(x, 'a', at(K.add(r0, K.v('mm'))), i, out)), rowOf(() => K.f32(0))));
  blk.push(K.barrier());
  // Scores P[mm][m2] = w(m, m2) a[m] . b[m2] for rows m = r0 + mm, m2 before m (0 elsewhere): a
  // thread per key position m2 = mb + tid, RB dots each; b staged transposed by key slices of KB,
  // kT[i][tid] = b[mb + tid, kb + i] (0 past the chunk), so that a thread's reads are contiguous
  // across threads (vectorised over work-items on CPUs, coalesced on GPUs).
  const KB = keySlice(lay.Kc, WX);
  const pos: KStmt[] = [];
  blk.push(K.loop('mb', K.i32(0), K.i32(C), pos, WX));
  pos.push(K.decl('m2', 'i32', K.add(K.v('mb'), K.tid('x'))));
  pos.push(K.loop('mm', K.i32(0), K.i32(RB), [K.store('dots', K.v('mm'), K.f32(0))]));
  const slice: KStmt[] = [];
  pos.push(K.loop('kb', K.i32(0), K.i32(lay.Kc), slice, KB));
  // A thread per position, a uniform loop over the slice's keys (0 past the chunk: zeroed first
  // by the same thread, so no barrier between).
  const mk = K.add(K.v('mb'), K.tid('x'));
  const slot = K.add(K.mul(K.v('ki'), K.i32(WX)), K.tid('x'));
  slice.push(K.iff(K.bin('>', K.add(K.v('mb'), K.i32(WX)), len), [K.loop('ki', K.i32(0), K.i32(KB), [K.store('kT', slot, K.f32(0))])]));
  const stK: KStmt[] = [];
  slice.push(K.loop('ki', K.i32(0), K.i32(KB), stK));
  stK.push(K.decl('mk', 'i32', mk));
  const putK: KStmt[] = [];
  stK.push(K.iff(K.lt(K.v('mk'), len), putK));
  putK.push(K.store('kT', slot, factor(x, 'b', at(K.v('mk')), K.add(K.v('kb'), K.v('ki')), putK)));
  slice.push(K.barrier());
  const dotBody: KStmt[] = [];
  slice.push(K.loop('i', K.i32(0), K.i32(KB), dotBody));
  dotBody.push(K.decl('bi', 'f32', K.load('kT', K.add(K.mul(K.v('i'), K.i32(WX)), K.tid('x')))));
  dotBody.push(K.loop('mm', K.i32(0), K.i32(RB), [K.store('dots', K.v('mm'), K.add(K.load('dots', K.v('mm')), K.mul(K.load('sa', K.add(K.mul(K.v('mm'), K.i32(lay.Kc)), K.add(K.v('kb'), K.v('i')))), K.v('bi', 'f32'))))]));
  slice.push(K.barrier());
  const ph1: KStmt[] = [];
  pos.push(K.iff(K.lt(K.v('m2'), K.i32(C)), ph1));
  shared.push({ name: 'kT', type: 'f32', size: KB * WX });
  const rowsP: KStmt[] = [];
  ph1.push(K.loop('mm', K.i32(0), K.i32(RB), rowsP));
  rowsP.push(K.decl('m', 'i32', K.add(r0, K.v('mm'))));
  rowsP.push(K.store('P', K.add(K.mul(K.v('mm'), K.i32(C)), K.v('m2')), K.f32(0)));
  const score: KStmt[] = [];
  rowsP.push(K.iff(K.and(K.lt(K.v('m'), len), K.bin(c.strict ? '<' : '<=', K.v('m2'), K.v('m'))), score));
  let pw: KExpr;
  if (byDistance) pw = K.load('wd', K.sub(K.v('m'), K.v('m2')));
  else {
    score.push(K.decl('pm', 'i32', at(K.v('m'))), K.decl('pm2', 'i32', at(K.v('m2'))));
    const w = weight(x, K.v('pm'), K.v('pm2'), score, [K.v('m'), K.v('m2')]);
    pw = c.order === 1 ? K.mul(w, distance(x, K.v('pm'), K.v('pm2'))) : w;
  }
  score.push(K.store('P', K.add(K.mul(K.v('mm'), K.i32(C)), K.v('m2')), K.mul(K.load('dots', K.v('mm')), pw)));
  blk.push(K.barrier());
  const col: KStmt[] = [];
  blk.push(K.iff(K.lt(jv, K.i32(lay.Vc)), col));
  const accs = lay.R === 2 ? ['acc', 'qa', 'qa1'] : ['acc', 'qa'];
  for (const n of [...accs, 'dots']) body.splice(body.length - 1, 0, K.local(n, 'f32', RB));
  col.push(K.loop('mm', K.i32(0), K.i32(RB), accs.map((n) => K.store(n, K.v('mm'), K.f32(0)))));
  // Intra-chunk: acc[mm] += P[mm][m2] c[m2, j], each c[m2, j] loaded once for the block.
  const intra: KStmt[] = [];
  col.push(K.loop('m2', K.i32(0), K.bin('min', len, K.add(r0, K.i32(RB))), intra));
  intra.push(K.decl('cv', 'f32', factor(x, 'c', at(K.v('m2')), jv, intra)));
  intra.push(K.loop('mm', K.i32(0), K.i32(RB), [K.store('acc', K.v('mm'), K.add(K.load('acc', K.v('mm')), K.mul(K.load('P', K.add(K.mul(K.v('mm'), K.i32(C)), K.v('m2'))), K.v('cv', 'f32'))))]));
  // Cross term: qa[mm] = a[m] . E_c[:, j] (qa1 with E1), each state entry loaded once for the block.
  const cross: KStmt[] = [];
  col.push(K.iff(K.bin('>', K.v('ci'), K.i32(0)), cross));
  const keys: KStmt[] = [];
  cross.push(K.loop('i', K.i32(0), K.i32(lay.Kc), keys));
  for (let r = 0; r < lay.R; r++) keys.push(K.decl(`e${r}`, 'f32', K.load(buf, stateAt(lay, x.T, K.v('ci'), r, K.v('i'), jv))));
  const rowsA: KStmt[] = [];
  // Rows past the chunk have sa = 0 (a constant trip count keeps qa in registers).
  keys.push(K.loop('mm', K.i32(0), K.i32(RB), rowsA));
  rowsA.push(K.decl('ai', 'f32', K.load('sa', K.add(K.mul(K.v('mm'), K.i32(lay.Kc)), K.v('i')))));
  rowsA.push(K.store('qa', K.v('mm'), K.add(K.load('qa', K.v('mm')), K.mul(K.v('ai', 'f32'), K.v('e0', 'f32')))));
  if (lay.R === 2) rowsA.push(K.store('qa1', K.v('mm'), K.add(K.load('qa1', K.v('mm')), K.mul(K.v('ai', 'f32'), K.v('e1', 'f32')))));
  const rowsAll: KStmt[] = [];
  col.push(K.loop('mm', K.i32(0), K.i32(RB), rowsAll));
  rowsAll.push(K.decl('m', 'i32', K.add(r0, K.v('mm'))));
  const rows: KStmt[] = [];
  rowsAll.push(K.iff(K.lt(K.v('m'), len), rows));
  rows.push(K.decl('pm', 'i32', at(K.v('m'))));
  rows.push(K.decl('tot', 'f32', K.load('acc', K.v('mm'))));
  const add: KStmt[] = [];
  rows.push(K.iff(K.bin('>', K.v('ci'), K.i32(0)), add));
  const wc = K.load('wr', K.v('m'));
  // Order 1: sum_{s <= pe} (pm - s) w b c = w(pm, pe) ((pm - pe) S + S1).
  const qs = lay.R === 2 ? K.add(K.mul(distance(x, K.v('pm'), K.v('pe')), K.load('qa', K.v('mm'))), K.load('qa1', K.v('mm'))) : K.load('qa', K.v('mm'));
  add.push(K.assign('tot', K.add(K.v('tot', 'f32'), K.mul(qs, wc))));
  const idxs = s.indices.map((v) => (v.name === c.row ? K.v('pm') : v.name === c.value ? jv : batch.get(v.name)!.expr));
  const scale = L.expr(c.scale, batch, rows);
  rows.push(K.store(L.buffer(s.target, true), L.offset(s.target, idxs), scale.k === 'const' && scale.value === 1 ? K.v('tot', 'f32') : K.mul(K.v('tot', 'f32'), K.cast(scale, 'f32'))));
  blk.push(K.barrier());
  shared.push({ name: 'P', type: 'f32', size: RB * C }, { name: 'sa', type: 'f32', size: RB * lay.Kc });
  const NC = fold(K.div(K.add(x.T, K.i32(C - 1)), K.i32(C)));
  return kernelOf(name, WX, [K.i32(Math.ceil(lay.Vc / WX)), nb, NC], shared, body);
}


export interface ChunkParallelKernels {
  /** Phase (a) writes the chunk-state tensor, (b) rewrites it, (c) writes the statement's target. */
  states: Kernel;
  scan: Kernel;
  outputs: Kernel;
}

/**
 * The three kernels of a chunkwise contraction parallel over chunks. `mkL` gives each kernel its
 * own ExprLowering (buffers and runtime sizes per kernel); `stateId` is the chunk-state tensor
 * (a plan variable shaped by chunkStateShape).
 */
export function lowerChunkParallel(name: string, s: IrStmt, c: Contraction, mkL: () => ExprLowering, sched: Schedule, stateId: string): { kernels: ChunkParallelKernels; lowerings: [ExprLowering, ExprLowering, ExprLowering] } {
  const Ls: [ExprLowering, ExprLowering, ExprLowering] = [mkL(), mkL(), mkL()];
  const lay = chunkStateLayout(name, c, Ls[0], sched.chunk);
  if (sched.dense === 'blocked') {
    // CPU-like targets (dense 'blocked', with chunkParallel; native's default is the walk, chunk-walk-cpu.ts): single-thread workgroups of blocked chunk products.
    const states = lowerChunkStatesCpu(`${name}_h`, s, c, Ls[0], lay, Ls[0].buffer(stateId, true), sched.lanes);
    const scan = lowerChunkScanCpu(`${name}_scan`, s, c, Ls[1], lay, Ls[1].buffer(stateId, true), sched.lanes);
    const outputs = lowerChunkOutputsCpu(`${name}_o`, s, c, Ls[2], lay, Ls[2].buffer(stateId), sched.lanes);
    return { kernels: { states, scan, outputs }, lowerings: Ls };
  }
  const states = lowerChunkStates(`${name}_h`, s, c, Ls[0], sched, lay, Ls[0].buffer(stateId, true));
  const scan = lowerChunkScan(`${name}_scan`, s, c, Ls[1], sched, lay, Ls[1].buffer(stateId, true));
  const outputs = lowerChunkOutputs(`${name}_o`, s, c, Ls[2], sched, lay, Ls[2].buffer(stateId));
  return { kernels: { states, scan, outputs }, lowerings: Ls };
}
