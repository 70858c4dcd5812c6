// Dense contractions (compiler/dense.ts) on tensor cores: schedule dense 'mma', CUDA with f16 or
// bf16 storage only, opt-in until scripts/gpu-check.sh confirms it on hardware. One workgroup
// computes a tile.m x tile.n tile of C[batch, m, n] = sum_k A[batch, m, k] B[batch, k, n]:
//   - warps of 32 threads, (m / 32) x (n / 32) of them per split-K group, each owning a 32 x 32
//     warp tile: 2 x 4 blocks of mma.sync m16n8k16 (kernel IR's KMma), 32 f32 accumulators a
//     thread in a local array (registers: every index is a constant);
//   - the K loop steps by splitK * tile.k; each step all threads stage the slabs in shared
//     half arrays, A as [m][k] and B as [n][k] (k contiguous, rows padded by 8 halves: 16-byte
//     aligned rows for ldmatrix, and rows 4 banks apart), zeros past the ragged edges of M, N
//     and K (predicated loads), so every warp runs every mma; barrier; each split-K group's
//     warps take tile.k / 16 mma steps over their part of the slab; barrier;
//   - split-K (where compiler/lower/dense.ts would split: long sums into small outputs): the
//     groups' accumulators meet in an f32 shared-memory tree, log2 splitK rounds;
//   - the epilogue (group 0): the statement's elementwise tail on each f32 accumulator at the
//     fragment's row and column, guarded to the output's edge, rounded to the storage on store.
// Staged values are the operands' half values (loads from half buffers are exact), so products
// and sums are those of the 'tiled' lowering: without split-K the CPU executor's mma (k in order,
// f32 rounding after each addition) reproduces the tiled kernel bit for bit.
// A statement whose operands are not both stored in the schedule's half type (a tensor kept f32
// under half storage) is lowered by the tiled lowering instead: rounding it to half would change
// the result. f32 storage is an error naming the statement.
import type { KHalf, Kernel, KExpr, KStmt } from '../kir.js';
import * as K from '../kir.js';
import { type Dense, type DenseOperand, type DenseVar, unitStride } from '../dense.js';
import type { IrStmt } from '../ir.js';
import type { StorageDtype } from '../schedule.js';
import { type Binding, dimExpr, type ExprLowering, fold, LowerError } from './expr.js';
import { chooseDenseTile, denseTileOf, freshSupply, groupOffsetOf, lowerDense } from './dense.js';

/** The tiling of a tensor-core dense contraction (a statement's tiles m, n, k, splitK). */
export interface MmaTile {
  /** Output rows and columns per workgroup: multiples of the 32 x 32 warp tile. */
  m: number; n: number;
  /** Summed extent staged per step and per split-K group: a multiple of 16. */
  k: number;
  /** Warp groups per workgroup that split the sum (a power of two). */
  splitK: number;
}

/** 64 x 64 tiles of 2 x 2 warps, k steps of 32: 128 threads, 10 KiB of shared memory. */
export const DEFAULT_MMA_TILE: MmaTile = { m: 64, n: 64, k: 32, splitK: 1 };
/** Long sums into small outputs: two groups of 2 x 2 warps, 256 threads, 34 KiB. */
export const SPLITK_MMA_TILE: MmaTile = { m: 64, n: 64, k: 32, splitK: 2 };
/** The warp tile and its mma blocks (m16n8k16: 2 x 4 blocks make 32 x 32). */
const WARP = 32, MT = 2, NT = 4, ACCS = 4 * MT * NT;
/** Row padding of the staged slabs, in halves. */
const PAD = 8;
/** CUDA's static shared memory limit (the tiles stay within it: no launch attribute needed). */
const SHARED_LIMIT = 48 * 1024;

export const mmaThreads = (t: MmaTile): number => (t.m / WARP) * (t.n / WARP) * 32 * t.splitK;
export const mmaSharedBytes = (t: MmaTile): number => 2 * (t.m + t.n) * (t.splitK * t.k + PAD) + (t.splitK > 1 ? 4 * (t.splitK / 2) * (mmaThreads(t) / t.splitK) * ACCS : 0);

