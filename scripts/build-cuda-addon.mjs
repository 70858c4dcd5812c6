#!/usr/bin/env node
// Builds the CUDA runtime's addon (runtime/cuda/addon) into
// runtime/cuda/addon/build/Release/retnetc_cuda.node. Run by `npm ci` / `npm install` (the
// "prepare" script) and by `npm run build:cuda`. How: scripts/addon-build.mjs.
//
// The addon dlopen()s libcuda.so.1 at run time, so it needs no CUDA headers or driver to build.
//
//   node scripts/build-cuda-addon.mjs [--strict] [--force] [--quiet] [--out FILE]
//        [--node-headers DIR] [--addon-api DIR]
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildAddonMain, ROOT } from './addon-build.mjs';

const addonDir = path.join(ROOT, 'runtime', 'cuda', 'addon');
buildAddonMain({
  label: 'CUDA',
  skipEnv: 'RETNETC_SKIP_CUDA_ADDON',
  platforms: ['linux'],
  addonDir,
  source: path.join(addonDir, 'cuda_addon.cc'),
  defaultOut: path.join(addonDir, 'build', 'Release', 'retnetc_cuda.node'),
  libs: ['-ldl'],
  nodeGyp: true,
  probe: 'process.stdout.write(JSON.stringify(require(FILE).available()));',
  describe: (out) => { const s = JSON.parse(out); return s.ok ? 'CUDA available' : s.reason; },
}, fileURLToPath(import.meta.url));
