// Retention on WebGPU (issue 9: chunkwise must beat recurrent at T >= 1024): models/retention.ret
// `retention`, B = 1 (--B), H = 8, K = V (64 default), as parallel, recurrent and chunkwise (one workgroup
// walking a sequence's chunks, "seq", and parallel over chunks, "par", at chunk 16 / 32 / 64), and
// "default" (makeSchedule('chunkwise'), no chunk given, with webgpu's schedule defaults and so its
// default chunk, runtime/targets.ts),
// forward and forward + backward. Timed as bench/run.ts times a case: the first run builds the
// pipelines, then the median of N runs (uploads and read-backs included). Every case is checked
// against recurrent by relative RMSE (the worst tensor: o, or grad.q/k/v).
// --launches: the time of each launch of a case's plans, by the plan dispatched with that launch
// repeated R more times (kernels only read their inputs and overwrite their outputs, so repeating
// one changes nothing): (best repeated - best plain) / R. No per-dispatch timer here.
// `cpu`: the process's CPU time per run (lavapipe's threads are the process's), the median: on a
// shared machine it moves less with the load than wall time does.
//
// Usage: npx vite-node bench/chunkwise-webgpu.ts [--T 1024,4096] [--K 64] [--B 1,4] [--dir fwd,fwdbwd]
//          [--only recurrent,seq64,par32,...] [--reps 5] [--launches]
import { compileFunction, sizesToSpecialise } from '../compiler/pipeline.js';
import type { Plan } from '../compiler/plan.js';
import { type Form, makeSchedule, type Schedule } from '../compiler/schedule.js';
import { loadProgram } from '../dsl/program.js';
import type { HostValue } from '../runtime/model-runner.js';
import { openTarget, withTargetDefaults } from '../runtime/targets.js';

const args = process.argv.slice(2);
const opt = (name: string, dflt: string): string => { const i = args.indexOf(name); return i >= 0 ? args[i + 1]! : dflt; };
const Ts = opt('--T', '1024,4096').split(',').map(Number);
const Ks = opt('--K', '64').split(',').map(Number);
const dirs = opt('--dir', 'fwd,fwdbwd').split(',') as ('fwd' | 'fwdbwd')[];
const REPS = Number(opt('--reps', '5'));
const perLaunch = args.includes('--launches');
const Bs = opt('--B', '1').split(',').map(Number);
const H = 8;

interface Variant { name: string; sched: Schedule }
const variants: Variant[] = [
  { name: 'recurrent', sched: makeSchedule('recurrent', 64) },
  { name: 'default', sched: withTargetDefaults(makeSchedule('chunkwise'), 'webgpu') },
  ...[16, 32, 64].flatMap((C) => [
    { name: `seq${C}`, sched: makeSchedule('chunkwise', C) },
    { name: `par${C}`, sched: makeSchedule('chunkwise', C, { chunkParallel: true }) },
  ]),
  { name: 'parallel', sched: makeSchedule('parallel' as Form, 64) },
];
const only = args.includes('--only') ? new Set(opt('--only', '').split(',')) : undefined;
const chosen = variants.filter((v) => !only || only.has(v.name) || v.name === 'recurrent');

let seed = 1234567;
const rand = (): number => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
const uniform = (shape: number[], scale: number): HostValue => ({ shape, data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => (rand() * 2 - 1) * scale) });

const prog = loadProgram(new URL('../models/retention.ret', import.meta.url).pathname);
const retention = prog.checked!.fns.get('retention')!;
const te = openTarget('webgpu');
const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2; };
function relRmse(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0, r = 0;
  for (let i = 0; i < b.length; i++) { d += (a[i]! - b[i]!) ** 2; r += b[i]! ** 2; }
  return Math.sqrt(d / r);
}
const planOf = (sched: Schedule, backward: boolean, K: number): Plan =>
  compileFunction(retention, sched, { backward, constants: new Map(sizesToSpecialise(retention, backward).map((s) => [s, K] as const)) });
