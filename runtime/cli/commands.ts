// retnetc subcommands: check, run. Each returns an exit code; user errors are printed as
// `location: error: message` and never as a stack trace.
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import type { CheckedFn, CheckedModel } from '../../dsl/checked.js';
import { dimToString } from '../../dsl/dims.js';
import { loadProgram, type Program, sourceFor } from '../../dsl/program.js';
import { formatDiagnostic } from '../../dsl/source.js';
import * as fs from 'node:fs/promises';
import { bindSizes, RunError, runFunction, type Value } from '../../dsl/reference/interpreter.js';
import { gradient, GradError, upstreamName } from '../../compiler/autodiff.js';
import { fnToString, lowerFn, nodeToString, toChecked } from '../../compiler/ir.js';
import { kernelToString } from '../../compiler/kir-print.js';
import { compilePlan, type Plan, ScheduleError, specialisedSizes } from '../../compiler/plan.js';
import { DEFAULT_CHUNK, type Form, FORMS, makeSchedule, type Schedule, STORAGE_DTYPES, type StorageDtype } from '../../compiler/schedule.js';
import { type HostTensor, runPlanCpu } from '../plan-runner.js';
import type { TargetName } from '../../targets/emitted.js';
import { readSafetensorsFile, SafetensorsError, type DType, type Tensor, fromFloat64, toFloat64, writeSafetensorsFile } from '../io/safetensors.js';

export class UsageError extends Error {}

const USAGE = `usage: retnetc <command> [options]

commands:
  check FILE.ret                      check a file; print every function and model signature
  run FILE.ret --fn NAME --inputs IN.safetensors --out OUT.safetensors
      [--target reference|cpu|webgpu|cuda] [--schedule parallel|recurrent|chunkwise] [--chunk N]
      [--dtype f32|f16|bf16] [--grad DOUT.safetensors]
                                      run a function on named inputs; write outputs by name and,
                                      with --grad, the gradient of every input as grad.NAME
  compile FILE.ret --fn NAME --schedule parallel|recurrent|chunkwise [--chunk N] [--backward]
      [--dtype f32|f16|bf16] [--target cuda|wgsl] [--emit ir|kernel-ir|ts] --out DIR [--size K=64 ...]
                                      write a stage of the compilation readably, or the kernels
                                      for a target with a manifest (and, --emit ts, typed bindings)
  help                                this text`;

const at = (span: { file: string; line: number; col: number }): string => `${span.file}:${span.line}:${span.col}`;

function fail(where: string, message: string): number {
  process.stderr.write(`${where}: error: ${message}\n`);
  return 1;
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case 'check': return cmdCheck(rest);
      case 'run': return await cmdRun(rest);
      case 'compile': return await cmdCompile(rest);
      case undefined:
        process.stderr.write(USAGE + '\n');
        return 1;
      case 'help': case '--help': case '-h':
        process.stdout.write(USAGE + '\n');
        return 0;
      default:
        return fail('retnetc', `unknown command '${cmd}'\n${USAGE}`);
    }
  } catch (e) {
    if (e instanceof UsageError) return fail('retnetc', e.message);
    // node:util parseArgs reports unknown or malformed options with these codes.
    if (e instanceof TypeError && 'code' in e && String((e as { code: unknown }).code).startsWith('ERR_PARSE_ARGS')) return fail('retnetc', e.message);
    throw e;
  }
}

function loadChecked(file: string): Program | undefined {
  const program = loadProgram(file);
  if (program.diagnostics.length === 0) return program;
  for (const d of program.diagnostics) process.stderr.write(formatDiagnostic(d, sourceFor(program, d)) + '\n');
  const n = program.diagnostics.length;
  process.stderr.write(`${n} error${n === 1 ? '' : 's'}\n`);
  return undefined;
}

