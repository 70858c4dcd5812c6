// Loading the native target's addon (runtime/native/addon/native_addon.cc): the built one
// ($RETNETC_NATIVE_ADDON, else runtime/native/addon/build/Release/retnetc_native.node when it is
// not older than its source), else built on first use by scripts/build-native-addon.mjs into the
// native cache directory (targets/native/compile.ts cacheDir), keyed by a hash of the source and
// Node's ABI, under a lock so that parallel test workers build it once.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cacheDir } from '../../targets/native/compile.js';

export interface NativeAddon {
  open(file: string): number;
  symbol(library: number, name: string): number;
  run(kernel: number, buffers: ArrayBufferView[], scalars: Int32Array, grid: Int32Array, scratchBytes: number, err: Int32Array): void;
  /**
   * A whole launch list in one call (runtime/native/launch-list.ts has the layout of `code`):
   * the index of the launch whose kernel reported an error in `err`, else -1; with `times`, each
   * launch's milliseconds.
   */
  runList(tensors: ArrayBufferView[], code: Int32Array, err: Int32Array, times?: Float64Array): number;
  threads(): number;
  abiVersion: number;
}

const ABI_VERSION = 1;
const ADDON_FILE = 'retnetc_native.node';

/** The repository root (from runtime/native/*.ts or dist/runtime/native/*.js). */
function root(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const up of ['../..', '../../..']) {
    const r = path.resolve(here, up);
    if (fs.existsSync(path.join(r, 'scripts', 'build-native-addon.mjs'))) return r;
  }
  return path.resolve(here, '../..');
}

let loaded: { addon: NativeAddon; file: string } | { error: string } | undefined;

function tryLoad(file: string): NativeAddon {
  const require = createRequire(import.meta.url);
  const a = require(file) as NativeAddon;
  if (typeof a.run !== 'function' || typeof a.runList !== 'function' || a.abiVersion !== ABI_VERSION) throw new Error(`${file} is not the retnetc native addon (ABI ${ABI_VERSION}, with runList)`);
  return a;
}

function withLock<T>(lock: string, f: () => T): T {
  const t0 = Date.now();
  for (;;) {
    try { fs.mkdirSync(lock); break; } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      try { if (Date.now() - fs.statSync(lock).mtimeMs > 120_000) { fs.rmSync(lock, { recursive: true, force: true }); continue; } } catch { continue; }
      if (Date.now() - t0 > 180_000) throw new Error(`timed out waiting for the lock ${lock}`);
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
    }
  }
  try { return f(); } finally { fs.rmSync(lock, { recursive: true, force: true }); }
}

/** The addon, or a one-line reason why it cannot be had. Cached. */
export function loadNativeAddon(): { addon: NativeAddon; file: string } | { error: string } {
  if (loaded) return loaded;
  const r = root();
  const source = path.join(r, 'runtime', 'native', 'addon', 'native_addon.cc');
  const script = path.join(r, 'scripts', 'build-native-addon.mjs');
  const candidates: string[] = [];
  if (process.env['RETNETC_NATIVE_ADDON']) candidates.push(path.resolve(process.env['RETNETC_NATIVE_ADDON']));
  const built = path.join(r, 'runtime', 'native', 'addon', 'build', 'Release', ADDON_FILE);
  const fresh = (f: string): boolean => fs.existsSync(f) && (!fs.existsSync(source) || fs.statSync(source).mtimeMs <= fs.statSync(f).mtimeMs);
  if (fresh(built)) candidates.push(built);
  for (const f of candidates) {
    try { loaded = { addon: tryLoad(f), file: f }; return loaded; } catch { /* next */ }
  }
  if (!fs.existsSync(source) || !fs.existsSync(script)) {
    loaded = { error: `native target: the addon is not built and its source is missing (${path.relative(process.cwd(), built)})` };
    return loaded;
  }
  try {
    const hash = createHash('sha256').update(fs.readFileSync(source)).update(fs.readFileSync(script)).update(`${process.versions.modules}\0${process.execPath}`).digest('hex').slice(0, 16);
    const dir = cacheDir();
    const file = path.join(dir, `addon-${hash}.node`);
    if (!fs.existsSync(file)) {
      withLock(`${file}.lock`, () => {
        if (fs.existsSync(file)) return;
        const b = spawnSync(process.execPath, [script, '--out', file, '--strict', '--quiet', '--force'], { encoding: 'utf8', timeout: 300_000 });
        if (b.status !== 0) throw new Error((b.stderr || b.error?.message || `exit ${b.status}`).replace(/^retnetc: warning: /, '').replace(/\s+/g, ' ').trim());
      });
    }
    loaded = { addon: tryLoad(file), file };
  } catch (e) {
    loaded = { error: `native target: ${(e instanceof Error ? e.message : String(e)).replace(/\s+/g, ' ').trim().slice(0, 300)}` };
  }
  return loaded;
}
