// A plan prepared for repeated runs on the native target at one set of input shapes
// (runtime/native/runner.ts runPlanNative): its memory plan, one pooled buffer per memory slot
// (reused by every later run at these shapes), and the launch list that the addon runs in one
// call (native_addon.cc runList): per launch its kernel, its buffers as indices into a table of
// tensors, its scalars packed as i32 bits, its grid and its scratch bytes. Buffer types,
// scalars, grids and overlaps are checked here once, not per launch on every run.
//
// The tensor table, in order: the parameters (per run: the caller's array in place where no
// kernel writes it and it is in its storage type already, else a converted copy), the tensors
// without a memory slot (the outputs: fresh arrays every run, owned by the caller), and the
// intermediates (views of the pooled slots). Each run zeroes exactly the first tenant of every
// slot that needs zeroed memory (compiler/memory.ts) and, with `poison`, first fills every slot
// with it. Runs of one list never interleave: a run is synchronous from binding to outputs.
import type { KHalf, Kernel } from '../../compiler/kir.js';
import { type MemoryPlan, planMemory } from '../../compiler/memory.js';
import type { Plan } from '../../compiler/plan.js';
import { RunError, shapeStr, type Value } from '../../dsl/reference/interpreter.js';
import { toHalfArray } from '../../targets/half.js';
import type { NativeEntry } from '../../targets/native/printer.js';
import { bindBuffers, type HostArray, hostOutput } from '../bind.js';
import { evalKExpr } from '../kexpr-eval.js';
import { type HostTensor, planSizes } from '../plan-runner.js';
import type { NativeAddon } from './addon.js';
import { NativeRunError, outOfBoundsMessage } from './errors.js';

/** What prepareNative gives per kernel: its printed entry and the addon's kernel id. */
export type NativeEntries = ReadonlyMap<Kernel, { entry: NativeEntry; id: number }>;

interface ParamSpec {
  name: string;
  id: string;
  int: boolean;
  half?: KHalf;
  scalar: boolean;
  numel: number;
  /** A kernel writes it, or it is an output: always a copy, never the caller's array. */
  copy: boolean;
  default?: number;
}

interface FreshSpec { int: boolean; half?: KHalf; numel: number }

export interface LaunchList {
  reuse: boolean;
  /** The parameters' shapes it was built for (undefined: not given), in plan.fn.params order. */
  shapes: (readonly number[] | undefined)[];
  sizes: Map<string, number>;
  mem: MemoryPlan;
  params: ParamSpec[];
  /** Table entries params.length .. + fresh.length - 1: allocated on every run. */
  fresh: FreshSpec[];
  /** The rest of the table: views of the pooled slots. */
  pooled: HostArray[];
  /** Every slot's memory (as f32, for poison), and the first tenant of each slot that needs zeros. */
  slotWords: Float32Array[];
  zero: Uint8Array[];
  code: Int32Array;
  launches: { kernel: Kernel; entry: NativeEntry }[];
  /** Per launch milliseconds (the profile), filled by the addon. */
  times: Float64Array;
  /** The tensor table, refilled by every run (params and fresh entries are emptied after it). */
  table: HostArray[];
  outputs: { name: string; index: number; shape: number[]; half?: KHalf }[];
  err: Int32Array;
}

const numel = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);
const isInt = (dtype: string): boolean => dtype === 'i32' || dtype === 'i64';
const ctorName = (t: { int: boolean; half?: KHalf }): string => (t.half ? 'Uint16Array' : t.int ? 'Int32Array' : 'Float32Array');

/** A plan's parameters' shapes as one string: equal strings bind equal sizes (planSizes reads only these). */
export function shapesKey(plan: Plan, inputs: ReadonlyMap<string, { shape: readonly number[] }>): string {
  let key = '';
  for (const p of plan.fn.params) {
    const v = inputs.get(p.name);
    key += v ? `${v.shape.join(',')};` : '-;';
  }
  return key;
}

