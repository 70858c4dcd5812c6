// Lane loops: `for (v = 0; v < W; v++)` (W = 4, 8 or 16) whose body is stores of f32 values at
// `base + v`, computed with + - * / and negation from loads at `base' + v` and values that do not
// depend on v. The native printer prints such a loop as W-wide vector operations (GCC vector
// extensions: one AVX-512 register at W = 16), statement after statement. Running statement 1
// for all lanes, then statement 2, ... is the loop's own result when no lane reads or writes
// what another lane writes: every array stored in the loop is accessed at one base only, or at
// constant bases W or more apart. Each lane's operations are the scalar ones (IEEE f32, rounded
// per operation, no contraction but where the kernel contracts: a fused multiply-add is a vector
// fma, rn_vfmaW, rounded once per lane as fmaf), so the results are bit for bit the loop's.
//
// Vector locals: a local f32 array accessed only in lane loops of one width W, always at constant
// bases that are multiples of W, is declared as an array of vectors (the accumulators of the
// blocked dense products, compiler/lower/dense-cpu.ts: GCC keeps them in registers).
import { anyExpr, mapExpr } from '../../compiler/c-printer.js';
import { fmaParts, type KBinOp, type KExpr, type KStmt } from '../../compiler/kir.js';
import * as K from '../../compiler/kir.js';
import { affine, type AffineEnv, int64Base } from './affine-index.js';

export type ForStmt = Extract<KStmt, { k: 'for' }>;
export const LANE_WIDTHS: readonly number[] = [4, 8, 16];

export type LaneExpr =
  | { k: 'vload'; array: string; base: KExpr }
  | { k: 'scalar'; e: KExpr }
  | { k: 'bin'; op: KBinOp; a: LaneExpr; b: LaneExpr }
  | { k: 'neg'; a: LaneExpr }
  /** x * y + z rounded once (a contracting kernel's multiply-add: kir.ts fmaParts). */
  | { k: 'fma'; x: LaneExpr; y: LaneExpr; z: LaneExpr };

export interface LanePlan { width: number; v: string; stores: { array: string; base: KExpr; value: LaneExpr }[] }

/** The width of a loop shaped like a lane loop (0 to a constant W, step 1), or undefined. */
export function laneWidth(s: ForStmt): number | undefined {
  if (s.step !== 1 || s.start.k !== 'const' || s.start.value !== 0 || s.end.k !== 'const') return undefined;
  return LANE_WIDTHS.includes(s.end.value) ? s.end.value : undefined;
}

const mentions = (e: KExpr, v: string): boolean => anyExpr(e, (x) => x.k === 'var' && x.name === v);

/** B with index = B + v (B free of v), or undefined. */
export function laneBase(index: KExpr, v: string): KExpr | undefined {
  if (index.k === 'var' && index.name === v) return K.i32(0);
  if (index.k !== 'bin' || index.op !== '+' || index.type !== 'i32') return undefined;
  for (const [x, y] of [[index.a, index.b], [index.b, index.a]] as const) {
    if (mentions(y, v)) continue;
    const b = laneBase(x, v);
    if (b) return b.k === 'const' && b.value === 0 ? y : K.add(b, y);
  }
  return undefined;
}

/** An i32 expression as a sum of coefficient * term (term '' for the constant), or undefined. */
function linear(e: KExpr, scale: number, out: Map<string, number>): void {
  const add = (k: string, c: number): void => { out.set(k, (out.get(k) ?? 0) + c); };
  if (e.k === 'const') { add('', scale * e.value); return; }
  if (e.k === 'bin' && (e.op === '+' || e.op === '-')) { linear(e.a, scale, out); linear(e.b, e.op === '+' ? scale : -scale, out); return; }
  if (e.k === 'bin' && e.op === '*' && e.b.k === 'const') { linear(e.a, scale * e.b.value, out); return; }
  if (e.k === 'bin' && e.op === '*' && e.a.k === 'const') { linear(e.b, scale * e.a.value, out); return; }
  add(JSON.stringify(e), scale);
}

/**
 * a - b where it is a constant (bases as i32 sums; the accesses are in range, so the difference
 * of their offsets is the difference of the sums), else undefined.
 */
