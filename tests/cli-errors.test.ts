// Clear errors from the CLI where there were none or wrong ones (issue 7, item 8): each case
// here exited 0, exited 70 or blamed the wrong thing before. Every user error is exit 1 and a
// located line, never a stack trace; nothing is written when a command refuses.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, linkSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { compilePlan } from '../compiler/plan.js';
import { makeSchedule } from '../compiler/schedule.js';
import { fromFloat64, readSafetensorsFile, toFloat64, type Tensor } from '../runtime/io/safetensors.js';
import { kernelLimitProblem, LIMIT_PROFILES, sharedBytes } from '../runtime/webgpu/limits.js';
import { cli, ensureBuilt, escapeRe, expectOk, expectUserError, ROOT, writeTensors } from './helpers/cli.js';
import { loadFn } from './helpers/harness.js';

const REQUIRE_WEBGPU = process.env['REQUIRE_WEBGPU'] === '1';

let dir = '';
beforeAll(() => {
  ensureBuilt();
  dir = mkdtempSync(path.join(tmpdir(), 'retnetc-cli-errors-'));
}, 240_000);
afterAll(() => { if (dir) rmSync(dir, { recursive: true, force: true }); });

const [B, H, T, K, V] = [1, 2, 5, 3, 2];
const seq = (n: number, s: number): number[] => Array.from({ length: n }, (_, i) => ((i * 7 + s) % 17 - 8) / 8);
const f32 = (data: number[], shape: number[]): Tensor => fromFloat64(data, shape, 'F32');
function retentionInputs(): Map<string, Tensor> {
  return new Map([
    ['q', f32(seq(B * H * T * K, 1), [B, H, T, K])], ['k', f32(seq(B * H * T * K, 2), [B, H, T, K])],
    ['v', f32(seq(B * H * T * V, 3), [B, H, T, V])], ['gamma', f32([0.5, 0.875], [H])],
  ]);
}
let inFile = '';
const inputs = (): string => (inFile ||= writeTensors(path.join(dir, 'in.safetensors'), retentionInputs()));
const out = (name: string): string => path.join(dir, name);
const run = (...extra: string[]) => cli(['run', 'models/retention.ret', '--fn', 'retention', '--inputs', inputs(), ...extra]);
const compile = (...extra: string[]) => cli(['compile', 'models/retention.ret', '--fn', 'retention', ...extra]);
const oneLine = (stderr: string): string => { const l = stderr.trim().split('\n'); expect(l.length, stderr).toBe(1); return l[0]!; };

