// retnetc compile: a stage of the compilation written readably (tensor IR, kernel IR with a
// plan manifest) or the kernels of a target with their manifest (and typed TS bindings).
// It checks what `run` checks before writing anything: the sizes given, and every kernel
// against the target's guaranteed limits (or a device's, with --limits).
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { GradError } from '../../compiler/autodiff.js';
import { fnToString, nodeToString } from '../../compiler/ir.js';
import { kernelToString } from '../../compiler/kir-print.js';
import { mmaStatement } from '../../compiler/kir-verify.js';
import { memoryLine, modelMemoryLine } from '../../compiler/memory.js';
import { compileFunction, compileModel, type ModelState, modelProgram } from '../../compiler/pipeline.js';
import { forwardStatementNames, instanceFreeName, type Launch, type Plan, ScheduleError, specialisedSizes, spelledOutSchedule, toIr, unknownStatementKeys, withoutDeadStatements } from '../../compiler/plan.js';
import { type Schedule, scheduleToJson, STORAGE_DTYPES } from '../../compiler/schedule.js';
import { type StateSpec, StatefulError, statefulIr } from '../../compiler/stateful.js';
import type { CheckedFn, CheckedModel } from '../../dsl/checked.js';
import { constValue, dconst, type Dim, dimToString, dmul, dsubst, isConst } from '../../dsl/dims.js';
import type { Program } from '../../dsl/program.js';
import type { TargetName } from '../../targets/emitted.js';
import { kernelLimitProblem, type KernelLimits, LIMIT_PROFILES } from '../webgpu/limits.js';
import { dtypeProblem, orList, PRINT_TARGETS, printSpecOf, TARGETS, withTargetDefaults } from '../targets.js';
import { fail, failAt, findFn, loadChecked, parseSchedule, parseSizeOptions, SCHEDULE_FILE_OPTION, SCHEDULE_OPTIONS, scheduleFromFile, unknownSize, wroteFile } from './common.js';
import { at, didYouMean, flag, list, type OptionSpecs, type ParsedOptions, parseOptions, refuse, str, UsageError } from './options.js';

export const COMPILE_OPTIONS: OptionSpecs = {
  fn: { type: 'string', value: 'NAME' },
  model: { type: 'string', value: 'NAME' },
  ...SCHEDULE_OPTIONS,
  ...SCHEDULE_FILE_OPTION,
  backward: { type: 'boolean' },
  stateful: { type: 'boolean' },
  target: { type: 'string', value: PRINT_TARGETS.join('|') },
  emit: { type: 'string', value: 'ir|kernel-ir|ts|state' },
  out: { type: 'string', value: 'DIR' },
  size: { type: 'string', multiple: true, value: 'NAME=N|SIZE' },
  limits: { type: 'string', value: 'default|lavapipe|sm_80|sm_90|cpu|FILE.json' },
};

export const COMPILE_USAGE = [
  `usage: retnetc compile FILE.ret --fn NAME --schedule parallel|recurrent|chunkwise [--chunk N] [--backward] [--stateful] [--dtype f32|f16|bf16] [--target ${PRINT_TARGETS.join('|')}] [--emit ir|kernel-ir|ts|state] [--limits NAME|FILE.json] --out DIR [--size K=64 ...]`,
  `       retnetc compile MODEL.ret [--model NAME] [--size tiny|base|...] --schedule parallel|recurrent|chunkwise [--chunk N] [--backward] [--stateful] [--target ${PRINT_TARGETS.join('|')}] [--emit ir|kernel-ir|ts|state] --out DIR`,
  '       (--schedule-file FILE.json instead of --schedule/--chunk/--dtype: a schedule with per-statement choices, as --emit ir writes it)',
].join('\n');

/** The limit profiles of a printing target (runtime/targets.ts); the first is its default. */
const profilesOf = (target: TargetName): readonly (keyof typeof LIMIT_PROFILES)[] => printSpecOf(target).limits;

const LIMIT_KEYS: (keyof KernelLimits)[] = [
  'maxComputeWorkgroupStorageSize', 'maxComputeInvocationsPerWorkgroup', 'maxComputeWorkgroupSizeX', 'maxComputeWorkgroupSizeY', 'maxComputeWorkgroupSizeZ',
  'maxComputeWorkgroupsPerDimension', 'maxStorageBuffersPerShaderStage', 'maxStorageBufferBindingSize', 'maxBufferSize', 'maxFunctionMemory', 'maxArrayElements',
];

