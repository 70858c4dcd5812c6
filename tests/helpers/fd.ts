// Gradients against finite differences of the float64 reference interpreter (the DSL run
// literally, dsl/reference/interpreter.ts), for tests/gradcheck.test.ts (the family functions)
// and tests/autodiff-models.test.ts (RetNet's blocks).
//
// The loss is L(x) = sum over outputs <u_OUT, OUT(x)> with fixed random upstreams u_OUT, so
// that dL/dP is what a gradient function returns as grad.P given grad.OUT = u_OUT. Derivatives
// are central differences of the float64 reference, with the fourth-order stencil
//   D(h) = (8 (L(x + h e) - L(x - h e)) - (L(x + 2h e) - L(x - 2h e))) / (12 h)
// along a direction e: a random Gaussian direction u (the directional derivative <grad.P, u>)
// or a unit vector (one coordinate of grad.P). The step is 1e-5 relative to the largest entry
// of the parameter: the truncation error is O(h^4 |L^(5)|) (zero for the functions that are
// multilinear in q, k, v; at most ~1e-10 relative for gamma^(T - s) with T <= 40) and the
// rounding error ~ 1e-16 |L| / h ~ 1e-11 relative, so the differences are good to ~1e-9,
// two orders below the float64 bars.
import type { CheckedFn } from '../../dsl/checked.js';
import { runFunction, type RunOptions, type Value } from '../../dsl/reference/interpreter.js';
import { gradName, upstreamName } from '../../compiler/autodiff.js';

export interface FdCase {
  label: string;
  fn: CheckedFn;
  /** Every parameter of fn (float ones are differentiated). */
  inputs: Map<string, Value>;
  /** grad.OUT for every output. */
  ups: Map<string, Value>;
  opts?: RunOptions;
}

export interface FdData {
  /** Per float parameter: random directions u and the finite-difference <grad, u>. */
  dirs: Map<string, { u: Float64Array; fd: number }[]>;
  /** Per parameter whose every coordinate was differenced: the finite-difference gradient. */
  coords: Map<string, Float64Array>;
  /** Evaluations of the reference forward spent. */
  evals: number;
}

/** Standard normal numbers from a uniform PRNG (Box-Muller). */
export function gaussian(n: number, rand: () => number): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - rand()));
    const a = 2 * Math.PI * rand();
    out[i] = r * Math.cos(a);
    if (i + 1 < n) out[i + 1] = r * Math.sin(a);
  }
  return out;
}

export const floatParams = (fn: CheckedFn): string[] => fn.params.filter((p) => p.dtype !== 'i32' && p.dtype !== 'i64').map((p) => p.name);

/** L(x) = sum_OUT <u_OUT, OUT(x)>. */
export function loss(c: FdCase, inputs: ReadonlyMap<string, Value>): number {
  const outs = runFunction(c.fn, inputs, c.opts);
  let L = 0;
  for (const o of c.fn.outputs) {
    const y = outs.get(o.name)!.data;
    const u = c.ups.get(upstreamName(o.name))!.data;
    for (let i = 0; i < y.length; i++) L += u[i]! * y[i]!;
  }
  return L;
}

/** Fourth-order central difference of L along `e` (a direction in parameter `param`), step h. */
function difference(c: FdCase, param: string, e: (data: Float64Array, t: number) => void, h: number): number {
  const base = c.inputs.get(param)!;
  const at = (t: number): number => {
    const data = Float64Array.from(base.data);
    e(data, t);
    return loss(c, new Map([...c.inputs, [param, { shape: base.shape, data }]]));
  };
  return (8 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12 * h);
}

const maxAbs = (a: ArrayLike<number>): number => { let m = 0; for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!)); return m; };

