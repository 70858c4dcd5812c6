// The backward of whole models (compiler/model-grad.ts, runtime/model-backward.ts) against
// central finite differences of the float64 reference interpreter (runModel), on tiny RetNets:
// embed_dim 8, value_dim 8, heads 2, ffn_dim 12, n_layers 2, vocab 11, B 2, T 7 (not a
// multiple of the chunk 3), for the parallel, chunkwise and recurrent schedules (float32 plans
// on the CPU executor), with the loss L = sum(logits * R) for a fixed random R.
//
// Configurations: act = swish without options; swish with scale_embedding = 1 and
// layernorm_embedding = 1 (layernorm_embedding.weight exists and gets a gradient); gelu with
// both options. Every weight's gradient is compared, per tensor, by the relative RMSE
// RMS(g - fd) / RMS(fd) over all its entries when it has at most 64, else over 24 random
// entries; the bar is 1e-4. The differences are fourth-order central ones with step 1e-4
// (truncation O(h^4), rounding ~1e-16 |L| / h): float64 truth far below the bar, which bounds
// the float32 plans (measured: <= 3.2e-6 for every weight and schedule, printed at the end).
// The check has teeth: each weight's gradient scaled by 1.01 must fail it.
//
// Also: the forward outputs the backward returns are runModelPlan's, bit for bit; rows of the
// embedding whose token does not occur get exactly zero; a toy model that calls one unrepeated
// layer twice (its weights are tied: both calls bind `blk.w`) and reads a tensor in two steps
// checks that the gradients of tied weights and of tensors read twice are summed.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import type { CheckedModel } from '../dsl/checked.js';
import { instantiateModel, loadProgram } from '../dsl/program.js';
import { runModel, type Value } from '../dsl/reference/interpreter.js';
import { compileModelGrad } from '../compiler/model-grad.js';
import { compileModel } from '../compiler/pipeline.js';
import { boundWeights } from '../compiler/model-split.js';
import { type Form, makeSchedule } from '../compiler/schedule.js';
import { runPlanCpu } from '../runtime/plan-runner.js';
import { type HostValue, type PlanExec, runModelPlan } from '../runtime/model-runner.js';
import { runModelBackward } from '../runtime/model-backward.js';
import { prng } from './helpers/harness.js';

const BAR = 1e-4;
const TEETH = 1.01;
const FULL = 64;
const SAMPLE = 24;
const B = 2, T = 7, VOCAB = 11;
const CHUNK = 3;
const FORMS: readonly Form[] = ['parallel', 'chunkwise', 'recurrent'];
const exec: PlanExec = async (p, i) => runPlanCpu(p, i as ReadonlyMap<string, Value>);

const numel = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);

interface Config { label: string; act: string; scale_embedding: number; layernorm_embedding: number }
const CONFIGS: Config[] = [
  { label: 'swish', act: 'swish', scale_embedding: 0, layernorm_embedding: 0 },
  { label: 'swish scale_embedding layernorm_embedding', act: 'swish', scale_embedding: 1, layernorm_embedding: 1 },
  { label: 'gelu scale_embedding layernorm_embedding', act: 'gelu', scale_embedding: 1, layernorm_embedding: 1 },
];

const retnet = loadProgram('models/retnet.ret');
const tinyModel = (c: Config): CheckedModel => instantiateModel(retnet, 'retnet', 'default', {
  embed_dim: 8, value_dim: 8, heads: 2, ffn_dim: 12, n_layers: 2, vocab: VOCAB, act: c.act, eps: 1e-6,
  scale_embedding: c.scale_embedding, layernorm_embedding: c.layernorm_embedding,
});

/** Weights rounded to float32: norms around 1, matrices scaled by their fan-in, embeddings O(1). */
function randomWeights(model: CheckedModel, rand: () => number): Map<string, Value> {
  const w = new Map<string, Value>();
  for (const cw of model.weights) {
    const shape = [...cw.shape];
    const n = numel(shape);
    const f = shape.length === 1 ? () => 0.5 + rand() : cw.name === 'embed_tokens.weight' ? () => rand() * 2 - 1 : () => (rand() * 2 - 1) / Math.sqrt(shape[1]!);
    w.set(cw.name, { shape, data: Float64Array.from({ length: n }, () => Math.fround(f())) });
  }
  return w;
}

/** Tokens in 0 .. VOCAB - 2: the last row of the embedding is never read. */
const randomTokens = (rand: () => number): Value => ({ shape: [B, T], data: Float64Array.from({ length: B * T }, () => Math.floor(rand() * (VOCAB - 1))) });

