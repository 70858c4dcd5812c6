// Kernel IR -> C (C11) for the native CPU target: a thin subclass of the shared C-style printer
// (compiler/c-printer.ts) over the barrier-split kernel (targets/native/barrier-split.ts). One C
// function per kernel runs a range of workgroups, one after another, each as work-item loops:
//
//   void SYMBOL(void *const *rn_b, const int64_t *rn_n, const int32_t *rn_s, const int32_t *rn_g,
//               int64_t rn_begin, int64_t rn_end, unsigned char *rn_scratch, int32_t *rn_err)
//
// rn_b: the buffers in KERNEL order (kernel.buffers), rn_n their element counts, rn_s the scalars
// as 4-byte words (f32 as its bits), rn_g the grid (x, y, z), [rn_begin, rn_end) the linear
// workgroup range (x fastest), rn_scratch `scratchBytes` of memory for the workgroup arrays (the
// kernel's shared arrays and the split's context arrays, 64-byte aligned), rn_err 8 words for
// the first out-of-bounds access (flag, site, index, length, wg x, y, z, thread).
//
// The kernel IR semantics (compiler/kir.ts; targets/cpu/executor.ts is their definition), in C
// compiled with -fwrapv -ffp-contract=off and without fast-math (targets/native/compile.ts):
//   - f32 is float, computed in float (x86-64 SSE: FLT_EVAL_METHOD 0), so + - * / sqrt round
//     once to float32, as the executor's Math.fround does; no contraction into fma, but where
//     the kernel asks for it (Kernel.contract: kir.ts fmaParts), fmaf (vector fma in lane loops).
//   - transcendentals (exp exp2 log log2 log1p sin cos tanh pow rsqrt erf) are computed in double
//     and rounded once, as the executor computes them (float64 function, then fround): in code
//     that may vectorise by the branch-free polynomials of c-math.ts, in checked (scalar) code by
//     libm; erf is the executor's own series and continued fraction (dsl/math.ts), ported
//     operation for operation.
//   - i32 wraps (-fwrapv); x / 0 = x % 0 = 0, INT_MIN / -1 = INT_MIN, x % -1 = 0 (rn_idiv,
//     rn_imod; by a divisor of kernel scalars, rn_divq / rn_divr: multiply-high and shift from
//     rn_div_make at kernel entry); f32 -> i32 truncates, saturates, NaN -> 0 (rn_f2i);
//     abs(INT_MIN) = INT_MIN.
//   - a work-item loop whose indices are integer arithmetic runs in versions (item-versions.ts):
//     a vectorised pre-check of every index, then flat (full workgroup: every if true, both arms of
//     every select computed, affine indices in int64), unchecked, or checked as described here.
//   - min / max of f32 are JavaScript's Math.min / Math.max: NaN if either is NaN, min(-0, +0) =
//     -0, max(-0, +0) = +0.
//   - half storage: loads convert exactly (rn_h2f, rn_bf2f), stores round to nearest even with
//     the overflow to +-inf and NaN to the canonical quiet NaN of targets/half.ts (rn_f2h, rn_f2bf).
//   - loads and stores are bounds-checked unless `checks: false`: an out-of-range access records
//     itself in rn_err (the first one wins), loads give 0, stores are dropped, and the remaining
//     workgroups of the launch are skipped; the runner turns the record into the executor's error.
import { CPrinter, f32Text, type Fmt, prim, PRIMARY, renameKernel, UNARY, walkExpr } from '../../compiler/c-printer.js';
import type { KBinOp, KBuiltin, Kernel, KExpr, KHalf, KStmt, KType, KUnOp } from '../../compiler/kir.js';
import { verifyKernel } from '../../compiler/kir-verify.js';
import { CUDA_RESERVED, validCudaIdent } from '../cuda/legalise.js';
import { rewriteDeltaSums } from './delta.js';
import { splitBarriers, type SplitKernel, WORK_ITEM } from './barrier-split.js';
import { constIndex, LANE_HELPERS, type LaneHost, lanePlan, printLaneLoop, vectorLocals, versionTests } from './lanes.js';
import { accesses, type Affine, affine, type AffineEnv, int64Base, loopEnv } from './affine-index.js';
import { C_MATH } from './c-math.js';
import { hasTrig, type PreAccess, precheck, rerunnable } from './item-versions.js';
import { BLOCK_INNER, BLOCK_OUTER, type BlockPlan, blockPlan, type Form, outerForm, rangeOf, seqPlan } from './divmod-blocks.js';

/** bool is an int32_t holding 0 or 1 (a 1-byte type in a work-item loop makes GCC pick more lanes than float has). */
const TYPE: Record<KType, string> = { f32: 'float', i32: 'int32_t', bool: 'int32_t' };
const ELEM_BYTES: Record<KType, number> = { f32: 4, i32: 4, bool: 4 };
/** Identifiers C, its headers or this printer use. */
const C_RESERVED: ReadonlySet<string> = new Set([
  ...CUDA_RESERVED, '_Bool', '_Complex', '_Imaginary', '_Alignas', '_Alignof', '_Atomic', '_Generic', '_Noreturn', '_Static_assert',
  '_Thread_local', 'complex', 'imaginary', 'I', 'stdin', 'stdout', 'stderr', 'int64_t', 'uint64_t', 'int16_t', 'uint16_t', 'int8_t',
  'uint8_t', 'INT32_MIN', 'INT32_MAX', 'UINT32_MAX', 'fmodf', 'signbit', 'wg_x', 'wg_y', 'wg_z', BLOCK_OUTER, BLOCK_INNER, 'rn_big', 'rn_ok', 'rn_all', 'rn_cond', 'rn_div',
]);

