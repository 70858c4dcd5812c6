// Tree reductions against serial sums (issue 9 item 3): the tiny RetNet's forward + backward at
// B = 8, T = 256 with the schedule's reduce 'serial' and 'tree', on native and webgpu (wall
// time), with native's per kernel time (runtime/native setNativeProfile) of the launches that
// compute norm weight gradients (the trees). Then the rmsnorm weight gradient alone (the same
// statement as the model's, B = 8, T = 256, D = 64 as tiny and 512 as base) per launch: native
// by its profile, WebGPU (no per kernel timer here) as the plan timed as it is and with that
// launch dispatched R more times (it only reads its inputs, so repeating it changes nothing),
// the difference / R, best of the runs.
// Usage: npx vite-node bench/tree-reduce.ts [native|webgpu ...] [--shape OUTSxLANES ...] (default
// both targets, the default tree shape; --kernels: only the rmsnorm weight gradient alone; each --shape adds a row of trees with that many outputs
// and lanes a workgroup, given as per-statement choices). Prints a table.
import { compileModelGrad } from '../compiler/model-grad.js';
import { boundWeights } from '../compiler/model-split.js';
import { compileFunction, modelProgram } from '../compiler/pipeline.js';
import type { Launch, Plan } from '../compiler/plan.js';
import { makeSchedule, type Schedule } from '../compiler/schedule.js';
import { devaluate } from '../dsl/dims.js';
import { instantiateModel, loadProgram } from '../dsl/program.js';
import { runModelBackward } from '../runtime/model-backward.js';
import type { HostValue, PlanExec } from '../runtime/model-runner.js';
import { setNativeProfile } from '../runtime/native/runner.js';
import { openTarget, withTargetDefaults } from '../runtime/targets.js';

const B = 8, T = 256, REPEAT = 10, RUNS = 5;
const args = process.argv.slice(2);
const shapes = args.flatMap((a, i) => (args[i - 1] === '--shape' ? [a.split('x').map(Number) as [number, number]] : []));
const named = args.filter((a, i) => a !== '--shape' && args[i - 1] !== '--shape' && a !== '--kernels');
const modelRows = !args.includes('--kernels');
const targets = named.length ? named : ['native', 'webgpu'];
const prog = loadProgram(new URL('../models/retnet.ret', import.meta.url).pathname);
const model = instantiateModel(prog, 'retnet', 'tiny');
let seed = 12345;
const rand = (): number => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
const weights = new Map<string, HostValue>();
for (const [name, { shape }] of boundWeights(modelProgram(model))) {
  const dims = shape.map((x) => devaluate(x, new Map())!);
  const n = dims.reduce((a, b) => a * b, 1);
  weights.set(name, { shape: dims, data: Float32Array.from({ length: n }, () => (dims.length === 1 ? 1 : 0) + (rand() * 2 - 1) * (dims.length === 1 ? 0.1 : name.includes('embed_tokens') ? 1 : Math.sqrt(3 / dims[1]!))) });
}
const vocab = weights.get('embed_tokens.weight')!.shape[0]!;
const tokens: HostValue = { shape: [B, T], data: Int32Array.from({ length: B * T }, () => Math.floor(rand() * vocab)) };
const dlogits: HostValue = { shape: [B, T, vocab], data: Float32Array.from({ length: B * T * vocab }, () => (rand() * 2 - 1) * 1e-2) };

/** The launches a row of the table is about: those that compute a norm weight's gradient (by their statement's name) or are trees. */
const watched = (p: Plan, l: Launch): string | undefined => {
  const name = p.fn.vars.get(l.target)?.name ?? l.target;
  const out = p.fn.outputs.find((o) => o.v === l.target)?.name;
  if (l.how === 'reduce' || /layer_norm/.test(out ?? '')) return `${out ?? name}`;
  return undefined;
};
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
// Per kernel: the fastest of the runs (the machine is shared; the minimum is the least disturbed).
const best = (xs: number[]): number => Math.min(...xs);

