// Cross-entropy of next-token logits, run as the compiled models/train.ret functions on any
// target: `crossEntropy` (training: the mean loss and dlogits from one plan) and
// `crossEntropyLoss` (validation: the loss only).
import { RunError } from '../../dsl/reference/interpreter.js';
import type { HostValue, PlanExec } from '../model-runner.js';
import { trainPlan } from './train-fns.js';

export interface LossResult {
  /** Mean nats per token over all B*T positions. */
  loss: number;
  /** d loss / d logits, [B, T, V] (f32). */
  dlogits: HostValue;
}

/** [B, T, V] of the logits, after checking the targets against them (a target outside the vocabulary would read 0). */
function shapes(logits: HostValue, targets: HostValue): Map<string, number> {
  const [B, T, V] = logits.shape;
  if (logits.shape.length !== 3) throw new RunError(`logits must be [B, T, vocab], got [${logits.shape.join(', ')}]`);
  if (targets.shape.length !== 2 || targets.shape[0] !== B || targets.shape[1] !== T) {
    throw new RunError(`targets must be [${B}, ${T}] to match logits [${logits.shape.join(', ')}], got [${targets.shape.join(', ')}]`);
  }
  if (B! * T! === 0 || V === 0) throw new RunError(`cross-entropy of empty logits [${logits.shape.join(', ')}]`);
  const d = targets.data;
  for (let i = 0; i < d.length; i++) {
    const x = d[i]!;
    if (!Number.isInteger(x) || x < 0 || x >= V!) throw new RunError(`target ${x} at [${Math.floor(i / T!)}, ${i % T!}] is outside the vocabulary 0..${V! - 1}`);
  }
  return new Map([['B', B!], ['T', T!], ['V', V!]]);
}

const asInt = (t: HostValue): HostValue => (t.data instanceof Int32Array ? t : { shape: t.shape, data: Int32Array.from(t.data) });

function finite(loss: number): number {
  if (!Number.isFinite(loss)) throw new RunError(`the loss is not finite (${loss}): the logits hold NaN or infinite values`);
  return loss;
}

/**
 * The mean cross-entropy and its gradient with respect to the logits (training). `target`
 * (optional): the name of the target `exec` runs on, whose schedule defaults the plan takes.
 */
export async function crossEntropy(logits: HostValue, targets: HostValue, exec: PlanExec, target?: string): Promise<LossResult> {
  const plan = trainPlan('cross_entropy', shapes(logits, targets), target);
  const out = await exec(plan, new Map([['logits', logits], ['targets', asInt(targets)]]));
  return { loss: finite(out.get('loss')!.data[0]!), dlogits: out.get('dlogits')! };
}

/** The mean cross-entropy only (validation: no gradient is computed). */
export async function crossEntropyLoss(logits: HostValue, targets: HostValue, exec: PlanExec, target?: string): Promise<number> {
  const plan = trainPlan('cross_entropy_loss', shapes(logits, targets), target);
  const out = await exec(plan, new Map([['logits', logits], ['targets', asInt(targets)]]));
  return finite(out.get('loss')!.data[0]!);
}
