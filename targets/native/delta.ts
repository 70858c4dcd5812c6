// Delta sums: a kernel-IR rewrite for the native target. Autodiff of head splits and reshapes
// leaves sums whose terms are zero but for one index (weight gradients of the map lowering):
//
//   for (v = s; v < e; v++) acc = acc + select(P + v == R, X, 0.0f)
//
// with P, R, s, e and X free of acc and P, R free of v. At most one term is X (v = R - P, exact
// in wrapping i32 arithmetic); every other adds +0.0f, which changes acc only by turning -0 into
// +0 (and z(z(a)) = z(a) for z(a) = a + 0.0f). So the loop is replaced by the same float32
// additions it performs, minus the repeated zeros:
//
//   dv = R - P; if (s < e) { if (s <= dv && dv < e) { if (s < dv) acc = acc + 0.0f;
//     acc = acc + X[v := dv]; if (dv + 1 < e) acc = acc + 0.0f; } else acc = acc + 0.0f; }
//
// Bit for bit what the loop computes (NaN and infinities included: the zero terms never touch
// them). X is evaluated only where the original evaluates it (select is lazy).
//
// Also: load-free declarations before the sum (inlined), nested selects and && of conditions,
// and the reshape form of autodiff, v % C == u && v / C == w for a loop from a constant >= 0
// (Python's floor // and % folded to C's for v >= 0): the one hit is v = w * C + u, tested to
// divide back (0 <= u < C, (w * C + u) / C == w) so that wrapping cannot make a false hit.
import { anyExpr, mapExpr, NameSupply } from '../../compiler/c-printer.js';
import type { Kernel, KExpr, KStmt } from '../../compiler/kir.js';
import * as K from '../../compiler/kir.js';
import { KIR_SIMPLIFY, type KRule, rewriteKExpr } from '../../compiler/kir-rewrite.js';

const mentions = (e: KExpr, name: string): boolean => anyExpr(e, (x) => x.k === 'var' && x.name === name);

/** P when `e` is P + v, v + P or v (P free of v); undefined otherwise. */
function offsetOf(e: KExpr, v: string): KExpr | undefined | null {
  if (e.k === 'var' && e.name === v) return null; // v alone: offset 0
  if (e.k === 'bin' && e.op === '+' && e.type === 'i32') {
    if (e.b.k === 'var' && e.b.name === v && !mentions(e.a, v)) return e.a;
    if (e.a.k === 'var' && e.a.name === v && !mentions(e.b, v)) return e.b;
  }
  return undefined;
}

const isConst = (e: KExpr, pred: (x: number) => boolean): boolean => e.k === 'const' && pred(e.value);

/**
 * Rules for a loop variable v known to be >= 0 (the loop starts at a constant >= 0): v % C and
 * v / C (C > 0) are >= 0, so the floor-division fix-ups autodiff prints for Python's // and %
 * (`r != 0 && (r < 0) != (C < 0) ? r + C : r`) fold away; boolean constants compare.
 */
const nonNegRules = (v: string): KRule[] => [
  [{ k: 'bin', op: '<', a: { k: 'bin', a: { k: 'var', name: 'v' }, b: { k: 'const', name: 'c', type: 'i32' } }, b: { k: 'const', name: 'z', type: 'i32', value: 0 } },
    (m, e) => {
      const inner = (e as Extract<KExpr, { k: 'bin' }>).a as Extract<KExpr, { k: 'bin' }>;
      return (inner.op === '%' || inner.op === '/') && m['v']!.k === 'var' && (m['v'] as Extract<KExpr, { k: 'var' }>).name === v && isConst(m['c']!, (c) => c > 0) ? K.bool(false) : undefined;
    }],
  [{ k: 'bin', a: { k: 'const', name: 'x', type: 'bool' }, b: { k: 'const', name: 'y', type: 'bool' } },
    (m, e) => {
      const op = (e as Extract<KExpr, { k: 'bin' }>).op, x = (m['x'] as Extract<KExpr, { k: 'const' }>).value, y = (m['y'] as Extract<KExpr, { k: 'const' }>).value;
      return op === '==' ? K.bool(x === y) : op === '!=' ? K.bool(x !== y) : undefined;
    }],
  ...KIR_SIMPLIFY,
];

/** The hit of the conditions `cs` (all must hold) on v: the one v they allow and the test that it is one, or undefined. */
function solve(cs: readonly KExpr[], v: string, nonNeg: boolean): { hit: KExpr; valid?: KExpr } | undefined {
  const eqs: { f: KExpr; r: KExpr }[] = [];
  for (const c of cs) {
    if (c.k !== 'bin' || c.op !== '==' || c.a.type !== 'i32') return undefined;
    if (mentions(c.a, v) && !mentions(c.b, v)) eqs.push({ f: c.a, r: c.b });
    else if (mentions(c.b, v) && !mentions(c.a, v)) eqs.push({ f: c.b, r: c.a });
    else return undefined;
  }
  if (eqs.length === 1) {
    const p = offsetOf(eqs[0]!.f, v);
    if (p === undefined) return undefined;
    return { hit: p ? K.sub(eqs[0]!.r, p) : eqs[0]!.r };
  }
  // v % C == u and v / C == w (v >= 0, C > 0): v = w * C + u, when 0 <= u < C and that v divides back to w.
  if (eqs.length !== 2 || !nonNeg) return undefined;
  const part = (op: '%' | '/') => eqs.find((q) => q.f.k === 'bin' && q.f.op === op && q.f.a.k === 'var' && q.f.a.name === v && isConst(q.f.b, (c) => c > 0));
  const md = part('%'), dv = part('/');
  if (!md || !dv || md === dv) return undefined;
  const C = (md.f as Extract<KExpr, { k: 'bin' }>).b;
  if (!isConst((dv.f as Extract<KExpr, { k: 'bin' }>).b, (c) => c === (C as Extract<KExpr, { k: 'const' }>).value)) return undefined;
  const hit = K.add(K.mul(dv.r, C), md.r);
  return { hit, valid: K.and(K.and(K.bin('<=', K.i32(0), md.r), K.lt(md.r, C)), K.bin('==', K.div(hit, C), dv.r)) };
}

