// Wrong answers that used to exit 0 (issue 7, item 7), each checked on the float64 reference,
// the CPU executor and WebGPU (and the first ones through the built CLI):
//   - gamma = 0 and negative gammas: gamma^0 = 1 for every gamma, a negative base keeps its
//     real (signed) powers as in the reference; forward and backward, every schedule, no NaN;
//   - a requested recurrent/chunkwise schedule that the analysis cannot give (a sliding window,
//     a two-sided decay) is refused with the reason instead of silently becoming a map kernel;
//   - decays are recognised by their algebra, whatever the spelling; what does not factorise
//     is named;
//   - an index that divides by zero reads 0 everywhere;
//   - a scalar given as a 1-element tensor binds on every target.
// Without a WebGPU adapter the WebGPU halves are skipped with the reason printed, unless
// REQUIRE_WEBGPU=1, which makes that a failure.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { analyse } from '../compiler/analysis.js';
import { compilePlan, ScheduleError, specialisedSizes, toIr, type Plan } from '../compiler/plan.js';
import { FORMS, makeSchedule, type Form } from '../compiler/schedule.js';
import type { CheckedFn } from '../dsl/checked.js';
import { loadProgram } from '../dsl/program.js';
import { runFunction, type Value } from '../dsl/reference/interpreter.js';
import { runPlanCpu } from '../runtime/plan-runner.js';
import { fromFloat64, readSafetensorsFile, serializeSafetensors, toFloat64 } from '../runtime/io/safetensors.js';
import { releaseRuntimeDevice, runPlanWebGPU, runtimeDevice, WebGPUUnavailableError } from '../runtime/webgpu/runner.js';
import { ensureBuilt, MAIN, ROOT } from './helpers/cli.js';
import { decayScale } from './helpers/fast-reference.js';
import { literalGradient, loadFn, prng, relErr, tensor, uniform } from './helpers/harness.js';

const REQUIRE = process.env['REQUIRE_WEBGPU'] === '1';
const TOL = 1e-5;

let gpuReason = '';
let gpuOk = false;
try {
  await runtimeDevice();
  gpuOk = true;
} catch (e) {
  if (!(e instanceof WebGPUUnavailableError)) throw e;
  gpuReason = e.message;
  console.warn(`[wrong-answers] ${REQUIRE ? 'FAIL (REQUIRE_WEBGPU=1)' : 'skipping WebGPU'}: ${gpuReason}`);
}
afterAll(async () => { await releaseRuntimeDevice(); });

test('a WebGPU adapter is available (required when REQUIRE_WEBGPU=1)', (ctx) => {
  if (!gpuOk) {
    if (REQUIRE) throw new Error(`REQUIRE_WEBGPU=1 but ${gpuReason}`);
    ctx.skip();
  }
});

