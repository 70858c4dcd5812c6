// Rule-table rewriting of tensor IR (tinygrad's PatternMatcher, in small): a rule is a
// pattern and a builder; rewriteToFixpoint applies a table bottom-up until nothing changes.
import type { UnaryFn } from '../dsl/checked.js';
import { applyUnary } from '../dsl/math.js';
import { type Arg, binary, cnst, freeIndices, mk, type Node, type Op, select, unary, withSrc } from './ir.js';

export interface Pat {
  op?: Op;
  arg?: Arg | ((a: Arg) => boolean);
  src?: Pat[];
  /** Binds the matched node under this name. */
  name?: string;
  pred?: (n: Node) => boolean;
  /** Try both operand orders (for + and *). */
  commutative?: boolean;
}

export type Rule = readonly [Pat, (m: Record<string, Node>, n: Node) => Node | undefined];

export function match(p: Pat, n: Node, m: Record<string, Node>): boolean {
  if (p.op !== undefined && p.op !== n.op) return false;
  if (p.arg !== undefined && (typeof p.arg === 'function' ? !p.arg(n.arg) : p.arg !== n.arg)) return false;
  if (p.pred && !p.pred(n)) return false;
  if (p.name) {
    const prev = m[p.name];
    if (prev && prev !== n) return false;
  }
  if (p.src) {
    if (p.src.length !== n.src.length) return false;
    const orders = p.commutative && n.src.length === 2 ? [[0, 1], [1, 0]] : [n.src.map((_, i) => i)];
    let ok = false;
    for (const order of orders) {
      const trial = { ...m };
      if (p.src.every((sp, i) => match(sp, n.src[order[i]!]!, trial))) { Object.assign(m, trial); ok = true; break; }
    }
    if (!ok) return false;
  }
  if (p.name) m[p.name] = n;
  return true;
}

export function rewriteToFixpoint(root: Node, rules: readonly Rule[], maxPasses = 50): Node {
  let cur = root;
  for (let pass = 0; pass < maxPasses; pass++) {
    const memo = new Map<number, Node>();
    const go = (n: Node): Node => {
      const hit = memo.get(n.id);
      if (hit) return hit;
      let out = withSrc(n, n.src.map(go));
      for (const [pat, build] of rules) {
        const m: Record<string, Node> = {};
        if (match(pat, out, m)) {
          const r = build(m, out);
          if (r && r !== out) { out = go(r); break; }
        }
      }
      memo.set(n.id, out);
      return out;
    };
    const next = go(cur);
    if (next === cur) return cur;
    cur = next;
  }
  return cur;
}

// ---- rule tables ------------------------------------------------------------------------

const isConst = (v?: number) => (n: Node) => n.op === 'const' && (v === undefined || n.arg === v);
const C = (name: string, v?: number): Pat => ({ name, pred: isConst(v) });
const X = (name: string): Pat => ({ name });
const bin = (op: string, a: Pat, b: Pat, commutative = false): Pat => ({ op: 'binary', arg: op, src: [a, b], commutative });

function foldBinary(op: string, a: number, b: number): number | undefined {
  switch (op) {
    case '+': return a + b;
    case '-': return a - b;
    case '*': return a * b;
    case '/': return a / b;
    case '^': return Math.pow(a, b);
    case 'min': return Math.min(a, b);
    case 'max': return Math.max(a, b);
    default: return undefined;
  }
}

