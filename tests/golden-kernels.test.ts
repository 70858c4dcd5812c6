// Golden CUDA and WGSL for a fixed small set of kernels: retention chunkwise forward and
// backward (K = V = 64, chunk 64) and linear attention recurrent forward. A change to the
// lowering or the printers shows up as a diff here; UPDATE_GOLDEN=1 rewrites the files
// (and removes ones no longer produced).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, test } from 'vitest';
import { compilePlan } from '../compiler/plan.js';
import { type Form, makeSchedule } from '../compiler/schedule.js';
import { loadProgram } from '../dsl/program.js';
import { emitPlan, targetExtension, TARGETS } from '../targets/emit.js';

const DIR = path.join(import.meta.dirname, 'golden', 'kernels');
const UPDATE = process.env['UPDATE_GOLDEN'] === '1';
const K64 = new Map([['K', 64], ['V', 64]]);

const SET: { file: string; fn: string; form: Form; backward: boolean }[] = [
  { file: 'retention', fn: 'retention', form: 'chunkwise', backward: false },
  { file: 'retention', fn: 'retention', form: 'chunkwise', backward: true },
  { file: 'linear_attention', fn: 'linear_attention', form: 'recurrent', backward: false },
];

function generated(): Map<string, string> {
  const out = new Map<string, string>();
  for (const s of SET) {
    const fn = loadProgram(`models/${s.file}.ret`).checked!.fns.get(s.fn)!;
    const plan = compilePlan(fn, makeSchedule(s.form, 64), { backward: s.backward, constants: K64 });
    for (const target of TARGETS) {
      for (const k of emitPlan(plan, target).kernels) {
        const name = `${k.entry}.${targetExtension(target)}`;
        if (out.has(name)) throw new Error(`two golden kernels named ${name}`);
        out.set(name, k.code);
      }
    }
  }
  return out;
}

describe('golden kernels', () => {
  const files = generated();

  if (UPDATE) {
    test('UPDATE_GOLDEN=1: rewrite tests/golden/kernels', () => {
      fs.mkdirSync(DIR, { recursive: true });
      for (const f of fs.readdirSync(DIR)) if (!files.has(f)) fs.rmSync(path.join(DIR, f));
      for (const [name, code] of files) fs.writeFileSync(path.join(DIR, name), code);
      console.log(`[golden-kernels] wrote ${files.size} files to ${DIR}`);
    });
    return;
  }

  test('the set is complete: no missing and no stale files', () => {
    const have = fs.existsSync(DIR) ? fs.readdirSync(DIR).sort() : [];
    expect(have, 'run with UPDATE_GOLDEN=1 to rewrite').toEqual([...files.keys()].sort());
  });

  for (const [name, code] of files) {
    test(name, () => {
      const p = path.join(DIR, name);
      expect(fs.existsSync(p), `${p} is missing; run with UPDATE_GOLDEN=1`).toBe(true);
      // toBe on the text gives a line diff on failure
      expect(code, `${name} differs from the golden file; run with UPDATE_GOLDEN=1 if the change is intended`).toBe(fs.readFileSync(p, 'utf8'));
    });
  }
});
