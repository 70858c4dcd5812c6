// Compute pipelines cached per device by what the shader really depends on: the WGSL text
// (hashed, then compared), the entry point and the binding layout. Sizes travel in the uniform
// buffer, so one pipeline serves every B, H and T of a kernel. Layouts are explicit (from the
// emitted bindings), so a binding the shader happens not to use is still accepted.
import type { EmittedKernel } from '../../targets/emitted.js';
import { oneLine, WebGPURunError } from './errors.js';

/** FNV-1a over UTF-16 code units, two 32-bit lanes: 16 hex digits. */
export function hashText(s: string): string {
  let h1 = 0x811c9dc5;
  let h2 = 0x01000193 ^ s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 0x01000193);
    h2 = Math.imul(h2 ^ c, 0x5bd1e995) ^ (h2 >>> 15);
  }
  return (h1 >>> 0).toString(16).padStart(8, '0') + (h2 >>> 0).toString(16).padStart(8, '0');
}

export interface CachedPipeline {
  pipeline: GPUComputePipeline;
  layout: GPUBindGroupLayout;
  key: string;
}

interface Entry { code: string; promise: Promise<CachedPipeline> }

export interface PipelineCacheStats {
  /** Pipelines compiled (cache misses), and lookups served from the cache. */
  compiled: number;
  hits: number;
  size: number;
}

function layoutSignature(e: EmittedKernel): string {
  const parts = [...e.buffers]
    .sort((a, b) => a.binding - b.binding)
    .map((b) => `${b.binding}${b.access === 'read' ? 'r' : 'w'}`);
  if (e.uniform) parts.push(`${e.uniform.binding}u`);
  return parts.join(',');
}

/** "line 12:5: message [`source line`]" for each error (warnings only if there is no error). */
export function formatCompilationMessages(code: string, messages: readonly GPUCompilationMessage[]): string {
  const lines = code.split('\n');
  const errs = messages.filter((m) => m.type === 'error');
  const shown = (errs.length ? errs : messages).slice(0, 4);
  const text = shown.map((m) => {
    const src = m.lineNum > 0 ? lines[m.lineNum - 1]?.trim() : undefined;
    const where = m.lineNum > 0 ? `line ${m.lineNum}:${m.linePos}` : 'module';
    return `${where}: ${oneLine(m.message)}${src ? ` [\`${src.length > 100 ? `${src.slice(0, 100)}...` : src}\`]` : ''}`;
  });
  if ((errs.length ? errs : messages).length > shown.length) text.push(`(+${(errs.length ? errs : messages).length - shown.length} more)`);
  return text.join('; ');
}

export class PipelineCache {
  private readonly entries = new Map<string, Entry>();
  private readonly layouts = new Map<string, { bgl: GPUBindGroupLayout; pl: GPUPipelineLayout }>();
  private compiled = 0;
  private hits = 0;

  constructor(
    readonly device: GPUDevice,
    /** Pipelines kept; the least recently used beyond this are dropped. */
    readonly maxEntries = 2048,
  ) {}

  private layoutFor(e: EmittedKernel): { bgl: GPUBindGroupLayout; pl: GPUPipelineLayout } {
    const sig = layoutSignature(e);
    let l = this.layouts.get(sig);
    if (!l) {
      const entries: GPUBindGroupLayoutEntry[] = e.buffers.map((b) => ({
        binding: b.binding,
        visibility: GPUShaderStage.COMPUTE,
        buffer: { type: b.access === 'read' ? 'read-only-storage' : 'storage' },
      }));
      if (e.uniform) entries.push({ binding: e.uniform.binding, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'uniform' } });
      const bgl = this.device.createBindGroupLayout({ label: `retnetc ${sig}`, entries });
      const pl = this.device.createPipelineLayout({ bindGroupLayouts: [bgl] });
      this.layouts.set(sig, (l = { bgl, pl }));
    }
    return l;
  }

  /** The pipeline of an emitted kernel; compiles at most once per distinct shader. */
  get(e: EmittedKernel, kernelName: string): Promise<CachedPipeline> {
    const key = `${hashText(e.code)}:${e.entry}:${layoutSignature(e)}`;
    const hit = this.entries.get(key);
    if (hit && hit.code === e.code) {
      this.hits++;
      // Most recently used last (Map keeps insertion order).
      this.entries.delete(key);
      this.entries.set(key, hit);
      return hit.promise;
    }
    while (this.entries.size >= this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
    this.compiled++;
    const promise = this.compile(e, key, kernelName);
    const entry: Entry = { code: e.code, promise };
    this.entries.set(key, entry);
    // A failed compile is not cached (the next run reports it again).
    promise.catch(() => { if (this.entries.get(key) === entry) this.entries.delete(key); });
    return promise;
  }

  private async compile(e: EmittedKernel, key: string, kernelName: string): Promise<CachedPipeline> {
    const { device } = this;
    const { bgl, pl } = this.layoutFor(e);
    device.pushErrorScope('validation');
    const module = device.createShaderModule({ label: kernelName, code: e.code });
    let pipeline: GPUComputePipeline | undefined;
    let pipelineError: unknown;
    const created = device
      .createComputePipelineAsync({ label: kernelName, layout: pl, compute: { module, entryPoint: e.entry } })
      .then((p) => { pipeline = p; }, (err: unknown) => { pipelineError = err; });
    const scope = device.popErrorScope();
    const [, scopeError] = await Promise.all([created, scope]);
    if (!pipeline || scopeError || pipelineError) {
      const info = await module.getCompilationInfo();
      const msgs = info.messages.filter((m) => m.type === 'error');
      const detail = msgs.length
        ? formatCompilationMessages(e.code, info.messages)
        : oneLine((scopeError as GPUError | null)?.message ?? pipelineError ?? 'pipeline creation failed');
      throw new WebGPURunError('shader', `WGSL of kernel ${kernelName} (entry ${e.entry}) was rejected: ${detail}`);
    }
    return { pipeline, layout: bgl, key };
  }

  getStats(): PipelineCacheStats {
    return { compiled: this.compiled, hits: this.hits, size: this.entries.size };
  }

  clear(): void {
    this.entries.clear();
  }
}
