// Dense contractions (compiler/dense.ts, compiler/lower/dense.ts): which statements of RetNet's
// layer are tiled matrix products, and the tiled kernel equals the elementwise kernel of the
// same statement on the CPU executor (the reference semantics of kernel IR) for random ragged
// shapes, batch dimensions, transposed operands, head splits, one-hot weight gradients,
// fused tails, runtime or specialised sizes, split-K and every tile shape.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { CVar, ReduceVar } from '../dsl/checked.js';
import { dsym } from '../dsl/dims.js';
import { analyse } from '../compiler/analysis.js';
import { recogniseDense, denseToString, type Dense } from '../compiler/dense.js';
import { add, binary, cnst, idx, ld, mulN, type Node, reduce, unary } from '../compiler/ir.js';
import type { Kernel } from '../compiler/kir.js';
import { ExprLowering, sizeParam } from '../compiler/lower/expr.js';
import { lowerElementwise } from '../compiler/lower/generic.js';
import { chooseDenseTile, DEFAULT_DENSE_TILE, denseTileOf, denseSharedBytes, type DenseTile, denseTileProblem, lowerDense, SMALL_DENSE_TILE, SPLITK_DENSE_TILE } from '../compiler/lower/dense.js';
import { toGradientIr, toIr, withoutDeadStatements } from '../compiler/plan.js';
import { runKernel } from '../targets/cpu/executor.js';
import { emitKernel } from '../targets/emit.js';
import { fromHalfArray, toHalfArray } from '../targets/half.js';
import { assertProperty, fcSeed, loadFn, relErr, runsScale } from './helpers/harness.js';
import { type Case, caseOf, cvar, inputsOf, type Kind, KINDS, numel, rv, shapeOf } from './helpers/dense-cases.js';

// ---- building and running one statement's kernels ------------------------------------------

/** A kernel with its buffers and scalars filled in as compiler/plan.ts does. */
function finish(k: Kernel, L: ExprLowering): Kernel {
  k.buffers = [...L.buffers.values()].map((b) => ({ name: b.name, type: b.type, access: b.written ? 'read_write' as const : 'read' as const }));
  k.scalars = [...L.sizes.runtime].sort().map((a) => ({ name: sizeParam(a), type: 'i32' as const }));
  return k;
}

/** The elementwise and the tiled kernel of a case (sizes specialised or runtime scalars). */
export function kernelsOf(c: Case, tile: DenseTile, specialise: boolean): { ew: Kernel; dense: Kernel; d: Dense; ewL: ExprLowering; dL: ExprLowering } {
  const d = recogniseDense(c.s, c.vars);
  if (!d) throw new Error(`not dense: ${c.s.target}`);
  const consts = specialise ? c.sizes : new Map<string, number>();
  const ewL = new ExprLowering(c.vars, { constants: consts, runtime: new Set() });
  const ew = finish(lowerElementwise('ew', c.s, ewL, 64), ewL);
  const dL = new ExprLowering(c.vars, { constants: consts, runtime: new Set() });
  const dense = finish(lowerDense('dense', c.s, d, dL, tile), dL);
  return { ew, dense, d, ewL, dL };
}

export function scalarsOf(k: Kernel, c: Case): Record<string, number> {
  return Object.fromEntries(k.scalars.map((s) => [s.name, c.sizes.get([...c.sizes.keys()].find((a) => sizeParam(a) === s.name)!)!]));
}

function runCpu(k: Kernel, L: ExprLowering, c: Case, inputs: Map<string, Float32Array>): Float32Array {
  const outB = L.buffers.get(c.s.target)!.name;
  const y = new Float32Array(numel(shapeOf(c, c.s.target))).fill(NaN);
  runKernel(k, { buffers: { ...Object.fromEntries(inputs), [outB]: y }, scalars: scalarsOf(k, c) });
  return y;
}

/** Runs both kernels of a case on the CPU executor: relative RMSE of tiled against elementwise. */
function agree(c: Case, tile: DenseTile, specialise: boolean, seed: number): { rel: number; nonFinite: number } {
  const { ew, dense, ewL, dL } = kernelsOf(c, tile, specialise);
  const inputs = inputsOf(c, ewL, seed);
  const want = runCpu(ew, ewL, c, inputs);
  const got = runCpu(dense, dL, c, inputs);
  const e = relErr(got, want);
  return { rel: e.rel, nonFinite: e.nonFinite };
}

