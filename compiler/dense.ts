// Dense contractions: a statement whose value is (an elementwise tail applied to) a sum over
// feature indices of a product of two tensor loads with affine indices, every other factor of
// the product depending only on output indices. Such a statement is a batched matrix product
// C[batch, m, n] = sum_k A[batch, m, k] B[batch, k, n] with the tail applied to C: projections
// (x W^T, head splits h*K + i), transposed products and weight gradients (sum over b, t).
//
// The index variables of the product (output indices and summed ones) get roles by where they
// occur: in A, B and the output: batch; in A and the output: m; in B and the output: n; summed:
// k. An output index bound by a one-hot `where(h*V + j == u, ..., 0)` (what autodiff makes of a
// load at a split index) is replaced by the variables it splits into. Each role is a group of
// variables in order; the lowering flattens a group, and each operand reads at a flat offset
// that is affine in the variables: sum over v of stride(v) * v, with strides as size
// polynomials. Everything else (a sum over position pairs, decays, a product of three tensors,
// row reductions such as sum[c] x^2, matrix-vector products) is not dense: undefined.
import type { CVar, ReduceVar } from '../dsl/checked.js';
import { type Dim, dadd, dconst, deq, dmul, isConst } from '../dsl/dims.js';
import { freeIndices, type IrStmt, mk, type Node, type ReduceArg, substIndex } from './ir.js';

export type DenseRole = 'batch' | 'm' | 'n' | 'k';

export interface DenseVar { name: string; extent: Dim; role: DenseRole }

export interface DenseOperand {
  /** The tensor read. */
  tensor: string;
  /** Flat-offset stride of each variable of the product (0 when the operand does not read it). */
  strides: Map<string, Dim>;
}

export interface Dense {
  target: string;
  /** The variables of the product by role, each group in order (outermost first). */
  groups: Record<DenseRole, DenseVar[]>;
  a: DenseOperand;
  b: DenseOperand;
  /** Each output index (s.indices) as an affine node over the product's variables (itself, or h*V + j). */
  outputs: Map<string, Node>;
  /**
   * The statement's value with the sum replaced by the accumulator `ACC` (times the product's
   * factors that depend only on output indices): the epilogue, in the product's variables.
   */
  epilogue: Node;
  /** Extents of the flattened groups. */
  batch: Dim; M: Dim; N: Dim; K: Dim;
}

/** The accumulator in `Dense.epilogue`: a float index variable the lowering binds to the sum. */
export const ACC = mk('index', 'float', [], '%acc');

// ---- affine index expressions --------------------------------------------------------------

/** An affine form: variable -> coefficient, plus a constant (both size polynomials). */
interface Affine { coef: Map<string, Dim>; c: Dim }

function affine(n: Node): Affine | undefined {
  switch (n.op) {
    case 'index': return n.dtype === 'int' ? { coef: new Map([[n.arg as string, dconst(1)]]), c: dconst(0) } : undefined;
    case 'const': return n.dtype === 'int' ? { coef: new Map(), c: dconst(n.arg as number) } : undefined;
    case 'size': return { coef: new Map(), c: n.arg as Dim };
    case 'unary': {
      if (n.arg !== 'neg') return undefined;
      const a = affine(n.src[0]!);
      return a && scale(a, dconst(-1));
    }
    case 'binary': {
      const a = affine(n.src[0]!);
      const b = affine(n.src[1]!);
      if (!a || !b) return undefined;
      if (n.arg === '+' || n.arg === '-') {
        const sign = n.arg === '+' ? 1 : -1;
        const coef = new Map(a.coef);
        for (const [v, d] of b.coef) coef.set(v, dadd(coef.get(v) ?? dconst(0), d, sign));
        for (const [v, d] of coef) if (d.size === 0) coef.delete(v);
        return { coef, c: dadd(a.c, b.c, sign) };
      }
      if (n.arg === '*') {
        if (a.coef.size === 0) return scale(b, a.c);
        if (b.coef.size === 0) return scale(a, b.c);
      }
      return undefined;
    }
    default: return undefined;
  }
}

function scale(a: Affine, k: Dim): Affine {
  const coef = new Map<string, Dim>();
  for (const [v, d] of a.coef) { const x = dmul(d, k); if (x.size) coef.set(v, x); }
  return { coef, c: dmul(a.c, k) };
}

const prodDims = (ds: readonly Dim[]): Dim => ds.reduce((a, b) => dmul(a, b), dconst(1));

/**
 * `a` as a mixed-radix number over variables with the given extents: coefficients 1, e1, e1 e2,
 * ... (innermost first), constant 0, so that it takes every value in [0, prod extents) once.
 * Returns the variables outermost first, or undefined.
 */
