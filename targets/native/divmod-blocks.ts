// Blocked work-item loops for the native printer (targets/native/printer.ts).
//
// A map kernel rebuilds its indices from the work-item: gid = wg_x * 256 + rn_t, e = gid % 128,
// row = gid / 128, head = e / 64 ... Division and remainder by constants hide from GCC that the
// addresses are contiguous: every load becomes a gather, and the index math costs more than the
// work. When such a divisor c is a multiple of a block size C (a power of two, at least 16, that
// divides the loop's length) the loop runs as blocks, rn_t = rn_bo * C + rn_bi (rn_bi < C), and
// inside a block
//     (u + v) / c = u / c         (u + v) % c = u % c + v
// for u the same in the whole block, u >= 0, u a multiple of A, A | c and 0 <= v < A (v the
// part that grows with rn_bi: coef * rn_bi). Then u + v does not wrap (u <= 2^31 - A), u / c is
// uniform (GCC hoists it out of the block), u % c + v is affine again (a multiple of A plus v),
// so divisions and guards further down simplify too, and the affine machinery (affine-index.ts)
// sees contiguous accesses.
//
// Every rule applies only under its premises, kept in kernel IR's semantics (compiler/kir.ts:
// i32 wraps, truncating division, x / 0 = x % 0 = 0):
//   - alignment is tracked as a power of two (trailing zero bits), which survives the wrap of
//     + - * (2^32 is a multiple of it);
//   - value ranges are exact intervals, dropped to the full int32 range where an operation may
//     wrap;
//   - u >= 0 where the ranges cannot show it (wg_x * 256 may wrap for huge grids) becomes a
//     premise, tested once per block; a block whose premise fails runs the loop as written;
//   - a comparison, min, max, && or || decided by the ranges folds only when what it drops has no
//     load (a dropped load could have reported an out-of-bounds access); a select with a folded
//     condition keeps its chosen arm only, as its lazy evaluation does.
import { walkExpr } from '../../compiler/c-printer.js';
import type { KBinOp, KExpr, KStmt } from '../../compiler/kir.js';
import * as K from '../../compiler/kir.js';
import { WORK_ITEM } from './barrier-split.js';

/** The block loop's variable and the work-item loop's within a block. */
export const BLOCK_OUTER = 'rn_bo';
export const BLOCK_INNER = 'rn_bi';
/** Smaller blocks would cut the vectors short (a `d % 2` of rotary embeddings stays as it is). */
export const MIN_BLOCK = 16;

const I32_MIN = -2147483648, I32_MAX = 2147483647;
/** Bases larger than this (nodes) are not tracked: every use inlines them. */
const SIZE_LIMIT = 400;

/**
 * An i32 expression inside a block: the int32 value of `base + coef * rn_bi` (mod 2^32), `base`
 * the same for every work-item of the block, load-free, and written in names visible outside the
 * block (rn_bo, the kernel's scalars and outer variables, builtins). Its int32 value is a multiple
 * of 2^tz and lies in [lo, hi] (in blocks whose premises hold).
 */
export interface Form { base: KExpr; coef: number; tz: number; lo: number; hi: number }

export interface BlockPlan {
  /** Block size and number of blocks (at most: the loop's end may be a variable). */
  size: number;
  blocks: number;
  /** A variable end of the loop: blocks run while rn_bo * size < limit. */
  limit?: KExpr;
  /** The work-item loop of one block, rewritten: `rn_t = rn_bo * C + rn_bi` declared first. */
  inner: Extract<KStmt, { k: 'for' }>;
  /** The same block as written (for blocks whose premises fail). */
  plain: Extract<KStmt, { k: 'for' }>;
  /** Conditions over rn_bo and outer names, all true in a block where `inner` may run. */
  premises: KExpr[];
  /** Divisions and remainders rewritten. */
  rewritten: number;
}

/** Trailing zero bits of an int32 constant (32 for 0). */
export function tzOf(v: number): number {
  let x = v | 0;
  if (x === 0) return 32;
  let n = 0;
  while ((x & 1) === 0) { x >>= 1; n++; }
  return n;
}

