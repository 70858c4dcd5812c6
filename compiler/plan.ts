// Compiling a function for a schedule: tensor IR -> (autodiff) -> analysis -> one or more
// kernels per statement, with the buffers each launch binds. The runtime executes plans.
import type { CheckedFn, CVar } from '../dsl/checked.js';
import { type Dim, dimSymbols } from '../dsl/dims.js';
import { analyse, type Contraction, explain } from './analysis.js';
import { gradient } from './autodiff.js';
import { decayGradHook, hoistDecayParams } from './decay-grad.js';
import { type IrFn, lowerFn } from './ir.js';
import type { Kernel } from './kir.js';
import { lowerChunkwise, lowerParallel, lowerRecurrent } from './lower/contraction.js';
import { ExprLowering, LowerError, sizeParam, type SizeEnv } from './lower/expr.js';
import { lowerElementwise } from './lower/generic.js';
import { canonicalise } from './rewrite.js';
import type { Schedule } from './schedule.js';

export class ScheduleError extends Error {}

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

export function compilePlan(fn: CheckedFn, schedule: Schedule, opts: { backward?: boolean; constants?: ReadonlyMap<string, number> } = {}): Plan {
  const base = opts.backward ? toGradientIr(fn) : toIr(fn);
  const { fn: ir, contractions } = analyse(base);
  if (schedule.form !== 'parallel') {
    const reasons = ir.body.filter((s) => !contractions.has(s.target)).map(explain).filter((r): r is string => r !== undefined);
    // A weight that does not factorise is the root cause; a running max usually comes with it.
    const why = reasons.find((r) => r.includes('does not factorise')) ?? reasons[0];
    if (why) throw new ScheduleError(`'${fn.name}' has no ${schedule.form} schedule: ${why}; only the parallel schedule exists for it`);
  }
  const constants = new Map(opts.constants ?? []);
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
      if (e instanceof LowerError) throw new ScheduleError(`${fn.name}: ${e.message}`);
      throw e;
    }
    const buffers: Record<string, string> = {};
    kernel.buffers = [...L.buffers].map(([id, b]) => { buffers[b.name] = id; return { name: b.name, type: b.type, access: b.written ? 'read_write' as const : 'read' as const }; });
    const scalars: Record<string, string> = {};
    kernel.scalars = [...sizes.runtime].sort().map((a) => { scalars[sizeParam(a)] = a; return { name: sizeParam(a), type: 'i32' as const }; });
    launches.push({ kernel, buffers, scalars, target: s.target, how: c ? 'contraction' : 'elementwise' });
  }
  return { fn: ir, schedule, launches, constants, contractions };
}

/** Variables a plan must allocate (everything it writes), with their shapes. */
export function planBuffers(plan: Plan): CVar[] {
  const written = new Set(plan.launches.map((l) => l.target));
  return [...plan.fn.vars.values()].filter((v) => written.has(v.id));
}

export type { Dim };
