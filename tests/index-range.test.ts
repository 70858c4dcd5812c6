// Integer ranges of index expressions (compiler/index-range.ts), the one analysis behind one-hot
// elimination, map fusion's in-range loads and hoisted tables' composite indices:
//   - cases each former copy answered: the numeric ones (fuse-maps, hoist-invariant: sizes known
//     only through a plan's constants, divisors that are such sizes) and the symbolic one
//     (onehot-bounds: symbolic extents, neg, products by negative constants, a remainder of an
//     unknown dividend); unknown operations, float nodes and unbound indices give undefined;
//   - properties over random index expressions (+, -, *, //, %, neg of constants, indices and
//     sizes) on small extents, checked by enumeration: every value lies in the bounds, at every
//     value of the sizes; with the sizes given as constants the bounds are numbers, those of the
//     same extents given as numbers, and nothing proven symbolically is lost.
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { constValue, dconst, type Dim, devaluate, dmul, dsym, isConst } from '../dsl/dims.js';
import { bounds, type Constants, inExtent, proven, type Scope } from '../compiler/index-range.js';
import { binary, cnst, idx, ld, type Node, select, size, unary } from '../compiler/ir.js';

const i = (v: number): Node => cnst(v, 'int');
const H = dsym('H'), K = dsym('K');
const num = (n: Node, scope: Scope, constants?: Constants): [number, number] | undefined => {
  const b = bounds(n, scope, constants);
  if (!b) return undefined;
  expect(isConst(b.lo) && isConst(b.hi), 'numeric bounds').toBe(true);
  return [constValue(b.lo), constValue(b.hi)];
};

describe('bounds: numeric extents', () => {
  const sc: Scope = new Map([['a', dconst(4)], ['b', dconst(6)]]);
  const a = idx('a'), b = idx('b');
  test('constants, indices, +, -, *', () => {
    expect(num(i(7), sc)).toEqual([7, 7]);
    expect(num(a, sc)).toEqual([0, 3]);
    expect(num(binary('+', a, b), sc)).toEqual([0, 8]);
    expect(num(binary('-', a, b), sc)).toEqual([-5, 3]);
    expect(num(binary('+', binary('*', a, i(6)), b), sc)).toEqual([0, 23]);
    expect(num(binary('*', a, b), sc)).toEqual([0, 15]);
    expect(num(binary('-', binary('+', a, i(1)), i(1)), sc)).toEqual([0, 3]);
  });
  test('floor division and remainder by positive constants', () => {
    expect(num(binary('//', binary('+', binary('*', a, i(6)), b), i(6)), sc)).toEqual([0, 3]);
    expect(num(binary('//', binary('-', a, i(3)), i(2)), sc)).toEqual([-2, 0]);
    expect(num(binary('%', b, i(4)), sc)).toEqual([0, 3]);
    expect(num(binary('%', a, i(8)), sc)).toEqual([0, 3]); // already inside: kept as it is
    expect(num(binary('%', binary('-', a, i(1)), i(8)), sc)).toEqual([0, 7]);
    // A divisor that is an expression of one known value.
    expect(num(binary('//', b, binary('*', i(2), i(3))), sc)).toEqual([0, 0]);
  });
  test('neg and products by negative constants', () => {
    expect(num(unary('neg', a), sc)).toEqual([-3, 0]);
    expect(num(binary('*', a, i(-2)), sc)).toEqual([-6, 0]);
    expect(num(binary('*', i(-2), binary('-', a, i(1))), sc)).toEqual([-4, 2]);
  });
  test('unknown: other operations, float nodes, unbound indices, non-positive or unknown divisors', () => {
    expect(bounds(idx('x'), sc)).toBeUndefined();
    expect(bounds(ld('t', [a], 'int'), sc)).toBeUndefined();
    expect(bounds(unary('abs', a), sc)).toBeUndefined();
    expect(bounds(binary('max', a, b), sc)).toBeUndefined();
    expect(bounds(select(binary('<', a, b), a, b), sc)).toBeUndefined();
    expect(bounds(cnst(1.5, 'int'), sc)).toBeUndefined();
    expect(bounds(cnst(2, 'float'), sc)).toBeUndefined();
    expect(bounds(binary('+', a, cnst(1, 'float')), sc)).toBeUndefined();
    expect(bounds(binary('//', a, i(0)), sc)).toBeUndefined();
    expect(bounds(binary('%', a, i(-3)), sc)).toBeUndefined();
    expect(bounds(binary('//', a, b), sc)).toBeUndefined();
    // Both factors may be negative: no product bound.
    expect(bounds(binary('*', binary('-', a, i(2)), binary('-', b, i(2))), sc)).toBeUndefined();
    // A remainder by a known positive value is bounded whatever its dividend.
    expect(num(binary('%', ld('t', [a], 'int'), i(5)), sc)).toEqual([0, 4]);
  });
});

