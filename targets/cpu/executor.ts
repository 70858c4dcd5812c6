// The CPU executor: the executable definition of Kernel IR semantics (compiler/kir.ts).
//
// A kernel is translated once into JavaScript source (new Function) and cached per Kernel
// object. Decisions the IR header leaves open, fixed here (and expected of the printers):
//   - f32 values are doubles that always hold a float32: every f32 operation computes in double
//     and rounds with Math.fround (for + - * / sqrt this is the correctly rounded f32 result;
//     neg, abs, floor, ceil, min, max are exact and need no rounding). Transcendentals are the
//     float64 function rounded once, i.e. a 0.5-ulp reference, tighter than any GPU.
//   - i32: + - wrap via |0, * via Math.imul; '/' truncates toward zero and '%' takes the sign of
//     the dividend; x / 0 and x % 0 are 0 (the executor must not crash; WGSL defines x / 0 = x,
//     CUDA leaves it undefined, so kernels must not rely on either). INT_MIN / -1 = INT_MIN.
//   - f32 -> i32 truncates toward zero, saturating at the i32 range, NaN -> 0 (as WGSL and
//     CUDA's cvt.rzi). i32 -> f32 rounds to nearest. bool -> number is 0/1; number -> bool is != 0.
//   - min/max of f32 propagate NaN (Math.min); select and && / || evaluate lazily like C's ?:,
//     so `select(i < n, x[i], 0)` is a legal guarded load.
//   - A `for` re-evaluates `end` before every iteration (like C); `start` once.
//   - decl scopes are blocks; a decl may shadow an outer name; its initialiser sees the outer one.
//   - Memory the kernel has not written is poisoned, as real GPUs leave it undefined: shared
//     arrays (per workgroup) and local arrays (at each execution of their `local` statement) are
//     filled with NaN (f32), INT_MIN (i32, which makes a stray index fail the bounds check) or
//     true (bool), so a kernel reading before writing fails tests visibly.
//   - Every load and store is bounds-checked; an out-of-range index throws, naming the kernel,
//     the array, the index, the length, the workgroup and the thread.
//   - Barriers: a workgroup's threads are generators yielding at each barrier; the scheduler
//     runs each thread to its next barrier and requires all threads to wait at the same barrier
//     statement, or all to have finished. Kernels without barriers run threads in sequence.
//   - IR errors (type mismatches, unknown names, stores to read-only buffers) throw at compile.
//   - Half-precision buffers (KBuffer.storage f16 / bf16) are Uint16Arrays of the bits: a load
//     looks the value up in a table (exact), a store rounds to nearest even (targets/half.ts);
//     shared arrays with half storage too (poisoned with the half NaN).
//   - contraction (Kernel.contract): a fused multiply-add x * y + z is fma32 below, the correctly
//     rounded f32 result (what fmaf and the hardware's fma give).
//   - mma (kir.ts KMma): each thread computes its own fragment from the shared operands, in the
//     documented order (kk = 0 .. 15, f32 rounding after each addition; products are exact),
//     bounds-checked like any load; lane = tid.x % 32.
import { fmaParts, type KHalf, type Kernel, type KExpr, type KStmt, type KType } from '../../compiler/kir.js';
import { erf } from '../../dsl/math.js';
import { verifyKernel } from '../../compiler/kir-verify.js';
import { bf16Values, f16Values, toBF16Bits, toF16Bits } from '../half.js';

export interface KernelArgs {
  /** f32 buffers: Float32Array, or Uint16Array (the bits) when stored as f16 / bf16; i32 and bool: Int32Array. */
  buffers: Record<string, Float32Array | Int32Array | Uint16Array>;
  scalars: Record<string, number>;
}

export interface CompiledKernel {
  readonly kernel: Kernel;
  /** The generated JavaScript, for debugging. */
  readonly source: string;
  /** True when the kernel has barriers and its threads run as generators. */
  readonly usesBarriers: boolean;
  run(args: KernelArgs): void;
}

