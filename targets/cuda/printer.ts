// Kernel IR -> CUDA C++: one `extern "C" __global__` kernel per module, f32 only (every
// literal has the f suffix, every math function is the accurate float one: expf, logf,
// log1pf, erff, rsqrtf, powf, tanhf, ...). Kernel IR semantics that C leaves undefined get
// tiny inline helpers: integer x / 0 = x % 0 = 0 and INT_MIN / -1 = INT_MIN (rn_idiv,
// rn_imod), min/max of f32 propagating NaN (rn_fminf, rn_fmaxf); f32 -> i32 is
// __float2int_rz (truncates, saturates, NaN -> 0, as cvt.rzi does). Helpers are guarded by
// macros so that several modules can be concatenated into one translation unit.
// Names come from targets/cuda/legalise.ts.
// Half-precision buffers (KBuffer.storage) are `__half` / `__nv_bfloat16` pointers (cuda_fp16.h,
// cuda_bf16.h): loads convert with __half2float / __bfloat162float (exact), stores round with
// __float2half_rn / __float2bfloat16_rn (nearest even; +-inf past the range; NaN stays NaN).
// Shared arrays with half storage (KShared.storage) are `__align__(16)` arrays of those types,
// with the same conversions. An mma statement (kir.ts KMma, schedule dense 'mma') is inline PTX:
// per k16 step of a warp tile, ldmatrix.x4 for each A block (16 x 16, row-major) and ldmatrix.x2
// for each B block (stored [n][k]), then mma.sync.aligned.m16n8k16.row.col with f32 accumulators
// (sm_80 and later).
// Compiling: kernel IR rounds after every f32 operation, and nvcc by default contracts
// a * b + c into one fma (--fmad=true), which rounds once: pass --fmad=false (nvcc and NVRTC)
// for bit-exact agreement with the CPU executor, keep the default for speed. Never use
// --use_fast_math: it makes expf/logf/division approximate and flushes subnormals.
import { mmaStatement, verifyKernel } from '../../compiler/kir-verify.js';
import { simplifyKernel } from '../../compiler/kir-rewrite.js';
import { CPrinter, f32Bits, f32Text, type Fmt, prim, PRIMARY, UNARY, walkStmts } from '../../compiler/c-printer.js';
import type { KBinOp, KBuiltin, Kernel, KExpr, KHalf, KMma, KStmt, KType, KUnOp } from '../../compiler/kir.js';
import { type CudaLegalised, type CudaLegaliseOptions, legaliseCuda } from './legalise.js';

const TYPE: Record<KType, string> = { f32: 'float', i32: 'int', bool: 'bool' };
/** Half storage: element type, load and store conversions, header. */
const HALF: Record<KHalf, { type: string; load: string; store: string; include: string }> = {
  f16: { type: '__half', load: '__half2float', store: '__float2half_rn', include: '#include <cuda_fp16.h>' },
  bf16: { type: '__nv_bfloat16', load: '__bfloat162float', store: '__float2bfloat16_rn', include: '#include <cuda_bf16.h>' },
};

const F32_FN: Partial<Record<KUnOp, string>> = {
  exp: 'expf', exp2: 'exp2f', log: 'logf', log2: 'log2f', log1p: 'log1pf', sqrt: 'sqrtf', rsqrt: 'rsqrtf',
  sin: 'sinf', cos: 'cosf', tanh: 'tanhf', abs: 'fabsf', floor: 'floorf', ceil: 'ceilf', erf: 'erff',
};

