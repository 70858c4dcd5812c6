// The shared C-style printer of kernel IR (compiler/kir.ts). One class prints expressions with
// only the parentheses precedence requires (binary operators are left-associative, so
// `a - (b - c)` and `a + (b + c)` keep theirs: f32 '+' is not associative), statements,
// blocks, loops with a step and flat `else if` chains. Targets subclass it and override the
// hooks: type names, declarations, local and shared arrays, builtins, barriers, select,
// casts, the spelling of unary and binary functions, and the kernel header and prologue.
// kir-print.ts (the readable dump), targets/cuda and targets/wgsl are such subclasses.
//
// The second half holds kernel IR rewrites the target legalisers share: a structural map
// over statements and expressions, and a scope-aware renamer that gives every identifier a
// spelling the target accepts (no keyword, no reserved word, no shadowing).
import type { KBinOp, KBuiltin, Kernel, KExpr, KMma, KStmt, KType, KUnOp } from './kir.js';
import { fmaParts } from './kir.js';

// ---- precedence ----------------------------------------------------------------------

/** Binary operator precedence (C's order); higher binds tighter. */
export const PREC: Readonly<Record<string, number>> = {
  '||': 1, '&&': 2, '==': 3, '!=': 3, '<': 4, '<=': 4, '>': 4, '>=': 4, '+': 5, '-': 5, '*': 6, '/': 6, '%': 6,
};
/** A conditional expression `c ? a : b`. */
export const COND = 0;
/** Prefix operators: -x, !x, (T)x. */
export const UNARY = 7;
/** Names, literals, calls, indexing, parenthesised expressions. */
export const PRIMARY = 8;
/** Forces parentheses around an operand whatever its precedence. */
export const ALWAYS = 100;

/** Printed text and the precedence of its outermost operator. */
export interface Fmt { s: string; p: number }
export const prim = (s: string): Fmt => ({ s, p: PRIMARY });

/** The shortest decimal that reads back as the same float32, always with a '.' or exponent. */
export function f32Text(x: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  x = Math.fround(x);
  let s = String(x);
  for (let p = 1; p <= 9; p++) {
    const t = String(Number(x.toPrecision(p)));
    if (Math.fround(Number(t)) === x) { s = t; break; }
  }
  if (Object.is(x, -0)) s = '-0';
  return /[.e]|inf|nan/.test(s) ? s : s + '.0';
}

/** The IEEE binary32 bit pattern of x, as 8 hex digits. */
export function f32Bits(x: number): string {
  const b = new DataView(new ArrayBuffer(4));
  b.setFloat32(0, x);
  return b.getUint32(0).toString(16).padStart(8, '0');
}

const BIN_OPS = new Set(Object.keys(PREC));

// ---- the printer ---------------------------------------------------------------------

export class CPrinter {
  /** One level of indentation. */
  protected indentUnit = '  ';

  // ---- hooks: names and types ----

  typeName(t: KType): string { return t; }
  builtin(name: KBuiltin): Fmt { return prim(name); }
  varRef(name: string, _type: KType): Fmt { return prim(name); }

  // ---- hooks: expressions ----

  constant(type: KType, value: number): Fmt {
    const s = type === 'f32' ? f32Text(value) : type === 'bool' ? String(value !== 0) : String(value | 0);
    return { s, p: value < 0 || Object.is(value, -0) ? UNARY : PRIMARY };
  }

  load(array: string, index: KExpr, _type: KType): Fmt {
    return prim(`${array}[${this.expr(index)}]`);
  }

  /** The function name of a unary op that is not a prefix operator. */
  unaryFn(op: KUnOp, _type: KType): string { return op; }

  unary(op: KUnOp, a: KExpr, type: KType): Fmt {
    if (op === 'neg') return { s: `-${this.expr(a, PRIMARY)}`, p: UNARY };
    if (op === 'not') return { s: `!${this.expr(a, PRIMARY)}`, p: UNARY };
    return this.call(this.unaryFn(op, type), a);
  }

