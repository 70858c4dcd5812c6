#!/usr/bin/env node
// Builds the CUDA runtime's addon (runtime/cuda/addon) into
// runtime/cuda/addon/build/Release/retnetc_cuda.node. Run by `npm ci` / `npm install` (the
// "prepare" script) and by `npm run build:cuda`.
//
// The addon dlopen()s libcuda.so.1 at run time, so it needs no CUDA headers or driver to build:
// only a C++17 compiler, node-addon-api (a dependency) and Node-API's C headers
// (node_api.h, which Node installs in <prefix>/include/node). It is compiled with one g++
// command; where the headers are not found, node-gyp (which downloads them) is tried instead.
//
// Without --strict a failure prints ONE warning line and exits 0, so `npm ci` succeeds on a
// machine without a compiler and the CUDA target reports the addon missing.
//
//   node scripts/build-cuda-addon.mjs [--strict] [--force] [--quiet] [--out FILE]
//        [--node-headers DIR] [--addon-api DIR]
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ADDON_DIR = path.join(ROOT, 'runtime', 'cuda', 'addon');
const SOURCE = path.join(ADDON_DIR, 'cuda_addon.cc');
const DEFAULT_OUT = path.join(ADDON_DIR, 'build', 'Release', 'retnetc_cuda.node');

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
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch { /* next */ }
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

/** A directory holding node_api.h (Node-API's C headers). */
function findNodeHeaders() {
  const explicit = option('--node-headers') ?? process.env.RETNETC_NODE_HEADERS;
  const candidates = [
    explicit,
    process.env.npm_config_nodedir && path.join(process.env.npm_config_nodedir, 'include', 'node'),
    path.join(path.dirname(process.execPath), '..', 'include', 'node'),
    path.join(os.homedir(), '.cache', 'node-gyp', process.versions.node, 'include', 'node'),
    path.join(os.homedir(), '.node-gyp', process.versions.node, 'include', 'node'),
    '/usr/include/node',
    '/usr/local/include/node',
  ].filter(Boolean);
  return candidates.find((d) => fs.existsSync(path.join(d, 'node_api.h')) && fs.existsSync(path.join(d, 'js_native_api.h')));
}

/** node-addon-api's napi.h directory. */
function findAddonApi() {
  const explicit = option('--addon-api') ?? process.env.RETNETC_ADDON_API;
  if (explicit) return fs.existsSync(path.join(explicit, 'napi.h')) ? explicit : undefined;
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

/** Loads the built addon in a child process (a broken .node must not take this one down). */
function smokeLoad(file) {
  const probe = `const a = require(${JSON.stringify(file)}); const s = a.available(); process.stdout.write(JSON.stringify(s));`;
  const r = spawnSync(process.execPath, ['-e', probe], { encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new BuildError(`built ${path.relative(ROOT, file)} but it does not load: ${oneLine(r.stderr).slice(0, 300)}`);
  return JSON.parse(r.stdout);
}

function buildWithCompiler(cxx, nodeHeaders, addonApi) {
  fs.mkdirSync(path.dirname(OUT), { recursive: true });
  const tmp = `${OUT}.${process.pid}.tmp`;
  const argv = [
    ...cxx.slice(1),
    '-std=c++17', '-O2', '-fPIC', '-shared', '-fexceptions', '-fvisibility=hidden', '-Wall',
    '-DNAPI_VERSION=8', '-DNAPI_CPP_EXCEPTIONS', '-DBUILDING_NODE_EXTENSION',
    `-I${addonApi}`, `-I${nodeHeaders}`,
    SOURCE, '-o', tmp, '-ldl',
  ];
  const r = spawnSync(cxx[0], argv, { encoding: 'utf8' });
  if (r.error) throw new BuildError(`${path.basename(cxx[0])} could not run: ${oneLine(r.error.message)}`);
  if (r.status !== 0) {
    const text = `${r.stderr}${r.stdout}`;
    const first = text.split('\n').find((l) => /error/.test(l)) ?? (oneLine(text).slice(0, 300) || `exit code ${r.status}`);
    fs.rmSync(tmp, { force: true });
    throw new BuildError(`${path.basename(cxx[0])} failed: ${oneLine(first)}`);
  }
  fs.renameSync(tmp, OUT);
}

function buildWithNodeGyp() {
  // npm passes its bundled node-gyp to lifecycle scripts; else next to npm's own CLI.
  const candidates = [
    process.env.npm_config_node_gyp,
    process.env.npm_execpath && path.join(path.dirname(process.env.npm_execpath), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
    path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ].filter((p) => p && fs.existsSync(p));
  if (!candidates.length) throw new BuildError('no Node-API headers (node_api.h) found and no node-gyp to fetch them');
  const r = spawnSync(process.execPath, [candidates[0], 'rebuild', '--release'], { cwd: ADDON_DIR, encoding: 'utf8' });
  if (r.status !== 0) {
    const text = `${r.stderr}\n${r.stdout}`;
    const first = text.split('\n').find((l) => /gyp ERR! (stack )?Error|error:/.test(l)) ?? oneLine(text).slice(-300);
    throw new BuildError(`node-gyp failed: ${oneLine(first).slice(0, 300)}`);
  }
  const built = path.join(ADDON_DIR, 'build', 'Release', 'retnetc_cuda.node');
  if (path.resolve(built) !== OUT) {
    fs.mkdirSync(path.dirname(OUT), { recursive: true });
    fs.copyFileSync(built, OUT);
  }
}

function main() {
  if (process.env.RETNETC_SKIP_CUDA_ADDON === '1') {
    log('retnetc: CUDA addon build skipped (RETNETC_SKIP_CUDA_ADDON=1)');
    return 0;
  }
  if (process.platform !== 'linux') throw new BuildError(`the CUDA addon is built on Linux only (this is ${process.platform})`);
  if (upToDate()) {
    log(`retnetc: CUDA addon up to date (${path.relative(ROOT, OUT)})`);
    return 0;
  }
  const t0 = Date.now();
  const addonApi = findAddonApi();
  if (!addonApi) throw new BuildError('node-addon-api is not installed (run npm ci)');
  const cxx = findCompiler();
  const nodeHeaders = findNodeHeaders();
  if (cxx && nodeHeaders) buildWithCompiler(cxx, nodeHeaders, addonApi);
  else if (!cxx) throw new BuildError('no C++ compiler (g++, c++ or clang++; or set CXX)');
  else buildWithNodeGyp();
  const status = smokeLoad(OUT);
  log(`retnetc: built CUDA addon ${path.relative(ROOT, OUT)} in ${((Date.now() - t0) / 1000).toFixed(1)} s (${status.ok ? 'CUDA available' : status.reason})`);
  return 0;
}

try {
  process.exitCode = main();
} catch (e) {
  const why = e instanceof BuildError ? e.message : oneLine(e instanceof Error ? e.message : e);
  process.stderr.write(`retnetc: warning: CUDA addon not built (${why}); the cuda target will report it missing\n`);
  process.exitCode = strict ? 1 : 0;
}
