// Which target a whole-model job (train, generate, demo) should run on when the user names none:
// the fastest that works here. A GPU (CUDA, then WebGPU on a hardware adapter) beats the native
// CPU target; WebGPU on a software adapter (lavapipe, SwiftShader) is slower than native, so it
// is passed over; the JavaScript executor is the last resort. Each candidate that is passed over
// keeps its one-line reason, so a command can say why it chose what it chose.
import { runnerOf } from './targets.js';

export interface TargetChoice {
  name: string;
  /** What runs it (compiler and cores, adapter, GPU). */
  detail: string;
  /** The faster targets passed over, each with why. */
  passedOver: { name: string; reason: string }[];
}

/** A WebGPU adapter that is the CPU in disguise. */
export const isSoftwareAdapter = (summary: string): boolean => /llvmpipe|lavapipe|swiftshader|software|\(fallback\)/i.test(summary);

const ORDER = ['cuda', 'webgpu', 'native', 'cpu'] as const;

export async function bestTarget(): Promise<TargetChoice> {
  const passedOver: TargetChoice['passedOver'] = [];
  for (const name of ORDER) {
    const a = await runnerOf(name).available();
    if (!a.ok) { passedOver.push({ name, reason: a.reason }); continue; }
    if (name === 'webgpu' && isSoftwareAdapter(a.detail)) {
      passedOver.push({ name, reason: `a software adapter (${a.detail}), slower than the native CPU target` });
      continue;
    }
    return { name, detail: a.detail, passedOver };
  }
  // cpu is always available; reaching here means the registry changed.
  throw new Error('internal: no target is available, not even cpu');
}
