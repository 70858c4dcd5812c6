// Tensor IR expressions -> kernel IR. Index variables are bound to kernel values by the
// caller; tensors become flat buffers with row-major strides built from size expressions;
// reductions become loops that append statements to the current block.
import type { CVar, UnaryFn } from '../../dsl/checked.js';
import { type Dim, deq } from '../../dsl/dims.js';
import { freeIndices, type Node, type ReduceArg } from '../ir.js';
import * as K from '../kir.js';
import type { KExpr, KStmt, KType } from '../kir.js';

export class LowerError extends Error {}

/** How the kernel sees sizes: specialised constants or runtime i32 scalars. */
export interface SizeEnv {
  /** Size atoms baked into the kernel as constants. */
  constants: ReadonlyMap<string, number>;
  /** Size atoms read from scalar parameters (named size_X); filled as they are used. */
  runtime: Set<string>;
}

export const sizeParam = (atom: string): string => `size_${atom.replace(/[^A-Za-z0-9_]/g, '_')}`;
export const bufferName = (id: string): string => id.replace(/[^A-Za-z0-9_]/g, '_').replace(/^(?=\d)/, '_').replace(/__+/g, '_') || 'buf';

export function dimExpr(d: Dim, env: SizeEnv): KExpr {
  let out: KExpr | undefined;
  for (const [mono, coef] of d) {
    if (!Number.isInteger(coef)) throw new LowerError(`size ${[...d].join(' ')} has a fractional coefficient`);
    let term: KExpr = K.i32(coef);
    let trivial = true;
    for (const atom of mono ? mono.split('*') : []) {
      if (atom.startsWith('(')) throw new LowerError(`size '${atom}' is a quotient; kernels need it bound to a number`);
      const c = env.constants.get(atom);
      let ae: KExpr;
      if (c !== undefined) ae = K.i32(c);
      else { env.runtime.add(atom); ae = K.v(sizeParam(atom)); }
      term = trivial && coef === 1 ? ae : K.mul(term, ae);
      trivial = false;
    }
    out = out ? K.add(out, term) : term;
  }
  return fold(out ?? K.i32(0));
}

/** Constant folding of integer expressions (keeps index arithmetic readable). */
export function fold(e: KExpr): KExpr {
  if (e.k !== 'bin' || e.type !== 'i32') return e;
  const a = fold(e.a);
  const b = fold(e.b);
  if (a.k === 'const' && b.k === 'const') {
    const x = a.value, y = b.value;
    switch (e.op) {
      case '+': return K.i32(x + y);
      case '-': return K.i32(x - y);
      case '*': return K.i32(Math.imul(x, y));
      case '/': if (y !== 0) return K.i32(Math.trunc(x / y)); break;
      default: break;
    }
  }
  if (e.op === '*' && a.k === 'const' && a.value === 1) return b;
  if (e.op === '*' && b.k === 'const' && b.value === 1) return a;
  if (e.op === '*' && a.k === 'const' && a.value === 0) return K.i32(0);
  if (e.op === '+' && a.k === 'const' && a.value === 0) return b;
  if ((e.op === '+' || e.op === '-') && b.k === 'const' && b.value === 0) return a;
  return { ...e, a, b };
}

export interface Binding { expr: KExpr; extent?: Dim }

/** Divisors of the integer divisions and remainders an index computes (not inside loads or where branches). */
function divisors(n: Node): Node[] {
  const out: Node[] = [];
  const go = (x: Node): void => {
    if (x.op === 'load' || x.op === 'reduce') return;
    if (x.op === 'select') { go(x.src[0]!); return; }
    if (x.op === 'binary' && (x.arg === '//' || x.arg === '%')) out.push(x.src[1]!);
    x.src.forEach(go);
  };
  go(n);
  return out;
}