/** Why an mma tile is not usable, or undefined. */
export function mmaTileProblem(t: MmaTile): string | undefined {
  const bad = (['m', 'n', 'k', 'splitK'] as const).filter((f) => !Number.isInteger(t[f]) || t[f] < 1);
  if (bad.length) return `dense mma tile fields ${bad.join(', ')} must be positive integers`;
  if (t.m % WARP || t.n % WARP) return `dense mma tile ${t.m}x${t.n} is not a multiple of the ${WARP}x${WARP} warp tile`;
  if (t.k % 16) return `dense mma tile k ${t.k} is not a multiple of 16 (the mma's k)`;
  if (t.splitK & (t.splitK - 1)) return `dense mma tile splitK ${t.splitK} is not a power of two`;
  if (mmaThreads(t) > 1024) return `dense mma tile ${t.m}x${t.n} x splitK ${t.splitK} needs ${mmaThreads(t)} threads; at most 1024`;
  if (mmaSharedBytes(t) > SHARED_LIMIT) return `dense mma tile needs ${mmaSharedBytes(t)} bytes of shared memory; at most ${SHARED_LIMIT}`;
  return undefined;
}

/** The mma tile for a statement: split-K where the tiled lowering would split, with the statement's tiles m, n, k, splitK put in. */
export function chooseMmaTile(d: Dense, constants: ReadonlyMap<string, number>, tiles?: Readonly<Record<string, number>>): MmaTile {
  const base = chooseDenseTile(d, constants).splitK > 1 ? SPLITK_MMA_TILE : DEFAULT_MMA_TILE;
  const out = { ...base };
  for (const f of ['m', 'n', 'k', 'splitK'] as const) if (tiles && Object.hasOwn(tiles, f)) out[f] = tiles[f]!;
  return out;
}

export interface MmaOptions {
  /** The schedule's storage dtype. */
  dtype: StorageDtype;
  /** Half-stored tensors of the plan, by id. */
  half: ReadonlyMap<string, KHalf>;
  constants: ReadonlyMap<string, number>;
  /** The statement's tiles (schedule.statements[x].tiles). */
  tiles?: Readonly<Record<string, number>>;
}

/**
 * The kernel of a dense statement under dense 'mma': tensor cores when both operands are stored
 * in the schedule's half type, else the tiled lowering. f32 storage: a LowerError naming it.
 */
export function lowerDenseForMma(name: string, s: IrStmt, d: Dense, L: ExprLowering, o: MmaOptions): Kernel {
  if (o.dtype === 'f32') throw new LowerError(`statement '${s.target}': dense 'mma' (tensor cores) needs f16 or bf16 storage ("dtype": "f16" or "bf16", --dtype), not f32`);
  const input = o.dtype;
  if (o.half.get(d.a.tensor) !== input || o.half.get(d.b.tensor) !== input) {
    const base = chooseDenseTile(d, o.constants);
    return lowerDense(name, s, d, L, denseTileOf(o.tiles, base) ?? base);
  }
  return lowerDenseMma(name, s, d, L, chooseMmaTile(d, o.constants, o.tiles), input);
}

const cleanName = (v: string): string => v.replace(/[^A-Za-z0-9_]/g, '_');

