// Recursive-descent parser (chevrotain, embedded actions) from tokens to the AST in ast.ts.
// Each top-level declaration is parsed on its own so that one run reports a syntax error
// per broken declaration instead of stopping at the first.
import { EmbeddedActionsParser, type IToken, type TokenType } from 'chevrotain';
import * as T from './lexer.js';
import type * as A from './ast.js';
import { DTYPES } from './ast.js';
import { type Diagnostic, type Span, SourceFile } from './source.js';

const MAX_NESTING = 200;
const MAX_DIAGNOSTICS = 50;

class RetParser extends EmbeddedActionsParser {
  src!: SourceFile;

  constructor() {
    super(T.allTokens, { maxLookahead: 4, recoveryEnabled: false });
    this.performSelfAnalysis();
  }

  private sp(first: IToken, last?: IToken): Span {
    const end = last ?? first;
    const a = first.startOffset;
    const b = (end.endOffset ?? end.startOffset) + 1;
    return this.src.span(a, b - a);
  }
  private spanOf(a: { span: Span }, b: { span: Span }): Span {
    return this.src.span(a.span.offset, b.span.offset + b.span.length - a.span.offset);
  }
  private last(): IToken {
    return this.LA(0);
  }

  // ---- declarations ----------------------------------------------------------------

  public importDecl = this.RULE('importDecl', (): A.ImportDecl => {
    const kw = this.CONSUME(T.Import);
    const s = this.CONSUME(T.Str);
    return this.ACTION(() => ({ kind: 'import' as const, path: s.image.slice(1, -1), span: this.sp(kw, s) }));
  });

  public fnDecl = this.RULE('fnDecl', (): A.FnDecl => {
    const kw = this.CONSUME(T.Fn);
    const name = this.CONSUME(T.Ident);
    const sizeParams: A.FnDecl['sizeParams'] = [];
    this.OPTION(() => {
      this.CONSUME(T.LBracket);
      this.AT_LEAST_ONE_SEP({ SEP: T.Comma, DEF: () => {
        const t = this.CONSUME2(T.Ident);
        this.ACTION(() => sizeParams.push({ name: t.image, span: this.sp(t) }));
      } });
      this.CONSUME(T.RBracket);
    });
    this.CONSUME(T.LParen);
    const params: A.Param[] = [];
    this.MANY_SEP({ SEP: T.Comma, DEF: () => { const p = this.SUBRULE(this.param); this.ACTION(() => params.push(p)); } });
    this.CONSUME(T.RParen);
    this.CONSUME(T.Arrow);
    const outputs: A.Param[] = [];
    this.OR([
      { ALT: () => {
        this.CONSUME2(T.LParen);
        this.AT_LEAST_ONE_SEP2({ SEP: T.Comma, DEF: () => { const p = this.SUBRULE2(this.param); this.ACTION(() => outputs.push(p)); } });
        this.CONSUME2(T.RParen);
      } },
      { ALT: () => { const p = this.SUBRULE3(this.param); this.ACTION(() => outputs.push(p)); } },
    ]);
    const body = this.SUBRULE(this.block);
    return this.ACTION(() => ({ kind: 'fn' as const, name: name.image, sizeParams, params, outputs, body, span: this.sp(kw, this.last()), nameSpan: this.sp(name) }));
  });

  private param = this.RULE('param', (): A.Param => {
    const name = this.CONSUME(T.Ident);
    this.CONSUME(T.Colon);
    const type = this.SUBRULE(this.typeRef);
    let def: A.Expr | undefined;
    this.OPTION(() => { this.CONSUME(T.Assign); def = this.SUBRULE(this.expr); });
    return this.ACTION(() => ({ name: name.image, type, ...(def ? { default: def } : {}), span: this.sp(name, this.last()) }));
  });

  private typeRef = this.RULE('typeRef', (): A.TypeRef => {
    const dt = this.CONSUME(T.Ident);
    const dims: A.DimExpr[] = [];
    this.OPTION(() => {
      this.CONSUME(T.LBracket);
      this.MANY_SEP({ SEP: T.Comma, DEF: () => { const d = this.SUBRULE(this.dim); this.ACTION(() => dims.push(d)); } });
      this.CONSUME(T.RBracket);
    });
    return this.ACTION(() => {
      if (!(DTYPES as readonly string[]).includes(dt.image)) {
        throw new TypeNameError(dt, `unknown dtype '${dt.image}' (expected one of ${DTYPES.join(', ')})`);
      }
      return { dtype: dt.image as A.DType, dims, span: this.sp(dt, this.last()) };
    });
  });

