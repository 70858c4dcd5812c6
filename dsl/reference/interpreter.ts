// The reference interpreter: evaluates a checked function literally in float64, one output
// element at a time, every reduction as a plain loop over its index range. No schedule and
// no algebra: it is the definition of truth that every compiled schedule is tested against.
//
// Each index statement is turned into a small JavaScript loop nest (new Function) so that the
// literal evaluation is fast enough for T = 256 in tests. Reads outside a tensor give 0.
import type { CExpr, CheckedFn, CheckedModel, CStmt, CVar } from '../checked.js';
import { type Dim, dimToString, devaluate } from '../dims.js';
import { erf, gelu, sigmoid } from '../math.js';

export interface Value { shape: number[]; data: Float64Array }

/** A run-time error of the user's making (missing input, wrong shape). One line. */
export class RunError extends Error {}

export const shapeStr = (s: readonly number[]): string => `[${s.join(', ')}]`;
const numel = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);

export function makeValue(shape: number[], data?: ArrayLike<number>): Value {
  const d = new Float64Array(numel(shape));
  if (data) d.set(data);
  return { shape, data: d };
}

const RT = { erf, gelu, sigmoid };

/** Size symbols of `fn` from its inputs' shapes: direct symbols first, then linear solves. */
export function bindSizes(fn: Pick<CheckedFn, "name" | "params" | "sizes">, shapes: ReadonlyMap<string, readonly number[]>, explicit: ReadonlyMap<string, number> = new Map()): Map<string, number> {
  const env = new Map<string, number>(explicit);
  // A scalar parameter may be given as a 0-d or a 1-element tensor (on every target).
  shapes = new Map([...shapes].map(([k, s]) => [k, fn.params.some((p) => p.name === k && p.shape.length === 0) && s.length === 1 && s[0] === 1 ? [] : s] as const));
  for (const p of fn.params) {
    const s = shapes.get(p.name);
    if (!s) continue;
    if (s.length !== p.shape.length) throw new RunError(`input '${p.name}' of '${fn.name}' must have ${p.shape.length} dimension${p.shape.length === 1 ? '' : 's'} ${shapeOf(p.shape)}, got ${shapeStr(s)}`);
  }
  for (let changed = true; changed;) {
    changed = false;
    for (const p of fn.params) {
      const s = shapes.get(p.name);
      if (!s) continue;
      p.shape.forEach((d, j) => {
        const unknown = [...symbolsOf(d)].filter((x) => !env.has(x));
        if (unknown.length !== 1) return;
        const u = unknown[0]!;
        // d is linear in u here (the checker allowed it): evaluate at 0 and 1 to solve.
        const at = (x: number) => devaluate(d, new Map([...env, [u, x]]));
        const b = at(0);
        const a1 = at(1);
        const a2 = at(2);
        // Only a dimension linear in u (checked at a third point) determines u.
        if (b === undefined || a1 === undefined || a2 === undefined || a1 - b === 0 || a2 - a1 !== a1 - b) return;
        const x = (s[j]! - b) / (a1 - b);
        env.set(u, x);
        changed = true;
      });
    }
  }
  for (const sym of fn.sizes) {
    const v = env.get(sym);
    if (v === undefined) throw new RunError(`cannot determine size '${sym}' of '${fn.name}' from its inputs`);
    if (!Number.isInteger(v) || v < 0) throw new RunError(`size '${sym}' of '${fn.name}' would be ${v}, which is not a non-negative integer (check the shapes of its inputs)`);
  }
  for (const p of fn.params) {
    const s = shapes.get(p.name);
    if (!s) continue;
    const want = p.shape.map((d) => devaluate(d, env));
    if (want.some((w, j) => w !== s[j])) {
      throw new RunError(`input '${p.name}' of '${fn.name}' must have shape ${shapeOf(p.shape)} = ${shapeStr(want as number[])}, got ${shapeStr(s)}`);
    }
  }
  return env;
}

function symbolsOf(d: Dim): Set<string> {
  const s = new Set<string>();
  for (const k of d.keys()) if (k) for (const a of k.split('*')) if (!a.startsWith('(')) s.add(a);
  return s;
}
const shapeOf = (dims: readonly Dim[]): string => `[${dims.map(dimToString).join(', ')}]`;

