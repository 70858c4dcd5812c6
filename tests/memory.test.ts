// Activation memory planned by liveness (compiler/memory.ts): the slot assignment never puts two
// tensors that are live at the same launch in one slot (checked here from the launches
// themselves, on plans of every function of models/, forward and backward, every schedule, at
// random sizes); RetNet's layer needs strictly less than one buffer per tensor; and the runners
// that bind intermediates to shared slots (CPU, WebGPU) give outputs identical bit for bit to
// runs with one buffer per tensor, also when reused memory starts as NaN.
import fc from 'fast-check';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { CheckedFn } from '../dsl/checked.js';
import { dconst, dimSymbols } from '../dsl/dims.js';
import type { CVar } from '../dsl/checked.js';
import * as K from '../compiler/kir.js';
import { instantiateModel, loadProgram } from '../dsl/program.js';
import { boundWeights } from '../compiler/model-split.js';
import { checkMemory, formatBytes, kernelAccess, memoryLine, modelMemory, modelMemoryLine, planMemory } from '../compiler/memory.js';
import { compileFunction, compileModel } from '../compiler/pipeline.js';
import { type Plan, planBuffers, ScheduleError, specialisedSizes } from '../compiler/plan.js';
import { type Form, makeSchedule, type StorageDtype } from '../compiler/schedule.js';
import { runModelPlan, type HostValue } from '../runtime/model-runner.js';
import { runPlanCpu as runCpu, type CpuRunOptions } from '../runtime/plan-runner.js';
import type { Value } from '../dsl/reference/interpreter.js';

/** runPlanCpu on host values (f32 and i32 data too, as the model runner passes them). */
const runPlanCpu = (p: Plan, i: ReadonlyMap<string, HostValue>, o?: CpuRunOptions) => runCpu(p, i as ReadonlyMap<string, Value>, o);
import { releaseRuntimeDevice, runPlanWebGPU, runtimeStats } from '../runtime/webgpu/runner.js';
import { assertProperty, fcSeed, prng, runsScale, seedFor } from './helpers/harness.js';
import { acquireTestGpu } from './helpers/webgpu.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const MODELS = ['retention', 'gated_retention', 'linear_attention', 'softmax_attention', 'retnet'];

/** Every function of every model file, once (retnet.ret imports retention.ret). */
const fns: CheckedFn[] = (() => {
  const seen = new Map<string, CheckedFn>();
  for (const m of MODELS) for (const [name, fn] of loadProgram(path.join(ROOT, 'models', `${m}.ret`)).checked!.fns) if (!seen.has(name)) seen.set(name, fn);
  return [...seen.values()];
})();

const FORMS: Form[] = ['parallel', 'recurrent', 'chunkwise'];

/** Symbols of a function's shapes. */
function symbolsOf(fn: CheckedFn): string[] {
  const out = new Set<string>();
  for (const p of [...fn.params, ...fn.outputs]) for (const d of p.shape) for (const s of dimSymbols(d)) out.add(s);
  for (const v of fn.vars.values()) for (const d of v.shape) for (const s of dimSymbols(d)) out.add(s);
  return [...out].sort();
}

const plans = new Map<string, Plan | null>();
/** The plan of (fn, form, backward, dtype) with its specialised sizes at 4 (null: no such schedule). */
function planOf(fn: CheckedFn, form: Form, backward: boolean, dtype: StorageDtype, chunk: number, stateful = false): Plan | null {
  const key = `${fn.name}|${form}|${backward}|${dtype}|${chunk}|${stateful}`;
  if (!plans.has(key)) {
    let p: Plan | null = null;
    try {
      const constants = new Map([...specialisedSizes(fn, backward), ...(fn.name === 'msr' ? ['H'] : [])].map((s) => [s, s === 'H' ? 2 : 4] as const));
      p = compileFunction(fn, makeSchedule(form, chunk, { dtype }), { backward, stateful, constants });
    } catch (e) {
      if (!(e instanceof ScheduleError)) throw e;
    }
    plans.set(key, p);
  }
  return plans.get(key)!;
}

