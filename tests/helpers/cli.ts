// Running the built CLI (dist/runtime/cli/main.js) as a user runs it, for the tests/cli*.test.ts
// files: a fresh build when the sources are newer (one build at a time across test files),
// the child's exit code and output, and the shape of a user error.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { serializeSafetensors, type Tensor } from '../../runtime/io/safetensors.js';

export const ROOT = path.resolve(fileURLToPath(new URL('../..', import.meta.url)));
/** The CLI under test; RETNETC_TEST_CLI runs these tests against another build (an older commit's). */
export const MAIN = process.env['RETNETC_TEST_CLI'] ?? path.join(ROOT, 'dist', 'runtime', 'cli', 'main.js');
const BUILD_DIRS = ['dsl', 'compiler', 'targets', 'runtime'];

/** True when some .ts under the build dirs is newer than its .js in dist/ (or has none). */
function distIsStale(): boolean {
  const walk = (rel: string): boolean => {
    const abs = path.join(ROOT, rel);
    if (!existsSync(abs)) return false;
    for (const e of readdirSync(abs, { withFileTypes: true })) {
      const r = path.join(rel, e.name);
      if (e.isDirectory()) { if (walk(r)) return true; continue; }
      if (!e.name.endsWith('.ts') || e.name.endsWith('.d.ts')) continue;
      const js = path.join(ROOT, 'dist', r.replace(/\.ts$/, '.js'));
      if (!existsSync(js) || statSync(js).mtimeMs < statSync(path.join(ROOT, r)).mtimeMs) return true;
    }
    return false;
  };
  return BUILD_DIRS.some(walk);
}

const sleep = (ms: number): void => { Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms); };

/** Builds dist/ when it is stale; test files running side by side take turns (a lock directory). */
export function ensureBuilt(): void {
  if (process.env['RETNETC_TEST_CLI']) { expect(existsSync(MAIN), `${MAIN} does not exist`).toBe(true); return; }
  mkdirSync(path.join(ROOT, 'dist'), { recursive: true });
  const lock = path.join(ROOT, 'dist', '.build-lock');
  const start = Date.now();
  const owner = path.join(lock, 'pid');
  for (;;) {
    try { mkdirSync(lock); writeFileSync(owner, String(process.pid)); break; } catch {
      // A lock whose process is gone (or that is older than 3 minutes) was left by a killed run.
      try {
        const pid = Number(readFileSync(owner, 'utf8'));
        let alive = true;
        try { process.kill(pid, 0); } catch (e) { alive = (e as NodeJS.ErrnoException).code === 'EPERM'; }
        if (!alive || Date.now() - statSync(lock).mtimeMs > 180_000) rmSync(lock, { recursive: true, force: true });
      } catch { /* being created or gone */ }
      if (Date.now() - start > 240_000) throw new Error(`${lock} is held for more than 4 minutes`);
      sleep(200);
    }
  }
  try {
    if (distIsStale()) {
      const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
      const r = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { cwd: ROOT, encoding: 'utf8' });
      // tsc emits even with type errors elsewhere in the tree; the typecheck is npm test's job.
      if (r.status !== 0) console.warn(`tsc -p tsconfig.build.json exited ${r.status}:\n${r.stdout}${r.stderr}`);
    }
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
  expect(existsSync(MAIN), `${MAIN} was not built`).toBe(true);
}

export interface Result { code: number | null; stdout: string; stderr: string }

/** Runs the CLI; async so that the tests of a describe block can run side by side. */
export function cli(args: string[], opts: { env?: Record<string, string | undefined>; timeoutMs?: number } = {}): Promise<Result> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env };
    delete env['RETNETC_DEBUG'];
    delete env['RETNETC_STDERR_FILTERED'];
    for (const [k, v] of Object.entries(opts.env ?? {})) { if (v === undefined) delete env[k]; else env[k] = v; }
    const child = spawn(process.execPath, [MAIN, ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => { stdout += c; });
    child.stderr.setEncoding('utf8').on('data', (c: string) => { stderr += c; });
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 90_000);
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
  });
}

/** A user error: exit 1, a `where: error: message` line, and no stack trace or internal error. */
export function expectUserError(r: Result, pattern: RegExp): void {
  const all = r.stdout + r.stderr;
  expect(r.code, all).toBe(1);
  expect(r.stderr.trimEnd()).toMatch(pattern);
  expect(all).not.toMatch(/^\s{4}at /m);
  expect(all).not.toMatch(/internal error|TypeError|ReferenceError|RangeError|node:internal/);
}

/** A successful run: exit 0 and nothing on stderr. */
export function expectOk(r: Result): void {
  expect(r.code, r.stdout + r.stderr).toBe(0);
  expect(r.stderr, r.stderr).toBe('');
}

export function writeTensors(file: string, tensors: Map<string, Tensor>): string {
  writeFileSync(file, serializeSafetensors(tensors));
  return file;
}

export const escapeRe = (s: string): string => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
