// Affine indices in work-item loops, for the native printer (targets/native/printer.ts).
//
// Inside a work-item loop `for (rn_t = S; rn_t < E; rn_t++)` most indices are `base + c * rn_t`
// with `base` the same for every work-item (j = wg_x * 64 + rn_t; o[row * 64 + j]). Two things
// then hold that the C compiler cannot see by itself:
//   - under -fwrapv an int32 `base + rn_t` may wrap, so GCC cannot treat the address as affine
//     and vectorises the access as a gather; printed as `(int64_t)(base) + c * rn_t` it is affine;
//   - every access of the loop is in bounds exactly when its first and last work-item's indices
//     are (the index is monotone in rn_t), so one test before the loop can stand for the
//     per-access bounds checks, which keep the loop from vectorising (a branch and a call).
// Printed in int64 the index equals the kernel IR's wrapped int32 index whenever it lies in
// [0, length): +, - and * by constants agree modulo 2^32, and both values are then in int32's
// range. So the printer runs the loop unchecked, with int64 indices, when the test passes, and
// as before (checked) when it does not: the same results and the same out-of-bounds reports.
import type { KExpr, KStmt } from '../../compiler/kir.js';
import * as K from '../../compiler/kir.js';

export interface Affine {
  /** The index of work-item 0 (an int32 expression without rn_t, loads or the loop's own variables). */
  base: KExpr;
  /** The coefficient of the work-item index. */
  coef: number;
}

/** What the decomposition may look through: declarations inside the loop (never assigned) by name, and names it must reject. */
export interface AffineEnv {
  item: string;
  /** Initialisers of the loop's never-assigned declarations. */
  inner: ReadonlyMap<string, KExpr>;
  /** Names declared in the loop that are not in `inner` (assigned variables, inner loop variables). */
  varying: ReadonlySet<string>;
  /** Names assigned anywhere in the kernel. */
  assigned: ReadonlySet<string>;
}

const LIMIT = 1 << 16;

/** e as rest + c: the constant of a sum of products by constants pulled out (rest undefined: e is c). */
function splitConst(e: KExpr): [KExpr | undefined, number] {
  if (e.k === 'const') return [undefined, e.value];
  if (e.k === 'bin' && (e.op === '+' || e.op === '-')) {
    const [ra, ca] = splitConst(e.a), [rb, cb] = splitConst(e.b);
    const rest = ra && rb ? K.bin(e.op, ra, rb) : ra ?? (rb && (e.op === '+' ? rb : K.un('neg', rb)));
    return [rest, e.op === '+' ? ca + cb : ca - cb];
  }
  if (e.k === 'bin' && e.op === '*' && (e.a.k === 'const' || e.b.k === 'const')) {
    const [x, k] = e.b.k === 'const' ? [e.a, e.b] : [e.b, e.a];
    const [r, c] = splitConst(x);
    return [r && K.bin('*', r, k), c * (k as Extract<KExpr, { k: 'const' }>).value];
  }
  return [e, 0];
}

/**
 * An int32 base as int64 C text: `(int64_t)(rest) + c`, its constant pulled out, so that accesses
 * at bases a constant apart ((i0 + 1) * 128 + kk, (i0 + 2) * 128 + kk) share one address register
 * and differ by a displacement (eight row bases would otherwise take eight registers). Equal to
 * (int64_t)(base) modulo 2^32, so, as for the work-item term, it is the kernel IR's index wherever
 * it lies in [0, length); the bounds tests are printed in the same form.
 */
export function int64Base(base: KExpr, expr: (e: KExpr) => string): string {
  const [rest, c] = splitConst(base);
  if (!Number.isSafeInteger(c) || Math.abs(c) >= 2 ** 31) return `(int64_t)(${expr(base)})`;
  if (!rest) return `(int64_t)(${c})`;
  const r = `(int64_t)(${expr(rest)})`;
  return c === 0 ? r : `${r} ${c < 0 ? '-' : '+'} ${Math.abs(c)}`;
}

