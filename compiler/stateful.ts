// The stateful form of a function, derived from its forward alone: the same function over a
// block of positions t0 .. t0 + T - 1 that takes what came before as state and returns the
// state after the block. Every causal contraction (and scan) y[t] = sum_{s <= t} w(t, s) a[t] b[s] c[s]
// with a factorising weight w(t, s) = exp(L(t) - L(s)) contributes one state
//   S[i, j] = sum_{s < t0} w(t0 - 1, s) b[s, i] c[s, j]                      (f32, [batch.., K, V])
// entering as   y[t] += scale * w(t, -1) sum_i a[t, i] S0[i, j]               (the positions before)
// and leaving as  ST = w(T - 1, -1) S0 + sum_s w(T - 1, s) b[s, i] c[s, j]    (all relative to t0,
// so only distances, never absolute positions, are exponentiated). Every other use of a position
// as a number (rotation angles, a scan's gamma^s) sees t0 + t. The result is ordinary tensor IR:
// the same analysis and schedules compile it, chunkwise or parallel for prefill, recurrent at
// T = 1 for decoding.
import type { CParam, CVar, ReduceVar } from '../dsl/checked.js';
import { deq, type Dim, dimToString } from '../dsl/dims.js';
import { analyse, type Contraction, POS, UNIT_INNER, UNIT_VALUE } from './analysis.js';
import { add, binary, cnst, idx, type IrFn, type IrStmt, ld, mulN, type Node, type ReduceArg, rebuild, reduce, select, size, subN, substIndex, unary, usedVars, withSrc } from './ir.js';

/** The block's first position: an i32 scalar input of every stateful function. */
export const T0 = 't0';

export interface StateSpec {
  /** The statement the state belongs to, in the user's names ('msr.r'). */
  name: string;
  /** Parameter (initial state) and output (final state) names. */
  input: string;
  output: string;
  shape: Dim[];
  /** Index names of the shape, for printing ([b, h, i, j]). */
  axes: string[];
}

export interface Stateful { ir: IrFn; states: StateSpec[] }

export class StatefulError extends Error {}

export const stateInput = (name: string): string => `state.${name}`;
export const stateOutput = (name: string): string => `state.${name}.next`;

/**
 * A readable state name for a statement target, in the user's names: 'msr#1.r' -> 'msr.r'; a sum
 * the analysis gave its own statement is named after the statement that reads it: a nested scan
 * '%n1.o' read by 'msr#1.o' -> 'msr.o.scan', a contraction term '%c1.o' of 'o' -> 'o'.
 */
