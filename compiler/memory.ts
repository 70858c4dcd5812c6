// Activation memory of a plan, planned by liveness: every tensor a plan writes that is neither a
// parameter nor an output (an intermediate) lives from the first launch that touches it to the
// last one; intermediates whose lives do not meet share one allocation (a slot). Runners allocate
// one buffer per slot and bind each intermediate to its slot's buffer at offset 0.
//
//   - Liveness is launch-level and strict: a slot freed by a tensor whose last access is launch i
//     is reused only by a tensor first touched by a launch j > i, so no launch ever binds two
//     tensors of one slot (a launch that writes a tensor while another of its slot is read, or
//     two bindings of one buffer, cannot happen).
//   - A tensor whose first launch loads it (an accumulation into a buffer not first overwritten,
//     or a read before any write) relies on the zeroed memory runners start every buffer with:
//     it is the first tenant of a fresh slot, never a later one. Every other intermediate is
//     written before it is read (each lowering stores every element of its target, compiler/
//     lower/*.ts); tests/memory.test.ts runs plans with reused memory poisoned to show it.
//   - Slots are assigned greedily two ways, the one with fewer bytes kept: intervals by start
//     (a free slot that fits with the least slack, else the largest free slot grown to fit, else
//     a new slot), and largest tensors first into the smallest slot they do not meet a tenant of.
//   - Peak bytes count parameters, outputs and slots (as exact element bytes: 2 for f16/bf16
//     storage, 4 for f32/i32); naive bytes count every tensor on its own.
import { devaluate, type Dim, dimSymbols } from '../dsl/dims.js';
import { bindSizes } from '../dsl/reference/interpreter.js';
import type { KExpr, Kernel, KStmt } from './kir.js';
import { storageBytes } from './kir.js';
import type { Plan } from './plan.js';
import { tensorStorage } from './plan.js';
import { boundWeights, type ModelProgram } from './model-split.js';

export interface TensorLife {
  id: string;
  bytes: number;
  /** First and last launch that binds it. */
  first: number;
  last: number;
  /** Its first launch loads it: it needs zeroed memory (the first tenant of a fresh slot). */
  zero: boolean;
}

export interface MemorySlot {
  bytes: number;
  /** Its first tenant relies on zeroed memory. */
  zero: boolean;
  /** Intermediate ids in order of their lives. */
  tenants: string[];
}

export interface MemoryPlan {
  slots: MemorySlot[];
  /** Intermediate id -> slot index. Parameters and outputs have none (each its own buffer). */
  slotOf: Map<string, number>;
  lives: Map<string, TensorLife>;
  /** Bytes of every tensor the plan binds or returns, by id. */
  bytesOf: Map<string, number>;
  paramBytes: number;
  outputBytes: number;
  /** Parameters + outputs + slots. */
  peakBytes: number;
  /** Parameters + outputs + every intermediate on its own. */
  naiveBytes: number;
  /** Parameters + outputs + the most intermediate bytes live at one launch: no assignment does better. */
  boundBytes: number;
  reuse: boolean;
}

export interface MemoryOptions {
  /** Share slots between intermediates whose lives do not meet (default true). */
  reuse?: boolean;
}

/** Whether runners reuse memory by default: on, unless RETNETC_MEMORY_REUSE=0. */
export const defaultReuse = (): boolean => (typeof process === 'undefined' ? true : process.env['RETNETC_MEMORY_REUSE'] !== '0');

// ---- what a kernel loads and stores ------------------------------------------------------------

const accessCache = new WeakMap<Kernel, { loads: Set<string>; stores: Set<string> }>();

