// Elementwise fusion in tensor IR: a map statement (no reduction in its value) whose elements its
// readers evaluate no more often than it has them is inlined into them, so it costs no kernel and
// no memory pass:
//   %d.h.total21[i0, i1, i2] = (%d.h.1[i0, i1, i2] + %d.h.15[i0, i1, i2]) + %d.h.20[i0, i1, i2]
//   %d.x.22[b, t, c] = %d.h.total21[b, t, c]            (a copy: read by every reader directly)
// A producer P is inlined
//   - into its one reader R, where R loads P at one place, with indices provably inside P's shape
//     (a load out of range reads 0, an inlined expression would not), in a scope (R's indices and
//     the sums around the load) with no more points than P has elements: P's expression is then
//     evaluated no more often than before, once per element of a bijective read such as a sum's
//     body reading P at the sum's and the statement's indices;
//   - or, when P is a copy of one load, into every reader (a load for a load), where each load of
//     P is in range or P is a rename (the same tensor at its own indices, shapes equal, so out of
//     range reads stay out of range). Readers that must stay whole (opts.keep: contractions, dense
//     sums) take only a rename, and only if they are still kept as they were after it.
// Never into or out of a kept statement otherwise (their recognition reads plain loads; the
// analysis's contractions refer to them), nor past MAX_NODES nodes in one statement. It runs to
// a fixpoint (chains fuse), keeps the statement order and spans, and drops the fused tensors from
// `vars`. In f32 the result is bit for bit the unfused plan's (the same f32 operations in the
// same order, minus a store and a load); with half storage a fused tensor is no longer rounded
// to 2 bytes between producer and reader (more precise, not less).
import type { ReduceVar } from '../dsl/checked.js';
import { deq, type Dim, devaluate, dimSymbols } from '../dsl/dims.js';
import type { Contraction } from './analysis.js';
import { type Constants, inExtent } from './index-range.js';
import { type IrFn, type IrStmt, type Node, type ReduceArg, rebuild, substIndex, usedVars, walk, withSrc } from './ir.js';

export interface FuseOptions {
  /** Statements that must stay whole (contractions, dense sums): never fused into or away. */
  keep: (s: IrStmt) => boolean;
  /** Sizes baked into the plan (for range proofs of composite indices); none by default. */
  constants?: ReadonlyMap<string, number>;
}

/** The most distinct nodes a fused statement's value may have (a kernel's registers, its source's length). */
export const MAX_NODES = 96;

/** Extents assumed for sizes known only at run time when comparing element counts: both must agree. */
const GUESSES = [3, 1 << 12];

const nodeCount = (n: Node): number => { let c = 0; walk(n, () => { c++; }); return c; };
const hasReduce = (n: Node): boolean => { let r = false; walk(n, (m) => { if (m.op === 'reduce') r = true; }); return r; };

/** A load's occurrence in a statement: its node, and the index variables in scope (the statement's, then the sums' around it). */
interface Use { load: Node; scope: ReduceVar[]; inRhs: boolean }

/** Every occurrence of a load of `id` in `s`, by context (a node under several sums is listed for each). */
function usesOf(s: IrStmt, id: string): Use[] {
  const out: Use[] = [];
  const seen = new Set<string>();
  const go = (n: Node, scope: ReduceVar[], key: string, inRhs: boolean): void => {
    const k = `${n.id}|${key}|${inRhs}`;
    if (seen.has(k)) return;
    seen.add(k);
    if (n.op === 'load' && n.arg === id) out.push({ load: n, scope, inRhs });
    if (n.op === 'reduce') {
      const r = n.arg as ReduceArg;
      go(n.src[0]!, [...scope, ...r.vars], `${key}/${n.id}`, inRhs);
      for (const c of n.src.slice(1)) go(c, scope, key, true);
      return;
    }
    for (const x of n.src) go(x, scope, key, inRhs);
  };
  go(s.value, s.indices, '', false);
  return out;
}

/** Whether index expression `e` (over `scope`) stays inside a dimension of extent `d`. */
const inDim = (e: Node, d: Dim, scope: readonly ReduceVar[], constants: Constants): boolean =>
  inExtent(e, new Map(scope.map((v) => [v.name, v.extent] as const)), d, constants);

/** Whether the product of extents `a` is at most that of `b` at every guess for the run-time sizes. */
function atMost(a: readonly Dim[], b: readonly Dim[], constants: ReadonlyMap<string, number>): boolean {
  const syms = new Set<string>();
  for (const d of [...a, ...b]) for (const s of dimSymbols(d)) if (!constants.has(s)) syms.add(s);
  return GUESSES.every((g) => {
    const env = new Map(constants);
    for (const s of syms) env.set(s, g);
    const prod = (ds: readonly Dim[]): number | undefined => ds.reduce<number | undefined>((p, d) => { const x = devaluate(d, env); return p === undefined || x === undefined ? undefined : p * x; }, 1);
    const x = prod(a), y = prod(b);
    return x !== undefined && y !== undefined && x <= y;
  });
}

/** `root` with every load of P replaced by P's value at the load's indices. */
function inline(root: Node, p: IrStmt): Node {
  const id = p.target;
  return rebuild(root, (n, src) => {
    if (n.op !== 'load' || n.arg !== id) return withSrc(n, src);
    return substIndex(p.value, new Map(p.indices.map((v, k) => [v.name, src[k]!] as const)));
  });
}

