// Runs a compiled plan on the native CPU target: the plan's kernels printed as one C translation
// unit (targets/native/printer.ts, after the barrier split), compiled by the system C compiler
// and cached (targets/native/compile.ts), loaded by the addon (runtime/native/addon.ts), which
// runs each launch's workgroups on all cores. Inputs, outputs, sizes, memory slots and half
// storage are bound as runtime/plan-runner.ts runPlanCpu binds them, so the two give the same
// results (bit for bit where the kernels are the same operations: see tests/native.test.ts); a
// plan's runs at one set of shapes share one prepared launch list (launch-list.ts: slots pooled,
// launches checked and packed once, the whole list one addon call).
import type { Value } from '../../dsl/reference/interpreter.js';
import type { Kernel } from '../../compiler/kir.js';
import type { Plan } from '../../compiler/plan.js';
import { defaultReuse } from '../../compiler/memory.js';
import { evalKExpr } from '../kexpr-eval.js';
import type { HostTensor } from '../plan-runner.js';
import { compileNative, NativeCompileError } from '../../targets/native/compile.js';
import { type NativeEntry, printNative } from '../../targets/native/printer.js';
import { loadNativeAddon, type NativeAddon } from './addon.js';
import { NativeRunError, outOfBoundsMessage } from './errors.js';
import { launchListFor, type NativeProfile, runLaunchList } from './launch-list.js';

export { NativeRunError };

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
  if (err[0]) throw new NativeRunError(outOfBoundsMessage(k, e.entry, err));
}

/**
 * Time per kernel (by kernel name) of every launch runPlanNative makes while set: set it to a
 * Map to profile, to undefined to stop (tools and the speed test).
 */
export let profile: NativeProfile | undefined;
export function setNativeProfile(m: NativeProfile | undefined): void { profile = m; }

/**
 * Runs `plan` with `inputs`. The launch list of the plan at these input shapes (memory plan,
 * pooled slots, checked and packed launches: launch-list.ts) is built on the first run and reused;
 * the addon runs it in one call. Outputs are fresh arrays every run.
 */
export async function runPlanNative(plan: Plan, inputs: ReadonlyMap<string, Value>, opts: NativeRunOptions = {}): Promise<Map<string, HostTensor>> {
  const prep = await prepareNative(plan, opts.checks ?? defaultChecks());
  const list = launchListFor(plan, prep.entries, inputs, opts.reuse ?? defaultReuse());
  return runLaunchList(list, prep.addon, inputs, opts.poison, profile);
}

/** Compiles and runs single kernels (tests, tools): one translation unit per kernel, cached. */
export async function prepareKernels(kernels: readonly Kernel[], checks = defaultChecks()): Promise<Prepared> {
  const fake = { launches: kernels.map((kernel) => ({ kernel })) } as unknown as Plan;
  return prepareNative(fake, checks);
}
