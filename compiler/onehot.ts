// One-hot sum elimination in tensor IR. Autodiff gives the gradient of a load at a computed index
// (x[b, e // 64, t, e % 64], k[.., d + 1]) a fresh output index u and a one-hot mask under a sum:
//
//   dx[b, u1, t, u2] = sum[e: 128] where(e % 64 == u2, where(e // 64 == u1, F(e), 0), 0)
//
// which lowers as a scatter-add (compiler/lower/scatter.ts) or a masked map, O(extent of e) per
// element. Where the mask's index inverts, the sum has at most one term (or one block of terms)
// and is F at the inverted index: a map, or a shorter sum. The rules (ELIMINATIONS, first match
// wins, repeated until none applies; each removes one `==` of the mask; c a positive constant or
// a size, a, u, u1, u2 free of the summed indices):
//   affine   e + a == u (a - e == u):           e := u - a (a - u);
//   div-mod  e // c == u1 and e % c == u2:      e := u1*c + u2, where 0 <= u2 < c;
// and, where the sum would not lower as a scatter-add anyway (BLOCK_RULES says why):
//   div      e // c == u1 alone:                e := u1*c + j, j a fresh index in [0, c) (a size
//            c must divide extent(e): c = 0 then sums over nothing either way);
//   mod      e % c == u2 alone, c | extent(e):  e := q*c + u2, q in [0, extent(e) / c),
//            where 0 <= u2 < c;
// always where the new index lies in [0, extent(e)), the set the sum ran over. A guard is
// dropped where the extents prove it (compiler/onehot-bounds.ts: u1 < H and H*c <= extent(e)),
// kept as a `where` otherwise, so an extent that does not match stays exact. Why exact:
//   - the sum adds F once (or over the block) and +0 for every other index, so the value, and in
//     float32 the order of the additions that matter, are those of the original;
//   - F is evaluated at the same e as before (a load out of range reads 0 in both), since the
//     guards keep the new index in the summed range; `//` and `%` are floor division and its
//     remainder (dsl/reference), for which the inversions hold for negative u too (the guards
//     fail there instead);
//   - the mask is found through nested wheres `where(c, X, 0)` and products `where(c, X, 0) * G`
//     (= where(c, X * G, 0), as SIMPLIFY's x * 0 = 0 has it), its other conditions carried
//     along with e substituted.
// A mask on an index mixing two summed ones (h*64 + j == u, sum[h, j]) is left alone: that is a
// weight gradient compiler/dense.ts recognises as a matrix product; a mask on an index that does
// not invert (tok[b, t] == u, e * e == u) stays the scatter-add it was.
import type { ReduceVar } from '../dsl/checked.js';
import { type Dim, dconst, deq, isConst } from '../dsl/dims.js';
import { add, binary, dimKey, freeIndices, freshenBound, idx, type IrFn, type IrStmt, mulN, type Node, reduce, type ReduceArg, select, subN, substIndex, unary, walk, withSrc } from './ir.js';
import { recogniseScatter } from './lower/scatter.js';
import { dimNode, divisorOf, exactQuotient, foldIndices, proven, type Scope } from './onehot-bounds.js';

/** The function with its one-hot sums eliminated where the index map inverts. */
export function eliminateOneHot(fn: IrFn): IrFn {
  let changed = false;
  const body = fn.body.map((s) => {
    const value = eliminateInStatement(s, recogniseScatter(s, fn.vars) === undefined);
    if (value === s.value) return s;
    changed = true;
    return { ...s, value };
  });
  return changed ? { ...fn, body } : fn;
}

// ---- a sum taken apart -------------------------------------------------------------------------

/** A condition of the mask and the zero its `where` gives where it fails. */
interface Cond { c: Node; zero: Node }

/** A sum as its variables, range constraints, mask conditions (outermost first) and the term. */
interface SumParts { vars: ReduceVar[]; arg: ReduceArg; consRhs: Node[]; conds: Cond[]; core: Node }

const isZero = (n: Node): boolean => n.op === 'const' && n.arg === 0;

