// The native blocked dense kernels (compiler/lower/dense-cpu.ts) at the tiny RetNet's shapes
// (issue 9): every dense statement of the model's forward and backward plans (native defaults,
// chunkwise) lowered alone, run alone on native with random inputs at B x T, median time of many
// runs. With --base PATH (a copy of dense-cpu.ts whose imports are absolute), each statement is
// also lowered by that module and the two kernels run interleaved in one process (A/B on shared
// cores), and their outputs compared. RETNETC_NATIVE_THREADS sets the threads (the pool is per process).
// Usage: npx vite-node bench/dense-small.ts [--B 8] [--T 256] [--runs 200] [--cpu] [--base /tmp/base/dense-cpu.ts] [--checks 0|1] [--filter STR] [--tiles JSON]
import { compileModelGrad } from '../compiler/model-grad.js';
import { makeSchedule } from '../compiler/schedule.js';
import { cseKernel } from '../compiler/kir-cse.js';
import type { Kernel } from '../compiler/kir.js';
import { recogniseDense, type Dense } from '../compiler/dense.js';
import type { Plan } from '../compiler/plan.js';
import { ExprLowering, sizeParam } from '../compiler/lower/expr.js';
import * as dense from '../compiler/lower/dense-cpu.js';
import { devaluate } from '../dsl/dims.js';
import { instantiateModel, loadProgram } from '../dsl/program.js';
import { prepareKernels, runNativeKernel } from '../runtime/native/runner.js';
import { withTargetDefaults } from '../runtime/targets.js';

type Impl = Pick<typeof dense, 'lowerDenseCpu' | 'chooseDenseCpuTile'>;
const args = process.argv.slice(2);
const opt = (name: string, dflt: string): string => { const i = args.indexOf(name); return i >= 0 ? args[i + 1]! : dflt; };
const B = Number(opt('--B', '8')), T = Number(opt('--T', '256')), RUNS = Number(opt('--runs', '200'));
const checks = opt('--checks', '1') !== '0';
// --cpu: process CPU time per run (user + system, all threads) instead of wall time: robust where the cores are shared.
const cpu = args.includes('--cpu');
const now = (): number => { if (!cpu) return performance.now(); const u = process.cpuUsage(); return (u.user + u.system) / 1000; };
const filter = opt('--filter', '');
const basePath = opt('--base', '');
// --tiles '{"m":64}': a blocking choice for every statement's new kernel (as a schedule's per-statement tiles).
const tilesOpt: Record<string, number> | undefined = args.includes('--tiles') ? JSON.parse(opt('--tiles', '{}')) : undefined;
const base: Impl | undefined = basePath ? await import(basePath) : undefined;

const prog = loadProgram(new URL('../models/retnet.ret', import.meta.url).pathname);
const model = instantiateModel(prog, 'retnet', 'tiny');
const mg = compileModelGrad(model, withTargetDefaults(makeSchedule('chunkwise', 64), 'native'));
const plans: Plan[] = [...mg.forward.plans, ...mg.plans];

interface Item { name: string; d: Dense; flops: number; kernels: Kernel[]; sizes: Map<string, number>; lens: Map<string, number>; out: string; plan: Plan }
const items: Item[] = [];
let seed = 7;
const rand = (): number => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32) * 2 - 1;
for (const plan of plans) {
  for (const l of plan.launches) {
    if (l.how !== 'dense' || !l.kernel.name.includes(filter)) continue;
    const s = plan.fn.body.find((x) => x.target === l.target)!;
    const d = recogniseDense(s, plan.fn.vars)!;
    const lower = (impl: Impl): { k: Kernel; L: ExprLowering } => {
      const L = new ExprLowering(plan.fn.vars, { constants: plan.constants, runtime: new Set() });
      const k = impl.lowerDenseCpu(`${l.kernel.name}_${impl === base ? 'base' : 'new'}`, s, d, L, impl.chooseDenseCpuTile(d, plan.constants, impl === base ? undefined : tilesOpt));
      k.buffers = [...L.buffers.values()].map((b) => ({ name: b.name, type: b.type, access: b.written ? 'read_write' as const : 'read' as const }));
      k.scalars = [...L.sizes.runtime].sort().map((a) => ({ name: sizeParam(a), type: 'i32' as const }));
      return { k: cseKernel(k), L };
    };
    const mine = lower(dense);
    const sizes = new Map([...plan.constants, ['B', B], ['T', T]]);
    const lens = new Map<string, number>();
    for (const [id, b] of mine.L.buffers) lens.set(b.name, plan.fn.vars.get(id)!.shape.reduce((a, x) => a * devaluate(x, sizes)!, 1));
    const val = (x: Dense['M']): number => devaluate(x, sizes)!;
    items.push({ name: l.kernel.name, d, flops: 2 * val(d.batch) * val(d.M) * val(d.N) * val(d.K), kernels: base ? [lower(base).k, mine.k] : [mine.k], sizes, lens, out: mine.L.buffers.get(s.target)!.name, plan });
  }
}
const prep = await prepareKernels(items.flatMap((i) => i.kernels), checks);
const median = (xs: number[]): number => xs.sort((a, b) => a - b)[xs.length >> 1]!;
let total = items.map(() => 0);
const totals = [0, 0];
console.log(`dense kernels of the tiny RetNet (fwd + bwd plans), B=${B} T=${T}, threads ${process.env['RETNETC_NATIVE_THREADS'] ?? 'all'}, checks ${checks}, ${cpu ? 'CPU' : 'wall'} time, median of ${RUNS}${base ? '; base vs new interleaved' : ''}`);
for (const it of items) {
  const inputs: Record<string, Float32Array> = {};
  for (const [n, len] of it.lens) inputs[n] = Float32Array.from({ length: len }, rand);
  const scalars = Object.fromEntries([...it.sizes].map(([a, v]) => [sizeParam(a), v]));
  const outs = it.kernels.map(() => new Float32Array(it.lens.get(it.out)!));
  const times: number[][] = it.kernels.map(() => []);
  for (let r = 0; r < RUNS + 5; r++) {
    it.kernels.forEach((k, j) => {
      const t0 = now();
      runNativeKernel(prep, k, { buffers: { ...inputs, [it.out]: outs[j]! }, scalars });
      if (r >= 5) times[j]!.push(now() - t0);
    });
  }
  const ms = times.map(median);
  ms.forEach((m, j) => { totals[j] += m; });
  let diff = '';
  if (outs.length === 2) {
    let num = 0, den = 0;
    outs[0]!.forEach((x, i) => { num += (x - outs[1]![i]!) ** 2; den += x * x; });
    diff = ` rel ${Math.sqrt(num / Math.max(den, 1e-30)).toExponential(1)}`;
  }
  const shape = `[${['batch', 'M', 'N', 'K'].map((f) => devaluate(it.d[f as 'M'], it.sizes)).join(' ')}]`;
  console.log(`${it.name.padEnd(32)} b M N K ${shape.padEnd(20)} ${ms.map((m) => `${(m * 1000).toFixed(0).padStart(6)} us ${(it.flops / m / 1e6).toFixed(0).padStart(4)} GF/s`).join('  |')}${diff}`);
}
total = totals;
console.log(`total: ${total.slice(0, items[0]?.kernels.length ?? 0).map((t) => `${t.toFixed(3)} ms`).join(' | ')}`);
