// Kernel IR -> target source, and a plan -> every kernel plus a JSON manifest a runtime (or
// another language) can launch from: entry points, bindings, uniform layout, workgroup sizes,
// grid formulas, the schedule, dtypes and shapes of the tensors, and the launch order with
// each kernel buffer and scalar mapped to its tensor or size. Tensors and buffers stored in
// half precision (schedule dtype f16 / bf16) say so: ManifestTensor.type is the element type
// in memory, kernel buffers carry `storage`.
import { exprToString } from '../compiler/kir-print.js';
import type { Kernel, KExpr, KHalf, KStorage } from '../compiler/kir.js';
import type { Plan } from '../compiler/plan.js';
import { planBuffers, tensorStorage } from '../compiler/plan.js';
import { type Schedule, scheduleToJson } from '../compiler/schedule.js';
import { dimToString } from '../dsl/dims.js';
import { printCuda } from './cuda/printer.js';
import type { EmittedKernel, TargetName } from './emitted.js';
import { printNative } from './native/printer.js';
import { printWgsl } from './wgsl/printer.js';

// ---- the printers -------------------------------------------------------------------------
// Each printing target once: its file extension, its language's name and how one kernel is
// printed and described for a runtime (targets/emitted.ts). The full target registry
// (runtime/targets.ts: runners, compilers, limits, availability) refers to these by name;
// a new printer is its folder plus one entry here.

export interface Printer {
  name: TargetName;
  /** File extension of its modules (no dot). */
  extension: string;
  /** The language, as a person names it ("CUDA", "WGSL"). */
  language: string;
  emit(kernel: Kernel): EmittedKernel;
}

const bufferRows = (kernel: Kernel, binding: (i: number) => number): EmittedKernel['buffers'] =>
  kernel.buffers.map((b, i) => ({ name: b.name, type: b.type, ...(b.storage ? { storage: b.storage } : {}), access: b.access, binding: binding(i) }));

export const PRINTERS: Readonly<Record<TargetName, Printer>> = {
  cuda: {
    name: 'cuda', extension: 'cu', language: 'CUDA',
    emit(kernel) {
      const { code, legalised: L } = printCuda(kernel);
      const nb = kernel.buffers.length;
      return {
        target: 'cuda', entry: L.kernel.name, code, workgroup: [...kernel.workgroup],
        buffers: bufferRows(kernel, (i) => i),
        scalars: kernel.scalars.map((s, i) => ({ name: s.name, type: s.type, offset: nb + i })),
        grid: kernel.grid, foldX: false, foldY: L.foldY, dynamicSharedBytes: L.dynamicShared ? L.sharedBytes : 0,
      };
    },
  },
  wgsl: {
    name: 'wgsl', extension: 'wgsl', language: 'WGSL',
    emit(kernel) {
      const { code, legalised: L } = printWgsl(kernel);
      return {
        target: 'wgsl', entry: L.kernel.name, code, workgroup: [...kernel.workgroup],
        buffers: bufferRows(kernel, (i) => L.bindings[i]!.binding),
        scalars: kernel.scalars.map((s, i) => ({ name: s.name, type: s.type, offset: L.uniform!.fields[i]!.offset })),
        ...(L.uniform ? { uniform: { binding: L.uniform.binding, size: L.uniform.size } } : {}),
        grid: kernel.grid, foldX: L.foldX, foldY: L.foldY, dynamicSharedBytes: 0,
      };
    },
  },
  // The native target's C (targets/native/printer.ts), one kernel per translation unit, with the
  // bounds checks the runtime runs by default (RETNETC_NATIVE_CHECKS=0 there prints none).
  c: {
    name: 'c', extension: 'c', language: 'C',
    emit(kernel) {
      const { code, entries } = printNative([kernel]);
      const e = entries[0]!;
      return {
        target: 'c', entry: e.symbol, code: `${C_ABI}${code}`, workgroup: [...kernel.workgroup],
        buffers: bufferRows(kernel, (i) => i),
        scalars: kernel.scalars.map((s, i) => ({ name: s.name, type: s.type, offset: i })),
        grid: kernel.grid, foldX: false, dynamicSharedBytes: 0, scratchBytes: e.scratchBytes,
      };
    },
  },
};