  // dim := dimMul (('+'|'-') dimMul)*
  private dim = this.RULE('dim', (): A.DimExpr => {
    let left = this.SUBRULE(this.dimMul);
    this.MANY(() => {
      const op = this.OR([{ ALT: () => this.CONSUME(T.Plus) }, { ALT: () => this.CONSUME(T.Minus) }]);
      const right = this.SUBRULE2(this.dimMul);
      left = this.ACTION(() => ({ kind: 'dbin' as const, op: op.image as '+' | '-', left, right, span: this.spanOf(left, right) }));
    });
    return left;
  });
  private dimMul = this.RULE('dimMul', (): A.DimExpr => {
    let left = this.SUBRULE(this.dimAtom);
    this.MANY(() => {
      const op = this.OR([{ ALT: () => this.CONSUME(T.Star) }, { ALT: () => this.CONSUME(T.Slash) }]);
      const right = this.SUBRULE2(this.dimAtom);
      left = this.ACTION(() => ({ kind: 'dbin' as const, op: op.image as '*' | '/', left, right, span: this.spanOf(left, right) }));
    });
    return left;
  });
  private dimAtom = this.RULE('dimAtom', (): A.DimExpr => this.OR([
    { ALT: () => { const t = this.CONSUME(T.Int); return this.ACTION(() => ({ kind: 'dnum' as const, value: Number(t.image), span: this.sp(t) })); } },
    { ALT: () => { const t = this.CONSUME(T.Ident); return this.ACTION(() => ({ kind: 'dsym' as const, name: t.image, span: this.sp(t) })); } },
    { ALT: () => { this.CONSUME(T.LParen); const d = this.SUBRULE(this.dim); this.CONSUME(T.RParen); return d; } },
  ]));

  // ---- statements ------------------------------------------------------------------

  private block = this.RULE('block', (): A.Stmt[] => {
    this.CONSUME(T.LBrace);
    const stmts: A.Stmt[] = [];
    this.MANY(() => { const s = this.SUBRULE(this.stmt); this.ACTION(() => stmts.push(s)); });
    this.CONSUME(T.RBrace);
    return stmts;
  });

  private stmt = this.RULE('stmt', (): A.Stmt => {
    const s = this.OR([
      { ALT: () => this.SUBRULE(this.ifStmt) },
      { ALT: () => this.SUBRULE(this.multiStmt) },
      { ALT: () => this.SUBRULE(this.assignStmt) },
    ]);
    this.OPTION(() => this.CONSUME(T.Semi));
    return s;
  });

  private ifStmt = this.RULE('ifStmt', (): A.Stmt => {
    const kw = this.CONSUME(T.If);
    const cond = this.SUBRULE(this.expr);
    const then = this.SUBRULE(this.block);
    let els: A.Stmt[] = [];
    this.OPTION(() => {
      this.CONSUME(T.Else);
      els = this.OR([
        { ALT: () => this.SUBRULE2(this.block) },
        { ALT: () => { const s = this.SUBRULE2(this.ifStmt); return [s]; } },
      ]);
    });
    return this.ACTION(() => ({ kind: 'if' as const, cond, then, else: els, span: this.sp(kw, this.last()) }));
  });

  private multiStmt = this.RULE('multiStmt', (): A.Stmt => {
    let isLet = false;
    let first: IToken | undefined;
    this.OPTION(() => { first = this.CONSUME(T.Let); isLet = true; });
    const lp = this.CONSUME(T.LParen);
    const targets: { name: string; span: Span }[] = [];
    this.AT_LEAST_ONE_SEP({ SEP: T.Comma, DEF: () => { const t = this.CONSUME(T.Ident); this.ACTION(() => targets.push({ name: t.image, span: this.sp(t) })); } });
    this.CONSUME(T.RParen);
    this.CONSUME(T.Assign);
    const value = this.SUBRULE(this.expr);
    return this.ACTION(() => ({ kind: 'multi' as const, isLet, targets, value, span: this.sp(first ?? lp, this.last()) }));
  });