/**
 * Checks a plan's assignment against the launches (not against the planner's own lives): each
 * intermediate's first and last binding launch, slots of tenants whose spans meet, a launch
 * binding two tensors of one slot, sizes, and tensors whose first launch loads them.
 */
function independentProblems(plan: Plan, m: ReturnType<typeof planMemory>): string[] {
  const problems = checkMemory(m);
  const ends = new Set([...plan.fn.params.map((p) => p.v), ...plan.fn.outputs.map((o) => o.v)]);
  const span = new Map<string, [number, number, boolean]>();
  plan.launches.forEach((l, i) => {
    const bySlot = new Map<number, string>();
    const { loads } = kernelAccess(l.kernel);
    for (const [name, id] of Object.entries(l.buffers)) {
      if (ends.has(id)) { if (m.slotOf.has(id)) problems.push(`parameter or output '${id}' has a slot`); continue; }
      const s = m.slotOf.get(id);
      if (s === undefined) { problems.push(`'${id}' bound by launch ${i} has no slot`); continue; }
      const other = bySlot.get(s);
      if (other !== undefined && other !== id) problems.push(`launch ${i} binds '${id}' and '${other}' of slot ${s}`);
      bySlot.set(s, id);
      const sp = span.get(id);
      if (sp) sp[1] = i;
      else span.set(id, [i, i, loads.has(name)]);
    }
  });
  for (const cv of planBuffers(plan)) if (!ends.has(cv.id) && !m.slotOf.has(cv.id)) problems.push(`written '${cv.id}' has no slot`);
  const tenants = new Map<number, string[]>();
  for (const [id, s] of m.slotOf) { let l = tenants.get(s); if (!l) tenants.set(s, (l = [])); l.push(id); }
  for (const [s, ids] of tenants) {
    const spans = ids.map((id) => ({ id, sp: span.get(id) })).filter((x): x is { id: string; sp: [number, number, boolean] } => !!x.sp).sort((a, b) => a.sp[0] - b.sp[0]);
    for (let i = 1; i < spans.length; i++) {
      for (let j = 0; j < i; j++) if (!(spans[j]!.sp[1] < spans[i]!.sp[0])) problems.push(`slot ${s}: '${spans[j]!.id}' ${spans[j]!.sp} meets '${spans[i]!.id}' ${spans[i]!.sp}`);
      if (spans[i]!.sp[2]) problems.push(`slot ${s}: '${spans[i]!.id}' reads before writing but follows '${spans[0]!.id}'`);
    }
    for (const id of ids) if (m.slots[s]!.bytes < m.bytesOf.get(id)!) problems.push(`slot ${s} too small for '${id}'`);
  }
  return problems;
}

