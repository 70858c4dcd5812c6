// Analysis: recognise causal decayed contractions
//   y[.., t, j] = sum_{s <= t (or >=, <, >), i} w(t, s) * a[t, i] * b[s, i] * c[s, j]
// whose weight factorises over time as w(t, s) = exp(L(t) - L(s)), with L a sum of terms
//   fixed:  L(p) = p * lambda          (gamma^(t - s), lambda = log gamma per head)
//   gated:  L(p) = G[.., p]            (G a cumulative sum of per-step log gates)
// (no term at all: w = 1, linear attention), possibly times the sign (-1)^(t - s) of a
// negative decay base. Weights are recognised by their algebra, not their spelling: each
// exp / exp2 factor's exponent is first normalised into a linear form in the two positions
// (normaliseWeights, linform.ts), so exp(-c * (s - t)), exp(c*t - c*s) and exp2(...) are the
// fixed decay they equal. For these the recurrent and chunkwise schedules exist. Any other
// sum over two positions (softmax attention, a window, a two-sided sum) gets the parallel
// schedule only, and `explain` says why, naming the factor that depends on both positions.
import type { CVar, ReduceVar } from '../dsl/checked.js';
import { type Dim, dconst, deq, dimToString, isConst as isConstDim } from '../dsl/dims.js';
import { add, binary, cnst, divN, freeIndices, idx, type IrFn, type IrStmt, ld, mulN, type Node, nodeToString, type ReduceArg, rebuild, reduce, subN, substIndex, unary, walk, withSrc } from './ir.js';
import { coefAdd, coefIsZero, coefNumber, coefOf, coefToNode, type Lin, linearForm, linToNode } from './linform.js';
import { signPow } from './rewrite.js';

export type DecayTerm =
  /** L(p) = p * lambda; lambda's free indices are batch indices. */
  | { kind: 'fixed'; lambda: Node }
  /**
   * L(p) = G with the index POS standing for p. When G is the cumulative sum of a per-step
   * gate g (G[p] = sum_{u <= p} g[u]), `step` is g at POS: schedules then build the weights
   * from chunk-local sums of g instead of differences of the large G (float32 keeps them exact).
   */
  | { kind: 'gated'; G: Node; step?: Node };

/** The placeholder position index in gated decay terms. */
export const POS = '%p';
/** Stand-ins for an absent contracted or value index (extent 1): no user name can clash. */
export const UNIT_INNER = '%i';
export const UNIT_VALUE = '%j';

export interface Contraction {
  row: string;
  col: string;
  inner: string;
  value: string;
  batch: ReduceVar[];
  direction: 'causal' | 'anticausal';
  /** col < row (or >) rather than <= (>=). */
  strict: boolean;
  a: Node;
  b: Node;
  c: Node;
  scale: Node;
  decay: DecayTerm[];
  /**
   * Conditions (batch-only bool nodes) under which the weight also carries (-1)^(later - earlier):
   * the sign of a negative decay base gamma, whose magnitude |gamma| is in `decay` (rewrite.ts).
   */
  signs: Node[];
  /** The decay factor nodes of the body (exp(...), signs), for the gradient hook. */
  decayNodes: Node[];
  /**
   * 1 when the weight also carries the distance |row - col| (the derivative of a decay
   * gamma^(t - s) with respect to log gamma): w(t, s) (t - s). Schedules keep a second state.
   */
  order: 0 | 1;
  T: Dim;
  K: Dim;
  V: Dim;
}

export type Recognition = { ok: true; c: Contraction } | { ok: false; reason: string };

/** Flattens a product into factors: a * b / c -> [a, b, 1/c]; -x -> [-1, x]. */
function factorsOf(n: Node): Node[] {
  if (n.op === 'binary' && n.arg === '*') return [...factorsOf(n.src[0]!), ...factorsOf(n.src[1]!)];
  if (n.op === 'binary' && n.arg === '/' && n.src[1]!.dtype === 'float') return [...factorsOf(n.src[0]!), divN(cnst(1), n.src[1]!)];
  if (n.op === 'unary' && n.arg === 'neg') return [cnst(-1), ...factorsOf(n.src[0]!)];
  return [n];
}