// ---- recognition on RetNet ------------------------------------------------------------------

/** Every statement of a function with the dense summary (or '-'), contractions marked. */
function recognised(name: string, backward: boolean): Map<string, string> {
  const fn = loadFn('retnet', name);
  const { fn: ir, contractions } = analyse(withoutDeadStatements(backward ? toGradientIr(fn) : toIr(fn)));
  const out = new Map<string, string>();
  for (const s of ir.body) {
    const d = contractions.has(s.target) ? undefined : recogniseDense(s, ir.vars);
    out.set(s.target, contractions.has(s.target) ? 'causal' : d ? denseToString(d).replace(/^dense [^:]*: /, '') : '-');
  }
  return out;
}

describe('recognition', () => {
  it("msr's forward: the five projections are dense, nothing else", () => {
    const r = recognised('msr', false);
    expect(Object.fromEntries([...r].filter(([, v]) => v !== '-'))).toEqual({
      q: 'batch [-] m [b,t] n [h,i] k [c]; a = x, b = wq',
      k: 'batch [-] m [b,t] n [h,i] k [c]; a = x, b = wk',
      v: 'batch [-] m [b,t] n [h,j] k [c]; a = x, b = wv',
      r: 'causal', '%n1.o': 'causal',
      g: 'batch [-] m [b,t] n [e] k [c]; a = x, b = wg',
      y: 'batch [-] m [b,t] n [c] k [e]; a = gated, b = wo',
    });
    // Rotation, decays, the per-position scale, the group norm's row sums (sum[j] o^2 / V), the gate: elementwise.
    for (const t of ['qr', 'kr', 'gamma', 'o', 'ms', 'gated']) expect(r.get(t), t).toBe('-');
  });

  it("msr's backward: data gradients and weight gradients (K = B*T, one-hot head splits) are dense", () => {
    const r = recognised('msr', true);
    const dense = Object.fromEntries([...r].filter(([k, v]) => k.startsWith('%d.') && v !== '-' && v !== 'causal'));
    expect(dense).toEqual({
      '%d.gated.2': "batch [-] m [b,t] n [e'1] k [c]; a = grad.y, b = wo",
      '%d.wo.3': "batch [-] m [c] n [e'1] k [b,t]; a = grad.y, b = gated",
      '%d.x.12': "batch [-] m [b,t] n [c'11] k [e]; a = %d.g.4, b = wg",
      '%d.wg.13': "batch [-] m [e] n [c'11] k [b,t]; a = %d.g.4, b = x",
      '%d.x.54': "batch [-] m [b,t] n [c'53] k [h,j]; a = %d.v.33, b = wv",
      '%d.wv.56': "batch [-] m [h,j] n [c'53] k [b,t]; a = %d.v.33, b = x",
      '%d.x.59': "batch [-] m [b,t] n [c'58] k [h,i]; a = %d.k.total57, b = wk",
      '%d.wk.61': "batch [-] m [h,i] n [c'58] k [b,t]; a = %d.k.total57, b = x",
      '%d.x.64': "batch [-] m [b,t] n [c'63] k [h,i]; a = %d.q.total62, b = wq",
      '%d.wq.66': "batch [-] m [h,i] n [c'63] k [b,t]; a = %d.q.total62, b = x",
    });
    // Not dense: the eps gradient (a sum of many factors into a scalar), the one-hot scatter
    // back into heads (%d.o.7: no sum left), the row-sum gradients, the rotation's gradients.
    for (const t of ['%d.g.4', '%d.o.7', '%d.ms.9', '%d.eps.10', '%d.o.15', '%d.k.40', '%d.q.48', '%d.x.total67']) expect(r.get(t), t).toBe('-');
  });

  it('the layer forward: rmsnorm row sums are not dense, the FFN and the projections are', () => {
    const fn = loadFn('retnet', 'linear');
    const { fn: ir } = analyse(toIr(fn));
    expect(ir.body.map((s) => recogniseDense(s, ir.vars) !== undefined)).toEqual([true]);
    const rms = analyse(toIr(loadFn('retnet', 'rmsnorm'))).fn;
    expect(rms.body.map((s) => recogniseDense(s, rms.vars) !== undefined)).toEqual([false, false]);
  });

  it('refuses: three tensors in the sum, a factor that depends on the summed index, a matrix-vector product, a range constraint', () => {
    const c = caseOf('nt', 2, 3, 4, 5, 1);
    const [b, t, cc, o] = ['b', 't', 'c', 'o'].map(idx) as [Node, Node, Node, Node];
    c.vars.set('z', cvar('z', [dsym('C')]));
    c.vars.set('u', cvar('u', [dsym('C')]));
    const sum = (body: Node, cons: ReduceVar[] = [rv('c', dsym('C'))]) => reduce({ op: 'sum', vars: cons, cons: [] }, body, []);
    const base = { target: 'y', indices: c.s.indices };
    expect(recogniseDense({ ...base, value: sum(mulN(mulN(ld('x', [b, t, cc]), ld('w', [o, cc])), ld('z', [cc]))) }, c.vars)).toBeUndefined();
    expect(recogniseDense({ ...base, value: sum(mulN(mulN(ld('x', [b, t, cc]), ld('w', [o, cc])), unary('exp', binary('*', cnst(1), unary('float', cc))))) }, c.vars)).toBeUndefined();
    expect(recogniseDense({ ...base, value: sum(mulN(ld('x', [b, t, cc]), ld('u', [cc]))) }, c.vars)).toBeUndefined();
    expect(recogniseDense({ ...base, value: reduce({ op: 'sum', vars: [rv('c', dsym('C'))], cons: [{ name: 'c', op: '<=', }] }, mulN(ld('x', [b, t, cc]), ld('w', [o, cc])), [o]) }, c.vars)).toBeUndefined();
    // An index that is not a mixed-radix split over the dimension (o + 1 may leave w): elementwise.
    expect(recogniseDense({ ...base, value: sum(mulN(ld('x', [b, t, cc]), ld('w', [add(o, cnst(1, 'int')), cc]))) }, c.vars)).toBeUndefined();
    expect(recogniseDense(c.s, c.vars)).toBeDefined();
  });
});