/** How a C kernel is called (the contract runtime/native's addon keeps). */
const C_ABI = `/* retnetc native kernel: GNU C11 with vector extensions. Build it as the runtime does (the flags
 * of targets/native/compile.ts: -std=gnu11 -O3 -march=native, never fast-math, -ffp-contract=off,
 * -fwrapv, -fopenmp-simd, -shared -fPIC, -lm): the f32 results depend on them.
 * void ENTRY(void *const *rn_b, const int64_t *rn_n, const int32_t *rn_s, const int32_t *rn_g,
 *            int64_t rn_begin, int64_t rn_end, unsigned char *rn_scratch, int32_t *rn_err)
 *   rn_b[i], rn_n[i]: buffer i (the manifest's binding) and its element count;
 *   rn_s[i]: scalar i (i32, or an f32's bits); rn_g[3]: workgroups per dimension;
 *   runs the workgroups rn_begin .. rn_end - 1 of the grid flattened x fastest (a caller splits
 *   the range over its threads); rn_scratch: scratchBytes per calling thread, 64-byte aligned;
 *   rn_err: 8 int32, zero before the launch; nonzero rn_err[0] after it means an out-of-bounds
 *   access (site, index, length, workgroup x y z, thread), and the results are not to be used. */
`;

/** The printing targets, in the order they are listed. */
export const TARGETS: readonly TargetName[] = Object.keys(PRINTERS) as TargetName[];

/** The printer of `target`, or an error naming the printers there are. */
export function printerOf(target: string): Printer {
  const p = (PRINTERS as Readonly<Record<string, Printer | undefined>>)[target];
  if (!p) throw new Error(`unknown target '${target}' (printers: ${TARGETS.join(', ')})`);
  return p;
}

/** File extension of a target's modules. */
export const targetExtension = (t: TargetName): string => printerOf(t).extension;

export function emitKernel(kernel: Kernel, target: TargetName): EmittedKernel {
  return printerOf(target).emit(kernel);
}

// ---- the plan manifest -------------------------------------------------------------------

export interface ManifestTensor {
  /** Tensor variable id (what launches refer to). */
  id: string;
  /** The user's name. */
  name: string;
  dtype: string;
  /** Element type of its buffer: f32 or i32, or f16 / bf16 for half storage (2 bytes). */
  type: KStorage;
  /** Symbolic shape, one size expression per dimension (e.g. "B", "H*K"). */
  shape: string[];
  role: 'input' | 'output' | 'intermediate';
}

export interface ManifestKernel {
  entry: string;
  /** Suggested file name of the module. */
  file: string;
  workgroup: [number, number, number];
  /** Workgroups per dimension as C-like formulas over the scalars (before any fold). */
  grid: [string, string, string];
  /** The same as kernel IR expression trees (JSON). */
  gridExpr: [KExpr, KExpr, KExpr];
  foldX: boolean;
  /** The y count is folded where it passes 65535 (targets/emitted.ts says how, per target). */
  foldY: boolean;
  dynamicSharedBytes: number;
  /** Shared memory the kernel declares, in bytes. */
  sharedBytes: number;
  /** `type` is what loads and stores see; `storage` the half type the buffer holds, if any. */
  buffers: { name: string; binding: number; type: string; storage?: KHalf; access: 'read' | 'read_write' }[];
  scalars: { name: string; type: 'i32' | 'f32'; offset: number }[];
  uniform?: { binding: number; size: number };
  /** C: bytes of rn_scratch each calling thread passes (the kernel's workgroup memory). */
  scratchBytes?: number;
}

export interface ManifestLaunch {
  kernel: string;
  /** The tensor this launch computes, and how. */
  computes: string;
  how: 'elementwise' | 'contraction' | 'dense' | 'reduce' | 'scatter';
  /** Each kernel buffer (binding or parameter position) -> tensor id. */
  buffers: { name: string; binding: number; tensor: string; access: 'read' | 'read_write' }[];
  /** Each scalar -> the size symbol whose value it takes. */
  scalars: { name: string; offset: number; size: string }[];
}

export interface PlanManifest {
  format: 'retnetc-plan';
  version: 1;
  target: TargetName;
  fn: string;
  schedule: Schedule;
  /** Sizes baked into the kernels. */
  constants: Record<string, number>;
  /** Size symbols the runtime binds from the inputs. */
  sizes: string[];
  inputs: string[];
  outputs: string[];
  tensors: ManifestTensor[];
  kernels: ManifestKernel[];
  launches: ManifestLaunch[];
}