const dir = mkdtempSync(path.join(tmpdir(), 'retnetc-wrong-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const SRC = `
fn window(q: f32[B, H, T, K], k: f32[B, H, T, K], v: f32[B, H, T, V]) -> o: f32[B, H, T, V] {
  o[b, h, t, j] = sum[s <= t, s > t - 4, i] q[b, h, t, i] * k[b, h, s, i] * v[b, h, s, j]
}
fn twosided(q: f32[B, H, T, K], k: f32[B, H, T, K], v: f32[B, H, T, V], gamma: f32[H]) -> o: f32[B, H, T, V] {
  o[b, h, t, j] = sum[s, i] gamma[h]^abs(t - s) * q[b, h, t, i] * k[b, h, s, i] * v[b, h, s, j]
}
fn shifted(q: f32[B, H, T, K], k: f32[B, H, T, K], v: f32[B, H, T, V]) -> o: f32[B, H, T, V] {
  o[b, h, t, j] = sum[s <= t - 1, i] q[b, h, t, i] * k[b, h, s, i] * v[b, h, s, j]
}
fn conv(q: f32[B, H, T, K], k: f32[B, H, T, K], v: f32[B, H, T, V]) -> o: f32[B, H, T, V] {
  o[b, h, t, j] = sum[s, i] q[b, h, t - s, i] * k[b, h, s, i] * v[b, h, s, j]
}
fn coupled(q: f32[B, H, T, K], k: f32[B, H, T, K], v: f32[B, H, T, V], c: f32[H]) -> o: f32[B, H, T, V] {
  o[b, h, t, j] = sum[s <= t, i] exp(c[h] * t * s) * q[b, h, t, i] * k[b, h, s, i] * v[b, h, s, j]
}
fn scaled(q: f32[B, H, T, K], k: f32[B, H, T, K], v: f32[B, H, T, V], gamma: f32[H]) -> o: f32[B, H, T, V] {
  let r[b, h, t, j] = sum[s <= t, i] gamma[h]^(t - s) * q[b, h, t, i] * k[b, h, s, i] * v[b, h, s, j]
  o[b, h, t, j] = r[b, h, t, j] / sqrt(sum[s: T, s <= t] gamma[h]^s)
}
fn fpow(x: f32[N], y: f32[N]) -> z: f32[N] {
  z[n] = pow(x[n], y[n]) + 10 * x[n] ^ y[n]
}
fn fullsum(q: f32[B, H, T, K], k: f32[B, H, T, K], v: f32[B, H, T, V]) -> o: f32[B, H, T, V] {
  o[b, h, t, j] = sum[s, i] q[b, h, t, i] * k[b, h, s, i] * v[b, h, s, j]
}
fn divzero(x: f32[N], d: i32[M]) -> y: f32[N] {
  y[n] = x[n // 0] + 10 * x[n % 0] + 100 * x[min(n // 0, 2)] + 1000 * x[n // d[0]] + 10000 * x[n % d[0]]
}
fn divok(x: f32[N], d: i32[M]) -> y: f32[N] {
  y[n] = x[n // 2] + 10 * x[n % 3] + 100 * x[n // d[0]] + 1000 * x[(n - 7) % d[0]]
}
fn divvalue(x: f32[N], d: i32[M]) -> y: f32[N] {
  y[n] = x[n] + float(n // 0) + 10 * float(n % 0) + 100 * float(n // d[0]) + 1000 * float((n + 1) % d[0])
}
fn root(x: f32[M, N]) -> y: f32[M, N] {
  y[m, n] = sqrt(x[m, n])
}
fn affine(x: f32[N], a: f32, eps: f32 = 0.000001) -> y: f32[N] {
  y[n] = x[n] * a + eps
}
`;
const srcFile = path.join(dir, 'wrong.ret');
writeFileSync(srcFile, SRC);
const program = loadProgram(srcFile);
const fnOf = (name: string): CheckedFn => {
  if (program.diagnostics.length) throw new Error(program.diagnostics.map((d) => d.message).join('; '));
  return program.checked!.fns.get(name)!;
};

type Tensors = Map<string, { shape: number[]; data: ArrayLike<number> }>;

function planFor(fn: CheckedFn, form: Form, backward: boolean, sizes: Record<string, number>, chunk = 4): Plan {
  const constants = new Map(specialisedSizes(fn, backward).map((s) => [s, sizes[s]!] as const));
  return compilePlan(fn, makeSchedule(form, chunk), { backward, constants });
}

async function runOn(device: 'cpu' | 'webgpu', p: Plan, inputs: Map<string, Value>): Promise<Tensors> {
  return device === 'cpu' ? runPlanCpu(p, inputs) : runPlanWebGPU(p, inputs);
}

function expectClose(got: { data: ArrayLike<number> } | undefined, want: Value, what: string): number {
  expect(got, `${what}: missing`).toBeDefined();
  const e = relErr(got!.data, want.data);
  expect(e.nonFinite, `${what}: ${e.nonFinite} non-finite values`).toBe(0);
  expect(e.rel, `${what}: relative RMSE ${e.rel} (max |diff| ${e.maxAbs} at ${e.at})`).toBeLessThanOrEqual(TOL);
  return e.rel;
}

const DEVICES = ['cpu', 'webgpu'] as const;

// ---- gamma = 0 and negative gammas ------------------------------------------------------------

describe('decay bases 0 and negative: the reference values on every schedule and device', () => {
  const retention = loadFn('retention', 'retention');
  const withState = loadFn('retention', 'retention_state');
  // One head per case: 0 (weight 1 at distance 0, 0 beyond), negative (signed powers), ordinary.
  const gammas = [0, -0.5, -0.96875, 0.9];
  const [B, H, T, K, V] = [1, gammas.length, 11, 3, 2];
  const rand = prng(7);
  const base = new Map<string, Value>([
    ['q', uniform([B, H, T, K], rand)], ['k', uniform([B, H, T, K], rand)], ['v', uniform([B, H, T, V], rand)],
    ['gamma', tensor([H], (i) => gammas[i]!)], ['s0', uniform([B, H, K, V], rand)],
  ]);
  const ups = new Map<string, Value>([['grad.o', uniform([B, H, T, V], rand)], ['grad.sT', uniform([B, H, K, V], rand)]]);
  const inputsOf = (fn: CheckedFn) => new Map([...base].filter(([k]) => fn.params.some((p) => p.name === k)));

  test('the float64 reference: gamma^0 = 1 at gamma = 0, signed powers of a negative gamma, finite gradients', () => {
    const o = runFunction(retention, inputsOf(retention)).get('o')!;
    // Head 0 (gamma = 0): o[t] = (q[t] . k[t]) v[t] exactly (flat offsets of head 0 of batch 0).
    const q = base.get('q')!.data, k = base.get('k')!.data, v = base.get('v')!.data;
    for (let t = 0; t < T; t++) for (let j = 0; j < V; j++) {
      let dot = 0;
      for (let i = 0; i < K; i++) dot += q[t * K + i]! * k[t * K + i]!;
      expect(o.data[t * V + j]).toBeCloseTo(dot * v[t * V + j]!, 12);
    }
    const g = runFunction(literalGradient(retention), new Map([...inputsOf(retention), ['grad.o', ups.get('grad.o')!]])).get('grad.gamma')!;
    expect([...g.data].every(Number.isFinite)).toBe(true);
    // d/dgamma sum_t up[t] . o[t] by central differences of the reference itself (gamma^(t-s)
    // is a polynomial, smooth through 0 and the negative side).
    const h = 1e-6;
    const f = (hd: number, dg: number) => {
      const gm = tensor([H], (i) => gammas[i]!);
      gm.data[hd] = gammas[hd]! + dg;
      const oo = runFunction(retention, new Map([...inputsOf(retention), ['gamma', gm]])).get('o')!.data;
      return oo.reduce((a, x, i) => a + x * ups.get('grad.o')!.data[i]!, 0);
    };
    for (let hd = 0; hd < H; hd++) {
      const fd = (f(hd, h) - f(hd, -h)) / (2 * h);
      expect(Math.abs(g.data[hd]! - fd), `head ${hd} (gamma ${gammas[hd]}): literal ${g.data[hd]} vs finite differences ${fd}`).toBeLessThanOrEqual(1e-6 * Math.max(1, Math.abs(fd)));
    }
  });

  for (const device of DEVICES) {
    for (const form of FORMS) {
      for (const [name, fn] of [['retention', retention], ['retention_state', withState]] as const) {
        test(`${device} ${form}: ${name} forward and backward match the reference (gamma = ${gammas.join(', ')})`, async (ctx) => {
          if (device === 'webgpu' && !gpuOk) ctx.skip();
          const inputs = inputsOf(fn);
          const ref = runFunction(fn, inputs);
          const out = await runOn(device, planFor(fn, form, false, { K, V }), inputs);
          const figures: string[] = [];
          for (const o of fn.outputs) figures.push(`${o.name} ${expectClose(out.get(o.name), ref.get(o.name)!, `${o.name}`).toExponential(2)}`);
          const gin = new Map([...inputs, ...[...ups].filter(([k]) => fn.outputs.some((o) => `grad.${o.name}` === k))]);
          const gref = runFunction(literalGradient(fn), gin);
          const g = await runOn(device, planFor(fn, form, true, { K, V }), gin);
          for (const p of fn.params) figures.push(`grad.${p.name} ${expectClose(g.get(`grad.${p.name}`), gref.get(`grad.${p.name}`)!, `grad.${p.name}`).toExponential(2)}`);
          console.log(`[wrong-answers] ${device} ${form} ${name}, gamma = ${gammas.join(', ')}: relative RMSE ${figures.join(', ')}`);
        }, 120_000);
      }
    }
  }
});

describe('property: every decay base in [-1, 1] (0 and -1 included) on every schedule and device', () => {
  const retention = loadFn('retention', 'retention');
  const env = process.env['FC_SEED'];
  const seed = env ? Number(env) | 0 : (Math.random() * 2 ** 32) | 0;
  console.log(`[wrong-answers] fast-check seed ${seed} (reproduce with FC_SEED=${seed})`);
  const base = fc.oneof(fc.constantFrom(0, -1, 1, -0.5, 2 ** -30, -(2 ** -30)), fc.double({ min: -1, max: 1, noNaN: true }));
  const arb = fc.record({
    // Few distinct (K, V, chunk): WebGPU pipelines are compiled once per kernel shape.
    T: fc.integer({ min: 1, max: 40 }), K: fc.constantFrom(1, 4), V: fc.constantFrom(1, 3), chunk: fc.constantFrom(3, 8),
    gammas: fc.array(base, { minLength: 1, maxLength: 3 }), data: fc.integer(),
  });
  const RUNS = 10;
  test(`${RUNS} random cases: forward and backward within ${TOL} of the float64 reference (grad.gamma of its natural scale)`, async () => {
    let runs = 0;
    await fc.assert(fc.asyncProperty(arb, async (c) => {
      runs++;
      const H = c.gammas.length;
      const rand = prng(c.data);
      const inputs = new Map<string, Value>([['q', uniform([1, H, c.T, c.K], rand)], ['k', uniform([1, H, c.T, c.K], rand)], ['v', uniform([1, H, c.T, c.V], rand)], ['gamma', tensor([H], (i) => c.gammas[i]!)]]);
      const gin = new Map([...inputs, ['grad.o', uniform([1, H, c.T, c.V], rand)]]);
      const ref = runFunction(retention, inputs).get('o')!;
      const gref = runFunction(literalGradient(retention), gin);
      // The natural scale of grad.gamma: the root sum of squares of the terms it sums (as in the
      // schedule tests; tests/helpers/fast-reference.ts decayScale), or its RMS where larger.
      const rms = (a: ArrayLike<number>) => Math.sqrt(Array.from(a).reduce((x, y) => x + y * y, 0) / a.length);
      const natural = { data: [Math.max(rms(decayScale('retention', inputs, gin)!.data), rms(gref.get('grad.gamma')!.data))] };
      const what = JSON.stringify({ ...c, gammas: c.gammas.map((g) => Math.fround(g)) });
      for (const device of gpuOk ? DEVICES : (['cpu'] as const)) for (const form of FORMS) {
        expectClose((await runOn(device, planFor(retention, form, false, { K: c.K, V: c.V }, c.chunk), inputs)).get('o'), ref, `${device} ${form} o ${what}`);
        const g = await runOn(device, planFor(retention, form, true, { K: c.K, V: c.V }, c.chunk), gin);
        for (const x of ['q', 'k', 'v']) expectClose(g.get(`grad.${x}`), gref.get(`grad.${x}`)!, `${device} ${form} grad.${x} ${what}`);
        const e = relErr(g.get('grad.gamma')!.data, gref.get('grad.gamma')!.data);
        expect(e.nonFinite, `${device} ${form} grad.gamma non-finite ${what}`).toBe(0);
        // (At T = 1 both are exactly 0.)
        expect(e.rmsDiff, `${device} ${form} grad.gamma ${what}: RMS error ${e.rmsDiff} against the natural scale ${rms(natural.data)}`).toBeLessThanOrEqual(TOL * rms(natural.data));
      }
    }), { seed, numRuns: RUNS, interruptAfterTimeLimit: 150_000, markInterruptAsFailure: true, endOnFailure: true });
    expect(runs).toBe(RUNS);
  }, 180_000);
});

// ---- schedules that cannot be given are refused ---------------------------------------------

describe('a recurrent or chunkwise schedule the analysis cannot give is refused with the reason', () => {
  // The backward reports the forward statement's reason, in the user's names.
  const cases = [
    ['window', /in 'o' the sum over s has the range s <= t, s > \(t - 4\).*a window/],
    ['twosided', /in 'o' the sum over s couples s with t through abs\(\(t - s\)\) but has no causal range.*two-sided/],
    ['shifted', /in 'o' the sum over s has the range s <= \(t - 1\), not a single s <= t.*a shifted range/],
    ['conv', /in 'o' the sum over s couples s with t through q\[b, h, \(t - s\), i\] but has no causal range.*two-sided/],
    ['fullsum', /in 'o' the sum over s pairs every t with every s of the same axis \(q\[b, h, t, i\], k\[b, h, s, i\]\) with no causal range/],
    ['coupled', /in 'o' the sum over s <= t: its weight factor .* depends on both t and s through \(\(c\[h\] \* t\) \* s\), so the weight does not factorise/],
  ] as const;
  const sizes = { K: 3, V: 2 };
  for (const [name, why] of cases) {
    for (const form of ['recurrent', 'chunkwise'] as const) {
      for (const backward of [false, true]) {
        test(`${name}: ${form}${backward ? ' backward' : ''} throws a ScheduleError that says why`, () => {
          let err: unknown;
          try { planFor(fnOf(name), form, backward, sizes); } catch (e) { err = e; }
          expect(err).toBeInstanceOf(ScheduleError);
          expect((err as Error).message).toContain(`'${name}' has no ${form} schedule`);
          expect((err as Error).message).toMatch(why);
        });
      }
    }
    test(`${name}: the parallel schedule still matches the reference`, () => {
      const fn = fnOf(name);
      const rand = prng(3);
      const [B, H, T, K, V] = [1, 2, 9, 3, 2];
      const inputs = new Map<string, Value>([['q', uniform([B, H, T, K], rand)], ['k', uniform([B, H, T, K], rand)], ['v', uniform([B, H, T, V], rand)]]);
      if (fn.params.some((p) => p.name === 'gamma')) inputs.set('gamma', tensor([H], (i) => [0.8, -0.6][i]!));
      if (fn.params.some((p) => p.name === 'c')) inputs.set('c', tensor([H], (i) => [-0.01, -0.02][i]!));
      expectClose(runPlanCpu(planFor(fn, 'parallel', false, { K, V }), inputs).get('o'), runFunction(fn, inputs).get('o')!, 'o');
    });
  }

  test("RetNet's functions keep every schedule, forward and backward (a gather's mask is no sum over positions); msr's nested scale sum is a contraction", () => {
    const problems: string[] = [];
    for (const name of ['linear', 'rmsnorm', 'theta_shift', 'msr']) {
      const fn = loadFn('retnet', name);
      for (const form of FORMS) for (const backward of [false, true]) {
        const constants = new Map<string, number>(specialisedSizes(fn, backward).map((x) => [x, 4]));
        for (const x of fn.sizes) constants.set(x, 2);
        try {
          const p = compilePlan(fn, makeSchedule(form, 8), { backward, constants });
          if (name === 'msr' && !backward) expect(p.launches.filter((l) => l.how === 'contraction').length).toBe(2);
        } catch (e) { problems.push(`${name} ${form}${backward ? ' backward' : ''}: ${(e as Error).message}`); }
      }
    }
    expect(problems).toEqual([]);
  });

  test('softmax attention names the factor that depends on both positions', () => {
    let err: unknown;
    try { planFor(loadFn('softmax_attention', 'softmax_attention'), 'recurrent', false, sizes); } catch (e) { err = e; }
    expect((err as Error).message).toMatch(/its weight factor exp\(.*\) depends on both t and s through score\[b, h, t, s\], so the weight does not factorise/);
  });

  test('a causal sum nested in a larger expression gets its own statement and every schedule', async () => {
    const fn = fnOf('scaled');
    const ir = analyse(toIr(fn));
    expect(ir.contractions.size).toBe(2);
    const rand = prng(5);
    const [B, H, T, K, V] = [2, 2, 13, 3, 2];
    const inputs = new Map<string, Value>([['q', uniform([B, H, T, K], rand)], ['k', uniform([B, H, T, K], rand)], ['v', uniform([B, H, T, V], rand)], ['gamma', tensor([H], (i) => [0.9, 0.5][i]!)]]);
    const ref = runFunction(fn, inputs).get('o')!;
    for (const form of FORMS) {
      const p = planFor(fn, form, false, { K, V, H });
      expect(p.launches.filter((l) => l.how === 'contraction').length, form).toBe(2);
      expectClose(runPlanCpu(p, inputs).get('o'), ref, `${form} o`);
    }
  });
});

// ---- decay spellings --------------------------------------------------------------------------

describe('decays are recognised by their algebra, whatever the spelling', () => {
  const body = (w: string) => `sum[s <= t, i] ${w} * q[b, h, t, i] * k[b, h, s, i] * v[b, h, s, j]`;
  const decl = (name: string, param: string, w: string) => `fn ${name}(q: f32[B, H, T, K], k: f32[B, H, T, K], v: f32[B, H, T, V], ${param}: f32[H]) -> o: f32[B, H, T, V] {\n  o[b, h, t, j] = ${body(w)}\n}\n`;
  // Log-decay spellings, all equal to exp((t - s) c) with c = log gamma <= 0.
  const logSpellings = [
    'exp((t - s) * c[h])', 'exp(c[h] * (t - s))', 'exp(-c[h] * (s - t))', 'exp(-(c[h] * (s - t)))', 'exp(c[h] * t - c[h] * s)',
    'exp(t * c[h] - s * c[h])', 'exp(c[h] * (t + 1) - c[h] * (s + 1))', 'exp(-(-c[h]) * (t - s))', 'exp((t - s) * c[h] / 2 + (t - s) * (c[h] / 2))',
    'exp2((t - s) * c[h] * 1.4426950408889634)', 'exp2(c[h] * t / 0.6931471805599453 - c[h] * s / 0.6931471805599453)',
  ];
  // Base spellings, all equal to gamma^(t - s).
  const baseSpellings = ['gamma[h]^(t - s)', 'pow(gamma[h], t - s)', 'pow(gamma[h], float(t - s))', 'exp((t - s) * log(gamma[h]))', 'exp2(log2(gamma[h]) * (t - s))'];
  const src = [...logSpellings.map((w, n) => decl(`lf${n}`, 'c', w)), ...baseSpellings.map((w, n) => decl(`bf${n}`, 'gamma', w))].join('');
  const file = path.join(dir, 'spellings.ret');
  writeFileSync(file, src);
  const p = loadProgram(file);
  const fns = p.checked?.fns;
  const [B, H, T, K, V] = [1, 2, 37, 3, 2];
  const rand = prng(11);
  const gammas = [0.95, 0.7];
  const data = new Map<string, Value>([['q', uniform([B, H, T, K], rand)], ['k', uniform([B, H, T, K], rand)], ['v', uniform([B, H, T, V], rand)]]);
  const inputsFor = (param: string) => new Map([...data, [param, param === 'c' ? tensor([H], (i) => Math.log(gammas[i]!)) : tensor([H], (i) => gammas[i]!)]]);

  test('the spellings check', () => expect(p.diagnostics.map((d) => d.message)).toEqual([]));

  const all = [...logSpellings.map((w, n) => [`lf${n}`, w, 'c'] as const), ...baseSpellings.map((w, n) => [`bf${n}`, w, 'gamma'] as const)];
  for (const [name, w, param] of all) {
    test(`${w}: one fixed decay, the reference's values on every schedule, forward and backward (and forward on WebGPU)`, async () => {
      const fn = fns!.get(name)!;
      const { contractions } = analyse(toIr(fn));
      const cs = [...contractions.values()];
      expect(cs.length).toBe(1);
      expect(cs[0]!.decay.map((d) => d.kind)).toEqual(['fixed']);
      const inputs = inputsFor(param);
      const ref = runFunction(fn, inputs).get('o')!;
      // Every spelling is the same function: compare with the first one's reference too.
      expectClose(ref, runFunction(fns!.get('lf0')!, inputsFor('c')).get('o')!, 'against exp((t - s) * c)');
      const ups = new Map<string, Value>([['grad.o', uniform([B, H, T, V], prng(12))]]);
      const gref = runFunction(literalGradient(fn), new Map([...inputs, ...ups]));
      for (const form of FORMS) {
        expectClose(runPlanCpu(planFor(fn, form, false, { K, V }, 8), inputs).get('o'), ref, `${form} o`);
        const g = runPlanCpu(planFor(fn, form, true, { K, V }, 8), new Map([...inputs, ...ups]));
        for (const x of ['q', 'k', 'v', param]) expectClose(g.get(`grad.${x}`), gref.get(`grad.${x}`)!, `${form} grad.${x}`);
        if (gpuOk) expectClose((await runPlanWebGPU(planFor(fn, form, false, { K, V }, 8), inputs)).get('o'), ref, `webgpu ${form} o`);
      }
    }, 120_000);
  }

  test('gated spellings: exp(G[t] - G[s]), exp(-(G[s] - G[t])), exp(2 G[t] - 2 G[s]) are one gated decay', () => {
    const g = (name: string, w: string) => `fn ${name}(q: f32[T, K], k: f32[T, K], v: f32[T, V], g: f32[T]) -> o: f32[T, V] {\n  let G[t: T] = sum[u <= t] g[u]\n  o[t, j] = sum[s <= t, i] ${w} * q[t, i] * k[s, i] * v[s, j]\n}\n`;
    const ws = ['exp(G[t] - G[s])', 'exp(-(G[s] - G[t]))', 'exp(2 * G[t] - 2 * G[s])', 'exp(G[t] - (G[s] + 0.5 * (t - s)))'];
    const f2 = path.join(dir, 'gated.ret');
    writeFileSync(f2, ws.map((w, n) => g(`gated${n}`, w)).join(''));
    const pg = loadProgram(f2);
    expect(pg.diagnostics).toEqual([]);
    const r2 = prng(13);
    const [T2, K2, V2] = [29, 2, 3];
    const inputs = new Map<string, Value>([['q', uniform([T2, K2], r2)], ['k', uniform([T2, K2], r2)], ['v', uniform([T2, V2], r2)], ['g', tensor([T2], () => -0.2 * r2())]]);
    ws.forEach((w, n) => {
      const fn = pg.checked!.fns.get(`gated${n}`)!;
      const c = [...analyse(toIr(fn)).contractions.values()].find((x) => x.decay.length)!;
      expect(c, w).toBeDefined();
      expect(c.decay.map((d) => d.kind).sort(), w).toEqual(n === 3 ? ['fixed', 'gated'] : ['gated']);
      const ref = runFunction(fn, inputs).get('o')!;
      for (const form of FORMS) expectClose(runPlanCpu(planFor(fn, form, false, { K: K2, V: V2 }, 8), inputs).get('o'), ref, `${w} ${form}`);
    });
  });
});

