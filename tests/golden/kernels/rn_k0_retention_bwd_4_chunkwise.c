/* retnetc native kernel: GNU C11 with vector extensions. Build it as the runtime does (the flags
 * of targets/native/compile.ts: -std=gnu11 -O3 -march=native, never fast-math, -ffp-contract=off,
 * -fwrapv, -fopenmp-simd, -shared -fPIC, -lm): the f32 results depend on them.
 * void ENTRY(void *const *rn_b, const int64_t *rn_n, const int32_t *rn_s, const int32_t *rn_g,
 *            int64_t rn_begin, int64_t rn_end, unsigned char *rn_scratch, int32_t *rn_err)
 *   rn_b[i], rn_n[i]: buffer i (the manifest's binding) and its element count;
 *   rn_s[i]: scalar i (i32, or an f32's bits); rn_g[3]: workgroups per dimension;
 *   runs the workgroups rn_begin .. rn_end - 1 of the grid flattened x fastest (a caller splits
 *   the range over its threads); rn_scratch: scratchBytes per calling thread, 64-byte aligned;
 *   rn_err: 8 int32, zero before the launch; nonzero rn_err[0] after it means an out-of-bounds
 *   access (site, index, length, workgroup x y z, thread), and the results are not to be used. */
#include <stdint.h>
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
RN_INLINE double rn_expm1_poly(double r) { return r + r * (r * (((((0.5 + r * 0.16666666666666666) + (r * r) * (0.041666666666666664 + r * 0.008333333333333333)) + ((r * r) * (r * r)) * ((0.001388888888888889 + r * 0.0001984126984126984) + (r * r) * (0.0000248015873015873 + r * 0.0000027557319223985893))) + (((r * r) * (r * r)) * ((r * r) * (r * r))) * ((2.755731922398589e-7 + r * 2.505210838544172e-8) + (r * r) * (2.08767569878681e-9 + r * 1.6059043836821613e-10))))); }
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
  const double hfsq = 0.5 * f * f, s = f / (2.0 + f), z = s * s, R = z * (((((0.6666666666666666 + z * 0.4) + (z * z) * (0.2857142857142857 + z * 0.2222222222222222)) + ((z * z) * (z * z)) * ((0.18181818181818182 + z * 0.15384615384615385) + (z * z) * (0.13333333333333333 + z * 0.11764705882352941))) + (((z * z) * (z * z)) * ((z * z) * (z * z))) * (0.10526315789473684 + z * 0.09523809523809523)));
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
#define RN_TRIG_FAST 262144.0f
/* sin (c = 0) or cos (c = 1) of x, |x| <= RN_TRIG_FAST: r = x - n pi/2 to ~119 bits of pi/2, then quadrant n + c. */
RN_INLINE float rn_sincos_fast(float xf, uint64_t c) {
  const double x = (double)xf, t = x * RN_INV_PIO2 + RN_MAGIC, n = t - RN_MAGIC;
  const double r = ((x - n * RN_PIO2_1) - n * RN_PIO2_2) - n * RN_PIO2_3, z = r * r;
  const double s = r + r * (z * (((((-0.16666666666666666 + z * 0.008333333333333333) + (z * z) * (-0.0001984126984126984 + z * 0.0000027557319223985893)) + ((z * z) * (z * z)) * ((-2.505210838544172e-8 + z * 1.6059043836821613e-10) + (z * z) * (-7.647163731819816e-13 + z * 2.8114572543455206e-15))) + (((z * z) * (z * z)) * ((z * z) * (z * z))) * -8.22063524662433e-18)));
  const double hz = 0.5 * z, w = 1.0 - hz;
  const double co = w + (((1.0 - w) - hz) + z * (z * ((((0.041666666666666664 + z * -0.001388888888888889) + (z * z) * (0.0000248015873015873 + z * -2.755731922398589e-7)) + ((z * z) * (z * z)) * ((2.08767569878681e-9 + z * -1.1470745597729725e-11) + (z * z) * (4.779477332387385e-14 + z * -1.5619206968586225e-16))))));
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

/* Lane loops (targets/native/lanes.ts) as vectors: an access of w elements at i is in range. */
#if defined(__FMA__) || defined(__AVX512F__)
#include <immintrin.h>
#endif
#define RN_VIN(i, w, n) ((uint64_t)(uint32_t)(i) + (uint64_t)(w) <= (uint64_t)(n))
typedef float rn_vf4 __attribute__((vector_size(16)));
static inline rn_vf4 rn_vld4(const float *p) { rn_vf4 v; memcpy(&v, p, sizeof v); return v; }
static inline void rn_vst4(float *p, rn_vf4 v) { memcpy(p, &v, sizeof v); }
static inline rn_vf4 rn_vsplat4(float s) { return (rn_vf4){s, s, s, s}; }
#if defined(__FMA__)
static inline rn_vf4 rn_vfma4(rn_vf4 x, rn_vf4 y, rn_vf4 z) { return (rn_vf4)_mm_fmadd_ps((__m128)x, (__m128)y, (__m128)z); }
static inline rn_vf4 rn_vfmas4(float x, rn_vf4 y, rn_vf4 z) { return (rn_vf4)_mm_fmadd_ps(_mm_set1_ps(x), (__m128)y, (__m128)z); }
#else
static inline rn_vf4 rn_vfma4(rn_vf4 x, rn_vf4 y, rn_vf4 z) { rn_vf4 r; for (int i = 0; i < 4; i++) r[i] = fmaf(x[i], y[i], z[i]); return r; }
static inline rn_vf4 rn_vfmas4(float x, rn_vf4 y, rn_vf4 z) { rn_vf4 r; for (int i = 0; i < 4; i++) r[i] = fmaf(x, y[i], z[i]); return r; }
#endif
typedef float rn_vf8 __attribute__((vector_size(32)));
static inline rn_vf8 rn_vld8(const float *p) { rn_vf8 v; memcpy(&v, p, sizeof v); return v; }
static inline void rn_vst8(float *p, rn_vf8 v) { memcpy(p, &v, sizeof v); }
static inline rn_vf8 rn_vsplat8(float s) { return (rn_vf8){s, s, s, s, s, s, s, s}; }
#if defined(__FMA__) && defined(__AVX__)
static inline rn_vf8 rn_vfma8(rn_vf8 x, rn_vf8 y, rn_vf8 z) { return (rn_vf8)_mm256_fmadd_ps((__m256)x, (__m256)y, (__m256)z); }
static inline rn_vf8 rn_vfmas8(float x, rn_vf8 y, rn_vf8 z) { return (rn_vf8)_mm256_fmadd_ps(_mm256_set1_ps(x), (__m256)y, (__m256)z); }
#elif defined(__FMA__)
static inline rn_vf8 rn_vfma8(rn_vf8 x, rn_vf8 y, rn_vf8 z) { rn_vf4 a[2], b[2], c[2]; memcpy(a, &x, sizeof a); memcpy(b, &y, sizeof b); memcpy(c, &z, sizeof c); c[0] = rn_vfma4(a[0], b[0], c[0]); c[1] = rn_vfma4(a[1], b[1], c[1]); memcpy(&z, c, sizeof c); return z; }
static inline rn_vf8 rn_vfmas8(float x, rn_vf8 y, rn_vf8 z) { rn_vf4 b[2], c[2]; memcpy(b, &y, sizeof b); memcpy(c, &z, sizeof c); c[0] = rn_vfmas4(x, b[0], c[0]); c[1] = rn_vfmas4(x, b[1], c[1]); memcpy(&z, c, sizeof c); return z; }
#else
static inline rn_vf8 rn_vfma8(rn_vf8 x, rn_vf8 y, rn_vf8 z) { rn_vf8 r; for (int i = 0; i < 8; i++) r[i] = fmaf(x[i], y[i], z[i]); return r; }
static inline rn_vf8 rn_vfmas8(float x, rn_vf8 y, rn_vf8 z) { rn_vf8 r; for (int i = 0; i < 8; i++) r[i] = fmaf(x, y[i], z[i]); return r; }
#endif
typedef float rn_vf16 __attribute__((vector_size(64)));
static inline rn_vf16 rn_vld16(const float *p) { rn_vf16 v; memcpy(&v, p, sizeof v); return v; }
static inline void rn_vst16(float *p, rn_vf16 v) { memcpy(p, &v, sizeof v); }
static inline rn_vf16 rn_vsplat16(float s) { return (rn_vf16){s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s}; }
#if defined(__AVX512F__)
static inline rn_vf16 rn_vfma16(rn_vf16 x, rn_vf16 y, rn_vf16 z) { return (rn_vf16)_mm512_fmadd_ps((__m512)x, (__m512)y, (__m512)z); }
static inline rn_vf16 rn_vfmas16(float x, rn_vf16 y, rn_vf16 z) { return (rn_vf16)_mm512_fmadd_ps(_mm512_set1_ps(x), (__m512)y, (__m512)z); }
#elif defined(__FMA__) && defined(__AVX__)
static inline rn_vf16 rn_vfma16(rn_vf16 x, rn_vf16 y, rn_vf16 z) { rn_vf8 a[2], b[2], c[2]; memcpy(a, &x, sizeof a); memcpy(b, &y, sizeof b); memcpy(c, &z, sizeof c); c[0] = rn_vfma8(a[0], b[0], c[0]); c[1] = rn_vfma8(a[1], b[1], c[1]); memcpy(&z, c, sizeof c); return z; }
static inline rn_vf16 rn_vfmas16(float x, rn_vf16 y, rn_vf16 z) { rn_vf8 b[2], c[2]; memcpy(b, &y, sizeof b); memcpy(c, &z, sizeof c); c[0] = rn_vfmas8(x, b[0], c[0]); c[1] = rn_vfmas8(x, b[1], c[1]); memcpy(&z, c, sizeof c); return z; }
#else
static inline rn_vf16 rn_vfma16(rn_vf16 x, rn_vf16 y, rn_vf16 z) { rn_vf16 r; for (int i = 0; i < 16; i++) r[i] = fmaf(x[i], y[i], z[i]); return r; }
static inline rn_vf16 rn_vfmas16(float x, rn_vf16 y, rn_vf16 z) { rn_vf16 r; for (int i = 0; i < 16; i++) r[i] = fmaf(x, y[i], z[i]); return r; }
#endif

// kernel IR 'retention_bwd_4_chunkwise': workgroup 64x1x1 (64 work-items per workgroup)
void rn_k0_retention_bwd_4_chunkwise(void *const *rn_b, const int64_t *rn_n, const int32_t *rn_s, const int32_t *rn_g, int64_t rn_begin, int64_t rn_end, unsigned char *rn_scratch, int32_t *rn_err) {
  const float *const restrict _decay1_o = (const float *)rn_b[0];
  const float *const restrict gamma = (const float *)rn_b[1];
  const float *const restrict grad_o = (const float *)rn_b[2];
  const float *const restrict v = (const float *)rn_b[3];
  const float *const restrict q = (const float *)rn_b[4];
  float *const restrict _d_k_11 = (float *)rn_b[5];
  const int32_t size_B = rn_s[0];
  const int32_t size_H = rn_s[1];
  const int32_t size_T = rn_s[2];
  float *const restrict P = (float *)(rn_scratch + 0);
  float *const restrict wr = (float *)(rn_scratch + 2048);
  float *const restrict we = (float *)(rn_scratch + 2304);
  float *const restrict wd = (float *)(rn_scratch + 2560);
  float *const restrict red = (float *)(rn_scratch + 2816);
  float *const restrict S_ctx = (float *)(rn_scratch + 11008);
  float *const restrict acc_ctx = (float *)(rn_scratch + 27392);
  float *const restrict qs_ctx = (float *)(rn_scratch + 28416);
  float *const restrict wc_ctx = (float *)(rn_scratch + 29440);
  float *const restrict dots_ctx = (float *)(rn_scratch + 30464);
  float *const restrict ai_ctx = (float *)(rn_scratch + 32512);
  float *const restrict carry_ctx = (float *)(rn_scratch + 32768);
  float *const restrict bi1_ctx = (float *)(rn_scratch + 33024);
  (void)rn_n; (void)rn_s; (void)rn_scratch; (void)rn_err;
  const rn_div rn_dv0 = rn_div_make(size_H);
  const int64_t rn_gx = rn_g[0], rn_gy = rn_g[1];
  for (int64_t rn_l = rn_begin; rn_l < rn_end; rn_l++) {
    if (__atomic_load_n(rn_err, __ATOMIC_RELAXED)) return;
    const int32_t wg_x = (int32_t)(rn_l % rn_gx), wg_y = (int32_t)((rn_l / rn_gx) % rn_gy), wg_z = (int32_t)(rn_l / (rn_gx * rn_gy));
    (void)wg_x; (void)wg_y; (void)wg_z;
    int32_t b_h = rn_divr(wg_y, rn_dv0);
    int32_t b_b = rn_divq(wg_y, rn_dv0);
    for (int32_t rn_bo = 0; rn_bo < 4; rn_bo++) { /* blocks of 16 work-items */
      #pragma omp simd /* work-item loop */
      for (int32_t rn_bi = 0; rn_bi < 16; rn_bi += 1) {
        int32_t rn_t = rn_bo * 16 + rn_bi;
        int32_t j = wg_x * 64 + rn_bi;
        int32_t kt = rn_bo * 16 / 16;
      }
    }
    for (int32_t i = 0; i < 64; i += 1) {
      if (RN_SPAN((int64_t)(i * 64) + 1 * (int64_t)(0), (int64_t)(i * 64) + 1 * ((int64_t)(64) - 1), 4096)) {
        #pragma omp simd /* work-item loop */
        for (int32_t rn_t = 0; rn_t < 64; rn_t += 1) {
          S_ctx[(int64_t)(i * 64) + (int64_t)rn_t] = 0.0f;
        }
      } else {
        #pragma omp simd /* work-item loop */
        for (int32_t rn_t = 0; rn_t < 64; rn_t += 1) {
          { const int32_t rn_i = i * 64 + rn_t; if (RN_IN(rn_i, 4096)) S_ctx[rn_i] = 0.0f; else rn_oob(rn_err, 0, rn_i, 4096, wg_x, wg_y, wg_z, rn_t); }
        }
      }
    }
    #pragma omp simd /* work-item loop */
    for (int32_t rn_t = 0; rn_t < 64; rn_t += 1) {
    }
    for (int32_t c0 = 0; c0 < size_T; c0 += 64) {
      int32_t len = rn_imin(64, size_T - c0);
      int32_t pe = size_T - 1 - (c0 - 1);
      int32_t pl = size_T - 1 - (c0 + (len - 1));
      #pragma omp simd /* work-item loop */
      for (int32_t rn_t = 0; rn_t < 64; rn_t += 1) {
        for (int32_t m = rn_t; m < len; m += 64) {
          int32_t pm = size_T - 1 - (c0 + m);
          if (c0 > 0) {
            { const int32_t rn_i = m; if (RN_IN(rn_i, 64)) wr[rn_i] = rn_exp_s((float)(pe - pm) * rn_ldf(_decay1_o, rn_n[0], b_h, rn_err, 1, wg_x, wg_y, wg_z, rn_t)) * (rn_ldf(gamma, rn_n[1], b_h, rn_err, 2, wg_x, wg_y, wg_z, rn_t) < 0.0f && (pe - pm) % 2 != 0 ? -1.0f : 1.0f); else rn_oob(rn_err, 3, rn_i, 64, wg_x, wg_y, wg_z, rn_t); }
          }
          { const int32_t rn_i = m; if (RN_IN(rn_i, 64)) we[rn_i] = rn_exp_s((float)(pm - pl) * rn_ldf(_decay1_o, rn_n[0], b_h, rn_err, 4, wg_x, wg_y, wg_z, rn_t)) * (rn_ldf(gamma, rn_n[1], b_h, rn_err, 5, wg_x, wg_y, wg_z, rn_t) < 0.0f && (pm - pl) % 2 != 0 ? -1.0f : 1.0f); else rn_oob(rn_err, 6, rn_i, 64, wg_x, wg_y, wg_z, rn_t); }
          { const int32_t rn_i = m; if (RN_IN(rn_i, 64)) wd[rn_i] = rn_exp_s((float)(size_T - 1 - c0 - pm) * rn_ldf(_decay1_o, rn_n[0], b_h, rn_err, 7, wg_x, wg_y, wg_z, rn_t)) * (rn_ldf(gamma, rn_n[1], b_h, rn_err, 8, wg_x, wg_y, wg_z, rn_t) < 0.0f && (size_T - 1 - c0 - pm) % 2 != 0 ? -1.0f : 1.0f); else rn_oob(rn_err, 9, rn_i, 64, wg_x, wg_y, wg_z, rn_t); }
        }
      }
      for (int32_t r0 = 0; r0 < len; r0 += 8) {
        for (int32_t rn_bo = 0; rn_bo < 1; rn_bo++) { /* blocks of 64 work-items */
          #pragma omp simd /* work-item loop */
          for (int32_t rn_bi = 0; rn_bi < 64; rn_bi += 1) {
            int32_t rn_t = rn_bo * 64 + rn_bi;
            int32_t m2 = rn_bi;
            int32_t pm2 = size_T - 1 - (c0 + rn_imin(m2, len - 1));
          }
        }
        for (int32_t n = 0; n < 8; n += 1) {
          if (RN_SPAN((int64_t)(n * 64) + 1 * (int64_t)(0), (int64_t)(n * 64) + 1 * ((int64_t)(64) - 1), 512)) {
            #pragma omp simd /* work-item loop */
            for (int32_t rn_t = 0; rn_t < 64; rn_t += 1) {
              dots_ctx[(int64_t)(n * 64) + (int64_t)rn_t] = 0.0f;
            }
          } else {
            #pragma omp simd /* work-item loop */
            for (int32_t rn_t = 0; rn_t < 64; rn_t += 1) {
              { const int32_t rn_i = n * 64 + rn_t; if (RN_IN(rn_i, 512)) dots_ctx[rn_i] = 0.0f; else rn_oob(rn_err, 10, rn_i, 512, wg_x, wg_y, wg_z, rn_t); }
            }
          }
        }
        for (int32_t rn_bo = 0; rn_bo < 1; rn_bo++) { /* blocks of 64 work-items */
          #pragma omp simd /* work-item loop */
          for (int32_t rn_bi = 0; rn_bi < 64; rn_bi += 1) {
            int32_t rn_t = rn_bo * 64 + rn_bi;
            int32_t m2 = rn_bi;
            int32_t pm2 = size_T - 1 - (c0 + rn_imin(m2, len - 1));
            if (m2 < rn_imin(len, r0 + 8)) {
              for (int32_t i1 = 0; i1 < 64; i1 += 1) {
                float bi = rn_ldf(grad_o, rn_n[2], ((b_b * size_H + b_h) * size_T + pm2) * 64 + i1, rn_err, 11, wg_x, wg_y, wg_z, rn_t);
                for (int32_t n1 = 0; n1 < 8; n1 += 1) {
                  { const int32_t rn_i = n1 * 64 + rn_t; if (RN_IN(rn_i, 512)) dots_ctx[rn_i] = rn_ldf(dots_ctx, 512, n1 * 64 + rn_t, rn_err, 12, wg_x, wg_y, wg_z, rn_t) + rn_ldf(v, rn_n[3], ((b_b * size_H + b_h) * size_T + (size_T - 1 - (c0 + rn_imin(r0 + (rn_t + n1 * 64) / 64, len - 1)))) * 64 + i1, rn_err, 13, wg_x, wg_y, wg_z, rn_t) * bi; else rn_oob(rn_err, 14, rn_i, 512, wg_x, wg_y, wg_z, rn_t); }
                }
              }
            }
          }
        }
        for (int32_t n2 = 0; n2 < 8; n2 += 1) {
          for (int32_t rn_bo = 0; rn_bo < 1; rn_bo++) { /* blocks of 64 work-items */
            if ((rn_bo * 64 + n2 * 64 >= 0)) {
              {
                int32_t rn_all = RN_SPAN((int64_t)(rn_bo * 64 + n2 * 64) + 1 * (int64_t)(0), (int64_t)(rn_bo * 64 + n2 * 64) + 1 * ((int64_t)(64) - 1), 512) && RN_SPAN((int64_t)(n2 * 64 + rn_bo * 64) + 1 * (int64_t)(0), (int64_t)(n2 * 64 + rn_bo * 64) + 1 * ((int64_t)(64) - 1), 512) && RN_SPAN((int64_t)(r0 + (rn_bo * 64 + n2 * 64) / 64) + -1 * ((int64_t)(64) - 1), (int64_t)(r0 + (rn_bo * 64 + n2 * 64) / 64) + -1 * (int64_t)(0), 64);
                if (rn_all) {
                  int32_t rn_cond = 1;
                  #pragma omp simd reduction(&:rn_cond) /* bounds pre-check */
                  for (int32_t rn_bi = 0; rn_bi < 64; rn_bi += 1) {
                    int32_t rn_t = rn_bo * 64 + rn_bi;
                    int32_t m2 = rn_bi;
                    int32_t e = rn_t + n2 * 64;
                    int32_t m1 = r0 + (rn_bo * 64 + n2 * 64) / 64;
                    int32_t pm1 = size_T - 1 - (c0 + m1);
                    rn_cond &= (m1 < len && m2 <= m1);
                  }
                  rn_all = rn_cond;
                }
                if (rn_all) {
                  #pragma omp simd /* work-item loop */
                  for (int32_t rn_bi = 0; rn_bi < 64; rn_bi += 1) {
                    int32_t rn_t = rn_bo * 64 + rn_bi;
                    int32_t m2 = rn_bi;
                    int32_t e = rn_t + n2 * 64;
                    int32_t m1 = r0 + (rn_bo * 64 + n2 * 64) / 64;
                    P[(int64_t)(rn_bo * 64 + n2 * 64) + (int64_t)rn_bi] = 0.0f;
                    int32_t pm1 = size_T - 1 - (c0 + m1);
                    P[(int64_t)(rn_bo * 64 + n2 * 64) + (int64_t)rn_bi] = dots_ctx[(int64_t)(n2 * 64 + rn_bo * 64) + (int64_t)rn_bi] * wd[(int64_t)(r0 + (rn_bo * 64 + n2 * 64) / 64) + -1 * (int64_t)rn_bi];
                  }
                } else {
                  if (RN_SPAN((int64_t)(rn_bo * 64 + n2 * 64) + 1 * (int64_t)(0), (int64_t)(rn_bo * 64 + n2 * 64) + 1 * ((int64_t)(64) - 1), 512) && RN_SPAN((int64_t)(n2 * 64 + rn_bo * 64) + 1 * (int64_t)(0), (int64_t)(n2 * 64 + rn_bo * 64) + 1 * ((int64_t)(64) - 1), 512) && RN_SPAN((int64_t)(r0 + (rn_bo * 64 + n2 * 64) / 64) + -1 * ((int64_t)(64) - 1), (int64_t)(r0 + (rn_bo * 64 + n2 * 64) / 64) + -1 * (int64_t)(0), 64)) {
                    #pragma omp simd /* work-item loop */
                    for (int32_t rn_bi = 0; rn_bi < 64; rn_bi += 1) {
                      int32_t rn_t = rn_bo * 64 + rn_bi;
                      int32_t m2 = rn_bi;
                      int32_t e = rn_t + n2 * 64;
                      int32_t m1 = r0 + (rn_bo * 64 + n2 * 64) / 64;
                      P[(int64_t)(rn_bo * 64 + n2 * 64) + (int64_t)rn_bi] = 0.0f;
                      if (m1 < len && m2 <= m1) {
                        int32_t pm1 = size_T - 1 - (c0 + m1);
                        P[(int64_t)(rn_bo * 64 + n2 * 64) + (int64_t)rn_bi] = dots_ctx[(int64_t)(n2 * 64 + rn_bo * 64) + (int64_t)rn_bi] * wd[(int64_t)(r0 + (rn_bo * 64 + n2 * 64) / 64) + -1 * (int64_t)rn_bi];
                      }
                    }
                  } else {
                    #pragma omp simd /* work-item loop */
                    for (int32_t rn_bi = 0; rn_bi < 64; rn_bi += 1) {
                      int32_t rn_t = rn_bo * 64 + rn_bi;
                      int32_t m2 = rn_bi;
                      int32_t e = rn_t + n2 * 64;
                      int32_t m1 = r0 + (rn_bo * 64 + n2 * 64) / 64;
                      { const int32_t rn_i = e; if (RN_IN(rn_i, 512)) P[rn_i] = 0.0f; else rn_oob(rn_err, 15, rn_i, 512, wg_x, wg_y, wg_z, rn_t); }
                      if (m1 < len && m2 <= m1) {
                        int32_t pm1 = size_T - 1 - (c0 + m1);
                        { const int32_t rn_i = e; if (RN_IN(rn_i, 512)) P[rn_i] = rn_ldf(dots_ctx, 512, n2 * 64 + rn_t, rn_err, 16, wg_x, wg_y, wg_z, rn_t) * rn_ldf(wd, 64, m1 - m2, rn_err, 17, wg_x, wg_y, wg_z, rn_t); else rn_oob(rn_err, 18, rn_i, 512, wg_x, wg_y, wg_z, rn_t); }
                      }
                    }
                  }
                }
              }
            } else {
              #pragma omp simd /* work-item loop */
              for (int32_t rn_bi = 0; rn_bi < 64; rn_bi += 1) {
                int32_t rn_t = rn_bo * 64 + rn_bi;
                int32_t m2 = rn_t % 64;
                int32_t e = rn_t + n2 * 64;
                int32_t m1 = r0 + (rn_t + n2 * 64) / 64;
                { const int32_t rn_i = e; if (RN_IN(rn_i, 512)) P[rn_i] = 0.0f; else rn_oob(rn_err, 19, rn_i, 512, wg_x, wg_y, wg_z, rn_t); }
                if (m1 < len && m2 <= m1) {
                  int32_t pm1 = size_T - 1 - (c0 + m1);
                  { const int32_t rn_i = e; if (RN_IN(rn_i, 512)) P[rn_i] = rn_ldf(dots_ctx, 512, n2 * 64 + rn_t, rn_err, 20, wg_x, wg_y, wg_z, rn_t) * rn_ldf(wd, 64, m1 - m2, rn_err, 21, wg_x, wg_y, wg_z, rn_t); else rn_oob(rn_err, 22, rn_i, 512, wg_x, wg_y, wg_z, rn_t); }
                }
              }
            }
          }
        }
        for (int32_t mm = 0; mm < rn_imin(8, len - r0); mm += 1) {
          int32_t m3 = r0 + mm;
          int32_t pm3 = size_T - 1 - (c0 + m3);
          for (int32_t jc = 0; jc < 4; jc += 1) {
            if (RN_SPAN((int64_t)(jc * 64) + 1 * (int64_t)(0), (int64_t)(jc * 64) + 1 * ((int64_t)(64) - 1), 256)) {
              #pragma omp simd /* work-item loop */
              for (int32_t rn_t = 0; rn_t < 64; rn_t += 1) {
                acc_ctx[(int64_t)(jc * 64) + (int64_t)rn_t] = 0.0f;
                qs_ctx[(int64_t)(jc * 64) + (int64_t)rn_t] = 0.0f;
              }
            } else {
              #pragma omp simd /* work-item loop */
              for (int32_t rn_t = 0; rn_t < 64; rn_t += 1) {
                { const int32_t rn_i = jc * 64 + rn_t; if (RN_IN(rn_i, 256)) acc_ctx[rn_i] = 0.0f; else rn_oob(rn_err, 23, rn_i, 256, wg_x, wg_y, wg_z, rn_t); }
                { const int32_t rn_i = jc * 64 + rn_t; if (RN_IN(rn_i, 256)) qs_ctx[rn_i] = 0.0f; else rn_oob(rn_err, 24, rn_i, 256, wg_x, wg_y, wg_z, rn_t); }
              }
            }
          }
          for (int32_t rn_bo = 0; rn_bo < 4; rn_bo++) { /* blocks of 16 work-items */
            #pragma omp simd /* work-item loop */
            for (int32_t rn_bi = 0; rn_bi < 16; rn_bi += 1) {
              int32_t rn_t = rn_bo * 16 + rn_bi;
              int32_t j = wg_x * 64 + rn_bi;
              int32_t kt = rn_bo * 16 / 16;
              for (int32_t m2_ = kt; m2_ < m3 + 1; m2_ += 4) {
                float pv = rn_ldf(P, 512, mm * 64 + m2_, rn_err, 25, wg_x, wg_y, wg_z, rn_t);
                int32_t q2 = size_T - 1 - (c0 + m2_);
                if (RN_SPAN((int64_t)(rn_t) + 64 * (int64_t)(0), (int64_t)(rn_t) + 64 * ((int64_t)(4) - 1), 256) && RN_SPAN((int64_t)(((b_b * size_H + b_h) * size_T + q2) * 64 + j) + 16 * (int64_t)(0), (int64_t)(((b_b * size_H + b_h) * size_T + q2) * 64 + j) + 16 * ((int64_t)(4) - 1), rn_n[4])) {
                  for (int32_t jc1 = 0; jc1 < 4; jc1 += 1) {
                    acc_ctx[(int64_t)(rn_t) + 64 * (int64_t)jc1] = acc_ctx[(int64_t)(rn_t) + 64 * (int64_t)jc1] + pv * q[(int64_t)(((b_b * size_H + b_h) * size_T + q2) * 64 + j) + 16 * (int64_t)jc1];
                  }
                } else {
                  for (int32_t jc1 = 0; jc1 < 4; jc1 += 1) {
                    { const int32_t rn_i = jc1 * 64 + rn_t; if (RN_IN(rn_i, 256)) acc_ctx[rn_i] = rn_ldf(acc_ctx, 256, jc1 * 64 + rn_t, rn_err, 26, wg_x, wg_y, wg_z, rn_t) + pv * rn_ldf(q, rn_n[4], ((b_b * size_H + b_h) * size_T + q2) * 64 + (j + jc1 * 16), rn_err, 27, wg_x, wg_y, wg_z, rn_t); else rn_oob(rn_err, 28, rn_i, 256, wg_x, wg_y, wg_z, rn_t); }
                  }
                }
              }
            }
          }
          if (c0 > 0) {
            for (int32_t i2 = 0; i2 < 16; i2 += 1) {
              for (int32_t rn_bo = 0; rn_bo < 4; rn_bo++) { /* blocks of 16 work-items */
                {
                  int32_t rn_all = RN_SPAN((int64_t)(rn_bo * 16) + 1 * (int64_t)(0), (int64_t)(rn_bo * 16) + 1 * ((int64_t)(16) - 1), 64) && RN_SPAN((int64_t)(((b_b * size_H + b_h) * size_T + pm3) * 64 + (rn_bo * 16 / 16 * 16 + i2)), (int64_t)(((b_b * size_H + b_h) * size_T + pm3) * 64 + (rn_bo * 16 / 16 * 16 + i2)), rn_n[3]);
                  if (rn_all) {
                    #pragma omp simd /* work-item loop */
                    for (int32_t rn_bi = 0; rn_bi < 16; rn_bi += 1) {
                      int32_t rn_t = rn_bo * 16 + rn_bi;
                      int32_t kt = rn_bo * 16 / 16;
                      int32_t gi = kt * 16 + i2;
                      ai_ctx[(int64_t)(rn_bo * 16) + (int64_t)rn_bi] = v[((b_b * size_H + b_h) * size_T + pm3) * 64 + (rn_bo * 16 / 16 * 16 + i2)];
                    }
                  } else {
                    if (RN_SPAN((int64_t)(rn_bo * 16) + 1 * (int64_t)(0), (int64_t)(rn_bo * 16) + 1 * ((int64_t)(16) - 1), 64) && RN_SPAN((int64_t)(((b_b * size_H + b_h) * size_T + pm3) * 64 + (rn_bo * 16 / 16 * 16 + i2)), (int64_t)(((b_b * size_H + b_h) * size_T + pm3) * 64 + (rn_bo * 16 / 16 * 16 + i2)), rn_n[3])) {
                      #pragma omp simd /* work-item loop */
                      for (int32_t rn_bi = 0; rn_bi < 16; rn_bi += 1) {
                        int32_t rn_t = rn_bo * 16 + rn_bi;
                        int32_t kt = rn_bo * 16 / 16;
                        int32_t gi = kt * 16 + i2;
                        ai_ctx[(int64_t)(rn_bo * 16) + (int64_t)rn_bi] = v[((b_b * size_H + b_h) * size_T + pm3) * 64 + (rn_bo * 16 / 16 * 16 + i2)];
                      }
                    } else {
                      #pragma omp simd /* work-item loop */
                      for (int32_t rn_bi = 0; rn_bi < 16; rn_bi += 1) {
                        int32_t rn_t = rn_bo * 16 + rn_bi;
                        int32_t kt = rn_bo * 16 / 16;
                        int32_t gi = kt * 16 + i2;
                        ai_ctx[rn_t] = rn_ldf(v, rn_n[3], ((b_b * size_H + b_h) * size_T + pm3) * 64 + gi, rn_err, 29, wg_x, wg_y, wg_z, rn_t);
                      }
                    }
                  }
                }
              }
              for (int32_t jc2 = 0; jc2 < 4; jc2 += 1) {
                if (RN_SPAN((int64_t)(jc2 * 64) + 1 * (int64_t)(0), (int64_t)(jc2 * 64) + 1 * ((int64_t)(64) - 1), 256) && RN_SPAN((int64_t)((jc2 * 16 + i2) * 64) + 1 * (int64_t)(0), (int64_t)((jc2 * 16 + i2) * 64) + 1 * ((int64_t)(64) - 1), 4096)) {
                  #pragma omp simd /* work-item loop */
                  for (int32_t rn_t = 0; rn_t < 64; rn_t += 1) {
                    qs_ctx[(int64_t)(jc2 * 64) + (int64_t)rn_t] = qs_ctx[(int64_t)(jc2 * 64) + (int64_t)rn_t] + ai_ctx[(int64_t)rn_t] * S_ctx[(int64_t)((jc2 * 16 + i2) * 64) + (int64_t)rn_t];
                  }
                } else {
                  #pragma omp simd /* work-item loop */
                  for (int32_t rn_t = 0; rn_t < 64; rn_t += 1) {
                    { const int32_t rn_i = jc2 * 64 + rn_t; if (RN_IN(rn_i, 256)) qs_ctx[rn_i] = rn_ldf(qs_ctx, 256, jc2 * 64 + rn_t, rn_err, 30, wg_x, wg_y, wg_z, rn_t) + ai_ctx[rn_t] * rn_ldf(S_ctx, 4096, (jc2 * 16 + i2) * 64 + rn_t, rn_err, 31, wg_x, wg_y, wg_z, rn_t); else rn_oob(rn_err, 32, rn_i, 256, wg_x, wg_y, wg_z, rn_t); }
                  }
                }
              }
            }
            float wx = rn_ldf(wr, 64, m3, rn_err, 33, wg_x, wg_y, wg_z, -1);
            for (int32_t jc3 = 0; jc3 < 4; jc3 += 1) {
              if (RN_SPAN((int64_t)(jc3 * 64) + 1 * (int64_t)(0), (int64_t)(jc3 * 64) + 1 * ((int64_t)(64) - 1), 256)) {
                #pragma omp simd /* work-item loop */
                for (int32_t rn_t = 0; rn_t < 64; rn_t += 1) {
                  acc_ctx[(int64_t)(jc3 * 64) + (int64_t)rn_t] = acc_ctx[(int64_t)(jc3 * 64) + (int64_t)rn_t] + qs_ctx[(int64_t)(jc3 * 64) + (int64_t)rn_t] * wx;
                }
              } else {
                #pragma omp simd /* work-item loop */
                for (int32_t rn_t = 0; rn_t < 64; rn_t += 1) {
                  { const int32_t rn_i = jc3 * 64 + rn_t; if (RN_IN(rn_i, 256)) acc_ctx[rn_i] = rn_ldf(acc_ctx, 256, jc3 * 64 + rn_t, rn_err, 34, wg_x, wg_y, wg_z, rn_t) + rn_ldf(qs_ctx, 256, jc3 * 64 + rn_t, rn_err, 35, wg_x, wg_y, wg_z, rn_t) * wx; else rn_oob(rn_err, 36, rn_i, 256, wg_x, wg_y, wg_z, rn_t); }
                }
              }
            }
          }
          for (int32_t jc4 = 0; jc4 < 4; jc4 += 1) {
            if (RN_SPAN((int64_t)((mm * 4 + jc4) * 64) + 1 * (int64_t)(0), (int64_t)((mm * 4 + jc4) * 64) + 1 * ((int64_t)(64) - 1), 2048) && RN_SPAN((int64_t)(jc4 * 64) + 1 * (int64_t)(0), (int64_t)(jc4 * 64) + 1 * ((int64_t)(64) - 1), 256)) {
              #pragma omp simd /* work-item loop */
              for (int32_t rn_t = 0; rn_t < 64; rn_t += 1) {
                red[(int64_t)((mm * 4 + jc4) * 64) + (int64_t)rn_t] = acc_ctx[(int64_t)(jc4 * 64) + (int64_t)rn_t];
              }
            } else {
              #pragma omp simd /* work-item loop */
              for (int32_t rn_t = 0; rn_t < 64; rn_t += 1) {
                { const int32_t rn_i = (mm * 4 + jc4) * 64 + rn_t; if (RN_IN(rn_i, 2048)) red[rn_i] = rn_ldf(acc_ctx, 256, jc4 * 64 + rn_t, rn_err, 37, wg_x, wg_y, wg_z, rn_t); else rn_oob(rn_err, 38, rn_i, 2048, wg_x, wg_y, wg_z, rn_t); }
              }
            }
          }
        }
        for (int32_t rn_bo = 0; rn_bo < 4; rn_bo++) { /* blocks of 16 work-items */
          #pragma omp simd /* work-item loop */
          for (int32_t rn_bi = 0; rn_bi < 16; rn_bi += 1) {
            int32_t rn_t = rn_bo * 16 + rn_bi;
            int32_t j = wg_x * 64 + rn_bi;
            int32_t kt = rn_bo * 16 / 16;
            if (kt == 0) {
              for (int32_t mm1 = 0; mm1 < rn_imin(8, len - r0); mm1 += 1) {
                for (int32_t jc5 = 0; jc5 < 4; jc5 += 1) {
                  float tot = rn_ldf(red, 2048, (mm1 * 4 + jc5) * 64 + rn_t, rn_err, 39, wg_x, wg_y, wg_z, rn_t);
                  if (RN_SPAN((int64_t)((mm1 * 4 + jc5) * 64 + rn_t) + 16 * (int64_t)(1), (int64_t)((mm1 * 4 + jc5) * 64 + rn_t) + 16 * ((int64_t)(4) - 1), 2048)) {
                    for (int32_t r = 1; r < 4; r += 1) {
                      tot = tot + red[(int64_t)((mm1 * 4 + jc5) * 64 + rn_t) + 16 * (int64_t)r];
                    }
                  } else {
                    for (int32_t r = 1; r < 4; r += 1) {
                      tot = tot + rn_ldf(red, 2048, (mm1 * 4 + jc5) * 64 + (r * 16 + rn_t), rn_err, 40, wg_x, wg_y, wg_z, rn_t);
                    }
                  }
                  { const int32_t rn_i = ((b_b * size_H + b_h) * size_T + (size_T - 1 - (c0 + (r0 + mm1)))) * 64 + (j + jc5 * 16); if (RN_IN(rn_i, rn_n[5])) _d_k_11[rn_i] = tot; else rn_oob(rn_err, 41, rn_i, rn_n[5], wg_x, wg_y, wg_z, rn_t); }
                }
              }
            }
          }
        }
      }
      if (RN_SPAN((int64_t)(b_h), (int64_t)(b_h), rn_n[0]) && RN_SPAN((int64_t)(b_h), (int64_t)(b_h), rn_n[1])) {
        #pragma omp simd /* work-item loop */
        for (int32_t rn_t = 0; rn_t < 64; rn_t += 1) {
          carry_ctx[(int64_t)rn_t] = 0.0f;
          if (c0 > 0) {
            float dx = (float)(pe - pl) * _decay1_o[b_h];
            carry_ctx[(int64_t)rn_t] = (fabsf(dx) < 0.5f ? ((((((((0.0000027557319f * dx + 0.000024801588f) * dx + 0.0001984127f) * dx + 0.0013888889f) * dx + 0.008333334f) * dx + 0.041666668f) * dx + 0.16666667f) * dx + 0.5f) * dx + 1.0f) * dx + 1.0f : rn_exp(dx)) * (gamma[b_h] < 0.0f && (pe - pl) % 2 != 0 ? -1.0f : 1.0f);
          }
        }
      } else {
        #pragma omp simd /* work-item loop */
        for (int32_t rn_t = 0; rn_t < 64; rn_t += 1) {
          carry_ctx[rn_t] = 0.0f;
          if (c0 > 0) {
            float dx = (float)(pe - pl) * rn_ldf(_decay1_o, rn_n[0], b_h, rn_err, 42, wg_x, wg_y, wg_z, rn_t);
            carry_ctx[rn_t] = (fabsf(dx) < 0.5f ? ((((((((0.0000027557319f * dx + 0.000024801588f) * dx + 0.0001984127f) * dx + 0.0013888889f) * dx + 0.008333334f) * dx + 0.041666668f) * dx + 0.16666667f) * dx + 0.5f) * dx + 1.0f) * dx + 1.0f : rn_exp_s(dx)) * (rn_ldf(gamma, rn_n[1], b_h, rn_err, 43, wg_x, wg_y, wg_z, rn_t) < 0.0f && (pe - pl) % 2 != 0 ? -1.0f : 1.0f);
          }
        }
      }
      for (int32_t i3 = 0; i3 < 64; i3 += 1) {
        if (RN_SPAN((int64_t)(i3 * 64) + 1 * (int64_t)(0), (int64_t)(i3 * 64) + 1 * ((int64_t)(64) - 1), 4096)) {
          #pragma omp simd /* work-item loop */
          for (int32_t rn_t = 0; rn_t < 64; rn_t += 1) {
            S_ctx[(int64_t)(i3 * 64) + (int64_t)rn_t] = carry_ctx[(int64_t)rn_t] * S_ctx[(int64_t)(i3 * 64) + (int64_t)rn_t];
          }
        } else {
          #pragma omp simd /* work-item loop */
          for (int32_t rn_t = 0; rn_t < 64; rn_t += 1) {
            { const int32_t rn_i = i3 * 64 + rn_t; if (RN_IN(rn_i, 4096)) S_ctx[rn_i] = carry_ctx[rn_t] * rn_ldf(S_ctx, 4096, i3 * 64 + rn_t, rn_err, 44, wg_x, wg_y, wg_z, rn_t); else rn_oob(rn_err, 45, rn_i, 4096, wg_x, wg_y, wg_z, rn_t); }
          }
        }
      }
      for (int32_t m21 = 0; m21 < len; m21 += 1) {
        int32_t q21 = size_T - 1 - (c0 + m21);
        float w2 = rn_ldf(we, 64, m21, rn_err, 46, wg_x, wg_y, wg_z, -1);
        for (int32_t jc6 = 0; jc6 < 4; jc6 += 1) {
          for (int32_t rn_bo = 0; rn_bo < 4; rn_bo++) { /* blocks of 16 work-items */
            {
              int32_t rn_all = RN_SPAN((int64_t)(jc6 * 64 + rn_bo * 16) + 1 * (int64_t)(0), (int64_t)(jc6 * 64 + rn_bo * 16) + 1 * ((int64_t)(16) - 1), 256) && RN_SPAN((int64_t)(((b_b * size_H + b_h) * size_T + q21) * 64 + (wg_x * 64 + jc6 * 16)) + 1 * (int64_t)(0), (int64_t)(((b_b * size_H + b_h) * size_T + q21) * 64 + (wg_x * 64 + jc6 * 16)) + 1 * ((int64_t)(16) - 1), rn_n[4]);
              if (rn_all) {
                #pragma omp simd /* work-item loop */
                for (int32_t rn_bi = 0; rn_bi < 16; rn_bi += 1) {
                  int32_t rn_t = rn_bo * 16 + rn_bi;
                  int32_t j = wg_x * 64 + rn_bi;
                  wc_ctx[(int64_t)(jc6 * 64 + rn_bo * 16) + (int64_t)rn_bi] = w2 * q[(int64_t)(((b_b * size_H + b_h) * size_T + q21) * 64 + (wg_x * 64 + jc6 * 16)) + (int64_t)rn_bi];
                }
              } else {
                if (RN_SPAN((int64_t)(jc6 * 64 + rn_bo * 16) + 1 * (int64_t)(0), (int64_t)(jc6 * 64 + rn_bo * 16) + 1 * ((int64_t)(16) - 1), 256) && RN_SPAN((int64_t)(((b_b * size_H + b_h) * size_T + q21) * 64 + (wg_x * 64 + jc6 * 16)) + 1 * (int64_t)(0), (int64_t)(((b_b * size_H + b_h) * size_T + q21) * 64 + (wg_x * 64 + jc6 * 16)) + 1 * ((int64_t)(16) - 1), rn_n[4])) {
                  #pragma omp simd /* work-item loop */
                  for (int32_t rn_bi = 0; rn_bi < 16; rn_bi += 1) {
                    int32_t rn_t = rn_bo * 16 + rn_bi;
                    int32_t j = wg_x * 64 + rn_bi;
                    wc_ctx[(int64_t)(jc6 * 64 + rn_bo * 16) + (int64_t)rn_bi] = w2 * q[(int64_t)(((b_b * size_H + b_h) * size_T + q21) * 64 + (wg_x * 64 + jc6 * 16)) + (int64_t)rn_bi];
                  }
                } else {
                  #pragma omp simd /* work-item loop */
                  for (int32_t rn_bi = 0; rn_bi < 16; rn_bi += 1) {
                    int32_t rn_t = rn_bo * 16 + rn_bi;
                    int32_t j = wg_x * 64 + rn_bi;
                    { const int32_t rn_i = jc6 * 64 + rn_t; if (RN_IN(rn_i, 256)) wc_ctx[rn_i] = w2 * rn_ldf(q, rn_n[4], ((b_b * size_H + b_h) * size_T + q21) * 64 + (j + jc6 * 16), rn_err, 47, wg_x, wg_y, wg_z, rn_t); else rn_oob(rn_err, 48, rn_i, 256, wg_x, wg_y, wg_z, rn_t); }
                  }
                }
              }
            }
          }
        }
        for (int32_t i4 = 0; i4 < 16; i4 += 1) {
          for (int32_t rn_bo = 0; rn_bo < 4; rn_bo++) { /* blocks of 16 work-items */
            {
              int32_t rn_all = RN_SPAN((int64_t)(rn_bo * 16) + 1 * (int64_t)(0), (int64_t)(rn_bo * 16) + 1 * ((int64_t)(16) - 1), 64) && RN_SPAN((int64_t)(((b_b * size_H + b_h) * size_T + q21) * 64 + (rn_bo * 16 / 16 * 16 + i4)), (int64_t)(((b_b * size_H + b_h) * size_T + q21) * 64 + (rn_bo * 16 / 16 * 16 + i4)), rn_n[2]);
              if (rn_all) {
                #pragma omp simd /* work-item loop */
                for (int32_t rn_bi = 0; rn_bi < 16; rn_bi += 1) {
                  int32_t rn_t = rn_bo * 16 + rn_bi;
                  int32_t kt = rn_bo * 16 / 16;
                  int32_t gi1 = kt * 16 + i4;
                  bi1_ctx[(int64_t)(rn_bo * 16) + (int64_t)rn_bi] = grad_o[((b_b * size_H + b_h) * size_T + q21) * 64 + (rn_bo * 16 / 16 * 16 + i4)];
                }
              } else {
                if (RN_SPAN((int64_t)(rn_bo * 16) + 1 * (int64_t)(0), (int64_t)(rn_bo * 16) + 1 * ((int64_t)(16) - 1), 64) && RN_SPAN((int64_t)(((b_b * size_H + b_h) * size_T + q21) * 64 + (rn_bo * 16 / 16 * 16 + i4)), (int64_t)(((b_b * size_H + b_h) * size_T + q21) * 64 + (rn_bo * 16 / 16 * 16 + i4)), rn_n[2])) {
                  #pragma omp simd /* work-item loop */
                  for (int32_t rn_bi = 0; rn_bi < 16; rn_bi += 1) {
                    int32_t rn_t = rn_bo * 16 + rn_bi;
                    int32_t kt = rn_bo * 16 / 16;
                    int32_t gi1 = kt * 16 + i4;
                    bi1_ctx[(int64_t)(rn_bo * 16) + (int64_t)rn_bi] = grad_o[((b_b * size_H + b_h) * size_T + q21) * 64 + (rn_bo * 16 / 16 * 16 + i4)];
                  }
                } else {
                  #pragma omp simd /* work-item loop */
                  for (int32_t rn_bi = 0; rn_bi < 16; rn_bi += 1) {
                    int32_t rn_t = rn_bo * 16 + rn_bi;
                    int32_t kt = rn_bo * 16 / 16;
                    int32_t gi1 = kt * 16 + i4;
                    bi1_ctx[rn_t] = rn_ldf(grad_o, rn_n[2], ((b_b * size_H + b_h) * size_T + q21) * 64 + gi1, rn_err, 49, wg_x, wg_y, wg_z, rn_t);
                  }
                }
              }
            }
          }
          for (int32_t jc7 = 0; jc7 < 4; jc7 += 1) {
            if (RN_SPAN((int64_t)((jc7 * 16 + i4) * 64) + 1 * (int64_t)(0), (int64_t)((jc7 * 16 + i4) * 64) + 1 * ((int64_t)(64) - 1), 4096) && RN_SPAN((int64_t)(jc7 * 64) + 1 * (int64_t)(0), (int64_t)(jc7 * 64) + 1 * ((int64_t)(64) - 1), 256)) {
              #pragma omp simd /* work-item loop */
              for (int32_t rn_t = 0; rn_t < 64; rn_t += 1) {
                S_ctx[(int64_t)((jc7 * 16 + i4) * 64) + (int64_t)rn_t] = S_ctx[(int64_t)((jc7 * 16 + i4) * 64) + (int64_t)rn_t] + wc_ctx[(int64_t)(jc7 * 64) + (int64_t)rn_t] * bi1_ctx[(int64_t)rn_t];
              }
            } else {
              #pragma omp simd /* work-item loop */
              for (int32_t rn_t = 0; rn_t < 64; rn_t += 1) {
                { const int32_t rn_i = (jc7 * 16 + i4) * 64 + rn_t; if (RN_IN(rn_i, 4096)) S_ctx[rn_i] = rn_ldf(S_ctx, 4096, (jc7 * 16 + i4) * 64 + rn_t, rn_err, 50, wg_x, wg_y, wg_z, rn_t) + rn_ldf(wc_ctx, 256, jc7 * 64 + rn_t, rn_err, 51, wg_x, wg_y, wg_z, rn_t) * bi1_ctx[rn_t]; else rn_oob(rn_err, 52, rn_i, 4096, wg_x, wg_y, wg_z, rn_t); }
              }
            }
          }
        }
      }
    }
  }
}
