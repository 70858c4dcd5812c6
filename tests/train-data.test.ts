// runtime/train/data.ts: the corpus (Moby Dick, or a UTF-8 file; empty, binary and non-UTF-8
// files refused), the held-out tail, batches from a seeded sampler whose state resumes the stream,
// and the fixed validation set.
import { mkdtempSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, test } from 'vitest';
import { BatchSampler, DataError, invalidUtf8, mobyDick, readCorpus, splitCorpus, VAL_FRACTION, validationBatches, windows } from '../runtime/train/data.js';
import { Rng } from '../runtime/train/rng.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'retnetc-train-data-'));
const file = (name: string, bytes: Uint8Array | string): string => {
  const f = path.join(dir, name);
  writeFileSync(f, bytes);
  return f;
};

describe('the corpus', () => {
  test('Moby Dick: 1.2 M bytes of UTF-8 text, the same every time', () => {
    const a = mobyDick();
    expect(a.bytes.length).toBeGreaterThan(1_200_000);
    expect(invalidUtf8(a.bytes)).toBe(0);
    expect(new TextDecoder().decode(a.bytes.subarray(0, 40000))).toContain('Call me Ishmael');
    expect(mobyDick().sha256).toBe(a.sha256);
  });

  test('a UTF-8 file is read as its bytes (multi-byte characters are several tokens)', () => {
    const c = readCorpus(file('ok.txt', 'héllo wörld — ☃ 𝄞'));
    expect(Array.from(c.bytes)).toEqual(Array.from(new TextEncoder().encode('héllo wörld — ☃ 𝄞')));
  });

  test.each([
    ['empty', new Uint8Array(0), /is empty/],
    ['binary (NUL bytes)', Uint8Array.from({ length: 4000 }, (_, i) => (i % 7 === 0 ? 0 : 65)), /looks binary \(572 NUL bytes in 4000\)/],
    ['not UTF-8 (latin-1)', Uint8Array.from({ length: 2000 }, (_, i) => (i % 10 === 0 ? 0xe9 : 97)), /is not UTF-8 text \(200 of 2000 bytes/],
  ])('%s: refused in one line', (name, bytes, re) => {
    const f = file(name.replace(/\W+/g, '_'), bytes);
    expect(() => readCorpus(f)).toThrow(DataError);
    expect(() => readCorpus(f)).toThrow(re);
  });

  test('a missing file and a directory are DataErrors', () => {
    expect(() => readCorpus(path.join(dir, 'nope.txt'))).toThrow(/no such file/);
    expect(() => readCorpus(dir)).toThrow(/is a directory/);
  });

  test('invalidUtf8 counts stray, truncated, overlong and surrogate bytes', () => {
    const b = (...xs: number[]): Uint8Array => Uint8Array.from(xs);
    expect(invalidUtf8(new TextEncoder().encode('a€𝄞é'))).toBe(0);
    expect(invalidUtf8(b(0x80))).toBe(1); // a lone continuation byte
    expect(invalidUtf8(b(0xe2, 0x82))).toBe(2); // truncated at the end
    expect(invalidUtf8(b(0xc0, 0xaf))).toBe(2); // overlong '/'
    expect(invalidUtf8(b(0xe0, 0x80, 0xaf))).toBe(3); // overlong three-byte
    expect(invalidUtf8(b(0xed, 0xa0, 0x80))).toBe(3); // a surrogate
    expect(invalidUtf8(b(0xf4, 0x90, 0x80, 0x80))).toBe(4); // above U+10FFFF
  });
});

describe('the split', () => {
  test('the last 5% is held out, the head is training text', () => {
    const bytes = Uint8Array.from({ length: 10000 }, (_, i) => i % 251);
    const s = splitCorpus(bytes, 4, 32);
    expect(s.val.length).toBe(Math.ceil(VAL_FRACTION * 10000));
    expect(s.train.length + s.val.length).toBe(10000);
    expect(s.val[0]).toBe(bytes[s.train.length]);
  });

  test('at least one validation window, and at least one batch of training windows', () => {
    expect(splitCorpus(new Uint8Array(200), 2, 16).val.length).toBe(17);
    // 2 windows of 17 for training plus 17 held out: 51 bytes is the least that works.
    expect(splitCorpus(new Uint8Array(51), 2, 16).train.length).toBe(34);
    expect(() => splitCorpus(new Uint8Array(50), 2, 16)).toThrow(/holds 50 bytes, fewer than one batch \(2 windows of 17 bytes for --batch 2 --seq 16\) plus the held-out validation text; it needs at least 51 bytes/);
  });
});

describe('batches', () => {
  const text = Uint8Array.from({ length: 5000 }, (_, i) => (i * 7) % 256);

  test('targets are the tokens shifted by one', () => {
    const b = windows(text, [0, 100], 8);
    expect(b.tokens.shape).toEqual([2, 8]);
    expect(Array.from(b.tokens.data.subarray(8, 16))).toEqual(Array.from(text.subarray(100, 108)));
    expect(Array.from(b.targets.data.subarray(8, 16))).toEqual(Array.from(text.subarray(101, 109)));
  });

  test('the sampler is seeded, and its state continues the stream', () => {
    const a = new BatchSampler(text, 3, 16, new Rng(5));
    const b = new BatchSampler(text, 3, 16, new Rng(5));
    a.next();
    b.next();
    const st = a.state();
    const next = [a.next(), a.next()];
    const c = new BatchSampler(text, 3, 16, new Rng(99));
    c.restore(st);
    for (const n of next) expect(Array.from(c.next().tokens.data)).toEqual(Array.from(n.tokens.data));
    expect(Array.from(b.next().tokens.data)).toEqual(Array.from(next[0]!.tokens.data));
    const other = new BatchSampler(text, 3, 16, new Rng(6));
    expect(Array.from(other.next().tokens.data)).not.toEqual(Array.from(new BatchSampler(text, 3, 16, new Rng(5)).next().tokens.data));
  });

  test('windows lie inside the training text, the last position included', () => {
    const small = Uint8Array.from({ length: 20 }, (_, i) => i);
    const s = new BatchSampler(small, 4, 16, new Rng(1));
    const starts = new Set<number>();
    for (let i = 0; i < 200; i++) {
      const b = s.next();
      for (let k = 0; k < 4; k++) {
        const first = b.tokens.data[k * 16]!;
        expect(first).toBeLessThanOrEqual(3);
        starts.add(first);
      }
    }
    expect([...starts].sort()).toEqual([0, 1, 2, 3]);
  });

  test('the validation set is fixed by the text and T: evenly spread windows, the same whatever the batch', () => {
    const val = Uint8Array.from({ length: 3000 }, (_, i) => i % 256);
    const v = validationBatches(val, 16);
    const all = v.flatMap((b) => Array.from(b.tokens.data));
    expect(all.length).toBe(16 * Math.floor(3000 / 17));
    expect(all.slice(0, 16)).toEqual(Array.from(val.subarray(0, 16)));
    // The last window ends at the end of the tail.
    const last = v[v.length - 1]!;
    expect(last.targets.data[last.targets.data.length - 1]).toBe(val[val.length - 1]);
    expect(validationBatches(val, 16)).toEqual(v);
  });
});