export function signature(fn: CheckedFn): string {
  const ty = (p: { dtype: string; shape: readonly import('../../dsl/dims.js').Dim[] }) => (p.shape.length ? `${p.dtype}[${p.shape.map(dimToString).join(', ')}]` : p.dtype);
  const params = fn.params.map((p) => `${p.name}: ${ty(p)}${p.default !== undefined ? ` = ${p.default}` : ''}`).join(', ');
  const outs = fn.outputs.map((o) => `${o.name}: ${ty(o)}`);
  return `fn ${fn.name}(${params}) -> ${outs.length === 1 ? outs[0] : `(${outs.join(', ')})`}`;
}

function modelSummary(m: CheckedModel): string {
  const params = m.weights.reduce((a, w) => a + w.shape.reduce((x, y) => x * y, 1), 0);
  const hypers = [...m.hypers].map(([k, v]) => `${k}=${v}`).join(' ');
  return `  size ${m.config}: ${hypers}\n    ${m.weights.length} weights, ${params.toLocaleString('en-US')} parameters; forward: ${signature(m.forward).replace(/^fn /, '')}`;
}

function cmdCheck(args: string[]): number {
  const { positionals } = parseArgs({ args, allowPositionals: true, options: {} });
  if (positionals.length !== 1) throw new UsageError('usage: retnetc check FILE.ret');
  const program = loadChecked(positionals[0]!);
  if (!program) return 1;
  const checked = program.checked!;
  for (const fn of checked.fns.values()) process.stdout.write(signature(fn) + '\n');
  for (const info of checked.models.values()) {
    process.stdout.write(`model ${info.decl.name} (sizes: ${info.configs.join(', ')})\n`);
    for (const c of info.configs) process.stdout.write(modelSummary(info.instances.get(c)!) + '\n');
  }
  return 0;
}

const DTYPE_MAP: Record<string, DType> = { f32: 'F32', f16: 'F16', bf16: 'BF16', f64: 'F64', i32: 'I32', i64: 'I64' };

async function readTensors(file: string): Promise<Map<string, Value> | string> {
  try {
    const contents = await readSafetensorsFile(file);
    const out = new Map<string, Value>();
    for (const [name, t] of contents.tensors) out.set(name, { shape: t.shape, data: toFloat64(t) });
    return out;
  } catch (e) {
    if (e instanceof SafetensorsError) return e.message.replace(`${file}: `, '');
    throw e;
  }
}

function parseSchedule(values: { schedule?: string | undefined; chunk?: string | undefined; dtype?: string | undefined }, required: boolean): Schedule {
  const form = values.schedule ?? (required ? undefined : 'parallel');
  if (!form) throw new UsageError('--schedule parallel|recurrent|chunkwise is required');
  if (!(FORMS as readonly string[]).includes(form)) throw new UsageError(`unknown schedule '${form}' (expected ${FORMS.join(', ')})`);
  const chunk = values.chunk === undefined ? DEFAULT_CHUNK : Number(values.chunk);
  if (!Number.isInteger(chunk) || chunk < 1 || chunk > 1024) throw new UsageError(`--chunk must be an integer from 1 to 1024, got '${values.chunk}'`);
  const dtype = values.dtype ?? 'f32';
  if (!(STORAGE_DTYPES as readonly string[]).includes(dtype)) throw new UsageError(`unknown --dtype '${dtype}' (expected ${STORAGE_DTYPES.join(', ')})`);
  return makeSchedule(form as Form, chunk, { dtype: dtype as StorageDtype });
}