/** The arrays (buffers, shared and local arrays) a kernel loads from and stores to. */
export function kernelAccess(k: Kernel): { loads: Set<string>; stores: Set<string> } {
  let a = accessCache.get(k);
  if (a) return a;
  const loads = new Set<string>();
  const stores = new Set<string>();
  const ex = (e: KExpr): void => {
    switch (e.k) {
      case 'load': loads.add(e.array); ex(e.index); return;
      case 'un': case 'cast': ex(e.a); return;
      case 'bin': ex(e.a); ex(e.b); return;
      case 'select': ex(e.cond); ex(e.a); ex(e.b); return;
      default: return;
    }
  };
  const st = (s: KStmt): void => {
    switch (s.k) {
      case 'decl': ex(s.init); return;
      case 'assign': ex(s.value); return;
      case 'store': stores.add(s.array); ex(s.index); ex(s.value); return;
      case 'if': ex(s.cond); s.then.forEach(st); s.else.forEach(st); return;
      case 'for': ex(s.start); ex(s.end); s.body.forEach(st); return;
      default: return;
    }
  };
  k.body.forEach(st);
  accessCache.set(k, (a = { loads, stores }));
  return a;
}

// ---- sizes ------------------------------------------------------------------------------------

const numel = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);

function shapeOf(shape: readonly Dim[], sizes: ReadonlyMap<string, number>, what: string): number[] {
  return shape.map((d) => {
    const n = devaluate(d, sizes);
    if (n === undefined || !Number.isInteger(n) || n < 0) throw new Error(`memory: cannot size '${what}' from ${JSON.stringify([...sizes])}`);
    return n;
  });
}

/** Bytes of tensor `id` of a plan at `sizes` (a scalar is 1 element). */
export function tensorBytes(plan: Plan, id: string, sizes: ReadonlyMap<string, number>): number {
  const cv = plan.fn.vars.get(id) ?? [...plan.fn.params, ...plan.fn.outputs].find((p) => p.v === id);
  if (!cv) throw new Error(`memory: '${id}' is no tensor of '${plan.fn.name}'`);
  return numel(shapeOf(cv.shape, sizes, cv.name)) * storageBytes(tensorStorage(plan, id));
}

/** A plan's sizes from the shapes of its inputs (by parameter name), as the runners bind them. */
export function planSizesFromShapes(plan: Plan, shapes: ReadonlyMap<string, readonly number[]>): Map<string, number> {
  const m = new Map([...shapes].map(([k, v]) => [k, [...v]] as const));
  let sizes: Map<string, number>;
  try {
    sizes = bindSizes(plan.fn, m);
  } catch {
    sizes = bindSizes(plan.fn, m, plan.constants);
  }
  for (const [k, v] of plan.constants) if (!sizes.has(k)) sizes.set(k, v);
  return sizes;
}

// ---- the plan ---------------------------------------------------------------------------------

const byId = (a: TensorLife, b: TensorLife): number => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
const total = (slots: readonly MemorySlot[]): number => slots.reduce((a, s) => a + s.bytes, 0);
interface Assignment { slots: MemorySlot[]; slotOf: Map<string, number> }

/**
 * Intervals by start (larger first on ties): a slot freed before the tensor's first launch that
 * fits with the least slack, else the largest free one grown to fit, else a new slot. A tensor
 * needing zeroed memory always starts a new slot. `reuse` false: a slot per tensor.
 */
function byStart(lives: readonly TensorLife[], reuse = true): Assignment {
  const slots: MemorySlot[] = [];
  const lastOf: number[] = [];
  const slotOf = new Map<string, number>();
  for (const t of [...lives].sort((a, b) => a.first - b.first || b.bytes - a.bytes || byId(a, b))) {
    let pick = -1;
    if (reuse && !t.zero) {
      let fit = -1, big = -1;
      for (let s = 0; s < slots.length; s++) {
        if (!(lastOf[s]! < t.first)) continue;
        const b = slots[s]!.bytes;
        if (b >= t.bytes && (fit < 0 || b < slots[fit]!.bytes)) fit = s;
        if (big < 0 || b > slots[big]!.bytes) big = s;
      }
      pick = fit >= 0 ? fit : big;
    }
    if (pick < 0) {
      pick = slots.length;
      slots.push({ bytes: 0, zero: t.zero, tenants: [] });
      lastOf.push(-1);
    }
    const s = slots[pick]!;
    s.bytes = Math.max(s.bytes, t.bytes);
    s.tenants.push(t.id);
    lastOf[pick] = t.last;
    slotOf.set(t.id, pick);
  }
  return { slots, slotOf };
}

