// Golden diagnostics: one small .ret per error kind in tests/golden/diagnostics/NAME.ret, its
// expected output (every diagnostic, formatted with formatDiagnostic, paths relative to the
// repository root) in NAME.expected. `UPDATE_GOLDEN=1 npx vitest run tests/diagnostics.test.ts`
// rewrites the .expected files; review the diff before committing it.
//
// Besides the byte-for-byte golden comparison, every case also states its count, the
// location of its first diagnostic and a key phrase of its message, so that regenerating the
// goldens cannot silently bless a wrong message or a wrong column.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadProgram, sourceFor, type Program } from '../dsl/program.js';
import { formatDiagnostic } from '../dsl/source.js';

const ROOT = path.resolve(fileURLToPath(new URL('..', import.meta.url)));
const GOLDEN = path.join(ROOT, 'tests', 'golden', 'diagnostics');
const UPDATE = process.env['UPDATE_GOLDEN'] === '1';

/** Every formatted diagnostic, one after another, with absolute paths made repo-relative. */
function render(p: Program): string {
  let out = p.diagnostics.map((d) => formatDiagnostic(d, sourceFor(p, d)) + '\n').join('');
  out = out.split(ROOT + path.sep).join('');
  // Import-cycle messages are relative to the working directory; make them repo-relative too.
  const rel = path.relative(process.cwd(), ROOT);
  if (rel) out = out.split(rel + path.sep).join('');
  return out;
}

/** count; then line, col and a phrase of the first diagnostic (undefined: no diagnostics). */
type Expect = { n: number; first?: [number, number, string]; file?: string };
const CASES: Record<string, Expect> = {
  empty: { n: 0 },
  model_ok: { n: 0 },
  unexpected_character: { n: 1, first: [2, 15, "unexpected character '$'"] },
  unterminated_bracket_at_eof: { n: 1, first: [2, 19, "expected ')', found end of file"] },
  unterminated_string: { n: 1, first: [2, 17, 'unterminated string'] },
  missing_arrow: { n: 1, first: [1, 17, "expected '->', found 'y'"] },
  unknown_dtype: { n: 1, first: [1, 9, "unknown dtype 'f33' (expected one of f32, f16, bf16, f64, i32, i64)"] },
  unknown_name: { n: 1, first: [2, 17, "unknown name 'alpha'"] },
  unknown_tensor: { n: 1, first: [2, 17, "unknown tensor 'z'"] },
  unknown_function: { n: 1, first: [2, 10, "unknown function 'sigmod'"] },
  wrong_number_of_indices: { n: 1, first: [2, 10, "'x' has 2 dimensions [N, D] but 1 index is given"] },
  index_range_mismatch: { n: 1, first: [2, 53, "index 'i' ranges over K (dimension 4 of 'q') but dimension 4 of 'k' is V"] },
  cannot_infer_index_range: { n: 1, first: [2, 14, "cannot infer the range of 'j'"] },
  float_used_as_index: { n: 1, first: [2, 12, 'an index must be an integer expression, but this is a float'] },
  condition_stored_without_where: { n: 1, first: [2, 10, 'a comparison cannot be stored; write where(cond, 1.0, 0.0)'] },
  floor_division_on_floats: { n: 1, first: [2, 10, "'//' needs integer operands"] },
  assign_to_parameter: { n: 1, first: [2, 3, "cannot assign to parameter 'x'"] },
  local_without_let: { n: 1, first: [2, 3, "'t' is not an output or a local; write 'let t ...'"] },
  output_never_assigned: { n: 1, first: [1, 32, "output 'z' of 'f' is never assigned"] },
  output_read_before_assigned: { n: 1, first: [2, 14, "output 'y' is read before it is assigned"] },
  duplicate_function: { n: 1, first: [5, 4, "'f' is already defined at tests/golden/diagnostics/duplicate_function.ret:1:4"] },
  duplicate_parameter: { n: 1, first: [1, 17, "parameter 'x' is declared twice"] },
  call_missing_argument: { n: 1, first: [6, 7, "missing argument 'b' of 'g'"] },
  call_too_many_arguments: { n: 1, first: [6, 12, "'g' takes 1 argument"] },
  call_shape_mismatch: { n: 1, first: [6, 12, "argument 'b' of 'g' must have 1 dimension [N], got [Q, 2]"] },
  call_shape_mismatch_same_rank: { n: 1, first: [6, 12, "argument 'b' of 'g' must have shape [N] with N = P from argument 'a', got [Q]"] },
  call_unknown_named_argument: { n: 1, first: [6, 9, "'g' has no parameter 'b'"] },
  call_two_outputs_one_target: { n: 1, first: [7, 3, "'g' returns 2 outputs (c, d) but 1 target is given"] },
  recursion: { n: 1, first: [2, 7, "'f' calls itself; recursion is not supported"] },
  mutual_recursion: { n: 1, first: [6, 7, 'recursive calls f -> g -> f are not supported'] },
  size_not_determined_by_params: { n: 1, first: [1, 20, "size 'M' of output 'y' is not determined by any parameter"] },
  unknown_import: { n: 1, first: [1, 1, "cannot read 'tests/golden/diagnostics/nothere.ret': no such file"] },
  import_cycle: {
    n: 1,
    file: 'tests/golden/diagnostics/import_cycle/b.ret',
    first: [1, 1, 'import cycle: tests/golden/diagnostics/import_cycle/a.ret -> tests/golden/diagnostics/import_cycle/b.ret -> tests/golden/diagnostics/import_cycle/a.ret'],
  },
  several_errors: { n: 4, first: [2, 21, "unknown name 'alpha'"] },
  several_syntax_errors: { n: 3, first: [3, 1, "expected an expression, found '}'"] },
  model_size_sets_unknown_hyper: { n: 1, first: [3, 23, "size 'small' sets 'E', which is not a hyper parameter of M"] },
  model_weight_shape_not_from_hypers: { n: 1, first: [3, 20, "weight shapes must be known from hyper parameters; 'E' is not"] },
  model_layer_without_forward: { n: 1, first: [3, 9, "layer 'blocks' has no 'fn forward'"] },
  model_without_forward: { n: 1, first: [1, 7, "model 'M' has no 'fn forward'"] },
  model_unknown_initialiser: { n: 1, first: [3, 22, "unknown initialiser 'gaussian'"] },
};