async function cmdRun(args: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args, allowPositionals: true,
    options: {
      fn: { type: 'string' }, inputs: { type: 'string' }, out: { type: 'string' },
      target: { type: 'string', default: 'reference' },
      schedule: { type: 'string' }, chunk: { type: 'string' }, grad: { type: 'string' },
      dtype: { type: 'string' }, 'out-dtype': { type: 'string' },
    },
  });
  if (positionals.length !== 1 || !values.fn || !values.inputs || !values.out) {
    throw new UsageError('usage: retnetc run FILE.ret --fn NAME --inputs IN.safetensors --out OUT.safetensors [--target reference|cpu|webgpu|cuda] [--schedule S] [--chunk N] [--grad DOUT.safetensors]');
  }
  const target = values.target!;
  if (!RUN_TARGETS.includes(target)) {
    return fail('retnetc', `unknown target '${target}' (expected one of ${RUN_TARGETS.join(', ')})`);
  }
  const schedule = parseSchedule(values, false);
  if (target === 'reference' && (values.schedule !== undefined || values.dtype !== undefined)) return fail('retnetc', '--schedule and --dtype apply to compiled targets; the reference target evaluates the definition directly in float64 (use --target cpu)');
  const outDtype = values['out-dtype'];
  if (outDtype !== undefined && !DTYPE_MAP[outDtype]) return fail('retnetc', `unknown --out-dtype '${outDtype}' (expected one of ${Object.keys(DTYPE_MAP).join(', ')})`);
  const program = loadChecked(positionals[0]!);
  if (!program) return 1;
  const fn = program.checked!.fns.get(values.fn);
  if (!fn) {
    const names = [...program.checked!.fns.keys()];
    return fail(`${positionals[0]!}:1:1`, `no function '${values.fn}' (functions: ${names.join(', ') || 'none'})`);
  }
  const inPath = values.inputs;
  const inputs = await readTensors(inPath);
  if (typeof inputs === 'string') return fail(inPath, inputs);
  let upstream: Map<string, Value> | undefined;
  if (values.grad !== undefined) {
    const g = await readTensors(values.grad);
    if (typeof g === 'string') return fail(values.grad, g);
    for (const name of g.keys()) if (!fn.outputs.some((o) => o.name === name)) return fail(values.grad, `'${name}' is not an output of '${fn.name}' (outputs: ${fn.outputs.map((o) => o.name).join(', ')})`);
    upstream = g;
  }
  const results = new Map<string, { shape: number[]; data: ArrayLike<number>; dtype: DType }>();
  const where = (e: unknown): string | undefined => (e instanceof RunError ? e.message : undefined);
  try {
    const outs = runFunction(fn, inputs);
    if (target === 'reference') {
      // The reference computes in float64 and, unless asked otherwise, writes float64.
      for (const o of fn.outputs) results.set(o.name, { ...outs.get(o.name)!, dtype: o.dtype === 'i32' || o.dtype === 'i64' ? DTYPE_MAP[o.dtype]! : 'F64' });
      if (upstream) {
        const g = gradient(lowerFn(fn));
        const gin = withUpstream(fn, inputs, upstream, outs);
        for (const [name, v] of runFunction(toChecked(g), gin)) results.set(name, { ...v, dtype: 'F64' });
      }
    } else {
      const constantsFor = (backward: boolean) => {
        const sizes = bindSizes(fn, new Map([...inputs].map(([k, v]) => [k, v.shape] as const)));
        return new Map(specialisedSizes(fn, backward).map((s) => [s, sizes.get(s)!] as const));
      };
      const plan = compilePlan(fn, schedule, { constants: constantsFor(false) });
      for (const [name, t] of await execute(plan, inputs, target)) results.set(name, { ...t, dtype: t.data instanceof Int32Array ? 'I32' : 'F32' });
      if (upstream) {
        const gplan = compilePlan(fn, schedule, { backward: true, constants: constantsFor(true) });
        for (const [name, t] of await execute(gplan, withUpstream(fn, inputs, upstream, outs), target)) results.set(name, { ...t, dtype: 'F32' });
      }
    }
  } catch (e) {
    const msg = where(e);
    if (msg) return fail(inPath, msg);
    if (e instanceof ScheduleError || e instanceof GradError) return fail(at(fn.span), e.message);
    const device = deviceError(e);
    if (device) return fail('retnetc', device);
    throw e;
  } finally {
    if (target === 'webgpu') await (await import('../webgpu/runner.js')).releaseRuntimeDevice();
  }
  const tensors = new Map<string, Tensor>();
  for (const [name, r] of results) tensors.set(name, fromFloat64(r.data, r.shape, outDtype ? DTYPE_MAP[outDtype]! : r.dtype));
  try {
    await writeSafetensorsFile(values.out, tensors, { fn: fn.name, source: path.basename(positionals[0]!), target, ...(target !== 'reference' ? { schedule: JSON.stringify(schedule) } : {}) });
  } catch (e) {
    if (e instanceof SafetensorsError) return fail(values.out, e.message.replace(`${values.out}: `, ''));
    throw e;
  }
  return 0;
}

