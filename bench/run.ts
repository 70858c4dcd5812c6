// `npm run bench`: retnetc's compiled plans timed on every available target, side by side with
// the peer a user would pick instead (PyTorch eager, bench/peer_torch.py) at the same shapes, in
// the same run. Writes <out>/latest.json, <out>/latest.md (a Markdown table) and SVG plots.
//
//   node dist/bench/run.js [--quick] [--targets native,webgpu,cpu] [--out DIR] [--reps N] [--min-ms MS]
//                          [--cap-ms MS] [--budget-ms MS] [--no-peer] [--python PATH] [--peer-threads N]
//
// Timing is `retnetc run --repeat N`'s (runtime/cli/run.ts): compile time, the first run (which
// on WebGPU builds the pipelines), then the median of N more runs, each including the uploads and
// read-backs a caller of the runtime pays. N is --reps, fewer where the first run is long
// (N = floor(budget / first run), at least 1), more where it is short: a case of a few ms repeats
// for --min-ms (default 400, at most 50 runs), as a median of 5 such runs moved by 5-10% between
// bench runs. The peer times the same way (one warm-up run,
// then the median).
//
// Every retnetc case is checked once, before it is timed, against the peer's output at that
// shape (or, without the peer, against another schedule): its relative RMSE is printed and a
// case above the bar is reported as wrong and not timed. A case whose estimated time per run
// (scaled from the largest case of that target, form and direction measured so far) exceeds
// --cap-ms is skipped with that reason printed.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CheckedFn, CheckedModel } from '../dsl/checked.js';
import { instantiateModel, loadProgram } from '../dsl/program.js';
import { compileFunction, compileModel, modelProgram, sizesToSpecialise } from '../compiler/pipeline.js';
import { compileModelGrad } from '../compiler/model-grad.js';
import { boundWeights } from '../compiler/model-split.js';
import type { Plan } from '../compiler/plan.js';
import { DEFAULT_CHUNK, type Form, makeSchedule } from '../compiler/schedule.js';
import { devaluate } from '../dsl/dims.js';
import { deviceError, EXEC_TARGETS, openTarget, runnerOf, type TargetExec, withTargetDefaults } from '../runtime/targets.js';
import { type HostValue, type ModelState, type PlanExec, runModelPlan } from '../runtime/model-runner.js';
import { runModelBackward } from '../runtime/model-backward.js';
import { peerCoreType } from './peer-blas.js';
import { hostLanes } from '../targets/native/compile.js';
import { barPlot, linePlot, type Series } from './plot.js';

// ---- targets ----------------------------------------------------------------------------------

/**
 * The targets the bench times, fastest first: every executing target of the registry
 * (runtime/targets.ts), by its speed rank. A target is timed when it runs a tiny plan;
 * otherwise it is listed with the reason.
 */
export const BENCH_TARGETS: readonly string[] = [...EXEC_TARGETS].sort((a, b) => runnerOf(a).rank - runnerOf(b).rank);
const targetExec = (name: string): TargetExec | string =>
  EXEC_TARGETS.includes(name) ? openTarget(name) : `target '${name}' is not registered in runtime/targets.ts`;

interface Target { name: string; exec?: PlanExec; release?: () => Promise<void>; reason?: string }

// ---- options ----------------------------------------------------------------------------------

interface Options {
  quick: boolean;
  targets: string[] | undefined;
  out: string;
  reps: number;
  /** Short cases repeat for this long (at most MAX_SHORT_REPS runs). */
  minMs: number;
  capMs: number;
  budgetMs: number;
  peer: boolean;
  python: string;
  /** torch.set_num_threads for the peer (default: every core, what a user gets). */
  peerThreads: number | undefined;
}

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** The repository root: the folder above bench/ (bench/run.ts) or above dist/bench/ (built), else the working directory. */
const ROOT = [path.resolve(HERE, '..'), path.resolve(HERE, '..', '..'), process.cwd()].find((d) => fs.existsSync(path.join(d, 'models', 'retention.ret'))) ?? process.cwd();

const USAGE = `usage: npm run bench -- [--quick] [--targets ${BENCH_TARGETS.join(',')}] [--out DIR] [--reps N] [--min-ms MS] [--cap-ms MS] [--budget-ms MS] [--no-peer] [--python PATH] [--peer-threads N]`;

export function parseArgs(argv: string[]): Options {
  const o: Options = { quick: false, targets: undefined, out: path.join(ROOT, 'bench', 'results'), reps: 5, minMs: 400, capMs: 6000, budgetMs: 8000, peer: true, python: fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3', peerThreads: undefined };
  let cap: number | undefined, budget: number | undefined, reps: number | undefined, minMs: number | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const val = (): string => { const v = argv[++i]; if (v === undefined) throw new Error(`${a} needs a value\n${USAGE}`); return v; };
    const num = (what: string, v: string): number => { const n = Number(v); if (!Number.isFinite(n) || n <= 0) throw new Error(`${what} must be a positive number, got '${v}'`); return n; };
    if (a === '--quick') o.quick = true;
    else if (a === '--targets') o.targets = val().split(',').map((s) => s.trim()).filter(Boolean);
    else if (a === '--out') o.out = path.resolve(val());
    else if (a === '--reps') reps = Math.round(num('--reps', val()));
    else if (a === '--min-ms') minMs = num('--min-ms', val());
    else if (a === '--cap-ms') cap = num('--cap-ms', val());
    else if (a === '--budget-ms') budget = num('--budget-ms', val());
    else if (a === '--no-peer') o.peer = false;
    else if (a === '--python') o.python = val();
    else if (a === '--peer-threads') o.peerThreads = Math.round(num('--peer-threads', val()));
    else if (a === '--help' || a === '-h') throw new Error(USAGE);
    else throw new Error(`unknown option '${a}'\n${USAGE}`);
  }
  for (const t of o.targets ?? []) if (!BENCH_TARGETS.includes(t)) throw new Error(`unknown target '${t}' (the bench knows ${BENCH_TARGETS.join(', ')})`);
  o.reps = reps ?? (o.quick ? 2 : 5);
  o.minMs = minMs ?? (o.quick ? 0 : 400);
  o.capMs = cap ?? (o.quick ? 3000 : 6000);
  o.budgetMs = budget ?? (o.quick ? 1000 : 8000);
  return o;
}

// ---- the cases ----------------------------------------------------------------------------------

type Dir = 'fwd' | 'fwdbwd';
const FORM_ORDER: Form[] = ['chunkwise', 'recurrent', 'parallel'];
type Shape = { B: number; H: number; T: number; K: number; V: number };

interface Config {
  retention: Shape[];
  /** Extra T (B = 1, first K) for the time-per-token curve, chunkwise and recurrent, forward. */
  curveT: number[];
  dense: { B: number; T: number; I: number; O: number };
  model: { B: number; T: number; forms: Form[] };
  decode: { B: number; contexts: number[] };
  chunk: number;
}

