// The derived stateful form (compiler/stateful.ts): a prefix prefilled with the chunkwise or
// parallel schedule returns the state; the rest, decoded one position at a time by the
// recurrent schedule from that state (t0 = the position), equals one pass over everything.
// For every family function that has a state form and for the whole RetNet.
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { dimToString } from '../dsl/dims.js';
import { instantiateModel, loadProgram } from '../dsl/program.js';
import type { CheckedFn, CParam } from '../dsl/checked.js';
import { runFunction, runModel, type Value } from '../dsl/reference/interpreter.js';
import { compileFunction, compileModel } from '../compiler/pipeline.js';
import { type Plan, ScheduleError } from '../compiler/plan.js';
import { type Form, makeSchedule } from '../compiler/schedule.js';
import { stateBytes, T0 } from '../compiler/stateful.js';
import { runPlanCpu } from '../runtime/plan-runner.js';
import { type HostValue, runModelPlan } from '../runtime/model-runner.js';
import { runPlanWebGPU } from '../runtime/webgpu/runner.js';
import { acquireTestGpu, requireGpu } from './helpers/webgpu.js';
import { assertProperty, f32Conditioning, fcSeed, prng, relErr, runsScale, seedFor, uniform } from './helpers/harness.js';

const SEED = fcSeed('stateful');
const TOL = 1e-5;
const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

/** The time axis of a parameter (the dim spelled T), or -1. */
const timeAxis = (p: CParam): number => p.shape.findIndex((d) => dimToString(d) === 'T');

/** Positions [from, to) along `axis` of a row-major tensor. */
function sliceAxis(v: HostValue, axis: number, from: number, to: number): HostValue {
  const outer = numel(v.shape.slice(0, axis)), n = v.shape[axis]!, inner = numel(v.shape.slice(axis + 1));
  const shape = [...v.shape];
  shape[axis] = to - from;
  const data = v.data instanceof Int32Array ? new Int32Array(outer * (to - from) * inner) : new Float64Array(outer * (to - from) * inner);
  for (let o = 0; o < outer; o++) data.set(v.data.subarray((o * n + from) * inner, (o * n + to) * inner), o * (to - from) * inner);
  return { shape, data };
}

/** Concatenates blocks along `axis`. */
function concatAxis(blocks: HostValue[], axis: number): HostValue {
  const shape = [...blocks[0]!.shape];
  shape[axis] = blocks.reduce((a, b) => a + b.shape[axis]!, 0);
  const outer = numel(shape.slice(0, axis)), inner = numel(shape.slice(axis + 1));
  const data = new Float64Array(numel(shape));
  let at = 0;
  for (const b of blocks) {
    const n = b.shape[axis]!;
    for (let o = 0; o < outer; o++) data.set(b.data.subarray(o * n * inner, (o + 1) * n * inner), (o * shape[axis]! + at) * inner);
    at += n;
  }
  return { shape, data };
}

/** Block boundaries: [0, P) prefilled, then one position at a time. */
const pieces = (T: number, P: number): [number, number][] => [...(P > 0 ? [[0, P] as [number, number]] : []), ...Array.from({ length: T - P }, (_, i) => [P + i, P + i + 1] as [number, number])];

interface FnCase { B: number; H: number; T: number; K: number; V: number; P: number; chunk: number; form: Form; gammas: number[] }

const fnCase = fc.record({
  B: fc.integer({ min: 1, max: 2 }), H: fc.integer({ min: 1, max: 3 }), T: fc.integer({ min: 1, max: 40 }),
  K: fc.constantFrom(1, 2, 3, 5, 8, 16), V: fc.constantFrom(1, 2, 4, 7, 9), P: fc.nat({ max: 40 }),
  chunk: fc.integer({ min: 1, max: 16 }), form: fc.constantFrom<Form>('chunkwise', 'parallel'),
  gammas: fc.array(fc.double({ min: 0.5, max: 1 - 2 ** -20, noNaN: true }), { minLength: 3, maxLength: 3 }),
}).map((c) => ({ ...c, P: c.P % (c.T + 1) }));


