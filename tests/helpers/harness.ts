// Shared helpers for the schedule / gradient tests: deterministic random tensors (rounded to
// float32 so that the float64 reference and the float32 plans see identical inputs), the
// relative RMSE metric, the float64 references (the literal interpreter and literal gradient;
// the fast recurrent form for the family functions), compiled plans run on the CPU kernel-IR
// executor, and fast-check properties that cannot pass quietly (fcSeed, assertProperty).
import { loadProgram } from '../../dsl/program.js';
import type { CheckedFn } from '../../dsl/checked.js';
import { runFunction, type Value } from '../../dsl/reference/interpreter.js';
import { compilePlan, specialisedSizes, type Plan } from '../../compiler/plan.js';
import { makeSchedule, type Form } from '../../compiler/schedule.js';
import { toChecked, lowerFn } from '../../compiler/ir.js';
import { gradient, upstreamName } from '../../compiler/autodiff.js';
import { runPlanCpu } from '../../runtime/plan-runner.js';
import fc from 'fast-check';
import { fastRun, isFastFamily } from './fast-reference.js';

export type { Value };

const numel = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

/** mulberry32: a small, fast, seedable PRNG with uniform output in [0, 1). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A tensor whose elements come from `f` (index -> value), every element rounded to float32. */
export function tensor(shape: number[], f: (i: number) => number): Value {
  const data = new Float64Array(numel(shape));
  for (let i = 0; i < data.length; i++) data[i] = Math.fround(f(i));
  return { shape, data };
}

/** Uniform in [-1, 1), rounded to float32. */
export function uniform(shape: number[], rand: () => number): Value {
  return tensor(shape, () => rand() * 2 - 1);
}

export interface Err { rel: number; rmsDiff: number; rmsRef: number; maxAbs: number; at: number; nonFinite: number }

/** Relative RMSE RMS(a - b) / RMS(b); `rel` is RMS(a - b) itself when b is identically 0. */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): Err {
  if (a.length !== b.length) throw new Error(`length mismatch: ${a.length} vs ${b.length}`);
  let n = 0;
  let d = 0;
  let maxAbs = -1;
  let at = -1;
  let nonFinite = 0;
  for (let i = 0; i < b.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (!Number.isFinite(x)) nonFinite++;
    const e = x - y;
    n += e * e;
    d += y * y;
    const ae = Math.abs(e);
    if (!(ae <= maxAbs)) { maxAbs = ae; at = i; }
  }
  const len = Math.max(b.length, 1);
  const rmsDiff = Math.sqrt(n / len);
  const rmsRef = Math.sqrt(d / len);
  return { rel: rmsRef > 0 ? rmsDiff / rmsRef : rmsDiff, rmsDiff, rmsRef, maxAbs, at, nonFinite };
}

/**
 * The float32 conditioning of a float64 reference: how far its result moves when every input is
 * perturbed by one float32 rounding (relative 2^-24, random sign). An f32 implementation cannot
 * get closer to the reference than that, whatever its quality, so a bar below it is noise: e.g. a
 * RetNet's group norm at t = 0 sees o = (q.k) v and returns about sign(q.k) v / rms(v), which is
 * steep where q.k is near 0. Bars then read max(bar, factor * conditioning): the f32 plans land at
 * 0.5-2.5x of it; a wrong kernel still fails, since its error is not made of roundings.
 */
export function f32Conditioning(
  inputs: ReadonlyMap<string, Value>, ref: Float64Array | ArrayLike<number>, run: (perturbed: Map<string, Value>) => ArrayLike<number>, rand: () => number,
): number {
  const perturbed = new Map<string, Value>();
  for (const [name, v] of inputs) perturbed.set(name, { shape: v.shape, data: Float64Array.from(v.data, (x) => x * (1 + (rand() < 0.5 ? -1 : 1) * 2 ** -24)) });
  return relErr(run(perturbed), ref).rel;
}

/** Multi-index of a flat position, for messages. */
export function unflat(i: number, shape: readonly number[]): number[] {
  const out: number[] = [];
  for (let d = shape.length - 1; d >= 0; d--) { out.unshift(i % shape[d]!); i = Math.floor(i / shape[d]!); }
  return out;
}

const programs = new Map<string, ReturnType<typeof loadProgram>>();

/** A function of a model file (models/FILE.ret), checked without diagnostics. */
export function loadFn(file: string, name: string): CheckedFn {
  let p = programs.get(file);
  if (!p) {
    p = loadProgram(`models/${file}.ret`);
    if (p.diagnostics.length) throw new Error(`models/${file}.ret has diagnostics: ${p.diagnostics.map((d) => d.message).join('; ')}`);
    programs.set(file, p);
  }
  const fn = p.checked!.fns.get(name);
  if (!fn) throw new Error(`no fn '${name}' in models/${file}.ret`);
  return fn;
}

const literalGradients = new WeakMap<CheckedFn, CheckedFn>();

/** The literal float64 gradient function of `fn` (reverse-mode autodiff, no factorisation). */
export function literalGradient(fn: CheckedFn): CheckedFn {
  let g = literalGradients.get(fn);
  if (!g) literalGradients.set(fn, (g = toChecked(gradient(lowerFn(fn)))));
  return g;
}

/** Random upstream gradients `grad.OUT` for every output of `fn`, given the forward outputs. */
export function upstreams(fn: CheckedFn, outs: ReadonlyMap<string, Value>, rand: () => number): Map<string, Value> {
  const ups = new Map<string, Value>();
  for (const o of fn.outputs) ups.set(upstreamName(o.name), uniform(outs.get(o.name)!.shape, rand));
  return ups;
}