describe('the slot assignment', () => {
  it('never shares a slot between tensors live at one launch, for every function of models/, forward and backward, every schedule', async () => {
    const seed = fcSeed('memory');
    let planned = 0, shared = 0;
    const arb = fc.record({
      fn: fc.integer({ min: 0, max: fns.length - 1 }),
      form: fc.constantFrom(...FORMS),
      backward: fc.boolean(),
      stateful: fc.boolean(),
      dtype: fc.constantFrom<StorageDtype>('f32', 'f16'),
      chunk: fc.constantFrom(2, 4, 16),
      sizes: fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 12, maxLength: 12 }),
    });
    // Every (function, form, direction) once at fixed sizes, then random cases.
    const examples = fns.flatMap((_, f) => FORMS.flatMap((form) => [false, true].map((backward) => ({ fn: f, form, backward, stateful: false, dtype: 'f32' as StorageDtype, chunk: 4, sizes: Array.from({ length: 12 }, (_, i) => 3 + i) }))));
    await assertProperty(arb, (c) => {
      const fn = fns[c.fn]!;
      // The stateful form (forward only) of functions that have one.
      const plan = planOf(fn, c.form, c.backward, c.dtype, c.chunk, c.stateful && !c.backward);
      if (!plan) return;
      const sizes = new Map(symbolsOf(fn).map((s, i) => [s, c.sizes[i % 12]!] as const));
      for (const [k, v] of plan.constants) sizes.set(k, v);
      const m = planMemory(plan, sizes);
      const where = `${fn.name} ${c.form}${c.backward ? ' backward' : c.stateful ? ' stateful' : ''} ${c.dtype} chunk ${c.chunk} at ${JSON.stringify([...sizes])}`;
      expect(independentProblems(plan, m), where).toEqual([]);
      expect(m.peakBytes, where).toBeLessThanOrEqual(m.naiveBytes);
      expect(m.peakBytes, where).toBeGreaterThanOrEqual(m.boundBytes);
      const off = planMemory(plan, sizes, { reuse: false });
      expect(off.peakBytes).toBe(off.naiveBytes);
      expect(off.slots.length).toBe(off.lives.size);
      planned++;
      if (m.slots.length < m.lives.size) shared++;
    }, { seed: seedFor(seed, 'slots'), randomRuns: Math.round(150 * runsScale()), examples, timeLimitMs: 120_000 });
    console.log(`[memory] ${planned} plans checked, ${shared} with shared slots`);
    expect(planned).toBeGreaterThan(examples.length / 2);
    expect(shared).toBeGreaterThan(0);
  }, 180_000);

  it('is exact on random synthetic plans: chains of launches reading and writing random tensors, some accumulating into zeroed memory', async () => {
    const seed = fcSeed('memory-synthetic');
    // Each launch: the tensors it reads (earlier ones), the one it writes, whether it loads it too.
    const arb = fc.array(fc.record({ reads: fc.array(fc.nat(30), { maxLength: 3 }), size: fc.integer({ min: 0, max: 50 }), accumulate: fc.boolean(), again: fc.nat(30), rewrite: fc.boolean() }), { minLength: 1, maxLength: 24 });
    let zeros = 0;
    await assertProperty(arb, (ls) => {
      const vars = new Map<string, CVar>();
      const mk = (id: string, n: number): CVar => ({ id, name: id, dtype: 'f32', shape: [dconst(n)], role: 'local' as CVar['role'] });
      vars.set('x', mk('x', 5));
      const written: string[] = [];
      const launches: Plan['launches'] = ls.map((l, i) => {
        // A launch writes a new tensor, or (rewrite) again one written before.
        const target = l.rewrite && written.length ? written[l.again % written.length]! : `t${i}`;
        if (!vars.has(target)) { vars.set(target, mk(target, l.size)); written.push(target); }
        const reads = [...new Set(l.reads.map((r) => (written.length && r % 4 ? written[r % written.length]! : 'x')))].filter((r) => r !== target);
        const buffers: Record<string, string> = {};
        const kb: K.KBuffer[] = [];
        const body: K.KStmt[] = [];
        let value: K.KExpr = K.f32(1);
        reads.forEach((r, j) => { buffers[`r${j}`] = r; kb.push({ name: `r${j}`, type: 'f32', access: 'read' }); value = K.add(value, K.load(`r${j}`, K.i32(0))); });
        if (l.accumulate) value = K.add(value, K.load('o', K.i32(0)));
        buffers['o'] = target;
        kb.push({ name: 'o', type: 'f32', access: 'read_write' });
        body.push(K.store('o', K.i32(0), value));
        return { kernel: { name: `k${i}`, workgroup: [1, 1, 1], grid: [K.i32(1), K.i32(1), K.i32(1)], buffers: kb, scalars: [], shared: [], body }, buffers, scalars: {}, target, how: 'elementwise' };
      });
      const last = launches[launches.length - 1]!.target;
      const plan = {
        fn: { name: 'synthetic', sizes: [], params: [{ name: 'x', v: 'x', dtype: 'f32', shape: [dconst(5)] }], outputs: [{ name: 'y', v: last, dtype: 'f32', shape: vars.get(last)!.shape }], vars, body: [] },
        schedule: makeSchedule('parallel'), launches, constants: new Map(), contractions: new Map(), half: new Map(), states: [],
      } as unknown as Plan;
      const m = planMemory(plan, new Map());
      zeros += [...m.lives.values()].filter((t) => t.zero).length;
      expect(independentProblems(plan, m)).toEqual([]);
      expect(m.peakBytes).toBeLessThanOrEqual(m.naiveBytes);
      expect(m.peakBytes).toBeGreaterThanOrEqual(m.boundBytes);
    }, { seed: seedFor(seed, 'synthetic'), randomRuns: Math.round(300 * runsScale()), examples: [], timeLimitMs: 60_000 });
    expect(zeros).toBeGreaterThan(0);
  });

  it('strictly reuses memory in RetNet\'s layer (tiny), forward and backward', () => {
    const model = instantiateModel(loadProgram(path.join(ROOT, 'models', 'retnet.ret')), 'retnet', 'tiny');
    for (const form of FORMS) {
      const mp = compileModel(model, makeSchedule(form, 16));
      const st = mp.program.steps.find((s) => s.scope?.startsWith('layers.'))!;
      const fn = mp.program.fns[st.fn]!;
      for (const backward of [false, true]) {
        const plan = backward ? compileFunction(fn, makeSchedule(form, 16), { backward: true }) : mp.plans[st.fn]!;
        const sizes = new Map([['B', 2], ['T', 64]]);
        const m = planMemory(plan, sizes);
        expect(independentProblems(plan, m)).toEqual([]);
        expect(m.peakBytes, `${form}${backward ? ' backward' : ''}`).toBeLessThan(m.naiveBytes);
        expect(m.slots.length).toBeLessThan(m.lives.size);
      }
    }
  });

  it('reports peak and naive bytes (retention at B=1 H=8 T=4096 K=V=64; RetNet tiny and base at B=1 T=1024)', () => {
    const ret = fns.find((f) => f.name === 'retention')!;
    const sizes = new Map([['B', 1], ['H', 8], ['T', 4096], ['K', 64], ['V', 64]]);
    for (const backward of [false, true]) {
      const plan = compileFunction(ret, makeSchedule('chunkwise', 64), { backward, constants: new Map([['K', 64], ['V', 64]]) });
      const line = memoryLine(plan, new Map([['T', 4096]]));
      expect(memoryLine(plan, sizes)).toBe(line);
      expect(line).toMatch(/^memory: peak \d+\.\d (KiB|MiB|GiB) \(naive \d+\.\d (KiB|MiB|GiB)\) at B=1 H=8 K=64 T=4096 V=64$/);
      console.log(`[memory] retention chunkwise${backward ? ' backward' : ''}: ${line}`);
    }
    const prog = loadProgram(path.join(ROOT, 'models', 'retnet.ret'));
    for (const size of ['tiny', 'base']) {
      const model = instantiateModel(prog, 'retnet', size);
      const sched = makeSchedule('chunkwise', 64);
      const mp = compileModel(model, sched);
      const backward = mp.program.fns.map((fn) => compileFunction(fn, sched, { backward: true }));
      const msz = new Map([['B', 1], ['T', 1024]]);
      const mm = modelMemory({ program: mp.program, forward: mp.plans, backward, sizes: msz });
      const naive = modelMemory({ program: mp.program, forward: mp.plans, backward, sizes: msz, opts: { reuse: false } });
      // Base's forward peak is its output layer (the logits), where nothing is left to share.
      expect(mm.forwardPeakBytes).toBeLessThanOrEqual(naive.forwardPeakBytes);
      expect(mm.trainPeakBytes).toBeLessThanOrEqual(naive.trainPeakBytes);
      expect(mm.forwardPeakBytes).toBeLessThanOrEqual(mm.forwardNaiveBytes);
      expect(modelMemoryLine(mp.program, mp.plans, backward)).toMatch(/^memory: forward peak .* \(every tensor on its own .*\); forward \+ backward .* \(kept activations .*\) at B=1 T=1024$/);
      if (size === 'tiny') console.log(`[memory] ${modelMemoryLine(mp.program, mp.plans, backward)}`);
      const layer = mp.program.steps.find((s) => s.scope?.startsWith('layers.'))!;
      const lf = planMemory(mp.plans[layer.fn]!, new Map([...msz, ...mp.plans[layer.fn]!.constants]));
      const lb = planMemory(backward[layer.fn]!, new Map([...msz, ...backward[layer.fn]!.constants]));
      console.log(`[memory] retnet ${size} chunkwise at B=1 T=1024: weights ${formatBytes(mm.weightBytes)}; forward peak ${formatBytes(mm.forwardPeakBytes)} (no reuse ${formatBytes(naive.forwardPeakBytes)}, every tensor ${formatBytes(mm.forwardNaiveBytes)}); `
        + `forward + backward ${formatBytes(mm.trainPeakBytes)} (no reuse ${formatBytes(naive.trainPeakBytes)}; kept ${formatBytes(mm.keptBytes)}); `
        + `one layer: forward ${formatBytes(lf.peakBytes)} (naive ${formatBytes(lf.naiveBytes)}, bound ${formatBytes(lf.boundBytes)}, ${lf.slots.length} slots for ${lf.lives.size}), backward ${formatBytes(lb.peakBytes)} (naive ${formatBytes(lb.naiveBytes)}, bound ${formatBytes(lb.boundBytes)}, ${lb.slots.length} slots for ${lb.lives.size})`);
    }
  });
});