export function constDifference(a: KExpr, b: KExpr): number | undefined {
  const m = new Map<string, number>();
  linear(a, 1, m);
  linear(b, -1, m);
  for (const [k, c] of m) if (k !== '' && c !== 0) return undefined;
  return m.get('') ?? 0;
}

const LANE_OPS: ReadonlySet<KBinOp> = new Set(['+', '-', '*', '/']);

/**
 * The vector form of lane loop `s`, or undefined where it is not one. `f32Array(name)`: the
 * array holds f32 as f32 (no half storage), so a vector load or store reads it as it is.
 */
export function lanePlan(s: ForStmt, f32Array: (name: string) => boolean, contract = false): LanePlan | undefined {
  const width = laneWidth(s);
  if (width === undefined || s.body.length === 0) return undefined;
  const v = s.v;
  const stores: LanePlan['stores'] = [];
  const accesses = new Map<string, KExpr[]>();
  const note = (a: string, b: KExpr): void => { const l = accesses.get(a) ?? []; l.push(b); accesses.set(a, l); };
  const scalarLoads = new Set<string>();
  const lane = (e: KExpr): LaneExpr | undefined => {
    if (!mentions(e, v)) {
      if (e.type !== 'f32') return undefined;
      anyExpr(e, (x) => { if (x.k === 'load') scalarLoads.add(x.array); return false; });
      return { k: 'scalar', e };
    }
    if (e.type !== 'f32') return undefined;
    if (e.k === 'load') {
      const base = laneBase(e.index, v);
      if (!base || !f32Array(e.array)) return undefined;
      note(e.array, base);
      return { k: 'vload', array: e.array, base };
    }
    if (e.k === 'bin' && LANE_OPS.has(e.op)) {
      const f = contract && e.op === '+' ? fmaParts(e.a, e.b) : undefined;
      if (f) {
        const [x, y, z] = f.map(lane);
        return x && y && z ? { k: 'fma', x, y, z } : undefined;
      }
      const a = lane(e.a), b = lane(e.b);
      return a && b ? { k: 'bin', op: e.op, a, b } : undefined;
    }
    if (e.k === 'un' && e.op === 'neg') { const a = lane(e.a); return a && { k: 'neg', a }; }
    return undefined;
  };
  for (const st of s.body) {
    if (st.k === 'comment') continue;
    if (st.k !== 'store') return undefined;
    const base = laneBase(st.index, v);
    if (!base || !f32Array(st.array)) return undefined;
    const value = lane(st.value);
    if (!value) return undefined;
    note(st.array, base);
    stores.push({ array: st.array, base, value });
  }
  // No lane may touch what another lane writes: the bases of an array stored in the loop are
  // equal or differ by a constant of at least W.
  for (const st of stores) {
    if (scalarLoads.has(st.array)) return undefined;
    for (const b of accesses.get(st.array)!) {
      const d = constDifference(b, st.base);
      if (d === undefined || (d !== 0 && Math.abs(d) < width)) return undefined;
    }
  }
  return { width, v, stores };
}

/**
 * Local f32 arrays of `body` accessed only in lane loops of one width W, at constant bases that
 * are multiples of W within the array: name -> W.
 */
