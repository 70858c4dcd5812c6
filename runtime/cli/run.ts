// retnetc run: a function on named inputs, on the reference or a compiled target; writes the
// outputs by name (and with --grad the gradient of every input) and says what it wrote.
import * as path from 'node:path';
import type { CheckedFn } from '../../dsl/checked.js';
import { devaluate } from '../../dsl/dims.js';
import { bindSizes, checkInputs, RunError, runFunction, type Value } from '../../dsl/reference/interpreter.js';
import { gradient, GradError, upstreamName } from '../../compiler/autodiff.js';
import { lowerFn, toChecked } from '../../compiler/ir.js';
import { type Plan, ScheduleError, specialisedSizes } from '../../compiler/plan.js';
import { type DType, fromFloat64, SafetensorsError, type Tensor, writeSafetensorsFile } from '../io/safetensors.js';
import { fail, failAt, findFn, loadChecked, parseSchedule, parseSizeOptions, readTensors, SCHEDULE_OPTIONS, scheduleGiven, unknownSize, wroteTensor } from './common.js';
import { gatherProblem } from './gathers.js';
import { didYouMean, given, list, type OptionSpecs, type ParsedOptions, parseInteger, parseOptions, refuse, sameFile, str, UsageError } from './options.js';
import { runModel } from '../../dsl/reference/interpreter.js';
import { compileFunction, compileModel } from '../../compiler/pipeline.js';
import { deviceError, dtypeProblem, EXEC_TARGETS, openTarget, orList, withTargetDefaults } from '../targets.js';
import { loadTorchscale, NOT_WEIGHTS, tokenProblem, TorchscaleError } from '../io/torchscale.js';
import { type HostValue, runModelPlan } from '../model-runner.js';
import { STORAGE_DTYPES } from '../../compiler/schedule.js';
import type { TargetExec } from '../targets.js';

/** `run --target`: the float64 reference, or any target that runs plans (runtime/targets.ts). */
export const RUN_TARGETS: readonly string[] = ['reference', ...EXEC_TARGETS];
const COMPILED = `use --target ${orList(EXEC_TARGETS)}`;
const DTYPE_MAP: Record<string, DType> = { f32: 'F32', f16: 'F16', bf16: 'BF16', f64: 'F64', i32: 'I32', i64: 'I64' };

export const RUN_OPTIONS: OptionSpecs = {
  fn: { type: 'string', value: 'NAME' },
  inputs: { type: 'string', value: 'IN.safetensors' },
  out: { type: 'string', value: 'OUT.safetensors' },
  target: { type: 'string', value: RUN_TARGETS.join('|') },
  ...SCHEDULE_OPTIONS,
  grad: { type: 'string', value: 'DOUT.safetensors' },
  'out-dtype': { type: 'string', value: Object.keys(DTYPE_MAP).join('|') },
  size: { type: 'string', multiple: true, value: 'NAME=N' },
  repeat: { type: 'string', value: 'N' },
  model: { type: 'string', value: 'NAME' },
  checkpoint: { type: 'string', value: 'CK.safetensors' },
};

export const RUN_USAGE = `usage: retnetc run FILE.ret --fn NAME --inputs IN.safetensors --out OUT.safetensors [--target ${RUN_TARGETS.join('|')}] [--schedule S] [--chunk N] [--dtype f32|f16|bf16] [--grad DOUT.safetensors] [--out-dtype T] [--size H=2 ...] [--repeat N]\n   or: retnetc run FILE.ret --model NAME --checkpoint CK.safetensors --out OUT.safetensors [--size NAME] [--inputs TOKENS.safetensors] [--target T] [--schedule S] [--chunk N] [--dtype D] [--out-dtype T] [--repeat N]`;