function mixedRadix(a: Affine, extentOf: (v: string) => Dim | undefined): string[] | undefined {
  if (a.c.size !== 0) return undefined;
  const left = new Map(a.coef);
  const order: string[] = [];
  let radix = dconst(1);
  while (left.size) {
    const hit = [...left].find(([, d]) => deq(d, radix));
    if (!hit) return undefined;
    const ext = extentOf(hit[0]);
    if (!ext) return undefined;
    order.unshift(hit[0]);
    left.delete(hit[0]);
    radix = dmul(radix, ext);
  }
  return order;
}

// ---- recognition ---------------------------------------------------------------------------

/** The factors of a product (a / f with f free of `bound` reads as a * (1 / f)). */
function factors(n: Node, bound: ReadonlySet<string>, out: Node[]): void {
  if (n.op === 'binary' && n.arg === '*') { factors(n.src[0]!, bound, out); factors(n.src[1]!, bound, out); return; }
  if (n.op === 'binary' && n.arg === '/' && ![...freeIndices(n.src[1]!)].some((v) => bound.has(v))) {
    factors(n.src[0]!, bound, out);
    out.push(mk('binary', 'float', [mk('const', 'float', [], 1), n.src[1]!], '/'));
    return;
  }
  if (n.op === 'unary' && n.arg === 'neg') { factors(n.src[0]!, bound, out); out.push(mk('const', 'float', [], -1)); return; }
  out.push(n);
}

/** Occurrences of reduce nodes in `n` (by object, counted with multiplicity along the tree). */
function reduces(n: Node, out: Node[]): void {
  if (n.op === 'reduce') { out.push(n); return; }
  for (const s of n.src) reduces(s, out);
}

const isZero = (n: Node): boolean => n.op === 'const' && n.arg === 0;

/** Replaces the one occurrence of `from` in `root` by `to` (nodes are hash-consed: by identity). */
function replaceNode(root: Node, from: Node, to: Node): Node {
  if (root === from) return to;
  if (root.src.length === 0) return root;
  const src = root.src.map((s) => replaceNode(s, from, to));
  return src.every((s, i) => s === root.src[i]) ? root : mk(root.op, root.dtype, src, root.arg);
}

/**
 * The dense contraction a statement is, or undefined (it stays elementwise). `vars` gives the
 * shapes of the tensors read.
 */
