// The backward of a whole model: for every distinct function of its program (model parts and
// layer forwards, compiler/model-split.ts) the gradient plan derived by autodiff, one per
// function, so a layer repeated L times is one backward kernel set run L times in reverse with
// each instance's weights. The runtime (runtime/model-backward.ts) runs the forward, keeps each
// step's inputs, and runs these plans step by step in reverse, summing the gradients of model
// tensors read by several steps and of weights bound by several steps.
//
// A gradient plan's parameters are its function's parameters plus `grad.OUT` (autodiff's
// upstreamName) for each output; its outputs are `grad.P` (gradName) for every float
// parameter P: for a weight parameter, P is the weight's path relative to the step's scope.
// Each backward plan recomputes inside itself what it needs of its step's forward.
import type { CheckedModel } from '../dsl/checked.js';
import { gradName, upstreamName } from './autodiff.js';
import type { ModelProgram } from './model-split.js';
import { compileFunction, compileModel, type ModelPlan, modelProgram } from './pipeline.js';
import type { Plan } from './plan.js';
import { type Schedule, scheduleKey } from './schedule.js';

export interface ModelGrad {
  program: ModelProgram;
  schedule: Schedule;
  /** The forward (not stateful): run first, its step inputs are what the backward plans take. */
  forward: ModelPlan;
  /** One backward plan per distinct function of the program, indexed like program.fns. */
  plans: Plan[];
}

const cache = new WeakMap<CheckedModel, Map<string, ModelGrad>>();

/** A model's backward compiled for a schedule, built once per (model, schedule). */
export function compileModelGrad(model: CheckedModel, schedule: Schedule): ModelGrad {
  let m = cache.get(model);
  if (!m) cache.set(model, (m = new Map()));
  const key = scheduleKey(schedule);
  const hit = m.get(key);
  if (hit) return hit;
  const program = modelProgram(model);
  const forward = compileModel(model, schedule);
  const plans = program.fns.map((fn) => compileFunction(fn, schedule, { backward: true }));
  const mg: ModelGrad = { program, schedule, forward, plans };
  m.set(key, mg);
  return mg;
}

export { gradName, upstreamName };
