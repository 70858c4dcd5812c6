// The checker: resolves names, unifies symbolic shapes, types values and turns the AST into
// the checked program of checked.ts. It reports as many located errors as it can per run.
import type * as A from './ast.js';
import type { BinaryFn, CExpr, CheckedFn, CheckedLayer, CheckedModel, Constraint, CParam, CStmt, CVar, CWeight, ReduceVar, UnaryFn, VKind } from './checked.js';
import { BINARY_BUILTINS, INITIALISERS, isBuiltin, UNARY_BUILTINS } from './builtins.js';
import { type Dim, dadd, dconst, ddiv, deq, dimSymbols, dimToString, dmul, dsub, dsubst, dsym, isConst, constValue, shapeToString } from './dims.js';
import { applyUnary } from './math.js';
import type { Diagnostic, Span } from './source.js';

class CheckError extends Error {
  constructor(readonly span: Span, message: string) { super(message); }
}
/** An error already reported elsewhere (a use of something that failed to check). */
class Silent extends Error {}

type HyperValue = number | string;

interface Scope {
  hypers: Map<string, HyperValue>;
  weights: Map<string, { dtype: A.DType; shape: Dim[] }>;
  fns: Map<string, A.FnDecl>;
  layers: Map<string, CheckedLayer>;
}

const EMPTY_SCOPE: Scope = { hypers: new Map(), weights: new Map(), fns: new Map(), layers: new Map() };

export interface ModelInfo { decl: A.ModelDecl; configs: string[]; instances: Map<string, CheckedModel> }

export interface CheckResult {
  fns: Map<string, CheckedFn>;
  models: Map<string, ModelInfo>;
  diagnostics: Diagnostic[];
}

const kindOf = (dt: A.DType): VKind => (dt === 'i32' || dt === 'i64' ? 'int' : 'float');

export class Checker {
  readonly diagnostics: Diagnostic[] = [];
  private readonly globalFns = new Map<string, A.FnDecl>();
  private readonly cache = new Map<A.FnDecl, Map<Scope, CheckedFn | null>>();
  private readonly inProgress: A.FnDecl[] = [];

  constructor(files: A.FileAst[]) {
    const seen = new Map<string, Span>();
    for (const f of files) {
      for (const d of [...f.fns, ...f.models]) {
        const prev = seen.get(d.name);
        if (prev) this.report(d.nameSpan, `'${d.name}' is already defined at ${prev.file}:${prev.line}:${prev.col}`);
        else seen.set(d.name, d.nameSpan);
        if (d.kind === 'fn' && !prev) {
          if (isBuiltin(d.name)) this.report(d.nameSpan, `'${d.name}' is a builtin function and cannot be redefined`);
          else this.globalFns.set(d.name, d);
        }
      }
    }
  }

  report(span: Span, message: string): void {
    if (this.diagnostics.some((d) => d.span.file === span.file && d.span.offset === span.offset && d.message === message)) return;
    this.diagnostics.push({ span, message });
  }

  checkAll(files: A.FileAst[]): CheckResult {
    const fns = new Map<string, CheckedFn>();
    for (const decl of this.globalFns.values()) {
      const c = this.fn(decl, EMPTY_SCOPE);
      if (c) fns.set(decl.name, c);
    }
    const models = new Map<string, ModelInfo>();
    for (const f of files) {
      for (const m of f.models) {
        if (models.has(m.name) || this.globalFns.has(m.name)) continue;
        const configs = ['default', ...m.items.filter((i): i is A.SizeDecl => i.kind === 'size').map((s) => s.name)];
        const instances = new Map<string, CheckedModel>();
        for (const c of configs) {
          const inst = this.model(m, c);
          if (inst) instances.set(c, inst);
        }
        models.set(m.name, { decl: m, configs, instances });
      }
    }
    return { fns, models, diagnostics: this.diagnostics };
  }

  /** Checks a function once per scope; null if it has errors (already reported). */
  fn(decl: A.FnDecl, scope: Scope): CheckedFn | null {
    let perScope = this.cache.get(decl);
    if (!perScope) this.cache.set(decl, (perScope = new Map()));
    if (perScope.has(scope)) return perScope.get(scope)!;
    const at = this.inProgress.indexOf(decl);
    if (at >= 0) {
      const cycle = [...this.inProgress.slice(at), decl].map((d) => d.name);
      throw new CheckError(decl.nameSpan, cycle.length === 2 ? `'${decl.name}' calls itself; recursion is not supported` : `recursive calls ${cycle.join(' -> ')} are not supported`);
    }
    this.inProgress.push(decl);
    let result: CheckedFn | null = null;
    try {
      result = new FnChecker(this, decl, scope).run();
    } finally {
      this.inProgress.pop();
    }
    perScope.set(scope, result);
    return result;
  }

  resolveCallable(name: string, scope: Scope): { decl: A.FnDecl; scope: Scope } | { layer: CheckedLayer } | undefined {
    const layer = scope.layers.get(name);
    if (layer) return { layer };
    const local = scope.fns.get(name);
    if (local) return { decl: local, scope };
    const g = this.globalFns.get(name);
    if (g) return { decl: g, scope: EMPTY_SCOPE };
    return undefined;
  }

  // ---- models ----------------------------------------------------------------------

