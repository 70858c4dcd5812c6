// Loop-invariant expensive subexpressions as tensors of their own (tensor IR). A statement
//   qr[b, h, t, d] = q[b, h, t, d] * cos(t * theta[d]) + ...
// evaluates cos(t * theta[d]) once per (b, h, t, d) although it depends on (t, d) only: B * H
// times the work it needs. This pass gives such a subexpression (one that holds a transcendental,
// a power or a reduction, and whose free indices are fewer than the loops around it, with at
// least MIN_SAVING times and MIN_SAVED fewer evaluations) a statement of its own over its free
// indices,
//   %h1.cos[t, d] = cos(t * theta[d])
// and reads it back by a load. Tables are hash-consed within a function: the same expression
// (up to the names of its indices) is one tensor wherever it occurs, and statements that compute
// the same value twice (theta_shift inlined once for q, once for k) are first made one, so the
// q and k rotations share one cos and one sin table. The value is the same f32 expression
// evaluated once, so results are bit for bit those of the unhoisted plan.
//
// It runs on every plan after analysis (forward, backward and stateful forms alike, so the
// stateful form's t0 + t is in the table), leaves causal contractions (their schedules
// factorise the weights themselves) and dense contractions (tiled kernels) alone, and its
// tables are f32 whatever the schedule's storage dtype.
import type { CVar, ReduceVar } from '../dsl/checked.js';
import { dconst, type Dim, devaluate, dimSymbols } from '../dsl/dims.js';
import { inExtent } from './index-range.js';
import { dimKey, freeIndices, idx, type IrFn, type IrStmt, ld, type Node, rebuild, type ReduceArg, substIndex, usedVars, walk, withSrc } from './ir.js';
import { match, type Pat } from './rewrite.js';

/** What makes a subexpression worth a tensor: a library call, a power, a reduction. */
const CALLS = new Set(['exp', 'exp2', 'log', 'log2', 'log1p', 'sqrt', 'rsqrt', 'sin', 'cos', 'tanh', 'sigmoid', 'swish', 'gelu', 'erf']);
export const EXPENSIVE: readonly Pat[] = [
  { op: 'unary', arg: (a) => CALLS.has(a as string) },
  { op: 'binary', arg: '^' },
  { op: 'reduce' },
];

/** Evaluations avoided per table element below which a table is not worth its launch. */
export const MIN_SAVING = 4;
/** Evaluations avoided in all below which a table is not worth its launch either. */
export const MIN_SAVED = 1024;
/** The extent assumed for a size known only at run time (the batch, the positions). */
export const SYMBOLIC_GUESS = 16;

export interface HoistOptions {
  /** Statements lowered as a whole that must keep their form (contractions, dense products). */
  keep: (s: IrStmt) => boolean;
  /** Sizes baked into the plan. */
  constants: ReadonlyMap<string, number>;
  /** How a tensor is stored: two statements are one only when their targets are stored alike. */
  storage: (id: string) => string;
  /**
   * The extent assumed for sizes known only at run time (default SYMBOLIC_GUESS); 1 for a decode
   * step (the stateful recurrent form runs at B = T = 1, where a table saves nothing but costs a launch).
   */
  symbolic?: number;
}

export interface Hoisted {
  fn: IrFn;
  /** The tables made, by target (each an f32 local of the function). */
  tables: Set<string>;
  /** Statements dropped as duplicates: target -> the statement's target that replaces it. */
  merged: Map<string, string>;
}

const costly = (n: Node, memo: Map<number, boolean>): boolean => {
  const hit = memo.get(n.id);
  if (hit !== undefined) return hit;
  const out = EXPENSIVE.some((p) => match(p, n, {})) || n.src.some((s) => costly(s, memo));
  memo.set(n.id, out);
  return out;
};

function extentOf(d: Dim, constants: ReadonlyMap<string, number>, guess: number): number {
  const env = new Map(constants);
  for (const s of dimSymbols(d)) if (!env.has(s)) env.set(s, guess);
  return Math.max(1, devaluate(d, env) ?? guess);
}

/** Replaces loads of the tensors in `to` by loads of their replacements. */
function renameLoads(n: Node, to: ReadonlyMap<string, string>, memo = new Map<number, Node>()): Node {
  const hit = memo.get(n.id);
  if (hit) return hit;
  const src = n.src.map((s) => renameLoads(s, to, memo));
  const name = n.op === 'load' ? to.get(n.arg as string) : undefined;
  const out = name !== undefined ? ld(name, src, n.dtype) : withSrc(n, src);
  memo.set(n.id, out);
  return out;
}

/** A statement's value with its indices renamed by position: equal values of equal statements are the same node. */
const positional = (indices: readonly ReduceVar[], value: Node): Node => substIndex(value, new Map(indices.map((v, k) => [v.name, idx(`%v${k}`)] as const)));

/**
 * Statements that compute the same value over the same extents made one: later ones are dropped
 * and their readers read the first. Only plain intermediates (not outputs, not read by a
 * contraction, assigned once, reading only tensors assigned once) are merged.
 */