  /** The function name of a binary op that is not an infix operator (min, max, pow). */
  binaryFn(op: KBinOp, _type: KType): string { return op; }

  /** The least precedence an operand of infix `op` may have without parentheses. */
  operandMin(op: KBinOp, side: 'a' | 'b', _child: KExpr): number {
    const p = PREC[op]!;
    return side === 'a' ? p : p + 1;
  }

  /** The kernel contracts f32 multiply-adds (Kernel.contract): set by kernel() before the body. */
  protected contract = false;
  /** The fused multiply-add function of f32 (x, y, z) = x * y + z, rounded once. */
  fmaFn(): string { return 'fma'; }

  binary(op: KBinOp, a: KExpr, b: KExpr, type: KType): Fmt {
    if (this.contract && op === '+' && type === 'f32') {
      const f = fmaParts(a, b);
      if (f) return this.call(this.fmaFn(), ...f);
    }
    if (!BIN_OPS.has(op)) return this.call(this.binaryFn(op, type), a, b);
    return this.infix(op, a, b);
  }

  infix(op: string, a: KExpr, b: KExpr): Fmt {
    const kop = op as KBinOp;
    return { s: `${this.expr(a, this.operandMin(kop, 'a', a))} ${op} ${this.expr(b, this.operandMin(kop, 'b', b))}`, p: PREC[op]! };
  }

  /** C's lazy conditional; targets without one override. */
  select(cond: KExpr, a: KExpr, b: KExpr, _type: KType): Fmt {
    return { s: `${this.expr(cond, COND + 1)} ? ${this.expr(a, COND + 1)} : ${this.expr(b)}`, p: COND };
  }

  cast(a: KExpr, to: KType): Fmt {
    return this.call(this.typeName(to), a);
  }

  /** `name(args)`, every argument printed at the lowest precedence. */
  call(name: string, ...args: KExpr[]): Fmt {
    return prim(`${name}(${args.map((x) => this.expr(x)).join(', ')})`);
  }

  // ---- expressions ----

  fmt(e: KExpr): Fmt {
    switch (e.k) {
      case 'const': return this.constant(e.type, e.value);
      case 'var': return this.varRef(e.name, e.type);
      case 'builtin': return this.builtin(e.name);
      case 'load': return this.load(e.array, e.index, e.type);
      case 'un': return this.unary(e.op, e.a, e.type);
      case 'bin': return this.binary(e.op, e.a, e.b, e.type);
      case 'select': return this.select(e.cond, e.a, e.b, e.type);
      case 'cast': return this.cast(e.a, e.type);
    }
  }

  /** `e` in a context that needs at least precedence `min` (parenthesised when lower). */
  expr(e: KExpr, min = 0): string {
    const f = this.fmt(e);
    return f.p < min ? `(${f.s})` : f.s;
  }

  // ---- hooks: statements (each returns the line without indentation) ----

  decl(name: string, type: KType, init: KExpr): string { return `${this.typeName(type)} ${name} = ${this.expr(init)};`; }
  assign(name: string, value: KExpr): string { return `${name} = ${this.expr(value)};`; }
  store(array: string, index: KExpr, value: KExpr): string { return `${array}[${this.expr(index)}] = ${this.expr(value)};`; }
  localArray(name: string, type: KType, size: number): string { return `local ${this.typeName(type)} ${name}[${size}];`; }
  /** A workgroup-shared array (where the target declares it: module scope, kernel prologue, header). */
  sharedArray(name: string, type: KType, size: number): string { return `shared ${this.typeName(type)} ${name}[${size}]`; }
  barrier(): string { return 'barrier();'; }
  /** A tensor-core tile step (kir.ts KMma): readable here; CUDA prints it, other targets refuse it. */
  mma(s: KMma): string[] { return [`mma.m16n8k16.${s.input} ${s.mt}x${s.nt} ${s.c}[${s.cOff}..] += ${s.a}[${this.expr(s.aOff)} : ${s.aStride}] * ${s.b}[${this.expr(s.bOff)} : ${s.bStride}]; // ${s.of}`]; }
  comment(text: string): string[] { return text.split('\n').map((l) => `// ${l}`); }
  ifHead(cond: KExpr): string { return `if (${this.expr(cond)}) {`; }
  elseIfHead(cond: KExpr): string { return `} else if (${this.expr(cond)}) {`; }