export async function cmdRun(args: string[]): Promise<number> {
  const o = parseOptions('run', args, RUN_OPTIONS);
  if (given(o, 'model') || given(o, 'checkpoint')) return runModelCommand(o);
  const fnName = str(o, 'fn');
  const inPath = str(o, 'inputs');
  const outPath = str(o, 'out');
  if (o.positionals.length !== 1 || !fnName || !inPath || !outPath) throw new UsageError(RUN_USAGE);
  const file = o.positionals[0]!;
  const target = str(o, 'target') ?? 'reference';
  if (!RUN_TARGETS.includes(target)) throw new UsageError(`unknown target '${target}' (expected one of ${RUN_TARGETS.join(', ')})${didYouMean(target, RUN_TARGETS)}`);
  const schedule = targetSchedule(o, target);
  const outDtype = str(o, 'out-dtype');
  if (outDtype !== undefined && !DTYPE_MAP[outDtype]) throw new UsageError(`unknown --out-dtype '${outDtype}' (expected one of ${Object.keys(DTYPE_MAP).join(', ')})`);
  const gradPath = str(o, 'grad');
  // Sizes that no input binds (size parameters: `fn msr[H]`).
  const explicit = parseSizeOptions(o);
  const repeatText = str(o, 'repeat');
  const repeat = repeatText === undefined ? 0 : parseInteger('--repeat', repeatText, 1, 100_000);
  if (repeat && target === 'reference') refuse(o, ['repeat'], `to --target reference: it times the compiled plan on a device (${COMPILED})`);
  for (const [opt, p] of [['--inputs', inPath], ['--grad', gradPath]] as const) {
    if (p !== undefined && sameFile(p, outPath)) throw new UsageError(`--out ${outPath} is the ${opt} file ${p}; writing it would destroy the ${opt === '--inputs' ? 'inputs' : 'upstream gradients'} (choose another --out)`);
  }

  const program = loadChecked(file);
  if (!program) return 1;
  const fn = findFn(program, file, fnName);
  if (typeof fn === 'number') return fn;
  const unknown = unknownSize(fn, explicit);
  if (unknown) return fail('retnetc', unknown);
  const floatOut = fn.outputs.find((x) => x.dtype !== 'i32' && x.dtype !== 'i64');
  if ((outDtype === 'i32' || outDtype === 'i64') && (floatOut || gradPath !== undefined)) {
    throw new UsageError(`--out-dtype ${outDtype} cannot hold the float ${floatOut ? `output '${floatOut.name}'` : 'gradients'} of '${fn.name}' (use f32, f64, f16 or bf16)`);
  }
  const inputs = await readTensors(inPath);
  if (typeof inputs === 'string') return fail(inPath, inputs);
  let upstream: Map<string, Value> | undefined;
  if (gradPath !== undefined) {
    const g = await readTensors(gradPath);
    if (typeof g === 'string') return fail(gradPath, g);
    const outNames = fn.outputs.map((x) => x.name).join(', ');
    for (const name of g.keys()) if (!fn.outputs.some((x) => x.name === name)) return fail(gradPath, `'${name}' is not an output of '${fn.name}' (outputs: ${outNames}); name each upstream gradient after its output`);
    if (g.size === 0) return fail(gradPath, `holds no tensor, so it names no output of '${fn.name}' (outputs: ${outNames}); give the upstream gradient of at least one`);
    upstream = g;
  }

  // The inputs are checked as the reference checks them, without evaluating it (a compiled
  // target's T may be far too long for the literal O(T^2) evaluation).
  let sizes: Map<string, number>;
  try {
    checkInputs(fn, inputs);
    // (bindSizes takes a 1-element tensor for a scalar, as every target does.)
    const shapes = new Map([...inputs].map(([k, v]) => [k, v.shape] as const));
    // A --size that the inputs bind as well says nothing new, or contradicts them.
    for (const [name, n] of explicit) {
      let fromInputs: number | undefined;
      try { fromInputs = bindSizes(fn, shapes, new Map([...explicit].filter(([k]) => k !== name))).get(name); } catch { fromInputs = undefined; }
      if (fromInputs !== undefined) return fail('retnetc', `--size ${name}: '${name}' is bound by the inputs' shapes (${name} = ${fromInputs}${fromInputs === n ? '' : `, not ${n}`}); --size is for sizes that no input binds`);
    }
    sizes = bindSizes(fn, shapes, explicit);
    const bad = gatherProblem(fn, inputs, sizes);
    if (bad) return fail(inPath, bad);
  } catch (e) {
    if (e instanceof RunError) {
      const unbound = /^cannot determine size '([^']+)'/.exec(e.message);
      return fail(inPath, unbound ? `${e.message}; give it with --size ${unbound[1]}=N` : e.message);
    }
    throw e;
  }
  const outShapes = new Map(fn.outputs.map((x) => [x.name, x.shape.map((d) => devaluate(d, sizes)!)] as const));
  if (upstream) {
    for (const x of fn.outputs) {
      const g = upstream.get(x.name);
      const want = outShapes.get(x.name)!;
      if (g && (g.shape.length !== want.length || g.shape.some((d, i) => d !== want[i]))) {
        return fail(gradPath!, `the gradient of '${x.name}' must have the shape of '${x.name}', [${want.join(', ')}], got [${g.shape.join(', ')}]`);
      }
    }
  }

  const results = new Map<string, { shape: number[]; data: ArrayLike<number>; dtype: DType }>();
  let device: TargetExec | undefined;
  try {
    if (target === 'reference') {
      // The reference computes in float64 and, unless asked otherwise, writes float64.
      const outs = runFunction(fn, inputs, { sizes: explicit });
      for (const x of fn.outputs) results.set(x.name, { ...outs.get(x.name)!, dtype: x.dtype === 'i32' || x.dtype === 'i64' ? DTYPE_MAP[x.dtype]! : 'F64' });
      if (upstream) {
        const g = gradient(lowerFn(fn));
        for (const [name, v] of runFunction(toChecked(g), withUpstream(fn, inputs, upstream, outShapes), { sizes: explicit })) results.set(name, { ...v, dtype: 'F64' });
      }
    } else {
      // The kernels are specialised on the key and value sizes, and on the --size ones.
      const constantsFor = (backward: boolean) => new Map([...explicit, ...specialisedSizes(fn, backward).map((s) => [s, sizes.get(s)!] as const)]);
      const c0 = performance.now();
      const plan = compileFunction(fn, schedule, { constants: constantsFor(false) });
      const gplan = upstream ? compileFunction(fn, schedule, { backward: true, constants: constantsFor(true) }) : undefined;
      const compileMs = performance.now() - c0;
      const gradInputs = upstream ? withUpstream(fn, inputs, upstream, outShapes) : undefined;
      device = openTarget(target);
      const { exec } = device;
      const once = async (): Promise<void> => {
        for (const [name, t] of await exec(plan, inputs)) results.set(name, { ...t, dtype: t.data instanceof Int32Array ? 'I32' : 'F32' });
        if (gplan) for (const [name, t] of await exec(gplan, gradInputs!)) results.set(name, { ...t, dtype: 'F32' });
      };
      const r0 = performance.now();
      await once();
      const firstMs = performance.now() - r0;
      if (repeat) {
        process.stdout.write(await timingLine(`${target} ${schedule.form}${gplan ? ' forward + backward' : ''}`, once, repeat, compileMs, firstMs));
      }
    }
  } catch (e) {
    if (e instanceof RunError) return fail(inPath, e.message);
    if (e instanceof ScheduleError || e instanceof GradError) return failAt(program, fn, e);
    const device = deviceError(e);
    if (device) return fail('retnetc', device);
    throw e;
  } finally {
    await device?.release();
  }
  warnNonFinite(results);
  const tensors = new Map<string, Tensor>();
  for (const [name, r] of results) tensors.set(name, fromFloat64(r.data, r.shape, outDtype ? DTYPE_MAP[outDtype]! : r.dtype));
  try {
    await writeSafetensorsFile(outPath, tensors, { fn: fn.name, source: path.basename(file), target, ...(target !== 'reference' ? { schedule: JSON.stringify(schedule) } : {}) });
  } catch (e) {
    if (e instanceof SafetensorsError) return fail(outPath, e.message.replace(`${outPath}: `, ''));
    throw e;
  }
  for (const [name, t] of tensors) wroteTensor(name, t.dtype, t.shape, outPath);
  return 0;
}