/** where(c, X, 0) and where(c, X, 0) * G as their conditions and X (resp. X * G). */
function peel(n: Node): { conds: Cond[]; core: Node } {
  if (n.op === 'select' && isZero(n.src[2]!) && n.src[0]!.dtype === 'bool') {
    const inner = peel(n.src[1]!);
    return { conds: [{ c: n.src[0]!, zero: n.src[2]! }, ...inner.conds], core: inner.core };
  }
  if (n.op === 'binary' && n.arg === '*') {
    const [a, b] = [peel(n.src[0]!), peel(n.src[1]!)];
    if (a.conds.length || b.conds.length) return { conds: [...a.conds, ...b.conds], core: withSrc(n, [a.core, b.core]) };
  }
  return { conds: [], core: n };
}

function unpeel(conds: readonly Cond[], core: Node): Node {
  let out = core;
  for (let i = conds.length - 1; i >= 0; i--) out = select(conds[i]!.c, out, conds[i]!.zero);
  return out;
}

// ---- the rules ---------------------------------------------------------------------------------

/** `lo <= x < hi`, what keeps an inverted index in the summed set. */
interface Guard { x: Node; lo: Dim; hi: Dim }

interface Elimination {
  /** The summed index eliminated, and its value. */
  v: string;
  at: Node;
  /** The summed index taking its place (a block of terms), if any. */
  fresh?: ReduceVar;
  /** The mask's conditions that hold by construction (dropped). */
  used: number[];
  guards: Guard[];
  /** A size the guards or the new block make >= 1 wherever the new body is evaluated. */
  positive?: Dim;
}

interface RuleCtx {
  sum: SumParts;
  /** Summed indices a rule may eliminate (not in a range constraint). */
  free: ReadonlySet<string>;
  /** True when a node reads none of the sum's indices. */
  outside: (n: Node) => boolean;
  extent: (v: string) => Dim;
  fresh: (base: string) => string;
}

type EliminationRule = (c: RuleCtx) => Elimination | undefined;

/** Both orientations of an int equality: [side with the summed index, the other side]. */
function equalities(c: Node): [Node, Node][] {
  if (c.op !== 'binary' || c.arg !== '==' || c.src[0]!.dtype !== 'int' || c.src[1]!.dtype !== 'int') return [];
  return [[c.src[0]!, c.src[1]!], [c.src[1]!, c.src[0]!]];
}

/** side = coef * v + rest with v one summed index, coef = +-1, rest free of the sum's indices. */
function affineIn(side: Node, ctx: RuleCtx): { v: string; coef: 1 | -1; rest?: Node } | undefined {
  const go = (n: Node): { v?: string; coef: number; rest?: Node } | undefined => {
    if (ctx.outside(n)) return { coef: 0, rest: n };
    if (n.op === 'index') return { v: n.arg as string, coef: 1 };
    if (n.op === 'unary' && n.arg === 'neg') {
      const a = go(n.src[0]!);
      return a && { v: a.v, coef: -a.coef, rest: a.rest && unary('neg', a.rest) };
    }
    if (n.op === 'binary' && (n.arg === '+' || n.arg === '-')) {
      const [a, b] = [go(n.src[0]!), go(n.src[1]!)];
      if (!a || !b || (a.v && b.v)) return undefined;
      const s = n.arg === '+' ? 1 : -1;
      const rest = a.rest && b.rest ? binary(n.arg, a.rest, b.rest) : a.rest ?? (b.rest && (s > 0 ? b.rest : unary('neg', b.rest)));
      return { v: a.v ?? b.v, coef: a.v ? a.coef : s * b.coef, rest };
    }
    return undefined;
  };
  const r = go(side);
  return r?.v && ctx.free.has(r.v) && (r.coef === 1 || r.coef === -1) ? { v: r.v, coef: r.coef, rest: r.rest } : undefined;
}

/**
 * side = v // d or v % d with v a summed index and d a positive int constant or a size (a size
 * may be 0, where x // 0 = x % 0 = 0: each rule makes sure the new sum is empty or guarded then).
 */
function divModIn(side: Node, op: '//' | '%', ctx: RuleCtx): { v: string; d: Dim } | undefined {
  if (side.op !== 'binary' || side.arg !== op) return undefined;
  const [x, k] = side.src as [Node, Node];
  const d = k.op === 'size' && !isConst(k.arg as Dim) ? (k.arg as Dim) : divisorOf(k);
  if (x.op !== 'index' || !ctx.free.has(x.arg as string) || d === undefined) return undefined;
  return { v: x.arg as string, d };
}

