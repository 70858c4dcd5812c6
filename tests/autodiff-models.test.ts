// RetNet's building blocks (models/retnet.ret) against finite differences of the float64
// reference interpreter, at two or three shapes each: rotation (theta_shift), RMSNorm, linear,
// multi-scale retention (msr: head splits, rotation, per-head decays, per-position scale, group
// norm, swish gate), the GLU feed-forward with swish and with gelu, and the pre-norm block
// (rmsnorm, msr, residual, rmsnorm, GLU, residual) with either activation, stated in a test
// file over retnet.ret's functions with every weight a parameter; and the model's own layer
// (`layer layers { fn forward }`, torchscale's weights by name) for act = swish and gelu.
//
// Checked against the same differences (tests/helpers/fd.ts: fourth-order central differences,
// random directions for every parameter, every coordinate of the small ones):
//   literal     reverse-mode autodiff, run by the reference interpreter (float64), bar 1e-7;
//   factorised  the gradient the compiler lowers (toGradientIr), float64, bar 1e-7;
//   compiled    the backward plans of every schedule on the CPU executor (float32), bar 1e-5.
// The model's layer reads its weights by name, which compiled plans do not bind (yet): literal
// and factorised only, the gradient of x. Measured errors: float64 <= ~1e-9 (1.5e-8 for d/d eps,
// whose step is 1e-9), float32 plans <= 2.4e-6 (printed at the end): the bars sit 4-7x above.
// Every check has teeth: the same gradients scaled by (1 + 30 bar) must fail it.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import type { CheckedFn } from '../dsl/checked.js';
import { instantiateModel, loadProgram } from '../dsl/program.js';
import { runFunction, type RunOptions, type Value } from '../dsl/reference/interpreter.js';
import { lowerFn, toChecked } from '../compiler/ir.js';
import { gradient, upstreamName } from '../compiler/autodiff.js';
import { toGradientIr } from '../compiler/plan.js';
import { FORMS } from '../compiler/schedule.js';
import { loadFn, plan, prng, runPlan, tensor, uniform } from './helpers/harness.js';
import { type Bars, compare, type FdCase, type FdData, finiteDifferences, floatParams, type GradValues, scaled, Worst } from './helpers/fd.js';

const F64: Bars = { directional: 1e-7, coords: 1e-7, decayPlain: 1e-7, decayNatural: 1e-7 };
const F32: Bars = { directional: 1e-5, coords: 1e-5, decayPlain: 1e-5, decayNatural: 1e-5 };
const TEETH = 30;

// The GLU feed-forward and the block over retnet.ret's functions, every weight a parameter.
const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'retnetc-blocks-'));
const glu = (act: string): string => `
fn glu_${act}(x: f32[B, T, D], fc1: f32[F, D], gate: f32[F, D], fc2: f32[D, F]) -> y: f32[B, T, D] {
  let a = linear(x, fc1)
  let g = linear(x, gate)
  let z[b, t, f] = ${act}(a[b, t, f]) * g[b, t, f]
  y = linear(z, fc2)
}`;
const block = (act: string): string => `
fn block_${act}[H](x: f32[B, T, H*K], ln1: f32[H*K], wq: f32[H*K, H*K], wk: f32[H*K, H*K], wv: f32[H*V, H*K],
                   wg: f32[H*V, H*K], wo: f32[H*K, H*V], ln2: f32[H*K], fc1: f32[F, H*K], gate: f32[F, H*K],
                   fc2: f32[H*K, F], eps: f32 = 1e-6) -> y: f32[B, T, H*K] {
  let xn = rmsnorm(x, ln1, eps)
  let m = msr[H = H](xn, wq, wk, wv, wg, wo, eps)
  let h[b, t, c] = x[b, t, c] + m[b, t, c]
  let hn = rmsnorm(h, ln2, eps)
  let a = linear(hn, fc1)
  let g = linear(hn, gate)
  let z[b, t, f] = ${act}(a[b, t, f]) * g[b, t, f]
  let f2 = linear(z, fc2)
  y[b, t, c] = h[b, t, c] + f2[b, t, c]
}`;
const blocksFile = path.join(dir, 'blocks.ret');
fs.writeFileSync(blocksFile, `import "${path.relative(dir, path.join(ROOT, 'models', 'retnet.ret'))}"\n${glu('swish')}\n${glu('gelu')}\n${block('swish')}\n${block('gelu')}\n`);
const blocks = loadProgram(blocksFile);
fs.rmSync(dir, { recursive: true, force: true });
const blockFn = (name: string): CheckedFn => {
  if (blocks.diagnostics.length) throw new Error(`test blocks: ${blocks.diagnostics.map((d) => d.message).join('; ')}`);
  return blocks.checked!.fns.get(name)!;
};