/** A load or store site, for the out-of-bounds message. */
export interface NativeSite { op: 'load' | 'store'; kind: 'buffer' | 'shared' | 'local'; array: string }

export interface NativeEntry {
  /** The kernel as given (before legalisation). */
  kernel: Kernel;
  symbol: string;
  threads: number;
  /** Bytes of rn_scratch one workgroup needs. */
  scratchBytes: number;
  sites: NativeSite[];
  checks: boolean;
}

export interface NativeModule { code: string; entries: NativeEntry[] }

export interface NativePrintOptions {
  /** Bounds-check every load and store (default true). */
  checks?: boolean;
}

const HELPERS = String.raw`#include <stdint.h>
#include <stdbool.h>
#include <string.h>
#include <math.h>

static inline int32_t rn_idiv(int32_t a, int32_t b) { return b == 0 ? 0 : b == -1 ? (int32_t)(0u - (uint32_t)a) : a / b; }
static inline int32_t rn_imod(int32_t a, int32_t b) { return (b == 0 || b == -1) ? 0 : a % b; }
static inline int32_t rn_iabs(int32_t a) { return a < 0 ? (int32_t)(0u - (uint32_t)a) : a; }
static inline int32_t rn_imin(int32_t a, int32_t b) { return a < b ? a : b; }
static inline int32_t rn_imax(int32_t a, int32_t b) { return a > b ? a : b; }
static inline int32_t rn_f2i(float x) { return x != x ? 0 : x >= 2147483647.0f ? 2147483647 : x <= -2147483648.0f ? (-2147483647 - 1) : (int32_t)x; }
static inline float rn_fminf(float a, float b) { return (a != a || b != b) ? NAN : a < b ? a : b < a ? b : (signbit(a) ? a : b); }
static inline float rn_fmaxf(float a, float b) { return (a != a || b != b) ? NAN : a > b ? a : b > a ? b : (signbit(a) ? b : a); }
/* JavaScript's Math.pow (the executor's): NaN for a NaN exponent and for 1 to +-inf, where C's pow gives 1. */
static inline float rn_pow(float x, float y) { return (x < 0.0f || (x == 0.0f && y == 0.0f) || y != y || (x == 1.0f && isinf(y))) ? NAN : (float)pow((double)x, (double)y); }
static double rn_erfc_large(double x) {
  double f = 0.0;
  for (int n = 60; n >= 1; n--) f = ((double)n / 2.0) / (x + f);
  return exp(-x * x) / sqrt(3.141592653589793) / (x + f);
}
static float rn_erf(float xf) {
  const double x = (double)xf;
  if (x != x) return NAN;
  const double ax = fabs(x);
  double r;
  if (ax < 3.0) {
    double term = ax, sum = ax;
    const double x2 = ax * ax;
    for (int n = 1; n < 200; n++) {
      term *= (2.0 * x2) / (double)(2 * n + 1);
      sum += term;
      if (term < sum * 1e-17) break;
    }
    r = (2.0 / sqrt(3.141592653589793)) * exp(-x2) * sum;
  } else {
    r = 1.0 - rn_erfc_large(ax);
  }
  return (float)(x < 0.0 ? -r : r);
}
static inline float rn_bits_f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t rn_f_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float rn_h2f(uint16_t h) {
  const uint32_t s = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0) { const float v = (float)m * 5.9604644775390625e-8f; return s ? -v : v; }
  if (e == 31) return rn_bits_f(s | 0x7f800000u | (m << 13));
  return rn_bits_f(s | ((e + 112u) << 23) | (m << 13));
}
static inline float rn_bf2f(uint16_t h) { return rn_bits_f((uint32_t)h << 16); }
static inline uint16_t rn_f2h(float f) {
  if (f != f) return 0x7e00u;
  const uint32_t u = rn_f_bits(f), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
  if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520: rounds past the largest finite f16 */
  if (a < 0x38800000u) { /* below 2^-14: subnormal f16, quantum 2^-24 */
    const uint32_t e = a >> 23;
    if (e < 102) return (uint16_t)sign; /* below 2^-25: rounds to 0 */
    const uint32_t m = (a & 0x7fffffu) | 0x800000u, shift = 126 - e; /* value = m * 2^(e - 150) = r * 2^-24 */
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) r++;
    return (uint16_t)(sign | r);
  }
  uint32_t r = a - 0x38000000u; /* rebias 127 -> 15 */
  const uint32_t rem = r & 0x1fffu;
  r >>= 13;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) r++;
  return (uint16_t)(sign | r);
}
static inline uint16_t rn_f2bf(float f) {
  if (f != f) return 0x7fc0u;
  const uint32_t u = rn_f_bits(f);
  const uint32_t r = u + 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(r >> 16);
}
static void rn_oob(int32_t *err, int32_t site, int32_t i, int64_t n, int32_t wx, int32_t wy, int32_t wz, int32_t t) {
  int32_t zero = 0;
  if (__atomic_compare_exchange_n(err, &zero, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
    err[1] = site; err[2] = i; err[3] = (int32_t)(n > 2147483647 ? 2147483647 : n); err[4] = wx; err[5] = wy; err[6] = wz; err[7] = t;
  }
}
#define RN_IN(i, n) ((uint64_t)(uint32_t)(i) < (uint64_t)(n))
#define RN_SPAN(lo, hi, n) ((lo) >= 0 && (hi) < (int64_t)(n))
#define RN_CHK_LOAD(T, NAME) static inline T NAME(const T *a, int64_t n, int32_t i, int32_t *err, int32_t site, int32_t wx, int32_t wy, int32_t wz, int32_t t) { \
  if (RN_IN(i, n)) return a[i]; rn_oob(err, site, i, n, wx, wy, wz, t); return 0; }
RN_CHK_LOAD(float, rn_ldf)
RN_CHK_LOAD(int32_t, rn_ldi)
RN_CHK_LOAD(uint16_t, rn_ldh)
`;

