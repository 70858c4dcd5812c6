// Dense contractions (compiler/dense.ts) as tiled matrix products. One workgroup computes a
// tile.m x tile.n tile of C[batch, m, n] = sum_k A[batch, m, k] B[batch, k, n]:
//   - grid: x over n tiles, y over m tiles, z over the flattened batch;
//   - the K loop steps by splitK * tile.k; each step all threads stage the A and B slabs in
//     workgroup memory (As[k][m], Bs[k][n], zero outside the ragged edges), barrier, then each
//     thread accumulates its regM x regN outputs (rows ty + i*TY, columns tx + j*TX) in f32
//     locals over its k-slice of the slab, barrier;
//   - split-K: splitK groups of TY*TX threads each take tile.k of every slab and their partial
//     sums meet in a workgroup-memory tree reduction (log2 splitK rounds), so a long sum into a
//     small output (a weight gradient over B*T) uses splitK times the threads with one kernel;
//   - the epilogue (group 0): the statement's elementwise tail on the accumulator, guarded to
//     the output's ragged edge, stored at the output's row-major offset;
//   - unstaged tiles (tile.k = 0): no workgroup memory and no barriers in the K loop; each
//     thread reads its regM rows of A and regN columns of B straight from the buffers (rows and
//     columns clamped into range, their results never stored), one k at a time (split-K groups
//     interleave k). For CPU-like devices (lavapipe, the CPU executor).
// Loads give f32 whatever the storage (half storage is the buffer's KBuffer.storage).
import { type Dense, type DenseOperand, type DenseVar, mergedGroup, unitStride } from '../dense.js';
import type { IrStmt } from '../ir.js';
import * as K from '../kir.js';
import type { Kernel, KExpr, KStmt } from '../kir.js';
import { type Binding, dimExpr, type ExprLowering, fold, LowerError } from './expr.js';

/** The tiling of a dense contraction (to become a schedule field). */
export interface DenseTile {
  /** Output rows and columns per workgroup. */
  m: number; n: number;
  /**
   * Summed extent staged in workgroup memory per step and per split-K group; 0: no staging,
   * each thread reads its operands straight from the buffers (for CPU-like devices such as
   * lavapipe, where workgroup memory is no faster than cache and barriers cost).
   */
  k: number;
  /** Outputs per thread: regM rows x regN columns. */
  regM: number; regN: number;
  /** Thread groups per workgroup that split the sum (a power of two; 1: no split). */
  splitK: number;
}

/**
 * 128 x 128 tiles, 8 x 8 outputs a thread, 256 threads, k steps of 16: 16 KiB of workgroup
 * memory. The fastest staged tile measured on lavapipe at [4096, 512] x [512, 512] (64 x 64 with
 * 4 x 4 register blocks: 2-3x slower there), and the classic SGEMM shape on CUDA.
 */
export const DEFAULT_DENSE_TILE: DenseTile = { m: 128, n: 128, k: 16, regM: 8, regN: 8, splitK: 1 };
/** For outputs with a side of at most 64 (known sizes): 64 x 64, 8 x 8 a thread, 64 threads. */
export const SMALL_DENSE_TILE: DenseTile = { m: 64, n: 64, k: 16, regM: 8, regN: 8, splitK: 1 };
/** For long sums into small outputs: 4 groups of 64 threads over 32 x 32 tiles. */
export const SPLITK_DENSE_TILE: DenseTile = { m: 32, n: 32, k: 8, regM: 4, regN: 4, splitK: 4 };
/**
 * Unstaged (k = 0), for CPU-like devices (lavapipe, the CPU executor): 64 x 64, 8 x 8 a thread,
 * operands straight from the buffers, no barriers; on lavapipe at [4096, 512] x [512, 512]
 * ~1.4x the staged default, on the CPU executor ~5x (barriers make its threads generators).
 */
export const UNSTAGED_DENSE_TILE: DenseTile = { m: 64, n: 64, k: 0, regM: 8, regN: 8, splitK: 1 };
export const UNSTAGED_SPLITK_DENSE_TILE: DenseTile = { m: 32, n: 32, k: 0, regM: 4, regN: 4, splitK: 4 };
/** WebGPU's default maxComputeWorkgroupStorageSize (also lavapipe's default device). */
export const DENSE_SHARED_BUDGET = 16384;
/** WebGPU's guaranteed maxComputeInvocationsPerWorkgroup. */
export const DENSE_MAX_THREADS = 256;

