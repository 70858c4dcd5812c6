// `retnetc compile` of whole models and with schedule files, as a user runs it: a model's
// functions (forward, --backward, --stateful) each under its own name with the model's program,
// --emit state (the state layout and bytes per sequence, for a model's size or a function's
// --size), --emit ir showing each statement's choice and the spelled-out schedule that reads
// back with --schedule-file to the same kernels, and the mistakes a schedule file can have.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { cli, ensureBuilt, escapeRe, expectOk, expectUserError } from './helpers/cli.js';

let dir = '';
beforeAll(() => {
  ensureBuilt();
  dir = mkdtempSync(path.join(tmpdir(), 'retnetc-cli-compile-model-'));
}, 240_000);
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

let n = 0;
const fresh = (): string => path.join(dir, `c${n++}`);
/** Runs compile into a fresh directory; checks exit 0, a quiet stderr and one `wrote` line per file written. */
async function compile(...args: string[]): Promise<{ out: string; files: string[]; stdout: string }> {
  const out = fresh();
  const r = await cli(['compile', ...args, '--out', out]);
  expectOk(r);
  const files = readdirSync(out).sort();
  const wrote = r.stdout.trim().split('\n').map((l) => /^wrote (\S+) \(.+\)$/.exec(l)?.[1]).filter((w) => w !== undefined);
  expect(wrote.map((w) => path.basename(w)).sort()).toEqual(files);
  return { out, files, stdout: r.stdout };
}
const read = (d: string, f: string): string => readFileSync(path.join(d, f), 'utf8');
const json = <T = Record<string, unknown>>(d: string, f: string): T => JSON.parse(read(d, f)) as T;
const file = (name: string, content: unknown): string => {
  const f = path.join(dir, name);
  writeFileSync(f, typeof content === 'string' ? content : JSON.stringify(content));
  return f;
};

interface Program { format: string; model: string; size: string; backward: boolean; stateful: boolean; functions: { name: string; files: string; launches: number }[]; steps: { fn: string; scope?: string; inputs: Record<string, { weight?: string; tensor?: string }>; outputs: Record<string, string> }[] }
interface PlanJson { fn: string; backward: boolean; launches: { kernel: string; target: string; how: string; choice?: { form?: string; chunk?: number; workgroup: number } }[]; states?: { name: string; shape: string[] }[] }
const FNS = ['retnet_part0', 'retnet_layers', 'retnet_part1'];

