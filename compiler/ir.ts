// Tensor IR: small immutable nodes {op, dtype, src, arg}, hash-consed so that equal
// subgraphs are the same object (free CSE, cheap equality, cache keys). A function is a
// list of index statements `target[indices] = value` over these nodes, calls inlined.
import type { DType } from '../dsl/ast.js';
import type { BinaryFn, CExpr, CheckedFn, CParam, CStmt, CVar, ReduceVar, UnaryFn, VKind } from '../dsl/checked.js';
import { type Dim, dconst, dimToString, dsubst } from '../dsl/dims.js';
import type { Span } from '../dsl/source.js';

export type Op = 'const' | 'index' | 'size' | 'load' | 'unary' | 'binary' | 'select' | 'reduce';

export interface ReduceArg {
  op: 'sum' | 'max';
  vars: ReduceVar[];
  /** Range constraints `name op rhs`; the rhs nodes are src[1..]. */
  cons: { name: string; op: '<' | '<=' | '>' | '>=' }[];
}

export type Arg = number | string | Dim | ReduceArg | null;

export interface Node {
  readonly id: number;
  readonly op: Op;
  readonly dtype: VKind;
  readonly src: readonly Node[];
  readonly arg: Arg;
}

const table = new Map<string, Node>();
let nextId = 0;

export const dimKey = (d: Dim): string => [...d].map(([k, c]) => `${k}:${c}`).sort().join('|');

function argKey(op: Op, arg: Arg): string {
  if (op === 'size') return dimKey(arg as Dim);
  if (op === 'reduce') {
    const r = arg as ReduceArg;
    return `${r.op};${r.vars.map((v) => `${v.name}<${dimKey(v.extent)}`).join(',')};${r.cons.map((c) => `${c.name}${c.op}`).join(',')}`;
  }
  if (op === 'const') return Object.is(arg, -0) ? '-0' : String(arg);
  return String(arg);
}

/** The one constructor: returns the existing node when an equal one exists. */
export function mk(op: Op, dtype: VKind, src: readonly Node[], arg: Arg): Node {
  const key = `${op}/${dtype}/${argKey(op, arg)}/${src.map((s) => s.id).join(',')}`;
  let n = table.get(key);
  if (!n) {
    n = Object.freeze({ id: nextId++, op, dtype, src: Object.freeze([...src]), arg });
    table.set(key, n);
  }
  return n;
}

// ---- constructors -----------------------------------------------------------------------

export const cnst = (value: number, dtype: VKind = 'float'): Node => mk('const', dtype, [], value);
export const idx = (name: string): Node => mk('index', 'int', [], name);
export const size = (d: Dim): Node => mk('size', 'int', [], d);
export const ld = (v: string, indices: readonly Node[], dtype: VKind = 'float'): Node => mk('load', dtype, indices, v);
export const unary = (op: UnaryFn, a: Node): Node => mk('unary', op === 'floor' || op === 'ceil' ? 'int' : op === 'abs' || op === 'neg' ? a.dtype : 'float', [a], op);
const CMP = new Set(['<', '<=', '>', '>=', '==', '!=']);
export function binary(op: BinaryFn, a: Node, b: Node): Node {
  const dtype: VKind = CMP.has(op) ? 'bool' : op === '/' || op === '^' ? 'float' : a.dtype === 'int' && b.dtype === 'int' ? 'int' : 'float';
  return mk('binary', dtype, [a, b], op);
}
export const select = (c: Node, a: Node, b: Node): Node => mk('select', a.dtype === 'int' && b.dtype === 'int' ? 'int' : 'float', [c, a, b], null);
export const reduce = (arg: ReduceArg, body: Node, consRhs: readonly Node[]): Node => mk('reduce', body.dtype, [body, ...consRhs], arg);

export const add = (a: Node, b: Node): Node => binary('+', a, b);
export const subN = (a: Node, b: Node): Node => binary('-', a, b);
export const mulN = (a: Node, b: Node): Node => binary('*', a, b);
export const divN = (a: Node, b: Node): Node => binary('/', a, b);
export const neg = (a: Node): Node => unary('neg', a);

// ---- functions --------------------------------------------------------------------------

export interface IrStmt {
  target: string;
  indices: ReduceVar[];
  value: Node;
  span?: Span;
  /**
   * Set on statements a derivation made whose form is known to be right (the stateful form's
   * carry-in and final state: sums over the state's key axis or the block), so that `explain`
   * does not second-guess them when a key and a value axis happen to have the same extent.
   */
  derived?: 'state';
}

export interface IrFn {
  name: string;
  sizes: string[];
  params: CParam[];
  outputs: CParam[];
  vars: Map<string, CVar>;
  body: IrStmt[];
}