  /** Instantiates a model for one size, optionally overriding hyper parameters by value. */
  model(m: A.ModelDecl, config: string, overrides: ReadonlyMap<string, HyperValue> = new Map()): CheckedModel | null {
    try {
      const hypers = new Map<string, HyperValue>();
      const sizes = m.items.filter((i): i is A.SizeDecl => i.kind === 'size');
      const sizeNames = new Set<string>();
      for (const s of sizes) {
        if (sizeNames.has(s.name)) throw new CheckError(s.span, `size '${s.name}' is defined twice`);
        sizeNames.add(s.name);
      }
      const cfg = sizes.find((s) => s.name === config);
      const hyperDecls = m.items.filter((i): i is A.HyperDecl => i.kind === 'hyper');
      if (cfg) {
        for (const v of cfg.values) {
          if (!hyperDecls.some((h) => h.name === v.name)) throw new CheckError(v.span, `size '${cfg.name}' sets '${v.name}', which is not a hyper parameter of ${m.name}`);
        }
      }
      if (config !== 'default' && !cfg) throw new CheckError(m.nameSpan, `model '${m.name}' has no size '${config}' (sizes: ${['default', ...sizeNames].join(', ')})`);
      for (const name of overrides.keys()) {
        if (!hyperDecls.some((h) => h.name === name)) throw new CheckError(m.nameSpan, `model '${m.name}' has no hyper parameter '${name}'`);
      }
      for (const h of hyperDecls) {
        if (hypers.has(h.name)) throw new CheckError(h.span, `hyper parameter '${h.name}' is defined twice`);
        const given = overrides.get(h.name);
        if (given !== undefined) {
          if (typeof given === 'string' && !UNARY_BUILTINS.has(given)) throw new CheckError(h.span, `'${given}' given for '${h.name}' is not a builtin function`);
          hypers.set(h.name, given);
          continue;
        }
        const override = cfg?.values.find((v) => v.name === h.name);
        hypers.set(h.name, evalConst(override?.value ?? h.value, hypers, true));
      }
      const scope: Scope = { hypers, weights: new Map(), fns: new Map(), layers: new Map() };
      const weights: CWeight[] = [];
      for (const item of m.items) {
        if (item.kind === 'weight') this.weight(item, scope, hypers, weights, '');
        else if (item.kind === 'fn') this.addLocalFn(scope, item);
      }
      for (const item of m.items) {
        if (item.kind !== 'layer') continue;
        if (scope.layers.has(item.name) || scope.fns.has(item.name)) throw new CheckError(item.span, `'${item.name}' is already defined in ${m.name}`);
        const layer = this.layer(item, hypers);
        if (!layer) continue;
        scope.layers.set(item.name, layer);
        const n = layer.count ?? 1;
        for (let i = 0; i < n; i++) {
          const prefix = layer.count === undefined ? `${layer.name}.` : `${layer.name}.${i}.`;
          for (const w of layer.weights) weights.push({ ...w, name: prefix + w.name });
        }
      }
      const fwd = scope.fns.get('forward');
      if (!fwd) throw new CheckError(m.nameSpan, `model '${m.name}' has no 'fn forward'`);
      const forward = this.fn(fwd, scope);
      if (!forward) return null;
      return { name: m.name, config, hypers, weights, forward };
    } catch (e) {
      // The same mistake in every size is reported once; a size-specific one names its size.
      if (e instanceof CheckError) {
        if (!this.diagnostics.some((d) => d.span.offset === e.span.offset && d.span.file === e.span.file && d.message.startsWith(e.message))) {
          this.report(e.span, config === 'default' || e.message.includes(`size '${config}'`) ? e.message : `${e.message} (size ${config})`);
        }
      } else if (!(e instanceof Silent)) throw e;
      return null;
    }
  }

  private addLocalFn(scope: Scope, f: A.FnDecl): void {
    if (scope.fns.has(f.name)) throw new CheckError(f.nameSpan, `function '${f.name}' is defined twice in this scope`);
    if (isBuiltin(f.name)) throw new CheckError(f.nameSpan, `'${f.name}' is a builtin function and cannot be redefined`);
    scope.fns.set(f.name, f);
  }

  private weight(w: A.WeightDecl, scope: Scope, hypers: Map<string, HyperValue>, out: CWeight[], prefix: string): void {
    if (w.cond !== undefined) {
      const c = evalConst(w.cond, hypers, false);
      if (c === 0) return;
    }
    if (scope.weights.has(w.name)) throw new CheckError(w.span, `weight '${w.name}' is defined twice`);
    const shape = w.type.dims.map((d) => {
      const dim = dimFromAst(d, hypers);
      if (!isConst(dim)) throw new CheckError(d.span, `weight shapes must be known from hyper parameters; '${dimToString(dim)}' is not`);
      const n = constValue(dim);
      if (!Number.isInteger(n) || n < 0) throw new CheckError(d.span, `weight dimension ${n} is not a non-negative integer`);
      return n;
    });
    let init: CWeight['init'] = { name: 'zeros', args: [] };
    if (w.init) {
      const spec = INITIALISERS[w.init.name];
      if (!spec) throw new CheckError(w.init.span, `unknown initialiser '${w.init.name}' (expected one of ${Object.values(INITIALISERS).map((s) => s.doc).join(', ')})`);
      if (w.init.args.length < spec.min || w.init.args.length > spec.max) throw new CheckError(w.init.span, `initialiser ${spec.doc} takes ${spec.min === spec.max ? spec.min : `${spec.min} to ${spec.max}`} arguments, got ${w.init.args.length}`);
      init = { name: w.init.name, args: w.init.args.map((a) => {
        const v = evalConst(a.value, hypers, false);
        if (typeof v !== 'number') throw new CheckError(a.span, 'initialiser arguments must be numbers');
        return v;
      }) };
    }
    scope.weights.set(w.name, { dtype: w.type.dtype, shape: shape.map(dconst) });
    out.push({ name: prefix + w.name, dtype: w.type.dtype, shape, init });
  }