// ---- agreement ------------------------------------------------------------------------------

const TILES: DenseTile[] = [
  DEFAULT_DENSE_TILE, SPLITK_DENSE_TILE, SMALL_DENSE_TILE,
  { m: 64, n: 64, k: 16, regM: 4, regN: 4, splitK: 1 },
  { m: 32, n: 32, k: 16, regM: 2, regN: 2, splitK: 1 },
  { m: 16, n: 64, k: 8, regM: 2, regN: 4, splitK: 2 },
  { m: 8, n: 8, k: 4, regM: 1, regN: 1, splitK: 1 },
  { m: 16, n: 8, k: 4, regM: 4, regN: 1, splitK: 8 },
  // Unstaged (k = 0): operands straight from the buffers, no barriers (with split-K: only the tree's).
  { m: 64, n: 64, k: 0, regM: 8, regN: 8, splitK: 1 },
  { m: 32, n: 32, k: 0, regM: 4, regN: 4, splitK: 4 },
];

describe('the tiled kernel equals the elementwise kernel (CPU executor)', () => {
  it('tiles fit WebGPU: 256 threads, 16 KiB of workgroup memory', () => {
    for (const t of TILES) expect(denseTileProblem(t), JSON.stringify(t)).toBeUndefined();
    expect(denseSharedBytes(DEFAULT_DENSE_TILE)).toBe(16384);
    expect(denseTileProblem({ ...DEFAULT_DENSE_TILE, k: 64 })).toMatch(/workgroup memory/);
    expect(denseTileProblem({ ...DEFAULT_DENSE_TILE, regM: 4 })).toMatch(/threads/);
    // A long sum into a small output gets split-K, a big output the 64 x 64 tile.
    const w = caseOf('wgrad', 8, 256, 64, 64, 1);
    expect(chooseDenseTile(recogniseDense(w.s, w.vars)!, w.sizes)).toEqual(SPLITK_DENSE_TILE);
    expect(chooseDenseTile(recogniseDense(w.s, w.vars)!, new Map())).toEqual(DEFAULT_DENSE_TILE);
    const n = caseOf('nt', 8, 256, 64, 48, 1);
    expect(chooseDenseTile(recogniseDense(n.s, n.vars)!, n.sizes)).toEqual(SMALL_DENSE_TILE);
    expect(chooseDenseTile(recogniseDense(n.s, n.vars)!, n.sizes, { staged: false }).k).toBe(0);
    expect(chooseDenseTile(recogniseDense(w.s, w.vars)!, w.sizes, { staged: false })).toEqual({ ...SPLITK_DENSE_TILE, k: 0 });
    // A statement choice's tiles over the chosen default; a parallel contraction's cols is not ours.
    expect(denseTileOf({ m: 32, splitK: 2 }, DEFAULT_DENSE_TILE)).toEqual({ ...DEFAULT_DENSE_TILE, m: 32, splitK: 2 });
    expect(denseTileOf({ cols: 32 }, DEFAULT_DENSE_TILE)).toBeUndefined();
  });

  it.each(KINDS)('%s: fixed ragged cases, every tile', (kind) => {
    for (const [i, t] of TILES.entries()) {
      // Every tile at a degenerate and a ragged shape; a third, larger one for a third of the tiles.
      const shapes = [[1, 1, 1, 1, 1], [2, 37, 19, 70, 3], ...((i + KINDS.indexOf(kind)) % 3 === 0 ? [[1, 65, 130, 9, 2]] : [])] as const;
      for (const [B, T, C, O, H] of shapes) {
        const e = agree(caseOf(kind, B, T, C, O, H), t, i % 2 === 0, 7 + i);
        expect(e.nonFinite, `${kind} ${JSON.stringify(t)} at ${[B, T, C, O, H]}`).toBe(0);
        expect(e.rel, `${kind} ${JSON.stringify(t)} at ${[B, T, C, O, H]}`).toBeLessThan(1e-6);
      }
    }
  }, 60_000);

  it('random shapes (M, N, K from 1 to ~300), kinds, tiles, specialised or runtime sizes', async () => {
    const seed = fcSeed('dense');
    const arb = fc.record({
      kind: fc.constantFrom<Kind>(...KINDS),
      tile: fc.integer({ min: 0, max: TILES.length - 1 }),
      specialise: fc.boolean(),
      B: fc.integer({ min: 1, max: 3 }), T: fc.integer({ min: 1, max: 100 }),
      C: fc.integer({ min: 1, max: 300 }), O: fc.integer({ min: 1, max: 150 }), H: fc.integer({ min: 1, max: 3 }),
    });
    await assertProperty(arb, (c) => {
      const cs = caseOf(c.kind, c.B, c.T, c.C, c.O, c.H);
      const e = agree(cs, TILES[c.tile]!, c.specialise, c.T * 31 + c.C);
      expect(e.nonFinite, JSON.stringify(c)).toBe(0);
      expect(e.rel, JSON.stringify(c)).toBeLessThan(1e-6);
    }, { seed, examples: [{ kind: 'wgrad' as Kind, tile: 1, specialise: true, B: 3, T: 100, C: 300, O: 150, H: 1 }], randomRuns: Math.max(4, Math.round(24 * runsScale())), timeLimitMs: 100_000 });
  }, 120_000);

  it("every dense statement of msr's forward and backward, at RetNet-like sizes", () => {
    const sizes = new Map([['B', 2], ['T', 13], ['H', 2], ['K', 8], ['V', 12]]);
    for (const backward of [false, true]) {
      const fn = loadFn('retnet', 'msr');
      const { fn: ir, contractions } = analyse(withoutDeadStatements(backward ? toGradientIr(fn) : toIr(fn)));
      let n = 0;
      for (const s of ir.body) {
        if (contractions.has(s.target) || !recogniseDense(s, ir.vars)) continue;
        n++;
        const e = agree({ s, vars: ir.vars as Map<string, CVar>, sizes }, n % 2 ? DEFAULT_DENSE_TILE : SPLITK_DENSE_TILE, n % 3 === 0, n);
        expect(e.nonFinite, s.target).toBe(0);
        expect(e.rel, s.target).toBeLessThan(1e-6);
      }
      expect(n).toBe(backward ? 14 : 5); // the backward does not recompute y
    }
  }, 60_000);

  it('half storage (f16, bf16): loads give f32, accumulation in f32, one rounding at the store', () => {
    for (const half of ['f16', 'bf16'] as const) for (const kind of ['nt', 'wgrad', 'tail'] as const) for (const t of [DEFAULT_DENSE_TILE, SPLITK_DENSE_TILE, TILES[9]!]) {
      const c = caseOf(kind, 2, 37, 150, 70, 1);
      const { ew, dense, ewL } = kernelsOf(c, t, true);
      const inputs = inputsOf(c, ewL, 5);
      const asHalf = (k: Kernel): Kernel => ({ ...k, buffers: k.buffers.map((b) => ({ ...b, storage: half })) });
      const run = (k: Kernel): Float32Array => {
        const outB = ewL.buffers.get(c.s.target)!.name;
        const y = new Uint16Array(numel(shapeOf(c, c.s.target)));
        runKernel(asHalf(k), { buffers: { ...Object.fromEntries([...inputs].map(([n, x]) => [n, toHalfArray(x, half)])), [outB]: y }, scalars: scalarsOf(k, c) });
        return fromHalfArray(y, half);
      };
      const e = relErr(run(dense), run(ew));
      // The two sum in different orders in f32; the stores round each to the half type once.
      expect(e.nonFinite).toBe(0);
      expect(e.rel, `${half} ${kind} ${JSON.stringify(t)}`).toBeLessThan(half === 'f16' ? 1e-3 : 8e-3);
    }
  }, 60_000);
});



