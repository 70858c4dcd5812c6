// Property tests: every schedule (parallel, recurrent, chunkwise) of every factorisable family
// function, compiled and run in float32 on the CPU kernel-IR executor, agrees with the float64
// reference interpreter (forward) and with the literal float64 gradient (backward) to relative
// RMSE <= 1e-5, for random shapes, decays, chunk sizes and data.
//
// Reproduce a failure with FC_SEED=<seed> (fast-check prints seed and path); FC_RUNS_SCALE
// scales the number of runs and FC_COST_CAP the largest reference cost per case (below).
//
// Cost. The reference is literal: about 0.5 us per unit of B*H*T(T+1)/2*K*V for the forward
// plus the gradient, while the plans are far cheaper. Each case is therefore fitted under a cost
// cap (first shrinking K and V, then B and H; T and its relation to the chunk are kept), and
// the reference of a case is computed once and shared by the three forms: the three tests of a
// function use the same seed and arbitrary, hence the same cases.
import fc from 'fast-check';
import { afterAll, describe, test } from 'vitest';
import type { CheckedFn } from '../dsl/checked.js';
import { FORMS, type Form } from '../compiler/schedule.js';
import {
  fcSeed, loadFn, plan, prng, reference, type Reference, relErr, runPlan, runsScale, tensor, uniform, unflat, type Value,
} from './helpers/harness.js';

const TOL = 1e-5;
const SEED = fcSeed(0x5eed_2024);
const COST_CAP = Number(process.env.FC_COST_CAP ?? 1_500_000);
const MAX_T = 300;
const GAMMA_MAX = 1 - 2 ** -20;

type GateMode = 'uniform' | 'zeros' | 'mixed' | 'near1';