export interface Reference { outs: Map<string, Value>; ups: Map<string, Value>; grads: Map<string, Value> }

/** The float64 reference: forward outputs, random upstreams and the literal gradient. */
export function reference(fn: CheckedFn, inputs: ReadonlyMap<string, Value>, rand: () => number): Reference {
  const outs = runFunction(fn, inputs);
  const ups = upstreams(fn, outs, rand);
  const grads = runFunction(literalGradient(fn), new Map([...inputs, ...ups]));
  return { outs, ups, grads };
}

const plans = new Map<string, Plan>();

/** A plan for (fn, form, chunk, backward), specialised on the sizes the kernels need. */
export function plan(fn: CheckedFn, form: Form, chunk: number, backward: boolean, sizes: Readonly<Record<string, number>>): Plan {
  const constants = new Map<string, number>();
  for (const s of specialisedSizes(fn, backward)) {
    const v = sizes[s];
    if (v === undefined) throw new Error(`plan for '${fn.name}' needs size ${s}`);
    constants.set(s, v);
  }
  const key = `${fn.name}|${form}|${chunk}|${backward}|${[...constants].join(',')}`;
  let p = plans.get(key);
  if (!p) {
    if (plans.size > 512) plans.clear();
    plans.set(key, (p = compilePlan(fn, makeSchedule(form, chunk), { backward, constants })));
  }
  return p;
}

/** Runs a compiled plan on the CPU executor (float32); outputs by name. */
export function runPlan(p: Plan, inputs: ReadonlyMap<string, Value>): Map<string, { shape: number[]; data: Float32Array | Int32Array }> {
  return runPlanCpu(p, inputs);
}

/**
 * The seed for a test file's fast-check properties: FC_SEED from the environment when set (an
 * integer), else a fresh random one, so that CI does not replay the same cases forever. Logs one
 * line `[tag] fast-check seed N (reproduce with FC_SEED=N)`; call it once per file.
 */
export function fcSeed(tag: string): number {
  const s = process.env.FC_SEED;
  let seed: number;
  if (s === undefined || s === '') seed = (Math.random() * 2 ** 32) | 0;
  else {
    const n = Number(s);
    if (!Number.isInteger(n)) throw new Error(`FC_SEED must be an integer, got '${s}'`);
    seed = n | 0;
  }
  console.log(`[${tag}] fast-check seed ${seed} (reproduce with FC_SEED=${seed})${s ? ' from FC_SEED' : ''}`);
  return seed;
}

/** A property's seed from the file's seed and a name (FNV-1a): different functions get different cases. */
export function seedFor(seed: number, name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return (seed ^ h) | 0;
}

/** Scale for the number of runs: FC_RUNS_SCALE (default 1). */
export function runsScale(): number {
  const s = Number(process.env.FC_RUNS_SCALE ?? '1');
  return Number.isFinite(s) && s > 0 ? s : 1;
}

export interface PropertyOptions<T> {
  seed: number;
  /** Random cases, run after the examples. */
  randomRuns: number;
  /** Fixed cases, run first. */
  examples: readonly T[];
  /** Wall-clock limit of the whole property (runs and shrinking); reaching it is a failure. */
  timeLimitMs: number;
  /** Stop at the first failure without shrinking (for expensive cases). */
  endOnFailure?: boolean;
}

/**
 * Runs an async fast-check property that cannot pass quietly: every example and every random
 * case runs (fast-check counts examples within numRuns, so numRuns = examples + randomRuns),
 * running out of time is a failure (markInterruptAsFailure), and the number of runs the
 * property body actually made is asserted afterwards. Returns that number.
 */
export async function assertProperty<T>(arb: fc.Arbitrary<T>, body: (c: T) => Promise<void> | void, o: PropertyOptions<T>): Promise<number> {
  let runs = 0;
  const numRuns = o.examples.length + o.randomRuns;
  const property = fc.asyncProperty(arb, async (c) => {
    runs++;
    // Let vitest's worker talk to the main process between runs.
    await new Promise((resolve) => setImmediate(resolve));
    await body(c);
  });
  await fc.assert(property, {
    seed: o.seed, numRuns, examples: o.examples.map((e) => [e] as [T]),
    interruptAfterTimeLimit: o.timeLimitMs, markInterruptAsFailure: true, endOnFailure: o.endOnFailure ?? false, includeErrorInReport: true,
  });
  if (runs !== numRuns) throw new Error(`the property ran ${runs} cases, expected ${o.examples.length} examples + ${o.randomRuns} random = ${numRuns}`);
  return runs;
}

/**
 * The float64 reference of a family function of models/ by the fast recurrent form and reverse
 * scan (tests/helpers/fast-reference.ts, O(B H T K V), cross-checked against the literal
 * interpreter in tests/fast-reference.test.ts); upstreams drawn as `reference` draws them.
 */
export function fastReference(fn: CheckedFn, inputs: ReadonlyMap<string, Value>, rand: () => number): Reference {
  if (!isFastFamily(fn.name)) throw new Error(`no fast reference for '${fn.name}'`);
  const fwd = fastRun(fn.name, inputs);
  const ups = upstreams(fn, fwd.outs, rand);
  const { outs, grads } = fastRun(fn.name, inputs, ups);
  return { outs, ups, grads };
}