export const denseThreads = (t: DenseTile): number => (t.m / t.regM) * (t.n / t.regN) * t.splitK;
export const denseSharedBytes = (t: DenseTile): number => 4 * (t.splitK * t.k * (t.m + t.n) + (t.splitK / 2) * t.m * t.n * (t.splitK > 1 ? 1 : 0));

/** Why a tile is not usable, or undefined. */
export function denseTileProblem(t: DenseTile): string | undefined {
  const ints = (['m', 'n', 'k', 'regM', 'regN', 'splitK'] as const).filter((f) => !Number.isInteger(t[f]) || t[f] < (f === 'k' ? 0 : 1));
  if (ints.length) return `dense tile fields ${ints.join(', ')} must be positive integers`;
  if (t.m % t.regM || t.n % t.regN) return `dense tile ${t.m}x${t.n} is not a multiple of the register block ${t.regM}x${t.regN}`;
  if (t.splitK & (t.splitK - 1)) return `dense tile splitK ${t.splitK} is not a power of two`;
  if (denseThreads(t) > DENSE_MAX_THREADS) return `dense tile ${t.m}x${t.n} / ${t.regM}x${t.regN} x splitK ${t.splitK} needs ${denseThreads(t)} threads; at most ${DENSE_MAX_THREADS}`;
  if (denseSharedBytes(t) > DENSE_SHARED_BUDGET) return `dense tile needs ${denseSharedBytes(t)} bytes of workgroup memory; at most ${DENSE_SHARED_BUDGET}`;
  return undefined;
}

/**
 * A default tile for a dense contraction: split-K where the output is small against the sum
 * (known sizes: M N <= 256 * 256 and K >= 4 * max(M, N)); 128 x 128 otherwise, 64 x 64 when a
 * side of the output is known to be at most 64 (fewer idle threads). `staged: false` (CPU-like
 * devices): the unstaged tiles.
 */
export function chooseDenseTile(d: Dense, constants: ReadonlyMap<string, number>, opts: { staged?: boolean } = {}): DenseTile {
  const staged = opts.staged ?? true;
  const val = (x: Dense['M']): number | undefined => {
    let out = 0;
    for (const [mono, c] of x) {
      let t = c;
      for (const a of mono ? mono.split('*') : []) { const v = constants.get(a); if (v === undefined) return undefined; t *= v; }
      out += t;
    }
    return out;
  };
  const M = val(d.M), N = val(d.N), Kx = val(d.K);
  if (M !== undefined && N !== undefined && Kx !== undefined && M * N <= 65536 && Kx >= 4 * Math.max(M, N)) return staged ? SPLITK_DENSE_TILE : UNSTAGED_SPLITK_DENSE_TILE;
  if (!staged) return UNSTAGED_DENSE_TILE;
  if ((M !== undefined && M <= 64) || (N !== undefined && N <= 64)) return SMALL_DENSE_TILE;
  return DEFAULT_DENSE_TILE;
}

const TILE_KEYS = ['m', 'n', 'k', 'regM', 'regN', 'splitK'] as const;

/**
 * The tile a statement choice's `tiles` record asks for (schedule.statements[x].tiles: any of
 * m, n, k, regM, regN, splitK; other keys such as cols are not the dense lowering's), over
 * `base` (chooseDenseTile's). undefined when the record names none of them.
 */
export function denseTileOf(tiles: Readonly<Record<string, number>> | undefined, base: DenseTile): DenseTile | undefined {
  if (!tiles || !TILE_KEYS.some((k) => Object.hasOwn(tiles, k))) return undefined;
  const out = { ...base };
  for (const k of TILE_KEYS) if (Object.hasOwn(tiles, k)) out[k] = tiles[k]!;
  return out;
}

const cleanName = (v: string): string => v.replace(/[^A-Za-z0-9_]/g, '_');

/** Fresh local names ending in '__', which no buffer name (bufferName) has: no shadowing. */
export const freshSupply = (): ((p: string) => string) => { let c = 0; return (p: string) => `${p}${c++}__`; };

/**
 * Offset into operand `o` of flat index `f` over group `g` (merged where every operand of `ops`
 * reads it contiguously): the group's variables by division and remainder (declared into
 * `into`), times their strides.
 */
