// The target printers and their legalisation rules: the shared C-style printer, reserved
// words, lazy selects, uniform packing, the WGSL fold, dynamic shared memory, f32-only
// output, the emitted-kernel contract, the plan manifest and the generated TS bindings.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import ts from 'typescript';
import { describe, expect, test } from 'vitest';
import { CPrinter, renameKernel, walkStmts } from '../compiler/c-printer.js';
import {
  add, and, assign, barrier, bin, cast, decl, f32, i32, iff, load, loop, lt, mul, select, store, sub, tid, un, v, wg,
  type Kernel, type KBuffer, type KExpr, type KStmt,
} from '../compiler/kir.js';
import { exprToString } from '../compiler/kir-print.js';
import { compilePlan } from '../compiler/plan.js';
import { type Form, makeSchedule } from '../compiler/schedule.js';
import { loadProgram } from '../dsl/program.js';
import { runKernel } from '../targets/cpu/executor.js';
import { CUDA_RESERVED, legaliseCuda, STATIC_SHARED_LIMIT } from '../targets/cuda/legalise.js';
import { printCuda } from '../targets/cuda/printer.js';
import { emitKernel, emitPlan } from '../targets/emit.js';
import { generateBindings } from '../targets/ts-bindings.js';
import { clampedIndex, lazySelects, legaliseWgsl, selectsWithLoads, WGSL_RESERVED } from '../targets/wgsl/legalise.js';
import { printWgsl } from '../targets/wgsl/printer.js';

const one: [KExpr, KExpr, KExpr] = [i32(1), i32(1), i32(1)];
function kernel(name: string, body: KStmt[], o: Partial<Kernel> = {}): Kernel {
  return { name, workgroup: [1, 1, 1], grid: one, buffers: [], scalars: [], shared: [], body, ...o };
}
const rd = (name: string, type: KBuffer['type'] = 'f32'): KBuffer => ({ name, type, access: 'read' });
const rw = (name: string, type: KBuffer['type'] = 'f32'): KBuffer => ({ name, type, access: 'read_write' });

const MODELS: [string, string][] = [['retention', 'retention'], ['retention', 'retention_state'], ['linear_attention', 'linear_attention'], ['gated_retention', 'gated_retention']];
const FORMS: Form[] = ['parallel', 'recurrent', 'chunkwise'];
const K64 = new Map([['K', 64], ['V', 64]]);
const fnOf = (file: string, name: string) => loadProgram(`models/${file}.ret`).checked!.fns.get(name)!;

/** Every kernel of the test set (four models, three schedules, forward and backward). */
let cached: Kernel[] | undefined;
function allKernels(): Kernel[] {
  if (cached) return cached;
  const out: Kernel[] = (cached = []);
  for (const [file, name] of MODELS) {
    const fn = fnOf(file, name);
    for (const form of FORMS) for (const backward of [false, true]) out.push(...compilePlan(fn, makeSchedule(form, 64), { backward, constants: K64 }).launches.map((l) => l.kernel));
  }
  return out;
}