function lossOf(model: CheckedModel, weights: ReadonlyMap<string, Value>, tokens: Value, R: Float64Array): number {
  const y = runModel(model, weights, new Map([['tokens', tokens]])).get('logits')!.data;
  let L = 0;
  for (let i = 0; i < y.length; i++) L += y[i]! * R[i]!;
  return L;
}

interface FdSample { idx: number[]; fd: Float64Array }

/** Fourth-order central differences of the reference loss at the chosen entries of every weight. */
function fdGradients(model: CheckedModel, weights: Map<string, Value>, tokens: Value, R: Float64Array, rand: () => number): Map<string, FdSample> {
  const out = new Map<string, FdSample>();
  for (const [name, w] of weights) {
    const n = w.data.length;
    let idx = [...Array(n).keys()];
    if (n > FULL) {
      for (let i = n - 1; i > 0; i--) { const j = Math.floor(rand() * (i + 1)); [idx[i], idx[j]] = [idx[j]!, idx[i]!]; }
      idx = idx.slice(0, SAMPLE).sort((a, b) => a - b);
    }
    const fd = new Float64Array(idx.length);
    idx.forEach((k, j) => {
      const h = 1e-4 * Math.max(1, Math.abs(w.data[k]!));
      const at = (t: number): number => {
        const data = Float64Array.from(w.data);
        data[k] = data[k]! + t;
        return lossOf(model, new Map([...weights, [name, { shape: w.shape, data }]]), tokens, R);
      };
      fd[j] = (8 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12 * h);
    });
    out.set(name, { idx, fd });
  }
  return out;
}

function relErr(g: ArrayLike<number>, s: FdSample, scale = 1): number {
  let dd = 0, ff = 0;
  s.idx.forEach((k, j) => { const e = g[k]! * scale - s.fd[j]!; dd += e * e; ff += s.fd[j]! ** 2; });
  return ff > 0 ? Math.sqrt(dd / ff) : Math.sqrt(dd / s.idx.length);
}

const worst = new Map<string, { err: number; at: string }>();
const table: string[] = [];

for (const [ci, cfg] of CONFIGS.entries()) {
  describe(`retnet tiny (${cfg.label}): model backward vs finite differences of the float64 reference`, () => {
    const model = tinyModel(cfg);
    const rand = prng(1234 + 17 * ci);
    const weights = randomWeights(model, rand);
    const tokens = randomTokens(rand);
    const R = Float64Array.from({ length: B * T * VOCAB }, () => Math.fround(rand() * 2 - 1));
    let fd: Map<string, FdSample> | undefined;
    const fdOnce = (): Map<string, FdSample> => (fd ??= fdGradients(model, weights, tokens, R, prng(99 + ci)));

    test('binds the weights the configuration has', () => {
      const bound = [...boundWeights(compileModel(model, makeSchedule('parallel')).program).keys()].sort();
      expect(bound).toEqual(model.weights.map((w) => w.name).sort());
      expect(bound.includes('layernorm_embedding.weight')).toBe(cfg.layernorm_embedding === 1);
    });

    for (const form of FORMS) {
      test(`${form}: every weight's gradient within ${BAR}, with teeth; forward as runModelPlan`, async () => {
        const sched = makeSchedule(form, CHUNK);
        const mg = compileModelGrad(model, sched);
        expect(compileModelGrad(model, sched)).toBe(mg);
        // One backward plan per distinct function: the two layers share one.
        expect(mg.plans.length).toBe(mg.program.fns.length);
        expect(mg.program.steps.length).toBe(mg.program.fns.length + 1);
        const toks: HostValue = { shape: tokens.shape, data: Int32Array.from(tokens.data) };
        const inputs = new Map([['tokens', toks]]);
        const dOut = new Map([['logits', { shape: [B, T, VOCAB], data: R }]]);
        const { outputs, grads } = await runModelBackward(mg, weights, inputs, dOut, exec);

        const fwd = await runModelPlan(compileModel(model, sched), weights, inputs, exec);
        expect([...outputs.keys()]).toEqual(['logits']);
        expect(Array.from(outputs.get('logits')!.data)).toEqual(Array.from(fwd.outputs.get('logits')!.data));

        expect([...grads.keys()].sort()).toEqual([...weights.keys()].sort());
        const emb = grads.get('embed_tokens.weight')!;
        const used = new Set(Array.from(tokens.data));
        for (let v = 0; v < VOCAB; v++) if (!used.has(v)) for (let c = 0; c < 8; c++) expect(emb.data[v * 8 + c]).toBe(0);

        const samples = fdOnce();
        const problems: string[] = [];
        const row: string[] = [];
        for (const [name, s] of samples) {
          const g = grads.get(name)!;
          expect(g.shape).toEqual(weights.get(name)!.shape);
          const err = relErr(g.data, s);
          row.push(`${name} ${err.toExponential(1)}`);
          const key = `${form}`;
          if (!(err <= (worst.get(key)?.err ?? -1))) worst.set(key, { err, at: `${name} (${cfg.label})` });
          if (!(err <= BAR)) problems.push(`${form} ${cfg.label}: ${name} relative RMSE ${err.toExponential(2)} > ${BAR}`);
          const bad = relErr(g.data, s, TEETH);
          if (!(bad > BAR)) problems.push(`${form} ${cfg.label}: no teeth: ${name} scaled by ${TEETH} gives ${bad.toExponential(2)}`);
        }
        table.push(`${cfg.label} / ${form}:\n    ${row.join('\n    ')}`);
        expect(problems, problems.join('\n')).toEqual([]);
      }, 60_000);
    }
  });
}