const MATH: Partial<Record<KUnOp, string>> = {
  exp: 'rn_exp', exp2: 'rn_exp2', log: 'rn_log', log2: 'rn_log2', log1p: 'rn_log1p', sin: 'rn_sin', cos: 'rn_cos',
  tanh: 'rn_tanh', rsqrt: 'rn_rsqrt', erf: 'rn_erf', sqrt: 'sqrtf', floor: 'floorf', ceil: 'ceilf', abs: 'fabsf',
};

/** Unary ops with a libm spelling for scalar (checked) code: rn_<op>_s in c-math.ts. */
const LIBM: ReadonlySet<KUnOp> = new Set<KUnOp>(['exp', 'exp2', 'log', 'log2', 'log1p', 'sin', 'cos', 'tanh']);

interface ArrayInfo { kind: NativeSite['kind']; type: KType; storage?: KHalf; len: string; orig: string; c: string }

class NativePrinter extends CPrinter {
  readonly sites: NativeSite[] = [];
  private readonly arrays = new Map<string, ArrayInfo>();
  private inItem = 0;
  private readonly context: Set<string>;
  /** Local arrays declared as arrays of vectors (targets/native/lanes.ts): name -> lanes. */
  private readonly vecLocals: Map<string, number>;
  /** Names assigned anywhere in the kernel (affine-index.ts does not look through them). */
  private readonly assigned = new Set<string>();
  /** Inside an innermost loop printed with int64 affine indices and no checks (affine-index.ts). */
  private fast: AffineEnv | undefined;
  /** Uniform divisors (C text of a scalar expression -> the rn_div computed at kernel entry, c-math.ts). */
  readonly divisors = new Map<string, string>();
  private readonly scalarNames: Set<string>;
  /** Inside a work-item loop that re-runs with libm when an argument of sin or cos is large (item-versions.ts). */
  private trigFlag = false;
  /** Work-item loops being printed inside their own trig re-run or bounds pre-check versions. */
  private readonly trigDone = new Set<KStmt>();
  private readonly preDone = new Set<KStmt>();
  /** Printing a work-item loop body flat (item-versions.ts Precheck.flat): every if condition holds. */
  private flat = false;
  /** Work-item loops of one block (divmod-blocks.ts): not blocked again. */
  private readonly blockLoops = new Set<KStmt>();
  /** Initialisers of the kernel's never-assigned declarations outside work-item loops (a ranged loop's end). */
  private readonly outerDecls = new Map<string, KExpr>();
  private readonly outerForms = new Map<string, Form | null>();
  /** What the ranges show of such a declaration (divmod-blocks.ts), memoised. */
  private outerFormOf(name: string): Form | undefined {
    const known = this.outerForms.get(name);
    if (known !== undefined) return known ?? undefined;
    const init = this.outerDecls.get(name);
    this.outerForms.set(name, null); // a cycle (none in valid kernel IR) knows nothing
    const f = init ? outerForm(init, this.assigned, (n) => this.outerFormOf(n)) : undefined;
    this.outerForms.set(name, f ?? null);
    return f;
  }
  /** Sequential loops printed (or being printed) as written or already rewritten (divmod-blocks.ts seqPlan). */
  private readonly seqDone = new Set<KStmt>();

  constructor(readonly split: SplitKernel, readonly checks: boolean, origNames: Map<string, string>) {
    super();
    const k = split.kernel;
    this.context = new Set(split.context.filter((c) => c.size >= split.threads).map((c) => c.name));
    k.buffers.forEach((b, i) => this.arrays.set(b.name, { kind: 'buffer', type: b.type, ...(b.storage ? { storage: b.storage } : {}), len: `rn_n[${i}]`, orig: origNames.get(b.name) ?? b.name, c: b.name }));
    for (const s of k.shared) this.arrays.set(s.name, { kind: 'shared', type: s.type, len: String(s.size), orig: origNames.get(s.name) ?? s.name, c: s.name });
    const locals = (ss: readonly KStmt[]): void => {
      for (const s of ss) {
        if (s.k === 'local') this.arrays.set(s.name, { kind: 'local', type: s.type, len: String(s.size), orig: s.name, c: s.name });
        if (s.k === 'if') { locals(s.then); locals(s.else); }
        if (s.k === 'for') locals(s.body);
      }
    };
    locals(k.body);
    this.vecLocals = vectorLocals(k.body);
    for (const [name] of this.vecLocals) this.arrays.get(name)!.c = `((float *)${name})`;
    const walk = (ss: readonly KStmt[]): void => {
      for (const s of ss) {
        if (s.k === 'assign') this.assigned.add(s.name);
        if (s.k === 'if') { walk(s.then); walk(s.else); }
        if (s.k === 'for') walk(s.body);
      }
    };
    walk(k.body);
    const counts = new Map<string, number>();
    const decls = (ss: readonly KStmt[]): void => {
      for (const s of ss) {
        if (s.k === 'decl') { counts.set(s.name, (counts.get(s.name) ?? 0) + 1); if (!this.assigned.has(s.name)) this.outerDecls.set(s.name, s.init); }
        if (s.k === 'if') { decls(s.then); decls(s.else); }
        if (s.k === 'for' && !split.workItemLoops.has(s)) decls(s.body);
      }
    };
    decls(k.body);
    for (const [name, n] of counts) if (n > 1) this.outerDecls.delete(name);
    this.scalarNames = new Set(k.scalars.map((s) => s.name));
    this.contract = k.contract === true;
  }

