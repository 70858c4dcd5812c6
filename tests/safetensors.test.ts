import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  type DType, type Tensor, SafetensorsError, bf16ToF32, f16ToF32, fromFloat64, numberToBF16, numberToF16,
  parseSafetensors, readSafetensorsFile, serializeSafetensors, toFloat64, writeSafetensorsFile,
} from '../runtime/io/safetensors.js';

const DTYPES: DType[] = ['F32', 'F16', 'BF16', 'F64', 'I32', 'I64'];
const ITEMSIZE: Record<DType, number> = { F32: 4, F16: 2, BF16: 2, F64: 8, I32: 4, I64: 8 };

function tensorFromBytes(dtype: DType, shape: number[], bytes: Uint8Array): Tensor {
  const buf = bytes.slice().buffer;
  const data = { F32: Float32Array, F64: Float64Array, F16: Uint16Array, BF16: Uint16Array, I32: Int32Array, I64: BigInt64Array }[dtype];
  return { dtype, shape, data: new data(buf) };
}
const rawBytes = (t: Tensor) => new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);

/** Builds a file from literal header text and a data section (for malformed inputs). */
function rawFile(header: string | Uint8Array, data: number | Uint8Array = 0, declaredLen?: bigint): Uint8Array {
  const h = typeof header === 'string' ? new TextEncoder().encode(header) : header;
  const d = typeof data === 'number' ? new Uint8Array(data) : data;
  const out = new Uint8Array(8 + h.length + d.length);
  new DataView(out.buffer).setBigUint64(0, declaredLen ?? BigInt(h.length), true);
  out.set(h, 8);
  out.set(d, 8 + h.length);
  return out;
}
const entry = (dtype: string, shape: unknown, offsets: unknown) =>
  JSON.stringify({ dtype, shape, data_offsets: offsets });

function expectError(f: () => unknown, message: string | RegExp) {
  let err: unknown;
  try { f(); } catch (e) { err = e; }
  expect(err).toBeInstanceOf(SafetensorsError);
  const msg = (err as Error).message;
  expect(msg).not.toContain('\n');
  if (typeof message === 'string') expect(msg).toBe(message);
  else expect(msg).toMatch(message);
}

const nameArb = fc.string({ unit: 'binary', minLength: 1, maxLength: 12 }).filter((s) => s !== '__metadata__');
const tensorArb: fc.Arbitrary<Tensor> = fc
  .record({ dtype: fc.constantFrom(...DTYPES), shape: fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 4 }) })
  .chain(({ dtype, shape }) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const len = n * ITEMSIZE[dtype];
    return fc.uint8Array({ minLength: len, maxLength: len }).map((b) => tensorFromBytes(dtype, shape, b));
  });
const tensorsArb = fc
  .uniqueArray(fc.tuple(nameArb, tensorArb), { selector: ([n]) => n, maxLength: 6 })
  .map((es) => new Map(es));
const metadataArb = fc.option(
  fc.uniqueArray(fc.tuple(fc.string({ unit: 'binary' }), fc.string({ unit: 'binary' })), { selector: ([k]) => k, maxLength: 4 })
    .map((kv) => Object.fromEntries(kv) as Record<string, string>),
  { nil: undefined },
);

function expectSameContents(got: Map<string, Tensor>, want: Map<string, Tensor>) {
  expect([...got.keys()].sort()).toEqual([...want.keys()].sort());
  for (const [name, t] of want) {
    const g = got.get(name)!;
    expect(g.dtype).toBe(t.dtype);
    expect(g.shape).toEqual(t.shape);
    expect(g.data.constructor).toBe(t.data.constructor);
    expect(g.data.byteOffset).toBe(0); // fresh, aligned buffer
    expect(rawBytes(g)).toEqual(rawBytes(t)); // bit-exact, NaN payloads included
  }
}

