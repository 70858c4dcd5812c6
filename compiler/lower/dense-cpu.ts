// Dense contractions (compiler/dense.ts) as blocked matrix products for CPU-like targets, the
// way a CPU GEMM is built: one single-thread workgroup per macro tile of C[batch, m, n] =
// sum_k A[batch, m, k] B[batch, k, n] (tile.m x tile.n outputs; workgroups spread over cores):
//   - the K loop steps by tile.k; each step packs the slabs of A and B into workgroup memory:
//     A in its own order (Ap[row][k] or Ap[k][row]) and B as panels of regN columns, Bp[panel][k][regN] (0 in the ragged edges'
//     padding up to the register block), so the micro-kernel reads each k's regM values of A
//     and regN of B contiguously and the slabs stay in L1/L2 for the whole tile; the copy
//     loops run over the in-range part only, in the order that reads the operand contiguously;
//   - the micro-kernel: regM rows x regN columns of accumulators in a local array, the k loop
//     innermost; per k, regM values of A (broadcasts) and regN of the panel; the accumulators' updates are lane loops of `lanes` consecutive
//     elements (for v in [0, lanes): acc[c + v] = acc[c + v] + a * b[c' + v]), which the native
//     printer prints as vector operations (targets/native/lanes.ts) and other targets as loops;
//   - partial sums live in workgroup memory Cc[tile.m][tile.n] between K steps (f32, exact);
//   - the epilogue: the statement's elementwise tail on each sum, stored where the output has it.
// Every output is one f32 sum in k order from 0 (acc + a * b, no fma): the map lowering's sum.
import { type Dense, type DenseOperand, unitStride } from '../dense.js';
import type { IrStmt } from '../ir.js';
import * as K from '../kir.js';
import type { Kernel, KExpr, KStmt } from '../kir.js';
import { type Binding, dimExpr, type ExprLowering, fold, LowerError } from './expr.js';
import { freshSupply, groupOffsetOf } from './dense.js';

/** The blocking of a blocked dense product (schedule: a statement's `tiles`, or the default). */
export interface DenseCpuTile {
  /** Output rows and columns per workgroup (the macro tile). */
  m: number; n: number;
  /** Summed extent packed per step. */
  k: number;
  /** The micro tile: regM rows x regN columns of accumulators. */
  regM: number; regN: number;
  /** Elements per lane loop (16: one AVX-512 register of f32). */
  lanes: number;
}

/**
 * 256 x 256 macro tiles, k steps of 128 (slabs of 128 KiB each, partial sums 256 KiB: L2),
 * 8 x 32 micro tiles (16 zmm accumulators). Packing costs (1/m + 1/n) per multiply-add: the
 * larger the tile, the less.
 */
