// A readable dump of Kernel IR in a C-like pseudo-syntax (for `--emit kernel-ir` and tests).
// Expressions get only the parentheses precedence requires; binary operators are
// left-associative, so `a - (b - c)` and `a + (b + c)` keep theirs (f32 '+' is not associative).
import type { Kernel, KExpr, KStmt } from './kir.js';

const PREC: Record<string, number> = {
  '||': 1, '&&': 2, '==': 3, '!=': 3, '<': 4, '<=': 4, '>': 4, '>=': 4, '+': 5, '-': 5, '*': 6, '/': 6, '%': 6,
};
const UNARY = 7;
const PRIMARY = 8;

/** The shortest decimal that reads back as the same float32, always with a '.' or exponent. */
function f32Text(x: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  x = Math.fround(x);
  let s = String(x);
  for (let p = 1; p <= 9; p++) {
    const t = String(Number(x.toPrecision(p)));
    if (Math.fround(Number(t)) === x) { s = t; break; }
  }
  if (Object.is(x, -0)) s = '-0';
  return /[.e]|inf|nan/.test(s) ? s : s + '.0';
}

function prec(e: KExpr): number {
  switch (e.k) {
    case 'const': return e.value < 0 || Object.is(e.value, -0) ? UNARY : PRIMARY;
    case 'un': return e.op === 'neg' || e.op === 'not' ? UNARY : PRIMARY;
    case 'bin': return PREC[e.op] ?? PRIMARY;
    case 'select': return 0;
    default: return PRIMARY;
  }
}

export function exprToString(e: KExpr, min = 0): string {
  const s = exprText(e);
  return prec(e) < min ? `(${s})` : s;
}

function exprText(e: KExpr): string {
  const x = exprToString;
  switch (e.k) {
    case 'const': return e.type === 'f32' ? f32Text(e.value) : e.type === 'bool' ? String(e.value !== 0) : String(e.value | 0);
    case 'var': return e.name;
    case 'builtin': return e.name;
    case 'load': return `${e.array}[${x(e.index)}]`;
    case 'un':
      if (e.op === 'neg') return `-${x(e.a, PRIMARY)}`;
      if (e.op === 'not') return `!${x(e.a, PRIMARY)}`;
      return `${e.op}(${x(e.a)})`;
    case 'bin': {
      const p = PREC[e.op];
      return p === undefined ? `${e.op}(${x(e.a)}, ${x(e.b)})` : `${x(e.a, p)} ${e.op} ${x(e.b, p + 1)}`;
    }
    case 'select': return `${x(e.cond, 1)} ? ${x(e.a, 1)} : ${x(e.b)}`;
    case 'cast': return `${e.type}(${x(e.a)})`;
  }
}

function stmts(ss: KStmt[], ind: string, out: string[]): void {
  for (const s of ss) stmt(s, ind, out);
}

function stmt(s: KStmt, ind: string, out: string[]): void {
  const x = exprToString;
  switch (s.k) {
    case 'decl': out.push(`${ind}${s.type} ${s.name} = ${x(s.init)};`); return;
    case 'assign': out.push(`${ind}${s.name} = ${x(s.value)};`); return;
    case 'local': out.push(`${ind}local ${s.type} ${s.name}[${s.size}];`); return;
    case 'store': out.push(`${ind}${s.array}[${x(s.index)}] = ${x(s.value)};`); return;
    case 'barrier': out.push(`${ind}barrier();`); return;
    case 'comment': out.push(...s.text.split('\n').map((l) => `${ind}// ${l}`)); return;
    case 'for': {
      const [cmp, upd] = s.step > 0 ? ['<', `+= ${s.step}`] : ['>', `-= ${-s.step}`];
      out.push(`${ind}for (i32 ${s.v} = ${x(s.start)}; ${s.v} ${cmp} ${x(s.end, PREC[cmp]! + 1)}; ${s.v} ${upd}) {`);
      stmts(s.body, ind + '  ', out);
      out.push(`${ind}}`);
      return;
    }
    case 'if': {
      out.push(`${ind}if (${x(s.cond)}) {`);
      let cur = s;
      for (;;) {
        stmts(cur.then, ind + '  ', out);
        const only = cur.else.length === 1 ? cur.else[0]! : undefined;
        if (only?.k === 'if') { // print `else if` chains flat
          out.push(`${ind}} else if (${x(only.cond)}) {`);
          cur = only;
          continue;
        }
        if (cur.else.length) {
          out.push(`${ind}} else {`);
          stmts(cur.else, ind + '  ', out);
        }
        break;
      }
      out.push(`${ind}}`);
      return;
    }
  }
}

export function kernelToString(k: Kernel): string {
  const out = [`kernel ${k.name} workgroup(${k.workgroup.join(', ')}) grid(${k.grid.map((e) => exprToString(e)).join(', ')})`];
  for (const b of k.buffers) out.push(`  buffer ${b.type} ${b.name}[] ${b.access}`);
  for (const s of k.scalars) out.push(`  scalar ${s.type} ${s.name}`);
  for (const s of k.shared) out.push(`  shared ${s.type} ${s.name}[${s.size}]`);
  out.push('{');
  stmts(k.body, '  ', out);
  out.push('}');
  return out.join('\n') + '\n';
}