  private assignStmt = this.RULE('assignStmt', (): A.Stmt => {
    let isLet = false;
    let first: IToken | undefined;
    this.OPTION(() => { first = this.CONSUME(T.Let); isLet = true; });
    const name = this.CONSUME(T.Ident);
    let indices: A.IndexBinder[] | undefined;
    this.OPTION2(() => {
      indices = [];
      this.CONSUME(T.LBracket);
      this.MANY_SEP({ SEP: T.Comma, DEF: () => {
        const t = this.CONSUME2(T.Ident);
        let extent: A.DimExpr | undefined;
        this.OPTION3(() => { this.CONSUME(T.Colon); extent = this.SUBRULE(this.dim); });
        this.ACTION(() => indices!.push({ name: t.image, ...(extent ? { extent } : {}), span: this.sp(t, this.last()) }));
      } });
      this.CONSUME(T.RBracket);
    });
    this.CONSUME(T.Assign);
    const value = this.SUBRULE(this.expr);
    return this.ACTION(() => ({ kind: 'assign' as const, isLet, target: name.image, ...(indices ? { indices } : {}), value, span: this.sp(first ?? name, this.last()) }));
  });

  // ---- expressions -----------------------------------------------------------------

  public expr = this.RULE('expr', (): A.Expr => {
    const left = this.SUBRULE(this.addExpr);
    let out = left;
    this.OPTION(() => {
      const op = this.OR([
        { ALT: () => this.CONSUME(T.LtEq) }, { ALT: () => this.CONSUME(T.GtEq) },
        { ALT: () => this.CONSUME(T.Lt) }, { ALT: () => this.CONSUME(T.Gt) },
        { ALT: () => this.CONSUME(T.EqEq) }, { ALT: () => this.CONSUME(T.NotEq) },
      ]);
      const right = this.SUBRULE2(this.addExpr);
      out = this.ACTION(() => ({ kind: 'bin' as const, op: op.image as A.BinOp, left, right, span: this.spanOf(left, right) }));
    });
    return out;
  });

  private addExpr = this.RULE('addExpr', (): A.Expr => {
    let left = this.SUBRULE(this.mulExpr);
    this.MANY(() => {
      const op = this.OR([{ ALT: () => this.CONSUME(T.Plus) }, { ALT: () => this.CONSUME(T.Minus) }]);
      const right = this.SUBRULE2(this.mulExpr);
      left = this.ACTION(() => ({ kind: 'bin' as const, op: op.image as A.BinOp, left, right, span: this.spanOf(left, right) }));
    });
    return left;
  });

  private mulExpr = this.RULE('mulExpr', (): A.Expr => {
    let left = this.SUBRULE(this.unaryExpr);
    this.MANY(() => {
      const op = this.OR([
        { ALT: () => this.CONSUME(T.Star) }, { ALT: () => this.CONSUME(T.SlashSlash) },
        { ALT: () => this.CONSUME(T.Slash) }, { ALT: () => this.CONSUME(T.Percent) },
      ]);
      const right = this.SUBRULE2(this.unaryExpr);
      left = this.ACTION(() => ({ kind: 'bin' as const, op: op.image as A.BinOp, left, right, span: this.spanOf(left, right) }));
    });
    return left;
  });

  // A reduction binds the whole product that follows it, as in sum_i a_i b_i.
  private unaryExpr = this.RULE('unaryExpr', (): A.Expr => this.OR([
    { ALT: () => {
      const m = this.CONSUME(T.Minus);
      const operand = this.SUBRULE(this.unaryExpr);
      return this.ACTION(() => ({ kind: 'neg' as const, operand, span: this.src.span(m.startOffset, operand.span.offset + operand.span.length - m.startOffset) }));
    } },
    { GATE: () => this.LA(1).tokenType === T.Sum || (this.LA(1).image === 'max' && this.LA(2).tokenType === T.LBracket), ALT: () => this.SUBRULE(this.reduction) },
    { ALT: () => this.SUBRULE(this.powExpr) },
  ]));

