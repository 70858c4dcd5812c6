// The elementwise lowering of any index statement: one thread per output element, every
// reduction a loop. It is the parallel schedule of statements that are not contractions.
import { type Dim } from '../../dsl/dims.js';
import type { IrStmt } from '../ir.js';
import * as K from '../kir.js';
import type { Kernel, KExpr, KStmt } from '../kir.js';
import { type Binding, dimExpr, type ExprLowering, fold } from './expr.js';

export function lowerElementwise(name: string, s: IrStmt, L: ExprLowering, threads: number): Kernel {
  const body: KStmt[] = [];
  const total = s.indices.reduce<KExpr>((acc, v) => K.mul(acc, dimExpr(v.extent, L.sizes)), K.i32(1));
  body.push(K.decl('gid', 'i32', K.add(K.mul(K.wg('x'), K.i32(threads)), K.tid('x'))));
  const inner: KStmt[] = [];
  body.push(K.iff(K.lt(K.v('gid'), fold(total)), inner));
  // Decompose the flat id into indices, last index fastest (row-major like the buffers).
  const bind = new Map<string, Binding>();
  let rest: KExpr = K.v('gid');
  for (let k = s.indices.length - 1; k >= 0; k--) {
    const v = s.indices[k]!;
    const ext = dimExpr(v.extent, L.sizes);
    const name = `i_${v.name.replace(/[^A-Za-z0-9_]/g, '_')}`;
    inner.push(K.decl(name, 'i32', k === 0 ? rest : K.bin('%', rest, ext)));
    if (k > 0) rest = K.bin('/', rest, ext);
    bind.set(v.name, { expr: K.v(name), extent: v.extent as Dim });
  }
  const value = L.expr(s.value, bind, inner);
  const out = L.buffer(s.target, true);
  inner.push(K.store(out, K.v('gid'), K.cast(value, L.buffers.get(s.target)!.type)));
  return {
    name, workgroup: [threads, 1, 1],
    grid: [fold(K.div(K.add(total, K.i32(threads - 1)), K.i32(threads))), K.i32(1), K.i32(1)],
    buffers: [], scalars: [], shared: [], body,
  };
}
