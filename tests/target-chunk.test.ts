// A target's own default chunk (runtime/targets.ts Runner.schedule.chunk: webgpu's 16, native's 32) replaces
// the chunkwise chunk only where nobody chose one (Schedule.chunkDefault): an explicit chunk, from
// makeSchedule, a schedule file, --chunk or a statement's choice, is always honoured, and a plan's
// launches and a schedule file written from it state the chunk that was used. Lowering only: no device needed.
import { describe, expect, test } from 'vitest';
import { compilePlan } from '../compiler/plan.js';
import { DEFAULT_CHUNK, makeSchedule, scheduleFromJson, scheduleKey, scheduleToJson, statementSchedule } from '../compiler/schedule.js';
import { parseSchedule, SCHEDULE_OPTIONS } from '../runtime/cli/common.js';
import { parseOptions } from '../runtime/cli/options.js';
import { targetChunk, targetNamed, withTargetDefaults } from '../runtime/targets.js';
import { loadFn } from './helpers/harness.js';

const webgpuChunk = targetNamed('webgpu')!.run!.schedule!.chunk!;

describe("a target's default chunk", () => {
  test('replaces only a default chunk of the chunkwise form, and clears the mark', () => {
    const d = makeSchedule('chunkwise');
    expect(d.chunk).toBe(DEFAULT_CHUNK);
    expect(d.chunkDefault).toBe(true);
    expect(webgpuChunk).not.toBe(DEFAULT_CHUNK);
    const w = withTargetDefaults(d, 'webgpu');
    expect([w.chunk, w.tiles.cols, w.chunkDefault]).toEqual([webgpuChunk, webgpuChunk, undefined]);
    expect(withTargetDefaults(w, 'webgpu')).toEqual(w);
    // Explicit chunks, whatever their value (the default's value included), are kept.
    for (const c of [DEFAULT_CHUNK, 8, 32]) {
      const e = makeSchedule('chunkwise', c);
      expect(e.chunkDefault).toBeUndefined();
      expect(withTargetDefaults(e, 'webgpu').chunk).toBe(c);
    }
    // Other forms (parallel's tile), and targets without a default chunk, keep DEFAULT_CHUNK.
    expect(withTargetDefaults(makeSchedule('parallel'), 'webgpu').chunk).toBe(DEFAULT_CHUNK);
    for (const t of ['cpu', 'cuda']) expect(withTargetDefaults(d, t).chunk).toBe(DEFAULT_CHUNK);
    expect(withTargetDefaults(d, 'native').chunk).toBe(targetNamed('native')!.run!.schedule!.chunk);
    // The mark is not part of the key or the file: equal lowering, equal key.
    expect(scheduleKey(d)).toBe(scheduleKey(makeSchedule('chunkwise', DEFAULT_CHUNK)));
    expect(scheduleToJson(d)).not.toHaveProperty('chunkDefault');
  });

  test('a schedule file, --chunk and a statement choice are explicit; their absence is the default', () => {
    expect(scheduleFromJson({ form: 'chunkwise' }).chunkDefault).toBe(true);
    expect(withTargetDefaults(scheduleFromJson({ form: 'chunkwise' }), 'webgpu').chunk).toBe(webgpuChunk);
    expect(withTargetDefaults(scheduleFromJson({ form: 'chunkwise', chunk: 64 }), 'webgpu').chunk).toBe(64);
    // A file written from a resolved schedule reads back explicit, with the chunk that was used.
    expect(scheduleFromJson(scheduleToJson(withTargetDefaults(makeSchedule('chunkwise'), 'webgpu')))).toMatchObject({ chunk: webgpuChunk });
    expect(scheduleFromJson(scheduleToJson(withTargetDefaults(makeSchedule('chunkwise'), 'webgpu'))).chunkDefault).toBeUndefined();
    const cli = (args: string[]) => parseSchedule(parseOptions('run', args, SCHEDULE_OPTIONS), true);
    expect(withTargetDefaults(cli(['--schedule', 'chunkwise']), 'webgpu').chunk).toBe(webgpuChunk);
    expect(withTargetDefaults(cli(['--schedule', 'chunkwise', '--chunk', '64']), 'webgpu').chunk).toBe(64);
    expect(statementSchedule(makeSchedule('chunkwise'), { chunk: 64 }).chunkDefault).toBeUndefined();
  });

  test('train, generate and logits take the same chunk without --chunk (targetChunk)', () => {
    for (const t of ['cpu', 'native', 'webgpu', 'cuda']) {
      expect(targetChunk(t, 'chunkwise')).toBe(withTargetDefaults(makeSchedule('chunkwise'), t).chunk);
      expect(targetChunk(t, 'parallel')).toBe(DEFAULT_CHUNK);
    }
    expect([targetChunk('native', 'chunkwise'), targetChunk('webgpu', 'chunkwise'), targetChunk(undefined, 'chunkwise')]).toEqual([32, 16, DEFAULT_CHUNK]);
  });

  test("webgpu's plans lower with its chunk unless one is given", () => {
    const fn = loadFn('retention', 'retention');
    const constants = new Map([['K', 8], ['V', 8]]);
    const chunks = (s: ReturnType<typeof makeSchedule>) => compilePlan(fn, withTargetDefaults(s, 'webgpu'), { constants }).launches.filter((l) => l.schedule?.form === 'chunkwise').map((l) => l.schedule!.chunk);
    expect(chunks(makeSchedule('chunkwise'))).toEqual([webgpuChunk]);
    expect(chunks(makeSchedule('chunkwise', 64))).toEqual([64]);
    expect(chunks(makeSchedule('chunkwise', 32))).toEqual([32]);
  });
});
