// Float64 meaning of the elementwise builtins, shared by the checker's constant folding
// and the reference interpreter.
import type { UnaryFn } from './checked.js';

/** erf to ~1e-15 relative: a positive Taylor series for |x| < 3, a continued fraction beyond. */
export function erf(x: number): number {
  if (Number.isNaN(x)) return NaN;
  const ax = Math.abs(x);
  if (ax < 3) {
    // erf(x) = 2/sqrt(pi) * exp(-x^2) * sum_n 2^n x^(2n+1) / (1*3*...*(2n+1)); all terms positive.
    let term = ax;
    let sum = ax;
    const x2 = ax * ax;
    for (let n = 1; n < 200; n++) {
      term *= (2 * x2) / (2 * n + 1);
      sum += term;
      if (term < sum * 1e-17) break;
    }
    const r = (2 / Math.sqrt(Math.PI)) * Math.exp(-x2) * sum;
    return x < 0 ? -r : r;
  }
  const r = 1 - erfcLarge(ax);
  return x < 0 ? -r : r;
}

/** erfc(x) for x >= 3 by the Laplace continued fraction, evaluated bottom-up. */
function erfcLarge(x: number): number {
  let f = 0;
  for (let n = 60; n >= 1; n--) f = (n / 2) / (x + f);
  return Math.exp(-x * x) / Math.sqrt(Math.PI) / (x + f);
}

export function applyUnary(op: UnaryFn, a: number): number {
  switch (op) {
    case 'neg': return -a;
    case 'exp': return Math.exp(a);
    case 'exp2': return Math.pow(2, a);
    case 'log': return Math.log(a);
    case 'log2': return Math.log2(a);
    case 'log1p': return Math.log1p(a);
    case 'sqrt': return Math.sqrt(a);
    case 'rsqrt': return 1 / Math.sqrt(a);
    case 'sin': return Math.sin(a);
    case 'cos': return Math.cos(a);
    case 'tanh': return Math.tanh(a);
    case 'sigmoid': return sigmoid(a);
    case 'swish': return a * sigmoid(a);
    case 'gelu': return gelu(a);
    case 'erf': return erf(a);
    case 'abs': return Math.abs(a);
    case 'float': return a;
    case 'floor': return Math.floor(a);
    case 'ceil': return Math.ceil(a);
  }
}

/** x Phi(x); far on the negative side through erfc, so tiny values keep their precision. */
export function gelu(a: number): number {
  const z = -a / Math.SQRT2;
  return z >= 3 ? 0.5 * a * erfcLarge(z) : 0.5 * a * (1 + erf(a / Math.SQRT2));
}

/** Logistic function without overflow for large |a|. */
export function sigmoid(a: number): number {
  if (a >= 0) return 1 / (1 + Math.exp(-a));
  const e = Math.exp(a);
  return e / (1 + e);
}
