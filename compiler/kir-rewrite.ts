// Rule-table rewriting of kernel IR, the counterpart of compiler/rewrite.ts for tensor IR
// (tinygrad's PatternMatcher, in small): a rule is a pattern over one expression node and a
// builder; rewriteKExpr applies a table bottom-up until nothing changes; statement rules
// rewrite blocks the same way. Passes over kernels (legalisation, simplification) are tables
// of such rules, not `if` chains inside a printer.
//
// Every rule must keep the kernel IR's semantics exactly (compiler/kir.ts): i32 wraps modulo
// 2^32, x / 0 = x % 0 = 0, f32 rounds after every operation (so no f32 reassociation, and
// x + 0 is not x when x = -0), selects and && / || are lazy (a folded-away operand must have
// no loads, which may be out of bounds). KIR_SIMPLIFY is such a table.
import type { KBinOp, KExpr, KStmt, KType, KUnOp, Kernel } from './kir.js';

export interface KPat {
  k?: KExpr['k'];
  op?: KBinOp | KUnOp;
  type?: KType;
  /** For a constant: its value. */
  value?: number;
  /** Operand patterns: a and b of a binary node, a of a unary node or cast, the condition and arms of a select. */
  a?: KPat;
  b?: KPat;
  cond?: KPat;
  /** Binds the matched node under this name. */
  name?: string;
  pred?: (e: KExpr) => boolean;
}

export type KRule = readonly [KPat, (m: Record<string, KExpr>, e: KExpr) => KExpr | undefined];

export function kmatch(p: KPat, e: KExpr, m: Record<string, KExpr>): boolean {
  if (p.k !== undefined && p.k !== e.k) return false;
  if (p.type !== undefined && p.type !== e.type) return false;
  if (p.op !== undefined && !((e.k === 'bin' || e.k === 'un') && e.op === p.op)) return false;
  if (p.value !== undefined && !(e.k === 'const' && e.value === p.value)) return false;
  if (p.pred && !p.pred(e)) return false;
  const sub = (q: KPat | undefined, x: KExpr | undefined): boolean => q === undefined || (x !== undefined && kmatch(q, x, m));
  if (!sub(p.a, e.k === 'bin' || e.k === 'un' || e.k === 'cast' || e.k === 'select' ? e.a : undefined)) return false;
  if (!sub(p.b, e.k === 'bin' || e.k === 'select' ? e.b : undefined)) return false;
  if (!sub(p.cond, e.k === 'select' ? e.cond : undefined)) return false;
  if (p.name) m[p.name] = e;
  return true;
}

/** The node with rewritten children (the same object when none changed). */
function withChildren(e: KExpr, go: (x: KExpr) => KExpr): KExpr {
  switch (e.k) {
    case 'const': case 'var': case 'builtin': return e;
    case 'load': { const index = go(e.index); return index === e.index ? e : { ...e, index }; }
    case 'un': case 'cast': { const a = go(e.a); return a === e.a ? e : { ...e, a }; }
    case 'bin': { const a = go(e.a), b = go(e.b); return a === e.a && b === e.b ? e : { ...e, a, b }; }
    case 'select': { const cond = go(e.cond), a = go(e.a), b = go(e.b); return cond === e.cond && a === e.a && b === e.b ? e : { ...e, cond, a, b }; }
  }
}

/** Applies `rules` bottom-up, each rewritten node again, until no rule fires. */
export function rewriteKExpr(e: KExpr, rules: readonly KRule[], maxSteps = 10_000): KExpr {
  let steps = 0;
  const go = (x: KExpr): KExpr => {
    let out = withChildren(x, go);
    for (const [pat, build] of rules) {
      const m: Record<string, KExpr> = {};
      if (!kmatch(pat, out, m)) continue;
      const r = build(m, out);
      if (r && r !== out) {
        if (++steps > maxSteps) throw new Error('kernel IR rewrite: the rules do not terminate');
        return go(r);
      }
    }
    return out;
  };
  return go(e);
}

/** A statement rule: the statements that replace `s` (its blocks already rewritten), or undefined. */
export type KStmtRule = (s: KStmt) => KStmt[] | undefined;

