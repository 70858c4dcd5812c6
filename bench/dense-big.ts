// The bench's dense case alone (bench/run.ts: linear y = x W^T at [B*T, I] x [I, O], native
// defaults): median wall time of --runs runs after 3 warm-ups, and GFLOP/s. For quick A/B of the
// blocked dense kernels without the whole bench (it has no peer: `npm run bench` puts torch beside it).
// Usage: npx vite-node bench/dense-big.ts [--T 4096] [--I 512] [--O 512] [--runs 40] [--target native]
import { loadProgram } from '../dsl/program.js';
import { compileFunction, sizesToSpecialise } from '../compiler/pipeline.js';
import { makeSchedule } from '../compiler/schedule.js';
import type { HostValue } from '../runtime/model-runner.js';
import { openTarget, withTargetDefaults } from '../runtime/targets.js';

const args = process.argv.slice(2);
const opt = (name: string, dflt: string): string => { const i = args.indexOf(name); return i >= 0 ? args[i + 1]! : dflt; };
const T = Number(opt('--T', '4096')), I = Number(opt('--I', '512')), O = Number(opt('--O', '512')), RUNS = Number(opt('--runs', '40'));
const target = opt('--target', 'native');
const prog = loadProgram(new URL('../models/retnet.ret', import.meta.url).pathname);
const fn = prog.checked!.fns.get('linear')!;
const plan = compileFunction(fn, withTargetDefaults(makeSchedule('parallel'), target), { constants: new Map(sizesToSpecialise(fn).map((s) => [s, s === 'I' ? I : O] as const)) });
let seed = 1;
const rand = (): number => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32) * 2 - 1;
const inputs = new Map<string, HostValue>([['x', { shape: [1, T, I], data: Float32Array.from({ length: T * I }, rand) }], ['w', { shape: [O, I], data: Float32Array.from({ length: O * I }, () => rand() / Math.sqrt(I)) }]]);
const te = openTarget(target);
if (typeof te === 'string') throw new Error(te);
const times: number[] = [];
for (let r = 0; r < RUNS + 3; r++) {
  const t0 = performance.now();
  await te.exec(plan, inputs);
  if (r >= 3) times.push(performance.now() - t0);
}
times.sort((a, b) => a - b);
const med = times[times.length >> 1]!;
console.log(`${target} dense [${T}, ${I}] x [${I}, ${O}]: median ${med.toFixed(2)} ms, min ${times[0]!.toFixed(2)} ms, ${(2 * T * I * O / med / 1e6).toFixed(0)} GFLOP/s (median of ${RUNS})`);
await te.release();