// ---- outputs unchanged ------------------------------------------------------------------------

const bits = (d: ArrayLike<number>): Uint32Array => new Uint32Array(Float32Array.from(d).buffer);
function expectSameBits(a: Map<string, { data: ArrayLike<number> }>, b: Map<string, { data: ArrayLike<number> }>, where: string): void {
  expect([...a.keys()].sort(), where).toEqual([...b.keys()].sort());
  for (const [k, v] of a) {
    const x = bits(v.data), y = bits(b.get(k)!.data);
    expect(x.length, `${where}: ${k}`).toBe(y.length);
    let diff = -1;
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) { diff = i; break; }
    expect(diff, `${where}: ${k} differs at ${diff}`).toBe(-1);
  }
}

const rand = prng(7);
const tensorOf = (shape: number[], scale = 1): HostValue => ({ shape, data: Float64Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => Math.fround((rand() * 2 - 1) * scale)) });

function retentionCase(backward: boolean, dtype: StorageDtype = 'f32'): { plan: Plan; inputs: Map<string, HostValue> } {
  const fn = fns.find((f) => f.name === 'retention')!;
  const [B, H, T, K, V] = [2, 2, 37, 8, 8];
  const plan = compileFunction(fn, makeSchedule('chunkwise', 8, { dtype }), { backward, constants: new Map([['K', K], ['V', V]]) });
  const inputs = new Map<string, HostValue>([['q', tensorOf([B, H, T, K])], ['k', tensorOf([B, H, T, K])], ['v', tensorOf([B, H, T, V])], ['gamma', { shape: [H], data: Float64Array.of(0.9, 0.97) }]]);
  if (backward) inputs.set('grad.o', tensorOf([B, H, T, V]));
  return { plan, inputs };
}

