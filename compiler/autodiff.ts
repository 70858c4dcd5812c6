// Reverse-mode automatic differentiation of tensor IR, statement by statement.
//
// For y[I] = f(...), every occurrence of a load x[e] in f contributes
//   dx[e] += sum over the other indices of dy[I] * (product of local partials on the path),
// where the reductions on the path add their (freshly renamed) indices and constraints to
// the sum. With plain indices (e a list of distinct index variables) this is again an index
// statement, so gradients of contractions are contractions: dq is causal, dk and dv are
// anti-causal. Local partials are a rule table (PARTIALS), one entry per operation.
import type { CParam, CVar, ReduceVar, UnaryFn } from '../dsl/checked.js';
import type { Dim } from '../dsl/dims.js';
import type { Span } from '../dsl/source.js';
import {
  add, binary, cnst, divN, freeIndices, idx, type IrFn, type IrStmt, ld, mulN, neg, type Node, type ReduceArg, reduce, select, subN, substIndex, unary,
} from './ir.js';
import { simplify } from './rewrite.js';

/** A gradient that cannot be derived; `span` is the statement that causes it, when one does. */
export class GradError extends Error {
  constructor(message: string, readonly span?: Span) { super(message); }
}

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);
const two = cnst(2);
const one = cnst(1);
const half = cnst(0.5);

/** d(op a)/da, given the node n = op(a). */
const UNARY_PARTIALS: Record<UnaryFn, ((a: Node, n: Node) => Node) | null> = {
  neg: () => cnst(-1),
  exp: (_a, n) => n,
  exp2: (_a, n) => mulN(n, cnst(Math.LN2)),
  log: (a) => divN(one, a),
  log2: (a) => divN(one, mulN(a, cnst(Math.LN2))),
  log1p: (a) => divN(one, add(one, a)),
  sqrt: (_a, n) => divN(half, n),
  rsqrt: (a, n) => mulN(cnst(-0.5), divN(n, a)),
  sin: (a) => unary('cos', a),
  cos: (a) => neg(unary('sin', a)),
  tanh: (_a, n) => subN(one, mulN(n, n)),
  sigmoid: (_a, n) => mulN(n, subN(one, n)),
  swish: (a) => { const s = unary('sigmoid', a); return add(s, mulN(mulN(a, s), subN(one, s))); },
  // gelu(a) = a Phi(a): Phi(a) + a phi(a), phi(a) = exp(-a^2/2) / sqrt(2 pi)
  gelu: (a) => add(mulN(half, add(one, unary('erf', divN(a, cnst(Math.SQRT2))))), mulN(a, mulN(cnst(SQRT_2_OVER_PI / 2), unary('exp', mulN(cnst(-0.5), mulN(a, a)))))),
  erf: (a) => mulN(cnst(2 / Math.sqrt(Math.PI)), unary('exp', neg(mulN(a, a)))),
  abs: (a) => select(binary('>=', a, cnst(0)), one, cnst(-1)),
  float: () => one,
  floor: null,
  ceil: null,
};

/** [d n/d a, d n/d b] for n = a op b; null where no gradient flows. */
function binaryPartials(op: string, a: Node, b: Node, n: Node): [Node | null, Node | null] {
  switch (op) {
    case '+': return [one, one];
    case '-': return [one, cnst(-1)];
    case '*': return [b, a];
    case '/': return [divN(one, b), neg(divN(n, b))];
    // d a^b / da = b a^(b-1), which is 0 at b = 0 for every a (not 0 * 0^-1 = NaN at a = 0).
    case '^': return [b.dtype === 'int' ? select(binary('==', b, cnst(0, 'int')), cnst(0), mulN(unary('float', b), binary('^', a, subN(b, cnst(1, 'int'))))) : mulN(b, binary('^', a, subN(b, cnst(1, b.dtype)))), b.dtype === 'int' ? null : mulN(n, unary('log', a))];
    case 'min': return [select(binary('<=', a, b), one, cnst(0)), select(binary('<=', a, b), cnst(0), one)];
    case 'max': return [select(binary('>=', a, b), one, cnst(0)), select(binary('>=', a, b), cnst(0), one)];
    default: return [null, null];
  }
}

interface PathState {
  factors: Node[];
  /**
   * Branch conditions of the where()s on the path: the contribution is where(c, ., 0) rather
   * than a product with a 0/1 mask, so an infinite partial of the branch not taken (log1p at
   * -1, 1/x at 0) gives 0 and not 0 * inf = NaN.
   */
  branches?: { cond: Node; taken: boolean }[];
  vars: ReduceVar[];
  cons: { name: string; op: ReduceArg['cons'][number]['op']; rhs: Node }[];
}

export interface Contribution { target: string; stmt: IrStmt }

/**
 * Hook for statements whose gradient has a better form than the literal one (a decay
 * factor of a recognised contraction). It may claim load occurrences by returning the
 * contributions it emits for them; claimed nodes are not differentiated generically.
 */