// ---- division by zero in an index -----------------------------------------------------------

describe('integer division by zero: an index computed with one is out of range (the read is 0), a value is 0, on every target', () => {
  const x = tensor([7], (i) => i + 1);
  for (const device of ['reference', ...DEVICES] as const) {
    test(`${device}: x[n // 0], x[n % 0], x[min(n // 0, 2)] and a zero divisor from a tensor read 0; nonzero divisors are unchanged`, async (ctx) => {
      if (device === 'webgpu' && !gpuOk) ctx.skip();
      const run = async (name: string, d: number): Promise<number[]> => {
        const inputs = new Map<string, Value>([['x', x], ['d', tensor([1], () => d)]]);
        if (device === 'reference') return Array.from(runFunction(fnOf(name), inputs).get('y')!.data);
        return Array.from((await runOn(device, planFor(fnOf(name), 'parallel', false, {}), inputs)).get('y')!.data);
      };
      expect(await run('divzero', 0)).toEqual([0, 0, 0, 0, 0, 0, 0]);
      // With d = 2 only the tensor-divisor terms read: x[n // 2] * 1000 + x[n % 2] * 10000.
      expect(await run('divzero', 2)).toEqual([0, 1, 2, 3, 4, 5, 6].map((n) => 1000 * (Math.floor(n / 2) + 1) + 10000 * ((n % 2) + 1)));
      // As values (not indices), n // 0 and n % 0 are 0: never NaN or Infinity.
      expect(await run('divvalue', 0)).toEqual([1, 2, 3, 4, 5, 6, 7]);
      expect(await run('divvalue', 3)).toEqual([0, 1, 2, 3, 4, 5, 6].map((n) => n + 1 + 100 * Math.floor(n / 3) + 1000 * ((n + 1) % 3)));
      const ok = await run('divok', 3);
      expect(ok).toEqual([0, 1, 2, 3, 4, 5, 6].map((n) => (Math.floor(n / 2) + 1) + 10 * ((n % 3) + 1) + 100 * (Math.floor(n / 3) + 1) + 1000 * ((((n - 7) % 3) + 3) % 3 + 1)));
    }, 60_000);
  }
});