const tiny = () => {
  const model = instantiateModel(loadProgram(path.join(ROOT, 'models', 'retnet.ret')), 'retnet', 'tiny');
  const mp = compileModel(model, makeSchedule('chunkwise', 8));
  const weights = new Map<string, HostValue>();
  for (const [name, w] of boundWeights(mp.program)) {
    const shape = w.shape.map((d) => [...d].reduce((a, [k, c]) => (k === '' ? a + c : a), 0));
    weights.set(name, tensorOf(shape, name.includes('norm') ? 1 : 0.2));
  }
  const [B, T] = [2, 13];
  const tokens: HostValue = { shape: [B, T], data: Int32Array.from({ length: B * T }, (_, i) => (i * 7) % 61) };
  return { model, mp, weights, inputs: new Map([['tokens', tokens]]) };
};

/** The tiny RetNet layer's gradient plan with its inputs (the most intermediates of any plan here). */
function layerBackwardCase(t: ReturnType<typeof tiny>, dtype: StorageDtype = 'f32'): { plan: Plan; inputs: Map<string, HostValue> } {
  const st = t.mp.program.steps.find((s) => s.scope?.startsWith('layers.'))!;
  const plan = compileFunction(t.mp.program.fns[st.fn]!, makeSchedule('chunkwise', 8, { dtype }), { backward: true });
  const inputs = new Map<string, HostValue>();
  for (const p of plan.fn.params) {
    if (p.shape.length === 0) continue;
    const src = st.inputs.get(p.name);
    if (src?.kind === 'weight') inputs.set(p.name, t.weights.get(src.name)!);
    else inputs.set(p.name, tensorOf([2, 13, 64]));
  }
  return { plan, inputs };
}

