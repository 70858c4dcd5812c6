// The chunkwise form's tiling (compiler/lower/contraction.ts chunkTiling): with no state tile in
// the schedule, 8 value columns of a 16-key slice per thread where the reduction buffer and the
// score phase allow it (chunk 16 at K = V = 64 and 128: 0.6-0.7x recurrent's CPU time on
// lavapipe), else the 4-column tiling; an explicit tiles.state keeps the 4-column one. Both equal
// the float64 truth on the CPU executor, with ragged value tiles and order-1 decay gradients.
import { describe, expect, test } from 'vitest';
import { compilePlan, specialisedSizes } from '../compiler/plan.js';
import { makeSchedule } from '../compiler/schedule.js';
import { runPlanCpu } from '../runtime/plan-runner.js';
import { loadFn } from './helpers/harness.js';
import { checkTensor, DECAY_GRADS, FAMILIES, truthOf, Worst, type Case } from './helpers/schedule-cases.js';

const threads = (chunk: number, KV: number, state?: number): number => {
  const fn = loadFn('retention', 'retention');
  const s = makeSchedule('chunkwise', chunk, state ? { tiles: { cols: chunk, state } } : {});
  return compilePlan(fn, s, { constants: new Map([['K', KV], ['V', KV]]) }).launches[0]!.kernel.workgroup[0];
};

describe('the chunkwise tiling', () => {
  test('8 columns x 16 keys per thread at chunk 16 (K = V = 64: 8 columns x 4 slices; 128: 16 x 8); the 4-column tiling at chunk 64 or with an explicit state tile', () => {
    expect([threads(16, 64), threads(16, 128), threads(64, 64), threads(16, 64, 64)]).toEqual([32, 128, 64, 64]);
  });

  const worst = new Worst();
  const c: Case = { B: 1, H: 2, T: 37, K: 64, V: 40, chunk: 16, gammas: [0.9, 1 - 2 ** -20], gate: 'mixed', data: 21, tKind: 'ragged' };
  for (const f of [FAMILIES[0]!, FAMILIES[3]!]) {
    test(`${f.name}: the 8-column and the 4-column tiling equal the float64 truth, forward and backward (T=${c.T} K=${c.K} V=${c.V} chunk ${c.chunk})`, async () => {
      const fn = loadFn(f.file, f.name);
      const r = truthOf(fn, f, c);
      const problems: string[] = [];
      for (const backward of [false, true]) {
        const inputs = backward ? new Map([...r.inputs, ...r.ref.ups]) : r.inputs;
        const want = backward ? r.ref.grads : r.ref.outs;
        const constants = new Map(specialisedSizes(fn, backward).map((s) => [s, s === 'K' ? c.K : c.V] as const));
        for (const state of [undefined, 64]) {
          const plan = compilePlan(fn, makeSchedule('chunkwise', c.chunk, state ? { tiles: { cols: c.chunk, state } } : {}), { backward, constants });
          const got = await runPlanCpu(plan, inputs as never);
          for (const [name, w] of want) checkTensor(`${f.name} chunkwise state ${state ?? 'default'} ${backward ? 'backward' : 'forward'} ${name}`, `${f.name} ${name}`, got.get(name), w, problems, worst, DECAY_GRADS.has(name) ? r.scale : undefined);
        }
      }
      expect(problems).toEqual([]);
    }, 300_000);
  }
});