const fits = (lo: number, hi: number): boolean => lo >= I32_MIN && hi <= I32_MAX && lo <= hi;
const range = (lo: number, hi: number): [number, number] => (fits(lo, hi) ? [lo, hi] : [I32_MIN, I32_MAX]);

function size(e: KExpr): number {
  let n = 0;
  walkExpr(e, () => { n++; return n <= SIZE_LIMIT; });
  return n;
}

function hasLoad(e: KExpr): boolean {
  let found = false;
  walkExpr(e, (x) => { if (x.k === 'load') found = true; return !found; });
  return found;
}

const CMP: ReadonlySet<KBinOp> = new Set<KBinOp>(['<', '<=', '>', '>=', '==', '!=']);

interface R { e: KExpr; f?: Form }

/** Rewrites one block's body for block size `size` (one pass, statements in order). */
export class BlockRewriter {
  readonly premises = new Map<string, KExpr>();
  rewritten = 0;
  private readonly forms = new Map<string, Form>();

  /**
   * `declared`: names declared in the loop body (once each: `once`); `assigned`: names assigned
   * anywhere in the kernel; `length`: the work-item loop's trip count.
   */
  constructor(readonly size: number, readonly length: number, private readonly declared: ReadonlySet<string>,
    private readonly once: ReadonlySet<string>, private readonly assigned: ReadonlySet<string>, private readonly seq?: SeqLoop) {}

  /** The variable standing for the item (rn_t of a blocked loop, a sequential loop's own) and its form. */
  private itemForm(name: string): Form | undefined {
    if (this.seq) return name === this.seq.v ? { base: K.i32(0), coef: 1, tz: 32, lo: 0, hi: 0 } : undefined;
    if (name !== WORK_ITEM) return undefined;
    const base = K.bin('*', K.v(BLOCK_OUTER), K.i32(this.size));
    return { base, coef: 1, tz: tzOf(this.size), lo: 0, hi: (Math.ceil(this.length / this.size) - 1) * this.size };
  }

  /** The value range of a form over the block (the full int32 range where it may wrap). */
  valueRange(f: Form): [number, number] {
    const d = f.coef * (this.size - 1);
    return range(f.lo + Math.min(0, d), f.hi + Math.max(0, d));
  }

  private uniform(base: KExpr, tz: number, lo: number, hi: number): Form | undefined {
    return size(base) > SIZE_LIMIT ? undefined : { base, coef: 0, tz: Math.min(tz, 32), lo, hi };
  }

  /** An expression over names outside the loop only (no load, no work-item, no loop declaration). */
  private outer(e: KExpr): boolean {
    let ok = e.type === 'i32';
    walkExpr(e, (x) => {
      if (x.k === 'load' || (x.k === 'builtin' && x.name.startsWith('tid.'))) ok = false;
      if (x.k === 'var' && (x.name === (this.seq ? this.seq.v : WORK_ITEM) || this.declared.has(x.name) || this.assigned.has(x.name))) ok = false;
      return ok;
    });
    return ok;
  }

  expr(e: KExpr): R {
    const r = this.expr0(e);
    if (!r.f && this.outer(r.e)) { const f = this.uniform(r.e, 0, I32_MIN, I32_MAX); if (f) return { e: r.e, f }; }
    return r;
  }

