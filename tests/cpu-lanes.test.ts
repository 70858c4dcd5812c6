// Schedule.lanes: the vector width the blocked CPU lowerings shape their micro tiles for, and
// native's default for it, the host compiler's (targets/native/compile.ts hostLanes). A 16-lane
// micro tile on an AVX2 CPU spilled its 32 accumulators and ran the dense case 20x slower, so
// the probe must answer for the flags the kernels are compiled with.
import { describe, expect, test } from 'vitest';
import { makeSchedule, ScheduleFormatError, scheduleFromJson, scheduleToJson } from '../compiler/schedule.js';
import { findCompiler, hostLanes } from '../targets/native/compile.js';
import { withTargetDefaults } from '../runtime/targets.js';
import { compilePlan } from '../compiler/plan.js';
import { loadFn } from './helpers/harness.js';

const cc = findCompiler();
const x86 = process.arch === 'x64';

describe('Schedule.lanes', () => {
  test('a schedule file states it, round trips it, and rejects other widths in one line', () => {
    const s = scheduleFromJson({ form: 'chunkwise', chunk: 32, lanes: 8 });
    expect(s.lanes).toBe(8);
    expect(scheduleFromJson(JSON.parse(JSON.stringify(scheduleToJson(s))))).toEqual(s);
    for (const bad of [5, 32, '8', 0]) expect(() => scheduleFromJson({ form: 'chunkwise', lanes: bad })).toThrow(ScheduleFormatError);
    expect(() => scheduleFromJson({ form: 'chunkwise', lanes: 5 })).toThrow(/lanes must be one of 4, 8, 16, got 5/);
    expect(makeSchedule('parallel').lanes).toBeUndefined();
  });

  test("native's default is the host compiler's width; an explicit one is kept; other targets have none", () => {
    expect([4, 8, 16]).toContain(hostLanes());
    expect(withTargetDefaults(makeSchedule('chunkwise'), 'native').lanes).toBe(hostLanes());
    expect(withTargetDefaults(makeSchedule('chunkwise', 32, { lanes: 4 }), 'native').lanes).toBe(4);
    for (const t of ['cpu', 'webgpu', 'cuda']) expect(withTargetDefaults(makeSchedule('chunkwise'), t).lanes).toBeUndefined();
  });

  test.skipIf(!cc || !x86)('the probe follows -march (RETNETC_NATIVE_MARCH): x86-64 4, haswell 8, skylake-avx512 16', () => {
    const env = (march: string) => ({ ...process.env, RETNETC_NATIVE_MARCH: march });
    expect(hostLanes(env('x86-64'))).toBe(4);
    expect(hostLanes(env('haswell'))).toBe(8);
    expect(hostLanes(env('skylake-avx512'))).toBe(16);
  });

  test('the blocked kernels take it: dense micro tiles of 6 x 2 vectors at 8 lanes, chunk micro tiles of 4 rows', () => {
    const comments = (lanes: number, fnName: string, form: 'parallel' | 'chunkwise') => {
      const fn = loadFn(fnName === 'linear' ? 'retnet' : 'retention', fnName);
      const plan = compilePlan(fn, makeSchedule(form, form === 'chunkwise' ? 32 : undefined, { dense: 'blocked', lanes }), { constants: new Map([['I', 512], ['O', 512], ['K', 64], ['V', 64]]) });
      return plan.launches.flatMap((l) => l.kernel.body.flatMap((b) => (b.k === 'comment' ? [b.text] : []))).join('\n');
    };
    expect(comments(16, 'linear', 'parallel')).toMatch(/micro 8x32, lanes 16/);
    expect(comments(8, 'linear', 'parallel')).toMatch(/micro 6x16, lanes 8/);
    expect(comments(4, 'linear', 'parallel')).toMatch(/micro 6x8, lanes 4/);
    expect(comments(16, 'retention', 'chunkwise')).toMatch(/micro 8x16 and 8x32, lanes 16/);
    expect(comments(8, 'retention', 'chunkwise')).toMatch(/micro 4x8 and 4x16, lanes 8/);
  });
});