describe('the shared C-style printer', () => {
  const p = new CPrinter();
  const [a, b, c] = [v('a', 'f32'), v('b', 'f32'), v('c', 'f32')];
  test('parenthesises by precedence, keeping right-nested + and -', () => {
    expect(p.expr(sub(a, sub(b, c)))).toBe('a - (b - c)');
    expect(p.expr(add(a, add(b, c)))).toBe('a + (b + c)');
    expect(p.expr(add(add(a, b), c))).toBe('a + b + c');
    expect(p.expr(mul(add(a, b), c))).toBe('(a + b) * c');
    expect(p.expr(add(a, mul(b, c)))).toBe('a + b * c');
    expect(p.expr(un('neg', un('neg', a)))).toBe('-(-a)');
    expect(p.expr(un('neg', f32(-1)))).toBe('-(-1.0)');
    expect(p.expr(select(lt(a, b), select(lt(b, c), a, b), c))).toBe('a < b ? (b < c ? a : b) : c');
    expect(p.expr(select(lt(a, b), a, select(lt(b, c), b, c)))).toBe('a < b ? a : b < c ? b : c');
    expect(exprToString(bin('||', and(lt(a, b), lt(b, c)), lt(c, a)))).toBe('a < b && b < c || c < a');
  });
  test('WGSL parenthesises what C does not need to: mixed && / || and nested comparisons', () => {
    const k = kernel('w', [store('o', i32(0), select(bin('||', and(lt(a, b), lt(b, c)), bin('==', lt(c, a), lt(a, c))), f32(1), f32(0)))], {
      buffers: [rw('o')], scalars: [{ name: 'a', type: 'f32' }, { name: 'b', type: 'f32' }, { name: 'c', type: 'f32' }],
    });
    expect(printWgsl(k).code).toContain('(a < b && b < c) || (c < a) == (a < c)');
    expect(printCuda(k).code).toContain('a < b && b < c || c < a == a < c');
  });
  test('if / else-if chains print flat, loops with their step', () => {
    const k = kernel('f', [
      decl('r', 'i32', i32(0)),
      iff(lt(v('n'), i32(0)), [assign('r', i32(1))], [iff(lt(v('n'), i32(5)), [assign('r', i32(2))], [assign('r', i32(3))])]),
      loop('j', sub(v('n'), i32(1)), i32(-1), [], -2),
    ], { scalars: [{ name: 'n', type: 'i32' }] });
    const cu = printCuda(k).code;
    expect(cu).toMatch(/if \(n < 0\) \{\n\s+r = 1;\n\s+\} else if \(n < 5\) \{\n\s+r = 2;\n\s+\} else \{\n\s+r = 3;\n\s+\}/);
    expect(cu).toContain('for (int j = n - 1; j > -1; j -= 2) {');
    expect(printWgsl(k).code).toContain('for (var j: i32 = n - 1; j > -1; j -= 2) {');
  });
});

describe('reserved words and shadowing', () => {
  const names = ['var', 'let', 'loop', 'target', 'filter', 'active', 'centroid', 'new', 'class', 'threadIdx', 'dot', 'min', 'f32', 'float', 'main', 'params', 'tid_x', 'rn_idiv'];
  const k = kernel('select', [
    decl('x', 'f32', f32(0)),
    ...names.map((n, i) => decl(n, 'f32', f32(i))),
    loop('loop2', i32(0), i32(2), [decl('x', 'f32', add(v('x', 'f32'), f32(1))), assign('x', add(v('x', 'f32'), v('var', 'f32')))]),
    store('filter_', i32(0), add(v('x', 'f32'), load('active_', i32(0)))),
  ], { buffers: [rd('active_'), rw('filter_')], scalars: [{ name: 'sample', type: 'f32' }] });

  test('WGSL renames keywords, reserved words, builtins and its own names', () => {
    const L = legaliseWgsl(k);
    const declared: string[] = [];
    walkStmts(L.kernel.body, (s) => { if (s.k === 'decl') declared.push(s.name); });
    for (const n of declared) expect(WGSL_RESERVED.has(n), n).toBe(false);
    expect(L.kernel.name).not.toBe('select');
    expect(L.kernel.scalars[0]!.name).not.toBe('sample');
    const code = printWgsl(k).code;
    expect(code).not.toMatch(/\b(let|var) (var|let|loop|target|filter|sample|active|dot|min|f32|params|tid_x|rn_idiv):/);
  });
  test('CUDA renames C++ keywords, CUDA builtins and reserved spellings', () => {
    const L = legaliseCuda(kernel('k', [decl('__x', 'f32', f32(0)), decl('_X', 'f32', f32(1)), ...names.map((n) => decl(n, 'f32', f32(0)))]));
    const declared: string[] = [];
    walkStmts(L.kernel.body, (s) => { if (s.k === 'decl') declared.push(s.name); });
    for (const n of declared) {
      expect(CUDA_RESERVED.has(n), n).toBe(false);
      expect(n.includes('__') || /^_[A-Z]/.test(n), n).toBe(false);
    }
    expect(new Set(declared).size).toBe(declared.length);
  });
  test('using a name outside any declaration is reported as an IR error', () => {
    expect(() => printWgsl(kernel('u', [assign('nope', i32(1))]))).toThrow(/kernel IR error in kernel u: .*'nope'/);
    expect(() => printCuda(kernel('u', [store('o', i32(0), v('nope', 'f32'))], { buffers: [rw('o')] }))).toThrow(/'nope'/);
  });
  test('a shadowing declaration gets a fresh name; its initialiser still reads the outer one', () => {
    const { kernel: r } = renameKernel(k, { valid: () => true, reserved: new Set() });
    const inner = (r.body.find((s) => s.k === 'for') as Extract<KStmt, { k: 'for' }>).body[0] as Extract<KStmt, { k: 'decl' }>;
    expect(inner.name).not.toBe('x');
    expect(exprToString(inner.init)).toBe('x + 1.0');
    // semantics unchanged (parameters are passed under their printed names)
    const run = (kk: Kernel, g: ReadonlyMap<string, string> = new Map()): number => {
      const out = new Float32Array(1);
      const n = (x: string): string => g.get(x) ?? x;
      runKernel(kk, { buffers: { [n('active_')]: Float32Array.of(0.5), [n('filter_')]: out }, scalars: { [n('sample')]: 0 } });
      return out[0]!;
    };
    const w = legaliseWgsl(k), c = legaliseCuda(k);
    expect(run(r)).toBe(run(k));
    expect(run(w.kernel, w.globals)).toBe(run(k));
    expect(run(c.kernel, c.globals)).toBe(run(k));
  });
});

