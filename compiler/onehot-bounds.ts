// Ranges of integer index expressions, for the one-hot elimination (compiler/onehot.ts): which
// guards of an inverted index hold by the extents, and index arithmetic folded once an index is
// substituted ((u*64 + j) // 64 is u where 0 <= j < 64). Bounds are inclusive size polynomials;
// sizes are never negative, so a polynomial whose coefficients are all >= 0 is >= 0 (the only
// comparison made: sound for every value of the sizes, never complete).
import { type Dim, constValue, dadd, dconst, ddiv, deq, dmul, dsub, isConst } from '../dsl/dims.js';
import { binary, cnst, dimKey, type Node, size } from './ir.js';
import { type Pat, type Rule, SIMPLIFY, rewriteToFixpoint } from './rewrite.js';

/** Extents of the index variables in scope (statement indices and enclosing sums). */
export type Scope = ReadonlyMap<string, Dim>;

export interface Bounds { lo: Dim; hi: Dim }

/** a <= b for every (non-negative) value of the sizes, as far as the coefficients show. */
export function dle(a: Dim, b: Dim): boolean {
  for (const v of dsub(b, a).values()) if (v < 0) return false;
  return true;
}

const point = (d: Dim): Bounds => ({ lo: d, hi: d });
/** The integer an int node is: a constant, or a size that is a number (a model's `e // dh`). */
export function constOf(n: Node): number | undefined {
  if (n.op === 'const') return n.dtype === 'int' && Number.isInteger(n.arg) ? (n.arg as number) : undefined;
  if (n.op === 'size') return isConst(n.arg as Dim) ? constValue(n.arg as Dim) : undefined;
  return undefined;
}

/** Inclusive bounds of an int expression over the scope's ranges, or undefined where unknown. */
export function bounds(n: Node, scope: Scope): Bounds | undefined {
  if (n.dtype !== 'int') return undefined;
  switch (n.op) {
    case 'const': return constOf(n) === undefined ? undefined : point(dconst(constOf(n)!));
    case 'size': return point(n.arg as Dim);
    case 'index': {
      const e = scope.get(n.arg as string);
      return e ? { lo: dconst(0), hi: dsub(e, dconst(1)) } : undefined;
    }
    case 'unary': {
      if (n.arg !== 'neg') return undefined;
      const a = bounds(n.src[0]!, scope);
      return a && { lo: dmul(a.hi, dconst(-1)), hi: dmul(a.lo, dconst(-1)) };
    }
    case 'binary': {
      const [x, y] = n.src as [Node, Node];
      const k = constOf(y);
      if ((n.arg === '//' || n.arg === '%') && (k === undefined || k <= 0)) return undefined;
      const a = bounds(x, scope);
      if (n.arg === '%') return a && dle(dconst(0), a.lo) && dle(a.hi, dconst(k! - 1)) ? a : { lo: dconst(0), hi: dconst(k! - 1) };
      if (!a) return undefined;
      if (n.arg === '//') return isConst(a.lo) && isConst(a.hi) ? { lo: dconst(Math.floor(constValue(a.lo) / k!)), hi: dconst(Math.floor(constValue(a.hi) / k!)) } : undefined;
      const b = bounds(y, scope);
      if (!b) return undefined;
      switch (n.arg) {
        case '+': return { lo: dadd(a.lo, b.lo), hi: dadd(a.hi, b.hi) };
        case '-': return { lo: dsub(a.lo, b.hi), hi: dsub(a.hi, b.lo) };
        case '*': {
          for (const [p, q] of [[a, b], [b, a]] as const) {
            if (!isConst(q.lo) || !isConst(q.hi) || constValue(q.lo) !== constValue(q.hi)) continue;
            const c = dconst(constValue(q.lo));
            return constValue(q.lo) >= 0 ? { lo: dmul(p.lo, c), hi: dmul(p.hi, c) } : { lo: dmul(p.hi, c), hi: dmul(p.lo, c) };
          }
          const zero = dconst(0);
          return dle(zero, a.lo) && dle(zero, b.lo) ? { lo: dmul(a.lo, b.lo), hi: dmul(a.hi, b.hi) } : undefined;
        }
        default: return undefined;
      }
    }
    default: return undefined;
  }
}

