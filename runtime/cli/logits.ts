// retnetc logits: a torchscale checkpoint's logits in one of the three modes, on a target.
// The model (retnet of models/retnet.ret) comes from the checkpoint's config, its weights by
// torchscale's names; tokens are the checkpoint's own `tokens` or those of --tokens FILE. A checkpoint
// directory of retnetc train is read as its model.safetensors.
import * as path from 'node:path';
import { ScheduleError } from '../../compiler/plan.js';
import { MAX_CHUNK } from '../../compiler/schedule.js';
import { RunError } from '../../dsl/reference/interpreter.js';
import { type Mode, MODES, runModelMode } from '../exec.js';
import { deviceError, EXEC_TARGETS, openTarget, targetChunk, targetNamed } from '../targets.js';
import { readSafetensorsFile, SafetensorsError, fromFloat64, writeSafetensorsFile } from '../io/safetensors.js';
import { readCheckpoint } from './common.js';
import { tokenProblem, tokensOf, TorchscaleError } from '../io/torchscale.js';
import type { HostValue } from '../model-runner.js';
import { didYouMean, fail, type OptionSpecs, parseInteger, parseOptions, sameFile, str, UsageError } from './options.js';

export const LOGITS_OPTIONS: OptionSpecs = {
  checkpoint: { type: 'string', value: 'FILE.safetensors' },
  mode: { type: 'string', value: MODES.join('|') },
  chunk: { type: 'string', value: 'N' },
  target: { type: 'string', value: EXEC_TARGETS.join('|') },
  tokens: { type: 'string', value: 'FILE.safetensors' },
  out: { type: 'string', value: 'OUT.safetensors' },
};

export const LOGITS_USAGE = `usage: retnetc logits --checkpoint FILE.safetensors --mode ${MODES.join('|')} [--chunk N] [--target ${EXEC_TARGETS.join('|')}] [--tokens FILE.safetensors] --out OUT.safetensors`;

export async function cmdLogits(args: string[]): Promise<number> {
  const o = parseOptions('logits', args, LOGITS_OPTIONS);
  if (o.positionals.length) throw new UsageError(`unexpected argument '${o.positionals[0]}' (logits takes options only; retnetc logits --help for the usage)`);
  const ckPath = str(o, 'checkpoint');
  const outPath = str(o, 'out');
  const modeText = str(o, 'mode');
  if (!ckPath) throw new UsageError(`--checkpoint FILE.safetensors is required (retnetc logits --help for the usage)`);
  if (!modeText) throw new UsageError(`--mode ${MODES.join('|')} is required (retnetc logits --help for the usage)`);
  if (!outPath) throw new UsageError(`--out OUT.safetensors is required (retnetc logits --help for the usage)`);
  if (!(MODES as readonly string[]).includes(modeText)) throw new UsageError(`unknown mode '${modeText}' (expected ${MODES.join(', ')})${didYouMean(modeText, MODES)}`);
  const mode = modeText as Mode;
  const target = str(o, 'target') ?? 'cpu';
  if (!EXEC_TARGETS.includes(target)) throw new UsageError(`unknown target '${target}' (expected ${EXEC_TARGETS.join(', ')})${didYouMean(target, EXEC_TARGETS)}`);
  const chunkText = str(o, 'chunk');
  if (chunkText !== undefined && mode === 'recurrent') throw new UsageError('--chunk does not apply to --mode recurrent: it steps one token at a time (--chunk sets the chunk of chunkwise and the tile of parallel)');
  const chunk = chunkText === undefined ? targetChunk(target, mode) : parseInteger('--chunk', chunkText, 1, MAX_CHUNK);
  const tokPath = str(o, 'tokens');
  for (const [opt, p] of [['--checkpoint', ckPath], ['--tokens', tokPath]] as const) {
    if (p !== undefined && sameFile(p, outPath)) throw new UsageError(`--out ${outPath} is the ${opt} file ${p}; writing it would destroy it (choose another --out)`);
  }

  const read = await readCheckpoint(ckPath);
  if (typeof read === 'number') return read;
  const { ck } = read;
  let tokens: HostValue;
  let tokWhere = ckPath;
  if (tokPath !== undefined) {
    tokWhere = tokPath;
    try {
      const t = (await readSafetensorsFile(tokPath)).tensors.get('tokens');
      if (!t) return fail(tokPath, `has no 'tokens' tensor (int32 [B, T])`);
      tokens = tokensOf(t);
    } catch (e) {
      if (e instanceof SafetensorsError) return fail(tokPath, e.message.replace(`${tokPath}: `, '').split('\n')[0]!);
      if (e instanceof TorchscaleError) return fail(tokPath, e.message);
      throw e;
    }
  } else {
    if (ck.tokensError) return fail(ckPath, `${ck.tokensError}; give the tokens with --tokens FILE.safetensors`);
    if (!ck.tokens) return fail(ckPath, `has no 'tokens' tensor; give the tokens with --tokens FILE.safetensors (int32 [B, T] named 'tokens')`);
    tokens = ck.tokens;
  }
  const vocab = Number(ck.model.hypers.get('vocab'));
  const bad = tokenProblem(tokens, vocab);
  if (bad) return fail(tokWhere, bad);

  const { exec, release } = openTarget(target);
  let logits: HostValue;
  const t0 = performance.now();
  try {
    // The target's schedule defaults (native: tiled dense sums).
    const dense = targetNamed(target)?.run?.schedule?.dense;
    logits = (await runModelMode(ck.model, ck.weights, tokens, mode, exec, chunk, dense ? { dense } : {})).get('logits')!;
  } catch (e) {
    const device = deviceError(e);
    if (device) return fail('retnetc', device);
    if (e instanceof RunError) return fail(ckPath, e.message.split('\n')[0]!);
    // A schedule the model has no form for (a compiler limitation, not the user's mistake) is still one line.
    if (e instanceof ScheduleError) return fail(ckPath, `--mode ${mode}: ${e.message.split('\n')[0]}`);
    throw e;
  } finally {
    await release();
  }
  const ms = performance.now() - t0;
  let nonFinite = 0;
  let first = -1;
  for (let i = 0; i < logits.data.length; i++) if (!Number.isFinite(logits.data[i]!)) { if (nonFinite++ === 0) first = i; }
  if (nonFinite) {
    const V = logits.shape[2]!, T = logits.shape[1]!;
    process.stderr.write(`retnetc: warning: 'logits' holds ${nonFinite} non-finite value${nonFinite === 1 ? '' : 's'}, the first ${logits.data[first]} at [${Math.floor(first / (T * V))}, ${Math.floor(first / V) % T}, ${first % V}]\n`);
  }
  const meta: Record<string, string> = { mode, target, source: path.basename(ckPath) };
  if (mode !== 'recurrent') meta['chunk'] = String(chunk);
  try {
    await writeSafetensorsFile(outPath, new Map([['logits', fromFloat64(logits.data, logits.shape, 'F32')]]), meta);
  } catch (e) {
    if (e instanceof SafetensorsError) return fail(outPath, e.message.replace(`${outPath}: `, ''));
    throw e;
  }
  process.stdout.write(`wrote logits f32[${logits.shape.join(', ')}] to ${outPath} (mode ${mode}${mode !== 'recurrent' ? `, chunk ${chunk}` : ''}, target ${target}, ${ms.toFixed(0)} ms)\n`);
  return 0;
}
