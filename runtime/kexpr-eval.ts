// Host-side evaluation of kernel-IR expressions over scalar parameters (grid sizes), with the
// kernel IR's semantics (compiler/kir.ts, targets/cpu/executor.ts): i32 wraps modulo 2^32,
// '/' truncates toward zero, '%' takes the dividend's sign, x / 0 = x % 0 = 0, f32 rounds
// after every operation, f32 -> i32 truncates and saturates (NaN -> 0). Loads and builtins
// are not allowed: a grid is a function of the scalars only.
import type { KExpr, KType } from '../compiler/kir.js';

export class KExprEvalError extends Error {}

const f2i = (x: number): number =>
  x !== x ? 0 : x >= 2147483647 ? 2147483647 : x <= -2147483648 ? -2147483648 : x | 0;

function conv(x: number, from: KType, to: KType): number {
  if (from === to) return x;
  if (to === 'bool') return x !== 0 ? 1 : 0;
  if (to === 'i32') return from === 'f32' ? f2i(x) : x | 0;
  return Math.fround(x); // i32/bool -> f32
}

const UN_F32: Partial<Record<string, (x: number) => number>> = {
  exp: Math.exp, exp2: (x) => 2 ** x, log: Math.log, log2: Math.log2, log1p: Math.log1p,
  sqrt: Math.sqrt, rsqrt: (x) => 1 / Math.sqrt(x), sin: Math.sin, cos: Math.cos, tanh: Math.tanh,
};

/** Value of `e` (an i32/f32/bool as a JS number; bool as 0/1) given the scalar values. */
export function evalKExpr(e: KExpr, scalars: Readonly<Record<string, number>>): number {
  const go = (x: KExpr): number => {
    switch (x.k) {
      case 'const':
        return x.type === 'f32' ? Math.fround(x.value) : x.type === 'i32' ? x.value | 0 : x.value ? 1 : 0;
      case 'var': {
        const v = scalars[x.name];
        if (v === undefined) throw new KExprEvalError(`unknown scalar '${x.name}'`);
        return x.type === 'f32' ? Math.fround(v) : x.type === 'i32' ? v | 0 : v ? 1 : 0;
      }
      case 'builtin':
        throw new KExprEvalError(`a grid cannot use the builtin ${x.name}`);
      case 'load':
        throw new KExprEvalError(`a grid cannot load from '${x.array}'`);
      case 'cast':
        return conv(go(x.a), x.a.type, x.type);
      case 'select':
        return go(x.cond) ? go(x.a) : go(x.b);
      case 'un': {
        const a = go(x.a);
        if (x.op === 'not') return a ? 0 : 1;
        if (x.a.type === 'i32') {
          if (x.op === 'neg') return -a | 0;
          if (x.op === 'abs') return Math.abs(a) | 0;
          if (x.op === 'floor' || x.op === 'ceil') return a;
          throw new KExprEvalError(`'${x.op}' of an i32`);
        }
        if (x.op === 'neg') return -a;
        if (x.op === 'abs') return Math.abs(a);
        if (x.op === 'floor') return Math.floor(a);
        if (x.op === 'ceil') return Math.ceil(a);
        const f = UN_F32[x.op];
        if (!f) throw new KExprEvalError(`'${x.op}' is not supported in a grid expression`);
        return Math.fround(f(a));
      }
      case 'bin': {
        if (x.op === '&&') return go(x.a) ? (go(x.b) ? 1 : 0) : 0;
        if (x.op === '||') return go(x.a) ? 1 : go(x.b) ? 1 : 0;
        const a = go(x.a);
        const b = go(x.b);
        switch (x.op) {
          case '<': return a < b ? 1 : 0;
          case '<=': return a <= b ? 1 : 0;
          case '>': return a > b ? 1 : 0;
          case '>=': return a >= b ? 1 : 0;
          case '==': return a === b ? 1 : 0;
          case '!=': return a !== b ? 1 : 0;
          case 'min': return x.a.type === 'f32' && (a !== a || b !== b) ? NaN : Math.min(a, b);
          case 'max': return x.a.type === 'f32' && (a !== a || b !== b) ? NaN : Math.max(a, b);
        }
        if (x.a.type === 'i32') {
          switch (x.op) {
            case '+': return (a + b) | 0;
            case '-': return (a - b) | 0;
            case '*': return Math.imul(a, b);
            case '/': return b === 0 ? 0 : (a / b) | 0;
            case '%': return b === 0 ? 0 : (a % b) | 0;
            case 'pow': throw new KExprEvalError(`'pow' of i32 operands`);
          }
        }
        switch (x.op) {
          case '+': return Math.fround(a + b);
          case '-': return Math.fround(a - b);
          case '*': return Math.fround(a * b);
          case '/': return Math.fround(a / b);
          case '%': return Math.fround(a % b);
          case 'pow': return Math.fround(a ** b);
        }
        throw new KExprEvalError(`unknown operator '${String(x.op)}'`);
      }
    }
  };
  return go(e);
}
