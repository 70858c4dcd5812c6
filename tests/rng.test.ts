import { describe, expect, it } from 'vitest';
import { Rng } from '../runtime/train/rng.js';

describe('Rng', () => {
  it('is deterministic per seed and continues from a saved state', () => {
    const a = new Rng(42), b = new Rng(42), c = new Rng(43);
    const xs = Array.from({ length: 8 }, () => a.u32());
    expect(Array.from({ length: 8 }, () => b.u32())).toEqual(xs);
    expect(Array.from({ length: 8 }, () => c.u32())).not.toEqual(xs);
    const saved = JSON.parse(JSON.stringify(a.state())) as number[];
    const after = Array.from({ length: 5 }, () => a.normal());
    const r = Rng.fromState(saved);
    expect(Array.from({ length: 5 }, () => r.normal())).toEqual(after);
  });
  it('draws uniform, integer and normal values with the right moments', () => {
    const r = new Rng(7);
    const n = 20000;
    let su = 0, sn = 0, sn2 = 0;
    const counts = new Array(10).fill(0);
    for (let i = 0; i < n; i++) {
      const u = r.uniform();
      expect(u >= 0 && u < 1).toBe(true);
      su += u;
      counts[r.int(10)]++;
      const z = r.normal();
      sn += z; sn2 += z * z;
    }
    expect(Math.abs(su / n - 0.5)).toBeLessThan(0.01);
    expect(Math.abs(sn / n)).toBeLessThan(0.03);
    expect(Math.abs(sn2 / n - 1)).toBeLessThan(0.05);
    for (const c of counts) expect(Math.abs(c / n - 0.1)).toBeLessThan(0.01);
  });
  it('forks independent named streams and refuses bad seeds and states', () => {
    const r = new Rng(1);
    expect(r.fork('data').u32()).not.toBe(r.fork('init').u32());
    expect(() => new Rng(0.5)).toThrow(/integer/);
    expect(() => Rng.fromState([0, 0, 0, 0])).toThrow(/not all zero/);
    expect(() => Rng.fromState([1, 2, 3])).toThrow(/four/);
  });
});