  private expr0(e: KExpr): R {
    switch (e.k) {
      case 'const':
        return e.type === 'i32' ? { e, f: { base: e, coef: 0, tz: tzOf(e.value), lo: e.value, hi: e.value } } : { e };
      case 'var': {
        if (e.type !== 'i32') return { e };
        const it = this.itemForm(e.name);
        if (it) return { e, f: it };
        const f = this.forms.get(e.name);
        if (f) return { e, f };
        if (this.declared.has(e.name) || this.assigned.has(e.name)) return { e };
        // A never-assigned declaration outside: its own name, with what its initialiser shows.
        const o = this.seq?.outer(e.name);
        return { e, f: { base: e, coef: 0, tz: o?.tz ?? 0, lo: o?.lo ?? I32_MIN, hi: o?.hi ?? I32_MAX } };
      }
      case 'builtin':
        return e.name.startsWith('wg.') ? { e, f: { base: e, coef: 0, tz: 0, lo: 0, hi: I32_MAX } } : { e };
      case 'load': return { e: { ...e, index: this.expr(e.index).e } };
      case 'cast': return { e: { ...e, a: this.expr(e.a).e } };
      case 'un': {
        const a = this.expr(e.a);
        if (e.op === 'not' && a.e.k === 'const') return { e: K.bool(a.e.value === 0) };
        const out: KExpr = { ...e, a: a.e };
        if (e.type === 'i32' && e.op === 'neg' && a.f) {
          const [lo, hi] = a.f.lo > I32_MIN ? [-a.f.hi, -a.f.lo] : [I32_MIN, I32_MAX];
          return { e: out, f: { base: K.un('neg', a.f.base), coef: -a.f.coef, tz: a.f.tz, lo, hi } };
        }
        return { e: out };
      }
      case 'select': {
        const c = this.expr(e.cond);
        // Lazy: only the chosen arm runs, so the other one goes (loads and all).
        if (c.e.k === 'const') return this.expr(c.e.value !== 0 ? e.a : e.b);
        return { e: { ...e, cond: c.e, a: this.assuming(e.cond, () => this.expr(e.a)).e, b: this.expr(e.b).e } };
      }
      case 'bin': return this.binary(e);
    }
  }

  private binary(e: Extract<KExpr, { k: 'bin' }>): R {
    if (e.op === '&&' || e.op === '||') return this.logic(e);
    const a = this.expr(e.a), b = this.expr(e.b);
    const out: KExpr = { ...e, a: a.e, b: b.e };
    const isConst = (x: KExpr): x is Extract<KExpr, { k: 'const' }> => x.k === 'const';
    if (CMP.has(e.op)) {
      if (e.a.type === 'bool' && isConst(a.e) && isConst(b.e)) return { e: K.bool(e.op === '==' ? a.e.value === b.e.value : e.op === '!=' ? a.e.value !== b.e.value : compare(e.op, a.e.value, b.e.value)) };
      if (a.f && b.f) {
        const d = decide(e.op, this.valueRange(a.f), this.valueRange(b.f));
        if (d !== undefined) return { e: K.bool(d) };
        const u = this.alignedCompare(e.op, a.f, b.f);
        if (u) return { e: u };
      }
      return { e: out };
    }
    if (e.type !== 'i32' || !a.f || !b.f) return { e: out };
    const fa = a.f, fb = b.f;
    switch (e.op) {
      case '+': case '-': {
        const coef = e.op === '+' ? fa.coef + fb.coef : fa.coef - fb.coef;
        const [lo, hi] = e.op === '+' ? range(fa.lo + fb.lo, fa.hi + fb.hi) : range(fa.lo - fb.hi, fa.hi - fb.lo);
        const zero = (x: KExpr): boolean => x.k === 'const' && x.value === 0;
        const base = zero(fb.base) ? fa.base : zero(fa.base) && e.op === '+' ? fb.base : K.bin(e.op, fa.base, fb.base);
        if (size(base) > SIZE_LIMIT || Math.abs(coef) > this.length) return { e: out };
        return { e: out, f: { base, coef, tz: Math.min(fa.tz, fb.tz), lo, hi } };
      }
      case '*': {
        if (fa.coef !== 0 && fb.coef !== 0) return { e: out };
        const [x, k] = fa.coef !== 0 ? [fa, fb] : [fb, fa];
        if (x.coef !== 0 && !(k.base.k === 'const')) return { e: out };
        const ps = [fa.lo * fb.lo, fa.lo * fb.hi, fa.hi * fb.lo, fa.hi * fb.hi];
        const [lo, hi] = range(Math.min(...ps), Math.max(...ps));
        const coef = x.coef * (k.base.k === 'const' ? k.base.value : 0);
        const base = K.bin('*', fa.base, fb.base);
        if (size(base) > SIZE_LIMIT || Math.abs(coef) > this.length) return { e: out };
        return { e: out, f: { base, coef, tz: Math.min(32, fa.tz + fb.tz), lo, hi } };
      }
      case '/': case '%': {
        const c = b.e.k === 'const' ? b.e.value : undefined;
        if (fa.coef !== 0) return c !== undefined && c > 0 ? this.divmod(e.op, fa, c, out) : { e: out };
        if (fb.coef !== 0) return { e: out };
        const base = K.bin(e.op, fa.base, fb.base);
        if (c !== undefined && c > 0 && fa.lo >= 0) {
          const f = e.op === '/' ? this.uniform(base, 0, Math.floor(fa.lo / c), Math.floor(fa.hi / c))
            : this.uniform(base, Math.min(fa.tz, tzOf(c)), fa.hi < c ? fa.lo : 0, Math.min(fa.hi, c - 1));
          return f ? { e: out, f } : { e: out };
        }
        const f = this.uniform(base, 0, I32_MIN, I32_MAX);
        return f ? { e: out, f } : { e: out };
      }
      case 'min': case 'max': {
        const ra = this.valueRange(fa), rb = this.valueRange(fb);
        const aWins = e.op === 'min' ? ra[1] <= rb[0] : ra[0] >= rb[1];
        const bWins = e.op === 'min' ? rb[1] <= ra[0] : rb[0] >= ra[1];
        // Forms have no loads: the dropped operand reports nothing.
        if (aWins) return a;
        if (bWins) return b;
        if (fa.coef !== 0 || fb.coef !== 0) return { e: out };
        const m = e.op === 'min' ? Math.min : Math.max;
        const f = this.uniform(K.bin(e.op, fa.base, fb.base), Math.min(fa.tz, fb.tz), m(fa.lo, fb.lo), m(fa.hi, fb.hi));
        return f ? { e: out, f } : { e: out };
      }
      default: return { e: out };
    }
  }

