// Drives the CUDA runner against the mock driver (libcuda_mock.c), in a process of its own
// (the addon loads its driver once per process). tests/cuda-runtime.test.ts bundles this file,
// runs it with RETNETC_LIBCUDA pointing at the mock and reads the JSON it prints.
//
//   node harness.mjs status             {"status": cudaStatus()}
//   node harness.mjs plumbing ROOT LOG [swap-q-k]
//                                        runs plans with a contract-stub printer and checks every
//                                        launch the mock logged against the plan: names, blocks,
//                                        grids from the manifest's formulas, scalars, and the
//                                        checksum of every buffer against the host data bound to
//                                        it (swap-q-k: the runner is given q's buffer for k and
//                                        k's for q, which the checks must report)
//   node harness.mjs fold ROOT LOG      B * H = 70000: grids fold y into x (real printer)
//   node harness.mjs huge ROOT LOG      a 2^31-element tensor is refused before allocation
//   node harness.mjs run-error ROOT     {"error": message of runPlanCuda's rejection}
import * as fs from 'node:fs';
import type { Kernel, KType } from '../../../compiler/kir.js';
import { compilePlan, type Plan, specialisedSizes } from '../../../compiler/plan.js';
import { makeSchedule, type Form, type StorageDtype } from '../../../compiler/schedule.js';
import { emitKernel, emitPlan } from '../../../targets/emit.js';
import type { EmittedKernel } from '../../../targets/emitted.js';
import { toHalfArray } from '../../../targets/half.js';
import { loadCaseFn } from '../agreement.js';
import { cudaContext, cudaStatus, type CudaInput, runPlanCuda, timeCuda } from '../runner.js';
import { runSmoke, SMOKE_KERNEL } from '../smoke.js';

const C_TYPE: Record<KType, string> = { f32: 'float', i32: 'int', bool: 'int' };

/** A printer that honours the contract (parameters, grid, workgroup) with an empty body. */
export function stubEmit(k: Kernel): EmittedKernel {
  const params = [...k.buffers.map((b) => `${b.storage ? 'unsigned short' : C_TYPE[b.type]}* ${b.name}`), ...k.scalars.map((s) => `${C_TYPE[s.type]} ${s.name}`)];
  return {
    target: 'cuda',
    entry: k.name,
    code: `extern "C" __global__ void ${k.name}(${params.join(', ')}) {}\n`,
    workgroup: k.workgroup,
    // Reversed lists: the runner must order parameters by position, not by list order.
    buffers: k.buffers.map((b, i) => ({ name: b.name, type: b.type, ...(b.storage ? { storage: b.storage } : {}), access: b.access, binding: i })).reverse(),
    scalars: k.scalars.map((s, i) => ({ name: s.name, type: s.type, offset: k.buffers.length + i })).reverse(),
    grid: k.grid,
    foldX: false,
    dynamicSharedBytes: 0,
  };
}

/** Distinct data for every input (a swap of two same-sized tensors changes what a kernel sees). */
function inputsFor(fn: ReturnType<typeof loadCaseFn>, shape: Record<string, number>): Map<string, CudaInput> {
  const m = new Map<string, CudaInput>();
  fn.params.forEach((p, k) => {
    const s = p.shape.map((d) => [...d].reduce((a, [key, c]) => a + (key === '' ? c : c * shape[key]!), 0));
    const n = s.reduce((a, b) => a * b, 1);
    m.set(p.name, { shape: s, data: Float32Array.from({ length: n }, (_, i) => (p.name === 'gamma' ? 0.9 : Math.sin(i + 1000 * (k + 1)))) });
  });
  return m;
}

/** FNV-1a, 64 bits, as hex: what the mock driver logs for each buffer at each launch. */
export function fnv1a64(bytes: Uint8Array): string {
  let hi = 0xcbf29ce4, lo = 0x84222325;
  for (let i = 0; i < bytes.length; i++) {
    lo = (lo ^ bytes[i]!) >>> 0;
    // (hi:lo) * (2^40 + 0x1b3) mod 2^64
    const l = lo * 0x1b3;
    const nlo = l >>> 0;
    const nhi = (hi * 0x1b3 + Math.floor(l / 4294967296) + (lo << 8)) >>> 0;
    hi = nhi;
    lo = nlo;
  }
  return hi.toString(16).padStart(8, '0') + lo.toString(16).padStart(8, '0');
}

/**
 * A C-like integer formula of the manifest ("(size_T + 15) / 16", "size_B * size_H", "B", "H*K")
 * evaluated here, independently of the runtime's evaluator: + - * / % and parentheses, division
 * truncating toward zero (x / 0 = 0), names from `env`.
 */