describe('outputs with shared slots are those with one buffer per tensor, bit for bit', () => {
  it('on the CPU: retention chunkwise forward and backward, the tiny RetNet forward, its layer\'s backward; reused memory poisoned with NaN', async () => {
    for (const backward of [false, true]) {
      const { plan, inputs } = retentionCase(backward);
      const off = runPlanCpu(plan, inputs, { reuse: false });
      expectSameBits(runPlanCpu(plan, inputs, { reuse: true }), off, `retention${backward ? ' backward' : ''}`);
      expectSameBits(runPlanCpu(plan, inputs, { reuse: true, poison: NaN }), off, `retention${backward ? ' backward' : ''} poisoned`);
    }
    const t = tiny();
    const run = (opts: CpuRunOptions) => runModelPlan(t.mp, t.weights, t.inputs, async (p, i) => runPlanCpu(p, i, opts));
    const off = (await run({ reuse: false })).outputs;
    expect([...off.get('logits')!.data].every(Number.isFinite)).toBe(true);
    expectSameBits((await run({ reuse: true })).outputs, off, 'retnet tiny');
    expectSameBits((await run({ reuse: true, poison: NaN })).outputs, off, 'retnet tiny poisoned');
    const lb = layerBackwardCase(t);
    const m = planMemory(lb.plan, new Map([['B', 2], ['T', 13], ...lb.plan.constants]));
    expect(m.slots.length).toBeLessThan(m.lives.size);
    const loff = runPlanCpu(lb.plan, lb.inputs, { reuse: false });
    expectSameBits(runPlanCpu(lb.plan, lb.inputs, { reuse: true, poison: NaN }), loff, 'retnet layer backward poisoned');
    // Half storage: 2-byte tensors share slots with 4-byte ones.
    for (const dtype of ['bf16'] as const) {
      const h = layerBackwardCase(t, dtype);
      expect(h.plan.half.size).toBeGreaterThan(0);
      expectSameBits(runPlanCpu(h.plan, h.inputs, { reuse: true, poison: NaN }), runPlanCpu(h.plan, h.inputs, { reuse: false }), `retnet layer backward ${dtype} poisoned`);
    }
  }, 120_000);

  const gpuP = acquireTestGpu('memory');
  afterAll(async () => { if ((await gpuP).gpu) await releaseRuntimeDevice(); });

  it('on WebGPU: the same plans with and without reuse', async (ctx) => {
    const g = await gpuP;
    if (g.unexpected) throw g.unexpected;
    if (!g.gpu) ctx.skip();
    for (const backward of [false, true]) {
      const { plan, inputs } = retentionCase(backward);
      const off = await runPlanWebGPU(plan, inputs, { reuse: false });
      expectSameBits(await runPlanWebGPU(plan, inputs, { reuse: true }), off, `webgpu retention${backward ? ' backward' : ''}`);
    }
    const t = tiny();
    const run = (reuse: boolean) => runModelPlan(t.mp, t.weights, t.inputs, async (p, i) => runPlanWebGPU(p, i, { reuse }));
    const off = (await run(false)).outputs;
    expectSameBits((await run(true)).outputs, off, 'webgpu retnet tiny');
    // Buffers each run acquires from the pool: one per slot with reuse, one per tensor without.
    const acquired = async (p: Plan, i: Map<string, HostValue>, reuse: boolean) => {
      const before = runtimeStats()!.pool;
      const out = await runPlanWebGPU(p, i, { reuse });
      const after = runtimeStats()!.pool;
      return { out, buffers: after.hits + after.misses - before.hits - before.misses };
    };
    const lb = layerBackwardCase(t);
    const on = await acquired(lb.plan, lb.inputs, true);
    const offl = await acquired(lb.plan, lb.inputs, false);
    expectSameBits(on.out, offl.out, 'webgpu retnet layer backward');
    const m = planMemory(lb.plan, new Map([['B', 2], ['T', 13], ...lb.plan.constants]));
    expect(offl.buffers - on.buffers).toBe(m.lives.size - m.slots.length);
    if (g.gpu!.device.features.has('shader-f16')) {
      const r = retentionCase(true, 'f16');
      expectSameBits(await runPlanWebGPU(r.plan, r.inputs, { reuse: true }), await runPlanWebGPU(r.plan, r.inputs, { reuse: false }), 'webgpu retention backward f16');
    } else console.warn('[memory] no shader-f16: the f16 runs on WebGPU are skipped');
  }, 240_000);
});