describe.concurrent('compile checks what run checks', { timeout: 90_000 }, () => {
  it('a size beyond what any kernel can hold: refused with the limit, nothing written', async () => {
    // 100000 floats of state per thread (400 KB) is past every WGSL limit; CUDA's local memory
    // (512 KiB per thread) needs 1000000.
    for (const [target, size] of [['wgsl', 100_000], ['cuda', 1_000_000]] as const) {
      const o = out(`huge-${target}`);
      const r = await compile('--schedule', 'recurrent', '--target', target, '--size', `K=${size}`, '--size', 'V=4', '--out', o);
      expectUserError(r, target === 'wgsl' ? /^retnetc: error: kernel retention_0_recurrent .*(WGSL compilers allow at most 65535|WebGPU's default limits allow)/ : /^retnetc: error: kernel retention_0_recurrent .*; sm_80 allows [\d.]+ [KM]iB/);
      oneLine(r.stderr);
      expect(existsSync(o)).toBe(false);
    }
    // Without a target: K = 100000 fits the C target (a CPU holds the state in memory), so the
    // kernel IR is written; 70 million keys (538 MiB of state per workgroup) no target holds.
    const fits = await compile('--schedule', 'recurrent', '--size', 'K=100000', '--size', 'V=4', '--emit', 'kernel-ir', '--out', out('big-kir'));
    expect(fits.code, fits.stderr).toBe(0);
    const r = await compile('--schedule', 'recurrent', '--size', 'K=70000000', '--size', 'V=4', '--out', out('huge-kir'));
    expectUserError(r, /^retnetc: error: no target can run these kernels: kernel retention_0_recurrent .*(WGSL compilers|lavapipe) allows? .*; kernel retention_0_recurrent .*sm_90 allows 227 KiB.*; kernel retention_0_recurrent .*a CPU \(native C\) allows 256 MiB/);
    expect(existsSync(out('huge-kir'))).toBe(false);
  });

  it("WebGPU's default limits unless --limits names a device: lavapipe's, or a JSON file's", async () => {
    // A schedule and key size whose kernels need more than the default limits and fit lavapipe's
    // (workgroup memory: 16 KiB against 32 KiB; invocations: 256 against 1024).
    const fn = loadFn('retention', 'retention');
    const fits = (p: ReturnType<typeof compilePlan>, l: keyof typeof LIMIT_PROFILES) => p.launches.every((x) => !kernelLimitProblem(x.kernel, { schedule: p.schedule, how: x.how }, LIMIT_PROFILES[l]));
    let found: { form: 'recurrent' | 'chunkwise' | 'parallel'; chunk: number; K: number } | undefined;
    search: for (const form of ['recurrent', 'chunkwise', 'parallel'] as const) {
      for (const chunk of form === 'recurrent' ? [64] : [64, 128, 32, 256]) {
        for (let K = 256; K <= 8192; K += 256) {
          const p = compilePlan(fn, makeSchedule(form, chunk), { constants: new Map([['K', K], ['V', 8]]) });
          if (!fits(p, 'default') && fits(p, 'lavapipe')) { found = { form, chunk, K }; break search; }
        }
      }
    }
    expect(found, 'no schedule and key size separate the default limits from lavapipe').toBeDefined();
    const args = ['--schedule', found!.form, ...(found!.form === 'recurrent' ? [] : ['--chunk', String(found!.chunk)]), '--target', 'wgsl', '--size', `K=${found!.K}`, '--size', 'V=8'];
    const refused = await compile(...args, '--out', out('lim-default'));
    expectUserError(refused, /^retnetc: error: kernel retention_0_\w+:? .*; WebGPU's default limits allow [\d.]+ (KiB )?\(maxCompute\w+\); .*\(it fits --limits lavapipe\)$/);
    expect(existsSync(out('lim-default'))).toBe(false);
    expectOk(await compile(...args, '--limits', 'lavapipe', '--out', out('lim-lavapipe')));
    expect(existsSync(path.join(out('lim-lavapipe'), 'retention.wgsl.json'))).toBe(true);
    // A device's limits from a file (as GPUSupportedLimits has them).
    // Half the workgroup memory that chunk 64 needs: the message names the file and a chunk that fits.
    const p64 = compilePlan(fn, makeSchedule('chunkwise', 64), { constants: new Map([['K', 8], ['V', 4]]) });
    const need = Math.max(...p64.launches.map((x) => sharedBytes(x.kernel)));
    const file = path.join(dir, 'small-device.json');
    writeFileSync(file, JSON.stringify({ maxComputeWorkgroupStorageSize: need / 2, maxComputeInvocationsPerWorkgroup: 256 }));
    const small = await compile('--schedule', 'chunkwise', '--chunk', '64', '--target', 'wgsl', '--size', 'K=8', '--size', 'V=4', '--limits', file, '--out', out('lim-file'));
    expectUserError(small, /^retnetc: error: kernel retention_0_chunkwise: chunk 64 needs .* of workgroup memory .*; small-device\.json allows .* \(maxComputeWorkgroupStorageSize\); use chunk \d+ or smaller/);
    const chunk = /use chunk (\d+) or smaller/.exec(small.stderr)![1]!;
    expect(Number(chunk)).toBeLessThan(64);
    expectOk(await compile('--schedule', 'chunkwise', '--chunk', chunk, '--target', 'wgsl', '--size', 'K=8', '--size', 'V=4', '--limits', file, '--out', out('lim-file-small')));
    // Bad --limits values.
    writeFileSync(path.join(dir, 'notjson.json'), '{ maxComputeWorkgroupStorageSize: ');
    expectUserError(await compile('--schedule', 'chunkwise', '--target', 'wgsl', '--size', 'K=8', '--size', 'V=4', '--limits', path.join(dir, 'notjson.json'), '--out', out('x1')), /--limits .*notjson\.json: not JSON/);
    writeFileSync(path.join(dir, 'neg.json'), '{"maxComputeWorkgroupStorageSize": -4}');
    expectUserError(await compile('--schedule', 'chunkwise', '--target', 'wgsl', '--size', 'K=8', '--size', 'V=4', '--limits', path.join(dir, 'neg.json'), '--out', out('x1')), /'maxComputeWorkgroupStorageSize' must be a non-negative integer/);
    expectUserError(await compile('--schedule', 'chunkwise', '--target', 'wgsl', '--size', 'K=8', '--size', 'V=4', '--limits', 'lavapip', '--out', out('x1')), /unknown --limits 'lavapip' for --target wgsl \(expected default, lavapipe or a FILE\.json of limits\) \(did you mean lavapipe\?\)/);
    expectUserError(await compile('--schedule', 'chunkwise', '--target', 'cuda', '--size', 'K=8', '--size', 'V=4', '--limits', 'lavapipe', '--out', out('x1')), /unknown --limits 'lavapipe' for --target cuda \(expected sm_80, sm_90/);
    expectUserError(await compile('--schedule', 'chunkwise', '--size', 'K=8', '--size', 'V=4', '--limits', 'lavapipe', '--out', out('x1')), /--limits does not apply without a --target/);
    expect(existsSync(out('x1'))).toBe(false);
  });

  it('sizes that are zero, absurd, unknown, repeated or bound at run time', async () => {
    const base = ['--schedule', 'chunkwise', '--target', 'wgsl', '--out', out('sizes')];
    expectUserError(await compile(...base, '--size', 'K=0', '--size', 'V=4'), /^retnetc: error: --size K must be an integer from 1 to 2147483647, got 0$/);
    expectUserError(await compile(...base, '--size', 'K=99999999999', '--size', 'V=4'), /^retnetc: error: --size K must be an integer from 1 to 2147483647, got 99999999999$/);
    expectUserError(await compile(...base, '--size', 'K=0x10', '--size', 'V=4'), /--size K must be an integer in decimal digits, got '0x10'/);
    expectUserError(await compile(...base, '--size', 'K=8', '--size', 'V=4', '--size', 'X=3'), /^retnetc: error: --size X: 'X' is not a size of 'retention' \(its sizes: B, H, T, K, V\)$/);
    expectUserError(await compile(...base, '--size', 'K=8', '--size', 'V=4', '--size', 'k=3'), /'k' is not a size of 'retention' .*\(did you mean K\?\)/);
    expectUserError(await compile(...base, '--size', 'K=8', '--size', 'K=9', '--size', 'V=4'), /^retnetc: error: --size K is given more than once$/);
    expectUserError(await compile(...base, '--size', 'K=8', '--size', 'V=4', '--size', 'T=3'), /^retnetc: error: --size T: 'T' is bound at run time from the tensors' shapes; the chunkwise kernels of 'retention' are specialised only on K, V$/);
    expect(existsSync(out('sizes'))).toBe(false);
  });

  it('compile --target wgsl --dtype bf16: one user error, not an internal error (exit 70)', async () => {
    const r = await compile('--schedule', 'chunkwise', '--target', 'wgsl', '--dtype', 'bf16', '--size', 'K=8', '--size', 'V=4', '--out', out('bf16'));
    expectUserError(r, /^retnetc: error: --dtype bf16 does not apply to --target wgsl: WGSL has no bf16/);
    oneLine(r.stderr);
    expect(existsSync(out('bf16'))).toBe(false);
    // run says the same before it starts a device.
    expectUserError(await run('--out', out('bf16.safetensors'), '--target', 'webgpu', '--dtype', 'bf16'), /^retnetc: error: --dtype bf16 does not apply to --target webgpu: WGSL has no bf16/);
  });
});

describe.concurrent('--grad files', { timeout: 90_000 }, () => {
  it('a --grad of the wrong shape names the --grad file, not the inputs', async () => {
    const g = writeTensors(path.join(dir, 'dout-shape.safetensors'), new Map([['o', f32(seq(10, 1), [B, H, T])]]));
    for (const target of ['reference', 'cpu']) {
      const r = await run('--out', out('g1.safetensors'), '--target', target, '--grad', g);
      expectUserError(r, new RegExp(`^${escapeRe(g)}: error: the gradient of 'o' must have the shape of 'o', \\[1, 2, 5, 2\\], got \\[1, 2, 5\\]$`));
      oneLine(r.stderr);
    }
  });

  it('a --grad file that names no output: an error, not zero gradients', async () => {
    const empty = writeTensors(path.join(dir, 'dout-empty.safetensors'), new Map());
    const r = await run('--out', out('g2.safetensors'), '--target', 'cpu', '--grad', empty);
    expectUserError(r, new RegExp(`^${escapeRe(empty)}: error: holds no tensor, so it names no output of 'retention' \\(outputs: o\\)`));
    expect(existsSync(out('g2.safetensors'))).toBe(false);
    const other = writeTensors(path.join(dir, 'dout-other.safetensors'), new Map([['grad.o', f32(seq(20, 1), [B, H, T, V])]]));
    expectUserError(await run('--out', out('g2.safetensors'), '--grad', other), new RegExp(`^${escapeRe(other)}: error: 'grad\\.o' is not an output of 'retention' \\(outputs: o\\)`));
  });
});

describe.concurrent('options', { timeout: 90_000 }, () => {
  it('--chunk takes decimal digits only', async () => {
    for (const bad of ['0x10', '1e1', '16.0', '+16', ' 16', '-1', '']) {
      const r = await run('--out', out('c.safetensors'), '--target', 'cpu', '--schedule', 'chunkwise', `--chunk=${bad}`);
      expectUserError(r, new RegExp(`^retnetc: error: --chunk must be an integer in decimal digits, got '${escapeRe(bad)}'$`));
    }
    expectUserError(await run('--out', out('c.safetensors'), '--target', 'cpu', '--schedule', 'chunkwise', '--chunk', '0'), /^retnetc: error: --chunk must be an integer from 1 to 1024, got 0$/);
    // A value that looks like an option: one line about --chunk, not "unknown option '-1'".
    const dash = await run('--out', out('c.safetensors'), '--target', 'cpu', '--schedule', 'chunkwise', '--chunk', '-1');
    expectUserError(dash, /^retnetc: error: Option '--chunk' argument is ambiguous\. .*'--chunk=-XYZ'/);
    oneLine(dash.stderr);
    expectUserError(await compile('--schedule', 'chunkwise', '--chunk', '1e1', '--size', 'K=8', '--size', 'V=4', '--out', out('c')), /--chunk must be an integer in decimal digits, got '1e1'/);
    expect(existsSync(out('c.safetensors'))).toBe(false);
  });

  it('options that do not apply are refused', async () => {
    for (const [opt, val] of [['--schedule', 'chunkwise'], ['--chunk', '16'], ['--dtype', 'f16']] as const) {
      expectUserError(await run('--out', out('na.safetensors'), opt, val), new RegExp(`^retnetc: error: ${opt} does not apply to --target reference`));
    }
    expectUserError(await run('--out', out('na.safetensors'), '--target', 'cpu', '--schedule', 'recurrent', '--chunk', '16'), /^retnetc: error: --chunk does not apply to the recurrent schedule/);
    expectUserError(await compile('--schedule', 'recurrent', '--chunk', '16', '--size', 'K=8', '--size', 'V=4', '--out', out('na')), /--chunk does not apply to the recurrent schedule/);
    expectUserError(await compile('--schedule', 'chunkwise', '--emit', 'ir', '--dtype', 'f16', '--size', 'K=8', '--size', 'V=4', '--out', out('na')), /--dtype does not apply to --emit ir/);
    expectUserError(await compile('--schedule', 'chunkwise', '--target', 'cuda', '--emit', 'ir', '--size', 'K=8', '--size', 'V=4', '--out', out('na')), /--emit ir does not go with --target cuda/);
    expectUserError(await run('--out', out('na.safetensors'), '--target', 'cpu', '--schedule', 'chunkwise', '--schedule', 'recurrent'), /^retnetc: error: --schedule is given more than once$/);
    expect(existsSync(out('na.safetensors'))).toBe(false);
    expect(existsSync(out('na'))).toBe(false);
  });

  it('an unknown option or command suggests the nearest one; --version', async () => {
    expectUserError(await run('--out', out('u.safetensors'), '--shedule', 'chunkwise'), /^retnetc: error: unknown option '--shedule' for 'run' \(did you mean --schedule\?\)$/);
    expectUserError(await compile('--schedule', 'chunkwise', '--emitt', 'ir', '--out', out('u')), /unknown option '--emitt' for 'compile' \(did you mean --emit\?\)/);
    expectUserError(await cli(['cmpile', 'models/retention.ret']), /^retnetc: error: unknown command 'cmpile' \(did you mean compile\?\)/);
    expectUserError(await run('--out', out('u.safetensors'), '--target', 'cpu', '--schedule', 'chunkwis'), /unknown schedule 'chunkwis' .*\(did you mean chunkwise\?\)/);
    const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
    const v = await cli(['--version']);
    expectOk(v);
    expect(v.stdout).toBe(`retnetc ${pkg.version}\n`);
    const help = await cli(['compile', '--help']);
    expectOk(help);
    expect(help.stdout).toContain('compile FILE.ret --fn NAME');
  });
});

describe.concurrent('outputs and token ids', { timeout: 90_000 }, () => {
  it('--out may not be the --inputs (or --grad) file, however it is spelt', async () => {
    const sub = path.join(dir, 'same');
    mkdirSync(sub, { recursive: true });
    const file = writeTensors(path.join(sub, 'in.safetensors'), retentionInputs());
    const before = readFileSync(file);
    const link = path.join(dir, 'link.safetensors');
    symlinkSync(file, link);
    const hard = path.join(dir, 'hard.safetensors');
    linkSync(file, hard);
    const rel = path.relative(ROOT, file);
    for (const spelling of [file, path.join(sub, '..', 'same', '.', 'in.safetensors'), rel, link, hard]) {
      const r = await cli(['run', 'models/retention.ret', '--fn', 'retention', '--inputs', file, '--out', spelling]);
      expectUserError(r, /^retnetc: error: --out .* is the --inputs file .*; writing it would destroy the inputs/);
    }
    const g = writeTensors(path.join(sub, 'dout.safetensors'), new Map([['o', f32(seq(20, 1), [B, H, T, V])]]));
    expectUserError(await cli(['run', 'models/retention.ret', '--fn', 'retention', '--inputs', file, '--grad', g, '--out', g]), /is the --grad file/);
    expect(readFileSync(file).equals(before)).toBe(true);
    expect(statSync(g).size).toBeGreaterThan(0);
  });

  it('a token id outside the vocabulary: one line naming the first bad position, on every target', async (ctx) => {
    const ret = path.join(dir, 'embed.ret');
    writeFileSync(ret, 'fn embed(tokens: i32[B, T], table: f32[N, C]) -> x: f32[B, T, C] {\n  x[b, t, c] = table[tokens[b, t], c] * 2\n}\n');
    const table = fromFloat64(Array.from({ length: 15 }, (_, i) => i / 4), [5, 3], 'F32');
    const ok = writeTensors(path.join(dir, 'tok-ok.safetensors'), new Map([['tokens', fromFloat64([0, 4, 2, 3, 1, 0], [2, 3], 'I32')], ['table', table]]));
    const cases: [number[], string][] = [
      [[0, 1, 2, 3, 5, 9], 'tokens[1, 1] = 5'],
      [[0, -1, 2, 3, 4, 0], 'tokens[0, 1] = -1'],
    ];
    for (const target of ['reference', 'cpu', 'webgpu']) {
      for (const [ids, where] of cases) {
        const bad = writeTensors(path.join(dir, `tok-${ids.join('_')}.safetensors`), new Map([['tokens', fromFloat64(ids, [2, 3], 'I32')], ['table', table]]));
        const r = await cli(['run', ret, '--fn', 'embed', '--inputs', bad, '--out', out(`tok-${target}.safetensors`), '--target', target]);
        expectUserError(r, new RegExp(`^${escapeRe(bad)}: error: ${escapeRe(where)} is outside the range of dimension 0 of 'table' \\(N = 5\\), 0 to 4: it indexes table\\[tokens\\[b, t\\], c\\]$`));
        oneLine(r.stderr);
        expect(existsSync(out(`tok-${target}.safetensors`))).toBe(false);
      }
      // In-range ids gather the rows.
      const r = await cli(['run', ret, '--fn', 'embed', '--inputs', ok, '--out', out(`tok-ok-${target}.safetensors`), '--target', target]);
      if (target === 'webgpu' && r.code !== 0 && /no WebGPU adapter/.test(r.stderr) && !REQUIRE_WEBGPU) { ctx.skip(); return; }
      expectOk(r);
      const x = toFloat64((await readSafetensorsFile(out(`tok-ok-${target}.safetensors`))).tensors.get('x')!);
      const ids = [0, 4, 2, 3, 1, 0];
      expect([...x]).toEqual(ids.flatMap((id) => [0, 1, 2].map((c) => ((id * 3 + c) / 4) * 2)));
    }
  });
});

describe.concurrent('schedule and gradient errors point at the statement', { timeout: 90_000 }, () => {
  const file = 'models/softmax_attention.ret';
  const lines = readFileSync(path.join(ROOT, file), 'utf8').split('\n');
  const header = lines.findIndex((l) => l.startsWith('fn softmax_attention')) + 1;
  // The first statement whose weight couples t and s: z's sum of exp(score - m).
  const zLine = lines.findIndex((l) => /^\s*let z\[/.test(l)) + 1;
  const zCol = lines[zLine - 1]!.search(/\S/) + 1;

  it('compile --schedule recurrent|chunkwise, forward and --backward', async () => {
    expect(zLine).toBeGreaterThan(header);
    for (const form of ['recurrent', 'chunkwise']) {
      for (const backward of [[], ['--backward']]) {
        const r = await cli(['compile', file, '--fn', 'softmax_attention', '--schedule', form, ...backward, '--out', out(`sm-${form}`)]);
        expectUserError(r, new RegExp(`^${escapeRe(file)}:${zLine}:${zCol}: error: 'softmax_attention' has no ${form} schedule: .*'z'`));
        // The source line and a caret under the statement follow.
        const shown = r.stderr.split('\n');
        expect(shown[1]!.trim()).toBe(lines[zLine - 1]!.trim());
        expect(shown[2]!.trim()).toMatch(/^\^+$/);
      }
    }
    expect(existsSync(out('sm-recurrent'))).toBe(false);
  });

  it('run --target cpu --schedule chunkwise', async () => {
    const q = f32(seq(B * H * T * K, 1), [B, H, T, K]);
    const inFile2 = writeTensors(path.join(dir, 'sm-in.safetensors'), new Map([['q', q], ['k', q], ['v', f32(seq(B * H * T * V, 3), [B, H, T, V])]]));
    const r = await cli(['run', file, '--fn', 'softmax_attention', '--inputs', inFile2, '--out', out('sm.safetensors'), '--target', 'cpu', '--schedule', 'chunkwise']);
    expectUserError(r, new RegExp(`^${escapeRe(file)}:${zLine}:${zCol}: error: 'softmax_attention' has no chunkwise schedule`));
    expect(existsSync(out('sm.safetensors'))).toBe(false);
  });
});

describe('what run and compile wrote', { timeout: 90_000 }, () => {
  it('run: one line per tensor with its dtype and shape', async () => {
    const o = out('wrote.safetensors');
    const r = await run('--out', o, '--target', 'cpu', '--schedule', 'chunkwise', '--chunk', '2', '--grad', writeTensors(path.join(dir, 'dout-ok.safetensors'), new Map([['o', f32(seq(20, 1), [B, H, T, V])]])));
    expectOk(r);
    expect(r.stdout.trim().split('\n')).toEqual([
      `wrote o f32[1, 2, 5, 2] to ${o}`, `wrote grad.q f32[1, 2, 5, 3] to ${o}`, `wrote grad.k f32[1, 2, 5, 3] to ${o}`,
      `wrote grad.v f32[1, 2, 5, 2] to ${o}`, `wrote grad.gamma f32[2] to ${o}`,
    ]);
    const ref = await run('--out', out('wrote-ref.safetensors'), '--out-dtype', 'f32');
    expect(ref.stdout).toBe(`wrote o f32[1, 2, 5, 2] to ${out('wrote-ref.safetensors')}\n`);
  });
});
