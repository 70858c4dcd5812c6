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
import { anyExpr, mapExpr, NameSupply } from '../../compiler/c-printer.js';
import type { Kernel, KExpr, KStmt } from '../../compiler/kir.js';
import * as K from '../../compiler/kir.js';

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

function rewriteLoop(s: Extract<KStmt, { k: 'for' }>, supply: NameSupply): KStmt[] | undefined {
  if (s.step !== 1 || s.body.length !== 1) return undefined;
  const a = s.body[0]!;
  if (a.k !== 'assign' || a.name === s.v) return undefined;
  const acc = a.name;
  const val = a.value;
  if (val.k !== 'bin' || val.op !== '+' || val.type !== 'f32' || val.a.k !== 'var' || val.a.name !== acc) return undefined;
  const sel = val.b;
  if (sel.k !== 'select' || sel.b.k !== 'const' || !Object.is(sel.b.value, 0)) return undefined;
  const c = sel.cond;
  if (c.k !== 'bin' || c.op !== '==' || c.a.type !== 'i32') return undefined;
  if ([sel.cond, sel.a, s.start, s.end].some((e) => mentions(e, acc)) || mentions(s.start, s.v) || mentions(s.end, s.v)) return undefined;
  let p: KExpr | null | undefined, r: KExpr;
  if ((p = offsetOf(c.a, s.v)) !== undefined && !mentions(c.b, s.v)) r = c.b;
  else if ((p = offsetOf(c.b, s.v)) !== undefined && !mentions(c.a, s.v)) r = c.a;
  else return undefined;
  const dv = supply.fresh(`${s.v}_hit`), lo = supply.fresh(`${s.v}_lo`), hi = supply.fresh(`${s.v}_hi`);
  const D = K.v(dv), S = K.v(lo), E = K.v(hi);
  const zero = K.assign(acc, K.add(K.v(acc, 'f32'), K.f32(0)));
  const x = mapExpr(sel.a, (e) => (e.k === 'var' && e.name === s.v ? D : e));
  return [
    K.decl(lo, 'i32', s.start),
    K.decl(hi, 'i32', s.end),
    K.decl(dv, 'i32', p ? K.sub(r, p) : r),
    K.iff(K.lt(S, E), [
      K.iff(K.and(K.bin('<=', S, D), K.lt(D, E)), [
        K.iff(K.lt(S, D), [zero]),
        K.assign(acc, K.add(K.v(acc, 'f32'), x)),
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