// ---- CUDA, against the mock driver ----------------------------------------------------------

// Run in a process of its own (the addon loads its driver once per process), bundled by esbuild:
// plans run through runPlanCuda with reuse on and a contract-stub printer; the mock logs every
// allocation and, per launch, the allocation each pointer argument lies in.
const CUDA_SCRIPT = String.raw`
import * as fs from 'node:fs';
import { compilePlan } from 'ROOT/compiler/plan.ts';
import { makeSchedule } from 'ROOT/compiler/schedule.ts';
import { planMemory } from 'ROOT/compiler/memory.ts';
import { loadProgram } from 'ROOT/dsl/program.ts';
import { planSizes } from 'ROOT/runtime/plan-runner.ts';
import { runPlanCuda, CudaPlanRun } from 'ROOT/runtime/cuda/runner.ts';
const C = { f32: 'float', i32: 'int', bool: 'int' };
const stubEmit = (k) => ({
  target: 'cuda', entry: k.name,
  code: 'extern "C" __global__ void ' + k.name + '(' + [...k.buffers.map((b) => (b.storage ? 'unsigned short' : C[b.type]) + '* ' + b.name), ...k.scalars.map((x) => C[x.type] + ' ' + x.name)].join(', ') + ') {}\n',
  workgroup: k.workgroup,
  buffers: k.buffers.map((b, i) => ({ name: b.name, type: b.type, ...(b.storage ? { storage: b.storage } : {}), access: b.access, binding: i })),
  scalars: k.scalars.map((x, i) => ({ name: x.name, type: x.type, offset: k.buffers.length + i })),
  grid: k.grid, foldX: false, dynamicSharedBytes: 0,
});
const [log] = process.argv.slice(2);
// gated retention's backward: enough intermediates that some share a slot (retention's, after map fusion, has too few)
const fn = loadProgram('ROOT/models/gated_retention.ret').checked.fns.get('gated_retention');
const [B, H, T, K, V] = [2, 3, 70, 8, 8];
const mk = (shape) => ({ shape, data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(i)) });
const problems = [];
let shared = 0;
for (const form of ['chunkwise', 'recurrent']) {
  const plan = compilePlan(fn, makeSchedule(form, 16), { backward: true, constants: new Map([['K', K], ['V', V]]) });
  const inputs = new Map([['q', mk([B, H, T, K])], ['k', mk([B, H, T, K])], ['v', mk([B, H, T, V])], ['g', { shape: [B, H, T], data: Float32Array.from({ length: B * H * T }, (_, i) => -0.05 - 0.1 * Math.abs(Math.sin(i))) }], ['grad.o', mk([B, H, T, V])]]);
  const mem = planMemory(plan, planSizes(plan, inputs));
  for (const reuse of [true, false]) {
    fs.writeFileSync(log, '');
    const run = await CudaPlanRun.create(plan, inputs, { emit: stubEmit, reuse });
    const bytes = run.deviceBytes;
    run.launch();
    run.read();
    run.dispose();
    const lines = fs.readFileSync(log, 'utf8').split('\n');
    const allocs = new Map(lines.map((l) => /^alloc (buf\d+) (\d+)$/.exec(l)).filter(Boolean).map((m) => [m[1], Number(m[2])]));
    const launches = lines.filter((l) => l.startsWith('launch '));
    const bufOf = new Map();
    launches.forEach((line, i) => {
      const args = line.split(' args ')[1].split(' ');
      plan.launches[i].kernel.buffers.forEach((b, j) => {
        const m = /^(buf\d+)(\+\d+)?:(\d+):/.exec(args[j]);
        const id = plan.launches[i].buffers[b.name];
        if (!m || m[2]) { problems.push(form + ': ' + id + ' bound as ' + args[j]); return; }
        if (bufOf.has(id) && bufOf.get(id) !== m[1]) problems.push(form + ': ' + id + ' in two allocations');
        bufOf.set(id, m[1]);
      });
    });
    const ends = new Set([...plan.fn.params.map((p) => p.v), ...plan.fn.outputs.map((o) => o.v)]);
    const ids = [...bufOf.keys()];
    for (const a of ids) for (const b of ids) {
      if (a >= b) continue;
      const same = bufOf.get(a) === bufOf.get(b);
      const want = reuse && !ends.has(a) && !ends.has(b) && mem.slotOf.get(a) === mem.slotOf.get(b);
      if (same !== want) problems.push(form + (reuse ? '' : ' no reuse') + ': ' + a + ' and ' + b + (same ? ' share an allocation' : ' do not share one'));
      if (same) shared++;
    }
    for (const [id, s] of mem.slotOf) if (reuse && bufOf.has(id) && allocs.get(bufOf.get(id)) !== mem.slots[s].bytes) problems.push(form + ': the allocation of slot ' + s + ' has ' + allocs.get(bufOf.get(id)) + ' bytes, the slot ' + mem.slots[s].bytes);
    const want = reuse ? mem.peakBytes : mem.naiveBytes;
    if (bytes !== want) problems.push(form + (reuse ? '' : ' no reuse') + ': deviceBytes ' + bytes + ', planned ' + want);
  }
}
process.stdout.write(JSON.stringify({ problems, shared }) + '\n');
`;

