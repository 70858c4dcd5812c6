/**
 * Strict safetensors reader and writer (https://github.com/huggingface/safetensors).
 *
 * Layout: u64 LE header length N | N bytes of UTF-8 JSON header | data section.
 * The reader accepts only what the reference Rust implementation accepts (offsets must
 * tile the data section exactly), and additionally rejects duplicate JSON keys and
 * integers written as `1.0`/`1e2`, which JSON.parse would silently accept.
 *
 * Ordering: the parsed `tensors` Map is in data-section order. The writer sorts tensors
 * by item size (largest first), then by name (UTF-16 code units), as the reference
 * does, so output is deterministic and every tensor is aligned to its item size.
 */
import { open, readFile, rename, unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import { fsReason } from './fs-reason.js';

export type DType = 'F32' | 'F16' | 'BF16' | 'F64' | 'I32' | 'I64';
export type TensorData = Float32Array | Float64Array | Uint16Array | Int32Array | BigInt64Array;
/** F16 and BF16 hold raw bits; I64 holds bigints. */
export interface Tensor {
  dtype: DType;
  shape: number[];
  data: TensorData;
}
export interface SafetensorsContents {
  tensors: Map<string, Tensor>;
  metadata: Record<string, string>;
}

export class SafetensorsError extends Error {
  override readonly name = 'SafetensorsError';
  constructor(message: string, readonly source?: string) {
    super(source ? `${source}: ${message}` : message);
  }
}

/** Same limit as the reference implementation. */
export const MAX_HEADER_BYTES = 100_000_000;
/** JS typed arrays are capped; 2^31 elements keeps every index a safe int32-ish value. */
export const MAX_ELEMENTS = 2 ** 31;

const ITEMSIZE: Record<DType, number> = { F32: 4, F16: 2, BF16: 2, F64: 8, I32: 4, I64: 8 };
const DTYPES = Object.keys(ITEMSIZE) as DType[];
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

type Fail = (msg: string) => never;

const isDType = (x: unknown): x is DType => typeof x === 'string' && (DTYPES as string[]).includes(x);
const isDim = (x: unknown): x is number => Number.isSafeInteger(x) && (x as number) >= 0;
const isObject = (x: unknown): x is Record<string, unknown> =>
  typeof x === 'object' && x !== null && !Array.isArray(x);
// Lone surrogates survive JSON.parse ("\ud800") but cannot be encoded as UTF-8.
const isWellFormed = (s: string) => !/\p{Cs}/u.test(s);
const oneLine = (s: string) => s.replace(/\s+/g, ' ').trim();

/** Short single-line rendering of a value for error messages. */
function show(v: unknown): string {
  const s = v === undefined ? 'nothing' : (JSON.stringify(v) ?? String(v));
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

function elementCount(shape: readonly number[], fail: Fail): number {
  let n = 1;
  for (const d of shape) n *= d;
  if (n > MAX_ELEMENTS) {
    const exact = shape.reduce((p, d) => p * BigInt(d), 1n);
    fail(`shape ${show(shape)} has ${exact} elements, more than the 2^31 a JS typed array may hold`);
  }
  return n;
}

function makeArray(dtype: DType, buf: ArrayBuffer): TensorData {
  switch (dtype) {
    case 'F32': return new Float32Array(buf);
    case 'F64': return new Float64Array(buf);
    case 'F16': case 'BF16': return new Uint16Array(buf);
    case 'I32': return new Int32Array(buf);
    case 'I64': return new BigInt64Array(buf);
  }
}

const ARRAY_TYPE: Record<DType, Function> = {
  F32: Float32Array, F64: Float64Array, F16: Uint16Array, BF16: Uint16Array, I32: Int32Array, I64: BigInt64Array,
};

/** Disk is little-endian; only big-endian hosts need this. */
function swapBytes(u8: Uint8Array, size: number): void {
  for (let i = 0; i < u8.length; i += size) u8.subarray(i, i + size).reverse();
}

/** Checks dtype/shape/data consistency of an in-memory tensor; returns its element count. */
function checkTensor(t: Tensor, where: string, fail: Fail): number {
  if (!isDType(t.dtype)) fail(`${where}: unsupported dtype ${show(t.dtype)} (supported: ${DTYPES.join(', ')})`);
  if (!Array.isArray(t.shape) || !t.shape.every(isDim))
    fail(`${where}: shape must be an array of non-negative integers, got ${show(t.shape)}`);
  const n = elementCount(t.shape, (m) => fail(`${where}: ${m}`));
  if (!(t.data instanceof ARRAY_TYPE[t.dtype]))
    fail(`${where}: ${t.dtype} data must be a ${ARRAY_TYPE[t.dtype].name}, got ${t.data?.constructor?.name ?? typeof t.data}`);
  if (t.data.length !== n)
    fail(`${where}: shape ${show(t.shape)} needs ${n} elements but data has ${t.data.length}`);
  return n;
}

/**
 * Walks JSON text (already accepted by JSON.parse) to find what JSON.parse hides:
 * duplicate keys in any object, and numbers not written as plain non-negative integers.
 */
function scanJson(text: string): { duplicateKey?: string; badNumber?: string } {
  const stack: (Set<string> | null)[] = []; // null marks an array
  let badNumber: string | undefined;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x7b) stack.push(new Set());
    else if (c === 0x5b) stack.push(null);
    else if (c === 0x7d || c === 0x5d) stack.pop();
    else if (c === 0x22) {
      let j = i + 1;
      while (text.charCodeAt(j) !== 0x22) j += text.charCodeAt(j) === 0x5c ? 2 : 1;
      let k = j + 1;
      while (k < text.length && ' \t\n\r'.includes(text[k]!)) k++;
      const keys = stack[stack.length - 1];
      if (keys && text[k] === ':') { // a string followed by ':' is a key
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (keys.has(key)) return { duplicateKey: key };
        keys.add(key);
      }
      i = j;
    } else if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
      let j = i;
      while (j < text.length && /[-+.eE0-9]/.test(text[j]!)) j++;
      const num = text.slice(i, j);
      if (badNumber === undefined && !/^(0|[1-9][0-9]*)$/.test(num)) badNumber = num;
      i = j - 1;
    }
  }
  return { badNumber };
}