const goldenCases = readdirSync(GOLDEN).filter((f) => f.endsWith('.ret')).map((f) => f.slice(0, -4)).sort();

describe('golden diagnostics', () => {
  it('every golden .ret has an entry in CASES and vice versa', () => {
    expect(goldenCases).toEqual(Object.keys(CASES).sort());
  });

  it.each(goldenCases)('%s', (name) => {
    const file = path.join(GOLDEN, `${name}.ret`);
    const p = loadProgram(file);
    const got = render(p);
    const expectedFile = path.join(GOLDEN, `${name}.expected`);
    if (UPDATE) writeFileSync(expectedFile, got);
    expect(existsSync(expectedFile), `${expectedFile} is missing; run with UPDATE_GOLDEN=1`).toBe(true);
    expect(got).toBe(readFileSync(expectedFile, 'utf8'));

    const want = CASES[name]!;
    expect(p.diagnostics.length, got).toBe(want.n);
    if (want.n === 0) {
      expect(p.checked).toBeDefined();
      return;
    }
    // A program with errors is never handed on as checked-and-clean.
    const d = p.diagnostics[0]!;
    const [line, col, phrase] = want.first!;
    const rel = path.relative(ROOT, path.resolve(d.span.file));
    expect(rel).toBe(want.file ?? `tests/golden/diagnostics/${name}.ret`);
    expect([d.span.line, d.span.col]).toEqual([line, col]);
    expect(render(p).split('\n')[0]).toContain(phrase);
    // Every diagnostic is `file:line:col: error: message` and, where the file could be read,
    // shows its source line with a caret under the reported column.
    for (const diag of p.diagnostics) {
      const text = formatDiagnostic(diag, sourceFor(p, diag));
      const lines = text.split('\n');
      expect(lines[0]).toMatch(/^[^\s:][^:]*:\d+:\d+: error: \S/);
      expect(lines.length).toBe(3);
      const caret = lines[2]!;
      expect(caret.indexOf('^')).toBe(2 + diag.span.col - 1);
    }
  });

  it('the empty file is a valid program with no functions or models', () => {
    const p = loadProgram(path.join(GOLDEN, 'empty.ret'));
    expect(p.diagnostics).toEqual([]);
    expect(p.checked!.fns.size).toBe(0);
    expect(p.checked!.models.size).toBe(0);
  });

  it('several errors in one file are all reported in one run, in source order', () => {
    for (const name of ['several_errors', 'several_syntax_errors']) {
      const p = loadProgram(path.join(GOLDEN, `${name}.ret`));
      expect(p.diagnostics.length).toBeGreaterThanOrEqual(3);
      const lines = p.diagnostics.map((d) => d.span.line);
      expect(lines).toEqual([...lines].sort((a, b) => a - b));
      expect(new Set(lines).size).toBe(lines.length);
    }
  });
});

