// The target registry: every target retnetc knows, written once. The CLI (option values, usage
// lines, `run`/`logits`/`compile --target`, `retnetc targets`), the exec layer (runtime/exec.ts)
// and the bench read their lists from here.
//
// A target has a name and does one or both of two things:
//   - it **runs** plans here (cpu, native, webgpu, cuda): a runner that takes a Plan and host
//     tensors, the one-line availability check (no adapter, no driver, no C compiler), how it
//     releases its device, and the error classes whose first line is a device problem;
//   - it **prints** kernels as source (cuda, wgsl): the printer of targets/emit.ts (file
//     extension, emit function) and the limit profiles its kernels are checked against.
// A runner that executes printed code names its printer (`code`) and its compiler.
//
// Layering: printers are registered in targets/emit.ts (PRINTERS), which imports no runtime;
// this file, in the runtime, adds what needs the runtime (runners, devices, limits) and refers
// to the printers by name. The runtimes of native, webgpu and cuda load only when used.
// A new target is its folder (printer under targets/, runner under runtime/) plus one entry here.
import * as os from 'node:os';
import * as path from 'node:path';
import type { Plan } from '../compiler/plan.js';
import { type DenseMode, type Form, makeSchedule, type ReduceMode, type Schedule, type StorageDtype } from '../compiler/schedule.js';
import type { Value } from '../dsl/reference/interpreter.js';
import { PRINTERS, type Printer } from '../targets/emit.js';
import { hostLanes } from '../targets/native/compile.js';
import type { TargetName } from '../targets/emitted.js';
import type { HostValue, PlanExec } from './model-runner.js';
import { runPlanCpu } from './plan-runner.js';
import { type KernelLimits, LIMIT_PROFILES } from './webgpu/limits.js';

export type LimitProfile = keyof typeof LIMIT_PROFILES;

/** Whether a target can be used on this machine: a short detail, or the one-line reason why not. */
export type Availability = { ok: true; detail: string } | { ok: false; reason: string };

export interface TargetExec {
  exec: PlanExec;
  /** Frees the target's device (WebGPU: the process-wide device); safe to call twice. */
  release: () => Promise<void>;
}

export interface OpenOptions {
  /** cuda: synchronise after every launch, so that a failing kernel is named. */
  syncEachLaunch?: boolean;
}

export interface Runner {
  /** One line: what runs the kernels. */
  about: string;
  /** The printer whose code it runs (absent: it executes kernel IR itself). */
  code?: TargetName;
  /** What compiles that code, if anything. */
  compiler?: string;
  /** Storage dtypes it cannot hold, with why (one line). */
  noDtype?: Partial<Record<StorageDtype, string>>;
  /** Error classes (by name) whose first line is a device problem, not a bug. */
  errors: readonly string[];
  /** Rough speed rank (smaller is faster), for the bench's default order. */
  rank: number;
  /**
   * Schedule defaults for plans this target runs, where the user gave none (native: dense sums as
   * tiled products, 4-7x faster there than one thread per output; the JS executor keeps 'map';
   * cuda: sums into few outputs as tree reductions, which on 2-core CPUs (native, lavapipe)
   * measured no faster than the serial sums and on lavapipe 3x slower: bench/tree-reduce.ts);
   * native: chunkwise contractions as one blocked walk over a sequence's chunks per core
   * (compiler/lower/chunk-walk-cpu.ts, chosen by dense 'blocked' without chunkParallel; it needs
   * no chunk-state tensor; chunkParallel: true gives the three phases parallel over chunks,
   * chunk-cpu.ts, for more cores than batch entries), and the whole key axis of a state per thread (tiles.state: a CPU keeps it in memory anyway,
   * and key slices split a column over work-items that then cannot share a vector).
   * `chunk`: the chunkwise form's chunk where the schedule's is the default (Schedule.chunkDefault;
   * an explicit chunk is kept): webgpu 16, where lavapipe ran chunk 64 1.4-1.9x slower than
   * chunk 16 (bench/chunkwise-webgpu.ts); native 32: chunkwise costs C(K+V) + 2KV multiply-adds
   * per position against recurrent's 2KV, so at K = V = 64 chunk 64 does twice recurrent's work
   * and ran no faster than it on one core, chunk 32 1.3x faster (bench/chunkwise-native.ts).
   * `lanes`: Schedule.lanes for the machine it runs on (native: the host compiler's vector width).
   */
  schedule?: { dense?: DenseMode; reduce?: ReduceMode; chunkParallel?: boolean; stateTile?: number; chunk?: number; lanes?: () => number };
  available(): Promise<Availability>;
  open(opts?: OpenOptions): TargetExec;
}