function nonFinite(data: ArrayLike<number>): { count: number; first: number; value: number } | undefined {
  let count = 0;
  let first = -1;
  for (let i = 0; i < data.length; i++) if (!Number.isFinite(data[i]!)) { if (count++ === 0) first = i; }
  return count ? { count, first, value: data[first]! } : undefined;
}

function unflatten(i: number, shape: readonly number[]): number[] {
  const out: number[] = [];
  for (let d = shape.length - 1; d >= 0; d--) { out.unshift(i % shape[d]!); i = Math.floor(i / shape[d]!); }
  return out;
}

/** The schedule of --schedule, --chunk and --dtype for `target` (refused for the reference; a dtype the target cannot hold is a usage error). */
function targetSchedule(o: ParsedOptions, target: string) {
  if (target === 'reference' && scheduleGiven(o)) {
    refuse(o, ['schedule', 'chunk', 'dtype'], `to --target reference, which evaluates the definition directly in float64 (${COMPILED})`);
  }
  const schedule = parseSchedule(o, false);
  const bad = target === 'reference' ? undefined : dtypeProblem(target, schedule.dtype, 'run', STORAGE_DTYPES);
  if (bad) throw new UsageError(bad);
  return target === 'reference' ? schedule : withTargetDefaults(schedule, target);
}