function config(quick: boolean): Config {
  if (quick) {
    const retention: Shape[] = [];
    for (const T of [64, 128]) for (const B of [1, 2]) retention.push({ B, H: 2, T, K: 16, V: 16 });
    return { retention, curveT: [32], dense: { B: 1, T: 128, I: 64, O: 64 }, model: { B: 2, T: 32, forms: ['chunkwise'] }, decode: { B: 1, contexts: [16, 64] }, chunk: 16 };
  }
  const retention: Shape[] = [];
  for (const T of [1024, 4096, 16384]) for (const B of [1, 4]) for (const K of [64, 128]) retention.push({ B, H: 8, T, K, V: K });
  return { retention, curveT: [256, 2048, 8192], dense: { B: 1, T: 4096, I: 512, O: 512 }, model: { B: 8, T: 256, forms: ['chunkwise', 'parallel', 'recurrent'] }, decode: { B: 1, contexts: [256, 1024, 4096, 16384] }, chunk: 64 };
}

const shapeKey = (s: Shape): string => `B${s.B}.H${s.H}.T${s.T}.K${s.K}.V${s.V}`;
const numel = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);

// ---- data -----------------------------------------------------------------------------------------

/** mulberry32: the same numbers in every run. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const hash = (s: string): number => { let h = 2166136261; for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619); return h >>> 0; };
function uniform(shape: number[], scale: number, seed: string): HostValue {
  const r = prng(hash(seed));
  const data = new Float32Array(numel(shape));
  for (let i = 0; i < data.length; i++) data[i] = (r() * 2 - 1) * scale;
  return { shape, data };
}

/** gamma_h = 1 - 2^(-5-h), RetNet's decays. */
const gammas = (H: number): HostValue => ({ shape: [H], data: Float32Array.from({ length: H }, (_, h) => 1 - 2 ** (-5 - h)) });

function retentionInputs(s: Shape, withGrad: boolean): Map<string, HostValue> {
  const k = shapeKey(s);
  const m = new Map<string, HostValue>([
    ['q', uniform([s.B, s.H, s.T, s.K], 1, `${k}.q`)],
    ['k', uniform([s.B, s.H, s.T, s.K], 1 / Math.sqrt(s.K), `${k}.k`)],
    ['v', uniform([s.B, s.H, s.T, s.V], 1, `${k}.v`)],
    ['gamma', gammas(s.H)],
  ]);
  if (withGrad) m.set('grad.o', uniform([s.B, s.H, s.T, s.V], 1, `${k}.do`));
  return m;
}

// ---- safetensors (F32 / I32), the exchange with the peer ----------------------------------------

function writeTensors(file: string, tensors: Record<string, HostValue>): void {
  const header: Record<string, unknown> = {};
  let off = 0;
  const parts: Buffer[] = [];
  for (const [name, t] of Object.entries(tensors)) {
    const arr = t.data instanceof Int32Array ? t.data : t.data instanceof Float32Array ? t.data : Float32Array.from(t.data);
    const b = Buffer.from(arr.buffer, arr.byteOffset, arr.byteLength);
    header[name] = { dtype: arr instanceof Int32Array ? 'I32' : 'F32', shape: t.shape, data_offsets: [off, off + b.length] };
    parts.push(b);
    off += b.length;
  }
  let h = JSON.stringify(header);
  h += ' '.repeat((8 - (h.length % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(h)));
  const fd = fs.openSync(file, 'w');
  try {
    fs.writeSync(fd, len);
    fs.writeSync(fd, Buffer.from(h));
    for (const p of parts) fs.writeSync(fd, p);
  } finally { fs.closeSync(fd); }
}

function readTensors(file: string): Map<string, HostValue> {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const base = 8 + n;
  const out = new Map<string, HostValue>();
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const [a, b] = t.data_offsets;
    const bytes = buf.subarray(base + a, base + b);
    const copy = new ArrayBuffer(bytes.length);
    new Uint8Array(copy).set(bytes);
    out.set(name, { shape: t.shape, data: t.dtype === 'I32' ? new Int32Array(copy) : new Float32Array(copy) });
  }
  return out;
}

// ---- measuring ----------------------------------------------------------------------------------------

export interface Timing { status: 'ok'; compileMs?: number; firstMs: number; medianMs: number; minMs: number; maxMs: number; n: number; relRmse?: number; checkedAgainst?: string }
export interface Skip { status: 'skipped' | 'wrong' | 'error'; reason: string; relRmse?: number; estMs?: number }
export type Result = Timing | Skip;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/** Runs after the first: `reps`, more for short cases (minMs of them, at most MAX_SHORT_REPS), fewer to stay in the budget; at least 1. */
export const MAX_SHORT_REPS = 50;
export function runCount(firstMs: number, reps: number, minMs: number, budgetMs: number): number {
  const per = Math.max(firstMs, 1e-3);
  return Math.max(1, Math.min(Math.max(reps, Math.min(MAX_SHORT_REPS, Math.floor(minMs / per))), Math.floor(budgetMs / per)));
}

/** The first run (returned, for the check), then the median of `runCount` runs. */
async function measure<T>(once: () => Promise<T>, o: Options): Promise<{ first: T; firstMs: number; medianMs: number; minMs: number; maxMs: number; n: number }> {
  const t0 = performance.now();
  const first = await once();
  const firstMs = performance.now() - t0;
  const n = runCount(firstMs, o.reps, o.minMs, o.budgetMs);
  const ms: number[] = [];
  for (let i = 0; i < n; i++) { const t = performance.now(); await once(); ms.push(performance.now() - t); }
  return { first, firstMs, medianMs: median(ms), minMs: Math.min(...ms), maxMs: Math.max(...ms), n };
}

/** RMS(a - b) / RMS(b), over all given pairs of tensors together. */
function relRmse(pairs: [ArrayLike<number>, ArrayLike<number>][]): number {
  let d = 0, r = 0;
  for (const [a, b] of pairs) {
    if (a.length !== b.length) return Infinity;
    for (let i = 0; i < b.length; i++) { const e = a[i]! - b[i]!; d += e * e; r += b[i]! * b[i]!; }
  }
  if (!Number.isFinite(d)) return Infinity;
  return r === 0 ? Math.sqrt(d) : Math.sqrt(d / r);
}
/** Per-tensor relative RMSE, the worst of them (a small gradient is not drowned by a large one). */
function worstRmse(a: ReadonlyMap<string, HostValue>, b: ReadonlyMap<string, HostValue>, names: string[]): number {
  let w = 0;
  for (const n of names) {
    const x = a.get(n), y = b.get(n);
    if (!x || !y) return Infinity;
    w = Math.max(w, relRmse([[x.data, y.data]]));
  }
  return w;
}

/** Bars: float32 plans against float32 PyTorch; far above what a right kernel shows (~1e-6). */
const BAR = 1e-3;

/** Estimated cost: work units per case, scaled from the largest measured case of the same key. */
class CostModel {
  private seen = new Map<string, { units: number; ms: number }>();
  estimate(key: string, units: number): number | undefined {
    const s = this.seen.get(key);
    return s ? (s.ms * units) / s.units : undefined;
  }
  record(key: string, units: number, ms: number): void {
    const s = this.seen.get(key);
    if (!s || units >= s.units) this.seen.set(key, { units, ms });
  }
}

