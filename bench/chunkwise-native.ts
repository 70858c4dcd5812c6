// Retention on the native CPU target, parallel / chunkwise / recurrent side by side (issue 9:
// chunkwise must beat recurrent at T >= 1024): B = 1 (--B 1,4), H = 8, K = V = 64 and 128, T = 1024 and
// 4096, forward and forward + backward, with the schedule defaults native takes
// (runtime/targets.ts withTargetDefaults), as `npm run bench` compiles them. Prints the median
// of 5 runs, wall and CPU time (process.cpuUsage: the machine is shared, so CPU ms show what a
// case cost when other work stole cores), and each case's relative RMSE against recurrent.
// --profile: per kernel time (runtime/native setNativeProfile), the minimum over the runs. The form
// 'chunkwise-simt' is chunkwise with the SIMT-shaped chunk-parallel kernels that GPUs run
// (compiler/lower/chunk-parallel.ts), instead of native's blocked ones (chunk-cpu.ts).
// Usage: npx vite-node bench/chunkwise-native.ts [--B 1,4] [--T 1024,4096] [--K 64,128] [--forms chunkwise,recurrent,parallel,chunkwise-simt]
//        [--dirs fwd,fwdbwd] [--chunk N (default native's)] [--runs 5] [--profile]
import { compileFunction, sizesToSpecialise } from '../compiler/pipeline.js';
import type { Plan } from '../compiler/plan.js';
import { type Form, makeSchedule } from '../compiler/schedule.js';
import { loadProgram } from '../dsl/program.js';
import type { HostValue } from '../runtime/model-runner.js';
import { setNativeProfile } from '../runtime/native/runner.js';
import { openTarget, withTargetDefaults } from '../runtime/targets.js';

const args = process.argv.slice(2);
const opt = (name: string): string | undefined => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : undefined; };
const list = (name: string, dflt: string): string[] => (opt(name) ?? dflt).split(',').filter(Boolean);
const Bs = list('--B', '1').map(Number);
const Ts = list('--T', '1024,4096').map(Number);
const Ks = list('--K', '64,128').map(Number);
type Variant = Form | 'chunkwise-simt' | 'chunkwise-par' | 'chunkwise-walk';
const forms = list('--forms', 'chunkwise,recurrent') as Variant[];
const dirs = list('--dirs', 'fwd,fwdbwd') as ('fwd' | 'fwdbwd')[];
/** The chunk: native's own (runtime/targets.ts, as `npm run bench` takes it) unless --chunk names one. */
const CHUNK = opt('--chunk') === undefined ? undefined : Number(opt('--chunk'));
const RUNS = Number(opt('--runs') ?? 5);
const PROFILE = args.includes('--profile');
const H = 8;

const prog = loadProgram(new URL('../models/retention.ret', import.meta.url).pathname);
if (prog.diagnostics.length) throw new Error(prog.diagnostics[0]!.message);
const fn = prog.checked!.fns.get('retention')!;

let seed = 0x9e3779b9;
const rand = (): number => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32);
const uniform = (shape: number[], scale: number): HostValue => ({ shape, data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => (rand() * 2 - 1) * scale) });

const planFor = (form: Variant, backward: boolean, sizes: Record<string, number>): Plan => {
  const constants = new Map(sizesToSpecialise(fn, backward).map((s) => [s, sizes[s]!] as const));
  const sched = withTargetDefaults(makeSchedule(form.startsWith('chunkwise') ? 'chunkwise' : form as Form, CHUNK), 'native');
  // The two CPU chunkwise kernels whatever the target's default: three phases parallel over chunks, or one walk over them.
  if (form === 'chunkwise-par') sched.chunkParallel = true;
  if (form === 'chunkwise-walk') delete sched.chunkParallel;
  // Without dense 'blocked' (retention has no dense sums), the chunk-parallel kernels take their GPU shape.
  if (form === 'chunkwise-simt') delete sched.dense;
  return compileFunction(fn, sched, { backward, constants });
};

const rmse = (a: HostValue, b: HostValue): number => {
  let d = 0, n = 0;
  for (let i = 0; i < a.data.length; i++) { const x = Number(a.data[i]), y = Number(b.data[i]); d += (x - y) ** 2; n += y * y; }
  return Math.sqrt(d / Math.max(n, 1e-300));
};
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