const cache = new WeakMap<Kernel, CompiledKernel>();

export function compileKernel(k: Kernel): CompiledKernel {
  let c = cache.get(k);
  if (!c) cache.set(k, (c = compile(k)));
  return c;
}

export function runKernel(k: Kernel, args: KernelArgs): void {
  compileKernel(k).run(args);
}

// ---- runtime helpers handed to the generated code ------------------------------------

const idiv = (a: number, b: number): number => (b === 0 ? 0 : (a / b) | 0);
const imod = (a: number, b: number): number => (b === 0 ? 0 : (a % b) | 0);
const f2i = (x: number): number =>
  x !== x ? 0 : x >= 2147483647 ? 2147483647 : x <= -2147483648 ? -2147483648 : x | 0;

/** Names of the half conversions in the generated code (tables of values; rounding functions). */
const HALF_TABLE: Record<KHalf, string> = { f16: 'h16', bf16: 'hb16' };
const HALF_ROUND: Record<KHalf, string> = { f16: 'r16', bf16: 'rb16' };

const POISON: Record<KType, string> = { f32: 'NaN', i32: '-2147483648', bool: '1' };
/** Quiet-NaN bits of the half types, the poison of shared arrays with half storage. */
const HALF_POISON: Record<KHalf, string> = { f16: '0x7e00', bf16: '0x7fc0' };

/**
 * One thread's part of an mma statement (kir.ts KMma): for each block (i, j) its four
 * accumulators c[cOff + 4 (i nt + j) + 2 h + e] += sum over kk of a(row, kk) b(kk, col), added in
 * the order kk = 0 .. 15 with f32 rounding after each addition (half products are exact in f32).
 */
function mmaStep(a: Uint16Array, b: Uint16Array, c: Float32Array, table: Float32Array, aOff: number, aStride: number, bOff: number, bStride: number, cOff: number, mt: number, nt: number, lane: number, bad: (arr: 'a' | 'b', i: number, len: number) => never): void {
  const g = lane >> 2, t2 = (lane & 3) * 2;
  for (let i = 0; i < mt; i++) for (let j = 0; j < nt; j++) for (let h = 0; h < 2; h++) for (let e = 0; e < 2; e++) {
    const ra = aOff + (16 * i + g + 8 * h) * aStride, rb = bOff + (8 * j + t2 + e) * bStride;
    if (ra < 0 || ra + 16 > a.length || ra % 8 !== 0) bad('a', ra, a.length);
    if (rb < 0 || rb + 16 > b.length || rb % 8 !== 0) bad('b', rb, b.length);
    const ci = cOff + 4 * (i * nt + j) + 2 * h + e;
    let acc = c[ci]!;
    for (let kk = 0; kk < 16; kk++) acc = Math.fround(acc + table[a[ra + kk]!]! * table[b[rb + kk]!]!);
    c[ci] = acc;
  }
}
const ARRAY: Record<KType, string> = { f32: 'Float32Array', i32: 'Int32Array', bool: 'Uint8Array' };

// ---- fused multiply-add ------------------------------------------------------------------

/** p + z, p and z doubles, is their rounded sum s plus this error, exactly (TwoSum). */
const sumError = (p: number, z: number, s: number): number => { const bb = s - p; return (p - (s - bb)) + (z - bb); };
/** Halfway between the largest finite f32 and 2^128: above it, f32 rounding overflows. */
const F32_OVERFLOW = 2 ** 128 - 2 ** 103;
const F32_MAX = 2 ** 128 - 2 ** 104;

/**
 * The correctly rounded f32 x * y + z of f32 values. The product is exact in a double (24 + 24
 * bits) and the sum is rounded to a double, s; rounding s to f32 is then the right answer but
 * where s fell exactly halfway between two f32 values while the exact sum was not there (double
 * rounding): then the exact sum lies on its error's side.
 */
