#!/usr/bin/env node
// Builds the native target's addon (runtime/native/addon/native_addon.cc) into
// runtime/native/addon/build/Release/retnetc_native.node (or --out FILE). Meant for `npm ci` /
// `npm install` (the "prepare" script) and run on first use by runtime/native/addon.ts, which
// builds into its cache directory when no built addon is found. How: scripts/addon-build.mjs.
//
//   node scripts/build-native-addon.mjs [--strict] [--force] [--quiet] [--out FILE]
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildAddonMain, ROOT } from './addon-build.mjs';

const addonDir = path.join(ROOT, 'runtime', 'native', 'addon');
buildAddonMain({
  label: 'native',
  skipEnv: 'RETNETC_SKIP_NATIVE_ADDON',
  platforms: ['linux', 'darwin'],
  addonDir,
  source: path.join(addonDir, 'native_addon.cc'),
  defaultOut: path.join(addonDir, 'build', 'Release', 'retnetc_native.node'),
  flags: ['-pthread'],
  probe: 'process.stdout.write(String(require(FILE).threads()));',
  describe: (out) => `${out} threads`,
}, fileURLToPath(import.meta.url));
