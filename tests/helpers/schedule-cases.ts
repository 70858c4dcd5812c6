// The cases of the schedule property tests (tests/schedules.test.ts on the CPU executor,
// tests/webgpu-schedules.test.ts on WebGPU), their inputs, their float64 truth and the check
// of one tensor against it.
//
// Sizes are the real ones: K from {1..16, 64, 128, 256} and V from {1..16, 64, 128, 256, 432,
// 512} (torchscale: K = 256, V = 432 and more; fla: 64-256), T from 1 to 300 in a chosen
// relation to the chunk (1, below it, ragged, a multiple, anything). Big sizes are drawn less
// often (a quarter of the draws of each axis) and with B * H <= 2, never shrunk. The truth is
// the fast float64 recurrent form (helpers/fast-reference.ts, O(B H T K V)), so no cost cap.
import fc from 'fast-check';
import type { CheckedFn } from '../../dsl/checked.js';
import { decayScale, isFastFamily, productScales, rmsOf } from './fast-reference.js';
import { fastReference, prng, type Reference, relErr, tensor, uniform, unflat, type Value } from './harness.js';

export const TOL = 1e-5;
/**
 * Random cases per property, on the CPU executor and on WebGPU alike (scaled by FC_RUNS_SCALE;
 * the seed is fresh on every run, so CI covers new cases every time). On lavapipe a case costs
 * mostly shader compilation, seconds of CPU per pipeline, and every K, V and chunk is a new
 * pipeline: WebGPU draws them in groups of WEBGPU_CASES_PER_SHAPE cases that share one kernel
 * shape (caseGroupArb), so its 12 cases compile 3 shapes.
 */
export const RANDOM_RUNS = 12;
/** Cases per kernel shape on WebGPU (RANDOM_RUNS / this many shapes per property). */
export const WEBGPU_CASES_PER_SHAPE = 4;
export const MAX_T = 300;
export const GAMMA_MAX = 1 - 2 ** -20;
export const SMALL_SIZES = Array.from({ length: 16 }, (_, i) => i + 1);
export const BIG_K = [64, 128, 256];
export const BIG_V = [64, 128, 256, 432, 512];

export type GateMode = 'uniform' | 'zeros' | 'mixed' | 'near1';

export interface Case {
  B: number; H: number; T: number; K: number; V: number;
  chunk: number;
  /** One decay per head (retention, retention_state). */
  gammas: number[];
  /** How the log gates g are drawn (gated_retention). */
  gate: GateMode;
  /** Seed of q, k, v, s0, g and the upstream gradients. */
  data: number;
  /** How T was chosen relative to the chunk (for reading counterexamples). */
  tKind: string;
}

export interface Family {
  file: string;
  name: string;
  decay: 'gamma' | 'gate' | 'none';
  state: boolean;
}

export const FAMILIES: readonly Family[] = [
  { file: 'retention', name: 'retention', decay: 'gamma', state: false },
  { file: 'retention', name: 'retention_state', decay: 'gamma', state: true },
  { file: 'linear_attention', name: 'linear_attention', decay: 'none', state: false },
  { file: 'gated_retention', name: 'gated_retention', decay: 'gate', state: false },
];

export const DECAY_GRADS = new Set(['grad.gamma', 'grad.g']);

const tKindArb = fc.oneof(
  { arbitrary: fc.constant('one'), weight: 1 },
  { arbitrary: fc.constant('below-chunk'), weight: 3 },
  { arbitrary: fc.constant('ragged'), weight: 3 },
  { arbitrary: fc.constant('multiple'), weight: 1 },
  { arbitrary: fc.constant('any'), weight: 2 },
);

/** T from its kind: 1; below the chunk; m*chunk + r with 0 < r < chunk; m*chunk; anything. */
export function chooseT(kind: string, chunk: number, x: number, y: number): number {
  switch (kind) {
    case 'one': return 1;
    case 'below-chunk': return chunk <= 1 ? 1 : 1 + (x % (chunk - 1));
    case 'ragged': {
      if (chunk === 1) return 1 + (x % MAX_T);
      const r = 1 + (y % (chunk - 1));
      const maxM = Math.floor((MAX_T - r) / chunk);
      return (x % (maxM + 1)) * chunk + r;
    }
    case 'multiple': return (1 + (x % Math.floor(MAX_T / chunk))) * chunk;
    default: return 1 + (x % MAX_T);
  }
}