type Exec = (p: Plan, i: Map<string, HostValue>) => Promise<Map<string, HostValue>>;
const cpuExec: Exec = async (p, i) => runPlanCpu(p, i as Map<string, Value>) as Map<string, HostValue>;

async function checkFnCase(fn: CheckedFn, c: FnCase, exec: Exec): Promise<void> {
  const name = fn.name;
  const rand = prng(seedFor(SEED, `${name}${JSON.stringify(c)}`));
  const inputs = inputsFor(fn, c, rand);
  const whole = runFunction(fn, inputs);
  const constants = new Map([['K', c.K], ['V', c.V]]);
  const prefill = compileFunction(fn, makeSchedule(c.form, c.chunk), { stateful: true, constants });
  const step = compileFunction(fn, makeSchedule('recurrent'), { stateful: true, constants });
  expect(prefill.states.length).toBeGreaterThan(0);
  let state = new Map<string, HostValue>();
  const outs = new Map<string, HostValue[]>(fn.outputs.map((o) => [o.name, []]));
  for (const [from, to] of pieces(c.T, c.P)) {
    const plan = to - from > 1 || from === 0 ? prefill : step;
    const args = new Map<string, HostValue>();
    for (const p of fn.params) { const ax = timeAxis(p); args.set(p.name, ax < 0 ? inputs.get(p.name)! : sliceAxis(inputs.get(p.name)!, ax, from, to)); }
    args.set(T0, { shape: [], data: Int32Array.of(from) });
    for (const st of plan.states) {
      const sizes = new Map([['B', c.B], ['H', c.H], ['K', c.K], ['V', c.V]]);
      const shape = st.shape.map((d) => [...d].reduce((a, [mono, k]) => a + k * (mono ? mono.split('*').reduce((x, y) => x * sizes.get(y)!, 1) : 1), 0));
      args.set(st.input, state.get(st.name) ?? { shape, data: new Float32Array(numel(shape)) });
    }
    const r = await exec(plan, args);
    for (const o of fn.outputs) outs.get(o.name)!.push(r.get(o.name)!);
    state = new Map(plan.states.map((st) => [st.name, r.get(st.output)!] as const));
  }
  for (const o of fn.outputs) {
    const got = concatAxis(outs.get(o.name)!, timeAxis(o));
    const e = relErr(got.data, whole.get(o.name)!.data);
    if (!(e.rel <= TOL)) throw new Error(`${name} ${JSON.stringify(c)}: ${o.name} rel. RMSE ${e.rel.toExponential(2)} > ${TOL} (reproduce with FC_SEED=${SEED})`);
  }
}

const FAMILY = [['models/retention.ret', 'retention'], ['models/gated_retention.ret', 'gated_retention'], ['models/linear_attention.ret', 'linear_attention']] as const;

function inputsFor(fn: CheckedFn, c: FnCase, rand: () => number): Map<string, Value> {
  const size: Record<string, number> = { B: c.B, H: c.H, T: c.T, K: c.K, V: c.V };
  const m = new Map<string, Value>();
  for (const p of fn.params) {
    const shape = p.shape.map((d) => size[dimToString(d)]!);
    if (p.name === 'gamma') m.set(p.name, { shape, data: Float64Array.from({ length: c.H }, (_, h) => c.gammas[h]!) });
    else if (p.name === 'g') m.set(p.name, { shape, data: Float64Array.from({ length: numel(shape) }, () => Math.log(0.3 + 0.7 * rand())) });
    else m.set(p.name, uniform(shape, rand));
  }
  return m;
}