export interface FdOptions {
  /** Random directions per parameter. */
  directions?: number;
  /** Parameters with at most this many elements are also differenced coordinate by coordinate. */
  maxCoords?: number;
  /** Parameters differenced coordinate by coordinate whatever their size (decays). */
  alwaysCoords?: readonly string[];
  /** Step relative to max(1, max |x|) per parameter (default 1e-5). */
  relStep?: Readonly<Record<string, number>>;
  seed?: number;
}

/** Finite differences of the reference for every float parameter of the case. */
export function finiteDifferences(c: FdCase, o: FdOptions = {}, rand: () => number): FdData {
  const dirs = new Map<string, { u: Float64Array; fd: number }[]>();
  const coords = new Map<string, Float64Array>();
  let evals = 0;
  for (const p of floatParams(c.fn)) {
    const x = c.inputs.get(p)!;
    const scale = Math.max(1, maxAbs(x.data));
    const rel = o.relStep?.[p] ?? 1e-5;
    const list: { u: Float64Array; fd: number }[] = [];
    for (let d = 0; d < (o.directions ?? 3); d++) {
      const u = gaussian(x.data.length, rand);
      const h = (rel * scale) / Math.max(maxAbs(u), 1e-300);
      list.push({ u, fd: difference(c, p, (data, t) => { for (let i = 0; i < data.length; i++) data[i] = data[i]! + t * u[i]!; }, h) });
      evals += 4;
    }
    dirs.set(p, list);
    if (x.data.length <= (o.maxCoords ?? 64) || o.alwaysCoords?.includes(p)) {
      const g = new Float64Array(x.data.length);
      for (let i = 0; i < g.length; i++) {
        g[i] = difference(c, p, (data, t) => { data[i] = data[i]! + t; }, rel * Math.max(1, Math.abs(x.data[i]!)));
        evals += 4;
      }
      coords.set(p, g);
    }
  }
  return { dirs, coords, evals };
}

export interface Bars {
  /** |<g, u> - fd| / max(|fd|, ||g|| RMS(u)): <g, u> for u ~ N(0, 1) has the size ||g||. */
  directional: number;
  /** Relative RMSE of the whole gradient against the coordinate-wise differences. */
  coords: number;
  /** Decay gradients: plain relative RMSE, RMS(g - fd) / RMS(fd). */
  decayPlain: number;
  /** Decay gradients, per element: |g - fd| / |fd| (elements over 1e-3 of the tensor's RMS). */
  decayElement?: number;
  /** Decay gradients: RMS(g - fd) / max(RMS(fd), RMS(natural scale)). */
  decayNatural: number;
}

export type GradValues = ReadonlyMap<string, { shape: number[]; data: ArrayLike<number> }>;

/** Worst measures seen, by key. */
export class Worst {
  readonly m = new Map<string, number>();
  note(key: string, v: number): void { const w = this.m.get(key); if (w === undefined || !(v <= w)) this.m.set(key, v); }
  lines(): string[] { return [...this.m].map(([k, v]) => `${k}: ${v.toExponential(2)}`); }
}

/**
 * Compares gradients (grad.P for every float P) with the finite differences. Decay parameters
 * (`decays`, with their natural scale when known) get the plain relative bound and, per element,
 * the plain relative error, as well as the natural-scale bound. Returns the problems found.
 */
