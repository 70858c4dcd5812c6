// The tiny RetNet's decode step on native (the stateful recurrent plan that generation runs one
// token at a time, runtime/generate/generate.ts) timed alone: random weights, a chunkwise stateful
// prefill of --prompt bytes, then --steps decode steps (greedy: the argmax of each step's logits is
// the next token), --runs times over. Reports the median and minimum ms per step, wall and process
// CPU (process.cpuUsage, user + system) per step, the mean, p90 and max step, the GC pauses in the
// loop, the step's launches and distinct kernels, and with --profile the per kernel time per step
// (runtime/native setNativeProfile, one profile per step of the last run: the median over the steps
// of each kernel's time in a step, which a step preempted by another process does not move, beside
// the mean). --sample draws the next token as the demo does (temperature 0.8, top-k 40) and times
// the draw apart. --generate also runs generate() itself as the demo calls it (temperature 0.8,
// top-k 40, --steps + 1 tokens) alternating with greedy generate(), and prints their decode
// tokens/s: what the demo reports (sampling included) and what it would be with an argmax.
// Written to run unchanged in an older checkout too (A/B: git archive REV | tar -x -C DIR).
// Usage: npx vite-node bench/decode-step.ts [--prompt 300] [--steps 300] [--runs 5] [--profile]
//        [--top 40] [--generate] [--sample] [--json]
// Environment: RETNETC_NATIVE_THREADS=1 for steadier numbers; RETNETC_NATIVE_BLOCKS=0 turns off
// the blocked work-item loops.
import { modelProgram, compileModel } from '../compiler/pipeline.js';
import { boundWeights } from '../compiler/model-split.js';
import { DEFAULT_CHUNK, makeSchedule } from '../compiler/schedule.js';
import { devaluate } from '../dsl/dims.js';
import { instantiateModel, loadProgram } from '../dsl/program.js';
import { type HostValue, type ModelState, runModelPlan } from '../runtime/model-runner.js';
import { setNativeProfile } from '../runtime/native/runner.js';
import { openTarget, targetNamed } from '../runtime/targets.js';
import { PerformanceObserver } from 'node:perf_hooks';
import { generate } from '../runtime/generate/generate.js';
import { sampleToken } from '../runtime/generate/sampler.js';
import { Rng } from '../runtime/train/rng.js';

const args = process.argv.slice(2);
const opt = (name: string, dflt: number): number => { const i = args.indexOf(name); return i >= 0 ? Number(args[i + 1]) : dflt; };
const PROMPT = opt('--prompt', 300), STEPS = opt('--steps', 300), RUNS = opt('--runs', 5), TOP = opt('--top', 40);
const PROFILE = args.includes('--profile'), GEN = args.includes('--generate'), JSON_OUT = args.includes('--json');
// --sample: the next token drawn as the demo draws it (temperature 0.8, top-k 40), the draw timed apart.
const SAMPLE = args.includes('--sample');

const prog = loadProgram(new URL('../models/retnet.ret', import.meta.url).pathname);
const model = instantiateModel(prog, 'retnet', 'tiny');
let seed = 12345;
const rand = (): number => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
const weights = new Map<string, HostValue>();
for (const [name, { shape }] of boundWeights(modelProgram(model))) {
  const dims = shape.map((x) => devaluate(x, new Map())!);
  const n = dims.reduce((a, b) => a * b, 1);
  weights.set(name, { shape: dims, data: Float32Array.from({ length: n }, () => (dims.length === 1 ? 1 : 0) + (rand() * 2 - 1) * (dims.length === 1 ? 0.1 : Math.sqrt(3 / dims[dims.length - 1]!))) });
}
const vocab = weights.get('embed_tokens.weight')!.shape[0]!;
const prompt = Int32Array.from({ length: PROMPT }, () => Math.floor(rand() * vocab));

// As generate() does: the target's schedule default for dense sums, the recurrent stateful step.
const dense = targetNamed('native')?.run?.schedule?.dense;
const extra = dense ? { dense } : {};
const stepPlan = compileModel(model, makeSchedule('recurrent', DEFAULT_CHUNK, extra), { stateful: true });
const prefillPlan = compileModel(model, makeSchedule('chunkwise', DEFAULT_CHUNK, extra), { stateful: true });
const launches = stepPlan.program.steps.reduce((s, st) => s + stepPlan.plans[st.fn]!.launches.length, 0);
const kernels = new Set(stepPlan.program.steps.flatMap((st) => stepPlan.plans[st.fn]!.launches.map((l) => l.kernel.name))).size;

