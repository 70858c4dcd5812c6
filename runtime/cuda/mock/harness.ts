// Drives the CUDA runner against the mock driver (libcuda_mock.c), in a process of its own
// (the addon loads its driver once per process). tests/cuda-runtime.test.ts bundles this file,
// runs it with RETNETC_LIBCUDA pointing at the mock and reads the JSON it prints.
//
//   node harness.mjs status             {"status": cudaStatus()}
//   node harness.mjs plumbing ROOT LOG  runs plans with a contract-stub printer and checks every
//                                        launch the mock logged against the plan
//   node harness.mjs run-error ROOT     {"error": message of runPlanCuda's rejection}
import * as fs from 'node:fs';
import type { Kernel, KType } from '../../../compiler/kir.js';
import { compilePlan, specialisedSizes } from '../../../compiler/plan.js';
import { makeSchedule, type Form, type StorageDtype } from '../../../compiler/schedule.js';
import { bindSizes } from '../../../dsl/reference/interpreter.js';
import type { EmittedKernel } from '../../../targets/emitted.js';
import { loadCaseFn } from '../agreement.js';
import { cudaContext, cudaStatus, type CudaInput, evalGridExpr, runPlanCuda, timeCuda } from '../runner.js';
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

function inputsFor(fn: ReturnType<typeof loadCaseFn>, shape: Record<string, number>): Map<string, CudaInput> {
  const m = new Map<string, CudaInput>();
  for (const p of fn.params) {
    const s = p.shape.map((d) => [...d].reduce((a, [k, c]) => a + (k === '' ? c : c * shape[k]!), 0));
    const n = s.reduce((a, b) => a * b, 1);
    m.set(p.name, { shape: s, data: Float32Array.from({ length: n }, (_, i) => (p.name === 'gamma' ? 0.9 : Math.sin(i))) });
  }
  return m;
}