describe('bounds: symbolic sizes and sizes known as constants', () => {
  const sc: Scope = new Map([['h', H], ['j', K]]);
  const h = idx('h'), j = idx('j');
  const split = binary('+', binary('*', h, size(K)), j); // h*K + j < H*K
  const K4 = new Map([['K', 4]]), HK = new Map([['H', 3], ['K', 4]]);
  test('symbolic: polynomial bounds, proven for every value of the sizes', () => {
    const b = bounds(split, sc)!;
    expect([...b.lo]).toEqual([]);
    expect(Object.fromEntries(b.hi)).toEqual({ 'H*K': 1, '': -1 });
    expect(inExtent(split, sc, dmul(H, K))).toBe(true);
    expect(inExtent(split, sc, H)).toBe(false);
    expect(inExtent(j, sc, K)).toBe(true);
    expect(inExtent(binary('+', j, i(1)), sc, K)).toBe(false);
    expect(Object.fromEntries(bounds(unary('neg', h), sc)!.lo)).toEqual({ H: -1, '': 1 });
    // Not asked: either side may be left out.
    expect(proven(binary('-', j, i(1)), sc, dconst(0), K)).toEqual({ lo: false, hi: true });
    expect(proven(binary('-', j, i(1)), sc, undefined, K)).toEqual({ lo: true, hi: true });
    expect(proven(idx('x'), sc, dconst(0))).toEqual({ lo: false, hi: true });
  });
  test('a symbolic divisor or dividend: unknown until its sizes are given', () => {
    const q = binary('//', split, size(K)), r = binary('%', split, size(K));
    expect(bounds(q, sc)).toBeUndefined();
    expect(bounds(r, sc)).toBeUndefined();
    // K known: the remainder is bounded, the quotient's dividend still has H in it.
    expect(num(r, sc, K4)).toEqual([0, 3]);
    expect(bounds(q, sc, K4)).toBeUndefined();
    expect(num(q, sc, HK)).toEqual([0, 2]);
    expect(num(split, sc, HK)).toEqual([0, 11]);
    expect(num(size(K), sc, K4)).toEqual([4, 4]);
  });
  test('extents and bounds compared after the constants are substituted', () => {
    expect(inExtent(split, sc, dconst(12), HK)).toBe(true);
    expect(inExtent(split, sc, dconst(11), HK)).toBe(false);
    expect(inExtent(split, sc, dconst(12))).toBe(false);
    expect(inExtent(split, sc, dmul(H, K), HK)).toBe(true);
    expect(inExtent(j, sc, dconst(4), K4)).toBe(true);
    // An extent given symbolically, the index's only through the constants.
    expect(inExtent(idx('e'), new Map([['e', dconst(4)]]), K, K4)).toBe(true);
    expect(inExtent(idx('e'), new Map([['e', dconst(4)]]), K)).toBe(false);
  });
});

// ---- properties ------------------------------------------------------------------------------

type Expr =
  | { k: 'c'; v: number } | { k: 'i'; v: 'i' | 'j' | 'k' } | { k: 's'; v: 'H' | 'K' }
  | { k: 'neg'; a: Expr } | { k: '+' | '-' | '*' | '//' | '%'; a: Expr; b: Expr };

