// AdamW with global gradient-norm clipping over a FlatParams vector: one step is one compiled
// plan (models/train.ret adamw_step: the two-level squared norm, then the fused elementwise
// update that clips by it), run through any target's PlanExec; no host loop per tensor. The
// host checks the norm before it keeps anything, so a non-finite gradient changes nothing.
import { RunError } from '../../dsl/reference/interpreter.js';
import type { HostValue, PlanExec } from '../model-runner.js';
import type { FlatParams } from './flat-params.js';
import { sumsqBlocks, trainPlan } from './train-fns.js';

export interface AdamWOptions {
  /** 0.9 */
  beta1?: number;
  /** 0.95 */
  beta2?: number;
  /** 1e-8 */
  eps?: number;
  /** Decoupled weight decay on matrices (FlatParams.decayMask), 0.1. */
  weightDecay?: number;
  /** Clip the global gradient norm to this (torch's clip_grad_norm_), 1.0; 0 = off. */
  clip?: number;
  /** Decay the token embeddings too (default no). */
  decayEmbeddings?: boolean;
  /** The name of the target `exec` runs on, whose schedule defaults the plan takes (optional). */
  target?: string;
}

export const ADAMW_STATE = { m: 'adamw.m', v: 'adamw.v', t: 'adamw.t' } as const;

const scalar = (x: number): HostValue => ({ shape: [], data: Float64Array.of(x) });

function option(name: string, given: number | undefined, dflt: number, ok: (x: number) => boolean): number {
  const x = given ?? dflt;
  if (!Number.isFinite(x) || !ok(x)) throw new RangeError(`AdamW ${name} = ${x} is out of range`);
  return x;
}

export class AdamW {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  readonly clip: number;
  private m: Float32Array;
  private v: Float32Array;
  /** Weight decay coefficient per value: weightDecay on the decayed weights, else 0. */
  private readonly wd: Float32Array;
  private steps = 0;
  private readonly target: string | undefined;

  constructor(readonly params: FlatParams, private readonly exec: PlanExec, opts: AdamWOptions = {}) {
    const beta = (x: number) => x >= 0 && x < 1, nonNegative = (x: number) => x >= 0;
    this.beta1 = option('beta1', opts.beta1, 0.9, beta);
    this.beta2 = option('beta2', opts.beta2, 0.95, beta);
    this.eps = option('eps', opts.eps, 1e-8, nonNegative);
    this.weightDecay = option('weightDecay', opts.weightDecay, 0.1, nonNegative);
    this.clip = option('clip', opts.clip, 1.0, nonNegative);
    this.target = opts.target;
    const n = params.size;
    this.m = new Float32Array(n);
    this.v = new Float32Array(n);
    this.wd = params.decayMask({ decayEmbeddings: !!opts.decayEmbeddings });
    if (this.weightDecay !== 1) for (let i = 0; i < n; i++) this.wd[i]! *= this.weightDecay;
  }

  /** Steps taken. */
  get t(): number { return this.steps; }

  /**
   * One step over all weights with learning rate `lr`: params.data takes the new weights (in
   * place, so its views stay valid). Returns the gradient norm before clipping. A non-finite
   * norm is an error and leaves the weights and the optimizer state as they were.
   */
  async step(grads: Float32Array, lr: number): Promise<{ gradNorm: number }> {
    const n = this.params.size;
    const t = this.steps + 1;
    if (grads.length !== n) throw new RunError(`step ${t}: the gradient has ${grads.length} values, the parameters ${n}`);
    if (!Number.isFinite(lr) || lr < 0) throw new RunError(`step ${t}: learning rate ${lr} is not a finite number >= 0`);
    if (n === 0) { this.steps = t; return { gradNorm: 0 }; }
    const { P, S } = sumsqBlocks(n);
    const plan = trainPlan('adamw_step', new Map([['P', P], ['S', S]]), this.target);
    const vec = (data: Float32Array): HostValue => ({ shape: [n], data });
    const out = await this.exec(plan, new Map([
      ['p', vec(this.params.data)], ['g', vec(grads)], ['m', vec(this.m)], ['v', vec(this.v)], ['wd', vec(this.wd)],
      // The bias corrections and 1 - beta in float64 (models/train.ret says why).
      ['lr', scalar(lr)], ['bc1', scalar(1 - this.beta1 ** t)], ['bc2', scalar(1 - this.beta2 ** t)],
      ['beta1', scalar(this.beta1)], ['beta2', scalar(this.beta2)], ['c1', scalar(1 - this.beta1)], ['c2', scalar(1 - this.beta2)],
      ['eps', scalar(this.eps)], ['clip', scalar(this.clip)],
    ]));
    const gradNorm = Math.sqrt(out.get('gnorm2')!.data[0]!);
    if (!Number.isFinite(gradNorm)) throw new RunError(`step ${t}: the gradient norm is ${gradNorm} (${this.whyNonFinite(grads)}); the step was not applied`);
    this.params.data.set(out.get('p_new')!.data);
    this.m.set(out.get('m_new')!.data);
    this.v.set(out.get('v_new')!.data);
    this.steps = t;
    return { gradNorm };
  }

  /** Where a non-finite norm comes from (a scan of the gradient, on the error path only). */
  private whyNonFinite(grads: Float32Array): string {
    const i = grads.findIndex((x) => !Number.isFinite(x));
    return i < 0 ? 'every gradient is finite, but their squares overflow f32' : `gradient of ${this.params.locate(i)} is ${grads[i]}`;
  }

  /** The state to save: 'adamw.m', 'adamw.v' (f32 [N], copies) and 'adamw.t' (i32 [1]). */
  state(): Map<string, HostValue> {
    return new Map<string, HostValue>([
      [ADAMW_STATE.m, { shape: [this.m.length], data: this.m.slice() }],
      [ADAMW_STATE.v, { shape: [this.v.length], data: this.v.slice() }],
      [ADAMW_STATE.t, { shape: [1], data: Int32Array.of(this.steps) }],
    ]);
  }

  /** Restores state() output; the moments must be [N] for these parameters. */
  load(state: ReadonlyMap<string, HostValue>): void {
    const n = this.params.size;
    const moment = (name: string): HostValue => {
      const x = state.get(name);
      if (!x) throw new RunError(`optimizer state: missing tensor '${name}'`);
      if (x.shape.length !== 1 || x.shape[0] !== n || x.data.length !== n) {
        throw new RunError(`optimizer state: '${name}' has shape [${x.shape.join(', ')}], but the parameters need [${n}] (a checkpoint of another model or size?)`);
      }
      return x;
    };
    const m = moment(ADAMW_STATE.m), v = moment(ADAMW_STATE.v);
    const ts = state.get(ADAMW_STATE.t);
    if (!ts) throw new RunError(`optimizer state: missing tensor '${ADAMW_STATE.t}'`);
    const t = ts.data[0];
    if (ts.data.length !== 1 || numelOf(ts.shape) !== 1 || t === undefined || !Number.isInteger(t) || t < 0) {
      throw new RunError(`optimizer state: '${ADAMW_STATE.t}' must be one integer >= 0 (steps taken), got [${Array.from(ts.data).join(', ')}] of shape [${ts.shape.join(', ')}]`);
    }
    this.m.set(m.data);
    this.v.set(v.data);
    this.steps = t;
  }
}

const numelOf = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);