export interface GradHook {
  claims(stmt: IrStmt): Node[];
  emit(stmt: IrStmt, dy: string, ctx: GradContext): void;
}

export interface GradContext {
  fresh(prefix: string): string;
  newVar(prefix: string, like: CVar | { dtype: CVar['dtype']; shape: Dim[] }): string;
  contribute(x: string, stmt: IrStmt): void;
  vars: Map<string, CVar>;
  push(stmt: IrStmt): void;
}

export const gradName = (param: string): string => `grad.${param}`;
export const upstreamName = (output: string): string => `grad.${output}`;

/**
 * The gradient function of f: parameters are f's parameters plus `grad.OUT` (the upstream
 * gradient of each output), outputs are `grad.P` for every float parameter P.
 */
export function gradient(f: IrFn, hook?: GradHook): IrFn {
  const vars = new Map(f.vars);
  const body: IrStmt[] = [...f.body];
  let counter = 0;
  const fresh = (p: string) => `${p}'${++counter}`;
  const contribs = new Map<string, string[]>();
  const newVar = (prefix: string, like: { dtype: CVar['dtype']; shape: Dim[] }): string => {
    const id = `%${prefix}${++counter}`;
    vars.set(id, { id, name: id, dtype: like.dtype, shape: like.shape, role: 'local' });
    return id;
  };
  // Gradient statements carry the span of the forward statement they come from, so that an
  // error about one (a schedule it cannot have) points at the user's statement.
  let from: IrStmt | undefined;
  const spanned = (s: IrStmt): IrStmt => (s.span || !from?.span ? s : { ...s, span: from.span });
  const ctx: GradContext = {
    fresh, newVar, vars,
    push: (s) => body.push(spanned({ ...s, value: simplify(s.value) })),
    contribute: (x, s) => {
      const id = newVar(`d.${x}.`, vars.get(x)!);
      body.push(spanned({ ...s, target: id, value: simplify(s.value) }));
      contribs.set(x, [...(contribs.get(x) ?? []), id]);
    },
  };
  const params: CParam[] = [...f.params];
  for (const o of f.outputs) {
    const up = upstreamName(o.name);
    vars.set(up, { id: up, name: up, dtype: o.dtype, shape: o.shape, role: 'input' });
    params.push({ name: up, dtype: o.dtype, shape: o.shape, v: up });
    contribs.set(o.v, [up]);
  }
  const total = (x: string): string | undefined => {
    const list = contribs.get(x);
    if (!list || list.length === 0) return undefined;
    if (list.length === 1) return list[0];
    const cv = vars.get(x)!;
    const indices = cv.shape.map((d, i) => ({ name: `i${i}`, extent: d }));
    const loads = list.map((c) => ld(c, indices.map((v) => idx(v.name))));
    const id = newVar(`d.${x}.total`, cv);
    body.push({ target: id, indices, value: loads.reduce((a, b) => add(a, b)) });
    return id;
  };

  for (let si = f.body.length - 1; si >= 0; si--) {
    const stmt = f.body[si]!;
    from = undefined;
    const dy = total(stmt.target);
    from = stmt;
    if (!dy) continue;
    const claimedNodes = new Map<number, Node>();
    const claimed = new Set<number>();
    for (const c of hook?.claims(stmt) ?? []) { claimed.add(c.id); claimedNodes.set(c.id, c); }
    if (hook && claimed.size) hook.emit(stmt, dy, ctx);
    const dyLoad = ld(dy, stmt.indices.map((v) => idx(v.name)));
    const visit = (n: Node, st: PathState): void => {
      if (n.dtype !== 'float' || claimed.has(n.id)) return;
      switch (n.op) {
        case 'load': {
          const cv = vars.get(n.arg as string);
          if (!cv || cv.dtype === 'i32' || cv.dtype === 'i64') return;
          emitLoadGrad(n, st);
          return;
        }
        case 'unary': {
          const p = UNARY_PARTIALS[n.arg as UnaryFn];
          if (p) visit(n.src[0]!, { ...st, factors: [...st.factors, p(n.src[0]!, n)] });
          return;
        }
        case 'binary': {
          const [pa, pb] = binaryPartials(n.arg as string, n.src[0]!, n.src[1]!, n);
          if (pa) visit(n.src[0]!, { ...st, factors: [...st.factors, pa] });
          if (pb) visit(n.src[1]!, { ...st, factors: [...st.factors, pb] });
          return;
        }
        case 'select':
          visit(n.src[1]!, { ...st, branches: [...(st.branches ?? []), { cond: n.src[0]!, taken: true }] });
          visit(n.src[2]!, { ...st, branches: [...(st.branches ?? []), { cond: n.src[0]!, taken: false }] });
          return;
        case 'reduce': {
          const r = n.arg as ReduceArg;
          const map = new Map<string, Node>();
          const vs = r.vars.map((v) => { const nn = fresh(v.name); map.set(v.name, idx(nn)); return { name: nn, extent: v.extent }; });
          const body = substIndex(n.src[0]!, map);
          // Claimed nodes inside the body are renamed with it.
          for (const id of [...claimed]) { const c = claimedNodes.get(id); if (c) { const r2 = substIndex(c, map); claimed.add(r2.id); claimedNodes.set(r2.id, r2); } }
          const cons = r.cons.map((c, i) => ({ name: (map.get(c.name)!.arg as string), op: c.op, rhs: substIndex(n.src[i + 1]!, map) }));
          const factors = r.op === 'max' ? [...st.factors, select(binary('==', body, n), one, cnst(0))] : st.factors;
          visit(body, { ...st, factors, vars: [...st.vars, ...vs], cons: [...st.cons, ...cons] });
          return;
        }
        default:
          return;
      }
    };
    const emitLoadGrad = (n: Node, st: PathState): void => {
      const x = n.arg as string;
      const cv = vars.get(x)!;
      const all = new Map<string, Dim>([...stmt.indices.map((v) => [v.name, v.extent] as const), ...st.vars.map((v) => [v.name, v.extent] as const)]);
      // Plain indices name the gradient's own indices; any other index (t - 1, h*K + i, a
      // gather tokens[b, t]) gets a fresh output index u and the mask e == u under the sum.
      const seen = new Set<string>();
      const eqMasks: Node[] = [];
      const outIdx = n.src.map((s) => {
        const nm = s.op === 'index' ? (s.arg as string) : undefined;
        if (nm && all.has(nm) && !seen.has(nm)) { seen.add(nm); return nm; }
        const u = fresh('u');
        eqMasks.push(binary('==', s, idx(u)));
        return u;
      });
      const sumVars: ReduceVar[] = [...all].filter(([nm]) => !outIdx.includes(nm)).map(([name, extent]) => ({ name, extent }));
      const sumNames = new Set(sumVars.map((v) => v.name));
      // Constraints on variables that are now output indices are flipped onto a summed one
      // when they read `out op r + c`; otherwise they become a mask in the body.
      const cons: PathState['cons'] = [];
      const masks: Node[] = [];
      for (const c of st.cons) {
        if (sumNames.has(c.name)) { cons.push(c); continue; }
        const flipped = flipConstraint(c, sumNames);
        if (flipped) cons.push(flipped);
        else masks.push(binary(c.op, idx(c.name), c.rhs));
      }
      let value = st.factors.reduce((a, b) => mulN(a, b), dyLoad);
      for (const b of st.branches ?? []) value = b.taken ? select(b.cond, value, cnst(0)) : select(b.cond, cnst(0), value);
      for (const m of [...masks, ...eqMasks]) value = select(m, value, cnst(0));
      if (sumVars.length) value = reduce({ op: 'sum', vars: sumVars, cons: cons.map((c) => ({ name: c.name, op: c.op })) }, value, cons.map((c) => c.rhs));
      const indices = outIdx.map((nm, i) => ({ name: nm, extent: cv.shape[i]! }));
      ctx.contribute(x, { target: '', indices, value });
    };
    visit(stmt.value, { factors: [], vars: [], cons: [] });
  }

  const outputs: CParam[] = [];
  for (const p of f.params) {
    if (p.dtype === 'i32' || p.dtype === 'i64') continue;
    let id = total(p.v);
    if (!id) {
      // No path from this input to any output: its gradient is zero.
      id = newVar(`d.${p.v}.zero`, vars.get(p.v)!);
      body.push({ target: id, indices: p.shape.map((d, i) => ({ name: `i${i}`, extent: d })), value: cnst(0) });
    }
    const name = gradName(p.name);
    outputs.push({ name, dtype: p.dtype, shape: p.shape, v: id });
  }
  return { name: `${f.name}.grad`, sizes: f.sizes, params, outputs, vars, body };
}

/** `x op rhs` with rhs = r + c (r summed) becomes `r op' x - c`. */
function flipConstraint(c: PathState['cons'][number], sumNames: Set<string>): PathState['cons'][number] | undefined {
  const FLIP = { '<': '>', '<=': '>=', '>': '<', '>=': '<=' } as const;
  let r: string | undefined;
  let off: Node = cnst(0, 'int');
  const rhs = c.rhs;
  if (rhs.op === 'index') r = rhs.arg as string;
  else if (rhs.op === 'binary' && (rhs.arg === '+' || rhs.arg === '-') && rhs.src[0]!.op === 'index' && freeIndices(rhs.src[1]!).size === 0) {
    r = rhs.src[0]!.arg as string;
    off = rhs.arg === '+' ? rhs.src[1]! : neg(rhs.src[1]!);
  }
  if (!r || !sumNames.has(r)) return undefined;
  return { name: r, op: FLIP[c.op], rhs: simplify(subN(idx(c.name), off)) };
}
