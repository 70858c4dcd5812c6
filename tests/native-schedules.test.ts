// The schedules on the native CPU target (C printed from kernel IR, compiled by the system C
// compiler, workgroups over all cores; runtime/native/runner.ts runPlanNative):
//
// 1. Property tests, describe.each over the schedule forms: retention, retention_state,
//    linear_attention and gated_retention compiled for random B, H, T, decays, chunk sizes and
//    the real head sizes (tests/helpers/schedule-cases.ts: the cases of tests/schedules.test.ts,
//    fewer random ones, and those two that share K, V and the chunk: every kernel shape is two C
//    compilations), run natively forward and backward,
//    agree with the independent float64 computation (tests/helpers/fast-reference.ts) to relative
//    RMSE <= 1e-5; decay gradients against max(RMS ref, their natural scale), as on the other
//    targets. softmax_attention (parallel only) against the literal float64 interpreter.
// 2. Fixed cases at the real head sizes K = V = 64 and 128, T ragged against the chunk, every
//    form, forward and backward.
// 3. Bit for bit equal to the CPU executor (targets/cpu/executor.ts) on fixed cases of every
//    family and form, forward and backward (the property's second example: its plans are compiled once). They are equal by construction, not by luck: the
//    barrier split runs each workgroup's threads in the executor's order (tid.x fastest, region by
//    region), each thread's operations are the same float32 operations in the same order (C
//    without fast-math, -ffp-contract=off: no reassociation, no fma), work-item loops are
//    vectorised only across work-items (lanes never mix), and transcendentals are the float64
//    function rounded once on both (glibc and V8 both return the correctly rounded double in all
//    but rare cases, and rounding that to float32 hides a one-ulp double difference except within
//    one double ulp of a float32 rounding boundary). Reductions are sums in program order on both.
//
// Without a C compiler or the addon everything is skipped with the reason printed, unless
// REQUIRE_NATIVE=1. FC_SEED=N reproduces the random cases; FC_RUNS_SCALE scales them
// (NATIVE_RANDOM_RUNS per property at scale 1).
import { afterAll, describe, expect, test } from 'vitest';
import { FORMS, type Form } from '../compiler/schedule.js';
import type { Plan } from '../compiler/plan.js';
import type { Value } from '../dsl/reference/interpreter.js';
import { findCompiler, NO_COMPILER } from '../targets/native/compile.js';
import { loadNativeAddon } from '../runtime/native/addon.js';
import { prepareNative, runPlanNative } from '../runtime/native/runner.js';
import { runPlanCpu } from '../runtime/plan-runner.js';
import { assertProperty, fcSeed, loadFn, plan, prng, reference, runsScale, seedFor, uniform } from './helpers/harness.js';
import { caseGroupArb, checkTensor, describeCase, FAMILIES, GAMMA_MAX, scaleOf, TOL, truthOf, Worst, type Case, type Family, type Truth } from './helpers/schedule-cases.js';

const cc = findCompiler();
const addon = cc ? loadNativeAddon() : { error: NO_COMPILER };
const why = !cc ? NO_COMPILER : 'error' in addon ? addon.error : undefined;
if (why) console.log(`[native-schedules] skipped: ${why}`);

test('a C compiler and the native addon are available (required when REQUIRE_NATIVE=1)', (ctx) => {
  if (why && process.env['REQUIRE_NATIVE'] !== '1') ctx.skip();
  expect(why).toBeUndefined();
});

const SEED = fcSeed('native-schedules');
/**
 * Random cases per (family, form), NATIVE_CASES_PER_SHAPE of them sharing a kernel shape: each
 * shape costs two C compilations (~0.3 s and ~1.5 s of cc -O3), a case only its runs.
 */
const NATIVE_RANDOM_RUNS = 2;
const NATIVE_CASES_PER_SHAPE = 2;
const TIME_LIMIT_MS = Number(process.env['FC_TIME_LIMIT_MS'] ?? 300_000);

