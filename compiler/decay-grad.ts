// The gradient of a contraction's decay, derived from its factorised form instead of
// literally (a T x T sum per decay parameter). With w(t, s) = exp(L(t) - L(s)) and y the
// contraction:
//   fixed  L(p) = p lambda:  dlambda = sum_{t, j} dy[t, j] y1[t, j], where y1 is the same
//          contraction with weight (t - s) w(t, s): an order-1 contraction with its own state
//          form, whose terms never cancel (sum_p p dL(p) would lose float32 accuracy with T);
//   gated  L(p) = G[p]:      dG[p] = dy[p] . y[p] - c[p] . dc[p]   (dc: gradient of the c factor).
// The literal gradient (autodiff of the weight) is what the tests check this against.
import type { ReduceVar } from '../dsl/checked.js';
import { analyse, type Contraction, POS } from './analysis.js';
import type { GradContext, GradHook } from './autodiff.js';
import { cnst, freeIndices, idx, type IrFn, type IrStmt, ld, mulN, type Node, reduce, rebuild, subN, substIndex, unary, withSrc } from './ir.js';

/** Every decay parameter that is not a plain load becomes its own statement first. */
export function hoistDecayParams(f: IrFn): IrFn {
  const { fn, contractions } = analyse(f);
  const body: IrStmt[] = [];
  const vars = new Map(fn.vars);
  let n = 0;
  for (const s of fn.body) {
    const c = contractions.get(s.target);
    if (!c) { body.push(s); continue; }
    const replace = new Map<number, Node>();
    for (const term of c.decay) {
      const node = term.kind === 'fixed' ? term.lambda : term.G;
      if (isPlainLoad(node)) continue;
      const free = [...freeIndices(node)];
      const ext = (v: string): ReduceVar => (v === POS ? { name: POS, extent: c.T } : c.batch.find((b) => b.name === v)!);
      const indices = free.map((v) => ({ name: v === POS ? 'p' : v, extent: ext(v).extent }));
      const id = `%decay${++n}.${s.target}`;
      vars.set(id, { id, name: id, dtype: 'f32', shape: indices.map((i) => i.extent), role: 'local' });
      const rename = new Map(free.map((v, k) => [v, idx(indices[k]!.name)] as const));
      body.push({ target: id, indices, value: substIndex(node, rename) });
      if (term.kind === 'fixed') replace.set(node.id, ld(id, free.map((v) => idx(v))));
      else {
        // G stands for L(POS); inside the weight it appears at the row and the column.
        for (const at of [c.row, c.col]) replace.set(substIndex(node, new Map([[POS, idx(at)]])).id, ld(id, free.map((v) => idx(v === POS ? at : v))));
      }
    }
    if (replace.size === 0) { body.push(s); continue; }
    body.push({ ...s, value: rebuild(s.value, (m, src) => replace.get(m.id) ?? withSrc(m, src)) });
  }
  return { ...fn, vars, body };
}

const isPlainLoad = (n: Node): boolean => n.op === 'load' && n.src.every((s) => s.op === 'index') && new Set(n.src.map((s) => s.arg)).size === n.src.length;

export function decayGradHook(contractions: ReadonlyMap<string, Contraction>): GradHook {
  return {
    claims(stmt) {
      const c = contractions.get(stmt.target);
      return c && c.decay.length ? c.decayNodes : [];
    },
    emit(stmt, dy, ctx) {
      const c = contractions.get(stmt.target)!;
      emitDecayGrad(stmt, c, dy, ctx);
    },
  };
}