export interface PrintSpec {
  printer: Printer;
  /** The executing target that runs what it prints: `compile` takes that target's schedule defaults. */
  runsOn?: string;
  /** Limit profiles its kernels are checked against; the first is the default, the last the roomiest. */
  limits: readonly LimitProfile[];
  /** Storage dtypes its language does not have, with why. */
  noDtype?: Partial<Record<StorageDtype, string>>;
}

export interface Target {
  name: string;
  run?: Runner;
  print?: PrintSpec;
}

const firstLine = (e: unknown): string => (e instanceof Error ? e.message : String(e)).split('\n')[0]!;
const NO_BF16_IN_WGSL = 'WGSL has no bf16';

// ---- availability helpers --------------------------------------------------------------------

/** "gcc 12.2.0" from a compiler's first --version line. */
function compilerName(command: string, version: string): string {
  const v = /(\d+\.\d+(?:\.\d+)?)(?!.*\d+\.\d+)/.exec(version)?.[1];
  const name = /clang/i.test(version) ? 'clang' : /gcc|GCC|Free Software/.test(version) || /^(cc|gcc)/.test(path.basename(command)) ? 'gcc' : path.basename(command);
  return v ? `${name} ${v}` : name;
}

const cores = (): number => (typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length);

async function nativeAvailable(): Promise<Availability> {
  const { findCompiler, NO_COMPILER } = await import('../targets/native/compile.js');
  const cc = findCompiler();
  if (!cc) return { ok: false, reason: NO_COMPILER };
  const a = (await import('./native/addon.js')).loadNativeAddon();
  if ('error' in a) return { ok: false, reason: a.error };
  const n = cores();
  return { ok: true, detail: `${compilerName(cc.command, cc.version)}, ${n} core${n === 1 ? '' : 's'}, ${hostLanes()}-lane f32 vectors` };
}

async function webgpuAvailable(): Promise<Availability> {
  const wg = await import('./webgpu/runner.js');
  try {
    const a = await wg.runtimeDevice();
    return { ok: true, detail: a.info.summary };
  } catch (e) {
    return { ok: false, reason: firstLine(e) };
  } finally {
    await wg.releaseRuntimeDevice();
  }
}

async function cudaAvailable(): Promise<Availability> {
  const cuda = await import('./cuda/runner.js');
  const why = cuda.cudaStatus();
  if (why) return { ok: false, reason: why };
  const c = cuda.cudaContext();
  return { ok: true, detail: `${c.device.name}, ${c.target.format} for ${c.target.arch}, nvcc ${c.nvcc.version}` };
}

// ---- the registry ------------------------------------------------------------------------------

const cpu: Target = {
  name: 'cpu',
  run: {
    about: 'the JavaScript executor of kernel IR (targets/cpu), the reference semantics',
    errors: [], rank: 3,
    available: async () => ({ ok: true, detail: `JavaScript executor of kernel IR, Node ${process.versions.node}` }),
    open: () => ({ exec: async (plan: Plan, inputs: Map<string, HostValue>) => runPlanCpu(plan, inputs as ReadonlyMap<string, Value>), release: async () => {} }),
  },
};

const native: Target = {
  name: 'native',
  run: {
    about: 'C printed from kernel IR (targets/native), work-item loops, workgroups over all cores',
    compiler: 'the system C compiler (cc, gcc or clang; $RETNETC_CC)',
    errors: ['NativeRunError', 'NativeUnavailableError'], rank: 0,
    schedule: { dense: 'blocked', stateTile: 1024, chunk: 32, lanes: () => hostLanes() },
    available: nativeAvailable,
    open: () => ({ exec: async (plan, inputs) => (await import('./native/runner.js')).runPlanNative(plan, inputs as ReadonlyMap<string, Value>), release: async () => {} }),
  },
};

