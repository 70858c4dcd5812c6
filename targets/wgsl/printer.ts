// Kernel IR -> WGSL: one @compute entry point per module. Buffers are storage bindings
// (@group(0) @binding(i), read or read_write; bool buffers hold 0/1 i32) in kernel order,
// every scalar sits in one uniform struct bound after them, shared arrays are
// var<workgroup>, per-thread arrays function-scope `var`s. The workgroup and invocation ids
// are converted to i32 once at the top (and rebuilt from the fold, targets/wgsl/legalise.ts).
// WGSL lacks some of kernel IR's meaning, which small helper functions supply: integer
// x / 0 = x % 0 = 0 (rn_idiv, rn_imod), f32 -> i32 truncating, saturating at the i32 range
// with NaN -> 0 (rn_f2i), min/max of f32 propagating NaN (rn_fmin, rn_fmax), erf and log1p
// (rn_erf: 1.3 ulp in f32 arithmetic; rn_log1p: 1.9 ulp), tanh accurate near 0 and safe from exp overflow (rn_tanh), and
// constants WGSL literals cannot spell (infinities, NaN). NaN tests use the bit pattern, since
// WGSL lets implementations assume that floats are finite. WGSL's select(f, t, cond) is not
// lazy; the legaliser keeps loads that need it out of its operands.
// f16 storage (KBuffer.storage) needs `enable f16;` (the device feature shader-f16): buffers are
// array<f16>, loads f32(x[i]) (exact), stores through rn_f16, which gives +-inf past f16's range
// and keeps NaN (WGSL leaves out-of-range conversions indeterminate) and otherwise converts with
// f16(x), rounding to a neighbour (nearest even on the implementations we know). WGSL has no
// bf16: printing a bf16 buffer is an error.
import { verifyKernel } from '../../compiler/kir-verify.js';
import { simplifyKernel } from '../../compiler/kir-rewrite.js';
import { ALWAYS, CPrinter, f32Bits, f32Text, type Fmt, PREC, prim, PRIMARY, UNARY } from '../../compiler/c-printer.js';
import type { KBinOp, KBuiltin, Kernel, KExpr, KHalf, KType, KUnOp } from '../../compiler/kir.js';
import { legaliseWgsl, type WgslLegalised } from './legalise.js';

const TYPE: Record<KType, string> = { f32: 'f32', i32: 'i32', bool: 'bool' };
const FLT_MAX = 3.4028234663852886e38;
const FLT_MIN_NORMAL = 1.1754943508222875e-38;

const F32_FN: Partial<Record<KUnOp, string>> = {
  exp: 'exp', exp2: 'exp2', log: 'log', log2: 'log2', log1p: 'rn_log1p', sqrt: 'sqrt', rsqrt: 'inverseSqrt',
  sin: 'sin', cos: 'cos', tanh: 'rn_tanh', abs: 'abs', floor: 'floor', ceil: 'ceil', erf: 'rn_erf',
};