/**
 * Largest tensors first (TFLite's greedy by size): into the smallest slot none of whose tenants
 * is live at any launch of the tensor's span, else a new slot (slots never grow: the first tenant
 * is the largest). A tensor needing zeroed memory joins only a slot all of whose tenants start
 * after it ends, and no tensor goes before such a tenant.
 */
function bySize(lives: readonly TensorLife[]): Assignment {
  const slots: MemorySlot[] = [];
  const members: TensorLife[][] = [];
  const slotOf = new Map<string, number>();
  for (const t of [...lives].sort((a, b) => b.bytes - a.bytes || a.first - b.first || byId(a, b))) {
    let pick = -1;
    for (let s = 0; s < slots.length; s++) {
      const ok = members[s]!.every((u) => (u.last < t.first || t.last < u.first) && !(t.zero && u.first < t.first) && !(u.zero && t.first < u.first));
      if (ok && (pick < 0 || slots[s]!.bytes < slots[pick]!.bytes)) pick = s;
    }
    if (pick < 0) {
      pick = slots.length;
      slots.push({ bytes: 0, zero: false, tenants: [] });
      members.push([]);
    }
    slots[pick]!.bytes = Math.max(slots[pick]!.bytes, t.bytes);
    members[pick]!.push(t);
    slotOf.set(t.id, pick);
  }
  members.forEach((m, s) => {
    m.sort((a, b) => a.first - b.first);
    slots[s]!.tenants = m.map((u) => u.id);
    slots[s]!.zero = m[0]?.zero ?? false;
  });
  return { slots, slotOf };
}

/** Intermediates' lives, slots by liveness and the peak and naive bytes of `plan` at `sizes`. */
export function planMemory(plan: Plan, sizes: ReadonlyMap<string, number>, opts: MemoryOptions = {}): MemoryPlan {
  const reuse = opts.reuse ?? true;
  const sz = new Map(sizes);
  for (const [k, v] of plan.constants) if (!sz.has(k)) sz.set(k, v);
  const params = new Set(plan.fn.params.map((p) => p.v));
  const outputs = new Set(plan.fn.outputs.map((o) => o.v));
  const bytesOf = new Map<string, number>();
  const bytes = (id: string): number => {
    let b = bytesOf.get(id);
    if (b === undefined) bytesOf.set(id, (b = tensorBytes(plan, id, sz)));
    return b;
  };
  let paramBytes = 0;
  for (const id of params) paramBytes += bytes(id);
  let outputBytes = 0;
  for (const id of outputs) if (!params.has(id)) outputBytes += bytes(id);

  // Lives: every launch that binds a tensor (read or written) extends it.
  const lives = new Map<string, TensorLife>();
  plan.launches.forEach((l, i) => {
    const { loads } = kernelAccess(l.kernel);
    for (const [name, id] of Object.entries(l.buffers)) {
      if (params.has(id) || outputs.has(id)) continue;
      const life = lives.get(id);
      if (life) { life.last = i; continue; }
      lives.set(id, { id, bytes: bytes(id), first: i, last: i, zero: loads.has(name) });
    }
  });
  // Intermediates the plan allocates but no launch binds (none today): their own slot each.
  for (const l of plan.launches) {
    const id = l.target;
    if (!params.has(id) && !outputs.has(id) && !lives.has(id)) lives.set(id, { id, bytes: bytes(id), first: 0, last: plan.launches.length, zero: true });
  }

  const all = [...lives.values()];
  const tries = reuse ? [byStart(all), bySize(all)] : [byStart(all, false)];
  const best = tries.reduce((a, b) => (total(b.slots) < total(a.slots) ? b : a));
  const { slots, slotOf } = best;
  let slotBytes = 0;
  for (const s of slots) slotBytes += s.bytes;
  let interBytes = 0;
  for (const t of lives.values()) interBytes += t.bytes;
  let bound = 0;
  for (let i = 0; i < plan.launches.length; i++) {
    let live = 0;
    for (const t of lives.values()) if (t.first <= i && i <= t.last) live += t.bytes;
    bound = Math.max(bound, live);
  }
  return {
    slots, slotOf, lives, bytesOf, paramBytes, outputBytes, reuse,
    boundBytes: paramBytes + outputBytes + bound,
    peakBytes: paramBytes + outputBytes + slotBytes,
    naiveBytes: paramBytes + outputBytes + interBytes,
  };
}