export const DEFAULT_DENSE_CPU_TILE: DenseCpuTile = { m: 256, n: 256, k: 128, regM: 8, regN: 32, lanes: 16 };
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
 * The default blocking: 64 x 128 macro tiles (64 columns where the output has at most 64, so
 * fewer padded columns), down to 32 rows where the output has few (known sizes), so that the
 * cores get a few workgroups. `tiles` (a statement's choice: m, n, k, regM, regN, lanes) override it.
 */
export function chooseDenseCpuTile(d: Dense, constants: ReadonlyMap<string, number>, tiles?: Readonly<Record<string, number>>): DenseCpuTile {
  const val = (x: Dense['M']): number | undefined => {
    let out = 0;
    for (const [mono, c] of x) {
      let t = c;
      for (const a of mono ? mono.split('*') : []) { const v = constants.get(a); if (v === undefined) return undefined; t *= v; }
      out += t;
    }
    return out;
  };
  const M = val(d.M), N = val(d.N);
  const t = { ...DEFAULT_DENSE_CPU_TILE };
  if (N !== undefined && N < t.n) t.n = Math.max(t.regN, Math.ceil(N / t.regN) * t.regN);
  if (M !== undefined && N !== undefined) {
    // A few workgroups for the cores (each packs its own slabs: narrower tiles pack more per flop).
    while (t.m > 32 && Math.ceil(M / t.m) * Math.ceil(N / t.n) < 4) t.m /= 2;
  }
  for (const k of CPU_KEYS) if (tiles && Object.hasOwn(tiles, k)) t[k] = tiles[k]!;
  return t;
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
  const Mx = dim(d.M), Nx = dim(d.N), Kx = dim(d.K);
  const fresh = freshSupply();
  const decl = (into: KStmt[], p: string, e: KExpr): KExpr => { const n = fresh(p); into.push(K.decl(n, 'i32', fold(e))); return K.v(n); };
  const off = (g: Dense['groups']['m'], o: DenseOperand, f: KExpr, into: KStmt[]): KExpr => groupOffsetOf(L, fresh, g, [o], o, f, into);
  /** A lane loop: `make(v)` gives the statements of one lane. */
  const lanes = (make: (v: KExpr) => KStmt[]): KStmt => { const v = fresh('v'); return K.loop(v, K.i32(0), K.i32(W), make(K.v(v))); };
  const ld = (a: string, i: KExpr): KExpr => K.load(a, fold(i), 'f32');

  const body: KStmt[] = [];
  body.push(K.comment(`dense ${d.target} (blocked for CPUs): [${d.groups.batch.map((v) => v.name).join(',')}] (${d.groups.m.map((v) => v.name).join(',')}) x (${d.groups.n.map((v) => v.name).join(',')}) over (${d.groups.k.map((v) => v.name).join(',')}); tile ${MC}x${NC}x${KC}, micro ${MR}x${NR}, lanes ${W}`));
  const n0 = decl(body, 'n0', K.mul(K.wg('x'), K.i32(NC)));
  const m0 = decl(body, 'm0', K.mul(K.wg('y'), K.i32(MC)));
  const bz = decl(body, 'bz', K.wg('z'));
  const baseA = decl(body, 'baseA', off(d.groups.batch, d.a, bz, body));
  const baseB = decl(body, 'baseB', off(d.groups.batch, d.b, bz, body));
  // The rows and panels this tile has (the last tile of a ragged edge has fewer).
  const rows = decl(body, 'rows', K.bin('min', K.i32(MC), K.sub(Mx, m0)));
  const panels = decl(body, 'panels', K.div(K.add(K.bin('min', K.i32(NC), K.sub(Nx, n0)), K.i32(NR - 1)), K.i32(NR)));
  const e = fresh('e');
  body.push(K.loop(e, K.i32(0), K.i32((MC * NC) / W), [lanes((v) => [K.store('Cc__', fold(K.add(K.mul(K.v(e), K.i32(W)), v)), K.f32(0))])]));

  const step: KStmt[] = [];
  const k0 = K.v('k0__');
  const kc = decl(step, 'kc', K.bin('min', K.i32(KC), K.sub(Kx, k0)));
  // ---- pack the slabs: Ap[kk][i] = A[m0 + i, k0 + kk], Bp[p][kk][j] = B[k0 + kk, n0 + p * NR + j]
  // (0 outside), each in the loop order that reads its operand contiguously ---------------------
  const kInner = d.groups.k.at(-1);
  const pack = (o: DenseOperand, buf: string, arr: string, r0: KExpr, R: KExpr, extent: number, reg: number, group: Dense['groups']['m'], at: (r: KExpr, kk: KExpr) => KExpr): void => {
    const kFast = kInner !== undefined && unitStride(o.strides.get(kInner.name)!);
    const kk = fresh('pk'), rr = fresh('pr');
    // Rows (or columns) in range, and the zero padding up to the register block the micro-kernel reads.
    const valid = decl(step, 'pv', K.bin('min', K.i32(extent), K.sub(R, r0)));
    const padded = decl(step, 'pp', K.bin('min', K.i32(extent), K.mul(K.div(K.add(valid, K.i32(reg - 1)), K.i32(reg)), K.i32(reg))));
    const copy: KStmt[] = [];
    const gk = decl(copy, 'gk', K.add(k0, K.v(kk)));
    const gr = decl(copy, 'gr', K.add(r0, K.v(rr)));
    const base = o === d.a ? baseA : baseB;
    const src = fold(K.add(K.add(base, off(group, o, gr, copy)), off(d.groups.k, o, gk, copy)));
    copy.push(K.store(arr, fold(at(K.v(rr), K.v(kk))), ld(buf, src)));
    const zero = [K.store(arr, fold(at(K.v(rr), K.v(kk))), K.f32(0))];
    const rLoop = (from: KExpr, to: KExpr, b: KStmt[]): KStmt => K.loop(rr, from, to, b);
    const kLoop = (b: KStmt[]): KStmt => K.loop(kk, K.i32(0), kc, b);
    // The loop order that reads the operand contiguously (k innermost where k is its unit stride).
    if (kFast) step.push(rLoop(K.i32(0), valid, [kLoop(copy)]), rLoop(valid, padded, [kLoop(zero)]));
    else step.push(kLoop([rLoop(K.i32(0), valid, copy), rLoop(valid, padded, zero)]));
  };
  // Ap in A's own order (a contiguous copy): rows of the slab where k is A's unit stride, else k-major.
  const aRowMajor = kInner !== undefined && unitStride(d.a.strides.get(kInner.name)!);
  const apAt = (r: KExpr, kk: KExpr): KExpr => (aRowMajor ? K.add(K.mul(r, K.i32(KC)), kk) : K.add(K.mul(kk, K.i32(MC)), r));
  pack(d.a, aName, 'Ap__', m0, Mx, MC, MR, d.groups.m, apAt);
  pack(d.b, bName, 'Bp__', n0, Nx, NC, NR, d.groups.n, (r, kk) => K.add(K.mul(K.add(K.mul(K.div(r, K.i32(NR)), K.i32(KC)), kk), K.i32(NR)), K.bin('%', r, K.i32(NR))));
  // ---- the micro-kernels ----------------------------------------------------------------------
  {
    const i0 = K.v('i0__'), p = K.v('p__');
    const rowBlock: KStmt[] = [];
    const micro: KStmt[] = [K.local('acc__', 'f32', MR * NR), K.local('bv__', 'f32', NR)];
    const cAt = (i: number, c: number, v: KExpr): KExpr => K.add(K.add(K.mul(K.add(i0, K.i32(i)), K.i32(NC)), K.add(K.mul(p, K.i32(NR)), K.i32(c * W))), v);
    const accAt = (i: number, c: number, v: KExpr): KExpr => K.add(K.i32((i * NV + c) * W), v);
    micro.push(lanes((v) => Array.from({ length: MR * NV }, (_, x) => K.store('acc__', fold(accAt(Math.floor(x / NV), x % NV, v)), ld('Cc__', cAt(Math.floor(x / NV), x % NV, v))))));
    const kb: KStmt[] = [];
    const kk = K.v('kk__');
    const pan = decl(kb, 'pb', K.mul(K.add(K.mul(p, K.i32(KC)), kk), K.i32(NR)));
    kb.push(lanes((v) => Array.from({ length: NV }, (_, c) => K.store('bv__', fold(K.add(K.i32(c * W), v)), ld('Bp__', K.add(pan, K.add(K.i32(c * W), v)))))));
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
    step.push(K.loop('i0__', K.i32(0), rows, rowBlock, MR));
  }
  body.push(K.loop('k0__', K.i32(0), Kx, step, KC));

  // ---- the epilogue: the tail on each sum, stored where the output has it -------------------
  {
    const bind = new Map<string, Binding>();
    const unflat = (g: Dense['groups']['m'], f: KExpr, into: KStmt[], b: Map<string, Binding>): void => {
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
    const col: KStmt[] = [];
    const gn = decl(col, 'gn', K.add(n0, j));
    const b2 = new Map(b1);
    unflat(d.groups.n, gn, col, b2);
    b2.set('%acc', { expr: ld('Cc__', K.add(K.mul(i, K.i32(NC)), j)) });
    const value = L.expr(d.epilogue, b2, col);
    const outIdx = s.indices.map((v) => L.expr(d.outputs.get(v.name)!, b2, col));
    col.push(K.store(out, L.offset(s.target, outIdx), K.cast(value, L.buffers.get(s.target)!.type)));
    row.push(K.loop('ej__', K.i32(0), K.bin('min', K.i32(NC), K.sub(Nx, n0)), col));
    epi.push(K.loop('ei__', K.i32(0), rows, row));
    body.push(...epi);
  }

  const ceil = (x: KExpr, t: number): KExpr => fold(K.div(K.add(x, K.i32(t - 1)), K.i32(t)));
  return {
    name, workgroup: [1, 1, 1],
    grid: [ceil(Nx, NC), ceil(Mx, MC), dim(d.batch)],
    buffers: [], scalars: [],
    shared: [{ name: 'Ap__', type: 'f32', size: MC * KC }, { name: 'Bp__', type: 'f32', size: NC * KC }, { name: 'Cc__', type: 'f32', size: MC * NC }],
    body,
  };
}