const retentionUnits = (form: Form, s: Shape): number => (form === 'parallel' ? s.B * s.H * s.T * (s.T + 64) * (s.K + s.V) / 2 : s.B * s.H * s.T * s.K * s.V);

// ---- the bench ----------------------------------------------------------------------------------------

interface CaseRecord {
  id: string;
  group: 'retention' | 'dense' | 'model' | 'decode';
  label: string;
  form: string;
  dir: Dir | 'step';
  shape: Record<string, number>;
  results: Record<string, Result>;
  peer?: Result | undefined;
  ratios: Record<string, number>;
}

interface PeerOut { available: boolean; reason?: string; torch?: string; threads?: number; blas?: string; python?: string; cases: Record<string, Record<string, unknown>> }

function log(s: string): void { process.stdout.write(`${s}\n`); }
const ms = (x: number): string => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x >= 1 ? x.toFixed(2) : x.toFixed(3));
const ratio = (x: number): string => (x >= 10 ? `${x.toFixed(0)}x` : `${x.toFixed(2)}x`);

async function withTimeout<T>(p: Promise<T>, msLimit: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t = new Promise<never>((_, rej) => { timer = setTimeout(() => rej(new Error(`${what} timed out after ${msLimit} ms`)), msLimit); });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/** Each target with its executor, or the reason it is not timed (one tiny plan must run). */
async function openTargets(names: readonly string[], probe: Plan, probeInputs: Map<string, HostValue>): Promise<Target[]> {
  const out: Target[] = [];
  for (const name of names) {
    const te = targetExec(name);
    if (typeof te === 'string') { out.push({ name, reason: te }); continue; }
    try {
      await withTimeout(te.exec(probe, probeInputs), 60_000, `${name}: a tiny plan`);
      out.push({ name, exec: te.exec, release: te.release });
    } catch (e) {
      await te.release().catch(() => undefined);
      out.push({ name, reason: deviceError(e) ?? (e instanceof Error ? e.message.split('\n')[0]! : String(e)) });
    }
  }
  return out;
}

export async function main(argv: string[]): Promise<number> {
  let o: Options;
  try { o = parseArgs(argv); } catch (e) { process.stderr.write(`bench: ${(e as Error).message}\n`); return 2; }
  const cfg = config(o.quick);
  const started = new Date();
  const t00 = performance.now();
  fs.mkdirSync(o.out, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'retnetc-bench-'));
  try {
    return await bench(o, cfg, started, t00, tmp);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

async function bench(o: Options, cfg: Config, started: Date, t00: number, tmp: string): Promise<number> {
  const retProg = loadProgram(path.join(ROOT, 'models', 'retention.ret'));
  const netProg = loadProgram(path.join(ROOT, 'models', 'retnet.ret'));
  for (const p of [retProg, netProg]) if (p.diagnostics.length) throw new Error(`${p.entry}: ${p.diagnostics[0]!.message}`);
  const retention = retProg.checked!.fns.get('retention')!;
  const linear = netProg.checked!.fns.get('linear')!;
  const model = instantiateModel(netProg, 'retnet', 'tiny');

  const compileTimes = new Map<Plan, number>();
  // The default chunk stays a default, so each target runs its own (runtime/targets.ts: webgpu 16),
  // as a user's `retnetc run` without --chunk does; the peer runs cfg.chunk.
  const ourSchedule = (form: Form) => makeSchedule(form, cfg.chunk === DEFAULT_CHUNK ? undefined : cfg.chunk);
  // `target`: the schedule takes that target's defaults (runtime/targets.ts: native tiles dense sums).
  const planFor = (fn: CheckedFn, form: Form, backward: boolean, sizes: Record<string, number>, target?: string): Plan => {
    const constants = new Map(sizesToSpecialise(fn, backward).map((s) => [s, sizes[s]!] as const));
    const t0 = performance.now();
    const base = ourSchedule(form);
    const p = compileFunction(fn, target ? withTargetDefaults(base, target) : base, { backward, constants });
    if (!compileTimes.has(p)) compileTimes.set(p, performance.now() - t0);
    return p;
  };

  // Targets.
  const probeShape: Shape = { B: 1, H: 1, T: 4, K: 2, V: 2 };
  const names = o.targets ?? [...BENCH_TARGETS];
  const targets = await openTargets(names, planFor(retention, 'recurrent', false, { K: 2, V: 2 }), retentionInputs(probeShape, false));
  for (const t of targets) log(t.exec ? `target ${t.name}: available` : `target ${t.name}: skipped: ${t.reason}`);
  const live = targets.filter((t) => t.exec);

  // Inputs for the peer, and what it should do.
  const peerCases: Record<string, unknown>[] = [];
  const cases: CaseRecord[] = [];
  const retShapes = [...cfg.retention];
  const curveShapes = cfg.curveT.map((T) => ({ ...cfg.retention[0]!, B: 1, T }));
  const allShapes = [...curveShapes, ...retShapes].sort((a, b) => a.B * a.T * a.K * a.V - b.B * b.T * b.K * b.V);
  const isCurveOnly = (s: Shape) => curveShapes.some((c) => shapeKey(c) === shapeKey(s));
  const formsOf = (s: Shape): { form: Form; dir: Dir }[] => isCurveOnly(s)
    ? [{ form: 'chunkwise', dir: 'fwd' }, { form: 'recurrent', dir: 'fwd' }]
    : (['fwd', 'fwdbwd'] as Dir[]).flatMap((dir) => FORM_ORDER.map((form) => ({ form, dir })));
  if (o.peer) {
    for (const s of allShapes) {
      const file = path.join(tmp, `ret.${shapeKey(s)}.safetensors`);
      const inp = retentionInputs(s, !isCurveOnly(s));
      writeTensors(file, { q: inp.get('q')!, k: inp.get('k')!, v: inp.get('v')!, gamma: inp.get('gamma')!, ...(inp.has('grad.o') ? { do: inp.get('grad.o')! } : {}) });
      for (const { form, dir } of formsOf(s)) {
        const id = `retention.${dir}.${form}.${shapeKey(s)}`;
        peerCases.push({ id, kind: 'retention', form, dir, ...s, input: file, ...(form === 'chunkwise' && live.length ? { ref_out: path.join(tmp, `ref.${dir}.${shapeKey(s)}.safetensors`) } : {}) });
      }
    }
  }
  const d = cfg.dense;
  const denseIn = new Map<string, HostValue>([['x', uniform([d.B, d.T, d.I], 1, 'dense.x')], ['w', uniform([d.O, d.I], 1 / Math.sqrt(d.I), 'dense.w')]]);
  const weights = modelWeights(model);
  const hypers = Object.fromEntries(['embed_dim', 'value_dim', 'heads', 'ffn_dim', 'n_layers', 'vocab', 'act', 'eps', 'scale_embedding', 'layernorm_embedding'].map((h) => [h, model.hypers.get(h)]));
  const vocab = Number(model.hypers.get('vocab'));
  const mc = cfg.model;
  const tokens: HostValue = { shape: [mc.B, mc.T], data: Int32Array.from(uniform([mc.B * mc.T], 1, 'tokens').data, (x) => Math.floor(((x + 1) / 2) * vocab) % vocab) };
  const dlogits = uniform([mc.B, mc.T, vocab], 1e-2, 'dlogits');
  const maxCtx = Math.max(...cfg.decode.contexts);
  const prompt: HostValue = { shape: [cfg.decode.B, maxCtx], data: Int32Array.from(uniform([cfg.decode.B * maxCtx], 1, 'prompt').data, (x) => Math.floor(((x + 1) / 2) * vocab) % vocab) };
  const step: HostValue = { shape: [cfg.decode.B, 1], data: Int32Array.from({ length: cfg.decode.B }, (_, b) => (7 * b + 3) % vocab) };
  if (o.peer) {
    const df = path.join(tmp, 'dense.safetensors');
    writeTensors(df, { x: denseIn.get('x')!, w: denseIn.get('w')! });
    peerCases.push({ id: 'dense', kind: 'matmul', input: df, ref_out: path.join(tmp, 'ref.dense.safetensors') });
    const wf = path.join(tmp, 'weights.safetensors');
    writeTensors(wf, Object.fromEntries(weights));
    const mf = path.join(tmp, 'model-in.safetensors');
    writeTensors(mf, { tokens, dlogits, prompt, step });
    for (const dir of ['fwd', 'fwdbwd'] as Dir[]) for (const form of mc.forms) peerCases.push({ id: `model.${dir}.${form}`, kind: 'retnet', dir, form, hypers, weights: wf, input: mf, ref_out: path.join(tmp, `ref.model.${dir}.${form}.safetensors`) });
    peerCases.push({ id: 'decode', kind: 'decode', hypers, weights: wf, input: mf, contexts: cfg.decode.contexts, ref_out: path.join(tmp, 'ref.decode.safetensors') });
  }

  // The peer first (one process), so that its outputs are there to check against.
  let peer: PeerOut = { available: false, reason: 'not run (--no-peer)', cases: {} };
  if (o.peer) {
    const spec = path.join(tmp, 'peer-spec.json');
    const outFile = path.join(tmp, 'peer-out.json');
    fs.writeFileSync(spec, JSON.stringify({ chunk: cfg.chunk, cap_ms: o.capMs, ...(o.peerThreads ? { threads: o.peerThreads } : {}), reps: o.reps, min_ms: o.minMs, max_short_reps: MAX_SHORT_REPS, reps_decode: o.quick ? 3 : 20, budget_ms: o.budgetMs, cases: peerCases }));
    const env = { ...process.env };
    delete env['OPENBLAS_CORETYPE'];
    delete env['OPENBLAS_L2_SIZE'];
    // Where OpenBLAS does not know this CPU it falls back to SSE3 kernels (bench/peer-blas.ts).
    const fix = peerCoreType(o.python, env);
    if (fix) env['OPENBLAS_CORETYPE'] = fix.core;
    log(`peer: ${o.python} bench/peer_torch.py (${peerCases.length} cases; ${fix ? `OPENBLAS_CORETYPE=${fix.core}: OpenBLAS detected ${fix.detected} (its fallback) on a CPU with the vector units for ${fix.core}` : 'OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset'})`);
    const t0 = performance.now();
    // Its progress lines go to the terminal as they come (the quick run keeps them for an error).
    const r = spawnSync(o.python, [path.join(ROOT, 'bench', 'peer_torch.py'), spec, outFile], { env, stdio: ['ignore', 'inherit', o.quick ? 'pipe' : 'inherit'], encoding: 'utf8', maxBuffer: 64 << 20 });
    const stderr = r.stderr ?? '';
    if (fs.existsSync(outFile)) {
      peer = JSON.parse(fs.readFileSync(outFile, 'utf8')) as PeerOut;
      if (fix && peer.available) peer.blas = `${peer.blas}, OPENBLAS_CORETYPE=${fix.core} (OpenBLAS detected ${fix.detected})`;
    } else peer = { available: false, reason: r.error ? `cannot run ${o.python}: ${r.error.message}` : `the peer exited ${r.status} without results: ${stderr.trim().split('\n').pop() ?? ''}`, cases: {} };
    log(peer.available ? `peer: PyTorch ${peer.torch}, ${peer.threads} thread(s), ${peer.blas}; ${((performance.now() - t0) / 1000).toFixed(1)} s` : `peer: skipped: ${peer.reason}`);
  }
  const peerResult = (id: string): Result | undefined => {
    const c = peer.cases[id];
    if (!c) return peer.available ? { status: 'skipped', reason: 'not run by the peer' } : undefined;
    if (c['status'] === 'ok') return { status: 'ok', firstMs: c['first_ms'] as number, medianMs: c['median_ms'] as number, minMs: c['min_ms'] as number, maxMs: c['max_ms'] as number, n: c['n'] as number };
    return { status: c['status'] === 'error' ? 'error' : 'skipped', reason: String(c['reason']) };
  };
  const peerRef = (id: string): Map<string, HostValue> | undefined => {
    const f = peer.cases[id]?.['ref_out'];
    return typeof f === 'string' && fs.existsSync(f) ? readTensors(f) : undefined;
  };

  /** latest.json and latest.md after every case (a run stopped early keeps what it measured); the plots at the end. */
  function writeOutputs(final: boolean): string[] {
    const meta = {
      started: started.toISOString(),
      seconds: Math.round((performance.now() - t00) / 1000),
      complete: final,
      quick: o.quick,
      node: process.version,
      cpus: `${os.cpus().length} x ${os.cpus()[0]?.model ?? 'unknown'}`,
      // The vector width native's micro tiles take on this machine (Schedule.lanes).
      nativeLanes: hostLanes(),
      load: os.loadavg().map((x) => Number(x.toFixed(1))),
      options: { reps: o.reps, minMs: o.minMs, capMs: o.capMs, budgetMs: o.budgetMs, chunk: cfg.chunk, bar: BAR },
      targets: targets.map((t) => ({ name: t.name, available: !!t.exec, ...(t.reason ? { reason: t.reason } : {}) })),
      peer: peer.available ? { name: 'PyTorch eager', torch: peer.torch, threads: peer.threads, blas: peer.blas, python: peer.python } : { name: 'PyTorch eager', skipped: peer.reason },
      timing: 'compile once; first run (WebGPU: builds pipelines); then the median of N runs (N = reps, up to 50 for short cases so that they run for min_ms, at most budget / first run, at least 1), uploads and read-backs included. Peer: one warm-up, then the median of N. Ratios: retnetc median / PyTorch median (above 1: retnetc is slower).',
    };
    const names = live.map((t) => t.name);
    const curves = curveData(cases, names, cfg);
    const json = { meta, cases, curves };
    fs.writeFileSync(path.join(o.out, 'latest.json'), `${JSON.stringify(json, null, 1)}\n`);
    fs.writeFileSync(path.join(o.out, 'latest.md'), markdown(json, names));
    return final ? writePlots(o.out, cases, curves, names) : [];
  }

  const cost = new CostModel();
  const finish = (rec: CaseRecord): void => {
    const p = rec.peer;
    for (const [t, r] of Object.entries(rec.results)) if (r.status === 'ok' && p?.status === 'ok') rec.ratios[t] = r.medianMs / p.medianMs;
    cases.push(rec);
    writeOutputs(false);
    const parts = live.map((t) => { const r = rec.results[t.name]; return r ? `${t.name} ${r.status === 'ok' ? `${ms(r.medianMs)} ms` : r.status}` : `${t.name} -`; });
    const pp = p ? (p.status === 'ok' ? `torch ${ms(p.medianMs)} ms` : `torch ${p.status}`) : 'torch -';
    const rs = Object.entries(rec.ratios).map(([t, x]) => `${t}/torch ${ratio(x)}`).join(', ');
    const chk = Object.entries(rec.results).filter(([, r]) => r.relRmse !== undefined).map(([t, r]) => `${t} ${r.relRmse!.toExponential(1)}`).join(', ');
    log(`${rec.label} ${rec.form}: ${parts.join(', ')} | ${pp}${rs ? ` | ${rs}` : ''}${chk ? ` | rel RMSE ${chk}${(Object.values(rec.results).find((r) => r.status === 'ok') as Timing | undefined)?.checkedAgainst ? ` vs ${(Object.values(rec.results).find((r) => r.status === 'ok') as Timing).checkedAgainst}` : ''}` : ''}`);
    for (const [t, r] of Object.entries(rec.results)) if (r.status !== 'ok') log(`  ${t}: ${r.status}: ${r.reason}`);
    if (p && p.status !== 'ok') log(`  torch: ${p.status}: ${p.reason}`);
  };

  /**
   * Runs one case on one target: estimate, skip over the cap, first run, check, time.
   * `check` returns [rel RMSE, what it was checked against] or a reason it could not be.
   */
  const runCase = async <T>(key: string, units: number, once: () => Promise<T>, check: (first: T) => Promise<[number, string] | string>, compileMs?: number): Promise<Result> => {
    const est = cost.estimate(key, units);
    if (est !== undefined && est > o.capMs) return { status: 'skipped', reason: `estimated ${(est / 1000).toFixed(1)} s per run > cap ${(o.capMs / 1000).toFixed(1)} s (--cap-ms)`, estMs: est };
    try {
      const t0 = performance.now();
      const first = await once();
      const firstMs = performance.now() - t0;
      cost.record(key, units, firstMs);
      const c = await check(first);
      let rel: number | undefined, against: string | undefined;
      if (typeof c === 'string') against = `unchecked: ${c}`;
      else [rel, against] = c;
      if (rel !== undefined && !(rel <= BAR)) return { status: 'wrong', reason: `relative RMSE ${rel.toExponential(2)} vs ${against} > ${BAR}: not timed`, relRmse: rel };
      // A full collection first (npm run bench runs node --expose-gc): each case is timed on its
      // own, not paying for the garbage of the cases before it (the 1 GiB retention inputs left
      // the dense case's median at 44 ms against a minimum of 6.4 ms and 8.7 ms in a fresh process).
      (globalThis as { gc?: () => void }).gc?.();
      const m = await measure(once, o);
      cost.record(key, units, m.medianMs);
      return { status: 'ok', ...(compileMs !== undefined ? { compileMs } : {}), firstMs, medianMs: m.medianMs, minMs: m.minMs, maxMs: m.maxMs, n: m.n, ...(rel !== undefined ? { relRmse: rel } : {}), ...(against ? { checkedAgainst: against } : {}) };
    } catch (e) {
      const why = deviceError(e) ?? (e instanceof Error ? e.message.split('\n')[0]! : String(e));
      return { status: 'error', reason: why };
    }
  };

  // ---- retention ----
  for (const s of allShapes) {
    // Inputs and the peer's outputs are made or read when a case first runs (a shape that every
    // target skips costs nothing; the largest holds 1 GiB of inputs).
    let fwdIn: Map<string, HostValue> | undefined, bwdIn: Map<string, HostValue> | undefined;
    const inputsOf = (dir: Dir): Map<string, HostValue> => {
      if (dir === 'fwd') return (fwdIn ??= retentionInputs(s, false));
      return (bwdIn ??= new Map([...inputsOf('fwd'), ['grad.o', uniform([s.B, s.H, s.T, s.V], 1, `${shapeKey(s)}.do`)] as const]));
    };
    // The reference of a (shape, direction): the peer's chunkwise output, else the output of a
    // schedule other than the case's own (a (target, form) is never checked against itself).
    interface Ref { from: string; target: string; form: string; out: Map<string, HostValue> }
    const refs = new Map<Dir, Ref[]>();
    const refFor = (dir: Dir, target: string, form: string): Ref | undefined => {
      if (!refs.has(dir)) {
        const ref = peerRef(`retention.${dir}.chunkwise.${shapeKey(s)}`);
        refs.set(dir, ref ? [{ from: 'torch chunkwise', target: 'torch', form: 'chunkwise', out: ref }] : []);
      }
      return refs.get(dir)!.find((r) => !(r.target === target && r.form === form));
    };
    for (const { form, dir } of formsOf(s)) {
      const id = `retention.${dir}.${form}.${shapeKey(s)}`;
      const rec: CaseRecord = { id, group: 'retention', label: `retention ${dir === 'fwd' ? 'forward' : 'fwd+bwd'} ${shapeKey(s)}`, form, dir, shape: { ...s }, results: {}, peer: peerResult(id), ratios: {} };
      const names = dir === 'fwd' ? ['o'] : ['grad.q', 'grad.k', 'grad.v'];
      for (const t of live) {
        // Each target's schedule defaults (runtime/targets.ts: native runs chunkwise parallel over chunks).
        const fplan = planFor(retention, form, false, s, t.name);
        const bplan = dir === 'fwdbwd' ? planFor(retention, form, true, s, t.name) : undefined;
        const exec = t.exec!;
        const once = async (): Promise<Map<string, HostValue>> => {
          const out = new Map(await exec(fplan, inputsOf('fwd')));
          if (bplan) for (const [n, v] of await exec(bplan, inputsOf('fwdbwd'))) out.set(n, v);
          return out;
        };
        rec.results[t.name] = await runCase(`${t.name}.retention.${form}.${dir}`, retentionUnits(form, s), once, async (first) => {
          const mine: Ref = { from: `${t.name} ${form}`, target: t.name, form, out: first };
          let ref = refFor(dir, t.name, form);
          if (!ref) {
            // Another schedule on the same target, run once: recurrent, or chunkwise for recurrent.
            const alt: Form = form === 'recurrent' ? 'chunkwise' : 'recurrent';
            const est = cost.estimate(`${t.name}.retention.${alt}.${dir}`, retentionUnits(alt, s));
            if (est !== undefined && est > o.capMs) { refs.get(dir)!.push(mine); return `no peer; ${alt} would take ~${(est / 1000).toFixed(1)} s; the reference of later cases`; }
            const ap = planFor(retention, alt, false, s, t.name);
            const out = new Map(await exec(ap, inputsOf('fwd')));
            if (dir === 'fwdbwd') for (const [n, v] of await exec(planFor(retention, alt, true, s, t.name), inputsOf('fwdbwd'))) out.set(n, v);
            ref = { from: `${t.name} ${alt}`, target: t.name, form: alt, out };
            refs.get(dir)!.push(ref);
          }
          return [worstRmse(first, ref.out, names), ref.from];
        }, (compileTimes.get(fplan) ?? 0) + (bplan ? compileTimes.get(bplan) ?? 0 : 0));
      }
      finish(rec);
    }
  }

  // ---- dense contraction: linear, y = x W^T ----
  {
    const rec: CaseRecord = { id: 'dense', group: 'dense', label: `dense [${d.B * d.T}, ${d.I}] x [${d.I}, ${d.O}]`, form: 'linear', dir: 'fwd', shape: { ...d }, results: {}, peer: peerResult('dense'), ratios: {} };
    const ref = peerRef('dense');
    for (const t of live) {
      const plan = planFor(linear, 'parallel', false, {}, t.name);
      rec.results[t.name] = await runCase(`${t.name}.dense`, d.B * d.T * d.I * d.O, () => t.exec!(plan, denseIn), async (first) => {
        const y = first.get('y')!.data;
        if (ref) return [relRmse([[y, ref.get('y')!.data]]), 'torch.matmul'];
        // float64 rows sampled from the whole product
        const x = denseIn.get('x')!.data, w = denseIn.get('w')!.data;
        const a: number[] = [], b: number[] = [];
        for (let r = 0; r < d.B * d.T; r += Math.max(1, Math.floor((d.B * d.T) / 64))) for (let c = 0; c < d.O; c++) {
          let acc = 0;
          for (let i = 0; i < d.I; i++) acc += x[r * d.I + i]! * w[c * d.I + i]!;
          a.push(y[r * d.O + c]!); b.push(acc);
        }
        return [relRmse([[a, b]]), 'float64 rows'];
      }, compileTimes.get(plan));
    }
    const pc = peer.cases['dense'];
    finish(rec);
    if (pc && typeof pc['gflops'] === 'number') log(`  torch.matmul: ${(pc['gflops'] as number).toFixed(0)} GFLOP/s; retnetc ${live.map((t) => { const r = rec.results[t.name]; return r?.status === 'ok' ? `${t.name} ${((2 * d.B * d.T * d.I * d.O) / (r.medianMs * 1e6)).toFixed(2)} GFLOP/s` : ''; }).filter(Boolean).join(', ')}`);
  }

  // ---- the tiny RetNet: forward, forward + backward ----
  const wNames = [...weights.keys()];
  for (const dir of ['fwd', 'fwdbwd'] as Dir[]) {
    const fallbackRef: { from: string; out: Map<string, HostValue> }[] = [];
    for (const form of mc.forms) {
      const id = `model.${dir}.${form}`;
      const rec: CaseRecord = { id, group: 'model', label: `tiny RetNet ${dir === 'fwd' ? 'forward' : 'fwd+bwd'} B${mc.B} T${mc.T}`, form, dir, shape: { B: mc.B, T: mc.T }, results: {}, peer: peerResult(id), ratios: {} };
      const ref = peerRef(id);
      for (const t of live) {
        const c0 = performance.now();
        const sched = withTargetDefaults(ourSchedule(form), t.name);
        const mg = dir === 'fwdbwd' ? compileModelGrad(model, sched) : undefined;
        const mp = mg ? mg.forward : compileModel(model, sched);
        const compileMs = performance.now() - c0;
        const exec = t.exec!;
        const once = async (): Promise<Map<string, HostValue>> => {
          if (!mg) return (await runModelPlan(mp, weights, new Map([['tokens', tokens]]), exec)).outputs;
          const r = await runModelBackward(mg, weights, new Map([['tokens', tokens]]), new Map([['logits', dlogits]]), exec);
          const out = new Map(r.outputs);
          for (const [n, g] of r.grads) out.set(`grad.${n}`, g);
          return out;
        };
        const names = dir === 'fwd' ? ['logits'] : ['logits', ...wNames.map((n) => `grad.${n}`)];
        rec.results[t.name] = await runCase(`${t.name}.model.${dir}`, 1, once, async (first) => {
          if (ref) return [worstRmse(first, ref, names), `torch module ${form}`];
          let other = fallbackRef.find((r) => r.from !== `${t.name} ${form}`);
          if (!other) {
            // No peer: another form on the same target, run once (parallel, or chunkwise for parallel).
            const alt: Form = form === 'parallel' ? 'chunkwise' : 'parallel';
            const s2 = makeSchedule(alt, cfg.chunk);
            const out = new Map<string, HostValue>();
            if (dir === 'fwd') for (const [n, v] of (await runModelPlan(compileModel(model, s2), weights, new Map([['tokens', tokens]]), exec)).outputs) out.set(n, v);
            else {
              const r = await runModelBackward(compileModelGrad(model, s2), weights, new Map([['tokens', tokens]]), new Map([['logits', dlogits]]), exec);
              for (const [n, v] of r.outputs) out.set(n, v);
              for (const [n, g] of r.grads) out.set(`grad.${n}`, g);
            }
            other = { from: `${t.name} ${alt}`, out };
            fallbackRef.push(other);
          }
          return [worstRmse(first, other.out, names), other.from];
        }, compileMs);
      }
      finish(rec);
    }
  }

  // ---- decoding: one step of the stateful recurrent form at each context length ----
  const decodePoints: Record<string, { context: number; result: Result }[]> = {};
  {
    const dc = cfg.decode;
    // Each target's plans with its defaults (what `retnetc generate` runs there: native's blocked
    // dense sums), as the model cases have them.
    type ModelPlans = { step: ReturnType<typeof compileModel>; prefill: ReturnType<typeof compileModel> };
    const plansOf = new Map<string, ModelPlans>();
    const plansFor = (target: string): ModelPlans => {
      let p = plansOf.get(target);
      if (!p) plansOf.set(target, p = { step: compileModel(model, withTargetDefaults(ourSchedule('recurrent'), target), { stateful: true }), prefill: compileModel(model, withTargetDefaults(ourSchedule('chunkwise'), target), { stateful: true }) });
      return p;
    };
    const ref = peerRef('decode');
    const pd = peer.cases['decode'];
    const peerPoints = (pd?.['points'] as Record<string, unknown>[] | undefined) ?? [];
    // Prefill once, on the first target, carrying the state from context to context.
    const states = new Map<number, ModelState>();
    const pre = live[0];
    let state: ModelState | undefined;
    let t0 = 0;
    let prefillRate: number | undefined;
    let prefillStop = '';
    for (const L of dc.contexts) {
      if (!pre) break;
      const n = L - t0;
      const est = prefillRate !== undefined ? prefillRate * n : undefined;
      if (est !== undefined && est > 4 * o.capMs) { prefillStop = `prefill of ${n} more tokens on ${pre.name} estimated ${(est / 1000).toFixed(1)} s > 4 x cap`; break; }
      const slice: HostValue = { shape: [dc.B, n], data: new Int32Array(dc.B * n) };
      for (let b = 0; b < dc.B; b++) (slice.data as Int32Array).set((prompt.data as Int32Array).subarray(b * maxCtx + t0, b * maxCtx + L), b * n);
      const p0 = performance.now();
      try {
        state = (await runModelPlan(plansFor(pre.name).prefill, weights, new Map([['tokens', slice]]), pre.exec!, state)).state!;
        prefillRate = (performance.now() - p0) / n;
        // The first prefill compiles the kernels (seconds of C compiles on native with a cold
        // cache): its rate would stop the longer contexts, so the estimate takes a second run.
        if (t0 === 0) {
          const p1 = performance.now();
          await runModelPlan(plansFor(pre.name).prefill, weights, new Map([['tokens', slice]]), pre.exec!);
          prefillRate = (performance.now() - p1) / n;
        }
      } catch (e) { prefillStop = `prefill failed on ${pre.name}: ${deviceError(e) ?? (e as Error).message.split('\n')[0]}`; break; }
      t0 = L;
      states.set(L, state);
    }
    if (pre) log(`decode: prefilled ${t0} tokens (chunkwise, stateful) on ${pre.name}${prefillStop ? `; stopped: ${prefillStop}` : ''}`);
    for (const L of dc.contexts) {
      const id = `decode.${L}`;
      const pp = peerPoints.find((p) => p['context'] === L);
      const peerR: Result | undefined = pp ? (pp['status'] === 'ok' ? { status: 'ok', firstMs: pp['first_ms'] as number, medianMs: pp['median_ms'] as number, minMs: pp['min_ms'] as number, maxMs: pp['max_ms'] as number, n: pp['n'] as number } : { status: 'skipped', reason: String(pp['reason']) }) : peerResult('decode');
      const rec: CaseRecord = { id, group: 'decode', label: `tiny RetNet decode step B${dc.B} context ${L}`, form: 'recurrent', dir: 'step', shape: { B: dc.B, context: L }, results: {}, peer: peerR, ratios: {} };
      const st = states.get(L);
      let fallback: { from: string; out: Map<string, HostValue> } | undefined;
      for (const t of live) {
        if (!st) { rec.results[t.name] = { status: 'skipped', reason: prefillStop || 'no prefill' }; continue; }
        const once = async () => (await runModelPlan(plansFor(t.name).step, weights, new Map([['tokens', step]]), t.exec!, st)).outputs;
        const saved = o.reps;
        o.reps = o.quick ? 3 : 20;
        rec.results[t.name] = await runCase(`${t.name}.decode`, 1, once, async (first) => {
          const lg = ref?.get(`logits.${L}`);
          if (lg) return [relRmse([[first.get('logits')!.data, lg.data]]), 'torch module recurrent'];
          // No peer: the same step by the stateful chunkwise form (another schedule), once.
          fallback ??= { from: `${t.name} chunkwise step`, out: (await runModelPlan(plansFor(t.name).prefill, weights, new Map([['tokens', step]]), t.exec!, st)).outputs };
          return [relRmse([[first.get('logits')!.data, fallback.out.get('logits')!.data]]), fallback.from];
        });
        o.reps = saved;
      }
      finish(rec);
      decodePoints[L] = live.map((t) => ({ context: L, result: rec.results[t.name]! }));
    }
  }

  for (const t of live) await t.release?.();
  log(`bench: ${cases.length} cases in ${((performance.now() - t00) / 1000).toFixed(0)} s`);
  const plots = writeOutputs(true);
  log(`wrote ${path.join(o.out, 'latest.json')}, ${path.join(o.out, 'latest.md')}, ${plots.map((p) => path.join(o.out, p)).join(', ')}`);
  const wrong = cases.filter((c) => Object.values(c.results).some((r) => r.status === 'wrong'));
  if (wrong.length) { log(`bench: ${wrong.length} case(s) computed a wrong result: ${wrong.map((c) => c.id).join(', ')}`); return 1; }
  return linearInT(curveData(cases, live.map((t) => t.name), cfg), log);
}

/**
 * The bound the README states: chunkwise retention is linear in T, so T = 8192 costs at most 6x
 * T = 2048 (quadratic would be 16x), on every target that measured both. Exit 1 when it fails.
 */
export function linearInT(curves: Curves, log: (s: string) => void, lo = 2048, hi = 8192, bound = 6): number {
  let bad = 0;
  for (const c of curves.perToken) {
    if (!c.name.endsWith(' chunkwise') || c.name.startsWith('torch ')) continue;
    const a = c.points.find(([T]) => T === lo), b = c.points.find(([T]) => T === hi);
    if (!a || !b) continue;
    const ratio = (b[1] * hi) / (a[1] * lo);
    const ok = ratio <= bound;
    if (!ok) bad++;
    log(`bench: ${c.name}: T = ${hi} costs ${ratio.toFixed(2)}x T = ${lo} (bound ${bound}x: linear in T) ${ok ? 'ok' : 'FAILED'}`);
  }
  return bad ? 1 : 0;
}

/** Random weights at the model's shapes (norm weights near 1, matrices scaled by fan-in). */
function modelWeights(model: CheckedModel): Map<string, HostValue> {
  const out = new Map<string, HostValue>();
  for (const [name, { shape }] of boundWeights(modelProgram(model))) {
    const dims = shape.map((x) => devaluate(x, new Map())!);
    const w = uniform(dims, dims.length === 1 ? 0.1 : name.includes('embed_tokens') ? 1 : Math.sqrt(3 / dims[1]!), `w.${name}`);
    if (dims.length === 1) for (let i = 0; i < w.data.length; i++) w.data[i]! += 1;
    out.set(name, w);
  }
  return out;
}

// ---- curves, Markdown, plots ----------------------------------------------------------------------

interface Curves {
  perToken: { name: string; points: [number, number][] }[];
  decode: { name: string; points: [number, number][] }[];
}

function curveData(cases: CaseRecord[], targets: string[], cfg: Config): Curves {
  const K = cfg.retention[0]!.K, H = cfg.retention[0]!.H;
  const pts = (form: string, pick: (c: CaseRecord) => Result | undefined): [number, number][] => cases
    .filter((c) => c.group === 'retention' && c.dir === 'fwd' && c.form === form && c.shape['B'] === 1 && c.shape['K'] === K && c.shape['H'] === H)
    .flatMap((c) => { const r = pick(c); return r?.status === 'ok' ? [[c.shape['T']!, (r.medianMs * 1000) / c.shape['T']!] as [number, number]] : []; });
  const perToken = [...targets, 'torch'].flatMap((t) => (['chunkwise', 'recurrent'] as const).map((form) => ({ name: `${t} ${form}`, points: pts(form, (c) => (t === 'torch' ? c.peer : c.results[t])) })));
  const dpts = (pick: (c: CaseRecord) => Result | undefined): [number, number][] => cases.filter((c) => c.group === 'decode').flatMap((c) => { const r = pick(c); return r?.status === 'ok' ? [[c.shape['context']!, r.medianMs] as [number, number]] : []; });
  const decode = [...targets, 'torch'].map((t) => ({ name: t, points: dpts((c) => (t === 'torch' ? c.peer : c.results[t])) }));
  return { perToken, decode };
}

const cell = (r: Result | undefined): string => (!r ? '—' : r.status === 'ok' ? ms(r.medianMs) : r.status === 'skipped' ? 'skip' : r.status);

function markdown(json: { meta: Record<string, unknown>; cases: CaseRecord[]; curves: Curves }, targets: string[]): string {
  const m = json.meta as { started: string; seconds: number; complete: boolean; load: number[]; cpus: string; nativeLanes: number; node: string; targets: { name: string; available: boolean; reason?: string }[]; peer: Record<string, unknown>; options: Record<string, number>; timing: string };
  const lines: string[] = [];
  lines.push(`# retnetc bench, ${m.started}${m.complete ? '' : ' (incomplete: the run was still going or was stopped)'}`, '');
  lines.push(`${m.cpus} (native micro tiles of ${m.nativeLanes} f32 lanes), Node ${m.node}; ${m.seconds} s; load average at the end ${m.load.join(', ')}. Targets: ${m.targets.map((t) => (t.available ? t.name : `${t.name} (skipped: ${t.reason})`)).join('; ')}.`);
  lines.push(`Peer: ${m.peer['skipped'] ? `skipped: ${m.peer['skipped']}` : `PyTorch ${m.peer['torch']} eager, ${m.peer['threads']} thread(s), ${m.peer['blas']}`}.`);
  lines.push('', `Times in ms (median of n; n per cell in latest.json). ${m.timing} Cap on the estimated time per run: ${m.options['capMs']} ms; relative RMSE bar ${m.options['bar']}.`, '');
  const head = ['case', 'form', ...targets.map((t) => `${t} ms`), 'torch ms', ...targets.map((t) => `${t}/torch`), 'check (rel RMSE)'];
  lines.push(`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`);
  const notes: string[] = [];
  for (const c of json.cases) {
    const chk = Object.entries(c.results).filter(([, r]) => r.relRmse !== undefined).map(([t, r]) => `${t} ${r.relRmse!.toExponential(1)}`);
    const against = (Object.values(c.results).find((r) => r.status === 'ok' && (r as Timing).checkedAgainst) as Timing | undefined)?.checkedAgainst;
    lines.push(`| ${[c.label, c.form, ...targets.map((t) => cell(c.results[t])), cell(c.peer), ...targets.map((t) => (c.ratios[t] !== undefined ? ratio(c.ratios[t]!) : '—')), chk.length ? `${chk.join(', ')} vs ${against}` : against ?? '—'].join(' | ')} |`);
    for (const [t, r] of Object.entries(c.results)) if (r.status !== 'ok') notes.push(`- ${c.label} ${c.form}, ${t}: ${r.status}: ${r.reason}`);
    if (c.peer && c.peer.status !== 'ok') notes.push(`- ${c.label} ${c.form}, torch: ${c.peer.status}: ${c.peer.reason}`);
  }
  // Best form against best form, per retention shape and direction.
  const best: string[] = [];
  const groups = new Map<string, CaseRecord[]>();
  for (const c of json.cases.filter((x) => x.group === 'retention')) { const k = `${c.label}`; groups.set(k, [...(groups.get(k) ?? []), c]); }
  for (const [label, cs] of groups) {
    const bestOf = (pick: (c: CaseRecord) => Result | undefined) => cs.map((c) => ({ c, r: pick(c) })).filter((x) => x.r?.status === 'ok').sort((a, b) => (a.r as Timing).medianMs - (b.r as Timing).medianMs)[0];
    const p = bestOf((c) => c.peer);
    const row = targets.map((t) => { const b = bestOf((c) => c.results[t]); return b ? `${ms((b.r as Timing).medianMs)} (${b.c.form})${p ? ` = ${ratio((b.r as Timing).medianMs / (p.r as Timing).medianMs)}` : ''}` : '—'; });
    best.push(`| ${label} | ${row.join(' | ')} | ${p ? `${ms((p.r as Timing).medianMs)} (${p.c.form})` : '—'} |`);
  }
  lines.push('', '## Best form against best form (retention)', '', `| case | ${targets.map((t) => `${t} best ms (form) = /torch best`).join(' | ')} | torch best ms (form) |`, `|---|${targets.map(() => '---').join('|')}|---|`, ...best);
  const curveTable = (title: string, unit: string, series: { name: string; points: [number, number][] }[], x: string) => {
    const xs = [...new Set(series.flatMap((s) => s.points.map((p) => p[0])))].sort((a, b) => a - b);
    if (!xs.length) return;
    lines.push('', `## ${title}`, '', `| series | ${xs.map((v) => `${x} ${v}`).join(' | ')} |`, `|---|${xs.map(() => '---').join('|')}|`);
    for (const s of series) lines.push(`| ${s.name} | ${xs.map((v) => { const p = s.points.find((q) => q[0] === v); return p ? ms(p[1]) : '—'; }).join(' | ')} |`);
    lines.push('', unit);
  };
  curveTable('Time per token against T (retention forward, B = 1)', 'microseconds per token (plot: per-token.svg)', json.curves.perToken, 'T');
  curveTable('Decoding time per token against context length (tiny RetNet, stateful recurrent, T = 1)', 'milliseconds per decode step (plot: decode.svg)', json.curves.decode, 'ctx');
  if (notes.length) lines.push('', '## Skipped and failed cells', '', ...notes);
  return `${lines.join('\n')}\n`;
}

function writePlots(dir: string, cases: CaseRecord[], curves: Curves, targets: string[]): string[] {
  const files: [string, string][] = [];
  const series = (xs: { name: string; points: [number, number][] }[]): Series[] => xs.map((s) => ({ ...s, dashed: s.name.includes('recurrent') || s.name.startsWith('torch') }));
  files.push(['per-token.svg', linePlot({ title: 'Retention forward: time per token against T (B = 1)', xLabel: 'T (positions)', yLabel: 'microseconds per token', series: series(curves.perToken), logX: true, logY: true })]);
  files.push(['decode.svg', linePlot({ title: 'Tiny RetNet decode: time per step against context length', xLabel: 'context length (tokens before the step)', yLabel: 'ms per decode step', series: series(curves.decode), logX: true, logY: true })]);
  const bars = cases.flatMap((c) => targets.filter((t) => c.ratios[t] !== undefined).map((t) => ({ label: `${t} ${c.label.replace('retention ', '')} ${c.form}`, value: c.ratios[t]! })));
  files.push(['ratios.svg', barPlot('retnetc time / PyTorch eager time (below 1: retnetc faster)', 'ratio (log scale)', bars)]);
  for (const [name, svg] of files) fs.writeFileSync(path.join(dir, name), svg);
  return files.map((f) => f[0]);
}

const invoked = process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (invoked) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => { process.stderr.write(`bench: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`); process.exit(1); },
  );
}