const one = (id: number): Map<string, HostValue> => new Map([['tokens', { shape: [1, 1], data: Int32Array.of(id) }]]);
const argmax = (lg: HostValue): number => {
  const d = lg.data as Float32Array;
  const row = d.subarray(d.length - vocab);
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
};
const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[s.length >> 1]!; };

// Garbage collection pauses (node's 'gc' performance entries), added up per timed loop.
let gcMs = 0;
const gcObs = new PerformanceObserver((list) => { for (const e of list.getEntries()) gcMs += e.duration; });
gcObs.observe({ entryTypes: ['gc'] });

const dev = openTarget('native');
try {
  // Warm-up (compiles the kernels, builds the launch lists), as generate() does.
  await runModelPlan(prefillPlan, weights, one(prompt[0]!), dev.exec);
  await runModelPlan(stepPlan, weights, one(prompt[0]!), dev.exec);

  const runs: { gcMs: number; drawMedianUs?: number; drawMeanUs?: number; medianMs: number; minMs: number; meanMs: number; p90Ms: number; maxMs: number; wallMs: number; cpuMs: number; prefillMs: number }[] = [];
  // Per kernel, its launches and milliseconds in each step of the profiled run.
  const prof = new Map<string, { launches: number; ms: number }[]>();
  for (let r = 0; r < RUNS; r++) {
    const p0 = performance.now();
    const pre = await runModelPlan(prefillPlan, weights, new Map([['tokens', { shape: [1, prompt.length], data: prompt }]]), dev.exec);
    const prefillMs = performance.now() - p0;
    let state: ModelState | undefined = pre.state;
    let id = argmax(pre.outputs.get('logits')!);
    const profiling = PROFILE && r === RUNS - 1;
    const times: number[] = [];
    const draws: number[] = [];
    const rng = new Rng(r);
    const c0 = process.cpuUsage();
    const w0 = performance.now();
    const g0 = gcMs;
    for (let i = 0; i < STEPS; i++) {
      const m = new Map<string, { launches: number; ms: number }>();
      if (profiling) setNativeProfile(m);
      const t0 = performance.now();
      const out = await runModelPlan(stepPlan, weights, one(id), dev.exec, state);
      times.push(performance.now() - t0);
      if (profiling) {
        setNativeProfile(undefined);
        for (const [k, v] of m) { const a = prof.get(k) ?? []; a.push(v); prof.set(k, a); }
      }
      state = out.state;
      if (SAMPLE) {
        const s0 = performance.now();
        const lg = out.outputs.get('logits')!.data as Float32Array;
        id = sampleToken(lg.subarray(lg.length - vocab), { temperature: 0.8, topK: 40 }, rng);
        draws.push(performance.now() - s0);
      } else id = argmax(out.outputs.get('logits')!);
    }
    const wallMs = performance.now() - w0;
    const c = process.cpuUsage(c0);
    await new Promise((res) => setImmediate(res)); // the observer's entries of this loop come in
    const loopGcMs = gcMs - g0;
    const sorted = [...times].sort((a, b) => a - b);
    runs.push({ gcMs: loopGcMs, ...(SAMPLE ? { drawMedianUs: 1000 * median(draws), drawMeanUs: 1000 * draws.reduce((a, b) => a + b, 0) / draws.length } : {}), medianMs: median(times), minMs: sorted[0]!, meanMs: times.reduce((a, b) => a + b, 0) / times.length, p90Ms: sorted[Math.floor(0.9 * (sorted.length - 1))]!, maxMs: sorted[sorted.length - 1]!, wallMs, cpuMs: (c.user + c.system) / 1000, prefillMs });
  }

  // generate() as the demo calls it (temperature 0.8, top-k 40), alternating with greedy decoding
  // (temperature 0: an argmax, no sort): the difference is the sampler's share of decode tokens/s.
  const gen: { sampler: string; decodeTokensPerS: number; decodeSeconds: number; prefillTokensPerS: number }[] = [];
  if (GEN) {
    for (let r = 0; r < Math.max(1, Math.min(RUNS, 3)); r++) {
      for (const [sampler, temperature, topK] of [['t0.8 k40', 0.8, 40], ['greedy', 0, undefined]] as const) {
        const g = await generate({ model, weights, prompt, tokens: STEPS + 1, temperature, ...(topK ? { topK } : {}), seed: r, target: 'native' }, () => {});
        gen.push({ sampler, decodeTokensPerS: g.decodeTokensPerS, decodeSeconds: g.decodeSeconds, prefillTokensPerS: g.prefillTokensPerS });
      }
    }
  }

  const summary = {
    threads: process.env['RETNETC_NATIVE_THREADS'] ?? 'default', blocks: process.env['RETNETC_NATIVE_BLOCKS'] ?? 'default',
    launches, kernels, prompt: PROMPT, steps: STEPS,
    medianMsPerStep: median(runs.map((r) => r.medianMs)),
    minMsPerStep: Math.min(...runs.map((r) => r.minMs)),
    wallMsPerStep: median(runs.map((r) => r.wallMs / STEPS)),
    cpuMsPerStep: median(runs.map((r) => r.cpuMs / STEPS)),
    prefillMs: median(runs.map((r) => r.prefillMs)),
    runs, gen,
  };
  const rows = [...prof].map(([k, v]) => ({ kernel: k, launches: v[0]!.launches, medianUs: 1000 * median(v.map((x) => x.ms)), meanUs: 1000 * v.reduce((s, x) => s + x.ms, 0) / v.length }));
  if (JSON_OUT) console.log(JSON.stringify({ ...summary, profile: rows }));
  else {
    console.log(`tiny RetNet decode step on native (threads ${summary.threads}, blocks ${summary.blocks}): ${launches} launches of ${kernels} kernels per step; prefill ${PROMPT} tokens ${summary.prefillMs.toFixed(1)} ms`);
    console.log(`  ${STEPS} steps x ${RUNS} runs: median ${summary.medianMsPerStep.toFixed(3)} ms/step, min ${summary.minMsPerStep.toFixed(3)}, wall ${summary.wallMsPerStep.toFixed(3)} ms/step, CPU ${summary.cpuMsPerStep.toFixed(3)} ms/step`);
    console.log(`  per run median ms: ${runs.map((r) => r.medianMs.toFixed(3)).join(' ')}; mean ${runs.map((r) => r.meanMs.toFixed(3)).join(' ')}; p90 ${runs.map((r) => r.p90Ms.toFixed(3)).join(' ')}; max ${runs.map((r) => r.maxMs.toFixed(1)).join(' ')}; CPU ms/step: ${runs.map((r) => (r.cpuMs / STEPS).toFixed(3)).join(' ')}; GC ms in the loop: ${runs.map((r) => r.gcMs.toFixed(1)).join(' ')} (steps' excess over the median, ms: ${runs.map((r) => ((r.meanMs - r.medianMs) * STEPS).toFixed(1)).join(' ')})`);
    if (SAMPLE) console.log(`  draws (temperature 0.8, top-k 40) per run: median us ${runs.map((r) => r.drawMedianUs!.toFixed(1)).join(' ')}; mean us ${runs.map((r) => r.drawMeanUs!.toFixed(1)).join(' ')}`);
    for (const g of gen) console.log(`  generate() ${g.sampler.padEnd(8)}: decode ${g.decodeTokensPerS.toFixed(0)} tokens/s (${(1000 * g.decodeSeconds / STEPS).toFixed(3)} ms/token), prefill ${g.prefillTokensPerS.toFixed(0)} tokens/s`);
    if (PROFILE) {
      rows.sort((a, b) => b.medianUs - a.medianUs);
      const sum = (f: (r: (typeof rows)[number]) => number): number => rows.reduce((s, r) => s + f(r), 0);
      console.log(`  profile (last run, per step, ${rows.length} kernels, ${sum((r) => r.launches)} launches): kernels' medians ${sum((r) => r.medianUs).toFixed(1)} us, means ${sum((r) => r.meanUs).toFixed(1)} us`);
      console.log('   median     mean  launches  kernel');
      for (const r of rows.slice(0, TOP)) console.log(`${r.medianUs.toFixed(1).padStart(7)}us ${r.meanUs.toFixed(1).padStart(7)}us ${String(r.launches).padStart(4)}x     ${r.kernel}`);
    }
  }
} finally {
  gcObs.disconnect();
  await dev.release();
}
