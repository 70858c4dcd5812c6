// What the lowerings of a recognised contraction (analysis.ts) share: the one-workgroup forms
// (contraction.ts: recurrent, chunkwise, parallel) and the chunk-parallel form
// (chunk-parallel.ts). Scan terms: causal sums scan positions forward, anti-causal ones
// (gradients) backward, so each helper is written once for both directions. Decay weights are
// exp(L(later) - L(earlier)) from differences, never from L alone: only non-positive numbers are
// exponentiated.
import type { Contraction } from '../analysis.js';
import { POS } from '../analysis.js';
import type { IrStmt, Node } from '../ir.js';
import * as K from '../kir.js';
import type { KExpr, KShared, KStmt } from '../kir.js';
import { type Binding, dimExpr, type ExprLowering, fold } from './expr.js';

/** What a lowering of one contraction statement knows. */
export interface ScanCtx {
  c: Contraction;
  s: IrStmt;
  L: ExprLowering;
  T: KExpr;
  batch: Map<string, Binding>;
  /** Shared arrays of chunk-local cumulative gates, per decay term (chunked forms only). */
  local?: (string | undefined)[];
}

export const pow2AtLeast = (n: number, cap: number): number => { let p = 1; while (p < n && p < cap) p *= 2; return p; };

/** Position of scan step `k`: forward for causal sums, backward for anti-causal ones. */
export const posOf = (x: ScanCtx, k: KExpr): KExpr => (x.c.direction === 'causal' ? k : fold(K.sub(K.sub(x.T, K.i32(1)), k)));

/** Scan distance from q to p (>= 0). */
export const distance = (x: ScanCtx, p: KExpr, q: KExpr): KExpr => K.cast(x.c.direction === 'causal' ? K.sub(p, q) : K.sub(q, p), 'f32');

/**
 * Exponent of the weight between scan-later position `p` and scan-earlier position `q` (<= 0).
 * Inside a chunk, `scan` gives their scan indices in the chunk (-1 for the previous chunk's
 * last position): gated terms with a per-step gate then read the chunk-local sums Lc.
 */
export function exponent(x: ScanCtx, p: KExpr, q: KExpr, out: KStmt[], scan?: [KExpr, KExpr]): KExpr {
  const [later, earlier] = x.c.direction === 'causal' ? [p, q] : [q, p];
  const parts = x.c.decay.map((term, k): KExpr => {
    if (term.kind === 'fixed') return K.mul(K.cast(K.sub(later, earlier), 'f32'), x.L.expr(term.lambda, x.batch, out));
    const lc = x.local?.[k];
    if (lc && scan) return K.sub(K.load(lc, K.add(scan[0], K.i32(1))), K.load(lc, K.add(scan[1], K.i32(1))));
    const at = (pos: KExpr) => x.L.expr(term.G, new Map([...x.batch, [POS, { expr: pos }]]), out);
    return K.sub(at(later), at(earlier));
  });
  return parts.length ? parts.reduce((a, b) => K.add(a, b)) : K.f32(0);
}

/** w times -1 where a negative decay base meets an odd distance (`odd`; always when absent), for each sign of the contraction. */
export function withSigns(x: ScanCtx, w: KExpr, odd: KExpr | undefined, out: KStmt[]): KExpr {
  return x.c.signs.reduce((acc, cond) => {
    const neg = x.L.expr(cond, x.batch, out);
    return K.mul(acc, K.select(odd ? K.and(neg, odd) : neg, K.f32(-1), K.f32(1)));
  }, w);
}

/**
 * exp(x) for a weight that compounds (a step decay, the chunk-to-chunk carry): on |x| < 1/2 by its
 * Taylor series to degree 9 (Horner; the error is the last rounding, unbiased, and vanishes as
 * x -> 0), exp(x) beyond. GPU exps are up to 5 ulp off near 0 (lavapipe, biased by +0.4 ulp on
 * average), and a recurrent state compounds the error of its step decay over 1 / (1 - decay)
 * steps (10x the CPU executor's error at T = 300). `nm` names the declared argument.
 */
export function accurateExp(e: KExpr, out: KStmt[], nm = 'dx'): KExpr {
  out.push(K.decl(nm, 'f32', e));
  const xv = K.v(nm, 'f32');
  let fact = 1;
  const coef: number[] = [];
  for (let n = 0; n <= 9; n++) coef.push(1 / (fact *= n || 1));
  let poly: KExpr = K.f32(Math.fround(coef[9]!));
  for (let n = 8; n >= 0; n--) poly = K.add(K.mul(poly, xv), K.f32(Math.fround(coef[n]!)));
  return K.select(K.lt(K.un('abs', xv), K.f32(0.5)), poly, K.un('exp', xv));
}

/** The decay between scan-later p and scan-earlier q, from `expOf` of its exponent `e()` (signs included). */
export function weightFrom(x: ScanCtx, p: KExpr, q: KExpr, e: () => KExpr, out: KStmt[], expOf: (e: KExpr) => KExpr = (v) => K.un('exp', v)): KExpr {
  const w = x.c.decay.length === 0 ? K.f32(1) : expOf(e());
  return withSigns(x, w, K.bin('!=', K.bin('%', x.c.direction === 'causal' ? K.sub(p, q) : K.sub(q, p), K.i32(2)), K.i32(0)), out);
}