  /**
   * (u + v) / c and (u + v) % c for a dividend u + coef * rn_bi: u a multiple of A = 2^tz with
   * A | c, 0 <= coef * (C - 1) < A, and u >= 0 (shown by its range, else a premise).
   */
  private divmod(op: '/' | '%', f: Form, c: number, out: KExpr): R {
    const tz = Math.min(f.tz, tzOf(c));
    const A = 2 ** tz;
    if (tz > 30 || f.coef <= 0 || f.coef * (this.size - 1) >= A || f.hi < 0) return { e: out };
    if (f.lo < 0) this.premises.set(JSON.stringify(f.base), K.bin('>=', f.base, K.i32(0)));
    const lo = Math.max(f.lo, 0), hi = Math.min(f.hi, 2 ** 31 - A);
    this.rewritten++;
    const cc = K.i32(c);
    if (op === '/') {
      const base = K.bin('/', f.base, cc);
      return { e: base, f: { base, coef: 0, tz: 0, lo: Math.floor(lo / c), hi: Math.floor(hi / c) } };
    }
    const inner = K.v(this.seq ? this.seq.v : BLOCK_INNER);
    const v = f.coef === 1 ? inner : K.bin('*', inner, K.i32(f.coef));
    // u a multiple of c itself (c = A, a power of two): u % c = 0.
    if (A === c) return { e: v, f: { base: K.i32(0), coef: f.coef, tz: 32, lo: 0, hi: 0 } };
    const base = K.bin('%', f.base, cc);
    return { e: K.bin('+', base, v), f: { base, coef: f.coef, tz, lo: hi < c ? lo : 0, hi: Math.min(hi, c - A) } };
  }

  /**
   * x < y and x >= y for x = u + v (u a multiple of A, 0 <= v < A: aligned) and y uniform, a
   * multiple of A: the same as u < y and u >= y, uniform (u + v does not wrap: u <= 2^31 - A).
   */
  private alignedCompare(op: KBinOp, a: Form, b: Form): KExpr | undefined {
    const flip: Partial<Record<KBinOp, KBinOp>> = { '>': '<', '<=': '>=' };
    const [x, y, o] = a.coef !== 0 && b.coef === 0 ? [a, b, op] : b.coef !== 0 && a.coef === 0 && flip[op] ? [b, a, flip[op]!] : [undefined, undefined, op];
    if (!x || !y || (o !== '<' && o !== '>=')) return undefined;
    if (!this.aligned(x, Math.min(x.tz, y.tz))) return undefined;
    return K.bin(o, x.base, y.base);
  }

