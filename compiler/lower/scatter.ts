// Scatter-add lowering of a gather's gradient. Autodiff of a gather x[b, t, c] = W[tok[b, t], c]
// (compiler/autodiff.ts, emitLoadGrad) gives W's gradient a fresh index u and a one-hot mask:
//
//   dW[u, c] = sum[b, t] select(tok[b, t] == u, dx[b, t, c], 0)
//
// which the map lowering computes in O(B T U C). Here one thread per column (every output index
// but u) walks the summed positions once and adds each term into the row its token names:
// O(U C + B T C), independent of the vocabulary but for the zeroing.
//
// Bit for bit what the map lowering computes (compiler/lower/expr.ts, reduce): that keeps one
// f32 partial per loop level, acc = 0 + sum_b (part_b = 0 + sum_t term), adding +0 where the mask
// fails. A partial never is -0 (it starts at +0, and x + y is -0 only when both are), so those
// +0 terms change nothing and each element sees the same additions in the same order here:
//   - one summed index: dW[g, c] += X for each position in order (g = the token, 0 <= g < U);
//   - two (b, t): for each b, part[g, c] += X over t, then for each t of that b, dW[g, c] +=
//     part[g, c] and part[g, c] = 0 (a repeated g adds the +0 left by the first, a no-op);
//     part is a temporary tensor zeroed by a first kernel.
// A token outside [0, U) matches no u of the mask and is skipped here: it contributes nothing.
// X is evaluated only where the mask holds, as select's lazy branch is.
import type { CVar } from '../../dsl/checked.js';
import { type Dim, dconst, dmul } from '../../dsl/dims.js';
import type { IrStmt, Node, ReduceArg } from '../ir.js';
import * as K from '../kir.js';
import type { Kernel, KExpr, KStmt } from '../kir.js';
import { type Binding, dimExpr, type ExprLowering, fold } from './expr.js';

export interface ScatterSum {
  /** Position of the masked output index u among the statement's indices. */
  u: number;
  /** The int expression u must equal (the gathered index, free of u). */
  index: Node;
  /** The term added where it does (free of u). */
  term: Node;
  /** The summed indices, outermost first (one or two). */
  vars: ReduceArg['vars'];
}

const mentionsIndex = (n: Node, name: string): boolean => (n.op === 'index' && n.arg === name) || n.src.some((x) => mentionsIndex(x, name));

/** The statement as a gather gradient `sum[..] select(G == u, X, 0)` (see the header), or undefined. */
export function recogniseScatter(s: IrStmt, vars: ReadonlyMap<string, CVar>): ScatterSum | undefined {
  const r = s.value;
  if (r.op !== 'reduce' || r.dtype !== 'float') return undefined;
  const arg = r.arg as ReduceArg;
  if (arg.op !== 'sum' || arg.cons.length || arg.vars.length < 1 || arg.vars.length > 2) return undefined;
  if (vars.get(s.target)?.dtype !== 'f32') return undefined;
  const body = r.src[0]!;
  if (body.op !== 'select' || body.src[2]!.op !== 'const' || !Object.is(body.src[2]!.arg, 0)) return undefined;
  const [cond, term] = [body.src[0]!, body.src[1]!];
  if (cond.op !== 'binary' || cond.arg !== '==' || term.dtype !== 'float') return undefined;
  const names = s.indices.map((v) => v.name);
  for (const [side, other] of [[cond.src[1]!, cond.src[0]!], [cond.src[0]!, cond.src[1]!]] as const) {
    if (side.op !== 'index') continue;
    const u = names.indexOf(side.arg as string);
    if (u < 0 || names.lastIndexOf(side.arg as string) !== u || other.dtype !== 'int') continue;
    const un = side.arg as string;
    if (mentionsIndex(other, un) || mentionsIndex(term, un) || arg.vars.some((v) => v.name === un)) continue;
    return { u, index: other, term, vars: arg.vars };
  }
  return undefined;
}

const product = (ds: readonly Dim[]): Dim => ds.reduce((a, d) => dmul(a, d), dconst(1));

/** The kernel zeroing the partial-sum tensor `part` (shaped as the statement's target): one thread per element. */
export function lowerScatterZero(name: string, s: IrStmt, part: string, L: ExprLowering, threads: number): Kernel {
  const total = fold(dimExpr(product(s.indices.map((v) => v.extent)), L.sizes));
  const buf = L.buffer(part, true);
  const body: KStmt[] = [
    K.comment(`zeroes the partial sums of the scatter-add into ${s.target}`),
    K.decl('gid', 'i32', K.add(K.mul(K.wg('x'), K.i32(threads)), K.tid('x'))),
    K.iff(K.lt(K.v('gid'), total), [K.store(buf, K.v('gid'), K.f32(0))]),
  ];
  return { name, workgroup: [threads, 1, 1], grid: [fold(K.div(K.add(total, K.i32(threads - 1)), K.i32(threads))), K.i32(1), K.i32(1)], buffers: [], scalars: [], shared: [], body };
}