function evalDim(d: Dim, env: ReadonlyMap<string, number>, what: string): number {
  const v = devaluate(d, env);
  if (v === undefined || !Number.isInteger(v) || v < 0) throw new RunError(`size ${dimToString(d)} of ${what} is not a non-negative integer here (${v})`);
  return v;
}

// ---- code generation for one index statement -----------------------------------------

interface Gen {
  lines: string[];
  temps: number;
  /** Tensor var id -> slot in the tensors array. */
  slots: Map<string, number>;
  /** Distinct dims -> slot in the dims array. */
  dims: Map<string, { d: Dim; slot: number }>;
  /** Index var name -> JS identifier. */
  idx: Map<string, string>;
  /** Slot -> rank of the tensor in that slot. */
  ranks: Map<number, number>;
}

const JS_BIN: Record<string, string> = { '+': '+', '-': '-', '*': '*', '/': '/', '<': '<', '<=': '<=', '>': '>', '>=': '>=', '==': '===', '!=': '!==' };

function dimRef(g: Gen, d: Dim): string {
  const key = [...d].map(([k, v]) => `${k}:${v}`).sort().join('|');
  let e = g.dims.get(key);
  if (!e) g.dims.set(key, (e = { d, slot: g.dims.size }));
  return `D[${e.slot}]`;
}

function slotOf(g: Gen, v: string): number {
  let s = g.slots.get(v);
  if (s === undefined) g.slots.set(v, (s = g.slots.size));
  return s;
}