/** Builds the launch list of `plan` at the shapes of `inputs` (every check a run would otherwise repeat). */
export function buildLaunchList(plan: Plan, entries: NativeEntries, inputs: ReadonlyMap<string, { shape: number[] }>, reuse: boolean): LaunchList {
  const sizes = planSizes(plan, inputs);
  const mem = planMemory(plan, sizes, { reuse });
  const outputIds = new Set(plan.fn.outputs.map((o) => o.v));
  const written = new Set<string>();
  for (const l of plan.launches) for (const b of l.kernel.buffers) if (b.access === 'read_write' && l.buffers[b.name] !== undefined) written.add(l.buffers[b.name]!);

  // The table: params, then the computed tensors without a slot (fresh), then the pooled ones.
  // A later entry of an id wins, as a computed tensor replaces a parameter of the same id.
  const where = new Map<string, number>();
  const type = new Map<string, { int: boolean; half?: KHalf }>();
  const params: ParamSpec[] = plan.fn.params.map((p, i) => {
    const v = inputs.get(p.name);
    const scalar = p.shape.length === 0;
    const int = isInt(p.dtype);
    const half = int ? undefined : plan.half.get(p.v);
    where.set(p.v, i);
    type.set(p.v, { int, ...(half ? { half } : {}) });
    return { name: p.name, id: p.v, int, ...(half ? { half } : {}), scalar, numel: scalar ? 1 : numel(v!.shape), copy: written.has(p.v) || outputIds.has(p.v), ...(p.default !== undefined ? { default: p.default } : {}) };
  });
  const bound = bindBuffers(plan, sizes);
  for (const t of bound) type.set(t.id, { int: t.int, ...(t.half ? { half: t.half } : {}) });
  const fresh = bound.filter((t) => !mem.slotOf.has(t.id));
  const inSlots = bound.filter((t) => mem.slotOf.has(t.id));
  fresh.forEach((t, j) => where.set(t.id, params.length + j));
  inSlots.forEach((t, j) => where.set(t.id, params.length + fresh.length + j));
  /** What memory a tensor has: two tensors of one launch may share it only if neither is written. */
  const memOf = (id: string): string => { const s = mem.slotOf.get(id); return s === undefined ? `tensor ${where.get(id)}` : `slot ${s}`; };

  const slots = mem.slots.map((s) => new ArrayBuffer(Math.ceil(s.bytes / 4) * 4));
  const pooled = inSlots.map((t) => { const b = slots[mem.slotOf.get(t.id)!]!; return t.int ? new Int32Array(b, 0, t.numel) : t.half ? new Uint16Array(b, 0, t.numel) : new Float32Array(b, 0, t.numel); });
  const zero = mem.slots.flatMap((s, i) => (s.zero && s.tenants.length ? [new Uint8Array(slots[i]!, 0, mem.lives.get(s.tenants[0]!)!.bytes)] : []));

  // The launches.
  const code: number[] = [];
  const launches: LaunchList['launches'] = [];
  const f = new Float32Array(1), fi = new Int32Array(f.buffer);
  for (const l of plan.launches) {
    const k = l.kernel;
    const e = entries.get(k);
    if (!e) throw new Error(`internal error: kernel ${k.name} was not prepared`);
    const idx = k.buffers.map((b) => {
      const id = l.buffers[b.name];
      const at = id === undefined ? undefined : where.get(id);
      const want = b.storage ? 'Uint16Array' : b.type === 'f32' ? 'Float32Array' : 'Int32Array';
      const got = at === undefined ? 'nothing' : ctorName(type.get(id!)!);
      if (got !== want) throw new NativeRunError(`kernel ${k.name}: buffer '${b.name}'${b.storage ? ` (${b.storage})` : ''} must be a ${want}, got ${got}`);
      return at!;
    });
    // The printed kernel declares buffers `restrict`: a written buffer may share memory with no other.
    k.buffers.forEach((b, i) => {
      if (b.access !== 'read_write') return;
      const mine = memOf(l.buffers[b.name]!);
      k.buffers.forEach((o, j) => { if (j !== i && memOf(l.buffers[o.name]!) === mine) throw new NativeRunError(`kernel ${k.name}: buffer '${b.name}' (written) overlaps buffer '${o.name}'`); });
    });
    const values: Record<string, number> = {};
    const scalars = k.scalars.map((s) => {
      const atom = l.scalars[s.name];
      const x = atom === undefined ? undefined : sizes.get(atom);
      if (typeof x !== 'number') throw new NativeRunError(`kernel ${k.name}: scalar '${s.name}' missing`);
      if (s.type === 'i32' && (x | 0) !== x) throw new NativeRunError(`kernel ${k.name}: scalar '${s.name}' = ${x} is not an i32`);
      values[s.name] = x;
      if (s.type === 'f32') { f[0] = x; return fi[0]!; }
      return x;
    });
    const grid = k.grid.map((g) => evalKExpr(g, values));
    if (grid.some((g) => g < 0)) throw new NativeRunError(`kernel IR error in kernel ${k.name}: negative grid (${grid.join(', ')})`);
    while (grid.length < 3) grid.push(1);
    if (!(e.entry.scratchBytes < 2 ** 31)) throw new NativeRunError(`kernel ${k.name}: ${e.entry.scratchBytes} bytes of workgroup arrays is too many`);
    code.push(e.id, idx.length, scalars.length, grid[0]!, grid[1]!, grid[2]!, e.entry.scratchBytes, ...idx, ...scalars);
    launches.push({ kernel: k, entry: e.entry });
  }
  const outputs = plan.fn.outputs.map((o) => {
    const at = where.get(o.v)!;
    const shape = at < params.length ? (params[at]!.scalar ? [] : [...inputs.get(params[at]!.name)!.shape]) : bound.find((t) => t.id === o.v)!.shape;
    const half = type.get(o.v)!.half;
    return { name: o.name, index: at, shape, ...(half ? { half } : {}) };
  });
  return {
    reuse,
    shapes: plan.fn.params.map((p) => { const v = inputs.get(p.name); return v ? [...v.shape] : undefined; }),
    sizes, mem, params, pooled,
    fresh: fresh.map((t) => ({ int: t.int, ...(t.half ? { half: t.half } : {}), numel: t.numel })), zero, launches, outputs,
    slotWords: slots.map((b) => new Float32Array(b)),
    code: Int32Array.from(code),
    times: new Float64Array(launches.length),
    table: [],
    err: new Int32Array(8),
  };
}