interface Helper { deps: string[]; code: string[] }
const HELPERS: Record<string, Helper> = {
  rn_isnan: { deps: [], code: [
    '// NaN test on the bits (implementations may assume floats are finite and fold x != x).',
    'fn rn_isnan(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u; }',
  ] },
  rn_f32_bits: { deps: [], code: [
    '// Infinities and NaN have no WGSL literal (and a constant expression may not produce them).',
    'fn rn_f32_bits(b: u32) -> f32 { return bitcast<f32>(b); }',
  ] },
  rn_f16: { deps: [], code: [
    '// f32 -> f16: +-inf from 65520 up (where nearest even rounds up to infinity), NaN to NaN',
    '// (WGSL leaves out-of-range conversions indeterminate); f16(x) below.',
    'fn rn_f16(x: f32) -> f16 {',
    '  let b = bitcast<u32>(x);',
    '  let a = b & 0x7fffffffu;',
    '  if (a < 0x477ff000u) { return f16(x); }',
    '  let h = ((b >> 16u) & 0x8000u) | select(0x7c00u, 0x7e00u, a > 0x7f800000u);',
    '  return bitcast<vec2<f16>>(h).x;',
    '}',
  ] },
  rn_idiv: { deps: [], code: [
    '// Kernel IR integer division: truncates toward zero; x / 0 = 0 (WGSL gives x).',
    'fn rn_idiv(a: i32, b: i32) -> i32 { if (b == 0) { return 0; } return a / b; }',
  ] },
  rn_imod: { deps: [], code: [
    '// Kernel IR integer remainder: the sign of the dividend; x % 0 = 0.',
    'fn rn_imod(a: i32, b: i32) -> i32 { if (b == 0) { return 0; } return a % b; }',
  ] },
  rn_f2i: { deps: ['rn_isnan'], code: [
    '// f32 -> i32: truncates toward zero, saturates at the i32 range, NaN -> 0.',
    'fn rn_f2i(x: f32) -> i32 {',
    '  if (rn_isnan(x)) { return 0; }',
    '  if (x >= 2147483648.0f) { return 2147483647; }',
    '  return i32(x);',
    '}',
  ] },
  rn_fmin: { deps: ['rn_isnan'], code: [
    '// min and max of f32 propagate NaN.',
    'fn rn_fmin(a: f32, b: f32) -> f32 { if (rn_isnan(a)) { return a; } if (rn_isnan(b)) { return b; } return min(a, b); }',
  ] },
  rn_fmax: { deps: ['rn_isnan'], code: [
    'fn rn_fmax(a: f32, b: f32) -> f32 { if (rn_isnan(a)) { return a; } if (rn_isnan(b)) { return b; } return max(a, b); }',
  ] },
  rn_tanh: { deps: ['rn_isnan'], code: [
    '// tanh: x + x^3 P(x^2) on |x| < 0.55 (0.8 ulp), else (1 - e) / (1 + e) with e = exp(-2|x|),',
    '// which cannot overflow (builtin tanh is inaccurate near 0 on some drivers and NaN for large |x| on others).',
    'fn rn_tanh(x: f32) -> f32 {',
    '  let a = abs(x);',
    '  if (a < 0.55f) {',
    '    let z = x * x;',
    '    let p = ((((0.0025242635f * z - 0.008524712f) * z + 0.021818016f) * z - 0.053964652f) * z + 0.13333324f) * z - 0.33333334f;',
    '    return x + x * z * p;',
    '  }',
    '  if (rn_isnan(x)) { return x; }',
    '  let e = exp(-2.0f * a);',
    '  return sign(x) * ((1.0f - e) / (1.0f + e));',
    '}',
  ] },
  rn_log1p: { deps: [], code: [
    '// log(1 + x): WGSL\'s log is only accurate to 2^-21 absolute near 1, so on [-0.5, 1]',
    '// log1p(x) = 2 atanh(s), s = x / (2 + x), |s| <= 1/3, by its series (1.9 ulp in f32).',
    'fn rn_log1p(x: f32) -> f32 {',
    '  if (x >= -0.5f && x <= 1.0f) {',
    '    let s = x / (2.0f + x);',
    '    let z = s * s;',
    '    let p = ((((((0.05882353f * z + 0.06666667f) * z + 0.07692308f) * z + 0.09090909f) * z + 0.11111111f) * z + 0.14285715f) * z + 0.2f) * z + 0.33333334f;',
    '    return 2.0f * (s + s * z * p);',
    '  }',
    '  return log(1.0f + x);',
    '}',
  ] },
  rn_erf: { deps: [], code: [
    '// erf in f32 arithmetic (max error 1.3 ulp with an exact exp): x + x P(x^2) on |x| < 1,',
    '// 1 - exp(Q(|x|)) on [1, 4), +-1 beyond.',
    'fn rn_erf(x: f32) -> f32 {',
    '  let a = abs(x);',
    '  if (a < 1.0f) {',
    '    let s = x * x;',
    '    let p = ((((((7.847262e-05f * s - 0.0008008193f) * s + 0.0051880996f) * s - 0.026853692f) * s + 0.112835824f) * s - 0.37612626f) * s + 0.12837917f);',
    '    return x + x * p;',
    '  }',
    '  if (a >= 4.0f) { return sign(x); }',
    '  let q = (((((((((-4.1049912e-08f * a + 9.604244e-07f) * a - 8.219294e-06f) * a + 1.2282825e-05f) * a + 0.00037654742f) * a - 0.004206033f) * a + 0.025483964f) * a - 0.10902511f) * a - 0.63258195f) * a - 1.1299219f) * a + 0.00026399005f;',
    '  return sign(x) * (1.0f - exp(q));',
    '}',
  ] },
};
const HELPER_ORDER = ['rn_isnan', 'rn_f32_bits', 'rn_f16', 'rn_idiv', 'rn_imod', 'rn_f2i', 'rn_fmin', 'rn_fmax', 'rn_tanh', 'rn_log1p', 'rn_erf'];

const RELATIONAL = new Set<KBinOp>(['==', '!=', '<', '<=', '>', '>=']);

export class WgslPrinter extends CPrinter {
  private readonly helpers = new Set<string>();
  private readonly ids = new Set<KBuiltin>();
  private readonly buffers: Map<string, { type: KType; storage?: KHalf }>;