  // C's fmaf: one vfmadd where the CPU has fma (-march=native), else libm's correctly rounded one.
  override fmaFn(): string { return 'fmaf'; }

  /** Integer arithmetic on kernel scalars and constants only: the same for every work-item of a launch. */
  private uniform(e: KExpr): boolean {
    let ok = true;
    walkExpr(e, (x) => { if (x.type === 'f32' || x.k === 'load' || x.k === 'builtin' || (x.k === 'var' && !this.scalarNames.has(x.name))) ok = false; return ok; });
    return ok;
  }

  /**
   * Pre-checked work-item loops (precheckLoop): an index affine in the work-item prints in int64, in
   * the test and in the unchecked body alike, so a contiguous access is a vector load or store, not
   * a gather or scatter (affine-index.ts: the int64 value equals the wrapped int32 one when in range).
   */
  private partial: AffineEnv | undefined;
  /** An index affine in the pre-checked loop's work-item, as int64; undefined for any other. */
  private partialIndex(index: KExpr): string | undefined {
    if (!this.partial || this.checked()) return undefined;
    const a = affine(index, this.partial);
    return a && a.coef !== 0 ? this.fastIndex(index, this.partial) : undefined;
  }

  /** The index of an access in a fast loop: `(int64_t)(base) + coef * (int64_t)v` (affine-index.ts). */
  private fastIndex(index: KExpr, env: AffineEnv = this.fast!): string {
    const a = affine(index, env)!;
    if (a.coef === 0) return this.expr(a.base);
    const v = `${a.coef === 1 ? '' : `${a.coef} * `}(int64_t)${env.item}`;
    return a.base.k === 'const' && a.base.value === 0 ? v : `${int64Base(a.base, (e) => this.expr(e))} + ${v}`;
  }

  /**
   * An innermost loop (step 1) whose every index is affine in its variable, with the test that
   * all of them are in bounds for its first and last iteration; undefined for any other loop.
   */
  private fastLoop(s: Extract<KStmt, { k: 'for' }>): { env: AffineEnv; test: string[] } | undefined {
    if (s.step !== 1 || s.body.some(function holds(x: KStmt): boolean { return x.k === 'for' || (x.k === 'if' && (x.then.some(holds) || x.else.some(holds))); })) return undefined;
    const env = loopEnv(s, this.assigned);
    const test = new Set<string>();
    const first = `(int64_t)(${this.expr(s.start)})`, last = `((int64_t)(${this.expr(s.end)}) - 1)`;
    for (const acc of accesses(s.body)) {
      const a: Affine | undefined = affine(acc.index, env);
      if (!a) return undefined;
      const info = this.arrays.get(acc.array);
      if (!info) return undefined;
      if (this.context.has(acc.array) && a.coef === 1 && a.base.k === 'const' && a.base.value === 0 && s.v === WORK_ITEM) continue;
      const b = int64Base(a.base, (e) => this.expr(e));
      if (a.coef === 0) { test.add(`RN_SPAN(${b}, ${b}, ${info.len})`); continue; }
      const at = (x: string): string => `${b} + ${a.coef} * ${x}`;
      test.add(a.coef > 0 ? `RN_SPAN(${at(first)}, ${at(last)}, ${info.len})` : `RN_SPAN(${at(last)}, ${at(first)}, ${info.len})`);
    }
    return { env, test: [...test] };
  }

  /** An element of a vector local outside the vector statements (a lane of an unrolled fallback: constant index, in range by vectorLocals). */
  private vecElement(array: string, index: KExpr, w: number): string {
    const i = constIndex(index);
    if (i === undefined) throw new Error(`internal error: native printer: vector local '${array}' at a non-constant index`);
    return `${array}[${Math.floor(i / w)}][${i % w}]`;
  }

  override typeName(t: KType): string { return TYPE[t]; }

  override builtin(name: KBuiltin): Fmt {
    if (name.startsWith('tid.')) throw new Error(`internal error: native printer: ${name} after the barrier split`);
    return prim(name.replace('.', '_'));
  }

  override constant(type: KType, value: number): Fmt {
    if (type === 'bool') return prim(value ? 'true' : 'false');
    if (type === 'i32') {
      const v = value | 0;
      if (v === -2147483648) return prim('(-2147483647 - 1)');
      return { s: String(v), p: v < 0 ? UNARY : PRIMARY };
    }
    const x = Math.fround(value);
    if (Number.isNaN(x)) return prim('NAN');
    if (!Number.isFinite(x)) return x > 0 ? prim('INFINITY') : { s: '-INFINITY', p: UNARY };
    const s = `${f32Text(x)}f`;
    return { s, p: s.startsWith('-') ? UNARY : PRIMARY };
  }

  private site(op: NativeSite['op'], a: ArrayInfo): number {
    this.sites.push({ op, kind: a.kind, array: a.orig });
    return this.sites.length - 1;
  }

  /** A context array read or written at the work-item's own slot: in bounds by construction (work-item loops end at most at `threads`). */
  private inRange(array: string, index: KExpr): boolean {
    return this.inItem > 0 && index.k === 'var' && index.name === WORK_ITEM && this.context.has(array);
  }

