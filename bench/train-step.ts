// The training step's own cost beside the model (issue 10 item 1): cross-entropy with dlogits
// (models/train.ret cross_entropy) at B = 8, T = 256, vocab 256, and one AdamW step
// (adamw_step: norm, clip, update) at N = 2e5 (the tiny RetNet at vocab 256) and 2e7 (base),
// through the runtime's own calls (runtime/train/loss.ts, optimizer.ts). Prints the median wall
// time and the process CPU time per call (all threads; on a loaded machine the wall time
// includes waiting for cores, the CPU time does not).
// Usage: npx vite-node bench/train-step.ts [native|cpu|webgpu ...] (default native)
import { FlatParams } from '../runtime/train/flat-params.js';
import { crossEntropy } from '../runtime/train/loss.js';
import { AdamW } from '../runtime/train/optimizer.js';
import { openTarget } from '../runtime/targets.js';

const targets = process.argv.slice(2).length ? process.argv.slice(2) : ['native'];
const median = (xs: number[]): number => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function time(f: () => Promise<unknown>, runs: number): Promise<string> {
  await f();
  const wall: number[] = [], cpu: number[] = [];
  for (let i = 0; i < runs; i++) {
    const c0 = process.cpuUsage(), t0 = performance.now();
    await f();
    wall.push(performance.now() - t0);
    const c = process.cpuUsage(c0);
    cpu.push((c.user + c.system) / 1000);
  }
  return `${median(wall).toFixed(1)} ms wall, ${median(cpu).toFixed(1)} ms cpu`;
}

for (const target of targets) {
  const dev = openTarget(target);
  try {
    const B = 8, T = 256, V = 256;
    const logits = { shape: [B, T, V], data: Float32Array.from({ length: B * T * V }, (_, i) => Math.sin(i) * 3) };
    const tokens = { shape: [B, T], data: Int32Array.from({ length: B * T }, (_, i) => (i * 7) % V) };
    console.log(`${target}: cross-entropy + dlogits B=${B} T=${T} V=${V}: ${await time(() => crossEntropy(logits, tokens, dev.exec, target), 10)}`);
    for (const N of [200_000, 20_000_000]) {
      const fp = new FlatParams([{ name: 'w', shape: [N / 1000, 1000] }]);
      fp.data.fill(0.5);
      const opt = new AdamW(fp, dev.exec, { target });
      const g = Float32Array.from({ length: N }, (_, i) => Math.sin(i) * 1e-2);
      console.log(`${target}: AdamW step N=${N.toExponential(0)}: ${await time(() => opt.step(g, 1e-3), N > 1e6 ? 4 : 20)}`);
    }
  } finally {
    await dev.release();
  }
}
