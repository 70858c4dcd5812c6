// Tree reductions: a statement whose value is (a function of) one sum over an extent that is
// large against its number of outputs (norm weight gradients over B*T, decay gradients, scalar
// losses, squared norms) as one workgroup per `outs` output elements instead of one thread per
// output with a serial loop:
//   - thread t is lane t / outs of output t % outs of the workgroup's group (adjacent threads,
//     adjacent outputs: their loads are adjacent where the output's last index is contiguous);
//   - each lane strides over the flattened summed extent (lane, lane + lanes, ...) with an f32
//     accumulator, the sum's range constraints guarding each term; the loop runs over the steps
//     r0 = 0, lanes, ... alike in every thread (uniform bounds: CPU targets vectorise across lanes);
//   - the lanes' partial sums meet in a workgroup-memory tree (log2 lanes levels, a barrier
//     between levels), so the order of the additions is fixed per kernel and shape;
//   - lane 0 applies the statement's elementwise tail to the sum and stores it.
// Only the workgroup-memory tree: kernel IR has no subgroup operations (subgroupAdd,
// __shfl_down_sync), so the last levels are not shuffles.
import { type Dim, dconst, devaluate, dmul } from '../../dsl/dims.js';
import { ACC } from '../dense.js';
import { type IrStmt, mk, type Node, type ReduceArg } from '../ir.js';
import * as K from '../kir.js';
import type { Kernel, KExpr, KStmt } from '../kir.js';
import { type Binding, dimExpr, type ExprLowering, fold, LowerError } from './expr.js';

/** How a tree reduction spreads over a workgroup: `outs` outputs, `lanes` threads each. */
export interface TreeShape { outs: number; lanes: number }

/** 256 lanes on one output: the guaranteed WebGPU workgroup (also the shape where the output count is not known). */
export const DEFAULT_TREE: TreeShape = { outs: 1, lanes: 256 };

/**
 * The default shape for a statement: 256 threads, about 16 workgroups' worth of outputs
 * spread so that adjacent threads take adjacent outputs (coalesced loads where the output's last
 * index is contiguous) without leaving a small output count few workgroups: outs =
 * pow2floor(outputs / 16) clamped to 1..32, lanes = 256 / outs (1 x 256 for a scalar, 4 x 64 for
 * 64 outputs, 32 x 8 from 512 outputs).
 */
export function defaultTreeShape(s: IrStmt, constants: ReadonlyMap<string, number>): TreeShape {
  const n = devaluate(product(s.indices.map((v) => v.extent)), constants);
  if (n === undefined) return DEFAULT_TREE;
  let outs = 1;
  while (outs < 32 && outs * 2 * 16 <= n) outs *= 2;
  return { outs, lanes: 256 / outs };
}
/** At most this many outputs (known sizes) for the default to take a tree: more outputs fill a device alone. */
export const TREE_MAX_OUTPUTS = 2048;

/** The one sum at the top of a statement's value (not inside another sum) that a tree reduces, if there is exactly one and it is an f32 sum. */
export function treeSum(s: IrStmt): Node | undefined {
  const found: Node[] = [];
  const seen = new Set<number>();
  const go = (n: Node): void => {
    if (seen.has(n.id)) return;
    seen.add(n.id);
    if (n.op === 'reduce') { found.push(n); return; }
    n.src.forEach(go);
  };
  go(s.value);
  const sums = found.filter((n) => (n.arg as ReduceArg).op === 'sum' && n.dtype === 'float');
  return sums.length === 1 ? sums[0] : undefined;
}

const product = (ds: readonly Dim[]): Dim => ds.reduce((a, d) => dmul(a, d), dconst(1));

/**
 * Whether the schedule's default 'tree' suits statement `s`: it has one f32 sum, its outputs are
 * known and at most TREE_MAX_OUTPUTS, and the sum covers at least two rounds of the lanes
 * (a summed extent with sizes not known, such as B*T, counts as long).
 */
export function treeSuits(s: IrStmt, constants: ReadonlyMap<string, number>, shape: TreeShape = defaultTreeShape(s, constants)): boolean {
  const red = treeSum(s);
  if (!red) return false;
  const outs = devaluate(product(s.indices.map((v) => v.extent)), constants);
  if (outs === undefined || outs > TREE_MAX_OUTPUTS) return false;
  const summed = devaluate(product((red.arg as ReduceArg).vars.map((v) => v.extent)), constants);
  return summed === undefined || summed >= 2 * shape.lanes;
}

/** The tree shape a statement choice's `tiles` asks for (outs, lanes), over `base`. */
export function treeShapeOf(tiles: Readonly<Record<string, number>> | undefined, base: TreeShape = DEFAULT_TREE): TreeShape {
  return { outs: tiles?.['outs'] ?? base.outs, lanes: tiles?.['lanes'] ?? base.lanes };
}

function replaceNode(root: Node, from: Node, to: Node, memo = new Map<number, Node>()): Node {
  if (root === from) return to;
  const hit = memo.get(root.id);
  if (hit) return hit;
  const src = root.src.map((x) => replaceNode(x, from, to, memo));
  const out = src.every((x, i) => x === root.src[i]) ? root : mk(root.op, root.dtype, src, root.arg);
  memo.set(root.id, out);
  return out;
}