// ---- float powers ----------------------------------------------------------------------------

describe('a float power has the reference\'s value on every target (GPU pow is NaN for a negative base and for 0^0)', () => {
  const x = tensor([8], (i) => [0, -2, -0.5, 2, -2, 0, -3, 4][i]!);
  const y = tensor([8], (i) => [0, 2, 3, 0.5, 0.5, 2, 0, -1][i]!);
  const want = Array.from({ length: 8 }, (_, i) => 11 * (x.data[i]! ** y.data[i]!));
  for (const device of ['reference', ...DEVICES] as const) {
    test(`${device}: 0^0 = 1, (-2)^2 = 4, (-0.5)^3 = -0.125, (-3)^0 = 1, (-2)^0.5 is NaN as in the reference`, async (ctx) => {
      if (device === 'webgpu' && !gpuOk) ctx.skip();
      const inputs = new Map<string, Value>([['x', x], ['y', y]]);
      const got = device === 'reference' ? runFunction(fnOf('fpow'), inputs).get('z')!.data
        : (await runOn(device, planFor(fnOf('fpow'), 'parallel', false, {}), inputs)).get('z')!.data;
      for (let i = 0; i < 8; i++) {
        if (Number.isNaN(want[i]!)) expect(got[i], `[${i}]`).toBeNaN();
        else expect(got[i]!, `[${i}]: ${x.data[i]}^${y.data[i]}`).toBeCloseTo(want[i]!, 5);
      }
    }, 60_000);
  }
});

