// The process-wide WebGPU device for tests (runtime/webgpu/runner.ts runtimeDevice), acquired
// once per test file with a timeout. Without an adapter the caller skips, printing the reason,
// unless REQUIRE_WEBGPU=1 (CI), which makes that a failure (see `requireGpu`).
import { WebGPUUnavailableError, type AcquiredWebGPU } from '../../runtime/webgpu/device.js';
import { runtimeDevice } from '../../runtime/webgpu/runner.js';

export const REQUIRE_WEBGPU = process.env['REQUIRE_WEBGPU'] === '1';
const ACQUIRE_TIMEOUT_MS = 30_000;

export interface TestGpu {
  gpu: AcquiredWebGPU | null;
  /** Why there is no device (empty when there is one). */
  unavailable: string;
  /** Anything else that went wrong while acquiring (rethrown by requireGpu). */
  unexpected: unknown;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Acquires the runtime device; logs `[tag] <adapter>` or why it is skipped. */
export async function acquireTestGpu(tag: string): Promise<TestGpu> {
  const out: TestGpu = { gpu: null, unavailable: '', unexpected: null };
  try {
    out.gpu = await withTimeout(runtimeDevice(), ACQUIRE_TIMEOUT_MS, 'acquireWebGPU()');
  } catch (e) {
    if (e instanceof WebGPUUnavailableError) out.unavailable = e.message;
    else if (e instanceof Error && /timed out/.test(e.message)) out.unavailable = `no WebGPU adapter: ${e.message}`;
    else out.unexpected = e;
  }
  if (!out.gpu && out.unavailable) console.warn(`[${tag}] ${REQUIRE_WEBGPU ? 'FAIL (REQUIRE_WEBGPU=1)' : 'skipping WebGPU'}: ${out.unavailable}`);
  if (out.gpu) console.log(`[${tag}] ${out.gpu.info.summary}; maxComputeWorkgroupStorageSize=${out.gpu.info.limits['maxComputeWorkgroupStorageSize']}`);
  return out;
}

/** The body of the "a WebGPU adapter is available" test: fails under REQUIRE_WEBGPU=1, else skips. */
export function requireGpu(t: TestGpu, skip: () => void): void {
  if (t.unexpected) throw t.unexpected;
  if (!t.gpu) {
    if (REQUIRE_WEBGPU) throw new Error(`REQUIRE_WEBGPU=1 but ${t.unavailable}`);
    skip();
  }
}