  private ctx(): string { return `wg_x, wg_y, wg_z, ${this.inItem ? WORK_ITEM : '-1'}`; }

  override load(array: string, index: KExpr, type: KType): Fmt {
    const a = this.arrays.get(array);
    if (!a) throw new Error(`internal error: native printer: unknown array '${array}'`);
    const vw = this.vecLocals.get(array);
    if (vw) return prim(this.vecElement(array, index, vw));
    const idx = this.fast ? this.fastIndex(index) : this.partialIndex(index) ?? this.expr(index);
    let raw: string;
    if (this.checked() && !this.fast && !this.inRange(array, index)) {
      const fn = a.storage ? 'rn_ldh' : a.kind === 'buffer' ? (a.type === 'f32' ? 'rn_ldf' : 'rn_ldi') : a.type === 'f32' ? 'rn_ldf' : 'rn_ldi';
      raw = `${fn}(${a.c}, ${a.len}, ${idx}, rn_err, ${this.site('load', a)}, ${this.ctx()})`;
    } else raw = `${a.c}[${idx}]`;
    if (a.storage) return prim(`${a.storage === 'f16' ? 'rn_h2f' : 'rn_bf2f'}(${raw})`);
    if (a.kind === 'buffer' && type === 'bool') return { s: `${raw} != 0`, p: 3 };
    return prim(raw);
  }

  override store(array: string, index: KExpr, value: KExpr): string {
    const a = this.arrays.get(array);
    if (!a) throw new Error(`internal error: native printer: unknown array '${array}'`);
    const vw = this.vecLocals.get(array);
    if (vw) return `${this.vecElement(array, index, vw)} = ${this.expr(value)};`;
    let v = this.expr(value);
    if (a.storage) v = `${a.storage === 'f16' ? 'rn_f2h' : 'rn_f2bf'}(${v})`;
    else if (a.kind === 'buffer' && a.type === 'bool') v = `(int32_t)(${v})`;
    if (this.fast) return `${a.c}[${this.fastIndex(index)}] = ${v};`;
    const p64 = this.partialIndex(index);
    if (p64 !== undefined) return `${a.c}[${p64}] = ${v};`;
    if (!this.checked() || this.inRange(array, index)) return `${a.c}[${this.expr(index)}] = ${v};`;
    const site = this.site('store', a);
    return `{ const int32_t rn_i = ${this.expr(index)}; if (RN_IN(rn_i, ${a.len})) ${a.c}[rn_i] = ${v}; else rn_oob(rn_err, ${site}, rn_i, ${a.len}, ${this.ctx()}); }`;
  }

  override unary(op: KUnOp, a: KExpr, type: KType): Fmt {
    if (type === 'i32' && op === 'abs') return this.call('rn_iabs', a);
    if (this.trigFlag && !this.scalarCode() && (op === 'sin' || op === 'cos')) return prim(`rn_${op}_v(${this.expr(a)}, &rn_big)`);
    return super.unary(op, a, type);
  }

  override unaryFn(op: KUnOp, type: KType): string {
    // Checked code (a branch per access) is scalar: libm's table-driven functions are faster there than
    // the polynomials, and compute the same floats (tests/native-math.test.ts compares both to the executor).
    if (this.scalarCode() && type === 'f32' && LIBM.has(op)) return `rn_${op}_s`;
    const f = MATH[op];
    if (!f || type !== 'f32') throw new Error(`native printer: no function for '${op}' on ${type}`);
    return f;
  }

  override binary(op: KBinOp, a: KExpr, b: KExpr, type: KType): Fmt {
    if (type === 'i32' && (op === '/' || op === '%')) {
      if (b.k === 'const' && b.value !== 0 && b.value !== -1) return this.infix(op, a, b);
      if (b.k !== 'const' && this.uniform(b) && process.env['RETNETC_NATIVE_MAGICDIV'] !== '0') {
        // Multiply-high and shift by a divisor computed once per kernel call (c-math.ts rn_div): vectorises.
        const text = this.expr(b);
        let name = this.divisors.get(text);
        if (!name) this.divisors.set(text, (name = `rn_dv${this.divisors.size}`));
        return prim(`${op === '/' ? 'rn_divq' : 'rn_divr'}(${this.expr(a)}, ${name})`);
      }
      return this.call(op === '/' ? 'rn_idiv' : 'rn_imod', a, b);
    }
    if (op === 'min' || op === 'max') return this.call(type === 'i32' ? `rn_i${op}` : `rn_f${op}f`, a, b);
    if (op === 'pow') return this.call('rn_pow', a, b);
    if (op === '%') return this.call('fmodf', a, b);
    return super.binary(op, a, b, type);
  }

  override select(cond: KExpr, a: KExpr, b: KExpr, type: KType): Fmt {
    // Flat: both arms computed (their loads are in range), one blend.
    if (this.flat) return prim(`rn_sel_${type === 'f32' ? 'f' : 'i'}(${this.expr(cond)}, ${this.expr(a)}, ${this.expr(b)})`);
    return super.select(cond, a, b, type);
  }

  override cast(a: KExpr, to: KType): Fmt {
    const from = a.type;
    if (from === to) return this.fmt(a);
    if (to === 'bool') return { s: `${this.expr(a, 4)} != ${from === 'f32' ? '0.0f' : '0'}`, p: 3 };
    if (from === 'bool') return { s: `${this.expr(a, 1)} ? ${to === 'f32' ? '1.0f : 0.0f' : '1 : 0'}`, p: 0 };
    if (to === 'i32') return this.call('rn_f2i', a);
    return { s: `(float)${this.expr(a, UNARY)}`, p: UNARY };
  }