const webgpu: Target = {
  name: 'webgpu',
  run: {
    about: 'WGSL kernels on a WebGPU device (Dawn in Node, navigator.gpu in a browser)',
    code: 'wgsl', compiler: 'the WebGPU implementation (Dawn / Tint)',
    noDtype: { bf16: NO_BF16_IN_WGSL },
    errors: ['WebGPUUnavailableError', 'WebGPURunError'], rank: 2,
    schedule: { chunk: 16 },
    available: webgpuAvailable,
    open: () => {
      // One device, acquired on the first run and reused by every later one.
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
    },
  },
};

const cuda: Target = {
  name: 'cuda',
  run: {
    about: 'CUDA C++ kernels on an NVIDIA GPU, loaded through the driver (libcuda.so.1)',
    code: 'cuda', compiler: 'nvcc (cubin for the device, else PTX)',
    errors: ['CudaUnavailableError', 'CudaRunError', 'NvccError'], rank: 1,
    schedule: { reduce: 'tree' },
    available: cudaAvailable,
    open: (opts = {}) => ({
      exec: async (plan, inputs) => {
        const c = await import('./cuda/runner.js');
        const why = c.cudaStatus();
        if (why) throw new c.CudaUnavailableError(why);
        return c.runPlanCuda(plan, inputs, opts.syncEachLaunch ? { syncEachLaunch: true } : {});
      },
      release: async () => {},
    }),
  },
  print: { printer: PRINTERS.cuda, limits: ['sm_80', 'sm_90'], runsOn: 'cuda' },
};

const wgsl: Target = {
  name: 'wgsl',
  print: { printer: PRINTERS.wgsl, limits: ['default', 'lavapipe'], noDtype: { bf16: NO_BF16_IN_WGSL }, runsOn: 'webgpu' },
};

const c: Target = {
  name: 'c',
  print: { printer: PRINTERS.c, limits: ['cpu'], runsOn: 'native' },
};

/** Every target, in the order they are listed. */
export const TARGETS: readonly Target[] = [cpu, native, webgpu, wgsl, cuda, c];

/** Targets that run plans here (`run`, `logits`, the exec layer, the bench). */
export const EXEC_TARGETS: readonly string[] = TARGETS.filter((t) => t.run).map((t) => t.name);
/** Targets that print kernels (`compile --target`). */
export const PRINT_TARGETS: readonly string[] = TARGETS.filter((t) => t.print).map((t) => t.name);

export const targetNamed = (name: string): Target | undefined => TARGETS.find((t) => t.name === name);

/** The runner of an executing target, or an error naming those there are. */
export function runnerOf(name: string): Runner {
  const r = targetNamed(name)?.run;
  if (!r) throw new Error(`unknown target '${name}' (expected ${EXEC_TARGETS.join(', ')})`);
  return r;
}

/** `schedule` with the target's defaults for what it leaves unset ('map' and chunkParallel false, the record's defaults, count as unset). */
export function withTargetDefaults(schedule: Schedule, target: string): Schedule {
  const d = targetNamed(target)?.run?.schedule;
  let out = schedule;
  if (d?.dense && schedule.dense === undefined) out = { ...out, dense: d.dense };
  if (d?.reduce && schedule.reduce === undefined) out = { ...out, reduce: d.reduce };
  if (d?.chunkParallel && !schedule.chunkParallel) out = { ...out, chunkParallel: true };
  if (d?.stateTile && schedule.tiles.state === undefined) out = { ...out, tiles: { ...out.tiles, state: d.stateTile } };
  if (d?.lanes && schedule.lanes === undefined) out = { ...out, lanes: d.lanes() };
  if (schedule.chunkDefault) {
    // The parallel form's key tile follows the chunk where it was the chunk (makeSchedule's default).
    const { chunkDefault: _, ...rest } = out;
    out = d?.chunk && schedule.form === 'chunkwise' ? { ...rest, chunk: d.chunk, tiles: { ...rest.tiles, cols: rest.tiles.cols === rest.chunk ? d.chunk : rest.tiles.cols } } : rest;
  }
  return out;
}

