// Faster shader JIT for lavapipe (Mesa's software Vulkan, what Dawn runs on without a GPU), for
// test files that compile many distinct pipelines. Import it before the WebGPU device is created
// (first import of the test file): llvmpipe reads it when the Vulkan driver initialises.
//
// On lavapipe most of a new pipeline's cost is LLVM compiling it at its first dispatch, seconds
// of CPU each (constant-bound loops over K or V, unrolled by NIR, make large functions).
// LP_NATIVE_VECTOR_WIDTH=128 compiles 4 invocations per SIMD instruction instead of 8 (AVX2):
// half the vector code to generate. Measured on tests/webgpu-schedules.test.ts (one seed, Mesa's
// shader disk cache off): the first (compiling) case of each random group 465 s -> 158 s in all,
// the fixed real-size cases unchanged (14.4 s warm before, 14.6 s cold after); the file 608 s ->
// 412 s. (GALLIVM_PERF=nopt compiles faster still but its unoptimised kernels ran the larger
// cases 2-4x slower: 202 s for the same groups.) The kernels compute the same values, every
// result is still checked against the float64 truth. A setting already in the environment is
// kept, and RN_LAVAPIPE_OPT=1 keeps the driver's default (e.g. to time kernels). Other drivers
// ignore the variable.

const SETTINGS: Readonly<Record<string, string>> = { LP_NATIVE_VECTOR_WIDTH: '128' };

/** The settings to add to `env`: those it does not set already; none with RN_LAVAPIPE_OPT=1. */
export function lavapipeJitEnv(env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  if (env['RN_LAVAPIPE_OPT'] === '1') return {};
  return Object.fromEntries(Object.entries(SETTINGS).filter(([k]) => env[k] === undefined));
}

// vitest.config.ts gives them to every test worker (and so to the CLI runs tests spawn); a file
// that imports this module first gets them even when run another way.
Object.assign(process.env, lavapipeJitEnv());

/** The settings in effect (name=value), for printouts of WebGPU timings. */
export const lavapipeJit: string[] = Object.entries(SETTINGS).filter(([k, v]) => process.env[k] === v).map(([k, v]) => `${k}=${v}`);