describe('round trip', () => {
  it('every dtype, any shape (0-d, zero-sized), random bits, metadata', () => {
    fc.assert(fc.property(tensorsArb, metadataArb, (tensors, metadata) => {
      const bytes = serializeSafetensors(tensors, metadata);
      const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
      expect(n % 8).toBe(0);
      const parsed = parseSafetensors(bytes);
      expectSameContents(parsed.tensors, tensors);
      expect(parsed.metadata).toEqual(metadata ?? {});
      // Deterministic regardless of insertion order or Map vs Record.
      const reversed = new Map([...tensors].reverse());
      expect(serializeSafetensors(reversed, metadata)).toEqual(bytes);
      expect(serializeSafetensors(parsed.tensors, parsed.metadata)).toEqual(bytes);
      // Every tensor is aligned to its item size within the file.
      const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
      for (const [name, t] of tensors) expect((8 + n + header[name].data_offsets[0]) % ITEMSIZE[t.dtype]).toBe(0);
    }), { numRuns: 300 });
  });

  it('accepts a Record and parses from an unaligned Buffer view', () => {
    const t = { a: fromFloat64([1, 2, 3], [3], 'F64'), b: fromFloat64([7], [], 'I64') };
    const bytes = serializeSafetensors(t, { k: 'v' });
    const shifted = new Uint8Array(bytes.length + 3);
    shifted.set(bytes, 3);
    const { tensors, metadata } = parseSafetensors(shifted.subarray(3));
    expect(Array.from(toFloat64(tensors.get('a')!))).toEqual([1, 2, 3]);
    expect(tensors.get('b')).toEqual({ dtype: 'I64', shape: [], data: new BigInt64Array([7n]) });
    expect(metadata).toEqual({ k: 'v' });
  });

  it('empty file content', () => {
    const bytes = serializeSafetensors(new Map());
    expect(bytes.length).toBe(16);
    expect(parseSafetensors(bytes)).toEqual({ tensors: new Map(), metadata: {} });
  });

  it('writer rejects bad tensors', () => {
    expectError(() => serializeSafetensors({ x: { dtype: 'F32', shape: [2, 2], data: new Float32Array(3) } }),
      'tensor "x": shape [2,2] needs 4 elements but data has 3');
    expectError(() => serializeSafetensors({ x: { dtype: 'F16', shape: [1], data: new Float32Array(1) } }),
      'tensor "x": F16 data must be a Uint16Array, got Float32Array');
    expectError(() => serializeSafetensors({ '': fromFloat64([], [0], 'F32') }), 'tensor name is empty');
    expectError(() => serializeSafetensors({ x: { dtype: 'F32', shape: [65536, 65536], data: new Float32Array(0) } }),
      'tensor "x": shape [65536,65536] has 4294967296 elements, more than the 2^31 a JS typed array may hold');
    expectError(() => serializeSafetensors({}, { k: 3 as unknown as string }), 'metadata value for "k" must be a string, got 3');
  });
});

// Independent reference: nearest of all finite non-negative values of the format, ties to even bits.
function referenceRound(decode: (b: number) => number, maxBits: number) {
  const values = Array.from({ length: maxBits + 1 }, (_, b) => decode(b));
  const top = values[maxBits]!;
  const overflow = top + (top - values[maxBits - 1]!) / 2;
  return (x: number): number => {
    if (Number.isNaN(x)) return -1;
    const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
    const a = Math.abs(x);
    if (a >= overflow) return sign | (maxBits + 1); // Inf
    let lo = 0, hi = maxBits;
    while (lo < hi) { const mid = (lo + hi + 1) >> 1; if (values[mid]! <= a) lo = mid; else hi = mid - 1; }
    if (lo === maxBits || values[lo] === a) return sign | lo;
    const dLo = a - values[lo]!, dHi = values[lo + 1]! - a;
    return sign | (dLo < dHi || (dLo === dHi && lo % 2 === 0) ? lo : lo + 1);
  };
}

