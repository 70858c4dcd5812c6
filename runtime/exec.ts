// Running a compiled plan on a named target, for the model runner (runtime/model-runner.ts) and
// the commands that run whole models. The targets themselves (runners, devices, availability)
// are registered in runtime/targets.ts; this layer keeps the names its callers use.
import type { CheckedModel } from '../dsl/checked.js';
import { compileModel } from '../compiler/pipeline.js';
import { DEFAULT_CHUNK, type DenseMode, makeSchedule, type StorageDtype } from '../compiler/schedule.js';
import { type HostValue, type ModelState, type PlanExec, runModelPlan } from './model-runner.js';
import { deviceError, EXEC_TARGETS, openTarget, type OpenOptions, type TargetExec } from './targets.js';

export { deviceError, EXEC_TARGETS, type TargetExec };
/** The name of an executing target (EXEC_TARGETS). */
export type ExecTarget = string;
export type PlanExecOptions = OpenOptions;

/** A PlanExec for `target` (WebGPU: one device, acquired on the first run; free it with `release`). */
export function planExec(target: ExecTarget, opts: PlanExecOptions = {}): TargetExec {
  return openTarget(target, opts);
}

// ---- a model's logits in one of the three modes ------------------------------------------------

export const MODES = ['parallel', 'chunkwise', 'recurrent'] as const;
export type Mode = (typeof MODES)[number];

/**
 * The model's forward over tokens [B, T] in a mode: parallel and chunkwise run the plain
 * forward with that schedule (chunk: chunkwise's chunk, parallel's tile); recurrent runs the
 * derived stateful form (recurrent schedule) one position at a time, threading the state.
 * Returns the model's outputs (logits [B, T, vocab] for retnet) and the compiled plans.
 */
export async function runModelMode(
  model: CheckedModel,
  weights: ReadonlyMap<string, HostValue>,
  tokens: HostValue,
  mode: Mode,
  exec: PlanExec,
  chunk: number = DEFAULT_CHUNK,
  opts: { output?: string; dtype?: StorageDtype; dense?: DenseMode } = {},
): Promise<Map<string, HostValue>> {
  const dtype = opts.dtype ?? 'f32';
  const dense = opts.dense ?? 'map';
  if (mode !== 'recurrent') {
    const mp = compileModel(model, makeSchedule(mode, chunk, { dtype, dense }));
    return (await runModelPlan(mp, weights, new Map([['tokens', tokens]]), exec)).outputs;
  }
  const mp = compileModel(model, makeSchedule('recurrent', DEFAULT_CHUNK, { dtype, dense }), { stateful: true });
  const [B, T] = tokens.shape as [number, number];
  // f32 once, not on each of the T steps (runners convert float64 weights on every run).
  if (dtype === 'f32') weights = new Map([...weights].map(([k, v]) => [k, v.data instanceof Float64Array ? { shape: v.shape, data: Float32Array.from(v.data) } : v] as const));
  let state: ModelState | undefined;
  const steps: Map<string, HostValue>[] = [];
  for (let t = 0; t < T; t++) {
    const step = new Int32Array(B);
    for (let b = 0; b < B; b++) step[b] = tokens.data[b * T + t]!;
    const r = await runModelPlan(mp, weights, new Map([['tokens', { shape: [B, 1], data: step }]]), exec, state);
    steps.push(r.outputs);
    state = r.state;
  }
  // Each output is [B, 1, ...] per step: concatenated along axis 1.
  const out = new Map<string, HostValue>();
  for (const name of steps[0]!.keys()) {
    const first = steps[0]!.get(name)!;
    if (first.shape.length < 2 || first.shape[0] !== B || first.shape[1] !== 1) throw new Error(`internal: output '${name}' [${first.shape.join(', ')}] of a recurrent step is not [B, 1, ...]`);
    const inner = first.shape.slice(2).reduce((a, b) => a * b, 1);
    const data = first.data instanceof Int32Array ? new Int32Array(B * T * inner) : new Float32Array(B * T * inner);
    steps.forEach((s, t) => {
      const d = s.get(name)!.data;
      for (let b = 0; b < B; b++) data.set(d.subarray(b * inner, (b + 1) * inner), (b * T + t) * inner);
    });
    out.set(name, { shape: [B, T, ...first.shape.slice(2)], data });
  }
  return out;
}