  private reduction = this.RULE('reduction', (): A.Expr => {
    const op = this.OR([{ ALT: () => this.CONSUME(T.Sum) }, { ALT: () => this.CONSUME(T.Ident) }]);
    this.CONSUME(T.LBracket);
    const binders: A.Binder[] = [];
    this.AT_LEAST_ONE_SEP({ SEP: T.Comma, DEF: () => { const b = this.SUBRULE(this.binder); this.ACTION(() => binders.push(b)); } });
    this.CONSUME(T.RBracket);
    const body = this.SUBRULE(this.mulExpr);
    return this.ACTION(() => ({ kind: 'reduce' as const, op: op.image as 'sum' | 'max', binders, body, span: this.src.span(op.startOffset, body.span.offset + body.span.length - op.startOffset) }));
  });

  private binder = this.RULE('binder', (): A.Binder => {
    const name = this.CONSUME(T.Ident);
    let extent: A.DimExpr | undefined;
    let cmp: A.Binder['cmp'];
    this.OPTION(() => this.OR([
      { ALT: () => { this.CONSUME(T.Colon); extent = this.SUBRULE(this.dim); } },
      { ALT: () => {
        const op = this.OR2([
          { ALT: () => this.CONSUME(T.LtEq) }, { ALT: () => this.CONSUME(T.GtEq) },
          { ALT: () => this.CONSUME(T.Lt) }, { ALT: () => this.CONSUME(T.Gt) },
        ]);
        const rhs = this.SUBRULE(this.addExpr);
        cmp = { op: op.image as A.CmpOp, rhs };
      } },
    ]));
    return this.ACTION(() => ({ name: name.image, ...(extent ? { extent } : {}), ...(cmp ? { cmp } : {}), span: this.sp(name, this.last()) }));
  });

  private powExpr = this.RULE('powExpr', (): A.Expr => {
    const base = this.SUBRULE(this.primary);
    let out = base;
    this.OPTION(() => {
      this.CONSUME(T.Caret);
      const exp = this.SUBRULE(this.unaryExpr);
      out = this.ACTION(() => ({ kind: 'bin' as const, op: '^' as const, left: base, right: exp, span: this.spanOf(base, exp) }));
    });
    return out;
  });

  private primary = this.RULE('primary', (): A.Expr => this.OR([
    { ALT: () => {
      const t = this.CONSUME(T.Float);
      return this.ACTION(() => ({ kind: 'num' as const, value: Number(t.image), isInt: false, span: this.sp(t) }));
    } },
    { ALT: () => {
      const t = this.CONSUME(T.Int);
      return this.ACTION(() => ({ kind: 'num' as const, value: Number(t.image), isInt: true, span: this.sp(t) }));
    } },
    { ALT: () => { this.CONSUME(T.LParen); const e = this.SUBRULE(this.expr); this.CONSUME(T.RParen); return e; } },
    { ALT: () => this.SUBRULE(this.namedExpr) },
  ]));

  // name, name.path, name[i, j], f(args), f[H = 2](args)
  private namedExpr = this.RULE('namedExpr', (): A.Expr => {
    const first = this.CONSUME(T.Ident);
    let name = first.image;
    this.MANY(() => { this.CONSUME(T.Dot); const part = this.CONSUME2(T.AnyWord); name += '.' + part.image; });
    let bracket: A.Arg[] | undefined;
    let args: A.Arg[] | undefined;
    this.OPTION(() => {
      this.CONSUME(T.LBracket);
      bracket = [];
      this.MANY_SEP({ SEP: T.Comma, DEF: () => { const a = this.SUBRULE(this.arg); this.ACTION(() => bracket!.push(a)); } });
      this.CONSUME(T.RBracket);
    });
    this.OPTION2(() => {
      this.CONSUME(T.LParen);
      args = [];
      this.MANY_SEP2({ SEP: T.Comma, DEF: () => { const a = this.SUBRULE2(this.arg); this.ACTION(() => args!.push(a)); } });
      this.CONSUME(T.RParen);
    });
    return this.ACTION((): A.Expr => {
      const span = this.sp(first, this.last());
      if (args) return { kind: 'call', name, sizeArgs: bracket ?? [], args, span };
      if (bracket) {
        const named = bracket.find((a) => a.name !== undefined);
        if (named) throw new TypeNameError(undefined, `'${named.name} = ...' inside brackets is only allowed for size arguments of a call`, named.span);
        return { kind: 'index', name, indices: bracket.map((a) => a.value), span };
      }
      return { kind: 'name', name, span };
    });
  });