export function fromCExpr(e: CExpr, rename: (v: string) => string = (v) => v, sizes?: ReadonlyMap<string, Dim>): Node {
  const go = (x: CExpr): Node => {
    switch (x.k) {
      case 'const': return cnst(x.value, x.kind);
      case 'index': return idx(x.name);
      case 'size': return size(sizes ? dsubst(x.dim, sizes) : x.dim);
      case 'load': return ld(rename(x.v), x.indices.map(go), x.kind);
      case 'unary': return unary(x.op, go(x.a));
      case 'binary': return binary(x.op, go(x.a), go(x.b));
      case 'select': return select(go(x.cond), go(x.a), go(x.b));
      case 'reduce': return reduce(
        { op: x.op, vars: x.vars.map((v) => ({ name: v.name, extent: sizes ? dsubst(v.extent, sizes) : v.extent })), cons: x.constraints.map((c) => ({ name: c.name, op: c.op })) },
        go(x.body), x.constraints.map((c) => go(c.rhs)));
    }
  };
  return go(e);
}

export function toCExpr(n: Node): CExpr {
  switch (n.op) {
    case 'const': return { k: 'const', value: n.arg as number, kind: n.dtype };
    case 'index': return { k: 'index', name: n.arg as string, kind: 'int' };
    case 'size': return { k: 'size', dim: n.arg as Dim, kind: 'int' };
    case 'load': return { k: 'load', v: n.arg as string, indices: n.src.map(toCExpr), kind: n.dtype };
    case 'unary': return { k: 'unary', op: n.arg as UnaryFn, a: toCExpr(n.src[0]!), kind: n.dtype };
    case 'binary': return { k: 'binary', op: n.arg as BinaryFn, a: toCExpr(n.src[0]!), b: toCExpr(n.src[1]!), kind: n.dtype };
    case 'select': return { k: 'select', cond: toCExpr(n.src[0]!), a: toCExpr(n.src[1]!), b: toCExpr(n.src[2]!), kind: n.dtype };
    case 'reduce': {
      const r = n.arg as ReduceArg;
      return { k: 'reduce', op: r.op, vars: r.vars, constraints: r.cons.map((c, i) => ({ ...c, rhs: toCExpr(n.src[i + 1]!) })), body: toCExpr(n.src[0]!), kind: n.dtype };
    }
  }
}

/** Lowers a checked function to tensor IR, inlining every call. */
export function lowerFn(fn: CheckedFn): IrFn {
  const vars = new Map<string, CVar>();
  const body: IrStmt[] = [];
  let counter = 0;
  const inline = (f: CheckedFn, rename: (v: string) => string, sizes: ReadonlyMap<string, Dim> | undefined): void => {
    for (const [id, cv] of f.vars) {
      const nid = rename(id);
      if (!vars.has(nid)) vars.set(nid, { ...cv, id: nid, shape: sizes ? cv.shape.map((d) => dsubst(d, sizes)) : cv.shape });
    }
    for (const s of f.body) emit(f, s, rename, sizes);
  };
  const emit = (f: CheckedFn, s: CStmt, rename: (v: string) => string, sizes: ReadonlyMap<string, Dim> | undefined): void => {
    if (s.k === 'compute') {
      body.push({ target: rename(s.target), indices: s.indices.map((v) => ({ name: v.name, extent: sizes ? dsubst(v.extent, sizes) : v.extent })), value: fromCExpr(s.value, rename, sizes), span: s.span });
      return;
    }
    if (s.callee.kind !== 'fn') throw new Error(`tensor IR: layer calls are not lowered yet ('${s.callee.layer.name}')`);
    const callee = s.callee.fn;
    const prefix = `${callee.name}#${++counter}.`;
    const calleeSizes = new Map<string, Dim>();
    for (const [k, d] of s.sizes) calleeSizes.set(k, sizes ? dsubst(d, sizes) : d);
    const argOf = new Map(callee.params.map((p, i) => [p.v, rename(s.args[i]!)] as const));
    const outOf = new Map(callee.outputs.map((o, i) => [o.v, rename(s.outs[i]!)] as const));
    const calleeRename = (v: string): string => argOf.get(v) ?? outOf.get(v) ?? prefix + v;
    // Outputs of the callee become the caller's targets; everything else gets the prefix.
    inline(callee, calleeRename, calleeSizes);
  };
  inline(fn, (v) => v, undefined);
  for (const id of [...vars.keys()]) if (!body.some((s) => s.target === id) && !fn.params.some((p) => p.v === id) && ![...usedVars(body)].includes(id)) vars.delete(id);
  return { name: fn.name, sizes: fn.sizes, params: fn.params, outputs: fn.outputs, vars, body };
}

/** The checked form of an IR function, for the reference interpreter. */
export function toChecked(f: IrFn): CheckedFn {
  return {
    name: f.name, span: { file: '<ir>', line: 1, col: 1, offset: 0, length: 0 }, sizes: f.sizes, params: f.params, outputs: f.outputs, vars: f.vars,
    body: f.body.map((s) => ({ k: 'compute', target: s.target, indices: s.indices, value: toCExpr(s.value), span: s.span ?? { file: '<ir>', line: 1, col: 1, offset: 0, length: 0 } })),
  };
}

// ---- traversal helpers ------------------------------------------------------------------

/** Post-order walk, each node once. */
export function walk(root: Node, visit: (n: Node) => void, seen = new Set<number>()): void {
  if (seen.has(root.id)) return;
  seen.add(root.id);
  for (const s of root.src) walk(s, visit, seen);
  visit(root);
}