describe.concurrent('retnetc compile MODEL.ret', { timeout: 120_000 }, () => {
  it('the forward: every function of the model under its own name, and the model program', async () => {
    const { out, files } = await compile('models/retnet.ret', '--size', 'tiny', '--schedule', 'chunkwise', '--chunk', '32');
    for (const f of FNS) expect(files).toContain(`${f}.plan.json`);
    const prog = json<Program>(out, 'retnet.program.json');
    expect(prog).toMatchObject({ format: 'retnetc-model', model: 'retnet', size: 'tiny', backward: false, stateful: false });
    expect(prog.functions.map((f) => f.name)).toEqual(FNS);
    // The repeated layer is one function run once per instance, with that instance's weights.
    expect(prog.steps.map((s) => `${s.fn}${s.scope ? ` ${s.scope}` : ''}`)).toEqual(['retnet_part0', 'retnet_layers layers.0.', 'retnet_layers layers.1.', 'retnet_part1']);
    expect(prog.steps[2]!.inputs['retention.q_proj.weight']).toEqual({ weight: 'layers.1.retention.q_proj.weight' });
    let kir = 0;
    for (const f of FNS) {
      const plan = json<PlanJson>(out, `${f}.plan.json`);
      expect(plan.fn).toBe(f);
      expect(prog.functions.find((x) => x.name === f)!.launches).toBe(plan.launches.length);
      for (const l of plan.launches) expect(files).toContain(`${l.kernel}.kir`);
      kir += plan.launches.length;
    }
    expect(files.filter((f) => f.endsWith('.kir')).length).toBe(kir);
    const layer = json<PlanJson>(out, 'retnet_layers.plan.json');
    expect(layer.launches.find((l) => l.target === 'msr#2.r')!.choice).toEqual({ form: 'chunkwise', chunk: 32, workgroup: 64 });
    expect(layer.launches.find((l) => l.target === 'xn')!.choice).toEqual({ workgroup: 256 });
  });

  it('--backward: every function\'s gradient (.grad), the weights\' gradients among its outputs', async () => {
    const { out, files } = await compile('models/retnet.ret', '--size', 'tiny', '--schedule', 'recurrent', '--backward', '--target', 'cuda');
    for (const f of FNS) expect(files).toContain(`${f}.grad.cuda.json`);
    const m = json<{ fn: string; outputs: string[]; tensors: { id: string; name: string }[]; kernels: { file: string }[] }>(out, 'retnet_layers.grad.cuda.json');
    expect(m.fn).toBe('retnet_layers.grad');
    const outNames = m.outputs.map((id) => m.tensors.find((t) => t.id === id)!.name);
    expect(outNames).toContain('grad.retention.q_proj.weight');
    expect(outNames).toContain('grad.x');
    expect(json<Program>(out, 'retnet.grad.program.json').backward).toBe(true);
    expect(files.filter((f) => f.endsWith('.cu')).length).toBe(FNS.reduce((a, f) => a + json<{ kernels: unknown[] }>(out, `${f}.grad.cuda.json`).kernels.length, 0));
  });

  it('--stateful: the stateful form (.stateful), states among the layer\'s inputs and outputs', async () => {
    const { out, files } = await compile('models/retnet.ret', '--size', 'tiny', '--schedule', 'chunkwise', '--stateful');
    expect(files).toContain('retnet_layers.stateful.plan.json');
    const plan = json<PlanJson>(out, 'retnet_layers.stateful.plan.json');
    expect(plan.states!.map((s) => s.name)).toEqual(['msr.r', 'msr.o.scan']);
    expect(plan.launches.some((l) => l.target === 'msr#2.r%block' && l.choice?.form === 'chunkwise')).toBe(true);
    expect(json<Program>(out, 'retnet.stateful.program.json').stateful).toBe(true);
  });

  it('--emit state: each state by its full name, shape, f32 and bytes; bytes per sequence and shared, for tiny and base', async () => {
    for (const [size, L, K, V] of [['tiny', 2, 32, 64], ['base', 6, 256, 432]] as const) {
      const { out, files, stdout } = await compile('models/retnet.ret', '--size', size, '--emit', 'state');
      expect(files).toEqual(['retnet.state.json']);
      const st = json<{ model: string; size: string; states: { name: string; shape: (number | string)[]; dtype: string; bytes: number; perSequence: boolean }[]; bytesPerSequence: number; sharedBytes: number }>(out, 'retnet.state.json');
      expect(st).toMatchObject({ model: 'retnet', size });
      expect(st.states.map((s) => s.name)).toEqual(Array.from({ length: L }, (_, i) => [`layers.${i}.msr.r`, `layers.${i}.msr.o.scan`]).flat());
      const r = st.states[0]!;
      expect(r).toMatchObject({ shape: ['B', 2, K, V], dtype: 'f32', bytes: 2 * K * V * 4, perSequence: true });
      expect(st.states[1]).toMatchObject({ shape: [2], bytes: 8, perSequence: false });
      expect(st.bytesPerSequence).toBe(L * 2 * K * V * 4);
      expect(st.sharedBytes).toBe(L * 8);
      expect(stdout).toMatch(new RegExp(`^  layers\\.${L - 1}\\.msr\\.r +f32\\[B, 2, ${K}, ${V}\\] +${2 * K * V * 4} per sequence$`, 'm'));
      expect(stdout).toContain(`bytes per sequence: ${L * 2 * K * V * 4}; shared by the batch: ${L * 8}; ${2 * L} states`);
    }
  });

  it('--emit state for a function: its sizes from --size, symbolic where none is given', async () => {
    const { out, stdout } = await compile('models/retention.ret', '--fn', 'retention', '--emit', 'state', '--size', 'K=64', '--size', 'V=64');
    const st = json<{ states: { name: string; bytes: number | string }[]; bytesPerSequence: number | string }>(out, 'retention.state.json');
    expect(st.states).toMatchObject([{ name: 'o', bytes: '16384*H' }]);
    expect(stdout).toContain('bytes per sequence: 16384*H; shared by the batch: 0; 1 state');
    const msr = await compile('models/retnet.ret', '--fn', 'msr', '--emit', 'state', '--size', 'K=64', '--size', 'V=64', '--size', 'H=2');
    expect(json<{ bytesPerSequence: number; sharedBytes: number }>(msr.out, 'msr.state.json')).toMatchObject({ bytesPerSequence: 2 * 64 * 64 * 4, sharedBytes: 8 });
  });

  it('a schedule file: per-statement choices, shown by --emit ir; the spelled-out schedule reads back to the same kernels', async () => {
    const f = file('mixed.json', { form: 'recurrent', statements: { 'retnet_layers/msr.r': { form: 'chunkwise', chunk: 16 }, xn: { workgroup: 128 } } });
    const ir = await compile('models/retnet.ret', '--size', 'tiny', '--schedule-file', f, '--emit', 'ir');
    expect(ir.files).toEqual([...FNS.map((x) => `${x}.ir`), 'retnet.program.json', 'retnet.schedule.json'].sort());
    const text = read(ir.out, 'retnet_layers.ir');
    expect(text).toMatch(/^# msr#2\.r: causal contraction[^\n]*\n#[^\n]*\n# {3}-> chunkwise kernel, chunk 16, workgroup 64$/m);
    expect(text).toMatch(/^# %n1\.o: causal contraction[^\n]*\n#[^\n]*\n# {3}-> recurrent kernel, workgroup 64$/m);
    expect(text).toMatch(/^# xn: elementwise kernel, workgroup 128$/m);
    expect(read(ir.out, 'retnet_part1.ir')).toMatch(/^# xn: elementwise kernel, workgroup 128$/m); // an unscoped key names xn in every function
    // The schedule JSON at the top of each .ir, and the model's in retnet.schedule.json.
    const top = JSON.parse(text.split('\n')[2]!.replace(/^# /, '')) as { form: string; statements: Record<string, { form?: string; chunk?: number; workgroup?: number }> };
    expect(top.statements['msr#2.r']).toEqual({ form: 'chunkwise', chunk: 16, workgroup: 64 });
    const whole = json<{ statements: Record<string, unknown> }>(ir.out, 'retnet.schedule.json');
    expect(whole.statements['retnet_layers/msr#2.r']).toEqual({ form: 'chunkwise', chunk: 16, workgroup: 64 });
    expect(whole.statements['retnet_part1/xn']).toEqual({ workgroup: 128 });
    // Compiled with the file, and with the spelled-out schedule: the same kernel IR, forward and backward.
    for (const backward of [[], ['--backward']]) {
      const a = await compile('models/retnet.ret', '--size', 'tiny', '--schedule-file', f, ...backward);
      const b = await compile('models/retnet.ret', '--size', 'tiny', '--schedule-file', path.join(ir.out, 'retnet.schedule.json'), ...backward);
      expect(b.files).toEqual(a.files);
      for (const k of a.files.filter((x) => x.endsWith('.kir'))) expect(read(b.out, k), k).toBe(read(a.out, k));
      expect(a.files.filter((x) => /_chunkwise\.kir$/.test(x)).length).toBe(backward.length ? 4 : 1);
    }
    // A backward's gradient statement named by its own name (as --emit ir --backward prints it).
    const gradIr = await compile('models/retention.ret', '--fn', 'retention', '--schedule', 'recurrent', '--emit', 'ir', '--backward', '--size', 'K=8', '--size', 'V=4');
    const dk = /^# (%d\.k\.\d+): anticausal contraction/m.exec(read(gradIr.out, 'retention.grad.ir'))![1]!;
    const g = await compile('models/retention.ret', '--fn', 'retention', '--schedule-file', file('grad.json', { form: 'recurrent', statements: { [dk]: { form: 'chunkwise', chunk: 16 } } }), '--emit', 'ir', '--backward', '--size', 'K=8', '--size', 'V=4');
    const gText = read(g.out, 'retention.grad.ir');
    expect(gText).toMatch(new RegExp(`^# ${escapeRe(dk)}: anticausal contraction[^\n]*\n#[^\n]*\n# {3}-> chunkwise kernel, chunk 16, workgroup 64$`, 'm'));
    expect(gText.match(/-> chunkwise kernel/g)!.length).toBe(1);
    // A function's --emit ir prints its own spelled-out schedule, which reads back.
    const fnIr = await compile('models/retention.ret', '--fn', 'retention', '--schedule', 'chunkwise', '--chunk', '8', '--emit', 'ir', '--size', 'K=8', '--size', 'V=4');
    const fnTop = read(fnIr.out, 'retention.ir').split('\n')[2]!.replace(/^# /, '');
    expect(JSON.parse(fnTop)).toEqual({ form: 'chunkwise', chunk: 8, tiles: { cols: 8 }, workgroup: { contraction: 64, elementwise: 256 }, dtype: 'f32', statements: { o: { form: 'chunkwise', chunk: 8, workgroup: 64 } } });
    const again = await compile('models/retention.ret', '--fn', 'retention', '--schedule-file', file('fn.json', fnTop), '--target', 'wgsl', '--size', 'K=8', '--size', 'V=4');
    expect(again.files).toContain('retention_0_chunkwise.wgsl');
  });

  it('schedule files with mistakes: one user error each, at the statement where there is one; nothing written', async () => {
    const model = async (f: string, ...extra: string[]) => {
      const out = fresh();
      const r = await cli(['compile', 'models/retnet.ret', '--size', 'tiny', '--schedule-file', f, ...extra, '--out', out]);
      expect(existsSync(out), 'nothing is written').toBe(false);
      return r;
    };
    const unknown = file('unknown.json', { form: 'chunkwise', statements: { 'msr.rr': { chunk: 8 } } });
    const r1 = await model(unknown);
    expectUserError(r1, new RegExp(`^${escapeRe(unknown)}: error: the schedule names a statement that the functions do not have: 'msr\\.rr' \\(did you mean [^)]+\\) \\(statements, by function; .*retnet_layers: %t1, rmsnorm#1\\.ms, xn, .*msr#2\\.r, %n1\\.o, `));
    const gradUnknown = file('grad-unknown.json', { form: 'recurrent', statements: { '%d.k.99': { form: 'chunkwise' } } });
    expectUserError(await cli(['compile', 'models/retention.ret', '--fn', 'retention', '--schedule-file', gradUnknown, '--backward', '--size', 'K=8', '--size', 'V=4', '--out', fresh()]), /error: the schedule names a statement that 'retention' does not have: '%d\.k\.99' \(did you mean %d\.k\.\d+\?\) \(statements: o, .*%d\.q\.\d+/);
    const fnUnknown = file('fn-unknown.json', { form: 'chunkwise', statements: { oo: {} } });
    expectUserError(await cli(['compile', 'models/retention.ret', '--fn', 'retention', '--schedule-file', fnUnknown, '--size', 'K=8', '--size', 'V=4', '--out', fresh()]), /error: the schedule names a statement that 'retention' does not have: 'oo' \(statements: o\)$/);
    // A form a statement cannot have: at the statement, with its source line.
    const mapForm = await model(file('map-form.json', { form: 'chunkwise', statements: { xn: { form: 'recurrent' } } }));
    expectUserError(mapForm, /^models\/retnet\.ret:\d+:\d+: error: 'retnet_layers': statement 'xn' is elementwise \(a map kernel, the same in every form\): only workgroup applies to it, not form recurrent\n.*y\[b, t, c\] = x\[b, t, c\] \* rsqrt/);
    expectUserError(await model(file('rec-chunk.json', { form: 'recurrent', statements: { 'msr.r': { chunk: 8 } } })), /error: 'retnet_layers': statement 'msr\.r': chunk 8 does not apply to the recurrent form/);
    const sm = file('sm.json', { form: 'parallel', statements: { z: { form: 'chunkwise' } } });
    expectUserError(await cli(['compile', 'models/softmax_attention.ret', '--fn', 'softmax_attention', '--schedule-file', sm, '--out', fresh()]), /^models\/softmax_attention\.ret:\d+:\d+: error: 'softmax_attention': statement 'z' has no chunkwise form: .*; only the parallel form exists for it/);
    // Not a schedule at all.
    expectUserError(await model(file('notjson.json', '{"form": ')), /--schedule-file .*notjson\.json: not JSON/);
    expectUserError(await model(path.join(dir, 'missing.json')), /--schedule-file .*missing\.json: cannot read: ENOENT/);
    expectUserError(await model(file('badform.json', { form: 'chunky' })), /--schedule-file .*badform\.json: form must be one of parallel, recurrent, chunkwise, got "chunky"/);
    expectUserError(await model(file('badfield.json', { form: 'chunkwise', statements: { xn: { threads: 64 } } })), /statement 'xn': unknown field 'threads' \(a statement's choice has form, chunk, workgroup, tiles/);
    expectUserError(await model(unknown, '--schedule', 'chunkwise'), /--schedule does not apply with --schedule-file: the file states the schedule/);
  });

  it('model mistakes: sizes, models, options that do not go together', async () => {
    const c = (...a: string[]) => cli(['compile', 'models/retnet.ret', ...a, '--out', fresh()]);
    expectUserError(await c('--size', 'tinyy', '--schedule', 'chunkwise'), /^retnetc: error: --size tinyy: model 'retnet' has no size 'tinyy' \(sizes: default, tiny, base, .*\) \(did you mean tiny\?\)$/);
    expectUserError(await c('--size', 'K=64', '--schedule', 'chunkwise'), /--size K=64: a model's sizes are fixed by its hypers; --size takes one of its named sizes \(default, tiny, base/);
    expectUserError(await c('--size', 'tiny', '--size', 'base', '--schedule', 'chunkwise'), /--size is given more than once: a model takes one named size/);
    expectUserError(await c('--model', 'retnett', '--schedule', 'chunkwise'), /^models\/retnet\.ret:1:1: error: no model 'retnett' \(models: retnet\) \(did you mean retnet\?\)$/);
    expectUserError(await c('--model', 'retnet', '--fn', 'msr', '--schedule', 'chunkwise'), /--fn and --model do not go together/);
    expectUserError(await c('--schedule', 'chunkwise', '--stateful', '--backward'), /--stateful and --backward do not go together/);
    expectUserError(await c('--emit', 'state', '--backward'), /--backward does not apply to --emit state/);
    expectUserError(await c('--size', 'tiny'), /--schedule parallel\|recurrent\|chunkwise is required/);
    expectUserError(await cli(['compile', 'models/retention.ret', '--schedule', 'chunkwise', '--out', fresh()]), /^models\/retention\.ret:1:1: error: no model in this file: give --fn NAME \(functions: retention, retention_state\)$/);
    expectUserError(await c('--size', 'tiny', '--schedule', 'chunkwise', '--target', 'wgsl', '--emit', 'state'), /--emit state does not go with --target wgsl/);
  });
});
