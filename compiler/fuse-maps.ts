// Elementwise fusion in tensor IR (to be written): a map statement read by one consumer, each of
// its elements once, is inlined into that consumer, so it costs no kernel and no memory pass.
import type { Contraction } from './analysis.js';
import type { IrFn, IrStmt } from './ir.js';

export interface FuseOptions {
  /** Statements that must stay whole (contractions, dense sums): never fused into or away. */
  keep: (s: IrStmt) => boolean;
}

/** The function with its single-use maps inlined into their consumers. */
export function fuseMaps(fn: IrFn, contractions: ReadonlyMap<string, Contraction>, opts: FuseOptions): IrFn {
  void contractions; void opts;
  return fn;
}
