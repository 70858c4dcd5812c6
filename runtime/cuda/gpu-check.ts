// The GPU check (scripts/gpu-check.sh runs it from a bundle): on a machine with an NVIDIA GPU,
// checks the CUDA runtime and printer end to end and measures the kernels.
//
//   check --refs DIR [--json FILE] [--no-bench] [--no-agree] [--bench-lengths 2048,16384] [--time-budget S]
//       1. device, driver, nvcc; the hand-written contract kernel (runtime/cuda/smoke.ts);
//       2. agreement: retention, linear attention and gated retention, every schedule (chunk 64),
//          forward and backward, B=2 H=2 T=257 K=V=64, against float64 references (rel. RMSE
//          <= 1e-5), every kernel built by this machine's nvcc;
//       3. benchmark: retention forward and forward+backward, B=4 H=8 K=V=128, T = 2048 and
//          16384, each schedule (chunk 64), timed with CUDA events.
//       Exit code 0 when everything agrees, 1 on a disagreement or error, 2 when CUDA is unusable.
//       [--shape B=1,H=2,T=9,K=4,V=4] runs the cases at another shape (references made with the
//       same option). checkMain(args, { device }) runs the same check, summary and decision with
//       the plans run by another device (tests/gpu-check.test.ts: the CPU executor), without the
//       CUDA-only parts (contract kernel, benchmark).
//   refs --out DIR [--case NAME] [--shape ...]
//       computes the float64 references with the reference interpreter (slow; any machine).
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { bindSizes, type Value } from '../../dsl/reference/interpreter.js';
import type { CheckedFn } from '../../dsl/checked.js';
import { compilePlan, type Plan, specialisedSizes } from '../../compiler/plan.js';
import { type Form, FORMS, makeSchedule } from '../../compiler/schedule.js';
import { AGREEMENT_CASES, type AgreementCase, type AgreementShape, loadCaseFn, readCaseRefs, relRmse, writeCaseRefs } from './agreement.js';
import { type CudaContext, cudaContext, cudaStatus, CudaPlanRun, type CudaInput, prepareCudaPlans, runPlanCuda, timeCuda, cudaEmitter } from './runner.js';
import { runSmoke, SMOKE_KERNEL } from './smoke.js';

export const TOLERANCE = 1e-5;

let builtFrom: string | undefined;
/** The bundle records the source tree it was built from (scripts/gpu-check-prepare.mjs). */
export function setBuiltFrom(hash: string): void {
  builtFrom = hash;
}

/** sha256 over dsl/ compiler/ targets/ runtime/ models/ (.ts, .ret, .cc), as the prepare script computes it. */
export function sourceTreeHash(root: string): string {
  const files: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(path.join(root, d), { withFileTypes: true })) {
      const rel = path.posix.join(d, e.name);
      if (e.isDirectory()) {
        if (e.name !== 'build' && e.name !== 'node_modules') walk(rel);
      } else if (/\.(ts|ret|cc)$/.test(e.name)) files.push(rel);
    }
  };
  for (const d of ['dsl', 'compiler', 'targets', 'runtime', 'models']) if (fs.existsSync(path.join(root, d))) walk(d);
  files.sort();
  const h = createHash('sha256');
  for (const f of files) h.update(f).update('\0').update(fs.readFileSync(path.join(root, f))).update('\0');
  return h.digest('hex');
}
const CHUNK = 64;

const oneLine = (e: unknown): string => (e instanceof Error ? e.message : String(e)).replace(/\s+/g, ' ').trim();
const say = (s: string) => process.stdout.write(`${s}\n`);
const fmtE = (x: number) => (Number.isFinite(x) ? x.toExponential(1) : String(x));