const RUN_TARGETS = ['reference', 'cpu', 'webgpu', 'cuda'];

/** Runs a compiled plan on a device target. The GPU runtimes load only when asked for. */
async function execute(plan: Plan, inputs: Map<string, Value>, target: string): Promise<Map<string, HostTensor>> {
  if (target === 'cpu') return runPlanCpu(plan, inputs);
  if (target === 'webgpu') return (await import('../webgpu/runner.js')).runPlanWebGPU(plan, inputs);
  const cuda = await import('../cuda/runner.js');
  const why = cuda.cudaStatus();
  if (why) throw new cuda.CudaUnavailableError(why);
  return cuda.runPlanCuda(plan, inputs);
}

/** One line for a device that is missing or failed (no adapter, no driver, a launch error). */
function deviceError(e: unknown): string | undefined {
  if (!(e instanceof Error)) return undefined;
  const names = ['WebGPUUnavailableError', 'WebGPURunError', 'CudaUnavailableError', 'CudaRunError', 'NvccError'];
  return names.includes(e.name) || names.includes(e.constructor.name) ? e.message.split('\n')[0] : undefined;
}

/** Gradient inputs: the forward inputs plus grad.OUT for every output (zeros where not given). */
function withUpstream(fn: CheckedFn, inputs: Map<string, Value>, upstream: Map<string, Value>, outs: Map<string, Value>): Map<string, Value> {
  const m = new Map(inputs);
  for (const o of fn.outputs) {
    const want = outs.get(o.name)!.shape;
    const g = upstream.get(o.name) ?? { shape: want, data: new Float64Array(want.reduce((a, b) => a * b, 1)) };
    if (g.shape.length !== want.length || g.shape.some((d, i) => d !== want[i])) {
      throw new RunError(`the gradient of '${o.name}' must have the shape of '${o.name}', [${want.join(', ')}], got [${g.shape.join(', ')}]`);
    }
    m.set(upstreamName(o.name), g);
  }
  return m;
}