/**
 * Checks an assignment: every intermediate has a slot at least its size, and two tensors of one
 * slot never have lives that meet (the later one starts strictly after the earlier one's last
 * launch); a tensor needing zeroed memory is its slot's first tenant. Returns the problems.
 */
export function checkMemory(m: MemoryPlan): string[] {
  const problems: string[] = [];
  const bySlot = new Map<number, TensorLife[]>();
  for (const [id, s] of m.slotOf) {
    const t = m.lives.get(id)!;
    if (m.slots[s]!.bytes < t.bytes) problems.push(`'${id}' (${t.bytes} bytes) in slot ${s} of ${m.slots[s]!.bytes} bytes`);
    let l = bySlot.get(s);
    if (!l) bySlot.set(s, (l = []));
    l.push(t);
  }
  for (const id of m.lives.keys()) if (!m.slotOf.has(id)) problems.push(`'${id}' has no slot`);
  for (const [s, ts] of bySlot) {
    ts.sort((a, b) => a.first - b.first);
    for (let i = 0; i < ts.length; i++) {
      for (let j = i + 1; j < ts.length; j++) {
        const [a, b] = [ts[i]!, ts[j]!];
        if (!(a.last < b.first || b.last < a.first)) problems.push(`slot ${s}: '${a.id}' [${a.first}, ${a.last}] and '${b.id}' [${b.first}, ${b.last}] are live together`);
      }
      if (i > 0 && ts[i]!.zero) problems.push(`slot ${s}: '${ts[i]!.id}' needs zeroed memory but is not the slot's first tenant`);
    }
  }
  return problems;
}

// ---- reporting --------------------------------------------------------------------------------

/** 12.3 MiB, 512 B, 1.5 GiB. */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return `${v.toFixed(1)} ${units[u]}`;
}

const sizesStr = (sizes: ReadonlyMap<string, number>): string => [...sizes].map(([k, v]) => `${k}=${v}`).join(' ');

/** Sizes a report is given at when the caller gives none: one sequence of 4096 positions, 8 heads. */
export const REPORT_SIZES: ReadonlyMap<string, number> = new Map([['B', 1], ['H', 8], ['T', 4096]]);

/**
 * Every size symbol of a plan's tensors, in order of first use: the plan's constants, then
 * `given`, then `defaults` (REPORT_SIZES), else 1.
 */
export function reportSizes(plan: Plan, given: ReadonlyMap<string, number> = new Map(), defaults: ReadonlyMap<string, number> = REPORT_SIZES): Map<string, number> {
  const syms = new Set<string>();
  const f = plan.fn;
  for (const t of [...f.params, ...f.outputs, ...f.vars.values()]) for (const d of t.shape) for (const x of dimSymbols(d)) syms.add(x);
  const out = new Map<string, number>();
  for (const x of [...syms].sort()) out.set(x, plan.constants.get(x) ?? given.get(x) ?? defaults.get(x) ?? 1);
  return out;
}

/**
 * One line for the CLI's compile: `memory: peak 12.3 MiB (naive 40.1 MiB) at B=1 H=8 K=64 T=4096 V=64`,
 * at `sizes` (missing ones from reportSizes).
 */
