// The peer's BLAS kernels. The bench runs the peer with OPENBLAS_CORETYPE unset so that OpenBLAS
// picks its kernels for this CPU; but on a CPU it does not know (a new model number, or a VM that
// hides the model) it falls back to Prescott, its SSE3 kernels: torch.matmul then ran 5-8x slower
// than with the AVX-512 ones on the same machine (2026-12 bench machine, Xeon model 207). A peer
// crippled that way flatters every ratio, so where OpenBLAS reports that fallback and the CPU has
// the vector units, the peer gets the core its flags support (SkylakeX for AVX-512, Haswell for
// AVX2), and the bench says so.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';

/** OpenBLAS's core as the peer's Python sees it ('Prescott', 'SkylakeX', ...), or undefined where it does not say. */
export function openblasCore(python: string, env: NodeJS.ProcessEnv): string | undefined {
  const r = spawnSync(python, ['-c', 'import torch; torch.ones(64, 64) @ torch.ones(64, 64)'], { env: { ...env, OPENBLAS_VERBOSE: '2' }, encoding: 'utf8', timeout: 60_000 });
  return /Core:\s*(\S+)/.exec(`${r.stdout ?? ''}\n${r.stderr ?? ''}`)?.[1];
}

/** The OpenBLAS core a CPU with these /proc/cpuinfo flags supports best, of those the fallback should not hide. */
export function coreForFlags(flags: ReadonlySet<string>): string | undefined {
  if (['avx512f', 'avx512bw', 'avx512dq', 'avx512vl'].every((f) => flags.has(f))) return 'SkylakeX';
  if (flags.has('avx2') && flags.has('fma')) return 'Haswell';
  return undefined;
}

/** This machine's CPU flags (empty where /proc/cpuinfo is not there). */
export function cpuFlags(): Set<string> {
  try {
    const line = fs.readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('flags'));
    return new Set(line ? line.split(':')[1]!.trim().split(/\s+/) : []);
  } catch {
    return new Set();
  }
}

/**
 * The OPENBLAS_CORETYPE the peer should run with: undefined where OpenBLAS detects the CPU itself
 * (or torch is not there to ask), else the core the flags support, with the reason.
 */
export function peerCoreType(python: string, env: NodeJS.ProcessEnv, flags = cpuFlags()): { core: string; detected: string } | undefined {
  const detected = openblasCore(python, env);
  if (detected !== 'Prescott') return undefined;
  const core = coreForFlags(flags);
  return core ? { core, detected } : undefined;
}
