// Runs a model's backward (compiler/model-grad.ts) on any target: the forward step by step,
// keeping each step's inputs (the activations its backward takes; a backward plan recomputes
// inside the step whatever else it needs), then the steps in reverse. Each step's backward gets
// the step's inputs, its weights and the incoming gradients of its outputs, and returns the
// gradients of its inputs. The gradient of a model tensor read by several steps is the sum of
// theirs; the gradient of a weight bound by several steps (tied weights) is the sum too; integer
// inputs (tokens) get none. Weight gradients come back by full torchscale name, for every
// weight the model binds. Target-neutral: every plan runs through a PlanExec.
import { devaluate } from '../dsl/dims.js';
import { RunError } from '../dsl/reference/interpreter.js';
import { boundWeights } from '../compiler/model-split.js';
import { gradName, type ModelGrad, upstreamName } from '../compiler/model-grad.js';
import type { HostValue, PlanExec } from './model-runner.js';

const numel = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);

/**
 * Sums gradients in float64 by key. A gradient with one contribution is kept as the plan gave
 * it (f32 to f64 and back is exact, so the values are the same); the float64 sum starts at the
 * second (a tensor read twice, a tied weight). Plans' outputs are fresh arrays per run.
 */
class Accumulator {
  readonly m = new Map<string, { shape: number[]; data: HostValue['data']; sum: boolean }>();
  add(key: string, v: HostValue, what: string): void {
    const cur = this.m.get(key);
    if (!cur) { this.m.set(key, { shape: [...v.shape], data: v.data, sum: false }); return; }
    if (cur.data.length !== v.data.length) throw new RunError(`internal: gradient of ${what} has ${v.data.length} elements, an earlier one ${cur.data.length}`);
    if (!cur.sum) { cur.data = Float64Array.from(cur.data); cur.sum = true; }
    const d = cur.data;
    for (let i = 0; i < d.length; i++) d[i]! += v.data[i]!;
  }
  get(key: string): HostValue | undefined { const c = this.m.get(key); return c && { shape: c.shape, data: c.data }; }
}

export interface ModelBackwardResult {
  /** The forward's outputs (logits). */
  outputs: Map<string, HostValue>;
  /** dL/dW for every weight the model binds, by full name (layers.0.ffn.fc1.weight). */
  grads: Map<string, HostValue>;
}

/**
 * The forward over `inputs` and the gradients of every weight given `dOutputs`, the gradient of
 * the loss with respect to each model output by name (an output left out counts as zero), or a
 * function of the forward's outputs that returns them (a loss needs the logits: the trainer's
 * forward is then the backward's, not a second one).
 */
export async function runModelBackward(
  mg: ModelGrad,
  weights: ReadonlyMap<string, HostValue>,
  inputs: ReadonlyMap<string, HostValue>,
  dOutputsOf: ReadonlyMap<string, HostValue> | ((outputs: Map<string, HostValue>) => Promise<ReadonlyMap<string, HostValue>>),
  exec: PlanExec,
): Promise<ModelBackwardResult> {
  const prog = mg.program;
  const checkNames = (d: ReadonlyMap<string, HostValue>): void => {
    for (const name of d.keys()) {
      if (!prog.outputs.some((o) => o.name === name)) throw new RunError(`'${prog.model.name}' has no output '${name}' (its outputs: ${prog.outputs.map((o) => o.name).join(', ')})`);
    }
  };
  if (typeof dOutputsOf !== 'function') checkNames(dOutputsOf);
  // Forward, keeping every model tensor (each step's inputs are among them).
  const env = new Map<string, HostValue>();
  for (const p of prog.params) {
    const v = inputs.get(p.name);
    if (!v) throw new RunError(`missing input '${p.name}' of '${prog.model.name}'`);
    env.set(p.v, v);
  }
  const stepArgs: Map<string, HostValue>[] = [];
  for (const [i, st] of prog.steps.entries()) {
    const args = new Map<string, HostValue>();
    for (const [name, src] of st.inputs) {
      const v = src.kind === 'var' ? env.get(src.id) : weights.get(src.name);
      if (!v) throw new RunError(src.kind === 'var' ? `internal: '${src.id}' is not computed before step ${i}` : `missing weight '${src.name}'`);
      args.set(name, v);
    }
    stepArgs.push(args);
    const outs = await exec(mg.forward.plans[st.fn]!, args);
    for (const [name, id] of st.outputs) {
      const v = outs.get(name);
      if (!v) throw new RunError(`internal: step ${i} ('${prog.fns[st.fn]!.name}') returned no '${name}'`);
      env.set(id, v);
    }
  }
  const outputs = new Map(prog.outputs.map((o) => [o.name, env.get(o.v)!] as const));
  const dOutputs = typeof dOutputsOf === 'function' ? await dOutputsOf(outputs) : dOutputsOf;
  if (typeof dOutputsOf === 'function') checkNames(dOutputs);

  // Backward: incoming gradients of model tensors by id, weight gradients by full name.
  const dVars = new Accumulator();
  for (const o of prog.outputs) {
    const d = dOutputs.get(o.name);
    if (!d) continue;
    const y = env.get(o.v)!;
    if (d.data.length !== y.data.length || d.shape.length !== y.shape.length || d.shape.some((x, k) => x !== y.shape[k])) {
      throw new RunError(`gradient of output '${o.name}' has shape [${d.shape.join(', ')}], the output [${y.shape.join(', ')}]`);
    }
    dVars.add(o.v, d, `'${o.name}'`);
  }
  const dWeights = new Accumulator();
  for (let i = prog.steps.length - 1; i >= 0; i--) {
    const st = prog.steps[i]!;
    const fn = prog.fns[st.fn]!;
    const args = new Map(stepArgs[i]!);
    let any = false;
    for (const [name, id] of st.outputs) {
      const y = env.get(id)!;
      const d = dVars.get(id);
      if (d) any = true;
      args.set(upstreamName(name), d ?? { shape: y.shape, data: new Float32Array(y.data.length) });
    }
    // No gradient reaches this step's outputs: its inputs and weights get none from it.
    if (!any) continue;
    const outs = await exec(mg.plans[st.fn]!, args);
    for (const p of fn.params) {
      if (p.dtype === 'i32' || p.dtype === 'i64') continue;
      const src = st.inputs.get(p.name);
      if (!src) continue;
      const g = outs.get(gradName(p.name));
      if (!g) throw new RunError(`internal: the backward of '${fn.name}' returned no '${gradName(p.name)}'`);
      if (src.kind === 'var') dVars.add(src.id, g, `'${src.id}'`);
      else dWeights.add(src.name, g, `weight '${src.name}'`);
    }
  }

  // Every bound weight, zeros where no gradient reached it.
  const grads = new Map<string, HostValue>();
  for (const [name, { shape }] of boundWeights(prog)) {
    const g = dWeights.get(name);
    if (g) { grads.set(name, g); continue; }
    const w = weights.get(name);
    const dims = w?.shape ?? shape.map((d) => devaluate(d, new Map()) ?? 0);
    grads.set(name, { shape: [...dims], data: new Float64Array(numel(dims)) });
  }
  return { outputs, grads };
}
