// The binding of host tensors to a plan's tensors, shared by the runners (cpu: plan-runner.ts,
// webgpu, cuda; native does the same in runtime/native/runner.ts): each parameter's host array
// in its storage type (i32 for i32/i64, the half bits for tensors the plan stores as f16/bf16,
// else f32; a scalar without an input takes its default), the shape of every tensor the plan
// computes, and an output's host array back as f32/i32. Each runner then allocates and
// uploads these arrays its own way (typed arrays, memory slots, GPU buffers).
import type { KHalf } from '../compiler/kir.js';
import { type Plan, planBuffers } from '../compiler/plan.js';
import { devaluate } from '../dsl/dims.js';
import { RunError } from '../dsl/reference/interpreter.js';
import { fromHalfArray, toHalfArray } from '../targets/half.js';

export type HostArray = Float32Array | Int32Array | Uint16Array;

/** A host tensor given to a plan: any array of numbers with a shape (Value, HostTensor, ...). */
export interface HostInput { shape: readonly number[]; data: ArrayLike<number> }

export interface BoundTensor {
  /** The tensor variable id (what launches bind). */
  id: string;
  name: string;
  dtype: string;
  shape: number[];
  numel: number;
  /** i32 storage (dtype i32 or i64). */
  int: boolean;
  /** Stored in half precision (plan.half). */
  half?: KHalf;
}

export interface BoundParam extends BoundTensor {
  /** Exactly `numel` elements (1 for a scalar) in the storage type: Int32Array, the half bits, or Float32Array. */
  host: HostArray;
}

export interface HostBinding {
  params: BoundParam[];
  /** The tensors the plan computes (planBuffers), sized. */
  buffers: BoundTensor[];
}

const numel = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);
const isInt = (dtype: string): boolean => dtype === 'i32' || dtype === 'i64';

/** The first n values (a view where it can be). */
function head(d: ArrayLike<number>, n: number): ArrayLike<number> {
  if (d.length === n) return d;
  const sub = (d as { subarray?: (a: number, b: number) => ArrayLike<number> }).subarray;
  return sub ? sub.call(d, 0, n) : Array.prototype.slice.call(d, 0, n);
}

export interface BindOptions {
  /** Refuse an input with more values than its shape has (default: only fewer is an error). */
  exact?: boolean;
}

/** Each parameter's host array, converted to its storage type. Throws RunError for an input with too few values. */
export function bindParams(plan: Plan, inputs: ReadonlyMap<string, HostInput>, opts: BindOptions = {}): BoundParam[] {
  return plan.fn.params.map((p) => {
    const v = inputs.get(p.name) ?? { shape: [], data: [p.default!] };
    const scalar = p.shape.length === 0;
    const shape = scalar ? [] : [...v.shape];
    const n = scalar ? 1 : numel(shape);
    if (scalar ? v.data.length < 1 : opts.exact ? v.data.length !== n : v.data.length < n) {
      throw new RunError(`input '${p.name}' has ${v.data.length} values but shape [${v.shape.join(', ')}] needs ${n}`);
    }
    const int = isInt(p.dtype);
    const half = int ? undefined : plan.half.get(p.v);
    const d = head(v.data, n);
    let host: HostArray;
    if (half) host = toHalfArray(d, half, n);
    else (host = int ? new Int32Array(n) : new Float32Array(n)).set(d);
    return { id: p.v, name: p.name, dtype: p.dtype, shape, numel: n, int, ...(half ? { half } : {}), host };
  });
}

/** The shapes of the tensors a plan computes, at the bound sizes. Throws RunError where a shape does not evaluate. */
export function bindBuffers(plan: Plan, sizes: ReadonlyMap<string, number>): BoundTensor[] {
  return planBuffers(plan).map((cv) => {
    const shape = cv.shape.map((d) => {
      const n = devaluate(d, sizes);
      if (n === undefined || !Number.isInteger(n) || n < 0) throw new RunError(`cannot size '${cv.name}' of '${plan.fn.name}'`);
      return n;
    });
    const int = isInt(cv.dtype);
    const half = int ? undefined : plan.half.get(cv.id);
    return { id: cv.id, name: cv.name, dtype: cv.dtype, shape, numel: numel(shape), int, ...(half ? { half } : {}) };
  });
}

/** Parameters' host arrays and computed tensors' shapes (sizes: planSizes(plan, inputs)). */
export function bindHostTensors(plan: Plan, inputs: ReadonlyMap<string, HostInput>, sizes: ReadonlyMap<string, number>, opts: BindOptions = {}): HostBinding {
  return { params: bindParams(plan, inputs, opts), buffers: bindBuffers(plan, sizes) };
}

/** An output's host array as the caller sees it: f32 values for half bits (the first n), else the array itself. */
export function hostOutput(data: HostArray, half: KHalf | undefined, n?: number): Float32Array | Int32Array {
  if (data instanceof Uint16Array) {
    if (!half) throw new Error('internal: half bits without a half type');
    return fromHalfArray(data, half, n ?? data.length);
  }
  return data;
}