async function cmdCompile(args: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args, allowPositionals: true,
    options: {
      fn: { type: 'string' }, schedule: { type: 'string' }, chunk: { type: 'string' }, backward: { type: 'boolean', default: false }, dtype: { type: 'string' },
      emit: { type: 'string' }, out: { type: 'string' }, size: { type: 'string', multiple: true },
      target: { type: 'string' },
    },
  });
  if (positionals.length !== 1 || !values.fn || !values.out) {
    throw new UsageError('usage: retnetc compile FILE.ret --fn NAME --schedule parallel|recurrent|chunkwise [--chunk N] [--backward] [--target cuda|wgsl] [--emit ir|kernel-ir|ts] --out DIR [--size K=64 ...]');
  }
  const schedule = parseSchedule(values, true);
  const target = values.target as TargetName | undefined;
  if (target !== undefined && target !== 'cuda' && target !== 'wgsl') return fail('retnetc', `unknown --target '${values.target}' (expected cuda or wgsl)`);
  const emit = values.emit ?? (target ? 'code' : 'kernel-ir');
  const emits = target ? ['code', 'ts'] : ['ir', 'kernel-ir'];
  if (!emits.includes(emit)) return fail('retnetc', `--emit ${emit} does not go with ${target ? `--target ${target}` : 'no --target'} (expected ${emits.join(' or ')})`);
  const sizes = new Map<string, number>();
  for (const s of values.size ?? []) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(\d+)$/.exec(s);
    if (!m) return fail('retnetc', `--size takes NAME=INTEGER, got '${s}'`);
    sizes.set(m[1]!, Number(m[2]));
  }
  const program = loadChecked(positionals[0]!);
  if (!program) return 1;
  const fn = program.checked!.fns.get(values.fn);
  if (!fn) return fail(`${positionals[0]!}:1:1`, `no function '${values.fn}' (functions: ${[...program.checked!.fns.keys()].join(', ') || 'none'})`);
  const backward = values.backward!;
  const outDir = values.out;
  const base = `${fn.name}${backward ? '.grad' : ''}`;
  try {
    const needed = specialisedSizes(fn, backward);
    const missing = needed.filter((s) => !sizes.has(s));
    if (missing.length) return fail(at(fn.span), `the ${schedule.form} kernels of '${fn.name}' are specialised on ${needed.join(', ')}; give ${missing.map((m) => `--size ${m}=N`).join(' ')}`);
    const plan = compilePlan(fn, schedule, { backward, constants: new Map(needed.map((s) => [s, sizes.get(s)!] as const)) });
    await fs.mkdir(outDir, { recursive: true });
    if (target) {
      // Kernels in the target's language, a manifest, and with --emit ts typed bindings.
      const { emitPlan, targetExtension } = await import('../../targets/emit.js');
      const emitted = emitPlan(plan, target);
      for (const k of emitted.kernels) await fs.writeFile(path.join(outDir, `${k.entry}.${targetExtension(target)}`), k.code);
      await fs.writeFile(path.join(outDir, `${base}.${target}.json`), JSON.stringify(emitted.manifest, null, 2) + '\n');
      if (emit === 'ts') {
        const { generateBindings } = await import('../../targets/ts-bindings.js');
        await fs.writeFile(path.join(outDir, `${base}.${target}.ts`), generateBindings(emitted));
      }
    } else if (emit === 'ir') {
      await fs.writeFile(path.join(outDir, `${base}.ir`), describePlanIr(plan) + '\n');
    } else {
      for (const l of plan.launches) await fs.writeFile(path.join(outDir, `${l.kernel.name}.kir`), kernelToString(l.kernel) + '\n');
      const manifest = { fn: fn.name, backward, schedule, constants: Object.fromEntries(plan.constants), launches: plan.launches.map((l) => ({ kernel: l.kernel.name, target: l.target, how: l.how, workgroup: l.kernel.workgroup, buffers: l.buffers, scalars: l.scalars })) };
      await fs.writeFile(path.join(outDir, `${base}.plan.json`), JSON.stringify(manifest, null, 2) + '\n');
    }
  } catch (e) {
    if (e instanceof ScheduleError || e instanceof GradError) return fail(at(fn.span), e.message);
    if (e instanceof Error && 'code' in e && typeof (e as NodeJS.ErrnoException).code === 'string') return fail(outDir, `cannot write: ${(e as NodeJS.ErrnoException).code}`);
    throw e;
  }
  return 0;
}

/** The tensor IR after analysis, each statement annotated with how it is scheduled. */
function describePlanIr(plan: Plan): string {
  const lines = [`# ${plan.fn.name}, schedule ${JSON.stringify(plan.schedule)}`];
  for (const s of plan.fn.body) {
    const c = plan.contractions.get(s.target);
    if (c) {
      const decay = c.decay.length === 0 ? 'none (weight 1)' : c.decay.map((d) => (d.kind === 'fixed' ? `fixed: L(p) = p * ${nodeToString(d.lambda)}` : `gated: L(p) = ${nodeToString(d.G)}`)).join(' + ');
      lines.push(`# ${s.target}: ${c.direction} contraction, row ${c.row}, key position ${c.col}${c.strict ? ' (strict)' : ''}, contracted ${c.inner}, value ${c.value}, batch ${c.batch.map((b) => b.name).join(', ') || '-'}`);
      lines.push(`#   a = ${nodeToString(c.a)}; b = ${nodeToString(c.b)}; c = ${nodeToString(c.c)}; scale = ${nodeToString(c.scale)}; decay ${decay}`);
      lines.push(`#   -> ${plan.schedule.form} kernel`);
    } else lines.push(`# ${s.target}: elementwise kernel`);
  }
  return lines.join('\n') + '\n' + fnToString(plan.fn);
}