/** Emits prerequisite statements into g.lines and returns a JS expression. */
function genExpr(g: Gen, e: CExpr, indent: string): string {
  switch (e.k) {
    case 'const': return Number.isFinite(e.value) ? `(${e.value})` : e.value > 0 ? 'Infinity' : e.value < 0 ? '-Infinity' : 'NaN';
    case 'index': return g.idx.get(e.name)!;
    case 'size': return dimRef(g, e.dim);
    case 'load': {
      const s = slotOf(g, e.v);
      g.ranks.set(s, e.indices.length);
      if (e.indices.length === 0) return `X${s}[0]`;
      const parts = e.indices.map((ie) => genExpr(g, ie, indent));
      const names = parts.map(() => `_i${g.temps++}`);
      g.lines.push(`${indent}let ${names.map((n, j) => `${n} = ${parts[j]}`).join(', ')};`);
      // An index that divides by zero (x[n // 0], x[n % 0]) is out of range.
      const nonzero = e.indices.flatMap(divisorsOf).map((d) => `${genExpr(g, d, indent)} !== 0`);
      const inRange = [...names.map((n, j) => `${n} >= 0 && ${n} < S${s}_${j}`), ...nonzero].join(' && ');
      const offset = names.map((n, j) => (j === names.length - 1 ? n : `${n} * R${s}_${j}`)).join(' + ');
      return `((${inRange}) ? X${s}[${offset}] : 0)`;
    }
    case 'unary': {
      const a = genExpr(g, e.a, indent);
      switch (e.op) {
        case 'neg': return `(-${a})`;
        case 'exp': return `Math.exp(${a})`;
        case 'exp2': return `Math.pow(2, ${a})`;
        case 'log': return `Math.log(${a})`;
        case 'log2': return `Math.log2(${a})`;
        case 'log1p': return `Math.log1p(${a})`;
        case 'sqrt': return `Math.sqrt(${a})`;
        case 'rsqrt': return `(1 / Math.sqrt(${a}))`;
        case 'sin': return `Math.sin(${a})`;
        case 'cos': return `Math.cos(${a})`;
        case 'tanh': return `Math.tanh(${a})`;
        case 'sigmoid': return `RT.sigmoid(${a})`;
        case 'swish': { const t = `_v${g.temps++}`; g.lines.push(`${indent}const ${t} = ${a};`); return `(${t} * RT.sigmoid(${t}))`; }
        case 'gelu': return `RT.gelu(${a})`;
        case 'erf': return `RT.erf(${a})`;
        case 'abs': return `Math.abs(${a})`;
        case 'float': return `(${a})`;
        case 'floor': return `Math.floor(${a})`;
        case 'ceil': return `Math.ceil(${a})`;
      }
      break;
    }
    case 'binary': {
      const a = genExpr(g, e.a, indent);
      const b = genExpr(g, e.b, indent);
      switch (e.op) {
        case '^': return `Math.pow(${a}, ${b})`;
        // Integer division and remainder by zero are 0 (never NaN or Infinity); an index computed
        // with one is out of range (see 'load'), as in the kernels.
        case '//': { const t = `_v${g.temps++}`; g.lines.push(`${indent}const ${t} = ${b};`); return `(${t} === 0 ? 0 : Math.floor(${a} / ${t}))`; }
        case '%': { const t = `_v${g.temps++}`; g.lines.push(`${indent}const ${t} = ${b};`); return `(${t} === 0 ? 0 : ${a} - ${t} * Math.floor(${a} / ${t}))`; }
        case 'min': return `Math.min(${a}, ${b})`;
        case 'max': return `Math.max(${a}, ${b})`;
        default: return `(${a} ${JS_BIN[e.op]} ${b})`;
      }
    }
    case 'select': {
      // Both branches are pure; evaluate lazily so a large unused branch costs nothing.
      const c = genExpr(g, e.cond, indent);
      const t = `_v${g.temps++}`;
      g.lines.push(`${indent}let ${t};`);
      g.lines.push(`${indent}if (${c}) {`);
      const a = genExpr(g, e.a, indent + '  ');
      g.lines.push(`${indent}  ${t} = ${a};`, `${indent}} else {`);
      const b = genExpr(g, e.b, indent + '  ');
      g.lines.push(`${indent}  ${t} = ${b};`, `${indent}}`);
      return t;
    }
    case 'reduce': {
      const acc = `_r${g.temps++}`;
      g.lines.push(`${indent}let ${acc} = ${e.op === 'sum' ? '0' : '-Infinity'};`);
      let ind = indent;
      const placed = new Set<number>();
      e.vars.forEach((v, level) => {
        const id = `_x${g.temps++}`;
        g.idx.set(v.name, id);
        g.lines.push(`${ind}for (let ${id} = 0; ${id} < ${dimRef(g, v.extent)}; ${id}++) {`);
        ind += '  ';
        // A constraint is tested as soon as every reduction index it mentions is bound.
        e.constraints.forEach((c, ci) => {
          if (placed.has(ci)) return;
          const mentioned = reduceVarsIn(c.rhs, e.vars.map((x) => x.name)).concat(c.name);
          if (mentioned.every((n) => e.vars.slice(0, level + 1).some((x) => x.name === n))) {
            placed.add(ci);
            const rhs = genExpr(g, c.rhs, ind);
            g.lines.push(`${ind}if (!(${g.idx.get(c.name)} ${c.op} ${rhs})) continue;`);
          }
        });
      });
      const body = genExpr(g, e.body, ind);
      g.lines.push(e.op === 'sum' ? `${ind}${acc} += ${body};` : `${ind}{ const _m = ${body}; if (_m > ${acc} || _m !== _m) ${acc} = _m; }`);
      for (let i = 0; i < e.vars.length; i++) { ind = ind.slice(2); g.lines.push(`${ind}}`); }
      for (const v of e.vars) g.idx.delete(v.name);
      return acc;
    }
  }
  throw new Error('unreachable');
}

/** Divisors of the integer divisions and remainders an index computes (not inside loads, where branches or sums). */
function divisorsOf(e: CExpr): CExpr[] {
  const out: CExpr[] = [];
  const go = (x: CExpr): void => {
    if (x.k === 'unary') go(x.a);
    if (x.k === 'select') go(x.cond);
    if (x.k === 'binary') {
      if (x.op === '//' || x.op === '%') out.push(x.b);
      go(x.a);
      go(x.b);
    }
  };
  go(e);
  return out;
}

function reduceVarsIn(e: CExpr, names: string[]): string[] {
  const out: string[] = [];
  const walk = (x: CExpr): void => {
    if (x.k === 'index' && names.includes(x.name)) out.push(x.name);
    if (x.k === 'load') x.indices.forEach(walk);
    if (x.k === 'unary') walk(x.a);
    if (x.k === 'binary') { walk(x.a); walk(x.b); }
    if (x.k === 'select') { walk(x.cond); walk(x.a); walk(x.b); }
    if (x.k === 'reduce') { x.constraints.forEach((c) => walk(c.rhs)); walk(x.body); }
  };
  walk(e);
  return out;
}

