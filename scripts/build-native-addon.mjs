#!/usr/bin/env node
// Builds the native target's addon (runtime/native/addon/native_addon.cc) into
// runtime/native/addon/build/Release/retnetc_native.node (or --out FILE). Meant for `npm ci` /
// `npm install` (the "prepare" script) and run on first use by runtime/native/addon.ts, which
// builds into its cache directory when no built addon is found.
//
// The addon only needs a C++17 compiler ($CXX, else g++, c++ or clang++), node-addon-api (a
// dependency) and Node-API's C headers (node_api.h, installed with Node in <prefix>/include/node).
// Without --strict a failure prints ONE warning line and exits 0, so `npm ci` succeeds on a
// machine without a compiler and the native target says what is missing when it is used.
//
//   node scripts/build-native-addon.mjs [--strict] [--force] [--quiet] [--out FILE]
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ADDON_DIR = path.join(ROOT, 'runtime', 'native', 'addon');
const SOURCE = path.join(ADDON_DIR, 'native_addon.cc');
const DEFAULT_OUT = path.join(ADDON_DIR, 'build', 'Release', 'retnetc_native.node');

const args = process.argv.slice(2);
const flag = (name) => args.includes(name);
const option = (name) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : undefined;
};
const strict = flag('--strict');
const force = flag('--force');
const quiet = flag('--quiet');
const OUT = path.resolve(option('--out') ?? DEFAULT_OUT);

class BuildError extends Error {}
const oneLine = (s) => String(s).replace(/\s+/g, ' ').trim();
const log = (s) => { if (!quiet) process.stderr.write(`${s}\n`); };

function which(cmd) {
  if (cmd.includes('/')) return fs.existsSync(cmd) ? cmd : undefined;
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const p = path.join(dir, cmd);
    try { fs.accessSync(p, fs.constants.X_OK); return p; } catch { /* next */ }
  }
  return undefined;
}

function findCompiler() {
  const env = process.env.CXX;
  if (env) {
    const [cmd, ...rest] = env.trim().split(/\s+/);
    const found = which(cmd);
    if (found) return [found, ...rest];
  }
  for (const c of ['g++', 'c++', 'clang++']) {
    const found = which(c);
    if (found) return [found];
  }
  return undefined;
}

function findNodeHeaders() {
  const candidates = [
    process.env.RETNETC_NODE_HEADERS,
    process.env.npm_config_nodedir && path.join(process.env.npm_config_nodedir, 'include', 'node'),
    path.join(path.dirname(process.execPath), '..', 'include', 'node'),
    path.join(os.homedir(), '.cache', 'node-gyp', process.versions.node, 'include', 'node'),
    '/usr/include/node',
    '/usr/local/include/node',
  ].filter(Boolean);
  return candidates.find((d) => fs.existsSync(path.join(d, 'node_api.h')) && fs.existsSync(path.join(d, 'js_native_api.h')));
}

function findAddonApi() {
  try {
    const require = createRequire(path.join(ROOT, 'package.json'));
    const dir = path.dirname(require.resolve('node-addon-api/package.json'));
    return fs.existsSync(path.join(dir, 'napi.h')) ? dir : undefined;
  } catch {
    return undefined;
  }
}

function upToDate() {
  if (force || !fs.existsSync(OUT)) return false;
  const built = fs.statSync(OUT).mtimeMs;
  return [SOURCE, fileURLToPath(import.meta.url)].every((f) => fs.statSync(f).mtimeMs <= built);
}

function main() {
  if (process.env.RETNETC_SKIP_NATIVE_ADDON === '1') { log('retnetc: native addon build skipped (RETNETC_SKIP_NATIVE_ADDON=1)'); return 0; }
  if (process.platform !== 'linux' && process.platform !== 'darwin') throw new BuildError(`the native addon is built on Linux and macOS only (this is ${process.platform})`);
  if (upToDate()) { log(`retnetc: native addon up to date (${path.relative(ROOT, OUT)})`); return 0; }
  const t0 = Date.now();
  const addonApi = findAddonApi();
  if (!addonApi) throw new BuildError('node-addon-api is not installed (run npm ci)');
  const cxx = findCompiler();
  if (!cxx) throw new BuildError('no C++ compiler (g++, c++ or clang++; or set CXX)');
  const nodeHeaders = findNodeHeaders();
  if (!nodeHeaders) throw new BuildError('no Node-API headers (node_api.h) found; set RETNETC_NODE_HEADERS');
  fs.mkdirSync(path.dirname(OUT), { recursive: true });
  const tmp = `${OUT}.${process.pid}.tmp.node`;
  const argv = [
    ...cxx.slice(1), '-std=c++17', '-O2', '-fPIC', '-shared', '-fexceptions', '-fvisibility=hidden', '-pthread', '-Wall',
    '-DNAPI_VERSION=8', '-DNAPI_CPP_EXCEPTIONS', '-DBUILDING_NODE_EXTENSION', `-I${addonApi}`, `-I${nodeHeaders}`,
    SOURCE, '-o', tmp, '-ldl',
  ];
  const r = spawnSync(cxx[0], argv, { encoding: 'utf8' });
  if (r.error) throw new BuildError(`${path.basename(cxx[0])} could not run: ${oneLine(r.error.message)}`);
  if (r.status !== 0) {
    const text = `${r.stderr}${r.stdout}`;
    fs.rmSync(tmp, { force: true });
    throw new BuildError(`${path.basename(cxx[0])} failed: ${oneLine(text.split('\n').find((l) => /error/.test(l)) ?? text).slice(0, 300)}`);
  }
  const probe = `const a = require(${JSON.stringify(tmp)}); process.stdout.write(String(a.threads()));`;
  const s = spawnSync(process.execPath, ['-e', probe], { encoding: 'utf8', timeout: 60_000 });
  if (s.status !== 0) { fs.rmSync(tmp, { force: true }); throw new BuildError(`built the addon but it does not load: ${oneLine(s.stderr).slice(0, 300)}`); }
  fs.renameSync(tmp, OUT);
  log(`retnetc: built native addon ${path.relative(ROOT, OUT)} in ${((Date.now() - t0) / 1000).toFixed(1)} s (${s.stdout} threads)`);
  return 0;
}

try {
  process.exitCode = main();
} catch (e) {
  const why = e instanceof BuildError ? e.message : oneLine(e instanceof Error ? e.message : e);
  process.stderr.write(`retnetc: warning: native addon not built (${why}); the native target will report it missing\n`);
  process.exitCode = strict ? 1 : 0;
}
