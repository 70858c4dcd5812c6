// retnetc export: a checkpoint (a `retnetc train` directory, or a .safetensors file) as one
// torchscale-format file, the fixture format of shared/fixtures/torchscale: the weights the model
// binds, float32, under torchscale's names, with the RetNetConfig keyword arguments as JSON in the
// metadata key `config` (and a fixture's `tokens`); no optimizer or trainer state. `retnetc logits --checkpoint FILE` reads
// it back. Written atomically (a temporary file, fsync, rename), so an existing --out is replaced
// whole or not at all.
import * as path from 'node:path';
import { boundWeights } from '../../compiler/model-split.js';
import { modelProgram } from '../../compiler/pipeline.js';
import { readCheckpoint } from './common.js';
import { fromFloat64, SafetensorsError, type Tensor, writeSafetensorsFile } from '../io/safetensors.js';
import { hypersToConfig } from '../io/torchscale.js';
import { fail, type OptionSpecs, parseOptions, sameFile, str, UsageError } from './options.js';

export const EXPORT_OPTIONS: OptionSpecs = {
  checkpoint: { type: 'string', value: 'PATH' },
  out: { type: 'string', value: 'FILE.safetensors' },
};

export async function cmdExport(args: string[]): Promise<number> {
  const o = parseOptions('export', args, EXPORT_OPTIONS);
  if (o.positionals.length) throw new UsageError(`unexpected argument '${o.positionals[0]}' (export takes options only; retnetc export --help for the usage)`);
  const ckPath = str(o, 'checkpoint');
  const outPath = str(o, 'out');
  if (!ckPath) throw new UsageError('--checkpoint PATH is required (a checkpoint directory written by retnetc train, or a .safetensors file)');
  if (!outPath) throw new UsageError('--out FILE.safetensors is required');
  if (!outPath.endsWith('.safetensors')) throw new UsageError(`--out ${outPath}: the file name must end in .safetensors`);

  const read = await readCheckpoint(ckPath);
  if (typeof read === 'number') return read;
  const { file, ck } = read;
  if (sameFile(file, outPath)) throw new UsageError(`--out ${outPath} is the checkpoint's weights file; writing it would replace it (choose another --out)`);

  // The weights the model binds, as stored when already float32 (bit for bit), else converted.
  const tensors = new Map<string, Tensor>();
  let params = 0;
  for (const name of boundWeights(modelProgram(ck.model)).keys()) {
    const stored = ck.tensors.get(name);
    const w = ck.weights.get(name)!;
    tensors.set(name, stored?.dtype === 'F32' ? stored : fromFloat64(w.data, w.shape, 'F32'));
    params += w.data.length;
  }
  // A torchscale fixture's tokens travel along, so that `logits` runs on them without --tokens.
  if (ck.tokens) tensors.set('tokens', { dtype: 'I32', shape: ck.tokens.shape, data: Int32Array.from(ck.tokens.data) });
  const config = ck.config?.raw ?? hypersToConfig(ck.model.hypers);
  const metadata: Record<string, string> = { config: JSON.stringify(config), source: `retnetc export of ${path.basename(path.resolve(ckPath))}` };
  if (ck.metadata['qk_gain'] !== undefined) metadata['qk_gain'] = ck.metadata['qk_gain'];
  try {
    await writeSafetensorsFile(outPath, tensors, metadata);
  } catch (e) {
    if (e instanceof SafetensorsError) return fail(outPath, e.message.replace(`${outPath}: `, ''));
    throw e;
  }
  process.stdout.write(`wrote ${outPath} (torchscale format: ${tensors.size - (ck.tokens ? 1 : 0)} weights${ck.tokens ? ' and tokens' : ''}, ${params} parameters, f32, config in the metadata)\n`);
  return 0;
}
