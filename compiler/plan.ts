// Compiling a function for a schedule: tensor IR -> (autodiff) -> analysis -> one or more
// kernels per statement, with the buffers each launch binds. The runtime executes plans.
import type { CheckedFn, CVar } from '../dsl/checked.js';
import type { Span } from '../dsl/source.js';
import { type Dim, dimSymbols } from '../dsl/dims.js';
import { analyse, type Contraction, explain } from './analysis.js';
import { gradient, gradName } from './autodiff.js';
import { decayGradHook, hoistDecayParams } from './decay-grad.js';
import { type IrFn, type IrStmt, lowerFn, type Node, usedVars, walk } from './ir.js';
import type { KHalf, Kernel, KStorage } from './kir.js';
import { lowerChunkwise, lowerParallel, lowerRecurrent } from './lower/contraction.js';
import { chunkStateLayout, chunkStateShape, lowerChunkParallel } from './lower/chunk-parallel.js';
import { lowerChunkWalkCpu } from './lower/chunk-walk-cpu.js';
import { ExprLowering, LowerError, sizeParam, type SizeEnv } from './lower/expr.js';
import { lowerElementwise } from './lower/generic.js';
import { defaultTreeShape, lowerTreeReduce, treeShapeOf, treeSuits, treeSum } from './lower/reduce.js';
import { recogniseDense } from './dense.js';
import { fuseMaps } from './fuse-maps.js';
import { hoistInvariant } from './hoist-invariant.js';
import { cseKernel } from './kir-cse.js';
import { lowerScatter, lowerScatterZero, recogniseScatter } from './lower/scatter.js';
import { chooseDenseTile, DEFAULT_DENSE_TILE, denseTileOf, lowerDense } from './lower/dense.js';
import { chooseDenseCpuTile, lowerDenseCpu } from './lower/dense-cpu.js';
import { lowerDenseForMma } from './lower/dense-mma.js';
import { eliminateOneHot } from './onehot.js';
import { canonicalise } from './rewrite.js';
import { type Form, type Schedule, type StatementChoice, scheduleToJson, statementSchedule } from './schedule.js';
import { type StateSpec, statefulIr, StatefulError } from './stateful.js';

/** A schedule that cannot be had; `span` is the statement that causes it, when one does. */
export class ScheduleError extends Error {
  constructor(message: string, readonly span?: Span) { super(message); }
}

export interface Launch {
  kernel: Kernel;
  /** Kernel buffer name -> tensor variable id. */
  buffers: Record<string, string>;
  /** Kernel scalar name -> size atom. */
  scalars: Record<string, string>;
  /** The statement this launch computes, and how. */
  target: string;
  how: 'elementwise' | 'contraction' | 'dense' | 'reduce' | 'scatter';
  /** The schedule this statement was lowered with: the plan's default with the statement's choice (schedule.statements) put in. */
  schedule?: Schedule;
}

export interface Plan {
  fn: IrFn;
  schedule: Schedule;
  launches: Launch[];
  /** Sizes baked into the kernels. */
  constants: Map<string, number>;
  contractions: Map<string, Contraction>;
  /** Tensors stored in half precision (schedule.dtype), by id; every other one is f32 or i32. */
  half: Map<string, KHalf>;
  /** The stateful form's states (compiled with `stateful`), else empty. */
  states: StateSpec[];
}

/** How tensor `id` of a plan is stored. */
export function tensorStorage(plan: Pick<Plan, 'fn' | 'half'>, id: string): KStorage {
  const h = plan.half.get(id);
  if (h) return h;
  const dtype = plan.fn.vars.get(id)?.dtype ?? [...plan.fn.params, ...plan.fn.outputs].find((p) => p.v === id)?.dtype;
  return dtype === 'i32' || dtype === 'i64' ? 'i32' : 'f32';
}

/**
 * Tensors that stay f32 under half storage: decay tensors, those a contraction's decay terms
 * read and (transitively) those read by the statements computing them, since an error d in a
 * log-decay is an error (t - s) d in the weight (gamma = 0.99 rounded to f16 moves gamma^200
 * by 5%, to bf16 by 30%); and in a gradient function the tensors that serve only the gradients
 * of decay tensors (`decayGrads`, output ids): sums of O(T^2) terms that cancel and can pass
 * f16's largest value (65504). Parameters are never among the latter.
 */