/** `e` as base + coef * item, or undefined when it is not of that form. */
export function affine(e: KExpr, env: AffineEnv, depth = 0): Affine | undefined {
  if (e.type !== 'i32' || depth > 64) return undefined;
  switch (e.k) {
    case 'const': return { base: e, coef: 0 };
    case 'var': {
      if (e.name === env.item) return { base: K.i32(0), coef: 1 };
      const init = env.inner.get(e.name);
      if (init) return affine(init, env, depth + 1);
      if (env.varying.has(e.name) || env.assigned.has(e.name)) return undefined;
      return { base: e, coef: 0 };
    }
    case 'builtin': return e.name.startsWith('tid.') ? undefined : { base: e, coef: 0 };
    case 'bin': {
      if (e.op === '+' || e.op === '-') {
        const a = affine(e.a, env, depth + 1), b = affine(e.b, env, depth + 1);
        if (!a || !b) return undefined;
        const coef = e.op === '+' ? a.coef + b.coef : a.coef - b.coef;
        if (Math.abs(coef) > LIMIT) return undefined;
        const zero = (x: KExpr): boolean => x.k === 'const' && x.value === 0;
        const base = zero(b.base) ? a.base : zero(a.base) && e.op === '+' ? b.base : K.bin(e.op, a.base, b.base);
        return { base, coef };
      }
      if (e.op === '*') {
        const a = affine(e.a, env, depth + 1), b = affine(e.b, env, depth + 1);
        if (!a || !b) return undefined;
        if (a.coef === 0 && b.coef === 0) return { base: K.bin('*', a.base, b.base), coef: 0 };
        const [x, k] = a.coef !== 0 ? [a, e.b] : [b, e.a];
        if (k.k !== 'const' || (a.coef !== 0 && b.coef !== 0)) return undefined;
        const coef = x.coef * k.value;
        if (Math.abs(coef) > LIMIT) return undefined;
        return { base: x.base.k === 'const' && x.base.value === 0 ? x.base : K.bin('*', x.base, k), coef };
      }
      // Anything else must not depend on the work-item at all.
      const a = affine(e.a, env, depth + 1), b = affine(e.b, env, depth + 1);
      if (!a || !b || a.coef !== 0 || b.coef !== 0) return undefined;
      return { base: K.bin(e.op, a.base, b.base), coef: 0 };
    }
    case 'un': {
      const a = affine(e.a, env, depth + 1);
      if (!a) return undefined;
      if (e.op === 'neg') return { base: K.un('neg', a.base), coef: -a.coef };
      return a.coef === 0 ? { base: K.un(e.op, a.base), coef: 0 } : undefined;
    }
    case 'cast': {
      const a = uniformExpr(e.a, env);
      return a ? { base: K.cast(a, 'i32'), coef: 0 } : undefined;
    }
    case 'select': {
      const c = uniformExpr(e.cond, env), a = affine(e.a, env, depth + 1), b = affine(e.b, env, depth + 1);
      if (!c || !a || !b || a.coef !== 0 || b.coef !== 0) return undefined;
      return { base: K.select(c, a.base, b.base), coef: 0 };
    }
    default: return undefined;
  }
}

/** A work-item-independent expression (inner declarations substituted), or undefined. */
function uniformExpr(e: KExpr, env: AffineEnv): KExpr | undefined {
  if (e.type === 'i32') { const a = affine(e, env); return a && a.coef === 0 ? a.base : undefined; }
  switch (e.k) {
    case 'const': return e;
    case 'var': return env.inner.has(e.name) || env.varying.has(e.name) || env.assigned.has(e.name) || e.name === env.item ? undefined : e;
    case 'bin': { const a = uniformExpr(e.a, env), b = uniformExpr(e.b, env); return a && b ? K.bin(e.op, a, b) : undefined; }
    case 'un': { const a = uniformExpr(e.a, env); return a ? K.un(e.op, a) : undefined; }
    case 'cast': { const a = uniformExpr(e.a, env); return a ? K.cast(a, e.type) : undefined; }
    default: return undefined;
  }
}

/** The loop's environment: its never-assigned declarations, and the names it declares otherwise. */
export function loopEnv(loop: Extract<KStmt, { k: 'for' }>, assigned: ReadonlySet<string>): AffineEnv {
  const inner = new Map<string, KExpr>();
  const varying = new Set<string>();
  const walk = (ss: readonly KStmt[]): void => {
    for (const s of ss) {
      if (s.k === 'decl') { if (assigned.has(s.name)) varying.add(s.name); else inner.set(s.name, s.init); }
      else if (s.k === 'local') varying.add(s.name);
      else if (s.k === 'for') { varying.add(s.v); walk(s.body); }
      else if (s.k === 'if') { walk(s.then); walk(s.else); }
    }
  };
  walk(loop.body);
  return { item: loop.v, inner, varying, assigned };
}

/** Every load and store of a statement list: array, index. */
export function accesses(ss: readonly KStmt[]): { array: string; index: KExpr }[] {
  const out: { array: string; index: KExpr }[] = [];
  const ex = (e: KExpr): void => {
    switch (e.k) {
      case 'load': out.push({ array: e.array, index: e.index }); ex(e.index); break;
      case 'bin': ex(e.a); ex(e.b); break;
      case 'un': ex(e.a); break;
      case 'cast': ex(e.a); break;
      case 'select': ex(e.cond); ex(e.a); ex(e.b); break;
      default: break;
    }
  };
  for (const s of ss) {
    switch (s.k) {
      case 'decl': ex(s.init); break;
      case 'assign': ex(s.value); break;
      case 'store': out.push({ array: s.array, index: s.index }); ex(s.index); ex(s.value); break;
      case 'if': ex(s.cond); out.push(...accesses(s.then), ...accesses(s.else)); break;
      case 'for': ex(s.start); ex(s.end); out.push(...accesses(s.body)); break;
      default: break;
    }
  }
  return out;
}