export function fma32(x: number, y: number, z: number): number {
  const p = x * y, s = p + z;
  const r = Math.fround(s);
  if (r === s || Number.isNaN(s) || !Number.isFinite(p) || !Number.isFinite(z)) return r;
  const err = sumError(p, z, s);
  if (err === 0) return r;
  if (!Number.isFinite(r)) return Math.abs(s) === F32_OVERFLOW && (err > 0) !== (s > 0) ? Math.sign(s) * F32_MAX : r;
  const o = r + 2 * (s - r); // the other f32 neighbour of s, where s is halfway
  if (Math.fround(o) !== o) return r;
  return (err > 0) === (o > r) ? o : r;
}

// ---- code generation -----------------------------------------------------------------

interface VarSym { kind: 'var'; js: string; type: KType; param: boolean }
interface ArrSym { kind: 'buffer' | 'shared' | 'local'; name: string; js: string; len: string; type: KType; writable: boolean; half?: KHalf }
type Sym = VarSym | ArrSym;
interface Site { op: 'load' | 'store'; kind: ArrSym['kind']; array: string }

const FMATH: Partial<Record<string, string>> = {
  exp: 'Math.exp', log: 'Math.log', log2: 'Math.log2', log1p: 'Math.log1p', sqrt: 'Math.sqrt',
  sin: 'Math.sin', cos: 'Math.cos', tanh: 'Math.tanh', erf: 'erf',
};

function lit(x: number): string {
  return Object.is(x, -0) ? '(-0)' : x < 0 ? `(${x})` : String(x);
}

const isSimple = (code: string): boolean => /^(?:[\w$]+|\(-?\d+\))$/.test(code);

class Gen {
  readonly sites: Site[] = [];
  temps = 0;
  /** `local` arrays: [js name, type, size]; allocated in a prologue, poisoned where declared. */
  readonly locals: [string, KType, number][] = [];
  private ids = 0;
  private barriers = 0;
  private scopes: Map<string, Sym>[];
  /** Grid expressions may only use scalars. */
  gridMode = false;

  constructor(readonly k: Kernel, globals: Map<string, Sym>) {
    this.scopes = [globals];
  }

  err(msg: string): never {
    throw new Error(`kernel IR error in kernel ${this.k.name}: ${msg}`);
  }

  private lookup(name: string): Sym | undefined {
    for (let i = this.scopes.length - 1; i >= 0; i--) {
      const s = this.scopes[i]!.get(name);
      if (s) return s;
    }
    return undefined;
  }

  private declare(name: string, sym: Sym): void {
    const top = this.scopes[this.scopes.length - 1]!;
    if (top.has(name)) this.err(`'${name}' declared twice in one scope`);
    top.set(name, sym);
  }

  private js(prefix: string, name: string): string {
    return `${prefix}${this.ids++}_${name.replace(/[^\w]/g, '_')}`;
  }

  private array(name: string): ArrSym {
    const s = this.lookup(name);
    if (!s || s.kind === 'var') this.err(`unknown array '${name}'`);
    return s;
  }