const dev = openTarget('native');
try {
  console.log(`retention on native, H=${H}, chunk ${CHUNK ?? `${withTargetDefaults(makeSchedule('chunkwise'), 'native').chunk} (native's)`}, median of ${RUNS} runs (wall ms / CPU ms, min CPU ms), rRMSE vs recurrent`);
  for (const B of Bs) for (const T of Ts) for (const Kd of Ks) {
    const sizes = { B, H, T, K: Kd, V: Kd };
    const inputs = new Map<string, HostValue>([
      ['q', uniform([B, H, T, Kd], 1)], ['k', uniform([B, H, T, Kd], 1 / Math.sqrt(Kd))], ['v', uniform([B, H, T, Kd], 1)],
      ['gamma', { shape: [H], data: Float32Array.from({ length: H }, (_, h) => 1 - 2 ** (-5 - h)) }],
    ]);
    const withGrad = new Map([...inputs, ['grad.o', uniform([B, H, T, Kd], 1)] as const]);
    for (const dir of dirs) {
      const results = new Map<Variant, { wall: number; cpu: number; cpuMin: number; out: Map<string, HostValue>; prof?: Map<string, { launches: number; ms: number }> }>();
      for (const form of forms) {
        const fplan = planFor(form, false, sizes);
        const bplan = dir === 'fwdbwd' ? planFor(form, true, sizes) : undefined;
        const once = async (): Promise<Map<string, HostValue>> => {
          const out = new Map<string, HostValue>(await dev.exec(fplan, inputs));
          if (bplan) for (const [n, v] of await dev.exec(bplan, withGrad)) out.set(n, v);
          return out;
        };
        const out = await once(); // compiles (cached) and warms up
        const walls: number[] = [], cpus: number[] = [];
        let prof: Map<string, { launches: number; ms: number }> | undefined;
        for (let r = 0; r < RUNS; r++) {
          const run = PROFILE ? new Map<string, { launches: number; ms: number }>() : undefined;
          setNativeProfile(run);
          const c0 = process.cpuUsage(), t0 = performance.now();
          await once();
          const t1 = performance.now(), c1 = process.cpuUsage(c0);
          setNativeProfile(undefined);
          // Per kernel, the fastest run's time (the machine is shared: the least disturbed run).
          if (run) { prof ??= new Map(); for (const [n, p] of run) { const q = prof.get(n); if (!q || p.ms < q.ms) prof.set(n, p); } }
          walls.push(t1 - t0);
          cpus.push((c1.user + c1.system) / 1000);
        }
        results.set(form, { wall: median(walls), cpu: median(cpus), cpuMin: Math.min(...cpus), out, ...(prof ? { prof } : {}) });
      }
      const ref = results.get('recurrent')?.out;
      const names = dir === 'fwd' ? ['o'] : ['grad.q', 'grad.k', 'grad.v'];
      const cells = [...results].map(([form, r]) => {
        const err = ref && form !== 'recurrent' ? ` rRMSE ${Math.max(...names.map((n) => rmse(r.out.get(n)!, ref.get(n)!))).toExponential(1)}` : '';
        return `${form} ${r.wall.toFixed(2)} / ${r.cpu.toFixed(1)} (min ${r.cpuMin.toFixed(1)})${err}`;
      });
      const cw = results.get('chunkwise'), rc = results.get('recurrent');
      const ratio = cw && rc ? `  recurrent/chunkwise wall ${(rc.wall / cw.wall).toFixed(2)}x, CPU ${(rc.cpu / cw.cpu).toFixed(2)}x` : '';
      console.log(`B=${B} T=${String(T).padStart(5)} K=V=${String(Kd).padEnd(3)} ${dir.padEnd(6)} ${cells.join(' | ')}${ratio}`);
      for (const [form, r] of results) {
        if (!r.prof) continue;
        for (const [name, p] of [...r.prof].sort((a, b) => b[1].ms - a[1].ms)) console.log(`    ${form.padEnd(9)} ${p.ms.toFixed(2).padStart(8)} ms ${String(p.launches).padStart(3)}x  ${name}`);
      }
    }
  }
} finally {
  await dev.release();
}
