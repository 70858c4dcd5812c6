// The functions of models/train.ret (loss, gradient norm, AdamW), loaded once from this package
// (the sources or the built dist/, as the packaged RetNet is) and compiled once per shape.
// None of them has a contraction or a dense sum; given a target name, the plans take that
// target's schedule defaults all the same (runtime/targets.ts), so a default the registry adds
// later (tree reductions) reaches them.
import type { CheckedFn } from '../../dsl/checked.js';
import { loadProgram, type Program } from '../../dsl/program.js';
import { RunError } from '../../dsl/reference/interpreter.js';
import { compileFunction, sizesToSpecialise } from '../../compiler/pipeline.js';
import type { Plan } from '../../compiler/plan.js';
import { makeSchedule } from '../../compiler/schedule.js';
import { packagedModelFile } from '../io/torchscale.js';
import { withTargetDefaults } from '../targets.js';

export type TrainFnName = 'cross_entropy' | 'cross_entropy_loss' | 'sumsq' | 'adamw' | 'adamw_step';

let program: Program | undefined;

/** The checked models/train.ret of this package. */
export function trainProgram(): Program {
  if (!program) {
    const p = loadProgram(packagedModelFile('train.ret'));
    if (p.diagnostics.length) throw new RunError(`models/train.ret does not check: ${p.diagnostics[0]!.message}`);
    program = p;
  }
  return program;
}

export function trainFn(name: TrainFnName): CheckedFn {
  const fn = trainProgram().checked!.fns.get(name);
  if (!fn) throw new RunError(`models/train.ret has no function '${name}'`);
  return fn;
}

/**
 * The plan of a train.ret function (memoised by compileFunction). `sizes` binds every size the
 * kernels are specialised on, and the size parameters (sumsq's P and S); `target`: the target
 * whose schedule defaults apply (none: the plain parallel schedule).
 */
export function trainPlan(name: TrainFnName, sizes: ReadonlyMap<string, number> = new Map(), target?: string): Plan {
  const fn = trainFn(name);
  const constants = new Map<string, number>();
  for (const s of [...sizesToSpecialise(fn), ...(sizeParams.get(name) ?? [])]) {
    const n = sizes.get(s);
    if (n === undefined) throw new RunError(`internal: '${name}' needs size ${s}`);
    constants.set(s, n);
  }
  const base = makeSchedule('parallel');
  return compileFunction(fn, target ? withTargetDefaults(base, target) : base, { constants });
}

const sizeParams = new Map<TrainFnName, string[]>([['sumsq', ['P', 'S']], ['adamw_step', ['P', 'S']]]);

/** sumsq's blocks for N values: P partial sums of S values, P ~ S ~ sqrt(N), P * S >= N. */
export function sumsqBlocks(n: number): { P: number; S: number } {
  const P = Math.max(1, Math.ceil(Math.sqrt(n)));
  return { P, S: Math.max(1, Math.ceil(n / P)) };
}