  override localArray(name: string, type: KType, size: number): string {
    const w = this.vecLocals.get(name);
    return w ? `rn_vf${w} ${name}[${size / w}];` : `${TYPE[type]} ${name}[${size}];`;
  }
  override barrier(): string { throw new Error('internal error: native printer: a barrier after the barrier split'); }
  override comment(text: string): string[] { return text.split('\n').map((l) => `// ${l.replace(/\\$/, '')}`); }

  override beforeFor(s: Extract<KStmt, { k: 'for' }>): string[] {
    if (!this.split.workItemLoops.has(s)) return [];
    if (process.env['RETNETC_NATIVE_SIMD'] === '0') return ['/* work-item loop */'];
    return [`#pragma omp simd${this.trigFlag ? ' reduction(|:rn_big)' : ''} /* work-item loop */`];
  }

  /** Inside a loop printed unchecked under its versioning test (targets/native/lanes.ts versionTests). */
  private unchecked = 0;
  private checked(): boolean { return this.checks && this.unchecked === 0; }
  /** Accesses checked one by one (a branch and a call each): code GCC does not vectorise. */
  private scalarCode(): boolean { return this.checked() && !this.fast; }
  private lanePlanOf(s: Extract<KStmt, { k: 'for' }>) {
    return lanePlan(s, (a) => { const x = this.arrays.get(a); return x !== undefined && x.type === 'f32' && !x.storage; }, this.contract);
  }

  /** Lane loops print as vector statements (targets/native/lanes.ts). */
  private laneHost(): LaneHost {
    return {
      expr: (e, min) => this.expr(e, min), index: (e) => this.partialIndex(e), array: (n) => this.arrays.get(n)!, vectorLocal: (n) => this.vecLocals.get(n),
      checks: this.checked(), indent: this.indentUnit, stmt: (s, ind, out) => this.stmt(s, ind, out),
    };
  }

  override stmt(s: KStmt, ind: string, out: string[]): void {
    if (this.flat && s.k === 'if') { this.stmts(s.then, ind, out); return; } // the pre-check showed the condition true
    if (s.k === 'for' && !this.split.workItemLoops.has(s) && !this.seqDone.has(s) && process.env['RETNETC_NATIVE_BLOCKS'] !== '0') {
      // A sequential loop dividing `u + v` by constants: uniform and affine parts where its premises hold.
      const sp = seqPlan(s, this.assigned, (n) => this.outerFormOf(n));
      if (sp) {
        this.seqDone.add(sp.loop);
        if (!sp.premises.length) this.stmt(sp.loop, ind, out);
        else {
          out.push(`${ind}if (${sp.premises.map((p) => `(${this.expr(p)})`).join(' && ')}) {`);
          this.stmt(sp.loop, ind + this.indentUnit, out);
          out.push(`${ind}} else {`);
          this.seqDone.add(s);
          this.stmt(s, ind + this.indentUnit, out);
          this.seqDone.delete(s);
          out.push(`${ind}}`);
        }
        return;
      }
    }
    if (s.k === 'for' && this.split.workItemLoops.has(s) && !this.inItem && !this.blockLoops.has(s) && process.env['RETNETC_NATIVE_BLOCKS'] !== '0') {
      const plan = blockPlan(s, this.assigned, (name) => { const init = this.outerDecls.get(name); return init ? rangeOf(init, this.assigned) : undefined; });
      if (plan) { this.printBlocks(plan, ind, out); return; }
    }
    if (s.k === 'for' && this.split.workItemLoops.has(s) && !this.inItem && !this.trigDone.has(s) && hasTrig(s.body) && rerunnable(s.body) && process.env['RETNETC_NATIVE_FASTTRIG'] !== '0') {
      // sin / cos on the vectorised path; the rare loop with an argument beyond it runs again with libm.
      out.push(`${ind}{`, `${ind}  int32_t rn_big = 0;`);
      this.trigDone.add(s);
      this.trigFlag = true;
      this.stmt(s, ind + '  ', out);
      this.trigFlag = false;
      out.push(`${ind}  if (rn_big) {`);
      this.stmt(s, ind + '    ', out);
      out.push(`${ind}  }`, `${ind}}`);
      this.trigDone.delete(s);
      return;
    }
    if (s.k === 'for' && this.split.workItemLoops.has(s) && !this.inItem && !this.preDone.has(s) && this.checked() && process.env['RETNETC_NATIVE_PRECHECK'] !== '0' && this.precheckLoop(s, ind, out)) return;
    if (s.k === 'for' && !this.inItem && !this.split.workItemLoops.has(s) && process.env['RETNETC_NATIVE_LANES'] !== '0') {
      const plan = this.lanePlanOf(s);
      if (plan) { printLaneLoop(s, plan, this.laneHost(), ind, out); return; }
      // A loop around lane loops (a micro-kernel's k loop): unchecked when one test shows every access in bounds.
      const tests = this.checked() ? versionTests(s, loopEnv(s, this.assigned), { expr: (e) => this.expr(e), len: (a) => (this.vecLocals.has(a) ? undefined : this.arrays.get(a)?.len) }, (f) => this.lanePlanOf(f)) : undefined;
      if (tests?.length) {
        out.push(`${ind}if (${tests.join(' && ')}) {`);
        // Unchecked, with the loop's affine indices in int64 as the tests have them (one address register for A's rows).
        this.unchecked++;
        const outer = this.partial;
        this.partial = loopEnv(s, this.assigned);
        super.stmt(s, ind + this.indentUnit, out);
        this.partial = outer;
        this.unchecked--;
        out.push(`${ind}} else {`);
        super.stmt(s, ind + this.indentUnit, out);
        out.push(`${ind}}`);
        return;
      }
    }
    const item = s.k === 'for' && this.split.workItemLoops.has(s);
    const fast = s.k === 'for' && !this.fast && process.env['RETNETC_NATIVE_AFFINE'] !== '0' ? this.fastLoop(s) : undefined;
    if (item) this.inItem++;
    this.printVersions(s, fast, ind, out);
    if (item) this.inItem--;
  }