  private layer(l: A.LayerDecl, hypers: Map<string, HyperValue>): CheckedLayer | null {
    let count: number | undefined;
    if (l.count) {
      const d = dimFromAst(l.count, hypers);
      if (!isConst(d) || !Number.isInteger(constValue(d)) || constValue(d) < 0) throw new CheckError(l.count.span, `layer count must be a non-negative integer known from hyper parameters, got '${dimToString(d)}'`);
      count = constValue(d);
    }
    const scope: Scope = { hypers, weights: new Map(), fns: new Map(), layers: new Map() };
    const weights: CWeight[] = [];
    for (const item of l.items) {
      if (item.kind === 'weight') this.weight(item, scope, hypers, weights, '');
      else if (item.kind === 'fn') this.addLocalFn(scope, item);
      else throw new CheckError(item.span, `a layer may hold only weights and functions, not ${item.kind === 'layer' ? 'layers' : `'${item.kind}'`}`);
    }
    const fwd = scope.fns.get('forward');
    if (!fwd) throw new CheckError(l.nameSpan, `layer '${l.name}' has no 'fn forward'`);
    const forward = this.fn(fwd, scope);
    if (!forward) return null;
    if (count !== undefined) {
      const p = forward.params[0];
      const o = forward.outputs[0];
      if (!p || !o || p.dtype !== o.dtype || p.shape.length !== o.shape.length || !p.shape.every((d, i) => deq(d, o.shape[i]!))) {
        throw new CheckError(fwd.nameSpan, `layer '${l.name}' is repeated, so its forward must return the type of its first parameter`);
      }
    }
    return { name: l.name, count, weights, forward };
  }
}

// ---- constants and dimensions ------------------------------------------------------

/** Evaluates a compile-time expression over hyper parameters. */
export function evalConst(e: A.Expr, hypers: Map<string, HyperValue>, allowFnName: boolean): HyperValue {
  const num = (x: A.Expr): number => {
    const v = evalConst(x, hypers, false);
    if (typeof v !== 'number') throw new CheckError(x.span, `'${v}' is a function, not a number`);
    return v;
  };
  switch (e.kind) {
    case 'num': return e.value;
    case 'name': {
      const h = hypers.get(e.name);
      if (h !== undefined) {
        if (typeof h === 'string' && !allowFnName) throw new CheckError(e.span, `'${e.name}' is a function, not a number`);
        return h;
      }
      if (allowFnName && UNARY_BUILTINS.has(e.name)) return e.name;
      throw new CheckError(e.span, `'${e.name}' is not known at compile time (expected a number or a hyper parameter)`);
    }
    case 'neg': return -num(e.operand);
    case 'bin': {
      const a = num(e.left);
      const b = num(e.right);
      switch (e.op) {
        case '+': return a + b;
        case '-': return a - b;
        case '*': return a * b;
        case '/': return a / b;
        case '//': return Math.floor(a / b);
        case '%': return a - b * Math.floor(a / b);
        case '^': return Math.pow(a, b);
        case '<': return +(a < b);
        case '<=': return +(a <= b);
        case '>': return +(a > b);
        case '>=': return +(a >= b);
        case '==': return +(a === b);
        case '!=': return +(a !== b);
      }
      break;
    }
    case 'call': {
      const args = e.args.map((a) => num(a.value));
      if (UNARY_BUILTINS.has(e.name) && args.length === 1) return applyUnary(e.name as UnaryFn, args[0]!);
      if ((e.name === 'min' || e.name === 'max') && args.length === 2) return e.name === 'min' ? Math.min(args[0]!, args[1]!) : Math.max(args[0]!, args[1]!);
      if (e.name === 'where' && args.length === 3) return args[0] ? args[1]! : args[2]!;
      break;
    }
    default: break;
  }
  throw new CheckError(e.span, 'expected a compile-time constant expression');
}

function dimFromAst(d: A.DimExpr, hypers: Map<string, HyperValue>): Dim {
  switch (d.kind) {
    case 'dnum': return dconst(d.value);
    case 'dsym': {
      const h = hypers.get(d.name);
      if (h === undefined) return dsym(d.name);
      if (typeof h !== 'number') throw new CheckError(d.span, `'${d.name}' is a function, not a size`);
      return dconst(h);
    }
    case 'dbin': {
      const a = dimFromAst(d.left, hypers);
      const b = dimFromAst(d.right, hypers);
      if (d.op === '+') return dadd(a, b);
      if (d.op === '-') return dsub(a, b);
      if (d.op === '*') return dmul(a, b);
      if (isConst(b) && constValue(b) === 0) throw new CheckError(d.span, 'division by zero in a size');
      return ddiv(a, b);
    }
  }
}

const isSimpleSym = (d: Dim): string | undefined => {
  if (d.size !== 1) return undefined;
  const [[k, v]] = [...d] as [[string, number]];
  return v === 1 && k !== '' && !k.includes('*') ? k : undefined;
};

/** Solves callee dim `pattern` (after known bindings) = `actual` for its single unbound atom. */
function solveLinear(pattern: Dim, actual: Dim, unknown: string): Dim | undefined {
  let coef: Dim = dconst(0);
  let rest: Dim = dconst(0);
  for (const [k, v] of pattern) {
    const atoms = k ? k.split('*') : [];
    const n = atoms.filter((a) => a === unknown).length;
    if (n > 1) return undefined;
    if (n === 1) {
      atoms.splice(atoms.indexOf(unknown), 1);
      coef = dadd(coef, new Map([[atoms.join('*'), v]]));
    } else rest = dadd(rest, new Map([[k, v]]));
  }
  if (coef.size === 0) return undefined;
  return ddiv(dsub(actual, rest), coef);
}

const hasOpaque = (d: Dim): boolean => [...d.keys()].some((k) => k.includes('('));

// ---- functions ---------------------------------------------------------------------

interface IdxInfo { extent: Dim | undefined; origin: string }
interface ExprCtx { idx: Map<string, IdxInfo> }

class FnChecker {
  private readonly vars = new Map<string, CVar>();
  /** Current version of each user-visible tensor name. */
  private readonly names = new Map<string, string>();
  private readonly poisoned = new Set<string>();
  private readonly sizes = new Set<string>();
  private readonly outputs = new Map<string, A.Param>();
  private readonly assignedOutputs = new Map<string, string>();
  private readonly body: CStmt[] = [];
  private failed = false;
  private tempCounter = 0;

