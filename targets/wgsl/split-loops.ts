// WGSL legalisation rule (targets/wgsl/legalise.ts): a loop of a constant trip count above
// UNROLL_MAX whose variable indexes a per-thread array becomes two nested loops, the inner one of at most
// SPLIT trips:  for (v = s; v < e; v++) B  ->  for (v_o = s; v_o < e; v_o += d) for (v_i = 0; v_i < d; v_i++) { let v = v_o + v_i; B }
// Why: lavapipe (llvmpipe) keeps a per-thread array in registers only when every index is a
// constant after its loop unrolling, which stops at loops of more than 32 trips; otherwise the
// array lives in scratch memory, where each access is a per-lane load or store. Measured
// (64 threads, an array of 64 updated in place): 40-56 ns per update with one 64-trip loop, 3 ns
// with 4 x 16 (as fast as an array of 16). The order of the iterations is unchanged, so the
// result is bit for bit the same; other drivers unroll or not as they like.
import { kernelNames, NameSupply, stmtExprs, walkExpr, walkStmts } from '../../compiler/c-printer.js';
import * as K from '../../compiler/kir.js';
import type { Kernel, KExpr, KStmt } from '../../compiler/kir.js';

/** Longest loop over a per-thread array left as it is (lavapipe unrolls up to 32 trips). */
const UNROLL_MAX = 32;
/** Longest inner loop made by the split. */
const SPLIT = 16;

/** The largest divisor of n in [4, SPLIT], or undefined. */
function divisor(n: number): number | undefined {
  for (let d = SPLIT; d >= 4; d--) if (n % d === 0) return d;
  return undefined;
}

/** Whether `body` indexes one of the per-thread arrays `locals` with an index that reads `v`. */
function indexes(body: readonly KStmt[], locals: ReadonlySet<string>, v: string): boolean {
  let hit = false;
  const reads = (e: KExpr): boolean => { let r = false; walkExpr(e, (x) => { if (x.k === 'var' && x.name === v) r = true; }); return r; };
  walkStmts(body, (s) => {
    if (hit) return;
    if (s.k === 'store' && locals.has(s.array) && reads(s.index)) hit = true;
    for (const e of stmtExprs(s)) walkExpr(e, (x) => { if (x.k === 'load' && locals.has(x.array) && reads(x.index)) hit = true; });
  });
  return hit;
}

export function splitLongLoops(k: Kernel): Kernel {
  const locals = new Set<string>();
  walkStmts(k.body, (s) => { if (s.k === 'local') locals.add(s.name); });
  if (!locals.size) return k;
  const names = new NameSupply(kernelNames(k));
  const block = (ss: readonly KStmt[]): KStmt[] => ss.map(stmt);
  const stmt = (s: KStmt): KStmt => {
    if (s.k === 'if') return { ...s, then: block(s.then), else: block(s.else) };
    if (s.k !== 'for') return s;
    const body = block(s.body);
    const trips = s.start.k === 'const' && s.end.k === 'const' && s.step === 1 ? s.end.value - s.start.value : 0;
    const d = trips > UNROLL_MAX ? divisor(trips) : undefined;
    if (!d || !indexes(body, locals, s.v)) return { ...s, body };
    const vo = names.fresh(`${s.v}_o`), vi = names.fresh(`${s.v}_i`);
    const inner = K.loop(vi, K.i32(0), K.i32(d), [K.decl(s.v, 'i32', K.add(K.v(vo), K.v(vi))), ...body]);
    return K.loop(vo, s.start, s.end, [inner], d);
  };
  return { ...k, body: block(k.body) };
}
