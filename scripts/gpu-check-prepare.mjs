#!/usr/bin/env node
// Prepares build/gpu-check/, everything scripts/gpu-check.sh needs on a GPU machine that has no
// network and maybe no Node, no compiler and no node_modules (run here, after `npm ci`):
//
//   gpu-check.mjs        the check (runtime/cuda/gpu-check.ts with the compiler, the CUDA printer
//                        and the runtime) bundled by esbuild into one file
//   mma-check.mjs        the tensor-core agreement cases (runtime/cuda/mma-check.ts, schedule
//                        dense 'mma'), bundled the same way; gpu-check.sh runs it after the check
//   retnetc_cuda.node    the CUDA addon (dlopens libcuda.so.1 there; glibc >= 2.34)
//   include/             Node-API and node-addon-api headers, to rebuild the addon there with g++
//                        if the prebuilt one does not load
//   node.xz, node.version  this Node binary, stripped and xz-compressed (it needs glibc >= 2.28
//                        and libstdc++, nothing else), for a machine without node >= 20
//   refs/*.safetensors   float64 references of the agreement cases (the reference interpreter
//                        takes minutes per case, so they are computed here, once, in parallel)
//   MANIFEST.json        what was built from what
//
//   node scripts/gpu-check-prepare.mjs [--no-node] [--force-refs]
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const OUT = path.resolve(process.env.RETNETC_GPU_BUNDLE ?? path.join(ROOT, 'build', 'gpu-check'));
const args = process.argv.slice(2);
const log = (s) => process.stdout.write(`[prepare] ${s}\n`);
const die = (s) => { process.stderr.write(`[prepare] error: ${s}\n`); process.exit(1); };
const mib = (n) => `${(n / 2 ** 20).toFixed(1)} MiB`;
const t0 = Date.now();

fs.mkdirSync(OUT, { recursive: true });

/** sha256 over the sources the bundle is built from (gpu-check.ts computes the same on the GPU machine). */
function sourceTreeHash() {
  const files = [];
  const walk = (d) => {
    for (const e of fs.readdirSync(path.join(ROOT, d), { withFileTypes: true })) {
      const rel = path.posix.join(d, e.name);
      if (e.isDirectory()) { if (e.name !== 'build' && e.name !== 'node_modules') walk(rel); }
      else if (/\.(ts|ret|cc)$/.test(e.name)) files.push(rel);
    }
  };
  for (const d of ['dsl', 'compiler', 'targets', 'runtime', 'models']) if (fs.existsSync(path.join(ROOT, d))) walk(d);
  files.sort();
  const h = createHash('sha256');
  for (const f of files) h.update(f).update('\0').update(fs.readFileSync(path.join(ROOT, f))).update('\0');
  return h.digest('hex');
}

// 1. The addon, built strictly (a failure here is an error).
{
  const r = spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'build-cuda-addon.mjs'), '--strict'], { stdio: 'inherit' });
  if (r.status !== 0) die('the CUDA addon does not build here; see above');
  fs.copyFileSync(path.join(ROOT, 'runtime', 'cuda', 'addon', 'build', 'Release', 'retnetc_cuda.node'), path.join(OUT, 'retnetc_cuda.node'));
  log(`addon -> ${path.relative(ROOT, OUT)}/retnetc_cuda.node`);
}

// 2. Headers for rebuilding the addon there.
{
  const inc = path.join(OUT, 'include');
  fs.mkdirSync(inc, { recursive: true });
  const nodeInc = [path.join(path.dirname(process.execPath), '..', 'include', 'node'), '/usr/include/node', '/usr/local/include/node']
    .find((d) => fs.existsSync(path.join(d, 'node_api.h')));
  if (!nodeInc) die('no Node-API headers (node_api.h) found to carry');
  for (const f of ['node_api.h', 'node_api_types.h', 'js_native_api.h', 'js_native_api_types.h']) fs.copyFileSync(path.join(nodeInc, f), path.join(inc, f));
  const napi = path.join(ROOT, 'node_modules', 'node-addon-api');
  for (const f of ['napi.h', 'napi-inl.h', 'napi-inl.deprecated.h']) fs.copyFileSync(path.join(napi, f), path.join(inc, f));
  log(`headers -> ${path.relative(ROOT, inc)}/`);
}

