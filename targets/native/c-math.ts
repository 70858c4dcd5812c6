// C runtime helpers of the native target (targets/native/printer.ts) that GCC vectorises inside
// the `#pragma omp simd` work-item loops: no libm call, no branch (only selects).
//
// Transcendentals. The executor (targets/cpu/executor.ts) computes Math.fround(Math.f(x)) of an
// f32 x: the float64 function, rounded once. These compute the float64 function with an error of
// a few float64 ulps (argument reduction with exact split constants, Taylor polynomials truncated
// below 1e-17), so the f32 rounding equals the executor's except where f(x) lies within ~1e-15
// relative of a midpoint between two floats (tests/native-math.test.ts measures it; none seen).
// Compiled with -fno-fast-math -ffp-contract=off: every double operation rounds as written.
// Overflow, underflow and subnormal results come from the one (float) conversion of a double that
// is still in range, so they round as the executor's fround does; NaN propagates.
//
// Integer division by a divisor that is the same for every work-item (a kernel scalar expression):
// rn_div_make computes once per kernel call a multiplier m < 2^32 and a shift k (round-up method,
// Granlund-Montgomery): for n = |a| <= 2^31 and D = |d|, l = ceil(log2 D), k = 31 + l,
// m = ceil(2^k / D), e = m D - 2^k < 2^l, so n e < 2^k and floor(n m / 2^k) = floor(n / D) with
// n m < 2^63. The sign is applied after (truncation toward zero); d = 0 gives m = 0, so x / 0 = 0,
// and x % 0 = 0 by a mask; INT_MIN / -1 wraps to INT_MIN and x % -1 = 0, the IR's semantics.

/** Shortest decimal that reads back as the same double. */
const lit = (x: number): string => { const s = String(x); return /[.e]/.test(s) ? s : `${s}.0`; };
const fact = (n: number): number => { let f = 1; for (let i = 2; i <= n; i++) f *= i; return f; };
/**
 * The polynomial with `coefs` (highest first) in `v`, as C text, by Estrin's scheme: pairs, then
 * pairs of pairs in v^2, v^4, ...: a dependency chain of about 2 log2(n) operations instead of
 * Horner's 2n, so the scalar fallback (a loop GCC does not vectorise) is not latency-bound.
 */
function poly(v: string, coefs: readonly number[]): string {
  let terms = [...coefs].reverse().map(lit), pw = v;
  while (terms.length > 1) {
    const next: string[] = [];
    for (let i = 0; i < terms.length; i += 2) next.push(i + 1 < terms.length ? `(${terms[i]} + ${pw} * ${terms[i + 1]})` : terms[i]!);
    terms = next;
    pw = `(${pw} * ${pw})`;
  }
  return terms[0]!;
}

// (e^r - 1 - r) / r^2 = sum r^(n-2) / n!, n = 2..13: truncation below 2e-18 relative for |r| <= 0.35.
const EXPM1_P = Array.from({ length: 12 }, (_, i) => 1 / fact(13 - i));
// log1p(f) = f - hfsq + s (hfsq + R), R = sum 2 z^i / (2i + 1), i = 1..10, z = s^2 <= 0.0295.
const LOG_R = Array.from({ length: 10 }, (_, i) => 2 / (2 * (10 - i) + 1));
// sin r = r + r^3 S(r^2), S = sum (-1)^n r^(2n-2) / (2n+1)!, n = 1..9; cos r = 1 - r^2/2 + r^4 C(r^2), n = 2..9.
const SIN_S = Array.from({ length: 9 }, (_, i) => ((9 - i) % 2 ? -1 : 1) / fact(2 * (9 - i) + 1));
const COS_C = Array.from({ length: 8 }, (_, i) => ((9 - i) % 2 ? -1 : 1) / fact(2 * (9 - i)));

/** |x| up to which sin and cos reduce by Cody-Waite (n * PIO2_1 exact for n < 2^20); larger arguments go to libm. */
export const TRIG_FAST_LIMIT = 262144;

