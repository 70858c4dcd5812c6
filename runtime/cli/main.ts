#!/usr/bin/env node
// The retnetc command line. User mistakes end in one located line and exit code 1; internal
// errors in one line and exit code 70.
//
// Dawn (the WebGPU of `webgpu --target webgpu`) logs from native code straight to file
// descriptor 2: two "maxDynamic...BuffersPerPipelineLayout artificially reduced" warnings on
// lavapipe and the Vulkan loader's messages about drivers it skips. Node cannot redirect its
// own descriptor 2, so a command that uses WebGPU runs in a child process whose stderr passes
// through a filter here: Dawn's warnings are held back (and shown only when no adapter could
// be had, where they explain why), everything else reaches the user as it comes.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { isDawnWarning, isVulkanLoaderLine } from '../webgpu/device.js';

const FILTERED = 'RETNETC_STDERR_FILTERED';
const argv = process.argv.slice(2);

// `targets` and `demo` probe every device, WebGPU included; so do `generate` and `train` without --target (runtime/best-target.ts).
const probes = (args: string[]): boolean => args[0] === 'targets' || args[0] === 'demo' || ((args[0] === 'generate' || args[0] === 'train') && !args.some((a) => a === '--target' || a.startsWith('--target=')));
const usesWebGPU = (args: string[]): boolean => probes(args) || args.some((a, i) => a === '--target=webgpu' || (a === '--target' && args[i + 1] === 'webgpu'));

if (usesWebGPU(argv) && !process.env[FILTERED] && !process.env['RETNETC_DEBUG']) runFiltered();
else void runHere();

function runFiltered(): void {
  const nodeArgs = process.execArgv.filter((a) => !a.startsWith('--inspect'));
  const child = spawn(process.execPath, [...nodeArgs, fileURLToPath(import.meta.url), ...argv], {
    stdio: ['inherit', 'inherit', 'pipe'],
    env: { ...process.env, [FILTERED]: '1' },
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => child.kill(sig));
  const held: string[] = [];
  let rest = '';
  let shown = '';
  // Dawn follows a warning with indented "at ..." lines (where in Dawn) and an empty line.
  let inWarning = false;
  const line = (l: string): void => {
    // The loader's own lines only when nobody asked for them with VK_LOADER_DEBUG.
    if (isDawnWarning(l) || (!process.env['VK_LOADER_DEBUG'] && isVulkanLoaderLine(l))) { held.push(l); inWarning = true; return; }
    if (inWarning && (l.trim() === '' || /^\s/.test(l))) return;
    inWarning = false;
    process.stderr.write(l + '\n');
    shown += l + '\n';
  };
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    const lines = (rest + chunk).split('\n');
    rest = lines.pop()!;
    for (const l of lines) line(l);
  });
  child.on('error', (e) => {
    process.stderr.write(`retnetc: internal error: cannot start the WebGPU process: ${e.message}\n`);
    process.exitCode = 70;
  });
  child.on('close', (code, signal) => {
    if (rest) line(rest);
    // Without an adapter, what Dawn and the Vulkan loader said is the explanation.
    if (code !== 0 && /no WebGPU adapter/.test(shown)) for (const l of held) process.stderr.write(`retnetc: note: Dawn: ${l.replace(/^Warning: /, '')}\n`);
    if (signal) { process.removeAllListeners(signal); process.kill(process.pid, signal); }
    process.exitCode = code ?? 1;
  });
}

async function runHere(): Promise<void> {
  // A reader that goes away (`retnetc check x.ret | head`) is not an error.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
      throw e;
    });
  }
  try {
    const { main } = await import('./commands.js');
    process.exitCode = await main(argv);
  } catch (e) {
    // Only internal bugs get here; still one line, plus where to look.
    process.stderr.write(`retnetc: internal error: ${e instanceof Error ? e.message : String(e)}\n`);
    if (process.env['RETNETC_DEBUG'] && e instanceof Error) process.stderr.write(`${e.stack}\n`);
    process.exitCode = 70;
  }
}