/** The case of the bit-for-bit comparison, also the properties' second example (its plans compile once). */
const BITWISE: Case = { B: 2, H: 2, T: 37, K: 24, V: 20, chunk: 16, gammas: [0.9, GAMMA_MAX], gate: 'mixed', data: 2420, tKind: 'ragged' };
const EXAMPLES: Case[] = [
  { B: 1, H: 2, T: 1, K: 1, V: 1, chunk: 1, gammas: [1, GAMMA_MAX], gate: 'zeros', data: 1, tKind: 'one' },
  BITWISE,
];
/** The real head sizes, T ragged against the chunk. */
const REAL: Case[] = [
  { B: 1, H: 2, T: 100, K: 64, V: 64, chunk: 32, gammas: [1 - 2 ** -5, GAMMA_MAX], gate: 'uniform', data: 6464, tKind: 'ragged' },
  { B: 1, H: 1, T: 77, K: 128, V: 128, chunk: 64, gammas: [Math.fround(0.999)], gate: 'near1', data: 128128, tKind: 'ragged' },
];

type HostOut = Map<string, { shape: number[]; data: Float32Array | Int32Array }>;
const worst = new Worst();
const time = { native: 0, prepare: 0, cpu: 0, runs: 0 };

async function runNative(p: Plan, inputs: ReadonlyMap<string, Value>): Promise<HostOut> {
  const t0 = performance.now();
  await prepareNative(p);
  const t1 = performance.now();
  const out = await runPlanNative(p, inputs);
  time.prepare += t1 - t0;
  time.native += performance.now() - t1;
  time.runs++;
  return out;
}

async function checkCase(f: Family, form: Form, c: Case, truth: Truth, local?: Worst): Promise<void> {
  const fn = loadFn(f.file, f.name);
  const fwdPlan = plan(fn, form, c.chunk, false, { K: c.K, V: c.V });
  const bwdPlan = plan(fn, form, c.chunk, true, { K: c.K, V: c.V });
  // Compile both while neither runs: two cc processes on two cores.
  await Promise.all([prepareNative(fwdPlan), prepareNative(bwdPlan)]);
  const fwd = await runNative(fwdPlan, truth.inputs);
  const bwd = await runNative(bwdPlan, new Map([...truth.inputs, ...truth.ref.ups]));
  const problems: string[] = [];
  const notes = [worst, ...(local ? [local] : [])];
  const check = (what: string, got: HostOut, want: Value, scale?: Value): void => {
    for (const w of notes) checkTensor(`${f.name} ${form} chunk=${c.chunk} ${what}`, `${f.name} ${form} ${what}`, got.get(what), want, w === worst ? problems : [], w, scale);
  };
  for (const [name, want] of truth.ref.outs) check(name, fwd, want, scaleOf(truth, name));
  for (const [name, want] of truth.ref.grads) check(name, bwd, want, scaleOf(truth, name));
  if (problems.length) throw new Error(`${f.name} ${form}, ${describeCase(c)} (reproduce with FC_SEED=${SEED}):\n  ${problems.join('\n  ')}`);
}

const truths = new Map<string, Truth>();
function truthFor(f: Family, c: Case): Truth {
  const key = `${f.name}|${JSON.stringify({ ...c, chunk: 0, tKind: '' })}`;
  let t = truths.get(key);
  if (!t) {
    if (truths.size > 16) truths.clear();
    truths.set(key, (t = truthOf(loadFn(f.file, f.name), f, c)));
  }
  return t;
}

describe.skipIf(!!why).each(FORMS)('%s schedule on native', { timeout: 600_000 }, (form) => {
  test.each(FAMILIES)(`$name: outputs and gradients agree with the float64 truth to relative RMSE <= ${TOL.toExponential(0)}`, async (f) => {
    const groups = Math.max(1, Math.round((NATIVE_RANDOM_RUNS * runsScale()) / NATIVE_CASES_PER_SHAPE));
    let cases = 0;
    const runs = await assertProperty(caseGroupArb(128, NATIVE_CASES_PER_SHAPE), async (group) => {
      for (const c of group) { cases++; await checkCase(f, form, c, truthFor(f, c)); }
    }, {
      seed: seedFor(SEED, `${f.name} ${form}`), randomRuns: groups, examples: EXAMPLES.map((c) => [c]), timeLimitMs: TIME_LIMIT_MS, endOnFailure: true,
    });
    expect(runs).toBe(EXAMPLES.length + groups);
    expect(cases).toBe(EXAMPLES.length + groups * NATIVE_CASES_PER_SHAPE);
  });
});

