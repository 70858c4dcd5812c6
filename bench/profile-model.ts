// Where the tiny RetNet's forward + backward spends its time on native (issue 9: the model step
// against the PyTorch module): per kernel time of every launch (runtime/native setNativeProfile),
// summed by kernel, largest first, beside the step's wall time and the host's share (wall minus
// kernels: binding, allocation, the model runner's host work).
// --wall: no per kernel profile, only the median wall time of --runs steps (A/B of runtime changes:
// RETNETC_NATIVE_SPIN_US=0 against the default in alternating processes). --chunk C (default 64).
// Usage: npx vite-node bench/profile-model.ts [chunkwise|parallel|recurrent] [--top N] [--B 8] [--T 256] [--runs 5] [--wall] [--chunk 64]
import { compileModelGrad } from '../compiler/model-grad.js';
import { boundWeights } from '../compiler/model-split.js';
import { modelProgram } from '../compiler/pipeline.js';
import { makeSchedule, type Form } from '../compiler/schedule.js';
import { devaluate } from '../dsl/dims.js';
import { instantiateModel, loadProgram } from '../dsl/program.js';
import { runModelBackward } from '../runtime/model-backward.js';
import type { HostValue } from '../runtime/model-runner.js';
import { setNativeProfile } from '../runtime/native/runner.js';
import { openTarget, withTargetDefaults } from '../runtime/targets.js';

const args = process.argv.slice(2);
const opt = (name: string, dflt: number): number => { const i = args.indexOf(name); return i >= 0 ? Number(args[i + 1]) : dflt; };
const form = (args.find((a) => ['chunkwise', 'parallel', 'recurrent'].includes(a)) ?? 'chunkwise') as Form;
const B = opt('--B', 8), T = opt('--T', 256), TOP = opt('--top', 25), RUNS = opt('--runs', 5), CHUNK = opt('--chunk', 64);
const wallOnly = args.includes('--wall');
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
const tokens: HostValue = { shape: [B, T], data: Int32Array.from({ length: B * T }, () => Math.floor(rand() * vocab)) };
const dlogits: HostValue = { shape: [B, T, vocab], data: Float32Array.from({ length: B * T * vocab }, () => (rand() - 0.5) * 1e-2) };
const dev = openTarget('native');
try {
  const mg = compileModelGrad(model, withTargetDefaults(makeSchedule(form, CHUNK), 'native'));
  const step = () => runModelBackward(mg, weights, new Map([['tokens', tokens]]), new Map([['logits', dlogits]]), dev.exec);
  await step();
  const walls: number[] = [];
  let prof = new Map<string, { launches: number; ms: number }>();
  for (let r = 0; r < RUNS; r++) {
    const m = new Map<string, { launches: number; ms: number }>();
    if (!wallOnly) setNativeProfile(m);
    const t0 = performance.now();
    await step();
    walls.push(performance.now() - t0);
    setNativeProfile(undefined);
    if (r === RUNS - 1) prof = m;
  }
  const wall = walls.sort((a, b) => a - b)[RUNS >> 1]!;
  if (wallOnly) {
    console.log(`tiny RetNet fwd+bwd ${form} B=${B} T=${T} chunk ${CHUNK} on native: median wall ${wall.toFixed(1)} ms, min ${walls[0]!.toFixed(1)} ms (${RUNS} runs; spin ${process.env['RETNETC_NATIVE_SPIN_US'] ?? 'default'})`);
  } else {
    const rows = [...prof].sort((a, b) => b[1].ms - a[1].ms);
    const kern = rows.reduce((s, [, r]) => s + r.ms, 0);
    console.log(`tiny RetNet fwd+bwd ${form} B=${B} T=${T} on native: median wall ${wall.toFixed(1)} ms; kernels ${kern.toFixed(1)} ms (last run, ${rows.reduce((s, [, r]) => s + r.launches, 0)} launches of ${rows.length} kernels); host ${(wall - kern).toFixed(1)} ms`);
    for (const [name, r] of rows.slice(0, TOP)) console.log(`${r.ms.toFixed(2).padStart(8)} ms ${String(r.launches).padStart(4)}x  ${name}`);
  }
} finally {
  await dev.release();
}