export function evalFormula(text: string, env: Readonly<Record<string, number>>): number {
  const toks = text.match(/\d+|[A-Za-z_]\w*|[-+*/%()]/g) ?? [];
  if (toks.join('') !== text.replace(/\s+/g, '')) throw new Error(`formula '${text}': unexpected characters`);
  let i = 0;
  const atom = (): number => {
    const t = toks[i++];
    if (t === '(') { const v = sum(); if (toks[i++] !== ')') throw new Error(`formula '${text}': missing )`); return v; }
    if (t === '-') return -atom();
    if (t !== undefined && /^\d+$/.test(t)) return Number(t);
    if (t !== undefined && t in env) return env[t]!;
    throw new Error(`formula '${text}': unknown '${t}'`);
  };
  const prod = (): number => {
    let v = atom();
    while (toks[i] === '*' || toks[i] === '/' || toks[i] === '%') {
      const op = toks[i++]!;
      const w = atom();
      v = op === '*' ? v * w : w === 0 ? 0 : op === '/' ? Math.trunc(v / w) : v % w;
    }
    return v;
  };
  const sum = (): number => {
    let v = prod();
    while (toks[i] === '+' || toks[i] === '-') v = toks[i++] === '+' ? v + prod() : v - prod();
    return v;
  };
  const v = sum();
  if (i !== toks.length) throw new Error(`formula '${text}': trailing '${toks[i]}'`);
  return v;
}

interface LoggedArg { buf?: string; bytes?: number; hash?: string; scalar?: string }
interface Logged { name: string; grid: number[]; block: number[]; shared: number; args: LoggedArg[] }

function parseLaunch(line: string): Logged | undefined {
  const m = /^launch (\S+) grid (\d+) (\d+) (\d+) block (\d+) (\d+) (\d+) shared (\d+) args ?(.*)$/.exec(line);
  if (!m) return undefined;
  const args = (m[9] ?? '').split(' ').filter(Boolean).map((a): LoggedArg => {
    const b = /^(buf\d+(?:\+\d+)?):(\d+):([0-9a-f]{16})$/.exec(a);
    return b ? { buf: b[1]!, bytes: Number(b[2]), hash: b[3]! } : { scalar: a };
  });
  return { name: m[1]!, grid: [+m[2]!, +m[3]!, +m[4]!], block: [+m[5]!, +m[6]!, +m[7]!], shared: +m[8]!, args };
}

/**
 * Checks the launches the mock logged for `plan` against the plan itself, with grids from the
 * manifest's formulas over `sizes` (the shape the test chose) and, for every buffer argument, the
 * hash of the bytes the host bound to that tensor (inputs as uploaded, every other tensor zeroed:
 * the mock runs no kernel). `foldY`: launches past 65535 in y are expected as (x * y, 1, z).
 */