  /** Lines before a loop (e.g. an unroll pragma). */
  beforeFor(_s: Extract<KStmt, { k: 'for' }>): string[] { return []; }

  forHead(s: Extract<KStmt, { k: 'for' }>): string {
    const [cmp, upd] = s.step > 0 ? ['<', `+= ${s.step}`] : ['>', `-= ${-s.step}`];
    return `for (${this.loopVarDecl(s.v, s.start)}; ${s.v} ${cmp} ${this.expr(s.end, PREC[cmp]! + 1)}; ${s.v} ${upd}) {`;
  }

  loopVarDecl(v: string, start: KExpr): string { return `${this.typeName('i32')} ${v} = ${this.expr(start)}`; }

  // ---- statements ----

  stmts(ss: readonly KStmt[], ind: string, out: string[]): void {
    for (const s of ss) this.stmt(s, ind, out);
  }

  stmt(s: KStmt, ind: string, out: string[]): void {
    const inner = ind + this.indentUnit;
    switch (s.k) {
      case 'decl': out.push(ind + this.decl(s.name, s.type, s.init)); return;
      case 'assign': out.push(ind + this.assign(s.name, s.value)); return;
      case 'local': out.push(ind + this.localArray(s.name, s.type, s.size)); return;
      case 'store': out.push(ind + this.store(s.array, s.index, s.value)); return;
      case 'barrier': out.push(ind + this.barrier()); return;
      case 'mma': out.push(...this.mma(s).map((l) => ind + l)); return;
      case 'comment': out.push(...this.comment(s.text).map((l) => ind + l)); return;
      case 'for':
        for (const l of this.beforeFor(s)) out.push(ind + l);
        out.push(ind + this.forHead(s));
        this.stmts(s.body, inner, out);
        out.push(`${ind}}`);
        return;
      case 'if': {
        out.push(ind + this.ifHead(s.cond));
        let cur = s;
        for (;;) {
          this.stmts(cur.then, inner, out);
          const only = cur.else.length === 1 ? cur.else[0]! : undefined;
          if (only?.k === 'if') { // print `else if` chains flat
            out.push(ind + this.elseIfHead(only.cond));
            cur = only;
            continue;
          }
          if (cur.else.length) {
            out.push(`${ind}} else {`);
            this.stmts(cur.else, inner, out);
          }
          break;
        }
        out.push(`${ind}}`);
        return;
      }
    }
  }

  // ---- hooks: the kernel ----

  /** Lines before the body (helpers, parameters, signature ending in '{'). */
  header(k: Kernel): string[] { return [`kernel ${k.name} {`]; }
  /** Indented lines at the top of the body (ids, shared arrays). */
  prologue(_k: Kernel): string[] { return []; }
  /** Lines after the closing brace. */
  footer(_k: Kernel): string[] { return []; }

  kernel(k: Kernel): string {
    this.contract = k.contract === true;
    const out = [...this.header(k)];
    for (const l of this.prologue(k)) out.push(this.indentUnit + l);
    this.stmts(k.body, this.indentUnit, out);
    out.push('}');
    out.push(...this.footer(k));
    return out.join('\n') + '\n';
  }
}

// ---- kernel IR rewrites shared by the legalisers ---------------------------------------

export type ExprMap = (e: KExpr) => KExpr;

