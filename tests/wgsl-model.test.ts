// The whole RetNet model through the CLI: `retnetc compile models/retnet.ret --size S --schedule F
// [--backward | --stateful] --target wgsl` for sizes tiny and base, every schedule (parallel,
// recurrent, chunkwise at chunk 64), the forward, the backward and the stateful form, plus a
// schedule file with a per-statement choice (retention at chunk 16, the rest chunkwise 32). Every
// WGSL module the CLI writes validates in Dawn (Tint's parser, resolver and uniformity analysis)
// and makes a compute pipeline; the CLI has already checked each kernel against WebGPU's
// guaranteed limits. Identical modules (the maps are the same in every schedule) are validated
// once. REQUIRE_WEBGPU=1 validates on the real adapter and fails without one; otherwise Dawn's
// null backend validates (and without Dawn at all the test skips, as wgsl-validate does).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { acquireWebGPU, type AcquiredWebGPU, validateWGSL, WebGPUUnavailableError } from '../runtime/webgpu/device.js';
import { cli, ensureBuilt } from './helpers/cli.js';

const REQUIRE = process.env['REQUIRE_WEBGPU'] === '1';
const SIZES = ['tiny', 'base'] as const;
const FORMS = ['parallel', 'recurrent', 'chunkwise'] as const;
const MODES = ['forward', 'backward', 'stateful'] as const;
const SCHEDULE_FILE = { form: 'chunkwise', chunk: 32, statements: { 'msr.r': { chunk: 16 } } };

let validator: AcquiredWebGPU | null = null;
let whyNot = '';
try {
  validator = await acquireWebGPU(REQUIRE ? { label: 'wgsl-model' } : { dawnOptions: ['backend=null'], label: 'wgsl-model-null' });
} catch (e) {
  if (!(e instanceof WebGPUUnavailableError)) throw e;
  whyNot = e.message;
  console.warn(`[wgsl-model] ${REQUIRE ? 'FAIL (REQUIRE_WEBGPU=1)' : 'skipping validation'}: ${whyNot}`);
}

/** Validation messages of a module, plus pipeline creation; '' when it is fine. */
async function check(g: AcquiredWebGPU, code: string, entry: string): Promise<string> {
  const r = await validateWGSL(code, g.device);
  if (!r.ok) return r.messages.map((m) => `${m.line}:${m.col} ${m.message}`).join('\n');
  g.device.pushErrorScope('validation');
  g.device.createComputePipeline({ layout: 'auto', compute: { module: g.device.createShaderModule({ code }), entryPoint: entry } });
  const err = await g.device.popErrorScope();
  return err ? `pipeline: ${err.message}` : '';
}

interface Run { label: string; args: string[]; out: string }

describe('RetNet through retnetc compile --target wgsl: every module validates in Dawn', { timeout: 300_000 }, () => {
  let dir = '';
  const runs: Run[] = [];
  const failures: string[] = [];
  let cliMs = 0;

  beforeAll(async () => {
    ensureBuilt();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'retnetc-wgsl-model-'));
    const sched = path.join(dir, 'schedule.json');
    fs.writeFileSync(sched, JSON.stringify(SCHEDULE_FILE));
    for (const size of SIZES) {
      for (const form of FORMS) for (const mode of MODES) {
        const out = path.join(dir, `${size}-${form}-${mode}`);
        runs.push({ label: `${size} ${form} ${mode}`, out, args: ['compile', 'models/retnet.ret', '--size', size, '--schedule', form, ...(mode === 'forward' ? [] : [`--${mode}`]), '--target', 'wgsl', '--out', out] });
      }
      for (const mode of ['forward', 'backward'] as const) {
        const out = path.join(dir, `${size}-file-${mode}`);
        runs.push({ label: `${size} schedule file ${mode}`, out, args: ['compile', 'models/retnet.ret', '--size', size, '--schedule-file', sched, ...(mode === 'backward' ? ['--backward'] : []), '--target', 'wgsl', '--out', out] });
      }
    }
    const t0 = performance.now();
    const queue = [...runs];
    await Promise.all([0, 1].map(async () => {
      for (let r = queue.shift(); r; r = queue.shift()) {
        const res = await cli(r.args, { timeoutMs: 120_000 });
        if (res.code !== 0 || res.stderr) failures.push(`${r.label}: exit ${res.code}\n${res.stderr}`);
      }
    }));
    cliMs = performance.now() - t0;
  }, 300_000);

  afterAll(() => {
    validator?.release();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test('every compile run succeeds and writes its manifests and modules', () => {
    expect(failures).toEqual([]);
    for (const r of runs) {
      const files = fs.readdirSync(r.out);
      const manifests = files.filter((f) => f.endsWith('.wgsl.json'));
      expect(manifests.length, r.label).toBe(3); // the embedding part, the layer, the head
      const named = manifests.flatMap((m) => (JSON.parse(fs.readFileSync(path.join(r.out, m), 'utf8')) as { kernels: { file: string }[] }).kernels.map((k) => k.file)).sort();
      expect(named, r.label).toEqual(files.filter((f) => f.endsWith('.wgsl')).sort());
    }
  });

  test('a WebGPU device validates (required when REQUIRE_WEBGPU=1)', (ctx) => {
    if (!validator) {
      if (REQUIRE) throw new Error(`REQUIRE_WEBGPU=1 but ${whyNot}`);
      ctx.skip();
    }
  });

  test.skipIf(!validator)('the check is not vacuous: a module with an undeclared name and a wrong entry point fail', async () => {
    const r = runs[0]!;
    const m = JSON.parse(fs.readFileSync(path.join(r.out, fs.readdirSync(r.out).find((f) => f.endsWith('.wgsl.json'))!), 'utf8')) as { kernels: { file: string; entry: string }[] };
    const k = m.kernels.at(-1)!;
    const code = fs.readFileSync(path.join(r.out, k.file), 'utf8');
    expect(await check(validator!, code, k.entry)).toBe('');
    expect(await check(validator!, code.replace(/(@compute[^\n]*\n[^\n]*\{)/, '$1\n  let zz = undeclared_name;'), k.entry)).not.toBe('');
    expect(await check(validator!, code, `${k.entry}_missing`)).not.toBe('');
  });

  for (const size of SIZES) {
    test.skipIf(!validator)(`${size}: every distinct WGSL module of every run validates and makes a pipeline`, async () => {
      const t0 = performance.now();
      const seen = new Set<string>();
      const problems: string[] = [];
      let total = 0;
      for (const r of runs.filter((x) => x.label.startsWith(`${size} `))) {
        for (const m of fs.readdirSync(r.out).filter((f) => f.endsWith('.wgsl.json')).sort()) {
          const manifest = JSON.parse(fs.readFileSync(path.join(r.out, m), 'utf8')) as { kernels: { file: string; entry: string }[] };
          for (const k of manifest.kernels) {
            total++;
            const code = fs.readFileSync(path.join(r.out, k.file), 'utf8');
            if (seen.has(code)) continue;
            seen.add(code);
            const msg = await check(validator!, code, k.entry);
            if (msg) problems.push(`${r.label} ${k.file}:\n${msg}`);
          }
        }
      }
      console.log(`[wgsl-model] ${size}: ${seen.size} distinct modules of ${total} (${runs.length} compile runs in ${(cliMs / 1000).toFixed(1)} s, both sizes) validated in ${((performance.now() - t0) / 1000).toFixed(1)} s on ${validator!.info.summary}`);
      expect(problems).toEqual([]);
      expect(seen.size).toBeGreaterThan(150);
    });
  }
});
