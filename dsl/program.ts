// Loads a .ret file and its imports (relative paths, cycles reported), then parses and checks.
// Never throws for user mistakes: every problem is a located diagnostic.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { FileAst } from './ast.js';
import type { CheckedModel } from './checked.js';
import { type CheckResult, Checker, checkFiles } from './checker.js';
import { parseSource } from './parser.js';
import { type Diagnostic, DiagnosticError, type Span, fileSpan, SourceFile } from './source.js';

/** Real .ret files are a few KiB; the cap keeps every input answered within a second or two. */
export const MAX_SOURCE_BYTES = 1024 * 1024;

export interface Program {
  entry: string;
  files: FileAst[];
  sources: Map<string, SourceFile>;
  diagnostics: Diagnostic[];
  checked: CheckResult | undefined;
}

/** The first NUL or byte that is not well-formed UTF-8 (RFC 3629: no overlongs, no surrogates). */
function firstBadByte(b: Uint8Array): { offset: number; nul: boolean } | undefined {
  const cont = (i: number, lo = 0x80, hi = 0xbf) => i < b.length && b[i]! >= lo && b[i]! <= hi;
  for (let i = 0; i < b.length;) {
    const c = b[i]!;
    if (c === 0) return { offset: i, nul: true };
    if (c < 0x80) { i++; continue; }
    let n = 0;
    if (c >= 0xc2 && c <= 0xdf) n = cont(i + 1) ? 2 : 0;
    else if (c === 0xe0) n = cont(i + 1, 0xa0) && cont(i + 2) ? 3 : 0;
    else if (c === 0xed) n = cont(i + 1, 0x80, 0x9f) && cont(i + 2) ? 3 : 0;
    else if (c >= 0xe1 && c <= 0xef) n = cont(i + 1) && cont(i + 2) ? 3 : 0;
    else if (c === 0xf0) n = cont(i + 1, 0x90) && cont(i + 2) && cont(i + 3) ? 4 : 0;
    else if (c >= 0xf1 && c <= 0xf3) n = cont(i + 1) && cont(i + 2) && cont(i + 3) ? 4 : 0;
    else if (c === 0xf4) n = cont(i + 1, 0x80, 0x8f) && cont(i + 2) && cont(i + 3) ? 4 : 0;
    if (n === 0) return { offset: i, nul: false };
    i += n;
  }
  return undefined;
}

/** Reads one source file; returns a diagnostic (pointing at `from`, else the file) on failure. */
export function readSource(file: string, from?: Span): SourceFile | Diagnostic {
  const at = from ?? fileSpan(file);
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return { span: at, message: code === 'ENOENT' ? `cannot read '${file}': no such file` : `cannot read '${file}': ${code ?? String(e)}` };
  }
  if (st.isDirectory()) return { span: at, message: `cannot read '${file}': it is a directory` };
  if (!st.isFile()) return { span: at, message: `cannot read '${file}': not a regular file` };
  if (st.size > MAX_SOURCE_BYTES) return { span: at, message: `'${file}' is ${st.size} bytes; source files are limited to ${MAX_SOURCE_BYTES} bytes (1 MiB)` };
  let bytes: Uint8Array;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    return { span: at, message: `cannot read '${file}': ${(e as NodeJS.ErrnoException).code ?? String(e)}` };
  }
  const bad = firstBadByte(bytes);
  if (bad) {
    const prefix = new TextDecoder().decode(bytes.subarray(0, bad.offset));
    const src = new SourceFile(file, prefix);
    return { span: src.span(prefix.length, 1), message: bad.nul ? 'this is a binary file (NUL byte), not .ret source' : 'invalid UTF-8 in source file' };
  }
  return new SourceFile(file, new TextDecoder().decode(bytes));
}

export function loadProgram(entry: string, opts: { check?: boolean } = {}): Program {
  const program: Program = { entry, files: [], sources: new Map(), diagnostics: [], checked: undefined };
  const stack: string[] = [];
  const visit = (file: string, from?: Span): void => {
    const abs = path.resolve(file);
    if (stack.includes(abs)) {
      const cycle = [...stack.slice(stack.indexOf(abs)), abs].map((p) => path.relative(process.cwd(), p) || p);
      program.diagnostics.push({ span: from ?? fileSpan(file), message: `import cycle: ${cycle.join(' -> ')}` });
      return;
    }
    if (program.sources.has(abs)) return;
    const src = readSource(file, from);
    if (!(src instanceof SourceFile)) { program.diagnostics.push(src); return; }
    program.sources.set(abs, src);
    const { ast, diagnostics } = parseSource(src);
    program.diagnostics.push(...diagnostics);
    stack.push(abs);
    for (const imp of ast.imports) {
      if (!imp.path.endsWith('.ret')) { program.diagnostics.push({ span: imp.span, message: `imports must name a .ret file, got '${imp.path}'` }); continue; }
      visit(path.join(path.dirname(file), imp.path), imp.span);
    }
    stack.pop();
    program.files.push(ast);
  };
  visit(entry);
  if (opts.check !== false && program.diagnostics.length === 0) {
    try {
      program.checked = checkFiles(program.files);
      program.diagnostics.push(...program.checked.diagnostics);
    } catch (e) {
      if (!(e instanceof RangeError)) throw e;
      program.diagnostics.push({ span: fileSpan(entry), message: 'program nested too deeply to check' });
    }
  }
  return program;
}

/** Source for a diagnostic's file, for printing the line and caret. */
export function sourceFor(program: Program, d: Diagnostic): SourceFile | undefined {
  return program.sources.get(path.resolve(d.span.file));
}

/**
 * A model of a checked program for one size, with hyper parameters overridden by value
 * (for example from a torchscale config). Throws DiagnosticError for a bad override.
 */
export function instantiateModel(program: Program, name: string, config = 'default', overrides: Record<string, number | string> = {}): CheckedModel {
  const info = program.checked?.models.get(name);
  if (!info) throw new DiagnosticError([{ span: fileSpan(program.entry), message: `no model '${name}'` }]);
  if (Object.keys(overrides).length === 0 && info.instances.has(config)) return info.instances.get(config)!;
  const checker = new Checker(program.files);
  const m = checker.model(info.decl, config, new Map(Object.entries(overrides)));
  if (!m) throw new DiagnosticError(checker.diagnostics);
  return m;
}