  constructor(private readonly checker: Checker, private readonly decl: A.FnDecl, private readonly scope: Scope) {}

  private err(span: Span, msg: string): never { throw new CheckError(span, msg); }

  run(): CheckedFn | null {
    const d = this.decl;
    const paramSyms = new Set<string>();
    const params: CParam[] = [];
    const outputs: CParam[] = [];
    try {
      for (const s of d.sizeParams) {
        if (this.scope.hypers.has(s.name)) this.err(s.span, `size parameter '${s.name}' shadows a hyper parameter`);
        this.sizes.add(s.name);
        paramSyms.add(s.name);
      }
      const seen = new Set<string>();
      for (const p of d.params) {
        if (seen.has(p.name)) this.err(p.span, `parameter '${p.name}' is declared twice`);
        seen.add(p.name);
        const shape = p.type.dims.map((x) => dimFromAst(x, this.scope.hypers));
        for (const s of shape) for (const sym of dimSymbols(s)) { this.sizes.add(sym); paramSyms.add(sym); }
        let def: number | undefined;
        if (p.default) {
          if (shape.length !== 0) this.err(p.default.span, `only scalar parameters can have defaults; '${p.name}' has shape ${shapeToString(shape)}`);
          const v = evalConst(p.default, this.scope.hypers, false);
          def = v as number;
        }
        this.vars.set(p.name, { id: p.name, name: p.name, dtype: p.type.dtype, shape, role: 'input' });
        this.names.set(p.name, p.name);
        params.push({ name: p.name, dtype: p.type.dtype, shape, v: p.name, ...(def !== undefined ? { default: def } : {}) });
      }
      // Every size must be readable from some parameter dimension that is linear in it.
      for (const sym of paramSyms) {
        if (d.sizeParams.some((sp) => sp.name === sym) || sym.startsWith('(')) continue;
        const linear = d.params.some((p) => p.type.dims.some((x) => {
          const dim = dimFromAst(x, this.scope.hypers);
          return [...dim.keys()].some((k) => k.split('*').includes(sym)) && [...dim.keys()].every((k) => k.split('*').filter((a) => a === sym).length <= 1);
        }));
        if (!linear) this.err(d.params.find((p) => p.type.dims.some((x) => dimSymbols(dimFromAst(x, this.scope.hypers)).has(sym)))!.span, `size '${sym}' appears only non-linearly (as in ${sym}*${sym}), so no input shape determines it; declare it as fn ${d.name}[${sym}](...)`);
      }
      for (const o of d.outputs) {
        if (seen.has(o.name)) this.err(o.span, `output '${o.name}' has the same name as a parameter or another output`);
        seen.add(o.name);
        if (o.default) this.err(o.default.span, 'outputs cannot have defaults');
        const shape = o.type.dims.map((x) => dimFromAst(x, this.scope.hypers));
        for (const s of shape) {
          for (const sym of dimSymbols(s)) {
            if (!paramSyms.has(sym) && !sym.startsWith('(')) this.err(o.span, `size '${sym}' of output '${o.name}' is not determined by any parameter; add it to a parameter's shape or declare it as fn ${d.name}[${sym}](...)`);
          }
        }
        this.outputs.set(o.name, o);
      }
    } catch (e) {
      if (e instanceof CheckError) { this.checker.report(e.span, e.message); return null; }
      throw e;
    }
    this.stmts(d.body);
    for (const [name, o] of this.outputs) {
      const v = this.assignedOutputs.get(name);
      if (!v) {
        if (!this.poisoned.has(name)) this.report(o.span, `output '${name}' of '${d.name}' is never assigned`);
        continue;
      }
      const cv = this.vars.get(v)!;
      outputs.push({ name, dtype: cv.dtype, shape: cv.shape, v });
    }
    if (this.failed) return null;
    return { name: d.name, span: d.nameSpan, sizes: [...this.sizes], params, outputs, vars: this.vars, body: this.body };
  }

  private report(span: Span, msg: string): void {
    this.failed = true;
    this.checker.report(span, msg);
  }

  private stmts(list: A.Stmt[]): void {
    for (const s of list) {
      try {
        this.stmt(s);
      } catch (e) {
        this.failed = true;
        if (e instanceof CheckError) this.checker.report(e.span, e.message);
        else if (!(e instanceof Silent)) throw e;
        // Names this statement would have defined are poisoned so later uses stay quiet.
        if (s.kind === 'assign') this.poisoned.add(s.target);
        else if (s.kind === 'multi') for (const t of s.targets) this.poisoned.add(t.name);
      }
    }
  }

  private stmt(s: A.Stmt): void {
    if (s.kind === 'if') {
      const c = evalConst(s.cond, this.scope.hypers, false);
      this.stmts(c !== 0 ? s.then : s.else);
      return;
    }
    if (s.kind === 'multi') {
      if (s.value.kind !== 'call' || !this.checker.resolveCallable(s.value.name, this.scope)) {
        this.err(s.value.span, 'several targets need a call of a function with several outputs on the right');
      }
      this.call(s.value, s.targets, s.isLet, s.span);
      return;
    }
    if (!s.indices && s.value.kind === 'call' && this.checker.resolveCallable(s.value.name, this.scope)) {
      this.call(s.value, [{ name: s.target, span: s.span }], s.isLet, s.span);
      return;
    }
    if (s.indices && s.value.kind === 'call' && this.checker.resolveCallable(s.value.name, this.scope)) {
      this.err(s.span, `'${s.value.name}' returns whole tensors; write '${s.isLet ? 'let ' : ''}${s.target} = ${s.value.name}(...)' without indices`);
    }
    this.compute(s);
  }

  // ---- index statements ----