/** The decay between scan-later p and scan-earlier q; `compounded`: with the accurate exp (a chunk carry). */
export const weight = (x: ScanCtx, p: KExpr, q: KExpr, out: KStmt[], scan?: [KExpr, KExpr], compounded = false): KExpr =>
  weightFrom(x, p, q, () => exponent(x, p, q, out, scan), out, compounded ? (v) => accurateExp(v, out) : undefined);

/** a(row = p, inner = i), b(col = p, inner = i), c(col = p, value = j), as f32. */
export function factor(x: ScanCtx, which: 'a' | 'b' | 'c', p: KExpr, k: KExpr, out: KStmt[]): KExpr {
  const n: Node = x.c[which];
  const posName = which === 'a' ? x.c.row : x.c.col;
  const kName = which === 'c' ? x.c.value : x.c.inner;
  const kExtent = which === 'c' ? x.c.V : x.c.K;
  const bind = new Map<string, Binding>([...x.batch, [posName, { expr: p, extent: x.c.T }], [kName, { expr: k, extent: kExtent }]]);
  return K.cast(x.L.expr(n, bind, out), 'f32');
}

/** Batch indices from wg.y (last batch index fastest), declared in `body`, and the number of batch entries. */
export function batchOf(c: Contraction, L: ExprLowering, body: KStmt[]): { batch: Map<string, Binding>; nb: KExpr } {
  const batch = new Map<string, Binding>();
  let rest: KExpr = K.wg('y');
  for (let k = c.batch.length - 1; k >= 0; k--) {
    const v = c.batch[k]!;
    const ext = dimExpr(v.extent, L.sizes);
    const nm = `b_${v.name.replace(/[^A-Za-z0-9_]/g, '_')}`;
    body.push(K.decl(nm, 'i32', k === 0 ? rest : K.bin('%', rest, ext)));
    if (k > 0) rest = K.bin('/', rest, ext);
    batch.set(v.name, { expr: K.v(nm), extent: v.extent });
  }
  const nb = fold(c.batch.reduce<KExpr>((a, v) => K.mul(a, dimExpr(v.extent, L.sizes)), K.i32(1)));
  return { batch, nb };
}

/** A compensated (Kahan) running sum of the gate step over scan steps c0 .. c0 + len - 1 (loop variable m; `body` runs after each addition). */
export function kahan(x: ScanCtx, step: Node, nm: string, c0: KExpr, len: KExpr, out: KStmt[], body: KStmt[]): KExpr {
  out.push(K.decl(`${nm}s`, 'f32', K.f32(0)), K.decl(`${nm}e`, 'f32', K.f32(0)));
  const inner: KStmt[] = [];
  out.push(K.loop('m', K.i32(0), len, inner));
  const pos = posOf(x, K.add(c0, K.v('m')));
  const at = x.c.direction === 'causal' ? pos : K.add(pos, K.i32(1));
  const g = K.cast(x.L.expr(step, new Map([...x.batch, [POS, { expr: at }]]), inner), 'f32');
  const [sum, err] = [K.v(`${nm}s`, 'f32'), K.v(`${nm}e`, 'f32')];
  inner.push(K.decl('y', 'f32', K.sub(g, err)), K.decl('tk', 'f32', K.add(sum, K.v('y', 'f32'))));
  inner.push(K.assign(`${nm}e`, K.sub(K.sub(K.v('tk', 'f32'), sum), K.v('y', 'f32'))), K.assign(`${nm}s`, K.v('tk', 'f32')));
  inner.push(...body);
  return sum;
}

/**
 * Chunk-local cumulative gates: Lc[0] = 0, Lc[m + 1] = the compensated sum of the gate steps of
 * scan steps 0..m of the chunk at c0 (one thread writes them; a barrier follows). Sets x.local.
 */
export function localGates(x: ScanCtx, C: number, c0: KExpr, len: KExpr, out: KStmt[]): KShared[] {
  const shared: KShared[] = [];
  const names = x.c.decay.map((term, k) => (term.kind === 'gated' && term.step ? `Lc${k}` : undefined));
  if (!names.some((n) => n)) return shared;
  x.local = names;
  const fill: KStmt[] = [];
  out.push(K.iff(K.bin('==', K.tid('x'), K.i32(0)), fill));
  names.forEach((nm, k) => {
    const term = x.c.decay[k]!;
    if (!nm || term.kind !== 'gated' || !term.step) return;
    shared.push({ name: nm, type: 'f32', size: C + 1 });
    fill.push(K.store(nm, K.i32(0), K.f32(0)));
    kahan(x, term.step, nm, c0, len, fill, [K.store(nm, K.add(K.v('m'), K.i32(1)), K.v(`${nm}s`, 'f32'))]);
  });
  out.push(K.barrier());
  return shared;
}