describe('f16 / bf16 rounding', () => {
  it('hand-checked values', () => {
    expect(numberToF16(1 / 3)).toBe(0x3555);
    expect(numberToF16(65504)).toBe(0x7bff);
    expect(numberToF16(65519.99)).toBe(0x7bff);
    expect(numberToF16(65520)).toBe(0x7c00); // halfway to the next binade: rounds to even = Inf
    expect(numberToF16(1e9)).toBe(0x7c00);
    expect(numberToF16(-Infinity)).toBe(0xfc00);
    expect(numberToF16(2 ** -24)).toBe(0x0001); // smallest subnormal
    expect(numberToF16(2 ** -25)).toBe(0x0000); // tie -> even (zero)
    expect(numberToF16(2 ** -25 * 1.0001)).toBe(0x0001);
    expect(numberToF16(3 * 2 ** -25)).toBe(0x0002); // tie between 1 and 2 -> 2
    expect(numberToF16(1023 * 2 ** -24)).toBe(0x03ff); // largest subnormal
    expect(numberToF16(2 ** -14 - 2 ** -26)).toBe(0x0400); // rounds up into the normal range
    expect(numberToF16(-0)).toBe(0x8000);
    expect(numberToF16(NaN)).toBe(0x7e00);
    expect(numberToF16(1 + 2 ** -11)).toBe(0x3c00); // tie -> even
    expect(numberToF16(1 + 3 * 2 ** -11)).toBe(0x3c02);
    expect(f16ToF32(0x3555)).toBe(0.333251953125);
    expect(f16ToF32(0x0001)).toBe(2 ** -24);
    expect(f16ToF32(0x7c00)).toBe(Infinity);
    expect(f16ToF32(0x7e00)).toBeNaN();
    expect(Object.is(f16ToF32(0x8000), -0)).toBe(true);

    expect(numberToBF16(1 / 3)).toBe(0x3eab);
    expect(numberToBF16(1 + 2 ** -8)).toBe(0x3f80); // tie -> even (1.0)
    expect(numberToBF16(1 + 3 * 2 ** -8)).toBe(0x3f82); // tie -> even (up)
    expect(numberToBF16(1 + 2 ** -8 + 2 ** -30)).toBe(0x3f81); // via f32 would double-round to 1.0
    expect(numberToBF16(2 ** -133)).toBe(0x0001);
    expect(numberToBF16(3.4e38)).toBe(0x7f80); // past max finite + half ulp
    expect(numberToBF16(3.3895313892515355e38)).toBe(0x7f7f);
    expect(numberToBF16(NaN)).toBe(0x7fc0);
    expect(bf16ToF32(0x3f80)).toBe(1);
    expect(bf16ToF32(0xff80)).toBe(-Infinity);
  });

  const formats = [
    { name: 'f16', enc: numberToF16, dec: f16ToF32, maxBits: 0x7bff },
    { name: 'bf16', enc: numberToBF16, dec: bf16ToF32, maxBits: 0x7f7f },
  ];
  for (const { name, enc, dec, maxBits } of formats) {
    it(`${name} matches an exhaustive nearest-even reference`, () => {
      const ref = referenceRound(dec, maxBits);
      const inRange = fc.double({ min: -dec(maxBits) * 1.01, max: dec(maxBits) * 1.01, noNaN: true });
      // Exact midpoints between neighbours, and values a hair off them.
      const midpoints = fc.tuple(fc.integer({ min: 0, max: maxBits }), fc.constantFrom(-1, 0, 1), fc.boolean())
        .map(([b, nudge, neg]) => {
          const mid = (dec(b) + dec(b + 1)) / 2;
          const v = nudge === 0 ? mid : mid * (1 + nudge * 2 ** -40);
          return neg ? -v : v;
        });
      fc.assert(fc.property(fc.oneof(fc.double({ noNaN: true }), inRange, midpoints), (x) => {
        expect(enc(x)).toBe(ref(x));
      }), { numRuns: 20000 });
      // Every finite value round trips exactly.
      for (let b = 0; b <= 0xffff; b++) if ((b & 0x7fff) <= maxBits + 1) expect(enc(dec(b))).toBe(b);
    });
  }
});