export function compare(label: string, grads: GradValues, fd: FdData, bars: Bars, decays: ReadonlyMap<string, Float64Array | undefined> = new Map(), worst?: Worst, tag = label): string[] {
  const problems: string[] = [];
  for (const [p, list] of fd.dirs) {
    const g = grads.get(gradName(p));
    if (!g) { problems.push(`${label}: no ${gradName(p)}`); continue; }
    let nonFinite = 0;
    let sq = 0;
    for (let i = 0; i < g.data.length; i++) { const x = g.data[i]!; if (!Number.isFinite(x)) nonFinite++; sq += x * x; }
    if (nonFinite) { problems.push(`${label}: ${gradName(p)} has ${nonFinite} non-finite values`); continue; }
    const norm = Math.sqrt(sq);
    for (const [d, { u, fd: f }] of list.entries()) {
      if (u.length !== g.data.length) { problems.push(`${label}: ${gradName(p)} has ${g.data.length} elements, the parameter ${u.length}`); break; }
      let ad = 0;
      let uu = 0;
      for (let i = 0; i < u.length; i++) { ad += g.data[i]! * u[i]!; uu += u[i]! * u[i]!; }
      const denom = Math.max(Math.abs(f), norm * Math.sqrt(uu / Math.max(u.length, 1)));
      const err = denom > 0 ? Math.abs(ad - f) / denom : Math.abs(ad - f);
      worst?.note(`${tag} ${gradName(p)} directional`, err);
      if (!(err <= bars.directional)) problems.push(`${label}: <${gradName(p)}, u${d}> = ${ad} but finite differences give ${f} (relative ${err.toExponential(2)} > ${bars.directional})`);
    }
    const c = fd.coords.get(p);
    if (!c || c.length !== g.data.length) continue;
    let dd = 0;
    let ff = 0;
    for (let i = 0; i < c.length; i++) { const e = g.data[i]! - c[i]!; dd += e * e; ff += c[i]! * c[i]!; }
    // Per element, the plain relative error of every element that is not a cancellation far
    // below the tensor's size (elements under 1e-3 of its RMS are bounded by the RMS measures).
    let worstEl = 0;
    let worstAt = -1;
    for (let i = 0; i < c.length; i++) {
      if (!(Math.abs(c[i]!) >= 1e-3 * Math.sqrt(ff / c.length))) continue;
      const r = Math.abs(g.data[i]! - c[i]!) / Math.abs(c[i]!);
      if (!(r <= worstEl)) { worstEl = r; worstAt = i; }
    }
    const rmsD = Math.sqrt(dd / c.length);
    const rmsF = Math.sqrt(ff / c.length);
    const plain = rmsF > 0 ? rmsD / rmsF : rmsD;
    if (!decays.has(p)) {
      worst?.note(`${tag} ${gradName(p)} coordinates`, plain);
      if (!(plain <= bars.coords)) problems.push(`${label}: ${gradName(p)} relative RMSE ${plain.toExponential(2)} > ${bars.coords} against coordinate-wise differences`);
      continue;
    }
    worst?.note(`${tag} ${gradName(p)} plain relative RMSE`, plain);
    worst?.note(`${tag} ${gradName(p)} plain relative, worst element`, worstEl);
    if (!(plain <= bars.decayPlain)) problems.push(`${label}: ${gradName(p)} plain relative RMSE ${plain.toExponential(2)} > ${bars.decayPlain}`);
    if (bars.decayElement !== undefined && !(worstEl <= bars.decayElement)) {
      problems.push(`${label}: ${gradName(p)}[${worstAt}] = ${g.data[worstAt]} but finite differences give ${c[worstAt]} (plain relative ${worstEl.toExponential(2)} > ${bars.decayElement})`);
    }
    const scale = decays.get(p);
    if (scale) {
      let ss = 0;
      for (const x of scale) ss += x * x;
      const nat = rmsD / Math.max(rmsF, Math.sqrt(ss / Math.max(scale.length, 1)));
      worst?.note(`${tag} ${gradName(p)} natural-scale relative RMSE`, nat);
      if (!(nat <= bars.decayNatural)) problems.push(`${label}: ${gradName(p)} relative RMSE ${nat.toExponential(2)} of its natural scale > ${bars.decayNatural}`);
    }
  }
  return problems;
}

/** The same gradients scaled by (1 + s): a check with teeth must reject them. */
export function scaled(grads: GradValues, s: number): Map<string, { shape: number[]; data: Float64Array }> {
  const out = new Map<string, { shape: number[]; data: Float64Array }>();
  for (const [k, v] of grads) out.set(k, { shape: v.shape, data: Float64Array.from(v.data, (x) => x * (1 + s)) });
  return out;
}