/** Gradient inputs: the forward inputs plus grad.OUT for every output (zeros where not given). */
function withUpstream(fn: CheckedFn, inputs: Map<string, Value>, upstream: Map<string, Value>, outShapes: ReadonlyMap<string, number[]>): Map<string, Value> {
  const m = new Map(inputs);
  for (const x of fn.outputs) {
    const want = outShapes.get(x.name)!;
    m.set(upstreamName(x.name), upstream.get(x.name) ?? { shape: want, data: new Float64Array(want.reduce((a, b) => a * b, 1)) });
  }
  return m;
}

// ---- run --model: a whole model with a torchscale checkpoint's weights ----------------------

async function runModelCommand(o: ParsedOptions): Promise<number> {
  const modelName = str(o, 'model');
  const ckPath = str(o, 'checkpoint');
  const outPath = str(o, 'out');
  const inPath = str(o, 'inputs');
  if (given(o, 'fn')) throw new UsageError('--fn and --model do not go together: run runs a function or a model');
  if (!modelName) throw new UsageError(`--checkpoint needs --model NAME (the model whose weights it holds)\n${RUN_USAGE}`);
  if (!ckPath) throw new UsageError(`--model needs --checkpoint CK.safetensors (the weights, by torchscale's names)\n${RUN_USAGE}`);
  if (o.positionals.length !== 1 || !outPath) throw new UsageError(RUN_USAGE);
  refuse(o, ['grad'], 'to --model: a model runs forward only here');
  const file = o.positionals[0]!;
  const target = str(o, 'target') ?? 'reference';
  if (!RUN_TARGETS.includes(target)) throw new UsageError(`unknown target '${target}' (expected one of ${RUN_TARGETS.join(', ')})${didYouMean(target, RUN_TARGETS)}`);
  const schedule = targetSchedule(o, target);
  const outDtype = str(o, 'out-dtype');
  if (outDtype !== undefined && !DTYPE_MAP[outDtype]) throw new UsageError(`unknown --out-dtype '${outDtype}' (expected one of ${Object.keys(DTYPE_MAP).join(', ')})`);
  const repeatText = str(o, 'repeat');
  const repeat = repeatText === undefined ? 0 : parseInteger('--repeat', repeatText, 1, 100_000);
  if (repeat && target === 'reference') refuse(o, ['repeat'], `to --target reference: it times the compiled plan on a device (${COMPILED})`);
  const sizes = list(o, 'size');
  if (sizes.length > 1) throw new UsageError(`--size is given more than once; with --model it names one size of the model`);
  const size = sizes[0];
  if (size !== undefined && size.includes('=')) throw new UsageError(`--size ${size}: with --model, --size names a size of the model (a 'size NAME { ... }' block), not NAME=N`);
  for (const [opt, p] of [['--inputs', inPath], ['--checkpoint', ckPath]] as const) {
    if (p !== undefined && sameFile(p, outPath)) throw new UsageError(`--out ${outPath} is the ${opt} file ${p}; writing it would destroy it (choose another --out)`);
  }

  const program = loadChecked(file);
  if (!program) return 1;
  const info = program.checked!.models.get(modelName);
  if (!info) {
    const names = [...program.checked!.models.keys()];
    return fail(`${file}:1:1`, `no model '${modelName}' (models: ${names.join(', ') || 'none'})${didYouMean(modelName, names)}`);
  }
  if (size !== undefined && !info.configs.includes(size)) return fail('retnetc', `--size ${size}: model '${modelName}' has no size '${size}' (sizes: ${info.configs.join(', ')})${didYouMean(size, info.configs)}`);
  let ck;
  try {
    ck = await loadTorchscale(ckPath, { program, model: modelName, ...(size !== undefined ? { size } : {}) });
  } catch (e) {
    if (e instanceof TorchscaleError) return fail(ckPath, e.message);
    throw e;
  }
  const model = ck.model;
  // The forward's inputs: from --inputs by name, else the checkpoint's tensors of those names.
  const inputs = new Map<string, HostValue>();
  const where = inPath ?? ckPath;
  if (inPath !== undefined) {
    const t = await readTensors(inPath);
    if (typeof t === 'string') return fail(inPath, t);
    for (const [name, v] of t) {
      if (!model.forward.params.some((p) => p.name === name)) return fail(inPath, `'${name}' is not an input of model '${modelName}' (inputs: ${model.forward.params.map((p) => p.name).join(', ')})`);
      inputs.set(name, v);
    }
  }
  for (const p of model.forward.params) {
    if (inputs.has(p.name)) continue;
    if (p.name === 'tokens' && ck.tokensError) return fail(ckPath, `${ck.tokensError}; give the tokens with --inputs FILE.safetensors`);
    const v = p.name === 'tokens' ? ck.tokens : NOT_WEIGHTS(p.name) ? ck.weights.get(p.name) : undefined;
    if (!v) return fail(where, `no input '${p.name}' of model '${modelName}'${inPath === undefined ? ` in the checkpoint; give it with --inputs FILE.safetensors` : ''}`);
    inputs.set(p.name, v);
  }
  try {
    checkInputs(model.forward, inputs as Map<string, Value>);
  } catch (e) {
    if (e instanceof RunError) return fail(where, e.message);
    throw e;
  }
  const tokens = inputs.get('tokens');
  const vocab = model.hypers.get('vocab');
  if (tokens && typeof vocab === 'number') {
    const bad = tokenProblem(tokens, vocab);
    if (bad) return fail(where, bad);
  }

  const results = new Map<string, { shape: number[]; data: ArrayLike<number>; dtype: DType }>();
  const device = target === 'reference' ? undefined : openTarget(target);
  try {
    if (!device) {
      for (const [name, v] of runModel(model, ck.weights as Map<string, Value>, inputs as Map<string, Value>)) results.set(name, { ...v, dtype: v.data instanceof Int32Array ? 'I32' : 'F64' });
    } else {
      const c0 = performance.now();
      const mp = compileModel(model, schedule);
      const compileMs = performance.now() - c0;
      const once = async (): Promise<void> => {
        const { outputs } = await runModelPlan(mp, ck.weights, inputs, device.exec);
        for (const [name, t] of outputs) results.set(name, { ...t, dtype: t.data instanceof Int32Array ? 'I32' : 'F32' });
      };
      const r0 = performance.now();
      await once();
      const firstMs = performance.now() - r0;
      if (repeat) {
        const L = model.hypers.get('n_layers');
        process.stdout.write(await timingLine(`${target} ${schedule.form} model ${modelName}${L !== undefined ? ` (${L} layers)` : ''} forward`, once, repeat, compileMs, firstMs));
      }
    }
  } catch (e) {
    if (e instanceof RunError) return fail(where, e.message.split('\n')[0]!);
    if (e instanceof ScheduleError) return failAt(program, model.forward, e);
    const dev = deviceError(e);
    if (dev) return fail('retnetc', dev);
    throw e;
  } finally {
    await device?.release();
  }
  warnNonFinite(results);
  const tensors = new Map<string, Tensor>();
  for (const [name, r] of results) tensors.set(name, fromFloat64(r.data, r.shape, outDtype ? DTYPE_MAP[outDtype]! : r.dtype));
  const meta: Record<string, string> = { model: modelName, config: model.config, source: path.basename(file), checkpoint: path.basename(ckPath), target };
  if (target !== 'reference') meta['schedule'] = JSON.stringify(schedule);
  try {
    await writeSafetensorsFile(outPath, tensors, meta);
  } catch (e) {
    if (e instanceof SafetensorsError) return fail(outPath, e.message.replace(`${outPath}: `, ''));
    throw e;
  }
  for (const [name, t] of tensors) wroteTensor(name, t.dtype, t.shape, outPath);
  return 0;
}

