// The scatter-add lowering of a gather's gradient (compiler/lower/scatter.ts): the gradient of
// an embedding table gathered by token ids, dW[u, c] = sum[b, t] (tok[b, t] == u) dx[b, t, c],
// with random tokens (repeated ones, and ids outside [0, vocab), which read 0 forward and get
// nothing back), vocab 256 and 1000, one summed index (tok[n]) and two (tok[b, t]):
//   - the plan lowers it as a scatter (and the one-sum form without a partial-sum tensor);
//   - within 1e-6 relative RMSE of the float64 literal gradient on the CPU executor, native and
//     WebGPU (skipped with the reason printed where a target is missing);
//   - bit for bit equal to the masked-sum map lowering (compiler/lower/generic.ts) it replaces,
//     on the CPU executor and natively, with memory reuse poisoned (every element is written);
//   - rows of tokens that do not occur are exactly +0.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, test } from 'vitest';
import type { CheckedFn } from '../dsl/checked.js';
import { loadProgram } from '../dsl/program.js';
import { compilePlan, type Launch, type Plan } from '../compiler/plan.js';
import { makeSchedule } from '../compiler/schedule.js';
import { ExprLowering, sizeParam } from '../compiler/lower/expr.js';
import { lowerElementwise } from '../compiler/lower/generic.js';
import { runPlanCpu } from '../runtime/plan-runner.js';
import { findCompiler, NO_COMPILER } from '../targets/native/compile.js';
import { loadNativeAddon } from '../runtime/native/addon.js';
import { runPlanNative } from '../runtime/native/runner.js';
import { runPlanWebGPU } from '../runtime/webgpu/runner.js';
import { prng, reference, relErr, type Value } from './helpers/harness.js';
import { acquireTestGpu, requireGpu } from './helpers/webgpu.js';

const SRC = `
fn embed2(tokens: i32[B, T], w: f32[V, C]) -> x: f32[B, T, C] {
  x[b, t, c] = w[tokens[b, t], c]
}
fn embed1(tokens: i32[N], w: f32[V, C]) -> x: f32[N, C] {
  x[n, c] = w[tokens[n], c] * 2.0
}
`;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'retnetc-scatter-'));
fs.writeFileSync(path.join(dir, 'gather.ret'), SRC);
const prog = loadProgram(path.join(dir, 'gather.ret'));
if (prog.diagnostics.length) throw new Error(prog.diagnostics.map((d) => d.message).join('; '));
const fnOf = (n: string): CheckedFn => prog.checked!.fns.get(n)!;

interface Case { fn: 'embed1' | 'embed2'; shape: number[]; V: number; C: number; seed: number }
const CASES: Case[] = [
  { fn: 'embed2', shape: [8, 64], V: 256, C: 16, seed: 1 },
  { fn: 'embed2', shape: [3, 37], V: 1000, C: 9, seed: 2 },
  { fn: 'embed1', shape: [300], V: 1000, C: 5, seed: 3 },
  { fn: 'embed1', shape: [50], V: 256, C: 33, seed: 4 },
];
const label = (c: Case): string => `${c.fn} tokens [${c.shape.join(', ')}] vocab ${c.V} C ${c.C}`;

/** Inputs: tokens mostly from a small set (many repeats), some anywhere in [0, V), a few out of range. */
function inputsOf(c: Case): Map<string, Value> {
  const rand = prng(c.seed);
  const n = c.shape.reduce((a, b) => a * b, 1);
  const tok = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const r = rand();
    tok[i] = r < 0.5 ? Math.floor(rand() * 7) : r < 0.95 ? Math.floor(rand() * c.V) : [-1, c.V, c.V + 3, -100][Math.floor(rand() * 4)]!;
  }
  const w = new Float64Array(c.V * c.C).map(() => Math.fround(rand() * 2 - 1));
  return new Map<string, Value>([['tokens', { shape: c.shape, data: tok }], ['w', { shape: [c.V, c.C], data: w }]]);
}

const planOf = (c: Case): Plan => compilePlan(fnOf(c.fn), makeSchedule('parallel', 16), { backward: true });

/** The same plan with the scatter's launches replaced by the masked-sum map kernel it had before. */
function maskedPlan(p: Plan): Plan {
  const launches: Launch[] = [];
  for (const l of p.launches) {
    if (!l.kernel.name.includes('_scatter')) { launches.push(l); continue; }
    if (l.kernel.name.endsWith('_zero')) continue;
    const s = p.fn.body.find((x) => x.target === l.target)!;
    const L = new ExprLowering(p.fn.vars, { constants: p.constants, runtime: new Set() });
    const kernel = lowerElementwise(l.kernel.name.replace('_scatter', '_map'), s, L, 256);
    const buffers: Record<string, string> = {};
    kernel.buffers = [...L.buffers].map(([id, b]) => { buffers[b.name] = id; return { name: b.name, type: b.type, access: b.written ? 'read_write' as const : 'read' as const }; });
    const scalars: Record<string, string> = {};
    kernel.scalars = [...L.sizes.runtime].sort().map((a) => { scalars[sizeParam(a)] = a; return { name: sizeParam(a), type: 'i32' as const }; });
    launches.push({ ...l, kernel, buffers, scalars });
  }
  return { ...p, launches };
}