  /**
   * A work-item loop in blocks whose divisions by constants are uniform or affine (divmod-blocks.ts):
   * each block runs the rewritten loop (in the versions of any work-item loop) where its premises
   * hold, else the loop as written, checked: the same items in the same order either way.
   */
  private printBlocks(plan: BlockPlan, ind: string, out: string[]): void {
    const I = this.indentUnit;
    for (const l of [plan.inner, plan.plain]) { this.split.workItemLoops.add(l); this.blockLoops.add(l); }
    const limit = plan.limit ? ` && ${BLOCK_OUTER} * ${plan.size} < ${this.expr(plan.limit, 7)}` : '';
    out.push(`${ind}for (int32_t ${BLOCK_OUTER} = 0; ${BLOCK_OUTER} < ${plan.blocks}${limit}; ${BLOCK_OUTER}++) { /* blocks of ${plan.size} work-items */`);
    if (!plan.premises.length) this.stmt(plan.inner, ind + I, out);
    else {
      out.push(`${ind}${I}if (${plan.premises.map((p) => `(${this.expr(p)})`).join(' && ')}) {`);
      this.stmt(plan.inner, ind + I + I, out);
      out.push(`${ind}${I}} else {`);
      this.inItem++;
      super.stmt(plan.plain, ind + I + I, out);
      this.inItem--;
      out.push(`${ind}${I}}`);
    }
    out.push(`${ind}}`);
  }

  /**
   * A work-item loop whose accesses a vectorisable first loop can bounds-test (item-versions.ts):
   * `rn_ok` ANDs every test, then the body runs unchecked when all pass, checked otherwise.
   * False (nothing printed) when the loop does not qualify.
   */
  private precheckLoop(s: Extract<KStmt, { k: 'for' }>, ind: string, out: string[]): boolean {
    // Affine indices: versioned by fastLoop already; but a block's loop (divmod-blocks.ts) under
    // `if (gid < n)` runs flat first, as GCC does not vectorise its masked int64-indexed loads.
    const affineToo = this.fastLoop(s) !== undefined;
    if (affineToo && !this.blockLoops.has(s)) return false;
    const pre = precheck(s.body, this.assigned, s.v, (array, index) => !this.vecLocals.has(array) && this.arrays.has(array) && !(index.k === 'var' && index.name === WORK_ITEM && this.context.has(array)));
    if (!pre || (affineToo && !pre.flat)) return false;
    this.preDone.add(s);
    const I = this.indentUnit;
    /** A vectorisable loop ANDing `tests` into `flag` (one flag per loop: GCC vectorises two reductions badly). */
    const checkLoop = (flag: string, tests: string[], ind0: string): void => {
      const trig = this.trigFlag;
      this.trigFlag = false; // the pre-check loop has no rn_big reduction
      out.push(`${ind0}int32_t ${flag} = 1;`, `${ind0}#pragma omp simd reduction(&:${flag}) /* bounds pre-check */`, `${ind0}${this.forHead(s)}`);
      for (const d of pre.decls) out.push(ind0 + I + this.decl(d.name, d.type, d.init));
      out.push(`${ind0}${I}${flag} &= ${[...new Set(tests)].join(' & ')};`, `${ind0}}`);
      this.trigFlag = trig;
    };
    const env = loopEnv(s, this.assigned);
    const inRange = (a: PreAccess): string => {
      const len = this.arrays.get(a.array)!.len, x = affine(a.index, env);
      if (x && x.coef !== 0) return `RN_IN64(${this.fastIndex(a.index, env)}, ${len})`;
      return `RN_IN(${this.expr(a.index)}, ${len})`;
    };
    const guarded = (a: PreAccess): string => {
      if (!a.guards.length) return inRange(a);
      const g = a.guards.map((x) => (x.holds ? `(${this.expr(x.cond)})` : `!(${this.expr(x.cond)})`)).join(' & ');
      return `(!(${g}) | ${inRange(a)})`;
    };
    /** rn_ok: every access in range where it runs; then unchecked, else checked. */
    const okVersions = (ind0: string): void => {
      checkLoop('rn_ok', pre.accesses.map(guarded), ind0);
      out.push(`${ind0}if (rn_ok) {`);
      this.unchecked++;
      this.partial = env;
      this.stmt(s, ind0 + I, out);
      this.partial = undefined;
      this.unchecked--;
      out.push(`${ind0}} else {`);
      this.stmt(s, ind0 + I, out);
      out.push(`${ind0}}`);
    };
    out.push(`${ind}{`);
    if (pre.flat) {
      // rn_all: every access in range whatever its guards (every full workgroup): the flat body.
      const conds = pre.conds.map((c) => `(${this.expr(c)})`);
      if (affineToo) {
        // Affine accesses: in range when the first and last work-item's are (fastLoop); a loop for the conditions only.
        const span = this.fastLoop(s)!.test;
        out.push(`${ind}${I}int32_t rn_all = ${span.length ? span.join(' && ') : '1'};`);
        if (conds.length) {
          out.push(`${ind}${I}if (rn_all) {`);
          checkLoop('rn_cond', conds, ind + I + I);
          out.push(`${ind}${I}${I}rn_all = rn_cond;`, `${ind}${I}}`);
        }
      } else checkLoop('rn_all', [...pre.accesses.map(inRange), ...conds], ind + I);
      out.push(`${ind}${I}if (rn_all) {`);
      this.unchecked++;
      this.flat = true;
      this.partial = env;
      this.stmt(s, ind + I + I, out);
      this.partial = undefined;
      this.flat = false;
      this.unchecked--;
      out.push(`${ind}${I}} else {`);
      if (affineToo) this.stmt(s, ind + I + I, out);
      else okVersions(ind + I + I);
      out.push(`${ind}${I}}`);
    } else okVersions(ind + I);
    out.push(`${ind}}`);
    this.preDone.delete(s);
    return true;
  }

