// Compiling printed C (targets/native/printer.ts) into a shared library with the system C
// compiler, cached on disk by a hash of the source, the compiler's identity and version, the
// flags and the CPU model (-march=native). The compiler is $RETNETC_CC (a path or a command; it
// may carry arguments), else the first of cc, gcc and clang on PATH. Flags: -O3 -march=native (RETNETC_NATIVE_MARCH overrides the
// -march value), never fast-math, -ffp-contract=off (no fma contraction: every f32 operation rounds
// as kernel IR says), -fwrapv (i32 wraps), -fno-math-errno (math functions do not set errno; their
// values are unchanged), -fno-trapping-math (no program reads the floating-point exception flags, so
// GCC may compute both arms of a select, which if-converting a guarded expression in a work-item loop
// needs; values are unchanged in the default rounding mode), -fPIC -shared.
// The cache directory is $RETNETC_NATIVE_CACHE, else $XDG_CACHE_HOME/retnetc/native, else
// ~/.cache/retnetc/native (os.tmpdir()/retnetc-native where the home directory is not writable).
import { execFile, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export class NativeCompileError extends Error {}

export const NO_COMPILER = 'native target: no C compiler found (looked for cc, gcc, clang); install one or use --target cpu';

export interface CCompiler { command: string; args: string[]; version: string }

const compilers = new Map<string, CCompiler | null>();

function which(cmd: string, envPath: string): string | undefined {
  if (cmd.includes('/')) { try { fs.accessSync(cmd, fs.constants.X_OK); return cmd; } catch { return undefined; } }
  for (const dir of envPath.split(path.delimiter)) {
    if (!dir) continue;
    const p = path.join(dir, cmd);
    try { fs.accessSync(p, fs.constants.X_OK); if (fs.statSync(p).isFile()) return p; } catch { /* next */ }
  }
  return undefined;
}

/** The C compiler, or undefined when there is none. Cached per (RETNETC_CC, PATH). */
export function findCompiler(env: NodeJS.ProcessEnv = process.env): CCompiler | undefined {
  const key = `${env['RETNETC_CC'] ?? ''}\0${env['PATH'] ?? ''}`;
  if (compilers.has(key)) return compilers.get(key) ?? undefined;
  let found: CCompiler | undefined;
  const explicit = env['RETNETC_CC']?.trim();
  const candidates: string[][] = explicit ? [explicit.split(/\s+/)] : [['cc'], ['gcc'], ['clang']];
  for (const [cmd, ...args] of candidates) {
    const p = which(cmd!, env['PATH'] ?? '');
    if (!p) continue;
    const r = spawnSync(p, [...args, '--version'], { encoding: 'utf8', env });
    if (r.status !== 0) continue;
    found = { command: p, args, version: (r.stdout.split('\n')[0] ?? '').trim() };
    break;
  }
  compilers.set(key, found ?? null);
  return found;
}

export function cacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const explicit = env['RETNETC_NATIVE_CACHE'];
  const candidates = explicit ? [explicit] : [
    path.join(env['XDG_CACHE_HOME'] || path.join(os.homedir(), '.cache'), 'retnetc', 'native'),
    path.join(os.tmpdir(), `retnetc-native-${os.userInfo().uid}`),
  ];
  for (const d of candidates) {
    try { fs.mkdirSync(d, { recursive: true }); fs.accessSync(d, fs.constants.W_OK); return d; } catch { /* next */ }
  }
  throw new NativeCompileError(`native target: no writable cache directory (tried ${candidates.join(', ')})`);
}

/** The -march the kernels are compiled for (RETNETC_NATIVE_MARCH, else native). */
const marchOf = (env: NodeJS.ProcessEnv): string => `-march=${env['RETNETC_NATIVE_MARCH'] || 'native'}`;

export function nativeFlags(env: NodeJS.ProcessEnv = process.env): string[] {
  return ['-std=gnu11', '-O3', marchOf(env), '-fno-fast-math', '-fno-trapping-math', '-ffp-contract=off', '-fwrapv', '-fno-math-errno', '-fopenmp-simd', '-fno-strict-aliasing', '-fPIC', '-shared', '-w'];
}

const lanesByFlags = new Map<string, number>();