  /** JS for an expression, after checking that e.type is what its operands give. */
  expr(e: KExpr): string {
    const want = (got: KType, what: string): void => {
      if (got !== e.type) this.err(`${what} has type ${got} but is marked ${e.type}`);
    };
    switch (e.k) {
      case 'const':
        return e.type === 'f32' ? lit(Math.fround(e.value)) : e.type === 'i32' ? lit(e.value | 0) : e.value ? 'true' : 'false';
      case 'var': {
        const s = this.lookup(e.name);
        if (!s || s.kind !== 'var') this.err(`unknown variable '${e.name}'`);
        if (this.gridMode && !s.param) this.err(`grid uses '${e.name}', which is not a scalar parameter`);
        want(s.type, `variable '${e.name}'`);
        return s.js;
      }
      case 'builtin':
        if (this.gridMode) this.err(`grid uses builtin ${e.name}`);
        return e.name.replace('.', '_');
      case 'load': {
        if (this.gridMode) this.err(`grid loads from '${e.array}'`);
        const a = this.array(e.array);
        want(a.type, `load from '${e.array}'`);
        const idx = this.index(e.index);
        const site = this.site('load', a);
        const bool = a.type === 'bool' ? ' !== 0' : '';
        const elem = (i: string): string => (a.half ? `${HALF_TABLE[a.half]}[${a.js}[${i}]]` : `${a.js}[${i}]${bool}`);
        if (isSimple(idx)) return `((${idx} >>> 0) < ${a.len} ? ${elem(idx)} : oob(${site}, ${idx}, ${a.len}, ${CTX}))`;
        const t = `t${this.temps++}`;
        return `(((${t} = ${idx}) >>> 0) < ${a.len} ? ${elem(t)} : oob(${site}, ${t}, ${a.len}, ${CTX}))`;
      }
      case 'un': {
        const a = this.expr(e.a);
        const t = e.a.type;
        if (e.op === 'not') {
          if (t !== 'bool') this.err(`'not' on ${t}`);
          want('bool', "'not'");
          return `(!${a})`;
        }
        want(t, `'${e.op}'`);
        if (t === 'i32' && e.op === 'neg') return `((-${a}) | 0)`;
        if (t === 'i32' && e.op === 'abs') return `(Math.abs(${a}) | 0)`;
        if (t !== 'f32') this.err(`'${e.op}' on ${t}`);
        switch (e.op) {
          case 'neg': return `(-${a})`;
          case 'abs': case 'floor': case 'ceil': return `Math.${e.op}(${a})`;
          case 'exp2': return `fr(2 ** ${a})`;
          case 'rsqrt': return `fr(1 / Math.sqrt(${a}))`;
          default: return `fr(${FMATH[e.op]!}(${a}))`;
        }
      }
      case 'bin': {
        if (this.k.contract && e.op === '+' && e.type === 'f32' && e.a.type === 'f32' && e.b.type === 'f32') {
          const f = fmaParts(e.a, e.b);
          if (f && f[0].type === 'f32' && f[1].type === 'f32') return `fma32(${f.map((x) => this.expr(x)).join(', ')})`;
        }
        const a = this.expr(e.a), b = this.expr(e.b);
        const ta = e.a.type, tb = e.b.type;
        if (ta !== tb) this.err(`'${e.op}' on ${ta} and ${tb}`);
        switch (e.op) {
          case '&&': case '||':
            if (ta !== 'bool') this.err(`'${e.op}' on ${ta}`);
            want('bool', `'${e.op}'`);
            return `(${a} ${e.op} ${b})`;
          case '==': case '!=':
            want('bool', `'${e.op}'`);
            return `(${a} ${e.op}= ${b})`;
          case '<': case '<=': case '>': case '>=':
            if (ta === 'bool') this.err(`'${e.op}' on bool`);
            want('bool', `'${e.op}'`);
            return `(${a} ${e.op} ${b})`;
        }
        want(ta, `'${e.op}'`);
        if (ta === 'bool') this.err(`'${e.op}' on bool`);
        if (e.op === 'min' || e.op === 'max') return `Math.${e.op}(${a}, ${b})`;
        if (ta === 'f32') return e.op === 'pow' ? `fr($pow(${a}, ${b}))` : `fr(${a} ${e.op} ${b})`;
        switch (e.op) {
          case '+': case '-': return `((${a} ${e.op} ${b}) | 0)`;
          case '*': return `Math.imul(${a}, ${b})`;
          case '/': case '%': {
            // A non-zero constant divisor needs no zero test.
            const constB = e.b.k === 'const' && (e.b.value | 0) !== 0;
            return constB ? `((${a} ${e.op} ${b}) | 0)` : `${e.op === '/' ? 'idiv' : 'imod'}(${a}, ${b})`;
          }
          default: this.err(`'${e.op}' on i32`);
        }
      }
      case 'select': {
        if (e.cond.type !== 'bool') this.err(`select condition is ${e.cond.type}`);
        if (e.a.type !== e.b.type) this.err(`select of ${e.a.type} and ${e.b.type}`);
        want(e.a.type, 'select');
        return `(${this.expr(e.cond)} ? ${this.expr(e.a)} : ${this.expr(e.b)})`;
      }
      case 'cast': {
        const a = this.expr(e.a);
        const from = e.a.type;
        if (from === e.type) return a;
        if (e.type === 'bool') return `(${a} !== 0)`;
        if (from === 'bool') return `(${a} ? 1 : 0)`;
        return e.type === 'f32' ? `fr(${a})` : `f2i(${a})`;
      }
    }
  }