function prettyName(target: string, body: readonly IrStmt[], taken: Set<string>): string {
  let base = target;
  let suffix = '';
  const m = /^%([nc])\d+\./.exec(target);
  if (m) {
    const reader = body.find((st) => st.target !== target && usedVars([st]).has(target));
    if (reader) { base = reader.target; suffix = m[1] === 'n' ? '.scan' : ''; }
  }
  let n = base.replace(/#\d+/g, '').replace(/%[nc]\d+\./g, '').replace(/@\d+/g, '') + suffix;
  if (taken.has(n)) { let k = 2; while (taken.has(`${n}.${k}`)) k++; n = `${n}.${k}`; }
  taken.add(n);
  return n;
}

const isUnit = (name: string): boolean => name === UNIT_INNER || name === UNIT_VALUE;

/**
 * Rebuilds `n` with every position index used as a number shifted by t0. Reads keep their
 * block-local indices (the block's tensors start at t0), range constraints stay local, and
 * `keep` (a contraction's decay factors, which only see distances) is left alone.
 */
function shiftPositions(n: Node, pos: ReadonlySet<string>, isPos: (d: Dim) => boolean, t0: Node, keep: ReadonlyMap<number, Node>, memo = new Map<string, Node>()): Node {
  const key = `${n.id}|${[...pos].sort().join(',')}`;
  const hit = memo.get(key);
  if (hit) return hit;
  let out: Node;
  if (keep.has(n.id)) out = keep.get(n.id)!;
  else if (n.op === 'load' || n.op === 'const' || n.op === 'size') out = n;
  else if (n.op === 'index') out = pos.has(n.arg as string) ? add(n, t0) : n;
  else if (n.op === 'reduce') {
    const inner = new Set(pos);
    for (const v of (n.arg as ReduceArg).vars) { if (isPos(v.extent)) inner.add(v.name); else inner.delete(v.name); }
    out = withSrc(n, [shiftPositions(n.src[0]!, inner, isPos, t0, keep, memo), ...n.src.slice(1)]);
  } else out = withSrc(n, n.src.map((s) => shiftPositions(s, pos, isPos, t0, keep, memo)));
  memo.set(key, out);
  return out;
}

/** Loads of tensor `from` replaced by loads of `to` (same indices). */
const retarget = (n: Node, swap: ReadonlyMap<string, string>): Node =>
  rebuild(n, (m, src) => (m.op === 'load' && swap.has(m.arg as string) ? ld(swap.get(m.arg as string)!, src, m.dtype) : withSrc(m, src)));

/**
 * The weight w(p, q) of a contraction between positions p (later) and q (earlier); q undefined:
 * the position before the block. A gated decay exp(G[p] - G[q]) whose G is a running sum computed
 * here reads G's block-local part (`local`: G -> G%block), so only sums over the block are ever
 * subtracted, however long the context before it (G before the block counts as 0).
 */
function weightBetween(c: Contraction, p: Node, q: Node | undefined, where: string, local: ReadonlyMap<string, string>): Node {
  let w: Node = cnst(1);
  for (const term of c.decay) {
    if (term.kind === 'fixed') {
      const dist = q ? subN(p, q) : add(p, cnst(1, 'int'));
      w = mulN(w, unary('exp', mulN(unary('float', dist), term.lambda)));
      continue;
    }
    if (!term.step || term.G.op !== 'load' || !local.has(term.G.arg as string)) {
      throw new StatefulError(`${where}: its gated decay exp(G[t] - G[s]) has no stateful form unless G is a running sum (G[t] = sum[u <= t] g[u]) computed in the same function`);
    }
    const G = retarget(term.G, local);
    const at = (x: Node) => substIndex(G, new Map([[POS, x]]));
    w = mulN(w, unary('exp', q ? subN(at(p), at(q)) : at(p)));
  }
  for (const cond of c.signs) {
    const dist = q ? subN(p, q) : add(p, cnst(1, 'int'));
    const odd = binary('!=', binary('%', dist, cnst(2, 'int')), cnst(0, 'int'));
    w = mulN(w, select(cond, select(odd, cnst(-1), cnst(1)), cnst(1)));
  }
  return w;
}

/** Derives the stateful form of `base` (tensor IR before analysis). */
export function statefulIr(base: IrFn): Stateful {
  const { fn, contractions } = analyse(base);
  const Ts: Dim[] = [];
  for (const c of contractions.values()) if (!Ts.some((d) => deq(d, c.T))) Ts.push(c.T);
  if (Ts.length > 1) throw new StatefulError(`'${base.name}' sums over positions of ${Ts.map(dimToString).join(' and ')}; a stateful form needs one time axis`);
  if (base.sizes.includes(T0) || base.params.some((p) => p.name === T0)) throw new StatefulError(`'${base.name}' already has a '${T0}'; the stateful form's block offset needs that name`);
  if (!Ts.length) return { ir: fn, states: [] };
  const T = Ts[0]!;
  const isPos = (d: Dim): boolean => deq(d, T);
  const t0 = ld(T0, [], 'int');
  const vars = new Map(fn.vars);
  const params: CParam[] = [...fn.params, { name: T0, dtype: 'i32', shape: [], v: T0 }];
  vars.set(T0, { id: T0, name: T0, dtype: 'i32', shape: [], role: 'input' });
  const outputs: CParam[] = [...fn.outputs];
  const states: StateSpec[] = [];
  const taken = new Set<string>();
  const body: IrStmt[] = [];
  /** Running sums (scans) of this function -> their block-local parts. */
  const local = new Map<string, string>();
  for (const s of fn.body) {
    const pos = new Set(s.indices.filter((v) => isPos(v.extent)).map((v) => v.name));
    const c = contractions.get(s.target);
    if (!c) { body.push({ ...s, value: shiftPositions(s.value, pos, isPos, t0, new Map()) }); continue; }
    const where = `'${vars.get(s.target)?.name ?? s.target}' in '${base.name}'`;
    if (c.direction !== 'causal') throw new StatefulError(`${where} sums over later positions; only causal sums have a stateful form`);
    if (c.order !== 0) throw new StatefulError(`${where} weighs by the distance; it has no stateful form`);
    // Decay factors see only distances: left unshifted, gated ones reading G's block-local part.
    const keep = new Map(c.decayNodes.map((d) => [d.id, retarget(d, local)] as const));
    const shifted = (n: Node, extra: string[] = []) => shiftPositions(n, new Set([...pos, ...extra]), isPos, t0, keep);
    const name = prettyName(s.target, fn.body, taken);
    const tv = vars.get(s.target)!;
    // The state's axes: batch, then contracted (K) and value (V) unless they are absent.
    const axes: ReduceVar[] = [...c.batch, ...(isUnit(c.inner) ? [] : [{ name: c.inner, extent: c.K }]), ...(isUnit(c.value) ? [] : [{ name: c.value, extent: c.V }])];
    const shape = axes.map((a) => a.extent);
    const input = stateInput(name), output = stateOutput(name);
    const s0: CVar = { id: input, name: input, dtype: 'f32', shape, role: 'input' };
    const sT: CVar = { id: output, name: output, dtype: 'f32', shape, role: 'output' };
    vars.set(input, s0);
    vars.set(output, sT);
    params.push({ name: input, dtype: 'f32', shape, v: input });
    outputs.push({ name: output, dtype: 'f32', shape, v: output });
    states.push({ name, input, output, shape, axes: axes.map((a) => a.name) });
    // The block's own sum, under a new name, then the carry from the state.
    const blk = `${s.target}%block`;
    vars.set(blk, { ...tv, id: blk, name: blk, role: 'local' });
    body.push({ ...s, target: blk, value: shifted(s.value, [c.col]) });
    local.set(s.target, blk);
    const stateAt = (): Node => ld(input, axes.map((a) => idx(a.name)));
    const a = shifted(c.a);
    const carryTerm = mulN(mulN(mulN(c.scale, weightBetween(c, idx(c.row), undefined, where, local)), a), stateAt());
    const carry = isUnit(c.inner) ? carryTerm : reduce({ op: 'sum', vars: [{ name: c.inner, extent: c.K }], cons: [] }, carryTerm, []);
    body.push({ ...s, value: add(ld(blk, s.indices.map((v) => idx(v.name))), carry), derived: 'state' });
    // The final state: the old one carried over the block, plus the block's contributions.
    const last = subN(size(T), cnst(1, 'int'));
    const bc = mulN(mulN(weightBetween(c, last, idx(c.col), where, local), shifted(c.b, [c.col])), shifted(c.c, [c.col]));
    const summed = reduce({ op: 'sum', vars: [{ name: c.col, extent: T }], cons: [] }, bc, []);
    body.push({ target: output, indices: axes, value: add(mulN(weightBetween(c, last, undefined, where, local), stateAt()), summed), ...(s.span ? { span: s.span } : {}), derived: 'state' });
  }
  return { ir: { ...fn, params, outputs, vars, body }, states };
}

/** Bytes of one sequence's state (states without a batch axis are shared by the batch). */
export function stateBytes(states: readonly StateSpec[], sizes: ReadonlyMap<string, number>, batchAxis = 'B'): { perSequence: number; shared: number } {
  let perSequence = 0, shared = 0;
  for (const st of states) {
    let n = 4;
    let batched = false;
    for (const d of st.shape) {
      if (d.size === 1 && d.has(batchAxis) && d.get(batchAxis) === 1) { batched = true; continue; }
      let v = 0;
      for (const [mono, coef] of d) v += coef * (mono ? mono.split('*').reduce((p, a) => p * (sizes.get(a) ?? NaN), 1) : 1);
      n *= v;
    }
    if (batched) perSequence += n; else shared += n;
  }
  return { perSequence, shared };
}