const product = (fs: Node[]): Node => (fs.length === 0 ? cnst(1) : fs.reduce((a, b) => mulN(a, b)));

/** Parses one decay factor exp(E) with E = (row - col) * lambda or L(row) - L(col). */
function parseDecay(f: Node, row: string, col: string, batch: Set<string>): DecayTerm[] | undefined {
  if (f.op !== 'unary' || f.arg !== 'exp') return undefined;
  return parseExponent(f.src[0]!, row, col, batch);
}

function parseExponent(e: Node, row: string, col: string, batch: Set<string>): DecayTerm[] | undefined {
  const onlyBatch = (n: Node) => [...freeIndices(n)].every((v) => batch.has(v));
  // Sums of exponents: each part must itself be a decay exponent.
  if (e.op === 'binary' && e.arg === '+') {
    const l = parseExponent(e.src[0]!, row, col, batch);
    const r = parseExponent(e.src[1]!, row, col, batch);
    if (l && r) return [...l, ...r];
  }
  // (row - col) * lambda in either order, with float() around the difference.
  if (e.op === 'binary' && e.arg === '*') {
    for (const [d, lam] of [[e.src[0]!, e.src[1]!], [e.src[1]!, e.src[0]!]] as const) {
      const diff = d.op === 'unary' && d.arg === 'float' ? d.src[0]! : d;
      if (diff.op === 'binary' && diff.arg === '-' && isIdx(diff.src[0]!, row) && isIdx(diff.src[1]!, col) && onlyBatch(lam)) return [{ kind: 'fixed', lambda: lam }];
    }
  }
  // L(row) - L(col)
  if (e.op === 'binary' && e.arg === '-') {
    const [l, r] = e.src as [Node, Node];
    const fl = freeIndices(l);
    if (fl.has(row) && [...fl].every((v) => v === row || batch.has(v)) && substIndex(l, new Map([[row, idx(col)]])) === r) return [{ kind: 'gated', G: substIndex(l, new Map([[row, idx(POS)]])) }];
  }
  return undefined;
}

const isIdx = (n: Node, name: string) => n.op === 'index' && n.arg === name;

/** The condition C of a decay sign factor (-1)^(later - earlier) where C holds (signPow). */
function parseSign(f: Node, later: string, earlier: string, batch: Set<string>): Node | undefined {
  if (f.op !== 'select' || !isConst(f.src[2]!, 1)) return undefined;
  const [cond, inner] = f.src as [Node, Node];
  if (![...freeIndices(cond)].every((v) => batch.has(v))) return undefined;
  if (inner.op !== 'select' || !isConst(inner.src[1]!, 1) || !isConst(inner.src[2]!, -1)) return undefined;
  const even = inner.src[0]!;
  if (even.op !== 'binary' || even.arg !== '==' || !isConst(even.src[1]!, 0)) return undefined;
  const mod = even.src[0]!;
  if (mod.op !== 'binary' || mod.arg !== '%' || !isConst(mod.src[1]!, 2)) return undefined;
  const e = mod.src[0]!;
  const diff = (a: string, b: string) => e.op === 'binary' && e.arg === '-' && isIdx(e.src[0]!, a) && isIdx(e.src[1]!, b);
  return diff(later, earlier) || diff(earlier, later) ? cond : undefined;
}

const isConst = (n: Node, v: number) => n.op === 'const' && n.arg === v;

/** A factor of a weight between two positions that is a recognised decay piece as written. */
function isDecayPiece(f: Node, later: string, earlier: string, batch: Set<string>): boolean {
  return !!parseDecay(f, later, earlier, batch) || isDistance(f, later, earlier) || !!parseSign(f, later, earlier, batch);
}

type Normal = { ok: true; factors: Node[] } | { ok: false; coupled: Node };

