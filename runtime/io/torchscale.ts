// torchscale RetNet checkpoints: a safetensors file with the RetNetDecoder's state_dict under
// torchscale's tensor names and its RetNetConfig keyword arguments as JSON in the metadata key
// `config` (see shared/fixtures/torchscale/README.md). This file maps that config to the hyper
// parameters of models/retnet.ret (and back), refuses the options the model cannot take with
// one line naming the key and its value, and loads a checkpoint as a checked model plus its
// weights, checked against what the model binds.
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { CheckedModel } from '../../dsl/checked.js';
import { instantiateModel, loadProgram, type Program } from '../../dsl/program.js';
import { DiagnosticError } from '../../dsl/source.js';
import { RunError } from '../../dsl/reference/interpreter.js';
import type { ModelPlan } from '../../compiler/pipeline.js';
import { modelProgram } from '../../compiler/pipeline.js';
import { checkWeights, type HostValue } from '../model-runner.js';
import { readSafetensorsFile, SafetensorsError, type Tensor, toFloat64 } from './safetensors.js';

/** A checkpoint or config that cannot be used: one line (the file is said by the caller). */
export class TorchscaleError extends Error {
  override readonly name = 'TorchscaleError';
}

export type Hypers = Record<string, number | string>;

export interface TorchscaleConfig {
  /** The keyword arguments as read. */
  raw: Record<string, unknown>;
  /** The hypers of models/retnet.ret they give. */
  hypers: Hypers;
  /** torchscale's recurrent_chunk_size (informational: retnetc picks its own chunk). */
  chunk?: number;
  /** How much W_q and W_k were scaled (metadata `qk_gain`, informational). */
  qkGain?: number;
}

// ---- RetNetConfig -> hypers -------------------------------------------------------------------

type Kind = 'int' | 'bool' | 'number' | 'string';

/** Keys mapped onto a hyper parameter. */
const MAPPED: Record<string, { hyper: string; kind: Kind }> = {
  decoder_embed_dim: { hyper: 'embed_dim', kind: 'int' },
  decoder_value_embed_dim: { hyper: 'value_dim', kind: 'int' },
  decoder_retention_heads: { hyper: 'heads', kind: 'int' },
  decoder_ffn_embed_dim: { hyper: 'ffn_dim', kind: 'int' },
  decoder_layers: { hyper: 'n_layers', kind: 'int' },
  activation_fn: { hyper: 'act', kind: 'string' },
  vocab_size: { hyper: 'vocab', kind: 'int' },
  layernorm_eps: { hyper: 'eps', kind: 'number' },
  no_scale_embedding: { hyper: 'scale_embedding', kind: 'bool' },
  layernorm_embedding: { hyper: 'layernorm_embedding', kind: 'bool' },
};

/** RetNetConfig's defaults for the mapped keys (torchscale/architecture/config.py). */
const DEFAULTS: Record<string, unknown> = {
  decoder_embed_dim: 768, decoder_value_embed_dim: 1280, decoder_retention_heads: 3, decoder_ffn_embed_dim: 1280,
  decoder_layers: 12, activation_fn: 'gelu', vocab_size: -1, layernorm_eps: 1e-6, no_scale_embedding: true, layernorm_embedding: false,
};

/**
 * Keys that do not change the inference forward of RetNetDecoder (training-only settings,
 * torchscale's own schedule, settings that RetNetDecoder does not read), with their types.
 */