export function groupOffsetOf(L: ExprLowering, fresh: (p: string) => string, g: readonly DenseVar[], ops: readonly DenseOperand[], o: DenseOperand, f: KExpr, into: KStmt[]): KExpr {
  const entries = mergedGroup(g, ops);
  if (entries.length === 0) return K.i32(0);
  let off: KExpr | undefined;
  let rest = f;
  for (let e = entries.length - 1; e >= 0; e--) {
    const ent = entries[e]!;
    const inner = ent.vars[ent.vars.length - 1]!;
    const stride = o.strides.get(inner.name)!;
    let val: KExpr;
    if (e === 0) val = rest;
    else {
      const ext = dimExpr(ent.extent, L.sizes);
      const r = fresh('r'), q = fresh('q');
      into.push(K.decl(r, 'i32', fold(K.bin('%', rest, ext))));
      into.push(K.decl(q, 'i32', fold(K.bin('/', rest, ext))));
      val = K.v(r);
      rest = K.v(q);
    }
    if (stride.size === 0) continue;
    const term = K.mul(val, dimExpr(stride, L.sizes));
    off = off ? K.add(off, term) : term;
  }
  return fold(off ?? K.i32(0));
}

export function lowerDense(name: string, s: IrStmt, d: Dense, L: ExprLowering, tile: DenseTile): Kernel {
  const problem = denseTileProblem(tile);
  if (problem) throw new LowerError(`statement '${s.target}': ${problem}`);
  const { m: tm, n: tn, k: tk, regM, regN, splitK } = tile;
  const TX = tn / regN, TY = tm / regM, P = TX * TY, T = P * splitK, slab = splitK * tk;
  const aName = L.buffer(d.a.tensor);
  const bName = L.buffer(d.b.tensor);
  const out = L.buffer(s.target, true);
  const dim = (x: Dense['M']): KExpr => dimExpr(x, L.sizes);
  const Mx = dim(d.M), Nx = dim(d.N), Kx = dim(d.K);
  const body: KStmt[] = [];
  const decl = (n: string, e: KExpr, into: KStmt[] = body): KExpr => { into.push(K.decl(n, 'i32', fold(e))); return K.v(n); };
  // Locals and shared arrays end in '__', which no buffer name (bufferName) has: no shadowing.
  const fresh = freshSupply();

  const groupOffset = (g: readonly DenseVar[], ops: readonly DenseOperand[], o: DenseOperand, f: KExpr, into: KStmt[]): KExpr => groupOffsetOf(L, fresh, g, ops, o, f, into);

  body.push(K.comment(`dense ${d.target}: [${d.groups.batch.map((v) => v.name).join(',')}] (${d.groups.m.map((v) => v.name).join(',')}) x (${d.groups.n.map((v) => v.name).join(',')}) over (${d.groups.k.map((v) => v.name).join(',')}); tile ${tm}x${tn}x${tk}, regs ${regM}x${regN}, splitK ${splitK}`));
  const tid = decl('t__', K.tid('x'));
  const lt = splitK > 1 ? decl('lt__', K.bin('%', tid, K.i32(P))) : tid;
  const grp = splitK > 1 ? decl('grp__', K.bin('/', tid, K.i32(P))) : K.i32(0);
  const tx = decl('tx__', K.bin('%', lt, K.i32(TX)));
  const ty = decl('ty__', K.bin('/', lt, K.i32(TX)));
  const n0 = decl('n0__', K.mul(K.wg('x'), K.i32(tn)));
  const m0 = decl('m0__', K.mul(K.wg('y'), K.i32(tm)));
  const bz = decl('bz__', K.wg('z'));
  const baseA = decl('baseA__', groupOffset(d.groups.batch, [d.a], d.a, bz, body));
  const baseB = decl('baseB__', groupOffset(d.groups.batch, [d.b], d.b, bz, body));
  const acc = (i: number, j: number): string => `acc_${i}_${j}__`;
  for (let i = 0; i < regM; i++) for (let j = 0; j < regN; j++) body.push(K.decl(acc(i, j), 'f32', K.f32(0)));

  // ---- the K loop --------------------------------------------------------------------------
  if (tk === 0) {
    // Unstaged: row and column bases once (clamped into range: an out-of-range row or column
    // reads a valid element whose result the epilogue never stores), then one k at a time.
    const rowA: KExpr[] = [], colB: KExpr[] = [];
    for (let i = 0; i < regM; i++) {
      const gm = decl(fresh('cm'), K.bin('min', K.add(m0, K.add(ty, K.i32(i * TY))), K.sub(Mx, K.i32(1))));
      rowA.push(decl(fresh('rowA'), K.add(baseA, groupOffset(d.groups.m, [d.a], d.a, gm, body))));
    }
    for (let j = 0; j < regN; j++) {
      const gn = decl(fresh('cn'), K.bin('min', K.add(n0, K.add(tx, K.i32(j * TX))), K.sub(Nx, K.i32(1))));
      colB.push(decl(fresh('colB'), K.add(baseB, groupOffset(d.groups.n, [d.b], d.b, gn, body))));
    }
    const inner: KStmt[] = [];
    const kA = decl('kA__', groupOffset(d.groups.k, [d.a], d.a, K.v('k__'), inner), inner);
    const kB = decl('kB__', groupOffset(d.groups.k, [d.b], d.b, K.v('k__'), inner), inner);
    for (let i = 0; i < regM; i++) inner.push(K.decl(`a${i}__`, 'f32', K.load(aName, fold(K.add(rowA[i]!, kA)), 'f32')));
    for (let j = 0; j < regN; j++) inner.push(K.decl(`b${j}__`, 'f32', K.load(bName, fold(K.add(colB[j]!, kB)), 'f32')));
    for (let i = 0; i < regM; i++) for (let j = 0; j < regN; j++) inner.push(K.assign(acc(i, j), K.add(K.v(acc(i, j), 'f32'), K.mul(K.v(`a${i}__`, 'f32'), K.v(`b${j}__`, 'f32')))));
    body.push(K.loop('k__', grp, Kx, inner, splitK));
  } else {
    const kLoop: KStmt[] = [];
    const kInner = d.groups.k.at(-1);
    const stage = (o: DenseOperand, arr: string, buf: string, base: KExpr, rows: number, group: readonly DenseVar[], R: KExpr, r0: KExpr): void => {
      const kFast = kInner !== undefined && unitStride(o.strides.get(kInner.name)!);
      const total = slab * rows;
      for (let slot = 0; slot * T < total; slot++) {
        const blk: KStmt[] = [];
        const e = decl(fresh('e'), K.add(tid, K.i32(slot * T)), blk);
        const kk = decl(fresh('kk__'), kFast ? K.bin('%', e, K.i32(slab)) : K.bin('/', e, K.i32(rows)), blk);
        const rr = decl(fresh('rr'), kFast ? K.bin('/', e, K.i32(slab)) : K.bin('%', e, K.i32(rows)), blk);
        const gr = decl(fresh('gr'), K.add(r0, rr), blk);
        const gk = decl(fresh('gk'), K.add(K.v('k0__'), kk), blk);
        const ld: KStmt[] = [];
        const off = fold(K.add(K.add(base, groupOffset(group, [o], o, gr, ld)), groupOffset(d.groups.k, [o], o, gk, ld)));
        ld.push(K.store(arr, fold(K.add(K.mul(kk, K.i32(rows)), rr)), K.load(buf, off, 'f32')));
        blk.push(K.iff(K.and(K.lt(gr, R), K.lt(gk, Kx)), ld, [K.store(arr, fold(K.add(K.mul(kk, K.i32(rows)), rr)), K.f32(0))]));
        kLoop.push(...((slot + 1) * T > total ? [K.iff(K.lt(tid, K.i32(total - slot * T)), blk)] : blk));
      }
    };
    stage(d.a, 'As__', aName, baseA, tm, d.groups.m, Mx, m0);
    stage(d.b, 'Bs__', bName, baseB, tn, d.groups.n, Nx, n0);
    kLoop.push(K.barrier());
    const inner: KStmt[] = [];
    const kr = decl('kr__', splitK > 1 ? K.add(K.mul(grp, K.i32(tk)), K.v('kk__')) : K.v('kk__'), inner);
    for (let i = 0; i < regM; i++) inner.push(K.decl(`a${i}__`, 'f32', K.load('As__', fold(K.add(K.mul(kr, K.i32(tm)), K.add(ty, K.i32(i * TY)))), 'f32')));
    for (let j = 0; j < regN; j++) inner.push(K.decl(`b${j}__`, 'f32', K.load('Bs__', fold(K.add(K.mul(kr, K.i32(tn)), K.add(tx, K.i32(j * TX)))), 'f32')));
    for (let i = 0; i < regM; i++) for (let j = 0; j < regN; j++) inner.push(K.assign(acc(i, j), K.add(K.v(acc(i, j), 'f32'), K.mul(K.v(`a${i}__`, 'f32'), K.v(`b${j}__`, 'f32')))));
    kLoop.push(K.loop('kk__', K.i32(0), K.i32(tk), inner));
    kLoop.push(K.barrier());
    body.push(K.loop('k0__', K.i32(0), Kx, kLoop, slab));
  }

  // ---- split-K: a tree reduction of the groups' partial sums in workgroup memory -----------
  const lo = (i: number, j: number): KExpr => fold(K.add(K.mul(K.add(ty, K.i32(i * TY)), K.i32(tn)), K.add(tx, K.i32(j * TX))));
  for (let half = splitK / 2; half >= 1; half /= 2) {
    const put: KStmt[] = [];
    const get: KStmt[] = [];
    for (let i = 0; i < regM; i++) for (let j = 0; j < regN; j++) {
      put.push(K.store('Red__', fold(K.add(K.mul(K.sub(grp, K.i32(half)), K.i32(tm * tn)), lo(i, j))), K.v(acc(i, j), 'f32')));
      get.push(K.assign(acc(i, j), K.add(K.v(acc(i, j), 'f32'), K.load('Red__', fold(K.add(K.mul(grp, K.i32(tm * tn)), lo(i, j))), 'f32'))));
    }
    body.push(K.iff(K.and(K.bin('>=', grp, K.i32(half)), K.lt(grp, K.i32(2 * half))), put));
    body.push(K.barrier());
    body.push(K.iff(K.lt(grp, K.i32(half)), get));
    if (half > 1) body.push(K.barrier());
  }

  // ---- the epilogue: the tail on each accumulator, stored where the output has it ----------
  const epi: KStmt[] = [];
  const bind = new Map<string, Binding>();
  const unflat = (g: readonly DenseVar[], f: KExpr, into: KStmt[]): void => {
    let rest = f;
    for (let k = g.length - 1; k >= 0; k--) {
      const v = g[k]!;
      const n = fresh(`i_${cleanName(v.name)}_`);
      if (k === 0) { into.push(K.decl(n, 'i32', rest)); }
      else {
        const ext = dim(v.extent);
        into.push(K.decl(n, 'i32', fold(K.bin('%', rest, ext))));
        rest = decl(fresh('q'), K.bin('/', rest, ext), into);
      }
      bind.set(v.name, { expr: K.v(n), extent: v.extent });
    }
  };
  unflat(d.groups.batch, bz, epi);
  for (let i = 0; i < regM; i++) for (let j = 0; j < regN; j++) {
    const blk: KStmt[] = [];
    const gm = decl(fresh('gm'), K.add(m0, K.add(ty, K.i32(i * TY))), epi);
    const gn = decl(fresh('gn'), K.add(n0, K.add(tx, K.i32(j * TX))), epi);
    unflat(d.groups.m, gm, blk);
    unflat(d.groups.n, gn, blk);
    const b2 = new Map(bind);
    b2.set('%acc', { expr: K.v(acc(i, j), 'f32') });
    const value = L.expr(d.epilogue, b2, blk);
    const outIdx = s.indices.map((v) => L.expr(d.outputs.get(v.name)!, b2, blk));
    blk.push(K.store(out, L.offset(s.target, outIdx), K.cast(value, L.buffers.get(s.target)!.type)));
    epi.push(K.iff(K.and(K.lt(gm, Mx), K.lt(gn, Nx)), blk));
  }
  body.push(...(splitK > 1 ? [K.iff(K.bin('==', grp, K.i32(0)), epi)] : epi));

  const ceil = (x: KExpr, t: number): KExpr => fold(K.div(K.add(x, K.i32(t - 1)), K.i32(t)));
  return {
    name, workgroup: [T, 1, 1],
    grid: [ceil(Nx, tn), ceil(Mx, tm), dim(d.batch)],
    buffers: [], scalars: [],
    shared: [
      ...(tk > 0 ? [{ name: 'As__', type: 'f32' as const, size: slab * tm }, { name: 'Bs__', type: 'f32' as const, size: slab * tn }] : []),
      ...(splitK > 1 ? [{ name: 'Red__', type: 'f32' as const, size: (splitK / 2) * tm * tn }] : []),
    ],
    body,
  };
}