/** The limits --limits names: a profile of the target, or a JSON file of limits (a device's, e.g. GPUSupportedLimits). */
async function limitsFor(target: TargetName, spec: string | undefined): Promise<KernelLimits> {
  const names = profilesOf(target);
  if (spec === undefined) return LIMIT_PROFILES[names[0]!];
  if ((names as readonly string[]).includes(spec)) return LIMIT_PROFILES[spec as keyof typeof LIMIT_PROFILES];
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

/** One compiled function and the name its files take. */
interface Unit { fn: CheckedFn; plan: Plan; base: string }

export async function cmdCompile(args: string[]): Promise<number> {
  const o = parseOptions('compile', args, COMPILE_OPTIONS);
  const fnName = str(o, 'fn');
  const outDir = str(o, 'out');
  if (o.positionals.length !== 1 || !outDir) throw new UsageError(COMPILE_USAGE);
  const file = o.positionals[0]!;
  const t = str(o, 'target');
  if (t !== undefined && !PRINT_TARGETS.includes(t)) throw new UsageError(`unknown --target '${t}' (expected ${orList(PRINT_TARGETS)})${didYouMean(t, PRINT_TARGETS)}`);
  const target = t as TargetName | undefined;
  const emit = str(o, 'emit') ?? (target ? 'code' : 'kernel-ir');
  const emits = target ? ['code', 'ts'] : ['ir', 'kernel-ir', 'state'];
  if (!emits.includes(emit)) throw new UsageError(`--emit ${emit} does not go with ${target ? `--target ${target}` : 'no --target'} (expected ${emits.join(' or ')})`);
  const backward = flag(o, 'backward');
  const stateful = flag(o, 'stateful') || emit === 'state';
  if (backward && flag(o, 'stateful')) throw new UsageError('--stateful and --backward do not go together: the stateful form has no backward here (train on the whole sequence)');
  if (emit === 'state') refuse(o, ['backward', 'chunk', 'dtype', 'schedule-file'], 'to --emit state: the state layout does not depend on them');
  if (emit === 'ir') refuse(o, ['dtype'], "to --emit ir: the tensor IR does not depend on them (use --emit kernel-ir or a --target)");
  if (!target) refuse(o, ['limits'], `without a --target (the limits are a target's: --target ${orList(PRINT_TARGETS)})`);
  const given = str(o, 'schedule-file') !== undefined ? scheduleFromFile(o) : parseSchedule(o, emit !== 'state');
  // The kernels a target prints are the ones its runtime runs: that target's defaults for what
  // the user left unset (native's blocked dense sums and chunk 32, webgpu's chunk 16, cuda's tree sums).
  const runsOn = target ? printSpecOf(target).runsOn : undefined;
  const schedule = runsOn ? withTargetDefaults(given, runsOn) : given;
  const badDtype = target ? dtypeProblem(target, schedule.dtype, 'print', STORAGE_DTYPES) : undefined;
  if (badDtype) throw new UsageError(badDtype);
  const limits = target ? await limitsFor(target, str(o, 'limits')) : undefined;

  const program = loadChecked(file);
  if (!program) return 1;
  const models = [...program.checked!.models.keys()];
  const modelName = str(o, 'model');
  if (fnName !== undefined && modelName !== undefined) throw new UsageError('--fn and --model do not go together: --fn compiles one function, --model a whole model');
  if (fnName === undefined) {
    if (models.length === 0) {
      const names = [...program.checked!.fns.keys()];
      return fail(`${file}:1:1`, `no model in this file: give --fn NAME (functions: ${names.join(', ') || 'none'})`);
    }
    return compileModelCmd(o, program, file, modelName, { schedule, backward, stateful, target, emit, limits, outDir });
  }
  const given_ = parseSizeOptions(o);
  const fn = findFn(program, file, fnName);
  if (typeof fn === 'number') return fn;
  if (emit === 'state') return emitFnState(program, fn, given_, outDir);
  const base = `${fn.name}${backward ? '.grad' : ''}${stateful ? '.stateful' : ''}`;
  let plan: Plan;
  try {
    const needed = specialisedSizes(fn, backward);
    const what = `the ${schedule.form}${backward ? ' backward' : ''} kernels of '${fn.name}'`;
    const unknown = unknownSize(fn, given_);
    if (unknown) return fail('retnetc', unknown);
    const missing = needed.filter((s) => !given_.has(s));
    if (missing.length) return fail(at(fn.span), `${what} are specialised on ${needed.join(', ')}; give ${missing.map((m) => `--size ${m}=N`).join(' ')}`);
    // A backward's schedule may also name its gradient statements: checked once they exist.
    const bad = unknownKeys(schedule, [fn], []);
    if (bad && !backward) return fail(str(o, 'schedule-file') ?? 'retnetc', bad);
    plan = compileFunction(fn, schedule, { backward, stateful, constants: new Map(needed.map((s) => [s, given_.get(s)!] as const)) });
    if (backward) {
      const badB = unknownKeys(schedule, [fn], [plan]);
      if (badB) return fail(str(o, 'schedule-file') ?? 'retnetc', badB);
    }
    for (const name of given_.keys()) {
      if (!needed.includes(name)) return fail('retnetc', `--size ${name}: '${name}' is bound at run time from the tensors' shapes; ${what} are specialised ${needed.length ? `only on ${needed.join(', ')}` : 'on no size'}`);
    }
  } catch (e) {
    if (e instanceof ScheduleError || e instanceof GradError) return failAt(program, fn, e);
    throw e;
  }
  const why = fitProblem(plan, target, limits);
  if (why) return fail('retnetc', why);
  const rc = await writeUnits(outDir, [{ fn, plan, base }], { target, emit, backward, schedule });
  // Activation memory by liveness (compiler/memory.ts), at the given sizes (others: B=1 H=8 T=4096).
  if (rc === 0) process.stdout.write(`${memoryLine(plan, given_)}\n`);
  return rc;
}

/**
 * Statement keys of the schedule that name no statement of the functions (forward statements,
 * and with `plans` (fns[i]'s plan at i) theirs: a backward's gradient statements), as one error line listing them; else
 * undefined.
 */
function unknownKeys(schedule: Schedule, fns: readonly CheckedFn[], plans: readonly Plan[]): string | undefined {
  if (!schedule.statements) return undefined;
  // plans[i], when given, is fns[i]'s (its backward): its statements count as that function's.
  const per = new Map(fns.map((fn, i) => [fn.name, [...new Set([...forwardStatementNames(fn), ...(plans[i]?.fn.body.map((s) => s.target) ?? [])])]] as const));
  const bad = unknownStatementKeys(schedule, per);
  if (!bad.length) return undefined;
  const one = per.size === 1;
  const all = [...per].flatMap(([f, ns]) => (one ? ns : ns.map((n) => `${f}/${n}`)));
  const listed = [...per].map(([f, ns]) => (one ? ns.join(', ') : `${f}: ${ns.join(', ')}`)).join('; ');
  const hint = didYouMean(bad[0]!, [...new Set([...all, ...[...per.values()].flat().flatMap((n) => [n, instanceFreeName(n)])])]);
  return `the schedule names ${bad.length === 1 ? 'a statement' : 'statements'} that ${one ? `'${fns[0]!.name}' does` : 'the functions do'} not have: ${bad.map((b) => `'${b}'`).join(', ')}${hint} (statements${one ? '' : ', by function; a key FN/NAME names one function\'s'}: ${listed})`;
}

interface ModelCmd { schedule: Schedule; backward: boolean; stateful: boolean; target: TargetName | undefined; emit: string; limits: KernelLimits | undefined; outDir: string }

/** compile of a whole model: every function of its program (forward, --backward, --stateful), or --emit state. */
async function compileModelCmd(o: ParsedOptions, program: Program, file: string, modelName: string | undefined, c: ModelCmd): Promise<number> {
  const info = program.checked!.models;
  const models = [...info.keys()];
  if (modelName === undefined && models.length > 1) return fail(`${file}:1:1`, `the file has ${models.length} models: give --model NAME (models: ${models.join(', ')}) or --fn NAME`);
  const name = modelName ?? models[0]!;
  const mi = info.get(name);
  if (!mi) return fail(`${file}:1:1`, `no model '${name}' (models: ${models.join(', ')})${didYouMean(name, models)}`);
  const sizes = list(o, 'size');
  if (sizes.length > 1) throw new UsageError(`--size is given more than once: a model takes one named size (${mi.configs.join(', ')})`);
  const config = sizes[0] ?? 'default';
  if (config.includes('=')) throw new UsageError(`--size ${config}: a model's sizes are fixed by its hypers; --size takes one of its named sizes (${mi.configs.join(', ')})`);
  const model = mi.instances.get(config);
  if (!model) {
    if (mi.configs.includes(config)) return 1; // its diagnostics were printed by check
    return fail('retnetc', `--size ${config}: model '${name}' has no size '${config}' (sizes: ${mi.configs.join(', ')})${didYouMean(config, mi.configs)}`);
  }
  const mp0 = modelProgram(model);
  if (c.emit === 'state') return emitModelState(program, model, c.schedule, c.outDir);
  let units: Unit[];
  const fnOf = (p: Plan): CheckedFn => mp0.fns.find((f) => f.name === p.fn.name) ?? model.forward;
  try {
    const bad = unknownKeys(c.schedule, mp0.fns, []);
    if (bad && !c.backward) return fail(str(o, 'schedule-file') ?? 'retnetc', bad);
    if (c.backward) {
      units = mp0.fns.map((fn) => ({ fn, plan: compileFunction(fn, c.schedule, { backward: true }), base: `${fn.name}.grad` }));
      const badB = unknownKeys(c.schedule, mp0.fns, units.map((u) => u.plan));
      if (badB) return fail(str(o, 'schedule-file') ?? 'retnetc', badB);
    } else {
      const mp = compileModel(model, c.schedule, { stateful: c.stateful });
      units = mp.plans.map((plan) => ({ fn: fnOf(plan), plan, base: `${plan.fn.name}${c.stateful ? '.stateful' : ''}` }));
    }
  } catch (e) {
    if (e instanceof ScheduleError || e instanceof GradError) return failAt(program, model.forward, e);
    throw e;
  }
  for (const u of units) {
    const why = fitProblem(u.plan, c.target, c.limits);
    if (why) return fail('retnetc', `'${u.fn.name}': ${why}`);
  }
  const program_ = {
    format: 'retnetc-model', version: 1, model: model.name, size: model.config, hypers: Object.fromEntries(model.hypers),
    backward: c.backward, stateful: c.stateful, schedule: c.schedule,
    functions: units.map((u) => ({ name: u.fn.name, files: u.base, launches: u.plan.launches.length })),
    steps: mp0.steps.map((st) => ({
      fn: mp0.fns[st.fn]!.name, ...(st.scope ? { scope: st.scope } : {}),
      inputs: Object.fromEntries([...st.inputs].map(([p, src]) => [p, src.kind === 'weight' ? { weight: src.name } : { tensor: src.id }])),
      outputs: Object.fromEntries(st.outputs),
    })),
    inputs: mp0.params.map((p) => ({ name: p.name, dtype: p.dtype, shape: p.shape.map(dimToString) })),
    outputs: mp0.outputs.map((p) => ({ name: p.name, dtype: p.dtype, shape: p.shape.map(dimToString) })),
  };
  const rc = await writeUnits(c.outDir, units, { target: c.target, emit: c.emit, backward: c.backward, schedule: c.schedule, model: { name: `${model.name}${c.backward ? '.grad' : ''}${c.stateful ? '.stateful' : ''}`, json: program_ } });
  if (rc === 0) {
    const forward = c.backward ? compileModel(model, c.schedule).plans : units.map((u) => u.plan);
    process.stdout.write(`${modelMemoryLine(mp0, forward, c.backward ? units.map((u) => u.plan) : undefined)}\n`);
  }
  return rc;
}

interface WriteOpts { target: TargetName | undefined; emit: string; backward: boolean; schedule: Schedule; model?: { name: string; json: unknown } }

/** Writes each unit's files (named after its function) under `outDir`. */
async function writeUnits(outDir: string, units: readonly Unit[], w: WriteOpts): Promise<number> {
  try {
    await fs.mkdir(outDir, { recursive: true });
    const write = async (name: string, text: string, what: string): Promise<void> => {
      const f = path.join(outDir, name);
      await fs.writeFile(f, text);
      wroteFile(f, what);
    };
    const emitPlan_ = w.target ? await import('../../targets/emit.js') : undefined;
    const bindings = w.emit === 'ts' ? await import('../../targets/ts-bindings.js') : undefined;
    for (const { fn, plan, base } of units) {
      if (w.target) {
        // Kernels in the target's language, a manifest, and with --emit ts typed bindings.
        const emitted = emitPlan_!.emitPlan(plan, w.target);
        for (const k of emitted.kernels) await write(`${k.entry}.${emitPlan_!.targetExtension(w.target)}`, k.code, `${printSpecOf(w.target).printer.language} kernel ${k.entry}`);
        await write(`${base}.${w.target}.json`, JSON.stringify(emitted.manifest, null, 2) + '\n', `manifest, ${emitted.kernels.length} kernel${emitted.kernels.length === 1 ? '' : 's'}`);
        if (bindings) await write(`${base}.${w.target}.ts`, bindings.generateBindings(emitted), 'TypeScript bindings');
      } else if (w.emit === 'ir') {
        await write(`${base}.ir`, describePlanIr(plan, fn) + '\n', 'tensor IR');
      } else {
        for (const l of plan.launches) await write(`${l.kernel.name}.kir`, kernelToString(l.kernel) + '\n', `kernel IR of ${l.kernel.name}`);
        const manifest = {
          fn: fn.name, backward: w.backward, stateful: plan.states.length > 0 || undefined, schedule: scheduleToJson(plan.schedule), constants: Object.fromEntries(plan.constants),
          launches: plan.launches.map((l) => ({ kernel: l.kernel.name, target: l.target, how: l.how, ...(l.schedule ? { choice: launchChoice(l) } : {}), workgroup: l.kernel.workgroup, buffers: l.buffers, scalars: l.scalars })),
          ...(plan.states.length ? { states: plan.states.map((st) => ({ name: st.name, input: st.input, output: st.output, shape: st.shape.map(dimToString) })) } : {}),
        };
        await write(`${base}.plan.json`, JSON.stringify(manifest, null, 2) + '\n', `plan manifest, ${plan.launches.length} launch${plan.launches.length === 1 ? '' : 'es'}`);
      }
    }
    if (w.emit === 'ir' && w.model) {
      // A model's whole schedule with every statement's choice spelled out (keys FN/NAME): a file --schedule-file reads.
      const name = w.model.name.replace(/\.(grad|stateful)$/, '');
      await write(`${name}.schedule.json`, JSON.stringify(spelledOutSchedule(w.schedule, units.map((u) => u.fn)), null, 2) + '\n', 'schedule, every statement\'s choice (for --schedule-file)');
    }
    if (w.model) await write(`${w.model.name}.program.json`, JSON.stringify(w.model.json, null, 2) + '\n', `model program, ${units.length} function${units.length === 1 ? '' : 's'}`);
  } catch (e) {
    if (e instanceof Error && 'code' in e && typeof (e as NodeJS.ErrnoException).code === 'string') return fail(outDir, `cannot write: ${(e as NodeJS.ErrnoException).code}`);
    throw e;
  }
  return 0;
}

/** What a launch's statement was lowered with: form and chunk (contractions), workgroup threads. */
function launchChoice(l: Launch): { form?: string; chunk?: number; tilesCols?: number; workgroup: number } {
  const s = l.schedule!;
  if (l.how === 'elementwise') return { workgroup: s.workgroup.elementwise };
  if (l.how === 'dense' || l.how === 'reduce' || l.how === 'scatter') return { workgroup: l.kernel.workgroup[0] * l.kernel.workgroup[1] * l.kernel.workgroup[2] };
  return { form: s.form, ...(s.form === 'recurrent' ? {} : { chunk: s.chunk }), ...(s.form === 'parallel' && s.tiles.cols !== s.chunk ? { tilesCols: s.tiles.cols } : {}), workgroup: s.workgroup.contraction };
}

/** ', chunk 16, workgroup 64': a launch's choice after its form. */
const choiceText = (l: Launch | undefined): string => {
  if (!l?.schedule) return '';
  const c = launchChoice(l);
  return [c.chunk === undefined ? undefined : `chunk ${c.chunk}`, c.tilesCols === undefined ? undefined : `key tile ${c.tilesCols}`, `workgroup ${c.workgroup}`].filter(Boolean).map((x) => `, ${x}`).join('');
};

// ---- --emit state ----------------------------------------------------------------------------

interface StateRow { name: string; input: string; output: string; shape: (number | string)[]; axes: string[]; dtype: 'f32'; bytes: number | string; perSequence: boolean }

/** Bytes of a state's elements (4 each), per sequence when its first axis is the batch (B); symbolic in sizes not known. */
function stateRow(name: string, spec: StateSpec, sizes: ReadonlyMap<string, number>): StateRow {
  let n: Dim = dconst(4);
  let perSequence = false;
  const env = new Map([...sizes].map(([k, v]) => [k, dconst(v)] as const));
  for (const d of spec.shape) {
    if (d.size === 1 && d.get('B') === 1) { perSequence = true; continue; }
    n = dmul(n, dsubst(d, env));
  }
  return { name, input: spec.input, output: spec.output, shape: spec.shape.map((d) => { const x = dsubst(d, env); return isConst(x) ? constValue(x) : dimToString(x); }), axes: spec.axes, dtype: 'f32', bytes: isConst(n) ? constValue(n) : dimToString(n), perSequence };
}

function sumBytes(rows: readonly StateRow[], perSequence: boolean): number | string {
  const sel = rows.filter((r) => r.perSequence === perSequence);
  if (sel.every((r) => typeof r.bytes === 'number')) return sel.reduce((a, r) => a + (r.bytes as number), 0);
  const known = sel.filter((r) => typeof r.bytes === 'number').reduce((a, r) => a + (r.bytes as number), 0);
  return [...(known ? [String(known)] : []), ...sel.filter((r) => typeof r.bytes === 'string').map((r) => r.bytes as string)].join(' + ');
}

async function writeState(outDir: string, base: string, title: string, rows: StateRow[], extra: Record<string, unknown>): Promise<number> {
  const perSequence = sumBytes(rows, true), shared = sumBytes(rows, false);
  const w = Math.max(4, ...rows.map((r) => r.name.length));
  const sw = Math.max(5, ...rows.map((r) => `f32[${r.shape.join(', ')}]`.length));
  const lines = [title, `  ${'name'.padEnd(w)}  ${'shape'.padEnd(sw)}  bytes`];
  for (const r of rows) lines.push(`  ${r.name.padEnd(w)}  ${`f32[${r.shape.join(', ')}]`.padEnd(sw)}  ${r.bytes}${r.perSequence ? ' per sequence' : ' shared'}`);
  lines.push(`bytes per sequence: ${perSequence}; shared by the batch: ${shared}; ${rows.length} state${rows.length === 1 ? '' : 's'}`);
  process.stdout.write(lines.join('\n') + '\n');
  try {
    await fs.mkdir(outDir, { recursive: true });
    const f = path.join(outDir, `${base}.state.json`);
    await fs.writeFile(f, JSON.stringify({ format: 'retnetc-state', version: 1, ...extra, states: rows, bytesPerSequence: perSequence, sharedBytes: shared }, null, 2) + '\n');
    wroteFile(f, `state layout, ${rows.length} state${rows.length === 1 ? '' : 's'}`);
  } catch (e) {
    if (e instanceof Error && 'code' in e && typeof (e as NodeJS.ErrnoException).code === 'string') return fail(outDir, `cannot write: ${(e as NodeJS.ErrnoException).code}`);
    throw e;
  }
  return 0;
}

/** --emit state for a function: the states of its stateful form (no kernels: the layout needs no specialised size). */
async function emitFnState(program: Program, fn: CheckedFn, sizes: ReadonlyMap<string, number>, outDir: string): Promise<number> {
  const unknown = unknownSize(fn, sizes);
  if (unknown) return fail('retnetc', unknown);
  let states: StateSpec[];
  try {
    ({ states } = statefulIr(withoutDeadStatements(toIr(fn))));
  } catch (e) {
    if (e instanceof StatefulError) return failAt(program, fn, new ScheduleError(e.message, fn.span));
    throw e;
  }
  const rows = states.map((st) => stateRow(st.name, st, sizes));
  const given_ = [...sizes].map(([k, v]) => `${k} = ${v}`).join(', ');
  return writeState(outDir, fn.name, `state of '${fn.name}' (stateful form${given_ ? `, ${given_}` : ''}):`, rows, { fn: fn.name, sizes: Object.fromEntries(sizes) });
}

/** --emit state for a model: every layer's states by full name (layers.{i}.<name>), for the model's size. */
async function emitModelState(program: Program, model: CheckedModel, schedule: Schedule, outDir: string): Promise<number> {
  let states: ModelState[];
  try {
    states = compileModel(model, schedule, { stateful: true }).states;
  } catch (e) {
    if (e instanceof ScheduleError) return failAt(program, model.forward, e);
    throw e;
  }
  const rows = states.map((st) => stateRow(st.name, st.spec, new Map()));
  return writeState(outDir, model.name, `state of model '${model.name}' (size ${model.config}, stateful form):`, rows, { model: model.name, size: model.config });
}

/**
 * Why a kernel of the plan cannot run on the target (its limits), or, with no target, on any
 * target this compiler knows (the largest limits of each); undefined when every kernel fits.
 */
function fitProblem(plan: Plan, target: TargetName | undefined, limits: KernelLimits | undefined): string | undefined {
  // Tensor cores (schedule dense 'mma') are CUDA's only: one line naming the statement, before the limits.
  const mma = target && target !== 'cuda' ? plan.launches.map((l) => mmaStatement(l.kernel)).find((s) => s !== undefined) : undefined;
  if (mma !== undefined) return `statement '${mma}': dense 'mma' (tensor cores) is CUDA only, not --target ${target}; use dense 'tiled' or 'blocked' there`;
  const check = (l: KernelLimits): string | undefined => {
    for (const launch of plan.launches) {
      const why = kernelLimitProblem(launch.kernel, { schedule: launch.schedule ?? plan.schedule, how: launch.how }, l);
      if (why) return why;
    }
    return undefined;
  };
  if (target) {
    const why = check(limits!);
    if (!why) return undefined;
    const roomier = profilesOf(target).find((p) => LIMIT_PROFILES[p] !== limits && !check(LIMIT_PROFILES[p]));
    return roomier ? `${why} (it fits --limits ${roomier})` : why;
  }
  // The roomiest profile of each printing target.
  const problems = TARGETS.flatMap((t) => (t.print ? [check(LIMIT_PROFILES[t.print.limits[t.print.limits.length - 1]!])] : []));
  return problems.every((p) => p !== undefined) ? `no target can run these kernels: ${problems.join('; ')}` : undefined;
}

/** The tensor IR after analysis, each statement annotated with how it is scheduled; the whole schedule as JSON first. */
function describePlanIr(plan: Plan, fn: CheckedFn): string {
  const { statements: _, ...defaults } = plan.schedule;
  const lines = [`# ${plan.fn.name}, schedule ${JSON.stringify(defaults)}`];
  lines.push('# the schedule with every statement\'s choice (copy it into a file for --schedule-file; the keys are the statements below):');
  lines.push(`# ${JSON.stringify(spelledOutSchedule(plan.schedule, [fn]))}`);
  const byTarget = new Map(plan.launches.map((l) => [l.target, l] as const));
  for (const s of plan.fn.body) {
    const c = plan.contractions.get(s.target);
    const l = byTarget.get(s.target);
    if (c) {
      const decay = c.decay.length === 0 ? 'none (weight 1)' : c.decay.map((d) => (d.kind === 'fixed' ? `fixed: L(p) = p * ${nodeToString(d.lambda)}` : `gated: L(p) = ${nodeToString(d.G)}`)).join(' + ') + c.signs.map((n) => `, times (-1)^(${c.row} - ${c.col}) where ${nodeToString(n)}`).join('');
      lines.push(`# ${s.target}: ${c.direction} contraction, row ${c.row}, key position ${c.col}${c.strict ? ' (strict)' : ''}, contracted ${c.inner}, value ${c.value}, batch ${c.batch.map((b) => b.name).join(', ') || '-'}`);
      lines.push(`#   a = ${nodeToString(c.a)}; b = ${nodeToString(c.b)}; c = ${nodeToString(c.c)}; scale = ${nodeToString(c.scale)}; decay ${decay}`);
      lines.push(`#   -> ${(l?.schedule ?? plan.schedule).form} kernel${choiceText(l)}`);
    } else lines.push(`# ${s.target}: ${l?.how === 'reduce' ? 'tree reduction' : l?.how === 'scatter' ? 'scatter-add (a gather\'s gradient)' : 'elementwise'} kernel${choiceText(l)}`);
  }
  return lines.join('\n') + '\n' + fnToString(plan.fn);
}
