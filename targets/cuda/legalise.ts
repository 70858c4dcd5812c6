// Rules applied to a kernel before it is printed as CUDA C++ (targets/cuda/printer.ts):
//   - identifiers: C++ keywords, CUDA builtins, macros of the math headers, the functions the
//     printer calls and the names it declares itself are renamed; names with '__' or a
//     leading '_' + capital (reserved in C++) too; a declaration that would shadow a visible
//     name gets a fresh one (C starts a name's scope inside its own initialiser);
//   - shared memory: arrays (2 bytes an element with half storage) are laid out at 16-byte
//     aligned offsets (ldmatrix reads 16-byte rows of the mma operands); above 48 KiB in total
//     (the static limit) they move into one dynamic `extern __shared__` block, whose size the
//     launch must pass (EmittedKernel.dynamicSharedBytes; sizes above 48 KiB also need
//     cudaFuncSetAttribute(..., cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
//   - per-thread arrays indexed by loop counters: loops with constant trip counts that index a
//     `local` array are marked for full unrolling, so the array can live in registers.
import { renameKernel, walkExpr, walkStmts, stmtExprs } from '../../compiler/c-printer.js';
import type { Kernel, KExpr, KHalf, KStmt, KType } from '../../compiler/kir.js';

/** The most static shared memory a CUDA kernel may declare. */
export const STATIC_SHARED_LIMIT = 48 * 1024;

const CPP_KEYWORDS = [
  'alignas', 'alignof', 'and', 'and_eq', 'asm', 'auto', 'bitand', 'bitor', 'bool', 'break', 'case', 'catch', 'char',
  'char8_t', 'char16_t', 'char32_t', 'class', 'compl', 'concept', 'const', 'consteval', 'constexpr', 'constinit',
  'const_cast', 'continue', 'co_await', 'co_return', 'co_yield', 'decltype', 'default', 'delete', 'do', 'double',
  'dynamic_cast', 'else', 'enum', 'explicit', 'export', 'extern', 'false', 'float', 'for', 'friend', 'goto', 'if',
  'inline', 'int', 'long', 'mutable', 'namespace', 'new', 'noexcept', 'not', 'not_eq', 'nullptr', 'operator', 'or',
  'or_eq', 'private', 'protected', 'public', 'register', 'reinterpret_cast', 'requires', 'return', 'short', 'signed',
  'sizeof', 'static', 'static_assert', 'static_cast', 'struct', 'switch', 'template', 'this', 'thread_local', 'throw',
  'true', 'try', 'typedef', 'typeid', 'typename', 'union', 'unsigned', 'using', 'virtual', 'void', 'volatile',
  'wchar_t', 'while', 'xor', 'xor_eq', 'final', 'override', 'import', 'module', 'restrict', 'main',
];
/** CUDA builtin variables, common macros and the names of library functions. */
const CUDA_NAMES = [
  'threadIdx', 'blockIdx', 'blockDim', 'gridDim', 'warpSize', 'dim3', 'uint3', 'float2', 'float4', 'int2', 'int4',
  'NULL', 'INFINITY', 'NAN', 'HUGE_VAL', 'HUGE_VALF', 'EOF', 'assert', 'errno', 'printf', 'malloc', 'free', 'memcpy',
  'memset', 'INT_MAX', 'INT_MIN', 'FLT_MAX', 'FLT_MIN', 'CHAR_BIT', 'M_PI', 'isnan', 'isinf', 'isfinite', 'signbit',
  'min', 'max', 'abs', 'fminf', 'fmaxf', 'fabsf', 'expf', 'exp2f', 'logf', 'log2f', 'log1pf', 'sqrtf', 'rsqrtf',
  'sinf', 'cosf', 'tanhf', 'floorf', 'ceilf', 'erff', 'powf', 'exp', 'log', 'sqrt', 'pow', 'sin', 'cos', 'tanh', 'erf',
  'floor', 'ceil', 'fmin', 'fmax', 'std', 'size_t', 'int32_t', 'uint32_t',
];
/** Names the CUDA printer declares or defines (ids, helpers, the dynamic shared block). */
export const CUDA_INTERNAL = [
  'tid_x', 'tid_y', 'tid_z', 'wg_x', 'wg_y', 'wg_z', 'rn_idiv', 'rn_imod', 'rn_fminf', 'rn_fmaxf', 'rn_smem',
  'rn_trig_reduce', 'rn_sin_poly', 'rn_cos_poly', 'rn_sinf', 'rn_cosf', 'RN_WORD', 'rn_grid_x', 'rn_blk',
  'rn_lane', 'rn_fa', 'rn_fb',
];

export const CUDA_RESERVED: ReadonlySet<string> = new Set([...CPP_KEYWORDS, ...CUDA_NAMES, ...CUDA_INTERNAL]);

