// One-hot sum elimination in tensor IR (to be written): a sum over an index of a one-hot mask on
// an output index (a gather's gradient: sum[e] where(e // c == h, where(e % c == j, F(e), 0), 0))
// is F at the inverted index, a map instead of a scatter-add.
import type { IrFn } from './ir.js';

/** The function with its one-hot sums eliminated where the index map inverts. */
export function eliminateOneHot(fn: IrFn): IrFn {
  return fn;
}