export function usedVars(body: readonly IrStmt[]): Set<string> {
  const out = new Set<string>();
  for (const s of body) walk(s.value, (n) => { if (n.op === 'load') out.add(n.arg as string); });
  return out;
}

/** Index variables a node reads that no reduction inside it binds. */
export function freeIndices(n: Node, memo = new Map<number, Set<string>>()): Set<string> {
  const hit = memo.get(n.id);
  if (hit) return hit;
  let out: Set<string>;
  if (n.op === 'index') out = new Set([n.arg as string]);
  else {
    out = new Set();
    for (const s of n.src) for (const v of freeIndices(s, memo)) out.add(v);
    if (n.op === 'reduce') for (const v of (n.arg as ReduceArg).vars) out.delete(v.name);
  }
  memo.set(n.id, out);
  return out;
}

/** Bottom-up rebuild: `f` sees each node with already-rebuilt sources. */
export function rebuild(root: Node, f: (n: Node, src: Node[]) => Node, memo = new Map<number, Node>()): Node {
  const hit = memo.get(root.id);
  if (hit) return hit;
  const src = root.src.map((s) => rebuild(s, f, memo));
  const out = f(root, src);
  memo.set(root.id, out);
  return out;
}

export const withSrc = (n: Node, src: Node[]): Node => (src.every((s, i) => s === n.src[i]) ? n : mk(n.op, n.dtype, src, n.arg));

/** Substitutes free index variables by nodes (bound variables are left alone). */
export function substIndex(root: Node, map: ReadonlyMap<string, Node>): Node {
  const go = (n: Node, shadow: ReadonlySet<string>): Node => {
    if (n.op === 'index') return shadow.has(n.arg as string) ? n : map.get(n.arg as string) ?? n;
    if (n.src.length === 0) return n;
    let inner = shadow;
    if (n.op === 'reduce') inner = new Set([...shadow, ...(n.arg as ReduceArg).vars.map((v) => v.name)]);
    return withSrc(n, n.src.map((s) => go(s, inner)));
  };
  return go(root, new Set());
}

/** Renames the variables bound by reductions to fresh names (avoids capture when nesting). */
export function freshenBound(root: Node, fresh: (name: string) => string): Node {
  return rebuildReduces(root, (n, body, cons) => {
    const r = n.arg as ReduceArg;
    const map = new Map<string, Node>();
    const vars = r.vars.map((v) => { const nn = fresh(v.name); map.set(v.name, idx(nn)); return { name: nn, extent: v.extent }; });
    return reduce({ op: r.op, vars, cons: r.cons.map((c) => ({ name: (map.get(c.name)!.arg as string), op: c.op })) }, substIndex(body, map), cons.map((c) => substIndex(c, map)));
  });
}

function rebuildReduces(root: Node, f: (n: Node, body: Node, cons: Node[]) => Node): Node {
  return rebuild(root, (n, src) => (n.op === 'reduce' ? f(n, src[0]!, src.slice(1)) : withSrc(n, src)));
}

export function nodeToString(n: Node): string {
  switch (n.op) {
    case 'const': return String(n.arg);
    case 'index': return n.arg as string;
    case 'size': return dimToString(n.arg as Dim);
    case 'load': return n.src.length ? `${n.arg}[${n.src.map(nodeToString).join(', ')}]` : (n.arg as string);
    case 'unary': return n.arg === 'neg' ? `-(${nodeToString(n.src[0]!)})` : `${n.arg}(${nodeToString(n.src[0]!)})`;
    case 'binary': {
      const op = n.arg as string;
      if (op === 'min' || op === 'max') return `${op}(${nodeToString(n.src[0]!)}, ${nodeToString(n.src[1]!)})`;
      return `(${nodeToString(n.src[0]!)} ${op} ${nodeToString(n.src[1]!)})`;
    }
    case 'select': return `where(${n.src.map(nodeToString).join(', ')})`;
    case 'reduce': {
      const r = n.arg as ReduceArg;
      const binders = [...r.vars.map((v) => `${v.name}: ${dimToString(v.extent)}`), ...r.cons.map((c, i) => `${c.name} ${c.op} ${nodeToString(n.src[i + 1]!)}`)];
      return `${r.op}[${binders.join(', ')}] (${nodeToString(n.src[0]!)})`;
    }
  }
}

export function fnToString(f: IrFn): string {
  const ty = (dt: DType, s: readonly Dim[]) => (s.length ? `${dt}[${s.map(dimToString).join(', ')}]` : dt);
  const lines = [`fn ${f.name}(${f.params.map((p) => `${p.name}: ${ty(p.dtype, p.shape)}`).join(', ')}) -> (${f.outputs.map((o) => `${o.v}: ${ty(o.dtype, o.shape)}`).join(', ')}) {`];
  for (const s of f.body) lines.push(`  ${s.target}[${s.indices.map((i) => `${i.name}: ${dimToString(i.extent)}`).join(', ')}] = ${nodeToString(s.value)}`);
  lines.push('}');
  return lines.join('\n');
}

export const ONE = cnst(1);
export const ZERO = cnst(0);
export const dimOne = dconst(1);