  private index(e: KExpr): string {
    if (e.type !== 'i32') this.err(`array index has type ${e.type}`);
    return this.expr(e);
  }

  private site(op: Site['op'], a: ArrSym): number {
    this.sites.push({ op, kind: a.kind, array: a.name });
    return this.sites.length - 1;
  }

  stmts(ss: KStmt[], out: string[], ind: string): void {
    for (const s of ss) this.stmt(s, out, ind);
  }

  private block(ss: KStmt[], out: string[], ind: string): void {
    this.scopes.push(new Map());
    this.stmts(ss, out, ind);
    this.scopes.pop();
  }

  private stmt(s: KStmt, out: string[], ind: string): void {
    switch (s.k) {
      case 'decl': {
        const init = this.expr(s.init); // before declaring: the initialiser sees outer names
        if (s.init.type !== s.type) this.err(`'${s.name}' is ${s.type} but initialised with ${s.init.type}`);
        const js = this.js('v', s.name);
        this.declare(s.name, { kind: 'var', js, type: s.type, param: false });
        out.push(`${ind}let ${js} = ${init};`);
        return;
      }
      case 'assign': {
        const v = this.lookup(s.name);
        if (!v || v.kind !== 'var') this.err(`assignment to unknown variable '${s.name}'`);
        if (v.param) this.err(`assignment to scalar parameter '${s.name}'`);
        if (s.value.type !== v.type) this.err(`'${s.name}' is ${v.type} but assigned ${s.value.type}`);
        out.push(`${ind}${v.js} = ${this.expr(s.value)};`);
        return;
      }
      case 'local': {
        if (!Number.isInteger(s.size) || s.size <= 0) this.err(`local array '${s.name}' has size ${s.size}`);
        const js = this.js('l', s.name);
        this.declare(s.name, { kind: 'local', name: s.name, js, len: String(s.size), type: s.type, writable: true });
        this.locals.push([js, s.type, s.size]);
        out.push(`${ind}${js}.fill(${POISON[s.type]});`);
        return;
      }
      case 'store': {
        const a = this.array(s.array);
        if (!a.writable) this.err(`store to read-only buffer '${s.array}'`);
        if (s.value.type !== a.type) this.err(`store of ${s.value.type} into ${a.type} array '${s.array}'`);
        let idx = this.index(s.index);
        const site = this.site('store', a);
        if (!isSimple(idx)) {
          const t = `t${this.temps++}`;
          out.push(`${ind}${t} = ${idx};`);
          idx = t;
        }
        const value = this.expr(s.value);
        out.push(`${ind}if ((${idx} >>> 0) >= ${a.len}) oob(${site}, ${idx}, ${a.len}, ${CTX});`);
        out.push(`${ind}${a.js}[${idx}] = ${a.type === 'bool' ? `${value} ? 1 : 0` : a.half ? `${HALF_ROUND[a.half]}(${value})` : value};`);
        return;
      }
      case 'if': {
        if (s.cond.type !== 'bool') this.err(`if condition is ${s.cond.type}`);
        out.push(`${ind}if (${this.expr(s.cond)}) {`);
        this.block(s.then, out, ind + '  ');
        if (s.else.length) {
          out.push(`${ind}} else {`);
          this.block(s.else, out, ind + '  ');
        }
        out.push(`${ind}}`);
        return;
      }
      case 'for': {
        if (s.start.type !== 'i32' || s.end.type !== 'i32') this.err(`loop '${s.v}' bounds must be i32`);
        if (!Number.isInteger(s.step) || s.step === 0 || (s.step | 0) !== s.step) this.err(`loop '${s.v}' has step ${s.step}`);
        const start = this.expr(s.start);
        this.scopes.push(new Map());
        const js = this.js('v', s.v);
        this.declare(s.v, { kind: 'var', js, type: 'i32', param: false });
        const end = this.expr(s.end);
        out.push(`${ind}for (let ${js} = ${start}; ${js} ${s.step > 0 ? '<' : '>'} ${end}; ${js} = (${js} + ${lit(s.step)}) | 0) {`);
        this.block(s.body, out, ind + '  ');
        out.push(`${ind}}`);
        this.scopes.pop();
        return;
      }
      case 'barrier':
        out.push(`${ind}yield ${this.barriers++};`);
        return;
      case 'mma': {
        const a = this.array(s.a), b = this.array(s.b), c = this.array(s.c);
        if (a.kind !== 'shared' || a.half !== s.input || b.kind !== 'shared' || b.half !== s.input) this.err(`mma operands must be shared arrays of ${s.input} storage`);
        if (c.kind !== 'local' || c.type !== 'f32') this.err(`mma accumulators '${s.c}' must be a local f32 array`);
        const site = this.site('load', a), siteB = this.site('load', b);
        const bad = `(w, i, n) => oob(w === 'a' ? ${site} : ${siteB}, i, n, ${CTX})`;
        out.push(`${ind}mma(${a.js}, ${b.js}, ${c.js}, ${HALF_TABLE[s.input]}, ${this.expr(s.aOff)}, ${s.aStride}, ${this.expr(s.bOff)}, ${s.bStride}, ${s.cOff}, ${s.mt}, ${s.nt}, tid_x & 31, ${bad});`);
        return;
      }
      case 'comment':
        out.push(`${ind}// ${s.text.replace(/[\r\n\u2028\u2029]/g, ' ')}`);
        return;
    }
  }
}