const HELPERS: Record<string, string[]> = {
  rn_idiv: [
    '// Kernel IR integer division: truncates toward zero; x / 0 = 0; INT_MIN / -1 = INT_MIN.',
    'static __device__ __forceinline__ int rn_idiv(int a, int b) { return b == 0 ? 0 : b == -1 ? (int)(0u - (unsigned)a) : a / b; }',
  ],
  rn_imod: [
    '// Kernel IR integer remainder: the sign of the dividend; x % 0 = 0; x % -1 = 0.',
    'static __device__ __forceinline__ int rn_imod(int a, int b) { return (b == 0 || b == -1) ? 0 : a % b; }',
  ],
  rn_fminf: [
    '// min and max of f32 propagate NaN (fminf and fmaxf return the other operand).',
    'static __device__ __forceinline__ float rn_fminf(float a, float b) { return a != a ? a : b != b ? b : fminf(a, b); }',
  ],
  rn_fmaxf: [
    'static __device__ __forceinline__ float rn_fmaxf(float a, float b) { return a != a ? a : b != b ? b : fmaxf(a, b); }',
  ],
  rn_trig: [
    '// sinf and cosf without a stack frame or f64 (CUDA ones use both for huge',
    '// arguments): x = j pi/2 + r with |r| <= pi/4, by Cody-Waite in three fma steps below 105615 and',
    '// otherwise Payne-Hanek with 192 bits of 2/pi, all in registers; Cephes polynomials on r.',
    'static __device__ __forceinline__ float rn_trig_reduce(float x, int& q) {',
    '  if (fabsf(x) <= 105615.0f) {',
    '    const float j = rintf(x * 0.636619772f);',
    '    float r = fmaf(j, -1.57079637e+00f, x);',
    '    r = fmaf(j, 4.37113883e-08f, r);',
    '    r = fmaf(j, 1.71512451e-15f, r);',
    '    q = (int)j;',
    '    return r;',
    '  }',
    '  if (!(fabsf(x) <= 3.40282347e+38f)) { q = 0; return x - x; } // inf, NaN: NaN',
    '  const unsigned ia = __float_as_uint(x);',
    '  const int be = (int)((ia >> 23) & 0xffu);',
    '  const unsigned m = (ia << 8) | 0x80000000u;',
    '  // P = m * floor(2/pi * 2^192) in 7 words; x * 2/pi = P * 2^(be - 350).',
    '  unsigned long long p = (unsigned long long)0x3c439041u * m;',
    '  const unsigned r0 = (unsigned)p;',
    '  p = (unsigned long long)0xdb629599u * m + (p >> 32); const unsigned r1 = (unsigned)p;',
    '  p = (unsigned long long)0xf534ddc0u * m + (p >> 32); const unsigned r2 = (unsigned)p;',
    '  p = (unsigned long long)0xfc2757d1u * m + (p >> 32); const unsigned r3 = (unsigned)p;',
    '  p = (unsigned long long)0x4e441529u * m + (p >> 32); const unsigned r4 = (unsigned)p;',
    '  p = (unsigned long long)0xa2f9836eu * m + (p >> 32); const unsigned r5 = (unsigned)p;',
    '  const unsigned r6 = (unsigned)(p >> 32);',
    '  // The 64 bits of P from bit 288 - be up: 2 integer bits (mod 4), 62 fraction bits.',
    '  const int low = 288 - be, w = low >> 5, sh = low & 31;',
    '#define RN_WORD(i) ((i) <= 1 ? r1 : (i) == 2 ? r2 : (i) == 3 ? r3 : (i) == 4 ? r4 : (i) == 5 ? r5 : r6)',
    '  const unsigned w0 = w <= 0 ? r0 : RN_WORD(w), w1 = RN_WORD(w + 1), w2 = RN_WORD(w + 2);',
    '#undef RN_WORD',
    '  unsigned lo = sh ? (w0 >> sh) | (w1 << (32 - sh)) : w0;',
    '  unsigned hi = sh ? (w1 >> sh) | (w2 << (32 - sh)) : w1;',
    '  int k = (int)(hi >> 30);',
    '  unsigned long long f = ((unsigned long long)(hi & 0x3fffffffu) << 34) | ((unsigned long long)lo << 2);',
    '  float sign = 1.0f;',
    '  if (f >> 63) { f = ~f; k += 1; sign = -1.0f; } // fraction >= 1/2: r = (f - 1) pi/2',
    '  const float ff = __ull2float_rn(f) * 5.42101086e-20f; // * 2^-64',
    '  float r = sign * fmaf(ff, 1.57079637e+00f, ff * -4.37113883e-08f);',
    '  if (x < 0.0f) { r = -r; k = -k; }',
    '  q = k;',
    '  return r;',
    '}',
    'static __device__ __forceinline__ float rn_sin_poly(float r) {',
    '  const float z = r * r;',
    '  return fmaf(fmaf(fmaf(-1.9515295891e-4f, z, 8.3321608736e-3f), z, -1.6666654611e-1f) * z, r, r);',
    '}',
    'static __device__ __forceinline__ float rn_cos_poly(float r) {',
    '  const float z = r * r;',
    '  return fmaf(fmaf(fmaf(2.443315711809948e-5f, z, -1.388731625493765e-3f), z, 4.166664568298827e-2f) * z, z, fmaf(-0.5f, z, 1.0f));',
    '}',
    'static __device__ __forceinline__ float rn_sinf(float x) {',
    '  if (x == 0.0f) return x; // keeps the sign of zero',
    '  int q;',
    '  const float r = rn_trig_reduce(x, q);',
    '  const float s = (q & 1) ? rn_cos_poly(r) : rn_sin_poly(r);',
    '  return (q & 2) ? -s : s;',
    '}',
    'static __device__ __forceinline__ float rn_cosf(float x) {',
    '  int q;',
    '  const float r = rn_trig_reduce(x, q);',
    '  const float c = (q & 1) ? rn_sin_poly(r) : rn_cos_poly(r);',
    '  return ((q + 1) & 2) ? -c : c;',
    '}',
  ],
};
const HELPER_ORDER = ['rn_idiv', 'rn_imod', 'rn_fminf', 'rn_fmaxf', 'rn_trig'];