// ---- scalars as 1-element tensors -------------------------------------------------------------

describe('a scalar parameter given as a 0-d or a 1-element tensor binds on every target', () => {
  const x = tensor([5], (i) => i - 2);
  for (const device of ['reference', ...DEVICES] as const) {
    for (const shape of [[], [1]]) {
      test(`${device}: a and eps as ${JSON.stringify(shape)} tensors (and eps left to its default)`, async (ctx) => {
        if (device === 'webgpu' && !gpuOk) ctx.skip();
        const fn = fnOf('affine');
        const a = { shape, data: Float64Array.of(3) };
        const eps = { shape, data: Float64Array.of(0.5) };
        const want = [...x.data].map((v) => v * 3 + 0.5);
        const wantDefault = [...x.data].map((v) => Math.fround(v * 3 + 1e-6));
        const run = async (inputs: Map<string, Value>) => (device === 'reference' ? runFunction(fn, inputs).get('y')!.data : (await runOn(device, planFor(fn, 'parallel', false, {}), inputs)).get('y')!.data);
        expect(Array.from(await run(new Map([['x', x], ['a', a], ['eps', eps]])))).toEqual(want);
        const d = Array.from(await run(new Map([['x', x], ['a', a]])));
        d.forEach((v, i) => expect(v).toBeCloseTo(wantDefault[i]!, 6));
      });
    }
  }
});