const launchInfo = (p: Plan): string => p.launches.map((l) => `${l.kernel.name.replace(/^retention_/, '')}[wg ${l.kernel.workgroup[0]}]`).join(' ');

try {
  for (const B of Bs) for (const K of Ks) for (const T of Ts) {
    const fwdIn = new Map<string, HostValue>([['q', uniform([B, H, T, K], 1)], ['k', uniform([B, H, T, K], 1 / Math.sqrt(K))], ['v', uniform([B, H, T, K], 1)], ['gamma', { shape: [H], data: Float32Array.from({ length: H }, (_, h) => 1 - 2 ** (-5 - h)) }]]);
    const bwdIn = new Map([...fwdIn, ['grad.o', uniform([B, H, T, K], 1)] as const]);
    for (const dir of dirs) {
      const names = dir === 'fwd' ? ['o'] : ['grad.q', 'grad.k', 'grad.v'];
      let ref: Map<string, HostValue> | undefined;
      const rows: string[] = [];
      for (const v of chosen) {
        const plans = dir === 'fwd' ? [planOf(v.sched, false, K)] : [planOf(v.sched, false, K), planOf(v.sched, true, K)];
        const once = async (): Promise<Map<string, HostValue>> => {
          const out = new Map<string, HostValue>();
          for (const [i, p] of plans.entries()) for (const [n, x] of await te.exec(p, i === 0 ? fwdIn : bwdIn)) out.set(n, x);
          return out;
        };
        const t0 = performance.now(), c0 = process.cpuUsage();
        const first = await once();
        const firstMs = performance.now() - t0;
        const fc = process.cpuUsage(c0);
        const firstCpu = (fc.user + fc.system) / 1000;
        ref ??= first;
        const err = Math.max(...names.map((n) => relRmse(first.get(n)!.data, ref!.get(n)!.data)));
        const ms: number[] = [], cpu: number[] = [];
        for (let i = 0; i < REPS; i++) {
          const t = performance.now(), c = process.cpuUsage();
          await once();
          ms.push(performance.now() - t);
          const d = process.cpuUsage(c);
          cpu.push((d.user + d.system) / 1000);
        }
        const line = `B=${B} K=${K} T=${T} ${dir.padEnd(6)} ${v.name.padEnd(9)} median ${median(ms).toFixed(1).padStart(8)} ms  min ${Math.min(...ms).toFixed(1).padStart(8)}  cpu ${median(cpu).toFixed(0).padStart(6)} ms  first ${firstMs.toFixed(0).padStart(6)} (cpu ${firstCpu.toFixed(0)})  relRMSE vs recurrent ${err.toExponential(1)}`;
        console.log(line);
        rows.push(line);
        if (perLaunch) {
          for (const [pi, p] of plans.entries()) {
            const inputs = pi === 0 ? fwdIn : bwdIn;
            const base: number[] = [];
            for (let i = 0; i < 3; i++) { const t = performance.now(); await te.exec(p, inputs); base.push(performance.now() - t); }
            const parts: string[] = [];
            for (const l of p.launches) {
              const R = 4;
              const dup: Plan = { ...p, launches: p.launches.flatMap((x) => (x === l ? Array.from({ length: R + 1 }, () => x) : [x])) };
              await te.exec(dup, inputs);
              const many: number[] = [];
              for (let i = 0; i < 3; i++) { const t = performance.now(); await te.exec(dup, inputs); many.push(performance.now() - t); }
              parts.push(`${l.kernel.name.replace(/^retention_/, '')}[wg ${l.kernel.workgroup[0]}] ${Math.max(0, (Math.min(...many) - Math.min(...base)) / R).toFixed(1)}`);
            }
            console.log(`    plan ${pi === 0 ? 'fwd' : 'bwd'} (best ${Math.min(...base).toFixed(1)} ms): ${parts.join(', ')}`);
          }
        } else if (T === Ts[0] && K === Ks[0] && B === Bs[0]) console.log(`    launches: ${plans.map(launchInfo).join(' | ')}`);
      }
    }
  }
} finally {
  await te.release();
}