export function f32Tensors(ir: IrFn, contractions: ReadonlyMap<string, Contraction>, decayGrads: ReadonlySet<string> = new Set()): Set<string> {
  const out = new Set<string>();
  const readBy = (n: Node): Set<string> => { const r = new Set<string>(); walk(n, (m) => { if (m.op === 'load') r.add(m.arg as string); }); return r; };
  const reads = new Map(ir.body.map((s) => [s.target, readBy(s.value)] as const));
  for (const c of contractions.values()) for (const t of c.decay) for (const x of readBy(t.kind === 'fixed' ? t.lambda : t.G)) out.add(x);
  for (let size = -1; size !== out.size;) {
    size = out.size;
    for (const s of ir.body) if (out.has(s.target)) for (const x of reads.get(s.target)!) out.add(x);
  }
  if (decayGrads.size) {
    // The outputs each tensor contributes to.
    const outputs = new Set(ir.outputs.map((o) => o.v));
    const feeds = new Map<string, Set<string>>();
    const feedsOf = (x: string): Set<string> => { let f = feeds.get(x); if (!f) feeds.set(x, (f = new Set(outputs.has(x) ? [x] : []))); return f; };
    for (let changed = true; changed;) {
      changed = false;
      for (const s of ir.body) for (const x of reads.get(s.target)!) {
        const f = feedsOf(x);
        const n = f.size;
        for (const o of feedsOf(s.target)) f.add(o);
        if (f.size !== n) changed = true;
      }
    }
    const params = new Set(ir.params.map((p) => p.v));
    for (const s of ir.body) {
      const f = feedsOf(s.target);
      if (!params.has(s.target) && f.size > 0 && [...f].every((o) => decayGrads.has(o))) out.add(s.target);
    }
  }
  return out;
}

/** The IR of a function, canonicalised (decays in the log domain). */
export function toIr(fn: CheckedFn): IrFn {
  const ir = lowerFn(fn);
  return { ...ir, body: ir.body.map((s) => ({ ...s, value: canonicalise(s.value) })) };
}

/** The gradient function, with decay gradients in their factorised form. */
export function toGradientIr(fn: CheckedFn): IrFn {
  const hoisted = hoistDecayParams(toIr(fn));
  const { fn: split, contractions } = analyse(hoisted);
  const g = gradient(split, decayGradHook(contractions));
  return { ...g, body: g.body.map((s) => ({ ...s, value: canonicalise(s.value) })) };
}

/** Sizes the kernels must know: the key and value sizes of every contraction. */
export function specialisedSizes(fn: CheckedFn, backward: boolean): string[] {
  const { contractions } = analyse(backward ? toGradientIr(fn) : toIr(fn));
  const out = new Set<string>();
  for (const c of contractions.values()) for (const d of [c.K, c.V]) for (const s of dimSymbols(d)) out.add(s);
  return [...out];
}

export interface CompileOptions {
  backward?: boolean;
  /** The derived stateful form (compiler/stateful.ts): block offset t0, initial and final states. */
  stateful?: boolean;
  constants?: ReadonlyMap<string, number>;
}

