// The checked program: every name resolved, every shape a normalised Dim, every value typed.
// This is what the reference interpreter evaluates and what the compiler lowers.
import type { DType } from './ast.js';
import type { Dim } from './dims.js';
import type { Span } from './source.js';

/** Value kinds inside expressions; storage dtypes only matter at tensor boundaries. */
export type VKind = 'float' | 'int' | 'bool';

export type UnaryFn =
  | 'neg' | 'exp' | 'exp2' | 'log' | 'log2' | 'log1p' | 'sqrt' | 'rsqrt' | 'sin' | 'cos' | 'tanh'
  | 'sigmoid' | 'swish' | 'gelu' | 'erf' | 'abs' | 'float' | 'floor' | 'ceil';
export type BinaryFn = '+' | '-' | '*' | '/' | '//' | '%' | '^' | 'min' | 'max' | '<' | '<=' | '>' | '>=' | '==' | '!=';

export interface ReduceVar { name: string; extent: Dim }
export interface Constraint { name: string; op: '<' | '<=' | '>' | '>='; rhs: CExpr }

export type CExpr =
  | { k: 'const'; value: number; kind: VKind }
  | { k: 'index'; name: string; kind: 'int' }
  | { k: 'size'; dim: Dim; kind: 'int' }
  | { k: 'load'; v: string; indices: CExpr[]; kind: VKind }
  | { k: 'unary'; op: UnaryFn; a: CExpr; kind: VKind }
  | { k: 'binary'; op: BinaryFn; a: CExpr; b: CExpr; kind: VKind }
  | { k: 'select'; cond: CExpr; a: CExpr; b: CExpr; kind: VKind }
  | { k: 'reduce'; op: 'sum' | 'max'; vars: ReduceVar[]; constraints: Constraint[]; body: CExpr; kind: VKind };

export type VarRole = 'input' | 'output' | 'local' | 'weight';

export interface CVar {
  id: string;
  /** The user's name (several versions of a rebound name share it). */
  name: string;
  dtype: DType;
  shape: Dim[];
  role: VarRole;
  /** For weights: the path relative to the enclosing model or layer scope. */
  path?: string;
}

export type Callee =
  | { kind: 'fn'; fn: CheckedFn }
  /** A model layer: its `forward`, applied once per instance, threading the first argument. */
  | { kind: 'layer'; layer: CheckedLayer };

export type CStmt =
  | { k: 'compute'; target: string; indices: ReduceVar[]; value: CExpr; span: Span }
  | { k: 'call'; callee: Callee; args: string[]; outs: string[]; sizes: Map<string, Dim>; span: Span };

export interface CParam { name: string; dtype: DType; shape: Dim[]; v: string; default?: number }

export interface CheckedFn {
  name: string;
  span: Span;
  /** Size symbols of the signature (every symbol a param or output shape mentions). */
  sizes: string[];
  params: CParam[];
  outputs: CParam[];
  vars: Map<string, CVar>;
  body: CStmt[];
}

export type InitSpec = { name: string; args: number[] };

export interface CWeight { name: string; dtype: DType; shape: number[]; init: InitSpec }

export interface CheckedLayer {
  name: string;
  /** Number of instances, or undefined for a single unrepeated layer. */
  count: number | undefined;
  weights: CWeight[];
  forward: CheckedFn;
}

export interface CheckedModel {
  name: string;
  /** 'default' or the name of a `size` block. */
  config: string;
  hypers: Map<string, number | string>;
  /** All weights with their full names (layers.3.ffn.fc1.weight). */
  weights: CWeight[];
  forward: CheckedFn;
}
