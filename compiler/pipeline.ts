// The compiler driver: runs the stages (checked -> tensor IR -> analysis -> autodiff ->
// schedules -> kernel IR) for a function or a whole model, memoises what it built, and says
// which sizes the kernels specialise on. The CLI and the runtime call this, never the
// stages one by one.
import type { CheckedFn, CheckedModel } from '../dsl/checked.js';
import { type ModelProgram, splitModel } from './model-split.js';
import { type CompileOptions, compilePlan, type Plan, specialisedSizes } from './plan.js';
import { type Schedule, scheduleKey } from './schedule.js';
import type { StateSpec } from './stateful.js';

const planCache = new WeakMap<CheckedFn, Map<string, Plan>>();

const constKey = (c: ReadonlyMap<string, number> | undefined): string => JSON.stringify([...(c ?? [])].sort());

/** A function's plan for a schedule, built once per (function, schedule, options). */
export function compileFunction(fn: CheckedFn, schedule: Schedule, opts: CompileOptions = {}): Plan {
  let m = planCache.get(fn);
  if (!m) planCache.set(fn, (m = new Map()));
  const key = `${scheduleKey(schedule)}|${opts.backward ? 1 : 0}|${opts.stateful ? 1 : 0}|${constKey(opts.constants)}`;
  let p = m.get(key);
  if (!p) m.set(key, (p = compilePlan(fn, schedule, opts)));
  return p;
}

/** Sizes a function's kernels must be compiled for (given with --size K=64 on the CLI). */
export function sizesToSpecialise(fn: CheckedFn, backward = false): string[] {
  return specialisedSizes(fn, backward);
}

export interface ModelState {
  /** Full state name (`layers.0.msr.r`): the step's scope and the statement's state name. */
  name: string;
  step: number;
  spec: StateSpec;
}

export interface ModelPlan {
  program: ModelProgram;
  schedule: Schedule;
  stateful: boolean;
  /** One plan per distinct function of the program (a repeated layer: one plan, run L times). */
  plans: Plan[];
  /** Every state of the stateful form, in step order. */
  states: ModelState[];
}

const programCache = new WeakMap<CheckedModel, ModelProgram>();
const modelCache = new WeakMap<CheckedModel, Map<string, ModelPlan>>();

export function modelProgram(model: CheckedModel): ModelProgram {
  let p = programCache.get(model);
  if (!p) programCache.set(model, (p = splitModel(model)));
  return p;
}

/**
 * A model's forward (or its stateful form) compiled for a schedule. Hypers fix every size but
 * the batch and the positions, so nothing is left to specialise.
 */
export function compileModel(model: CheckedModel, schedule: Schedule, opts: { stateful?: boolean } = {}): ModelPlan {
  let m = modelCache.get(model);
  if (!m) modelCache.set(model, (m = new Map()));
  const key = `${scheduleKey(schedule)}|${opts.stateful ? 1 : 0}`;
  const hit = m.get(key);
  if (hit) return hit;
  const program = modelProgram(model);
  const plans = program.fns.map((fn) => compileFunction(fn, schedule, { stateful: !!opts.stateful }));
  const states: ModelState[] = [];
  program.steps.forEach((st, i) => {
    for (const spec of plans[st.fn]!.states) states.push({ name: `${st.scope ?? ''}${spec.name}`, step: i, spec });
  });
  const mp: ModelPlan = { program, schedule, stateful: !!opts.stateful, plans, states };
  m.set(key, mp);
  return mp;
}
