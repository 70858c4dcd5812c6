// Agreement cases for the CUDA runtime: retention, linear attention and gated retention, every
// schedule, forward and backward, against the float64 reference interpreter.
//
// The reference interpreter evaluates the definitions literally (O(T^2 K V) per output element
// group, in JavaScript): at T = 257, K = V = 64 a forward takes about a minute and a backward
// several, too slow for a GPU machine's short lease. So the references are computed once, on any
// machine (`scripts/gpu-check.sh --prepare`), and stored as safetensors files next to the
// inputs they were computed from; the GPU check reads them and checks that the model source they
// were made from is unchanged (sha256).
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { CheckedFn } from '../../dsl/checked.js';
import { type Dim, devaluate, dimToString } from '../../dsl/dims.js';
import { loadProgram } from '../../dsl/program.js';
import { runFunction, type Value } from '../../dsl/reference/interpreter.js';
import { gradient, upstreamName } from '../../compiler/autodiff.js';
import { lowerFn, toChecked } from '../../compiler/ir.js';
import { fromFloat64, readSafetensorsFile, type Tensor, toFloat64, writeSafetensorsFile } from '../io/safetensors.js';

export interface AgreementShape { B: number; H: number; T: number; K: number; V: number }

export interface AgreementCase {
  name: string;
  /** Model file, relative to the repository root. */
  file: string;
  fn: string;
  shape: AgreementShape;
  seed: number;
}

/** Shapes like a real head (K = V = 64) with T one past a multiple of the chunk (64). */
export const AGREEMENT_SHAPE: AgreementShape = { B: 2, H: 2, T: 257, K: 64, V: 64 };

export const AGREEMENT_CASES: readonly AgreementCase[] = [
  { name: 'retention', file: 'models/retention.ret', fn: 'retention', shape: AGREEMENT_SHAPE, seed: 11 },
  { name: 'linear_attention', file: 'models/linear_attention.ret', fn: 'linear_attention', shape: AGREEMENT_SHAPE, seed: 12 },
  { name: 'gated_retention', file: 'models/gated_retention.ret', fn: 'gated_retention', shape: AGREEMENT_SHAPE, seed: 13 },
];

/** Bumped when the input generation changes (stale reference files are then rejected). */
export const REFS_FORMAT = '1';

/** Relative RMSE ||a - b|| / ||b|| (b the reference). */
export function relRmse(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let n = 0;
  let d = 0;
  for (let i = 0; i < b.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    n += (x - y) * (x - y);
    d += y * y;
  }
  if (!Number.isFinite(n)) return Infinity;
  return d === 0 ? Math.sqrt(n) : Math.sqrt(n / d);
}

/** A small deterministic generator (Park-Miller) of float32-exact values in [-1, 1). */
function rng(seed: number): () => number {
  let s = seed % 2147483647;
  if (s <= 0) s += 2147483646;
  return () => {
    s = (s * 16807) % 2147483647;
    return Math.fround((s / 2147483647) * 2 - 1);
  };
}

/** RetNet's per-head decays 1 - 2^(-5 - h) (torchscale), float32-exact. */
export function retnetGammas(H: number): Float64Array {
  return Float64Array.from({ length: H }, (_, h) => Math.fround(1 - 2 ** (-5 - h)));
}

export function loadCaseFn(root: string, c: Pick<AgreementCase, 'file' | 'fn'>): CheckedFn {
  const program = loadProgram(path.join(root, c.file));
  if (program.diagnostics.length || !program.checked) throw new Error(`${c.file}: ${program.diagnostics[0]?.message ?? 'does not check'}`);
  const fn = program.checked.fns.get(c.fn);
  if (!fn) throw new Error(`${c.file}: no function '${c.fn}'`);
  return fn;
}

export function sourceHash(root: string, file: string): string {
  return createHash('sha256').update(fs.readFileSync(path.join(root, file))).digest('hex');
}

/**
 * Inputs of a case's function (float32-exact values) and the upstream gradient of each output
 * (named as the gradient function takes them, `grad.o`). q, k, v uniform in [-1, 1) (q scaled by
 * K^-1/2 as retention does), gamma RetNet's decays, g log gates in (-0.3, 0].
 */