function checkLaunches(where: string, plan: Plan, inputs: ReadonlyMap<string, CudaInput>, sizes: Record<string, number>, lines: string[], problems: string[]): { launches: number; hashes: number } {
  const { manifest } = emitPlan(plan, 'cuda');
  const kernels = new Map(manifest.kernels.map((k) => [k.entry, k] as const));
  const tensors = new Map(manifest.tensors.map((t) => [t.id, t] as const));
  const numelOf = (id: string) => tensors.get(id)!.shape.reduce((a, d) => a * evalFormula(d, sizes), 1);
  // The bytes each tensor holds at every launch.
  const expected = new Map<string, string>();
  const bytesOf = (id: string): Uint8Array => {
    const t = tensors.get(id)!;
    const n = numelOf(id);
    const p = plan.fn.params.find((x) => x.v === id);
    if (!p) return new Uint8Array(n * (t.type === 'f16' || t.type === 'bf16' ? 2 : 4));
    const d = inputs.get(p.name)?.data ?? [p.default!];
    if (t.type === 'f16' || t.type === 'bf16') return new Uint8Array(toHalfArray(d, t.type, n).buffer);
    if (t.type === 'i32') return new Uint8Array(Int32Array.from({ length: n }, (_, i) => d[i]!).buffer);
    return new Uint8Array(Float32Array.from({ length: n }, (_, i) => d[i]!).buffer);
  };
  const hashOf = (id: string) => {
    let h = expected.get(id);
    if (!h) expected.set(id, (h = `${bytesOf(id).length}:${fnv1a64(bytesOf(id))}`));
    return h;
  };
  if (lines.length !== plan.launches.length) problems.push(`${where}: ${lines.length} launches logged, plan has ${plan.launches.length}`);
  let launches = 0;
  let hashes = 0;
  const bufOf = new Map<string, string>();
  const tensorOf = new Map<string, string>();
  plan.launches.forEach((l, i) => {
    const line = lines[i] ?? '';
    const got = parseLaunch(line);
    if (!got) { problems.push(`${where}: launch ${i} not logged properly: '${line}'`); return; }
    const k = l.kernel;
    if (got.name !== k.name) problems.push(`${where}: launch ${i} is ${got.name}, expected ${k.name}`);
    const mk = kernels.get(k.name)!;
    const ml = manifest.launches[i]!;
    const env: Record<string, number> = {};
    for (const s of ml.scalars) env[s.name] = sizes[s.size]!;
    let grid = mk.grid.map((g) => evalFormula(g, env));
    // First principles: a thread per element (elementwise), B * H batch entries in y (contractions).
    if (l.how === 'elementwise' && grid[0] !== Math.ceil(numelOf(l.target) / k.workgroup[0])) problems.push(`${where}: ${k.name}: the formula gives ${grid[0]} blocks for ${numelOf(l.target)} elements of ${k.workgroup[0]} threads`);
    if (l.how === 'contraction' && grid[1] !== sizes['B']! * sizes['H']!) problems.push(`${where}: ${k.name}: the formula gives ${grid[1]} blocks in y for B * H = ${sizes['B']! * sizes['H']!}`);
    if (grid[1]! > 65535) {
      if (!mk.grid || !emitKernel(k, 'cuda').foldY) problems.push(`${where}: ${k.name} has ${grid[1]} blocks in y and does not fold`);
      grid = [grid[0]! * grid[1]!, 1, grid[2]!];
    }
    if (got.grid.join(' ') !== grid.join(' ')) problems.push(`${where}: ${k.name} grid ${got.grid.join('x')}, expected ${grid.join('x')}`);
    if (got.block.join(' ') !== k.workgroup.join(' ')) problems.push(`${where}: ${k.name} block ${got.block.join('x')}, expected ${k.workgroup.join('x')}`);
    if (got.args.length !== k.buffers.length + k.scalars.length) problems.push(`${where}: ${k.name} got ${got.args.length} arguments, expected ${k.buffers.length + k.scalars.length}`);
    k.buffers.forEach((b, j) => {
      const tensor = l.buffers[b.name]!;
      const a = got.args[j];
      if (!a?.buf) { problems.push(`${where}: ${k.name} argument ${j} (${b.name}) is '${a?.scalar ?? ''}', not a device buffer with its checksum`); return; }
      if (bufOf.has(tensor) && bufOf.get(tensor) !== a.buf) problems.push(`${where}: tensor ${tensor} passed as ${a.buf} and ${bufOf.get(tensor)}`);
      if (tensorOf.has(a.buf) && tensorOf.get(a.buf) !== tensor) problems.push(`${where}: ${a.buf} passed for ${tensor} and ${tensorOf.get(a.buf)}`);
      bufOf.set(tensor, a.buf);
      tensorOf.set(a.buf, tensor);
      const want = hashOf(tensor);
      if (`${a.bytes}:${a.hash}` !== want) problems.push(`${where}: ${k.name} argument ${j} (${b.name}, tensor ${tensor}): the device buffer holds ${a.bytes} bytes with checksum ${a.hash}, the host bound ${want.replace(':', ' bytes with checksum ')}`);
      hashes++;
    });
    k.scalars.forEach((s, j) => {
      const want = `i32:${sizes[l.scalars[s.name]!]}`;
      const a = got.args[k.buffers.length + j];
      if (a?.scalar !== want) problems.push(`${where}: ${k.name} scalar ${s.name} is '${a?.scalar ?? a?.buf}', expected '${want}'`);
    });
    launches++;
  });
  return { launches, hashes };
}

/** The plan with the bindings of tensors a and b exchanged in every launch: a runner that swaps two buffers. */
function swapped(plan: Plan, a: string, b: string): Plan {
  const ida = plan.fn.params.find((p) => p.name === a)!.v, idb = plan.fn.params.find((p) => p.name === b)!.v;
  return {
    ...plan,
    launches: plan.launches.map((l) => ({ ...l, buffers: Object.fromEntries(Object.entries(l.buffers).map(([k, id]) => [k, id === ida ? idb : id === idb ? ida : id])) })),
  };
}