describe('stateful form of the family functions: prefill, then recurrent decoding', () => {
  for (const [file, name] of FAMILY) {
    const fn = loadProgram(file).checked!.fns.get(name)!;
    test(`${name}: prefill (chunkwise or parallel, random chunk) of a random prefix, then one position at a time, equals the whole pass (<= ${TOL})`, async () => {
      const examples: FnCase[] = [
        { B: 2, H: 2, T: 37, K: 8, V: 5, P: 29, chunk: 8, form: 'chunkwise', gammas: [0.9, 1 - 2 ** -20, 0.5] },
        { B: 1, H: 3, T: 20, K: 3, V: 4, P: 0, chunk: 4, form: 'parallel', gammas: [0.5, 0.75, 0.99] },
        { B: 1, H: 1, T: 9, K: 2, V: 2, P: 9, chunk: 16, form: 'chunkwise', gammas: [0.6, 0.6, 0.6] },
      ];
      await assertProperty(fnCase, (c) => checkFnCase(fn, c, cpuExec), { seed: seedFor(SEED, name), randomRuns: 12, examples, timeLimitMs: 120_000 });
    }, 180_000);
  }

  test('retention: the state is [B, H, K, V] f32, named after its statement; bytes per sequence', () => {
    const fn = loadProgram('models/retention.ret').checked!.fns.get('retention')!;
    const p = compileFunction(fn, makeSchedule('chunkwise', 16), { stateful: true, constants: new Map([['K', 64], ['V', 128]]) });
    expect(p.states.map((s) => [s.name, s.shape.map(dimToString).join(','), s.axes.join(',')])).toEqual([['o', 'B,H,K,V', 'b,h,i,j']]);
    expect(p.fn.params.map((q) => q.name)).toEqual(['q', 'k', 'v', 'gamma', T0, 'state.o']);
    expect(p.fn.outputs.map((q) => q.name)).toEqual(['o', 'state.o.next']);
    expect(stateBytes(p.states, new Map([['H', 8], ['K', 64], ['V', 128]]))).toEqual({ perSequence: 8 * 64 * 128 * 4, shared: 0 });
  });

  test('a sum with no causal state form has no stateful form, and says why', () => {
    const fn = loadProgram('models/softmax_attention.ret').checked!.fns.get('softmax_attention')!;
    expect(() => compileFunction(fn, makeSchedule('recurrent'), { stateful: true, constants: new Map([['K', 4], ['V', 4]]) })).toThrow(ScheduleError);
  });
});

const program = loadProgram('models/retnet.ret');
interface ModelCase { T: number; P: number; chunk: number; form: Form; heads: number; act: string; scale: number; lnEmb: number; B: number; valueDim: number }
const modelCase = fc.record({
  T: fc.integer({ min: 1, max: 24 }), P: fc.nat({ max: 24 }), chunk: fc.integer({ min: 1, max: 12 }), form: fc.constantFrom<Form>('chunkwise', 'parallel'),
  heads: fc.constantFrom(1, 2, 4), act: fc.constantFrom('swish', 'gelu'), scale: fc.constantFrom(0, 1), lnEmb: fc.constantFrom(0, 1), B: fc.integer({ min: 1, max: 2 }),
  // 16: the value head size equals the key head size (a case the analysis once misread).
  valueDim: fc.constantFrom(16, 24),
}).map((c) => ({ ...c, P: c.P % (c.T + 1) }));

const MODEL_EXAMPLES: ModelCase[] = [
  { T: 21, P: 13, chunk: 5, form: 'chunkwise', heads: 2, act: 'swish', scale: 0, lnEmb: 0, B: 2, valueDim: 24 },
  { T: 11, P: 6, chunk: 3, form: 'chunkwise', heads: 2, act: 'gelu', scale: 0, lnEmb: 0, B: 1, valueDim: 16 },
  { T: 9, P: 0, chunk: 4, form: 'parallel', heads: 4, act: 'gelu', scale: 1, lnEmb: 1, B: 1, valueDim: 24 },
];