export function lowerDenseMma(name: string, s: IrStmt, d: Dense, L: ExprLowering, tile: MmaTile, input: KHalf): Kernel {
  const problem = mmaTileProblem(tile);
  if (problem) throw new LowerError(`statement '${s.target}': ${problem}`);
  const { m: tm, n: tn, k: tk, splitK } = tile;
  const WN = tn / WARP, P = (tm / WARP) * WN * 32, T = P * splitK, slab = splitK * tk, ld = slab + PAD;
  const aName = L.buffer(d.a.tensor);
  const bName = L.buffer(d.b.tensor);
  const out = L.buffer(s.target, true);
  const dim = (x: Dense['M']): KExpr => dimExpr(x, L.sizes);
  const Mx = dim(d.M), Nx = dim(d.N), Kx = dim(d.K);
  const body: KStmt[] = [];
  const decl = (n: string, e: KExpr, into: KStmt[] = body): KExpr => { into.push(K.decl(n, 'i32', fold(e))); return K.v(n); };
  const fresh = freshSupply();
  const groupOffset = (g: readonly DenseVar[], o: DenseOperand, f: KExpr, into: KStmt[]): KExpr => groupOffsetOf(L, fresh, g, [o], o, f, into);
  const names = (r: keyof Dense['groups']): string => d.groups[r].map((v) => v.name).join(',');

  body.push(K.comment(`dense ${d.target} on tensor cores (${input}, f32 accumulators): [${names('batch')}] (${names('m')}) x (${names('n')}) over (${names('k')}); tile ${tm}x${tn}x${tk}, splitK ${splitK}, warp tiles 32x32 of mma m16n8k16`));
  const tid = decl('t__', K.tid('x'));
  const lt = splitK > 1 ? decl('lt__', K.bin('%', tid, K.i32(P))) : tid;
  const grp = splitK > 1 ? decl('grp__', K.bin('/', tid, K.i32(P))) : K.i32(0);
  const warp = decl('warp__', K.bin('/', lt, K.i32(32)));
  const lane = decl('lane__', K.bin('%', tid, K.i32(32)));
  const wm0 = decl('wm0__', K.mul(K.bin('/', warp, K.i32(WN)), K.i32(WARP)));
  const wn0 = decl('wn0__', K.mul(K.bin('%', warp, K.i32(WN)), K.i32(WARP)));
  const n0 = decl('n0__', K.mul(K.wg('x'), K.i32(tn)));
  const m0 = decl('m0__', K.mul(K.wg('y'), K.i32(tm)));
  const bz = decl('bz__', K.wg('z'));
  const baseA = decl('baseA__', groupOffset(d.groups.batch, d.a, bz, body));
  const baseB = decl('baseB__', groupOffset(d.groups.batch, d.b, bz, body));
  body.push(K.local('acc__', 'f32', ACCS));
  for (let a = 0; a < ACCS; a++) body.push(K.store('acc__', K.i32(a), K.f32(0)));

  // ---- the K loop: stage both slabs (zeros past the edges), then the warps' mma steps --------
  const kLoop: KStmt[] = [];
  const kInner = d.groups.k.at(-1);
  const stage = (o: DenseOperand, arr: string, buf: string, base: KExpr, rows: number, group: readonly DenseVar[], R: KExpr, r0: KExpr): void => {
    // Consecutive threads read consecutive elements of the operand: along k where it is contiguous in k.
    const kFast = kInner !== undefined && unitStride(o.strides.get(kInner.name)!);
    const e = `e${arr}`;
    const blk: KStmt[] = [];
    const kk = decl(fresh('kk'), kFast ? K.bin('%', K.v(e), K.i32(slab)) : K.bin('/', K.v(e), K.i32(rows)), blk);
    const rr = decl(fresh('rr'), kFast ? K.bin('/', K.v(e), K.i32(slab)) : K.bin('%', K.v(e), K.i32(rows)), blk);
    const gr = decl(fresh('gr'), K.add(r0, rr), blk);
    const gk = decl(fresh('gk'), K.add(K.v('k0__'), kk), blk);
    const at = fold(K.add(K.mul(rr, K.i32(ld)), kk));
    const ldBlk: KStmt[] = [];
    const off = fold(K.add(K.add(base, groupOffset(group, o, gr, ldBlk)), groupOffset(d.groups.k, o, gk, ldBlk)));
    ldBlk.push(K.store(arr, at, K.load(buf, off, 'f32')));
    blk.push(K.iff(K.and(K.lt(gr, R), K.lt(gk, Kx)), ldBlk, [K.store(arr, at, K.f32(0))]));
    kLoop.push(K.loop(e, tid, K.i32(slab * rows), blk, T));
  };
  stage(d.a, 'As__', aName, baseA, tm, d.groups.m, Mx, m0);
  stage(d.b, 'Bs__', bName, baseB, tn, d.groups.n, Nx, n0);
  kLoop.push(K.barrier());
  const kOff = splitK > 1 ? K.add(K.mul(grp, K.i32(tk)), K.mul(K.v('ks__'), K.i32(16))) : K.mul(K.v('ks__'), K.i32(16));
  kLoop.push(K.loop('ks__', K.i32(0), K.i32(tk / 16), [{
    k: 'mma', input, mt: MT, nt: NT,
    a: 'As__', aOff: fold(K.add(K.mul(wm0, K.i32(ld)), kOff)), aStride: ld,
    b: 'Bs__', bOff: fold(K.add(K.mul(wn0, K.i32(ld)), kOff)), bStride: ld,
    c: 'acc__', cOff: 0, of: s.target,
  }]));
  kLoop.push(K.barrier());
  body.push(K.loop('k0__', K.i32(0), Kx, kLoop, slab));

  // ---- split-K: the groups' accumulators meet in a shared-memory tree ------------------------
  const red = (g: KExpr, a: number): KExpr => fold(K.add(K.mul(K.add(K.mul(g, K.i32(ACCS)), K.i32(a)), K.i32(P)), lt));
  for (let half = splitK / 2; half >= 1; half /= 2) {
    const put: KStmt[] = [], get: KStmt[] = [];
    for (let a = 0; a < ACCS; a++) {
      put.push(K.store('Red__', red(K.sub(grp, K.i32(half)), a), K.load('acc__', K.i32(a))));
      get.push(K.store('acc__', K.i32(a), K.add(K.load('acc__', K.i32(a)), K.load('Red__', red(grp, a)))));
    }
    body.push(K.iff(K.and(K.bin('>=', grp, K.i32(half)), K.lt(grp, K.i32(2 * half))), put));
    body.push(K.barrier());
    body.push(K.iff(K.lt(grp, K.i32(half)), get));
    if (half > 1) body.push(K.barrier());
  }

  // ---- the epilogue: the tail on each accumulator at its fragment position -------------------
  const epi: KStmt[] = [];
  const bind = new Map<string, Binding>();
  const unflat = (g: readonly DenseVar[], f: KExpr, into: KStmt[], b: Map<string, Binding>): void => {
    let rest = f;
    for (let k = g.length - 1; k >= 0; k--) {
      const v = g[k]!;
      const n = fresh(`i_${cleanName(v.name)}_`);
      if (k === 0) into.push(K.decl(n, 'i32', rest));
      else {
        const ext = dim(v.extent);
        into.push(K.decl(n, 'i32', fold(K.bin('%', rest, ext))));
        rest = decl(fresh('q'), K.bin('/', rest, ext), into);
      }
      b.set(v.name, { expr: K.v(n), extent: v.extent });
    }
  };
  unflat(d.groups.batch, bz, epi, bind);
  const g4 = decl('g4__', K.bin('/', lane, K.i32(4)), epi);
  const t2 = decl('t2__', K.mul(K.bin('%', lane, K.i32(4)), K.i32(2)), epi);
  for (let i = 0; i < MT; i++) for (let h = 0; h < 2; h++) {
    const gm = decl(fresh('gm'), K.add(K.add(m0, wm0), K.add(g4, K.i32(16 * i + 8 * h))), epi);
    for (let j = 0; j < NT; j++) for (let e = 0; e < 2; e++) {
      const blk: KStmt[] = [];
      const gn = decl(fresh('gn'), K.add(K.add(n0, wn0), K.add(t2, K.i32(8 * j + e))), epi);
      const b2 = new Map(bind);
      unflat(d.groups.m, gm, blk, b2);
      unflat(d.groups.n, gn, blk, b2);
      b2.set('%acc', { expr: K.load('acc__', K.i32(4 * (i * NT + j) + 2 * h + e)) });
      const value = L.expr(d.epilogue, b2, blk);
      const outIdx = s.indices.map((v) => L.expr(d.outputs.get(v.name)!, b2, blk));
      blk.push(K.store(out, L.offset(s.target, outIdx), K.cast(value, L.buffers.get(s.target)!.type)));
      epi.push(K.iff(K.and(K.lt(gm, Mx), K.lt(gn, Nx)), blk));
    }
  }
  body.push(...(splitK > 1 ? [K.iff(K.bin('==', grp, K.i32(0)), epi)] : epi));

  const ceil = (x: KExpr, t: number): KExpr => fold(K.div(K.add(x, K.i32(t - 1)), K.i32(t)));
  return {
    name, workgroup: [T, 1, 1],
    grid: [ceil(Nx, tn), ceil(Mx, tm), dim(d.batch)],
    buffers: [], scalars: [],
    shared: [
      { name: 'As__', type: 'f32', size: tm * ld, storage: input },
      { name: 'Bs__', type: 'f32', size: tn * ld, storage: input },
      ...(splitK > 1 ? [{ name: 'Red__', type: 'f32' as const, size: (splitK / 2) * P * ACCS }] : []),
    ],
    body,
  };
}
