// Dense contractions (compiler/dense.ts) as blocked matrix products for CPUs, the way a CPU GEMM
// is built: one single-thread workgroup per macro tile of C[batch, m, n] = sum_k A[batch, m, k]
// B[batch, k, n] (tile.m x tile.n outputs; workgroups spread over cores):
//   - the summed variables are walked as nested loops over their merged groups (mergedGroup:
//     [b, t] of x[b, t, c] is one), the innermost in steps of tile.k: inside a step every operand
//     index is affine in the step's k, so the native printer pre-checks a whole loop once
//     (targets/native/affine-index.ts) instead of a division and a bounds test per element;
//   - each step packs A's slab into workgroup memory in A's own order (Ap[row][k] where k is A's
//     unit stride, else Ap[k][row]: a contiguous copy either way; 0 in the padding up to the
//     register block), so the micro-kernel's regM values of A at each k lie at constant offsets
//     from one base (regM row bases of A itself would spill: 1.1x slower); B is read where it lies
//     when regN consecutive columns are contiguous in it (its n group is one unit-stride run and
//     regN divides N: weight gradients), else it is packed as panels of regN columns,
//     Bp[panel][k][regN] (0 in the ragged edge's padding), in the loop order that reads B
//     contiguously; rows and columns are copied as runs of their innermost merged group;
//   - the micro-kernel: regM rows x regN columns of accumulators in a local array, the k loop
//     innermost; per k, regM values of A (broadcasts) and regN of B; the accumulators' updates are lane loops of `lanes` consecutive
//     elements (for v in [0, lanes): acc[c + v] = acc[c + v] + a * b[c' + v]), which the native
//     printer prints as vector operations (targets/native/lanes.ts) and other targets as loops;
//   - partial sums live in workgroup memory Cc[tile.m][tile.n] between K steps (f32, exact);
//   - the epilogue: the statement's elementwise tail on each sum, stored where the output has it,
//     columns walked as runs of the n group's innermost variable (affine stores, pre-checked).
// Every output is one f32 sum in k order from 0, as the map lowering's, but each step is a fused
// multiply-add acc = fma(a, b, acc), rounded once (the kernel contracts: Kernel.contract): an FMA
// is one instruction where a multiply then an add are two, so this doubles the micro-kernel's
// peak. The sums therefore differ from the map kernel's by rounding (closer to the exact ones);
// every target and the executor contract alike, so they still agree bit for bit.
import { type Dense, type DenseOperand, type DenseVar, mergedGroup, unitStride } from '../dense.js';
import type { IrStmt } from '../ir.js';
import * as K from '../kir.js';
import type { Kernel, KExpr, KShared, KStmt } from '../kir.js';
import { devaluate } from '../../dsl/dims.js';
import { type Binding, dimExpr, type ExprLowering, fold, LowerError } from './expr.js';
import { freshSupply, groupOffsetOf } from './dense.js';

/** The blocking of a blocked dense product (schedule: a statement's `tiles`, or the default). */
export interface DenseCpuTile {
  /** Output rows and columns per workgroup (the macro tile). */
  m: number; n: number;
  /** Summed extent per step (of the innermost merged summed group). */
  k: number;
  /** The micro tile: regM rows x regN columns of accumulators. */
  regM: number; regN: number;
  /** Elements per lane loop (Schedule.lanes: 16, one AVX-512 register of f32; 8 AVX; 4 SSE, NEON). */
  lanes: number;
}

/**
 * 256 x 256 macro tiles, k steps of 128 (a packed B slab of 128 KiB, partial sums 256 KiB: L2),
 * 8 x 32 micro tiles (16 zmm accumulators). Packing B costs 1/m per multiply-add: the more rows,
 * the less.
 */
export const DEFAULT_DENSE_CPU_TILE: DenseCpuTile = { m: 256, n: 256, k: 128, regM: 8, regN: 32, lanes: 16 };
/**
 * The default for narrower vectors (Schedule.lanes 8 or 4), whose CPUs have 16 vector registers
 * (AVX2, SSE): 6 x 2 vectors of accumulators, a broadcast and two of B, as BLIS's Haswell kernel
 * (8 x 32 at 8 lanes is 32 accumulators: they spilled, and the dense case ran 20x slower); rows by 6.
 */