/** Translation context for one kernel. */
export class ExprLowering {
  private counter = 0;
  readonly buffers = new Map<string, { name: string; type: KType; written: boolean }>();
  constructor(readonly vars: ReadonlyMap<string, CVar>, readonly sizes: SizeEnv, private readonly prefix = '') {}

  fresh(p: string): string { return `${this.prefix}${p}${++this.counter}`; }

  buffer(id: string, written = false): string {
    const cv = this.vars.get(id);
    if (!cv) throw new LowerError(`unknown tensor '${id}'`);
    let b = this.buffers.get(id);
    if (!b) this.buffers.set(id, (b = { name: bufferName(id), type: cv.dtype === 'i32' || cv.dtype === 'i64' ? 'i32' : 'f32', written }));
    if (written) b.written = true;
    return b.name;
  }

  /** Flat row-major offset of `indices` into tensor `id`. */
  offset(id: string, indices: KExpr[]): KExpr {
    const shape = this.vars.get(id)!.shape;
    let off: KExpr | undefined;
    for (let k = 0; k < indices.length; k++) {
      off = off ? K.add(K.mul(off, dimExpr(shape[k]!, this.sizes)), indices[k]!) : indices[k]!;
    }
    return fold(off ?? K.i32(0));
  }

  /** Lowers `n` with index bindings; statements it needs are appended to `out`. */
  expr(n: Node, bind: ReadonlyMap<string, Binding>, out: KStmt[]): KExpr {
    switch (n.op) {
      case 'const': return n.dtype === 'int' ? K.i32(n.arg as number) : n.dtype === 'bool' ? K.bool(n.arg !== 0) : K.f32(n.arg as number);
      case 'index': {
        const b = bind.get(n.arg as string);
        if (!b) throw new LowerError(`index '${n.arg as string}' is not bound in this kernel`);
        return b.expr;
      }
      case 'size': return dimExpr(n.arg as Dim, this.sizes);
      case 'load': return this.load(n, bind, out);
      case 'unary': return this.unary(n.arg as UnaryFn, this.expr(n.src[0]!, bind, out));
      case 'binary': return this.binary(n.arg as string, this.expr(n.src[0]!, bind, out), this.expr(n.src[1]!, bind, out));
      case 'select': {
        const c = this.expr(n.src[0]!, bind, out);
        const a = this.expr(n.src[1]!, bind, out);
        const b = this.expr(n.src[2]!, bind, out);
        const t: KType = a.type === 'f32' || b.type === 'f32' ? 'f32' : a.type;
        return K.select(c, K.cast(a, t), K.cast(b, t));
      }
      case 'reduce': return this.reduce(n, bind, out);
    }
  }

  private load(n: Node, bind: ReadonlyMap<string, Binding>, out: KStmt[]): KExpr {
    const id = n.arg as string;
    const cv = this.vars.get(id)!;
    const name = this.buffer(id);
    const type: KType = cv.dtype === 'i32' || cv.dtype === 'i64' ? 'i32' : 'f32';
    if (n.src.length === 0) return K.load(name, K.i32(0), type);
    // An index is in range without a check when it is a variable bound over this very dimension.
    const guards: KExpr[] = [];
    const idxs = n.src.map((s, k) => {
      const e = this.expr(s, bind, out);
      // An index that divides by zero (n // 0, n % 0) is out of range: the read is 0, as in the reference.
      for (const d of divisors(s)) {
        const de = this.expr(d, bind, out);
        if (!(de.k === 'const' && de.value !== 0)) guards.push(K.bin('!=', de, K.i32(0)));
      }
      const b = s.op === 'index' ? bind.get(s.arg as string) : undefined;
      if (b?.extent && deq(b.extent, cv.shape[k]!)) return e;
      const t = this.fresh('ix');
      out.push(K.decl(t, 'i32', e));
      const tv = K.v(t);
      guards.push(K.and(K.bin('>=', tv, K.i32(0)), K.lt(tv, dimExpr(cv.shape[k]!, this.sizes))));
      return tv;
    });
    if (guards.length === 0) return K.load(name, this.offset(id, idxs), type);
    // Out-of-range reads are 0 (the DSL's meaning); the load itself uses a clamped index so
    // that targets evaluating both sides of a select never read outside the buffer.
    const ok = guards.reduce((a, b) => K.and(a, b));
    const clamped = idxs.map((e, k) => (e.k === 'var' ? K.bin('min', K.bin('max', e, K.i32(0)), K.sub(dimExpr(cv.shape[k]!, this.sizes), K.i32(1))) : e));
    return K.select(ok, K.load(name, this.offset(id, clamped), type), type === 'i32' ? K.i32(0) : K.f32(0));
  }