/** What the agreement cases run on: the GPU (CUDA), or for tests another executor. */
export interface CheckDevice {
  /** Shown in the log and the summary. */
  name: string;
  /** Prints, compiles and loads a plan's kernels: how many, and how many were built now. */
  prepare(plan: Plan): Promise<{ kernels: number; built: number }>;
  /** Runs a plan: the function's outputs by name. */
  run(plan: Plan, inputs: ReadonlyMap<string, Value>): Promise<ReadonlyMap<string, { data: ArrayLike<number> }>>;
}

const cudaDevice = (ctx: CudaContext): CheckDevice => ({
  name: `${ctx.device.name} ${ctx.target.arch} (${ctx.target.format}), nvcc ${ctx.nvcc.version}`,
  prepare: async (plan) => {
    const ks = (await prepareCudaPlans([plan]))[0]!;
    return { kernels: ks.length, built: ks.filter((k) => !k.cached).length };
  },
  run: (plan, inputs) => runPlanCuda(plan, inputs, { syncEachLaunch: true }),
});

/** "B=1,H=2,T=9,K=4,V=4" -> a shape (every one of B, H, T, K, V, positive integers). */
export function parseShape(text: string): AgreementShape {
  const out: Record<string, number> = {};
  for (const part of text.split(',')) {
    const m = /^\s*([BHTKV])\s*=\s*(\d+)\s*$/.exec(part);
    if (!m || Number(m[2]) < 1) throw new Error(`--shape: '${part}' is not one of B, H, T, K, V = a positive integer`);
    out[m[1]!] = Number(m[2]);
  }
  for (const k of ['B', 'H', 'T', 'K', 'V']) if (!(k in out)) throw new Error(`--shape: ${k} is missing`);
  return out as unknown as AgreementShape;
}

const casesAt = (shape: string | undefined): readonly AgreementCase[] => (shape ? AGREEMENT_CASES.map((c) => ({ ...c, shape: parseShape(shape) })) : AGREEMENT_CASES);

interface AgreeResult { case: string; form: Form; pass: 'forward' | 'backward'; tensor: string; relRmse: number; ok: boolean; error?: string }
interface BenchResult { T: number; form: Form; fwdMs?: number; fwdBwdMs?: number; reps?: number; fwdTflops?: number; fwdBwdTflops?: number; tokensPerS?: number; deviceGiB?: number; error?: string }

/** Constants the plan specialises on (K, V), from the inputs' shapes, as the CLI does. */
function constantsFor(fn: CheckedFn, inputs: ReadonlyMap<string, { shape: number[] }>, backward: boolean): Map<string, number> {
  const sizes = bindSizes(fn, new Map([...inputs].map(([k, v]) => [k, v.shape] as const)));
  return new Map(specialisedSizes(fn, backward).map((s) => [s, sizes.get(s)!] as const));
}

function describeDevice(ctx: CudaContext): string {
  const d = ctx.device;
  const drv = `${Math.floor(d.driverVersion / 1000)}.${(d.driverVersion % 1000) / 10}`;
  return `${d.name} (compute ${d.major}.${d.minor}, ${d.multiprocessors} SMs, ${(d.totalMemory / 2 ** 30).toFixed(0)} GiB, ` +
    `${(d.maxSharedPerBlockOptin / 1024).toFixed(0)} KiB shared/block opt-in; driver API ${drv}); nvcc ${ctx.nvcc.version} at ${ctx.nvcc.path} -> ${ctx.target.format} ${ctx.target.arch}`;
}

/** Forward FLOPs of one schedule's kernels for retention (multiply-add = 2). */
function forwardFlops(form: Form, B: number, H: number, T: number, K: number, V: number, C: number): number {
  if (form === 'parallel') return 2 * B * H * ((T * (T + 1)) / 2) * (K + V);
  if (form === 'recurrent') return 4 * B * H * T * K * V;
  return 2 * B * H * T * ((C + 1) / 2) * (K + V) + 4 * B * H * T * K * V;
}