describe('conversions', () => {
  it('fromFloat64 / toFloat64 for every dtype', () => {
    expect(Array.from(toFloat64(fromFloat64([1 / 3], [1], 'F32')))).toEqual([Math.fround(1 / 3)]);
    expect(fromFloat64([1 / 3, 65520], [2], 'F16').data).toEqual(new Uint16Array([0x3555, 0x7c00]));
    expect(Array.from(toFloat64(fromFloat64([1.5, -2], [1, 2], 'BF16')))).toEqual([1.5, -2]);
    expect(Array.from(toFloat64(fromFloat64([-(2 ** 31), 2 ** 31 - 1], [2], 'I32')))).toEqual([-(2 ** 31), 2 ** 31 - 1]);
    expect(fromFloat64([2 ** 62, -3], [2], 'I64').data).toEqual(new BigInt64Array([2n ** 62n, -3n]));
    expect(Array.from(toFloat64({ dtype: 'I64', shape: [1], data: new BigInt64Array([2n ** 53n + 1n]) }))).toEqual([2 ** 53]);
    expect(fromFloat64([], [2, 0], 'F64').shape).toEqual([2, 0]);
  });

  it('rejects what cannot be represented', () => {
    expectError(() => fromFloat64([1.5], [1], 'I32'), 'fromFloat64: value 1.5 at index 0 is not an integer, cannot store as I32');
    expectError(() => fromFloat64([0, NaN], [2], 'I64'), 'fromFloat64: value NaN at index 1 is not an integer, cannot store as I64');
    expectError(() => fromFloat64([2 ** 31], [1], 'I32'), 'fromFloat64: value 2147483648 at index 0 is out of range for I32');
    expectError(() => fromFloat64([2 ** 63], [1], 'I64'), 'fromFloat64: value 9223372036854776000 at index 0 is out of range for I64');
    expectError(() => fromFloat64([1, 2], [3], 'F32'), 'fromFloat64: shape [3] needs 3 values but got 2');
    expectError(() => fromFloat64([], [-1], 'F32'), 'fromFloat64: shape must be an array of non-negative integers, got [-1]');
    expectError(() => fromFloat64([], [2 ** 31 + 1], 'F32'),
      'fromFloat64: shape [2147483649] has 2147483649 elements, more than the 2^31 a JS typed array may hold');
    expectError(() => fromFloat64([], [0], 'U8' as DType),
      'fromFloat64: unsupported dtype "U8" (supported: F32, F16, BF16, F64, I32, I64)');
  });
});