export interface EmittedPlan {
  kernels: EmittedKernel[];
  manifest: PlanManifest;
}

const sharedBytes = (k: Kernel): number => k.shared.reduce((a, s) => a + s.size * (s.type === 'bool' ? 1 : 4), 0);

export function emitPlan(plan: Plan, target: TargetName): EmittedPlan {
  // One module per distinct kernel (a plan launches each kernel once today, but need not).
  const byKernel = new Map<Kernel, EmittedKernel>();
  for (const l of plan.launches) if (!byKernel.has(l.kernel)) byKernel.set(l.kernel, emitKernel(l.kernel, target));
  const kernels = [...byKernel.values()];
  const entries = new Set<string>();
  for (const k of kernels) {
    if (entries.has(k.entry)) throw new Error(`emitPlan: two kernels share the entry point '${k.entry}'`);
    entries.add(k.entry);
  }

  const fn = plan.fn;
  const inputs = new Set(fn.params.map((p) => p.v));
  const outputs = new Set(fn.outputs.map((p) => p.v));
  const used = new Set<string>();
  for (const l of plan.launches) for (const id of Object.values(l.buffers)) used.add(id);
  const tensorIds = [...fn.params.map((p) => p.v), ...planBuffers(plan).map((v) => v.id)].filter((id, i, a) => a.indexOf(id) === i && (used.has(id) || inputs.has(id) || outputs.has(id)));
  const tensors: ManifestTensor[] = tensorIds.map((id) => {
    const cv = fn.vars.get(id);
    const p = [...fn.params, ...fn.outputs].find((x) => x.v === id);
    const dtype = cv?.dtype ?? p?.dtype ?? 'f32';
    return {
      id, name: p?.name ?? cv?.name ?? id, dtype, type: tensorStorage(plan, id),
      shape: (cv?.shape ?? p?.shape ?? []).map(dimToString),
      role: outputs.has(id) ? 'output' : inputs.has(id) ? 'input' : 'intermediate',
    };
  });
  const sizes = new Set<string>();
  for (const l of plan.launches) for (const a of Object.values(l.scalars)) sizes.add(a);

  const manifest: PlanManifest = {
    format: 'retnetc-plan', version: 1, target, fn: fn.name, schedule: scheduleToJson(plan.schedule),
    constants: Object.fromEntries(plan.constants), sizes: [...sizes].sort(),
    inputs: fn.params.map((p) => p.v), outputs: fn.outputs.map((p) => p.v), tensors,
    kernels: [...byKernel].map(([k, e]) => ({
      entry: e.entry, file: `${e.entry}.${targetExtension(target)}`, workgroup: e.workgroup,
      grid: e.grid.map((g) => exprToString(g)) as [string, string, string], gridExpr: e.grid,
      foldX: e.foldX, foldY: e.foldY ?? false, dynamicSharedBytes: e.dynamicSharedBytes, sharedBytes: sharedBytes(k),
      buffers: e.buffers.map((b) => ({ name: b.name, binding: b.binding, type: b.type, ...(b.storage ? { storage: b.storage } : {}), access: b.access })),
      scalars: e.scalars.map((s) => ({ name: s.name, type: s.type, offset: s.offset })),
      ...(e.uniform ? { uniform: e.uniform } : {}),
      ...(e.scratchBytes !== undefined ? { scratchBytes: e.scratchBytes } : {}),
    })),
    launches: plan.launches.map((l) => {
      const e = byKernel.get(l.kernel)!;
      return {
        kernel: e.entry, computes: l.target, how: l.how,
        buffers: e.buffers.map((b) => {
          const tensor = l.buffers[b.name];
          if (tensor === undefined) throw new Error(`emitPlan: launch of ${e.entry} binds no tensor to buffer '${b.name}'`);
          return { name: b.name, binding: b.binding, tensor, access: b.access };
        }),
        scalars: e.scalars.map((s) => {
          const size = l.scalars[s.name];
          if (size === undefined) throw new Error(`emitPlan: launch of ${e.entry} gives no size for scalar '${s.name}'`);
          return { name: s.name, offset: s.offset, size };
        }),
      };
    }),
  };
  return { kernels, manifest };
}