export function vectorLocals(body: readonly KStmt[]): Map<string, number> {
  const sizes = new Map<string, number>();
  const bad = new Set<string>();
  const width = new Map<string, number>();
  const use = (a: string, w: number | undefined, base: KExpr | undefined): void => {
    // Outside lane loops (scalar reads such as a micro-kernel's A values): a plain array, which
    // GCC broadcasts from memory instead of extracting lanes through general registers.
    if (w === undefined) { bad.add(a); return; }
    if (!base || base.k !== 'const' || base.value % w !== 0 || base.value < 0) { bad.add(a); return; }
    const size = sizes.get(a);
    if (size === undefined || base.value + w > size || (width.get(a) ?? w) !== w) { bad.add(a); return; }
    width.set(a, w);
  };
  const exprUses = (e: KExpr, w: number | undefined, v: string | undefined): void => {
    anyExpr(e, (x) => {
      if (x.k === 'load' && sizes.has(x.array)) use(x.array, w, v === undefined ? undefined : laneBase(x.index, v));
      return false;
    });
  };
  const walk = (ss: readonly KStmt[], w: number | undefined, v: string | undefined): void => {
    for (const s of ss) {
      switch (s.k) {
        case 'local': if (s.type === 'f32') sizes.set(s.name, s.size); break;
        case 'decl': exprUses(s.init, w, v); break;
        case 'assign': exprUses(s.value, w, v); break;
        case 'store':
          exprUses(s.index, undefined, undefined);
          exprUses(s.value, w, v);
          if (sizes.has(s.array)) use(s.array, w, v === undefined ? undefined : laneBase(s.index, v));
          break;
        case 'if': exprUses(s.cond, undefined, undefined); walk(s.then, undefined, undefined); walk(s.else, undefined, undefined); break;
        case 'for': {
          exprUses(s.start, undefined, undefined); exprUses(s.end, undefined, undefined);
          const lw = laneWidth(s);
          walk(s.body, lw, lw === undefined ? undefined : s.v);
          break;
        }
        default: break;
      }
    }
  };
  walk(body, undefined, undefined);
  const out = new Map<string, number>();
  for (const [a, w] of width) if (!bad.has(a) && sizes.get(a)! % w === 0) out.set(a, w);
  return out;
}

const FMA_GUARD: Record<number, string> = { 4: 'defined(__FMA__)', 8: 'defined(__FMA__) && defined(__AVX__)', 16: 'defined(__AVX512F__)' };
const FMA_INTRINSIC: Record<number, string> = { 4: '_mm_fmadd_ps', 8: '_mm256_fmadd_ps', 16: '_mm512_fmadd_ps' };
const M_TYPE: Record<number, string> = { 4: '__m128', 8: '__m256', 16: '__m512' };
const SET1: Record<number, string> = { 4: '_mm_set1_ps', 8: '_mm256_set1_ps', 16: '_mm512_set1_ps' };

/** C helpers of the printed lane loops (after the native printer's own). */
export const LANE_HELPERS = [
  '/* Lane loops (targets/native/lanes.ts) as vectors: an access of w elements at i is in range. */',
  '#if defined(__FMA__) || defined(__AVX512F__)',
  '#include <immintrin.h>',
  '#endif',
  '#define RN_VIN(i, w, n) ((uint64_t)(uint32_t)(i) + (uint64_t)(w) <= (uint64_t)(n))',
  ...LANE_WIDTHS.flatMap((w) => [
    `typedef float rn_vf${w} __attribute__((vector_size(${4 * w})));`,
    `static inline rn_vf${w} rn_vld${w}(const float *p) { rn_vf${w} v; memcpy(&v, p, sizeof v); return v; }`,
    `static inline void rn_vst${w}(float *p, rn_vf${w} v) { memcpy(p, &v, sizeof v); }`,
    `static inline rn_vf${w} rn_vsplat${w}(float s) { return (rn_vf${w}){${Array(w).fill('s').join(', ')}}; }`,
    // Vector fma: the intrinsic where the CPU has it (-march=native; GCC then broadcasts a scalar
    // operand straight from memory, where its own vectorised fmaf loop loads a vector and shuffles,
    // on the port the fma needs: 1.4x slower micro-kernel), else fmaf lane by lane (libm: exact).
    `#if ${FMA_GUARD[w]}`,
    `static inline rn_vf${w} rn_vfma${w}(rn_vf${w} x, rn_vf${w} y, rn_vf${w} z) { return (rn_vf${w})${FMA_INTRINSIC[w]}((${M_TYPE[w]})x, (${M_TYPE[w]})y, (${M_TYPE[w]})z); }`,
    `static inline rn_vf${w} rn_vfmas${w}(float x, rn_vf${w} y, rn_vf${w} z) { return (rn_vf${w})${FMA_INTRINSIC[w]}(${SET1[w]}(x), (${M_TYPE[w]})y, (${M_TYPE[w]})z); }`,
    // A vector twice the hardware's (16 lanes on an AVX2 CPU): two fmas of the half width.
    ...(w > 4 ? [
      `#elif ${FMA_GUARD[w / 2]}`,
      `static inline rn_vf${w} rn_vfma${w}(rn_vf${w} x, rn_vf${w} y, rn_vf${w} z) { rn_vf${w / 2} a[2], b[2], c[2]; memcpy(a, &x, sizeof a); memcpy(b, &y, sizeof b); memcpy(c, &z, sizeof c); c[0] = rn_vfma${w / 2}(a[0], b[0], c[0]); c[1] = rn_vfma${w / 2}(a[1], b[1], c[1]); memcpy(&z, c, sizeof c); return z; }`,
      `static inline rn_vf${w} rn_vfmas${w}(float x, rn_vf${w} y, rn_vf${w} z) { rn_vf${w / 2} b[2], c[2]; memcpy(b, &y, sizeof b); memcpy(c, &z, sizeof c); c[0] = rn_vfmas${w / 2}(x, b[0], c[0]); c[1] = rn_vfmas${w / 2}(x, b[1], c[1]); memcpy(&z, c, sizeof c); return z; }`,
    ] : []),
    '#else',
    `static inline rn_vf${w} rn_vfma${w}(rn_vf${w} x, rn_vf${w} y, rn_vf${w} z) { rn_vf${w} r; for (int i = 0; i < ${w}; i++) r[i] = fmaf(x[i], y[i], z[i]); return r; }`,
    `static inline rn_vf${w} rn_vfmas${w}(float x, rn_vf${w} y, rn_vf${w} z) { rn_vf${w} r; for (int i = 0; i < ${w}; i++) r[i] = fmaf(x, y[i], z[i]); return r; }`,
    '#endif',
  ]),
  '',
].join('\n');