export function memoryLine(plan: Plan, sizes: ReadonlyMap<string, number> = new Map(), opts: MemoryOptions = {}): string {
  const all = reportSizes(plan, sizes);
  const m = planMemory(plan, all, opts);
  return `memory: peak ${formatBytes(m.peakBytes)} (naive ${formatBytes(m.naiveBytes)}) at ${sizesStr(all)}`;
}

/**
 * One line for a model's compile: `memory: forward peak 326.8 MiB (every tensor on its own
 * 608.9 MiB); forward + backward 603.1 MiB (kept activations 14.0 MiB) at B=1 T=1024`; the second
 * part only with backward plans.
 */
export function modelMemoryLine(program: ModelProgram, forward: readonly Plan[], backward?: readonly Plan[], sizes: ReadonlyMap<string, number> = new Map([['B', 1], ['T', 1024]])): string {
  const mm = modelMemory({ program, forward, ...(backward ? { backward } : {}), sizes });
  const train = backward ? `; forward + backward ${formatBytes(mm.trainPeakBytes)} (kept activations ${formatBytes(mm.keptBytes)})` : '';
  return `memory: forward peak ${formatBytes(mm.forwardPeakBytes)} (every tensor on its own ${formatBytes(mm.forwardNaiveBytes)})${train} at ${sizesStr(sizes)}`;
}

// ---- whole models -----------------------------------------------------------------------------

export interface ModelMemoryInput {
  program: ModelProgram;
  /** Forward plans, indexed like program.fns. */
  forward: readonly Plan[];
  /** Backward (gradient) plans, indexed like program.fns; absent: forward only. */
  backward?: readonly Plan[];
  /** The model's sizes (B, T). */
  sizes: ReadonlyMap<string, number>;
  /** Which step inputs (model tensors) the backward keeps from the forward (default: every one). */
  keeps?: (step: number, param: string) => boolean;
  opts?: MemoryOptions;
}

export interface ModelMemory {
  /** Every weight, once. */
  weightBytes: number;
  /** Forward: weights + model tensors live at the step + the step's own intermediates, at the worst step. */
  forwardPeakBytes: number;
  /** The same with every tensor and intermediate on its own (no liveness at all). */
  forwardNaiveBytes: number;
  /** Model tensors the backward needs kept, at the turn from forward to backward. */
  keptBytes: number;
  /**
   * Forward + backward: the larger of the forward's peak plus every kept activation, and, at the
   * worst backward step, weights + weight gradients + every kept activation (the turn, their
   * most) + that step's own peak (its backward plan's parameters other than weights and kept
   * tensors, its outputs and slots). An upper bound on what a step-by-step trainer holds.
   */
  trainPeakBytes: number;
  /** Per step: the forward plan's own peak, and the backward's when there is one. */
  steps: { fn: string; forwardPeak: number; backwardPeak?: number }[];
}