/** Rebuilds `e` bottom-up, applying `f` to every node after its children. */
export function mapExpr(e: KExpr, f: ExprMap): KExpr {
  switch (e.k) {
    case 'const': case 'var': case 'builtin': return f(e);
    case 'load': return f({ ...e, index: mapExpr(e.index, f) });
    case 'un': return f({ ...e, a: mapExpr(e.a, f) });
    case 'cast': return f({ ...e, a: mapExpr(e.a, f) });
    case 'bin': return f({ ...e, a: mapExpr(e.a, f), b: mapExpr(e.b, f) });
    case 'select': return f({ ...e, cond: mapExpr(e.cond, f), a: mapExpr(e.a, f), b: mapExpr(e.b, f) });
  }
}

/** Calls `f` on every node of `e` (pre-order); `f` returning false skips the children. */
export function walkExpr(e: KExpr, f: (e: KExpr) => boolean | void): void {
  if (f(e) === false) return;
  switch (e.k) {
    case 'load': walkExpr(e.index, f); return;
    case 'un': case 'cast': walkExpr(e.a, f); return;
    case 'bin': walkExpr(e.a, f); walkExpr(e.b, f); return;
    case 'select': walkExpr(e.cond, f); walkExpr(e.a, f); walkExpr(e.b, f); return;
    default: return;
  }
}

/** Calls `f` on every statement (pre-order, into blocks). */
export function walkStmts(ss: readonly KStmt[], f: (s: KStmt) => void): void {
  for (const s of ss) {
    f(s);
    if (s.k === 'if') { walkStmts(s.then, f); walkStmts(s.else, f); }
    if (s.k === 'for') walkStmts(s.body, f);
  }
}

/** Every expression directly held by a statement. */
export function stmtExprs(s: KStmt): KExpr[] {
  switch (s.k) {
    case 'decl': return [s.init];
    case 'assign': return [s.value];
    case 'store': return [s.index, s.value];
    case 'if': return [s.cond];
    case 'for': return [s.start, s.end];
    case 'mma': return [s.aOff, s.bOff];
    default: return [];
  }
}

export const anyExpr = (e: KExpr, pred: (e: KExpr) => boolean): boolean => {
  let found = false;
  walkExpr(e, (x) => { if (found) return false; if (pred(x)) found = true; return !found; });
  return found;
};

/** Every identifier a kernel declares or mentions (buffers, scalars, shared, locals, loop variables, the kernel name). */
export function kernelNames(k: Kernel): Set<string> {
  const names = new Set<string>([k.name, ...k.buffers.map((b) => b.name), ...k.scalars.map((s) => s.name), ...k.shared.map((s) => s.name)]);
  const exprNames = (e: KExpr): void => walkExpr(e, (x) => { if (x.k === 'var') names.add(x.name); if (x.k === 'load') names.add(x.array); });
  walkStmts(k.body, (s) => {
    if (s.k === 'decl' || s.k === 'local' || s.k === 'assign') names.add(s.name);
    if (s.k === 'for') names.add(s.v);
    if (s.k === 'store') names.add(s.array);
    stmtExprs(s).forEach(exprNames);
  });
  k.grid.forEach(exprNames);
  return names;
}

/** Makes fresh identifiers that collide with nothing in `taken` (and records them). */
export class NameSupply {
  constructor(readonly taken: Set<string>) {}
  fresh(base: string): string {
    let n = base;
    for (let i = 1; this.taken.has(n); i++) n = `${base}${i}`;
    this.taken.add(n);
    return n;
  }
}

export interface RenameRules {
  /** True when the target accepts `name` as an identifier (syntax and reserved words). */
  valid(name: string): boolean;
  /** Names the printer itself uses at module or kernel scope (helpers, ids, structs). */
  reserved: ReadonlySet<string>;
}

export interface Renamed {
  kernel: Kernel;
  /** Original name -> printed name, for the kernel's parameters, shared arrays and its own name. */
  globals: Map<string, string>;
}

