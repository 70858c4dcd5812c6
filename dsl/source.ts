// Source files, spans and diagnostics: every user-facing error is `file:line:col: error: message`.

export interface Span {
  file: string;
  /** 1-based line and column of the first character. */
  line: number;
  col: number;
  /** 0-based character offset and length in the source text. */
  offset: number;
  length: number;
}

export interface Diagnostic {
  span: Span;
  message: string;
}

export class SourceFile {
  private lineStarts: number[] | undefined;
  constructor(
    readonly path: string,
    readonly text: string,
  ) {}

  private starts(): number[] {
    if (!this.lineStarts) {
      const s = [0];
      for (let i = 0; i < this.text.length; i++) if (this.text.charCodeAt(i) === 10) s.push(i + 1);
      this.lineStarts = s;
    }
    return this.lineStarts;
  }

  /** Span for [offset, offset+length). */
  span(offset: number, length: number): Span {
    const starts = this.starts();
    let lo = 0;
    let hi = starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (starts[mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    return { file: this.path, line: lo + 1, col: offset - starts[lo]! + 1, offset, length: Math.max(0, length) };
  }

  lineText(line: number): string {
    const starts = this.starts();
    const a = starts[line - 1] ?? this.text.length;
    const b = line < starts.length ? starts[line]! - 1 : this.text.length;
    return this.text.slice(a, b).replace(/\r$/, '');
  }
}

/** Thrown by every stage for user mistakes; carries one or more located diagnostics. */
export class DiagnosticError extends Error {
  constructor(readonly diagnostics: Diagnostic[]) {
    super(diagnostics.map((d) => `${d.span.file}:${d.span.line}:${d.span.col}: error: ${d.message}`).join('\n'));
  }
}

/** A span that points at a whole file (missing file, I/O errors). */
export function fileSpan(file: string): Span {
  return { file, line: 1, col: 1, offset: 0, length: 0 };
}

const MAX_SHOWN_LINE = 160;

/** `file:line:col: error: message`, then the source line and a caret under the span. */
export function formatDiagnostic(d: Diagnostic, source?: SourceFile): string {
  const head = `${d.span.file}:${d.span.line}:${d.span.col}: error: ${d.message}`;
  if (!source) return head;
  let text = source.lineText(d.span.line);
  let col = d.span.col - 1;
  // Keep very long lines readable: show a window around the column.
  if (text.length > MAX_SHOWN_LINE) {
    const start = Math.max(0, col - MAX_SHOWN_LINE / 2);
    text = (start > 0 ? '...' : '') + text.slice(start, start + MAX_SHOWN_LINE);
    col = col - start + (start > 0 ? 3 : 0);
  }
  // Non-printable characters would shift the caret; show them as '?'.
  text = text.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f\ufffd]/g, '?').replace(/\t/g, ' ');
  const width = Math.max(1, Math.min(d.span.length, text.length - col));
  return `${head}\n  ${text}\n  ${' '.repeat(Math.max(0, col))}${'^'.repeat(width)}`;
}