  private arg = this.RULE('arg', (): A.Arg => this.OR([
    { GATE: () => this.LA(2).tokenType === T.Assign, ALT: () => {
      const n = this.CONSUME(T.Ident);
      this.CONSUME(T.Assign);
      const value = this.SUBRULE(this.expr);
      return this.ACTION(() => ({ name: n.image, value, span: this.sp(n, this.last()) }));
    } },
    { ALT: () => { const value = this.SUBRULE2(this.expr); return this.ACTION(() => ({ value, span: value.span })); } },
  ]));

  // ---- models ----------------------------------------------------------------------

  public modelDecl = this.RULE('modelDecl', (): A.ModelDecl => {
    const kw = this.CONSUME(T.Model);
    const name = this.CONSUME(T.Ident);
    this.CONSUME(T.LBrace);
    const items: A.ModelItem[] = [];
    this.MANY(() => { const it = this.SUBRULE(this.modelItem); this.ACTION(() => items.push(it)); });
    this.CONSUME(T.RBrace);
    return this.ACTION(() => ({ kind: 'model' as const, name: name.image, items, span: this.sp(kw, this.last()), nameSpan: this.sp(name) }));
  });

  private modelItem = this.RULE('modelItem', (): A.ModelItem => this.OR([
    { ALT: () => this.SUBRULE(this.hyperDecl) },
    { ALT: () => this.SUBRULE(this.sizeDecl) },
    { ALT: () => this.SUBRULE(this.weightDecl) },
    { ALT: () => this.SUBRULE(this.layerDecl) },
    { ALT: () => this.SUBRULE(this.fnDecl) },
  ]));

  private hyperDecl = this.RULE('hyperDecl', (): A.HyperDecl => {
    const kw = this.CONSUME(T.Hyper);
    const name = this.CONSUME(T.Ident);
    this.CONSUME(T.Assign);
    const value = this.SUBRULE(this.expr);
    return this.ACTION(() => ({ kind: 'hyper' as const, name: name.image, value, span: this.sp(kw, this.last()) }));
  });

  private sizeDecl = this.RULE('sizeDecl', (): A.SizeDecl => {
    const kw = this.CONSUME(T.Size);
    // Size names may start with a digit (torchscale's 3b, 7b, 65b): Int directly followed by Ident.
    let nameText = '';
    this.OR([
      { ALT: () => { const t = this.CONSUME(T.Ident); nameText = t.image; } },
      { ALT: () => {
        const t = this.CONSUME(T.Int);
        nameText = t.image;
        this.OPTION3(() => {
          const rest = this.CONSUME3(T.Ident);
          this.ACTION(() => {
            if (rest.startOffset !== t.startOffset + t.image.length) throw new TypeNameError(rest, 'a size name is one word, such as 7b');
            nameText += rest.image;
          });
        });
      } },
    ]);
    this.CONSUME(T.LBrace);
    const values: A.SizeDecl['values'] = [];
    this.MANY(() => {
      const n = this.CONSUME2(T.Ident);
      this.CONSUME(T.Assign);
      const value = this.SUBRULE(this.expr);
      this.OPTION(() => this.CONSUME(T.Comma));
      this.ACTION(() => values.push({ name: n.image, value, span: this.sp(n, this.last()) }));
    });
    this.CONSUME(T.RBrace);
    return this.ACTION(() => ({ kind: 'size' as const, name: nameText, values, span: this.sp(kw, this.last()) }));
  });

