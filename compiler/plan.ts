// Compiling a function for a schedule: tensor IR -> (autodiff) -> analysis -> one or more
// kernels per statement, with the buffers each launch binds. The runtime executes plans.
import type { CheckedFn, CVar } from '../dsl/checked.js';
import type { Span } from '../dsl/source.js';
import { type Dim, dimSymbols } from '../dsl/dims.js';
import { analyse, type Contraction, explain } from './analysis.js';
import { gradient, gradName } from './autodiff.js';
import { decayGradHook, hoistDecayParams } from './decay-grad.js';
import { type IrFn, lowerFn, type Node, usedVars, walk } from './ir.js';
import type { KHalf, Kernel, KStorage } from './kir.js';
import { lowerChunkwise, lowerParallel, lowerRecurrent } from './lower/contraction.js';
import { ExprLowering, LowerError, sizeParam, type SizeEnv } from './lower/expr.js';
import { lowerElementwise } from './lower/generic.js';
import { canonicalise } from './rewrite.js';
import type { Schedule } from './schedule.js';
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
  how: 'elementwise' | 'contraction';
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
  const { fn: ir, contractions } = analyse(withoutDeadStatements(base));
  if (schedule.form !== 'parallel') {
    const reasonsOf = (f: IrFn, cs: ReadonlyMap<string, Contraction>) => f.body.filter((s) => !cs.has(s.target)).map((s) => ({ s, r: explain(s) })).filter((x): x is { s: typeof x.s; r: string } => x.r !== undefined);
    // In a backward, the forward's statements first: their reasons read in the user's names.
    const fwd = opts.backward ? analyse(withoutDeadStatements(toIr(fn))) : undefined;
    const reasons = [...(fwd ? reasonsOf(fwd.fn, fwd.contractions) : []), ...reasonsOf(ir, contractions)];
    // A weight that does not factorise is the root cause; a running max usually comes with it.
    const why = reasons.find((x) => x.r.includes('does not factorise')) ?? reasons[0];
    if (why) throw new ScheduleError(`'${fn.name}' has no ${schedule.form} schedule: ${why.r}; only the parallel schedule exists for it`, why.s.span);
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
  const launches: Launch[] = [];
  let k = 0;
  for (const s of ir.body) {
    const sizes: SizeEnv = { constants, runtime: new Set() };
    const L = new ExprLowering(ir.vars, sizes);
    const c = contractions.get(s.target);
    const name = `${fn.name.replace(/[^A-Za-z0-9_]/g, '_')}${opts.backward ? '_bwd' : ''}_${k++}_${c ? schedule.form : 'map'}`;
    let kernel: Kernel;
    try {
      if (!c) kernel = lowerElementwise(name, s, L, schedule.workgroup.elementwise);
      else if (schedule.form === 'recurrent') kernel = lowerRecurrent(name, s, c, L, schedule);
      else if (schedule.form === 'chunkwise') kernel = lowerChunkwise(name, s, c, L, schedule);
      else kernel = lowerParallel(name, s, c, L, schedule);
    } catch (e) {
      if (e instanceof LowerError) throw new ScheduleError(`${fn.name}: ${e.message}`, s.span);
      throw e;
    }
    const buffers: Record<string, string> = {};
    kernel.buffers = [...L.buffers].map(([id, b]) => {
      buffers[b.name] = id;
      const h = b.type === 'f32' ? half.get(id) : undefined;
      return { name: b.name, type: b.type, access: b.written ? 'read_write' as const : 'read' as const, ...(h ? { storage: h } : {}) };
    });
    const scalars: Record<string, string> = {};
    kernel.scalars = [...sizes.runtime].sort().map((a) => { scalars[sizeParam(a)] = a; return { name: sizeParam(a), type: 'i32' as const }; });
    launches.push({ kernel, buffers, scalars, target: s.target, how: c ? 'contraction' : 'elementwise' });
  }
  return { fn: ir, schedule, launches, constants, contractions, half, states };
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