const IGNORED: Record<string, Kind> = {
  dropout: 'number', activation_dropout: 'number', drop_path_rate: 'number',
  recurrent_chunk_size: 'int', chunkwise_recurrent: 'bool',
  checkpoint_activations: 'bool', fsdp: 'bool', ddp_rank: 'int',
  // RetNetDecoder reads none of these (GLU has no sub-LN; no relative position buckets):
  subln: 'bool', use_ffn_rms_norm: 'bool', rel_pos_buckets: 'int', max_rel_pos: 'int', xpos_rel_pos: 'bool', xpos_scale_base: 'number', multiway: 'bool',
  // Only read when there are MoE layers (moe_freq > 0, refused below):
  moe_top1_expert: 'bool', moe_expert_count: 'int', moe_gating_use_fp32: 'bool', moe_eval_capacity_token_fraction: 'number',
  moe_second_expert_policy: 'string', moe_normalize_gate_prob_before_dropping: 'bool', use_xmoe: 'bool',
  // Tokenizer and embedding bookkeeping:
  max_target_positions: 'int', share_decoder_input_output_embed: 'bool', pad_token_id: 'int',
};

/** Keys whose every value but one is a different model: the value the model takes. */
const FIXED: Record<string, { kind: Kind; value: unknown; why: string }> = {
  deepnorm: { kind: 'bool', value: false, why: 'DeepNorm is post-norm with scaled residuals; retnet is a pre-norm model' },
  decoder_normalize_before: { kind: 'bool', value: true, why: 'that is post-norm; retnet is a pre-norm model' },
  moe_freq: { kind: 'int', value: 0, why: 'mixture-of-experts layers are not part of retnet' },
  no_output_layer: { kind: 'bool', value: false, why: 'without an output layer there are no logits' },
};

const ACTS = ['swish', 'gelu'];

const show = (v: unknown): string => JSON.stringify(v) ?? String(v);

function checkKind(key: string, v: unknown, kind: Kind): void {
  const ok = kind === 'int' ? typeof v === 'number' && Number.isInteger(v)
    : kind === 'bool' ? typeof v === 'boolean'
    : kind === 'number' ? typeof v === 'number' && Number.isFinite(v)
    : typeof v === 'string';
  if (!ok) throw new TorchscaleError(`config: ${key}: ${show(v)} is not ${kind === 'int' ? 'an integer' : kind === 'bool' ? 'true or false' : kind === 'number' ? 'a number' : 'a string'}`);
}

