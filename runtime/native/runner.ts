// Runs a compiled plan on the native CPU target: the plan's kernels printed as one C translation
// unit (targets/native/printer.ts, after the barrier split), compiled by the system C compiler
// and cached (targets/native/compile.ts), loaded by the addon (runtime/native/addon.ts), which
// runs each launch's workgroups on all cores. Inputs, outputs, sizes, memory slots and half
// storage are bound exactly as runtime/plan-runner.ts runPlanCpu binds them, so the two give the
// same results (bit for bit where the kernels are the same operations: see tests/native.test.ts).
import { devaluate } from '../../dsl/dims.js';
import { RunError, type Value } from '../../dsl/reference/interpreter.js';
import type { Kernel } from '../../compiler/kir.js';
import type { Plan } from '../../compiler/plan.js';
import { planBuffers } from '../../compiler/plan.js';
import { defaultReuse, planMemory } from '../../compiler/memory.js';
import { fromHalfArray, toHalfArray } from '../../targets/half.js';
import { evalKExpr } from '../kexpr-eval.js';
import { planSizes, type HostTensor } from '../plan-runner.js';
import { compileNative, NativeCompileError } from '../../targets/native/compile.js';
import { type NativeEntry, printNative } from '../../targets/native/printer.js';
import { loadNativeAddon, type NativeAddon } from './addon.js';

export class NativeRunError extends Error {}

export interface NativeRunOptions {
  /** Intermediates share memory slots by liveness (default on; RETNETC_MEMORY_REUSE=0 turns it off). */
  reuse?: boolean;
  /** Fill slots that need no zeroing with this value first (tests). */
  poison?: number;
  /** Bounds-check every load and store (default on; RETNETC_NATIVE_CHECKS=0 turns it off). */
  checks?: boolean;
}

interface Prepared { entries: Map<Kernel, { entry: NativeEntry; id: number }>; addon: NativeAddon; compileMs: number; cached: boolean }

const prepared = new WeakMap<Plan, Map<boolean, Promise<Prepared>>>();
const libraries = new Map<string, number>();

export const defaultChecks = (): boolean => process.env['RETNETC_NATIVE_CHECKS'] !== '0';

/** The addon, or a NativeRunError with the one-line reason. */
export function nativeAddon(): NativeAddon {
  const a = loadNativeAddon();
  if ('error' in a) throw new NativeRunError(a.error);
  return a.addon;
}

/** Prints, compiles (cached) and loads every kernel of `plan`; memoised per plan. */
export function prepareNative(plan: Plan, checks = defaultChecks()): Promise<Prepared> {
  let m = prepared.get(plan);
  if (!m) prepared.set(plan, (m = new Map()));
  let p = m.get(checks);
  if (!p) {
    p = (async () => {
      const kernels = [...new Set(plan.launches.map((l) => l.kernel))];
      const mod = printNative(kernels, { checks });
      let lib;
      try { lib = await compileNative(mod.code); } catch (e) { throw e instanceof NativeCompileError ? new NativeRunError(e.message) : e; }
      const addon = nativeAddon();
      let id = libraries.get(lib.file);
      if (id === undefined) libraries.set(lib.file, (id = addon.open(lib.file)));
      const entries = new Map(mod.entries.map((entry) => [entry.kernel, { entry, id: addon.symbol(id!, entry.symbol) }] as const));
      return { entries, addon, compileMs: lib.ms, cached: lib.cached };
    })();
    p.catch(() => m!.delete(checks));
    m.set(checks, p);
  }
  return p;
}

const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

type Arr = Float32Array | Int32Array | Uint16Array;

function overlaps(a: ArrayBufferView, b: ArrayBufferView): boolean {
  return a.buffer === b.buffer && a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength && a.byteLength > 0 && b.byteLength > 0;
}

/** Runs one kernel on the native target (buffers and scalars by the kernel's names, as runKernel takes them). */
export function runNativeKernel(p: Prepared, k: Kernel, args: { buffers: Record<string, Arr>; scalars: Record<string, number> }): void {
  const e = p.entries.get(k);
  if (!e) throw new Error(`internal error: kernel ${k.name} was not prepared`);
  const bufs: Arr[] = k.buffers.map((b) => {
    const a = args.buffers[b.name];
    const want = b.storage ? Uint16Array : b.type === 'f32' ? Float32Array : Int32Array;
    if (!(a instanceof want)) throw new NativeRunError(`kernel ${k.name}: buffer '${b.name}'${b.storage ? ` (${b.storage})` : ''} must be a ${want.name}, got ${a === undefined ? 'nothing' : a.constructor.name}`);
    return a;
  });
  // The printed kernel declares buffers `restrict`: a written buffer may not overlap another.
  k.buffers.forEach((b, i) => {
    if (b.access !== 'read_write') return;
    bufs.forEach((o, j) => { if (j !== i && overlaps(bufs[i]!, o)) throw new NativeRunError(`kernel ${k.name}: buffer '${b.name}' (written) overlaps buffer '${k.buffers[j]!.name}'`); });
  });
  const scalars = new Int32Array(Math.max(1, k.scalars.length));
  const f = new Float32Array(1), fi = new Int32Array(f.buffer);
  const values: Record<string, number> = {};
  k.scalars.forEach((s, i) => {
    const x = args.scalars[s.name];
    if (typeof x !== 'number') throw new NativeRunError(`kernel ${k.name}: scalar '${s.name}' missing`);
    if (s.type === 'i32' && (x | 0) !== x) throw new NativeRunError(`kernel ${k.name}: scalar '${s.name}' = ${x} is not an i32`);
    values[s.name] = x;
    if (s.type === 'f32') { f[0] = x; scalars[i] = fi[0]!; } else scalars[i] = x;
  });
  const grid = Int32Array.from(k.grid.map((g) => evalKExpr(g, values)));
  if (grid.some((g) => g < 0)) throw new NativeRunError(`kernel IR error in kernel ${k.name}: negative grid (${[...grid].join(', ')})`);
  const err = new Int32Array(8);
  p.addon.run(e.id, bufs, scalars, grid, e.entry.scratchBytes, err);
  if (err[0]) {
    const s = e.entry.sites[err[1]!]!;
    const [TX, TY] = k.workgroup;
    const t = err[7]!;
    const thread = t < 0 ? 'uniform code' : `thread (${t % TX},${Math.floor(t / TX) % TY},${Math.floor(t / (TX * TY))})`;
    throw new NativeRunError(`out-of-bounds ${s.op} in kernel ${k.name}: ${s.kind} '${s.array}' index ${err[2]}, length ${err[3]} (workgroup (${err[4]},${err[5]},${err[6]}), ${thread})`);
  }
}