export function parseSafetensors(
  bytes: Uint8Array,
  opts: { source?: string; maxHeaderBytes?: number } = {},
): SafetensorsContents {
  const { source, maxHeaderBytes = MAX_HEADER_BYTES } = opts;
  const fail: Fail = (msg) => { throw new SafetensorsError(msg, source); };

  if (bytes.length < 8)
    fail(`too short: ${bytes.length} bytes, but a safetensors file starts with an 8-byte header length`);
  const n64 = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  const n = Number(n64);
  if (n > maxHeaderBytes) fail(`header length ${n64} exceeds the limit of ${maxHeaderBytes} bytes`);
  if (n > bytes.length - 8)
    fail(`truncated file: header says ${n} bytes of header but only ${bytes.length - 8} bytes follow`);

  let text = '';
  try {
    // ignoreBOM: keep a BOM so it is rejected like any other non-JSON byte.
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes.subarray(8, 8 + n));
  } catch {
    fail('header is not valid UTF-8');
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    fail(`header is not valid JSON (${show(oneLine(e instanceof Error ? e.message : String(e)))})`);
  }
  if (!isObject(header))
    fail(`header is not a JSON object (got ${header === null ? 'null' : Array.isArray(header) ? 'an array' : typeof header})`);
  if (text[0] !== '{') fail(`header must start with '{' (got ${show(text[0])})`);
  const scan = scanJson(text);
  if (scan.duplicateKey !== undefined) fail(`header has duplicate key ${show(scan.duplicateKey)}`);

  const dataStart = 8 + n;
  const dataLen = bytes.length - dataStart;
  let metadata: Record<string, string> = {};
  const entries: { name: string; dtype: DType; shape: number[]; begin: number; end: number }[] = [];
  for (const [name, info] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (!isObject(info)) fail(`__metadata__ must be an object of string values, got ${show(info)}`);
      for (const [k, v] of Object.entries(info)) {
        if (typeof v !== 'string') fail(`__metadata__ value for ${show(k)} must be a string, got ${show(v)}`);
        if (!isWellFormed(k) || !isWellFormed(v)) fail(`__metadata__ entry ${show(k)} has unpaired UTF-16 surrogates`);
      }
      metadata = Object.fromEntries(Object.entries(info)) as Record<string, string>; // fromEntries: safe for "__proto__"
      continue;
    }
    if (name === '') fail('tensor name is empty');
    if (!isWellFormed(name)) fail(`tensor name ${show(name)} has unpaired UTF-16 surrogates`);
    const where = `tensor ${show(name)}`;
    if (!isObject(info)) fail(`${where}: entry must be an object, got ${show(info)}`);
    for (const k of Object.keys(info))
      if (k !== 'dtype' && k !== 'shape' && k !== 'data_offsets')
        fail(`${where}: unexpected field ${show(k)} (expected exactly dtype, shape, data_offsets)`);
    for (const k of ['dtype', 'shape', 'data_offsets'])
      if (!Object.hasOwn(info, k)) fail(`${where}: missing field "${k}"`);
    const { dtype, shape, data_offsets: off } = info;
    if (!isDType(dtype)) fail(`${where}: unsupported dtype ${show(dtype)} (supported: ${DTYPES.join(', ')})`);
    if (!Array.isArray(shape) || !shape.every(isDim))
      fail(`${where}: shape must be an array of non-negative integers, got ${show(shape)}`);
    const numel = elementCount(shape, (m) => fail(`${where}: ${m}`));
    if (!Array.isArray(off) || off.length !== 2 || !off.every(isDim))
      fail(`${where}: data_offsets must be [begin, end] of non-negative integers, got ${show(off)}`);
    const [begin, end] = off as [number, number];
    if (begin > end) fail(`${where}: data_offsets [${begin}, ${end}] has begin > end`);
    if (end > dataLen)
      fail(`${where}: data_offsets [${begin}, ${end}] run past the end of the ${dataLen}-byte data section (truncated file?)`);
    const want = numel * ITEMSIZE[dtype];
    if (end - begin !== want)
      fail(`${where}: size mismatch: ${dtype} ${show(shape)} needs ${want} bytes but data_offsets [${begin}, ${end}] span ${end - begin}`);
    entries.push({ name, dtype, shape: [...shape], begin, end });
  }
  if (scan.badNumber !== undefined) fail(`header number ${show(scan.badNumber)} must be written as a plain integer`);

  // Ranges must tile [0, dataLen) exactly: no overlap, no hole, no trailing bytes.
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let pos = 0;
  let prev = '';
  for (const e of entries) {
    if (e.begin < pos)
      fail(`tensors ${show(prev)} and ${show(e.name)} overlap in the data section (one starts at byte ${e.begin}, before the other ends at ${pos})`);
    if (e.begin > pos) fail(`hole in data section: bytes [${pos}, ${e.begin}) belong to no tensor`);
    pos = e.end;
    prev = e.name;
  }
  if (pos !== dataLen) fail(`hole in data section: bytes [${pos}, ${dataLen}) belong to no tensor`);

  // Copy into fresh buffers: the input may be unaligned (e.g. a pooled Buffer) and must not be aliased.
  const tensors = new Map<string, Tensor>();
  for (const e of entries) {
    const buf = new ArrayBuffer(e.end - e.begin);
    const u8 = new Uint8Array(buf);
    u8.set(bytes.subarray(dataStart + e.begin, dataStart + e.end));
    if (!LITTLE_ENDIAN) swapBytes(u8, ITEMSIZE[e.dtype]);
    tensors.set(e.name, { dtype: e.dtype, shape: e.shape, data: makeArray(e.dtype, buf) });
  }
  return { tensors, metadata };
}