  private weightDecl = this.RULE('weightDecl', (): A.WeightDecl => {
    const kw = this.CONSUME(T.Weight);
    const first = this.CONSUME(T.Ident);
    let name = first.image;
    this.MANY(() => { this.CONSUME(T.Dot); const p = this.CONSUME2(T.AnyWord); name += '.' + p.image; });
    this.CONSUME(T.Colon);
    const type = this.SUBRULE(this.typeRef);
    let init: A.WeightDecl['init'];
    this.OPTION(() => {
      this.CONSUME(T.Tilde);
      const n = this.CONSUME3(T.Ident);
      const args: A.Arg[] = [];
      this.OPTION2(() => {
        this.CONSUME(T.LParen);
        this.MANY_SEP({ SEP: T.Comma, DEF: () => { const a = this.SUBRULE(this.arg); this.ACTION(() => args.push(a)); } });
        this.CONSUME(T.RParen);
      });
      init = this.ACTION(() => ({ name: n.image, args, span: this.sp(n, this.last()) }));
    });
    let cond: A.Expr | undefined;
    this.OPTION3(() => { this.CONSUME(T.If); cond = this.SUBRULE(this.expr); });
    return this.ACTION(() => ({ kind: 'weight' as const, name, type, ...(init ? { init } : {}), ...(cond ? { cond } : {}), span: this.sp(kw, this.last()) }));
  });

  private layerDecl = this.RULE('layerDecl', (): A.LayerDecl => {
    const kw = this.CONSUME(T.Layer);
    const name = this.CONSUME(T.Ident);
    let count: A.DimExpr | undefined;
    this.OPTION(() => { this.CONSUME(T.LBracket); count = this.SUBRULE(this.dim); this.CONSUME(T.RBracket); });
    this.CONSUME(T.LBrace);
    const items: A.ModelItem[] = [];
    this.MANY(() => { const it = this.SUBRULE(this.modelItem); this.ACTION(() => items.push(it)); });
    this.CONSUME(T.RBrace);
    return this.ACTION(() => ({ kind: 'layer' as const, name: name.image, ...(count ? { count } : {}), items, span: this.sp(kw, this.last()), nameSpan: this.sp(name) }));
  });
}

/** Semantic errors raised inside parser actions (bad dtype names and the like). */
class TypeNameError extends Error {
  constructor(readonly token: IToken | undefined, message: string, readonly at?: Span) {
    super(message);
  }
}

let shared: RetParser | undefined;
function parserInstance(): RetParser {
  shared ??= new RetParser();
  return shared;
}

export interface ParseResult { ast: A.FileAst; diagnostics: Diagnostic[] }

/** Tokens after which a '-' is binary (they end an operand). */
function isOperandEnd(ty: TokenType): boolean {
  return ty === T.Ident || ty === T.Int || ty === T.Float || ty === T.RParen || ty === T.RBracket || ty === T.Sum || ty.CATEGORIES?.includes(T.AnyWord) === true;
}

const MAX_EXPR_DEPTH = 2000;
const MAX_EXPR_TOKENS = 20000;
const STATEMENT_KEYWORDS: ReadonlySet<TokenType> = new Set([T.Fn, T.Model, T.Import, T.Let, T.Hyper, T.Size, T.Weight, T.Layer, T.If, T.Else]);

/** Depth of the deepest expression (iteratively, so that a long a + b + ... cannot overflow). */
function tooDeep(ast: A.FileAst): A.Expr | undefined {
  const stack: [A.Expr, number, A.Expr][] = [];
  const pushStmts = (ss: A.Stmt[]): void => {
    for (const st of ss) {
      if (st.kind === 'if') { stack.push([st.cond, 1, st.cond]); pushStmts(st.then); pushStmts(st.else); } else stack.push([st.value, 1, st.value]);
    }
  };
  for (const f of ast.fns) pushStmts(f.body);
  for (const m of ast.models) {
    const items = [...m.items];
    while (items.length) {
      const it = items.pop()!;
      if (it.kind === 'fn') pushStmts(it.body);
      else if (it.kind === 'layer') items.push(...it.items);
      else if (it.kind === 'hyper') stack.push([it.value, 1, it.value]);
    }
  }
  while (stack.length) {
    const [e, d, root] = stack.pop()!;
    if (d > MAX_EXPR_DEPTH) return root;
    switch (e.kind) {
      case 'neg': stack.push([e.operand, d + 1, root]); break;
      case 'bin': stack.push([e.left, d + 1, root], [e.right, d + 1, root]); break;
      case 'reduce': stack.push([e.body, d + 1, root]); for (const b of e.binders) if (b.cmp) stack.push([b.cmp.rhs, d + 1, root]); break;
      case 'index': for (const x of e.indices) stack.push([x, d + 1, root]); break;
      case 'call': for (const a of [...e.args, ...e.sizeArgs]) stack.push([a.value, d + 1, root]); break;
      default: break;
    }
  }
  return undefined;
}