/**
 * f32 lanes of the widest vector registers the compiled kernels get (-march as nativeFlags has
 * it): 16 where the compiler targets AVX-512, 8 for AVX, 4 otherwise (SSE, NEON). The blocked CPU
 * lowerings shape their micro tiles by it (Schedule.lanes): 16-lane tiles on an AVX2 CPU spill
 * their 32 accumulators and ran 20x slower. Asked of the compiler's predefined macros, cached per
 * compiler and flags; 16 where there is no compiler (nothing runs then) or it does not answer.
 */
export function hostLanes(env: NodeJS.ProcessEnv = process.env): number {
  const cc = findCompiler(env);
  if (!cc) return 16;
  const flags = [...cc.args, marchOf(env)];
  const key = `${cc.command}\0${flags.join(' ')}`;
  const known = lanesByFlags.get(key);
  if (known !== undefined) return known;
  const r = spawnSync(cc.command, [...flags, '-dM', '-E', '-x', 'c', '-'], { input: '', encoding: 'utf8', env, timeout: 30_000 });
  const macros = r.status === 0 ? r.stdout : '';
  const lanes = r.status !== 0 || /#define __AVX512F__ 1/.test(macros) ? 16 : /#define __AVX__ 1/.test(macros) ? 8 : 4;
  lanesByFlags.set(key, lanes);
  return lanes;
}

export interface CompiledLibrary { file: string; cached: boolean; ms: number }

const inFlight = new Map<string, Promise<CompiledLibrary>>();

/** At most one compiler process per core at a time. */
const slots = { free: Math.max(1, os.availableParallelism()), waiting: [] as (() => void)[] };
const acquire = (): Promise<void> => (slots.free > 0 ? (slots.free--, Promise.resolve()) : new Promise((r) => slots.waiting.push(r)));
const release = (): void => { const next = slots.waiting.shift(); if (next) next(); else slots.free++; };

/** Compiles C source into a shared library (cached); resolves to its path. */
export function compileNative(code: string, env: NodeJS.ProcessEnv = process.env): Promise<CompiledLibrary> {
  const cc = findCompiler(env);
  if (!cc) return Promise.reject(new NativeCompileError(NO_COMPILER));
  const flags = [...cc.args, ...nativeFlags(env)];
  // -march=native: the machine is part of the key (a cache directory shared between machines).
  const machine = `${os.arch()} ${os.cpus()[0]?.model ?? ''}`;
  const hash = createHash('sha256').update(`${cc.command}\0${cc.version}\0${flags.join(' ')}\0${machine}\0${code}`).digest('hex').slice(0, 32);
  const dir = cacheDir(env);
  const file = path.join(dir, `k-${hash}.so`);
  const t0 = performance.now();
  if (fs.existsSync(file)) return Promise.resolve({ file, cached: true, ms: 0 });
  let p = inFlight.get(file);
  if (p) return p;
  p = acquire().then(() => new Promise<CompiledLibrary>((resolve, reject) => {
    const tmp = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}`;
    const src = `${tmp}.c`;
    fs.writeFileSync(src, code);
    execFile(cc.command, [...flags, src, '-o', tmp, '-lm'], { encoding: 'utf8', maxBuffer: 64 << 20, env }, (err, stdout, stderr) => {
      if (err) {
        const text = `${stderr}${stdout}`;
        const first = text.split('\n').find((l) => /error/.test(l)) ?? (text.trim().slice(0, 300) || err.message);
        fs.rmSync(tmp, { force: true });
        reject(new NativeCompileError(`native target: ${path.basename(cc.command)} failed on generated C (${src}): ${first.trim()}`));
        return;
      }
      // RETNETC_NATIVE_KEEP_SOURCE=1 keeps the C beside the library (k-HASH.c), to read or profile it.
      if (env['RETNETC_NATIVE_KEEP_SOURCE'] === '1') fs.renameSync(src, `${file.slice(0, -3)}.c`);
      else fs.rmSync(src, { force: true });
      fs.renameSync(tmp, file); // atomic: another process compiling the same source writes the same file
      resolve({ file, cached: false, ms: performance.now() - t0 });
    });
  })).finally(release);
  inFlight.set(file, p);
  p.then(() => inFlight.delete(file), () => inFlight.delete(file));
  return p;
}