// ---- CUDA: every tile compiles with nvcc, 0 spills, 0 stack ------------------------------

const nvccVersion = spawnSync('nvcc', ['--version'], { encoding: 'utf8' });
describe.skipIf(nvccVersion.status !== 0)('CUDA', () => {
  it('the tiled kernels of every tile (f32 and f16 storage) compile for sm_80 and sm_90 with 0 spill bytes and 0 stack', () => {
    const units: string[] = [];
    const names: string[] = [];
    for (const [i, t] of TILES.entries()) for (const kind of ['nt', 'onehot', 'tail'] as const) for (const half of [false, true]) {
      const c = caseOf(kind, 2, 37, 19, 70, 3);
      const k = kernelsOf(c, t, i % 2 === 0).dense;
      const name = `dense_${kind}_${i}${half ? '_f16' : ''}`;
      names.push(name);
      units.push(emitKernel({ ...k, name, buffers: k.buffers.map((b) => (half && b.type === 'f32' ? { ...b, storage: 'f16' as const } : b)) }, 'cuda').code);
    }
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'retnetc-dense-'));
    fs.writeFileSync(path.join(dir, 'd.cu'), units.join('\n'));
    for (const arch of ['sm_80', 'sm_90']) {
      const a = spawnSync('nvcc', [`-arch=${arch}`, '-ptx', '-diag-suppress', '177', path.join(dir, 'd.cu'), '-o', path.join(dir, 'd.ptx')], { encoding: 'utf8' });
      expect(a.status, a.stderr).toBe(0);
      const b = spawnSync('ptxas', [`-arch=${arch}`, '-v', path.join(dir, 'd.ptx'), '-o', path.join(dir, 'd.cubin')], { encoding: 'utf8' });
      expect(b.status, b.stderr).toBe(0);
      const log = b.stdout + b.stderr;
      const frames = [...log.matchAll(/(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads/g)];
      expect(frames.length).toBe(names.length);
      for (const f of frames) expect([+f[1]!, +f[2]!, +f[3]!]).toEqual([0, 0, 0]);
      const regs = [...log.matchAll(/Used (\d+) registers/g)].map((m) => +m[1]!);
      console.log(`[dense] ${arch}: ${names.length} tiled kernels, 0 spills, registers ${Math.min(...regs)}..${Math.max(...regs)}`);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }, 300_000);
});