function describe(t: IToken): string {
  if (t.tokenType.name === 'EOF') return 'end of file';
  return `'${t.image.length > 30 ? t.image.slice(0, 30) + '...' : t.image}'`;
}

/** Lex and parse one source file. Never throws for bad input: problems become diagnostics. */
export function parseSource(src: SourceFile): ParseResult {
  const ast: A.FileAst = { path: src.path, imports: [], fns: [], models: [] };
  const diagnostics: Diagnostic[] = [];
  const lexed = T.retLexer.tokenize(src.text);
  for (const e of lexed.errors.slice(0, MAX_DIAGNOSTICS)) {
    const ch = String.fromCodePoint(src.text.codePointAt(e.offset) ?? 0xfffd);
    diagnostics.push({ span: src.span(e.offset, ch.length), message: ch === '"' ? 'unterminated string (strings end on the same line)' : `unexpected character '${ch}'` });
  }
  if (diagnostics.length > 0) return { ast, diagnostics };
  const tokens = lexed.tokens;

  // Bracket nesting is checked before parsing so that deep input can never exhaust the stack.
  let depth = 0;
  for (const t of tokens) {
    const ty = t.tokenType;
    if (ty === T.LParen || ty === T.LBracket || ty === T.LBrace) {
      if (++depth > MAX_NESTING) {
        diagnostics.push({ span: src.span(t.startOffset, 1), message: `brackets nested more than ${MAX_NESTING} deep` });
        return { ast, diagnostics };
      }
    } else if (ty === T.RParen || ty === T.RBracket || ty === T.RBrace) depth = Math.max(0, depth - 1);
  }
  // Prefix minus and '^' recurse in the parser too: bound their runs the same way.
  // An expression of more than MAX_EXPR_TOKENS tokens (a sum of 100,000 terms) is refused here
  // too, before parsing spends seconds on it.
  let run = 0;
  let carets = 0;
  let exprStart = 0;
  for (let i = 0; i < tokens.length; i++) {
    const ty = tokens[i]!.tokenType;
    run = ty === T.Minus && (i === 0 || !isOperandEnd(tokens[i - 1]!.tokenType)) ? run + 1 : 0;
    if (ty === T.Caret) carets++;
    else if (ty === T.Assign || ty === T.LBrace || ty === T.RBrace || ty === T.Semi) { carets = 0; exprStart = i; }
    if (STATEMENT_KEYWORDS.has(ty)) exprStart = i;
    if (run > MAX_NESTING || carets > MAX_NESTING) {
      diagnostics.push({ span: src.span(tokens[i]!.startOffset, 1), message: `expression nested more than ${MAX_NESTING} deep` });
      return { ast, diagnostics };
    }
    if (i - exprStart > MAX_EXPR_TOKENS) {
      const at = tokens[Math.min(exprStart + 1, tokens.length - 1)]!;
      diagnostics.push({ span: src.span(at.startOffset, at.image.length), message: `expression longer than ${MAX_EXPR_TOKENS} tokens; split it with let` });
      return { ast, diagnostics };
    }
  }

  // Split at top-level `fn`, `model` and `import` keywords (outside braces).
  const chunks: IToken[][] = [];
  let cur: IToken[] = [];
  depth = 0;
  for (const t of tokens) {
    const ty = t.tokenType;
    if (depth === 0 && (ty === T.Fn || ty === T.Model || ty === T.Import) && cur.length > 0) { chunks.push(cur); cur = []; }
    if (ty === T.LBrace) depth++;
    else if (ty === T.RBrace) depth = Math.max(0, depth - 1);
    cur.push(t);
  }
  if (cur.length > 0) chunks.push(cur);

  const p = parserInstance();
  p.src = src;
  for (const chunk of chunks) {
    if (diagnostics.length >= MAX_DIAGNOSTICS) break;
    const head = chunk[0]!;
    let rule: () => unknown;
    // A rule that fails returns undefined: only complete declarations reach the AST.
    const keep = <X>(list: X[], x: X | undefined) => { if (x !== undefined && p.errors.length === 0) list.push(x); };
    if (head.tokenType === T.Fn) rule = () => keep(ast.fns, p.fnDecl());
    else if (head.tokenType === T.Model) rule = () => keep(ast.models, p.modelDecl());
    else if (head.tokenType === T.Import) rule = () => keep(ast.imports, p.importDecl());
    else {
      diagnostics.push({ span: src.span(head.startOffset, head.image.length), message: `expected 'fn', 'model' or 'import' at top level, found ${describe(head)}` });
      continue;
    }
    p.input = chunk;
    try {
      rule();
      const err = p.errors[0];
      if (err) {
        const t = err.token;
        const at = t.tokenType.name === 'EOF' ? chunk[chunk.length - 1]! : t;
        const offset = t.tokenType.name === 'EOF' ? (at.endOffset ?? at.startOffset) + 1 : at.startOffset;
        diagnostics.push({ span: src.span(offset, t.tokenType.name === 'EOF' ? 1 : t.image.length), message: syntaxMessage(err.message, t, err.name === 'NoViableAltException' ? err.context?.ruleStack ?? [] : []) });
      } else if (p.input.length > 0 && (p as unknown as { currIdx: number }).currIdx < chunk.length - 1) {
        const rest = chunk[(p as unknown as { currIdx: number }).currIdx + 1]!;
        diagnostics.push({ span: src.span(rest.startOffset, rest.image.length), message: `unexpected ${describe(rest)} after declaration` });
      }
    } catch (e) {
      if (e instanceof TypeNameError) {
        const span = e.at ?? (e.token ? src.span(e.token.startOffset, e.token.image.length) : src.span(head.startOffset, 1));
        diagnostics.push({ span, message: e.message });
      } else if (e instanceof RangeError) {
        diagnostics.push({ span: src.span(head.startOffset, head.image.length), message: 'expression nested too deeply' });
      } else throw e;
    }
  }
  const deep = diagnostics.length === 0 ? tooDeep(ast) : undefined;
  if (deep) diagnostics.push({ span: deep.span, message: `expression too long or too deeply nested (over ${MAX_EXPR_DEPTH} levels); split it with let` });
  diagnostics.sort((a, b) => a.span.offset - b.span.offset);
  return { ast, diagnostics };
}