  /** u + coef * rn_bi with 0 <= coef * (C - 1) < 2^tz: never wraps past u's multiple of 2^tz. */
  private aligned(f: Form, tz = f.tz): boolean {
    return tz <= 30 && f.coef > 0 && f.coef * (this.size - 1) < 2 ** tz;
  }

  /** Runs `fn` knowing `cond` holds: bounds `var op constant` of its conjuncts narrow those variables' ranges. */
  private assuming<T>(cond: KExpr, fn: () => T): T {
    const saved = new Map<string, Form>();
    const fact = (c: KExpr): void => {
      if (c.k !== 'bin') return;
      if (c.op === '&&') { fact(c.a); fact(c.b); return; }
      const flip: Partial<Record<KBinOp, KBinOp>> = { '<': '>', '<=': '>=', '>': '<', '>=': '<=', '==': '==' };
      const [x, k, op] = c.a.k === 'var' && c.b.k === 'const' ? [c.a, c.b, c.op] : c.b.k === 'var' && c.a.k === 'const' ? [c.b, c.a, flip[c.op]] : [undefined, undefined, undefined];
      if (!x || x.k !== 'var' || !k || k.k !== 'const' || k.type !== 'i32' || !op) return;
      const f = this.forms.get(x.name);
      if (!f) return;
      let [lo, hi] = [I32_MIN, I32_MAX];
      if (op === '<') hi = k.value - 1; else if (op === '<=') hi = k.value;
      else if (op === '>') lo = k.value + 1; else if (op === '>=') lo = k.value;
      else if (op === '==') lo = hi = k.value;
      else return;
      // The value's bounds as bounds of the base: value = base + v exactly when no addition wraps.
      const d = f.coef * (this.size - 1);
      const [vlo, vhi] = this.valueRange(f);
      if (!(this.aligned(f) || f.coef === 0 || vlo > I32_MIN || vhi < I32_MAX)) return;
      let blo = Math.max(f.lo, lo - Math.max(0, d)), bhi = Math.min(f.hi, hi - Math.min(0, d));
      if (f.tz > 0 && f.tz <= 30) { const A = 2 ** f.tz; blo = Math.ceil(blo / A) * A; bhi = Math.floor(bhi / A) * A; }
      if (blo > bhi) return;
      if (!saved.has(x.name)) saved.set(x.name, f);
      this.forms.set(x.name, { ...f, lo: blo, hi: bhi });
    };
    fact(cond);
    try { return fn(); } finally { for (const [name, f] of saved) this.forms.set(name, f); }
  }

  private logic(e: Extract<KExpr, { k: 'bin' }>): R {
    const and = e.op === '&&';
    const a = this.expr(e.a);
    if (a.e.k === 'const') return (a.e.value !== 0) === and ? this.expr(e.b) : { e: K.bool(!and) };
    const b = and ? this.assuming(e.a, () => this.expr(e.b)) : this.expr(e.b);
    if (b.e.k === 'const') {
      if ((b.e.value !== 0) === and) return { e: a.e }; // a && true, a || false
      if (!hasLoad(a.e)) return { e: K.bool(!and) };
    }
    return { e: { ...e, a: a.e, b: b.e } };
  }

  stmts(ss: readonly KStmt[]): KStmt[] {
    return ss.map((s): KStmt => {
      switch (s.k) {
        case 'decl': {
          const r = this.expr(s.init);
          if (s.type === 'i32' && r.f && this.once.has(s.name) && !this.assigned.has(s.name)) this.forms.set(s.name, r.f);
          return { ...s, init: r.e };
        }
        case 'assign': return { ...s, value: this.expr(s.value).e };
        case 'store': return { ...s, index: this.expr(s.index).e, value: this.expr(s.value).e };
        case 'if': return { ...s, cond: this.expr(s.cond).e, then: this.assuming(s.cond, () => this.stmts(s.then)), else: this.stmts(s.else) };
        case 'for': return { ...s, start: this.expr(s.start).e, end: this.expr(s.end).e, body: this.stmts(s.body) };
        default: return s;
      }
    });
  }
}

