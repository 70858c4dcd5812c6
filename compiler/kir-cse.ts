// Common subexpressions of a kernel IR statement bound to locals. The swish backward evaluates
// 1 / (1 + exp(-g[i])) three times in one store, the rmsnorm backward rsqrt(ms + eps) twice, a
// scatter the same load per iteration: each such repeated pure subexpression that is worth a
// register (a load, or f32 arithmetic with a call, a division or a load, or of four nodes or
// more) becomes
//   T cse_N = <expr>;
// declared just before the statement (the innermost scope that dominates all its uses), and its
// occurrences read cse_N. Kernel IR arithmetic is exact per operation (compiler/kir.ts: f32
// rounds after every operation, i32 wraps), and nothing is stored while one statement's
// expressions are evaluated, so the value is the same and results are bit for bit unchanged.
//
// Laziness is kept: an occurrence under a select arm or the right of && / || may not be
// evaluated at all, so a subexpression is bound only when one occurrence is evaluated
// unconditionally anyway: a load under `i < n ? a[i] : 0` stays guarded, and no work is added
// that the program would skip (not even a clamped load or pure math in an arm). Loop
// bounds are evaluated before every iteration and `if` conditions decide barriers, so only
// decl, assign and store statements are rewritten, and a loop whose body is only stores keeps
// that shape (targets/native/lanes.ts vectorises such loops). The pass runs on every kernel a plan makes
// (compiler/plan.ts), before the verifier, every printer and the CPU executor.
import type { Kernel, KExpr, KStmt, KType, KUnOp } from './kir.js';

/** Unary operations that are library calls (worth a register on their own). */
const CALLS = new Set<KUnOp>(['exp', 'exp2', 'log', 'log2', 'log1p', 'sqrt', 'rsqrt', 'sin', 'cos', 'tanh', 'erf']);
/** Node count from which a subexpression is worth a register even without a call, division or load. */
export const MIN_NODES = 4;

const children = (e: KExpr): KExpr[] => {
  switch (e.k) {
    case 'const': case 'var': case 'builtin': return [];
    case 'load': return [e.index];
    case 'un': case 'cast': return [e.a];
    case 'bin': return [e.a, e.b];
    case 'select': return [e.cond, e.a, e.b];
  }
};

/** Structural identity of expressions: equal trees get equal numbers. */
class Interner {
  private readonly ids = new Map<string, number>();
  private readonly memo = new WeakMap<KExpr, number>();
  id(e: KExpr): number {
    const hit = this.memo.get(e);
    if (hit !== undefined) return hit;
    let head: string;
    switch (e.k) {
      case 'const': head = `c${e.type}${Object.is(e.value, -0) ? '-0' : e.value}`; break;
      case 'var': head = `v${e.type}:${e.name}`; break;
      case 'builtin': head = `b${e.name}`; break;
      case 'load': head = `l${e.type}:${e.array}`; break;
      case 'un': head = `u${e.op}${e.type}`; break;
      case 'bin': head = `o${e.op}${e.type}`; break;
      case 'select': head = `s${e.type}`; break;
      case 'cast': head = `t${e.type}`; break;
    }
    const key = `${head}(${children(e).map((c) => this.id(c)).join(',')})`;
    let id = this.ids.get(key);
    if (id === undefined) this.ids.set(key, (id = this.ids.size));
    this.memo.set(e, id);
    return id;
  }
}

const sizes = new WeakMap<KExpr, number>();
const size = (e: KExpr): number => {
  let n = sizes.get(e);
  if (n === undefined) sizes.set(e, (n = 1 + children(e).reduce((s, c) => s + size(c), 0)));
  return n;
};

const heavies = new WeakMap<KExpr, boolean>();
/** Holds a call, a division or a load. */
const heavy = (e: KExpr): boolean => {
  let h = heavies.get(e);
  if (h === undefined) heavies.set(e, (h = e.k === 'load' || (e.k === 'un' && CALLS.has(e.op)) || (e.k === 'bin' && (e.op === '/' || e.op === '%' || e.op === 'pow')) || children(e).some(heavy)));
  return h;
};

/**
 * Worth a register: a load, or f32 arithmetic that holds a call, a division or a load or is large.
 * Integer and boolean arithmetic (indices, guards) stays inline: every target's compiler shares
 * it anyway, and the native printer reads affine indices off the expressions themselves (a
 * contiguous x[(b * T + t) * C + c] vectorises; x[cse_0] does not).
 */
const worth = (e: KExpr): boolean => e.k === 'load' || (e.type === 'f32' && e.k !== 'const' && e.k !== 'var' && (heavy(e) || size(e) >= MIN_NODES));

interface Seen { count: number; always: boolean; sample: KExpr; size: number }

