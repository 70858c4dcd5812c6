// retnetc compile: a stage of the compilation written readably (tensor IR, kernel IR with a
// plan manifest) or the kernels of a target with their manifest (and typed TS bindings).
// It checks what `run` checks before writing anything: the sizes given, and every kernel
// against the target's guaranteed limits (or a device's, with --limits).
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { GradError } from '../../compiler/autodiff.js';
import { fnToString, nodeToString } from '../../compiler/ir.js';
import { kernelToString } from '../../compiler/kir-print.js';
import { compilePlan, type Plan, ScheduleError, specialisedSizes } from '../../compiler/plan.js';
import type { TargetName } from '../../targets/emitted.js';
import { kernelLimitProblem, type KernelLimits, LIMIT_PROFILES } from '../webgpu/limits.js';
import { fail, failAt, findFn, loadChecked, parseSchedule, parseSizeOptions, SCHEDULE_OPTIONS, unknownSize, wroteFile } from './common.js';
import { at, didYouMean, flag, type OptionSpecs, parseOptions, refuse, str, UsageError } from './options.js';

export const COMPILE_OPTIONS: OptionSpecs = {
  fn: { type: 'string', value: 'NAME' },
  ...SCHEDULE_OPTIONS,
  backward: { type: 'boolean' },
  target: { type: 'string', value: 'cuda|wgsl' },
  emit: { type: 'string', value: 'ir|kernel-ir|ts' },
  out: { type: 'string', value: 'DIR' },
  size: { type: 'string', multiple: true, value: 'NAME=N' },
  limits: { type: 'string', value: 'default|lavapipe|sm_80|sm_90|FILE.json' },
};

export const COMPILE_USAGE = 'usage: retnetc compile FILE.ret --fn NAME --schedule parallel|recurrent|chunkwise [--chunk N] [--backward] [--dtype f32|f16|bf16] [--target cuda|wgsl] [--emit ir|kernel-ir|ts] [--limits NAME|FILE.json] --out DIR [--size K=64 ...]';

/** The limits of each target's profiles; the first is the target's default. */
const TARGET_PROFILES: Record<TargetName, (keyof typeof LIMIT_PROFILES)[]> = { wgsl: ['default', 'lavapipe'], cuda: ['sm_80', 'sm_90'] };

const LIMIT_KEYS: (keyof KernelLimits)[] = [
  'maxComputeWorkgroupStorageSize', 'maxComputeInvocationsPerWorkgroup', 'maxComputeWorkgroupSizeX', 'maxComputeWorkgroupSizeY', 'maxComputeWorkgroupSizeZ',
  'maxComputeWorkgroupsPerDimension', 'maxStorageBuffersPerShaderStage', 'maxStorageBufferBindingSize', 'maxBufferSize', 'maxFunctionMemory', 'maxArrayElements',
];

