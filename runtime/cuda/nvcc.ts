// Compiling CUDA C++ modules with nvcc at run time, to PTX or cubin, with an on-disk cache keyed
// by the source, the target, the flags and nvcc's own version.
//
// Where nvcc can build machine code for the device (`nvcc --list-gpu-code` lists its sm_XX), a
// cubin is built: the driver loads it as it is (no JIT at start, and no dependence on the
// driver's PTX ISA version). Otherwise PTX for the newest compute_XX not above the device's is
// built and the driver compiles it when the module loads.
import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export type CudaImageFormat = 'ptx' | 'cubin';

export interface NvccInfo {
  path: string;
  /** e.g. '13.0.88' */
  version: string;
  /** Machine-code targets nvcc can build (sm_75, sm_80, ...), from --list-gpu-code. */
  codes: string[];
  /** Virtual architectures (compute_75, ...), from --list-gpu-arch. */
  archs: string[];
}

export class NvccError extends Error {
  override readonly name = 'NvccError';
  constructor(message: string, readonly log = '') {
    super(message);
  }
}

const oneLine = (s: string): string => s.replace(/\s+/g, ' ').trim();

function isExecutable(p: string): boolean {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

/** Where nvcc is: $RETNETC_NVCC, $CUDA_HOME/bin, $CUDA_PATH/bin, PATH, /usr/local/cuda/bin. */
export function nvccCandidates(): string[] {
  const out: string[] = [];
  const env = process.env;
  if (env['RETNETC_NVCC']) out.push(env['RETNETC_NVCC']);
  for (const v of ['CUDA_HOME', 'CUDA_PATH', 'CUDA_ROOT']) if (env[v]) out.push(path.join(env[v]!, 'bin', 'nvcc'));
  for (const d of (env['PATH'] ?? '').split(path.delimiter)) if (d) out.push(path.join(d, 'nvcc'));
  out.push('/usr/local/cuda/bin/nvcc', '/opt/cuda/bin/nvcc');
  return out;
}

let nvccCache: NvccInfo | string | undefined;

/** nvcc's path, version and targets, or a one-line reason why there is none. Cached. */
export function findNvcc(): NvccInfo | string {
  if (nvccCache !== undefined) return nvccCache;
  const found = nvccCandidates().find(isExecutable);
  if (!found) return (nvccCache = 'no nvcc: not on PATH, in $CUDA_HOME/bin or /usr/local/cuda/bin (set RETNETC_NVCC)');
  try {
    const run = (arg: string) => execFileSync(found, [arg], { encoding: 'utf8', timeout: 60_000, stdio: ['ignore', 'pipe', 'pipe'] });
    const v = run('--version');
    const version = /V(\d+\.\d+\.\d+)/.exec(v)?.[1] ?? /release (\d+\.\d+)/.exec(v)?.[1] ?? 'unknown';
    const list = (arg: string, prefix: string) => {
      try {
        return run(arg).split(/\s+/).filter((s) => s.startsWith(prefix));
      } catch {
        return [];
      }
    };
    nvccCache = { path: found, version, codes: list('--list-gpu-code', 'sm_'), archs: list('--list-gpu-arch', 'compute_') };
  } catch (e) {
    nvccCache = `no working nvcc: ${found} --version failed: ${oneLine(e instanceof Error ? e.message : String(e)).slice(0, 200)}`;
  }
  return nvccCache;
}

/** For tests: forget what findNvcc found. */
export function resetNvccCache(): void {
  nvccCache = undefined;
}

const ccNumber = (s: string): number => Number(/(\d+)/.exec(s)?.[1] ?? NaN);

/**
 * What to build for a device of compute capability major.minor: a cubin for sm_XY when nvcc
 * has that target, else PTX for the newest compute_XY not above it (the driver JITs it).
 */
export function targetFor(major: number, minor: number, nvcc: NvccInfo): { arch: string; format: CudaImageFormat } {
  const cc = major * 10 + minor;
  const sm = `sm_${cc}`;
  if (nvcc.codes.includes(sm) || (nvcc.codes.length === 0 && cc >= 75)) return { arch: sm, format: 'cubin' };
  const virt = nvcc.archs.map(ccNumber).filter((n) => n <= cc).sort((a, b) => b - a)[0];
  if (virt === undefined) throw new NvccError(`nvcc ${nvcc.version} cannot build for compute capability ${major}.${minor} (its oldest target is ${nvcc.archs[0] ?? 'unknown'})`);
  return { arch: `sm_${virt}`, format: 'ptx' };
}

/** $RETNETC_CUDA_CACHE, else $XDG_CACHE_HOME/retnetc/cuda, else ~/.cache/retnetc/cuda. */
export function cudaCacheDir(): string {
  const env = process.env;
  if (env['RETNETC_CUDA_CACHE']) return env['RETNETC_CUDA_CACHE'];
  const base = env['XDG_CACHE_HOME'] || path.join(os.homedir() || os.tmpdir(), '.cache');
  return path.join(base, 'retnetc', 'cuda');
}

export const NVCC_FLAGS: readonly string[] = ['-std=c++17'];

export interface CompileOptions {
  /** sm_XY: the target (for PTX, the virtual architecture compute_XY of it). */
  arch: string;
  format: CudaImageFormat;
  /** Used in error messages and as the temporary file's name. */
  name?: string;
  /** Defaults to cudaCacheDir(); null disables the cache. */
  cacheDir?: string | null;
  nvcc?: NvccInfo;
  /** Extra nvcc flags (part of the cache key). */
  flags?: readonly string[];
}

export interface CompiledImage {
  image: Buffer;
  format: CudaImageFormat;
  arch: string;
  /** The cache file it was read from or written to ('' without a cache). */
  file: string;
  cached: boolean;
  /** Wall time of nvcc (0 when cached). */
  ms: number;
}

// At most one nvcc per core at a time.
const limit = Math.max(1, os.availableParallelism?.() ?? os.cpus().length);
let running = 0;
const waiting: (() => void)[] = [];
async function withSlot<T>(f: () => Promise<T>): Promise<T> {
  if (running >= limit) await new Promise<void>((r) => waiting.push(r));
  running++;
  try {
    return await f();
  } finally {
    running--;
    waiting.shift()?.();
  }
}

function run(file: string, args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { encoding: 'utf8', maxBuffer: 64 << 20, timeout: 300_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
      resolve({ code, out: `${stdout}${stderr}${err && !stderr ? err.message : ''}` });
    });
  });
}