/**
 * The normal form of one weight factor between positions `later` and `earlier`: exp(E) and
 * exp2(E) with E distributed into a linear form become exp(float(later - earlier) * lambda
 * + sum_k (G_k(later) - G_k(earlier))) times exp(terms of one position) times exp(the
 * position-free rest); a sign (-1)^E likewise. `coupled` is the atom that depends on both.
 */
function normalForm(f: Node, later: string, earlier: string): Normal | undefined {
  const pos = new Set([later, earlier]);
  const both = (n: Node) => { const fi = freeIndices(n); return fi.has(later) && fi.has(earlier); };
  const split = (L: Lin) => {
    const lt = L.get(String(idx(later).id))?.coef ?? new Map();
    const et = L.get(String(idx(earlier).id))?.coef ?? new Map();
    const atoms = [...L.values()].filter((t) => t.atom && t.atom !== idx(later) && t.atom !== idx(earlier));
    const coupled = atoms.find((t) => both(t.atom!));
    return { lt, et, atoms, coupled, rest: L.get('') };
  };
  if (f.op === 'unary' && (f.arg === 'exp' || f.arg === 'exp2')) {
    let L = linearForm(f.src[0]!, pos);
    if (f.arg === 'exp2') L = new Map([...L].map(([k, t]) => [k, { atom: t.atom, coef: coefOf(mulN(coefToNode(t.coef), cnst(Math.LN2))) }] as const));
    const { lt, et, atoms, coupled, rest } = split(L);
    if (coupled) return { ok: false, coupled: coupled.atom! };
    const decay: Node[] = [];
    const laterOnly: Node[] = [];
    const earlierOnly: Node[] = [];
    if (!coefIsZero(lt)) decay.push(mulN(unary('float', subN(idx(later), idx(earlier))), coefToNode(lt)));
    const remE = coefAdd(et, lt);
    if (!coefIsZero(remE)) earlierOnly.push(linToNode([{ atom: idx(earlier), coef: remE }]));
    const used = new Set<Node>();
    for (const t of atoms) {
      if (used.has(t.atom!) || !freeIndices(t.atom!).has(later)) continue;
      const mirror = substIndex(t.atom!, new Map([[later, idx(earlier)]]));
      const m = atoms.find((u) => u.atom === mirror && !used.has(u.atom!));
      if (m && coefIsZero(coefAdd(t.coef, m.coef))) {
        used.add(t.atom!).add(m.atom!);
        const l = linToNode([t]);
        decay.push(subN(l, substIndex(l, new Map([[later, idx(earlier)]]))));
      }
    }
    for (const t of atoms) if (!used.has(t.atom!)) (freeIndices(t.atom!).has(later) ? laterOnly : earlierOnly).push(linToNode([t]));
    const sum = (xs: Node[]) => xs.reduce((a, b) => add(a, b));
    const out: Node[] = [];
    if (decay.length) out.push(unary('exp', sum(decay)));
    if (laterOnly.length) out.push(unary('exp', sum(laterOnly)));
    if (earlierOnly.length) out.push(unary('exp', sum(earlierOnly)));
    if (rest) out.push(unary('exp', coefToNode(rest.coef)));
    return { ok: true, factors: out };
  }
  // A sign select(C, (-1)^E, 1) with E an integer linear form of the positions.
  if (f.op === 'select' && isConst(f.src[2]!, 1) && f.src[1]!.op === 'select') {
    const inner = f.src[1]!;
    const even = inner.src[0]!;
    if (!isConst(inner.src[1]!, 1) || !isConst(inner.src[2]!, -1) || even.op !== 'binary' || even.arg !== '==' || !isConst(even.src[1]!, 0)) return undefined;
    const mod = even.src[0]!;
    if (mod.op !== 'binary' || mod.arg !== '%' || !isConst(mod.src[1]!, 2)) return undefined;
    const cond = f.src[0]!;
    const { lt, et, atoms, coupled, rest } = split(linearForm(mod.src[0]!, pos));
    if (coupled) return { ok: false, coupled: coupled.atom! };
    const kl = coefNumber(lt);
    const ke = coefNumber(et);
    if (kl === undefined || ke === undefined || !Number.isInteger(kl) || !Number.isInteger(ke)) return undefined;
    const odd = (k: number) => Math.abs(k) % 2 === 1;
    const out: Node[] = [];
    if (odd(kl) && odd(ke)) out.push(signPow(cond, subN(idx(later), idx(earlier))));
    else if (odd(kl)) out.push(signPow(cond, idx(later)));
    else if (odd(ke)) out.push(signPow(cond, idx(earlier)));
    const others = [...atoms, ...(rest ? [rest] : [])];
    if (others.length) out.push(signPow(cond, linToNode(others, true)));
    return { ok: true, factors: out };
  }
  return undefined;
}