async function checkModelCase(c: ModelCase, exec: Exec): Promise<void> {
  const rand = prng(seedFor(SEED, `retnet${JSON.stringify(c)}`));
  const model = instantiateModel(program, 'retnet', 'default', { embed_dim: 16, value_dim: c.valueDim, heads: c.heads, ffn_dim: 20, n_layers: 2, vocab: 13, act: c.act, scale_embedding: c.scale, layernorm_embedding: c.lnEmb });
  const weights = new Map<string, Value>();
  for (const w of model.weights) weights.set(w.name, uniform(w.shape, rand));
  const tokens: Value = { shape: [c.B, c.T], data: Float64Array.from({ length: c.B * c.T }, () => Math.floor(rand() * 13)) };
  const whole = runModel(model, weights, new Map([['tokens', tokens]])).get('logits')!;
  const prefill = compileModel(model, makeSchedule(c.form, c.chunk), { stateful: true });
  const step = compileModel(model, makeSchedule('recurrent'), { stateful: true });
  expect(prefill.states.map((s) => s.name)).toEqual(['layers.0.msr.r', 'layers.0.msr.o.scan', 'layers.1.msr.r', 'layers.1.msr.o.scan']);
  let state;
  const blocks: HostValue[] = [];
  for (const [from, to] of pieces(c.T, c.P)) {
    const r = await runModelPlan(to - from > 1 || from === 0 ? prefill : step, weights, new Map([['tokens', sliceAxis(tokens, 1, from, to)]]), exec, state);
    blocks.push(r.outputs.get('logits')!);
    state = r.state;
    expect(state!.t0).toBe(to);
  }
  const e = relErr(concatAxis(blocks, 1).data, whole.data);
  // The f32 plans meet TOL wherever the model itself allows it; where one f32 rounding of the
  // weights already moves the float64 logits by more (the group norm at t = 0 when q.k is near
  // 0: FC_SEED=1170603561), the bar is a multiple of that conditioning instead.
  const cond = f32Conditioning(weights, whole.data, (w) => runModel(model, w, new Map([['tokens', tokens]])).get('logits')!.data, rand);
  const bar = Math.max(TOL, 8 * cond);
  if (!(e.rel <= bar)) throw new Error(`retnet ${JSON.stringify(c)}: logits rel. RMSE ${e.rel.toExponential(2)} > ${bar.toExponential(2)} (max of ${TOL} and 8x the f32 conditioning ${cond.toExponential(2)}; reproduce with FC_SEED=${SEED})`);
}

describe('stateful form of the whole RetNet', () => {
  test(`prefill of a random prefix, then recurrent decoding token by token, equals one full forward (f32 plans against the float64 interpreter, <= ${TOL} or 8x the f32 conditioning)`, async () => {
    await assertProperty(modelCase, (c) => checkModelCase(c, cpuExec), { seed: seedFor(SEED, 'retnet'), randomRuns: 8, examples: MODEL_EXAMPLES, timeLimitMs: 150_000 });
  }, 200_000);
});

// The same on WebGPU: the examples and a few random cases of each property.
describe('stateful form on WebGPU', async () => {
  const t = await acquireTestGpu('stateful');
  const gpuExec: Exec = async (p, i) => runPlanWebGPU(p, i, { device: t.gpu! }) as Promise<Map<string, HostValue>>;
  test('a WebGPU adapter is available', (ctx) => requireGpu(t, () => ctx.skip()));
  for (const [file, name] of FAMILY) {
    test.skipIf(!t.gpu)(`${name}: prefill then recurrent decoding equals the whole pass (<= ${TOL})`, async () => {
      const fn = loadProgram(file).checked!.fns.get(name)!;
      const examples: FnCase[] = [{ B: 2, H: 2, T: 37, K: 16, V: 9, P: 29, chunk: 8, form: 'chunkwise', gammas: [0.9, 1 - 2 ** -20, 0.5] }, { B: 1, H: 3, T: 20, K: 3, V: 4, P: 7, chunk: 4, form: 'parallel', gammas: [0.5, 0.75, 0.99] }];
      await assertProperty(fnCase, (c) => checkFnCase(fn, c, gpuExec), { seed: seedFor(SEED, `webgpu ${name}`), randomRuns: 3, examples, timeLimitMs: 150_000 });
    }, 200_000);
  }
  test.skipIf(!t.gpu)(`RetNet: prefill then recurrent decoding equals one full forward (<= ${TOL})`, async () => {
    await assertProperty(modelCase, (c) => checkModelCase(c, gpuExec), { seed: seedFor(SEED, 'webgpu retnet'), randomRuns: Math.max(1, Math.round(2 * runsScale())), examples: MODEL_EXAMPLES, timeLimitMs: 200_000 });
  }, 250_000);
});