interface BlockCase {
  fn: () => CheckedFn;
  shapes: Record<string, number[]>[];
  /** Sizes that no input determines (msr's H), per shape. */
  sizes?: (s: Record<string, number[]>) => Record<string, number>;
  /** Relative finite-difference steps (eps: 1e-9: where a head's o row is small the group norm's rsqrt(ms + eps) curves on the scale of eps itself). */
  relStep?: Record<string, number>;
  /** Inputs other than uniform [-1, 1): weights scaled by 1/sqrt(fan-in), eps. */
  special?: (name: string, shape: number[], rand: () => number) => Value | undefined;
}

const fanIn = (name: string, shape: number[], rand: () => number): Value | undefined => {
  if (name === 'eps') return tensor([], () => 1e-6);
  // RMSNorm weights around 1, matrices scaled by their fan-in (keeps activations O(1)).
  if (/^(w|ln1|ln2)$/.test(name) && shape.length === 1) return tensor(shape, () => 0.5 + rand());
  if (shape.length === 2) return tensor(shape, () => (rand() * 2 - 1) / Math.sqrt(shape[1]!));
  return undefined;
};
const msrShapes = (B: number, T: number, H: number, K: number, V: number): Record<string, number[]> => ({
  x: [B, T, H * K], wq: [H * K, H * K], wk: [H * K, H * K], wv: [H * V, H * K], wg: [H * V, H * K], wo: [H * K, H * V], eps: [], H: [H], K: [K], V: [V],
});
const blockShapes = (B: number, T: number, H: number, K: number, V: number, F: number): Record<string, number[]> => ({
  ...msrShapes(B, T, H, K, V), ln1: [H * K], ln2: [H * K], fc1: [F, H * K], gate: [F, H * K], fc2: [H * K, F],
});
const headSizes = (s: Record<string, number[]>): Record<string, number> => ({ H: s.H![0]!, K: s.K![0]!, V: s.V![0]! });

const CASES: Record<string, BlockCase> = {
  // K = 6: three pairs turning by three different angles; K = 2: theta_0 = 1.
  theta_shift: { fn: () => loadFn('retnet', 'theta_shift'), shapes: [{ x: [1, 2, 5, 6] }, { x: [2, 1, 9, 4] }, { x: [1, 1, 7, 2] }] },
  rmsnorm: { fn: () => loadFn('retnet', 'rmsnorm'), shapes: [{ x: [2, 3, 4], w: [4], eps: [] }, { x: [1, 7, 5], w: [5], eps: [] }], special: fanIn },
  linear: { fn: () => loadFn('retnet', 'linear'), shapes: [{ x: [2, 3, 4], w: [5, 4] }, { x: [1, 7, 3], w: [2, 3] }] },
  msr: {
    fn: () => loadFn('retnet', 'msr'), shapes: [msrShapes(1, 5, 2, 2, 3), msrShapes(2, 9, 3, 2, 3), msrShapes(1, 6, 1, 4, 2)],
    sizes: headSizes, relStep: { eps: 1e-9 }, special: fanIn,
  },
  glu_swish: { fn: () => blockFn('glu_swish'), shapes: [{ x: [2, 3, 4], fc1: [5, 4], gate: [5, 4], fc2: [4, 5] }, { x: [1, 6, 3], fc1: [2, 3], gate: [2, 3], fc2: [3, 2] }], special: fanIn },
  glu_gelu: { fn: () => blockFn('glu_gelu'), shapes: [{ x: [2, 3, 4], fc1: [5, 4], gate: [5, 4], fc2: [4, 5] }, { x: [1, 6, 3], fc1: [2, 3], gate: [2, 3], fc2: [3, 2] }], special: fanIn },
  block_swish: { fn: () => blockFn('block_swish'), shapes: [blockShapes(1, 5, 2, 2, 3, 5), blockShapes(2, 7, 1, 3, 2, 4)], sizes: headSizes, relStep: { eps: 1e-9 }, special: fanIn },
  block_gelu: { fn: () => blockFn('block_gelu'), shapes: [blockShapes(1, 5, 2, 2, 3, 5), blockShapes(2, 7, 1, 3, 2, 4)], sizes: headSizes, relStep: { eps: 1e-9 }, special: fanIn },
};

const worst = new Worst();

function checkWithTeeth(label: string, grads: GradValues, fd: FdData, bars: Bars, params: string[], tag: string): string[] {
  const problems = compare(label, grads, fd, bars, new Map(), worst, tag);
  const bad = compare(label, scaled(grads, TEETH * Math.max(bars.directional, bars.coords)), fd, bars);
  for (const p of params) if (!bad.some((m) => m.includes(`grad.${p}`))) problems.push(`${label}: no teeth: grad.${p} scaled by 1 + ${TEETH} bar still passes`);
  return problems;
}

function upstreamsOf(fn: CheckedFn, inputs: ReadonlyMap<string, Value>, opts: RunOptions, rand: () => number): Map<string, Value> {
  const outs = runFunction(fn, inputs, opts);
  return new Map(fn.outputs.map((o) => [upstreamName(o.name), uniform(outs.get(o.name)!.shape, rand)]));
}