const safeName = (s: string): string => s.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 80) || 'kernel';

/** The cache key of a module: sha256 over everything that changes the output. */
export function cacheKey(code: string, o: { arch: string; format: CudaImageFormat; flags?: readonly string[] }, nvccVersion: string): string {
  return createHash('sha256').update([code, o.arch, o.format, nvccVersion, ...NVCC_FLAGS, ...(o.flags ?? [])].join('\0')).digest('hex');
}

/** Compiles one CUDA C++ module with nvcc (or reads it from the cache). */
export async function compileCuda(code: string, o: CompileOptions): Promise<CompiledImage> {
  const nvcc = o.nvcc ?? findNvcc();
  if (typeof nvcc === 'string') throw new NvccError(nvcc);
  if (!/^sm_\d+[a-z]?$/.test(o.arch)) throw new NvccError(`bad CUDA target '${o.arch}' (expected sm_XY)`);
  const key = cacheKey(code, o, nvcc.version);
  const ext = o.format === 'ptx' ? 'ptx' : 'cubin';
  const dir = o.cacheDir === null ? undefined : (o.cacheDir ?? cudaCacheDir());
  const file = dir ? path.join(dir, `${key}.${o.arch}.${ext}`) : '';
  if (file) {
    try {
      const image = fs.readFileSync(file);
      if (image.length > 0) return { image, format: o.format, arch: o.arch, file, cached: true, ms: 0 };
    } catch { /* not cached */ }
  }
  return withSlot(async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'retnetc-nvcc-'));
    try {
      const name = safeName(o.name ?? key.slice(0, 12));
      const src = path.join(tmp, `${name}.cu`);
      const out = path.join(tmp, `${name}.${ext}`);
      fs.writeFileSync(src, code);
      const arch = o.format === 'ptx' ? `-arch=compute_${o.arch.slice(3)}` : `-arch=${o.arch}`;
      const args = [o.format === 'ptx' ? '-ptx' : '-cubin', arch, ...NVCC_FLAGS, ...(o.flags ?? []), '-o', out, src];
      const t0 = performance.now();
      const r = await run(nvcc.path, args);
      const ms = performance.now() - t0;
      if (r.code !== 0 || !fs.existsSync(out)) {
        const first = r.out.split('\n').find((l) => /error/i.test(l)) ?? r.out.split('\n').find((l) => l.trim()) ?? `exit code ${r.code}`;
        throw new NvccError(`nvcc failed on ${o.name ?? 'a CUDA module'} (${o.format}, ${o.arch}): ${oneLine(first.replace(src, `${name}.cu`)).slice(0, 400)}`, r.out);
      }
      const image = fs.readFileSync(out);
      if (file) {
        try {
          fs.mkdirSync(dir!, { recursive: true });
          const part = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
          fs.writeFileSync(part, image);
          fs.renameSync(part, file);
        } catch { /* a read-only cache is not an error */ }
      }
      return { image, format: o.format, arch: o.arch, file, cached: false, ms };
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
}