/** The (summed col, outer row) position pairs of a reduction with a constraint between them. */
function causalPairs(n: Node): { col: string; row: string; causal: boolean }[] {
  const r = n.arg as ReduceArg;
  const bound = new Set(r.vars.map((v) => v.name));
  const out: { col: string; row: string; causal: boolean }[] = [];
  r.cons.forEach((c, k) => {
    const rhs = n.src[k + 1]!;
    if (rhs.op === 'index' && !bound.has(rhs.arg as string) && bound.has(c.name)) out.push({ col: c.name, row: rhs.arg as string, causal: c.op === '<' || c.op === '<=' });
  });
  return out;
}

/**
 * Rewrites the weight factors of every causal sum in `value` into their normal form (see
 * normalForm), so that decays spelled in any algebraically equal way are recognised alike.
 * Factors already in their normal form are left as they are.
 */
export function normaliseWeights(value: Node): Node {
  return rebuild(value, (n, src) => {
    const m = withSrc(n, src);
    if (m.op !== 'reduce') return m;
    const pairs = causalPairs(m);
    if (pairs.length !== 1) return m;
    const { col, row, causal } = pairs[0]!;
    const [later, earlier] = causal ? [row, col] : [col, row];
    const outer = new Set([...freeIndices(m)].filter((v) => v !== row));
    let changed = false;
    const factors = factorsOf(m.src[0]!).flatMap((f) => {
      const fi = freeIndices(f);
      if (!fi.has(row) || !fi.has(col) || isDistance(f, later, earlier) || parseSign(f, later, earlier, outer)) return [f];
      // exp(c*t - c*s) is a gated form as written, but normalises to the fixed (t - s) * c.
      const nf = normalForm(f, later, earlier);
      if (!nf || !nf.ok || (nf.factors.length === 1 && nf.factors[0] === f)) return [f];
      changed = true;
      return nf.factors;
    });
    return changed ? reduce(m.arg as ReduceArg, product(factors), m.src.slice(1)) : m;
  });
}

/** float(later - earlier) or later - earlier: the distance between the two positions. */
function isDistance(f: Node, later: string, earlier: string): boolean {
  const d = f.op === 'unary' && f.arg === 'float' ? f.src[0]! : f;
  return d.op === 'binary' && d.arg === '-' && isIdx(d.src[0]!, later) && isIdx(d.src[1]!, earlier);
}

