// A hand-written CUDA kernel under the emitted-kernel contract (targets/emitted.ts): checks the
// runtime's side of it (parameter order buffers then scalars, i32 and f32 scalars, grid
// expressions over the scalars, dynamic shared memory above 48 KiB) on a real GPU, independent of
// the printer.
import { add, div, i32, v } from '../../compiler/kir.js';
import type { EmittedKernel } from '../../targets/emitted.js';
import { type CudaContext, evalGridExpr, loadEmitted } from './runner.js';

const THREADS = 256;
/** The kernel keeps its values 64 KiB into the dynamic block, so it needs > 48 KiB of it. */
const FAR = 16384;

export const SMOKE_KERNEL: EmittedKernel = {
  target: 'cuda',
  entry: 'retnetc_smoke_axpy',
  code: `// y[i] = a * x[i] + y[i], passed through dynamic shared memory (reversed within a block).
extern "C" __global__ void retnetc_smoke_axpy(const float* __restrict__ x, float* __restrict__ y, int n, float a) {
  extern __shared__ float rn_smem[];
  const int t = threadIdx.x;
  const int i = blockIdx.x * blockDim.x + t;
  rn_smem[t] = 0.0f;
  rn_smem[${FAR} + t] = i < n ? a * x[i] : 0.0f;
  __syncthreads();
  const int r = blockDim.x - 1 - t;
  const int j = blockIdx.x * blockDim.x + r;
  if (j < n) y[j] = rn_smem[${FAR} + r] + y[j] + rn_smem[r];
}
`,
  workgroup: [THREADS, 1, 1],
  buffers: [
    { name: 'x', type: 'f32', access: 'read', binding: 0 },
    { name: 'y', type: 'f32', access: 'read_write', binding: 1 },
  ],
  scalars: [
    { name: 'n', type: 'i32', offset: 2 },
    { name: 'a', type: 'f32', offset: 3 },
  ],
  grid: [div(add(v('n'), i32(THREADS - 1)), i32(THREADS)), i32(1), i32(1)],
  foldX: false,
  dynamicSharedBytes: (FAR + THREADS) * 4,
};

/** Runs the smoke kernel on n elements; returns the largest error against the host (0 expected). */
export async function runSmoke(ctx: CudaContext, n = 100_003): Promise<{ maxError: number; ms: number }> {
  const k = await loadEmitted(ctx, SMOKE_KERNEL);
  const { addon } = ctx;
  const x = new Float32Array(n);
  const y = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    x[i] = Math.fround(((i * 7919) % 1000) / 997 - 0.5);
    y[i] = Math.fround(((i * 104729) % 1000) / 991);
  }
  const a = Math.fround(1.25);
  const px = addon.alloc(n * 4);
  const py = addon.alloc(n * 4);
  try {
    addon.upload(px, x);
    addon.upload(py, y);
    const grid = SMOKE_KERNEL.grid.map((g) => evalGridExpr(g, { n })) as [number, number, number];
    const t0 = performance.now();
    addon.launch(k.fn, grid, SMOKE_KERNEL.workgroup, SMOKE_KERNEL.dynamicSharedBytes, [px, py, { i32: n }, { f32: a }]);
    addon.synchronize();
    const ms = performance.now() - t0;
    const out = new Float32Array(n);
    addon.download(py, out);
    let maxError = 0;
    for (let i = 0; i < n; i++) maxError = Math.max(maxError, Math.abs(out[i]! - Math.fround(Math.fround(a * x[i]!) + y[i]!)));
    return { maxError, ms };
  } finally {
    addon.free(px);
    addon.free(py);
  }
}