function emitDecayGrad(s: IrStmt, c: Contraction, dy: string, ctx: GradContext): void {
  const rowN = ctx.fresh('r');
  const colN = ctx.fresh('c');
  const innerN = ctx.fresh('i');
  const valN = ctx.fresh('j');
  const sub = (n: Node, m: [string, string][]) => substIndex(n, new Map(m.map(([a, b]) => [a, idx(b)] as const)));
  const causal = c.direction === 'causal';
  const weightRC = c.decayNodes.map((d) => sub(d, [[c.row, rowN], [c.col, colN]])).reduce((a, b) => mulN(a, b));
  const dyAt = (row: string, val: string) => ld(dy, s.indices.map((v) => idx(v.name === c.row ? row : v.name === c.value ? val : v.name)));
  const batchIdx = c.batch.map((b) => idx(b.name));
  const gated = c.decay.filter((d) => d.kind === 'gated');
  const fixed = c.decay.filter((d) => d.kind === 'fixed');
  let dLAt: ((pos: Node) => Node) | undefined;
  const p = ctx.fresh('p');
  if (gated.length) {
    // dc[batch, col, j] = sum over rows after col (in the contraction's order) of w a.b dy.
    const dcIndices: ReduceVar[] = [...c.batch, { name: colN, extent: c.T }, { name: valN, extent: c.V }];
    const dc = ctx.newVar('dc.', { dtype: 'f32', shape: dcIndices.map((v) => v.extent) });
    const op = causal ? (c.strict ? '>' : '>=') : (c.strict ? '<' : '<=');
    const body = [weightRC, sub(c.a, [[c.row, rowN], [c.inner, innerN]]), sub(c.b, [[c.col, colN], [c.inner, innerN]]), dyAt(rowN, valN), c.scale].reduce((a, b) => mulN(a, b));
    ctx.push({ target: dc, indices: dcIndices, value: reduce({ op: 'sum', vars: [{ name: rowN, extent: c.T }, { name: innerN, extent: c.K }], cons: [{ name: rowN, op }] }, body, [idx(colN)]) });
    // dL[batch, p] = sign * (sum_j dy[p, j] y[p, j] - sum_j c[p, j] dc[p, j]).
    const yAt = ld(s.target, s.indices.map((v) => idx(v.name === c.row ? p : v.name === c.value ? valN : v.name)));
    const cAt = sub(c.c, [[c.col, p], [c.value, valN]]);
    const dcAt = ld(dc, [...batchIdx, idx(p), idx(valN)]);
    const inner = subN(mulN(dyAt(p, valN), yAt), mulN(cAt, dcAt));
    const dLIndices: ReduceVar[] = [...c.batch, { name: p, extent: c.T }];
    const dL = ctx.newVar('dL.', { dtype: 'f32', shape: dLIndices.map((v) => v.extent) });
    const summed = reduce({ op: 'sum', vars: [{ name: valN, extent: c.V }], cons: [] }, inner, []);
    ctx.push({ target: dL, indices: dLIndices, value: causal ? summed : unary('neg', summed) });
    dLAt = (pos: Node) => ld(dL, [...batchIdx, pos]);
  }
  let y1: string | undefined;
  if (fixed.length) {
    // y1 = the same contraction with weight (t - s) w(t, s): an order-1 contraction with a
    // state form, every term non-negative in the weight, so no cancellation over long T.
    const dist = unary('float', causal ? subN(idx(c.row), idx(colN)) : subN(idx(colN), idx(c.row)));
    const weight = c.decayNodes.map((d) => sub(d, [[c.col, colN]])).reduce((a, b) => mulN(a, b));
    const body = [dist, weight, sub(c.a, [[c.inner, innerN]]), sub(c.b, [[c.col, colN], [c.inner, innerN]]), sub(c.c, [[c.col, colN]]), c.scale].reduce((a, b) => mulN(a, b));
    const op = causal ? (c.strict ? '<' : '<=') : (c.strict ? '>' : '>=');
    y1 = ctx.newVar('y1.', { dtype: 'f32', shape: s.indices.map((v) => v.extent) });
    ctx.push({ target: y1, indices: s.indices, value: reduce({ op: 'sum', vars: [{ name: colN, extent: c.T }, { name: innerN, extent: c.K }], cons: [{ name: colN, op }] }, body, [idx(c.row)]) });
  }
  for (const term of c.decay) {
    const leaf = term.kind === 'fixed' ? term.lambda : term.G;
    if (leaf.op !== 'load' || !ctx.vars.has(leaf.arg as string)) continue;
    const x = leaf.arg as string;
    const cv = ctx.vars.get(x)!;
    if (cv.dtype === 'i32' || cv.dtype === 'i64') continue;
    const names = leaf.src.map((i) => i.arg as string);
    const outIdx = names.map((nm, k) => ({ name: nm === POS ? p : nm, extent: cv.shape[k]! }));
    const outNames = new Set(outIdx.map((v) => v.name));
    if (term.kind === 'fixed') {
      // dlambda = sum over rows, values (and batch indices lambda does not vary with) of dy y1.
      const sumVars = s.indices.filter((v) => !outNames.has(v.name));
      const term1 = mulN(ld(dy, s.indices.map((v) => idx(v.name))), ld(y1!, s.indices.map((v) => idx(v.name))));
      ctx.contribute(x, { target: '', indices: outIdx, value: reduce({ op: 'sum', vars: sumVars, cons: [] }, term1, []) });
    } else {
      const sumVars = c.batch.filter((b) => !outNames.has(b.name));
      const v = dLAt!(idx(p));
      ctx.contribute(x, { target: '', indices: outIdx, value: sumVars.length ? reduce({ op: 'sum', vars: sumVars, cons: [] }, v, []) : v });
    }
  }
}

