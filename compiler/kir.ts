// Kernel IR: target-neutral SIMT code. A kernel runs on a grid of workgroups; each workgroup
// has `workgroup` threads that share `shared` arrays and meet at barriers. Printers for CUDA
// and WGSL and the CPU executor (targets/cpu) all give these nodes the same meaning:
//   - f32 arithmetic rounds to float32 after every operation; i32 wraps modulo 2^32;
//   - integer '/' truncates toward zero and '%' takes the sign of the dividend (C, WGSL);
//   - a `for` runs var = start, start+step, ... while var < end (step > 0) or var > end (step < 0);
//   - every thread of a workgroup reaches the same barriers in the same order;
//   - integer x / 0 and x % 0 are 0; f32 -> i32 truncates toward zero, saturates, NaN -> 0;
//   - select, && and || evaluate lazily (C's ?:), so select(i < n, x[i], 0) is a guarded load;
//   - a loop's end is evaluated before every iteration; a decl is scoped to its block;
//   - min/max propagate NaN; shared and local arrays start undefined (the CPU executor
//     fills them with poison: NaN, INT_MIN) and buffers hold f32 or i32 (bool as 0/1 i32);
//   - half-precision storage: an f32 buffer may be stored as f16 (IEEE binary16) or bf16
//     (bfloat16), 2 bytes an element (KBuffer.storage). Its loads are f32 values (the
//     conversion is exact) and its stores round the f32 value to the storage type, to nearest
//     even, past the largest finite value to +-inf, NaN to NaN (bf16 keeps f32's range).
//     Nothing else changes: variables, local arrays and all arithmetic stay f32. A shared f32
//     array may have half storage too (KShared.storage), with the same load and store rules.
//   - mma (tensor cores, CUDA only): a warp-level tile product over shared half arrays into f32
//     accumulators in a per-thread local array; see the statement below for its exact meaning.
//   - contraction (Kernel.contract): in a kernel that sets it, an f32 sum with a product as an
//     operand, x * y + z or z + x * y, is one fused multiply-add, rounded once (fmaParts says
//     which product where both operands are products). Elsewhere every operation rounds.

export type KType = 'f32' | 'i32' | 'bool';

export type KBuiltin = 'tid.x' | 'tid.y' | 'tid.z' | 'wg.x' | 'wg.y' | 'wg.z';

export type KUnOp = 'neg' | 'not' | 'exp' | 'exp2' | 'log' | 'log2' | 'log1p' | 'sqrt' | 'rsqrt' | 'sin' | 'cos' | 'tanh' | 'abs' | 'floor' | 'ceil' | 'erf';
export type KBinOp = '+' | '-' | '*' | '/' | '%' | 'min' | 'max' | 'pow' | '<' | '<=' | '>' | '>=' | '==' | '!=' | '&&' | '||';

export type KExpr =
  | { k: 'const'; type: KType; value: number }
  /** A local variable (decl) or a scalar parameter. */
  | { k: 'var'; name: string; type: KType }
  | { k: 'builtin'; name: KBuiltin; type: 'i32' }
  /** Element `index` of a buffer, shared array or local array. */
  | { k: 'load'; array: string; index: KExpr; type: KType }
  | { k: 'un'; op: KUnOp; a: KExpr; type: KType }
  | { k: 'bin'; op: KBinOp; a: KExpr; b: KExpr; type: KType }
  | { k: 'select'; cond: KExpr; a: KExpr; b: KExpr; type: KType }
  | { k: 'cast'; a: KExpr; type: KType };

export type KStmt =
  | { k: 'decl'; name: string; type: KType; init: KExpr }
  | { k: 'assign'; name: string; value: KExpr }
  /** A per-thread array of static size (registers or local memory). */
  | { k: 'local'; name: string; type: KType; size: number }
  | { k: 'store'; array: string; index: KExpr; value: KExpr }
  | { k: 'if'; cond: KExpr; then: KStmt[]; else: KStmt[] }
  | { k: 'for'; v: string; start: KExpr; end: KExpr; step: number; body: KStmt[] }
  | { k: 'barrier' }
  | { k: 'comment'; text: string }
  | KMma;