/** Rewrites every expression of a block with `rules`, then every statement with `stmtRules`, bottom-up. */
export function rewriteBlock(ss: readonly KStmt[], rules: readonly KRule[], stmtRules: readonly KStmtRule[] = []): KStmt[] {
  const ex = (e: KExpr): KExpr => rewriteKExpr(e, rules);
  const one = (s: KStmt): KStmt[] => {
    let t: KStmt;
    switch (s.k) {
      case 'decl': t = { ...s, init: ex(s.init) }; break;
      case 'assign': t = { ...s, value: ex(s.value) }; break;
      case 'store': t = { ...s, index: ex(s.index), value: ex(s.value) }; break;
      case 'if': t = { ...s, cond: ex(s.cond), then: rewriteBlock(s.then, rules, stmtRules), else: rewriteBlock(s.else, rules, stmtRules) }; break;
      case 'for': t = { ...s, start: ex(s.start), end: ex(s.end), body: rewriteBlock(s.body, rules, stmtRules) }; break;
      default: t = s;
    }
    for (const r of stmtRules) {
      const out = r(t);
      if (out) return out.flatMap(one);
    }
    return [t];
  };
  return ss.flatMap(one);
}

/** A kernel with its body and grid rewritten. */
export function rewriteKernel(k: Kernel, rules: readonly KRule[], stmtRules: readonly KStmtRule[] = []): Kernel {
  return { ...k, grid: k.grid.map((g) => rewriteKExpr(g, rules)) as Kernel['grid'], body: rewriteBlock(k.body, rules, stmtRules) };
}

// ---- the simplification table -------------------------------------------------------------------

const i32c = (value: number): KExpr => ({ k: 'const', type: 'i32', value: value | 0 });
const boolc = (b: boolean): KExpr => ({ k: 'const', type: 'bool', value: b ? 1 : 0 });
/** No loads inside (a load may be out of bounds, which some targets report): safe to drop. */
const pure = (e: KExpr): boolean => {
  switch (e.k) {
    case 'load': return false;
    case 'const': case 'var': case 'builtin': return true;
    case 'un': case 'cast': return pure(e.a);
    case 'bin': return pure(e.a) && pure(e.b);
    case 'select': return pure(e.cond) && pure(e.a) && pure(e.b);
  }
};

/** i32 arithmetic of kernel IR on constants. */
function foldI32(op: KBinOp, x: number, y: number): KExpr | undefined {
  switch (op) {
    case '+': return i32c(x + y);
    case '-': return i32c(x - y);
    case '*': return i32c(Math.imul(x, y));
    case '/': return i32c(y === 0 ? 0 : x === -2147483648 && y === -1 ? x : Math.trunc(x / y));
    case '%': return i32c(y === 0 || (x === -2147483648 && y === -1) ? 0 : x % y);
    case 'min': return i32c(Math.min(x, y));
    case 'max': return i32c(Math.max(x, y));
    case '<': return boolc(x < y);
    case '<=': return boolc(x <= y);
    case '>': return boolc(x > y);
    case '>=': return boolc(x >= y);
    case '==': return boolc(x === y);
    case '!=': return boolc(x !== y);
    default: return undefined;
  }
}

const C = (name: string, type?: KType, value?: number): KPat => ({ k: 'const', name, ...(type ? { type } : {}), ...(value !== undefined ? { value } : {}) });
const X = (name: string, type?: KType): KPat => ({ name, ...(type ? { type } : {}) });
const val = (e: KExpr | undefined): number => (e as Extract<KExpr, { k: 'const' }>).value;

/**
 * Exact simplifications: integer and boolean constant folding with kernel IR's semantics,
 * integer identities (x + 0, x - 0, x * 1, x * 0 for a load-free x, x / 1), f32 x * 1 and x / 1
 * (exact: -0, NaN and infinities are kept), constant selects and short-circuit booleans.
 */
