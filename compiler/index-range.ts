// Integer ranges of index expressions (tensor IR int nodes), the one analysis behind the one-hot
// elimination's guards and folds (compiler/onehot-bounds.ts), map fusion's in-range loads
// (compiler/fuse-maps.ts) and hoisted tables' composite indices (compiler/hoist-invariant.ts).
// Bounds are inclusive size polynomials over the extents of the index variables in scope; sizes
// are never negative, so a polynomial whose coefficients are all >= 0 is >= 0 (the only
// comparison made: sound for every value of the sizes, never complete). Sizes a plan bakes in
// (`constants`) are substituted first, so where every size is known the bounds are numbers and
// the comparisons numeric.
import { type Dim, constValue, dadd, dconst, dmul, dsub, dsubst, isConst } from '../dsl/dims.js';
import type { Node } from './ir.js';

/** Extents of the index variables in scope (statement indices and enclosing sums). */
export type Scope = ReadonlyMap<string, Dim>;

/** Sizes known as numbers (a plan's baked-in sizes), by symbol. */
export type Constants = ReadonlyMap<string, number>;

export interface Bounds { lo: Dim; hi: Dim }

/** a <= b for every (non-negative) value of the sizes, as far as the coefficients show. */
function dle(a: Dim, b: Dim): boolean {
  for (const v of dsub(b, a).values()) if (v < 0) return false;
  return true;
}

const point = (d: Dim): Bounds => ({ lo: d, hi: d });
const ZERO = dconst(0);

/** The value of bounds that are one known integer (a divisor must be; a factor may be). */
const pointValue = (b: Bounds | undefined): number | undefined =>
  b && isConst(b.lo) && isConst(b.hi) && constValue(b.lo) === constValue(b.hi) ? constValue(b.lo) : undefined;

/** A size with the known ones substituted (none given: the size as it is, unchanged). */
function sizesAt(constants: Constants | undefined): (d: Dim) => Dim {
  if (!constants?.size) return (d) => d;
  const env = new Map([...constants].map(([k, v]) => [k, dconst(v)] as const));
  return (d) => dsubst(d, env);
}

/** Inclusive bounds of an int expression over the scope's ranges, or undefined where unknown. */
export function bounds(n: Node, scope: Scope, constants?: Constants): Bounds | undefined {
  const at = sizesAt(constants);
  const go = (n: Node): Bounds | undefined => {
    if (n.dtype !== 'int') return undefined;
    switch (n.op) {
      case 'const': return Number.isInteger(n.arg) ? point(dconst(n.arg as number)) : undefined;
      case 'size': return point(at(n.arg as Dim));
      case 'index': {
        const e = scope.get(n.arg as string);
        return e ? { lo: ZERO, hi: dsub(at(e), dconst(1)) } : undefined;
      }
      case 'unary': {
        if (n.arg !== 'neg') return undefined;
        const a = go(n.src[0]!);
        return a && { lo: dmul(a.hi, dconst(-1)), hi: dmul(a.lo, dconst(-1)) };
      }
      case 'binary': {
        const [x, y] = n.src as [Node, Node];
        const a = go(x), b = go(y);
        if (n.arg === '//' || n.arg === '%') {
          // Floor division and modulo (the tensor IR's), by a known positive integer only.
          const k = pointValue(b);
          if (k === undefined || k <= 0) return undefined;
          if (n.arg === '%') return a && dle(ZERO, a.lo) && dle(a.hi, dconst(k - 1)) ? a : { lo: ZERO, hi: dconst(k - 1) };
          return a && isConst(a.lo) && isConst(a.hi) ? { lo: dconst(Math.floor(constValue(a.lo) / k)), hi: dconst(Math.floor(constValue(a.hi) / k)) } : undefined;
        }
        if (!a || !b) return undefined;
        switch (n.arg) {
          case '+': return { lo: dadd(a.lo, b.lo), hi: dadd(a.hi, b.hi) };
          case '-': return { lo: dsub(a.lo, b.hi), hi: dsub(a.hi, b.lo) };
          case '*': {
            // By a known integer of either sign; otherwise both factors non-negative.
            for (const [p, q] of [[a, b], [b, a]] as const) {
              const c = pointValue(q);
              if (c === undefined) continue;
              return c >= 0 ? { lo: dmul(p.lo, dconst(c)), hi: dmul(p.hi, dconst(c)) } : { lo: dmul(p.hi, dconst(c)), hi: dmul(p.lo, dconst(c)) };
            }
            return dle(ZERO, a.lo) && dle(ZERO, b.lo) ? { lo: dmul(a.lo, b.lo), hi: dmul(a.hi, b.hi) } : undefined;
          }
          default: return undefined;
        }
      }
      default: return undefined;
    }
  };
  return go(n);
}

/** `lo <= x < hi` proven from the scope (either side undefined: not asked). */
export function proven(x: Node, scope: Scope, lo?: Dim, hi?: Dim, constants?: Constants): { lo: boolean; hi: boolean } {
  const at = sizesAt(constants);
  const b = bounds(x, scope, constants);
  return { lo: lo === undefined || (b !== undefined && dle(at(lo), b.lo)), hi: hi === undefined || (b !== undefined && dle(b.hi, dsub(at(hi), dconst(1)))) };
}

/** `0 <= x < extent` proven from the scope: x indexes a dimension of that extent in range. */
export function inExtent(x: Node, scope: Scope, extent: Dim, constants?: Constants): boolean {
  const p = proven(x, scope, ZERO, extent, constants);
  return p.lo && p.hi;
}