/** Every (condition, summed-side match, other side) of the mask for `find`. */
function* pins<T>(ctx: RuleCtx, find: (side: Node) => T | undefined): Generator<{ i: number; m: T; other: Node }> {
  for (const [i, { c }] of ctx.sum.conds.entries()) {
    for (const [side, other] of equalities(c)) {
      if (!ctx.outside(other)) continue;
      const m = find(side);
      if (m !== undefined) yield { i, m, other };
    }
  }
}

const inRange = (x: Node, n: Dim): Guard => ({ x, lo: dconst(0), hi: n });

const ELIMINATIONS: readonly EliminationRule[] = [
  // affine: v + rest == u  ->  v := u - rest.
  (ctx) => {
    for (const { i, m, other } of pins(ctx, (s) => affineIn(s, ctx))) {
      const base = m.rest ? subN(other, m.rest) : other;
      const at = m.coef === 1 ? base : unary('neg', base);
      return { v: m.v, at, used: [i], guards: [inRange(at, ctx.extent(m.v))] };
    }
    return undefined;
  },
  // div-mod: v // d == u1 and v % d == u2  ->  v := u1*d + u2 (0 <= u2 < d makes d >= 1).
  (ctx) => {
    for (const q of pins(ctx, (s) => divModIn(s, '//', ctx))) {
      for (const r of pins(ctx, (s) => divModIn(s, '%', ctx))) {
        if (r.m.v !== q.m.v || !deq(r.m.d, q.m.d)) continue;
        const at = add(mulN(q.other, dimNode(q.m.d)), r.other);
        return { v: q.m.v, at, used: [q.i, r.i], guards: [inRange(r.other, q.m.d), inRange(at, ctx.extent(q.m.v))], positive: q.m.d };
      }
    }
    return undefined;
  },
];

/**
 * The rules that leave a shorter sum (a block of terms). They do the work of the scatter-add
 * lowering (each term once), which on native runs faster than the block sum's map does (its
 * lanes run across outputs and gather strided rows: 1.3 ms against 0.76 ms for the tiny RetNet's
 * group-norm gradient, B=8 T=256): so they apply only to a sum that would not be a scatter-add
 * (more summed indices, a sum inside a larger expression), where they cut the work by the block
 * count.
 */
const BLOCK_RULES: readonly EliminationRule[] = [
  // div: v // d == u1  ->  v := u1*d + j over j in [0, d); a size d divides extent(v), so that
  // d = 0 (where v // 0 = 0 would pin nothing) sums over nothing on both sides.
  (ctx) => {
    for (const { i, m, other } of pins(ctx, (s) => divModIn(s, '//', ctx))) {
      if (!isConst(m.d) && !exactQuotient(ctx.extent(m.v), m.d)) continue;
      const j: ReduceVar = { name: ctx.fresh(m.v), extent: m.d };
      const at = add(mulN(other, dimNode(m.d)), idx(j.name));
      return { v: m.v, at, fresh: j, used: [i], guards: [inRange(at, ctx.extent(m.v))], positive: m.d };
    }
    return undefined;
  },
  // mod: v % d == u2  ->  v := q*d + u2 over q in [0, extent(v) / d), d dividing the extent.
  (ctx) => {
    for (const { i, m, other } of pins(ctx, (s) => divModIn(s, '%', ctx))) {
      const blocks = exactQuotient(ctx.extent(m.v), m.d);
      if (!blocks) continue;
      const q: ReduceVar = { name: ctx.fresh(m.v), extent: blocks };
      const at = add(mulN(idx(q.name), dimNode(m.d)), other);
      return { v: m.v, at, fresh: q, used: [i], guards: [inRange(other, m.d)], positive: m.d };
    }
    return undefined;
  },
];

// ---- applying them -----------------------------------------------------------------------------

/** Every index name a node mentions or binds. */
function namesIn(n: Node, out: Set<string>): void {
  walk(n, (x) => {
    if (x.op === 'index') out.add(x.arg as string);
    if (x.op === 'reduce') for (const v of (x.arg as ReduceArg).vars) out.add(v.name);
  });
}

function boundIn(n: Node): Set<string> {
  const out = new Set<string>();
  walk(n, (x) => { if (x.op === 'reduce') for (const v of (x.arg as ReduceArg).vars) out.add(v.name); });
  return out;
}

