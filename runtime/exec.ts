// One function to run a compiled plan on a named target (cpu, webgpu, cuda), for the model
// runner (runtime/model-runner.ts) and the commands that run whole models. WebGPU: one device,
// acquired on the first run and reused by every later one (release it with `release`).
// (runPlanCpu reads any numeric array as its parameter's dtype.) A later issue replaces this with the full target registry.
import type { CheckedModel } from '../dsl/checked.js';
import { compileModel } from '../compiler/pipeline.js';
import type { Plan } from '../compiler/plan.js';
import { DEFAULT_CHUNK, makeSchedule, type StorageDtype } from '../compiler/schedule.js';
import { type HostValue, type ModelState, type PlanExec, runModelPlan } from './model-runner.js';
import { runPlanCpu } from './plan-runner.js';
import type { Value } from '../dsl/reference/interpreter.js';

export const EXEC_TARGETS = ['cpu', 'native', 'webgpu', 'cuda'] as const;
export type ExecTarget = (typeof EXEC_TARGETS)[number];

export interface TargetExec {
  exec: PlanExec;
  /** Frees the target's device (WebGPU: the process-wide device); safe to call twice. */
  release: () => Promise<void>;
}

export interface PlanExecOptions {
  /** cuda: synchronise after every launch, so that a failing kernel is named. */
  syncEachLaunch?: boolean;
}

/** A PlanExec for `target`. Device problems reject with the runners' one-line errors. */
export function planExec(target: ExecTarget, opts: PlanExecOptions = {}): TargetExec {
  if (target === 'cpu') {
    return { exec: async (plan: Plan, inputs: Map<string, HostValue>) => runPlanCpu(plan, inputs as ReadonlyMap<string, Value>), release: async () => {} };
  }
  if (target === 'native') {
    return { exec: async (plan, inputs) => (await import('./native/runner.js')).runPlanNative(plan, inputs as ReadonlyMap<string, Value>), release: async () => {} };
  }
  if (target === 'webgpu') {
    let acquired: Promise<unknown> | undefined;
    return {
      exec: async (plan, inputs) => {
        const wg = await import('./webgpu/runner.js');
        acquired ??= wg.runtimeDevice();
        const device = (await acquired) as Awaited<ReturnType<typeof wg.runtimeDevice>>;
        return wg.runPlanWebGPU(plan, inputs, { device });
      },
      release: async () => {
        if (!acquired) return;
        acquired = undefined;
        await (await import('./webgpu/runner.js')).releaseRuntimeDevice();
      },
    };
  }
  if (target === 'cuda') {
    return {
      exec: async (plan, inputs) => {
        const cuda = await import('./cuda/runner.js');
        const why = cuda.cudaStatus();
        if (why) throw new cuda.CudaUnavailableError(why);
        return cuda.runPlanCuda(plan, inputs, opts.syncEachLaunch ? { syncEachLaunch: true } : {});
      },
      release: async () => {},
    };
  }
  throw new Error(`unknown target '${String(target)}' (expected ${EXEC_TARGETS.join(', ')})`);
}

/** One line for a device that is missing or failed (no adapter, no driver, a launch error), else undefined. */
export function deviceError(e: unknown): string | undefined {
  if (!(e instanceof Error)) return undefined;
  const names = ['WebGPUUnavailableError', 'WebGPURunError', 'CudaUnavailableError', 'CudaRunError', 'NvccError', 'NativeRunError', 'NativeUnavailableError'];
  return names.includes(e.name) || names.includes(e.constructor.name) ? e.message.split('\n')[0] : undefined;
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
  opts: { output?: string; dtype?: StorageDtype } = {},
): Promise<Map<string, HostValue>> {
  const dtype = opts.dtype ?? 'f32';
  if (mode !== 'recurrent') {
    const mp = compileModel(model, makeSchedule(mode, chunk, { dtype }));
    return (await runModelPlan(mp, weights, new Map([['tokens', tokens]]), exec)).outputs;
  }
  const mp = compileModel(model, makeSchedule('recurrent', DEFAULT_CHUNK, { dtype }), { stateful: true });
  const [B, T] = tokens.shape as [number, number];
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