describe.skipIf(!!why)('the real head sizes on native (fixed cases)', { timeout: 300_000 }, () => {
  for (const c of REAL) {
    test.each(FORMS)(`retention K=${c.K} V=${c.V} T=${c.T} chunk=${c.chunk} %s: o, grad.q, grad.k, grad.v, grad.gamma within ${TOL}`, async (form) => {
      const local = new Worst();
      const t0 = performance.now();
      await checkCase(FAMILIES[0]!, form, c, truthFor(FAMILIES[0]!, c), local);
      console.log(`[native-schedules] ${describeCase(c)} ${form} (${((performance.now() - t0) / 1000).toFixed(1)} s): relative RMSE ${local.lines().join(', ')}`);
    });
  }
  test(`gated_retention K=64 V=64 T=100 chunk=32, every form: within ${TOL}`, async () => {
    const f = FAMILIES.find((x) => x.name === 'gated_retention')!;
    for (const form of FORMS) await checkCase(f, form, REAL[0]!, truthFor(f, REAL[0]!));
  });
});

describe.skipIf(!!why)('softmax_attention (parallel) on native', { timeout: 120_000 }, () => {
  test(`forward and backward agree with the literal float64 interpreter to relative RMSE <= ${TOL}`, async () => {
    const fn = loadFn('softmax_attention', 'softmax_attention');
    for (const [B, H, T, Kd, V] of [[1, 2, 19, 8, 5], [2, 1, 33, 16, 16]] as const) {
      const rand = prng(B * 1000 + T);
      const inputs = new Map<string, Value>([['q', uniform([B, H, T, Kd], rand)], ['k', uniform([B, H, T, Kd], rand)], ['v', uniform([B, H, T, V], rand)]]);
      const ref = reference(fn, inputs, rand);
      const fwd = await runNative(plan(fn, 'parallel', 16, false, { K: Kd, V }), inputs);
      const bwd = await runNative(plan(fn, 'parallel', 16, true, { K: Kd, V }), new Map([...inputs, ...ref.ups]));
      const problems: string[] = [];
      checkTensor('softmax_attention o', 'softmax_attention o', fwd.get('o'), ref.outs.get('o')!, problems, worst);
      for (const [name, want] of ref.grads) checkTensor(`softmax_attention ${name}`, `softmax_attention ${name}`, bwd.get(name), want, problems, worst);
      expect(problems).toEqual([]);
    }
  });
});

/** Bits of a float array (every NaN as one value). */
function bitsOf(a: Float32Array | Int32Array): Uint32Array {
  const u = new Uint32Array(a.length);
  const v = new Uint32Array(a.buffer, a.byteOffset, a.length);
  for (let i = 0; i < a.length; i++) u[i] = a[i] !== a[i] ? 0x7fc00000 : v[i]!;
  return u;
}

describe.skipIf(!!why)('bit for bit equal to the CPU executor (fixed cases)', { timeout: 300_000 }, () => {
  const c = BITWISE;
  test.each(FAMILIES)('$name, every form, forward and backward', async (f) => {
    const fn = loadFn(f.file, f.name);
    const truth = truthFor(f, c);
    const diffs: string[] = [];
    for (const form of FORMS) for (const backward of [false, true]) {
      const p = plan(fn, form, c.chunk, backward, { K: c.K, V: c.V });
      const inputs = backward ? new Map([...truth.inputs, ...truth.ref.ups]) : truth.inputs;
      const native = await runNative(p, inputs);
      const t0 = performance.now();
      const cpu = runPlanCpu(p, inputs);
      time.cpu += performance.now() - t0;
      for (const [name, want] of cpu) {
        const got = native.get(name)!;
        const a = bitsOf(got.data), b = bitsOf(want.data);
        let n = 0, first = -1;
        for (let i = 0; i < b.length; i++) if (a[i] !== b[i]) { n++; if (first < 0) first = i; }
        if (n || a.length !== b.length) diffs.push(`${form}${backward ? ' backward' : ''} ${name}: ${n} of ${b.length} elements differ (first at ${first}: native ${got.data[first]}, executor ${want.data[first]})`);
      }
    }
    expect(diffs).toEqual([]);
  });
});

afterAll(() => {
  if (time.runs) {
    console.log(`[native-schedules] seed ${SEED}: ${time.runs} native plan runs in ${(time.native / 1000).toFixed(1)} s (compiling: ${(time.prepare / 1000).toFixed(1)} s outside the parallel prepares); CPU executor ${(time.cpu / 1000).toFixed(1)} s`);
    console.log(`[native-schedules] worst relative RMSE (decay gradients against max(RMS ref, natural scale)):\n  ${worst.lines().join('\n  ')}`);
  }
});
