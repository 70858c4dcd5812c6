// The shared option parser of every retnetc command: one spec per command, strict parsing,
// a suggestion for a misspelt option, one-value options given once, integers in decimal
// digits only, and the checks that compare paths by what they name rather than how.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import type { Span } from '../../dsl/source.js';

/** A mistake in the command line: printed as `retnetc: error: message`, exit 1. */
export class UsageError extends Error {}

export const at = (span: Pick<Span, 'file' | 'line' | 'col'>): string => `${span.file}:${span.line}:${span.col}`;

/** Prints `where: error: message` and returns exit code 1. */
export function fail(where: string, message: string): number {
  process.stderr.write(`${where}: error: ${message}\n`);
  return 1;
}

export interface OptionSpec {
  type: 'string' | 'boolean';
  /** May be given more than once (values collected in order). */
  multiple?: boolean;
  /** Shown in the usage line, e.g. 'N' or 'parallel|recurrent|chunkwise'. */
  value?: string;
}
export type OptionSpecs = Record<string, OptionSpec>;

export interface ParsedOptions {
  positionals: string[];
  /** Strings for string options, true for booleans; absent when not given. */
  values: Record<string, string | boolean | string[] | undefined>;
}

/** Levenshtein distance (small strings only). */
export function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}

/** The candidate nearest to `word`, if it is near enough to be a likely misspelling. */
export function nearest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = editDistance(word, c);
    if (d < bestD) { bestD = d; best = c; }
  }
  // A prefix of a longer name (--sched) is a likely meaning too.
  const prefixed = candidates.filter((c) => word.length >= 3 && c.startsWith(word));
  if (prefixed.length === 1) return prefixed[0];
  const caseOnly = candidates.find((c) => c.toLowerCase() === word.toLowerCase());
  if (caseOnly !== undefined) return caseOnly;
  return best !== undefined && bestD <= Math.min(3, Math.floor(word.length / 3)) ? best : undefined;
}

export const didYouMean = (word: string, candidates: readonly string[], prefix = ''): string => {
  const n = nearest(word, candidates);
  return n !== undefined ? ` (did you mean ${prefix}${n}?)` : '';
};

/**
 * Parses `args` for a command. Unknown options name the nearest known one; a one-value
 * option given twice is refused (the second would silently win otherwise).
 */
export function parseOptions(command: string, args: string[], specs: OptionSpecs): ParsedOptions {
  const names = Object.keys(specs);
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') break;
    if (!a.startsWith('-') || a === '-') continue;
    // The value of a string option (`--chunk -1`) is not an option; parseArgs says what is wrong with it.
    if (i > 0 && /^--[^=]+$/.test(args[i - 1]!) && specs[args[i - 1]!.slice(2)]?.type === 'string') continue;
    const name = a.startsWith('--') ? a.slice(2).split('=')[0]! : undefined;
    if (name === undefined) throw new UsageError(`unknown option '${a}' for '${command}'${didYouMean(a.replace(/^-+/, ''), names, '--')}`);
    if (!specs[name]) {
      const known = names.length ? ` (options of '${command}': ${names.map((n) => `--${n}`).join(', ')})` : ` ('${command}' takes no options)`;
      const hint = didYouMean(name, names, '--');
      throw new UsageError(`unknown option '--${name}' for '${command}'${hint || known}`);
    }
  }
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean }> = {};
  for (const [n, s] of Object.entries(specs)) options[n] = { type: s.type, ...(s.multiple ? { multiple: true } : {}) };
  let parsed;
  try {
    parsed = parseArgs({ args, allowPositionals: true, strict: true, options, tokens: true });
  } catch (e) {
    if (e instanceof TypeError && String((e as { code?: unknown }).code ?? '').startsWith('ERR_PARSE_ARGS')) throw new UsageError(e.message.replace(/\s*\n\s*/g, ' '));
    throw e;
  }
  const seen = new Set<string>();
  for (const t of parsed.tokens ?? []) {
    if (t.kind !== 'option') continue;
    if (!specs[t.name]?.multiple && seen.has(t.name)) throw new UsageError(`--${t.name} is given more than once`);
    seen.add(t.name);
  }
  return { positionals: parsed.positionals, values: parsed.values as ParsedOptions['values'] };
}

export const str = (o: ParsedOptions, name: string): string | undefined => {
  const v = o.values[name];
  return typeof v === 'string' ? v : undefined;
};
export const flag = (o: ParsedOptions, name: string): boolean => o.values[name] === true;
export const list = (o: ParsedOptions, name: string): string[] => {
  const v = o.values[name];
  return Array.isArray(v) ? v : [];
};
export const given = (o: ParsedOptions, name: string): boolean => o.values[name] !== undefined;

/** An integer written in decimal digits (no sign, no 0x, no exponent, no spaces) in [min, max]. */
export function parseInteger(what: string, text: string, min: number, max: number): number {
  if (!/^[0-9]+$/.test(text)) throw new UsageError(`${what} must be an integer in decimal digits, got '${text}'`);
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new UsageError(`${what} must be an integer from ${min} to ${max}, got ${text}`);
  return n;
}

/** Refuses options that `because` says do not apply. */
export function refuse(o: ParsedOptions, names: readonly string[], because: string): void {
  const bad = names.filter((n) => given(o, n));
  if (bad.length) throw new UsageError(`${bad.map((n) => `--${n}`).join(' and ')} ${bad.length === 1 ? 'does' : 'do'} not apply ${because}`);
}

/**
 * Whether two paths name the same file: the same (device, inode) when both exist, else the
 * same canonical path (symbolic links, `.`, `..` and relative spellings resolved).
 */
export function sameFile(a: string, b: string): boolean {
  try {
    const sa = fs.statSync(a);
    const sb = fs.statSync(b);
    return sa.dev === sb.dev && sa.ino === sb.ino;
  } catch {
    return canonical(a) === canonical(b);
  }
}

function canonical(p: string): string {
  const abs = path.resolve(p);
  try {
    return fs.realpathSync(abs);
  } catch {
    // The file does not exist yet: canonicalise its directory.
    try {
      return path.join(fs.realpathSync(path.dirname(abs)), path.basename(abs));
    } catch {
      return abs;
    }
  }
}
