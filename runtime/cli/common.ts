// What the retnetc commands share: loading a checked program, finding a function, reading
// tensors, the schedule options, located schedule/gradient errors and the `wrote` lines.
import * as fs from 'node:fs';
import type { CheckedFn } from '../../dsl/checked.js';
import { type Dim, dimToString } from '../../dsl/dims.js';
import { loadProgram, type Program, sourceFor } from '../../dsl/program.js';
import { formatDiagnostic, type Span } from '../../dsl/source.js';
import type { Value } from '../../dsl/reference/interpreter.js';
import { type Form, FORMS, makeSchedule, type Schedule, ScheduleFormatError, scheduleFromJson, STORAGE_DTYPES, type StorageDtype } from '../../compiler/schedule.js';
import { readSafetensorsFile, SafetensorsError, toFloat64 as toF64 } from '../io/safetensors.js';
import { CheckpointPathError, weightsFile } from '../io/checkpoint-path.js';
import { type LoadedCheckpoint, loadTorchscale, TorchscaleError } from '../io/torchscale.js';
import { at, didYouMean, fail, given, list, type OptionSpecs, type ParsedOptions, parseInteger, refuse, str, UsageError } from './options.js';

/** Loads and checks a .ret file; prints its diagnostics and returns undefined when it has any. */
export function loadChecked(file: string): Program | undefined {
  const program = loadProgram(file);
  if (program.diagnostics.length === 0) return program;
  for (const d of program.diagnostics) process.stderr.write(formatDiagnostic(d, sourceFor(program, d)) + '\n');
  const n = program.diagnostics.length;
  process.stderr.write(`${n} error${n === 1 ? '' : 's'}\n`);
  return undefined;
}

/** The function `name` of a checked program, or an error naming the functions there are. */
export function findFn(program: Program, file: string, name: string): CheckedFn | number {
  const fn = program.checked!.fns.get(name);
  if (fn) return fn;
  const names = [...program.checked!.fns.keys()];
  return fail(`${file}:1:1`, `no function '${name}' (functions: ${names.join(', ') || 'none'})${didYouMean(name, names)}`);
}

const typeStr = (p: { dtype: string; shape: readonly Dim[] }): string => (p.shape.length ? `${p.dtype}[${p.shape.map(dimToString).join(', ')}]` : p.dtype);

export function signature(fn: CheckedFn): string {
  const params = fn.params.map((p) => `${p.name}: ${typeStr(p)}${p.default !== undefined ? ` = ${p.default}` : ''}`).join(', ');
  const outs = fn.outputs.map((o) => `${o.name}: ${typeStr(o)}`);
  return `fn ${fn.name}(${params}) -> ${outs.length === 1 ? outs[0] : `(${outs.join(', ')})`}`;
}

/** The tensors of a safetensors file as float64 values, or the reason it cannot be read. */
export async function readTensors(file: string): Promise<Map<string, Value> | string> {
  try {
    const contents = await readSafetensorsFile(file);
    const out = new Map<string, Value>();
    for (const [name, t] of contents.tensors) out.set(name, { shape: t.shape, data: toF64(t) });
    return out;
  } catch (e) {
    if (e instanceof SafetensorsError) return e.message.replace(`${file}: `, '');
    throw e;
  }
}

// ---- schedules ----------------------------------------------------------------------------

export const SCHEDULE_OPTIONS: OptionSpecs = {
  schedule: { type: 'string', value: FORMS.join('|') },
  chunk: { type: 'string', value: 'N' },
  dtype: { type: 'string', value: STORAGE_DTYPES.join('|') },
};

/** The schedule record of --schedule, --chunk and --dtype (`required`: --schedule must be given). */
export function parseSchedule(o: ParsedOptions, required: boolean): Schedule {
  const form = str(o, 'schedule') ?? (required ? undefined : 'parallel');
  if (!form) throw new UsageError(`--schedule ${FORMS.join('|')} is required`);
  if (!(FORMS as readonly string[]).includes(form)) throw new UsageError(`unknown schedule '${form}' (expected ${FORMS.join(', ')})${didYouMean(form, FORMS)}`);
  if (form === 'recurrent') refuse(o, ['chunk'], 'to the recurrent schedule: it steps one position at a time (--chunk sets the chunk of chunkwise and the tile of parallel)');
  const c = str(o, 'chunk');
  // No --chunk: the default, which a target's own may replace (Schedule.chunkDefault).
  const chunk = c === undefined ? undefined : parseInteger('--chunk', c, 1, 1024);
  const dtype = str(o, 'dtype') ?? 'f32';
  if (!(STORAGE_DTYPES as readonly string[]).includes(dtype)) throw new UsageError(`unknown --dtype '${dtype}' (expected ${STORAGE_DTYPES.join(', ')})${didYouMean(dtype, STORAGE_DTYPES)}`);
  return makeSchedule(form as Form, chunk, { dtype: dtype as StorageDtype });
}

