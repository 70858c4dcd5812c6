// Index arithmetic for the one-hot elimination (compiler/onehot.ts): which guards of an inverted
// index hold by the extents, and index arithmetic folded once an index is substituted
// ((u*64 + j) // 64 is u where 0 <= j < 64). The ranges are compiler/index-range.ts's, shared
// with map fusion and hoisting; they are re-exported here for the elimination's callers.
import { type Dim, constValue, dconst, ddiv, deq, dmul, isConst } from '../dsl/dims.js';
import { inExtent, type Scope } from './index-range.js';
import { binary, cnst, dimKey, type Node, size } from './ir.js';
import { type Pat, type Rule, SIMPLIFY, rewriteToFixpoint } from './rewrite.js';

export { bounds, proven, type Scope } from './index-range.js';

/** The integer an int node is: a constant, or a size that is a number (a model's `e // dh`). */
export function constOf(n: Node): number | undefined {
  if (n.op === 'const') return n.dtype === 'int' && Number.isInteger(n.arg) ? (n.arg as number) : undefined;
  if (n.op === 'size') return isConst(n.arg as Dim) ? constValue(n.arg as Dim) : undefined;
  return undefined;
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
  const small = (y: Node, c: Node): boolean => inExtent(y, scope, divisorOf(c, positive)!);
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
