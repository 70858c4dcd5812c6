// Rules applied to a kernel before it is printed as WGSL (targets/wgsl/printer.ts):
//   - lazy select: WGSL's select(f, t, cond) evaluates both operands. A select whose
//     branches load through an index that is not in the clamped form the lowering produces
//     for guarded reads (min(max(i, 0), n - 1) over scalar sizes) becomes an if/else that
//     assigns a temporary; && and || whose right side needs such statements become an if.
//     Loads with clamped indices stay in a select: they are in range whatever the condition;
//   - identifiers: WGSL keywords, reserved words, predeclared types and the builtin
//     functions the printer calls, the names it declares itself, '_' and names starting
//     with '__' are renamed; a declaration that would shadow a visible name gets a fresh one;
//   - scalars: all in one uniform struct, 4 bytes each in kernel order (offset = 4 * i), the
//     struct's size rounded up to 16 bytes; buffers take bindings 0..n-1 in kernel order and
//     the uniform struct binding n;
//   - long loops over per-thread arrays are split into loops of at most 16 trips (split-loops.ts:
//     lavapipe keeps such arrays in registers only under loops it unrolls);
//   - fold: WGSL dispatches at most 65535 workgroups per dimension; when the x count is not
//     a constant within that limit the runtime dispatches (min(x, 65535), ceil(x / 65535) * y, z)
//     and the kernel rebuilds wg.x and wg.y from the grid expression over its scalars (the
//     fold factor ceil(x / 65535) is computed in the kernel, so the uniform needs no extra field)
//     and returns from the workgroups past x (workgroup-uniform, before any barrier).
import { anyExpr, kernelNames, NameSupply, renameKernel, stmtExprs, walkExpr, walkStmts } from '../../compiler/c-printer.js';
import * as K from '../../compiler/kir.js';
import type { Kernel, KExpr, KStmt, KType } from '../../compiler/kir.js';
import { splitLongLoops } from './split-loops.js';

/** Most workgroups WebGPU dispatches in one dimension (maxComputeWorkgroupsPerDimension default). */
export const MAX_WORKGROUPS_PER_DIM = 65535;