/**
 * The chunk a command uses on `target` when the user gives none: what withTargetDefaults makes
 * of the default chunk (the target's own for the chunkwise form, else DEFAULT_CHUNK).
 */
export function targetChunk(target: string | undefined, form: Form): number {
  const s = makeSchedule(form);
  return target === undefined ? s.chunk : withTargetDefaults(s, target).chunk;
}

/** The print spec of a printing target (its name is a TargetName of targets/emitted.ts). */
export function printSpecOf(name: string): PrintSpec {
  const p = targetNamed(name)?.print;
  if (!p) throw new Error(`unknown target '${name}' (expected ${PRINT_TARGETS.join(', ')})`);
  return p;
}

/** A PlanExec for an executing target. Device problems reject with the runners' one-line errors. */
export const openTarget = (name: string, opts: OpenOptions = {}): TargetExec => runnerOf(name).open(opts);

/** The limits of a named profile. */
export const limitProfile = (p: LimitProfile): KernelLimits => LIMIT_PROFILES[p];

/**
 * Why a target cannot hold a storage dtype (one line: "--dtype bf16 does not apply to --target
 * webgpu: WGSL has no bf16 (use --dtype f16 or f32 there; bf16 runs on cpu, native and cuda)"),
 * or undefined when it can. `as`: the target as a runner or as a printer.
 */
export function dtypeProblem(name: string, dtype: StorageDtype, as: 'run' | 'print', all: readonly StorageDtype[]): string | undefined {
  const why = (as === 'run' ? targetNamed(name)?.run?.noDtype : targetNamed(name)?.print?.noDtype)?.[dtype];
  if (!why) return undefined;
  const spec = (t: Target) => (as === 'run' ? t.run : t.print);
  const others = TARGETS.filter((t) => spec(t) && !spec(t)!.noDtype?.[dtype]).map((t) => t.name);
  const ok = all.filter((d) => !spec(targetNamed(name)!)!.noDtype?.[d]);
  return `--dtype ${dtype} does not apply to --target ${name}: ${why} (use --dtype ${orList(ok)} there; ${dtype} ${as === 'run' ? 'runs' : 'is printed'} on ${andList(others)})`;
}

/** One line for a device that is missing or failed (no adapter, no driver, a launch error), else undefined. */
export function deviceError(e: unknown): string | undefined {
  if (!(e instanceof Error)) return undefined;
  const names = TARGETS.flatMap((t) => t.run?.errors ?? []);
  return names.includes(e.name) || names.includes(e.constructor.name) ? e.message.split('\n')[0] : undefined;
}

/** "a, b or c" */
export const orList = (xs: readonly string[]): string => (xs.length < 2 ? xs.join('') : `${xs.slice(0, -1).join(', ')} or ${xs[xs.length - 1]}`);
/** "a, b and c" */
export const andList = (xs: readonly string[]): string => (xs.length < 2 ? xs.join('') : `${xs.slice(0, -1).join(', ')} and ${xs[xs.length - 1]}`);

// ---- `retnetc targets` ----------------------------------------------------------------------

export interface TargetReport {
  name: string;
  run?: Availability;
  print?: { language: string; extension: string; limits: readonly LimitProfile[] };
  /** One line, as `retnetc targets` prints it (without the padded name). */
  line: string;
}

/** Every target's availability on this machine (the checks run one after another). */
export async function targetReports(): Promise<TargetReport[]> {
  const out: TargetReport[] = [];
  for (const t of TARGETS) {
    const parts: string[] = [];
    let run: Availability | undefined;
    if (t.run) {
      try { run = await t.run.available(); } catch (e) { run = { ok: false, reason: firstLine(e) }; }
      parts.push(run.ok ? `available (${run.detail})` : `unavailable: ${run.reason}`);
    }
    const p = t.print;
    if (p) parts.push(`prints ${p.printer.language} (.${p.printer.extension}; compile --target ${t.name}, limits ${p.limits.join(', ')})`);
    out.push({
      name: t.name, ...(run ? { run } : {}),
      ...(p ? { print: { language: p.printer.language, extension: p.printer.extension, limits: p.limits } } : {}),
      line: parts.join('; '),
    });
  }
  return out;
}
