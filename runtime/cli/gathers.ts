// Gathers: an integer input used as an index (`embed[tokens[b, t], c]`). A value outside the
// gathered tensor's range would read 0 in the reference and whatever the kernels read, so a
// token id outside the vocabulary is refused before any target runs, naming the first bad
// position, the tensor and the range.
import type { CheckedFn } from '../../dsl/checked.js';
import { type Dim, devaluate, dimToString } from '../../dsl/dims.js';
import type { Value } from '../../dsl/reference/interpreter.js';
import { lowerFn, type Node, nodeToString, walk } from '../../compiler/ir.js';

export interface Gather {
  /** The integer input that holds the indices. */
  index: string;
  /** The tensor it indexes (variable id and the user's name), and which dimension (0-based). */
  tensor: string;
  tensorName: string;
  dim: number;
  /** The size of that dimension, as the signature writes it. */
  extent: Dim;
  /** The load, as text (for messages). */
  text: string;
}

/** Every load whose index at some dimension is a load of an integer input of `fn`. */
export function gathersOf(fn: CheckedFn): Gather[] {
  const ir = lowerFn(fn);
  const intParams = new Map(fn.params.filter((p) => p.dtype === 'i32' || p.dtype === 'i64').map((p) => [p.v, p.name] as const));
  const shapeOf = (id: string): readonly Dim[] | undefined => ir.vars.get(id)?.shape ?? [...ir.params, ...ir.outputs].find((p) => p.v === id)?.shape;
  const gathers: Gather[] = [];
  const seen = new Set<string>();
  for (const s of ir.body) {
    walk(s.value, (n: Node) => {
      if (n.op !== 'load') return;
      const id = n.arg as string;
      n.src.forEach((ix, d) => {
        const extent = shapeOf(id)?.[d];
        if (ix.op !== 'load' || !intParams.has(ix.arg as string) || !extent) return;
        const key = `${ix.arg as string}/${id}/${d}`;
        if (seen.has(key)) return;
        seen.add(key);
        gathers.push({ index: intParams.get(ix.arg as string)!, tensor: id, tensorName: ir.vars.get(id)?.name ?? id, dim: d, extent, text: nodeToString(n) });
      });
    });
  }
  return gathers;
}

const unflat = (i: number, shape: readonly number[]): number[] => {
  const out = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) { out[d] = i % shape[d]!; i = Math.floor(i / shape[d]!); }
  return out;
};

/** The first index value outside its gathered tensor's range, as one line; undefined when all are in range. */
export function gatherProblem(fn: CheckedFn, inputs: ReadonlyMap<string, Value>, sizes: ReadonlyMap<string, number>): string | undefined {
  let gathers: Gather[];
  try {
    gathers = gathersOf(fn);
  } catch {
    return undefined; // not lowerable to tensor IR (a model layer call): nothing compiled reads it
  }
  for (const g of gathers) {
    const v = inputs.get(g.index);
    const n = devaluate(g.extent, sizes);
    if (!v || n === undefined) continue;
    const data = v.data;
    for (let i = 0; i < data.length; i++) {
      const x = data[i]!;
      if (Number.isInteger(x) && x >= 0 && x < n) continue;
      const pos = v.shape.length ? `[${unflat(i, v.shape).join(', ')}]` : '';
      const dimText = String(n) === dimToString(g.extent) ? '' : ` (${dimToString(g.extent)} = ${n})`;
      return `${g.index}${pos} = ${x} is outside the range of dimension ${g.dim} of '${g.tensorName}'${dimText}, 0 to ${n - 1}: it indexes ${g.text}`;
    }
  }
  return undefined;
}
