// The chunkwise form for CPU-like targets as one walk over a sequence's chunks, a workgroup (a
// core) per batch entry, the state in workgroup memory: for every chunk c in scan order,
//   outputs  [P | A'] [Cv ; S]   with P = (A B^T) * D   (chunk-cpu.ts chunkOutputs, E_c = S),
//   then     S <- carry S + H_c, H_c = Bw^T Cv          (S1 <- carry (S1 + d S) + H1 for order 1),
// the products register-blocked micro tiles as in chunk-cpu.ts. It is chunk-cpu.ts's three
// phases fused: the same packed operands, the same micro tiles and sums in the same order, so its
// results are bit for bit the chunk-parallel form's. What it saves is the chunk-state tensor
// (R K V floats per chunk: at K = V = 64 and C = 64 as many bytes as q itself, written by one
// phase and read by two more) and the scan's pass over it. Its parallelism is the batch entries
// only (B H workgroups); the chunk-parallel form (Schedule.chunkParallel) keeps chunks apart for
// machines with more cores than that.
import type { Contraction } from '../analysis.js';
import type { IrStmt } from '../ir.js';
import * as K from '../kir.js';
import type { Kernel, KExpr, KShared, KStmt } from '../kir.js';
import { chunkCarry, chunkOutputs, chunkStateProduct, declF, declI, dimsOf, freshSupply, kernelOf, loopOf, min, NCof, scoreDecayByDistance, scoreDecayByPair, up } from './chunk-cpu.js';
import { chunkStateLayout } from './chunk-state.js';
import { batchOf, distance, localGates, posOf, type ScanCtx } from './contraction-common.js';
import { dimExpr, type ExprLowering, fold } from './expr.js';

/** A chunkwise contraction at chunk C as one kernel walking each batch entry's chunks; `lanes`: Schedule.lanes (the micro tiles' vector width). */
export function lowerChunkWalkCpu(name: string, s: IrStmt, c: Contraction, L: ExprLowering, C: number, lanes?: number): Kernel {
  const f = freshSupply();
  const d = dimsOf(chunkStateLayout(name, c, L, C), lanes);
  const RKr = up(d.RK, d.MR);
  const body: KStmt[] = [K.comment(`chunkwise walk (blocked for CPUs): chunks of ${C}, state ${d.RK} x ${d.Vc} in workgroup memory; micro ${d.MR}x${d.W} and ${d.MR}x${d.NR}, lanes ${d.W}`)];
  const { batch, nb } = batchOf(c, L, body);
  const x: ScanCtx = { c, s, L, T: dimExpr(c.T, L.sizes), batch };
  const shared: KShared[] = [];
  const byDistance = c.decay.every((t) => t.kind === 'fixed');
  const fixed = byDistance ? scoreDecayByDistance(x, d, f, body, C) : undefined;
  if (fixed) shared.push(...fixed.shared);
  // The state: Ss[row Vp + j], rows r K + i (S, then S1), columns zero to Vp.
  const sAt = (row: KExpr, j: KExpr): KExpr => K.add(K.mul(row, K.i32(d.Vp)), j);
  loopOf(body, f, 'z', K.i32(0), K.i32(d.RK * d.Vp), (e, b) => b.push(K.store('Ss', e, K.f32(0))));
  loopOf(body, f, 'ci', K.i32(0), NCof(x.T, C), (ci, chunk) => {
    const c0 = declI(chunk, f, 'c0', K.mul(ci, K.i32(C)));
    const len = declI(chunk, f, 'len', min(K.i32(C), K.sub(x.T, c0)));
    shared.push(...localGates(x, C, c0, len, chunk));
    const at = (m: KExpr): KExpr => posOf(x, K.add(c0, m));
    const pe = declI(chunk, f, 'pe', at(K.i32(-1)));
    const decay = fixed ?? scoreDecayByPair(x, d, f, chunk, C, len, at);
    if (!fixed) shared.push(...decay.shared);
    shared.push(...chunkOutputs(x, d, f, chunk, { ci, len, at, pe, byDistance, decay, state: { at: (k, j) => ['Ss', sAt(k, j)] } }));
    // H_c into Hn (b read again where it lies, just packed and so cached: its rows are contiguous there).
    const pl = declI(chunk, f, 'pl', at(K.sub(len, K.i32(1))));
    shared.push(chunkStateProduct(x, d, f, chunk, { len, at, pl, byDistance }, { epi: (i0, j0) => (i, cc, v, acc) => K.store('Hn', fold(K.add(sAt(K.add(i0, K.i32(i)), j0), K.add(K.i32(cc * d.W), v))), acc) }));
    // S1 <- carry (S1 + d S) + H1; S <- carry S + H0, lane loops over whole rows (the padding stays 0).
    const cw = chunkCarry(x, f, chunk, ci, c0, len, pl, pe);
    const dist = d.R === 2 ? declF(chunk, f, 'dd', distance(x, pl, pe)) : undefined;
    loopOf(chunk, f, 'ui', K.i32(0), K.i32(d.Kc), (i, bi) => {
      loopOf(bi, f, 'uj', K.i32(0), K.i32(d.Vp), (j0, bj) => {
        const v = f('v'), lane: KStmt[] = [];
        bj.push(K.loop(v, K.i32(0), K.i32(d.W), lane));
        const j = K.add(j0, K.v(v));
        const at0 = sAt(i, j), at1 = sAt(K.add(i, K.i32(d.Kc)), j);
        if (dist) lane.push(K.store('Ss', at1, K.add(K.mul(cw, K.add(K.load('Ss', at1), K.mul(dist, K.load('Ss', at0)))), K.load('Hn', at1))));
        lane.push(K.store('Ss', at0, K.add(K.mul(cw, K.load('Ss', at0)), K.load('Hn', at0))));
      }, d.W);
    });
  });
  shared.push({ name: 'Ss', type: 'f32', size: d.RK * d.Vp }, { name: 'Hn', type: 'f32', size: RKr * d.Vp });
  return kernelOf(name, [K.i32(1), nb, K.i32(1)], shared, body);
}
