// A seeded random number generator whose whole state is four 32-bit words, so a training run
// can save it in a checkpoint and a resumed run draws exactly what an uninterrupted one would.
// xoshiro128** (Blackman & Vigna): fast, 2^128 - 1 period, good enough for sampling batches,
// initialising weights and sampling tokens (not for cryptography). Seeds expand by splitmix32.

/** The state of an Rng as plain numbers (JSON-safe). */
export type RngState = [number, number, number, number];

function splitmix32(x: number): () => number {
  return () => {
    x = (x + 0x9e3779b9) | 0;
    let z = x;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
}

/** FNV-1a of a label: derives independent streams (`fork`) from names, not from call order. */
function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

export class Rng {
  private s: Uint32Array;

  /** From a seed (any safe integer; the same seed gives the same stream). */
  constructor(seed: number) {
    if (!Number.isSafeInteger(seed)) throw new RangeError(`a seed must be an integer, got ${seed}`);
    const next = splitmix32((seed | 0) ^ Math.floor(seed / 2 ** 32));
    this.s = Uint32Array.of(next(), next(), next(), next());
    if (this.s.every((w) => w === 0)) this.s[0] = 1;
  }

  static fromState(state: readonly number[]): Rng {
    if (state.length !== 4 || state.some((w) => !Number.isInteger(w) || w < 0 || w > 0xffffffff) || state.every((w) => w === 0)) {
      throw new RangeError(`an RNG state is four 32-bit words, not all zero; got [${state.join(', ')}]`);
    }
    const r = new Rng(0);
    r.s = Uint32Array.from(state);
    return r;
  }

  /** The state to save; `Rng.fromState` continues the stream from it. */
  state(): RngState {
    return [this.s[0]!, this.s[1]!, this.s[2]!, this.s[3]!];
  }

  /** An independent stream named `label`, seeded from this one's current state. */
  fork(label: string): Rng {
    const [a, b, c, d] = this.state();
    const r = new Rng(0);
    const next = splitmix32((a ^ Math.imul(b, 3) ^ Math.imul(c, 5) ^ Math.imul(d, 7) ^ hash32(label)) | 0);
    r.s = Uint32Array.of(next(), next(), next(), next());
    if (r.s.every((w) => w === 0)) r.s[0] = 1;
    return r;
  }

  /** A uniform 32-bit unsigned integer. */
  u32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1]!, 5), 7), 9) >>> 0;
    const t = s[1]! << 9;
    s[2]! ^= s[0]!;
    s[3]! ^= s[1]!;
    s[1]! ^= s[2]!;
    s[0]! ^= s[3]!;
    s[2]! ^= t;
    s[3] = rotl(s[3]!, 11);
    return result;
  }

  /** Uniform in [0, 1) with 53 random bits. */
  uniform(): number {
    return ((this.u32() >>> 5) * 67108864 + (this.u32() >>> 6)) / 9007199254740992;
  }

  /** A uniform integer in [0, n), without modulo bias. */
  int(n: number): number {
    if (!Number.isInteger(n) || n <= 0 || n > 2 ** 32) throw new RangeError(`int(n) needs an integer 1 <= n <= 2^32, got ${n}`);
    const limit = 2 ** 32 - (2 ** 32 % n);
    for (;;) {
      const x = this.u32();
      if (x < limit) return x % n;
    }
  }

  /** A standard normal deviate (Box-Muller; one value per call, so `state()` is the whole state). */
  normal(): number {
    let u = 0;
    while (u === 0) u = this.uniform();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.uniform());
  }
}

const rotl = (x: number, k: number): number => ((x << k) | (x >>> (32 - k))) >>> 0;