/** Recognises `value` (a reduction) of a statement over `indices` as a contraction. */
export function recognise(indices: readonly ReduceVar[], value: Node): Recognition {
  if (value.op !== 'reduce') return { ok: false, reason: 'it is not a sum over positions' };
  const r = value.arg as ReduceArg;
  if (r.op !== 'sum') return { ok: false, reason: `it is a ${r.op}, not a sum` };
  const out = new Set(indices.map((v) => v.name));
  // The key-time index: a summed index constrained against an output index.
  const timed = r.cons.map((c, k) => ({ c, rhs: value.src[k + 1]! })).filter(({ c, rhs }) => rhs.op === 'index' && out.has(rhs.arg as string) && r.vars.some((v) => v.name === c.name));
  if (timed.length !== 1 || r.cons.length !== 1) return { ok: false, reason: 'its sum has no single range constraint of the form s <= t between a summed and an output index' };
  const { c: con, rhs } = timed[0]!;
  const col = con.name;
  const row = rhs.arg as string;
  if (r.vars.length > 2) return { ok: false, reason: `it sums over ${r.vars.length} indices; a contraction sums over one position and at most one feature index` };
  // A sum over the position alone (a cumulative sum, a scan) is a contraction with K = 1.
  const inner = r.vars.find((v) => v.name !== col) ?? { name: UNIT_INNER, extent: dconst(1) };
  const colVar = r.vars.find((v) => v.name === col)!;
  const rowVar = indices.find((v) => v.name === row)!;
  if (!deq(rowVar.extent, colVar.extent)) return { ok: false, reason: `positions ${row} and ${col} range over ${dimToString(rowVar.extent)} and ${dimToString(colVar.extent)}` };
  const factors = factorsOf(value.src[0]!);
  const fv = factors.map((f) => freeIndices(f));
  // The value index goes with the key position and never with the row; batch indices go anywhere.
  const valueCands = indices.filter((v) => v.name !== row && fv.some((s) => s.has(v.name) && s.has(col)) && !fv.some((s) => s.has(v.name) && s.has(row)));
  // Without a value index (V = 1), and in a pure scan (nothing depends on the row), every
  // other output index is a batch index.
  const pureScan = !fv.some((s) => s.has(row));
  if (valueCands.length > 1 && !pureScan) return { ok: false, reason: `no single output feature index goes with ${col}` };
  const valueVar: ReduceVar = valueCands.length === 1 ? valueCands[0]! : { name: UNIT_VALUE, extent: dconst(1) };
  const batch = indices.filter((v) => v.name !== row && v.name !== valueVar.name);
  const batchNames = new Set(batch.map((v) => v.name));
  const a: Node[] = [], b: Node[] = [], c: Node[] = [], scale: Node[] = [], decayNodes: Node[] = [];
  let order: 0 | 1 = 0;
  const decay: DecayTerm[] = [];
  const signs: Node[] = [];
  const direction = con.op === '<=' || con.op === '<' ? 'causal' : 'anticausal';
  // The weight is exp(L(later) - L(earlier)): later is the row for causal sums, the column otherwise.
  const [later, earlier] = direction === 'causal' ? [row, col] : [col, row];
  for (let k = 0; k < factors.length; k++) {
    const f = factors[k]!;
    const s = new Set([...fv[k]!].filter((x) => !batchNames.has(x)));
    const has = (x: string) => s.has(x);
    const only = (...xs: string[]) => [...s].every((x) => xs.includes(x));
    if (s.size === 0) scale.push(f);
    else if (only(row, inner.name)) a.push(f);
    else if (only(col, inner.name) && has(col)) b.push(f);
    else if (only(col, inner.name)) a.push(f);
    else if (only(col, valueVar.name)) c.push(f);
    else if (only(row, col) && has(row) && has(col) && isDistance(f, later, earlier)) {
      if (order === 1) return { ok: false, reason: `its weight has the distance ${later} - ${earlier} twice; only w(t, s) and (t - s) w(t, s) have state forms here` };
      order = 1;
    } else if (only(row, col) && has(row) && has(col)) {
      const terms = parseDecay(f, later, earlier, batchNames);
      const sign = terms ? undefined : parseSign(f, later, earlier, batchNames);
      if (!terms && !sign) return { ok: false, reason: notFactorising(f, row, col, later, earlier) };
      if (terms) decay.push(...terms);
      if (sign) signs.push(sign);
      decayNodes.push(f);
    } else {
      return { ok: false, reason: `its factor ${nodeToString(f)} couples ${[...s].join(', ')}, which does not factorise over time` };
    }
  }
  // A sign alone ((-1)^(t - s) with no magnitude left) still needs a decay for the state forms.
  if (signs.length && !decay.length) decay.push({ kind: 'fixed', lambda: cnst(0) });
  return {
    ok: true,
    c: { row, col, inner: inner.name, value: valueVar.name, batch, direction, strict: con.op === '<' || con.op === '>', a: product(a), b: product(b), c: product(c), scale: product(scale), decay, signs, decayNodes, order, T: rowVar.extent, K: inner.extent, V: valueVar.extent },
  };
}