  private targetInfo(name: string, isLet: boolean, span: Span): { dtype?: A.DType; shape?: Dim[]; isOutput: boolean } {
    if (this.outputs.has(name)) {
      if (isLet) this.err(span, `'${name}' is an output; assign it without 'let'`);
      const o = this.outputs.get(name)!;
      return { dtype: o.type.dtype, shape: o.type.dims.map((x) => dimFromAst(x, this.scope.hypers)), isOutput: true };
    }
    const cur = this.names.get(name);
    if (cur && this.vars.get(cur)!.role === 'input') this.err(span, `cannot assign to parameter '${name}'`);
    if (!cur && !isLet) {
      if (this.poisoned.has(name)) throw new Silent();
      this.err(span, `'${name}' is not an output or a local; write 'let ${name} ...' to define a local`);
    }
    if (this.scope.hypers.has(name) || this.sizes.has(name)) this.err(span, `'${name}' is a ${this.sizes.has(name) ? 'size' : 'hyper parameter'} and cannot be assigned`);
    if (isBuiltin(name)) this.err(span, `'${name}' is a builtin function and cannot name a tensor`);
    return { isOutput: false };
  }

  private newVersion(name: string, dtype: A.DType, shape: Dim[], role: CVar['role']): string {
    let id = name;
    for (let n = 2; this.vars.has(id); n++) id = `${name}@${n}`;
    this.vars.set(id, { id, name, dtype, shape, role });
    this.names.set(name, id);
    this.poisoned.delete(name);
    if (role === 'output') this.assignedOutputs.set(name, id);
    return id;
  }

  private compute(s: Extract<A.Stmt, { kind: 'assign' }>): void {
    const t = this.targetInfo(s.target, s.isLet, s.span);
    const binders = s.indices ?? [];
    const ctx: ExprCtx = { idx: new Map() };
    if (t.shape && binders.length !== t.shape.length) {
      this.err(s.span, `'${s.target}' has ${t.shape.length} dimension${t.shape.length === 1 ? '' : 's'} ${shapeToString(t.shape)} but ${binders.length} ind${binders.length === 1 ? 'ex is' : 'ices are'} given`);
    }
    binders.forEach((b, i) => {
      if (ctx.idx.has(b.name)) this.err(b.span, `index '${b.name}' appears twice on the left`);
      this.checkIndexName(b.name, b.span);
      let extent = b.extent ? dimFromAst(b.extent, this.scope.hypers) : undefined;
      if (extent) for (const sym of dimSymbols(extent)) if (!this.sizes.has(sym) && !sym.startsWith('(')) this.err(b.extent!.span, `unknown size '${sym}'`);
      if (t.shape) {
        const want = t.shape[i]!;
        if (extent && !deq(extent, want)) this.err(b.span, `index '${b.name}' is declared over ${dimToString(extent)} but dimension ${i + 1} of '${s.target}' is ${dimToString(want)}`);
        extent = want;
      }
      ctx.idx.set(b.name, { extent, origin: t.shape ? `dimension ${i + 1} of '${s.target}'` : `the declaration of '${b.name}'` });
    });
    const value = this.expr(s.value, ctx);
    const indices: ReduceVar[] = binders.map((b) => {
      const info = ctx.idx.get(b.name)!;
      if (!info.extent) this.err(b.span, `cannot infer the range of index '${b.name}'; use it directly as an index of a tensor or write '${b.name}: SIZE'`);
      return { name: b.name, extent: info.extent };
    });
    if (value.kind === 'bool') this.err(s.value.span, `a comparison cannot be stored; write where(cond, 1.0, 0.0)`);
    let dtype = t.dtype ?? (value.kind === 'int' ? 'i32' : 'f32');
    if (kindOf(dtype) === 'int' && value.kind === 'float') this.err(s.value.span, `'${s.target}' is ${dtype} but the value is a float; use floor(...) or change its dtype`);
    const shape = t.shape ?? indices.map((i) => i.extent);
    const id = this.newVersion(s.target, dtype, shape, t.isOutput ? 'output' : 'local');
    this.body.push({ k: 'compute', target: id, indices, value, span: s.span });
  }

  private checkIndexName(name: string, span: Span): void {
    if (this.names.has(name)) this.err(span, `index '${name}' has the name of a tensor`);
    if (this.sizes.has(name)) this.err(span, `index '${name}' has the name of a size`);
    if (this.scope.hypers.has(name)) this.err(span, `index '${name}' has the name of a hyper parameter`);
    if (this.scope.weights.has(name)) this.err(span, `index '${name}' has the name of a weight`);
  }

  // ---- expressions ----

  private tensorVar(name: string, span: Span): CVar | undefined {
    const id = this.names.get(name);
    if (id) return this.vars.get(id)!;
    if (this.poisoned.has(name)) throw new Silent();
    const w = this.scope.weights.get(name);
    if (w) {
      const wid = `weight:${name}`;
      if (!this.vars.has(wid)) this.vars.set(wid, { id: wid, name, dtype: w.dtype, shape: w.shape, role: 'weight', path: name });
      return this.vars.get(wid)!;
    }
    void span;
    return undefined;
  }

