// Elementwise builtins callable inside index expressions.
import type { BinaryFn, UnaryFn } from './checked.js';

/** Unary builtins; 'abs', 'floor', 'ceil' keep integers, the rest produce floats. */
export const UNARY_BUILTINS: ReadonlySet<string> = new Set<UnaryFn>([
  'exp', 'exp2', 'log', 'log2', 'log1p', 'sqrt', 'rsqrt', 'sin', 'cos', 'tanh', 'sigmoid', 'swish', 'gelu', 'erf', 'abs', 'float', 'floor', 'ceil',
]);
export const BINARY_BUILTINS: ReadonlySet<string> = new Set<BinaryFn>(['min', 'max']);
export const OTHER_BUILTINS: ReadonlySet<string> = new Set(['where', 'pow']);
export const isBuiltin = (n: string): boolean => UNARY_BUILTINS.has(n) || BINARY_BUILTINS.has(n) || OTHER_BUILTINS.has(n);

/** Weight initialisers and their parameter counts. */
export const INITIALISERS: Record<string, { min: number; max: number; doc: string }> = {
  zeros: { min: 0, max: 0, doc: 'zeros' },
  ones: { min: 0, max: 0, doc: 'ones' },
  normal: { min: 2, max: 2, doc: 'normal(mean, std)' },
  uniform: { min: 2, max: 2, doc: 'uniform(low, high)' },
  xavier_uniform: { min: 0, max: 1, doc: 'xavier_uniform(gain = 1)' },
};