/** `blocks`: whether the block rules may rewrite the statement's own sum (see BLOCK_RULES). */
function eliminateInStatement(s: IrStmt, blocks: boolean): Node {
  const taken = new Set(s.indices.map((v) => v.name));
  namesIn(s.value, taken);
  const printed = new Set([...taken].map((n) => n.replace(/[^A-Za-z0-9_]/g, '_')));
  const fresh = (base: string): string => {
    for (let k = 1; ; k++) {
      const name = `${base}'j${k}`;
      const p = name.replace(/[^A-Za-z0-9_]/g, '_');
      if (!taken.has(name) && !printed.has(p)) { taken.add(name); printed.add(p); return name; }
    }
  };
  const scope: Scope = new Map(s.indices.map((v) => [v.name, v.extent]));
  const memo = new Map<Scope, Map<number, Node>>();
  const go = (n: Node, sc: Scope): Node => {
    let m = memo.get(sc);
    if (!m) memo.set(sc, (m = new Map()));
    const hit = m.get(n.id);
    if (hit) return hit;
    let out: Node;
    if (n.op === 'reduce') {
      const inner = new Map(sc);
      for (const v of (n.arg as ReduceArg).vars) inner.set(v.name, v.extent);
      const r = withSrc(n, n.src.map((x) => go(x, inner)));
      out = (r.arg as ReduceArg).op === 'sum' ? eliminateInSum(r, sc, fresh, blocks || n !== s.value) : r;
    } else out = n.src.length ? withSrc(n, n.src.map((x) => go(x, sc))) : n;
    m.set(n.id, out);
    return out;
  };
  return go(s.value, scope);
}

/** The sum with its one-hot indices eliminated (the scope: indices in scope outside it). */
function eliminateInSum(r: Node, scope: Scope, fresh: (base: string) => string, blocks: boolean): Node {
  let cur = r;
  for (;;) {
    if (cur.op !== 'reduce') return cur;
    const arg = cur.arg as ReduceArg;
    const { conds, core } = peel(cur.src[0]!);
    if (!conds.length) return cur;
    const sum: SumParts = { vars: arg.vars, arg, consRhs: cur.src.slice(1), conds, core };
    const names = new Set(arg.vars.map((v) => v.name));
    const inCons = new Set(arg.cons.map((c) => c.name));
    for (const rhs of sum.consRhs) for (const v of freeIndices(rhs)) inCons.add(v);
    const ctx: RuleCtx = {
      sum,
      free: new Set([...names].filter((v) => !inCons.has(v))),
      outside: (n) => ![...freeIndices(n)].some((v) => names.has(v)),
      extent: (v) => arg.vars.find((x) => x.name === v)!.extent,
      fresh,
    };
    let el: Elimination | undefined;
    for (const rule of blocks ? [...ELIMINATIONS, ...BLOCK_RULES] : ELIMINATIONS) if ((el = rule(ctx))) break;
    if (!el) return cur;
    cur = apply(sum, el, scope, fresh);
  }
}

function apply(sum: SumParts, el: Elimination, scope: Scope, fresh: (base: string) => string): Node {
  const vars = sum.vars.flatMap((v) => (v.name !== el.v ? [v] : el.fresh ? [el.fresh] : []));
  // The scope inside the new sum: proofs and folding see its indices' extents.
  const inside = new Map(scope);
  for (const v of vars) inside.set(v.name, v.extent);
  let body = unpeel(sum.conds.filter((_, i) => !el.used.includes(i)), sum.core);
  const bound = boundIn(body);
  if ([...freeIndices(el.at)].some((v) => bound.has(v))) body = freshenBound(body, fresh);
  body = substIndex(body, new Map([[el.v, el.at]]));
  const zero = sum.conds[el.used[0]!]!.zero;
  for (const g of [...el.guards].reverse()) {
    const p = proven(g.x, inside, g.lo, g.hi);
    if (!p.hi) body = select(binary('<', g.x, dimNode(g.hi)), body, zero);
    if (!p.lo) body = select(binary('<=', dimNode(g.lo), g.x), body, zero);
  }
  // Fold the substituted index arithmetic; indices rebound inside keep no extent there.
  const folding = new Map(inside);
  for (const v of boundIn(body)) folding.delete(v);
  body = foldIndices(body, folding, new Set(el.positive ? [dimKey(el.positive)] : []));
  return vars.length ? reduce({ ...sum.arg, vars }, body, sum.consRhs) : body;
}