interface Case {
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

interface Family {
  file: string;
  name: string;
  runs: number;
  decay: 'gamma' | 'gate' | 'none';
  state: boolean;
}

const FAMILIES: Family[] = [
  { file: 'retention', name: 'retention', runs: 24, decay: 'gamma', state: false },
  { file: 'retention', name: 'retention_state', runs: 18, decay: 'gamma', state: true },
  { file: 'linear_attention', name: 'linear_attention', runs: 26, decay: 'none', state: false },
  { file: 'gated_retention', name: 'gated_retention', runs: 24, decay: 'gate', state: false },
];

const cost = (c: Pick<Case, 'B' | 'H' | 'T' | 'K' | 'V'>): number => c.B * c.H * ((c.T * (c.T + 1)) / 2) * c.K * c.V;

/** Shrinks K and V (to 4 at least, or what they were), then B and H, then K and V to 1. */
function fit(c: Case): Case {
  const out = { ...c };
  const scaleKV = (floor: number): void => {
    if (cost(out) <= COST_CAP) return;
    const allowed = COST_CAP / (out.B * out.H * ((out.T * (out.T + 1)) / 2));
    const s = Math.sqrt(allowed / (out.K * out.V));
    out.K = Math.max(Math.min(out.K, floor), Math.floor(out.K * s));
    out.V = Math.max(Math.min(out.V, floor), Math.floor(out.V * s));
    while (cost(out) > COST_CAP && (out.K > floor || out.V > floor)) {
      if (out.K >= out.V && out.K > floor) out.K--;
      else if (out.V > floor) out.V--;
      else out.K--;
    }
  };
  scaleKV(4);
  while (cost(out) > COST_CAP && out.B * out.H > 1) {
    if (out.B >= out.H && out.B > 1) out.B--;
    else out.H--;
  }
  scaleKV(1);
  out.gammas = c.gammas.slice(0, out.H);
  return out;
}

const chunkArb = fc.oneof(
  { arbitrary: fc.constantFrom(1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 127, 128), weight: 2 },
  { arbitrary: fc.integer({ min: 1, max: 128 }), weight: 1 },
);
const tKindArb = fc.oneof(
  { arbitrary: fc.constant('one'), weight: 1 },
  { arbitrary: fc.constant('below-chunk'), weight: 3 },
  { arbitrary: fc.constant('ragged'), weight: 3 },
  { arbitrary: fc.constant('multiple'), weight: 1 },
  { arbitrary: fc.constant('any'), weight: 2 },
);

/** T from its kind: 1; below the chunk; m*chunk + r with 0 < r < chunk; m*chunk; anything. */
function chooseT(kind: string, chunk: number, x: number, y: number): number {
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

const sizeKVArb = fc.oneof(
  { arbitrary: fc.integer({ min: 1, max: 64 }), weight: 2 },
  { arbitrary: fc.constantFrom(1, 2, 3, 5, 7, 8, 16, 31, 32, 33, 63, 64), weight: 1 },
);
const gammaArb = fc.oneof(
  fc.constant(1),
  fc.constant(GAMMA_MAX),
  fc.constant(0.5),
  fc.double({ min: 0.5, max: GAMMA_MAX, noNaN: true }),
  fc.double({ min: 0.99, max: GAMMA_MAX, noNaN: true }),
);

const caseArb: fc.Arbitrary<Case> = fc
  .record({
    B: fc.integer({ min: 1, max: 3 }),
    H: fc.integer({ min: 1, max: 3 }),
    K: sizeKVArb,
    V: sizeKVArb,
    chunk: chunkArb,
    tKind: tKindArb,
    tx: fc.nat(1 << 20),
    ty: fc.nat(1 << 20),
    gammas: fc.tuple(gammaArb, gammaArb, gammaArb),
    gate: fc.constantFrom<GateMode>('uniform', 'zeros', 'mixed', 'near1'),
    data: fc.integer(),
  })
  .map(({ tx, ty, gammas, ...r }) => fit({ ...r, T: chooseT(r.tKind, r.chunk, tx, ty), gammas: gammas.map((g) => Math.fround(g)) }));

/** Fixed cases that run first (and count towards the runs): T = 1, K = V = 64, T = 300 with a ragged last chunk, exact decays 1 and 1 - 2^-20, chunk 1. */
const EXAMPLES: Case[] = ([
  { B: 1, H: 2, T: 1, K: 1, V: 1, chunk: 1, gammas: [1, GAMMA_MAX], gate: 'zeros', data: 1, tKind: 'one' },
  { B: 2, H: 3, T: 1, K: 64, V: 64, chunk: 128, gammas: [0.5, 1, GAMMA_MAX], gate: 'mixed', data: 2, tKind: 'one' },
  { B: 1, H: 1, T: 300, K: 3, V: 5, chunk: 128, gammas: [GAMMA_MAX], gate: 'uniform', data: 3, tKind: 'ragged' },
  { B: 1, H: 2, T: 129, K: 7, V: 9, chunk: 64, gammas: [1, 0.5], gate: 'near1', data: 4, tKind: 'ragged' },
  { B: 3, H: 1, T: 63, K: 17, V: 1, chunk: 64, gammas: [0.9], gate: 'mixed', data: 5, tKind: 'below-chunk' },
  { B: 1, H: 1, T: 40, K: 64, V: 33, chunk: 1, gammas: [0.97], gate: 'uniform', data: 6, tKind: 'multiple' },
  // T well above the decay's time constant, the regime where the factorised decay gradient
  // (sum_p p dL(p), compiler/decay-grad.ts) loses float32 accuracy.
  { B: 1, H: 1, T: 300, K: 1, V: 1, chunk: 64, gammas: [0.5], gate: 'uniform', data: 300, tKind: 'ragged' },
] as Case[]).map(fit);

function inputsOf(f: Family, c: Case, rand: () => number): Map<string, Value> {
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

const describeCase = (c: Case): string =>
  `B=${c.B} H=${c.H} T=${c.T} (${c.tKind}) K=${c.K} V=${c.V} chunk=${c.chunk} gammas=[${c.gammas.join(', ')}] gate=${c.gate} data=${c.data}`;

/**
 * The natural size of a decay gradient. grad.gamma[h] (and grad.g[b, h, u]) is a sum of
 * O(B T^2) products with random signs; an unlucky draw makes it cancel to far below its usual
 * size (one seen: 21.7 from terms whose root sum of squares is 1262), and then no float32
 * evaluation, however careful, can reach 1e-5 relative to the result. Float32 summation errors
 * scale with the root sum of squares of the summed terms, so decay gradients are measured
 * relative to max(RMS(reference), RMS(scale)), scale being that root sum of squares:
 *   gamma: the terms (t-s) gamma^(t-s-1) (q[t].k[s]) (v[s].do[t]) for s < t, and with a state
 *          (t+1) gamma^t q[t] s0 do[t],  T gamma^(T-1) (s0 . dsT),  (T-1-s) gamma^(T-2-s) k[s] dsT v[s]
 *   g[u]:  the terms exp(G[t] - G[s]) (q[t].k[s]) (v[s].do[t]) for s < u <= t (G = cumsum g).
 */
function decayScale(f: Family, c: Case, inputs: ReadonlyMap<string, Value>, ups: ReadonlyMap<string, Value>): Value | undefined {
  if (f.decay === 'none') return undefined;
  const { B, H, T, K, V } = c;
  const q = inputs.get('q')!.data, k = inputs.get('k')!.data, v = inputs.get('v')!.data, dO = ups.get('grad.o')!.data;
  const qk = (bh: number, t: number, s: number): number => {
    let x = 0;
    for (let i = 0; i < K; i++) x += q[(bh * T + t) * K + i]! * k[(bh * T + s) * K + i]!;
    return x;
  };
  const vd = (bh: number, t: number, s: number): number => {
    let x = 0;
    for (let j = 0; j < V; j++) x += v[(bh * T + s) * V + j]! * dO[(bh * T + t) * V + j]!;
    return x;
  };
  if (f.decay === 'gate') {
    const g = inputs.get('g')!.data;
    const out = new Float64Array(B * H * T);
    for (let bh = 0; bh < B * H; bh++) {
      const G = new Float64Array(T);
      for (let t = 0, acc = 0; t < T; t++) G[t] = acc += g[bh * T + t]!;
      const diff = new Float64Array(T + 1);
      for (let t = 1; t < T; t++) {
        for (let s = 0; s < t; s++) {
          const e = (Math.exp(G[t]! - G[s]!) * qk(bh, t, s) * vd(bh, t, s)) ** 2;
          diff[s + 1]! += e;
          diff[t + 1]! -= e;
        }
      }
      for (let u = 0, acc = 0; u < T; u++) out[bh * T + u] = Math.sqrt(Math.max(0, (acc += diff[u]!)));
    }
    return { shape: [B, H, T], data: out };
  }
  const gam = inputs.get('gamma')!.data;
  const out = new Float64Array(H);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const bh = b * H + h;
      const y = gam[h]!;
      let e = 0;
      for (let t = 1; t < T; t++) for (let s = 0; s < t; s++) e += ((t - s) * y ** (t - s - 1) * qk(bh, t, s) * vd(bh, t, s)) ** 2;
      if (f.state) {
        const s0 = inputs.get('s0')!.data, dS = ups.get('grad.sT')!.data;
        const S = (i: number, j: number): number => s0[(bh * K + i) * V + j]!;
        const D = (i: number, j: number): number => dS[(bh * K + i) * V + j]!;
        for (let t = 0; t < T; t++) {
          let x = 0;
          for (let i = 0; i < K; i++) for (let j = 0; j < V; j++) x += q[(bh * T + t) * K + i]! * S(i, j) * dO[(bh * T + t) * V + j]!;
          e += ((t + 1) * y ** t * x) ** 2;
        }
        let x = 0;
        for (let i = 0; i < K; i++) for (let j = 0; j < V; j++) x += S(i, j) * D(i, j);
        e += (T * y ** (T - 1) * x) ** 2;
        for (let s = 0; s + 1 < T; s++) {
          let z = 0;
          for (let i = 0; i < K; i++) for (let j = 0; j < V; j++) z += k[(bh * T + s) * K + i]! * D(i, j) * v[(bh * T + s) * V + j]!;
          e += ((T - 1 - s) * y ** (T - 2 - s) * z) ** 2;
        }
      }
      out[h]! += e;
    }
  }
  return { shape: [H], data: out.map(Math.sqrt) };
}

/** Worst relative RMSE seen per (function, form, tensor), reported after the run. */
const worst = new Map<string, { rel: number }>();
const timing = new Map<string, { runs: number; ms: number; refMs: number }>();

function check(label: string, got: { shape: number[]; data: ArrayLike<number> } | undefined, want: Value, problems: string[], scale?: Value): void {
  if (!got) { problems.push(`${label}: missing from the plan's outputs`); return; }
  if (got.shape.join() !== want.shape.join()) { problems.push(`${label}: shape [${got.shape}] but the reference has [${want.shape}]`); return; }
  const e = relErr(got.data, want.data);
  let scaleNote = '';
  const note = (key: string, rel: number): void => {
    const w = worst.get(key);
    if (!w || !(rel <= w.rel)) worst.set(key, { rel });
  };
  const key = label.replace(/ chunk=\d+/, '');
  if (scale) {
    note(`${key} (plain, not against the natural scale)`, e.rel);
    const rmsScale = Math.sqrt(scale.data.reduce((a, x) => a + x * x, 0) / Math.max(scale.data.length, 1));
    if (rmsScale > e.rmsRef) {
      scaleNote = `, measured against the natural scale ${rmsScale.toExponential(3)} > RMS ref; plain relative RMSE ${e.rel.toExponential(3)}`;
      e.rel = e.rmsDiff / rmsScale;
    }
  }
  note(key, e.rel);
  // With an all-zero reference, `rel` is the RMS of the plan's values itself.
  if (!(e.rel <= TOL) || e.nonFinite > 0) {
    const at = unflat(e.at, want.shape);
    problems.push(`${label}: relative RMSE ${e.rel.toExponential(3)} > ${TOL} (RMS diff ${e.rmsDiff.toExponential(3)}, RMS ref ${e.rmsRef.toExponential(3)}, ` +
      `${e.nonFinite} non-finite; largest difference at [${at}]: got ${got.data[e.at]}, want ${want.data[e.at]}${scaleNote})`);
  }
}

const DECAY_GRADS = new Set(['grad.gamma', 'grad.g']);
/** Per-test time limit: bounds shrinking of a failure (fast-check still reports it). */
const TIME_LIMIT_MS = Number(process.env.FC_TIME_LIMIT_MS ?? 60_000);

type HostOut = Map<string, { shape: number[]; data: Float32Array | Int32Array }>;

for (const f of FAMILIES) {
  describe(`${f.name}: compiled schedules vs the float64 reference`, () => {
    const fn: CheckedFn = loadFn(f.file, f.name);
    // Reference per case, shared by the forms (same seed, same arbitrary, same cases), and the
    // backward plans' outputs per (case, form), shared with the decay-gradient tests.
    interface Ref { inputs: Map<string, Value>; ref: Reference; scale: Value | undefined; bwd: Map<Form, HostOut> }
    const refs = new Map<string, Ref>();
    const refOf = (c: Case, t: { refMs: number }): Ref => {
      const key = JSON.stringify(c);
      let r = refs.get(key);
      if (!r) {
        const t0 = performance.now();
        const rand = prng(c.data);
        const inputs = inputsOf(f, c, rand);
        const ref = reference(fn, inputs, rand);
        r = { inputs, ref, scale: decayScale(f, c, inputs, ref.ups), bwd: new Map() };
        t.refMs += performance.now() - t0;
        if (refs.size > 400) refs.clear();
        refs.set(key, r);
      }
      return r;
    };
    const backward = (r: Ref, c: Case, form: Form): HostOut => {
      let out = r.bwd.get(form);
      if (!out) r.bwd.set(form, (out = runPlan(plan(fn, form, c.chunk, true, { K: c.K, V: c.V }), new Map([...r.inputs, ...r.ref.ups]))));
      return out;
    };
    afterAll(() => refs.clear());

    const runProperty = async (label: string, body: (c: Case, r: Ref, problems: string[]) => void): Promise<void> => {
      const t = { runs: 0, ms: 0, refMs: 0 };
      const t0 = performance.now();
      const runs = Math.max(1, Math.round(f.runs * runsScale()));
      const property = fc.asyncProperty(caseArb, async (c) => {
        // Let vitest's worker talk to the main process between runs.
        await new Promise((resolve) => setImmediate(resolve));
        t.runs++;
        const r = refOf(c, t);
        const problems: string[] = [];
        body(c, r, problems);
        if (problems.length) throw new Error(`${f.name}, ${describeCase(c)}:\n  ${problems.join('\n  ')}`);
      });
      await fc.assert(property, {
        seed: SEED, numRuns: runs, examples: EXAMPLES.map((e) => [e] as [Case]), interruptAfterTimeLimit: TIME_LIMIT_MS,
      });
      t.ms = performance.now() - t0;
      timing.set(label, t);
    };

    const others = [...fn.params.filter((p) => p.name !== 'gamma' && p.name !== 'g').map((p) => p.name)].join(', ');
    for (const form of FORMS) {
      test(`${form}: outputs and the gradients of ${others} agree to relative RMSE <= ${TOL}`, async () => {
        await runProperty(`${f.name} ${form}`, (c, r, problems) => {
          const fwd = runPlan(plan(fn, form, c.chunk, false, { K: c.K, V: c.V }), r.inputs);
          for (const o of fn.outputs) check(`${f.name} ${form} chunk=${c.chunk} ${o.name}`, fwd.get(o.name), r.ref.outs.get(o.name)!, problems);
          const bwd = backward(r, c, form);
          for (const [name, want] of r.ref.grads) {
            if (!DECAY_GRADS.has(name)) check(`${f.name} ${form} chunk=${c.chunk} ${name}`, bwd.get(name), want, problems);
          }
        });
      }, 600_000);
    }
    if (f.decay !== 'none') {
      const dname = f.decay === 'gamma' ? 'grad.gamma' : 'grad.g';
      for (const form of FORMS) {
        test(`${form}: the decay gradient ${dname} agrees to relative RMSE <= ${TOL} (of its natural scale)`, async () => {
          await runProperty(`${f.name} ${form} ${dname}`, (c, r, problems) => {
            check(`${f.name} ${form} chunk=${c.chunk} ${dname}`, backward(r, c, form).get(dname), r.ref.grads.get(dname)!, problems, r.scale);
          });
        }, 600_000);
      }
    }
  });
}

afterAll(() => {
  const lines = [...timing].map(([k, t]) => `${k}: ${t.runs} runs, ${(t.ms / 1000).toFixed(1)} s (reference ${(t.refMs / 1000).toFixed(1)} s)`);
  const errs = [...worst].map(([k, w]) => `${k}: worst relative RMSE ${w.rel.toExponential(2)}`);
  console.log(`schedules (seed ${SEED}, cost cap ${COST_CAP}):\n${lines.join('\n')}\n${errs.join('\n')}`);
});