/** The limits --limits names: a profile of the target, or a JSON file of limits (a device's, e.g. GPUSupportedLimits). */
async function limitsFor(target: TargetName, spec: string | undefined): Promise<KernelLimits> {
  const names = TARGET_PROFILES[target];
  if (spec === undefined) return LIMIT_PROFILES[names[0]!];
  if ((names as string[]).includes(spec)) return LIMIT_PROFILES[spec as keyof typeof LIMIT_PROFILES];
  if (!spec.endsWith('.json')) {
    throw new UsageError(`unknown --limits '${spec}' for --target ${target} (expected ${names.join(', ')} or a FILE.json of limits)${didYouMean(spec, names)}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(await fs.readFile(spec, 'utf8'));
  } catch (e) {
    const why = e instanceof SyntaxError ? `not JSON: ${e.message}` : `cannot read: ${(e as NodeJS.ErrnoException).code ?? String(e)}`;
    throw new UsageError(`--limits ${spec}: ${why}`);
  }
  if (!json || typeof json !== 'object' || Array.isArray(json)) throw new UsageError(`--limits ${spec}: expected a JSON object of limits (${LIMIT_KEYS.slice(0, 2).join(', ')}, ...)`);
  const rec = json as Record<string, unknown>;
  const base: KernelLimits = { ...LIMIT_PROFILES[names[0]!] };
  const out = base as unknown as Record<string, unknown>;
  let known = 0;
  for (const [k, v] of Object.entries(rec)) {
    if (!(LIMIT_KEYS as string[]).includes(k)) continue;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new UsageError(`--limits ${spec}: '${k}' must be a non-negative integer, got ${JSON.stringify(v)}`);
    out[k] = v;
    known++;
  }
  if (known === 0) throw new UsageError(`--limits ${spec}: names none of the limits ${LIMIT_KEYS.join(', ')}`);
  return { ...base, name: path.basename(spec) };
}

export async function cmdCompile(args: string[]): Promise<number> {
  const o = parseOptions('compile', args, COMPILE_OPTIONS);
  const fnName = str(o, 'fn');
  const outDir = str(o, 'out');
  if (o.positionals.length !== 1 || !fnName || !outDir) throw new UsageError(COMPILE_USAGE);
  const file = o.positionals[0]!;
  const schedule = parseSchedule(o, true);
  const t = str(o, 'target');
  if (t !== undefined && t !== 'cuda' && t !== 'wgsl') throw new UsageError(`unknown --target '${t}' (expected cuda or wgsl)${didYouMean(t, ['cuda', 'wgsl'])}`);
  const target = t as TargetName | undefined;
  const emit = str(o, 'emit') ?? (target ? 'code' : 'kernel-ir');
  const emits = target ? ['code', 'ts'] : ['ir', 'kernel-ir'];
  if (!emits.includes(emit)) throw new UsageError(`--emit ${emit} does not go with ${target ? `--target ${target}` : 'no --target'} (expected ${emits.join(' or ')})`);
  if (emit === 'ir') refuse(o, ['chunk', 'dtype'], "to --emit ir: the tensor IR does not depend on them (use --emit kernel-ir or a --target)");
  if (!target) refuse(o, ['limits'], 'without a --target (the limits are a target\'s: --target wgsl or cuda)');
  if (target === 'wgsl' && schedule.dtype === 'bf16') throw new UsageError('--dtype bf16 does not apply to --target wgsl: WGSL has no bf16 (use --dtype f16 or f32; bf16 is for --target cuda)');
  const limits = target ? await limitsFor(target, str(o, 'limits')) : undefined;
  const given_ = parseSizeOptions(o);

  const program = loadChecked(file);
  if (!program) return 1;
  const fn = findFn(program, file, fnName);
  if (typeof fn === 'number') return fn;
  const backward = flag(o, 'backward');
  const base = `${fn.name}${backward ? '.grad' : ''}`;
  let plan: Plan;
  try {
    const needed = specialisedSizes(fn, backward);
    const what = `the ${schedule.form}${backward ? ' backward' : ''} kernels of '${fn.name}'`;
    const unknown = unknownSize(fn, given_);
    if (unknown) return fail('retnetc', unknown);
    const missing = needed.filter((s) => !given_.has(s));
    if (missing.length) return fail(at(fn.span), `${what} are specialised on ${needed.join(', ')}; give ${missing.map((m) => `--size ${m}=N`).join(' ')}`);
    plan = compilePlan(fn, schedule, { backward, constants: new Map(needed.map((s) => [s, given_.get(s)!] as const)) });
    for (const name of given_.keys()) {
      if (!needed.includes(name)) return fail('retnetc', `--size ${name}: '${name}' is bound at run time from the tensors' shapes; ${what} are specialised ${needed.length ? `only on ${needed.join(', ')}` : 'on no size'}`);
    }
  } catch (e) {
    if (e instanceof ScheduleError || e instanceof GradError) return failAt(program, fn, e);
    throw e;
  }
  const why = fitProblem(plan, target, limits);
  if (why) return fail('retnetc', why);
  try {
    await fs.mkdir(outDir, { recursive: true });
    const write = async (name: string, text: string, what: string): Promise<void> => {
      const f = path.join(outDir, name);
      await fs.writeFile(f, text);
      wroteFile(f, what);
    };
    if (target) {
      // Kernels in the target's language, a manifest, and with --emit ts typed bindings.
      const { emitPlan, targetExtension } = await import('../../targets/emit.js');
      const emitted = emitPlan(plan, target);
      for (const k of emitted.kernels) await write(`${k.entry}.${targetExtension(target)}`, k.code, `${target === 'cuda' ? 'CUDA' : 'WGSL'} kernel ${k.entry}`);
      await write(`${base}.${target}.json`, JSON.stringify(emitted.manifest, null, 2) + '\n', `manifest, ${emitted.kernels.length} kernel${emitted.kernels.length === 1 ? '' : 's'}`);
      if (emit === 'ts') {
        const { generateBindings } = await import('../../targets/ts-bindings.js');
        await write(`${base}.${target}.ts`, generateBindings(emitted), 'TypeScript bindings');
      }
    } else if (emit === 'ir') {
      await write(`${base}.ir`, describePlanIr(plan) + '\n', 'tensor IR');
    } else {
      for (const l of plan.launches) await write(`${l.kernel.name}.kir`, kernelToString(l.kernel) + '\n', `kernel IR of ${l.kernel.name}`);
      const manifest = { fn: fn.name, backward, schedule, constants: Object.fromEntries(plan.constants), launches: plan.launches.map((l) => ({ kernel: l.kernel.name, target: l.target, how: l.how, workgroup: l.kernel.workgroup, buffers: l.buffers, scalars: l.scalars })) };
      await write(`${base}.plan.json`, JSON.stringify(manifest, null, 2) + '\n', `plan manifest, ${plan.launches.length} launch${plan.launches.length === 1 ? '' : 'es'}`);
    }
  } catch (e) {
    if (e instanceof Error && 'code' in e && typeof (e as NodeJS.ErrnoException).code === 'string') return fail(outDir, `cannot write: ${(e as NodeJS.ErrnoException).code}`);
    throw e;
  }
  return 0;
}