/** Identifiers the generated code passes to `oob` so that errors can name the thread. */
const CTX = 'tid_x, tid_y, tid_z, wg_x, wg_y, wg_z';

function hasBarrier(ss: KStmt[]): boolean {
  return ss.some((s) =>
    s.k === 'barrier' || (s.k === 'if' && (hasBarrier(s.then) || hasBarrier(s.else))) || (s.k === 'for' && hasBarrier(s.body)));
}

function compile(k: Kernel): CompiledKernel {
  // The shared verifier (every target's); barrier uniformity is checked at run time here.
  verifyKernel(k, { uniformBarriers: false, mma: true });
  const [TX, TY, TZ] = k.workgroup;
  const T = TX * TY * TZ;
  const fail = (msg: string): never => { throw new Error(`kernel IR error in kernel ${k.name}: ${msg}`); };
  if (![TX, TY, TZ].every((n) => Number.isInteger(n) && n > 0)) fail(`workgroup size ${k.workgroup.join('x')}`);

  const globals = new Map<string, Sym>();
  const pro: string[] = []; // prologue of run(B, S)
  const add = (name: string, sym: Sym): void => {
    if (globals.has(name)) fail(`parameter '${name}' declared twice`);
    globals.set(name, sym);
  };
  k.buffers.forEach((b, i) => {
    const js = `b${i}`;
    if (b.storage && b.type !== 'f32') fail(`buffer '${b.name}' of type ${b.type} has ${b.storage} storage (only f32 buffers may)`);
    if (b.storage && b.storage !== 'f16' && b.storage !== 'bf16') fail(`buffer '${b.name}' has unknown storage '${String(b.storage)}'`);
    add(b.name, { kind: 'buffer', name: b.name, js, len: `n${i}`, type: b.type, writable: b.access === 'read_write', ...(b.storage ? { half: b.storage } : {}) });
    pro.push(`const ${js} = B[${JSON.stringify(b.name)}], n${i} = ${js}.length;`);
  });
  k.scalars.forEach((s, i) => {
    add(s.name, { kind: 'var', js: `p${i}`, type: s.type, param: true });
    const v = `S[${JSON.stringify(s.name)}]`;
    pro.push(`const p${i} = ${s.type === 'f32' ? `fr(${v})` : `${v} | 0`};`);
  });
  k.shared.forEach((s, i) => {
    if (!Number.isInteger(s.size) || s.size <= 0) fail(`shared array '${s.name}' has size ${s.size}`);
    add(s.name, { kind: 'shared', name: s.name, js: `s${i}`, len: String(s.size), type: s.type, writable: true, ...(s.storage ? { half: s.storage } : {}) });
    pro.push(`const s${i} = new ${s.storage ? 'Uint16Array' : ARRAY[s.type]}(${s.size});`);
  });
  const poisonShared = k.shared.map((s, i) => `s${i}.fill(${s.storage ? HALF_POISON[s.storage] : POISON[s.type]}); `).join('');

  const g = new Gen(k, globals);
  g.gridMode = true;
  const grid = k.grid.map((e, i) => {
    if (e.type !== 'i32') fail(`grid[${i}] has type ${e.type}`);
    return g.expr(e);
  });
  g.gridMode = false;
  pro.push(`const GX = ${grid[0]}, GY = ${grid[1]}, GZ = ${grid[2]};`);
  pro.push(`if (GX < 0 || GY < 0 || GZ < 0) badGrid(GX, GY, GZ);`);

  const barriers = hasBarrier(k.body);
  const body: string[] = [];
  g.stmts(k.body, body, barriers ? '    ' : '          ');
  const temps = g.temps ? `let ${Array.from({ length: g.temps }, (_, i) => `t${i} = 0`).join(', ')};` : '';
  const wgLoops = 'for (let wg_z = 0; wg_z < GZ; wg_z++) for (let wg_y = 0; wg_y < GY; wg_y++) for (let wg_x = 0; wg_x < GX; wg_x++) {';
  const tidLoops = `for (let tid_z = 0; tid_z < ${TZ}; tid_z++) for (let tid_y = 0; tid_y < ${TY}; tid_y++) for (let tid_x = 0; tid_x < ${TX}; tid_x++) {`;

  let src: string[];
  if (!barriers) {
    // Threads run one after another: locals and temps are allocated once per run.
    src = [
      ...pro.map((l) => '  ' + l),
      '  ' + temps,
      ...g.locals.map(([js, t, n]) => `  const ${js} = new ${ARRAY[t]}(${n});`),
      '  ' + wgLoops,
      '    ' + poisonShared,
      '    ' + tidLoops,
      ...body,
      '    }',
      '  }',
    ];
  } else {
    // One generator per thread; per-thread local arrays come from pools indexed by slot.
    src = [
      ...pro.map((l) => '  ' + l),
      ...g.locals.map(([js, t, n]) => `  const ${js}_pool = []; for (let i = 0; i < ${T}; i++) ${js}_pool.push(new ${ARRAY[t]}(${n}));`),
      '  function* thread(slot, tid_x, tid_y, tid_z, wg_x, wg_y, wg_z) {',
      '    ' + temps,
      ...g.locals.map(([js]) => `    const ${js} = ${js}_pool[slot];`),
      ...body,
      '  }',
      `  const gens = new Array(${T});`,
      '  ' + wgLoops,
      '    ' + poisonShared,
      '    let slot = 0;',
      '    ' + tidLoops,
      '      gens[slot] = thread(slot, tid_x, tid_y, tid_z, wg_x, wg_y, wg_z); slot++;',
      '    }',
      '    schedule(gens, wg_x, wg_y, wg_z);',
      '  }',
    ];
  }
  // Kernel IR's pow is the targets' common ground: defined for x > 0 and for 0 to a positive
  // power; WGSL's pow (exp2(y log2 x)) is NaN for x < 0 and for 0^0, so it is NaN here too.
  const source = `"use strict";\nconst fr = Math.fround;\nconst $pow = (x, y) => (x < 0 || (x === 0 && y === 0) ? NaN : Math.pow(x, y));\nreturn function run(B, S) {\n${src.join('\n')}\n};\n`;

  const thread = (i: number): string => `(${i % TX},${Math.floor(i / TX) % TY},${Math.floor(i / (TX * TY))})`;
  const sites = g.sites;
  const oob = (site: number, i: number, len: number, tx: number, ty: number, tz: number, wx: number, wy: number, wz: number): never => {
    const s = sites[site]!;
    throw new Error(`out-of-bounds ${s.op} in kernel ${k.name}: ${s.kind} '${s.array}' index ${i}, length ${len} (workgroup (${wx},${wy},${wz}), thread (${tx},${ty},${tz}))`);
  };
  const badGrid = (x: number, y: number, z: number): never => fail(`negative grid (${x}, ${y}, ${z})`);
  const schedule = (gens: Generator<number, void>[], wx: number, wy: number, wz: number): void => {
    for (;;) {
      let finished = -1, waiting = -1, at = -1;
      for (let i = 0; i < T; i++) {
        const r = gens[i]!.next();
        if (r.done) finished = i;
        else if (waiting < 0) { waiting = i; at = r.value; }
        else if (r.value !== at) {
          throw new Error(`barrier divergence in kernel ${k.name}: thread ${thread(i)} waits at barrier #${r.value} while thread ${thread(waiting)} waits at barrier #${at} (workgroup (${wx},${wy},${wz}))`);
        }
      }
      if (waiting < 0) return;
      if (finished >= 0) {
        throw new Error(`barrier divergence in kernel ${k.name}: thread ${thread(finished)} finished while thread ${thread(waiting)} waits at a barrier (workgroup (${wx},${wy},${wz}))`);
      }
    }
  };

  let fn: (B: KernelArgs['buffers'], S: KernelArgs['scalars']) => void;
  try {
    const half = k.buffers.some((b) => b.storage) || k.shared.some((s) => s.storage);
    fn = new Function('erf', 'idiv', 'imod', 'f2i', 'oob', 'badGrid', 'schedule', 'h16', 'hb16', 'r16', 'rb16', 'mma', 'fma32', source)(
      erf, idiv, imod, f2i, oob, badGrid, schedule, half ? f16Values() : null, half ? bf16Values() : null, toF16Bits, toBF16Bits, mmaStep, fma32);
  } catch (e) {
    throw new Error(`internal error: generated code for kernel ${k.name} does not compile: ${(e as Error).message}\n${source}`);
  }

  const run = (args: KernelArgs): void => {
    for (const b of k.buffers) {
      const a = args.buffers[b.name];
      // bool buffers are Int32Array, 0/1; half buffers Uint16Array, the bits
      const want = b.storage ? Uint16Array : b.type === 'f32' ? Float32Array : Int32Array;
      if (!(a instanceof want)) throw new Error(`kernel ${k.name}: buffer '${b.name}'${b.storage ? ` (${b.storage})` : ''} must be a ${want.name}, got ${a === undefined ? 'nothing' : a.constructor.name}`);
    }
    for (const s of k.scalars) {
      const x = args.scalars[s.name];
      if (typeof x !== 'number') throw new Error(`kernel ${k.name}: scalar '${s.name}' missing`);
      if (s.type === 'i32' && (x | 0) !== x) throw new Error(`kernel ${k.name}: scalar '${s.name}' = ${x} is not an i32`);
    }
    fn(args.buffers, args.scalars);
  };
  return { kernel: k, source, usesBarriers: barriers, run };
}