/**
 * A C++ identifier that is not reserved to the implementation ('__' anywhere, '_' + capital)
 * nor one of the CUDART_ macros of cuda_fp16.h and cuda_bf16.h.
 */
export const validCudaIdent = (n: string): boolean => /^[A-Za-z_][A-Za-z0-9_]*$/.test(n) && !n.includes('__') && !/^_[A-Z]/.test(n) && !n.startsWith('CUDART_');

export interface SharedSlot { name: string; type: KType; size: number; storage?: KHalf; offset: number; bytes: number }

export interface CudaLegalised {
  /** The kernel with target-safe names. */
  kernel: Kernel;
  /** Original -> printed names of the kernel, its parameters and shared arrays. */
  globals: Map<string, string>;
  threads: number;
  /** Shared arrays at 16-byte aligned offsets (printed names). */
  shared: SharedSlot[];
  /** Total shared bytes (with alignment). */
  sharedBytes: number;
  /** True when the shared arrays live in one dynamic `extern __shared__` block. */
  dynamicShared: boolean;
  /** Loops to print with `#pragma unroll` (statement objects of `kernel.body`). */
  unroll: Set<KStmt>;
  /**
   * The kernel reads wg.y and its y count is not a constant within CUDA's 65535: it rebuilds
   * (wg.x, wg.y) from the linear block index, so that a launch may fold y into x, (X * Y, 1, Z).
   */
  foldY: boolean;
}

/** The most blocks CUDA launches in y and z. */
export const MAX_GRID_YZ = 65535;

export const elemBytes = (t: KType): number => (t === 'bool' ? 1 : 4);

export interface CudaLegaliseOptions {
  /** Longest constant trip count to unroll fully (default 128). */
  maxUnroll?: number;
  /** Mark loops for unrolling (default true). */
  unroll?: boolean;
}

export function legaliseCuda(k: Kernel, opts: CudaLegaliseOptions = {}): CudaLegalised {
  const { kernel, globals } = renameKernel(k, { valid: validCudaIdent, reserved: CUDA_RESERVED });
  let off = 0;
  const shared: SharedSlot[] = kernel.shared.map((s) => {
    const bytes = s.size * (s.storage ? 2 : elemBytes(s.type));
    const slot = { ...s, offset: off, bytes };
    off += Math.ceil(bytes / 16) * 16;
    return slot;
  });
  const unroll = opts.unroll === false ? new Set<KStmt>() : unrollLoops(kernel, opts.maxUnroll ?? 128);
  let usesY = false;
  walkStmts(kernel.body, (s) => stmtExprs(s).forEach((e) => walkExpr(e, (x) => { if (x.k === 'builtin' && x.name === 'wg.y') usesY = true; })));
  const gy = kernel.grid[1];
  const foldY = usesY && !(gy.k === 'const' && gy.value <= MAX_GRID_YZ);
  return {
    kernel, globals, threads: k.workgroup[0] * k.workgroup[1] * k.workgroup[2], shared, sharedBytes: off,
    dynamicShared: off > STATIC_SHARED_LIMIT, unroll, foldY,
  };
}

/** Constant trip count of a loop, when start, end and step are constants. */
export function tripCount(s: Extract<KStmt, { k: 'for' }>): number | undefined {
  if (s.start.k !== 'const' || s.end.k !== 'const') return undefined;
  const n = s.step > 0 ? Math.ceil((s.end.value - s.start.value) / s.step) : Math.ceil((s.start.value - s.end.value) / -s.step);
  return Math.max(0, n);
}

/**
 * Loops whose counter indexes a `local` array and whose trip count is a constant: unrolled
 * fully, every index becomes a constant and the array a set of registers (dynamically
 * indexed per-thread arrays live in local memory, i.e. in DRAM behind the L1).
 */
function unrollLoops(k: Kernel, max: number): Set<KStmt> {
  const locals = new Set<string>();
  walkStmts(k.body, (s) => { if (s.k === 'local') locals.add(s.name); });
  const out = new Set<KStmt>();
  if (locals.size === 0) return out;
  const indexesLocal = (v: string, body: readonly KStmt[]): boolean => {
    let hit = false;
    const uses = (e: KExpr): boolean => {
      let u = false;
      walkExpr(e, (x) => { if (x.k === 'var' && x.name === v) u = true; });
      return u;
    };
    const check = (e: KExpr): void => walkExpr(e, (x) => { if (x.k === 'load' && locals.has(x.array) && uses(x.index)) hit = true; });
    walkStmts(body, (s) => {
      if (s.k === 'store' && locals.has(s.array) && uses(s.index)) hit = true;
      stmtExprs(s).forEach(check);
    });
    return hit;
  };
  walkStmts(k.body, (s) => {
    if (s.k !== 'for') return;
    const n = tripCount(s);
    if (n !== undefined && n <= max && indexesLocal(s.v, s.body)) out.add(s);
  });
  return out;
}