/** What printing a lane loop needs from the printer. */
export interface LaneHost {
  /** A scalar expression at least at precedence `min`. */
  expr(e: KExpr, min?: number): string;
  /** An index as the printer prints it (int64 where it is affine in a versioned loop), if not expr's. */
  index?(e: KExpr): string | undefined;
  /** The C pointer expression and element count of an array. */
  array(name: string): { c: string; len: string };
  /** The lanes of a vector local (declared as vectors), or undefined. */
  vectorLocal(name: string): number | undefined;
  checks: boolean;
  indent: string;
  /** Prints one statement as the printer does (bounds-checked). */
  stmt(s: KStmt, ind: string, out: string[]): void;
}

/** The value of an i32 expression of constants, or undefined. */
export function constIndex(e: KExpr): number | undefined {
  if (e.k === 'const') return e.value;
  if (e.k !== 'bin') return undefined;
  const a = constIndex(e.a), b = constIndex(e.b);
  if (a === undefined || b === undefined) return undefined;
  return e.op === '+' ? (a + b) | 0 : e.op === '-' ? (a - b) | 0 : e.op === '*' ? Math.imul(a, b) : undefined;
}

const substLane = (st: Extract<KStmt, { k: 'store' }>, v: string, l: number): KStmt => {
  const f = (e: KExpr): KExpr => mapExpr(e, (x) => (x.k === 'var' && x.name === v ? K.i32(l) : x));
  return { ...st, index: f(st.index), value: f(st.value) };
};

/**
 * Prints lane loop `s` (its plan) as vector statements; with checks, under a test that every
 * vector access of a buffer or workgroup array is in range, else the loop as it is.
 */
