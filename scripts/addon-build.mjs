// What building either of retnetc's Node addons takes (scripts/build-cuda-addon.mjs and
// scripts/build-native-addon.mjs each describe theirs and call `buildAddonMain`): find a C++17
// compiler, Node-API's C headers and node-addon-api, compile one source file with one command
// into a temporary file, load it in a child process (a broken .node must not take this one
// down), then rename it into place. Where the headers are not found, node-gyp (which downloads
// them) is tried when the addon has a binding.gyp.
//
// Without --strict a failure prints ONE warning line and exits 0, so `npm ci` succeeds on a
// machine without a compiler and the target says what is missing when it is used.
//
//   node scripts/build-<name>-addon.mjs [--strict] [--force] [--quiet] [--out FILE]
//        [--node-headers DIR] [--addon-api DIR]
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

class BuildError extends Error {}
const oneLine = (s) => String(s).replace(/\s+/g, ' ').trim();

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

/** A directory holding node_api.h (Node-API's C headers). */
function findNodeHeaders(explicit) {
  const candidates = [
    explicit,
    process.env.RETNETC_NODE_HEADERS,
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
function findAddonApi(explicit) {
  const dir0 = explicit ?? process.env.RETNETC_ADDON_API;
  if (dir0) return fs.existsSync(path.join(dir0, 'napi.h')) ? dir0 : undefined;
  try {
    const require = createRequire(path.join(ROOT, 'package.json'));
    const dir = path.dirname(require.resolve('node-addon-api/package.json'));
    return fs.existsSync(path.join(dir, 'napi.h')) ? dir : undefined;
  } catch {
    return undefined;
  }
}

/** Runs `probe` (JS with FILE bound to the addon's path) in a child; its stdout, or a BuildError. */
function smokeLoad(file, probe) {
  const r = spawnSync(process.execPath, ['-e', `const FILE = ${JSON.stringify(file)}; ${probe}`], { encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new BuildError(`built the addon but it does not load: ${oneLine(r.stderr).slice(0, 300)}`);
  return r.stdout;
}

function compile(cxx, spec, nodeHeaders, addonApi, tmp) {
  const argv = [
    ...cxx.slice(1), '-std=c++17', '-O2', '-fPIC', '-shared', '-fexceptions', '-fvisibility=hidden', ...(spec.flags ?? []), '-Wall',
    '-DNAPI_VERSION=8', '-DNAPI_CPP_EXCEPTIONS', '-DBUILDING_NODE_EXTENSION', `-I${addonApi}`, `-I${nodeHeaders}`,
    spec.source, '-o', tmp, ...(spec.libs ?? []),
  ];
  const r = spawnSync(cxx[0], argv, { encoding: 'utf8' });
  if (r.error) throw new BuildError(`${path.basename(cxx[0])} could not run: ${oneLine(r.error.message)}`);
  if (r.status !== 0) {
    const text = `${r.stderr}${r.stdout}`;
    fs.rmSync(tmp, { force: true });
    throw new BuildError(`${path.basename(cxx[0])} failed: ${oneLine(text.split('\n').find((l) => /error/.test(l)) ?? (text || `exit code ${r.status}`)).slice(0, 300)}`);
  }
}

function compileWithNodeGyp(spec, tmp) {
  // npm passes its bundled node-gyp to lifecycle scripts; else next to npm's own CLI.
  const candidates = [
    process.env.npm_config_node_gyp,
    process.env.npm_execpath && path.join(path.dirname(process.env.npm_execpath), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
    path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ].filter((p) => p && fs.existsSync(p));
  if (!candidates.length) throw new BuildError('no Node-API headers (node_api.h) found and no node-gyp to fetch them; set RETNETC_NODE_HEADERS');
  const r = spawnSync(process.execPath, [candidates[0], 'rebuild', '--release'], { cwd: spec.addonDir, encoding: 'utf8' });
  if (r.status !== 0) {
    const text = `${r.stderr}\n${r.stdout}`;
    const first = text.split('\n').find((l) => /gyp ERR! (stack )?Error|error:/.test(l)) ?? oneLine(text).slice(-300);
    throw new BuildError(`node-gyp failed: ${oneLine(first).slice(0, 300)}`);
  }
  fs.copyFileSync(path.join(spec.addonDir, 'build', 'Release', path.basename(spec.defaultOut)), tmp);
}

/**
 * Builds the addon `spec` describes from the command line's options, as a script's whole job:
 * { label: 'CUDA', skipEnv, platforms, addonDir, source, defaultOut, flags?, libs?, nodeGyp?,
 *   probe (JS run in a child with FILE bound; its stdout is reported), describe(stdout) }.
 */
export function buildAddonMain(spec, script) {
  const args = process.argv.slice(2);
  const option = (name) => { const i = args.indexOf(name); return i >= 0 && i + 1 < args.length ? args[i + 1] : undefined; };
  const strict = args.includes('--strict');
  const force = args.includes('--force');
  const log = (s) => { if (!args.includes('--quiet')) process.stderr.write(`${s}\n`); };
  const OUT = path.resolve(option('--out') ?? spec.defaultOut);
  const lower = spec.label === 'CUDA' ? 'cuda' : spec.label.toLowerCase();
  const main = () => {
    if (process.env[spec.skipEnv] === '1') { log(`retnetc: ${spec.label} addon build skipped (${spec.skipEnv}=1)`); return; }
    if (!spec.platforms.includes(process.platform)) throw new BuildError(`the ${spec.label} addon is built on ${spec.platforms.join(' and ')} only (this is ${process.platform})`);
    const inputs = [spec.source, fileURLToPath(import.meta.url), script];
    if (!force && fs.existsSync(OUT) && inputs.every((f) => fs.statSync(f).mtimeMs <= fs.statSync(OUT).mtimeMs)) {
      log(`retnetc: ${spec.label} addon up to date (${path.relative(ROOT, OUT)})`);
      return;
    }
    const t0 = Date.now();
    const addonApi = findAddonApi(option('--addon-api'));
    if (!addonApi) throw new BuildError('node-addon-api is not installed (run npm ci)');
    const cxx = findCompiler();
    if (!cxx) throw new BuildError('no C++ compiler (g++, c++ or clang++; or set CXX)');
    const nodeHeaders = findNodeHeaders(option('--node-headers'));
    fs.mkdirSync(path.dirname(OUT), { recursive: true });
    const tmp = `${OUT}.${process.pid}.tmp.node`;
    if (nodeHeaders) compile(cxx, spec, nodeHeaders, addonApi, tmp);
    else if (spec.nodeGyp) compileWithNodeGyp(spec, tmp);
    else throw new BuildError('no Node-API headers (node_api.h) found; set RETNETC_NODE_HEADERS');
    let out;
    try { out = smokeLoad(tmp, spec.probe); } catch (e) { fs.rmSync(tmp, { force: true }); throw e; }
    fs.renameSync(tmp, OUT);
    log(`retnetc: built ${spec.label} addon ${path.relative(ROOT, OUT)} in ${((Date.now() - t0) / 1000).toFixed(1)} s (${spec.describe(out)})`);
  };
  try {
    main();
    process.exitCode = 0;
  } catch (e) {
    const why = e instanceof BuildError ? e.message : oneLine(e instanceof Error ? e.message : e);
    process.stderr.write(`retnetc: warning: ${spec.label} addon not built (${why}); the ${lower} target will report it missing\n`);
    process.exitCode = strict ? 1 : 0;
  }
}