const bits = (a: ArrayLike<number>): number[] => Array.from(new Uint32Array(Float32Array.from(a).buffer));

/** The inputs with random upstreams, and the float64 literal gradient of w (the reference interpreter). */
function truth(c: Case): { inputs: Map<string, Value>; want: Value } {
  const inputs = inputsOf(c);
  const r = reference(fnOf(c.fn), inputs, prng(c.seed + 100));
  return { inputs: new Map([...inputs, ...r.ups]), want: r.grads.get('grad.w')! };
}

describe('the plan', () => {
  test('lowers a gather gradient as a scatter: two kernels for two summed indices, one for one', () => {
    const two = planOf(CASES[0]!), one = planOf(CASES[2]!);
    expect(two.launches.map((l) => l.kernel.name).filter((n) => n.includes('scatter'))).toEqual([expect.stringMatching(/_scatter_zero$/), expect.stringMatching(/_scatter$/)]);
    expect(one.launches.map((l) => l.kernel.name).filter((n) => n.includes('scatter'))).toEqual([expect.stringMatching(/_scatter$/)]);
    expect(maskedPlan(two).launches.some((l) => l.kernel.name.includes('scatter'))).toBe(false);
    expect(two.launches.filter((l) => l.kernel.name.includes('scatter')).map((l) => l.how)).toEqual(['elementwise', 'scatter']);
  });
});

describe.each(CASES)('$fn $shape vocab $V C $C (CPU executor)', (c) => {
  test('matches the float64 gradient and the masked sum bit for bit; absent rows are +0', () => {
    const { inputs, want } = truth(c);
    const p = planOf(c);
    const got = runPlanCpu(p, inputs, { poison: NaN }).get('grad.w')!;
    expect(relErr(got.data, want.data).rel, label(c)).toBeLessThanOrEqual(1e-6);
    const masked = runPlanCpu(maskedPlan(p), inputs).get('grad.w')!;
    expect(bits(got.data)).toEqual(bits(masked.data));
    const tok = new Set(Array.from(inputs.get('tokens')!.data));
    for (let u = 0; u < c.V; u++) if (!tok.has(u)) for (let k = 0; k < c.C; k++) expect(Object.is(got.data[u * c.C + k], 0), `row ${u}`).toBe(true);
    // Teeth: the masked sum is not the scatter's own output.
    expect(bits(masked.data.map((x: number) => x * 1.01))).not.toEqual(bits(got.data));
  });
});

const cc = findCompiler();
const addon = cc ? loadNativeAddon() : { error: NO_COMPILER };
const nativeWhy = !cc ? NO_COMPILER : 'error' in addon ? addon.error : undefined;
if (nativeWhy) console.log(`[scatter] native runs skipped: ${nativeWhy}`);

describe.each(CASES.slice(0, 3))('$fn $shape vocab $V C $C (native)', (c) => {
  test('matches the float64 gradient and the masked sum bit for bit', async (ctx) => {
    if (nativeWhy) { if (process.env['REQUIRE_NATIVE'] === '1') throw new Error(nativeWhy); ctx.skip(); }
    const { inputs, want } = truth(c);
    const p = planOf(c);
    const got = (await runPlanNative(p, inputs, { poison: NaN })).get('grad.w')!;
    expect(relErr(got.data, want.data).rel, label(c)).toBeLessThanOrEqual(1e-6);
    const masked = (await runPlanNative(maskedPlan(p), inputs)).get('grad.w')!;
    expect(bits(got.data)).toEqual(bits(masked.data));
    expect(bits(got.data)).toEqual(bits(runPlanCpu(p, inputs).get('grad.w')!.data));
  }, 120_000);
});

const gpu = await acquireTestGpu('scatter');
describe('WebGPU', () => {
  test('a WebGPU adapter is available (required when REQUIRE_WEBGPU=1)', (ctx) => requireGpu(gpu, () => ctx.skip()));
  for (const c of [CASES[0]!, CASES[2]!]) {
    test(`${label(c)}: matches the float64 gradient`, async (ctx) => {
      if (!gpu.gpu) { requireGpu(gpu, () => ctx.skip()); return; }
      const { inputs, want } = truth(c);
      const got = (await runPlanWebGPU(planOf(c), inputs)).get('grad.w')!;
      expect(relErr(got.data, want.data).rel, label(c)).toBeLessThanOrEqual(1e-6);
    }, 120_000);
  }
});