  unary(op: UnaryFn, a: KExpr): KExpr {
    const f = K.cast(a, 'f32');
    switch (op) {
      case 'neg': return K.un('neg', a);
      case 'float': return f;
      case 'abs': return K.un('abs', a);
      case 'floor': case 'ceil': return a.type === 'i32' ? a : K.cast(K.un(op, a), 'i32');
      case 'sigmoid': return this.sigmoid(f);
      case 'swish': return K.mul(f, this.sigmoid(f));
      case 'gelu': return K.mul(K.mul(K.f32(0.5), f), K.add(K.f32(1), K.un('erf', K.mul(f, K.f32(Math.SQRT1_2)))));
      default: return K.un(op, f);
    }
  }

  private sigmoid(x: KExpr): KExpr {
    return K.div(K.f32(1), K.add(K.f32(1), K.un('exp', K.un('neg', x))));
  }

  binary(op: string, a: KExpr, b: KExpr): KExpr {
    const numeric = (x: KExpr, y: KExpr): [KExpr, KExpr] => (x.type === y.type ? [x, y] : [K.cast(x, 'f32'), K.cast(y, 'f32')]);
    switch (op) {
      case '+': case '-': case '*': case 'min': case 'max': { const [x, y] = numeric(a, b); return K.bin(op, x, y); }
      case '/': return K.div(K.cast(a, 'f32'), K.cast(b, 'f32'));
      case '//': case '%': {
        // Floor division and remainder on integers (the DSL's meaning), from C's truncating ones;
        // by zero both are 0 (an index computed with one is out of range, see load), and a
        // divisor that may be zero is replaced by 1 first (C leaves x / 0 undefined).
        const known = b.k === 'const' && b.value !== 0;
        const zero = known ? undefined : K.bin('==', b, K.i32(0));
        const d = zero ? K.select(zero, K.i32(1), b) : b;
        const q = K.bin('/', a, d);
        const r = K.bin('%', a, d);
        const fix = K.and(K.bin('!=', r, K.i32(0)), K.bin('!=', K.lt(r, K.i32(0)), K.lt(d, K.i32(0))));
        const v = op === '//' ? K.select(fix, K.sub(q, K.i32(1)), q) : K.select(fix, K.add(r, d), r);
        return zero ? K.select(zero, K.i32(0), v) : v;
      }
      case '^': {
        // Small integer powers are products (pow of a negative base is undefined in WGSL).
        if (b.k === 'const' && Number.isInteger(b.value) && b.value >= 0 && b.value <= 4) {
          const x = K.cast(a, 'f32');
          let r: KExpr = K.f32(1);
          for (let i = 0; i < b.value; i++) r = i === 0 ? x : K.mul(r, x);
          return r;
        }
        if (b.type !== 'i32') {
          // A float exponent, as the reference (JavaScript's **) has it: 1 at y = 0, and the real
          // value of a negative base to an integral y (GPU pow is NaN for both); NaN for a
          // negative base to a fractional y, as there.
          const x = K.cast(a, 'f32');
          const y = K.cast(b, 'f32');
          const negInt = K.and(K.lt(x, K.f32(0)), K.bin('==', K.un('floor', y), y));
          const mag = K.bin('pow', K.select(negInt, K.un('abs', x), x), y);
          const odd = K.bin('!=', K.mul(K.un('floor', K.mul(y, K.f32(0.5))), K.f32(2)), y);
          return K.select(K.bin('==', y, K.f32(0)), K.f32(1), K.select(K.and(negInt, odd), K.un('neg', mag), mag));
        }
        // An integer power of any base, as the reference has it: GPU pow(x, y) is exp2(y log2 x),
        // NaN for x < 0 and for 0^0. |a|^b, 1 at b = 0, negated for a < 0 and b odd.
        const x = K.cast(a, 'f32');
        const mag = K.select(K.bin('==', b, K.i32(0)), K.f32(1), K.bin('pow', K.un('abs', x), K.cast(b, 'f32')));
        return K.select(K.and(K.lt(x, K.f32(0)), K.bin('!=', K.bin('%', b, K.i32(2)), K.i32(0))), K.un('neg', mag), mag);
      }
      default: { const [x, y] = numeric(a, b); return K.bin(op as K.KBinOp, x, y); }
    }
  }