/** Binds `vars` (last fastest) to the digits of flat index `flat`, declaring them into `into`. */
function unflatten(vars: readonly { name: string; extent: Dim }[], flat: KExpr, L: ExprLowering, prefix: string, into: KStmt[], bind: Map<string, Binding>): void {
  let rest = flat;
  for (let k = vars.length - 1; k >= 0; k--) {
    const v = vars[k]!;
    const ext = dimExpr(v.extent, L.sizes);
    const n = `${prefix}${v.name.replace(/[^A-Za-z0-9_]/g, '_')}__`;
    into.push(K.decl(n, 'i32', fold(k === 0 ? rest : K.bin('%', rest, ext))));
    if (k > 0) {
      const q = `${n}q`;
      into.push(K.decl(q, 'i32', fold(K.bin('/', rest, ext))));
      rest = K.v(q);
    }
    bind.set(v.name, { expr: K.v(n), extent: v.extent });
  }
}

export function lowerTreeReduce(name: string, s: IrStmt, L: ExprLowering, shape: TreeShape = DEFAULT_TREE): Kernel {
  const { outs: G, lanes: P } = shape;
  if (!Number.isInteger(G) || G < 1 || !Number.isInteger(P) || P < 2 || (P & (P - 1))) throw new LowerError(`statement '${s.target}': a tree reduction needs a power of two of at least 2 lanes and at least 1 output per workgroup, got outs ${G}, lanes ${P}`);
  if (G * P > 1024) throw new LowerError(`statement '${s.target}': a tree reduction of ${G} outputs x ${P} lanes needs ${G * P} threads; at most 1024`);
  const red = treeSum(s);
  if (!red) throw new LowerError(`statement '${s.target}' has no single f32 sum for a tree reduction`);
  const r = red.arg as ReduceArg;
  const out = L.buffer(s.target, true);
  const N = dimExpr(product(s.indices.map((v) => v.extent)), L.sizes);
  const R = dimExpr(product(r.vars.map((v) => v.extent)), L.sizes);
  const body: KStmt[] = [];
  body.push(K.comment(`tree reduction of ${s.target}: sum over (${r.vars.map((v) => v.name).join(',')}), ${G} output(s) x ${P} lanes a workgroup`));
  // From tid itself (not a variable holding it), so that targets splitting at barriers
  // recompute lane and output in each region instead of keeping them in context arrays.
  const t = K.tid('x');
  const ol = G > 1 ? K.bin('%', t, K.i32(G)) : K.i32(0);
  const lane = G > 1 ? K.bin('/', t, K.i32(G)) : t;
  body.push(K.decl('ol__', 'i32', fold(ol)), K.decl('lane__', 'i32', fold(lane)));
  body.push(K.decl('o__', 'i32', fold(K.add(K.mul(K.wg('x'), K.i32(G)), K.v('ol__')))));
  // Output indices from the flat output id (unused past the end: every use is guarded).
  const bind = new Map<string, Binding>();
  unflatten(s.indices, K.v('o__'), L, 'i_', body, bind);
  body.push(K.decl('acc__', 'f32', K.f32(0)));
  // The strided sum over the flattened extent, guarded to real outputs.
  const term: KStmt[] = [];
  const inner = new Map(bind);
  term.push(K.decl('r__', 'i32', K.add(K.v('r0__'), K.v('lane__'))));
  const guarded: KStmt[] = [];
  term.push(K.iff(K.lt(K.v('r__'), R), guarded));
  unflatten(r.vars, K.v('r__'), L, 'r_', guarded, inner);
  let block = guarded;
  r.cons.forEach((c, ci) => {
    const rhs = L.expr(red.src[ci + 1]!, inner, block);
    const rest: KStmt[] = [];
    block.push(K.iff(K.bin(c.op, inner.get(c.name)!.expr, rhs), rest));
    block = rest;
  });
  block.push(K.assign('acc__', K.add(K.v('acc__', 'f32'), K.cast(L.expr(red.src[0]!, inner, block), 'f32'))));
  // The loop's bounds are the same for every thread (r0 over the steps, each lane's term r0 +
  // lane guarded), so CPU targets can run its body as a vectorisable work-item loop.
  body.push(K.iff(K.lt(K.v('o__'), N), [K.loop('r0__', K.i32(0), R, term, P)]));
  // The tree: level by level, lanes [0, half) add lanes [half, 2 half); barriers between.
  const slot = (l: KExpr): KExpr => fold(K.add(K.mul(l, K.i32(G)), K.v('ol__')));
  body.push(K.store('Red__', slot(K.v('lane__')), K.v('acc__', 'f32')));
  body.push(K.barrier());
  for (let half = P / 2; half >= 1; half /= 2) {
    body.push(K.iff(K.lt(K.v('lane__'), K.i32(half)), [
      K.store('Red__', slot(K.v('lane__')), K.add(K.load('Red__', slot(K.v('lane__'))), K.load('Red__', slot(K.add(K.v('lane__'), K.i32(half)))))),
    ]));
    body.push(K.barrier());
  }
  // The epilogue: lane 0 applies the tail to the sum.
  const epi: KStmt[] = [];
  const b2 = new Map(bind);
  b2.set(ACC.arg as string, { expr: K.v('sum__', 'f32') });
  epi.push(K.decl('sum__', 'f32', K.load('Red__', K.v('ol__'))));
  const value = L.expr(replaceNode(s.value, red, ACC), b2, epi);
  epi.push(K.store(out, K.v('o__'), K.cast(value, L.buffers.get(s.target)!.type)));
  body.push(K.iff(K.and(K.bin('==', K.v('lane__'), K.i32(0)), K.lt(K.v('o__'), N)), epi));
  return {
    name, workgroup: [G * P, 1, 1],
    grid: [fold(K.div(K.add(N, K.i32(G - 1)), K.i32(G))), K.i32(1), K.i32(1)],
    buffers: [], scalars: [], shared: [{ name: 'Red__', type: 'f32', size: G * P }], body,
  };
}
