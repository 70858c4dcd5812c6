// Half-precision storage (compiler/kir.ts, KBuffer.storage): conversions between numbers and
// the bits of IEEE binary16 (f16) and bfloat16 (bf16), as the CPU executor and the runtimes
// store them. To half: round to nearest even straight from the double (no double rounding
// through f32), past the largest finite value to +-inf, NaN to the canonical quiet NaN. From
// half: exact. runtime/io/safetensors.ts has the reference conversions these are tested against.
import type { KHalf } from '../compiler/kir.js';

const f64 = new Float64Array(1);
const f64Hi = new Uint32Array(f64.buffer);
const HI = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1 ? 1 : 0; // the high word of a double

/** Rounds x to a binary format with E exponent and M mantissa bits (nearest even); its bits. */
function toBits(x: number, E: number, M: number): number {
  const expMax = (1 << E) - 1;
  const bias = expMax >> 1;
  if (x !== x) return (expMax << M) | (1 << (M - 1));
  f64[0] = x;
  const hi = f64Hi[HI]!;
  const sign = hi >>> 31 ? 1 << (E + M) : 0;
  const a = Math.abs(x);
  if (a === 0) return sign;
  if (a === Infinity) return sign | (expMax << M);
  const ex = (hi >>> 20) & 0x7ff; // biased exponent of the double (0 for subnormal doubles, far below any half)
  const e = Math.max(ex - 1023, 1 - bias); // below the normal range the quantum stays 2^(1 - bias - M)
  const m = a * 2 ** (M - e); // exact: scaling by a power of two; m < 2^(M+1)
  let r = Math.floor(m);
  const frac = m - r;
  if (frac > 0.5 || (frac === 0.5 && (r & 1) === 1)) r++;
  // r = 2^(M+1) carries into the next binade: the encoding below handles it (mantissa 0, exponent + 1).
  if (r < 2 ** M) return sign | r; // subnormal (or zero)
  const field = e + bias + (r >= 2 ** (M + 1) ? 1 : 0);
  if (field >= expMax) return sign | (expMax << M);
  return sign | (field << M) | ((r >= 2 ** (M + 1) ? r / 2 : r) - 2 ** M);
}

/** f16 bits of x, round to nearest even. */
export const toF16Bits = (x: number): number => toBits(x, 5, 10);
/** bf16 bits of x, round to nearest even. */
export const toBF16Bits = (x: number): number => toBits(x, 8, 7);

let f16Table: Float32Array | undefined;
let bf16Table: Float32Array | undefined;

/** f16 bits -> value (a Float32Array indexed by the bits; exact). */
export function f16Values(): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) {
      const s = h & 0x8000 ? -1 : 1;
      const e = (h >> 10) & 0x1f;
      const m = h & 0x3ff;
      f16Table[h] = e === 0 ? s * m * 2 ** -24 : e === 0x1f ? (m ? NaN : s * Infinity) : s * (0x400 + m) * 2 ** (e - 25);
    }
  }
  return f16Table;
}

/** bf16 bits -> value (the top half of an f32; exact). */
export function bf16Values(): Float32Array {
  if (!bf16Table) {
    const u = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) u[h] = h << 16;
    bf16Table = new Float32Array(u.buffer);
  }
  return bf16Table;
}

export const halfValues = (kind: KHalf): Float32Array => (kind === 'f16' ? f16Values() : bf16Values());
export const toHalfBits = (kind: KHalf): ((x: number) => number) => (kind === 'f16' ? toF16Bits : toBF16Bits);

/** The first `n` values of `data` (default: all) rounded to `kind`, as bits. */
export function toHalfArray(data: ArrayLike<number>, kind: KHalf, n = data.length): Uint16Array {
  const f = toHalfBits(kind);
  const out = new Uint16Array(n);
  for (let i = 0; i < n; i++) out[i] = f(data[i]!);
  return out;
}

/** The values of the first `n` half elements of `bits` (default: all), as f32 (exact). */
export function fromHalfArray(bits: Uint16Array, kind: KHalf, n = bits.length): Float32Array {
  const t = halfValues(kind);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = t[bits[i]!]!;
  return out;
}