export function compilePlan(fn: CheckedFn, schedule: Schedule, opts: CompileOptions = {}): Plan {
  if (opts.backward && opts.stateful) throw new ScheduleError(`'${fn.name}': the stateful form has no backward here; train on the whole sequence`, fn.span);
  let states: StateSpec[] = [];
  let base = opts.backward ? toGradientIr(fn) : toIr(fn);
  if (opts.stateful) {
    try {
      ({ ir: base, states } = statefulIr(withoutDeadStatements(base)));
    } catch (e) {
      if (e instanceof StatefulError) throw new ScheduleError(e.message, fn.span);
      throw e;
    }
  }
  // A gather's one-hot gradient inverted to a map where it can be (compiler/onehot.ts).
  const analysed = analyse(eliminateOneHot(withoutDeadStatements(base)));
  const { contractions } = analysed;
  let ir = analysed.fn;
  const choose = statementChooser(fn, schedule, ir, contractions);
  {
    const reasonsOf = (f: IrFn, cs: ReadonlyMap<string, Contraction>, formOf: (s: IrStmt) => Form) => f.body.filter((s) => !cs.has(s.target) && formOf(s) !== 'parallel').map((s) => ({ s, r: explain(s), form: formOf(s) })).filter((x): x is { s: IrStmt; r: string; form: Form } => x.r !== undefined);
    // In a backward, the forward's statements first: their reasons read in the user's names.
    const fwd = opts.backward ? analyse(withoutDeadStatements(toIr(fn))) : undefined;
    const reasons = [...(fwd ? reasonsOf(fwd.fn, fwd.contractions, (s) => choose.forwardForm(s.target)) : []), ...reasonsOf(ir, contractions, (s) => choose.of(s).form)];
    // A weight that does not factorise is the root cause; a running max usually comes with it.
    const why = reasons.find((x) => x.r.includes('does not factorise')) ?? reasons[0];
    if (why) {
      if (why.form === schedule.form) throw new ScheduleError(`'${fn.name}' has no ${schedule.form} schedule: ${why.r}; only the parallel schedule exists for it`, why.s.span);
      throw new ScheduleError(`'${fn.name}': statement '${why.s.target}' has no ${why.form} form (its schedule choice): ${why.r}; only the parallel form exists for it`, why.s.span);
    }
  }
  const constants = new Map(opts.constants ?? []);
  const half = new Map<string, KHalf>();
  if (schedule.dtype !== 'f32') {
    const decay = f32Tensors(ir, contractions);
    // In a gradient: the outputs grad.P (autodiff's names) of decay parameters P.
    const decayGrads = new Set<string>();
    for (const p of opts.backward ? fn.params : []) {
      const g = decay.has(p.v) ? ir.outputs.find((o) => o.name === gradName(p.name)) : undefined;
      if (g) decayGrads.add(g.v);
    }
    const keep = decayGrads.size ? f32Tensors(ir, contractions, decayGrads) : decay;
    for (const cv of ir.vars.values()) if (cv.dtype !== 'i32' && cv.dtype !== 'i64' && !keep.has(cv.id)) half.set(cv.id, schedule.dtype);
  }
  // Single-use maps inlined into their consumers (compiler/fuse-maps.ts).
  ir = fuseMaps(ir, contractions, { keep: (s) => contractions.has(s.target) || recogniseDense(s, ir.vars) !== undefined, constants });
  // Loop-invariant expensive subexpressions as tables of their own, f32 (not in `half`): compiler/hoist-invariant.ts.
  ir = hoistInvariant(ir, { keep: (s) => contractions.has(s.target) || recogniseDense(s, ir.vars) !== undefined, constants, storage: (id) => half.get(id) ?? 'f32', symbolic: opts.stateful && schedule.form === 'recurrent' ? 1 : undefined }).fn;
  const launches: Launch[] = [];
  // The plan's tensors: the IR's, and temporaries some lowerings add (chunk states, f32).
  const vars = new Map(ir.vars);
  let k = 0;
  for (const s of ir.body) {
    const sizes: SizeEnv = { constants, runtime: new Set() };
    const L = new ExprLowering(vars, sizes);
    const c = contractions.get(s.target);
    const sched = statementSchedule(schedule, choose.of(s));
    // A dense sum is tiled when the schedule says so, by default or by the statement's tiles.
    const chosenTiles = choose.of(s)?.tiles;
    const blocked = sched.dense === 'blocked';
    const dense = c ? undefined : (sched.dense === 'tiled' || blocked || sched.dense === 'mma' || denseTileOf(chosenTiles, DEFAULT_DENSE_TILE)) ? recogniseDense(s, ir.vars) : undefined;
    const chunkParallel = c !== undefined && sched.form === 'chunkwise' && sched.chunkParallel === true;
    // A sum into few outputs as a tree reduction: always where the statement's choice says
    // 'tree', where the sizes suit it (treeSuits) where only the schedule's default says so.
    const treeShape = treeShapeOf(chosenTiles, defaultTreeShape(s, constants));
    const tree = !c && !dense && sched.reduce === 'tree' && (choose.of(s).reduce === 'tree' ? treeSum(s) !== undefined : treeSuits(s, constants, treeShape));
    // A gather's one-hot gradient as a scatter-add (compiler/lower/scatter.ts), f32 storage only.
    const scatter = !c && !dense && !tree && !half.has(s.target) ? recogniseScatter(s, ir.vars) : undefined;
    const name = `${fn.name.replace(/[^A-Za-z0-9_]/g, '_')}${opts.backward ? '_bwd' : ''}_${k++}_${c ? (chunkParallel ? 'chunkpar' : sched.form) : dense ? 'dense' : tree ? 'tree' : scatter ? 'scatter' : 'map'}`;
    // One statement, one or more kernels (in launch order), each with its lowering and the tensor it computes.
    let kernels: { kernel: Kernel; L: ExprLowering; target: string }[];
    try {
      if (chunkParallel) {
        // The chunk states live in a temporary plan tensor (compiler/lower/chunk-parallel.ts).
        const lay = chunkStateLayout(name, c, L, sched.chunk);
        const id = `${s.target}%chunks`;
        vars.set(id, { id, name: id, dtype: 'f32', shape: chunkStateShape(c, lay), role: 'local' });
        const mkL = () => new ExprLowering(vars, { constants, runtime: new Set() });
        const { kernels: ks, lowerings: [La, Lb, Lc] } = lowerChunkParallel(name, s, c, mkL, sched, id);
        kernels = [{ kernel: ks.states, L: La, target: id }, { kernel: ks.scan, L: Lb, target: id }, { kernel: ks.outputs, L: Lc, target: s.target }];
      } else if (dense && blocked) {
        kernels = [{ kernel: lowerDenseCpu(name, s, dense, L, chooseDenseCpuTile(dense, constants, chosenTiles, sched.lanes)), L, target: s.target }];
      } else if (dense && sched.dense === 'mma') {
        kernels = [{ kernel: lowerDenseForMma(name, s, dense, L, { dtype: sched.dtype, half, constants, ...(chosenTiles ? { tiles: chosenTiles } : {}) }), L, target: s.target }];
      } else if (dense) {
        const base = chooseDenseTile(dense, constants);
        kernels = [{ kernel: lowerDense(name, s, dense, L, denseTileOf(chosenTiles, base) ?? base), L, target: s.target }];
      } else if (tree) kernels = [{ kernel: lowerTreeReduce(name, s, L, treeShape), L, target: s.target }];
      else if (scatter) {
        // Columns are few (embed_dim): small workgroups spread them over more cores. Two summed
        // indices keep partial sums in a temporary tensor, zeroed by a first kernel.
        const wg = Math.min(sched.workgroup.elementwise, 16);
        if (scatter.vars.length === 2) {
          const id = `${s.target}%part`;
          vars.set(id, { id, name: id, dtype: 'f32', shape: s.indices.map((v) => v.extent), role: 'local' });
          const Lz = new ExprLowering(vars, { constants, runtime: new Set() }), Ls = new ExprLowering(vars, { constants, runtime: new Set() });
          kernels = [{ kernel: lowerScatterZero(`${name}_zero`, s, id, Lz, sched.workgroup.elementwise), L: Lz, target: id }, { kernel: lowerScatter(name, s, scatter, Ls, wg, id), L: Ls, target: s.target }];
        } else kernels = [{ kernel: lowerScatter(name, s, scatter, L, wg), L, target: s.target }];
      }
      else if (!c) kernels = [{ kernel: lowerElementwise(name, s, L, sched.workgroup.elementwise), L, target: s.target }];
      else if (sched.form === 'recurrent') kernels = [{ kernel: lowerRecurrent(name, s, c, L, sched), L, target: s.target }];
      // CPU-like targets (dense 'blocked'): the chunks of a sequence walked by one core, blocked (compiler/lower/chunk-walk-cpu.ts).
      else if (sched.form === 'chunkwise' && blocked) kernels = [{ kernel: lowerChunkWalkCpu(name, s, c, L, sched.chunk, sched.lanes), L, target: s.target }];
      else if (sched.form === 'chunkwise') kernels = [{ kernel: lowerChunkwise(name, s, c, L, sched), L, target: s.target }];
      else kernels = [{ kernel: lowerParallel(name, s, c, L, sched), L, target: s.target }];
    } catch (e) {
      if (e instanceof LowerError) throw new ScheduleError(`${fn.name}: ${e.message}`, s.span);
      throw e;
    }
    for (const { kernel, L: KL, target } of kernels) {
      const buffers: Record<string, string> = {};
      kernel.buffers = [...KL.buffers].map(([id, b]) => {
        buffers[b.name] = id;
        const h = b.type === 'f32' ? half.get(id) : undefined;
        return { name: b.name, type: b.type, access: b.written ? 'read_write' as const : 'read' as const, ...(h ? { storage: h } : {}) };
      });
      const scalars: Record<string, string> = {};
      kernel.scalars = [...KL.sizes.runtime].sort().map((a) => { scalars[sizeParam(a)] = a; return { name: sizeParam(a), type: 'i32' as const }; });
      // Repeated subexpressions of each statement bound to locals, for every target alike (compiler/kir-cse.ts).
      launches.push({ kernel: cseKernel(kernel), buffers, scalars, target, how: c ? 'contraction' : dense ? 'dense' : tree ? 'reduce' : scatter && target === s.target ? 'scatter' : 'elementwise', schedule: sched });
    }
  }
  return { fn: vars.size === ir.vars.size ? ir : { ...ir, vars }, schedule, launches, constants, contractions, half, states };
}