export const KIR_SIMPLIFY: readonly KRule[] = [
  [{ k: 'bin', type: undefined, a: C('x', 'i32'), b: C('y', 'i32') }, (m, e) => foldI32((e as Extract<KExpr, { k: 'bin' }>).op, val(m['x']), val(m['y']))],
  [{ k: 'bin', op: '+', a: X('x', 'i32'), b: C('z', 'i32', 0) }, (m) => m['x']],
  [{ k: 'bin', op: '+', a: C('z', 'i32', 0), b: X('x', 'i32') }, (m) => m['x']],
  [{ k: 'bin', op: '-', a: X('x', 'i32'), b: C('z', 'i32', 0) }, (m) => m['x']],
  [{ k: 'bin', op: '*', a: X('x'), b: C('o', undefined, 1) }, (m) => (m['x']!.type === 'bool' ? undefined : m['x'])],
  [{ k: 'bin', op: '*', a: C('o', undefined, 1), b: X('x') }, (m) => (m['x']!.type === 'bool' ? undefined : m['x'])],
  [{ k: 'bin', op: '/', a: X('x'), b: C('o', undefined, 1) }, (m) => (m['x']!.type === 'bool' ? undefined : m['x'])],
  [{ k: 'bin', op: '*', a: X('x', 'i32'), b: C('z', 'i32', 0) }, (m) => (pure(m['x']!) ? i32c(0) : undefined)],
  [{ k: 'bin', op: '*', a: C('z', 'i32', 0), b: X('x', 'i32') }, (m) => (pure(m['x']!) ? i32c(0) : undefined)],
  [{ k: 'select', cond: C('c', 'bool') }, (m, e) => (val(m['c']) ? (e as Extract<KExpr, { k: 'select' }>).a : (e as Extract<KExpr, { k: 'select' }>).b)],
  [{ k: 'bin', op: '&&', a: C('c', 'bool') }, (m, e) => (val(m['c']) ? (e as Extract<KExpr, { k: 'bin' }>).b : boolc(false))],
  [{ k: 'bin', op: '||', a: C('c', 'bool') }, (m, e) => (val(m['c']) ? boolc(true) : (e as Extract<KExpr, { k: 'bin' }>).b)],
  [{ k: 'bin', op: '&&', b: C('c', 'bool') }, (m, e) => (val(m['c']) ? (e as Extract<KExpr, { k: 'bin' }>).a : pure((e as Extract<KExpr, { k: 'bin' }>).a) ? boolc(false) : undefined)],
  [{ k: 'bin', op: '||', b: C('c', 'bool') }, (m, e) => (!val(m['c']) ? (e as Extract<KExpr, { k: 'bin' }>).a : pure((e as Extract<KExpr, { k: 'bin' }>).a) ? boolc(true) : undefined)],
  [{ k: 'un', op: 'not', a: C('c', 'bool') }, (m) => boolc(!val(m['c']))],
  [{ k: 'un', op: 'neg', a: C('x', 'i32') }, (m) => i32c(-val(m['x']))],
];

/** Statement simplifications: an `if` on a constant is its branch; a loop that runs zero times goes. */
export const KIR_SIMPLIFY_STMTS: readonly KStmtRule[] = [
  (s) => (s.k === 'if' && s.cond.k === 'const' ? (s.cond.value ? s.then : s.else) : undefined),
  (s) => (s.k === 'for' && s.start.k === 'const' && s.end.k === 'const' && (s.step > 0 ? s.start.value >= s.end.value : s.start.value <= s.end.value) ? [] : undefined),
];

/**
 * A kernel simplified by KIR_SIMPLIFY. An `if` on a constant is inlined only when its branch
 * declares nothing (a declaration is scoped to its block: inlining it could shadow or clash).
 */
export function simplifyKernel(k: Kernel): Kernel {
  const declares = (ss: readonly KStmt[]): boolean => ss.some((s) => s.k === 'decl' || s.k === 'local');
  const stmts: KStmtRule[] = [
    (s) => (s.k === 'if' && s.cond.k === 'const' && !declares(s.cond.value ? s.then : s.else) ? (s.cond.value ? s.then : s.else) : undefined),
    KIR_SIMPLIFY_STMTS[1]!,
  ];
  return rewriteKernel(k, KIR_SIMPLIFY, stmts);
}
