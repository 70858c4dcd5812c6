// Test runner settings for `npm test` (vitest run tests/): the defaults, except lavapipe's JIT
// setting (below) and the order in
// which files start. Vitest starts a file on each core as one frees up; without timings from an
// earlier run (a clean CI clone has none) it starts the largest files first, and a file that is
// short in bytes but long in time (tests/independent.test.ts runs the CLI 46 times) started near
// the end finishes alone while the other core idles. So the files known to take longest start
// first, longest first (seconds measured on 2 cores; they only need to be in the right order),
// and the rest follow in vitest's own order.
import { defineConfig } from 'vitest/config';
import { BaseSequencer, type TestSpecification } from 'vitest/node';
import { lavapipeJitEnv } from './tests/helpers/lavapipe-jit.js';

const SLOW_FIRST = [
  'tests/webgpu-schedules.test.ts', // ~250 s: WGSL pipelines compiled by lavapipe
  // Before webgpu-schedules reaches its fixed cases at the end: they share kernels through
  // Mesa's shader disk cache (tests/independent/retention_numpy.py).
  'tests/independent.test.ts', // ~75 s: numpy check, 46 CLI runs
  'tests/chunk-cpu.test.ts', // ~85 s
  'tests/native-schedules.test.ts', // ~50 s: cc -O3 per kernel shape
  'tests/native-blocked-dense.test.ts', // ~40 s
  'tests/nvcc-dense-mma.test.ts', // ~30 s: nvcc of 148 mma kernels for two architectures
];

class SlowFirstSequencer extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const rank = (f: TestSpecification): number => {
      const i = SLOW_FIRST.findIndex((s) => f.moduleId.endsWith(`/${s}`));
      return i < 0 ? SLOW_FIRST.length : i;
    };
    const rest = await super.sort(files.filter((f) => rank(f) === SLOW_FIRST.length));
    return [...files.filter((f) => rank(f) < SLOW_FIRST.length).sort((a, b) => rank(a) - rank(b)), ...rest];
  }
}

export default defineConfig({
  test: {
    sequence: { sequencer: SlowFirstSequencer },
    // lavapipe's faster shader JIT in every worker (tests/helpers/lavapipe-jit.ts: compiling
    // pipelines is most of the WebGPU files' time); RN_LAVAPIPE_OPT=1 keeps the driver's default.
    env: lavapipeJitEnv(),
  },
});