/** Occurrences of every subexpression of `roots`, and whether one is evaluated unconditionally. */
function census(roots: readonly KExpr[], I: Interner): Map<number, Seen> {
  const out = new Map<number, Seen>();
  const visit = (e: KExpr, always: boolean): void => {
    const id = I.id(e);
    const s = out.get(id);
    if (s) { s.count++; s.always ||= always; } else out.set(id, { count: 1, always, sample: e, size: size(e) });
    if (e.k === 'select') { visit(e.cond, always); visit(e.a, false); visit(e.b, false); }
    else if (e.k === 'bin' && (e.op === '&&' || e.op === '||')) { visit(e.a, always); visit(e.b, false); }
    else for (const c of children(e)) visit(c, always);
  };
  for (const r of roots) visit(r, true);
  return out;
}

function replace(e: KExpr, id: number, by: KExpr, I: Interner): KExpr {
  if (I.id(e) === id) return by;
  switch (e.k) {
    case 'const': case 'var': case 'builtin': return e;
    case 'load': { const index = replace(e.index, id, by, I); return index === e.index ? e : { ...e, index }; }
    case 'un': case 'cast': { const a = replace(e.a, id, by, I); return a === e.a ? e : { ...e, a }; }
    case 'bin': { const a = replace(e.a, id, by, I), b = replace(e.b, id, by, I); return a === e.a && b === e.b ? e : { ...e, a, b }; }
    case 'select': {
      const cond = replace(e.cond, id, by, I), a = replace(e.a, id, by, I), b = replace(e.b, id, by, I);
      return cond === e.cond && a === e.a && b === e.b ? e : { ...e, cond, a, b };
    }
  }
}

const usesVar = (e: KExpr, name: string): boolean => (e.k === 'var' && e.name === name) || children(e).some((c) => usesVar(c, name));

/**
 * The decls that bind the repeated subexpressions of `roots` (largest first) and the rewritten
 * roots. `fresh` names a new local.
 */
export function cseExprs(roots: readonly KExpr[], fresh: () => string): { decls: { name: string; type: KType; init: KExpr }[]; roots: KExpr[] } {
  const I = new Interner();
  let rs = [...roots];
  const decls: { name: string; type: KType; init: KExpr }[] = [];
  for (;;) {
    // Decl initialisers run unconditionally, before the statement.
    let best: Seen | undefined, bestId = -1;
    for (const [id, s] of census([...decls.map((d) => d.init), ...rs], I)) {
      if (s.count < 2 || !worth(s.sample) || !s.always) continue;
      if (!best || s.size > best.size) { best = s; bestId = id; }
    }
    if (!best) break;
    const name = fresh();
    const ref: KExpr = { k: 'var', name, type: best.sample.type };
    for (const d of decls) d.init = replace(d.init, bestId, ref, I);
    rs = rs.map((r) => replace(r, bestId, ref, I));
    decls.push({ name, type: best.sample.type, init: best.sample });
  }
  // Larger ones were bound first and may read smaller ones: each after the decls it reads.
  const ordered: typeof decls = [];
  const pending = [...decls];
  while (pending.length) {
    const i = pending.findIndex((d) => !pending.some((o) => o !== d && usesVar(d.init, o.name)));
    ordered.push(...pending.splice(i, 1));
  }
  return { decls: ordered, roots: rs };
}

function namesOf(k: Kernel): Set<string> {
  const out = new Set<string>([...k.buffers.map((b) => b.name), ...k.scalars.map((s) => s.name), ...k.shared.map((s) => s.name)]);
  const block = (ss: readonly KStmt[]): void => {
    for (const s of ss) {
      if (s.k === 'decl' || s.k === 'local') out.add(s.name);
      else if (s.k === 'for') { out.add(s.v); block(s.body); }
      else if (s.k === 'if') { block(s.then); block(s.else); }
    }
  };
  block(k.body);
  return out;
}

/** The kernel with the common subexpressions of each decl, assign and store bound to locals. */
export function cseKernel(k: Kernel): Kernel {
  const taken = namesOf(k);
  let n = 0;
  const fresh = (): string => {
    let name: string;
    do name = `cse_${n++}`; while (taken.has(name));
    taken.add(name);
    return name;
  };
  const block = (ss: readonly KStmt[]): KStmt[] => ss.flatMap((s): KStmt[] => {
    switch (s.k) {
      case 'if': return [{ ...s, then: block(s.then), else: block(s.else) }];
      // A loop of stores only stays one (the native printer's lane loops print such loops as vectors).
      case 'for': return [s.body.every((b) => b.k === 'store' || b.k === 'comment') ? s : { ...s, body: block(s.body) }];
      case 'decl': { const r = cseExprs([s.init], fresh); return [...r.decls.map((d) => ({ k: 'decl' as const, ...d })), { ...s, init: r.roots[0]! }]; }
      case 'assign': { const r = cseExprs([s.value], fresh); return [...r.decls.map((d) => ({ k: 'decl' as const, ...d })), { ...s, value: r.roots[0]! }]; }
      case 'store': { const r = cseExprs([s.index, s.value], fresh); return [...r.decls.map((d) => ({ k: 'decl' as const, ...d })), { ...s, index: r.roots[0]!, value: r.roots[1]! }]; }
      default: return [s];
    }
  });
  return { ...k, body: block(k.body) };
}