function compare(op: KBinOp, x: number, y: number): boolean {
  switch (op) {
    case '<': return x < y;
    case '<=': return x <= y;
    case '>': return x > y;
    case '>=': return x >= y;
    case '==': return x === y;
    default: return x !== y;
  }
}

/** The comparison of two values in the ranges a and b when the ranges decide it. */
export function decide(op: KBinOp, a: [number, number], b: [number, number]): boolean | undefined {
  const [alo, ahi] = a, [blo, bhi] = b;
  switch (op) {
    case '<': return ahi < blo ? true : alo >= bhi ? false : undefined;
    case '<=': return ahi <= blo ? true : alo > bhi ? false : undefined;
    case '>': return alo > bhi ? true : ahi <= blo ? false : undefined;
    case '>=': return alo >= bhi ? true : ahi < blo ? false : undefined;
    case '==': return ahi < blo || bhi < alo ? false : alo === ahi && blo === bhi && alo === blo ? true : undefined;
    case '!=': return ahi < blo || bhi < alo ? true : alo === ahi && blo === bhi && alo === blo ? false : undefined;
    default: return undefined;
  }
}

/** The i32 divisors by constants in a statement list. */
function divisors(ss: readonly KStmt[]): number[] {
  const out = new Set<number>();
  const ex = (e: KExpr): void => walkExpr(e, (x) => { if (x.k === 'bin' && (x.op === '/' || x.op === '%') && x.type === 'i32' && x.b.k === 'const' && x.b.value > 0) out.add(x.b.value); });
  const walk = (s: KStmt): void => {
    switch (s.k) {
      case 'decl': ex(s.init); break;
      case 'assign': ex(s.value); break;
      case 'store': ex(s.index); ex(s.value); break;
      case 'if': ex(s.cond); s.then.forEach(walk); s.else.forEach(walk); break;
      case 'for': ex(s.start); ex(s.end); s.body.forEach(walk); break;
      default: break;
    }
  };
  ss.forEach(walk);
  return [...out];
}

/** A sequential loop rewritten in place: its variable, and what is known of the declarations outside it. */
export interface SeqLoop { v: string; outer: (name: string) => Form | undefined }

/** The form of a uniform i32 expression over names outside any loop (undefined where nothing is known). */
export function outerForm(e: KExpr, assigned: ReadonlySet<string>, outer: (name: string) => Form | undefined = () => undefined): Form | undefined {
  const f = new BlockRewriter(1, 1, new Set(), new Set(), assigned, { v: '', outer }).expr(e).f;
  return f && f.coef === 0 ? f : undefined;
}

/**
 * A sequential loop `for (v = 0; v < end; v++)` whose trip count the ranges bound by E: inside
 * it v is a block of E items on a base of 0, so (u + v) / c and (u + v) % c by the same rules
 * (u a never-assigned declaration or expression outside). The loop rewritten and its premises
 * (tested before it), or undefined when nothing is rewritten.
 */
export function seqPlan(loop: Extract<KStmt, { k: 'for' }>, assigned: ReadonlySet<string>, outer: (name: string) => Form | undefined):
  { loop: Extract<KStmt, { k: 'for' }>; premises: KExpr[] } | undefined {
  if (loop.step !== 1 || loop.start.k !== 'const' || loop.start.value !== 0 || assigned.has(loop.v)) return undefined;
  const fe = outerForm(loop.end, assigned, outer);
  if (!fe || fe.hi < 2 || fe.hi > 1 << 20) return undefined;
  if (!divisors(loop.body).length) return undefined;
  const counts = new Map<string, number>();
  const walk = (ss: readonly KStmt[]): void => {
    for (const s of ss) {
      const name = s.k === 'decl' || s.k === 'local' ? s.name : s.k === 'for' ? s.v : undefined;
      if (name !== undefined) counts.set(name, (counts.get(name) ?? 0) + 1);
      if (s.k === 'if') { walk(s.then); walk(s.else); }
      if (s.k === 'for') walk(s.body);
    }
  };
  walk(loop.body);
  if (counts.has(loop.v)) return undefined;
  // The end is evaluated before every iteration: only names the body cannot change.
  let endOk = true;
  walkExpr(loop.end, (x) => { if (x.k === 'var' && (counts.has(x.name) || assigned.has(x.name))) endOk = false; if (x.k === 'load') endOk = false; return endOk; });
  if (!endOk) return undefined;
  const once = new Set([...counts].filter(([, c]) => c === 1).map(([name]) => name));
  const rw = new BlockRewriter(fe.hi, fe.hi, new Set(counts.keys()), once, assigned, { v: loop.v, outer });
  const body = rw.stmts(loop.body);
  if (!rw.rewritten) return undefined;
  return { loop: { ...loop, body }, premises: [...rw.premises.values()] };
}