/**
 * Gives every identifier of `k` a spelling the target accepts: keywords and reserved names
 * get a suffix, and a declaration that would shadow a visible name (which C does not allow
 * in its own initialiser, nor in the outermost block of a for body) gets a fresh name, so
 * the printed kernel declares every name at most once along any scope chain.
 */
export function renameKernel(k: Kernel, rules: RenameRules): Renamed {
  const original = kernelNames(k);
  // Each scope maps original names to printed names; only visibility matters to C and WGSL,
  // so sibling scopes may declare the same name (loops reuse `i`).
  const scopes: Map<string, string>[] = [new Map()];
  const visible = (n: string): boolean => scopes.some((s) => [...s.values()].includes(n));
  const ok = (n: string): boolean => rules.valid(n) && !rules.reserved.has(n) && !visible(n);
  const pick = (name: string): string => {
    if (ok(name)) return name;
    let base = name.replace(/[^A-Za-z0-9_]/g, '_').replace(/__+/g, '_').replace(/^_+|_+$/g, '');
    if (!/^[A-Za-z]/.test(base)) base = `v${base}`;
    for (let i = 0; ; i++) {
      const n = i === 0 ? `${base}_` : `${base}_${i}`;
      if (ok(n) && !original.has(n)) return n;
    }
  };
  const declare = (name: string): string => {
    const n = pick(name);
    scopes[scopes.length - 1]!.set(name, n);
    return n;
  };
  const lookup = (name: string): string => {
    for (let i = scopes.length - 1; i >= 0; i--) {
      const n = scopes[i]!.get(name);
      if (n !== undefined) return n;
    }
    throw new Error(`kernel IR error in kernel ${k.name}: '${name}' is used outside the scope of any declaration`);
  };
  const ex = (e: KExpr): KExpr => mapExpr(e, (x) => (x.k === 'var' ? { ...x, name: lookup(x.name) } : x.k === 'load' ? { ...x, array: lookup(x.array) } : x));

  // Module scope: the kernel, then parameters and shared arrays in order.
  const globals = new Map<string, string>();
  for (const name of [k.name, ...k.buffers.map((b) => b.name), ...k.scalars.map((s) => s.name), ...k.shared.map((s) => s.name)]) {
    if (!globals.has(name)) globals.set(name, declare(name));
  }
  const block = (ss: readonly KStmt[]): KStmt[] => {
    scopes.push(new Map());
    const out = ss.map(stmt);
    scopes.pop();
    return out;
  };
  const stmt = (s: KStmt): KStmt => {
    switch (s.k) {
      case 'decl': { const init = ex(s.init); return { ...s, init, name: declare(s.name) }; }
      case 'local': return { ...s, name: declare(s.name) };
      case 'assign': return { ...s, name: lookup(s.name), value: ex(s.value) };
      case 'store': return { ...s, array: lookup(s.array), index: ex(s.index), value: ex(s.value) };
      case 'if': return { ...s, cond: ex(s.cond), then: block(s.then), else: block(s.else) };
      case 'for': {
        const start = ex(s.start);
        scopes.push(new Map());
        const v = declare(s.v);
        const end = ex(s.end);
        const body = block(s.body);
        scopes.pop();
        return { ...s, v, start, end, body };
      }
      case 'mma': return { ...s, a: lookup(s.a), b: lookup(s.b), c: lookup(s.c), aOff: ex(s.aOff), bOff: ex(s.bOff) };
      default: return s;
    }
  };
  const body = block(k.body);
  return {
    kernel: {
      ...k,
      name: globals.get(k.name)!,
      buffers: k.buffers.map((b) => ({ ...b, name: globals.get(b.name)! })),
      scalars: k.scalars.map((s) => ({ ...s, name: globals.get(s.name)! })),
      shared: k.shared.map((s) => ({ ...s, name: globals.get(s.name)! })),
      grid: k.grid.map(ex) as Kernel['grid'],
      body,
    },
    globals,
  };
}
