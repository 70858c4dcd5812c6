// The chunk-parallel form for CPUs (compiler/lower/chunk-cpu.ts: single-thread workgroups of
// blocked chunk products; chosen where the schedule has chunkParallel and dense 'blocked', native's
// defaults): every family of models/, forward and backward, against the float64 truth (relative
// RMSE <= 1e-5, decay gradients at their natural scale) and against the recurrent schedule, on the
// JavaScript executor and on native, at random B, H, T (ragged against the chunk), K != V and
// chunks that are not multiples of the lane width, and at K = V = 64 and K = 256, V = 512. On
// native the outputs are also bit for bit the executor's (the same kernel IR; lane loops are the
// scalar loops' operations).
import fc from 'fast-check';
import { afterAll, describe, expect, test } from 'vitest';
import { compilePlan, type Plan, specialisedSizes } from '../compiler/plan.js';
import { type Form, makeSchedule } from '../compiler/schedule.js';
import type { CheckedFn } from '../dsl/checked.js';
import { loadNativeAddon } from '../runtime/native/addon.js';
import { runPlanNative } from '../runtime/native/runner.js';
import { runPlanCpu } from '../runtime/plan-runner.js';
import { withTargetDefaults } from '../runtime/targets.js';
import { findCompiler, NO_COMPILER } from '../targets/native/compile.js';
import { assertProperty, fcSeed, loadFn, relErr, seedFor } from './helpers/harness.js';
import { checkTensor, DECAY_GRADS, FAMILIES, truthOf, Worst, type Case, type Family, type GateMode } from './helpers/schedule-cases.js';

const SEED = fcSeed('chunk-cpu');
const TOL = 1e-5;
const worst = new Worst();
const cc = findCompiler();
const addon = cc ? loadNativeAddon() : { error: NO_COMPILER };
const noNative = !cc ? NO_COMPILER : 'error' in addon ? addon.error : undefined;
if (noNative) console.log(`[chunk-cpu] native skipped: ${noNative}`);

function planOf(fn: CheckedFn, c: Pick<Case, 'K' | 'V' | 'chunk'>, backward: boolean, form: Form): Plan {
  const constants = new Map(specialisedSizes(fn, backward).map((s) => [s, s === 'K' ? c.K : c.V] as const));
  const sched = form === 'chunkwise' ? makeSchedule(form, c.chunk, { chunkParallel: true, dense: 'blocked' }) : makeSchedule(form, c.chunk);
  return compilePlan(fn, sched, { backward, constants });
}

type Out = Map<string, { shape: number[]; data: ArrayLike<number> }>;

/** Forward and backward of `f` at `c`: the CPU form on the executor (and native) against the truth, the recurrent schedule and each other. */
async function checkCase(f: Family, c: Case, onNative: boolean): Promise<string[]> {
  const fn = loadFn(f.file, f.name);
  const r = truthOf(fn, f, c);
  const problems: string[] = [];
  for (const backward of [false, true]) {
    const inputs = backward ? new Map([...r.inputs, ...r.ref.ups]) : r.inputs;
    const want = backward ? r.ref.grads : r.ref.outs;
    const p = planOf(fn, c, backward, 'chunkwise');
    if (!p.launches.some((l) => l.kernel.name.endsWith('_o') && l.kernel.workgroup[0] === 1)) problems.push(`${f.name}: the plan has no single-thread chunk-output kernel`);
    const runs: [string, Out][] = [['cpu', runPlanCpu(p, inputs, { poison: NaN })]];
    if (onNative) runs.push(['native', await runPlanNative(p, inputs, { poison: NaN })]);
    const rec = runPlanCpu(planOf(fn, c, backward, 'recurrent'), inputs);
    const label = (t: string, name: string) => `${f.name} ${t} ${backward ? 'backward' : 'forward'} B=${c.B} H=${c.H} T=${c.T} K=${c.K} V=${c.V} chunk=${c.chunk} ${name}`;
    for (const [t, got] of runs) for (const [name, w] of want) {
      checkTensor(label(t, name), `${f.name} ${name}`, got.get(name), w, problems, worst, DECAY_GRADS.has(name) ? r.scale : undefined);
      const e = relErr(got.get(name)!.data, rec.get(name)!.data);
      const den = DECAY_GRADS.has(name) && r.scale ? Math.max(e.rmsRef, Math.sqrt(r.scale.data.reduce((a, x) => a + x * x, 0) / r.scale.data.length)) : e.rmsRef;
      const rel = den > 0 ? e.rmsDiff / den : e.rmsDiff;
      worst.note(`${f.name} ${name} vs recurrent`, rel);
      if (!(rel <= TOL)) problems.push(`${label(t, name)}: relative RMSE ${rel.toExponential(3)} against the recurrent schedule`);
    }
    if (runs.length === 2) {
      for (const [name, w] of runs[0]![1]) {
        const a = runs[1]![1].get(name)!.data, b = w.data;
        let n = 0;
        for (let i = 0; i < b.length; i++) if (!Object.is(a[i], b[i]) && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) n++;
        if (n) problems.push(`${label('native', name)}: ${n} of ${b.length} elements differ from the executor's`);
      }
    }
  }
  return problems;
}