/**
 * One k16 step of a warp tile: mt x nt blocks of mma.sync m16n8k16 (row.col, `input` operands,
 * f32 accumulators). Every thread of the workgroup executes it (uniform control flow, workgroup
 * [T, 1, 1] with T a multiple of 32); lane l = tid.x % 32 owns, of block (i, j), the four
 * accumulators c[cOff + 4 (i nt + j) + 2 h + e] at row r = l / 4 + 8 h and column n = 2 (l % 4) + e
 * (h, e in 0, 1), the m16n8 f32 fragment of mma.sync. For each it adds, for kk = 0 .. 15 in
 * order, rounding to f32 after each addition, the (exact) product
 *   a[aOff + (16 i + r) aStride + kk] * b[bOff + (8 j + n) bStride + kk]
 * (A row-major, k contiguous; B stored [n][k], k contiguous). `a` and `b` are shared arrays with
 * half storage `input`; row starts are 16-byte aligned (aOff, bOff, aStride, bStride multiples
 * of 8), as ldmatrix needs. The hardware may sum the 16 products in another order (exact
 * products, f32 sums): results agree to f32 rounding, not bit for bit. `of`: the statement.
 */
export interface KMma {
  k: 'mma';
  input: KHalf;
  mt: number; nt: number;
  a: string; aOff: KExpr; aStride: number;
  b: string; bOff: KExpr; bStride: number;
  c: string; cOff: number;
  of: string;
}

/** Half-precision storage of an f32 buffer (see the header). */
export type KHalf = 'f16' | 'bf16';
/** What a buffer's elements are in memory: f32, i32 (also bool, as 0/1) or a half type. */
export type KStorage = 'f32' | 'i32' | KHalf;

export interface KBuffer {
  name: string;
  /** The type of its loads and stores. */
  type: KType;
  access: 'read' | 'read_write';
  /** f32 buffers only: stored in half precision (absent: 4-byte f32 or i32 elements). */
  storage?: KHalf;
}

/** The element type of a buffer in memory. */
export const bufferStorage = (b: Pick<KBuffer, 'type' | 'storage'>): KStorage => b.storage ?? (b.type === 'f32' ? 'f32' : 'i32');
/** Bytes of one element in memory. */
export const storageBytes = (s: KStorage): number => (s === 'f16' || s === 'bf16' ? 2 : 4);
export interface KScalar { name: string; type: 'i32' | 'f32' }
/** A workgroup-shared array; `storage`: f32 arrays only, half elements (as KBuffer.storage). */
export interface KShared { name: string; type: KType; size: number; storage?: KHalf }

export interface Kernel {
  name: string;
  /** Threads per workgroup in x, y, z. */
  workgroup: [number, number, number];
  /** Workgroups per dimension, as expressions over the scalar parameters. */
  grid: [KExpr, KExpr, KExpr];
  buffers: KBuffer[];
  scalars: KScalar[];
  shared: KShared[];
  body: KStmt[];
  /**
   * f32 `x * y + z` and `z + x * y` are fused multiply-adds (see the header): set by the blocked
   * dense products for CPUs, whose micro-kernel is multiply-adds (twice the peak of a multiply
   * then an add). Every target and the CPU executor honour it, so they still agree bit for bit.
   */
  contract?: boolean;
}

/**
 * Under contraction, the fused multiply-add [x, y, z] = x * y + z that the f32 sum `a + b` is
 * (the right operand's product where both are products), else undefined.
 */
export function fmaParts(a: KExpr, b: KExpr): [KExpr, KExpr, KExpr] | undefined {
  const prod = (e: KExpr): e is Extract<KExpr, { k: 'bin' }> => e.k === 'bin' && e.op === '*' && e.type === 'f32';
  if (a.type !== 'f32') return undefined;
  if (prod(b)) return [b.a, b.b, a];
  if (prod(a)) return [a.a, a.b, b];
  return undefined;
}

