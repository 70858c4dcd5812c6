// The native target's run-time errors: one line each (runtime/targets.ts lists NativeRunError as
// a user-facing error), shared by the single-kernel runner and the launch lists.
import type { Kernel } from '../../compiler/kir.js';
import type { NativeEntry } from '../../targets/native/printer.js';

export class NativeRunError extends Error {}

/** The line for a kernel's error record err (Int32Array(8), targets/native/printer.ts). */
export function outOfBoundsMessage(k: Kernel, entry: NativeEntry, err: Int32Array): string {
  const s = entry.sites[err[1]!]!;
  const [TX, TY] = k.workgroup;
  const t = err[7]!;
  const thread = t < 0 ? 'uniform code' : `thread (${t % TX},${Math.floor(t / TX) % TY},${Math.floor(t / (TX * TY))})`;
  return `out-of-bounds ${s.op} in kernel ${k.name}: ${s.kind} '${s.array}' index ${err[2]}, length ${err[3]} (workgroup (${err[4]},${err[5]},${err[6]}), ${thread})`;
}