const NARROW_DENSE_CPU_TILE = (lanes: number): DenseCpuTile => ({ m: 192, n: 256, k: 128, regM: 6, regN: 2 * lanes, lanes });
/** The default blocking for Schedule.lanes (absent: 16). */
export const denseCpuTileFor = (lanes = 16): DenseCpuTile => (lanes >= 16 ? { ...DEFAULT_DENSE_CPU_TILE } : NARROW_DENSE_CPU_TILE(lanes));
/** Workgroup memory one workgroup may use (the native runner's scratch per workgroup). */
export const DENSE_CPU_SCRATCH = 1 << 20;

const cpuScratch = (t: DenseCpuTile): number => 4 * ((t.m + t.n) * t.k + t.m * t.n);

export function denseCpuTileProblem(t: DenseCpuTile): string | undefined {
  const bad = (['m', 'n', 'k', 'regM', 'regN', 'lanes'] as const).filter((f) => !Number.isInteger(t[f]) || t[f] < 1);
  if (bad.length) return `dense tile fields ${bad.join(', ')} must be positive integers`;
  if (t.m % t.regM || t.n % t.regN) return `dense tile ${t.m}x${t.n} is not a multiple of the register block ${t.regM}x${t.regN}`;
  if (t.regN % t.lanes) return `dense tile regN ${t.regN} is not a multiple of lanes ${t.lanes}`;
  if (t.regM * t.regN > 1024) return `dense tile register block ${t.regM}x${t.regN} holds more than 1024 accumulators`;
  if (cpuScratch(t) > DENSE_CPU_SCRATCH) return `dense tile needs ${cpuScratch(t)} bytes of workgroup memory; at most ${DENSE_CPU_SCRATCH}`;
  return undefined;
}

const CPU_KEYS = ['m', 'n', 'k', 'regM', 'regN', 'lanes'] as const;

/**
 * The default blocking: 256 x 256 macro tiles, narrowed to the output's columns where it has
 * fewer (known sizes: fewer padded columns), and to fewer rows where the output is small, so
 * that the cores get a few workgroups. `tiles` (a statement's choice: m, n, k, regM, regN, lanes) override it.
 */
export function chooseDenseCpuTile(d: Dense, constants: ReadonlyMap<string, number>, tiles?: Readonly<Record<string, number>>, lanes?: number): DenseCpuTile {
  const M = devaluate(d.M, constants), N = devaluate(d.N, constants);
  const t = denseCpuTileFor(lanes);
  if (N !== undefined && N < t.n) t.n = Math.max(t.regN, Math.ceil(N / t.regN) * t.regN);
  if (M !== undefined) {
    // Rows: no more than the output has (to the register block).
    while (t.m > 32 && t.m / 2 >= M) t.m /= 2;
    // Workgroups for both cores: halve the longer side of the tile (each workgroup packs its own
    // A slab and reads its own B columns: square tiles read the least) while there is one.
    while (N !== undefined && Math.ceil(M / t.m) * Math.ceil(N / t.n) < 2 && (t.m > 32 || t.n > t.regN)) {
      if (t.m >= t.n && t.m > 32) t.m /= 2;
      else t.n = Math.max(t.regN, Math.ceil(t.n / 2 / t.regN) * t.regN);
    }
  }
  for (const k of CPU_KEYS) if (tiles && Object.hasOwn(tiles, k)) t[k] = tiles[k]!;
  return t;
}

/** Whether the micro-kernel reads B in place: regN consecutive columns contiguous (one unit-stride n run), regN dividing N. */
export function readsBInPlace(d: Dense, regN: number, constants: ReadonlyMap<string, number>): boolean {
  const run = mergedGroup(d.groups.n, [d.b]);
  if (run.length !== 1 || !unitStride(d.b.strides.get(run[0]!.vars.at(-1)!.name)!)) return false;
  const N = devaluate(d.N, constants);
  return N !== undefined && N % regN === 0;
}

