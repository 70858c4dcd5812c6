// Every weight of a model in ONE Float32Array, with named ranges, so that the optimizer updates
// all weights in a few launches over one flat vector (models/train.ret adamw_step) instead of a
// host loop per tensor. The model runner reads the weights through subarray views of that array
// (views()); the optimizer writes the new values back into the same array, so the views stay valid.
import { RunError } from '../../dsl/reference/interpreter.js';
import type { HostValue } from '../model-runner.js';

export interface ParamRange {
  name: string;
  shape: number[];
  /** First element in `data`. */
  offset: number;
  /** Number of elements. */
  size: number;
}

/** Which weights take weight decay (decayMask). */
export interface DecayOptions {
  /** Decay the token embeddings too (default: no, as in most LM recipes). */
  decayEmbeddings?: boolean;
  /** Names that count as embeddings (default ['embed_tokens.weight'], torchscale's name). */
  embeddings?: readonly string[];
}

export const EMBEDDING_NAMES: readonly string[] = ['embed_tokens.weight'];

const numel = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);
const shapeStr = (s: readonly number[]): string => `[${s.join(', ')}]`;

export class FlatParams {
  /** All weights, one after another in `ranges` order. */
  readonly data: Float32Array;
  readonly ranges: readonly ParamRange[];
  private readonly byName: Map<string, ParamRange>;
  private viewCache: Map<string, HostValue> | undefined;

  /** Zeroed parameters of these names and shapes, in this order. */
  constructor(specs: Iterable<{ name: string; shape: readonly number[] }>) {
    const ranges: ParamRange[] = [];
    this.byName = new Map();
    let offset = 0;
    for (const s of specs) {
      if (this.byName.has(s.name)) throw new RunError(`parameter '${s.name}' is given twice`);
      if (s.shape.some((d) => !Number.isInteger(d) || d < 0)) throw new RunError(`parameter '${s.name}' has an invalid shape ${shapeStr(s.shape)}`);
      const r: ParamRange = { name: s.name, shape: [...s.shape], offset, size: numel(s.shape) };
      ranges.push(r);
      this.byName.set(s.name, r);
      offset += r.size;
    }
    this.ranges = ranges;
    this.data = new Float32Array(offset);
  }

  /** The weights of a map (Float64Array, Float32Array, ...), copied in the map's order and rounded to f32. */
  static fromWeights(weights: ReadonlyMap<string, HostValue>): FlatParams {
    const fp = new FlatParams([...weights].map(([name, v]) => ({ name, shape: v.shape })));
    for (const r of fp.ranges) {
      const v = weights.get(r.name)!;
      if (v.data.length !== r.size) throw new RunError(`weight '${r.name}' has ${v.data.length} values but shape ${shapeStr(r.shape)} needs ${r.size}`);
      if (v.data instanceof Int32Array) throw new RunError(`weight '${r.name}' is an integer tensor; parameters are f32`);
      fp.data.set(v.data, r.offset);
    }
    return fp;
  }

  /** Total number of values (N). */
  get size(): number { return this.data.length; }

  names(): string[] { return this.ranges.map((r) => r.name); }

  range(name: string): ParamRange {
    const r = this.byName.get(name);
    if (!r) throw new RunError(`no parameter '${name}'`);
    return r;
  }

  /** The weight and multi-index of flat element `i` ("'layers.0.ffn.fc1.weight' [3, 17]"), for messages. */
  locate(i: number): string {
    const r = this.ranges.find((x) => i >= x.offset && i < x.offset + x.size);
    if (!r) throw new RangeError(`element ${i} is outside the ${this.size} parameters`);
    const idx: number[] = [];
    let k = i - r.offset;
    for (let d = r.shape.length - 1; d >= 0; d--) { idx.unshift(k % r.shape[d]!); k = Math.floor(k / r.shape[d]!); }
    return `'${r.name}' [${idx.join(', ')}]`;
  }

  /** One view per weight into `data` (no copies; made once, valid for the life of this object). */
  views(): Map<string, HostValue> {
    this.viewCache ??= new Map(this.ranges.map((r) => [r.name, { shape: r.shape, data: this.data.subarray(r.offset, r.offset + r.size) }] as const));
    return new Map(this.viewCache);
  }

  /**
   * Gradients by weight name (runtime/model-backward.ts: Float64Array per weight) as one flat f32
   * vector in `data`'s layout. Every weight must have a gradient of its shape; a gradient of a
   * name that is not a parameter is an error too (it would be silently dropped).
   */
  flattenGrads(grads: ReadonlyMap<string, HostValue>, out: Float32Array = new Float32Array(this.size)): Float32Array {
    if (out.length !== this.size) throw new RunError(`a flat gradient has ${this.size} values, the buffer given has ${out.length}`);
    for (const r of this.ranges) {
      const g = grads.get(r.name);
      if (!g) throw new RunError(`missing gradient of '${r.name}' (expected ${shapeStr(r.shape)})`);
      if (g.shape.length !== r.shape.length || g.shape.some((d, i) => d !== r.shape[i])) {
        throw new RunError(`gradient of '${r.name}' has shape ${shapeStr(g.shape)}, but the parameter has ${shapeStr(r.shape)}`);
      }
      if (g.data.length !== r.size) throw new RunError(`gradient of '${r.name}' has ${g.data.length} values but shape ${shapeStr(r.shape)} needs ${r.size}`);
      out.set(g.data, r.offset);
    }
    for (const name of grads.keys()) if (!this.byName.has(name)) throw new RunError(`gradient of '${name}', which is not a parameter`);
    return out;
  }

  /**
   * The weight-decay mask, one coefficient per value: 1 on matrices (rank >= 2) except the
   * embeddings unless asked, 0 on vectors (norm weights) and scalars.
   */
  decayMask(opts: DecayOptions = {}): Float32Array {
    const emb = new Set(opts.embeddings ?? EMBEDDING_NAMES);
    const mask = new Float32Array(this.size);
    for (const r of this.ranges) if (decays(r, emb, !!opts.decayEmbeddings)) mask.fill(1, r.offset, r.offset + r.size);
    return mask;
  }

  /** The names decayMask decays, for messages and tests. */
  decayed(opts: DecayOptions = {}): string[] {
    const emb = new Set(opts.embeddings ?? EMBEDDING_NAMES);
    return this.ranges.filter((r) => decays(r, emb, !!opts.decayEmbeddings)).map((r) => r.name);
  }
}

const decays = (r: ParamRange, embeddings: ReadonlySet<string>, decayEmbeddings: boolean): boolean =>
  r.shape.length >= 2 && (decayEmbeddings || !embeddings.has(r.name));
