// Linear forms of exponents, for recognising decays by their algebra rather than their
// spelling: exp((t - s) * c), exp(-c * (t - s)), exp(c*t - c*s), exp2(...) and gamma^(t - s)
// all normalise to the same sum  coef(t) * t + coef(s) * s + sum_k coef_k * atom_k + const,
// where coefficients are free of the positions and atoms are the non-linear subexpressions
// (G[t], abs(t - s), score[t, s], ...). Coefficients are themselves normalised (a number times
// a product of factors sorted by node id), so that c*t - c*s cancels to a pure difference.
import { add, cnst, divN, freeIndices, mulN, type Node, unary } from './ir.js';

/** A position-free coefficient: sum of k * (product of the nodes fs), keyed by the fs ids. */
export type Coef = Map<string, { k: number; fs: Node[] }>;
/** A linear form: atom key ('' for the constant term) -> the atom and its coefficient. */
export type Lin = Map<string, { atom: Node | null; coef: Coef }>;

const monoKey = (fs: readonly Node[]): string => fs.map((f) => f.id).join('*');

/** A position-free node as a coefficient (number times sorted factors). */
export function coefOf(n: Node): Coef {
  let k = 1;
  const fs: Node[] = [];
  const go = (x: Node): void => {
    if (x.op === 'const') k *= x.arg as number;
    else if (x.op === 'unary' && x.arg === 'neg') { k = -k; go(x.src[0]!); }
    else if (x.op === 'unary' && x.arg === 'float') go(x.src[0]!);
    else if (x.op === 'binary' && x.arg === '*') { go(x.src[0]!); go(x.src[1]!); }
    else fs.push(x);
  };
  go(n);
  fs.sort((a, b) => a.id - b.id);
  return k === 0 ? new Map() : new Map([[monoKey(fs), { k, fs }]]);
}

export function coefAdd(a: Coef, b: Coef, sb = 1): Coef {
  const out: Coef = new Map([...a].map(([key, m]) => [key, { ...m }] as const));
  for (const [key, m] of b) {
    const e = out.get(key);
    const k = (e?.k ?? 0) + sb * m.k;
    if (k === 0) out.delete(key);
    else out.set(key, { k, fs: m.fs });
  }
  return out;
}

export function coefMul(a: Coef, b: Coef): Coef {
  let out: Coef = new Map();
  for (const x of a.values()) for (const y of b.values()) {
    const fs = [...x.fs, ...y.fs].sort((p, q) => p.id - q.id);
    out = coefAdd(out, new Map([[monoKey(fs), { k: x.k * y.k, fs }]]));
  }
  return out;
}

export const coefIsZero = (a: Coef): boolean => a.size === 0;
/** The number a coefficient is, when it is one (no factors). */
export const coefNumber = (a: Coef): number | undefined => (a.size === 0 ? 0 : a.size === 1 && [...a.values()][0]!.fs.length === 0 ? [...a.values()][0]!.k : undefined);

/** A coefficient as a node: k * f1 * f2 ..., summed; `int` builds integer constants. */
export function coefToNode(a: Coef, int = false): Node {
  const terms = [...a.values()].map(({ k, fs }) => {
    const prod = fs.length ? fs.reduce((x, y) => mulN(x, y)) : undefined;
    if (!prod) return cnst(k, int ? 'int' : 'float');
    if (k === 1) return prod;
    if (k === -1) return unary('neg', prod);
    return mulN(cnst(k, int ? 'int' : 'float'), prod);
  });
  return terms.length ? terms.reduce((x, y) => add(x, y)) : cnst(0, int ? 'int' : 'float');
}

function linAdd(a: Lin, b: Lin, sb = 1): Lin {
  const out: Lin = new Map(a);
  for (const [key, t] of b) {
    const e = out.get(key);
    const coef = coefAdd(e?.coef ?? new Map(), t.coef, sb);
    if (coefIsZero(coef)) out.delete(key);
    else out.set(key, { atom: t.atom, coef });
  }
  return out;
}

function linScale(a: Lin, c: Coef): Lin {
  const out: Lin = new Map();
  for (const [key, t] of a) {
    const coef = coefMul(t.coef, c);
    if (!coefIsZero(coef)) out.set(key, { atom: t.atom, coef });
  }
  return out;
}

/**
 * The linear form of `n` in the index variables `pos`: sums, differences, negations, float()
 * and products or quotients by position-free factors are distributed; anything else that
 * depends on a position is an atom.
 */
export function linearForm(n: Node, pos: ReadonlySet<string>): Lin {
  const has = (x: Node) => [...freeIndices(x)].some((v) => pos.has(v));
  const go = (x: Node): Lin => {
    if (!has(x)) {
      const c = coefOf(x);
      return coefIsZero(c) ? new Map() : new Map([['', { atom: null, coef: c }]]);
    }
    const atom = (): Lin => new Map([[String(x.id), { atom: x, coef: coefOf(cnst(1)) }]]);
    if (x.op === 'unary' && x.arg === 'neg') return linScale(go(x.src[0]!), coefOf(cnst(-1)));
    if (x.op === 'unary' && x.arg === 'float') return go(x.src[0]!);
    if (x.op === 'binary') {
      const [a, b] = x.src as [Node, Node];
      if (x.arg === '+') return linAdd(go(a), go(b));
      if (x.arg === '-') return linAdd(go(a), go(b), -1);
      if (x.arg === '*' && !has(a)) return linScale(go(b), coefOf(a));
      if (x.arg === '*' && !has(b)) return linScale(go(a), coefOf(b));
      if (x.arg === '/' && !has(b)) return linScale(go(a), b.op === 'const' && b.arg !== 0 ? coefOf(cnst(1 / (b.arg as number))) : coefOf(divN(cnst(1), b)));
    }
    return atom();
  };
  return go(n);
}

/** A linear form (or part of one) as a node: sum of coef * atom. */
export function linToNode(terms: Iterable<{ atom: Node | null; coef: Coef }>, int = false): Node {
  const parts: Node[] = [];
  for (const { atom, coef } of terms) {
    if (!atom) { parts.push(coefToNode(coef, int)); continue; }
    const a = int || atom.dtype !== 'int' ? atom : unary('float', atom);
    const k = coefNumber(coef);
    parts.push(k === 1 ? a : k === -1 ? unary('neg', a) : mulN(coefToNode(coef, int), a));
  }
  return parts.length ? parts.reduce((x, y) => add(x, y)) : cnst(0, int ? 'int' : 'float');
}