function rewriteLoop(s: Extract<KStmt, { k: 'for' }>, supply: NameSupply): KStmt[] | undefined {
  if (s.step !== 1 || s.body.length < 1) return undefined;
  const a = s.body[s.body.length - 1]!;
  if (a.k !== 'assign' || a.name === s.v) return undefined;
  const acc = a.name;
  // Declarations before the sum: load-free, inlined (evaluating them once more or less changes nothing).
  const defs = new Map<string, KExpr>();
  const inline = (e: KExpr): KExpr => mapExpr(e, (x) => (x.k === 'var' && defs.has(x.name) ? defs.get(x.name)! : x));
  for (const d of s.body.slice(0, -1)) {
    if (d.k !== 'decl' || d.name === acc || anyExpr(d.init, (x) => x.k === 'load')) return undefined;
    defs.set(d.name, inline(d.init));
  }
  const nonNeg = isConst(s.start, (x) => x >= 0);
  let val = inline(a.value);
  if (nonNeg) val = rewriteKExpr(val, nonNegRules(s.v));
  if (val.k !== 'bin' || val.op !== '+' || val.type !== 'f32' || val.a.k !== 'var' || val.a.name !== acc) return undefined;
  // select(c1, select(c2, X, 0), 0) and select(c1 && c2, X, 0): every condition must hold.
  const conds: KExpr[] = [];
  let x = val.b;
  while (x.k === 'select' && x.b.k === 'const' && Object.is(x.b.value, 0)) {
    const split = (c: KExpr): void => { if (c.k === 'bin' && c.op === '&&') { split(c.a); split(c.b); } else conds.push(c); };
    split(x.cond);
    x = x.a;
  }
  if (!conds.length || [...conds, x, s.start, s.end].some((e) => mentions(e, acc)) || mentions(s.start, s.v) || mentions(s.end, s.v)) return undefined;
  if ([...defs.keys()].some((n) => n === s.v)) return undefined;
  const sol = solve(conds, s.v, nonNeg);
  if (!sol) return undefined;
  const dv = supply.fresh(`${s.v}_hit`), lo = supply.fresh(`${s.v}_lo`), hi = supply.fresh(`${s.v}_hi`);
  const D = K.v(dv), S = K.v(lo), E = K.v(hi);
  const zero = K.assign(acc, K.add(K.v(acc, 'f32'), K.f32(0)));
  const term = mapExpr(x, (e) => (e.k === 'var' && e.name === s.v ? D : e));
  const inRange = K.and(K.bin('<=', S, D), K.lt(D, E));
  return [
    K.decl(lo, 'i32', s.start),
    K.decl(hi, 'i32', s.end),
    K.decl(dv, 'i32', sol.hit),
    K.iff(K.lt(S, E), [
      K.iff(sol.valid ? K.and(sol.valid, inRange) : inRange, [
        K.iff(K.lt(S, D), [zero]),
        K.assign(acc, K.add(K.v(acc, 'f32'), term)),
        K.iff(K.lt(K.add(D, K.i32(1)), E), [zero]),
      ], [zero]),
    ]),
  ];
}

/** Rewrites every delta sum of `k` (see the header); the kernel unchanged when there is none. */
export function rewriteDeltaSums(k: Kernel): Kernel {
  const taken = new Set<string>([k.name, ...k.buffers.map((b) => b.name), ...k.scalars.map((s) => s.name), ...k.shared.map((s) => s.name)]);
  const all = (ss: readonly KStmt[]): void => { for (const s of ss) { if (s.k === 'decl' || s.k === 'local' || s.k === 'assign') taken.add(s.name); if (s.k === 'for') { taken.add(s.v); all(s.body); } if (s.k === 'if') { all(s.then); all(s.else); } } };
  all(k.body);
  const supply = new NameSupply(taken);
  let changed = false;
  const block = (ss: readonly KStmt[]): KStmt[] => ss.flatMap((s): KStmt[] => {
    if (s.k === 'for') {
      const r = rewriteLoop(s, supply);
      if (r) { changed = true; return r; }
      return [{ ...s, body: block(s.body) }];
    }
    if (s.k === 'if') return [{ ...s, then: block(s.then), else: block(s.else) }];
    return [s];
  });
  const body = block(k.body);
  return changed ? { ...k, body } : k;
}
