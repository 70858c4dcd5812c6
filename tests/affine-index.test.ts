// Affine indices of innermost loops in the native printer (targets/native/affine-index.ts):
// the decomposition base + c * v, what it refuses (loads, varying names, products of two
// varying terms), and the printed loop versioning: an unchecked loop with int64 indices behind
// one bounds test, the checked loop as before otherwise (so out-of-bounds reports are unchanged:
// tests/native.test.ts runs them).
import { describe, expect, test } from 'vitest';
import * as K from '../compiler/kir.js';
import type { Kernel } from '../compiler/kir.js';
import { affine, loopEnv } from '../targets/native/affine-index.js';
import { printNative } from '../targets/native/printer.js';

const env = (body: Parameters<typeof K.loop>[3], assigned: string[] = []) => loopEnv(K.loop('t', K.i32(0), K.i32(64), body) as Extract<ReturnType<typeof K.loop>, { k: 'for' }>, new Set(assigned));

describe('the decomposition', () => {
  test('looks through the loop\'s never-assigned declarations and scales by constants', () => {
    const e = env([K.decl('j', 'i32', K.add(K.mul(K.wg('x'), K.i32(64)), K.v('t')))]);
    const a = affine(K.add(K.mul(K.v('row'), K.i32(64)), K.v('j')), e)!;
    expect(a.coef).toBe(1);
    expect(a.base).toEqual(K.add(K.mul(K.v('row'), K.i32(64)), K.mul(K.wg('x'), K.i32(64))));
    expect(affine(K.mul(K.sub(K.v('n'), K.v('t')), K.i32(3)), e)!.coef).toBe(-3);
    expect(affine(K.bin('/', K.v('n'), K.i32(2)), e)!.coef).toBe(0);
  });
  test('refuses loads, assigned and inner-loop names, t times a variable, and t under / or %', () => {
    const e = env([K.decl('a', 'i32', K.i32(0)), K.assign('a', K.i32(1)), K.loop('i', K.i32(0), K.i32(4), [])], ['a']);
    expect(affine(K.add(K.load('idx', K.v('t'), 'i32'), K.i32(1)), e)).toBeUndefined();
    expect(affine(K.add(K.v('a'), K.v('t')), e)).toBeUndefined();
    expect(affine(K.add(K.v('i'), K.v('t')), e)).toBeUndefined();
    expect(affine(K.mul(K.v('n'), K.v('t')), e)).toBeUndefined();
    expect(affine(K.bin('%', K.v('t'), K.i32(8)), e)).toBeUndefined();
  });
});

describe('the printed loop', () => {
  const kernel = (body: Kernel['body']): Kernel => ({ name: 'k', workgroup: [64, 1, 1], grid: [K.i32(4), K.i32(1), K.i32(1)], buffers: [{ name: 'x', type: 'f32', access: 'read' }, { name: 'y', type: 'f32', access: 'read_write' }], scalars: [], shared: [], body });
  const body = [K.decl('j', 'i32', K.add(K.mul(K.wg('x'), K.i32(64)), K.tid())), K.store('y', K.v('j'), K.mul(K.load('x', K.v('j')), K.f32(2)))];
  test('checked: one test before an unchecked copy with int64 indices, the checked loop in the else', () => {
    const code = printNative([kernel(body)]).code;
    expect(code).toMatch(/if \(RN_SPAN\(/);
    expect(code).toMatch(/y\[\(int64_t\)\(wg_x \* 64\) \+ \(int64_t\)rn_t\] = x\[\(int64_t\)\(wg_x \* 64\) \+ \(int64_t\)rn_t\] \* 2\.0f;/);
    expect(code).toMatch(/rn_ldf\(x, /);
  });
  test('unchecked: int64 indices only, no test', () => {
    const code = printNative([kernel(body)], { checks: false }).code;
    expect(code).not.toMatch(/if \(RN_SPAN\(/);
    expect(code).toMatch(/y\[\(int64_t\)\(wg_x \* 64\) \+ \(int64_t\)rn_t\]/);
  });
  test('a gather (an index through a load) keeps the checked loop alone', () => {
    const g = [K.decl('j', 'i32', K.add(K.mul(K.wg('x'), K.i32(64)), K.tid())), K.store('y', K.v('j'), K.load('x', K.cast(K.load('x', K.v('j')), 'i32')))];
    const code = printNative([kernel(g)]).code;
    expect(code).not.toMatch(/RN_SPAN\(\(/);
  });
});
