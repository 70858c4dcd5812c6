// Executes a compiled plan on the CPU target: binds sizes from the inputs, allocates the
// outputs and one zeroed buffer per memory slot (compiler/memory.ts: intermediates whose lives
// do not meet share one), and runs its kernels in order through the kernel IR executor.
// Tensors the plan stores in half precision (plan.half) are Uint16Arrays of bits: inputs are
// rounded to them (nearest even, from the given numbers), outputs come back as f32 values.
import { bindSizes, RunError, shapeStr, type Value } from '../dsl/reference/interpreter.js';
import type { Plan } from '../compiler/plan.js';
import { defaultReuse, planMemory } from '../compiler/memory.js';
import { runKernel } from '../targets/cpu/executor.js';
import { bindHostTensors, type HostArray, hostOutput } from './bind.js';

export interface HostTensor { shape: number[]; data: Float32Array | Int32Array }

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
  const arrays = new Map<string, HostArray>();
  const shapes = new Map<string, number[]>();
  const bound = bindHostTensors(plan, inputs, sizes);
  for (const p of bound.params) {
    arrays.set(p.id, p.host);
    shapes.set(p.id, p.shape);
  }
  for (const t of bound.buffers) {
    const n = t.numel;
    const slot = mem.slotOf.get(t.id);
    const buf = slot === undefined ? undefined : slots[slot]!;
    if (!buf) arrays.set(t.id, t.int ? new Int32Array(n) : t.half ? new Uint16Array(n) : new Float32Array(n));
    else arrays.set(t.id, t.int ? new Int32Array(buf, 0, n) : t.half ? new Uint16Array(buf, 0, n) : new Float32Array(buf, 0, n));
    shapes.set(t.id, t.shape);
  }
  for (const l of plan.launches) {
    const buffers: Record<string, Float32Array | Int32Array | Uint16Array> = {};
    for (const [name, id] of Object.entries(l.buffers)) buffers[name] = arrays.get(id)!;
    const scalars: Record<string, number> = {};
    for (const [name, atom] of Object.entries(l.scalars)) scalars[name] = sizes.get(atom)!;
    runKernel(l.kernel, { buffers, scalars });
  }
  const out = new Map<string, HostTensor>();
  for (const o of plan.fn.outputs) out.set(o.name, { shape: shapes.get(o.v)!, data: hostOutput(arrays.get(o.v)!, plan.half.get(o.v)) });
  return out;
}

export { shapeStr };