export function serializeSafetensors(
  tensors: Map<string, Tensor> | Record<string, Tensor>,
  metadata?: Record<string, string>,
): Uint8Array {
  const fail: Fail = (msg) => { throw new SafetensorsError(msg); };
  const list = [...(tensors instanceof Map ? tensors : Object.entries(tensors))];
  for (const [name, t] of list) {
    if (name === '') fail('tensor name is empty');
    if (name === '__metadata__') fail('"__metadata__" is reserved and cannot name a tensor');
    if (!isWellFormed(name)) fail(`tensor name ${show(name)} has unpaired UTF-16 surrogates`);
    checkTensor(t, `tensor ${show(name)}`, fail);
  }
  const byName = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
  list.sort(([a, s], [b, t]) => ITEMSIZE[t.dtype] - ITEMSIZE[s.dtype] || byName(a, b));

  const parts: string[] = [];
  if (metadata !== undefined) {
    if (!isObject(metadata)) fail('metadata must be an object of string values');
    const kv = Object.entries(metadata).sort(([a], [b]) => byName(a, b));
    for (const [k, v] of kv) {
      if (typeof v !== 'string') fail(`metadata value for ${show(k)} must be a string, got ${show(v)}`);
      if (!isWellFormed(k) || !isWellFormed(v)) fail(`metadata entry ${show(k)} has unpaired UTF-16 surrogates`);
    }
    if (kv.length) parts.push(`"__metadata__":{${kv.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(',')}}`);
  }
  let offset = 0;
  for (const [name, t] of list) {
    const end = offset + t.data.byteLength;
    // Written by hand (not JSON.stringify of an object) so names like "__proto__" survive.
    parts.push(`${JSON.stringify(name)}:{"dtype":"${t.dtype}","shape":[${t.shape.join(',')}],"data_offsets":[${offset},${end}]}`);
    offset = end;
  }
  const json = new TextEncoder().encode(`{${parts.join(',')}}`);
  const headerLen = Math.ceil(json.length / 8) * 8; // spaces pad the data section to 8-byte alignment
  if (headerLen > MAX_HEADER_BYTES) fail(`header would be ${headerLen} bytes, over the ${MAX_HEADER_BYTES}-byte limit`);

  const out = new Uint8Array(8 + headerLen + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLen), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + headerLen);
  let pos = 8 + headerLen;
  for (const [, t] of list) {
    const dst = out.subarray(pos, pos + t.data.byteLength);
    dst.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    if (!LITTLE_ENDIAN) swapBytes(dst, ITEMSIZE[t.dtype]);
    pos += t.data.byteLength;
  }
  return out;
}