interface CompiledStmt {
  run: (out: Float64Array, tensors: Float64Array[], shapes: number[][], D: number[]) => void;
  slots: string[];
  dims: Dim[];
}

const compiled = new WeakMap<CStmt, CompiledStmt>();

function compileStmt(s: Extract<CStmt, { k: 'compute' }>): CompiledStmt {
  const hit = compiled.get(s);
  if (hit) return hit;
  const g: Gen = { lines: [], temps: 0, slots: new Map(), dims: new Map(), idx: new Map(), ranks: new Map() };
  let ind = '  ';
  const loopVars: string[] = [];
  for (const v of s.indices) {
    const id = `_o${g.temps++}`;
    g.idx.set(v.name, id);
    loopVars.push(id);
    g.lines.push(`${ind}for (let ${id} = 0; ${id} < ${dimRef(g, v.extent)}; ${id}++) {`);
    ind += '  ';
  }
  const value = genExpr(g, s.value, ind);
  g.lines.push(`${ind}OUT[_pos++] = ${value};`);
  for (let i = 0; i < s.indices.length; i++) { ind = ind.slice(2); g.lines.push(`${ind}}`); }
  const slots = [...g.slots.keys()];
  const prologue: string[] = ['let _pos = 0;'];
  slots.forEach((_, i) => {
    // Sizes and row-major strides of every tensor, hoisted out of the loops.
    const rank = g.ranks.get(i) ?? 0;
    prologue.push(`const X${i} = T[${i}], SH${i} = SHAPES[${i}];`);
    for (let j = 0; j < rank; j++) prologue.push(`const S${i}_${j} = SH${i}[${j}];`);
    for (let j = rank - 1; j >= 0; j--) prologue.push(`const R${i}_${j} = ${j === rank - 1 ? '1' : `R${i}_${j + 1} * S${i}_${j + 1}`};`);
  });
  const src = [...prologue, ...g.lines].join('\n');
  const fn = new Function('RT', 'OUT', 'T', 'SHAPES', 'D', src) as (rt: typeof RT, out: Float64Array, t: Float64Array[], sh: number[][], d: number[]) => void;
  const result: CompiledStmt = { run: (out, t, sh, d) => fn(RT, out, t, sh, d), slots, dims: [...g.dims.values()].sort((a, b) => a.slot - b.slot).map((x) => x.d) };
  compiled.set(s, result);
  return result;
}

// ---- execution -------------------------------------------------------------------------

export interface RunOptions {
  /** Weights by full name, for functions inside models. */
  weights?: ReadonlyMap<string, Value>;
  /** Prefix of this scope's weights (e.g. 'layers.3.'). */
  weightPrefix?: string;
  /** Explicit sizes (for size parameters that no input determines). */
  sizes?: ReadonlyMap<string, number>;
}

/**
 * Runs `fn` on named inputs. Scalars may be given as 0-d or 1-element tensors; params with
 * defaults may be omitted. Returns outputs by name.
 */
/**
 * What every target checks of a function's inputs before sizes are bound: no missing input
 * without a default, integers in integer inputs, no tensor that is not a parameter.
 */
export function checkInputs(fn: Pick<CheckedFn, 'name' | 'params'>, inputs: ReadonlyMap<string, Value>): void {
  for (const p of fn.params) {
    const v = inputs.get(p.name);
    if (!v) {
      if (p.default === undefined) throw new RunError(`missing input '${p.name}' of '${fn.name}' (expected ${p.dtype}${p.shape.length ? shapeOf(p.shape) : ''})`);
      continue;
    }
    if (p.dtype === 'i32' || p.dtype === 'i64') {
      for (const x of v.data) if (!Number.isInteger(x)) throw new RunError(`input '${p.name}' of '${fn.name}' is ${p.dtype} but holds the non-integer ${x}`);
    }
  }
  for (const name of inputs.keys()) {
    if (!fn.params.some((p) => p.name === name)) throw new RunError(`'${fn.name}' has no parameter '${name}' (its parameters: ${fn.params.map((p) => p.name).join(', ')})`);
  }
}

