// A readable dump of Kernel IR in a C-like pseudo-syntax (for `--emit kernel-ir` and tests):
// the shared C-style printer (c-printer.ts) with kernel IR's own type names and builtins.
// Expressions get only the parentheses precedence requires; binary operators are
// left-associative, so `a - (b - c)` and `a + (b + c)` keep theirs (f32 '+' is not associative).
import { CPrinter } from './c-printer.js';
import type { Kernel, KExpr } from './kir.js';

export class KirPrinter extends CPrinter {
  override header(k: Kernel): string[] {
    const out = [`kernel ${k.name} workgroup(${k.workgroup.join(', ')}) grid(${k.grid.map((e) => this.expr(e)).join(', ')})`];
    for (const b of k.buffers) out.push(`  buffer ${b.type} ${b.name}[] ${b.access}${b.storage ? ` stored as ${b.storage}` : ''}`);
    for (const s of k.scalars) out.push(`  scalar ${s.type} ${s.name}`);
    for (const s of k.shared) out.push(`  ${this.sharedArray(s.name, s.type, s.size)}`);
    out.push('{');
    return out;
  }
}

const printer = new KirPrinter();

export function exprToString(e: KExpr, min = 0): string {
  return printer.expr(e, min);
}

export function kernelToString(k: Kernel): string {
  return printer.kernel(k);
}