/** P is a rename: one load of a tensor at P's own indices in some order, its dimensions P's extents. */
function isRename(p: IrStmt, shapeOf: (id: string) => readonly Dim[] | undefined): boolean {
  const v = p.value;
  if (v.op !== 'load' || v.src.length !== p.indices.length) return false;
  const shape = shapeOf(v.arg as string);
  if (!shape || shape.length !== v.src.length) return false;
  const names = new Set<string>();
  for (let k = 0; k < v.src.length; k++) {
    const x = v.src[k]!;
    if (x.op !== 'index') return false;
    const i = p.indices.find((w) => w.name === x.arg);
    if (!i || names.has(i.name) || !deq(i.extent, shape[k]!)) return false;
    names.add(i.name);
  }
  return true;
}

/** The IR nodes anywhere inside a record (a contraction's fields). */
function nodesIn(x: unknown, out: Node[] = [], seen = new Set<unknown>()): Node[] {
  if (!x || typeof x !== 'object' || seen.has(x)) return out;
  seen.add(x);
  const n = x as Partial<Node>;
  if (typeof n.op === 'string' && typeof n.id === 'number' && Array.isArray(n.src)) out.push(x as Node);
  else for (const v of Object.values(x as Record<string, unknown>)) nodesIn(v, out, seen);
  return out;
}

/** The function with its single-use maps inlined into their consumers. */
export function fuseMaps(fn: IrFn, contractions: ReadonlyMap<string, Contraction>, opts: FuseOptions): IrFn {
  const constants = opts.constants ?? new Map<string, number>();
  const outputs = new Set(fn.outputs.map((o) => o.v));
  const params = new Map(fn.params.map((p) => [p.v, p] as const));
  const shapeOf = (id: string): readonly Dim[] | undefined => fn.vars.get(id)?.shape ?? params.get(id)?.shape;
  // Decided once per statement object: a fused statement is a new object and asked again.
  const keepMemo = new Map<IrStmt, boolean>();
  const keep = (s: IrStmt): boolean => {
    let k = keepMemo.get(s);
    if (k === undefined) keepMemo.set(s, (k = contractions.has(s.target) || opts.keep(s)));
    return k;
  };
  // Tensors the analysis's contractions read (their operands, decays, signs) stay as they are.
  const pinned = new Set<string>();
  for (const c of contractions.values()) for (const n of nodesIn(c)) walk(n, (m) => { if (m.op === 'load') pinned.add(m.arg as string); });
  let body = fn.body;
  const dropped = new Set<string>();
  for (let changed = true; changed;) {
    changed = false;
    const assigned = new Map<string, number[]>();
    body.forEach((s, i) => assigned.set(s.target, [...(assigned.get(s.target) ?? []), i]));
    const reads = body.map((s) => usedVars([s]));
    for (let i = 0; i < body.length && !changed; i++) {
      const p = body[i]!;
      const cv = fn.vars.get(p.target);
      if (!cv || pinned.has(p.target) || cv.role !== 'local' || cv.dtype !== 'f32' || p.value.dtype !== 'float' || outputs.has(p.target) || params.has(p.target)) continue;
      if (p.derived || keep(p) || hasReduce(p.value) || assigned.get(p.target)!.length !== 1) continue;
      // What P reads must hold the same values wherever it is read: assigned once, before P.
      if ([...reads[i]!].some((v) => v === p.target || (assigned.get(v) ?? []).some((j) => j >= i) || (assigned.get(v)?.length ?? 0) > 1)) continue;
      const readers = body.map((_, j) => j).filter((j) => j !== i && reads[j]!.has(p.target));
      if (readers.length === 0 || readers.some((j) => j < i)) continue;
      const copy = p.value.op === 'load' && p.value.dtype === 'float';
      const rename = copy && isRename(p, shapeOf);
      if (!copy && readers.length !== 1) continue;
      const fused = new Map<number, IrStmt>();
      let ok = true;
      for (const j of readers) {
        const r = body[j]!;
        const uses = usesOf(r, p.target);
        if (uses.some((u) => u.load.src.length !== p.indices.length)) { ok = false; break; }
        const inRange = (u: Use): boolean => u.load.dtype === 'float' && u.load.src.every((e, k) => inDim(e, p.indices[k]!.extent, u.scope, constants));
        if (keep(r)) {
          // A kept reader takes a rename only (a load for a load), and must stay what it was.
          if (!rename) { ok = false; break; }
        } else if (copy) {
          if (!rename && !uses.every(inRange)) { ok = false; break; }
        } else {
          const loads = new Set(uses.map((u) => u.load.id));
          const u = uses[0]!;
          if (loads.size !== 1 || uses.length !== 1 || u.inRhs || !inRange(u) || !atMost(u.scope.map((v) => v.extent), p.indices.map((v) => v.extent), constants)) { ok = false; break; }
        }
        const value = inline(r.value, p);
        const s: IrStmt = { ...r, value };
        if (keep(r) && (!keep(s) || contractions.has(r.target))) { ok = false; break; }
        if (!copy && nodeCount(value) > Math.max(MAX_NODES, nodeCount(r.value))) { ok = false; break; }
        fused.set(j, s);
      }
      if (!ok) continue;
      body = body.flatMap((s, j) => (j === i ? [] : [fused.get(j) ?? s]));
      dropped.add(p.target);
      changed = true;
    }
  }
  if (!dropped.size) return fn;
  const vars = new Map(fn.vars);
  for (const id of dropped) vars.delete(id);
  return { ...fn, vars, body };
}