// ---- through the CLI ----------------------------------------------------------------------------

describe('through the built CLI', () => {
  beforeAll(() => {
    // Builds dist/ when stale, taking turns with the other CLI test files (tests/helpers/cli.ts).
    ensureBuilt();
    expect(existsSync(MAIN)).toBe(true);
  }, 180_000);

  const cli = (...args: string[]) => spawnSync(process.execPath, [MAIN, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
  const write = (file: string, tensors: Record<string, Value>) => writeFileSync(file, serializeSafetensors(new Map(Object.entries(tensors).map(([k, v]) => [k, fromFloat64(v.data, v.shape, 'F32')]))));
  const read = async (file: string) => new Map([...(await readSafetensorsFile(file)).tensors].map(([k, t]) => [k, toFloat64(t)] as const));

  test('run --target cpu: gamma = 0 and a negative gamma give the reference values, every schedule', async () => {
    const rand = prng(21);
    const [B, H, T, K, V] = [1, 2, 9, 2, 3];
    const ins = { q: uniform([B, H, T, K], rand), k: uniform([B, H, T, K], rand), v: uniform([B, H, T, V], rand), gamma: tensor([H], (i) => [0, -0.75][i]!) };
    const inFile = path.join(dir, 'ret-in.safetensors');
    write(inFile, ins);
    const ref = runFunction(loadFn('retention', 'retention'), new Map(Object.entries(ins))).get('o')!;
    for (const form of FORMS) {
      const out = path.join(dir, `ret-${form}.safetensors`);
      const r = cli('run', 'models/retention.ret', '--fn', 'retention', '--inputs', inFile, '--out', out, '--target', 'cpu', '--schedule', form, ...(form === 'recurrent' ? [] : ['--chunk', '4']));
      expect(r.status, r.stderr).toBe(0);
      expectClose({ data: (await read(out)).get('o')! }, ref, `cli ${form}`);
    }
  }, 60_000); // three CLI runs: over vitest's 5 s default on a loaded 2-core machine

  test('run --target webgpu: gamma = 0 and a negative gamma give the reference values (chunkwise, with --grad)', async (ctx) => {
    if (!gpuOk) ctx.skip();
    const rand = prng(23);
    const [B, H, T, K, V] = [1, 2, 10, 2, 3];
    const ins = { q: uniform([B, H, T, K], rand), k: uniform([B, H, T, K], rand), v: uniform([B, H, T, V], rand), gamma: tensor([H], (i) => [0, -0.75][i]!) };
    const up = { o: uniform([B, H, T, V], rand) };
    const inFile = path.join(dir, 'gpu-in.safetensors');
    const gradFile = path.join(dir, 'gpu-grad.safetensors');
    write(inFile, ins);
    write(gradFile, up);
    const fn = loadFn('retention', 'retention');
    const inputs = new Map(Object.entries(ins));
    const ref = runFunction(fn, inputs).get('o')!;
    const gref = runFunction(literalGradient(fn), new Map([...inputs, ['grad.o', up.o]]));
    const out = path.join(dir, 'gpu-out.safetensors');
    const r = cli('run', 'models/retention.ret', '--fn', 'retention', '--inputs', inFile, '--grad', gradFile, '--out', out, '--target', 'webgpu', '--schedule', 'chunkwise', '--chunk', '4');
    expect(r.status, r.stderr).toBe(0);
    const got = await read(out);
    expectClose({ data: got.get('o')! }, ref, 'cli webgpu o');
    for (const x of ['q', 'k', 'v', 'gamma']) expectClose({ data: got.get(`grad.${x}`)! }, gref.get(`grad.${x}`)!, `cli webgpu grad.${x}`);
  }, 120_000);

  test('run --schedule recurrent of a sliding window exits 1 with the reason and writes nothing', () => {
    const rand = prng(22);
    const inFile = path.join(dir, 'win-in.safetensors');
    write(inFile, { q: uniform([1, 1, 6, 2], rand), k: uniform([1, 1, 6, 2], rand), v: uniform([1, 1, 6, 2], rand) });
    const out = path.join(dir, 'win-out.safetensors');
    const r = cli('run', srcFile, '--fn', 'window', '--inputs', inFile, '--out', out, '--target', 'cpu', '--schedule', 'recurrent');
    expect(r.status, r.stderr).toBe(1);
    expect(r.stderr).toMatch(/error: 'window' has no recurrent schedule: .*a window/);
    expect(existsSync(out)).toBe(false);
  });

  test('run: a NaN outside a function\'s domain is never written silently (reference and cpu)', async () => {
    const inFile = path.join(dir, 'root-in.safetensors');
    write(inFile, { x: tensor([2, 2], (i) => [4, -1, 9, -4][i]!) });
    for (const target of ['reference', 'cpu']) {
      const out = path.join(dir, `root-${target}.safetensors`);
      const r = cli('run', srcFile, '--fn', 'root', '--inputs', inFile, '--out', out, '--target', target);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stderr).toContain("retnetc: warning: 'y' holds 2 non-finite values, the first NaN at [0, 1]\n");
      const y = Array.from((await read(out)).get('y')!);
      expect([y[0], y[2]]).toEqual([2, 3]);
    }
  });

  test('run --target cpu with a scalar given as a 1-element tensor', async () => {
    const inFile = path.join(dir, 'affine-in.safetensors');
    write(inFile, { x: tensor([4], (i) => i), a: tensor([1], () => 2), eps: tensor([1], () => 0.25) });
    const out = path.join(dir, 'affine-out.safetensors');
    const r = cli('run', srcFile, '--fn', 'affine', '--inputs', inFile, '--out', out, '--target', 'cpu');
    expect(r.status, r.stderr).toBe(0);
    expect([...(await read(out)).get('y')!]).toEqual([0.25, 2.25, 4.25, 6.25]);
  });
});