const exprArb: fc.Arbitrary<Expr> = fc.letrec<{ e: Expr }>((tie) => ({
  e: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.record({ k: fc.constant('c' as const), v: fc.integer({ min: -3, max: 5 }) }),
    fc.record({ k: fc.constant('i' as const), v: fc.constantFrom('i' as const, 'j' as const, 'k' as const) }),
    fc.record({ k: fc.constant('s' as const), v: fc.constantFrom('H' as const, 'K' as const) }),
    fc.record({ k: fc.constant('neg' as const), a: tie('e') }),
    fc.record({ k: fc.constantFrom('+' as const, '-' as const, '*' as const), a: tie('e'), b: tie('e') }),
    // Divisors: mostly known constants, sometimes a size or any expression.
    fc.record({ k: fc.constantFrom('//' as const, '%' as const), a: tie('e'), b: fc.oneof(fc.record({ k: fc.constant('c' as const), v: fc.integer({ min: -1, max: 4 }) }), tie('e')) }),
  ),
})).e;

function toNode(e: Expr): Node {
  switch (e.k) {
    case 'c': return i(e.v);
    case 'i': return idx(e.v);
    case 's': return size(dsym(e.v));
    case 'neg': return unary('neg', toNode(e.a));
    default: return binary(e.k, toNode(e.a), toNode(e.b));
  }
}

/** The tensor IR's integer semantics: floor division and modulo (by 0: some integer, here 0). */
function evaluate(e: Expr, at: ReadonlyMap<string, number>): number {
  switch (e.k) {
    case 'c': return e.v;
    case 'i': case 's': return at.get(e.v)!;
    case 'neg': return -evaluate(e.a, at);
    default: {
      const x = evaluate(e.a, at), y = evaluate(e.b, at);
      if (e.k === '+') return x + y;
      if (e.k === '-') return x - y;
      if (e.k === '*') return x * y;
      if (y === 0) return 0;
      const q = Math.floor(x / y);
      return e.k === '//' ? q : x - y * q;
    }
  }
}

const SYMBOLIC: Scope = new Map([['i', H], ['j', K], ['k', dconst(3)]]);
const sizesArb = fc.record({ H: fc.integer({ min: 1, max: 4 }), K: fc.integer({ min: 1, max: 4 }) });

/** Every point of the scope at these sizes, with the sizes themselves. */
function points(sizes: { H: number; K: number }): Map<string, number>[] {
  const out: Map<string, number>[] = [];
  for (let a = 0; a < sizes.H; a++) for (let b = 0; b < sizes.K; b++) for (let c = 0; c < 3; c++) out.push(new Map([['i', a], ['j', b], ['k', c], ['H', sizes.H], ['K', sizes.K]]));
  return out;
}

const constantsOf = (sizes: { H: number; K: number }): Constants => new Map(Object.entries(sizes));
const at = (d: Dim, c: Constants): number => devaluate(d, c)!;

describe('bounds: properties', () => {
  test('symbolic bounds hold at every value of the sizes (enumerated)', () => {
    fc.assert(fc.property(exprArb, sizesArb, (e, sizes) => {
      const b = bounds(toNode(e), SYMBOLIC);
      if (!b) return;
      const c = constantsOf(sizes);
      for (const p of points(sizes)) {
        const v = evaluate(e, p);
        expect(v).toBeGreaterThanOrEqual(at(b.lo, c));
        expect(v).toBeLessThanOrEqual(at(b.hi, c));
      }
    }), { numRuns: 400 });
  });
  test('with the sizes as constants: numbers, the same as numeric extents give, holding, and losing no symbolic answer', () => {
    fc.assert(fc.property(exprArb, sizesArb, (e, sizes) => {
      const n = toNode(e), c = constantsOf(sizes);
      const b = bounds(n, SYMBOLIC, c);
      const numeric: Scope = new Map([...SYMBOLIC].map(([v, d]) => [v, dconst(at(d, c))] as const));
      expect(b).toEqual(bounds(n, numeric, c));
      if (bounds(n, SYMBOLIC)) expect(b).toBeDefined();
      for (const extent of [H, K, dmul(H, K), dconst(3)]) if (inExtent(n, SYMBOLIC, extent)) expect(inExtent(n, SYMBOLIC, extent, c)).toBe(true);
      if (!b) return;
      expect(isConst(b.lo) && isConst(b.hi)).toBe(true);
      for (const p of points(sizes)) {
        const v = evaluate(e, p);
        expect(v).toBeGreaterThanOrEqual(constValue(b.lo));
        expect(v).toBeLessThanOrEqual(constValue(b.hi));
      }
    }), { numRuns: 400 });
  });
});