for (const target of modelRows ? targets : []) {
  const te = openTarget(target);
  const base = withTargetDefaults(makeSchedule('chunkwise', 64), target);
  const { reduce: _, ...serial } = base;
  const tree: Schedule = { ...base, reduce: 'tree' };
  // The statements the default tree takes, each with a shape.
  const trees = compileModelGrad(model, tree).plans.flatMap((p) => p.launches.filter((l) => l.how === 'reduce').map((l) => l.target));
  const rows: [string, Schedule][] = [['serial', serial], ['tree', tree], ...shapes.map(([o, l]): [string, Schedule] => [`tree ${o}x${l}`, { ...tree, statements: Object.fromEntries(trees.map((t) => [t, { reduce: 'tree' as const, tiles: { outs: o, lanes: l } }])) }])];
  for (const [reduce, sched] of rows) {
    const mg = compileModelGrad(model, sched);
    const perKernel = new Map<string, { what: string; how: string; ms: number[] }>();
    const exec: PlanExec = (plan, inputs) => te.exec(plan, inputs);
    const run = () => runModelBackward(mg, weights, new Map([['tokens', tokens]]), new Map([['logits', dlogits]]), exec);
    await run();
    const wall: number[] = [];
    for (let i = 0; i < RUNS; i++) { const t0 = performance.now(); await run(); wall.push(performance.now() - t0); }
    if (target === 'native') {
      for (let i = 0; i < RUNS; i++) {
        const prof = new Map<string, { launches: number; ms: number }>();
        setNativeProfile(prof);
        await run();
        setNativeProfile(undefined);
        for (const p of mg.plans) for (const l of p.launches) {
          const what = watched(p, l);
          const r = prof.get(l.kernel.name);
          if (!what || !r) continue;
          const row = perKernel.get(l.kernel.name) ?? { what, how: l.how, ms: [] };
          row.ms.push(r.ms / r.launches);
          perKernel.set(l.kernel.name, row);
        }
      }
    }
    console.log(`${target} ${reduce}: tiny RetNet forward + backward B=${B} T=${T}: median ${median(wall).toFixed(1)} ms, best ${best(wall).toFixed(1)} ms`);
    for (const [k, r] of [...perKernel].sort(([a], [b]) => (a < b ? -1 : 1))) console.log(`  ${k.padEnd(34)} ${r.how.padEnd(11)} ${best(r.ms).toFixed(3).padStart(9)} ms a launch (best of ${r.ms.length})  ${r.what}`);
  }
  await te.release();
}

// ---- the rmsnorm weight gradient alone (RetNet's rmsnorm backward), D = 64 (tiny) and 512 (base) ----
const rmsnorm = prog.checked!.fns.get('rmsnorm')!;
for (const target of targets) {
  const te = openTarget(target);
  for (const D of [64, 512]) {
    const inputs = new Map<string, HostValue>([
      ['x', { shape: [B, T, D], data: Float32Array.from({ length: B * T * D }, () => rand() * 2 - 1) }],
      ['w', { shape: [D], data: Float32Array.from({ length: D }, () => 1 + rand() * 0.1) }],
      ['grad.y', { shape: [B, T, D], data: Float32Array.from({ length: B * T * D }, () => rand() * 2 - 1) }],
    ]);
    const line: string[] = [];
    for (const [label, sched] of [['serial', makeSchedule('chunkwise', 64)], ['tree', makeSchedule('chunkwise', 64, { reduce: 'tree' })], ...shapes.map(([o, l]): [string, Schedule] => [`tree ${o}x${l}`, makeSchedule('chunkwise', 64, { reduce: 'tree', statements: { '%d.w.4': { reduce: 'tree', tiles: { outs: o, lanes: l } } } })])] as [string, Schedule][]) {
      const p = compileFunction(rmsnorm, withTargetDefaults(sched, target), { backward: true, constants: new Map([['D', D]]) });
      const l = p.launches.find((x) => p.fn.outputs.find((o) => o.v === x.target)?.name === 'grad.w')!;
      const ms: number[] = [];
      if (target === 'native') {
        for (let i = 0; i < 20; i++) {
          const prof = new Map<string, { launches: number; ms: number }>();
          setNativeProfile(prof);
          await te.exec(p, inputs);
          setNativeProfile(undefined);
          ms.push(prof.get(l.kernel.name)!.ms);
        }
      } else {
        const R = 4 * REPEAT;
        const dup: Plan = { ...p, launches: p.launches.flatMap((x) => (x === l ? Array.from({ length: R + 1 }, () => x) : [x])) };
        await te.exec(p, inputs); await te.exec(dup, inputs);
        const once: number[] = [], many: number[] = [];
        for (let i = 0; i < 6; i++) {
          const t0 = performance.now(); await te.exec(p, inputs);
          const t1 = performance.now(); await te.exec(dup, inputs);
          once.push(t1 - t0); many.push(performance.now() - t1);
        }
        ms.push(Math.max(0, (best(many) - best(once)) / R));
      }
      line.push(`${label} ${best(ms).toFixed(3)} ms (${l.how}, workgroup ${l.kernel.workgroup[0]}, grid ${l.kernel.grid[0].k === 'const' ? l.kernel.grid[0].value : '?'})`);
    }
    console.log(`${target} rmsnorm grad.w, B=${B} T=${T} D=${D}, best per launch: ${line.join('; ')}`);
  }
  await te.release();
}