function nearestKey(key: string, keys: string[]): string {
  let best = '';
  let bestD = Infinity;
  for (const k of keys) {
    const a = key, b = k;
    let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
    for (let i = 1; i <= a.length; i++) {
      const cur = [i];
      for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
    if (prev[b.length]! < bestD) { bestD = prev[b.length]!; best = k; }
  }
  return bestD <= Math.max(2, Math.floor(key.length / 4)) ? ` (did you mean ${best}?)` : '';
}

/**
 * The hypers of models/retnet.ret for a RetNetConfig (its keyword arguments, as JSON text or
 * parsed). RetNetConfig's own rules apply: `deepnorm` turns `subln` and pre-norm off, and
 * `subln` (true by default) turns pre-norm back on. Throws TorchscaleError (one line).
 */
export function configToHypers(config: string | Record<string, unknown>, qkGain?: string): TorchscaleConfig {
  let raw: unknown = config;
  if (typeof config === 'string') {
    try { raw = JSON.parse(config); } catch (e) {
      throw new TorchscaleError(`config is not JSON: ${(e instanceof Error ? e.message : String(e)).split('\n')[0]}`);
    }
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new TorchscaleError(`config must be a JSON object of RetNetConfig keyword arguments, got ${show(raw).slice(0, 60)}`);
  const cfg = raw as Record<string, unknown>;
  const known = [...Object.keys(MAPPED), ...Object.keys(IGNORED), ...Object.keys(FIXED)];
  for (const [key, v] of Object.entries(cfg)) {
    if (MAPPED[key]) checkKind(key, v, MAPPED[key]!.kind);
    else if (FIXED[key]) checkKind(key, v, FIXED[key]!.kind);
    else if (IGNORED[key]) { if (v !== null) checkKind(key, v, IGNORED[key]!); }
    else throw new TorchscaleError(`config: unknown RetNetConfig key '${key}' (value ${show(v)})${nearestKey(key, known)}`);
  }
  const get = (k: string): unknown => (k in cfg ? cfg[k] : DEFAULTS[k]);
  // RetNetConfig.__init__: `if deepnorm: normalize_before = False; subln = False`, then
  // `if subln: normalize_before = True; deepnorm = False` (subln defaults to true).
  const deepnorm = cfg['deepnorm'] === true;
  const subln = deepnorm ? false : (cfg['subln'] ?? true) === true;
  if (deepnorm) throw new TorchscaleError(`config: deepnorm: true is not supported: ${FIXED['deepnorm']!.why}`);
  const normalizeBefore = subln ? true : (cfg['decoder_normalize_before'] ?? true) === true;
  if (!normalizeBefore) throw new TorchscaleError(`config: decoder_normalize_before: false (with subln: false) is not supported: ${FIXED['decoder_normalize_before']!.why}`);
  for (const k of ['moe_freq', 'no_output_layer']) {
    if (k in cfg && cfg[k] !== FIXED[k]!.value) throw new TorchscaleError(`config: ${k}: ${show(cfg[k])} is not supported: ${FIXED[k]!.why}`);
  }
  const act = get('activation_fn') as string;
  if (!ACTS.includes(act)) throw new TorchscaleError(`config: activation_fn: ${show(act)} is not supported (retnet takes ${ACTS.join(' or ')})`);
  for (const k of ['decoder_embed_dim', 'decoder_value_embed_dim', 'decoder_retention_heads', 'decoder_ffn_embed_dim', 'decoder_layers', 'vocab_size']) {
    const v = get(k) as number;
    if (v < 1) throw new TorchscaleError(`config: ${k}: ${v} must be at least 1`);
  }
  const d = get('decoder_embed_dim') as number;
  const dv = get('decoder_value_embed_dim') as number;
  const h = get('decoder_retention_heads') as number;
  if (d % h !== 0) throw new TorchscaleError(`config: decoder_embed_dim: ${d} is not divisible by decoder_retention_heads: ${h}`);
  if (dv % h !== 0) throw new TorchscaleError(`config: decoder_value_embed_dim: ${dv} is not divisible by decoder_retention_heads: ${h}`);
  if ((d / h) % 2 !== 0) throw new TorchscaleError(`config: decoder_embed_dim: ${d} / decoder_retention_heads: ${h} gives an odd key head dim ${d / h} (the rotation needs pairs)`);
  const eps = get('layernorm_eps') as number;
  if (!(eps > 0)) throw new TorchscaleError(`config: layernorm_eps: ${eps} must be positive`);
  const hypers: Hypers = {
    embed_dim: d, value_dim: dv, heads: h, ffn_dim: get('decoder_ffn_embed_dim') as number, n_layers: get('decoder_layers') as number,
    vocab: get('vocab_size') as number, act, eps, scale_embedding: get('no_scale_embedding') ? 0 : 1, layernorm_embedding: get('layernorm_embedding') ? 1 : 0,
  };
  const out: TorchscaleConfig = { raw: cfg, hypers };
  if (typeof cfg['recurrent_chunk_size'] === 'number') out.chunk = cfg['recurrent_chunk_size'];
  if (qkGain !== undefined && Number.isFinite(Number(qkGain))) out.qkGain = Number(qkGain);
  return out;
}

/** The RetNetConfig keyword arguments of retnet hypers (for writing checkpoints). */
export function hypersToConfig(hypers: ReadonlyMap<string, number | string> | Hypers): Record<string, unknown> {
  const h = hypers instanceof Map ? Object.fromEntries(hypers) : (hypers as Hypers);
  const need = (name: string): number | string => {
    const v = h[name];
    if (v === undefined) throw new TorchscaleError(`hyper parameter '${name}' is missing: not a retnet configuration`);
    return v;
  };
  const act = need('act');
  if (typeof act !== 'string' || !ACTS.includes(act)) throw new TorchscaleError(`act = ${show(act)} has no torchscale activation_fn (retnet takes ${ACTS.join(' or ')})`);
  return {
    decoder_embed_dim: need('embed_dim'), decoder_value_embed_dim: need('value_dim'), decoder_retention_heads: need('heads'),
    decoder_ffn_embed_dim: need('ffn_dim'), decoder_layers: need('n_layers'), activation_fn: act, vocab_size: need('vocab'),
    layernorm_eps: need('eps'), no_scale_embedding: Number(need('scale_embedding')) === 0, layernorm_embedding: Number(h['layernorm_embedding'] ?? 0) !== 0,
    decoder_normalize_before: true, deepnorm: false, subln: true,
  };
}

// ---- checkpoints -----------------------------------------------------------------------------

/** models/retnet.ret of this package (from the sources or from the built dist/). */
export function packagedModelFile(name = 'retnet.ret'): string {
  for (const rel of ['../../models/', '../../../models/']) {
    const p = fileURLToPath(new URL(rel + name, import.meta.url));
    if (fs.existsSync(p)) return p;
  }
  throw new TorchscaleError(`cannot find models/${name} beside retnetc`);
}

let packaged: Program | undefined;

/** The checked models/retnet.ret of this package (loaded once). */
export function packagedProgram(): Program {
  if (!packaged) {
    const p = loadProgram(packagedModelFile());
    if (p.diagnostics.length) throw new TorchscaleError(`models/retnet.ret does not check: ${p.diagnostics[0]!.message}`);
    packaged = p;
  }
  return packaged;
}

/** The hypers a named size sets explicitly (its `size NAME { ... }` block). */
export function sizeHypers(program: Program, model: string, size: string): Map<string, number | string> {
  const info = program.checked?.models.get(model);
  if (!info) throw new TorchscaleError(`no model '${model}'`);
  if (!info.configs.includes(size)) throw new TorchscaleError(`model '${model}' has no size '${size}' (sizes: ${info.configs.join(', ')})`);
  const inst = info.instances.get(size)!;
  const decl = info.decl.items.find((i) => i.kind === 'size' && i.name === size);
  const names = decl && decl.kind === 'size' ? decl.values.map((v) => v.name) : [];
  return new Map(names.map((n) => [n, inst.hypers.get(n)!] as const));
}

/** Instantiates `model` with hypers, mapping a checker diagnostic to one TorchscaleError line. */
export function instantiate(program: Program, model: string, size: string, hypers: Hypers = {}): CheckedModel {
  try {
    return instantiateModel(program, model, size, hypers);
  } catch (e) {
    if (e instanceof DiagnosticError) throw new TorchscaleError(e.diagnostics[0]?.message ?? e.message.split('\n')[0]!);
    throw e;
  }
}

export interface LoadedCheckpoint {
  model: CheckedModel;
  /** Every tensor of the file as float64 (weights, and tokens / logits.* when present). */
  weights: Map<string, HostValue>;
  /** The file's `tokens` (int32 [B, T]) when it has them. */
  tokens?: HostValue;
  /** Why the file's `tokens` tensor cannot be used (wrong dtype or rank), when it cannot. */
  tokensError?: string;
  /** The file's config, when its metadata has one. */
  config?: TorchscaleConfig;
  metadata: Record<string, string>;
  /** The file's tensors as stored (dtype included). */
  tensors: Map<string, Tensor>;
}

/** Tensors a checkpoint may hold besides weights. */
export const NOT_WEIGHTS = (name: string): boolean => name === 'tokens' || name.startsWith('logits.');

/**
 * Reads a torchscale checkpoint and instantiates `model` of `program` (default: retnet of
 * models/retnet.ret) from its config; `size` names a size of the model, used when the file
 * has no config and checked against the config when it has one. Weights are checked against
 * what the model binds. Every problem is one TorchscaleError line (without the file name).
 */
export async function loadTorchscale(file: string, opts: { program?: Program; model?: string; size?: string } = {}): Promise<LoadedCheckpoint> {
  let contents;
  try {
    contents = await readSafetensorsFile(file);
  } catch (e) {
    if (e instanceof SafetensorsError) throw new TorchscaleError(oneLine(e.message.replace(`${file}: `, '')));
    throw e;
  }
  const program = opts.program ?? packagedProgram();
  const modelName = opts.model ?? 'retnet';
  const { metadata, tensors } = contents;
  const config = metadata['config'] !== undefined ? configToHypers(metadata['config'], metadata['qk_gain']) : undefined;
  const size = opts.size ?? 'default';
  if (config && opts.size !== undefined) {
    for (const [name, v] of sizeHypers(program, modelName, opts.size)) {
      const c = config.hypers[name];
      if (c !== undefined && c !== v) {
        const key = Object.entries(MAPPED).find(([, m]) => m.hyper === name)?.[0] ?? name;
        throw new TorchscaleError(`--size ${opts.size} sets ${name} = ${v}, but the checkpoint's config has ${key}: ${show(config.raw[key] ?? c)} (${name} = ${c}); leave out --size to take the checkpoint's`);
      }
    }
  }
  const model = instantiate(program, modelName, size, config?.hypers ?? {});
  const weights = new Map<string, HostValue>();
  for (const [name, t] of tensors) {
    try {
      weights.set(name, { shape: t.shape, data: toFloat64(t) });
    } catch (e) {
      if (e instanceof SafetensorsError) throw new TorchscaleError(`tensor '${name}': ${oneLine(e.message)}`);
      throw e;
    }
  }
  // A tied output layer (share_decoder_input_output_embed) is stored once, as the embedding.
  if (config?.raw['share_decoder_input_output_embed'] === true && !weights.has('output_projection.weight') && weights.has('embed_tokens.weight')) {
    weights.set('output_projection.weight', weights.get('embed_tokens.weight')!);
  }
  try {
    checkWeights(modelProgram(model), weights, NOT_WEIGHTS);
  } catch (e) {
    if (e instanceof RunError) throw new TorchscaleError(e.message);
    throw e;
  }
  const out: LoadedCheckpoint = { model, weights, metadata, tensors };
  const tok = tensors.get('tokens');
  if (tok) {
    try { out.tokens = tokensOf(tok, 'tokens'); } catch (e) {
      if (!(e instanceof TorchscaleError)) throw e;
      out.tokensError = e.message;
    }
  }
  if (config) out.config = config;
  return out;
}

/** A `tokens` tensor as int32 [B, T], or a one-line TorchscaleError. */
export function tokensOf(t: Tensor, what = 'tokens'): HostValue {
  if (t.dtype !== 'I32' && t.dtype !== 'I64') throw new TorchscaleError(`'${what}' must be int32 [B, T], got ${t.dtype.toLowerCase()} [${t.shape.join(', ')}]`);
  if (t.shape.length !== 2) throw new TorchscaleError(`'${what}' must be int32 [B, T], got ${t.dtype.toLowerCase()} [${t.shape.join(', ')}]`);
  if (t.shape[0] === 0 || t.shape[1] === 0) throw new TorchscaleError(`'${what}' [${t.shape.join(', ')}] is empty`);
  return { shape: [...t.shape], data: Int32Array.from(toFloat64(t)) };
}

/** The first token outside [0, vocab), as a one-line message naming its position, else undefined. */
export function tokenProblem(tokens: HostValue, vocab: number, what = 'tokens'): string | undefined {
  const T = tokens.shape[1]!;
  for (let i = 0; i < tokens.data.length; i++) {
    const v = tokens.data[i]!;
    if (!(v >= 0 && v < vocab)) return `${what}[${Math.floor(i / T)}, ${i % T}] = ${v} is outside the vocabulary [0, ${vocab})`;
  }
  return undefined;
}

const oneLine = (s: string): string => s.split('\n')[0]!.trim();
