// Runs a compiled model (compiler/pipeline.ts) on any target: each step binds its function's
// parameters to model tensors or weights by name and runs that function's plan; a repeated
// layer runs the same plan once per instance with that instance's weights. The stateful form
// threads every layer's state and the block offset t0 through, so a prompt can be prefilled
// with any schedule and decoding continues one token at a time.
import { devaluate, dimToString } from '../dsl/dims.js';
import { bindSizes, RunError } from '../dsl/reference/interpreter.js';
import type { ModelPlan } from '../compiler/pipeline.js';
import type { Plan } from '../compiler/plan.js';
import { boundWeights, type ModelProgram } from '../compiler/model-split.js';
import { T0 } from '../compiler/stateful.js';

export interface HostValue { shape: number[]; data: Float64Array | Float32Array | Int32Array }

/** Runs one plan on a target: inputs and outputs by parameter name. */
export type PlanExec = (plan: Plan, inputs: Map<string, HostValue>) => Promise<Map<string, HostValue>>;

/** The state after a block: the next position and every state tensor by full name. */
export interface ModelState { t0: number; tensors: Map<string, HostValue> }

const numel = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);

/**
 * Checks weights against what the model binds: one line naming the first missing, misshaped or
 * extra tensor and both shapes. `ignore` names tensors a file may also hold (tokens, logits.*).
 */
export function checkWeights(program: ModelProgram, weights: ReadonlyMap<string, { shape: number[] }>, ignore: (name: string) => boolean = () => false): void {
  const want = boundWeights(program);
  const decl = new Map(program.model.weights.map((w) => [w.name, w.shape] as const));
  for (const [name, { shape }] of want) {
    const expect = shape.map((d) => devaluate(d, new Map()));
    const got = weights.get(name);
    if (!got) throw new RunError(`missing weight '${name}' (expected [${expect.join(', ')}])`);
    if (got.shape.length !== expect.length || got.shape.some((x, i) => x !== expect[i])) {
      throw new RunError(`weight '${name}' has shape [${got.shape.join(', ')}], but the model expects [${expect.map((x, i) => x ?? dimToString(shape[i]!)).join(', ')}]`);
    }
  }
  for (const [name, t] of weights) {
    if (want.has(name) || ignore(name)) continue;
    const d = decl.get(name);
    throw new RunError(d ? `weight '${name}' [${t.shape.join(', ')}] is not used by this configuration of '${program.model.name}' (an option that needs it is off)` : `unexpected tensor '${name}' [${t.shape.join(', ')}]: '${program.model.name}' has no such weight`);
  }
}

const sizesOf = new WeakMap<ModelPlan, { shapes: Map<string, readonly number[]>; sizes: Map<string, number> }>();
/** The model's sizes from its inputs' shapes; the last answer is kept (a decode step asks for the same each token). */
function modelSizes(mp: ModelPlan, inputs: ReadonlyMap<string, HostValue>): Map<string, number> {
  const last = sizesOf.get(mp);
  if (last && last.shapes.size === inputs.size && [...inputs].every(([k, v]) => { const s = last.shapes.get(k); return s !== undefined && s.length === v.shape.length && s.every((x, i) => x === v.shape[i]); })) return last.sizes;
  const shapes = new Map([...inputs].map(([k, v]) => [k, [...v.shape]] as const));
  const sizes = bindSizes(mp.program.model.forward, shapes);
  sizesOf.set(mp, { shapes, sizes });
  return sizes;
}

/** Zero states for a batch of B sequences. */
export function zeroState(mp: ModelPlan, sizes: ReadonlyMap<string, number>): ModelState {
  const tensors = new Map<string, HostValue>();
  for (const st of mp.states) {
    const shape = st.spec.shape.map((d) => {
      const n = devaluate(d, sizes);
      if (n === undefined) throw new RunError(`cannot size state '${st.name}' ${'['}${st.spec.shape.map(dimToString).join(', ')}]`);
      return n;
    });
    tensors.set(st.name, { shape, data: new Float32Array(numel(shape)) });
  }
  return { t0: 0, tensors };
}

/**
 * Runs the model's forward over `inputs` (tokens). With a stateful plan it continues from
 * `state` (zeros at position 0 when absent) and returns the state after the block.
 */
export async function runModelPlan(
  mp: ModelPlan,
  weights: ReadonlyMap<string, HostValue>,
  inputs: ReadonlyMap<string, HostValue>,
  exec: PlanExec,
  state?: ModelState,
): Promise<{ outputs: Map<string, HostValue>; state?: ModelState }> {
  const prog = mp.program;
  const sizes = modelSizes(mp, inputs);
  const env = new Map<string, HostValue>();
  for (const p of prog.params) {
    const v = inputs.get(p.name);
    if (!v) throw new RunError(`missing input '${p.name}' of '${prog.model.name}'`);
    env.set(p.v, v);
  }
  const cur = mp.stateful ? state ?? zeroState(mp, sizes) : undefined;
  const next = new Map<string, HostValue>();
  for (const [i, st] of prog.steps.entries()) {
    const plan = mp.plans[st.fn]!;
    const args = new Map<string, HostValue>();
    for (const [name, src] of st.inputs) {
      const v = src.kind === 'var' ? env.get(src.id) : weights.get(src.name);
      if (!v) throw new RunError(src.kind === 'var' ? `internal: '${src.id}' is not computed before step ${i}` : `missing weight '${src.name}'`);
      args.set(name, v);
    }
    if (cur && plan.fn.params.some((p) => p.name === T0)) args.set(T0, { shape: [], data: Int32Array.of(cur.t0) });
    const mine = mp.states.filter((s) => s.step === i);
    for (const s of mine) args.set(s.spec.input, cur!.tensors.get(s.name)!);
    const outs = await exec(plan, args);
    for (const [name, id] of st.outputs) env.set(id, outs.get(name)!);
    for (const s of mine) next.set(s.name, outs.get(s.spec.output)!);
  }
  const outputs = new Map(prog.outputs.map((o) => [o.name, env.get(o.v)!] as const));
  if (!cur) return { outputs };
  const T = sizes.get('T');
  if (T === undefined) throw new RunError(`'${prog.model.name}' has no size T: cannot advance the stateful form`);
  return { outputs, state: { t0: cur.t0 + T, tensors: next } };
}