/** A parameter's array for one run, in its storage type, exactly numel long. */
function bindParam(p: ParamSpec, v: { shape: readonly number[]; data: ArrayLike<number> } | undefined): HostArray {
  const data: ArrayLike<number> = v ? v.data : [p.default!];
  const n = p.numel;
  if (data.length < n) throw new RunError(`input '${p.name}' has ${data.length} values but shape ${shapeStr(v ? [...v.shape] : [])} needs ${n}`);
  const view = data.length === n ? data : (data as Float32Array).subarray ? (data as Float32Array).subarray(0, n) : Array.prototype.slice.call(data, 0, n) as number[];
  if (p.half) return toHalfArray(view, p.half, n);
  if (!p.copy && (p.int ? view instanceof Int32Array : view instanceof Float32Array)) return view as HostArray;
  const out = p.int ? new Int32Array(n) : new Float32Array(n);
  out.set(view);
  return out;
}

/** Per kernel time, by kernel name (runner.ts setNativeProfile). */
export type NativeProfile = Map<string, { launches: number; ms: number }>;

/** Runs a launch list with these inputs (the shapes it was built for); outputs by name, the caller's own. */
export function runLaunchList(list: LaunchList, addon: NativeAddon, inputs: ReadonlyMap<string, Value | HostTensor>, poison: number | undefined, profile: NativeProfile | undefined): Map<string, HostTensor> {
  const table = list.table;
  const P = list.params.length, F = list.fresh.length;
  if (table.length === 0) table.push(...list.params.map(() => EMPTY), ...list.fresh.map(() => EMPTY), ...list.pooled);
  try {
    for (let i = 0; i < P; i++) table[i] = bindParam(list.params[i]!, inputs.get(list.params[i]!.name));
    for (let j = 0; j < F; j++) { const t = list.fresh[j]!; table[P + j] = t.int ? new Int32Array(t.numel) : t.half ? new Uint16Array(t.numel) : new Float32Array(t.numel); }
    if (poison !== undefined) for (const w of list.slotWords) w.fill(poison);
    for (const z of list.zero) z.fill(0);
    const err = list.err;
    err.fill(0);
    const bad = addon.runList(table, list.code, err, profile ? list.times : undefined);
    if (bad >= 0) {
      const { kernel, entry } = list.launches[bad]!;
      throw new NativeRunError(outOfBoundsMessage(kernel, entry, err));
    }
    if (profile) {
      list.launches.forEach(({ kernel }, i) => {
        const r = profile.get(kernel.name) ?? { launches: 0, ms: 0 };
        r.launches++; r.ms += list.times[i]!;
        profile.set(kernel.name, r);
      });
    }
    const out = new Map<string, HostTensor>();
    for (const o of list.outputs) out.set(o.name, { shape: [...o.shape], data: hostOutput(table[o.index]!, o.half) });
    return out;
  } finally {
    // The list keeps neither the caller's inputs nor its outputs alive.
    for (let i = 0; i < P + F; i++) table[i] = EMPTY;
  }
}