/**
 * Why a kernel of the plan cannot run on the target (its limits), or, with no target, on any
 * target this compiler knows (the largest limits of each); undefined when every kernel fits.
 */
function fitProblem(plan: Plan, target: TargetName | undefined, limits: KernelLimits | undefined): string | undefined {
  const check = (l: KernelLimits): string | undefined => {
    for (const launch of plan.launches) {
      const why = kernelLimitProblem(launch.kernel, { schedule: plan.schedule, how: launch.how }, l);
      if (why) return why;
    }
    return undefined;
  };
  if (target) {
    const why = check(limits!);
    if (!why) return undefined;
    const roomier = TARGET_PROFILES[target].find((p) => LIMIT_PROFILES[p] !== limits && !check(LIMIT_PROFILES[p]));
    return roomier ? `${why} (it fits --limits ${roomier})` : why;
  }
  const problems = (['lavapipe', 'sm_90'] as const).map((p) => check(LIMIT_PROFILES[p]));
  return problems.every((p) => p !== undefined) ? `no target can run these kernels: ${problems.join('; ')}` : undefined;
}

/** The tensor IR after analysis, each statement annotated with how it is scheduled. */
function describePlanIr(plan: Plan): string {
  const lines = [`# ${plan.fn.name}, schedule ${JSON.stringify(plan.schedule)}`];
  for (const s of plan.fn.body) {
    const c = plan.contractions.get(s.target);
    if (c) {
      const decay = c.decay.length === 0 ? 'none (weight 1)' : c.decay.map((d) => (d.kind === 'fixed' ? `fixed: L(p) = p * ${nodeToString(d.lambda)}` : `gated: L(p) = ${nodeToString(d.G)}`)).join(' + ') + c.signs.map((n) => `, times (-1)^(${c.row} - ${c.col}) where ${nodeToString(n)}`).join('');
      lines.push(`# ${s.target}: ${c.direction} contraction, row ${c.row}, key position ${c.col}${c.strict ? ' (strict)' : ''}, contracted ${c.inner}, value ${c.value}, batch ${c.batch.map((b) => b.name).join(', ') || '-'}`);
      lines.push(`#   a = ${nodeToString(c.a)}; b = ${nodeToString(c.b)}; c = ${nodeToString(c.c)}; scale = ${nodeToString(c.scale)}; decay ${decay}`);
      lines.push(`#   -> ${plan.schedule.form} kernel`);
    } else lines.push(`# ${s.target}: elementwise kernel`);
  }
  return lines.join('\n') + '\n' + fnToString(plan.fn);
}