/**
 * The scatter-add kernel: one thread per column (the output indices but u), `threads` a
 * workgroup. `part` is the zeroed partial-sum tensor (two summed indices only).
 */
export function lowerScatter(name: string, s: IrStmt, sc: ScatterSum, L: ExprLowering, threads: number, part?: string): Kernel {
  if (sc.vars.length === 2 && part === undefined) throw new Error(`scatter ${s.target}: two summed indices need a partial-sum tensor`);
  const cols = s.indices.filter((_, k) => k !== sc.u);
  const N = fold(dimExpr(product(cols.map((v) => v.extent)), L.sizes));
  const U = dimExpr(s.indices[sc.u]!.extent, L.sizes);
  const out = L.buffer(s.target, true);
  const pbuf = part !== undefined ? L.buffer(part, true) : undefined;
  const body: KStmt[] = [K.comment(`scatter-add of ${s.target}: sum over (${sc.vars.map((v) => v.name).join(',')}) of a one-hot mask on ${s.indices[sc.u]!.name}, one thread per column`)];
  body.push(K.decl('gid', 'i32', K.add(K.mul(K.wg('x'), K.i32(threads)), K.tid('x'))));
  const inner: KStmt[] = [];
  body.push(K.iff(K.lt(K.v('gid'), N), inner));
  // The column's indices from the flat id, last fastest.
  const bind = new Map<string, Binding>();
  let rest: KExpr = K.v('gid');
  for (let k = cols.length - 1; k >= 0; k--) {
    const v = cols[k]!;
    const n = `i_${v.name.replace(/[^A-Za-z0-9_]/g, '_')}`;
    inner.push(K.decl(n, 'i32', fold(k === 0 ? rest : K.bin('%', rest, dimExpr(v.extent, L.sizes)))));
    if (k > 0) rest = K.bin('/', rest, dimExpr(v.extent, L.sizes));
    bind.set(v.name, { expr: K.v(n), extent: v.extent });
  }
  // Row-major offset of the element with u = `u` in this column.
  const at = (u: KExpr): KExpr => {
    let off: KExpr | undefined;
    s.indices.forEach((v, k) => {
      const i = k === sc.u ? u : bind.get(v.name)!.expr;
      off = off ? K.add(K.mul(off, dimExpr(v.extent, L.sizes)), i) : i;
    });
    return fold(off!);
  };
  inner.push(K.loop('u__', K.i32(0), U, [K.store(out, at(K.v('u__')), K.f32(0))]));
  const loopVar = (k: number): string => `s${k}_${sc.vars[k]!.name.replace(/[^A-Za-z0-9_]/g, '_')}`;
  const sumBind = new Map(bind);
  sc.vars.forEach((v, k) => sumBind.set(v.name, { expr: K.v(loopVar(k)), extent: v.extent }));
  // In `block`, g = the token of the current position; `then` runs where 0 <= g < U.
  const hit = (block: KStmt[], g: string, then: (at: KExpr) => KStmt[]): void => {
    block.push(K.decl(g, 'i32', K.cast(L.expr(sc.index, sumBind, block), 'i32')));
    block.push(K.iff(K.and(K.bin('<=', K.i32(0), K.v(g)), K.lt(K.v(g), U)), then(at(K.v(g)))));
  };
  const add = (buf: string, a: KExpr, x: (b: KStmt[]) => KExpr): KStmt[] => {
    const b: KStmt[] = [];
    const val = x(b);
    b.push(K.store(buf, a, K.add(K.load(buf, a), val)));
    return b;
  };
  const term = (b: KStmt[]): KExpr => K.cast(L.expr(sc.term, sumBind, b), 'f32');
  const ext = (k: number): KExpr => dimExpr(sc.vars[k]!.extent, L.sizes);
  if (sc.vars.length === 1) {
    const b: KStmt[] = [];
    hit(b, 'g__', (a) => add(out, a, term));
    inner.push(K.loop(loopVar(0), K.i32(0), ext(0), b));
  } else {
    const sum: KStmt[] = [], flush: KStmt[] = [];
    hit(sum, 'g__', (a) => add(pbuf!, a, term));
    hit(flush, 'h__', (a) => [...add(out, a, () => K.load(pbuf!, a)), K.store(pbuf!, a, K.f32(0))]);
    inner.push(K.loop(loopVar(0), K.i32(0), ext(0), [K.loop(loopVar(1), K.i32(0), ext(1), sum), K.loop(loopVar(1), K.i32(0), ext(1), flush)]));
  }
  return { name, workgroup: [threads, 1, 1], grid: [fold(K.div(K.add(N, K.i32(threads - 1)), K.i32(threads))), K.i32(1), K.i32(1)], buffers: [], scalars: [], shared: [], body };
}