  private expr(e: A.Expr, ctx: ExprCtx): CExpr {
    switch (e.kind) {
      case 'num':
        return { k: 'const', value: e.value, kind: e.isInt ? 'int' : 'float' };
      case 'name': {
        if (ctx.idx.has(e.name)) return { k: 'index', name: e.name, kind: 'int' };
        const v = this.tensorVar(e.name, e.span);
        if (v) {
          if (v.shape.length > 0) this.err(e.span, `'${e.name}' has shape ${shapeToString(v.shape)}; index it as ${e.name}[${v.shape.map((_, i) => 'ijklmn'[i] ?? 'i').join(', ')}]`);
          return { k: 'load', v: v.id, indices: [], kind: kindOf(v.dtype) };
        }
        if (this.sizes.has(e.name)) return { k: 'size', dim: dsym(e.name), kind: 'int' };
        const h = this.scope.hypers.get(e.name);
        if (typeof h === 'number') return { k: 'const', value: h, kind: Number.isInteger(h) ? 'int' : 'float' };
        if (typeof h === 'string') this.err(e.span, `'${e.name}' is a function; call it as ${e.name}(x)`);
        if (this.outputs.has(e.name)) this.err(e.span, `output '${e.name}' is read before it is assigned`);
        if (isBuiltin(e.name)) this.err(e.span, `'${e.name}' is a function; call it as ${e.name}(...)`);
        this.err(e.span, `unknown name '${e.name}'`);
      }
      // falls through (err never returns)
      case 'index': {
        if (ctx.idx.has(e.name)) this.err(e.span, `'${e.name}' is an index, not a tensor`);
        const v = this.tensorVar(e.name, e.span);
        if (!v) {
          if (this.outputs.has(e.name)) this.err(e.span, `output '${e.name}' is read before it is assigned`);
          this.err(e.span, `unknown tensor '${e.name}'`);
        }
        if (e.indices.length !== v.shape.length) {
          this.err(e.span, `'${e.name}' has ${v.shape.length} dimension${v.shape.length === 1 ? '' : 's'} ${shapeToString(v.shape)} but ${e.indices.length} ind${e.indices.length === 1 ? 'ex is' : 'ices are'} given`);
        }
        const indices = e.indices.map((ie, i) => {
          if (ie.kind === 'name' && ctx.idx.has(ie.name)) {
            const info = ctx.idx.get(ie.name)!;
            const dim = v.shape[i]!;
            const here = `dimension ${i + 1} of '${e.name}'`;
            if (!info.extent) { info.extent = dim; info.origin = here; }
            else if (!deq(info.extent, dim) && !hasOpaque(info.extent) && !hasOpaque(dim)) {
              this.err(ie.span, `index '${ie.name}' ranges over ${dimToString(info.extent)} (${info.origin}) but ${here} is ${dimToString(dim)}`);
            }
            return { k: 'index', name: ie.name, kind: 'int' } as CExpr;
          }
          const c = this.expr(ie, ctx);
          if (c.kind !== 'int') this.err(ie.span, `an index must be an integer expression, but this is a ${c.kind === 'bool' ? 'condition' : 'float'}`);
          return c;
        });
        return { k: 'load', v: v.id, indices, kind: kindOf(v.dtype) };
      }
      case 'call':
        return this.builtinCall(e, ctx);
      case 'neg': {
        const a = this.expr(e.operand, ctx);
        if (a.kind === 'bool') this.err(e.span, 'cannot negate a condition');
        return { k: 'unary', op: 'neg', a, kind: a.kind };
      }
      case 'bin':
        return this.binary(e.op, this.expr(e.left, ctx), this.expr(e.right, ctx), e.span);
      case 'reduce':
        return this.reduce(e, ctx);
    }
  }

  private binary(op: BinaryFn, a: CExpr, b: CExpr, span: Span): CExpr {
    const cmp = op === '<' || op === '<=' || op === '>' || op === '>=' || op === '==' || op === '!=';
    if (a.kind === 'bool' || b.kind === 'bool') this.err(span, `'${op}' needs numbers, but an operand is a condition; use where(cond, a, b)`);
    let kind: VKind;
    if (cmp) kind = 'bool';
    else if (op === '/' || op === '^') kind = 'float';
    else if (op === '//' || op === '%') {
      if (a.kind !== 'int' || b.kind !== 'int') this.err(span, `'${op}' needs integer operands`);
      kind = 'int';
    } else kind = a.kind === 'int' && b.kind === 'int' ? 'int' : 'float';
    return { k: 'binary', op, a, b, kind };
  }

  private builtinCall(e: Extract<A.Expr, { kind: 'call' }>, ctx: ExprCtx): CExpr {
    let name = e.name;
    const h = this.scope.hypers.get(name);
    if (typeof h === 'string') name = h;
    if (!isBuiltin(name)) {
      if (this.checker.resolveCallable(name, this.scope)) this.err(e.span, `'${name}' returns whole tensors; call it in its own statement: let y = ${name}(...)`);
      if (typeof h === 'number') this.err(e.span, `'${name}' is a number, not a function`);
      this.err(e.span, `unknown function '${name}'`);
    }
    if (e.sizeArgs.length) this.err(e.span, `builtin '${name}' takes no size arguments`);
    const named = e.args.find((a) => a.name !== undefined);
    if (named) this.err(named.span, `builtin '${name}' takes no named arguments`);
    const want = UNARY_BUILTINS.has(name) ? 1 : name === 'where' ? 3 : 2;
    if (e.args.length !== want) this.err(e.span, `'${name}' takes ${want} argument${want === 1 ? '' : 's'}, got ${e.args.length}`);
    const args = e.args.map((a) => this.expr(a.value, ctx));
    if (name === 'where') {
      const [c, a, b] = args as [CExpr, CExpr, CExpr];
      if (c.kind !== 'bool') this.err(e.args[0]!.span, 'the first argument of where must be a condition such as x > 0');
      if (a.kind === 'bool' || b.kind === 'bool') this.err(e.span, 'where selects numbers, not conditions');
      return { k: 'select', cond: c, a, b, kind: a.kind === 'int' && b.kind === 'int' ? 'int' : 'float' };
    }
    if (name === 'pow') return this.binary('^', args[0]!, args[1]!, e.span);
    if (BINARY_BUILTINS.has(name)) return this.binary(name as BinaryFn, args[0]!, args[1]!, e.span);
    const a = args[0]!;
    if (a.kind === 'bool') this.err(e.span, `'${name}' needs a number, not a condition`);
    const keepsInt = name === 'abs' || name === 'floor' || name === 'ceil';
    const kind: VKind = name === 'floor' || name === 'ceil' ? 'int' : keepsInt ? a.kind : 'float';
    return { k: 'unary', op: name as UnaryFn, a, kind };
  }

