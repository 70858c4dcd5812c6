// A per-device pool of GPU buffers by usage and size class, so repeated runs (and runs with
// other T, B, H of similar size) reuse buffers instead of allocating. Size classes are four
// per octave above 256 bytes (at most 25% slack); callers bind the exact byte size they need.

export interface PoolStats {
  /** Buffers handed out that came from the pool. */
  hits: number;
  /** Buffers that had to be created. */
  misses: number;
  /** Buffers idle in the pool now, and their bytes. */
  idle: number;
  idleBytes: number;
  /** Buffers created over the pool's life, and their bytes. */
  created: number;
  createdBytes: number;
}

export function sizeClass(bytes: number, maxBufferSize = Infinity): number {
  const n = Math.max(4, Math.ceil(bytes / 4) * 4);
  let c: number;
  if (n <= 256) c = 256;
  else {
    const base = 2 ** Math.floor(Math.log2(n));
    const step = base / 4;
    c = Math.ceil(n / step) * step;
  }
  return Math.max(n, Math.min(c, Math.floor(maxBufferSize / 4) * 4));
}

export class BufferPool {
  private readonly idle = new Map<string, GPUBuffer[]>();
  private readonly sizeOf = new WeakMap<GPUBuffer, number>();
  private readonly stats = { hits: 0, misses: 0, created: 0, createdBytes: 0 };
  private idleBytes = 0;

  constructor(
    readonly device: GPUDevice,
    /** Idle buffers beyond this many bytes are destroyed on release. */
    readonly maxIdleBytes = 512 * 1024 * 1024,
  ) {}

  private key(usage: number, size: number): string {
    return `${usage}:${size}`;
  }

  /** A buffer of at least `bytes` bytes with exactly `usage`; it may hold old data. */
  acquire(bytes: number, usage: number, label?: string): GPUBuffer {
    const size = sizeClass(bytes, this.device.limits.maxBufferSize);
    const list = this.idle.get(this.key(usage, size));
    const b = list?.pop();
    if (b) {
      this.stats.hits++;
      this.idleBytes -= size;
      return b;
    }
    this.stats.misses++;
    const desc: GPUBufferDescriptor = { size, usage };
    if (label) desc.label = label;
    const nb = this.device.createBuffer(desc);
    this.sizeOf.set(nb, size);
    this.stats.created++;
    this.stats.createdBytes += size;
    return nb;
  }

  /** Returns a buffer to the pool (the caller must be done with it on the queue's timeline). */
  release(b: GPUBuffer): void {
    const size = this.sizeOf.get(b);
    if (size === undefined) { b.destroy(); return; }
    if (b.mapState !== 'unmapped') b.unmap();
    if (this.idleBytes + size > this.maxIdleBytes) { b.destroy(); return; }
    const k = this.key(b.usage, size);
    let list = this.idle.get(k);
    if (!list) this.idle.set(k, (list = []));
    list.push(b);
    this.idleBytes += size;
  }

  /** Destroys every idle buffer (after an out-of-memory error, or to give memory back). */
  trim(): void {
    for (const list of this.idle.values()) for (const b of list) b.destroy();
    this.idle.clear();
    this.idleBytes = 0;
  }

  getStats(): PoolStats {
    let idle = 0;
    for (const l of this.idle.values()) idle += l.length;
    return { ...this.stats, idle, idleBytes: this.idleBytes };
  }
}