export function recogniseDense(s: IrStmt, vars: ReadonlyMap<string, CVar>): Dense | undefined {
  const rs: Node[] = [];
  reduces(s.value, rs);
  const sums = rs.filter((r) => (r.arg as ReduceArg).op === 'sum' && r.dtype === 'float' && (r.arg as ReduceArg).cons.length === 0);
  // Exactly one candidate sum; any other reduction must be in the tail (then it is a serial loop there).
  if (sums.length !== 1) return undefined;
  const red = sums[0]!;
  const rarg = red.arg as ReduceArg;
  const outNames = new Set(s.indices.map((v) => v.name));
  const tailFree = freeIndices(replaceNode(s.value, red, ACC));
  if ([...tailFree].some((v) => !outNames.has(v) && v !== '%acc')) return undefined;
  let sumVars: ReduceVar[] = [...rarg.vars];
  let body = red.src[0]!;
  // Output indices by the product's variables (one-hot splits replace some).
  const outputs = new Map<string, Node>(s.indices.map((v) => [v.name, mk('index', 'int', [], v.name)] as const));
  const extent = new Map<string, Dim>([...s.indices, ...sumVars].map((v) => [v.name, v.extent] as const));
  // One-hot selects: where(affine(summed) == u, X, 0) with u an output index.
  for (;;) {
    if (body.op !== 'select' || !isZero(body.src[2]!)) break;
    const c = body.src[0]!;
    if (c.op !== 'binary' || c.arg !== '==') break;
    let u: string | undefined;
    let rhs: Node | undefined;
    for (const [x, y] of [[c.src[0]!, c.src[1]!], [c.src[1]!, c.src[0]!]] as const) {
      if (x.op === 'index' && outNames.has(x.arg as string) && outputs.get(x.arg as string)!.op === 'index') { u = x.arg as string; rhs = y; break; }
    }
    if (!u || !rhs) break;
    const af = affine(rhs);
    if (!af || [...af.coef.keys()].some((v) => !sumVars.some((w) => w.name === v))) break;
    const order = mixedRadix(af, (v) => extent.get(v));
    if (!order || !deq(prodDims(order.map((v) => extent.get(v)!)), extent.get(u)!)) break;
    // u = rhs exactly: the sum over the split variables collapses to the one term where they spell u.
    if ([...freeIndices(body.src[1]!)].includes(u)) body = substIndex(body.src[1]!, new Map([[u, rhs]]));
    else body = body.src[1]!;
    outputs.set(u, rhs);
    sumVars = sumVars.filter((w) => !order.includes(w.name));
    // The split variables become output-side variables of the product.
    for (const v of order) extent.set(v, extent.get(v)!);
  }
  if (sumVars.length === 0) return undefined;
  const summed = new Set(sumVars.map((v) => v.name));
  const fs: Node[] = [];
  factors(body, summed, fs);
  const inner = fs.filter((f) => [...freeIndices(f)].some((v) => summed.has(v)));
  const outer = fs.filter((f) => !inner.includes(f));
  if (inner.length !== 2 || inner.some((f) => f.op !== 'load' || f.dtype !== 'float')) return undefined;
  // The product's variables: the output indices (or what splits them) and the summed ones.
  const prodVars: string[] = [];
  for (const v of s.indices) {
    const o = outputs.get(v.name)!;
    if (o.op === 'index') prodVars.push(v.name);
    else for (const w of mixedRadix(affine(o)!, (x) => extent.get(x))!) prodVars.push(w);
  }
  const outSide = new Set(prodVars);
  for (const v of sumVars) prodVars.push(v.name);
  const operand = (ld: Node): DenseOperand | undefined => {
    const cv = vars.get(ld.arg as string);
    if (!cv || cv.shape.length !== ld.src.length) return undefined;
    const strides = new Map<string, Dim>(prodVars.map((v) => [v, dconst(0)] as const));
    let rowStride = dconst(1);
    for (let k = ld.src.length - 1; k >= 0; k--) {
      const af = affine(ld.src[k]!);
      if (!af || af.c.size !== 0) return undefined;
      // In range by construction: a mixed-radix number over the dimension's full extent.
      const order = mixedRadix(af, (v) => extent.get(v));
      if (!order || !deq(prodDims(order.map((v) => extent.get(v)!)), cv.shape[k]!)) return undefined;
      for (const [v, d] of af.coef) {
        if (!strides.has(v)) return undefined;
        strides.set(v, dadd(strides.get(v)!, dmul(d, rowStride)));
      }
      rowStride = dmul(rowStride, cv.shape[k]!);
    }
    return { tensor: ld.arg as string, strides };
  };
  const a = operand(inner[0]!);
  const b = operand(inner[1]!);
  if (!a || !b) return undefined;
  const reads = (o: DenseOperand, v: string): boolean => o.strides.get(v)!.size !== 0;
  const groups: Record<DenseRole, DenseVar[]> = { batch: [], m: [], n: [], k: [] };
  for (const v of prodVars) {
    const ext = extent.get(v)!;
    let role: DenseRole;
    if (!outSide.has(v)) role = 'k';
    else if (reads(a, v) && reads(b, v)) role = 'batch';
    else if (reads(a, v)) role = 'm';
    else if (reads(b, v)) role = 'n';
    else role = 'batch'; // an output index neither operand reads: a broadcast over it
    groups[role].push({ name: v, extent: ext, role });
  }
  // A matrix-vector product or a dot product per batch element is a reduction, not a tile.
  if (groups.m.length === 0 || groups.n.length === 0) return undefined;
  const scaleBy = outer.reduce<Node>((acc, f) => mk('binary', 'float', [acc, f], '*'), ACC);
  const epilogue0 = replaceNode(s.value, red, scaleBy);
  // The epilogue reads output indices that splits replaced: substitute their affine forms.
  const split = new Map([...outputs].filter(([, o]) => o.op !== 'index'));
  const epilogue = split.size ? substIndex(epilogue0, split) : epilogue0;
  const ext = (g: DenseVar[]): Dim => prodDims(g.map((v) => v.extent));
  return { target: s.target, groups, a, b, outputs, epilogue, batch: ext(groups.batch), M: ext(groups.m), N: ext(groups.n), K: ext(groups.k) };
}

/**
 * The variables of a group merged where both operands read them contiguously (stride(outer) =
 * extent(inner) * stride(inner) in each): [b, t] of x[b, t, c] becomes one variable of extent
 * B*T. Each entry: the merged extent, and the innermost variable's strides.
 */
export function mergedGroup(g: readonly DenseVar[], operands: readonly DenseOperand[]): { vars: DenseVar[]; extent: Dim }[] {
  const out: { vars: DenseVar[]; extent: Dim }[] = [];
  for (const v of g) {
    const last = out[out.length - 1];
    if (last) {
      const inner = last.vars[last.vars.length - 1]!;
      // Merging v into `last` needs v to be the inner one: stride(inner of last) = extent(v) * stride(v).
      if (operands.every((o) => deq(o.strides.get(inner.name)!, dmul(v.extent, o.strides.get(v.name)!)))) {
        last.vars.push(v);
        last.extent = dmul(last.extent, v.extent);
        continue;
      }
    }
    out.push({ vars: [v], extent: v.extent });
  }
  return out;
}

/** Whether a stride is the constant 1 (the operand is contiguous along that variable). */
export const unitStride = (d: Dim): boolean => isConst(d) && d.get('') === 1;

/** Readable summary, for dumps and test messages. */
export function denseToString(d: Dense): string {
  const g = (r: DenseRole) => d.groups[r].map((v) => v.name).join(',') || '-';
  return `dense ${d.target}: batch [${g('batch')}] m [${g('m')}] n [${g('n')}] k [${g('k')}]; a = ${d.a.tensor}, b = ${d.b.tensor}`;
}