  private reduce(e: Extract<A.Expr, { kind: 'reduce' }>, ctx: ExprCtx): CExpr {
    const bound: string[] = [];
    const constraintAst: A.Binder[] = [];
    for (const b of e.binders) {
      if (bound.includes(b.name)) {
        if (!b.cmp) this.err(b.span, `'${b.name}' is bound twice in this reduction`);
        constraintAst.push(b);
        continue;
      }
      if (ctx.idx.has(b.name)) this.err(b.span, `index '${b.name}' is already bound; choose another name`);
      this.checkIndexName(b.name, b.span);
      const extent = b.extent ? dimFromAst(b.extent, this.scope.hypers) : undefined;
      ctx.idx.set(b.name, { extent, origin: `the range of '${b.name}'` });
      bound.push(b.name);
      if (b.cmp) constraintAst.push(b);
    }
    try {
      const body = this.expr(e.body, ctx);
      if (body.kind === 'bool') this.err(e.body.span, `cannot ${e.op} conditions; use where(cond, 1.0, 0.0)`);
      const constraints: Constraint[] = constraintAst.map((b) => {
        const rhs = this.expr(b.cmp!.rhs, ctx);
        if (rhs.kind !== 'int') this.err(b.cmp!.rhs.span, 'a range bound must be an integer expression');
        if (b.cmp!.op === '==' || b.cmp!.op === '!=') this.err(b.span, 'a range constraint must use <, <=, > or >=');
        return { name: b.name, op: b.cmp!.op as Constraint['op'], rhs };
      });
      const vars: ReduceVar[] = bound.map((n) => {
        const info = ctx.idx.get(n)!;
        if (!info.extent) this.err(e.binders.find((b) => b.name === n)!.span, `cannot infer the range of '${n}'; use it directly as an index of a tensor or write '${n}: SIZE'`);
        return { name: n, extent: info.extent };
      });
      return { k: 'reduce', op: e.op, vars, constraints, body, kind: body.kind };
    } finally {
      for (const n of bound) ctx.idx.delete(n);
    }
  }

  // ---- calls ----

  private temp(dtype: A.DType, shape: Dim[]): string {
    const name = `%t${++this.tempCounter}`;
    return this.newVersion(name, dtype, shape, 'local');
  }

  /** Checks a call statement; returns the ids of the vars bound to its outputs. */
  private call(e: A.Expr & { kind: 'call' }, targets: { name: string; span: Span }[] | null, isLet: boolean, span: Span): string[] {
    const res = this.checker.resolveCallable(e.name, this.scope)!;
    let fn: CheckedFn | null;
    if ('layer' in res) fn = res.layer.forward;
    else {
      try {
        fn = this.checker.fn(res.decl, res.scope);
      } catch (err) {
        if (err instanceof CheckError) this.err(e.span, err.message);
        throw err;
      }
    }
    if (!fn) throw new Silent();
    const calleeName = e.name;
    // Match arguments to parameters.
    const given = new Map<number, A.Arg>();
    let pos = 0;
    for (const a of e.args) {
      let i: number;
      if (a.name !== undefined) {
        i = fn.params.findIndex((p) => p.name === a.name);
        if (i < 0) this.err(a.span, `'${calleeName}' has no parameter '${a.name}'`);
      } else {
        if (given.size > pos || pos >= fn.params.length) this.err(a.span, pos >= fn.params.length ? `'${calleeName}' takes ${fn.params.length} argument${fn.params.length === 1 ? '' : 's'}, got ${e.args.length}` : 'positional arguments must come before named ones');
        i = pos++;
      }
      if (given.has(i)) this.err(a.span, `parameter '${fn.params[i]!.name}' is given twice`);
      given.set(i, a);
    }
    const args: string[] = [];
    const bind = new Map<string, Dim>();
    for (const sa of e.sizeArgs) {
      if (!sa.name) this.err(sa.span, `size arguments are written ${calleeName}[NAME = size](...)`);
      if (!fn.sizes.includes(sa.name)) this.err(sa.span, `'${calleeName}' has no size '${sa.name}' (its sizes: ${fn.sizes.join(', ') || 'none'})`);
      bind.set(sa.name, this.dimExpr(sa.value));
    }
    fn.params.forEach((p, i) => {
      const a = given.get(i);
      if (!a) {
        if (p.default === undefined) this.err(e.span, `missing argument '${p.name}' of '${calleeName}'`);
        const id = this.temp(p.dtype, []);
        this.body.push({ k: 'compute', target: id, indices: [], value: { k: 'const', value: p.default, kind: kindOf(p.dtype) }, span: e.span });
        args.push(id);
        return;
      }
      args.push(this.argVar(a, p, calleeName));
    });
    // Bind size symbols: direct symbols first, then linear solves, then verify every dim.
    const argShapes = args.map((id) => this.vars.get(id)!.shape);
    fn.params.forEach((p, i) => {
      const got = argShapes[i]!;
      if (got.length !== p.shape.length) this.err(given.get(i)?.span ?? e.span, `argument '${p.name}' of '${calleeName}' must have ${p.shape.length} dimension${p.shape.length === 1 ? '' : 's'} ${shapeToString(p.shape)}, got ${shapeToString(got)}`);
    });
    const origin = new Map<string, string>();
    for (let changed = true; changed;) {
      changed = false;
      fn.params.forEach((p, i) => p.shape.forEach((pd, j) => {
        const sub = dsubst(pd, bind);
        const unknown = [...dimSymbols(sub)].filter((s) => fn!.sizes.includes(s) && !bind.has(s));
        if (unknown.length !== 1) return;
        const direct = isSimpleSym(sub);
        const solved = direct ? argShapes[i]![j]! : solveLinear(sub, argShapes[i]![j]!, unknown[0]!);
        if (solved) { bind.set(unknown[0]!, solved); origin.set(unknown[0]!, p.name); changed = true; }
      }));
    }
    fn.params.forEach((p, i) => p.shape.forEach((pd, j) => {
      const want = dsubst(pd, bind);
      const got = argShapes[i]![j]!;
      if (!deq(want, got) && !hasOpaque(want) && !hasOpaque(got) && [...dimSymbols(want)].every((s) => !fn!.sizes.includes(s) || bind.has(s))) {
        // Say where each of the callee's sizes got its value, so that equal names don't confuse.
        const from = [...dimSymbols(pd)].filter((x) => origin.has(x) && origin.get(x) !== p.name).map((x) => `${x} = ${dimToString(bind.get(x)!)} from argument '${origin.get(x)}'`);
        this.err(given.get(i)?.span ?? e.span, `argument '${p.name}' of '${calleeName}' must have shape ${shapeToString(p.shape)}${from.length ? ` with ${from.join(', ')}` : ` = ${shapeToString(p.shape.map((d) => dsubst(d, bind)))}`}, got ${shapeToString(argShapes[i]!)}`);
      }
    }));
    for (const s of fn.sizes) {
      if (!bind.has(s)) this.err(e.span, `cannot tell size '${s}' of '${calleeName}' from its arguments; pass it as ${calleeName}[${s} = ...](...)`);
    }
    // Bind outputs.
    const outs: string[] = [];
    if (targets) {
      if (targets.length !== fn.outputs.length) {
        this.err(span, `'${calleeName}' returns ${fn.outputs.length} output${fn.outputs.length === 1 ? '' : 's'} (${fn.outputs.map((o) => o.name).join(', ')}) but ${targets.length} ${targets.length === 1 ? 'target is' : 'targets are'} given`);
      }
      fn.outputs.forEach((o, i) => {
        const tgt = targets[i]!;
        const t = this.targetInfo(tgt.name, isLet, tgt.span);
        const shape = o.shape.map((d) => dsubst(d, bind));
        if (t.shape && (t.shape.length !== shape.length || !t.shape.every((d, j) => deq(d, shape[j]!)))) {
          this.err(tgt.span, `output '${tgt.name}' is declared ${shapeToString(t.shape)} but '${calleeName}' returns ${shapeToString(shape)}`);
        }
        if (t.dtype && kindOf(t.dtype) !== kindOf(o.dtype)) this.err(tgt.span, `output '${tgt.name}' is ${t.dtype} but '${calleeName}' returns ${o.dtype}`);
        outs.push(this.newVersion(tgt.name, t.dtype ?? o.dtype, t.shape ?? shape, t.isOutput ? 'output' : 'local'));
      });
    } else {
      if (fn.outputs.length !== 1) this.err(e.span, `'${calleeName}' returns ${fn.outputs.length} outputs; bind them with (a, b) = ${calleeName}(...) first`);
      const o = fn.outputs[0]!;
      outs.push(this.temp(o.dtype, o.shape.map((d) => dsubst(d, bind))));
    }
    const callee = 'layer' in res ? { kind: 'layer' as const, layer: res.layer } : { kind: 'fn' as const, fn };
    this.body.push({ k: 'call', callee, args, outs, sizes: bind, span });
    return outs;
  }

