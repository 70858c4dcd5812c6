// Analysis: recognise causal decayed contractions
//   y[.., t, j] = sum_{s <= t (or >=, <, >), i} w(t, s) * a[t, i] * b[s, i] * c[s, j]
// whose weight factorises over time as w(t, s) = exp(L(t) - L(s)), with L a sum of terms
//   fixed:  L(p) = p * lambda          (gamma^(t - s), lambda = log gamma per head)
//   gated:  L(p) = G[.., p]            (G a cumulative sum of per-step log gates)
// (no term at all: w = 1, linear attention). For these the recurrent and chunkwise
// schedules exist. Anything else (softmax attention) gets the parallel schedule only, and
// `explain` says why.
import type { ReduceVar } from '../dsl/checked.js';
import { type Dim, dconst, deq, dimToString } from '../dsl/dims.js';
import { add, binary, cnst, divN, freeIndices, idx, type IrFn, type IrStmt, ld, mulN, type Node, nodeToString, type ReduceArg, substIndex, unary, walk } from './ir.js';

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
const UNIT_INNER = '%i';
const UNIT_VALUE = '%j';

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
  /** The decay factor nodes of the body (exp(...)), for the gradient hook. */
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
      if (!terms) return { ok: false, reason: `its weight ${nodeToString(f)} depends on ${row} and ${col} but is not exp(L(${later}) - L(${earlier})) or gamma^(${later} - ${earlier})` };
      decay.push(...terms);
      decayNodes.push(f);
    } else {
      return { ok: false, reason: `its factor ${nodeToString(f)} couples ${[...s].join(', ')}, which does not factorise over time` };
    }
  }
  return {
    ok: true,
    c: { row, col, inner: inner.name, value: valueVar.name, batch, direction, strict: con.op === '<' || con.op === '>', a: product(a), b: product(b), c: product(c), scale: product(scale), decay, decayNodes, order, T: rowVar.extent, K: inner.extent, V: valueVar.extent },
  };
}

/**
 * Why a statement that is not a contraction has no recurrent form, or undefined when it has
 * nothing to explain. A sum over positions s <= t whose body has a factor depending on both
 * t and s that is not a decay exp(L(t) - L(s)) does not factorise (softmax attention); a
 * running max has no state form here. Sums with no such factor (a cumulative sum) are
 * evaluated elementwise in every schedule.
 */
export function explain(s: IrStmt): string | undefined {
  let reason: string | undefined;
  walk(s.value, (n) => {
    if (reason || n.op !== 'reduce') return;
    const r = n.arg as ReduceArg;
    const bound = new Set(r.vars.map((v) => v.name));
    r.cons.forEach((c, k) => {
      const rhs = n.src[k + 1]!;
      if (reason || rhs.op !== 'index' || bound.has(rhs.arg as string)) return;
      const row = rhs.arg as string;
      const col = c.name;
      if (r.op === 'max') { reason = `'${s.target}' takes a running max over ${col} ${c.op} ${row}, which has no recurrent form here`; return; }
      const outer = new Set([...freeIndices(n)].filter((v) => v !== row));
      for (const f of factorsOf(n.src[0]!)) {
        const fi = freeIndices(f);
        if (!fi.has(row) || !fi.has(col)) continue;
        const causal = c.op === '<' || c.op === '<=';
        if (parseDecay(f, causal ? row : col, causal ? col : row, outer) || isDistance(f, causal ? row : col, causal ? col : row)) continue;
        reason = `in '${s.target}' the weight ${nodeToString(f)} depends on both ${row} and ${col} and does not factorise as exp(L(${row}) - L(${col}))`;
        return;
      }
    });
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
  for (const s of f.body) {
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