// ---- per-statement choices ------------------------------------------------------------------

type Kind = 'contraction' | 'quadratic' | 'map';
const kindOf = (s: IrStmt, cs: ReadonlyMap<string, Contraction>): Kind => (cs.has(s.target) ? 'contraction' : explain(s) !== undefined ? 'quadratic' : 'map');
/** A statement's name without the call-instance marks of inlined functions: 'msr#2.r' -> 'msr.r'. */
export const instanceFreeName = (target: string): string => target.replace(/#\d+/g, '');
const spanKey = (s: IrStmt): string | undefined => (s.span ? `${s.span.file}:${s.span.offset}:${s.span.length}` : undefined);

/**
 * The choice of `schedule.statements` that names `target` of function `fn`, with its key: the
 * key `fn/target` (a statement of that function only) before `target` (that statement in every
 * function of a program that has it), each also without instance marks ('msr.r' for 'msr#2.r').
 */
export function choiceFor(schedule: Schedule, target: string, fn?: string): [string, StatementChoice] | undefined {
  const st = schedule.statements;
  if (!st) return undefined;
  const k = instanceFreeName(target);
  const keys = [...(fn !== undefined ? [`${fn}/${target}`, `${fn}/${k}`] : []), target, k];
  for (const key of keys) if (Object.hasOwn(st, key)) return [key, st[key]!];
  return undefined;
}

/** The statements of a function that a schedule's per-statement choices name: its forward's, after analysis (as --emit ir prints them). */
export function forwardStatementNames(fn: CheckedFn): string[] {
  return analyse(toIr(fn)).fn.body.map((s) => s.target);
}

/** Keys of `schedule.statements` that name none of the statements (`names` by function: neither exactly nor without instance marks, with or without 'fn/'). */
export function unknownStatementKeys(schedule: Schedule, names: ReadonlyMap<string, Iterable<string>> | Iterable<string>): string[] {
  const known = new Set<string>();
  const byFn: [string | undefined, Iterable<string>][] = names instanceof Map ? [...names] : [[undefined, names as Iterable<string>]];
  for (const [fn, ns] of byFn) for (const n of ns) {
    for (const x of [n, instanceFreeName(n)]) { known.add(x); if (fn !== undefined) known.add(`${fn}/${x}`); }
  }
  return Object.keys(schedule.statements ?? {}).filter((k) => !known.has(k));
}

/**
 * The schedule with every forward statement's choice spelled out (what each is lowered with):
 * contractions their form, chunk (not for recurrent) and workgroup, other statements their
 * workgroup (and form parallel where a statement has only that form and its choice says so).
 * Choices that name no forward statement (a backward's gradient statements) are kept as given.
 * It compiles to the same kernels as `schedule`, and reads back with scheduleFromJson.
 */
export function spelledOutSchedule(schedule: Schedule, fns: readonly CheckedFn[]): Schedule {
  const statements: Record<string, StatementChoice> = {};
  const seen = new Set<string>();
  // In a program of several functions, keys name the function too ('retnet_layers/msr#2.r').
  const scoped = fns.length > 1;
  for (const fn of fns) {
    const { fn: f, contractions } = analyse(toIr(fn));
    for (const s of f.body) {
      const key = scoped ? `${fn.name}/${s.target}` : s.target;
      if (Object.hasOwn(statements, key)) continue;
      const kind = kindOf(s, contractions);
      const hit = choiceFor(schedule, s.target, fn.name);
      if (hit) seen.add(hit[0]);
      const e = statementSchedule(schedule, hit?.[1]);
      if (kind === 'contraction') statements[key] = { form: e.form, ...(e.form === 'recurrent' ? {} : { chunk: e.chunk }), ...(e.form === 'parallel' && e.tiles.cols !== e.chunk ? { tiles: { cols: e.tiles.cols } } : {}), workgroup: e.workgroup.contraction, ...(e.form === 'chunkwise' && !!e.chunkParallel !== !!schedule.chunkParallel ? { chunkParallel: !!e.chunkParallel } : {}) };
      else statements[key] = { ...(kind === 'quadratic' && hit?.[1].form === 'parallel' ? { form: 'parallel' as const } : {}), workgroup: e.workgroup.elementwise };
      if (hit?.[1].tiles && kind !== 'contraction') statements[key]!.tiles = hit[1].tiles;
      if (hit?.[1].reduce && kind !== 'contraction') statements[key]!.reduce = hit[1].reduce;
      if (hit?.[1].dense && kind !== 'contraction') statements[key]!.dense = hit[1].dense;
    }
  }
  for (const [k, c] of Object.entries(schedule.statements ?? {})) if (!seen.has(k) && !Object.hasOwn(statements, k)) statements[k] = c;
  return { ...scheduleToJson({ ...schedule, statements: {} }), statements };
}

/** An effective choice: the form is always set (the statement's, else the default). */
export type EffectiveChoice = StatementChoice & { form: Form };

interface Chooser {
  /** The choice a statement of the plan is lowered with. */
  of(s: IrStmt): EffectiveChoice;
  /** The form of a forward statement (by target). */
  forwardForm(target: string): Form;
}

/**
 * Which choice each statement of a plan takes. Choices name forward statements (or, in a
 * backward, gradient statements by their own names). A statement the backward or the stateful
 * form derives from a forward one takes that one's choice: the stateful block sum `X%block` X's,
 * a gradient statement the choice its forward statements of the same kind and source
 * statement (span) agree on. A choice a statement cannot have is a ScheduleError at it; an
 * inherited one keeps only the fields that apply.
 */
function statementChooser(fn: CheckedFn, schedule: Schedule, ir: IrFn, contractions: ReadonlyMap<string, Contraction>): Chooser {
  if (!schedule.statements || Object.keys(schedule.statements).length === 0) return { of: () => ({ form: schedule.form }), forwardForm: () => schedule.form };
  const fwd = analyse(toIr(fn));
  const fwdKind = new Map(fwd.fn.body.map((s) => [s.target, kindOf(s, fwd.contractions)] as const));
  const validate = (key: string, c: StatementChoice, kind: Kind, s: IrStmt): void => {
    const where = `'${fn.name}': statement '${key}'`;
    if (c.reduce === 'tree' && (kind === 'contraction' || !treeSum(s))) throw new ScheduleError(`${where} ${kind === 'contraction' ? 'is a causal contraction' : 'has no single f32 sum'}: reduce tree does not apply to it`, s.span);
    if (c.dense !== undefined && kind === 'contraction') throw new ScheduleError(`${where} is a causal contraction: dense ${c.dense} does not apply to it (dense sums are projections and weight gradients)`, s.span);
    if (kind === 'map') {
      // A map is the same kernel in every form (form parallel, what it is, may be said).
      if ((c.form !== undefined && c.form !== 'parallel') || c.chunk !== undefined) throw new ScheduleError(`${where} is elementwise (a map kernel, the same in every form): only workgroup applies to it, not ${c.chunk === undefined ? `form ${c.form}` : `chunk ${c.chunk}`}`, s.span);
    } else if (kind === 'quadratic') {
      if (c.form !== undefined && c.form !== 'parallel') throw new ScheduleError(`${where} has no ${c.form} form: ${explain(s)}; only the parallel form exists for it`, s.span);
      if (c.chunk !== undefined) throw new ScheduleError(`${where} is an elementwise kernel over all position pairs: chunk does not apply to it (only form parallel and workgroup)`, s.span);
    } else if ((c.form ?? schedule.form) === 'recurrent' && c.chunk !== undefined) {
      throw new ScheduleError(`${where}: chunk ${c.chunk} does not apply to the recurrent form (it steps one position at a time); give form chunkwise or parallel with it`, s.span);
    }
  };
  for (const s of fwd.fn.body) {
    const hit = choiceFor(schedule, s.target, fn.name);
    if (hit) validate(hit[0], hit[1], fwdKind.get(s.target)!, s);
  }
  const sameKind = (a: Kind, b: Kind): boolean => (a === 'contraction') === (b === 'contraction');
  // Forward statements by source statement and kind, for what gradient statements inherit.
  const bySpan = new Map<string, IrStmt[]>();
  for (const s of fwd.fn.body) {
    const k = spanKey(s);
    if (k) bySpan.set(k, [...(bySpan.get(k) ?? []), s]);
  }
  const applicable = (c: StatementChoice | undefined, kind: Kind): EffectiveChoice => {
    const out: EffectiveChoice = { form: schedule.form };
    if (!c) return out;
    if (c.workgroup !== undefined) out.workgroup = c.workgroup;
    if (c.tiles !== undefined) out.tiles = c.tiles;
    if (c.reduce !== undefined && kind !== 'contraction') out.reduce = c.reduce;
    if (c.dense !== undefined && kind !== 'contraction') out.dense = c.dense;
    if (kind === 'contraction') {
      if (c.form !== undefined) out.form = c.form;
      if (c.chunk !== undefined && out.form !== 'recurrent') out.chunk = c.chunk;
      if (c.chunkParallel !== undefined) out.chunkParallel = c.chunkParallel;
    } else if (kind === 'quadratic' && c.form === 'parallel') out.form = 'parallel';
    return out;
  };
  const memo = new Map<IrStmt, EffectiveChoice>();
  const of = (s: IrStmt): EffectiveChoice => {
    const hit = memo.get(s);
    if (hit) return hit;
    const kind = kindOf(s, contractions);
    const base = s.target.endsWith('%block') ? s.target.slice(0, -'%block'.length) : s.target;
    let c: StatementChoice | undefined;
    if (fwdKind.has(base)) {
      // A forward statement (or its stateful block sum); one whose kind changed (the stateful carry) takes the default.
      if (sameKind(fwdKind.get(base)!, kind)) c = choiceFor(schedule, base, fn.name)?.[1];
    } else {
      const direct = choiceFor(schedule, s.target, fn.name);
      if (direct) {
        validate(direct[0], direct[1], kind, s);
        c = direct[1];
      } else {
        const k = spanKey(s);
        const from = (k ? bySpan.get(k) ?? [] : []).filter((f) => sameKind(fwdKind.get(f.target)!, kind));
        const choices = new Set(from.map((f) => JSON.stringify(choiceFor(schedule, f.target, fn.name)?.[1] ?? null)));
        if (from.length && choices.size === 1) c = choiceFor(schedule, from[0]!.target, fn.name)?.[1];
      }
    }
    const e = applicable(c, kind);
    memo.set(s, e);
    return e;
  };
  return { of, forwardForm: (t) => choiceFor(schedule, t, fn.name)?.[1].form ?? schedule.form };
}

/**
 * Drops statements whose results nothing reads (a gradient need not recompute forward outputs
 * its formulas do not use, such as `o` when only the factorised decay gradient reads y1).
 */
export function withoutDeadStatements(f: IrFn): IrFn {
  const live = new Set(f.outputs.map((o) => o.v));
  const kept: IrFn['body'] = [];
  for (let i = f.body.length - 1; i >= 0; i--) {
    const s = f.body[i]!;
    if (!live.has(s.target)) continue;
    kept.push(s);
    for (const v of usedVars([s])) live.add(v);
  }
  return { ...f, body: kept.reverse() };
}

/** Variables a plan must allocate (everything it writes), with their shapes. */
export function planBuffers(plan: Plan): CVar[] {
  const written = new Set(plan.launches.map((l) => l.target));
  return [...plan.fn.vars.values()].filter((v) => written.has(v.id));
}

export type { Dim };
