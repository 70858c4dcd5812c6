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

/** The settings applied (name=value), empty where none were. */
export const lavapipeJit: string[] = [];

if (process.env['RN_LAVAPIPE_OPT'] !== '1') {
  for (const [k, v] of [['LP_NATIVE_VECTOR_WIDTH', '128']] as const) {
    if (process.env[k] === undefined) {
      process.env[k] = v;
      lavapipeJit.push(`${k}=${v}`);
    }
  }
}