export async function readSafetensorsFile(
  path: string,
  opts: { maxHeaderBytes?: number } = {},
): Promise<SafetensorsContents> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (e) {
    throw new SafetensorsError(`cannot read: ${fsReason(e)}`, path);
  }
  return parseSafetensors(bytes, { ...opts, source: path });
}

/** Atomic: writes and fsyncs a temp file in the same directory, then renames it over `path`. */
export async function writeSafetensorsFile(
  path: string,
  tensors: Map<string, Tensor> | Record<string, Tensor>,
  metadata?: Record<string, string>,
): Promise<void> {
  let bytes: Uint8Array;
  try {
    bytes = serializeSafetensors(tensors, metadata);
  } catch (e) {
    throw e instanceof SafetensorsError ? new SafetensorsError(e.message, path) : e;
  }
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  let created = false;
  try {
    const fh = await open(tmp, 'wx');
    created = true;
    try {
      await fh.writeFile(bytes);
      await fh.sync(); // data must be on disk before the rename is
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (e) {
    if (created) await unlink(tmp).catch(() => {});
    throw new SafetensorsError(`cannot write: ${fsReason(e)}`, path);
  }
}

// ---- conversions ----

const scratch = new Uint32Array(1);
const scratchF32 = new Float32Array(scratch.buffer);

export function f16ToF32(bits: number): number {
  const s = bits & 0x8000 ? -1 : 1;
  const e = (bits >> 10) & 0x1f;
  const m = bits & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 0x1f) return m ? NaN : s * Infinity;
  return s * (0x400 + m) * 2 ** (e - 25);
}

export function bf16ToF32(bits: number): number {
  scratch[0] = (bits & 0xffff) << 16; // bf16 is the top half of an f32
  return scratchF32[0]!;
}

/**
 * Rounds a double straight to a binary format with E exponent and M mantissa bits,
 * round-to-nearest-even. Going via f32 first would double-round.
 */
function roundToBits(x: number, E: number, M: number): number {
  const expMax = (1 << E) - 1;
  const bias = expMax >> 1;
  if (Number.isNaN(x)) return (expMax << M) | (1 << (M - 1)); // canonical quiet NaN
  const sign = x < 0 || Object.is(x, -0) ? 1 << (E + M) : 0;
  const a = Math.abs(x);
  if (a === 0) return sign;
  if (a === Infinity) return sign | (expMax << M);
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--; // log2 may be off by one near powers of two
  else if (2 ** (e + 1) <= a) e++;
  e = Math.max(e, 1 - bias); // below the normal range the quantum stays fixed (subnormals)
  const m = a / 2 ** (e - M); // exact: scaling by a power of two; m < 2^(M+1)
  let r = Math.floor(m);
  const frac = m - r;
  if (frac > 0.5 || (frac === 0.5 && r % 2 === 1)) r++;
  if (r === 2 ** (M + 1)) { r /= 2; e++; } // rounding carried into the next binade
  if (r < 2 ** M) return sign | r; // subnormal
  const field = e + bias;
  if (field >= expMax) return sign | (expMax << M); // overflow to Inf
  return sign | (field << M) | (r - 2 ** M);
}

/** IEEE binary16 bits of x, round-to-nearest-even. */
export const numberToF16 = (x: number): number => roundToBits(x, 5, 10);
/** bfloat16 bits of x, round-to-nearest-even. */
export const numberToBF16 = (x: number): number => roundToBits(x, 8, 7);

export function toFloat64(t: Tensor): Float64Array {
  const fail: Fail = (msg) => { throw new SafetensorsError(`toFloat64: ${msg}`); };
  const n = checkTensor(t, 'tensor', fail);
  const out = new Float64Array(n);
  const d = t.data;
  if (t.dtype === 'F16') for (let i = 0; i < n; i++) out[i] = f16ToF32(d[i] as number);
  else if (t.dtype === 'BF16') for (let i = 0; i < n; i++) out[i] = bf16ToF32(d[i] as number);
  else if (t.dtype === 'I64') for (let i = 0; i < n; i++) out[i] = Number(d[i] as bigint);
  else out.set(d as Float32Array | Float64Array | Int32Array);
  return out;
}

export function fromFloat64(values: ArrayLike<number>, shape: number[], dtype: DType): Tensor {
  const fail: Fail = (msg) => { throw new SafetensorsError(`fromFloat64: ${msg}`); };
  if (!isDType(dtype)) fail(`unsupported dtype ${show(dtype)} (supported: ${DTYPES.join(', ')})`);
  if (!Array.isArray(shape) || !shape.every(isDim))
    fail(`shape must be an array of non-negative integers, got ${show(shape)}`);
  const n = elementCount(shape, fail);
  if (values.length !== n) fail(`shape ${show(shape)} needs ${n} values but got ${values.length}`);
  const checkInt = (lo: number, hi: number) => {
    for (let i = 0; i < n; i++) {
      const v = values[i]!;
      if (!Number.isInteger(v)) fail(`value ${v} at index ${i} is not an integer, cannot store as ${dtype}`);
      if (v < lo || v >= hi) fail(`value ${v} at index ${i} is out of range for ${dtype}`);
    }
  };
  let data: TensorData;
  switch (dtype) {
    case 'F64': data = Float64Array.from(values); break;
    case 'F32': data = Float32Array.from(values, Math.fround); break;
    case 'F16': data = Uint16Array.from(values, numberToF16); break;
    case 'BF16': data = Uint16Array.from(values, numberToBF16); break;
    case 'I32': checkInt(-(2 ** 31), 2 ** 31); data = Int32Array.from(values); break;
    case 'I64': checkInt(-(2 ** 63), 2 ** 63); data = BigInt64Array.from(Array.from(values, (v) => BigInt(v))); break;
  }
  return { dtype, shape: [...shape], data };
}