  /** An argument: a tensor name, a nested call, or a scalar expression for a 0-d parameter. */
  private argVar(a: A.Arg, p: CParam, calleeName: string): string {
    let id: string;
    const v = a.value;
    if (v.kind === 'name' && this.tensorVar(v.name, v.span)) {
      id = this.tensorVar(v.name, v.span)!.id;
    } else if (v.kind === 'call' && this.checker.resolveCallable(v.name, this.scope)) {
      id = this.call(v, null, false, v.span)[0]!;
    } else {
      if (p.shape.length > 0) {
        if (v.kind === 'name' && !this.scope.hypers.has(v.name) && !this.sizes.has(v.name)) this.err(v.span, `unknown tensor '${v.name}'`);
        this.err(v.span, `parameter '${p.name}' of '${calleeName}' is a tensor ${shapeToString(p.shape)}; pass a tensor name`);
      }
      const value = this.expr(v, { idx: new Map() });
      if (value.kind === 'bool') this.err(v.span, 'cannot pass a condition as a number');
      id = this.temp(p.dtype, []);
      this.body.push({ k: 'compute', target: id, indices: [], value, span: a.span });
    }
    const got = this.vars.get(id)!;
    if (kindOf(got.dtype) !== kindOf(p.dtype)) this.err(a.span, `argument '${p.name}' of '${calleeName}' must be ${p.dtype}, got ${got.dtype}`);
    return id;
  }

  /** A size argument: an integer expression over sizes and hyper parameters. */
  private dimExpr(e: A.Expr): Dim {
    switch (e.kind) {
      case 'num':
        if (!e.isInt) this.err(e.span, 'a size must be an integer');
        return dconst(e.value);
      case 'name': {
        if (this.sizes.has(e.name)) return dsym(e.name);
        const h = this.scope.hypers.get(e.name);
        if (typeof h === 'number') return dconst(h);
        this.err(e.span, `'${e.name}' is not a size or hyper parameter`);
      }
      // falls through
      case 'bin': {
        const a = this.dimExpr(e.left as A.Expr);
        const b = this.dimExpr(e.right as A.Expr);
        if (e.op === '+') return dadd(a, b);
        if (e.op === '-') return dsub(a, b);
        if (e.op === '*') return dmul(a, b);
        if (e.op === '/' || e.op === '//') return ddiv(a, b);
        this.err(e.span, `'${e.op}' is not allowed in a size`);
      }
      // falls through
      default:
        this.err(e.span, 'a size must be written with sizes, hyper parameters, integers and + - * /');
    }
  }
}

export function checkFiles(files: A.FileAst[]): CheckResult {
  const c = new Checker(files);
  return c.checkAll(files);
}