export const C_MATH = String.raw`
/* Always inlined: a large translation unit (a whole model) exhausts GCC's inlining budget, and a call is not vectorised. */
#define RN_INLINE static inline __attribute__((always_inline))
/* An int64 index in [0, n), without a branch (the pre-check loops of printer.ts). */
#define RN_IN64(i, n) ((uint64_t)(i) < (uint64_t)(n))
RN_INLINE float rn_sel_f(int32_t c, float a, float b) { return c ? a : b; }
RN_INLINE int32_t rn_sel_i(int32_t c, int32_t a, int32_t b) { return c ? a : b; }
RN_INLINE double rn_d_bits(uint64_t u) { double d; memcpy(&d, &u, 8); return d; }
RN_INLINE uint64_t rn_bits_d(double d) { uint64_t u; memcpy(&u, &d, 8); return u; }
#define RN_MAGIC 0x1.8p52 /* adding it rounds a double below 2^51 to an integer, held in the low mantissa bits */
#define RN_LN2_HI 0x1.62e42fee00000p-1 /* 32 bits: k * RN_LN2_HI is exact */
#define RN_LN2_LO 0x1.a39ef35793c76p-33
#define RN_INVLN2 0x1.71547652b82fep+0
#define RN_LN2 0x1.62e42fefa39efp-1
/* e^r - 1 for |r| <= 0.35. */
RN_INLINE double rn_expm1_poly(double r) { return r + r * (r * (${poly('r', EXPM1_P)})); }
/* 2^k for an integer k in [-1022, 1023] held as the low bits of t = k + RN_MAGIC. */
RN_INLINE double rn_pow2_of(double t) { return rn_d_bits((rn_bits_d(t) - rn_bits_d(RN_MAGIC) + 1023u) << 52); }
/* e^y for y in [-700, 700] (or NaN). */
RN_INLINE double rn_exp_d(double y) {
  const double t = y * RN_INVLN2 + RN_MAGIC, kd = t - RN_MAGIC;
  const double r = (y - kd * RN_LN2_HI) - kd * RN_LN2_LO;
  return (1.0 + rn_expm1_poly(r)) * rn_pow2_of(t);
}
/* e^y - 1 for y in [-700, 700]: exact r when k = 0, 2^k q + (2^k - 1) otherwise. */
RN_INLINE double rn_expm1_d(double y) {
  const double t = y * RN_INVLN2 + RN_MAGIC, kd = t - RN_MAGIC;
  const double r = (y - kd * RN_LN2_HI) - kd * RN_LN2_LO, s = rn_pow2_of(t);
  return s * rn_expm1_poly(r) + (s - 1.0);
}
/* Every condition computed unconditionally (&, not &&; one select each): GCC will not if-convert a comparison that
   may not run, as a comparison of NaN traps under -ftrapping-math. */
RN_INLINE double rn_clampd(double y, double lo, double hi) { const double a = y < lo ? lo : y; return a > hi ? hi : a; }
RN_INLINE float rn_exp(float x) { return (float)rn_exp_d(rn_clampd((double)x, -120.0, 100.0)); }
RN_INLINE float rn_exp2(float x) {
  const double y = rn_clampd((double)x, -200.0, 200.0), t = y + RN_MAGIC, r = y - (t - RN_MAGIC);
  return (float)((1.0 + rn_expm1_poly(r * RN_LN2)) * rn_pow2_of(t));
}
/* For a positive normal double x: k and f with x = 2^k (1 + f), 1 + f in [sqrt(1/2), sqrt(2)); returns log1p(f); *kd = k. */
RN_INLINE double rn_log_parts(double x, double *kd) {
  uint64_t u = rn_bits_d(x) + ((uint64_t)(0x3ff00000u - 0x3fe6a09eu) << 32);
  *kd = rn_d_bits(0x4330000000000000ull | (u >> 52)) - (0x1p52 + 1023.0);
  const double f = rn_d_bits((u & 0x000fffffffffffffull) + ((uint64_t)0x3fe6a09eu << 32)) - 1.0;
  const double hfsq = 0.5 * f * f, s = f / (2.0 + f), z = s * s, R = z * (${poly('z', LOG_R)});
  return f - (hfsq - s * (hfsq + R));
}
/* log of a double: special values as Math.log (NaN below 0, -inf at 0, +inf at +inf). */
RN_INLINE double rn_log_d(double x) {
  const int pos = x > 0.0, fin = x < INFINITY, zero = x == 0.0;
  const double xs = (pos & fin) ? x : 1.0;
  double kd; const double l = rn_log_parts(xs, &kd);
  const double r = kd * RN_LN2_HI + (l + kd * RN_LN2_LO), special = zero ? -INFINITY : pos ? x : NAN;
  return (pos & fin) ? r : special;
}
RN_INLINE float rn_log(float x) { return (float)rn_log_d((double)x); }
RN_INLINE float rn_log2(float xf) {
  const double x = (double)xf;
  const int pos = x > 0.0, fin = x < INFINITY, zero = x == 0.0;
  const double xs = (pos & fin) ? x : 1.0;
  double kd; const double l = rn_log_parts(xs, &kd);
  const double r = kd + l * RN_INVLN2, special = zero ? -INFINITY : pos ? x : NAN;
  return (float)((pos & fin) ? r : special);
}
/* 1 + x is exact in double for a float |x| >= 2^-29; below, log1p(x) rounds to x itself. */
RN_INLINE float rn_log1p(float xf) {
  const double x = (double)xf;
  const int tiny = (x < 0x1p-29) & (x > -0x1p-29);
  const float l = (float)rn_log_d(1.0 + x);
  return tiny ? xf : l;
}
/* tanh |x| = e / (e + 2), e = expm1(2 |x|); |x| >= 20 rounds to 1 in double already. */
RN_INLINE float rn_tanh(float xf) {
  const double x = (double)xf, a = rn_clampd(fabs(x), 0.0, 20.0);
  const double e = rn_expm1_d(2.0 * a), t = e / (e + 2.0);
  const float r = (float)copysign(t, x);
  return x != x ? xf : r;
}
RN_INLINE float rn_rsqrt(float x) { return (float)(1.0 / sqrt((double)x)); }
#define RN_PIO2_1 0x1.921fb54400000p+0 /* 33 bits each: n * RN_PIO2_1 and n * RN_PIO2_2 are exact for n < 2^20 */
#define RN_PIO2_2 0x1.0b4611a600000p-34
#define RN_PIO2_3 0x1.3198a2e037073p-69
#define RN_INV_PIO2 0x1.45f306dc9c883p-1
#define RN_TRIG_FAST ${lit(TRIG_FAST_LIMIT)}f
/* sin (c = 0) or cos (c = 1) of x, |x| <= RN_TRIG_FAST: r = x - n pi/2 to ~119 bits of pi/2, then quadrant n + c. */
RN_INLINE float rn_sincos_fast(float xf, uint64_t c) {
  const double x = (double)xf, t = x * RN_INV_PIO2 + RN_MAGIC, n = t - RN_MAGIC;
  const double r = ((x - n * RN_PIO2_1) - n * RN_PIO2_2) - n * RN_PIO2_3, z = r * r;
  const double s = r + r * (z * (${poly('z', SIN_S)}));
  const double hz = 0.5 * z, w = 1.0 - hz;
  const double co = w + (((1.0 - w) - hz) + z * (z * (${poly('z', COS_C)})));
  const uint64_t q = rn_bits_d(t) - rn_bits_d(RN_MAGIC) + c;
  const double v = (q & 1u) ? co : (r < 0x1p-27 && r > -0x1p-27) ? r : s; /* sin r = r there; keeps sin(-0) = -0 */
  return (float)((q & 2u) ? -v : v);
}
static float rn_sin_slow(float x) { return (float)sin((double)x); }
static float rn_cos_slow(float x) { return (float)cos((double)x); }
/* libm, rounded once, for scalar code (printer.ts uses these where accesses are checked). */
static inline float rn_exp_s(float x) { return (float)exp((double)x); }
static inline float rn_exp2_s(float x) { return (float)pow(2.0, (double)x); }
static inline float rn_log_s(float x) { return (float)log((double)x); }
static inline float rn_log2_s(float x) { return (float)log2((double)x); }
static inline float rn_log1p_s(float x) { return (float)log1p((double)x); }
static inline float rn_sin_s(float x) { return (float)sin((double)x); }
static inline float rn_cos_s(float x) { return (float)cos((double)x); }
static inline float rn_tanh_s(float x) { return (float)tanh((double)x); }
/* In a loop that can run again (printer.ts): the fast path, and *big set where it does not apply. */
RN_INLINE float rn_sin_v(float x, int32_t *big) { *big |= !(fabsf(x) <= RN_TRIG_FAST); return rn_sincos_fast(x, 0); }
RN_INLINE float rn_cos_v(float x, int32_t *big) { *big |= !(fabsf(x) <= RN_TRIG_FAST); return rn_sincos_fast(x, 1); }
/* Elsewhere: one select (not vectorised where the libm call stays). */
RN_INLINE float rn_sin(float x) { return fabsf(x) <= RN_TRIG_FAST ? rn_sincos_fast(x, 0) : rn_sin_slow(x); }
RN_INLINE float rn_cos(float x) { return fabsf(x) <= RN_TRIG_FAST ? rn_sincos_fast(x, 1) : rn_cos_slow(x); }

typedef struct { uint32_t m; int32_t k, sign, d, nz; } rn_div;
static rn_div rn_div_make(int32_t d) {
  rn_div v;
  const uint32_t D = d < 0 ? 0u - (uint32_t)d : (uint32_t)d;
  int l = 0;
  while (l < 32 && ((uint64_t)1 << l) < D) l++;
  v.k = 31 + l;
  v.m = D ? (uint32_t)((((uint64_t)1 << v.k) + D - 1) / D) : 0u;
  v.sign = d < 0 ? -1 : 0; v.d = d; v.nz = d ? -1 : 0;
  return v;
}
RN_INLINE int32_t rn_divq(int32_t a, rn_div v) {
  const uint32_t sa = (uint32_t)(a >> 31), n = ((uint32_t)a ^ sa) - sa;
  const uint32_t qu = (uint32_t)(((uint64_t)n * v.m) >> v.k), s = sa ^ (uint32_t)v.sign;
  return (int32_t)((qu ^ s) - s);
}
RN_INLINE int32_t rn_divr(int32_t a, rn_div v) { return (int32_t)(((uint32_t)a - (uint32_t)rn_divq(a, v) * (uint32_t)v.d) & (uint32_t)v.nz); }
`;