async function plumbing(root: string, logFile: string): Promise<unknown> {
  const problems: string[] = [];
  const ctx = cudaContext();
  const fn = loadCaseFn(root, { file: 'models/retention.ret', fn: 'retention' });
  const shape = { B: 2, H: 3, T: 70, K: 8, V: 8 };
  const inputs = inputsFor(fn, shape);
  let launches = 0;
  // Half storage too: the mock checks every copy and memset against its allocation's size.
  const cases: [Form, boolean, StorageDtype][] = [['chunkwise', false, 'f32'], ['recurrent', true, 'f32'], ['chunkwise', true, 'f16'], ['parallel', false, 'bf16']];
  for (const [form, backward, dtype] of cases) {
    const all = new Map<string, CudaInput>(inputs);
    if (backward) all.set('grad.o', { shape: [2, 3, 70, 8], data: new Float32Array(2 * 3 * 70 * 8).fill(1) });
    const sizes = bindSizes(fn, new Map([...inputs].map(([k, v]) => [k, v.shape] as const)));
    const constants = new Map(specialisedSizes(fn, backward).map((s) => [s, sizes.get(s)!] as const));
    const plan = compilePlan(fn, makeSchedule(form, 16, { dtype }), { backward, constants });
    fs.writeFileSync(logFile, '');
    const out = await runPlanCuda(plan, all, { emit: stubEmit });
    const lines = fs.readFileSync(logFile, 'utf8').split('\n').filter((l) => l.startsWith('launch '));
    const where = `${form}${backward ? ' backward' : ''}${dtype === 'f32' ? '' : ` ${dtype}`}`;
    if (dtype !== 'f32' && plan.half.size === 0) problems.push(`${where}: no tensor is stored as ${dtype}`);
    if (lines.length !== plan.launches.length) problems.push(`${where}: ${lines.length} launches logged, plan has ${plan.launches.length}`);
    const bufOf = new Map<string, string>();
    const tensorOf = new Map<string, string>();
    plan.launches.forEach((l, i) => {
      const line = lines[i] ?? '';
      const m = /^launch (\S+) grid (\d+) (\d+) (\d+) block (\d+) (\d+) (\d+) shared (\d+) args ?(.*)$/.exec(line);
      if (!m) { problems.push(`${where}: launch ${i} not logged properly: '${line}'`); return; }
      const k = l.kernel;
      if (m[1] !== k.name) problems.push(`${where}: launch ${i} is ${m[1]}, expected ${k.name}`);
      const scal: Record<string, number> = {};
      for (const [name, atom] of Object.entries(l.scalars)) scal[name] = sizes.get(atom)!;
      const grid = k.grid.map((g) => evalGridExpr(g, scal));
      if (`${m[2]} ${m[3]} ${m[4]}` !== grid.join(' ')) problems.push(`${where}: ${k.name} grid ${m[2]}x${m[3]}x${m[4]}, expected ${grid.join('x')}`);
      if (`${m[5]} ${m[6]} ${m[7]}` !== k.workgroup.join(' ')) problems.push(`${where}: ${k.name} block ${m[5]}x${m[6]}x${m[7]}, expected ${k.workgroup.join('x')}`);
      const args = (m[9] ?? '').split(' ').filter(Boolean);
      if (args.length !== k.buffers.length + k.scalars.length) problems.push(`${where}: ${k.name} got ${args.length} arguments, expected ${k.buffers.length + k.scalars.length}`);
      k.buffers.forEach((b, j) => {
        const tensor = l.buffers[b.name]!;
        const buf = args[j] ?? '';
        if (!/^buf\d+$/.test(buf)) problems.push(`${where}: ${k.name} argument ${j} (${b.name}) is '${buf}', not a device buffer`);
        if (bufOf.has(tensor) && bufOf.get(tensor) !== buf) problems.push(`${where}: tensor ${tensor} passed as ${buf} and ${bufOf.get(tensor)}`);
        if (tensorOf.has(buf) && tensorOf.get(buf) !== tensor) problems.push(`${where}: ${buf} passed for ${tensor} and ${tensorOf.get(buf)}`);
        bufOf.set(tensor, buf);
        tensorOf.set(buf, tensor);
      });
      k.scalars.forEach((s, j) => {
        const want = `i32:${sizes.get(l.scalars[s.name]!)}`;
        const got = args[k.buffers.length + j];
        if (got !== want) problems.push(`${where}: ${k.name} scalar ${s.name} is '${got}', expected '${want}'`);
      });
      launches++;
    });
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
  if (!/launch retnetc_smoke_axpy grid 4 1 1 block 256 1 1 shared 66560 args buf\d+ buf\d+ i32:1000 f32:1.25/.test(log)) problems.push(`smoke: unexpected launch: ${log}`);
  const ms = timeCuda(ctx, () => {}, 3);
  if (!(ms >= 0)) problems.push(`timeCuda gave ${ms}`);
  return { ok: problems.length === 0, problems, launches, device: ctx.device.name, target: ctx.target };
}

async function runError(root: string): Promise<unknown> {
  const fn = loadCaseFn(root, { file: 'models/linear_attention.ret', fn: 'linear_attention' });
  const inputs = inputsFor(fn, { B: 1, H: 1, T: 5, K: 4, V: 4 });
  const plan = compilePlan(fn, makeSchedule('recurrent', 4), { constants: new Map([['K', 4], ['V', 4]]) });
  try {
    await runPlanCuda(plan, inputs, { emit: stubEmit });
    return { error: null };
  } catch (e) {
    return { error: e instanceof Error ? e.message : String(e), name: e instanceof Error ? e.name : typeof e };
  }
}

const [mode, root, logFile] = process.argv.slice(2);
let result: unknown;
try {
  if (mode === 'status') result = { status: cudaStatus() ?? null };
  else if (mode === 'plumbing') result = await plumbing(root!, logFile!);
  else if (mode === 'run-error') result = await runError(root!);
  else result = { error: `unknown mode ${mode}` };
} catch (e) {
  result = { crashed: e instanceof Error ? e.message : String(e) };
}
process.stdout.write(JSON.stringify(result) + '\n');