/** The range of a uniform i32 expression over names outside any loop (the full int32 range where unknown). */
export function rangeOf(e: KExpr, assigned: ReadonlySet<string>): [number, number] {
  const f = new BlockRewriter(1, 1, new Set(), new Set(), assigned).expr(e).f;
  return f && f.coef === 0 ? [f.lo, f.hi] : [I32_MIN, I32_MAX];
}

/**
 * The blocked form of a work-item loop `for (rn_t = 0; rn_t < end; rn_t++)`, end a constant or a
 * never-assigned variable whose value `endRange` bounds (the barrier split's ranged loops), with
 * the smallest block size that rewrites a division or remainder; undefined when none does.
 */
export function blockPlan(loop: Extract<KStmt, { k: 'for' }>, assigned: ReadonlySet<string>,
  endRange: (name: string) => [number, number] | undefined = () => undefined): BlockPlan | undefined {
  if (loop.v !== WORK_ITEM || loop.step !== 1 || loop.start.k !== 'const' || loop.start.value !== 0 || assigned.has(WORK_ITEM)) return undefined;
  const end = loop.end;
  const r = end.k === 'const' ? [end.value, end.value] : end.k === 'var' && end.type === 'i32' && !assigned.has(end.name) ? endRange(end.name) : undefined;
  if (!r) return undefined;
  const n = r[1];
  if (n < MIN_BLOCK || n > 1 << 20) return undefined;
  const counts = new Map<string, number>();
  const walk = (ss: readonly KStmt[]): void => {
    for (const s of ss) {
      const name = s.k === 'decl' || s.k === 'local' ? s.name : s.k === 'for' ? s.v : undefined;
      if (name !== undefined) counts.set(name, (counts.get(name) ?? 0) + 1);
      if (s.k === 'if') { walk(s.then); walk(s.else); }
      if (s.k === 'for') walk(s.body);
    }
  };
  walk(loop.body);
  if (counts.has(WORK_ITEM) || counts.has(BLOCK_OUTER) || counts.has(BLOCK_INNER) || (end.k === 'var' && counts.has(end.name))) return undefined;
  const declared = new Set(counts.keys());
  const once = new Set([...counts].filter(([, c]) => c === 1).map(([name]) => name));
  const sizes = [...new Set(divisors(loop.body).map((c) => 2 ** Math.min(tzOf(c), 30)))]
    .filter((c) => c >= MIN_BLOCK && c <= n && (end.k !== 'const' || n % c === 0)).sort((x, y) => x - y);
  for (const C of sizes) {
    const rw = new BlockRewriter(C, n, declared, once, assigned);
    const body = rw.stmts(loop.body);
    if (!rw.rewritten) continue;
    const first = K.bin('*', K.v(BLOCK_OUTER), K.i32(C));
    const item = K.decl(WORK_ITEM, 'i32', K.bin('+', first, K.v(BLOCK_INNER)));
    // A variable end: the last block stops at it (end - rn_bo * C > 0 while blocks run).
    const innerEnd = end.k === 'const' ? K.i32(C) : K.bin('min', K.i32(C), K.bin('-', end, first));
    const mk = (ss: KStmt[]): Extract<KStmt, { k: 'for' }> => ({ k: 'for', v: BLOCK_INNER, start: K.i32(0), end: innerEnd, step: 1, body: [item, ...ss] });
    return {
      size: C, blocks: Math.ceil(n / C), ...(end.k === 'const' ? {} : { limit: end }),
      inner: mk(body), plain: mk([...loop.body]), premises: [...rw.premises.values()], rewritten: rw.rewritten,
    };
  }
  return undefined;
}