const sizeArb = (big: number[]): fc.Arbitrary<number> => fc.oneof(
  { arbitrary: fc.constantFrom(...SMALL_SIZES), weight: 3 },
  { arbitrary: fc.constantFrom(...big), weight: 1 },
);
const gammaArb = fc.oneof(
  fc.constant(1),
  fc.constant(GAMMA_MAX),
  fc.constant(0.5),
  fc.double({ min: 0.5, max: GAMMA_MAX, noNaN: true }),
  fc.double({ min: 0.99, max: GAMMA_MAX, noNaN: true }),
);

/** Chunk sizes up to `max`: edge values around powers of two, and anything. */
export function chunkArb(max: number): fc.Arbitrary<number> {
  const edges = [1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 127, 128].filter((c) => c <= max);
  return fc.oneof({ arbitrary: fc.constantFrom(...edges), weight: 2 }, { arbitrary: fc.integer({ min: 1, max }), weight: 1 });
}

/** What decides the kernels of a case's plans: the specialised head sizes K, V and the chunk. */
export interface KernelShape { K: number; V: number; chunk: number }

const kernelShapeArb = (maxChunk: number): fc.Arbitrary<KernelShape> =>
  fc.record({ K: sizeArb(BIG_K), V: sizeArb(BIG_V), chunk: chunkArb(maxChunk) });

/** Everything of a case but its kernel shape: sizes B, H, T (as a kind and two draws), decays, gates, data. */
const restArb = fc.record({
  B: fc.integer({ min: 1, max: 3 }),
  H: fc.integer({ min: 1, max: 3 }),
  tKind: tKindArb,
  tx: fc.nat(1 << 20),
  ty: fc.nat(1 << 20),
  gammas: fc.tuple(gammaArb, gammaArb, gammaArb),
  gate: fc.constantFrom<GateMode>('uniform', 'zeros', 'mixed', 'near1'),
  data: fc.integer(),
});

type Rest = typeof restArb extends fc.Arbitrary<infer R> ? R : never;

function caseOf(s: KernelShape, { tx, ty, gammas, ...r }: Rest): Case {
  let { B, H } = r;
  // Big heads: B * H <= 2 (fewer, not smaller, big cases).
  if (s.K > 16 || s.V > 16) { if (B * H > 2) { B = Math.min(B, 2); H = B === 2 ? 1 : Math.min(H, 2); } }
  return { ...r, ...s, B, H, T: chooseT(r.tKind, s.chunk, tx, ty), gammas: gammas.slice(0, H).map((g) => Math.fround(g)) };
}

/** Random cases with chunks up to `maxChunk`. */
export function caseArb(maxChunk: number): fc.Arbitrary<Case> {
  return fc.tuple(kernelShapeArb(maxChunk), restArb).map(([s, r]) => caseOf(s, r));
}

/**
 * Random groups of `perShape` cases that share one kernel shape (K, V, chunk) and draw the rest
 * (B, H, T against the chunk, decays, gates, data) each: where compiling a kernel is most of a
 * case's cost (WGSL on lavapipe, C on native) a group compiles its plans once and runs them on
 * `perShape` inputs. Each case is distributed as caseArb's are; the seed is fresh on every run,
 * so over runs the shapes cover what caseArb's do.
 */
export function caseGroupArb(maxChunk: number, perShape: number): fc.Arbitrary<Case[]> {
  return fc.tuple(kernelShapeArb(maxChunk), fc.array(restArb, { minLength: perShape, maxLength: perShape }))
    .map(([s, rs]) => rs.map((r) => caseOf(s, r)));
}

export function inputsOf(f: Family, c: Case, rand: () => number): Map<string, Value> {
  const { B, H, T, K, V } = c;
  const m = new Map<string, Value>([['q', uniform([B, H, T, K], rand)], ['k', uniform([B, H, T, K], rand)], ['v', uniform([B, H, T, V], rand)]]);
  if (f.decay === 'gamma') m.set('gamma', tensor([H], (i) => c.gammas[i]!));
  if (f.state) m.set('s0', uniform([B, H, K, V], rand));
  if (f.decay === 'gate') {
    const LOG_HALF = Math.log(0.5);
    const gate = (): number => {
      switch (c.gate) {
        case 'zeros': return 0;
        case 'near1': return Math.log1p(-rand() * 2 ** -20);
        case 'mixed': { const u = rand(); return u < 0.3 ? 0 : u < 0.4 ? LOG_HALF : Math.log(0.5 + 0.5 * rand()); }
        default: return Math.log(0.5 + 0.5 * rand());
      }
    };
    m.set('g', tensor([B, H, T], gate));
  }
  return m;
}

