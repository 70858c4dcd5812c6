// The bench's peer BLAS core (bench/peer-blas.ts): OpenBLAS's own choice is kept, its SSE3 fallback
// (Prescott, on a CPU it does not know) is replaced by the core the CPU's flags support.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, test } from 'vitest';
import { coreForFlags, openblasCore, peerCoreType } from '../bench/peer-blas.js';

/** A stand-in for the peer's python that prints what OpenBLAS would (OPENBLAS_VERBOSE=2). */
function fakePython(says: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'peer-blas-'));
  const f = path.join(dir, 'python');
  fs.writeFileSync(f, `#!/bin/sh\n[ "$OPENBLAS_VERBOSE" = 2 ] && echo '${says}' >&2\nexit 0\n`, { mode: 0o755 });
  return f;
}

describe('the peer BLAS core', () => {
  const avx512 = new Set(['fma', 'avx2', 'avx512f', 'avx512bw', 'avx512dq', 'avx512vl']);
  test('the flags give SkylakeX with AVX-512 (F, BW, DQ, VL), Haswell with AVX2 and FMA, else none', () => {
    expect(coreForFlags(avx512)).toBe('SkylakeX');
    expect(coreForFlags(new Set(['fma', 'avx2', 'avx512f']))).toBe('Haswell');
    expect(coreForFlags(new Set(['sse3', 'avx']))).toBeUndefined();
  });
  test("OpenBLAS's detection is kept unless it is the Prescott fallback; no python: nothing to change", () => {
    expect(openblasCore(fakePython('Core: SkylakeX'), {})).toBe('SkylakeX');
    expect(peerCoreType(fakePython('Core: SkylakeX'), {}, avx512)).toBeUndefined();
    expect(peerCoreType(fakePython('Core: Prescott'), {}, avx512)).toEqual({ core: 'SkylakeX', detected: 'Prescott' });
    expect(peerCoreType(fakePython('Core: Prescott'), {}, new Set(['sse3']))).toBeUndefined();
    expect(peerCoreType(fakePython('nothing'), {}, avx512)).toBeUndefined();
    expect(peerCoreType('/nonexistent/python3', {}, avx512)).toBeUndefined();
  });
});