function randomInputs(fn: CheckedFn, shape: Record<string, number>, seed: number): Map<string, CudaInput> {
  let s = seed >>> 0 || 1;
  const next = () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s / 4294967296 * 2 - 1;
  };
  const out = new Map<string, CudaInput>();
  const dims = (d: ReadonlyMap<string, number>) => {
    let n = d.get('') ?? 0;
    for (const [k, c] of d) if (k !== '') n += c * shape[k]!;
    return n;
  };
  for (const p of fn.params) {
    const sh = p.shape.map(dims);
    const n = sh.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    if (p.name === 'gamma') for (let h = 0; h < n; h++) data[h] = 1 - 2 ** (-5 - h);
    else if (p.name === 'q') for (let i = 0; i < n; i++) data[i] = next() / Math.sqrt(shape['K'] ?? 1);
    else for (let i = 0; i < n; i++) data[i] = next();
    out.set(p.name, { shape: sh, data });
  }
  return out;
}

async function agreement(root: string, refsDir: string, results: AgreeResult[], log: (s: string) => void, device: CheckDevice, cases: readonly AgreementCase[]): Promise<void> {
  type Job = { c: AgreementCase; form: Form; backward: boolean; plan: Plan; inputs: Map<string, Value>; refs: Map<string, Value> };
  const jobs: Job[] = [];
  for (const c of cases) {
    let fn: CheckedFn;
    let refs;
    try {
      fn = loadCaseFn(root, c);
      refs = await readCaseRefs(root, refsDir, c);
    } catch (e) {
      results.push({ case: c.name, form: 'parallel', pass: 'forward', tensor: '-', relRmse: NaN, ok: false, error: oneLine(e) });
      log(`  ${c.name}: FAIL ${oneLine(e)}`);
      continue;
    }
    for (const form of FORMS) {
      for (const backward of [false, true]) {
        const inputs = backward ? new Map([...refs.inputs, ...refs.upstream]) : refs.inputs;
        try {
          const plan = compilePlan(fn, makeSchedule(form, CHUNK), { backward, constants: constantsFor(fn, refs.inputs, backward) });
          jobs.push({ c, form, backward, plan, inputs, refs: backward ? refs.backward : refs.forward });
        } catch (e) {
          results.push({ case: c.name, form, pass: backward ? 'backward' : 'forward', tensor: '-', relRmse: NaN, ok: false, error: `compilePlan: ${oneLine(e)}` });
        }
      }
    }
  }
  // Print, compile (nvcc in parallel) and load every kernel first.
  const t0 = performance.now();
  const prepared = await Promise.allSettled(jobs.map((j) => device.prepare(j.plan)));
  const counts = prepared.flatMap((p) => (p.status === 'fulfilled' ? [p.value] : []));
  const kernels = counts.reduce((a, c) => a + c.kernels, 0);
  const built = counts.reduce((a, c) => a + c.built, 0);
  log(`  built ${kernels} kernels (${built} now, ${kernels - built} from the cache) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  for (const [i, j] of jobs.entries()) {
    const pass = j.backward ? 'backward' : 'forward';
    const p = prepared[i]!;
    if (p.status === 'rejected') {
      results.push({ case: j.c.name, form: j.form, pass, tensor: '-', relRmse: NaN, ok: false, error: oneLine(p.reason) });
      log(`  ${j.c.name.padEnd(17)} ${j.form.padEnd(9)} ${pass.padEnd(8)} FAIL ${oneLine(p.reason)}`);
      continue;
    }
    try {
      const out = await device.run(j.plan, j.inputs);
      const parts: string[] = [];
      for (const [name, ref] of j.refs) {
        const got = out.get(name);
        const e = got ? relRmse(got.data, ref.data) : Infinity;
        const ok = e <= TOLERANCE;
        results.push({ case: j.c.name, form: j.form, pass, tensor: name, relRmse: e, ok, ...(got ? {} : { error: `no output '${name}'` }) });
        parts.push(`${name} ${fmtE(e)}${ok ? '' : ' FAIL'}`);
      }
      log(`  ${j.c.name.padEnd(17)} ${j.form.padEnd(9)} ${pass.padEnd(8)} ${parts.join('  ')}`);
    } catch (e) {
      results.push({ case: j.c.name, form: j.form, pass, tensor: '-', relRmse: NaN, ok: false, error: oneLine(e) });
      log(`  ${j.c.name.padEnd(17)} ${j.form.padEnd(9)} ${pass.padEnd(8)} FAIL ${oneLine(e)}`);
    }
  }
}

async function bench(root: string, ctx: CudaContext, results: BenchResult[], deadline: number, lengths: number[], log: (s: string) => void): Promise<void> {
  const [B, H, K, V] = [4, 8, 128, 128];
  const fn = loadCaseFn(root, { file: 'models/retention.ret', fn: 'retention' });
  const kernelInfo = new Map<string, string>();
  for (const T of lengths) {
    const inputs = randomInputs(fn, { B, H, T, K, V }, 7 + T);
    const n = B * H * T * V;
    const up = new Float32Array(n);
    for (let i = 0; i < n; i++) up[i] = Math.fround(Math.sin(i * 0.7));
    const binputs = new Map([...inputs, ['grad.o', { shape: [B, H, T, V], data: up }]]);
    for (const form of FORMS) {
      const r: BenchResult = { T, form };
      results.push(r);
      if (performance.now() > deadline) {
        r.error = 'skipped: time budget spent';
        log(`  T=${String(T).padEnd(5)} ${form.padEnd(9)} skipped (time budget)`);
        continue;
      }
      let frun: CudaPlanRun | undefined;
      let brun: CudaPlanRun | undefined;
      try {
        const sched = makeSchedule(form, CHUNK);
        const fplan = compilePlan(fn, sched, { constants: constantsFor(fn, inputs, false) });
        const bplan = compilePlan(fn, sched, { backward: true, constants: constantsFor(fn, inputs, true) });
        frun = await CudaPlanRun.create(fplan, inputs);
        brun = await CudaPlanRun.create(bplan, binputs);
        for (const p of [...frun.launches, ...brun.launches]) {
          const a = p.kernel.attributes;
          kernelInfo.set(p.launch.kernel.name, `${a.registers} regs, ${a.localBytes} B local, ${a.staticSharedBytes + p.kernel.emitted.dynamicSharedBytes} B shared, block ${p.block.join('x')}`);
        }
        const f = frun;
        const b = brun;
        // Warm up, then as many repetitions as fit in about 0.3 s (at least 1, at most 20).
        const once = timeCuda(ctx, () => { f.launch(); b.launch(); }, 1);
        const reps = Math.max(1, Math.min(20, Math.floor(300 / Math.max(once, 1e-3))));
        r.reps = reps;
        r.fwdMs = timeCuda(ctx, () => f.launch(), reps);
        r.fwdBwdMs = timeCuda(ctx, () => { f.launch(); b.launch(); }, reps);
        const fl = forwardFlops(form, B, H, T, K, V, CHUNK);
        r.fwdTflops = fl / (r.fwdMs * 1e9);
        r.fwdBwdTflops = (3 * fl) / (r.fwdBwdMs * 1e9);
        r.tokensPerS = (B * T) / (r.fwdBwdMs / 1000);
        r.deviceGiB = (frun.deviceBytes + brun.deviceBytes) / 2 ** 30;
        log(`  T=${String(T).padEnd(5)} ${form.padEnd(9)} fwd ${r.fwdMs.toFixed(3).padStart(9)} ms (${r.fwdTflops.toFixed(2)} TFLOP/s, ${((B * T) / r.fwdMs / 1000).toFixed(2)} Mtok/s)` +
          `   fwd+bwd ${r.fwdBwdMs.toFixed(3).padStart(9)} ms (${r.fwdBwdTflops.toFixed(2)} TFLOP/s at 3x fwd FLOPs, ${(r.tokensPerS / 1e6).toFixed(2)} Mtok/s)   x${reps}`);
      } catch (e) {
        r.error = oneLine(e);
        log(`  T=${String(T).padEnd(5)} ${form.padEnd(9)} FAIL ${r.error}`);
      } finally {
        frun?.dispose();
        brun?.dispose();
      }
    }
  }
  if (kernelInfo.size) {
    log('  kernels (K=V=128):');
    for (const [k, s] of [...kernelInfo].sort()) log(`    ${k.padEnd(32)} ${s}`);
  }
}

export async function checkMain(args: string[], inject: { device?: CheckDevice } = {}): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      refs: { type: 'string' }, json: { type: 'string' }, root: { type: 'string' }, shape: { type: 'string' },
      'no-bench': { type: 'boolean', default: false }, 'no-agree': { type: 'boolean', default: false },
      'time-budget': { type: 'string', default: '270' }, 'bench-lengths': { type: 'string', default: '2048,16384' },
    },
  });
  const started = performance.now();
  const deadline = started + Number(values['time-budget']) * 1000;
  const root = path.resolve(values.root ?? process.cwd());
  const refsDir = path.resolve(values.refs ?? path.join(root, 'build', 'gpu-check', 'refs'));
  const summary: Record<string, unknown> = { started: new Date().toISOString(), host: os.hostname(), node: process.version };
  const writeJson = () => {
    if (values.json) fs.writeFileSync(values.json, JSON.stringify(summary, null, 2) + '\n');
  };
  say('== retnetc GPU check ==');
  if (builtFrom) {
    const now = sourceTreeHash(root);
    summary['sourcesMatchBundle'] = now === builtFrom;
    if (now !== builtFrom) say('warning: this bundle was built from other sources than this tree; rerun scripts/gpu-check.sh --prepare where npm ci ran');
  }
  const cases = casesAt(values.shape);
  let ctx: CudaContext | undefined;
  let device: CheckDevice;
  if (inject.device) {
    device = inject.device;
    say(`device: ${device.name} (no CUDA: contract kernel and benchmark not run)`);
    summary['device'] = { name: device.name };
  } else {
    const why = cudaStatus();
    if (why) {
      say(`CUDA unavailable: ${why}`);
      summary['unavailable'] = why;
      writeJson();
      return 2;
    }
    ctx = cudaContext();
    device = cudaDevice(ctx);
    say(`device: ${describeDevice(ctx)}`);
    say(`addon: ${ctx.addonFile}`);
    summary['device'] = ctx.device;
    summary['nvcc'] = { version: ctx.nvcc.version, path: ctx.nvcc.path, target: ctx.target };
  }
  let failures = 0;

  if (ctx) {
    say(`-- contract smoke test: hand-written kernel, ${SMOKE_KERNEL.dynamicSharedBytes} B dynamic shared memory`);
    try {
      const s = await runSmoke(ctx);
      const ok = s.maxError === 0;
      if (!ok) failures++;
      say(`  ${ok ? 'ok' : 'FAIL'}: max abs error ${s.maxError} (${s.ms.toFixed(2)} ms incl. launch)`);
      summary['smoke'] = { ok, ...s };
    } catch (e) {
      failures++;
      say(`  FAIL ${oneLine(e)}`);
      summary['smoke'] = { ok: false, error: oneLine(e) };
    }
  }

  let printer: string | undefined;
  try {
    if (ctx) await cudaEmitter();
  } catch (e) {
    printer = oneLine(e);
  }
  if (printer) {
    failures++;
    say(`-- agreement and benchmark not run: ${printer}`);
    summary['printer'] = printer;
  } else {
    if (!values['no-agree']) {
      say(`-- agreement with the float64 reference (rel. RMSE <= ${TOLERANCE}), chunk ${CHUNK}, refs ${path.relative(root, refsDir) || refsDir}`);
      const agree: AgreeResult[] = [];
      await agreement(root, refsDir, agree, say, device, cases);
      const bad = agree.filter((r) => !r.ok);
      failures += bad.length;
      const worst = agree.filter((r) => Number.isFinite(r.relRmse)).reduce((m, r) => Math.max(m, r.relRmse), 0);
      say(`  ${agree.length - bad.length}/${agree.length} tensors agree; worst rel. RMSE ${fmtE(worst)}`);
      summary['agreement'] = { tolerance: TOLERANCE, results: agree, failed: bad.length, worst };
    }
    if (!values['no-bench'] && ctx) {
      say('-- benchmark: retention, B=4 H=8 K=V=128, chunk 64, CUDA events (mean of xN after a warm-up)');
      const b: BenchResult[] = [];
      try {
        await bench(root, ctx, b, deadline, values['bench-lengths']!.split(',').map(Number), say);
      } catch (e) {
        failures++;
        say(`  FAIL ${oneLine(e)}`);
      }
      summary['bench'] = b;
    }
  }
  const secs = (performance.now() - started) / 1000;
  summary['seconds'] = secs;
  summary['ok'] = failures === 0;
  writeJson();
  // One block that fits in a terminal's last lines.
  const smoke = summary['smoke'] as { ok: boolean } | undefined;
  const agree = summary['agreement'] as { results: AgreeResult[]; failed: number; worst: number } | undefined;
  say(`summary: ${device.name}`);
  say(`  smoke ${!ctx ? 'not run' : smoke?.ok ? 'ok' : 'FAIL'}; agreement ${agree ? `${agree.results.length - agree.failed}/${agree.results.length} tensors, worst rel. RMSE ${fmtE(agree.worst)}` : printer ? 'not run (no printer)' : 'not run'}`);
  for (const r of (summary['bench'] as BenchResult[] | undefined) ?? []) {
    say(`  bench T=${r.T} ${r.form}: ${r.error ? r.error : `fwd ${r.fwdMs!.toFixed(3)} ms, fwd+bwd ${r.fwdBwdMs!.toFixed(3)} ms, ${(r.tokensPerS! / 1e6).toFixed(2)} Mtok/s train, ${r.fwdTflops!.toFixed(2)} TFLOP/s fwd`}`);
  }
  say(`== ${failures === 0 ? 'PASS' : `FAIL (${failures} failure${failures === 1 ? '' : 's'})`} in ${secs.toFixed(1)} s`);
  return failures === 0 ? 0 : 1;
}

export async function refsMain(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { out: { type: 'string' }, case: { type: 'string', multiple: true }, root: { type: 'string' }, shape: { type: 'string' }, 'missing-only': { type: 'boolean', default: false } },
  });
  const root = path.resolve(values.root ?? process.cwd());
  const out = path.resolve(values.out ?? path.join(root, 'build', 'gpu-check', 'refs'));
  const cases = casesAt(values.shape).filter((c) => !values.case || values.case.includes(c.name));
  for (const c of cases) {
    if (values['missing-only']) {
      try {
        await readCaseRefs(root, out, c);
        say(`${c.name}: up to date`);
        continue;
      } catch { /* missing or stale: compute */ }
    }
    await writeCaseRefs(root, out, c, say);
  }
  return 0;
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    if (cmd === 'check') return await checkMain(rest);
    if (cmd === 'refs') return await refsMain(rest);
    process.stderr.write('usage: gpu-check check --refs DIR [--json FILE] [--no-bench] [--no-agree] [--bench-lengths T,T] [--time-budget S] [--shape B=..,H=..,T=..,K=..,V=..] | gpu-check refs --out DIR [--case NAME] [--shape ...] [--missing-only]\n');
    return 2;
  } catch (e) {
    process.stderr.write(`gpu-check: error: ${oneLine(e)}\n`);
    return 1;
  }
}