/** Why a weight factor between positions row and col does not factorise (names the culprit). */
function notFactorising(f: Node, row: string, col: string, later: string, earlier: string): string {
  const nf = normalForm(f, later, earlier);
  const through = nf && !nf.ok && nf.coupled !== f ? ` through ${nodeToString(nf.coupled)}` : '';
  return `its weight factor ${nodeToString(f)} depends on both ${row} and ${col}${through}, so the weight does not factorise as exp(L(${later}) - L(${earlier})) (a decay such as gamma^(${later} - ${earlier}) or exp(G[${later}] - G[${earlier}]))`;
}

/**
 * A factor of `body` in which row and col meet inside arithmetic (not as separate plain indices
 * of one load). An equality mask where(e(col) == row, x, 0) (autodiff's gather of a shifted or
 * split index) picks one term of the sum and couples nothing by itself: x is looked into.
 */
function couplingOf(body: Node, row: string, col: string): Node | undefined {
  for (const f of factorsOf(body)) {
    const fi = freeIndices(f);
    if (!fi.has(row) || !fi.has(col)) continue;
    if (f.op === 'select' && f.src[0]!.op === 'binary' && f.src[0]!.arg === '==' && isConst(f.src[2]!, 0)) {
      const inner = couplingOf(f.src[1]!, row, col);
      if (inner) return inner;
      continue;
    }
    if (f.op !== 'load') return f;
    const ix = f.src.find((e) => { const ei = freeIndices(e); return ei.has(row) && ei.has(col); });
    if (ix) return f;
  }
  return undefined;
}

/**
 * Two reads that put `row` and `col` at the same place of tensors of the same rank
 * (q[b, h, t, i] and k[b, h, s, i]): the sum over col pairs each position row with every
 * position col of one axis. Projections (x[b, t, c] w[e, c]) never do.
 */
function pairedBySlot(body: Node, row: string, col: string): [Node, Node] | undefined {
  const loads: Node[] = [];
  walk(body, (m) => { if (m.op === 'load') loads.push(m); });
  const at = (l: Node, name: string): number => l.src.findIndex((e) => e.op === 'index' && e.arg === name);
  for (const a of loads) {
    const p = at(a, row);
    if (p < 0) continue;
    const b = loads.find((l) => l.src.length === a.src.length && at(l, col) === p);
    if (b) return [a, b];
  }
  return undefined;
}

/**
 * Why a statement that is not a contraction has no recurrent form, or undefined when it does
 * not sum over two positions. Every sum over a position s that is linked to an output position
 * t (by a range constraint, or by arithmetic on both in its body, over the same range) gets a
 * reason: a window or a two-sided range, a weight that does not factorise (softmax
 * attention; the factor that depends on both is named), a running max, or why the sum is not
 * a contraction. Sums over features (projections, norms) have nothing to explain: they are
 * evaluated elementwise in every schedule.
 */
