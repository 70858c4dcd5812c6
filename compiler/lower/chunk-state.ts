// The chunk-state tensor of a chunk-parallel contraction (chunk-parallel.ts for GPUs, chunk-cpu.ts
// for CPUs): per batch entry ceil(T / C) states of R K V f32 entries (R = 2 for order 1: S and
// S1), each padded to a multiple of C entries, KVp, so that the tensor's shape
// [batch.., T + C - 1, KVp / C] is a polynomial in the sizes (ceil(T / C) KVp <= (T + C - 1) KVp / C).
// State r of chunk ci is a row-major K x V matrix; S and S1 follow each other, so both together
// are one (R K) x V matrix.
import type { Contraction } from '../analysis.js';
import { dadd, dconst, type Dim } from '../../dsl/dims.js';
import * as K from '../kir.js';
import type { KExpr } from '../kir.js';
import { dimExpr, type ExprLowering, fold, LowerError } from './expr.js';

/** The layout of the chunk-state tensor of a contraction. */
export interface ChunkStateLayout {
  /** State arrays per chunk (S; S and S1 for order 1), key and value sizes, padded entries per chunk (a multiple of C). */
  R: number;
  Kc: number;
  Vc: number;
  KVp: number;
  C: number;
}

/** The chunk-state layout of `c` at chunk C (K and V must be compile-time constants). */
export function chunkStateLayout(name: string, c: Contraction, L: ExprLowering, C: number): ChunkStateLayout {
  const constOf = (d: typeof c.K, what: string): number => {
    const e = dimExpr(d, L.sizes);
    if (e.k !== 'const') throw new LowerError(`${name}: the ${what} size must be known when compiling a chunk-parallel kernel`);
    return e.value;
  };
  const Kc = constOf(c.K, 'key');
  const Vc = constOf(c.V, 'value');
  const R = c.order === 1 ? 2 : 1;
  return { R, Kc, Vc, KVp: Math.ceil((R * Kc * Vc) / C) * C, C };
}

/** The shape of the chunk-state tensor: [batch.., T + C - 1, KVp / C] (at least ceil(T / C) KVp entries per batch entry). */
export function chunkStateShape(c: Contraction, lay: ChunkStateLayout): Dim[] {
  return [...c.batch.map((v) => v.extent), dadd(c.T, dconst(lay.C - 1)), dconst(lay.KVp / lay.C)];
}

/** Flat offset of chunk `ci`'s state array r (0: S, 1: S1) at key gi, column j in the chunk-state buffer. */
export function stateAt(lay: ChunkStateLayout, T: KExpr, ci: KExpr, r: number, gi: KExpr, j: KExpr): KExpr {
  const perBatch = fold(K.mul(K.add(T, K.i32(lay.C - 1)), K.i32(lay.KVp / lay.C)));
  const base = K.add(K.mul(K.wg('y'), perBatch), K.mul(ci, K.i32(lay.KVp)));
  return fold(K.add(K.add(base, K.i32(r * lay.Kc * lay.Vc)), K.add(K.mul(gi, K.i32(lay.Vc)), j)));
}