const EMPTY = new Float32Array(0);

/** Whether `inputs` have the shapes `list` was built for (no strings: the common case of a repeated run). */
function sameShapes(list: LaunchList, plan: Plan, inputs: ReadonlyMap<string, { shape: readonly number[] }>): boolean {
  const ps = plan.fn.params;
  for (let i = 0; i < ps.length; i++) {
    const want = list.shapes[i], got = inputs.get(ps[i]!.name)?.shape;
    if (want === undefined || got === undefined) { if (want !== got) return false; continue; }
    if (want.length !== got.length) return false;
    for (let j = 0; j < want.length; j++) if (want[j] !== got[j]) return false;
  }
  return true;
}

const lists = new WeakMap<NativeEntries, Map<string, LaunchList>>();
/** Launch lists kept per prepared plan (each holds its slots' memory): the most recently used. */
export const LISTS_PER_PLAN = 4;
/**
 * All lists together keep at most this many pooled bytes ($RETNETC_NATIVE_POOL_MB, default 1024)
 * and MAX_LISTS lists: past either, the least recently used lists of any plan are dropped (and
 * built again when next needed).
 */
const POOL_BYTES = ((): number => { const mb = Number(process.env['RETNETC_NATIVE_POOL_MB'] ?? 1024); return Number.isFinite(mb) && mb >= 0 ? mb * 2 ** 20 : 2 ** 30; })();
const MAX_LISTS = 256;
/** Every kept list, least recently used first, with the function that removes it from its plan's map. */
const recent = new Map<LaunchList, () => void>();
let pooledBytes = 0;

const bytesOf = (l: LaunchList): number => l.slotWords.reduce((a, w) => a + w.byteLength, 0);
function forget(l: LaunchList): void {
  const drop = recent.get(l);
  if (!drop) return;
  recent.delete(l);
  pooledBytes -= bytesOf(l);
  drop();
}

/** The cached launch list of a prepared plan at the shapes of `inputs`, built on first use. */
export function launchListFor(plan: Plan, entries: NativeEntries, inputs: ReadonlyMap<string, { shape: number[] }>, reuse: boolean): LaunchList {
  let m = lists.get(entries);
  if (!m) lists.set(entries, (m = new Map()));
  const use = (l: LaunchList): LaunchList => { const d = recent.get(l); if (d) { recent.delete(l); recent.set(l, d); } return l; };
  // The most recently used list first (the last in the map), without building the key.
  let last: LaunchList | undefined;
  for (const l of m.values()) last = l;
  if (last && last.reuse === reuse && sameShapes(last, plan, inputs)) return use(last);
  const key = `${reuse ? 1 : 0}|${shapesKey(plan, inputs)}`;
  let l = m.get(key);
  if (l) { m.delete(key); m.set(key, l); return use(l); }
  l = buildLaunchList(plan, entries, inputs, reuse);
  const mine = m;
  m.set(key, l);
  recent.set(l, () => mine.delete(key));
  pooledBytes += bytesOf(l);
  if (m.size > LISTS_PER_PLAN) forget(m.values().next().value!);
  for (const old of recent.keys()) {
    if (old === l || (pooledBytes <= POOL_BYTES && recent.size <= MAX_LISTS)) break;
    forget(old);
  }
  return l;
}

/** Lists and pooled bytes kept now (tests). */
export function launchListStats(): { lists: number; pooledBytes: number } { return { lists: recent.size, pooledBytes }; }