export function explain(s: IrStmt): string | undefined {
  if (s.derived === 'state') return undefined;
  const outIdx = new Map(s.indices.map((v) => [v.name, v.extent] as const));
  let reason: string | undefined;
  walk(s.value, (n) => {
    if (reason || n.op !== 'reduce') return;
    const r = n.arg as ReduceArg;
    const free = freeIndices(n);
    for (const v of r.vars) for (const [row, rext] of outIdx) {
      if (reason || !free.has(row)) continue;
      const col = v.name;
      const cons = r.cons.map((c, k) => ({ c, rhs: n.src[k + 1]! })).filter(({ c, rhs }) => c.name === col && freeIndices(rhs).has(row));
      const coupled = couplingOf(n.src[0]!, row, col);
      const paired = cons.length === 0 && !coupled ? pairedBySlot(n.src[0]!, row, col) : undefined;
      // Without a range constraint, a sum is over positions only if its extent is a runtime
      // size: a constant extent (a model's head or feature size, fixed by its hypers) is a
      // feature axis even when it happens to equal another one (heads = 4 = value head size).
      if (cons.length === 0 && ((!coupled && !paired) || !deq(v.extent, rext) || isConstDim(v.extent))) continue;
      const where = `in '${s.target}' the sum over ${col}`;
      if (paired) {
        reason = `${where} pairs every ${row} with every ${col} of the same axis (${nodeToString(paired[0])}, ${nodeToString(paired[1])}) with no causal range ${col} <= ${row} (or ${col} >= ${row}): a sum over all positions has no recurrent state form here`;
        return;
      }
      const range = (xs: typeof cons) => xs.map(({ c, rhs }) => `${c.name} ${c.op} ${nodeToString(rhs)}`).join(', ');
      if (cons.length === 0) {
        const nf = normalForm(coupled!, row, col);
        const through = nf && !nf.ok ? nf.coupled : coupled!;
        reason = `${where} couples ${col} with ${row} through ${nodeToString(through)} but has no causal range ${col} <= ${row} (or ${col} >= ${row}): a two-sided sum over positions has no recurrent state form here`;
        return;
      }
      const plain = cons.filter(({ rhs }) => rhs.op === 'index');
      if (cons.length > 1 || plain.length !== 1 || r.cons.filter((c) => c.name === col).length > 1) {
        const all = r.cons.map((c, k) => ({ c, rhs: n.src[k + 1]! })).filter(({ c }) => c.name === col);
        reason = `${where} has the range ${range(all)}, not a single ${col} <= ${row} (or <, >=, >): a window or a shifted range has no recurrent state form here`;
        return;
      }
      const c = plain[0]!.c;
      if (r.op === 'max') { reason = `'${s.target}' takes a running max over ${col} ${c.op} ${row}, which has no recurrent form here`; return; }
      const causal = c.op === '<' || c.op === '<=';
      const [later, earlier] = causal ? [row, col] : [col, row];
      const outer = new Set([...free].filter((x) => x !== row));
      for (const f of factorsOf(n.src[0]!)) {
        const fi = freeIndices(f);
        if (!fi.has(row) || !fi.has(col) || isDecayPiece(f, later, earlier, outer)) continue;
        reason = `${where} ${c.op} ${row}: ${notFactorising(f, row, col, later, earlier)}`;
        return;
      }
      const indices = s.indices.filter((x) => free.has(x.name));
      const rec = recognise(indices, n);
      reason = rec.ok
        ? `${where} ${c.op} ${row} is a contraction inside a larger expression (${nodeToString(s.value)}); give it its own statement`
        : `${where} ${c.op} ${row} is not a contraction: ${rec.reason}`;
    }
  });
  return reason;
}

export interface Analysed {
  fn: IrFn;
  /** Contraction statements by target. */
  contractions: Map<string, Contraction>;
}

/**
 * Separates every contraction term of every statement into its own statement, so that each
 * is scheduled as a whole; other terms stay behind and read the contraction's result.
 */
export function analyse(f: IrFn): Analysed {
  const body: IrStmt[] = [];
  const vars = new Map(f.vars);
  const contractions = new Map<string, Contraction>();
  let n = 0;
  for (const s0 of f.body) {
    const s = hoistNested({ ...s0, value: normaliseWeights(s0.value) }, vars, body, contractions, () => ++n);
    const whole = recognise(s.indices, s.value);
    if (whole.ok) { body.push(s); contractions.set(s.target, whole.c); continue; }
    const terms = additiveTerms(s.value);
    if (terms.length < 2) { body.push(s); continue; }
    const rebuilt: Node[] = [];
    for (const { sign, term } of terms) {
      const r = recognise(s.indices, term);
      if (!r.ok) { rebuilt.push(sign < 0 ? unary('neg', term) : term); continue; }
      const id = `%c${++n}.${vars.get(s.target)?.name ?? s.target}`;
      const tv = vars.get(s.target)!;
      vars.set(id, { id, name: id, dtype: tv.dtype, shape: s.indices.map((v) => v.extent), role: 'local' });
      body.push({ target: id, indices: s.indices, value: term, ...(s.span ? { span: s.span } : {}) });
      contractions.set(id, r.c);
      const l = ld(id, s.indices.map((v) => idx(v.name)));
      rebuilt.push(sign < 0 ? unary('neg', l) : l);
    }
    body.push({ ...s, value: rebuilt.reduce((a, b) => add(a, b)) });
  }
  for (const c of contractions.values()) {
    c.decay = c.decay.map((t) => (t.kind === 'gated' ? { ...t, ...stepOf(t.G, body, contractions) } : t));
  }
  return { fn: { ...f, vars, body }, contractions };
}