export function lowerDenseCpu(name: string, s: IrStmt, d: Dense, L: ExprLowering, tile: DenseCpuTile): Kernel {
  const problem = denseCpuTileProblem(tile);
  if (problem) throw new LowerError(`statement '${s.target}': ${problem}`);
  const { m: MC, n: NC, k: KC, regM: MR, regN: NR, lanes: W } = tile;
  const NV = NR / W;
  const aName = L.buffer(d.a.tensor);
  const bName = L.buffer(d.b.tensor);
  const out = L.buffer(s.target, true);
  const dim = (x: Dense['M']): KExpr => dimExpr(x, L.sizes);
  const Mx = dim(d.M), Nx = dim(d.N);
  const fresh = freshSupply();
  const decl = (into: KStmt[], p: string, e: KExpr): KExpr => { const n = fresh(p); into.push(K.decl(n, 'i32', fold(e))); return K.v(n); };
  const off = (g: readonly DenseVar[], o: DenseOperand, f: KExpr, into: KStmt[]): KExpr => groupOffsetOf(L, fresh, g, [o], o, f, into);
  /** A lane loop: `make(v)` gives the statements of one lane. */
  const lanes = (make: (v: KExpr) => KStmt[]): KStmt => { const v = fresh('v'); return K.loop(v, K.i32(0), K.i32(W), make(K.v(v))); };
  const ld = (a: string, i: KExpr): KExpr => K.load(a, fold(i), 'f32');
  const inPlace = readsBInPlace(d, NR, L.sizes.constants);
  /**
   * Flat indices f0 .. f0 + len of group g as runs of its innermost merged group (for operand o):
   * per run, the outer variables' offset once and a loop variable `j` over [lo, hi) with the
   * element's place in the range (`rel`) and its offset in o (`offset`), both affine in j. The
   * caller puts its loop over j (and any loop around it) into `body`.
   */
  const runsOf = (g: readonly DenseVar[], o: DenseOperand, f0: KExpr, len: KExpr, into: KStmt[]): { body: KStmt[]; j: string; lo: KExpr; hi: KExpr; rel: KExpr; offset: KExpr } => {
    const ents = mergedGroup(g, [o]);
    const inner = ents.at(-1)!;
    const s1 = dim(o.strides.get(inner.vars.at(-1)!.name)!);
    const outer = ents.slice(0, -1).flatMap((x) => x.vars);
    const j = fresh('j'), jv = K.v(j);
    if (!outer.length) return { body: into, j, lo: f0, hi: fold(K.add(f0, len)), rel: K.sub(jv, f0), offset: K.mul(jv, s1) };
    const E = dim(inner.extent);
    const er = fresh('er');
    const body: KStmt[] = [];
    const q0 = decl(into, 'q', K.div(f0, E));
    into.push(K.loop(er, K.i32(0), K.add(K.sub(K.div(K.sub(K.add(f0, len), K.i32(1)), E), q0), K.i32(1)), body));
    const qE = decl(body, 'qe', K.mul(K.add(q0, K.v(er)), E));
    const lo = decl(body, 'jl', K.sub(K.bin('max', f0, qE), qE));
    const hi = decl(body, 'jh', K.sub(K.bin('min', K.add(f0, len), K.add(qE, E)), qE));
    const oo = decl(body, 'oo', off(outer, o, K.add(q0, K.v(er)), body));
    const rel = decl(body, 'rb', K.sub(qE, f0));
    return { body, j, lo, hi, rel: K.add(rel, jv), offset: K.add(oo, K.mul(jv, s1)) };
  };

  const body: KStmt[] = [];
  body.push(K.comment(`dense ${d.target} (blocked for CPUs): [${d.groups.batch.map((v) => v.name).join(',')}] (${d.groups.m.map((v) => v.name).join(',')}) x (${d.groups.n.map((v) => v.name).join(',')}) over (${d.groups.k.map((v) => v.name).join(',')}); tile ${MC}x${NC}x${KC}, micro ${MR}x${NR}, lanes ${W}; B ${inPlace ? 'in place' : 'packed'}`));
  const n0 = decl(body, 'n0', K.mul(K.wg('x'), K.i32(NC)));
  const m0 = decl(body, 'm0', K.mul(K.wg('y'), K.i32(MC)));
  const bz = decl(body, 'bz', K.wg('z'));
  const baseA = decl(body, 'baseA', off(d.groups.batch, d.a, bz, body));
  const baseB = decl(body, 'baseB', off(d.groups.batch, d.b, bz, body));
  // The rows, columns and panels this tile has (the last tile of a ragged edge has fewer).
  // (Runtime counts even where the sizes are known: constant trip counts around the micro-kernel
  // have GCC unroll loops there, and the micro-kernel then spills: 1.4x slower.)
  const rows = decl(body, 'rows', K.bin('min', K.i32(MC), K.sub(Mx, m0)));
  const cols = decl(body, 'cols', K.bin('min', K.i32(NC), K.sub(Nx, n0)));
  const panels = decl(body, 'panels', K.div(K.add(cols, K.i32(NR - 1)), K.i32(NR)));
  // ---- the summed variables: outer merged groups as loops, the innermost in steps -------------
  const runs = mergedGroup(d.groups.k, [d.a, d.b]);
  // One step (K known, at most tile.k): the sums start from 0 in registers and each row block
  // runs its epilogue as soon as its sums are done (its Cc rows still in L1).
  const kKnown = devaluate(d.K, L.sizes.constants);
  const single = runs.length === 1 && kKnown !== undefined && kKnown > 0 && kKnown <= KC;
  if (!single) {
    const e = fresh('e');
    body.push(K.loop(e, K.i32(0), K.i32((MC * NC) / W), [lanes((v) => [K.store('Cc__', fold(K.add(K.mul(K.v(e), K.i32(W)), v)), K.f32(0))])]));
  }
  const strideOf = (o: DenseOperand, run: { vars: DenseVar[] }): KExpr => dim(o.strides.get(run.vars.at(-1)!.name)!);
  let into = body;
  let offA = baseA, offB = baseB;
  for (const run of runs.slice(0, -1)) {
    const r = fresh('ko');
    const inner: KStmt[] = [];
    into.push(K.loop(r, K.i32(0), dim(run.extent), inner));
    offA = decl(inner, 'oa', K.add(offA, K.mul(K.v(r), strideOf(d.a, run))));
    offB = decl(inner, 'ob', K.add(offB, K.mul(K.v(r), strideOf(d.b, run))));
    into = inner;
  }
  const last = runs.at(-1)!;
  const sA = strideOf(d.a, last), sB = strideOf(d.b, last);
  const step: KStmt[] = [];
  const k0 = K.v('k0__');
  const kc = decl(step, 'kc', K.bin('min', K.i32(KC), K.sub(dim(last.extent), k0)));
  const kA = decl(step, 'ka', K.add(offA, K.mul(k0, sA)));
  const kB = decl(step, 'kb', K.add(offB, K.mul(k0, sB)));

  // ---- the slabs: Ap[i][kk] or Ap[kk][i] = A[m0 + i, k0 + kk] (A's own order), Bp[p][kk][c] =
  // B[k0 + kk, n0 + p * NR + c] where B is not read in place; 0 in the padding up to the register
  // block. Rows and columns are walked as runs, each copy loop contiguous in the operand it reads.
  const aRowMajor = unitStride(d.a.strides.get(last.vars.at(-1)!.name)!);
  const apAt = (r: KExpr, kk: KExpr): KExpr => (aRowMajor ? K.add(K.mul(r, K.i32(KC)), kk) : K.add(K.mul(kk, K.i32(MC)), r));
  {
    const padded = decl(step, 'ap', K.bin('min', K.i32(MC), K.mul(K.div(K.add(rows, K.i32(MR - 1)), K.i32(MR)), K.i32(MR))));
    const R = runsOf(d.groups.m, d.a, m0, rows, step);
    const kk = fresh('ak'), r = fresh('ar');
    const copy = (): KStmt => K.store('Ap__', fold(apAt(R.rel, K.v(kk))), ld(aName, K.add(K.add(kA, R.offset), K.mul(K.v(kk), sA))));
    const zero = [K.store('Ap__', fold(apAt(K.v(r), K.v(kk))), K.f32(0))];
    if (aRowMajor) {
      R.body.push(K.loop(R.j, R.lo, R.hi, [K.loop(kk, K.i32(0), kc, [copy()])]));
      step.push(K.loop(r, rows, padded, [K.loop(kk, K.i32(0), kc, zero)]));
    } else {
      R.body.push(K.loop(kk, K.i32(0), kc, [K.loop(R.j, R.lo, R.hi, [copy()])]));
      step.push(K.loop(kk, K.i32(0), kc, [K.loop(r, rows, padded, zero)]));
    }
  }
  if (!inPlace) {
    const p = fresh('pp'), c = fresh('pc'), kk = fresh('pk');
    const panel: KStmt[] = [];
    const col0 = decl(panel, 'pn', K.add(n0, K.mul(K.v(p), K.i32(NR))));
    const valid = decl(panel, 'pv', K.bin('max', K.i32(0), K.bin('min', K.i32(NR), K.sub(Nx, col0))));
    const at = (col: KExpr, kkE: KExpr): KExpr => K.add(K.mul(K.add(K.mul(K.v(p), K.i32(KC)), kkE), K.i32(NR)), col);
    if (unitStride(d.b.strides.get(last.vars.at(-1)!.name)!)) {
      // k is B's unit stride: per column, a contiguous run of k.
      const copy: KStmt[] = [];
      const colOff = decl(copy, 'po', K.add(kB, off(d.groups.n, d.b, K.add(col0, K.v(c)), copy)));
      copy.push(K.loop(kk, K.i32(0), kc, [K.store('Bp__', fold(at(K.v(c), K.v(kk))), ld(bName, K.add(colOff, K.mul(K.v(kk), sB))))]));
      panel.push(K.loop(c, K.i32(0), valid, copy));
    } else {
      // Columns are B's faster index: per k, the panel's columns as runs.
      const R = runsOf(d.groups.n, d.b, col0, valid, panel);
      R.body.push(K.loop(kk, K.i32(0), kc, [K.loop(R.j, R.lo, R.hi, [K.store('Bp__', fold(at(R.rel, K.v(kk))), ld(bName, K.add(K.add(kB, K.mul(K.v(kk), sB)), R.offset)))])]));
    }
    panel.push(K.loop(c, valid, K.i32(NR), [K.loop(kk, K.i32(0), kc, [K.store('Bp__', fold(at(K.v(c), K.v(kk))), K.f32(0))])]));
    step.push(K.loop(p, K.i32(0), panels, panel));
  }
  // ---- the micro-kernels ----------------------------------------------------------------------
  {
    const i0 = K.v('i0__'), p = K.v('p__');
    const rowBlock: KStmt[] = [];
    const micro: KStmt[] = [K.local('acc__', 'f32', MR * NR), K.local('bv__', 'f32', NR)];
    const cAt = (i: number, c: number, v: KExpr): KExpr => K.add(K.add(K.mul(K.add(i0, K.i32(i)), K.i32(NC)), K.add(K.mul(p, K.i32(NR)), K.i32(c * W))), v);
    const accAt = (i: number, c: number, v: KExpr): KExpr => K.add(K.i32((i * NV + c) * W), v);
    micro.push(lanes((v) => Array.from({ length: MR * NV }, (_, x) => K.store('acc__', fold(accAt(Math.floor(x / NV), x % NV, v)), single ? K.f32(0) : ld('Cc__', cAt(Math.floor(x / NV), x % NV, v))))));
    const colB = inPlace ? decl(micro, 'cb', K.add(kB, K.add(n0, K.mul(p, K.i32(NR))))) : undefined;
    const kb: KStmt[] = [];
    const kk = K.v('kk__');
    // The micro tile's regN values of B at this k: in place, or from its panel.
    const pan = colB ? decl(kb, 'pb', K.add(colB, K.mul(kk, sB))) : decl(kb, 'pb', K.mul(K.add(K.mul(p, K.i32(KC)), kk), K.i32(NR)));
    kb.push(lanes((v) => Array.from({ length: NV }, (_, c) => K.store('bv__', fold(K.add(K.i32(c * W), v)), ld(colB ? bName : 'Bp__', K.add(pan, K.add(K.i32(c * W), v)))))));
    // The micro tile's regM values of A at this k (broadcast into the lanes).
    for (let i = 0; i < MR; i++) kb.push(K.decl(`a${i}__`, 'f32', ld('Ap__', apAt(K.add(i0, K.i32(i)), kk))));
    kb.push(lanes((v) => {
      const st: KStmt[] = [];
      for (let i = 0; i < MR; i++) for (let c = 0; c < NV; c++) {
        const at = fold(accAt(i, c, v));
        st.push(K.store('acc__', at, K.add(K.load('acc__', at, 'f32'), K.mul(K.v(`a${i}__`, 'f32'), K.load('bv__', fold(K.add(K.i32(c * W), v)), 'f32')))));
      }
      return st;
    }));
    micro.push(K.loop('kk__', K.i32(0), kc, kb));
    micro.push(lanes((v) => Array.from({ length: MR * NV }, (_, x) => K.store('Cc__', fold(cAt(Math.floor(x / NV), x % NV, v)), ld('acc__', accAt(Math.floor(x / NV), x % NV, v))))));
    rowBlock.push(K.loop('p__', K.i32(0), panels, micro));
    if (single) rowBlock.push(...epilogue(i0, K.bin('min', K.add(i0, K.i32(MR)), rows)));
    step.push(K.loop('i0__', K.i32(0), rows, rowBlock, MR));
  }
  into.push(K.loop('k0__', K.i32(0), dim(last.extent), step, KC));
  if (!single) body.push(...epilogue(K.i32(0), rows));

  // ---- the epilogue: the tail on each sum of rows r0 .. r1, stored where the output has it ----
  function epilogue(r0: KExpr, r1: KExpr): KStmt[] {
    const bind = new Map<string, Binding>();
    const unflat = (g: readonly DenseVar[], f: KExpr, into: KStmt[], b: Map<string, Binding>): void => {
      let rest = f;
      for (let k = g.length - 1; k >= 0; k--) {
        const v = g[k]!;
        const n = fresh(`i_${v.name.replace(/[^A-Za-z0-9_]/g, '_')}_`);
        if (k === 0) into.push(K.decl(n, 'i32', rest));
        else {
          const ext = dim(v.extent);
          into.push(K.decl(n, 'i32', fold(K.bin('%', rest, ext))));
          rest = decl(into, 'q', K.bin('/', rest, ext));
        }
        b.set(v.name, { expr: K.v(n), extent: v.extent });
      }
    };
    const epi: KStmt[] = [];
    unflat(d.groups.batch, bz, epi, bind);
    const i = K.v('ei__'), j = K.v('ej__');
    const row: KStmt[] = [];
    const gm = decl(row, 'gm', K.add(m0, i));
    const b1 = new Map(bind);
    unflat(d.groups.m, gm, row, b1);
    // Columns n0 .. n0 + cols as runs of the n group's innermost variable (extent E): run q has
    // the outer variables of q and the innermost from max(n0, qE) - qE to min(n0 + cols, (q + 1)E) - qE;
    // from 0 to E (a constant trip count) where E divides the tile, one run where there is one variable.
    const g = d.groups.n;
    const innerVar = g.at(-1)!;
    const E = dim(innerVar.extent);
    const Ek = devaluate(innerVar.extent, L.sizes.constants);
    const whole = Ek !== undefined && Ek > 0 && NC % Ek === 0;
    const runBody: KStmt[] = [];
    const b2 = new Map(b1);
    let lo: KExpr, hi: KExpr, cBase: KExpr;
    if (g.length === 1) {
      [lo, hi] = [n0, K.add(n0, cols)];
      cBase = decl(row, 'cc', K.sub(K.mul(i, K.i32(NC)), n0));
    } else {
      const q0 = decl(row, 'nq', K.div(n0, E));
      const nRuns = whole ? K.div(cols, E) : K.add(K.sub(K.div(K.sub(K.add(n0, cols), K.i32(1)), E), q0), K.i32(1));
      const q = decl(runBody, 'rq', K.add(q0, K.v('er__')));
      const qE = decl(runBody, 'qe', K.mul(q, E));
      unflat(g.slice(0, -1), q, runBody, b2);
      [lo, hi] = whole ? [K.i32(0), E] : [decl(runBody, 'jl', K.sub(K.bin('max', n0, qE), qE)), decl(runBody, 'jh', K.sub(K.bin('min', K.add(n0, cols), K.add(qE, E)), qE))];
      cBase = decl(runBody, 'cc', K.sub(K.add(K.mul(i, K.i32(NC)), qE), n0));
      row.push(K.loop('er__', K.i32(0), fold(nRuns), runBody));
    }
    const col: KStmt[] = [];
    const b3 = new Map(b2);
    b3.set(innerVar.name, { expr: j, extent: innerVar.extent });
    b3.set('%acc', { expr: ld('Cc__', K.add(cBase, j)) });
    const value = L.expr(d.epilogue, b3, col);
    const outIdx = s.indices.map((v) => L.expr(d.outputs.get(v.name)!, b3, col));
    col.push(K.store(out, L.offset(s.target, outIdx), K.cast(value, L.buffers.get(s.target)!.type)));
    (g.length === 1 ? row : runBody).push(K.loop('ej__', lo, hi, col));
    epi.push(K.loop('ei__', r0, r1, row));
    return epi;
  }

  const ceil = (x: KExpr, t: number): KExpr => fold(K.div(K.add(x, K.i32(t - 1)), K.i32(t)));
  const shared: KShared[] = [{ name: 'Ap__', type: 'f32', size: MC * KC }, ...(inPlace ? [] : [{ name: 'Bp__', type: 'f32' as const, size: NC * KC }]), { name: 'Cc__', type: 'f32', size: MC * NC }];
  return {
    name, workgroup: [1, 1, 1],
    grid: [ceil(Nx, NC), ceil(Mx, MC), dim(d.batch)],
    buffers: [], scalars: [], shared, body, contract: true,
  };
}