// https://www.w3.org/TR/WGSL/#keyword-summary and #reserved-words
const WGSL_KEYWORDS = [
  'alias', 'break', 'case', 'const', 'const_assert', 'continue', 'continuing', 'default', 'diagnostic', 'discard',
  'else', 'enable', 'false', 'fn', 'for', 'if', 'let', 'loop', 'override', 'requires', 'return', 'struct', 'switch',
  'true', 'var', 'while',
];
const WGSL_RESERVED_WORDS = [
  'NULL', 'Self', 'abstract', 'active', 'alignas', 'alignof', 'as', 'asm', 'asm_fragment', 'async', 'attribute',
  'auto', 'await', 'become', 'binding_array', 'cast', 'catch', 'class', 'co_await', 'co_return', 'co_yield',
  'coherent', 'column_major', 'common', 'compile', 'compile_fragment', 'concept', 'const_cast', 'consteval',
  'constexpr', 'constinit', 'crate', 'debugger', 'decltype', 'delete', 'demote', 'demote_to_helper', 'do',
  'dynamic_cast', 'enum', 'explicit', 'export', 'extends', 'extern', 'external', 'fallthrough', 'filter', 'final',
  'finally', 'friend', 'from', 'fxgroup', 'get', 'goto', 'groupshared', 'handle', 'highp', 'impl', 'implements',
  'import', 'inline', 'inout', 'instanceof', 'interface', 'layout', 'lowp', 'macro', 'macro_rules', 'match',
  'mediump', 'meta', 'mod', 'module', 'move', 'mut', 'mutable', 'namespace', 'new', 'nil', 'noexcept', 'noinline',
  'nointerpolation', 'non_coherent', 'noncoherent', 'noperspective', 'null', 'nullptr', 'of', 'operator', 'package',
  'packoffset', 'partition', 'pass', 'patch', 'pixelfragment', 'precise', 'precision', 'premerge', 'priv',
  'protected', 'pub', 'public', 'readonly', 'ref', 'regardless', 'register', 'reinterpret_cast', 'require',
  'resource', 'restrict', 'self', 'set', 'shared', 'sizeof', 'smooth', 'snorm', 'static', 'static_assert',
  'static_cast', 'std', 'subroutine', 'super', 'target', 'template', 'this', 'thread_local', 'throw', 'trait', 'try',
  'type', 'typedef', 'typeid', 'typename', 'typeof', 'union', 'unless', 'unorm', 'unsafe', 'unsized', 'use', 'using',
  'varying', 'virtual', 'volatile', 'wgsl', 'where', 'with', 'writeonly', 'yield',
  // older drafts and other front ends (harmless to avoid)
  'CompileShader', 'ComputeShader', 'DomainShader', 'GeometryShader', 'Hullshader', 'signed', 'bitcast', 'static_assert',
];
/** Predeclared types, enumerants and builtin functions: shadowing them would break the printer's own uses. */
const WGSL_PREDECLARED = [
  'array', 'atomic', 'bool', 'f16', 'f32', 'i32', 'u32', 'i64', 'u64', 'vec2', 'vec3', 'vec4', 'vec2i', 'vec3i', 'vec4i',
  'vec2u', 'vec3u', 'vec4u', 'vec2f', 'vec3f', 'vec4f', 'vec2h', 'vec3h', 'vec4h', 'mat2x2', 'mat2x3', 'mat2x4',
  'mat3x2', 'mat3x3', 'mat3x4', 'mat4x2', 'mat4x3', 'mat4x4', 'ptr', 'sampler', 'sampler_comparison',
  'texture_1d', 'texture_2d', 'texture_2d_array', 'texture_3d', 'texture_cube', 'texture_cube_array',
  'texture_multisampled_2d', 'texture_storage_1d', 'texture_storage_2d', 'texture_storage_2d_array',
  'texture_storage_3d', 'texture_depth_2d', 'texture_depth_2d_array', 'texture_depth_cube',
  'texture_depth_cube_array', 'texture_depth_multisampled_2d', 'texture_external',
  // context-dependent names (interpolation, access modes, address spaces)
  'sample', 'center', 'centroid', 'perspective', 'linear', 'flat', 'either', 'first',
  'read', 'write', 'read_write', 'function', 'private', 'workgroup', 'uniform', 'storage', 'handle',
  'abs', 'acos', 'all', 'any', 'arrayLength', 'asin', 'atan', 'atan2', 'ceil', 'clamp', 'cos', 'cosh', 'cross',
  'degrees', 'determinant', 'distance', 'dot', 'exp', 'exp2', 'floor', 'fma', 'fract', 'frexp', 'inverseSqrt',
  'ldexp', 'length', 'log', 'log2', 'max', 'min', 'mix', 'modf', 'normalize', 'pow', 'radians', 'round', 'saturate',
  'select', 'sign', 'sin', 'sinh', 'smoothstep', 'sqrt', 'step', 'tan', 'tanh', 'transpose', 'trunc',
  'workgroupBarrier', 'storageBarrier', 'textureBarrier', 'workgroupUniformLoad',
  'countLeadingZeros', 'countOneBits', 'countTrailingZeros', 'extractBits', 'insertBits', 'reverseBits',
  'firstLeadingBit', 'firstTrailingBit', 'dot4I8Packed', 'dot4U8Packed',
];
/** Names the WGSL printer declares (ids, helpers, the uniform struct). */
export const WGSL_INTERNAL = [
  'main', 'lid', 'wid', 'tid_x', 'tid_y', 'tid_z', 'wg_x', 'wg_y', 'wg_z', 'Params', 'params', 'rn_idiv', 'rn_imod', 'rn_isnan', 'rn_f2i',
  'rn_fmin', 'rn_fmax', 'rn_erf', 'rn_log1p', 'rn_tanh', 'rn_f32_bits', 'rn_f16', 'rn_grid_x', 'rn_fold', 'rn_grid_y', 'rn_fold_y', 'rn_wy',
];