/**
 * Gives every causal sum nested inside a larger expression (r / sqrt(sum[s <= t] gamma^s))
 * that is a contraction on its own a statement of its own, read back by a load: then it has
 * the recurrent and chunkwise schedules too. Sums that are whole additive terms are left to
 * analyse; sums over an enclosing reduction's index cannot be hoisted and stay.
 */
function hoistNested(s: IrStmt, vars: Map<string, CVar>, body: IrStmt[], contractions: Map<string, Contraction>, next: () => number): IrStmt {
  const top = new Set(additiveTerms(s.value).map((t) => t.term.id));
  const names = new Set(s.indices.map((v) => v.name));
  const memo = new Map<number, Node>();
  let changed = false;
  const go = (m: Node): Node => {
    const hit = memo.get(m.id);
    if (hit) return hit;
    let out: Node | undefined;
    if (m.op === 'reduce' && !top.has(m.id) && causalPairs(m).length > 0 && [...freeIndices(m)].every((v) => names.has(v))) {
      const free = freeIndices(m);
      const indices = s.indices.filter((v) => free.has(v.name));
      const r = recognise(indices, m);
      if (r.ok) {
        const id = `%n${next()}.${vars.get(s.target)?.name ?? s.target}`;
        vars.set(id, { id, name: id, dtype: 'f32', shape: indices.map((v) => v.extent), role: 'local' });
        body.push({ target: id, indices, value: m, ...(s.span ? { span: s.span } : {}) });
        contractions.set(id, r.c);
        out = ld(id, indices.map((v) => idx(v.name)));
        changed = true;
      }
    }
    out ??= withSrc(m, m.src.map(go));
    memo.set(m.id, out);
    return out;
  };
  const value = go(s.value);
  return changed ? { ...s, value } : s;
}

/** For G = X[.., POS, ..] where X is a plain inclusive cumulative sum, the summand at POS. */
function stepOf(G: Node, body: readonly IrStmt[], contractions: ReadonlyMap<string, Contraction>): { step?: Node } {
  if (G.op !== 'load' || !G.src.every((x) => x.op === 'index')) return {};
  const def = body.find((st) => st.target === G.arg);
  const scan = def && contractions.get(def.target);
  const one = (n: Node) => n.op === 'const' && n.arg === 1;
  if (!def || !scan || scan.decay.length || scan.order || scan.strict || scan.direction !== 'causal' || !one(scan.a) || !one(scan.c) || !one(scan.scale)) return {};
  if (scan.inner !== UNIT_INNER || scan.value !== UNIT_VALUE) return {};
  const map = new Map<string, Node>(def.indices.map((v, k) => [v.name, G.src[k]!] as const));
  if (map.get(scan.row) !== idx(POS)) return {};
  map.delete(scan.row);
  map.set(scan.col, idx(POS));
  return { step: substIndex(scan.b, map) };
}

function additiveTerms(n: Node, sign = 1): { sign: number; term: Node }[] {
  if (n.op === 'binary' && n.arg === '+') return [...additiveTerms(n.src[0]!, sign), ...additiveTerms(n.src[1]!, sign)];
  if (n.op === 'binary' && n.arg === '-') return [...additiveTerms(n.src[0]!, sign), ...additiveTerms(n.src[1]!, -sign)];
  return [{ sign, term: n }];
}