for (const [name, bc] of Object.entries(CASES)) {
  describe(`${name}: gradients vs finite differences of the float64 reference`, () => {
    for (const [si, s] of bc.shapes.entries()) {
      const shape = Object.entries(s).map(([k, v]) => `${k}[${v.join(',')}]`).join(' ');
      test(`${shape}: literal, factorised and compiled (${FORMS.join(', ')}) gradients`, () => {
        const fn = bc.fn();
        const rand = prng(500 + 37 * si + name.length);
        const inputs = new Map<string, Value>();
        for (const p of fn.params) {
          const sh = s[p.name];
          if (!sh) continue; // a parameter with a default (eps) the case leaves out
          inputs.set(p.name, bc.special?.(p.name, sh, rand) ?? uniform(sh, rand));
        }
        const sizes = bc.sizes?.(s) ?? {};
        const opts: RunOptions = { sizes: new Map(Object.entries(sizes)) };
        const ups = upstreamsOf(fn, inputs, opts, rand);
        const c: FdCase = { label: `${name} ${shape}`, fn, inputs, ups, opts };
        const fd = finiteDifferences(c, { relStep: bc.relStep }, prng(91 + si));
        const params = floatParams(fn).filter((p) => inputs.has(p));
        expect([...fd.dirs.keys()].sort()).toEqual([...params].sort());
        const all = new Map([...inputs, ...ups]);
        const problems: string[] = [];
        problems.push(...checkWithTeeth(`${c.label} literal`, runFunction(toChecked(gradient(lowerFn(fn))), all, opts), fd, F64, params, `${name} literal`));
        problems.push(...checkWithTeeth(`${c.label} factorised`, runFunction(toChecked(toGradientIr(fn)), all, opts), fd, F64, params, `${name} factorised`));
        for (const form of FORMS) {
          const p = plan(fn, form, 4, true, sizes);
          problems.push(...checkWithTeeth(`${c.label} ${form} plan (float32)`, runPlan(p, all), fd, F32, params, `${name} ${form}`));
        }
        expect(problems, problems.slice(0, 12).join('\n')).toEqual([]);
      }, 120_000);
    }
  });
}

// The model's own layer: torchscale's weights by name, act from the model's hyper parameter.
const layerOuts = new Map<string, Float64Array>();
describe('retnet model layer (layers.0.forward): gradient of x vs finite differences', () => {
  for (const act of ['swish', 'gelu']) {
    test(`act = ${act}: literal and factorised`, () => {
      const program = loadProgram('models/retnet.ret');
      const model = instantiateModel(program, 'retnet', 'default', { embed_dim: 6, value_dim: 8, heads: 2, ffn_dim: 5, n_layers: 1, vocab: 7, act });
      const call = model.forward.body.find((s) => s.k === 'call' && s.callee.kind === 'layer');
      if (!call || call.k !== 'call' || call.callee.kind !== 'layer') throw new Error('retnet: no layer call in the model forward');
      const fn = call.callee.layer.forward;
      const rand = prng(71);
      const weights = new Map<string, Value>();
      for (const w of model.weights) weights.set(w.name, w.shape.length === 1 ? tensor(w.shape, () => 0.5 + rand()) : tensor(w.shape, () => (rand() * 2 - 1) / Math.sqrt(w.shape[w.shape.length - 1]!)));
      const opts: RunOptions = { weights, weightPrefix: 'layers.0.' };
      const inputs = new Map<string, Value>([['x', uniform([2, 5, 6], rand)]]);
      const ups = upstreamsOf(fn, inputs, opts, rand);
      const c: FdCase = { label: `retnet layer act=${act}`, fn, inputs, ups, opts };
      const fd = finiteDifferences(c, { directions: 4 }, prng(93));
      const all = new Map([...inputs, ...ups]);
      const problems = [
        ...checkWithTeeth(`${c.label} literal`, runFunction(toChecked(gradient(lowerFn(fn))), all, opts), fd, F64, ['x'], `layer ${act} literal`),
        ...checkWithTeeth(`${c.label} factorised`, runFunction(toChecked(toGradientIr(fn)), all, opts), fd, F64, ['x'], `layer ${act} factorised`),
      ];
      expect(problems, problems.slice(0, 12).join('\n')).toEqual([]);
      expect(fd.coords.get('x')?.length).toBe(60);
      layerOuts.set(act, runFunction(fn, inputs, opts).get('y')!.data);
    }, 120_000);
  }
  // The act hyper parameter takes effect (same weights and x, seeds aside): the layers differ.
  test('act = swish and act = gelu give different layers', () => {
    const a = layerOuts.get('swish'), b = layerOuts.get('gelu');
    expect(a && b).toBeTruthy();
    let d = 0;
    for (let i = 0; i < a!.length; i++) d = Math.max(d, Math.abs(a![i]! - b![i]!));
    expect(d).toBeGreaterThan(1e-3);
  });
});

afterAll(() => {
  console.log(`autodiff-models: worst errors:\n  ${worst.lines().join('\n  ')}`);
});