async function plumbing(root: string, logFile: string, inject?: string): Promise<unknown> {
  const problems: string[] = [];
  const ctx = cudaContext();
  const fn = loadCaseFn(root, { file: 'models/retention.ret', fn: 'retention' });
  const shape = { B: 2, H: 3, T: 70, K: 8, V: 8 };
  const inputs = inputsFor(fn, shape);
  let launches = 0;
  let hashes = 0;
  // Half storage too: the mock checks every copy and memset against its allocation's size.
  const cases: [Form, boolean, StorageDtype][] = [['chunkwise', false, 'f32'], ['recurrent', true, 'f32'], ['chunkwise', true, 'f16'], ['parallel', false, 'bf16']];
  for (const [form, backward, dtype] of cases) {
    const all = new Map<string, CudaInput>(inputs);
    if (backward) all.set('grad.o', { shape: [2, 3, 70, 8], data: Float32Array.from({ length: 2 * 3 * 70 * 8 }, (_, i) => Math.cos(i)) });
    const constants = new Map(specialisedSizes(fn, backward).map((s) => [s, shape[s as keyof typeof shape]] as const));
    const plan = compilePlan(fn, makeSchedule(form, 16, { dtype }), { backward, constants });
    fs.writeFileSync(logFile, '');
    const out = await runPlanCuda(inject === 'swap-q-k' ? swapped(plan, 'q', 'k') : plan, all, { emit: stubEmit, reuse: false });
    const lines = fs.readFileSync(logFile, 'utf8').split('\n').filter((l) => l.startsWith('launch '));
    const where = `${form}${backward ? ' backward' : ''}${dtype === 'f32' ? '' : ` ${dtype}`}`;
    if (dtype !== 'f32' && plan.half.size === 0) problems.push(`${where}: no tensor is stored as ${dtype}`);
    const r = checkLaunches(where, plan, all, { ...shape }, lines, problems);
    launches += r.launches;
    hashes += r.hashes;
    for (const o of plan.fn.outputs) {
      const t = out.get(o.name);
      if (!t) { problems.push(`${where}: no output ${o.name}`); continue; }
      if (t.data.some((x) => x !== 0)) problems.push(`${where}: output ${o.name} is not the zeroed allocation`);
      if (t.data.length !== t.shape.reduce((a, b) => a * b, 1)) problems.push(`${where}: output ${o.name} has ${t.data.length} values for shape ${t.shape}`);
    }
  }
  // The contract kernel: > 48 KiB of dynamic shared memory needs cuFuncSetAttribute first (the mock enforces it).
  fs.writeFileSync(logFile, '');
  await runSmoke(ctx, 1000);
  const log = fs.readFileSync(logFile, 'utf8');
  if (!log.includes(`attr ${SMOKE_KERNEL.entry} 8 ${SMOKE_KERNEL.dynamicSharedBytes}`)) problems.push(`smoke: no cuFuncSetAttribute for ${SMOKE_KERNEL.dynamicSharedBytes} bytes in: ${log}`);
  if (!/launch retnetc_smoke_axpy grid 4 1 1 block 256 1 1 shared 66560 args buf\d+:4000:[0-9a-f]{16} buf\d+:4000:[0-9a-f]{16} i32:1000 f32:1.25/.test(log)) problems.push(`smoke: unexpected launch: ${log}`);
  const ms = timeCuda(ctx, () => {}, 3);
  if (!(ms >= 0)) problems.push(`timeCuda gave ${ms}`);
  return { ok: problems.length === 0, problems, launches, hashes, device: ctx.device.name, target: ctx.target };
}

/**
 * B * H = 70000 batch entries (past CUDA's 65535 blocks in y) at T = 3, K = V = 2, with the real
 * printer: every contraction launch folds y into x, and the kernels rebuild their ids from the
 * linear block index (checked here for every block of the launched grid).
 */