export function runFunction(fn: CheckedFn, inputs: ReadonlyMap<string, Value>, opts: RunOptions = {}): Map<string, Value> {
  checkInputs(fn, inputs);
  const env = new Map<string, Value>();
  const shapes = new Map<string, readonly number[]>();
  for (const p of fn.params) {
    let v = inputs.get(p.name) ?? makeValue([], [p.default!]);
    if (p.shape.length === 0 && v.shape.length === 1 && v.shape[0] === 1) v = { shape: [], data: v.data };
    env.set(p.v, v);
    shapes.set(p.name, v.shape);
  }
  const sizes = bindSizes(fn, shapes, opts.sizes);
  execBody(fn, env, sizes, opts);
  const out = new Map<string, Value>();
  for (const o of fn.outputs) out.set(o.name, env.get(o.v)!);
  return out;
}

function lookup(fn: CheckedFn, env: Map<string, Value>, id: string, opts: RunOptions): Value {
  const v = env.get(id);
  if (v) return v;
  const cv: CVar | undefined = fn.vars.get(id);
  if (cv?.role === 'weight') {
    const full = (opts.weightPrefix ?? '') + cv.path!;
    const w = opts.weights?.get(full);
    if (!w) throw new RunError(`missing weight '${full}'`);
    const want = cv.shape.map((d) => devaluate(d, new Map()));
    if (w.shape.length !== want.length || want.some((x, i) => x !== w.shape[i])) throw new RunError(`weight '${full}' must have shape ${shapeStr(want as number[])}, got ${shapeStr(w.shape)}`);
    env.set(id, w);
    return w;
  }
  throw new Error(`internal: '${id}' used before definition`);
}

function execBody(fn: CheckedFn, env: Map<string, Value>, sizes: Map<string, number>, opts: RunOptions): void {
  for (const s of fn.body) {
    if (s.k === 'compute') {
      const c = compileStmt(s);
      const tensors = c.slots.map((id) => lookup(fn, env, id, opts));
      const dimVals = c.dims.map((d) => evalDim(d, sizes, `'${fn.vars.get(s.target)!.name}'`));
      const shape = s.indices.map((v) => evalDim(v.extent, sizes, `index '${v.name}'`));
      const out = new Float64Array(numel(shape));
      c.run(out, tensors.map((t) => t.data), tensors.map((t) => t.shape), dimVals);
      env.set(s.target, { shape, data: out });
      continue;
    }
    // A call: the callee's sizes come from the caller's (the checker bound every one).
    const args = s.args.map((id) => lookup(fn, env, id, opts));
    const calleeFn = s.callee.kind === 'fn' ? s.callee.fn : s.callee.layer.forward;
    const calleeSizes = new Map<string, number>();
    for (const [k, d] of s.sizes) calleeSizes.set(k, evalDim(d, sizes, `size '${k}' of '${calleeFn.name}'`));
    const inputs = (a: Value[]) => new Map(calleeFn.params.map((p, i) => [p.name, a[i]!] as const));
    let outs: Map<string, Value>;
    if (s.callee.kind === 'fn') {
      outs = runFunction(calleeFn, inputs(args), { ...opts, sizes: calleeSizes });
    } else {
      const layer = s.callee.layer;
      const n = layer.count ?? 1;
      let cur = args;
      outs = new Map([[calleeFn.outputs[0]!.name, args[0]!]]);
      for (let i = 0; i < n; i++) {
        const prefix = (opts.weightPrefix ?? '') + (layer.count === undefined ? `${layer.name}.` : `${layer.name}.${i}.`);
        outs = runFunction(calleeFn, inputs(cur), { ...opts, sizes: calleeSizes, weightPrefix: prefix });
        cur = [outs.get(calleeFn.outputs[0]!.name)!, ...args.slice(1)];
      }
    }
    calleeFn.outputs.forEach((o, i) => {
      const v = outs.get(o.name);
      if (!v) throw new RunError(`'${calleeFn.name}' produced no '${o.name}'`);
      env.set(s.outs[i]!, v);
    });
  }
}

/** Runs a model's forward with its weights (by full name) and inputs. */
export function runModel(model: CheckedModel, weights: ReadonlyMap<string, Value>, inputs: ReadonlyMap<string, Value>): Map<string, Value> {
  return runFunction(model.forward, inputs, { weights });
}