// 3. The bundle.
const treeHash = sourceTreeHash();
const hasPrinter = fs.existsSync(path.join(ROOT, 'targets', 'emit.ts'));
{
  let esbuild;
  try {
    esbuild = await import('esbuild');
  } catch (e) {
    die(`esbuild is not installed (it comes with vitest's vite; run npm ci): ${e.message}`);
  }
  const imp = (p) => JSON.stringify(path.join(ROOT, p));
  const printerLines = hasPrinter
    ? [`import { setCudaEmitter } from ${imp('runtime/cuda/runner.ts')};`, `import { emitKernel } from ${imp('targets/emit.ts')};`, "setCudaEmitter((k) => emitKernel(k, 'cuda'));"]
    : ['// targets/emit.ts did not exist when this bundle was made: the check reports the printer missing.'];
  // One bundle per check: the main check, and the tensor-core cases (runtime/cuda/mma-check.ts).
  const bundles = [
    { out: 'gpu-check.mjs', entry: 'entry.ts', lines: [`import { main, setBuiltFrom } from ${imp('runtime/cuda/gpu-check.ts')};`, ...printerLines, `setBuiltFrom(${JSON.stringify(treeHash)});`] },
    ...(fs.existsSync(path.join(ROOT, 'runtime', 'cuda', 'mma-check.ts')) ? [{ out: 'mma-check.mjs', entry: 'entry-mma.ts', lines: [`import { main } from ${imp('runtime/cuda/mma-check.ts')};`, ...printerLines] }] : []),
  ];
  for (const b of bundles) {
    const entry = path.join(OUT, b.entry);
    fs.writeFileSync(entry, ['// Generated by scripts/gpu-check-prepare.mjs.', ...b.lines, 'process.exitCode = await main(process.argv.slice(2));', ''].join('\n'));
    const r = await esbuild.build({
      entryPoints: [entry], bundle: true, platform: 'node', format: 'esm', target: 'node20',
      outfile: path.join(OUT, b.out), logLevel: 'warning', legalComments: 'none',
      // Bundled CommonJS dependencies may call require().
      banner: { js: "import { createRequire as __retnetcCreateRequire } from 'node:module'; const require = __retnetcCreateRequire(import.meta.url);" },
    });
    if (r.errors.length) die(`esbuild failed (${b.out})`);
  }
  log(`bundle -> ${path.relative(ROOT, OUT)}/gpu-check.mjs (${mib(fs.statSync(path.join(OUT, 'gpu-check.mjs')).size)}; CUDA printer ${hasPrinter ? 'included' : 'MISSING: targets/emit.ts does not exist yet'})`);
  if (bundles.length > 1) log(`bundle -> ${path.relative(ROOT, OUT)}/mma-check.mjs (${mib(fs.statSync(path.join(OUT, 'mma-check.mjs')).size)})`);
}

// 4. References, computed in parallel (one process per missing or stale case).
{
  const cases = ['retention', 'linear_attention', 'gated_retention'];
  const force = args.includes('--force-refs');
  const bundle = path.join(OUT, 'gpu-check.mjs');
  const refs = path.join(OUT, 'refs');
  const jobs = cases.map((c) => new Promise((resolve) => {
    const p = spawn(process.execPath, [bundle, 'refs', '--out', refs, '--case', c, ...(force ? [] : ['--missing-only'])], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
    p.stdout.on('data', (d) => process.stdout.write(String(d).split('\n').filter(Boolean).map((l) => `[prepare] refs: ${l}\n`).join('')));
    p.on('close', (code) => resolve(code));
  }));
  const codes = await Promise.all(jobs);
  if (codes.some((c) => c !== 0)) die('computing the references failed');
}

// 5. Node, stripped and compressed.
let nodeNote = 'not carried (--no-node)';
if (!args.includes('--no-node')) {
  const version = process.version;
  const xzFile = path.join(OUT, 'node.xz');
  const verFile = path.join(OUT, 'node.version');
  const have = fs.existsSync(xzFile) && fs.existsSync(verFile) && fs.readFileSync(verFile, 'utf8').trim() === `${version}-${process.arch}`;
  if (!have) {
    if (process.arch !== 'x64' || process.platform !== 'linux') die(`this Node is ${process.platform}/${process.arch}; the GPU machine is linux/x64 (use --no-node)`);
    const tmp = path.join(os.tmpdir(), `retnetc-node-${process.pid}`);
    fs.copyFileSync(process.execPath, tmp);
    const s = spawnSync('strip', [tmp]);
    if (s.status !== 0) log('strip not available: carrying the unstripped binary');
    const xz = spawnSync('sh', ['-c', `xz -T0 -6 -c "${tmp}" > "${xzFile}.part" && mv "${xzFile}.part" "${xzFile}"`], { stdio: 'inherit' });
    fs.rmSync(tmp, { force: true });
    if (xz.status !== 0) die('xz failed (install xz-utils, or use --no-node where the GPU machine has node >= 20)');
    fs.writeFileSync(verFile, `${version}-${process.arch}\n`);
  }
  nodeNote = `${version} (${mib(fs.statSync(xzFile).size)} xz)`;
  log(`node -> ${path.relative(ROOT, OUT)}/node.xz: ${nodeNote}`);
}

// 6. Manifest and size.
let total = 0;
const walk = (d) => { for (const e of fs.readdirSync(d, { withFileTypes: true })) { const p = path.join(d, e.name); if (e.isDirectory()) walk(p); else total += fs.statSync(p).size; } };
walk(OUT);
const git = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' });
fs.writeFileSync(path.join(OUT, 'MANIFEST.json'), JSON.stringify({
  made: new Date().toISOString(), gitHead: git.stdout?.trim() || 'unknown', sourceTreeHash: treeHash,
  printer: hasPrinter, node: nodeNote, bytes: total,
}, null, 2) + '\n');
log(`done in ${((Date.now() - t0) / 1000).toFixed(0)} s: ${path.relative(ROOT, OUT)}/ is ${mib(total)} (carry it: the device tool's limit is 64 MiB with the tree)`);