describe('lazy selects in WGSL', () => {
  const n = v('n');
  const guarded = select(lt(v('i'), n), load('x', v('i')), f32(0)); // x[i] only when i < n
  const k = kernel('lazy', [
    decl('i', 'i32', tid()),
    store('o', tid(), guarded),
    // nested in the right side of && (must stay guarded by the left side)
    iff(and(lt(add(v('i'), i32(1)), n), bin('>', select(lt(v('i'), i32(3)), load('x', add(v('i'), i32(1))), f32(0)), f32(2))), [store('o', tid(), f32(2))]),
    // the clamped form the lowering produces for guarded reads stays a select
    store('o', add(tid(), i32(8)), select(lt(v('i'), n), load('x', bin('min', bin('max', v('i'), i32(0)), sub(n, i32(1)))), f32(0))),
  ], { workgroup: [8, 1, 1], buffers: [rd('x'), rw('o')], scalars: [{ name: 'n', type: 'i32' }] });

  test('selects whose branches load through unclamped indices become if/else', () => {
    expect(selectsWithLoads(k)).toBe(2);
    const { kernel: lz, hoisted } = lazySelects(k);
    expect(hoisted).toBe(2);
    expect(selectsWithLoads(lz)).toBe(0);
    const code = printWgsl(k).code;
    expect(code).not.toMatch(/select\([^;]*x\[i\]/);
    expect(code).toMatch(/if \(i < n\) \{\n\s+sel\d* = x\[i\];\n\s+\} else \{\n\s+sel\d* = 0\.0f;/);
    expect(code).toContain('select(0.0f, x[min(max(i, 0), n - 1)], i < n)');
  });
  test('the rewrite keeps the meaning, including the && guard (CPU executor, bounds-checked)', () => {
    const run = (kk: Kernel, len: number): number[] => {
      const out = new Float32Array(16);
      runKernel(kk, { buffers: { x: Float32Array.from({ length: len }, (_, i) => i + 1), o: out }, scalars: { n: len } });
      return [...out];
    };
    const lz = lazySelects(k).kernel;
    for (const len of [1, 3, 5]) expect(run(lz, len)).toEqual(run(k, len)); // x has only `len` elements: an eager load would go out of bounds
  });
  test('clamped indices are recognised only in the lowering\'s form', () => {
    const s = new Set(['n']);
    expect(clampedIndex(bin('min', bin('max', v('i'), i32(0)), sub(v('n'), i32(1))), s)).toBe(true);
    expect(clampedIndex(add(mul(bin('min', bin('max', v('i'), i32(0)), sub(v('n'), i32(1))), v('n')), i32(3)), s)).toBe(true);
    expect(clampedIndex(v('i'), s)).toBe(false);
    expect(clampedIndex(bin('min', v('i'), sub(v('n'), i32(1))), s)).toBe(false);
    expect(clampedIndex(bin('min', bin('max', v('i'), i32(0)), v('j')), s)).toBe(false);
  });
  test('no select in any emitted model kernel keeps an unclamped load', () => {
    for (const k2 of allKernels()) expect(selectsWithLoads(legaliseWgsl(k2).kernel), k2.name).toBe(0);
  });
});

describe('WGSL uniforms, bindings and the fold', () => {
  const scalars = [{ name: 'a', type: 'i32' as const }, { name: 'b', type: 'f32' as const }, { name: 'c', type: 'i32' as const }, { name: 'd', type: 'f32' as const }, { name: 'e', type: 'i32' as const }];
  const k = kernel('u', [store('o', i32(0), add(cast(add(v('a'), add(v('c'), v('e'))), 'f32'), add(v('b', 'f32'), v('d', 'f32'))))], { buffers: [rd('x'), rw('o')], scalars });

  test('all scalars pack into one uniform struct, 4 bytes each, bound after the buffers', () => {
    const e = emitKernel(k, 'wgsl');
    expect(e.buffers.map((b) => b.binding)).toEqual([0, 1]);
    expect(e.scalars.map((s) => [s.name, s.offset])).toEqual([['a', 0], ['b', 4], ['c', 8], ['d', 12], ['e', 16]]);
    expect(e.uniform).toEqual({ binding: 2, size: 32 });
    expect(e.code).toContain('struct Params {\n  a: i32,\n  b: f32,\n  c: i32,\n  d: f32,\n  e: i32,\n}');
    expect(e.code).toContain('@group(0) @binding(2) var<uniform> params: Params;');
    expect(emitKernel(kernel('n', [store('o', i32(0), f32(1))], { buffers: [rw('o')] }), 'wgsl').uniform).toBeUndefined();
  });
  test('CUDA passes scalars as parameters after the buffers', () => {
    const e = emitKernel(k, 'cuda');
    expect(e.buffers.map((b) => b.binding)).toEqual([0, 1]);
    expect(e.scalars.map((s) => s.offset)).toEqual([2, 3, 4, 5, 6]);
    expect(e.code).toContain('const float* __restrict__ x,\n    float* __restrict__ o,\n    int a,\n    float b,');
  });
  test('the x grid is folded unless it is a constant within 65535', () => {
    const g = (x: KExpr): Kernel => kernel('g', [store('o', add(mul(wg('x'), i32(4)), tid()), cast(wg('y'), 'f32'))], { workgroup: [4, 1, 1], grid: [x, i32(3), i32(1)], buffers: [rw('o')], scalars: [{ name: 'n', type: 'i32' }] });
    expect(emitKernel(g(i32(65535)), 'wgsl').foldX).toBe(false);
    expect(emitKernel(g(i32(65536)), 'wgsl').foldX).toBe(true);
    const e = emitKernel(g(bin('/', add(v('n'), i32(3)), i32(4))), 'wgsl');
    expect(e.foldX).toBe(true);
    expect(e.code).toContain('let rn_grid_x: i32 = (n + 3) / 4;');
    // The x fold multiplies the y count, which then may pass 65535 itself: folded into z.
    expect(e.foldY).toBe(true);
    expect(e.code).toContain('let rn_grid_y: i32 = 3 * rn_fold;');
    expect(e.code).toContain('let rn_wy: i32 = i32(wid.y) + i32(wid.z) % rn_fold_y * 65535;');
    expect(e.code).toContain('let wg_x: i32 = i32(wid.x) + rn_wy % rn_fold * 65535;');
    expect(e.code).toContain('let wg_y: i32 = rn_wy / rn_fold;');
    expect(e.code).toMatch(/if \(wg_x >= rn_grid_x\) \{\n\s+return;\n\s+\}/);
    expect(emitKernel(g(i32(70000)), 'cuda').foldX).toBe(false);
  });
  test('a y grid that may pass 65535 (B * H) is folded into z on WGSL', () => {
    const g = (y: KExpr): Kernel => kernel('g', [store('o', add(mul(wg('y'), i32(4)), tid()), cast(wg('x'), 'f32'))], { workgroup: [4, 1, 1], grid: [i32(1), y, i32(1)], buffers: [rw('o')], scalars: [{ name: 'n', type: 'i32' }] });
    expect(emitKernel(g(i32(65535)), 'wgsl').foldY).toBe(false);
    const e = emitKernel(g(v('n')), 'wgsl');
    expect(e.foldX).toBe(false);
    expect(e.foldY).toBe(true);
    expect(e.code).toContain('let rn_grid_y: i32 = n;');
    expect(e.code).toContain('let wg_y: i32 = rn_wy;');
    expect(e.code).toMatch(/if \(rn_wy >= rn_grid_y\) \{\n\s+return;\n\s+\}/);
  });
});

describe('CUDA shared memory', () => {
  test(`above ${STATIC_SHARED_LIMIT} bytes the shared arrays move to dynamic shared memory`, () => {
    const mk = (sizes: number[]): Kernel => kernel('s', [
      ...sizes.map((_, i) => store(`s${i}`, tid(), f32(i))), barrier(),
      store('o', tid(), sizes.map((_, i) => load(`s${i}`, tid())).reduce((x, y) => add(x, y))),
    ], { workgroup: [32, 1, 1], buffers: [rw('o')], shared: sizes.map((n, i) => ({ name: `s${i}`, type: 'f32', size: n })) });
    const small = emitKernel(mk([4096, 4096, 3]), 'cuda');
    expect(small.dynamicSharedBytes).toBe(0);
    expect(small.code).toContain('__shared__ float s2[3];');
    const big = emitKernel(mk([8192, 5, 4096]), 'cuda');
    // 32768 + 20 (padded to 32) + 16384
    expect(big.dynamicSharedBytes).toBe(32768 + 32 + 16384);
    expect(big.code).toContain('extern __shared__ __align__(16) unsigned char rn_smem[];');
    expect(big.code).toContain('float* const s1 = reinterpret_cast<float*>(rn_smem + 32768);');
    expect(big.code).toContain('float* const s2 = reinterpret_cast<float*>(rn_smem + 32800);');
    expect(big.code).not.toMatch(/__shared__ float s\d\[/);
  });
  test('a parallel kernel with 128 x 128 score tiles (64 KiB) uses dynamic shared memory; chunkwise scores 8 rows at a time', () => {
    const plan = compilePlan(fnOf('retention', 'retention'), makeSchedule('parallel', 128), { constants: K64 });
    const e = emitKernel(plan.launches[0]!.kernel, 'cuda');
    expect(e.dynamicSharedBytes).toBe(128 * 128 * 4);
    expect(emitKernel(compilePlan(fnOf('retention', 'retention'), makeSchedule('parallel', 64), { constants: K64 }).launches[0]!.kernel, 'cuda').dynamicSharedBytes).toBe(0);
    // Chunkwise: P[8][128] and the chunk's decay tables by row and distance; at K = 64 a thread
    // holds 4 value columns of a 16-key slice (each load serves 4 columns), and the 4 slices of a
    // column meet in red[8 rows x 4 columns x 64 threads] (compiler/lower/contraction.ts).
    const cw = emitKernel(compilePlan(fnOf('retention', 'retention'), makeSchedule('chunkwise', 128), { constants: K64 }).launches[0]!.kernel, 'cuda');
    expect(cw.dynamicSharedBytes).toBe(0);
    expect(cw.code).toContain('__shared__ float P[1024];');
    for (const t of ['wr', 'we', 'wd']) expect(cw.code).toContain(`__shared__ float ${t}[128];`);
    expect(cw.code).toContain('__shared__ float red[2048];');
    const order1 = compilePlan(fnOf('retention', 'retention'), makeSchedule('chunkwise', 128), { backward: true, constants: K64 }).launches.filter((l) => l.kernel.body.some((s) => s.k === 'local' && s.name === 'S1'));
    expect(order1).toHaveLength(1);
    const o1 = emitKernel(order1[0]!.kernel, 'cuda').code;
    // The decay gradient's two states: 2 value columns per thread, 8 rows x 2 columns x 128 threads of partial sums.
    expect(o1).toContain('__shared__ float red[2048];');
    expect(o1).toContain('float S[32];');
    expect(o1).toContain('float S1[32];');
  });
});

describe('f32 only, and kernel IR semantics C and WGSL leave open', () => {
  const kernels = allKernels();
  test('no double or f64 in any emitted kernel; every CUDA float literal has the f suffix', () => {
    for (const k of kernels) {
      const cu = emitKernel(k, 'cuda').code;
      const wg = emitKernel(k, 'wgsl').code;
      expect(cu, k.name).not.toMatch(/\bdouble\b|\bf64\b/);
      expect(wg, k.name).not.toMatch(/\bdouble\b|\bf64\b/);
      const body = cu.replace(/\/\/.*$/gm, '');
      expect(body.match(/(?<![\w.])\d+\.\d*(?:e[+-]?\d+)?(?![\w.])/g) ?? [], k.name).toEqual([]);
      expect(body, k.name).not.toMatch(/\b(exp|log|sqrt|pow|tanh|erf|log1p|fabs|floor|ceil|sin|cos)\(/);
    }
  });
  test('constants: infinities, NaN, extremes, subnormals and INT_MIN', () => {
    const k = kernel('c', [
      store('o', i32(0), f32(-Infinity)), store('o', i32(1), f32(NaN)), store('o', i32(2), f32(3.4028234663852886e38)),
      store('o', i32(3), f32(1e-45)), store('o', i32(4), f32(0.1)), store('o', i32(5), f32(-0)),
      store('oi', i32(0), i32(-2147483648)),
    ], { buffers: [rw('o'), rw('oi', 'i32')] });
    const cu = printCuda(k).code;
    expect(cu).toContain('__uint_as_float(0xff800000u)');
    expect(cu).toContain('__uint_as_float(0x7fc00000u)');
    expect(cu).toContain('3.4028235e+38f');
    expect(cu).toContain('1e-45f');
    expect(cu).toContain('= 0.1f;');
    expect(cu).toContain('= -0.0f;');
    expect(cu).toContain('(-2147483647 - 1)');
    const w = printWgsl(k).code;
    expect(w).toContain('rn_f32_bits(0xff800000u)');
    expect(w).toContain('bitcast<f32>(0x7f7fffffu)');
    expect(w).toContain('bitcast<f32>(0x00000001u)');
    expect(w).toContain('= 0.1f;');
    expect(w).toContain('= -2147483648;');
  });
  test('integer division and remainder by a non-constant go through the zero-safe helpers', () => {
    const k = kernel('d', [
      store('o', i32(0), bin('/', v('a'), v('b'))), store('o', i32(1), bin('%', v('a'), v('b'))),
      store('o', i32(2), bin('/', v('a'), i32(4))), store('o', i32(3), bin('%', v('a'), i32(4))),
    ], { buffers: [rw('o', 'i32')], scalars: [{ name: 'a', type: 'i32' }, { name: 'b', type: 'i32' }] });
    const cu = printCuda(k).code;
    expect(cu).toContain('o[0] = rn_idiv(a, b);');
    expect(cu).toContain('o[1] = rn_imod(a, b);');
    expect(cu).toContain('o[2] = a / 4;');
    expect(cu).toContain('o[3] = a % 4;');
    expect(cu).toContain('static __device__ __forceinline__ int rn_idiv(int a, int b) { return b == 0 ? 0 :');
    const w = printWgsl(k).code;
    expect(w).toContain('o[0] = rn_idiv(a, b);');
    expect(w).toContain('o[2] = a / 4;');
    expect(w).toContain('fn rn_idiv(a: i32, b: i32) -> i32 { if (b == 0) { return 0; } return a / b; }');
    // without any division no helper is printed
    expect(printCuda(kernel('z', [])).code).not.toContain('rn_idiv');
  });
  test('casts, min/max, math functions', () => {
    const x = v('x', 'f32');
    const k = kernel('m', [
      store('oi', i32(0), cast(x, 'i32')),
      store('o', i32(0), bin('min', x, f32(1))), store('o', i32(1), bin('max', x, f32(1))),
      store('o', i32(2), add(un('erf', x), un('log1p', x))), store('o', i32(3), un('rsqrt', x)), store('o', i32(4), un('tanh', x)),
      store('o', i32(5), bin('pow', x, f32(2.5))), store('oi', i32(1), bin('min', cast(x, 'i32'), i32(3))),
    ], { buffers: [rw('o'), rw('oi', 'i32')], scalars: [{ name: 'x', type: 'f32' }] });
    const cu = printCuda(k).code;
    for (const s of ['__float2int_rz(x)', 'rn_fminf(x, 1.0f)', 'rn_fmaxf(x, 1.0f)', 'erff(x) + log1pf(x)', 'rsqrtf(x)', 'tanhf(x)', 'powf(x, 2.5f)', 'min(__float2int_rz(x), 3)']) expect(cu).toContain(s);
    const w = printWgsl(k).code;
    for (const s of ['rn_f2i(x)', 'rn_fmin(x, 1.0f)', 'rn_fmax(x, 1.0f)', 'rn_erf(x) + rn_log1p(x)', 'inverseSqrt(x)', 'rn_tanh(x)', 'pow(x, 2.5f)', 'min(rn_f2i(x), 3)', 'fn rn_isnan']) expect(w).toContain(s);
  });
  test('bool buffers hold 0/1 integers', () => {
    const k = kernel('b', [store('ob', i32(0), load('xb', i32(0), 'bool'))], { buffers: [rd('xb', 'bool'), rw('ob', 'bool')] });
    expect(printCuda(k).code).toContain('ob[0] = int(xb[0] != 0);');
    expect(printCuda(k).code).toContain('const int* __restrict__ xb');
    expect(printWgsl(k).code).toContain('ob[0] = select(0, 1, xb[0] != 0);');
    expect(printWgsl(k).code).toContain('var<storage, read> xb: array<i32>;');
  });
});

describe('CUDA kernels', () => {
  test('extern "C", launch bounds, const __restrict__ reads, ids and barriers', () => {
    const plan = compilePlan(fnOf('retention', 'retention'), makeSchedule('chunkwise', 64), { constants: K64 });
    const code = emitKernel(plan.launches[0]!.kernel, 'cuda').code;
    // K = 64: a thread keeps its column's whole state; at least one block per SM, so ptxas does not spill for occupancy.
    expect(code).toContain('extern "C" __global__ void __launch_bounds__(64, 1) retention_0_chunkwise(');
    expect(code).toContain('const float* __restrict__ q,');
    expect(code).toContain('float* __restrict__ o,');
    expect(code).toContain('const int tid_x = threadIdx.x;');
    // B * H batch entries in y: the ids come from the linear block index, so that more than 65535 fold into x.
    expect(code).toContain('const int rn_blk = blockIdx.x + blockIdx.y * gridDim.x;');
    expect(code).toContain('const int wg_y = rn_blk / rn_grid_x;');
    expect(code).toContain('__syncthreads();');
    expect(code).toContain('__shared__ float P[512];');
    expect(code).toContain('float S[64];');
    expect(code).toContain('#pragma unroll');
  });
});

describe('emitPlan', () => {
  test('kernels and a JSON-serialisable manifest with the launch order and tensor mapping', () => {
    for (const target of ['cuda', 'wgsl'] as const) {
      const plan = compilePlan(fnOf('retention', 'retention'), makeSchedule('chunkwise', 64), { backward: true, constants: K64 });
      const { kernels, manifest } = emitPlan(plan, target);
      expect(kernels.length).toBe(plan.launches.length);
      const m = JSON.parse(JSON.stringify(manifest)) as typeof manifest;
      expect(m).toEqual(manifest);
      expect(m.schedule).toEqual(plan.schedule);
      expect(m.constants).toEqual({ K: 64, V: 64 });
      expect(m.sizes).toEqual(['B', 'H', 'T']);
      expect(m.launches.map((l) => l.kernel)).toEqual(plan.launches.map((l) => l.kernel.name));
      const ids = new Set(m.tensors.map((t) => t.id));
      plan.launches.forEach((l, i) => {
        expect(Object.fromEntries(m.launches[i]!.buffers.map((b) => [b.name, b.tensor]))).toEqual(l.buffers);
        expect(Object.fromEntries(m.launches[i]!.scalars.map((s) => [s.name, s.size]))).toEqual(l.scalars);
        for (const b of m.launches[i]!.buffers) expect(ids.has(b.tensor)).toBe(true);
      });
      expect(m.tensors.find((t) => t.id === 'q')).toMatchObject({ dtype: 'f32', shape: ['B', 'H', 'T', 'K'], role: 'input' });
      expect(m.kernels[0]!.grid).toEqual(['(size_H + 255) / 256', '1', '1']);
      expect(m.kernels.every((k) => k.file.endsWith(target === 'cuda' ? '.cu' : '.wgsl'))).toBe(true);
    }
  });
});

describe('TypeScript bindings', () => {
  const plan = compilePlan(fnOf('retention', 'retention_state'), makeSchedule('chunkwise', 64), { backward: true, constants: K64 });
  const src = generateBindings(emitPlan(plan, 'wgsl'));

  let previous: ts.Program | undefined;
  function typecheck(files: Record<string, string>): string[] {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'retnetc-bindings-'));
    try {
      for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), text);
      const program = ts.createProgram(Object.keys(files).map((f) => path.join(dir, f)), {
        strict: true, noEmit: true, target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ES2022,
        moduleResolution: ts.ModuleResolutionKind.Bundler, noUnusedLocals: true, exactOptionalPropertyTypes: true, types: [],
        lib: ['lib.es2022.d.ts'], skipLibCheck: true,
      }, undefined, previous);
      previous = program;
      return ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }

  test('one interface and typed launcher per kernel, documented with shapes and bindings', () => {
    expect(src).toContain('export type Dispatch<Buf, R = void> =');
    expect(src).toContain('export function launchPlan<Buf, R>(dispatch: Dispatch<Buf, R>, tensors: Tensors<Buf>, sizes: Sizes): R[]');
    for (const l of plan.launches) expect(src).toContain(`dispatch("${l.kernel.name}"`);
    expect(src).toMatch(/\/\*\* `q`: f32\[B, H, T, K\], read, binding \d+\. \*\//);
    expect(src).toContain('readonly "grad.o": Buf;');
  });
  test('the generated module typechecks, and misuse does not', () => {
    const use = [
      "import { launchPlan, type Dispatch, type Tensors } from './bindings.js';",
      'declare const t: Tensors<GPUBufferLike>;',
      'interface GPUBufferLike { size: number }',
      'const calls: string[] = [];',
      'const dispatch: Dispatch<GPUBufferLike, Promise<number>> = async (kernel, buffers, scalars) => { calls.push(kernel); return Object.keys(buffers).length + Object.keys(scalars).length; };',
      'export const all: Promise<number>[] = launchPlan(dispatch, t, { B: 1, H: 2, T: 3 });',
    ].join('\n');
    expect(typecheck({ 'bindings.ts': src, 'use.ts': use })).toEqual([]);
    const bad = use.replace('{ B: 1, H: 2, T: 3 }', '{ B: 1, H: 2 }');
    expect(typecheck({ 'bindings.ts': src, 'use.ts': bad }).join('\n')).toMatch(/'T'/);
  }, 120_000);
});
