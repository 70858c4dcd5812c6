// Which schedules exist, and how the decay shapes the derived kernels:
//   - softmax attention's weight exp(q[t].k[s]/sqrt(K) - m[t]) couples t and s, so it has the
//     parallel schedule only: that one matches the reference (forward and backward), and asking
//     for recurrent or chunkwise throws a ScheduleError that says the weight does not factorise;
//   - the chunkwise kernels of retention evaluate the decay (exp of position differences times
//     log gamma), linear attention's have no decay at all, and gated retention's read the
//     cumulative log gate G computed from g by an earlier scan launch.
import { describe, expect, test } from 'vitest';
import { compilePlan, ScheduleError, type Plan } from '../compiler/plan.js';
import { FORMS, makeSchedule } from '../compiler/schedule.js';
import { kernelToString } from '../compiler/kir-print.js';
import { loadFn, plan, prng, reference, relErr, runPlan, uniform, type Value } from './helpers/harness.js';

const TOL = 1e-5;

describe('softmax_attention', () => {
  const fn = loadFn('softmax_attention', 'softmax_attention');

  for (const [B, H, T, K, V, chunk] of [[2, 2, 13, 5, 3, 4], [1, 3, 1, 7, 2, 1], [1, 1, 70, 16, 9, 64], [2, 1, 33, 1, 1, 128]] as const) {
    test(`parallel (B=${B} H=${H} T=${T} K=${K} V=${V}, tile ${chunk}) matches the reference forward and backward`, () => {
      const rand = prng(B * 1000 + T);
      // Uniform inputs: scores of order one, a softmax neither flat nor one-hot.
      const inputs = new Map<string, Value>([['q', uniform([B, H, T, K], rand)], ['k', uniform([B, H, T, K], rand)], ['v', uniform([B, H, T, V], rand)]]);
      const ref = reference(fn, inputs, rand);
      const o = runPlan(plan(fn, 'parallel', chunk, false, { K, V }), inputs).get('o')!;
      expect(o.shape).toEqual([B, H, T, V]);
      expect(relErr(o.data, ref.outs.get('o')!.data).rel).toBeLessThanOrEqual(TOL);
      const g = runPlan(plan(fn, 'parallel', chunk, true, { K, V }), new Map([...inputs, ...ref.ups]));
      for (const name of ['grad.q', 'grad.k', 'grad.v']) {
        const e = relErr(g.get(name)!.data, ref.grads.get(name)!.data);
        expect(e.rel, `${name}: relative RMSE ${e.rel}`).toBeLessThanOrEqual(TOL);
      }
    });
  }

  for (const form of ['recurrent', 'chunkwise'] as const) {
    for (const backward of [false, true]) {
      test(`${form}${backward ? ' backward' : ''} throws a ScheduleError: the weight does not factorise`, () => {
        let err: unknown;
        try {
          compilePlan(fn, makeSchedule(form, 16), { backward, constants: new Map([['K', 4], ['V', 4]]) });
        } catch (e) {
          err = e;
        }
        expect(err).toBeInstanceOf(ScheduleError);
        const msg = (err as Error).message;
        expect(msg).toContain(`'softmax_attention' has no ${form} schedule`);
        expect(msg).toMatch(/does not factorise/);
        expect(msg).toMatch(/only the parallel schedule exists/);
      });
    }
  }
});

/** The kernel IR text of every launch of a plan, and the tensor names each launch reads. */
const texts = (p: Plan): string[] => p.launches.map((l) => kernelToString(l.kernel));
const contractionLaunches = (p: Plan) => p.launches.filter((l) => l.how === 'contraction');
const tensorName = (p: Plan, id: string): string => p.fn.vars.get(id)?.name ?? id;

describe('the derived kernels follow the decay', () => {
  const sizes = { K: 3, V: 5 };
  const retention = loadFn('retention', 'retention');
  const linear = loadFn('linear_attention', 'linear_attention');
  const gated = loadFn('gated_retention', 'gated_retention');

  for (const backward of [false, true]) {
    const dir = backward ? 'backward' : 'forward';
    test(`chunkwise ${dir}: retention evaluates exp(... log(gamma)), linear attention has no exp`, () => {
      const r = plan(retention, 'chunkwise', 16, backward, sizes);
      const l = plan(linear, 'chunkwise', 16, backward, sizes);
      expect(contractionLaunches(r).length).toBeGreaterThan(0);
      expect(contractionLaunches(l).length).toBeGreaterThan(0);
      const rText = texts(r).join('\n');
      expect(rText).toContain('exp(');
      // log |gamma| of the loaded gamma, directly or through the local kir-cse binds it to.
      expect(rText).toMatch(/log\((abs\()?(gamma\[|cse_\d+)/);
      expect(rText).toMatch(/cse_\d+ = gamma\[|log\((abs\()?gamma\[/);
      for (const t of texts(l)) {
        expect(t).not.toContain('exp(');
        expect(t).not.toContain('log(');
      }
    });

    test(`chunkwise ${dir}: gated retention's weights come from chunk-local sums of the gate g`, () => {
      const p = plan(gated, 'chunkwise', 16, backward, sizes);
      const cs = contractionLaunches(p);
      // The contraction with a decay (the forward o, or its recomputation) reads g itself and
      // takes exp of differences of chunk-local sums Lc, never of the global G.
      const first = cs.find((l) => /exp\(/.test(kernelToString(l.kernel)))!;
      expect(first).toBeDefined();
      const reads = Object.values(first.buffers).map((id) => tensorName(p, id));
      expect(reads).toContain('g');
      expect(reads).not.toContain('G');
      const text = kernelToString(first.kernel);
      expect(text).toMatch(/exp\(Lc\d\[.*\] - Lc\d\[/);
      // G = cumsum(g) is still computed, by a scan launch (a contraction with K = V = 1, no exp).
      const gIndex = p.launches.findIndex((l) => tensorName(p, l.target) === 'G');
      expect(gIndex).toBeGreaterThanOrEqual(0);
      expect(p.launches[gIndex]!.how).toBe('contraction');
      expect(kernelToString(p.launches[gIndex]!.kernel)).not.toMatch(/exp\(/);
    });
  }

  test('every family function has every schedule except softmax attention (recurrent, chunkwise)', () => {
    for (const fn of [retention, loadFn('retention', 'retention_state'), linear, gated]) {
      for (const form of FORMS) for (const backward of [false, true]) expect(() => plan(fn, form, 8, backward, sizes)).not.toThrow();
    }
  });
});