function mergeDuplicates(f: IrFn, opts: HoistOptions): { fn: IrFn; merged: Map<string, string> } {
  const assigned = new Map<string, number>();
  for (const s of f.body) assigned.set(s.target, (assigned.get(s.target) ?? 0) + 1);
  const outputs = new Set(f.outputs.map((o) => o.v));
  const readByKept = new Set<string>();
  for (const s of f.body) if (opts.keep(s)) for (const v of usedVars([s])) readByKept.add(v);
  const first = new Map<string, string>();
  const merged = new Map<string, string>();
  const body: IrStmt[] = [];
  for (const s0 of f.body) {
    const s = merged.size ? { ...s0, value: renameLoads(s0.value, merged) } : s0;
    const eligible = !opts.keep(s) && !s.derived && !outputs.has(s.target) && !readByKept.has(s.target) && assigned.get(s.target) === 1
      && [...usedVars([s])].every((v) => (assigned.get(v) ?? 0) <= 1) && f.vars.has(s.target);
    if (eligible) {
      const cv = f.vars.get(s.target)!;
      const key = `${cv.dtype}|${opts.storage(s.target)}|${s.indices.map((v) => dimKey(v.extent)).join(',')}|${positional(s.indices, s.value).id}`;
      const prev = first.get(key);
      if (prev !== undefined) { merged.set(s.target, prev); continue; }
      first.set(key, s.target);
    }
    body.push(s);
  }
  if (!merged.size) return { fn: f, merged };
  const vars = new Map(f.vars);
  for (const id of merged.keys()) vars.delete(id);
  return { fn: { ...f, vars, body }, merged };
}

interface Atom { node: Node; name: string; extent: Dim }

const hasLoad = (n: Node): boolean => { let r = false; walk(n, (m) => { if (m.op === 'load') r = true; }); return r; };
const hasReduce = (n: Node): boolean => { let r = false; walk(n, (m) => { if (m.op === 'reduce') r = true; }); return r; };

/**
 * What a table over `n` is indexed by, in order of first occurrence: its free indices, except that
 * an index expression of a load that stays inside the loaded dimension (e // V in
 * ms[b, e // V, t] with e < H * V) is one index of its own when its indices occur nowhere else, so
 * rsqrt(ms[b, e // V, t] + eps) is a table over (b, e // V, t), not (b, t, e).
 */
function atomsOf(n: Node, free: ReadonlySet<string>, extents: ReadonlyMap<string, Dim>, vars: ReadonlyMap<string, CVar>, constants: ReadonlyMap<string, number>): Atom[] {
  const bound = new Set<string>();
  walk(n, (m) => { if (m.op === 'reduce') for (const v of (m.arg as ReduceArg).vars) bound.add(v.name); });
  const composite = new Map<number, Dim>();
  walk(n, (m) => {
    const shape = m.op === 'load' ? vars.get(m.arg as string)?.shape : undefined;
    if (!shape || shape.length !== m.src.length) return;
    m.src.forEach((x, k) => {
      if (x.op === 'index' || composite.has(x.id) || x.dtype !== 'int' || hasLoad(x)) return;
      const fv = freeIndices(x);
      if (fv.size === 0 || [...fv].some((v) => bound.has(v) || !free.has(v))) return;
      // The table's dimension is the loaded one's, as a number.
      const ext = devaluate(shape[k]!, constants);
      if (ext !== undefined && inExtent(x, extents, dconst(ext), constants)) composite.set(x.id, dconst(ext));
    });
  });
  // An index read outside the composite ones makes those that read it plain indices too.
  const order = (): (Node | string)[] => {
    const out: (Node | string)[] = [];
    const seen = new Set<number>();
    const visit = (m: Node): void => {
      if (seen.has(m.id)) return;
      seen.add(m.id);
      if (composite.has(m.id)) { out.push(m); return; }
      if (m.op === 'index' && free.has(m.arg as string) && !out.includes(m.arg as string)) out.push(m.arg as string);
      for (const x of m.src) visit(x);
    };
    visit(n);
    return out;
  };
  for (let changed = true; changed;) {
    changed = false;
    const plain = new Set(order().filter((a): a is string => typeof a === 'string'));
    for (const [id] of composite) {
      let node: Node | undefined;
      walk(n, (m) => { if (m.id === id) node = m; });
      if ([...freeIndices(node!)].some((v) => plain.has(v))) { composite.delete(id); changed = true; }
    }
  }
  let k = 0;
  return order().map((a) => (typeof a === 'string' ? { node: idx(a), name: a, extent: extents.get(a)! } : { node: a, name: `%x${k++}`, extent: composite.get(a.id)! }));
}

interface Scope {
  /** Index variables in scope and their extents: the statement's, then enclosing reductions'. */
  extents: Map<string, Dim>;
  /** Those bound by enclosing reductions. */
  reduced: Set<string>;
  key: string;
}