// A toy model: one unrepeated layer called twice (both calls bind blk.w: tied), and the
// embedding read by the first layer call and by the last part (its gradient is summed).
describe('toy model: tied weights and tensors read by several steps', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'retnetc-model-grad-'));
  const file = path.join(dir, 'toy.ret');
  fs.writeFileSync(file, `
model toy {
  hyper d = 3
  hyper vocab = 5
  weight emb: f32[vocab, d] ~ normal(0, 1)
  layer blk {
    weight w: f32[d, d] ~ xavier_uniform
    fn forward(x: f32[B, T, d]) -> y: f32[B, T, d] {
      y[b, t, c] = x[b, t, c] + tanh(sum[e] x[b, t, e] * w[c, e])
    }
  }
  weight out: f32[vocab, d] ~ normal(0, 1)
  fn forward(tokens: i32[B, T]) -> logits: f32[B, T, vocab] {
    let x[b, t, c] = emb[tokens[b, t], c]
    let y = blk(x)
    let z = blk(y)
    let s[b, t, c] = z[b, t, c] * x[b, t, c]
    logits[b, t, v] = sum[c] s[b, t, c] * out[v, c]
  }
}
`);
  const program = loadProgram(file);
  fs.rmSync(dir, { recursive: true, force: true });

  test('gradients of the tied weight and of the twice-read embedding output are sums', async () => {
    expect(program.diagnostics.map((d) => d.message)).toEqual([]);
    const model = instantiateModel(program, 'toy');
    const rand = prng(7);
    const weights = randomWeights(model, rand);
    expect([...weights.keys()].sort()).toEqual(['blk.w', 'emb', 'out']);
    const Bt = 2, Tt = 4;
    const tokens: Value = { shape: [Bt, Tt], data: Float64Array.from({ length: Bt * Tt }, (_, i) => (i * 3) % 5) };
    const R = Float64Array.from({ length: Bt * Tt * 5 }, () => Math.fround(rand() * 2 - 1));
    const mg = compileModelGrad(model, makeSchedule('parallel'));
    const steps = mg.program.steps.map((s) => mg.program.fns[s.fn]!.name);
    // part, blk, blk, part: the two blk steps run one plan and bind the same weight.
    expect(steps.length).toBe(4);
    expect(mg.program.steps[1]!.fn).toBe(mg.program.steps[2]!.fn);
    const { grads } = await runModelBackward(mg, weights, new Map([['tokens', { shape: tokens.shape, data: Int32Array.from(tokens.data) }]]), new Map([['logits', { shape: [Bt, Tt, 5], data: R }]]), exec);
    const toyFd = (() => {
      const out = new Map<string, FdSample>();
      for (const [name, w] of weights) {
        const idx = [...Array(w.data.length).keys()];
        const fdv = new Float64Array(idx.length);
        for (const k of idx) {
          const h = 1e-4;
          const at = (t: number): number => { const data = Float64Array.from(w.data); data[k] = data[k]! + t; return lossOf(model, new Map([...weights, [name, { shape: w.shape, data }]]), tokens, R); };
          fdv[k] = (8 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12 * h);
        }
        out.set(name, { idx, fd: fdv });
      }
      return out;
    })();
    for (const [name, s] of toyFd) {
      const err = relErr(grads.get(name)!.data, s);
      table.push(`toy ${name} ${err.toExponential(1)}`);
      expect(err, name).toBeLessThan(BAR);
      expect(relErr(grads.get(name)!.data, s, TEETH), name).toBeGreaterThan(BAR);
    }
  }, 60_000);
});

afterAll(() => {
  console.log(`model-grad: relative RMSE per weight (float32 plans vs float64 finite differences):\n  ${table.join('\n  ')}\n  worst per schedule: ${[...worst].map(([k, v]) => `${k} ${v.err.toExponential(2)} (${v.at})`).join('; ')}`);
});