export class CudaPrinter extends CPrinter {
  private readonly helpers = new Set<string>();
  private readonly ids = new Set<KBuiltin>();
  private readonly buffers: Map<string, { type: KType; storage?: KHalf }>;

  constructor(readonly L: CudaLegalised) {
    super();
    // Buffers and shared arrays with half storage convert on load and store alike.
    this.buffers = new Map<string, { type: KType; storage?: KHalf }>([...L.kernel.buffers.map((b) => [b.name, b] as const), ...L.kernel.shared.filter((s) => s.storage).map((s) => [s.name, s] as const)]);
  }

  override typeName(t: KType): string { return TYPE[t]; }

  override builtin(name: KBuiltin): Fmt {
    this.ids.add(name);
    return prim(name.replace('.', '_'));
  }

  override constant(type: KType, value: number): Fmt {
    if (type === 'bool') return prim(value ? 'true' : 'false');
    if (type === 'i32') {
      const v = value | 0;
      if (v === -2147483648) return prim('(-2147483647 - 1)');
      return { s: String(v), p: v < 0 ? UNARY : PRIMARY };
    }
    if (!Number.isFinite(value)) return prim(`__uint_as_float(0x${f32Bits(value)}u)`);
    const s = `${f32Text(value)}f`;
    return { s, p: s.startsWith('-') ? UNARY : PRIMARY };
  }

  override load(array: string, index: KExpr, type: KType): Fmt {
    const s = `${array}[${this.expr(index)}]`;
    const b = this.buffers.get(array);
    if (b?.storage) return prim(`${HALF[b.storage].load}(${s})`);
    // bool buffers hold 0/1 ints
    return b && type === 'bool' ? { s: `${s} != 0`, p: 3 } : prim(s);
  }

  override store(array: string, index: KExpr, value: KExpr): string {
    const b = this.buffers.get(array);
    const v = b?.storage ? `${HALF[b.storage].store}(${this.expr(value)})` : b && b.type === 'bool' ? `int(${this.expr(value)})` : this.expr(value);
    return `${array}[${this.expr(index)}] = ${v};`;
  }

  override unaryFn(op: KUnOp, type: KType): string {
    if (type === 'i32' && op === 'abs') return 'abs';
    // CUDA's sinf and cosf take a stack frame and f64 for huge arguments: ours do neither.
    if (op === 'sin' || op === 'cos') { this.helpers.add('rn_trig'); return op === 'sin' ? 'rn_sinf' : 'rn_cosf'; }
    const f = F32_FN[op];
    if (!f) throw new Error(`CUDA printer: no function for '${op}' on ${type}`);
    return f;
  }

  override fmaFn(): string { return '__fmaf_rn'; }

