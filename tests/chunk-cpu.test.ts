// The chunkwise forms for CPUs (dense 'blocked', native's default): the chunk-parallel one
// (compiler/lower/chunk-cpu.ts: single-thread workgroups of blocked chunk products; chosen where
// the schedule has chunkParallel) and the walk over a sequence's chunks (chunk-walk-cpu.ts, native's
// default): every family of models/, forward and backward. The chunk-parallel form on the
// JavaScript executor against the float64 truth (relative RMSE <= 1e-5, decay gradients at their
// natural scale) and against the recurrent schedule; the walk bit for bit the chunk-parallel form
// (the same products and sums in the same order), on the executor and on native. On native the
// outputs are bit for bit the executor's (the same kernel IR; lane loops are the scalar loops'
// operations).
// Compiling the C of a plan is most of a case's cost, and only K, V and the chunk make a new plan
// (B, H and T are runtime sizes): each family's random cases share one kernel shape (SHAPES: tails
// of K, V and the chunk against the micro tiles, together the paths of the lowering) and draw B,
// H, T (ragged against the chunk, or below it), decays (edges 1, 1 - 2^-20, 0, negative), gates
// and data; two fixed cases add whole tiles (K = V = 32) and the largest head (K = 256, V = 512).
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

/** A case with the vector width of its CPU micro tiles (Schedule.lanes: 16 AVX-512, 8 AVX2, 4 SSE/NEON; absent 16). */
type LCase = Case & { lanes?: number };

function planOf(fn: CheckedFn, c: Pick<LCase, 'K' | 'V' | 'chunk' | 'lanes'>, backward: boolean, form: Form | 'walk'): Plan {
  const constants = new Map(specialisedSizes(fn, backward).map((s) => [s, s === 'K' ? c.K : c.V] as const));
  const lanes = c.lanes !== undefined ? { lanes: c.lanes } : {};
  const sched = form === 'chunkwise' ? makeSchedule(form, c.chunk, { chunkParallel: true, dense: 'blocked', ...lanes }) : form === 'walk' ? makeSchedule('chunkwise', c.chunk, { dense: 'blocked', ...lanes }) : makeSchedule(form, c.chunk);
  return compilePlan(fn, sched, { backward, constants });
}

type Out = Map<string, { shape: number[]; data: ArrayLike<number> }>;

/** Forward and backward of `f` at `c`: the CPU form on the executor (and native) against the truth, the recurrent schedule and each other. */
async function checkCase(f: Family, c: LCase, onNative: boolean): Promise<string[]> {
  const fn = loadFn(f.file, f.name);
  const r = truthOf(fn, f, c);
  const problems: string[] = [];
  for (const backward of [false, true]) {
    const inputs = backward ? new Map([...r.inputs, ...r.ref.ups]) : r.inputs;
    const want = backward ? r.ref.grads : r.ref.outs;
    const p = planOf(fn, c, backward, 'chunkwise'), w = planOf(fn, c, backward, 'walk');
    if (!p.launches.some((l) => l.kernel.name.endsWith('_o') && l.kernel.workgroup[0] === 1)) problems.push(`${f.name}: the plan has no single-thread chunk-output kernel`);
    if (!w.launches.some((l) => l.kernel.name.endsWith('_chunkwise') && l.kernel.workgroup[0] === 1)) problems.push(`${f.name}: the walk's plan has no single-thread chunkwise kernel`);
    const par = runPlanCpu(p, inputs, { poison: NaN });
    const runs: [string, Out][] = [['cpu walk', runPlanCpu(w, inputs, { poison: NaN })]];
    if (onNative) runs.push(['native walk', await runPlanNative(w, inputs, { poison: NaN })]);
    const rec = runPlanCpu(planOf(fn, c, backward, 'recurrent'), inputs);
    const label = (t: string, name: string) => `${f.name} ${t} ${backward ? 'backward' : 'forward'} B=${c.B} H=${c.H} T=${c.T} K=${c.K} V=${c.V} chunk=${c.chunk} lanes=${c.lanes ?? 16} ${name}`;
    for (const [name, want1] of want) {
      checkTensor(label('cpu', name), `${f.name} ${name}`, par.get(name), want1, problems, worst, DECAY_GRADS.has(name) ? r.scale : undefined);
      const e = relErr(par.get(name)!.data, rec.get(name)!.data);
      const den = DECAY_GRADS.has(name) && r.scale ? Math.max(e.rmsRef, Math.sqrt(r.scale.data.reduce((a, x) => a + x * x, 0) / r.scale.data.length)) : e.rmsRef;
      const rel = den > 0 ? e.rmsDiff / den : e.rmsDiff;
      worst.note(`${f.name} ${name} vs recurrent`, rel);
      if (!(rel <= TOL)) problems.push(`${label('cpu', name)}: relative RMSE ${rel.toExponential(3)} against the recurrent schedule`);
    }
    // Bit for bit: the walk (executor, native) against the chunk-parallel form on the executor.
    for (const [t, got] of runs) {
      for (const [name, v] of par) {
        const a = got.get(name)?.data, b = v.data;
        if (!a) { problems.push(`${label(t, name)}: missing`); continue; }
        let n = 0;
        for (let i = 0; i < b.length; i++) if (!Object.is(a[i], b[i]) && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) n++;
        if (n) problems.push(`${label(t, name)}: ${n} of ${b.length} elements differ from the chunk-parallel form's`);
      }
    }
  }
  return problems;
}

/**
 * The kernel shape of each family's cases. Rows: micro tiles of MR = 8 rows (4 at 8 and 4 lanes); columns: vectors of
 * W = 16 lanes (or the case's lanes), tiles of NR = 16 (V <= 16) or 32 columns (chunk-cpu.ts). The backward's
 * contractions swap the roles of K and V and double the state's rows (order 1 for grad.gamma).
 */
