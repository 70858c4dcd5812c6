// The untyped syntax tree produced by the parser. The checker resolves it into checked.ts.
import type { Span } from './source.js';

export type DType = 'f32' | 'f16' | 'bf16' | 'f64' | 'i32' | 'i64';
export const DTYPES: readonly DType[] = ['f32', 'f16', 'bf16', 'f64', 'i32', 'i64'];

/** A dimension in a shape: symbols, integers and + - * / of them. */
export type DimExpr =
  | { kind: 'dsym'; name: string; span: Span }
  | { kind: 'dnum'; value: number; span: Span }
  | { kind: 'dbin'; op: '+' | '-' | '*' | '/'; left: DimExpr; right: DimExpr; span: Span };

export interface TypeRef { dtype: DType; dims: DimExpr[]; span: Span }

export interface Param { name: string; type: TypeRef; default?: Expr; span: Span }

export type BinOp = '+' | '-' | '*' | '/' | '//' | '%' | '^' | '<' | '<=' | '>' | '>=' | '==' | '!=';
export type CmpOp = '<' | '<=' | '>' | '>=' | '==' | '!=';

/** A reduction binder: `s`, `s: T`, or a range constraint `s <= t`. */
export interface Binder { name: string; extent?: DimExpr; cmp?: { op: CmpOp; rhs: Expr }; span: Span }

export interface Arg { name?: string; value: Expr; span: Span }

export type Expr =
  | { kind: 'num'; value: number; isInt: boolean; span: Span }
  | { kind: 'name'; name: string; span: Span }
  | { kind: 'index'; name: string; indices: Expr[]; span: Span }
  | { kind: 'call'; name: string; sizeArgs: Arg[]; args: Arg[]; span: Span }
  | { kind: 'neg'; operand: Expr; span: Span }
  | { kind: 'bin'; op: BinOp; left: Expr; right: Expr; span: Span }
  | { kind: 'reduce'; op: 'sum' | 'max'; binders: Binder[]; body: Expr; span: Span };

export interface IndexBinder { name: string; extent?: DimExpr; span: Span }

export type Stmt =
  /** `let? target[i, j] = value` or `let? target = value` (indices undefined). */
  | { kind: 'assign'; isLet: boolean; target: string; indices?: IndexBinder[]; value: Expr; span: Span }
  /** `(a, b) = f(...)`: a call with several outputs. */
  | { kind: 'multi'; isLet: boolean; targets: { name: string; span: Span }[]; value: Expr; span: Span }
  | { kind: 'if'; cond: Expr; then: Stmt[]; else: Stmt[]; span: Span };

export interface FnDecl {
  kind: 'fn';
  name: string;
  /** Explicit size parameters `fn f[H](...)`, for sizes that appear only inside products. */
  sizeParams: { name: string; span: Span }[];
  params: Param[];
  outputs: Param[];
  body: Stmt[];
  span: Span;
  nameSpan: Span;
}

export interface WeightDecl {
  kind: 'weight';
  name: string;
  type: TypeRef;
  init?: { name: string; args: Arg[]; span: Span };
  cond?: Expr;
  span: Span;
}

export interface HyperDecl { kind: 'hyper'; name: string; value: Expr; span: Span }
export interface SizeDecl { kind: 'size'; name: string; values: { name: string; value: Expr; span: Span }[]; span: Span }

export interface LayerDecl {
  kind: 'layer';
  name: string;
  /** Repetition count `layer layers[n]`; undefined for a single instance. */
  count?: DimExpr;
  items: ModelItem[];
  span: Span;
  nameSpan: Span;
}

export type ModelItem = HyperDecl | SizeDecl | WeightDecl | LayerDecl | FnDecl;

export interface ModelDecl { kind: 'model'; name: string; items: ModelItem[]; span: Span; nameSpan: Span }
export interface ImportDecl { kind: 'import'; path: string; span: Span }

export interface FileAst { path: string; imports: ImportDecl[]; fns: FnDecl[]; models: ModelDecl[] }