/** Peak bytes of a model's forward, and of forward + backward, at the model's sizes. */
export function modelMemory(inp: ModelMemoryInput): ModelMemory {
  const { program, sizes } = inp;
  const varBytes = new Map<string, number>();
  const vbytes = (id: string): number => {
    let b = varBytes.get(id);
    if (b === undefined) {
      const cv = program.vars.get(id) ?? [...program.params, ...program.outputs].find((p) => p.v === id);
      if (!cv) throw new Error(`memory: model tensor '${id}' unknown`);
      // Model tensors pass between steps as f32 or i32 host tensors: 4 bytes an element.
      varBytes.set(id, (b = numel(shapeOf(cv.shape, sizes, cv.name)) * 4));
    }
    return b;
  };
  const weightShapes = new Map([...boundWeights(program)].map(([name, w]) => [name, w.shape] as const));
  const weights = new Map<string, number>();
  for (const st of program.steps) {
    for (const src of st.inputs.values()) {
      if (src.kind !== 'weight' || weights.has(src.name)) continue;
      const shape = weightShapes.get(src.name);
      weights.set(src.name, shape ? numel(shapeOf(shape, sizes, src.name)) * 4 : 0);
    }
  }
  let weightBytes = 0;
  for (const b of weights.values()) weightBytes += b;

  // Last step reading each model tensor (model outputs: past the end).
  const n = program.steps.length;
  const lastRead = new Map<string, number>();
  const produced = new Map<string, number>();
  for (const p of program.params) produced.set(p.v, -1);
  program.steps.forEach((st, i) => {
    for (const src of st.inputs.values()) if (src.kind === 'var') lastRead.set(src.id, i);
    for (const id of st.outputs.values()) produced.set(id, i);
  });
  for (const o of program.outputs) lastRead.set(o.v, n);

  const shapesOf = (st: (typeof program.steps)[number]): Map<string, number[]> => {
    const m = new Map<string, number[]>();
    for (const [name, src] of st.inputs) {
      if (src.kind === 'var') { const cv = program.vars.get(src.id) ?? program.params.find((p) => p.v === src.id); if (cv) m.set(name, shapeOf(cv.shape, sizes, cv.name)); }
      else { const shape = weightShapes.get(src.name); if (shape) m.set(name, shapeOf(shape, sizes, src.name)); }
    }
    return m;
  };
  const steps: ModelMemory['steps'] = [];
  let forwardPeakBytes = 0;
  let forwardNaiveBytes = weightBytes;
  const counted = new Set<string>();
  let stepMax = 0;
  const keptIds = new Set<string>();
  if (inp.backward) {
    program.steps.forEach((st, i) => {
      for (const [name, src] of st.inputs) if (src.kind === 'var' && (inp.keeps?.(i, name) ?? true)) keptIds.add(src.id);
    });
  }
  program.steps.forEach((st, i) => {
    const plan = inp.forward[st.fn]!;
    const shapes = shapesOf(st);
    const psz = planSizesFromShapes(plan, shapes);
    const m = planMemory(plan, psz, inp.opts);
    // Model tensors live during step i: produced at or before i, read at or after i.
    let live = 0;
    for (const [id, at] of produced) if (at <= i && (lastRead.get(id) ?? at) >= i) live += vbytes(id);
    const own = m.peakBytes - m.paramBytes - m.outputBytes;
    forwardPeakBytes = Math.max(forwardPeakBytes, weightBytes + live + own);
    for (const src of st.inputs.values()) if (src.kind === 'var' && !counted.has(src.id)) { counted.add(src.id); forwardNaiveBytes += vbytes(src.id); }
    for (const id of st.outputs.values()) if (!counted.has(id)) { counted.add(id); forwardNaiveBytes += vbytes(id); }
    forwardNaiveBytes += m.naiveBytes - m.paramBytes - m.outputBytes;
    const entry: ModelMemory['steps'][number] = { fn: plan.fn.name, forwardPeak: m.peakBytes };
    const bplan = inp.backward?.[st.fn];
    if (bplan) {
      const bshapes = new Map(shapes);
      for (const o of plan.fn.outputs) {
        const id = st.outputs.get(o.name);
        const cv = id === undefined ? undefined : program.vars.get(id);
        if (cv) bshapes.set(`grad.${o.name}`, shapeOf(cv.shape, sizes, cv.name));
      }
      const bm = planMemory(bplan, planSizesFromShapes(bplan, bshapes), inp.opts);
      entry.backwardPeak = bm.peakBytes;
      let held = 0;
      for (const p of bplan.fn.params) {
        const src = st.inputs.get(p.name);
        if (src && (src.kind === 'weight' || keptIds.has(src.id))) held += bm.bytesOf.get(p.v) ?? 0;
      }
      stepMax = Math.max(stepMax, bm.peakBytes - held);
    }
    steps.push(entry);
  });
  let keptBytes = 0;
  for (const id of keptIds) keptBytes += vbytes(id);
  const trainPeakBytes = inp.backward ? Math.max(forwardPeakBytes + keptBytes, 2 * weightBytes + keptBytes + stepMax) : forwardPeakBytes;
  return { weightBytes, forwardPeakBytes, forwardNaiveBytes, keptBytes, trainPeakBytes, steps };
}