/**
 * Time per kernel (by kernel name) of every launch runPlanNative makes while set: set it to a
 * Map to profile, to undefined to stop (tools and the speed test).
 */
export let profile: Map<string, { launches: number; ms: number }> | undefined;
export function setNativeProfile(m: Map<string, { launches: number; ms: number }> | undefined): void { profile = m; }

export async function runPlanNative(plan: Plan, inputs: ReadonlyMap<string, Value>, opts: NativeRunOptions = {}): Promise<Map<string, HostTensor>> {
  const prep = await prepareNative(plan, opts.checks ?? defaultChecks());
  const sizes = planSizes(plan, inputs);
  const mem = planMemory(plan, sizes, { reuse: opts.reuse ?? defaultReuse() });
  const slots = mem.slots.map((s) => {
    const buf = new ArrayBuffer(Math.ceil(s.bytes / 4) * 4);
    if (opts.poison !== undefined && !s.zero) new Float32Array(buf).fill(opts.poison);
    return buf;
  });
  const arrays = new Map<string, Arr>();
  const shapes = new Map<string, number[]>();
  const written = writtenParams(plan);
  for (const p of plan.fn.params) {
    const v = inputs.get(p.name) ?? { shape: [], data: Float64Array.of(p.default!) };
    const half = plan.half.get(p.v);
    // An input already in its storage type that no kernel writes is read in place (a copy of
    // q, k and v costs as much as a recurrent forward at T = 4096).
    const given: unknown = v.data;
    const mine = !written.has(p.v);
    const data = p.dtype === 'i32' || p.dtype === 'i64' ? (mine && given instanceof Int32Array ? given : Int32Array.from(v.data)) : half ? toHalfArray(v.data, half) : mine && given instanceof Float32Array ? given : Float32Array.from(v.data);
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
    const buffers: Record<string, Arr> = {};
    for (const [name, id] of Object.entries(l.buffers)) buffers[name] = arrays.get(id)!;
    const scalars: Record<string, number> = {};
    for (const [name, atom] of Object.entries(l.scalars)) scalars[name] = sizes.get(atom)!;
    if (profile) {
      const t0 = performance.now();
      runNativeKernel(prep, l.kernel, { buffers, scalars });
      const dt = performance.now() - t0;
      const r = profile.get(l.kernel.name) ?? { launches: 0, ms: 0 };
      r.launches++; r.ms += dt;
      profile.set(l.kernel.name, r);
    } else runNativeKernel(prep, l.kernel, { buffers, scalars });
  }
  const out = new Map<string, HostTensor>();
  for (const o of plan.fn.outputs) {
    const data = arrays.get(o.v)!;
    const half = plan.half.get(o.v);
    out.set(o.name, { shape: shapes.get(o.v)!, data: data instanceof Uint16Array ? fromHalfArray(data, half!) : data });
  }
  return out;
}

const writtenOf = new WeakMap<Plan, Set<string>>();
/** The plan tensors some kernel of `plan` writes (read_write buffers), and its outputs. */
function writtenParams(plan: Plan): Set<string> {
  let w = writtenOf.get(plan);
  if (!w) {
    w = new Set<string>();
    for (const l of plan.launches) for (const b of l.kernel.buffers) if (b.access === 'read_write' && l.buffers[b.name] !== undefined) w.add(l.buffers[b.name]!);
    for (const o of plan.fn.outputs) w.add(o.v); // an output is the caller's own array, never an input's
    writtenOf.set(plan, w);
  }
  return w;
}

/** Compiles and runs single kernels (tests, tools): one translation unit per kernel, cached. */
export async function prepareKernels(kernels: readonly Kernel[], checks = defaultChecks()): Promise<Prepared> {
  const fake = { launches: kernels.map((kernel) => ({ kernel })) } as unknown as Plan;
  return prepareNative(fake, checks);
}