const caseArb: fc.Arbitrary<Case> = fc.record({
  B: fc.integer({ min: 1, max: 2 }),
  H: fc.integer({ min: 1, max: 3 }),
  K: fc.integer({ min: 1, max: 20 }),
  V: fc.integer({ min: 1, max: 40 }),
  chunk: fc.constantFrom(1, 3, 8, 16, 17, 32),
  t: fc.nat(1 << 20),
  gammas: fc.tuple(...[0, 1, 2].map(() => fc.oneof(fc.constant(1), fc.constant(1 - 2 ** -20), fc.double({ min: 0.5, max: 1 - 2 ** -20, noNaN: true }), fc.constant(-0.7)))),
  gate: fc.constantFrom<GateMode>('uniform', 'zeros', 'mixed', 'near1'),
  data: fc.integer(),
}).map(({ t, gammas, ...r }) => {
  // T ragged against the chunk (a few chunks and a partial one), or below it.
  const T = t % 4 === 0 ? 1 + (t % Math.max(1, r.chunk)) : Math.min(100, r.chunk * (1 + (t % 4)) + 1 + (t % Math.max(1, r.chunk - 1)));
  return { ...r, T, gammas: gammas.slice(0, r.H).map((g) => Math.fround(g)), tKind: 'ragged' };
});

describe('the CPU chunk-parallel form (executor and native) vs the float64 truth and the recurrent schedule', () => {
  test("native's defaults pick it for chunkwise contractions", () => {
    const fn = loadFn('retention', 'retention');
    const p = compilePlan(fn, withTargetDefaults(makeSchedule('chunkwise', 64), 'native'), { constants: new Map([['K', 64], ['V', 64]]) });
    expect(p.launches.map((l) => [l.kernel.name.replace(/^retention_0_chunkpar/, ''), l.kernel.workgroup[0]])).toEqual([['_h', 1], ['_scan', 1], ['_o', 1]]);
  });
  for (const f of FAMILIES) {
    test(`${f.name}: random cases, forward and backward`, async () => {
      const runs = await assertProperty(caseArb, async (c) => { expect(await checkCase(f, c, !noNative)).toEqual([]); }, { seed: seedFor(SEED, f.name), randomRuns: 2, examples: [], timeLimitMs: 120_000, endOnFailure: true });
      expect(runs).toBe(2);
    }, 600_000);
  }
  const fixed: [Family, Case][] = [
    [FAMILIES[0]!, { B: 1, H: 2, T: 100, K: 64, V: 64, chunk: 32, gammas: [0.97, 1 - 2 ** -20], gate: 'uniform', data: 1, tKind: 'ragged' }],
    [FAMILIES[3]!, { B: 1, H: 1, T: 45, K: 24, V: 40, chunk: 16, gammas: [], gate: 'mixed', data: 2, tKind: 'ragged' }],
    [FAMILIES[1]!, { B: 1, H: 2, T: 50, K: 33, V: 17, chunk: 17, gammas: [-0.7, 0], gate: 'uniform', data: 3, tKind: 'ragged' }],
    // The largest head at a small T: two chunks, the second partial.
    [FAMILIES[0]!, { B: 1, H: 1, T: 7, K: 256, V: 512, chunk: 4, gammas: [0.9], gate: 'uniform', data: 4, tKind: 'ragged' }],
  ];
  for (const [f, c] of fixed) {
    test(`${f.name} B=${c.B} H=${c.H} T=${c.T} K=${c.K} V=${c.V} chunk=${c.chunk}: forward and backward`, async () => {
      expect(await checkCase(f, c, !noNative)).toEqual([]);
    }, 300_000);
  }
});

afterAll(() => console.log(`[chunk-cpu] seed ${SEED}; worst relative RMSE:\n  ${worst.lines().join('\n  ')}`));