// ---- builders: short names keep the lowering code readable ----------------------------

export const f32 = (value: number): KExpr => ({ k: 'const', type: 'f32', value: Math.fround(value) });
export const i32 = (value: number): KExpr => ({ k: 'const', type: 'i32', value: value | 0 });
export const bool = (value: boolean): KExpr => ({ k: 'const', type: 'bool', value: value ? 1 : 0 });
export const v = (name: string, type: KType = 'i32'): KExpr => ({ k: 'var', name, type });
export const tid = (axis: 'x' | 'y' | 'z' = 'x'): KExpr => ({ k: 'builtin', name: `tid.${axis}`, type: 'i32' });
export const wg = (axis: 'x' | 'y' | 'z' = 'x'): KExpr => ({ k: 'builtin', name: `wg.${axis}`, type: 'i32' });
export const load = (array: string, index: KExpr, type: KType = 'f32'): KExpr => ({ k: 'load', array, index, type });
export const un = (op: KUnOp, a: KExpr): KExpr => ({ k: 'un', op, a, type: op === 'not' ? 'bool' : a.type });
export const cast = (a: KExpr, type: KType): KExpr => (a.type === type ? a : { k: 'cast', a, type });

const CMP = new Set<KBinOp>(['<', '<=', '>', '>=', '==', '!=', '&&', '||']);
export function bin(op: KBinOp, a: KExpr, b: KExpr): KExpr {
  if (a.type !== b.type) throw new Error(`kernel IR: '${op}' on ${a.type} and ${b.type}`);
  if ((op === '&&' || op === '||') && a.type !== 'bool') throw new Error(`kernel IR: '${op}' needs bool operands`);
  return { k: 'bin', op, a, b, type: CMP.has(op) ? 'bool' : a.type };
}
const isConst = (e: KExpr, x: number): boolean => e.k === 'const' && e.value === x;
/** a + b; adding a negative integer constant reads as a subtraction. */
export const add = (a: KExpr, b: KExpr): KExpr => (b.k === 'const' && b.type === 'i32' && b.value < 0 ? bin('-', a, i32(-b.value)) : bin('+', a, b));
export const sub = (a: KExpr, b: KExpr): KExpr => bin('-', a, b);
/** a * b; multiplying by the constant 1 is dropped (exact in every type). */
export const mul = (a: KExpr, b: KExpr): KExpr => (isConst(b, 1) && a.type === b.type ? a : isConst(a, 1) && a.type === b.type ? b : bin('*', a, b));
export const div = (a: KExpr, b: KExpr): KExpr => bin('/', a, b);
export const lt = (a: KExpr, b: KExpr): KExpr => bin('<', a, b);
export const and = (a: KExpr, b: KExpr): KExpr => bin('&&', a, b);
export const select = (cond: KExpr, a: KExpr, b: KExpr): KExpr => ({ k: 'select', cond, a, b, type: a.type });

export const decl = (name: string, type: KType, init: KExpr): KStmt => ({ k: 'decl', name, type, init });
export const local = (name: string, type: KType, size: number): KStmt => ({ k: 'local', name, type, size });
export const assign = (name: string, value: KExpr): KStmt => ({ k: 'assign', name, value });
export const store = (array: string, index: KExpr, value: KExpr): KStmt => ({ k: 'store', array, index, value });
export const iff = (cond: KExpr, then: KStmt[], els: KStmt[] = []): KStmt => ({ k: 'if', cond, then, else: els });
export const loop = (name: string, start: KExpr, end: KExpr, body: KStmt[], step = 1): KStmt => ({ k: 'for', v: name, start, end, step, body });
export const barrier = (): KStmt => ({ k: 'barrier' });
export const comment = (text: string): KStmt => ({ k: 'comment', text });