  override binary(op: KBinOp, a: KExpr, b: KExpr, type: KType): Fmt {
    if ((op === '/' || op === '%') && type === 'i32') {
      // A constant divisor other than 0 and -1 needs no guard.
      if (b.k === 'const' && b.value !== 0 && b.value !== -1) return this.infix(op, a, b);
      const h = op === '/' ? 'rn_idiv' : 'rn_imod';
      this.helpers.add(h);
      return this.call(h, a, b);
    }
    if (op === 'min' || op === 'max') {
      if (type === 'i32') return this.call(op, a, b);
      const h = op === 'min' ? 'rn_fminf' : 'rn_fmaxf';
      this.helpers.add(h);
      return this.call(h, a, b);
    }
    if (op === 'pow') return this.call('powf', a, b);
    return super.binary(op, a, b, type);
  }

  override cast(a: KExpr, to: KType): Fmt {
    const from = a.type;
    if (from === to) return this.fmt(a);
    if (to === 'bool') return { s: `${this.expr(a, 4)} != ${from === 'f32' ? '0.0f' : '0'}`, p: 3 };
    if (to === 'i32' && from === 'f32') return this.call('__float2int_rz', a);
    return this.call(TYPE[to], a); // i32 -> f32 rounds to nearest; bool -> 0/1
  }

  override localArray(name: string, type: KType, size: number): string { return `${TYPE[type]} ${name}[${size}];`; }
  override sharedArray(name: string, type: KType, size: number): string {
    const h = this.buffers.get(name)?.storage;
    return h ? `__shared__ __align__(16) ${HALF[h].type} ${name}[${size}];` : `__shared__ ${TYPE[type]} ${name}[${size}];`;
  }
  override barrier(): string { return '__syncthreads();'; }

  override mma(s: KMma): string[] {
    const frag = (i: number, n: number, base: string): string => Array.from({ length: n }, (_, r) => `"=r"(${base}[${i}][${r}])`).join(', ');
    const cOf = (i: number, j: number): string => [0, 1, 2, 3].map((r) => `"+f"(${s.c}[${s.cOff + 4 * (i * s.nt + j) + r}])`).join(', ');
    const aOff = this.expr(s.aOff, PRIMARY), bOff = this.expr(s.bOff, PRIMARY);
    const out = [`{ // mma ${s.mt}x${s.nt} blocks of m16n8k16 (${s.input}, f32 accumulators): ${s.of}`];
    out.push('  const int rn_lane = threadIdx.x & 31;', `  unsigned rn_fa[${s.mt}][4], rn_fb[${s.nt}][2];`);
    for (let i = 0; i < s.mt; i++) {
      out.push(`  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];" : ${frag(i, 4, 'rn_fa')} : "r"((unsigned)__cvta_generic_to_shared(&${s.a}[${aOff} + (${16 * i} + (rn_lane & 15)) * ${s.aStride} + (rn_lane >> 4) * 8])) : "memory");`);
    }
    for (let j = 0; j < s.nt; j++) {
      out.push(`  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];" : ${frag(j, 2, 'rn_fb')} : "r"((unsigned)__cvta_generic_to_shared(&${s.b}[${bOff} + (${8 * j} + (rn_lane & 7)) * ${s.bStride} + ((rn_lane >> 3) & 1) * 8])) : "memory");`);
    }
    const t = s.input;
    for (let i = 0; i < s.mt; i++) for (let j = 0; j < s.nt; j++) {
      out.push(`  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.${t}.${t}.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};" : ${cOf(i, j)} : "r"(rn_fa[${i}][0]), "r"(rn_fa[${i}][1]), "r"(rn_fa[${i}][2]), "r"(rn_fa[${i}][3]), "r"(rn_fb[${j}][0]), "r"(rn_fb[${j}][1]));`);
    }
    out.push('}');
    return out;
  }
  override beforeFor(s: Extract<KStmt, { k: 'for' }>): string[] { return this.L.unroll.has(s) ? ['#pragma unroll'] : []; }