export const WGSL_RESERVED: ReadonlySet<string> = new Set([...WGSL_KEYWORDS, ...WGSL_RESERVED_WORDS, ...WGSL_PREDECLARED, ...WGSL_INTERNAL]);

/** A WGSL identifier (ASCII subset): not '_' alone, not starting with '__'. */
export const validWgslIdent = (n: string): boolean => /^[A-Za-z_][A-Za-z0-9_]*$/.test(n) && n !== '_' && !n.startsWith('__');

export interface UniformField { name: string; type: 'i32' | 'f32'; offset: number }

export interface WgslLegalised {
  /** The kernel with target-safe names and lazy-safe selects. */
  kernel: Kernel;
  /** Original -> printed names of the kernel, its parameters and shared arrays. */
  globals: Map<string, string>;
  /** Bindings: buffers 0..n-1 in kernel order, then the uniform struct. */
  bindings: { name: string; binding: number }[];
  uniform?: { binding: number; size: number; fields: UniformField[] };
  foldX: boolean;
  /** The y count (after the x fold) may pass 65535: dispatched as (x, 65535, ceil(y / 65535) * z). */
  foldY: boolean;
  /** Names assigned after their declaration (printed as `var`; the others as `let`). */
  assigned: Set<string>;
  /** Selects rewritten into if/else. */
  hoisted: number;
}

export function legaliseWgsl(k: Kernel): WgslLegalised {
  const lazy = lazySelects(splitLongLoops(k));
  const { kernel, globals } = renameKernel(lazy.kernel, { valid: validWgslIdent, reserved: WGSL_RESERVED });
  const bindings = kernel.buffers.map((b, i) => ({ name: b.name, binding: i }));
  const fields = kernel.scalars.map((s, i) => ({ name: s.name, type: s.type, offset: 4 * i }));
  const uniform = fields.length ? { binding: bindings.length, size: Math.ceil((4 * fields.length) / 16) * 16, fields } : undefined;
  const gx = kernel.grid[0];
  const foldX = !(gx.k === 'const' && gx.value <= MAX_WORKGROUPS_PER_DIM);
  // y is B * H for most kernels (more than 65535 at large batches), and the x fold multiplies it.
  const gy = kernel.grid[1];
  const foldY = foldX || !(gy.k === 'const' && gy.value <= MAX_WORKGROUPS_PER_DIM);
  const assigned = new Set<string>();
  walkStmts(kernel.body, (s) => { if (s.k === 'assign') assigned.add(s.name); });
  return { kernel, globals, bindings, ...(uniform ? { uniform } : {}), foldX, foldY, assigned, hoisted: lazy.hoisted };
}

// ---- lazy selects ----------------------------------------------------------------------

/**
 * True when `index` stays in range whatever the values of the kernel's variables: every
 * variable it reads outside a clamp min(max(x, c), n) is a scalar parameter (the lowering's
 * guarded reads clamp each index into [0, extent - 1] this way).
 */
export function clampedIndex(index: KExpr, scalars: ReadonlySet<string>): boolean {
  const safe = (e: KExpr): boolean => {
    switch (e.k) {
      case 'const': return true;
      case 'var': return scalars.has(e.name);
      case 'builtin': case 'load': case 'select': return false;
      case 'un': case 'cast': return safe(e.a);
      case 'bin':
        if (e.op === 'min' && e.a.k === 'bin' && e.a.op === 'max' && e.a.b.k === 'const') return safe(e.b);
        if (e.op === 'max' && e.a.k === 'bin' && e.a.op === 'min' && e.b.k === 'const') return safe(e.a.b);
        return safe(e.a) && safe(e.b);
    }
  };
  return safe(index);
}