// ---- cases generated at run time (binary content, file system) ----------------------

let dir = '';
beforeAll(() => { dir = mkdtempSync(path.join(tmpdir(), 'retnetc-diag-')); });
afterAll(() => { if (dir) rmSync(dir, { recursive: true, force: true }); });

const FN_HEAD = 'fn f(x: f32[N]) -> y: f32[N] {\n';
const FN_TAIL = '  y[n] = x[n]\n}\n';
const bytesOf = (...parts: (string | number[])[]): Buffer =>
  Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'utf8') : Buffer.from(p))));

function loadBytes(name: string, bytes: Buffer): { p: Program; file: string; text: string } {
  const file = path.join(dir, name);
  writeFileSync(file, bytes);
  const p = loadProgram(file);
  return { p, file, text: p.diagnostics.map((d) => formatDiagnostic(d, sourceFor(p, d))).join('\n').split(dir).join('<tmp>') };
}

describe('generated diagnostics', () => {
  it('a binary file (NUL byte) is one located diagnostic', () => {
    const { p, text } = loadBytes('binary.ret', bytesOf(FN_HEAD, '  y[n] = x[n]', [0], '\n}\n'));
    expect(p.diagnostics.length).toBe(1);
    expect(p.checked).toBeUndefined();
    expect(text).toBe('<tmp>/binary.ret:2:14: error: this is a binary file (NUL byte), not .ret source');
  });

  it('a NUL as the very first byte is reported at 1:1', () => {
    const { p, text } = loadBytes('nul-first.ret', bytesOf([0, 1, 2, 3], FN_HEAD));
    expect(p.diagnostics.length).toBe(1);
    expect(text).toBe('<tmp>/nul-first.ret:1:1: error: this is a binary file (NUL byte), not .ret source');
  });

  // Each sequence is invalid UTF-8 by RFC 3629 / the WHATWG decoder. It sits in a comment,
  // the one place where the lexer would otherwise accept anything, at line 2, column 5.
  const INVALID: [string, number[]][] = [
    ['a lone continuation byte', [0x80]],
    ['a Latin-1 byte followed by ASCII', [0xe9, 0x20]],
    ['a sequence truncated at the end of the line', [0xe2, 0x82]],
    ['a C0 lead byte (overlong 2-byte)', [0xc0, 0xaf]],
    ['an overlong 3-byte encoding of "/"', [0xe0, 0x80, 0xaf]],
    ['a UTF-16 surrogate encoded as UTF-8', [0xed, 0xa0, 0x80]],
    ['a code point above U+10FFFF', [0xf4, 0x90, 0x80, 0x80]],
    ['the byte 0xFF', [0xff, 0x80, 0x80]],
    ['the byte 0xF8 (5-byte form)', [0xf8, 0x88, 0x80, 0x80, 0x80]],
  ];
  it.each(INVALID)('invalid UTF-8: %s is reported at its byte', (what, seq) => {
    const { p, text } = loadBytes('bad.ret', bytesOf(FN_HEAD, '  # ', seq, ' comment\n', FN_TAIL));
    expect(p.diagnostics.length, `${what}: ${text}`).toBe(1);
    expect(text).toBe('<tmp>/bad.ret:2:5: error: invalid UTF-8 in source file');
  });

  it('invalid UTF-8 truncated at the very end of the file', () => {
    const { p, text } = loadBytes('trunc.ret', bytesOf(FN_HEAD, FN_TAIL, '# \u00e9', [0xf0, 0x9f, 0x98]));
    expect(p.diagnostics.length).toBe(1);
    expect(text).toBe('<tmp>/trunc.ret:4:4: error: invalid UTF-8 in source file');
  });

  it('valid multi-byte UTF-8 in comments is accepted', () => {
    const { p } = loadBytes('ok-utf8.ret', bytesOf('# caf\u00e9 \u2192 \u{1F600} \u{10FFFF}\n', FN_HEAD, FN_TAIL));
    expect(p.diagnostics).toEqual([]);
    expect(p.checked!.fns.has('f')).toBe(true);
  });

  it('a character outside the language is named in the message, even outside the BMP', () => {
    const { p, text } = loadBytes('emoji.ret', bytesOf(FN_HEAD, '  y[n] = x[n] * \u{1F600}\n}\n'));
    expect(p.diagnostics.length).toBe(1);
    expect(text.split('\n')[0]).toBe("<tmp>/emoji.ret:2:17: error: unexpected character '\u{1F600}'");
  });

  it('a directory passed as the file', () => {
    const sub = path.join(dir, 'adir.ret');
    mkdirSync(sub);
    const p = loadProgram(sub);
    expect(p.diagnostics.length).toBe(1);
    expect(p.checked).toBeUndefined();
    const d = p.diagnostics[0]!;
    expect(formatDiagnostic(d, sourceFor(p, d)).split(dir).join('<tmp>')).toBe("<tmp>/adir.ret:1:1: error: cannot read '<tmp>/adir.ret': it is a directory");
  });

  it('a missing file', () => {
    const missing = path.join(dir, 'no', 'such.ret');
    const p = loadProgram(missing);
    expect(p.diagnostics.length).toBe(1);
    expect(p.checked).toBeUndefined();
    const d = p.diagnostics[0]!;
    expect(formatDiagnostic(d, sourceFor(p, d)).split(dir).join('<tmp>')).toBe("<tmp>/no/such.ret:1:1: error: cannot read '<tmp>/no/such.ret': no such file");
  });

  it('an import of a directory points at the import', () => {
    mkdirSync(path.join(dir, 'lib.ret'), { recursive: true });
    const { p, text } = loadBytes('imp-dir.ret', bytesOf('\nimport "lib.ret"\n', FN_HEAD, FN_TAIL));
    expect(p.diagnostics.length).toBe(1);
    expect(text).toBe([
      "<tmp>/imp-dir.ret:2:1: error: cannot read '<tmp>/lib.ret': it is a directory",
      '  import "lib.ret"',
      '  ^^^^^^^^^^^^^^^^',
    ].join('\n'));
  });

  it('100,000 nested brackets give one located diagnostic, not a stack overflow', () => {
    for (const [open, close] of [['(', ')'], ['[', ']']] as const) {
      const body = open.repeat(100_000) + 'x[n]' + close.repeat(100_000);
      const { p } = loadBytes('deep.ret', bytesOf(FN_HEAD, '  y[n] = ', body, '\n}\n'));
      expect(p.diagnostics.length).toBe(1);
      const d = p.diagnostics[0]!;
      expect(d.span.line).toBe(2);
      expect(d.span.col).toBeGreaterThan(1);
      expect(d.message).toMatch(/nested/);
      const shown = formatDiagnostic(d, sourceFor(p, d)).split('\n');
      expect(shown.length).toBe(3);
      // The long line is shown as a window around the column, not 200,000 characters.
      expect(shown[1]!.length).toBeLessThan(200);
      expect(shown[2]!.trimStart()).toMatch(/^\^+$/);
    }
  });

  it('an expression nested too deeply is reported on the line of the expression', () => {
    // 100,000 unary minus signs: no brackets at all, but as deep as the bracket case.
    const { p } = loadBytes('minus.ret', bytesOf(FN_HEAD, '  y[n] = ', '-'.repeat(100_000), 'x[n]\n}\n'));
    expect(p.diagnostics.length).toBe(1);
    expect(p.diagnostics[0]!.message).toMatch(/nested/);
    // Line 2 holds the expression; line 1 (the 'fn' keyword) is not where the problem is.
    expect(p.diagnostics[0]!.span.line, formatDiagnostic(p.diagnostics[0]!)).toBe(2);
  });

  it('a flat sum of 100,000 terms is either accepted or reported at the expression', () => {
    const { p } = loadBytes('flat.ret', bytesOf(FN_HEAD, '  y[n] = x[n]', ' + x[n]'.repeat(100_000), '\n}\n'));
    if (p.diagnostics.length > 0) {
      expect(p.diagnostics.length).toBe(1);
      expect(p.diagnostics[0]!.span.line, formatDiagnostic(p.diagnostics[0]!)).toBe(2);
    } else {
      expect(p.checked!.fns.has('f')).toBe(true);
    }
  });
});