/** `timing: WHAT: compile .., first run .., median .. per run over N more (min .., max ..)`: runs `once` N more times. */
async function timingLine(what: string, once: () => Promise<unknown>, repeat: number, compileMs: number, firstMs: number): Promise<string> {
  // Each run includes the uploads and read-backs a caller of the runtime pays.
  const ms: number[] = [];
  for (let i = 0; i < repeat; i++) { const t0 = performance.now(); await once(); ms.push(performance.now() - t0); }
  ms.sort((a, b) => a - b);
  const median = ms.length % 2 ? ms[(ms.length - 1) / 2]! : (ms[ms.length / 2 - 1]! + ms[ms.length / 2]!) / 2;
  return `timing: ${what}: compile ${compileMs.toFixed(1)} ms, first run ${firstMs.toFixed(1)} ms, median ${median.toFixed(2)} ms per run over ${repeat} more (min ${ms[0]!.toFixed(2)}, max ${ms[ms.length - 1]!.toFixed(2)})\n`;
}

/** A NaN or an infinity is never written silently: one line per tensor names the first place. */
function warnNonFinite(results: ReadonlyMap<string, { data: ArrayLike<number>; shape: number[] }>): void {
  for (const [name, r] of results) {
    const bad = nonFinite(r.data);
    if (bad) process.stderr.write(`retnetc: warning: '${name}' holds ${bad.count} non-finite value${bad.count === 1 ? '' : 's'}, the first ${bad.value} at [${unflatten(bad.first, r.shape).join(', ')}]\n`);
  }
}