describe('the CUDA runner with reuse: true, against the mock driver', () => {
  it('binds tensors of one slot to one allocation of the slot\'s size, every other tensor to its own', async () => {
    const which = (cmd: string) => (process.env['PATH'] ?? '').split(path.delimiter).map((d) => path.join(d, cmd)).find((p) => fs.existsSync(p));
    const cc = which('cc') ?? which('gcc');
    const addon = path.join(ROOT, 'runtime', 'cuda', 'addon', 'build', 'Release', 'retnetc_cuda.node');
    if (!cc || !which('nvcc') || !fs.existsSync(addon)) throw new Error(`needs cc, nvcc and the CUDA addon (tests/cuda-runtime.test.ts builds it): cc ${cc}, addon ${fs.existsSync(addon)}`);
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'retnetc-memory-'));
    try {
      const lib = path.join(tmp, 'libcuda_mock.so');
      const b = spawnSync(cc, ['-shared', '-fPIC', '-O1', '-o', lib, path.join(ROOT, 'runtime', 'cuda', 'mock', 'libcuda_mock.c')], { encoding: 'utf8' });
      expect(b.status, b.stderr).toBe(0);
      const src = path.join(tmp, 'script.ts');
      fs.writeFileSync(src, CUDA_SCRIPT.replaceAll('ROOT/', `${ROOT}/`));
      const esbuild = await import('esbuild');
      const out = path.join(tmp, 'script.mjs');
      await esbuild.build({ entryPoints: [src], bundle: true, platform: 'node', format: 'esm', target: 'node20', outfile: out, logLevel: 'error' });
      const log = path.join(tmp, 'log');
      const r = spawnSync(process.execPath, [out, log], { encoding: 'utf8', timeout: 240_000, env: { ...process.env, RETNETC_CUDA_ADDON: addon, RETNETC_LIBCUDA: lib, RETNETC_CUDA_CACHE: path.join(tmp, 'cache'), RETNETC_CUDA_FORMAT: 'ptx', MOCK_CUDA_LOG: log } });
      expect(r.status, r.stderr).toBe(0);
      const res = JSON.parse(r.stdout) as { problems: string[]; shared: number };
      expect(res.problems).toEqual([]);
      expect(res.shared).toBeGreaterThan(0);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }, 240_000);
});