function syntaxMessage(raw: string, t: IToken, ruleStack: string[] = []): string {
  if (/^Redundant input/.test(raw)) return `unexpected ${describe(t)} after the declaration`;
  const rule = ruleStack[ruleStack.length - 1];
  if (rule === 'primary' || rule === 'unaryExpr' || rule === 'powExpr' || rule === 'namedExpr') return `expected an expression, found ${describe(t)}`;
  // chevrotain says e.g. "Expecting token of type --> RParen <-- but found --> ']' <--".
  const m = /Expecting token of type --> (\w+) <--/.exec(raw);
  if (m) return `expected ${tokenLabel(m[1]!)}, found ${describe(t)}`;
  if (/Expecting: one of these possible Token sequences/.test(raw) || /Expecting: expecting at least one/.test(raw)) {
    return `unexpected ${describe(t)}`;
  }
  return `syntax error at ${describe(t)}`;
}

const LABELS: Record<string, string> = {
  RParen: "')'", LParen: "'('", RBracket: "']'", LBracket: "'['", RBrace: "'}'", LBrace: "'{'",
  Comma: "','", Colon: "':'", Assign: "'='", Arrow: "'->'", Ident: 'a name', Str: 'a string', Int: 'an integer',
};
function tokenLabel(name: string): string {
  const tok: TokenType | undefined = T.allTokens.find((x) => x.name === name);
  if (LABELS[name]) return LABELS[name]!;
  if (tok && typeof tok.PATTERN === 'object' && tok.PATTERN instanceof RegExp) return `'${tok.PATTERN.source.replace(/\\/g, '')}'`;
  return name;
}