export function printLaneLoop(s: ForStmt, plan: LanePlan, h: LaneHost, ind: string, out: string[]): void {
  const W = plan.width;
  const conds = new Set<string>();
  const at = (array: string, base: KExpr): { vec?: string; ptr?: string } => {
    if (h.vectorLocal(array) === W && base.k === 'const') return { vec: `${array}[${base.value / W}]` };
    const a = h.array(array);
    const b = h.index?.(base) ?? h.expr(base);
    if (h.checks) conds.add(`RN_VIN(${b}, ${W}, ${a.len})`);
    return { ptr: `${a.c} + (${b})` };
  };
  const vx = (e: LaneExpr): string => {
    switch (e.k) {
      case 'scalar': return `(${h.expr(e.e)})`;
      case 'vload': { const r = at(e.array, e.base); return r.vec ?? `rn_vld${W}(${r.ptr})`; }
      case 'bin': return `(${vx(e.a)} ${e.op} ${vx(e.b)})`;
      case 'neg': return `(-${vx(e.a)})`;
      case 'fma': {
        // A broadcast operand first (x * y = y * x exactly, and fma rounds the exact x * y + z once).
        const [x, y] = e.y.k === 'scalar' && e.x.k !== 'scalar' ? [e.y, e.x] : [e.x, e.y];
        const v = (o: LaneExpr): string => (o.k === 'scalar' ? `rn_vsplat${W}(${h.expr(o.e)})` : vx(o));
        return x.k === 'scalar' ? `rn_vfmas${W}(${h.expr(x.e)}, ${v(y)}, ${v(e.z)})` : `rn_vfma${W}(${v(x)}, ${v(y)}, ${v(e.z)})`;
      }
    }
  };
  const lines = plan.stores.map((st) => {
    const value = st.value.k === 'scalar' ? `rn_vsplat${W}(${h.expr(st.value.e)})` : vx(st.value);
    const r = at(st.array, st.base);
    return r.vec ? `${r.vec} = ${value};` : `rn_vst${W}(${r.ptr}, ${value});`;
  });
  const inner = ind + h.indent;
  if (!conds.size) { out.push(`${ind}{ /* lane loop, ${W} wide */`, ...lines.map((l) => inner + l), `${ind}}`); return; }
  // Out of range: lane by lane (lanes unrolled, so vector locals keep constant subscripts).
  out.push(`${ind}if (${[...conds].join(' && ')}) { /* lane loop, ${W} wide */`, ...lines.map((l) => inner + l), `${ind}} else {`);
  for (let l = 0; l < W; l++) for (const st of s.body) if (st.k === 'store') h.stmt(substLane(st, s.v, l), inner, out);
  out.push(`${ind}}`);
}

/**
 * Loop versioning for a loop whose only inner loops are lane loops (a micro-kernel's k loop):
 * the tests that every access of the loop is in bounds for its first and last iteration (each
 * index affine in the loop variable, so monotone; a lane access covers [base, base + W)), or
 * undefined when some index is not affine. Under the tests the loop may run unchecked.
 */
export function versionTests(s: ForStmt, env: AffineEnv, h: { expr(e: KExpr): string; len(array: string): string | undefined }, plan: (f: ForStmt) => LanePlan | undefined): string[] | undefined {
  if (s.step !== 1) return undefined;
  const tests = new Set<string>();
  const first = `(int64_t)(${h.expr(s.start)})`, last = `((int64_t)(${h.expr(s.end)}) - 1)`;
  let lanes = 0;
  const access = (array: string, index: KExpr, w: number): boolean => {
    const len = h.len(array);
    if (len === undefined) return true; // a vector local: constant indices in range
    const a = affine(index, env);
    if (!a) return false;
    const b = int64Base(a.base, (e) => h.expr(e));
    const at = (x: string): string => (a.coef === 0 ? b : `${b} + ${a.coef} * ${x}`);
    const [lo, hi] = a.coef >= 0 ? [at(first), at(last)] : [at(last), at(first)];
    tests.add(`RN_SPAN(${lo}, ${w > 1 ? `${hi} + ${w - 1}` : hi}, ${len})`);
    return true;
  };
  const exprOk = (e: KExpr, v?: string, w = 1): boolean => {
    let ok = true;
    anyExpr(e, (x) => {
      if (x.k !== 'load' || !ok) return false;
      if (v !== undefined && mentions(x.index, v)) { const b = laneBase(x.index, v); ok = b !== undefined && access(x.array, b, w); }
      else ok = access(x.array, x.index, 1);
      return false;
    });
    return ok;
  };
  const body = (ss: readonly KStmt[]): boolean => ss.every((st) => {
    switch (st.k) {
      case 'comment': return true;
      case 'decl': return exprOk(st.init);
      case 'store': return exprOk(st.index) && exprOk(st.value) && access(st.array, st.index, 1);
      case 'for': {
        const p = plan(st);
        if (!p) return false;
        lanes++;
        return p.stores.every((x) => access(x.array, x.base, p.width)) && st.body.every((x) => x.k !== 'store' || exprOk(x.value, st.v, p.width));
      }
      default: return false;
    }
  });
  if (!body(s.body) || lanes === 0) return undefined;
  return [...tests];
}