/** Loads in `e` whose index is not in the clamped form. */
const unsafeLoad = (e: KExpr, scalars: ReadonlySet<string>): boolean =>
  anyExpr(e, (x) => x.k === 'load' && !clampedIndex(x.index, scalars));

const zero = (t: KType): KExpr => (t === 'f32' ? K.f32(0) : t === 'i32' ? K.i32(0) : K.bool(false));

/** Rewrites selects that must stay lazy into if/else (see the file header). */
export function lazySelects(k: Kernel): { kernel: Kernel; hoisted: number } {
  const scalars = new Set(k.scalars.map((s) => s.name));
  const names = new NameSupply(kernelNames(k));
  let hoisted = 0;

  /** Statements that must run first, and the expression that then gives the value of e. */
  const lin = (e: KExpr): [KStmt[], KExpr] => {
    switch (e.k) {
      case 'const': case 'var': case 'builtin': return [[], e];
      case 'load': { const [s, i] = lin(e.index); return [s, { ...e, index: i }]; }
      case 'un': case 'cast': { const [s, a] = lin(e.a); return [s, { ...e, a }]; }
      case 'bin': {
        const [sa, a] = lin(e.a);
        const [sb, b] = lin(e.b);
        if ((e.op === '&&' || e.op === '||') && sb.length) {
          // b only runs when a does not decide: t = a; if (t == (op == '&&')) { ...; t = b; }
          const t = names.fresh('lz');
          const cond = e.op === '&&' ? K.v(t, 'bool') : K.un('not', K.v(t, 'bool'));
          return [[...sa, K.decl(t, 'bool', a), K.iff(cond, [...sb, K.assign(t, b)])], K.v(t, 'bool')];
        }
        return [[...sa, ...sb], { ...e, a, b }];
      }
      case 'select': {
        const [sc, c] = lin(e.cond);
        const [sa, a] = lin(e.a);
        const [sb, b] = lin(e.b);
        if (!sa.length && !sb.length && !unsafeLoad(e.a, scalars) && !unsafeLoad(e.b, scalars)) return [sc, { ...e, cond: c, a, b }];
        hoisted++;
        const t = names.fresh('sel');
        return [[...sc, K.decl(t, e.type, zero(e.type)), K.iff(c, [...sa, K.assign(t, a)], [...sb, K.assign(t, b)])], K.v(t, e.type)];
      }
    }
  };

  const block = (ss: readonly KStmt[]): KStmt[] => ss.flatMap(stmt);
  const stmt = (s: KStmt): KStmt[] => {
    switch (s.k) {
      case 'decl': { const [pre, init] = lin(s.init); return [...pre, { ...s, init }]; }
      case 'assign': { const [pre, value] = lin(s.value); return [...pre, { ...s, value }]; }
      case 'store': {
        const [pi, index] = lin(s.index);
        const [pv, value] = lin(s.value);
        return [...pi, ...pv, { ...s, index, value }];
      }
      case 'if': { const [pre, cond] = lin(s.cond); return [...pre, { ...s, cond, then: block(s.then), else: block(s.else) }]; }
      case 'for': {
        const [pre, start] = lin(s.start);
        const [pe, end] = lin(s.end);
        if (pe.length) throw new Error(`WGSL legalisation: the end of loop '${s.v}' in kernel ${k.name} needs a lazy select with a load; hoist it out of the loop`);
        return [...pre, { ...s, start, end, body: block(s.body) }];
      }
      default: return [s];
    }
  };
  return { kernel: { ...k, body: block(k.body) }, hoisted };
}

/** Selects in the kernel that still have a branch loading through an unclamped index. */
export function selectsWithLoads(k: Kernel): number {
  let n = 0;
  const scalars = new Set(k.scalars.map((s) => s.name));
  const visit = (e: KExpr): void => walkExpr(e, (x) => { if (x.k === 'select' && (unsafeLoad(x.a, scalars) || unsafeLoad(x.b, scalars))) n++; });
  walkStmts(k.body, (s) => stmtExprs(s).forEach(visit));
  return n;
}