async function fold(root: string, logFile: string): Promise<unknown> {
  const problems: string[] = [];
  const fn = loadCaseFn(root, { file: 'models/retention.ret', fn: 'retention' });
  const shape = { B: 35000, H: 2, T: 3, K: 2, V: 2 };
  const inputs = inputsFor(fn, shape);
  let launches = 0, hashes = 0, folded = 0;
  for (const backward of [false, true]) {
    const all = new Map<string, CudaInput>(inputs);
    if (backward) all.set('grad.o', { shape: [35000, 2, 3, 2], data: Float32Array.from({ length: 35000 * 12 }, (_, i) => Math.cos(i)) });
    const plan = compilePlan(fn, makeSchedule('chunkwise', 2), { backward, constants: new Map([['K', 2], ['V', 2]]) });
    fs.writeFileSync(logFile, '');
    await runPlanCuda(plan, all, { emit: (k) => emitKernel(k, 'cuda'), reuse: false });
    const lines = fs.readFileSync(logFile, 'utf8').split('\n').filter((l) => l.startsWith('launch '));
    const r = checkLaunches(`fold${backward ? ' backward' : ''}`, plan, all, { ...shape }, lines, problems);
    launches += r.launches;
    hashes += r.hashes;
    for (const [i, l] of plan.launches.entries()) {
      const e = emitKernel(l.kernel, 'cuda');
      const got = parseLaunch(lines[i] ?? '');
      if (l.how !== 'contraction' || !got) continue;
      if (!e.foldY || !e.code.includes('const int rn_blk = blockIdx.x + blockIdx.y * gridDim.x;')) { problems.push(`${l.kernel.name}: no id fold in its code`); continue; }
      if (got.grid[1] !== 1) { problems.push(`${l.kernel.name}: launched with ${got.grid[1]} blocks in y`); continue; }
      // The printed prologue, run for every launched block: rn_grid_x from the kernel's own text
      // (not the manifest), rn_blk = blockIdx.x + blockIdx.y * gridDim.x, wg_x = rn_blk % rn_grid_x,
      // wg_y = rn_blk / rn_grid_x must give each (x, y) of the manifest's X x (B * H) grid once.
      const gridX = /const int rn_grid_x = (.+);/.exec(e.code)?.[1];
      const lines3 = ['const int rn_blk = blockIdx.x + blockIdx.y * gridDim.x;', 'const int wg_x = rn_blk % rn_grid_x;', 'const int wg_y = rn_blk / rn_grid_x;'];
      if (!gridX || !lines3.every((s) => e.code.includes(s))) { problems.push(`${l.kernel.name}: the id fold is not printed as expected`); continue; }
      const printedX = evalFormula(gridX, {});
      const X = evalFormula(emitPlan(plan, 'cuda').manifest.kernels.find((k) => k.entry === l.kernel.name)!.grid[0], {});
      const Y = shape.B * shape.H;
      const seen = new Uint8Array(X * Y);
      let outside = 0;
      for (let by = 0; by < got.grid[1]!; by++) {
        for (let bx = 0; bx < got.grid[0]!; bx++) {
          const blk = bx + by * got.grid[0]!;
          const wx = blk % printedX, wy = Math.floor(blk / printedX);
          if (wx >= X || wy >= Y) outside++;
          else seen[wy * X + wx]!++;
        }
      }
      if (outside || seen.some((c) => c !== 1)) problems.push(`${l.kernel.name}: the folded ids do not cover each block once (${outside} outside the grid)`);
      folded++;
    }
  }
  return { ok: problems.length === 0, problems, launches, hashes, folded };
}

/** A tensor of 2^31 elements or more is refused in one line before anything is allocated. */
async function huge(root: string, logFile: string): Promise<unknown> {
  const fn = loadCaseFn(root, { file: 'models/softmax_attention.ret', fn: 'softmax_attention' });
  const inputs = inputsFor(fn, { B: 1, H: 1, T: 46341, K: 1, V: 1 }); // scores: 46341^2 > 2^31
  const plan = compilePlan(fn, makeSchedule('parallel', 16), { constants: new Map() });
  fs.writeFileSync(logFile, '');
  try {
    await runPlanCuda(plan, inputs, { emit: stubEmit, reuse: false });
    return { error: null };
  } catch (e) {
    return { error: e instanceof Error ? e.message : String(e), name: e instanceof Error ? e.name : typeof e, log: fs.readFileSync(logFile, 'utf8') };
  }
}

async function runError(root: string): Promise<unknown> {
  const fn = loadCaseFn(root, { file: 'models/linear_attention.ret', fn: 'linear_attention' });
  const inputs = inputsFor(fn, { B: 1, H: 1, T: 5, K: 4, V: 4 });
  const plan = compilePlan(fn, makeSchedule('recurrent', 4), { constants: new Map([['K', 4], ['V', 4]]) });
  try {
    await runPlanCuda(plan, inputs, { emit: stubEmit, reuse: false });
    return { error: null };
  } catch (e) {
    return { error: e instanceof Error ? e.message : String(e), name: e instanceof Error ? e.name : typeof e };
  }
}

const [mode, root, logFile] = process.argv.slice(2);
let result: unknown;
try {
  if (mode === 'status') result = { status: cudaStatus() ?? null };
  else if (mode === 'plumbing') result = await plumbing(root!, logFile!, process.argv[5]);
  else if (mode === 'fold') result = await fold(root!, logFile!);
  else if (mode === 'huge') result = await huge(root!, logFile!);
  else if (mode === 'run-error') result = await runError(root!);
  else result = { error: `unknown mode ${mode}` };
} catch (e) {
  result = { crashed: e instanceof Error ? e.message : String(e) };
}
process.stdout.write(JSON.stringify(result) + '\n');
