// The schedule's state tile (Schedule.tiles.state: the most state entries one thread keeps in the
// recurrent, chunkwise and chunk-parallel forms) and native's retention defaults (the blocked walk
// over chunks, not chunk-parallel; a whole key axis per thread): the record round-trips, bad values are errors, and every form at
// a small and a large tile equals the float64 truth on the CPU executor (forward and backward;
// order-1 decay gradients included, through gated retention) and on native where it runs.
import { describe, expect, test } from 'vitest';
import { compilePlan, type Plan, specialisedSizes } from '../compiler/plan.js';
import { type Form, makeSchedule, scheduleFromJson, ScheduleFormatError, scheduleKey, scheduleToJson, statementSchedule } from '../compiler/schedule.js';
import type { CheckedFn } from '../dsl/checked.js';
import { runPlanCpu } from '../runtime/plan-runner.js';
import { withTargetDefaults } from '../runtime/targets.js';
import { findCompiler } from '../targets/native/compile.js';
import { loadNativeAddon } from '../runtime/native/addon.js';
import { loadFn } from './helpers/harness.js';
import { checkTensor, DECAY_GRADS, FAMILIES, truthOf, Worst, type Case } from './helpers/schedule-cases.js';

describe('the state tile in the schedule record', () => {
  test('round-trips through JSON and keys; a statement may set its own; out of range is an error', () => {
    const s = makeSchedule('recurrent', 64, { tiles: { cols: 64, state: 256 } });
    expect(s.tiles).toEqual({ cols: 64, state: 256 });
    const back = scheduleFromJson(JSON.parse(JSON.stringify(scheduleToJson(s))));
    expect(back.tiles).toEqual({ cols: 64, state: 256 });
    expect(scheduleKey(back)).toBe(scheduleKey(s));
    expect(scheduleKey(back)).not.toBe(scheduleKey(makeSchedule('recurrent', 64)));
    expect(scheduleFromJson({ form: 'chunkwise', chunk: 32, tiles: { state: 8 } }).tiles).toEqual({ cols: 32, state: 8 });
    expect(statementSchedule(makeSchedule('chunkwise', 16), { tiles: { state: 4 } }).tiles.state).toBe(4);
    expect(() => scheduleFromJson({ form: 'recurrent', tiles: { state: 0 } })).toThrow(ScheduleFormatError);
    expect(() => scheduleFromJson({ form: 'recurrent', tiles: { rows: 4 } })).toThrow(/tiles must be/);
  });

  test('it sets how many threads share a column of the state (K = V = 64: 1 at 1024 and at the default 64, 4 at 16)', () => {
    const fn = loadFn('retention', 'retention');
    const threads = (state?: number) => compilePlan(fn, makeSchedule('recurrent', 64, state ? { tiles: { cols: 64, state } } : {}), { constants: new Map([['K', 64], ['V', 64]]) }).launches[0]!.kernel.workgroup[0];
    expect([threads(1024), threads(), threads(16)]).toEqual([64, 64, 256]);
  });

  test("native's defaults: blocked products (the chunkwise walk, not chunk-parallel) and a whole key axis per thread, unless the schedule says otherwise; other targets keep theirs", () => {
    const base = makeSchedule('chunkwise', 64);
    const n = withTargetDefaults(base, 'native');
    expect(n.chunkParallel).toBeUndefined();
    expect(n.dense).toBe('blocked');
    expect(withTargetDefaults(makeSchedule('chunkwise', 64, { chunkParallel: true }), 'native').chunkParallel).toBe(true);
    expect(n.tiles.state).toBe(1024);
    expect(withTargetDefaults(makeSchedule('chunkwise', 64, { tiles: { cols: 64, state: 32 } }), 'native').tiles.state).toBe(32);
    for (const t of ['cpu', 'webgpu', 'cuda']) {
      const d = withTargetDefaults(base, t);
      expect(d.chunkParallel).toBeUndefined();
      expect(d.tiles.state).toBeUndefined();
    }
  });
});

const CASES: Case[] = [
  { B: 2, H: 2, T: 37, K: 24, V: 10, chunk: 8, gammas: [0.9, 1 - 2 ** -20], gate: 'mixed', data: 11, tKind: 'ragged' },
  { B: 1, H: 1, T: 21, K: 65, V: 7, chunk: 5, gammas: [-0.7], gate: 'uniform', data: 12, tKind: 'ragged' },
];
const VARIANTS: { form: Form; chunkParallel?: boolean }[] = [{ form: 'recurrent' }, { form: 'chunkwise' }, { form: 'chunkwise', chunkParallel: true }];

function planOf(fn: CheckedFn, c: Case, backward: boolean, v: (typeof VARIANTS)[number], state: number): Plan {
  const constants = new Map(specialisedSizes(fn, backward).map((s) => [s, s === 'K' ? c.K : c.V] as const));
  return compilePlan(fn, makeSchedule(v.form, c.chunk, { tiles: { cols: c.chunk, state }, ...(v.chunkParallel ? { chunkParallel: true } : {}) }), { backward, constants });
}

const worst = new Worst();
// Without a C compiler or the addon the native cases are skipped (tests/native-schedules.test.ts
// fails that case when REQUIRE_NATIVE=1).
const native = findCompiler() !== undefined && !('error' in loadNativeAddon());

describe.each([['cpu'], ['native']])('every form at state tiles 4 and 1024 equals the float64 truth (%s)', (target) => {
  for (const f of [FAMILIES[0]!, FAMILIES[3]!]) {
    test.skipIf(target === 'native' && !native)(`${f.name}: forward and backward`, async () => {
      const fn = loadFn(f.file, f.name);
      const run = target === 'cpu' ? async (p: Plan, i: Map<string, unknown>) => runPlanCpu(p, i as never) : async (p: Plan, i: Map<string, unknown>) => (await import('../runtime/native/runner.js')).runPlanNative(p, i as never);
      const problems: string[] = [];
      // Native compiles every plan: one case there (seconds), both on the executor.
      for (const c of target === 'native' ? CASES.slice(0, 1) : CASES) {
        const r = truthOf(fn, f, c);
        for (const backward of [false, true]) {
          const inputs = backward ? new Map([...r.inputs, ...r.ref.ups]) : r.inputs;
          const want = backward ? r.ref.grads : r.ref.outs;
          for (const v of VARIANTS) for (const state of [4, 1024]) {
            const got = await run(planOf(fn, c, backward, v, state), inputs);
            for (const [name, w] of want) checkTensor(`${f.name} ${v.form}${v.chunkParallel ? ' (chunk-parallel)' : ''} state ${state} ${backward ? 'backward' : 'forward'} T=${c.T} K=${c.K} ${name}`, `${f.name} ${name}`, got.get(name), w, problems, worst, DECAY_GRADS.has(name) ? r.scale : undefined);
          }
        }
      }
      expect(problems).toEqual([]);
    }, 120_000);
  }
});