/** --schedule-file FILE.json: a whole schedule record with per-statement choices (as `compile --emit ir` writes it). */
export const SCHEDULE_FILE_OPTION: OptionSpecs = { 'schedule-file': { type: 'string', value: 'FILE.json' } };

/** The schedule of --schedule-file (refusing --schedule, --chunk and --dtype beside it); a user error when it is not a schedule. */
export function scheduleFromFile(o: ParsedOptions): Schedule {
  const f = str(o, 'schedule-file')!;
  refuse(o, ['schedule', 'chunk', 'dtype'], 'with --schedule-file: the file states the schedule');
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(f, 'utf8'));
  } catch (e) {
    const why = e instanceof SyntaxError ? `not JSON: ${e.message}` : `cannot read: ${(e as NodeJS.ErrnoException).code ?? String(e)}`;
    throw new UsageError(`--schedule-file ${f}: ${why}`);
  }
  try {
    return scheduleFromJson(json);
  } catch (e) {
    if (e instanceof ScheduleFormatError) throw new UsageError(`--schedule-file ${f}: ${e.message}`);
    throw e;
  }
}

export const scheduleGiven = (o: ParsedOptions): boolean => given(o, 'schedule') || given(o, 'chunk') || given(o, 'dtype');

// ---- located compiler errors ----------------------------------------------------------------

/** The statement a ScheduleError or GradError is about, if it says (else undefined). */
export function errorSpan(e: unknown): Span | undefined {
  const s = (e as { span?: Span } | null)?.span;
  return s && typeof s.file === 'string' && s.file !== '<ir>' && s.line > 0 ? s : undefined;
}

/**
 * Prints a compiler error at the statement it names (with its source line and a caret), or
 * at the function's header when it names none.
 */
export function failAt(program: Program, fn: CheckedFn, e: Error): number {
  const span = errorSpan(e) ?? fn.span;
  const d = { span, message: e.message };
  process.stderr.write(formatDiagnostic(d, sourceFor(program, d)) + '\n');
  return 1;
}

// ---- what a command wrote -------------------------------------------------------------------

/** `wrote o f32[1, 2, 5, 2] to out.safetensors` */
export function wroteTensor(name: string, dtype: string, shape: readonly number[], file: string): void {
  process.stdout.write(`wrote ${name} ${dtype.toLowerCase()}[${shape.join(', ')}] to ${file}\n`);
}

export function wroteFile(file: string, what: string): void {
  process.stdout.write(`wrote ${file} (${what})\n`);
}

/** Kernels index with i32: no size may reach 2^31. */
export const MAX_SIZE = 2 ** 31 - 1;

/** `--size NAME=N` options (decimal N in 1 .. 2^31 - 1, each name once). */
export function parseSizeOptions(o: ParsedOptions): Map<string, number> {
  const sizes = new Map<string, number>();
  for (const s of list(o, 'size')) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(s);
    if (!m) throw new UsageError(`--size takes NAME=N, got '${s}'`);
    if (sizes.has(m[1]!)) throw new UsageError(`--size ${m[1]} is given more than once`);
    sizes.set(m[1]!, parseInteger(`--size ${m[1]}`, m[2]!, 1, MAX_SIZE));
  }
  return sizes;
}

/** A one-line problem when a `--size` names no size of `fn`, else undefined. */
export function unknownSize(fn: CheckedFn, sizes: ReadonlyMap<string, number>): string | undefined {
  for (const name of sizes.keys()) {
    if (!fn.sizes.includes(name)) return `--size ${name}: '${name}' is not a size of '${fn.name}' (its sizes: ${fn.sizes.join(', ') || 'none'})${didYouMean(name, fn.sizes)}`;
  }
  return undefined;
}

export { at, fail };

/**
 * A --checkpoint (a retnetc train directory or a .safetensors file) read as a torchscale
 * checkpoint, with the weights file it names; or the exit code of its one-line error.
 */
export async function readCheckpoint(ckPath: string): Promise<{ file: string; ck: LoadedCheckpoint } | number> {
  try {
    const file = weightsFile(ckPath);
    return { file, ck: await loadTorchscale(file) };
  } catch (e) {
    if (e instanceof CheckpointPathError) return fail('retnetc', e.message);
    if (e instanceof TorchscaleError) return fail(ckPath, e.message);
    throw e;
  }
}