const SHAPES: Record<string, Pick<Case, 'K' | 'V' | 'chunk'>> = {
  // Row tails (20 % 8, 40 % 8), column tails (40 % 32, 20 % 32), E packed; a chunk of 17: tails of both.
  retention: { K: 20, V: 40, chunk: 17 },
  // Values below one vector (5, 9: one tile of 16 columns, zero padded); a chunk of MR rows.
  retention_state: { K: 9, V: 5, chunk: 8 },
  // A chunk below MR (one partial row block), no decay; 17 = one vector and one lane.
  linear_attention: { K: 3, V: 17, chunk: 3 },
  // Whole rows and columns at K = 24, V = 16 (a tile's row stored as vectors), a column tail at
  // 24 when swapped; a chunk of W; decays per pair from the gates.
  gated_retention: { K: 24, V: 16, chunk: 16 },
};

const gammaArb = fc.oneof(fc.constant(1), fc.constant(1 - 2 ** -20), fc.constant(0), fc.constant(-0.7), fc.double({ min: 0.5, max: 1 - 2 ** -20, noNaN: true }));

const caseArb = (shape: Pick<Case, 'K' | 'V' | 'chunk'>): fc.Arbitrary<LCase> => fc.record({
  // Every vector width the native target picks for its host (each case one).
  lanes: fc.constantFrom(16, 8, 4),
  B: fc.integer({ min: 1, max: 2 }),
  H: fc.integer({ min: 1, max: 3 }),
  t: fc.nat(1 << 20),
  gammas: fc.tuple(gammaArb, gammaArb, gammaArb),
  gate: fc.constantFrom<GateMode>('uniform', 'zeros', 'mixed', 'near1'),
  data: fc.integer(),
}).map(({ t, gammas, ...r }) => {
  const { chunk } = shape;
  // T ragged against the chunk (a few chunks and a partial one), or below it.
  const T = t % 4 === 0 ? 1 + (t % Math.max(1, chunk)) : Math.min(100, chunk * (1 + (t % 4)) + 1 + (t % Math.max(1, chunk - 1)));
  return { ...r, ...shape, T, gammas: gammas.slice(0, r.H).map((g) => Math.fround(g)), tKind: 'ragged' };
});

/** Per family, a case with every decay edge at once (three heads: 1, negative, 0) and a partial last chunk. */
const edgeCase = (f: Family): Case[] => {
  const sh = SHAPES[f.name]!;
  return f.decay === 'gamma' ? [{ B: 1, H: 3, T: 2 * sh.chunk + 1, ...sh, gammas: [1, -0.7, 0], gate: 'uniform', data: 7, tKind: 'ragged' }] : [];
};

describe('the CPU chunkwise forms (chunk-parallel and walk; executor and native) vs the float64 truth, the recurrent schedule and each other', () => {
  test("native's defaults pick the walk for chunkwise contractions, chunkParallel the three phases", () => {
    const fn = loadFn('retention', 'retention');
    const names = (chunkParallel: boolean) => compilePlan(fn, withTargetDefaults(makeSchedule('chunkwise', 64, chunkParallel ? { chunkParallel } : {}), 'native'), { constants: new Map([['K', 64], ['V', 64]]) })
      .launches.map((l) => [l.kernel.name.replace(/^retention_0_/, ''), l.kernel.workgroup[0]]);
    expect(names(false)).toEqual([['chunkwise', 1]]);
    expect(names(true)).toEqual([['chunkpar_h', 1], ['chunkpar_scan', 1], ['chunkpar_o', 1]]);
  });
  for (const f of FAMILIES) {
    test(`${f.name} K=${SHAPES[f.name]!.K} V=${SHAPES[f.name]!.V} chunk=${SHAPES[f.name]!.chunk}: random cases, forward and backward`, async () => {
      const examples = edgeCase(f);
      const runs = await assertProperty(caseArb(SHAPES[f.name]!), async (c) => { expect(await checkCase(f, c, !noNative)).toEqual([]); }, { seed: seedFor(SEED, f.name), randomRuns: 3, examples, timeLimitMs: 120_000, endOnFailure: true });
      expect(runs).toBe(3 + examples.length);
    }, 600_000);
  }
  const fixed: [Family, LCase][] = [
    // Whole tiles both ways (E read where it lies; the native bench's K = V = 64 takes the same
    // paths), a partial last chunk of 4 rows.
    [FAMILIES[0]!, { B: 1, H: 2, T: 100, K: 32, V: 32, chunk: 32, gammas: [0.97, 1 - 2 ** -20], gate: 'uniform', data: 1, tKind: 'ragged' }],
    // The same at AVX2's micro tiles (8 lanes, 4 rows).
    [FAMILIES[0]!, { B: 1, H: 2, T: 100, K: 32, V: 32, chunk: 32, gammas: [0.97, 1 - 2 ** -20], gate: 'uniform', data: 1, tKind: 'ragged', lanes: 8 }],
    // The largest head at a small T: two chunks, the second partial.
    [FAMILIES[0]!, { B: 1, H: 1, T: 7, K: 256, V: 512, chunk: 4, gammas: [0.9], gate: 'uniform', data: 4, tKind: 'ragged' }],
  ];
  for (const [f, c] of fixed) {
    test(`${f.name} B=${c.B} H=${c.H} T=${c.T} K=${c.K} V=${c.V} chunk=${c.chunk} lanes=${c.lanes ?? 16}: forward and backward`, async () => {
      expect(await checkCase(f, c, !noNative)).toEqual([]);
    }, 300_000);
  }
});

afterAll(() => console.log(`[chunk-cpu] seed ${SEED}; worst relative RMSE:\n  ${worst.lines().join('\n  ')}`));