/** `lo <= x < hi` proven from the scope (either side undefined: not asked). */
export function proven(x: Node, scope: Scope, lo?: Dim, hi?: Dim): { lo: boolean; hi: boolean } {
  const b = bounds(x, scope);
  return { lo: lo === undefined || (b !== undefined && dle(lo, b.lo)), hi: hi === undefined || (b !== undefined && dle(b.hi, dsub(hi, dconst(1)))) };
}

/** A size polynomial as an int node. */
export const dimNode = (d: Dim): Node => (isConst(d) ? cnst(constValue(d), 'int') : size(d));

/** n / d when it is a polynomial with integer coefficients (n = q * d exactly), else undefined. */
export function exactQuotient(n: Dim, d: Dim): Dim | undefined {
  const q = ddiv(n, d);
  for (const v of q.values()) if (!Number.isInteger(v)) return undefined;
  return deq(dmul(q, d), n) ? q : undefined;
}

// ---- index arithmetic after a substitution -------------------------------------------------

const I = (name: string): Pat => ({ name, pred: (n) => n.dtype === 'int' });
const bin = (op: string, a: Pat, b: Pat, commutative = false): Pat => ({ op: 'binary', arg: op, src: [a, b], commutative });

/**
 * A divisor known to be positive wherever the node is evaluated: an int constant or numeric size
 * > 0, or a symbolic size in `positive` (what an elimination's guards or its block's extent make
 * >= 1 inside the new sum), as a size polynomial.
 */
export function divisorOf(n: Node, positive: ReadonlySet<string> = new Set()): Dim | undefined {
  const k = constOf(n);
  if (k !== undefined) return k > 0 ? dconst(k) : undefined;
  return n.op === 'size' && positive.has(dimKey(n.arg as Dim)) ? (n.arg as Dim) : undefined;
}

/**
 * Floor division and remainder by a positive divisor c, exact for all integers: (x*c) // c = x,
 * (x*c + y) // c = x + y // c, (x*c + y) % c = y % c; y // c = 0 and y % c = y where the scope
 * bounds y to [0, c); an offset subtracted and added back, (x - y) + y = x; x - (-k) = x + k.
 */
export function indexRules(scope: Scope, positive: ReadonlySet<string> = new Set()): readonly Rule[] {
  const K = (name: string): Pat => ({ name, pred: (n) => divisorOf(n, positive) !== undefined });
  const times = (x: string, c: string): Pat => bin('*', I(x), K(c), true);
  const same = (m: Record<string, Node>, a: string, b: string): boolean => deq(divisorOf(m[a]!, positive)!, divisorOf(m[b]!, positive)!);
  const small = (y: Node, c: Node): boolean => { const p = proven(y, scope, dconst(0), divisorOf(c, positive)); return p.lo && p.hi; };
  return [
    [bin('//', times('x', 'c'), K('d')), (m) => (same(m, 'c', 'd') ? m.x : undefined)],
    [bin('%', times('x', 'c'), K('d')), (m) => (same(m, 'c', 'd') ? cnst(0, 'int') : undefined)],
    [bin('//', bin('+', times('x', 'c'), I('y'), true), K('d')), (m) => (same(m, 'c', 'd') ? binary('+', m.x!, binary('//', m.y!, m.d!)) : undefined)],
    [bin('%', bin('+', times('x', 'c'), I('y'), true), K('d')), (m) => (same(m, 'c', 'd') ? binary('%', m.y!, m.d!) : undefined)],
    [bin('//', I('y'), K('c')), (m) => (small(m.y!, m.c!) ? cnst(0, 'int') : undefined)],
    [bin('%', I('y'), K('c')), (m) => (small(m.y!, m.c!) ? m.y : undefined)],
    [bin('+', bin('-', I('x'), I('y')), I('y'), true), (m) => m.x],
    [bin('-', bin('+', I('x'), I('y'), true), I('y')), (m) => m.x],
    [bin('-', I('x'), { name: 'k', pred: (n) => n.op === 'const' && n.dtype === 'int' && (n.arg as number) < 0 }), (m) => binary('+', m.x!, cnst(-(m.k!.arg as number), 'int'))],
  ];
}

/** The node with its index arithmetic folded (the scope: variables not rebound inside it). */
export const foldIndices = (n: Node, scope: Scope, positive?: ReadonlySet<string>): Node => rewriteToFixpoint(n, [...indexRules(scope, positive), ...SIMPLIFY]);