  private reduce(n: Node, bind: ReadonlyMap<string, Binding>, out: KStmt[]): KExpr {
    const r = n.arg as ReduceArg;
    const acc = this.fresh('acc');
    const type: KType = n.dtype === 'int' ? 'i32' : 'f32';
    const init = r.op === 'sum' ? (type === 'i32' ? K.i32(0) : K.f32(0)) : (type === 'i32' ? K.i32(-2147483648) : K.f32(-Infinity));
    out.push(K.decl(acc, type, init));
    const inner = new Map(bind);
    const body: KStmt[] = [];
    let block = body;
    const placed = new Set<number>();
    const loops: { v: string; extent: Dim; block: KStmt[] }[] = [];
    // A float32 sum over several indices keeps one partial sum per loop level (added to the
    // level above when its loop ends): a single running sum of the B T V terms of a decay
    // gradient loses ~sqrt(B T V) ulp (2e-5 relative at 10^5 terms), nested ones ~sqrt(T + V).
    const nested = r.op === 'sum' && type === 'f32' && r.vars.length > 1;
    let sumInto = acc;
    r.vars.forEach((v, level) => {
      const lv = this.fresh(v.name.replace(/[^A-Za-z0-9_]/g, '_'));
      inner.set(v.name, { expr: K.v(lv), extent: v.extent });
      const loopBody: KStmt[] = [];
      loops.push({ v: lv, extent: v.extent, block: loopBody });
      if (nested && level > 0) {
        const part = this.fresh('part');
        block.push(K.decl(part, 'f32', K.f32(0)));
        block.push(K.loop(lv, K.i32(0), dimExpr(v.extent, this.sizes), loopBody));
        block.push(K.assign(sumInto, K.add(K.v(sumInto, 'f32'), K.v(part, 'f32'))));
        sumInto = part;
      } else block.push(K.loop(lv, K.i32(0), dimExpr(v.extent, this.sizes), loopBody));
      block = loopBody;
      r.cons.forEach((c, ci) => {
        if (placed.has(ci)) return;
        const mentioned = [c.name, ...[...freeIndices(n.src[ci + 1]!)].filter((x) => r.vars.some((w) => w.name === x))];
        if (mentioned.every((x) => r.vars.slice(0, level + 1).some((w) => w.name === x))) {
          placed.add(ci);
          const rhs = this.expr(n.src[ci + 1]!, inner, block);
          const cond = K.bin(c.op, inner.get(c.name)!.expr, rhs);
          const rest: KStmt[] = [];
          block.push(K.iff(cond, rest));
          block = rest;
        }
      });
    });
    const v = K.cast(this.expr(n.src[0]!, inner, block), type);
    block.push(K.assign(sumInto, r.op === 'sum' ? K.add(K.v(sumInto, type), v) : K.bin('max', K.v(sumInto, type), v)));
    out.push(...body);
    return K.v(acc, type);
  }
}