/** Algebraic simplification: identities and constant folding (exact in float64). */
export const SIMPLIFY: readonly Rule[] = [
  [bin('*', X('x'), C('one', 1), true), (m) => (m.x!.dtype === 'float' || m.one!.dtype === 'int' ? m.x : undefined)],
  [bin('*', X('x'), C('zero', 0), true), (m) => cnst(0, m.x!.dtype === 'int' && m.zero!.dtype === 'int' ? 'int' : 'float')],
  [bin('+', X('x'), C('zero', 0), true), (m) => (m.x!.dtype === 'float' || m.zero!.dtype === 'int' ? m.x : undefined)],
  [bin('-', X('x'), C('zero', 0)), (m) => (m.x!.dtype === 'float' || m.zero!.dtype === 'int' ? m.x : undefined)],
  [bin('-', C('zero', 0), X('x')), (m) => unary('neg', m.x!)],
  [bin('/', X('x'), C('one', 1)), (m) => (m.x!.dtype === 'float' ? m.x : undefined)],
  [bin('^', X('x'), C('one', 1)), (m) => (m.x!.dtype === 'float' ? m.x : undefined)],
  [{ op: 'unary', arg: 'neg', src: [{ op: 'unary', arg: 'neg', src: [X('x')] }] }, (m) => m.x],
  [bin('+', X('x'), { op: 'unary', arg: 'neg', src: [X('y')] }, true), (m) => binary('-', m.x!, m.y!)],
  [bin('*', { op: 'unary', arg: 'neg', src: [X('x')] }, X('y'), true), (m) => unary('neg', binary('*', m.x!, m.y!))],
  [{ op: 'select', src: [X('c'), X('a'), X('a')] }, (m) => m.a],
  [{ op: 'binary', src: [C('a'), C('b')] }, (m, n) => {
    const v = foldBinary(n.arg as string, m.a!.arg as number, m.b!.arg as number);
    return v === undefined || !Number.isFinite(v) ? undefined : cnst(v, n.dtype);
  }],
  [{ op: 'unary', src: [C('a')] }, (m, n) => {
    const v = applyUnary(n.arg as UnaryFn, m.a!.arg as number);
    return Number.isFinite(v) ? cnst(v, n.dtype) : undefined;
  }],
];

/**
 * Decays into the log domain: base^e with an integer exponent that depends on positions
 * becomes exp(e * log|base|) (times the sign (-1)^e where base < 0), so that schedules can
 * split exponents (t - s) and only ever exponentiate non-positive sums. The real value of a
 * negative base to an integer power is kept (as the reference has it), and base = 0 gives
 * 1 at e = 0 and (to far below float32 resolution) 0 beyond, never 0 * log(0) = NaN.
 */
export const LOG_DOMAIN: readonly Rule[] = [
  [bin('^', X('base'), X('e')), (m) => {
    const { base, e: given } = m as { base: Node; e: Node };
    // pow(gamma, float(t - s)) is the same integer power as gamma^(t - s).
    const e = given.op === 'unary' && given.arg === 'float' && given.src[0]!.dtype === 'int' ? given.src[0]! : given;
    if (base.dtype !== 'float' || e.dtype !== 'int' || freeIndices(e).size === 0) return undefined;
    const w = unary('exp', binary('*', unary('float', e), logNearOne(base)));
    return base.op === 'const' && (base.arg as number) >= 0 ? w : binary('*', w, signPow(binary('<', base, cnst(0)), e));
  }],
  [{ op: 'unary', arg: 'float', src: [{ name: 'x', pred: (n) => n.dtype === 'float' }] }, (m) => m.x],
];

/**
 * The smallest magnitude a decay base is given: log|x| is taken of |x| + 2^-60, so that
 * x = 0 has a finite log (no 0 * -inf = NaN at distance 0, and a finite derivative 2^60 that
 * gives d gamma^(t-s) / d gamma at gamma = 0 its exact value through the factorised gradient);
 * its powers 2^-60, 2^-120 are far below float32 resolution next to the distance-0 weight 1,
 * and 2^-60 is lost in rounding |x| + 2^-60 for every |x| > 2^-36.
 */
export const DECAY_FLOOR = 2 ** -60;

/**
 * log|x| for a decay base: near 1 as log1p(x - 1), where x - 1 is exact in float32 (GPU logs
 * lose their relative accuracy there: gamma = 1 - 2^-20 would get lambda wrong by percent).
 */
function logNearOne(x: Node): Node {
  const d = binary('-', x, cnst(1));
  const far = x.op === 'const' && (x.arg as number) > 0 ? unary('log', x) : unary('log', binary('+', unary('abs', x), cnst(DECAY_FLOOR)));
  return mk('select', 'float', [binary('<', unary('abs', d), cnst(0.5)), unary('log1p', d), far], null);
}

/** (-1)^e where `negative` holds, else 1: the sign of a negative base to the integer power e. */
export function signPow(negative: Node, e: Node): Node {
  const even = binary('==', binary('%', e, cnst(2, 'int')), cnst(0, 'int'));
  return select(negative, select(even, cnst(1), cnst(-1)), cnst(1));
}

export const canonicalise = (n: Node): Node => rewriteToFixpoint(rewriteToFixpoint(n, LOG_DOMAIN), SIMPLIFY);
export const simplify = (n: Node): Node => rewriteToFixpoint(n, SIMPLIFY);