export function caseInputs(fn: CheckedFn, shape: Record<string, number>, seed: number): { inputs: Map<string, Value>; upstream: Map<string, Value> } {
  const r = rng(seed);
  const sizes = new Map(Object.entries(shape));
  const dims = (p: { shape: readonly Dim[] }) =>
    p.shape.map((d) => {
      const n = devaluate(d, sizes);
      if (n === undefined || !Number.isInteger(n)) throw new Error(`the case's shape does not give ${dimToString(d)}`);
      return n;
    });
  const numel = (s: number[]) => s.reduce((a, b) => a * b, 1);
  const inputs = new Map<string, Value>();
  for (const p of fn.params) {
    const s = dims(p);
    let data: Float64Array;
    if (p.name === 'gamma') data = retnetGammas(s[0] ?? 1);
    else if (p.name === 'g') data = Float64Array.from({ length: numel(s) }, () => Math.fround(-Math.abs(r()) * 0.3));
    else if (p.name === 'q') data = Float64Array.from({ length: numel(s) }, () => Math.fround(r() / Math.sqrt(shape['K'] ?? 1)));
    else data = Float64Array.from({ length: numel(s) }, r);
    inputs.set(p.name, { shape: s, data });
  }
  const upstream = new Map<string, Value>();
  for (const o of fn.outputs) {
    const s = dims(o);
    upstream.set(upstreamName(o.name), { shape: s, data: Float64Array.from({ length: numel(s) }, r) });
  }
  return { inputs, upstream };
}

export interface CaseRefs {
  inputs: Map<string, Value>;
  upstream: Map<string, Value>;
  /** Reference outputs of the function, by output name. */
  forward: Map<string, Value>;
  /** Reference gradients, by the gradient function's output names (grad.q, ...). */
  backward: Map<string, Value>;
  metadata: Record<string, string>;
}

export const refsFile = (dir: string, c: AgreementCase): string => path.join(dir, `${c.name}.safetensors`);

function caseMeta(root: string, c: AgreementCase): Record<string, string> {
  return { format: REFS_FORMAT, case: c.name, file: c.file, fn: c.fn, sha256: sourceHash(root, c.file), shape: JSON.stringify(c.shape), seed: String(c.seed) };
}

/** Computes a case's float64 references with the reference interpreter and writes them. */
export async function writeCaseRefs(root: string, dir: string, c: AgreementCase, log: (s: string) => void = () => {}): Promise<void> {
  const fn = loadCaseFn(root, c);
  const { inputs, upstream } = caseInputs(fn, { ...c.shape }, c.seed);
  let t0 = performance.now();
  const forward = runFunction(fn, inputs);
  log(`${c.name}: forward reference in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  t0 = performance.now();
  const backward = runFunction(toChecked(gradient(lowerFn(fn))), new Map([...inputs, ...upstream]));
  log(`${c.name}: backward reference in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const tensors = new Map<string, Tensor>();
  for (const [k, v] of inputs) tensors.set(`in.${k}`, fromFloat64(v.data, v.shape, 'F32'));
  for (const [k, v] of upstream) tensors.set(`up.${k}`, fromFloat64(v.data, v.shape, 'F32'));
  for (const [k, v] of forward) tensors.set(`fwd.${k}`, fromFloat64(v.data, v.shape, 'F64'));
  for (const [k, v] of backward) tensors.set(`bwd.${k}`, fromFloat64(v.data, v.shape, 'F64'));
  fs.mkdirSync(dir, { recursive: true });
  await writeSafetensorsFile(refsFile(dir, c), tensors, caseMeta(root, c));
}

/** Reads a case's references; a one-line Error when missing or made from another source. */
export async function readCaseRefs(root: string, dir: string, c: AgreementCase): Promise<CaseRefs> {
  const file = refsFile(dir, c);
  if (!fs.existsSync(file)) throw new Error(`no reference file ${file} (run scripts/gpu-check.sh --prepare on any machine)`);
  const { tensors, metadata } = await readSafetensorsFile(file);
  const want = caseMeta(root, c);
  for (const k of Object.keys(want)) {
    if (metadata[k] !== want[k]) throw new Error(`${file} is stale (${k} ${metadata[k] ?? 'missing'} != ${want[k]}); rerun scripts/gpu-check.sh --prepare`);
  }
  const refs: CaseRefs = { inputs: new Map(), upstream: new Map(), forward: new Map(), backward: new Map(), metadata };
  for (const [name, t] of tensors) {
    const dot = name.indexOf('.');
    const kind = name.slice(0, dot);
    const key = name.slice(dot + 1);
    const v: Value = { shape: t.shape, data: toFloat64(t) };
    if (kind === 'in') refs.inputs.set(key, v);
    else if (kind === 'up') refs.upstream.set(key, v);
    else if (kind === 'fwd') refs.forward.set(key, v);
    else if (kind === 'bwd') refs.backward.set(key, v);
  }
  return refs;
}