  override header(k: Kernel): string[] {
    const params = [
      ...k.buffers.map((b) => `${b.access === 'read' ? 'const ' : ''}${b.storage ? HALF[b.storage].type : TYPE[b.type === 'bool' ? 'i32' : b.type]}* __restrict__ ${b.name}`),
      ...k.scalars.map((s) => `${TYPE[s.type]} ${s.name}`),
    ];
    const out: string[] = [];
    const halves = (['f16', 'bf16'] as const).filter((h) => k.buffers.some((b) => b.storage === h) || k.shared.some((x) => x.storage === h));
    for (const h of halves) out.push(HALF[h].include);
    for (const h of HELPER_ORDER) {
      if (!this.helpers.has(h)) continue;
      const g = `RETNETC_${h.toUpperCase()}`;
      out.push(`#ifndef ${g}`, `#define ${g}`, ...HELPERS[h]!, '#endif');
    }
    if (out.length) out.push('');
    // Per-thread arrays (state slices, accumulators) live in registers: at least one block per SM, so
    // that ptxas does not spill them to reach a higher occupancy. Other kernels keep its heuristic.
    let local = false;
    walkStmts(k.body, (s) => { if (s.k === 'local') local = true; });
    out.push(`extern "C" __global__ void __launch_bounds__(${this.L.threads}${local ? ', 1' : ''}) ${k.name}(${params.length ? '' : ') {'}`);
    params.forEach((p, i) => out.push(`    ${p}${i === params.length - 1 ? ') {' : ','}`));
    return out;
  }

  override prologue(k: Kernel): string[] {
    const out: string[] = [];
    if (this.L.foldY) {
      // Launched as (X, Y, Z) or, where Y passes 65535, as (X * Y, 1, Z): the ids from the linear block index.
      out.push(`const int rn_grid_x = ${this.expr(k.grid[0])};`);
      out.push('const int rn_blk = blockIdx.x + blockIdx.y * gridDim.x;');
      out.push('const int wg_x = rn_blk % rn_grid_x;', 'const int wg_y = rn_blk / rn_grid_x;');
    }
    for (const b of ['tid.x', 'tid.y', 'tid.z', 'wg.x', 'wg.y', 'wg.z'] as const) {
      if (!this.ids.has(b) || (this.L.foldY && (b === 'wg.x' || b === 'wg.y'))) continue;
      const [kind, axis] = b.split('.');
      out.push(`const int ${kind}_${axis} = ${kind === 'tid' ? 'threadIdx' : 'blockIdx'}.${axis!};`);
    }
    if (this.L.dynamicShared) {
      out.push(`extern __shared__ __align__(16) unsigned char rn_smem[]; // ${this.L.sharedBytes} bytes, passed at launch`);
      for (const s of this.L.shared) {
        const t = s.storage ? HALF[s.storage].type : TYPE[s.type];
        out.push(`${t}* const ${s.name} = reinterpret_cast<${t}*>(rn_smem + ${s.offset});`);
      }
    } else {
      for (const s of k.shared) out.push(this.sharedArray(s.name, s.type, s.size));
    }
    return out;
  }

  override kernel(k: Kernel): string {
    this.contract = k.contract === true;
    // The body first: it decides which helpers and ids the header and prologue declare.
    const body: string[] = [];
    this.stmts(k.body, this.indentUnit, body);
    const out = [...this.header(k), ...this.prologue(k).map((l) => this.indentUnit + l), ...body, '}'];
    return out.join('\n') + '\n';
  }
}

export interface CudaModule {
  code: string;
  legalised: CudaLegalised;
}

/** Legalises and prints one kernel as a CUDA module. */
export function printCuda(k: Kernel, opts: CudaLegaliseOptions = {}): CudaModule {
  verifyKernel(k, { mma: true });
  // Exact simplifications (constant folding, identities) first: a rule table (compiler/kir-rewrite.ts).
  const L = legaliseCuda(simplifyKernel(k), opts);
  const halves = [...new Set(k.buffers.flatMap((b) => (b.storage ? [b.storage] : [])))];
  const mma = mmaStatement(k) !== undefined;
  const what = `${halves.length ? `f32 arithmetic, ${halves.join(' and ')} storage` : 'f32 only'}${mma ? '; tensor cores (mma.sync, sm_80+)' : ''}`;
  const code = `// Generated by retnetc from kernel IR '${k.name}'. Launch: ${L.threads} threads per block; ${what}.\n` +
    new CudaPrinter(L).kernel(L.kernel);
  return { code, legalised: L };
}