  private printVersions(s: KStmt, fast: { env: AffineEnv; test: string[] } | undefined, ind: string, out: string[]): void {
    if (!fast) super.stmt(s, ind, out);
    else if (!this.checked() || !fast.test.length) {
      this.fast = fast.env;
      super.stmt(s, ind, out);
      this.fast = undefined;
    } else {
      // Loop versioning: unchecked (vectorisable) when every access is in bounds, else checked as before.
      out.push(`${ind}if (${fast.test.join(' && ')}) {`);
      this.fast = fast.env;
      super.stmt(s, ind + '  ', out);
      this.fast = undefined;
      out.push(`${ind}} else {`);
      super.stmt(s, ind + '  ', out);
      out.push(`${ind}}`);
    }
  }
}

/** Prints kernels as one C translation unit. */
export function printNative(kernels: readonly Kernel[], opts: NativePrintOptions = {}): NativeModule {
  const checks = opts.checks ?? true;
  const out: string[] = [HELPERS, C_MATH, LANE_HELPERS];
  const entries: NativeEntry[] = [];
  kernels.forEach((k0, n) => {
    verifyKernel(k0);
    const { kernel: renamed, globals } = renameKernel(k0, { valid: validCudaIdent, reserved: C_RESERVED });
    const origNames = new Map([...globals].map(([o, c]) => [c, o]));
    const split = splitBarriers(process.env['RETNETC_NATIVE_DELTA'] === '0' ? renamed : rewriteDeltaSums(renamed), C_RESERVED);
    const k = split.kernel;
    const p = new NativePrinter(split, checks, origNames);
    const symbol = `rn_k${n}_${k.name}`.slice(0, 120);
    const lines: string[] = [];
    lines.push(`// kernel IR '${k0.name}': workgroup ${k0.workgroup.join('x')} (${split.threads} work-items per workgroup)`);
    lines.push(`void ${symbol}(void *const *rn_b, const int64_t *rn_n, const int32_t *rn_s, const int32_t *rn_g, int64_t rn_begin, int64_t rn_end, unsigned char *rn_scratch, int32_t *rn_err) {`);
    const I = '  ';
    k.buffers.forEach((b, i) => {
      const t = b.storage ? 'uint16_t' : b.type === 'f32' ? 'float' : 'int32_t';
      lines.push(`${I}${b.access === 'read' ? 'const ' : ''}${t} *const restrict ${b.name} = (${b.access === 'read' ? 'const ' : ''}${t} *)rn_b[${i}];`);
    });
    k.scalars.forEach((s, i) => lines.push(`${I}const ${TYPE[s.type]} ${s.name} = ${s.type === 'f32' ? `rn_bits_f((uint32_t)rn_s[${i}])` : `rn_s[${i}]`};`));
    let off = 0;
    for (const s of k.shared) {
      lines.push(`${I}${TYPE[s.type]} *const restrict ${s.name} = (${TYPE[s.type]} *)(rn_scratch + ${off});`);
      off += Math.ceil((s.size * ELEM_BYTES[s.type]) / 64) * 64;
    }
    lines.push(`${I}(void)rn_n; (void)rn_s; (void)rn_scratch; (void)rn_err;`);
    const divAt = lines.length;
    lines.push(`${I}const int64_t rn_gx = rn_g[0], rn_gy = rn_g[1];`);
    lines.push(`${I}for (int64_t rn_l = rn_begin; rn_l < rn_end; rn_l++) {`);
    if (checks) lines.push(`${I}${I}if (__atomic_load_n(rn_err, __ATOMIC_RELAXED)) return;`);
    lines.push(`${I}${I}const int32_t wg_x = (int32_t)(rn_l % rn_gx), wg_y = (int32_t)((rn_l / rn_gx) % rn_gy), wg_z = (int32_t)(rn_l / (rn_gx * rn_gy));`);
    lines.push(`${I}${I}(void)wg_x; (void)wg_y; (void)wg_z;`);
    p.stmts(k.body, I + I, lines);
    lines.push(`${I}}`, '}', '');
    lines.splice(divAt, 0, ...[...p.divisors].map(([text, name]) => `${I}const rn_div ${name} = rn_div_make(${text});`));
    out.push(lines.join('\n'));
    entries.push({ kernel: k0, symbol, threads: split.threads, scratchBytes: off, sites: p.sites, checks });
  });
  return { code: out.join('\n'), entries };
}