/** Hoists loop-invariant expensive subexpressions of `f`'s statements into tables. */
export function hoistInvariant(f0: IrFn, opts: HoistOptions): Hoisted {
  const { fn: f, merged } = mergeDuplicates(f0, opts);
  const vars = new Map(f.vars);
  const tables = new Set<string>();
  const byKey = new Map<string, string>();
  const costMemo = new Map<number, boolean>();
  const freeMemo = new Map<number, Set<string>>();
  const body: IrStmt[] = [];
  let count = 0;
  for (const s of f.body) {
    if (opts.keep(s)) { body.push(s); continue; }
    const made: IrStmt[] = [];
    /** The table for `n` read at its own indices, or undefined when `n` is not worth one. */
    /** A load of the table for `n`, or undefined when `n` is not worth one (nor has one already). */
    const table = (n: Node, sc: Scope): Node | undefined => {
      if (n.dtype !== 'float' || n.op === 'load' || n.op === 'const' || !costly(n, costMemo)) return undefined;
      const free = freeIndices(n, freeMemo);
      if (free.size === 0 || ![...free].every((v) => sc.extents.has(v))) return undefined;
      const atoms = atomsOf(n, free, sc.extents, vars, opts.constants);
      const indices = atoms.map((a) => ({ name: a.name, extent: a.extent }));
      const composite = new Map(atoms.filter((a) => a.node.op !== 'index').map((a) => [a.node.id, idx(a.name)] as const));
      const body = composite.size ? rebuild(n, (m, src) => composite.get(m.id) ?? withSrc(m, src)) : n;
      const key = `${indices.map((v) => dimKey(v.extent)).join(',')}|${positional(indices, body).id}`;
      const read = (id: string): Node => ld(id, atoms.map((a) => a.node));
      // A table made already is read wherever its expression occurs, whatever the saving.
      const have = byKey.get(key);
      if (have !== undefined) return read(have);
      if (!composite.size && free.size >= sc.extents.size) return undefined;
      // Evaluations now: once per statement element and per iteration of each enclosing sum over
      // an index it does not read as such (a sum over one it reads may be sparse: count it once).
      const plain = new Set(atoms.filter((a) => a.node.op === 'index').map((a) => a.name));
      let evals = 1, size = 1;
      const guess = opts.symbolic ?? SYMBOLIC_GUESS;
      for (const [v, d] of sc.extents) if (!plain.has(v) || !sc.reduced.has(v)) evals *= extentOf(d, opts.constants, guess);
      for (const a of atoms) size *= extentOf(a.extent, opts.constants, guess);
      if (evals < MIN_SAVING * size || evals - size < MIN_SAVED) return undefined;
      // The table's own value reads the tables made before it (and may make smaller ones).
      const value = go(body, { extents: new Map(indices.map((v) => [v.name, v.extent] as const)), reduced: new Set(), key: `#${key}` });
      const top = n.op === 'unary' ? (n.arg as string) : n.op === 'reduce' ? (n.arg as ReduceArg).op : 'v';
      let id: string;
      do id = `%h${++count}.${top}`; while (vars.has(id));
      byKey.set(key, id);
      tables.add(id);
      vars.set(id, { id, name: id, dtype: 'f32', shape: indices.map((v) => v.extent), role: 'local' } satisfies CVar);
      made.push({ target: id, indices, value, ...(s.span ? { span: s.span } : {}) });
      return read(id);
    };
    const memo = new Map<string, Node>();
    function go(n: Node, sc: Scope): Node {
      const mk = `${n.id}|${sc.key}`;
      const hit = memo.get(mk);
      if (hit) return hit;
      let out = table(n, sc);
      if (!out) {
        if (n.op === 'reduce' && ((n.arg as ReduceArg).vars.length > 1 || hasReduce(n.src[0]!))) {
          // A loop nest (a sum over several indices, or with a sum inside) stays whole: its
          // invariants are hoisted out of the loops by the targets' compilers, and a table read deep
          // inside costs registers (nvcc spilled parallel-backward decay gradients at 32).
          out = n;
        } else if (n.op === 'reduce') {
          // The body sees the reduction's indices; its range constraints stay as they are.
          const r = n.arg as ReduceArg;
          const extents = new Map(sc.extents), reduced = new Set(sc.reduced);
          for (const v of r.vars) { extents.set(v.name, v.extent); reduced.add(v.name); }
          const inner: Scope = { extents, reduced, key: `${sc.key}/${n.id}` };
          out = withSrc(n, [go(n.src[0]!, inner), ...n.src.slice(1)]);
        } else out = withSrc(n, n.src.map((x) => go(x, sc)));
      }
      memo.set(mk, out);
      return out;
    }
    const value = go(s.value, { extents: new Map(s.indices.map((v) => [v.name, v.extent] as const)), reduced: new Set(), key: '' });
    body.push(...made, value === s.value ? s : { ...s, value });
  }
  if (!tables.size && !merged.size) return { fn: f0, tables, merged };
  return { fn: { ...f, vars, body }, tables, merged };
}
