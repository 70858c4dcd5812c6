// retnetc subcommands: check, run. Each returns an exit code; user errors are printed as
// `location: error: message` and never as a stack trace.
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import type { CheckedFn, CheckedModel } from '../../dsl/checked.js';
import { dimToString } from '../../dsl/dims.js';
import { loadProgram, type Program, sourceFor } from '../../dsl/program.js';
import { formatDiagnostic } from '../../dsl/source.js';
import { RunError, runFunction, type Value } from '../../dsl/reference/interpreter.js';
import { readSafetensorsFile, SafetensorsError, type DType, type Tensor, fromFloat64, toFloat64, writeSafetensorsFile } from '../io/safetensors.js';

export class UsageError extends Error {}

const USAGE = `usage: retnetc <command> [options]

commands:
  check FILE.ret                      check a file; print every function and model signature
  run FILE.ret --fn NAME --inputs IN.safetensors --out OUT.safetensors [--target reference]
                                      run a function on named inputs; write outputs by name
  help                                this text`;

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
      case undefined: case 'help': case '--help': case '-h':
        process.stdout.write(USAGE + '\n');
        return cmd === undefined ? 1 : 0;
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

async function cmdRun(args: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args, allowPositionals: true,
    options: {
      fn: { type: 'string' }, inputs: { type: 'string' }, out: { type: 'string' },
      target: { type: 'string', default: 'reference' },
      'out-dtype': { type: 'string' },
    },
  });
  if (positionals.length !== 1 || !values.fn || !values.inputs || !values.out) {
    throw new UsageError('usage: retnetc run FILE.ret --fn NAME --inputs IN.safetensors --out OUT.safetensors [--target reference]');
  }
  if (values.target !== 'reference') {
    return fail('retnetc', `unknown target '${values.target}' (available: reference)`);
  }
  const outDtype = values['out-dtype'];
  if (outDtype !== undefined && !DTYPE_MAP[outDtype]) return fail('retnetc', `unknown --out-dtype '${outDtype}' (expected one of ${Object.keys(DTYPE_MAP).join(', ')})`);
  const program = loadChecked(positionals[0]!);
  if (!program) return 1;
  const fn = program.checked!.fns.get(values.fn);
  if (!fn) {
    const names = [...program.checked!.fns.keys()];
    return fail(positionals[0]!, `no function '${values.fn}' (functions: ${names.join(', ') || 'none'})`);
  }
  const inPath = values.inputs;
  let contents;
  try {
    contents = await readSafetensorsFile(inPath);
  } catch (e) {
    if (e instanceof SafetensorsError) return fail(inPath, e.message.replace(`${inPath}: `, ''));
    throw e;
  }
  const inputs = new Map<string, Value>();
  for (const [name, t] of contents.tensors) inputs.set(name, { shape: t.shape, data: toFloat64(t) });
  let outs: Map<string, Value>;
  try {
    outs = runFunction(fn, inputs);
  } catch (e) {
    if (e instanceof RunError) return fail(inPath, e.message);
    throw e;
  }
  // The reference computes in float64 and, unless asked otherwise, writes float64.
  const tensors = new Map<string, Tensor>();
  for (const o of fn.outputs) {
    const v = outs.get(o.name)!;
    const dt = outDtype ? DTYPE_MAP[outDtype]! : (o.dtype === 'i32' || o.dtype === 'i64' ? DTYPE_MAP[o.dtype]! : 'F64');
    tensors.set(o.name, fromFloat64(v.data, v.shape, dt));
  }
  try {
    await writeSafetensorsFile(values.out, tensors, { fn: fn.name, source: path.basename(positionals[0]!), target: 'reference' });
  } catch (e) {
    if (e instanceof SafetensorsError) return fail(values.out, e.message.replace(`${values.out}: `, ''));
    throw e;
  }
  return 0;
}
