// Dense statements of every form RetNet has, for the dense lowering tests (tests/dense.test.ts,
// tests/native-blocked-dense.test.ts): the statement, its tensors and sizes, and random inputs.
import type { CVar, ReduceVar } from '../../dsl/checked.js';
import { type Dim, devaluate, dmul, dsym } from '../../dsl/dims.js';
import { add, binary, cnst, idx, type IrStmt, ld, mulN, type Node, reduce, select, size, unary } from '../../compiler/ir.js';
import type { ExprLowering } from '../../compiler/lower/expr.js';
import { prng } from './harness.js';

export interface Case { s: IrStmt; vars: Map<string, CVar>; sizes: Map<string, number> }

export const cvar = (id: string, shape: Dim[]): CVar => ({ id, name: id, dtype: 'f32', shape, role: 'local' as CVar['role'] });
export const rv = (name: string, extent: Dim): ReduceVar => ({ name, extent });


export const shapeOf = (c: Case, id: string): number[] => c.vars.get(id)!.shape.map((x) => devaluate(x, c.sizes)!);
export const numel = (s: number[]): number => s.reduce((a, b) => a * b, 1);

/** Random inputs for every tensor the statement reads (seeded), by buffer name. */
export function inputsOf(c: Case, L: ExprLowering, seed: number): Map<string, Float32Array> {
  const rand = prng(seed);
  const out = new Map<string, Float32Array>();
  for (const [id, b] of L.buffers) if (!b.written) out.set(b.name, Float32Array.from({ length: numel(shapeOf(c, id)) }, () => rand() * 2 - 1));
  return out;
}

// ---- random statements ----------------------------------------------------------------------

export type Kind = 'nt' | 'nn' | 'wgrad' | 'heads' | 'batched' | 'onehot' | 'tail';
export const KINDS: readonly Kind[] = ['nt', 'nn', 'wgrad', 'heads', 'batched', 'onehot', 'tail'];

/** A statement of `kind` at sizes (B, T, C, O, H): the projection shapes RetNet has. */
export function caseOf(kind: Kind, B: number, T: number, C: number, O: number, H: number): Case {
  const [b, t, c, o, h] = ['b', 't', 'c', 'o', 'h'].map(idx) as [Node, Node, Node, Node, Node];
  const [dB, dT, dC, dO, dH] = ['B', 'T', 'C', 'O', 'H'].map(dsym) as [Dim, Dim, Dim, Dim, Dim];
  const sizes = new Map([['B', B], ['T', T], ['C', C], ['O', O], ['H', H]]);
  const vars = new Map<string, CVar>();
  const v = (id: string, shape: Dim[]) => vars.set(id, cvar(id, shape));
  const sum = (vs: ReduceVar[], body: Node) => reduce({ op: 'sum', vars: vs, cons: [] }, body, []);
  let s: IrStmt;
  switch (kind) {
    case 'nt': // y[b, t, o] = sum[c] x[b, t, c] * w[o, c]  (nn.Linear)
      v('x', [dB, dT, dC]); v('w', [dO, dC]); v('y', [dB, dT, dO]);
      s = { target: 'y', indices: [rv('b', dB), rv('t', dT), rv('o', dO)], value: sum([rv('c', dC)], mulN(ld('x', [b, t, c]), ld('w', [o, c]))) };
      break;
    case 'nn': // y[b, t, o] = sum[c] x[b, t, c] * w[c, o]
      v('x', [dB, dT, dC]); v('w', [dC, dO]); v('y', [dB, dT, dO]);
      s = { target: 'y', indices: [rv('b', dB), rv('t', dT), rv('o', dO)], value: sum([rv('c', dC)], mulN(ld('x', [b, t, c]), ld('w', [c, o]))) };
      break;
    case 'wgrad': // gw[o, c] = sum[b, t] dy[b, t, o] * x[b, t, c]  (K = B*T, both operands transposed)
      v('dy', [dB, dT, dO]); v('x', [dB, dT, dC]); v('gw', [dO, dC]);
      s = { target: 'gw', indices: [rv('o', dO), rv('c', dC)], value: sum([rv('b', dB), rv('t', dT)], mulN(ld('dy', [b, t, o]), ld('x', [b, t, c]))) };
      break;
    case 'heads': { // q[b, h, t, i] = sum[c] x[b, t, c] * w[h*O + i, c] / sqrt(O)  (head split, constant scale)
      const i = idx('i');
      v('x', [dB, dT, dC]); v('w', [dmul(dH, dO), dC]); v('q', [dB, dH, dT, dO]);
      s = { target: 'q', indices: [rv('b', dB), rv('h', dH), rv('t', dT), rv('i', dO)], value: sum([rv('c', dC)], binary('/', mulN(ld('x', [b, t, c]), ld('w', [add(mulN(h, size(dO)), i), c])), unary('sqrt', size(dO)))) };
      break;
    }
    case 'batched': { // s[b, h, t, u] = sum[c] q[b, h, t, c] * k[b, h, u, c]  (batch b, h)
      const u = idx('u');
      v('q', [dB, dH, dT, dC]); v('k', [dB, dH, dO, dC]); v('s', [dB, dH, dT, dO]);
      s = { target: 's', indices: [rv('b', dB), rv('h', dH), rv('t', dT), rv('u', dO)], value: sum([rv('c', dC)], mulN(ld('q', [b, h, t, c]), ld('k', [b, h, u, c]))) };
      break;
    }
    case 'onehot': { // dw[u, c] = sum[b, h, t, j] where(h*O + j == u, dv[b, h, t, j] * x[b, t, c], 0)  (autodiff's weight gradient of a head split)
      const [u, j] = [idx('u'), idx('j')];
      v('dv', [dB, dH, dT, dO]); v('x', [dB, dT, dC]); v('dw', [dmul(dH, dO), dC]);
      s = { target: 'dw', indices: [rv('u', dmul(dH, dO)), rv('c', dC)], value: sum([rv('b', dB), rv('h', dH), rv('t', dT), rv('j', dO)], select(binary('==', add(mulN(h, size(dO)), j), u), mulN(ld('dv', [b, h, t, j]), ld('x', [b, t, c])), cnst(0))) };
      break;
    }
    case 'tail': { // y[b, t, o] = swish(sum[c] x[b, t, c] * w[o, c] * g[b, t]) * r[b, t, o] + 1  (factor and tail on output indices)
      v('x', [dB, dT, dC]); v('w', [dO, dC]); v('g', [dB, dT]); v('r', [dB, dT, dO]); v('y', [dB, dT, dO]);
      s = { target: 'y', indices: [rv('b', dB), rv('t', dT), rv('o', dO)], value: add(mulN(unary('swish', sum([rv('c', dC)], mulN(mulN(ld('x', [b, t, c]), ld('w', [o, c])), ld('g', [b, t])))), ld('r', [b, t, o])), cnst(1)) };
      break;
    }
  }
  return { s, vars, sizes };
}

