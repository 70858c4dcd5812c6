// The trainer's progress (runtime/train/progress.ts): plain lines off a terminal (one every
// `every` steps, at each evaluation and at the last step; no escape codes; the last validation
// loss carried along; an ETA from the steps since the start), and the cli-progress bar on a
// terminal with log lines above it.
import { Writable } from 'node:stream';
import { describe, expect, test } from 'vitest';
import { createProgress, formatEta } from '../runtime/train/progress.js';

/** A stream that keeps what is written; `isTTY` as asked. */
function sink(tty: boolean): Writable & { text: () => string; isTTY?: boolean; columns?: number } {
  let out = '';
  const w = new Writable({ write(chunk, _enc, cb) { out += String(chunk); cb(); } }) as Writable & { text: () => string; isTTY?: boolean; columns?: number };
  w.text = () => out;
  if (tty) { w.isTTY = true; w.columns = 120; }
  return w;
}

describe('progress, plain lines', () => {
  test('a line every 5 steps, at evaluations and at the last step; val carried; no escape codes', () => {
    const s = sink(false);
    let ms = 0;
    const p = createProgress({ total: 12, stream: s, every: 5, now: () => ms });
    for (let step = 1; step <= 12; step++) {
      ms = step * 500;
      p.update(step, { loss: 5 - step / 10, tokensPerS: 2048, lr: 1e-3, ...(step === 7 ? { valLoss: 4.5 } : {}) });
      if (step === 8) p.log('saved checkpoint at step 8');
    }
    p.stop();
    const lines = s.text().split('\n').filter(Boolean);
    expect(lines).toEqual([
      'step  5/12  loss 4.5000  2048 tokens/s  lr 1.00e-3  eta 4s',
      'step  7/12  loss 4.3000  val 4.5000  2048 tokens/s  lr 1.00e-3  eta 3s',
      'saved checkpoint at step 8',
      'step 10/12  loss 4.0000  val 4.5000  2048 tokens/s  lr 1.00e-3  eta 1s',
      'step 12/12  loss 3.8000  val 4.5000  2048 tokens/s  lr 1.00e-3  eta 0s',
    ]);
    expect(s.text()).not.toMatch(/\x1b/);
  });

  test('the ETA counts from the first step (which compiles), so neither compilation nor a resumed run\'s earlier steps skew it; no lr when none is given', () => {
    const s = sink(false);
    let ms = 0;
    const p = createProgress({ total: 100, stream: s, every: 10, start: 50, now: () => ms });
    ms = 60_000; // step 51 compiled for a minute
    p.update(51, { loss: 2.5, tokensPerS: 1 });
    ms = 69_000; // then 9 steps in 9 s
    p.update(60, { loss: 2, tokensPerS: 12.5 });
    expect(s.text()).toBe('step  60/100  loss 2.0000  12.5 tokens/s  eta 40s\n');
  });

  test('ETA formats', () => {
    expect([formatEta(0.4), formatEta(59.6), formatEta(185), formatEta(3720), formatEta(NaN)]).toEqual(['0s', '1m00s', '3m05s', '1h02m', '--']);
  });
});

describe('progress on a terminal', () => {
  test('a bar with step/total, the fields and an ETA; log lines come out whole', () => {
    const s = sink(true);
    let ms = 0;
    const p = createProgress({ total: 4, stream: s as unknown as NodeJS.WriteStream, now: () => ms });
    for (let step = 1; step <= 4; step++) {
      ms = step * 1000;
      p.update(step, { loss: 3, tokensPerS: 1000, ...(step === 2 ? { valLoss: 2.75 } : {}) });
      if (step === 2) p.log('evaluated at step 2');
    }
    p.stop();
    p.stop();
    const text = s.text();
    expect(text).toMatch(/\x1b\[/);
    expect(text).toContain('step 4/4');
    expect(text).toContain('loss 3.0000  val 2.7500  1000 tokens/s');
    expect(text).toContain('ETA 0s');
    expect(text).toContain('evaluated at step 2\n');
  });
});
