// Executes a compiled plan on the CPU target: binds sizes from the inputs, allocates the
// outputs and one zeroed buffer per memory slot (compiler/memory.ts: intermediates whose lives
// do not meet share one), and runs its kernels in order through the kernel IR executor.
// Tensors the plan stores in half precision (plan.half) are Uint16Arrays of bits: inputs are
// rounded to them (nearest even, from the given numbers), outputs come back as f32 values.
import { devaluate } from '../dsl/dims.js';
import { bindSizes, RunError, shapeStr, type Value } from '../dsl/reference/interpreter.js';
import type { Plan } from '../compiler/plan.js';
import { planBuffers } from '../compiler/plan.js';
import { defaultReuse, planMemory } from '../compiler/memory.js';
import { runKernel } from '../targets/cpu/executor.js';
import { fromHalfArray, toHalfArray } from '../targets/half.js';

export interface HostTensor { shape: number[]; data: Float32Array | Int32Array }

const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

/** Sizes of a plan's function from its inputs; checks the kernels' specialised sizes. */
export function planSizes(plan: Plan, inputs: ReadonlyMap<string, { shape: number[] }>): Map<string, number> {
  for (const p of plan.fn.params) if (!inputs.has(p.name) && p.default === undefined) throw new RunError(`missing input '${p.name}' of '${plan.fn.name}' (expected ${p.dtype}${p.shape.length ? `[${p.shape.length} dims]` : ''})`);
  const shapes = new Map([...inputs].map(([k, v]) => [k, v.shape] as const));
  let sizes: Map<string, number>;
  try {
    sizes = bindSizes(plan.fn, shapes);
  } catch (e) {
    // A size that no input determines (a size parameter, such as msr's H) is one the kernels
    // were compiled for.
    if (!(e instanceof RunError) || !e.message.startsWith('cannot determine size')) throw e;
    sizes = bindSizes(plan.fn, shapes, plan.constants);
  }
  for (const [k, v] of plan.constants) {
    if (sizes.has(k) && sizes.get(k) !== v) throw new RunError(`the kernels were compiled for ${k} = ${v}, but the inputs have ${k} = ${sizes.get(k)}`);
  }
  return sizes;
}

export interface CpuRunOptions {
  /** Intermediates share memory slots by liveness (default on; RETNETC_MEMORY_REUSE=0 turns it off). */
  reuse?: boolean;
  /**
   * For tests: fill every slot whose first tenant does not need zeroed memory with this value
   * (NaN) before running, to show that no kernel reads what it did not write.
   */
  poison?: number;
}

export function runPlanCpu(plan: Plan, inputs: ReadonlyMap<string, Value>, opts: CpuRunOptions = {}): Map<string, HostTensor> {
  const sizes = planSizes(plan, inputs);
  const mem = planMemory(plan, sizes, { reuse: opts.reuse ?? defaultReuse() });
  const slots = mem.slots.map((s) => {
    const buf = new ArrayBuffer(Math.ceil(s.bytes / 4) * 4);
    if (opts.poison !== undefined && !s.zero) new Float32Array(buf).fill(opts.poison);
    return buf;
  });
  const arrays = new Map<string, Float32Array | Int32Array | Uint16Array>();
  const shapes = new Map<string, number[]>();
  for (const p of plan.fn.params) {
    const v = inputs.get(p.name) ?? { shape: [], data: Float64Array.of(p.default!) };
    const half = plan.half.get(p.v);
    const data = p.dtype === 'i32' || p.dtype === 'i64' ? Int32Array.from(v.data) : half ? toHalfArray(v.data, half) : Float32Array.from(v.data);
    arrays.set(p.v, data);
    shapes.set(p.v, p.shape.length === 0 ? [] : v.shape);
  }
  for (const cv of planBuffers(plan)) {
    const shape = cv.shape.map((d) => {
      const n = devaluate(d, sizes);
      if (n === undefined || !Number.isInteger(n) || n < 0) throw new RunError(`cannot size '${cv.name}'`);
      return n;
    });
    const n = numel(shape);
    const slot = mem.slotOf.get(cv.id);
    const buf = slot === undefined ? undefined : slots[slot]!;
    const int = cv.dtype === 'i32' || cv.dtype === 'i64';
    if (!buf) arrays.set(cv.id, int ? new Int32Array(n) : plan.half.has(cv.id) ? new Uint16Array(n) : new Float32Array(n));
    else arrays.set(cv.id, int ? new Int32Array(buf, 0, n) : plan.half.has(cv.id) ? new Uint16Array(buf, 0, n) : new Float32Array(buf, 0, n));
    shapes.set(cv.id, shape);
  }
  for (const l of plan.launches) {
    const buffers: Record<string, Float32Array | Int32Array | Uint16Array> = {};
    for (const [name, id] of Object.entries(l.buffers)) buffers[name] = arrays.get(id)!;
    const scalars: Record<string, number> = {};
    for (const [name, atom] of Object.entries(l.scalars)) scalars[name] = sizes.get(atom)!;
    runKernel(l.kernel, { buffers, scalars });
  }
  const out = new Map<string, HostTensor>();
  for (const o of plan.fn.outputs) {
    const data = arrays.get(o.v)!;
    const half = plan.half.get(o.v);
    out.set(o.name, { shape: shapes.get(o.v)!, data: data instanceof Uint16Array ? fromHalfArray(data, half!) : data });
  }
  return out;
}

export { shapeStr };