  constructor(readonly L: WgslLegalised) {
    super();
    this.buffers = new Map(L.kernel.buffers.map((b) => [b.name, b]));
    const bf16 = L.kernel.buffers.find((b) => b.storage === 'bf16');
    if (bf16) throw new Error(`WGSL has no bf16: kernel ${L.kernel.name} stores buffer '${bf16.name}' as bf16; compile for WebGPU with dtype f16 or f32`);
  }

  private use(h: string): string {
    if (!this.helpers.has(h)) {
      this.helpers.add(h);
      for (const d of HELPERS[h]?.deps ?? []) this.use(d);
    }
    return h;
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
      return { s: String(v), p: v < 0 ? UNARY : PRIMARY };
    }
    const x = Math.fround(value);
    if (!Number.isFinite(x)) return prim(`${this.use('rn_f32_bits')}(0x${f32Bits(x)}u)`);
    const t = f32Text(x);
    // WGSL rejects a literal whose decimal value lies beyond the f32 range, and subnormal ones.
    if (Math.abs(Number(t)) > FLT_MAX || (x !== 0 && Math.abs(x) < FLT_MIN_NORMAL)) return prim(`bitcast<f32>(0x${f32Bits(x)}u)`);
    return { s: `${t}f`, p: t.startsWith('-') ? UNARY : PRIMARY };
  }

  override load(array: string, index: KExpr, type: KType): Fmt {
    const s = `${array}[${this.expr(index)}]`;
    const b = this.buffers.get(array);
    if (b?.storage) return prim(`f32(${s})`);
    return b && type === 'bool' ? { s: `${s} != 0`, p: 3 } : prim(s);
  }

  override store(array: string, index: KExpr, value: KExpr): string {
    const b = this.buffers.get(array);
    const v = b?.storage ? `${this.use('rn_f16')}(${this.expr(value)})` : b && b.type === 'bool' ? `select(0, 1, ${this.expr(value)})` : this.expr(value);
    return `${array}[${this.expr(index)}] = ${v};`;
  }

  override unaryFn(op: KUnOp, type: KType): string {
    if (type === 'i32' && op === 'abs') return 'abs';
    const f = F32_FN[op];
    if (!f) throw new Error(`WGSL printer: no function for '${op}' on ${type}`);
    return f.startsWith('rn_') ? this.use(f) : f;
  }

  /** WGSL does not order relational operators among themselves nor mix && with ||. */
  override operandMin(op: KBinOp, side: 'a' | 'b', child: KExpr): number {
    if (RELATIONAL.has(op)) return PREC['+']!;
    if (op === '&&' || op === '||') {
      if (child.k === 'bin' && (child.op === '&&' || child.op === '||')) return child.op === op && side === 'a' ? 0 : ALWAYS;
      return PREC['=='];
    }
    return super.operandMin(op, side, child);
  }

  override binary(op: KBinOp, a: KExpr, b: KExpr, type: KType): Fmt {
    if ((op === '/' || op === '%') && type === 'i32') {
      if (b.k === 'const' && b.value !== 0) return this.infix(op, a, b);
      return this.call(this.use(op === '/' ? 'rn_idiv' : 'rn_imod'), a, b);
    }
    if (op === 'min' || op === 'max') return this.call(type === 'f32' ? this.use(op === 'min' ? 'rn_fmin' : 'rn_fmax') : op, a, b);
    if (op === 'pow') return this.call('pow', a, b);
    return super.binary(op, a, b, type);
  }

  override select(cond: KExpr, a: KExpr, b: KExpr): Fmt {
    return prim(`select(${this.expr(b)}, ${this.expr(a)}, ${this.expr(cond)})`);
  }

  override cast(a: KExpr, to: KType): Fmt {
    if (a.type === to) return this.fmt(a);
    if (to === 'i32' && a.type === 'f32') return this.call(this.use('rn_f2i'), a);
    return this.call(TYPE[to], a);
  }

  override decl(name: string, type: KType, init: KExpr): string {
    return `${this.L.assigned.has(name) ? 'var' : 'let'} ${name}: ${TYPE[type]} = ${this.expr(init)};`;
  }

  override localArray(name: string, type: KType, size: number): string { return `var ${name}: array<${TYPE[type]}, ${size}>;`; }
  override sharedArray(name: string, type: KType, size: number): string { return `var<workgroup> ${name}: array<${TYPE[type]}, ${size}>;`; }
  override barrier(): string { return 'workgroupBarrier();'; }
  override loopVarDecl(v: string, start: KExpr): string { return `var ${v}: i32 = ${this.expr(start)}`; }

  override header(k: Kernel): string[] {
    const out: string[] = [];
    if (k.buffers.some((b) => b.storage)) out.push('enable f16;', '');
    const helpers = out.length;
    for (const h of HELPER_ORDER) if (this.helpers.has(h)) out.push(...HELPERS[h]!.code);
    if (out.length > helpers) out.push('');
    k.buffers.forEach((b, i) => out.push(`@group(0) @binding(${i}) var<storage, ${b.access}> ${b.name}: array<${b.storage ?? TYPE[b.type === 'bool' ? 'i32' : b.type]}>;`));
    const u = this.L.uniform;
    if (u) {
      out.push('struct Params {', ...u.fields.map((f) => `  ${f.name}: ${TYPE[f.type]},`), '}');
      out.push(`@group(0) @binding(${u.binding}) var<uniform> params: Params;`);
    }
    for (const s of k.shared) out.push(this.sharedArray(s.name, s.type, s.size));
    out.push('');
    out.push(`@compute @workgroup_size(${k.workgroup.join(', ')})`);
    out.push(`fn ${k.name}(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {`);
    return out;
  }

  override prologue(k: Kernel): string[] {
    const out: string[] = [];
    for (const f of this.L.uniform?.fields ?? []) out.push(`let ${f.name}: ${TYPE[f.type]} = params.${f.name};`);
    for (const a of ['x', 'y', 'z'] as const) if (this.ids.has(`tid.${a}`)) out.push(`let tid_${a}: i32 = i32(lid.${a});`);
    if (this.L.foldX || this.L.foldY) {
      // Dispatched as (min(X, 65535), Y', Z') with Y' = ceil(X / 65535) * Y (x fold) and, where Y'
      // passes 65535, as (.., 65535, ceil(Y' / 65535) * Z) (y fold): rebuild the ids, drop the extra groups.
      let wy = 'i32(wid.y)';
      let wz = 'i32(wid.z)';
      if (this.L.foldX) {
        out.push(`let rn_grid_x: i32 = ${this.expr(k.grid[0])};`);
        out.push('let rn_fold: i32 = max((rn_grid_x + 65534) / 65535, 1);');
      }
      if (this.L.foldY) {
        out.push(`let rn_grid_y: i32 = ${this.expr(k.grid[1])}${this.L.foldX ? ' * rn_fold' : ''};`);
        out.push('let rn_fold_y: i32 = max((rn_grid_y + 65534) / 65535, 1);');
        out.push('let rn_wy: i32 = i32(wid.y) + i32(wid.z) % rn_fold_y * 65535;');
        out.push('if (rn_wy >= rn_grid_y) {', `${this.indentUnit}return;`, '}');
        wy = 'rn_wy';
        wz = 'i32(wid.z) / rn_fold_y';
      }
      if (this.L.foldX) {
        out.push(`let wg_x: i32 = i32(wid.x) + ${wy} % rn_fold * 65535;`);
        out.push(`let wg_y: i32 = ${wy} / rn_fold;`);
        out.push('if (wg_x >= rn_grid_x) {', `${this.indentUnit}return;`, '}');
      } else {
        if (this.ids.has('wg.x')) out.push('let wg_x: i32 = i32(wid.x);');
        if (this.ids.has('wg.y')) out.push(`let wg_y: i32 = ${wy};`);
      }
      if (this.ids.has('wg.z')) out.push(`let wg_z: i32 = ${wz};`);
    } else {
      for (const a of ['x', 'y', 'z'] as const) if (this.ids.has(`wg.${a}`)) out.push(`let wg_${a}: i32 = i32(wid.${a});`);
    }
    return out;
  }

  override kernel(k: Kernel): string {
    this.contract = k.contract === true;
    const body: string[] = [];
    this.stmts(k.body, this.indentUnit, body);
    const prologue = this.prologue(k); // may use helpers (the grid expression)
    const out = [...this.header(k), ...prologue.map((l) => this.indentUnit + l), ...body, '}'];
    return out.join('\n') + '\n';
  }
}

export interface WgslModule {
  code: string;
  legalised: WgslLegalised;
}

/** Legalises and prints one kernel as a WGSL module. */
/** `verify: false` skips the kernel IR verifier (only for tests that hand Dawn a deliberately bad kernel). */
export function printWgsl(k: Kernel, opts: { verify?: boolean } = {}): WgslModule {
  if (opts.verify !== false) verifyKernel(k);
  const L = legaliseWgsl(simplifyKernel(k));
  const code = `// Generated by retnetc from kernel IR '${k.name}'.\n` + new WgslPrinter(L).kernel(L.kernel);
  return { code, legalised: L };
}