describe('parser rejections', () => {
  const parse = (b: Uint8Array) => () => parseSafetensors(b, { source: 'in.safetensors' });
  const ok = `{"a":${entry('F32', [2], [0, 8])}}`;

  it('sanity: the base case parses', () => {
    expect(parseSafetensors(rawFile(ok, 8)).tensors.get('a')!.shape).toEqual([2]);
  });
  it('empty file and 7 bytes', () => {
    expectError(parse(new Uint8Array(0)), 'in.safetensors: too short: 0 bytes, but a safetensors file starts with an 8-byte header length');
    expectError(parse(new Uint8Array(7)), 'in.safetensors: too short: 7 bytes, but a safetensors file starts with an 8-byte header length');
  });
  it('header length past end of file', () => {
    expectError(parse(rawFile(new Uint8Array(100), 0, 1024n)),
      'in.safetensors: truncated file: header says 1024 bytes of header but only 100 bytes follow');
  });
  it('header length huge', () => {
    expectError(parse(rawFile(ok, 8, 2n ** 64n - 1n)),
      'in.safetensors: header length 18446744073709551615 exceeds the limit of 100000000 bytes');
    expectError(() => parseSafetensors(rawFile(ok, 8), { maxHeaderBytes: 16 }), /^header length \d+ exceeds the limit of 16 bytes$/);
  });
  it('non-UTF-8 header', () => {
    expectError(parse(rawFile(new Uint8Array([0x7b, 0xff, 0x7d]))), 'in.safetensors: header is not valid UTF-8');
    expectError(parse(rawFile(new Uint8Array([0x7b, 0x22, 0xc3, 0x22, 0x7d]))), 'in.safetensors: header is not valid UTF-8');
  });
  it('bad JSON, JSON array, other non-objects', () => {
    expectError(parse(rawFile('{"a":\n}')), /^in\.safetensors: header is not valid JSON \(".*"\)$/);
    expectError(parse(rawFile('')), /^in\.safetensors: header is not valid JSON/);
    expectError(parse(rawFile('[]')), 'in.safetensors: header is not a JSON object (got an array)');
    expectError(parse(rawFile('null')), 'in.safetensors: header is not a JSON object (got null)');
    expectError(parse(rawFile('"x"')), 'in.safetensors: header is not a JSON object (got string)');
    expectError(parse(rawFile(' {}')), `in.safetensors: header must start with '{' (got " ")`);
    expectError(parse(rawFile('\ufeff{}')), /^in\.safetensors: header is not valid JSON/);
  });
  it('duplicate keys, at top level and nested', () => {
    expectError(parse(rawFile(`{"a":${entry('F32', [1], [0, 4])},"\\u0061":${entry('F32', [1], [4, 8])}}`, 8)),
      'in.safetensors: header has duplicate key "a"');
    expectError(parse(rawFile(`{"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 8)),
      'in.safetensors: header has duplicate key "dtype"');
    expectError(parse(rawFile(`{"__metadata__":{"k":"1","k":"2"}}`)), 'in.safetensors: header has duplicate key "k"');
    // Same string as a key and as a value is fine.
    expect(parseSafetensors(rawFile(`{"__metadata__":{"k":"k","v":"k"}}`)).metadata).toEqual({ k: 'k', v: 'k' });
  });
  it('metadata must be string -> string', () => {
    expectError(parse(rawFile(`{"__metadata__":{"k":1}}`)), 'in.safetensors: __metadata__ value for "k" must be a string, got 1');
    expectError(parse(rawFile(`{"__metadata__":[]}`)), 'in.safetensors: __metadata__ must be an object of string values, got []');
    expectError(parse(rawFile(`{"__metadata__":null}`)), 'in.safetensors: __metadata__ must be an object of string values, got null');
    expect(parseSafetensors(rawFile(`{"__metadata__":{"__proto__":"x"}}`)).metadata).toEqual(JSON.parse('{"__proto__":"x"}'));
  });
  it('unknown dtype', () => {
    expectError(parse(rawFile(`{"a":${entry('U8', [8], [0, 8])}}`, 8)),
      'in.safetensors: tensor "a": unsupported dtype "U8" (supported: F32, F16, BF16, F64, I32, I64)');
  });
  it('entry fields', () => {
    expectError(parse(rawFile(`{"a":{"dtype":"F32","shape":[2]}}`, 8)), 'in.safetensors: tensor "a": missing field "data_offsets"');
    expectError(parse(rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}}`, 8)),
      'in.safetensors: tensor "a": unexpected field "x" (expected exactly dtype, shape, data_offsets)');
    expectError(parse(rawFile(`{"a":3}`)), 'in.safetensors: tensor "a": entry must be an object, got 3');
    expectError(parse(rawFile(`{"":${entry('F32', [2], [0, 8])}}`, 8)), 'in.safetensors: tensor name is empty');
  });
  it('negative, fractional, non-integer shapes', () => {
    const bad = (shape: string) => parse(rawFile(`{"a":{"dtype":"F32","shape":${shape},"data_offsets":[0,8]}}`, 8));
    expectError(bad('[-2]'), 'in.safetensors: tensor "a": shape must be an array of non-negative integers, got [-2]');
    expectError(bad('[1.5]'), 'in.safetensors: tensor "a": shape must be an array of non-negative integers, got [1.5]');
    expectError(bad('["2"]'), 'in.safetensors: tensor "a": shape must be an array of non-negative integers, got ["2"]');
    expectError(bad('2'), 'in.safetensors: tensor "a": shape must be an array of non-negative integers, got 2');
    expectError(bad('[2.0]'), 'in.safetensors: header number "2.0" must be written as a plain integer');
    expectError(bad('[2e0]'), 'in.safetensors: header number "2e0" must be written as a plain integer');
    expectError(parse(rawFile(`{"a":${entry('F32', [65536, 65536], [0, 0])}}`)),
      'in.safetensors: tensor "a": shape [65536,65536] has 4294967296 elements, more than the 2^31 a JS typed array may hold');
  });
  it('offsets malformed or out of bounds', () => {
    expectError(parse(rawFile(`{"a":${entry('F32', [2], [0, 16])}}`, 8)),
      'in.safetensors: tensor "a": data_offsets [0, 16] run past the end of the 8-byte data section (truncated file?)');
    expectError(parse(rawFile(`{"a":${entry('F32', [0], [8, 0])}}`, 8)), 'in.safetensors: tensor "a": data_offsets [8, 0] has begin > end');
    expectError(parse(rawFile(`{"a":${entry('F32', [2], [0])}}`, 8)),
      'in.safetensors: tensor "a": data_offsets must be [begin, end] of non-negative integers, got [0]');
    expectError(parse(rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,18446744073709551616]}}`, 8)),
      'in.safetensors: tensor "a": data_offsets must be [begin, end] of non-negative integers, got [0,18446744073709552000]');
  });
  it('size mismatch', () => {
    expectError(parse(rawFile(`{"a":${entry('F64', [2], [0, 8])}}`, 8)),
      'in.safetensors: tensor "a": size mismatch: F64 [2] needs 16 bytes but data_offsets [0, 8] span 8');
  });
  it('overlapping offsets', () => {
    expectError(parse(rawFile(`{"a":${entry('F32', [2], [0, 8])},"b":${entry('F32', [2], [4, 12])}}`, 12)),
      'in.safetensors: tensors "a" and "b" overlap in the data section (one starts at byte 4, before the other ends at 8)');
    expectError(parse(rawFile(`{"a":${entry('F32', [2], [0, 8])},"b":${entry('F32', [2], [0, 8])}}`, 8)),
      /^in\.safetensors: tensors "[ab]" and "[ab]" overlap/);
  });
  it('holes in the data section', () => {
    expectError(parse(rawFile(`{"a":${entry('F32', [1], [0, 4])},"b":${entry('F32', [1], [8, 12])}}`, 12)),
      'in.safetensors: hole in data section: bytes [4, 8) belong to no tensor');
    expectError(parse(rawFile(`{"a":${entry('F32', [1], [4, 8])}}`, 8)), 'in.safetensors: hole in data section: bytes [0, 4) belong to no tensor');
    expectError(parse(rawFile(ok, 9)), 'in.safetensors: hole in data section: bytes [8, 9) belong to no tensor');
    expectError(parse(rawFile('{}', 1)), 'in.safetensors: hole in data section: bytes [0, 1) belong to no tensor');
  });

  it('any prefix of a valid file is rejected', () => {
    fc.assert(fc.property(tensorsArb, metadataArb, fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), (t, m, f) => {
      const bytes = serializeSafetensors(t, m);
      const cut = Math.floor(f * bytes.length);
      let parsed;
      try { parsed = parseSafetensors(bytes.subarray(0, cut)); } catch (e) { expect(e).toBeInstanceOf(SafetensorsError); return; }
      expectSameContents(parsed.tensors, t); // only possible if nothing was actually lost
    }), { numRuns: 300 });
  });

  it('random byte flips throw nothing but SafetensorsError', () => {
    const flips = fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.boolean()), { minLength: 1, maxLength: 4 });
    fc.assert(fc.property(tensorsArb, metadataArb, flips, (t, m, fl) => {
      const bytes = serializeSafetensors(t, m).slice();
      const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
      // Mostly hit the header, where the interesting structure is.
      for (const [i, v, inHeader] of fl) bytes[inHeader ? i % (8 + n) : i % bytes.length] = v;
      try { parseSafetensors(bytes); } catch (e) { expect(e).toBeInstanceOf(SafetensorsError); }
    }), { numRuns: 2000 });
  });
});

describe('files', () => {
  const withDir = async (f: (dir: string) => Promise<void>) => {
    const dir = await mkdtemp(join(tmpdir(), 'st-test-'));
    try { await f(dir); } finally { await rm(dir, { recursive: true, force: true }); }
  };

  it('writes atomically and reads back', () => withDir(async (dir) => {
    const p = join(dir, 'out.safetensors');
    await writeSafetensorsFile(p, { w: fromFloat64([1, 2], [2], 'F32') }, { a: 'b' });
    await writeSafetensorsFile(p, { w: fromFloat64([3], [1], 'F32') }); // overwrite
    const { tensors, metadata } = await readSafetensorsFile(p);
    expect(Array.from(toFloat64(tensors.get('w')!))).toEqual([3]);
    expect(metadata).toEqual({});
    expect(await readdir(dir)).toEqual(['out.safetensors']); // no temp files left
    // A failed serialization leaves the old file untouched.
    await expect(writeSafetensorsFile(p, { w: { dtype: 'F32', shape: [2], data: new Float32Array(1) } }))
      .rejects.toThrow(`${p}: tensor "w": shape [2] needs 2 elements but data has 1`);
    expect((await readSafetensorsFile(p)).tensors.get('w')!.shape).toEqual([1]);
  }));

  it('read errors are one clear line', () => withDir(async (dir) => {
    const missing = join(dir, 'missing.safetensors');
    await expect(readSafetensorsFile(missing)).rejects.toThrow(new SafetensorsError('cannot read: no such file or directory', missing));
    await expect(readSafetensorsFile(dir)).rejects.toThrow(new SafetensorsError('cannot read: is a directory', dir));
    const bad = join(dir, 'bad.safetensors');
    await writeFile(bad, new Uint8Array(3));
    await expect(readSafetensorsFile(bad)).rejects.toThrow(`${bad}: too short: 3 bytes`);
  }));

  it('permission denied', async (ctx) => {
    if (process.getuid?.() === 0) { console.log('skipping permission test: running as root'); ctx.skip(); }
    await withDir(async (dir) => {
      const p = join(dir, 'x.safetensors');
      await writeFile(p, serializeSafetensors({}));
      await chmod(p, 0o000);
      await expect(readSafetensorsFile(p)).rejects.toThrow(new SafetensorsError('cannot read: permission denied', p));
    });
  });

  it('write errors are one clear line and leave no temp file', () => withDir(async (dir) => {
    const sub = join(dir, 'sub');
    await mkdir(sub);
    await expect(writeSafetensorsFile(sub, {})).rejects.toThrow(new SafetensorsError('cannot write: is a directory', sub));
    expect(await readdir(dir)).toEqual(['sub']);
    const nodir = join(dir, 'nope', 'x.safetensors');
    await expect(writeSafetensorsFile(nodir, {})).rejects.toThrow(new SafetensorsError('cannot write: no such file or directory', nodir));
  }));
});

const FIXTURE = fileURLToPath(new URL('../../shared/fixtures/torchscale/retnet-tiny.safetensors', import.meta.url));
const haveFixture = existsSync(FIXTURE);
if (!haveFixture) console.log(`skipping torchscale fixture test: ${FIXTURE} not found`);

describe.skipIf(!haveFixture && !process.env.CI)('torchscale fixture', () => {
  it('reads retnet-tiny.safetensors', async () => {
    const { tensors, metadata } = await readSafetensorsFile(FIXTURE);
    const tokens = tensors.get('tokens')!;
    expect([tokens.dtype, tokens.shape]).toEqual(['I32', [2, 24]]);
    expect(Array.from(toFloat64(tokens)).every((v) => v >= 0 && v < 61)).toBe(true);
    const logits = tensors.get('logits.recurrent')!;
    expect([logits.dtype, logits.shape]).toEqual(['F32', [2, 24, 61]]);
    expect(Array.from(toFloat64(logits)).every(Number.isFinite)).toBe(true);
    expect(JSON.parse(metadata.config!).decoder_embed_dim).toBe(64);
    // Our writer's output of it parses back to identical content.
    const again = parseSafetensors(serializeSafetensors(tensors, metadata));
    expectSameContents(again.tensors, tensors);
    expect(again.metadata).toEqual(metadata);
    // The sibling fixture parses too.
    const gelu = FIXTURE.replace('retnet-tiny', 'retnet-tiny-gelu-pad');
    if (existsSync(gelu)) expect(parseSafetensors(await readFile(gelu)).tensors.get('tokens')!.shape).toEqual([1, 21]);
  });
});