export const describeCase = (c: Case): string =>
  `B=${c.B} H=${c.H} T=${c.T} (${c.tKind}) K=${c.K} V=${c.V} chunk=${c.chunk} gammas=[${c.gammas.join(', ')}] gate=${c.gate} data=${c.data}`;

export interface Truth {
  inputs: Map<string, Value>;
  ref: Reference;
  /** Natural scale of the decay gradient (helpers/fast-reference.ts decayScale), if any. */
  scale: Value | undefined;
  /** Natural scales of o and the q, k, v gradients (helpers/fast-reference.ts productScales). */
  scales: Map<string, Value>;
  ms: number;
}

/** The natural scale a tensor of a case is measured against (checkTensor), if it has one. */
export const scaleOf = (t: Truth, name: string): Value | undefined => (DECAY_GRADS.has(name) ? t.scale : t.scales.get(name));

/** Inputs, upstreams and the float64 truth of a case (the fast reference). */
export function truthOf(fn: CheckedFn, f: Family, c: Case): Truth {
  if (!isFastFamily(f.name)) throw new Error(`no fast reference for ${f.name}`);
  const t0 = performance.now();
  const rand = prng(c.data);
  const inputs = inputsOf(f, c, rand);
  const ref = fastReference(fn, inputs, rand);
  const scale = decayScale(f.name, inputs, ref.ups);
  const scales = productScales(f.name, inputs, ref.ups);
  return { inputs, ref, scale, scales, ms: performance.now() - t0 };
}

/** Worst errors per key, for the report after a run. */
export class Worst {
  readonly map = new Map<string, number>();
  note(key: string, rel: number): void {
    const w = this.map.get(key);
    if (w === undefined || !(rel <= w)) this.map.set(key, rel);
  }
  lines(): string[] { return [...this.map].map(([k, v]) => `${k}: ${v.toExponential(2)}`); }
}

/**
 * Checks `got` against the float64 `want`: relative RMSE <= TOL, no non-finite value. With a
 * `scale` (decay gradients) the error is measured against max(RMS ref, RMS scale), and the plain
 * relative RMSE is recorded too. Problems go to `problems`; the error measured is returned.
 */
export function checkTensor(label: string, key: string, got: { shape: number[]; data: ArrayLike<number> } | undefined, want: Value,
  problems: string[], worst: Worst, scale?: Value): number {
  if (!got) { problems.push(`${label}: missing from the plan's outputs`); return Infinity; }
  if (got.shape.join() !== want.shape.join()) { problems.push(`${label}: shape [${got.shape}] but the reference has [${want.shape}]`); return Infinity; }
  const e = relErr(got.data, want.data);
  let rel = e.rel;
  let scaleNote = '';
  if (scale) {
    worst.note(`${key} (plain, not against the natural scale)`, e.rel);
    const rmsScale = rmsOf(scale.data);
    if (rmsScale > e.rmsRef) {
      scaleNote = `, measured against the natural scale ${rmsScale.toExponential(3)} > RMS ref; plain relative RMSE ${e.rel.toExponential(3)}`;
      rel = e.rmsDiff / rmsScale;
    }
  }
  worst.note(key, e.nonFinite ? Infinity : rel);
  // With an all-zero reference, `rel` is the RMS of the plan's values itself.
  if (!(rel <= TOL) || e.nonFinite > 0) {
    const at = unflat(e.at, want.shape);
    problems.push(`${label}: relative RMSE ${rel.toExponential(3)} > ${TOL} (RMS diff ${e.rmsDiff.toExponential(3)}, RMS ref ${e.rmsRef.toExponential(3)}, ` +
      `${e.nonFinite} non-finite; largest difference at [${at}]: got ${got.data[e.at]}, want ${want.data[e.at]}${scaleNote})`);
  }
  return rel;
}

/** The Done-when cases: retention at (K, V) = (256, 432) and (128, 128), T ragged against the chunk. */
export const DONE_WHEN: readonly Case[] = [
  { B: 1, H: 2, T: 277, K: 256, V: 432, chunk: 64, gammas: [1 - 2 ** -5, GAMMA_MAX], gate: 'uniform', data: 256432, tKind: 'ragged' },
  { B: 2, H: 1, T: 201, K: 128, V: 128, chunk: 32, gammas: [Math.fround(0.999)], gate: 'uniform', data: 128128, tKind: 'ragged' },
];
