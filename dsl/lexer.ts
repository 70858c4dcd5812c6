// Tokens of the .ret language (chevrotain lexer). Newlines are insignificant: statements
// are recognised by their shape (`name[...] =`, `let`, `if`), so formulas may span lines.
import { createToken, Lexer, type TokenType } from 'chevrotain';

/** Any word, keywords included: the parts of a dotted path after the first (ffn.fc1.weight). */
export const AnyWord = createToken({ name: 'AnyWord', pattern: Lexer.NA });
export const Ident = createToken({ name: 'Ident', pattern: /[A-Za-z_][A-Za-z0-9_]*/, categories: [AnyWord] });
const kw = (name: string) => createToken({ name: name[0]!.toUpperCase() + name.slice(1), pattern: new RegExp(name), longer_alt: Ident, categories: [AnyWord] });

export const Fn = kw('fn');
export const Model = kw('model');
export const Import = kw('import');
export const Let = kw('let');
export const Hyper = kw('hyper');
export const Size = kw('size');
export const Weight = kw('weight');
export const Layer = kw('layer');
export const If = kw('if');
export const Else = kw('else');
export const Sum = kw('sum');

export const Float = createToken({ name: 'Float', pattern: /(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+/ });
export const Int = createToken({ name: 'Int', pattern: /\d+/ });
export const Str = createToken({ name: 'Str', pattern: /"[^"\n\\]*"/ });

const punct = (name: string, s: string) => createToken({ name, pattern: new RegExp(s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')) });
export const Arrow = punct('Arrow', '->');
export const EqEq = punct('EqEq', '==');
export const NotEq = punct('NotEq', '!=');
export const LtEq = punct('LtEq', '<=');
export const GtEq = punct('GtEq', '>=');
export const Lt = punct('Lt', '<');
export const Gt = punct('Gt', '>');
export const Assign = punct('Assign', '=');
export const Plus = punct('Plus', '+');
export const Minus = punct('Minus', '-');
export const Star = punct('Star', '*');
export const SlashSlash = punct('SlashSlash', '//');
export const Slash = punct('Slash', '/');
export const Percent = punct('Percent', '%');
export const Caret = punct('Caret', '^');
export const Tilde = punct('Tilde', '~');
export const LParen = punct('LParen', '(');
export const RParen = punct('RParen', ')');
export const LBracket = punct('LBracket', '[');
export const RBracket = punct('RBracket', ']');
export const LBrace = punct('LBrace', '{');
export const RBrace = punct('RBrace', '}');
export const Comma = punct('Comma', ',');
export const Colon = punct('Colon', ':');
export const Semi = punct('Semi', ';');
export const Dot = punct('Dot', '.');

export const WhiteSpace = createToken({ name: 'WhiteSpace', pattern: /[ \t\r\n\f\v]+/, group: Lexer.SKIPPED });
export const Comment = createToken({ name: 'Comment', pattern: /#[^\n]*/, group: Lexer.SKIPPED });

export const allTokens: TokenType[] = [
  WhiteSpace, Comment, AnyWord,
  Fn, Model, Import, Let, Hyper, Size, Weight, Layer, If, Else, Sum,
  Ident, Float, Int, Str,
  Arrow, EqEq, NotEq, LtEq, GtEq, Lt, Gt, Assign, Plus, Minus, Star, SlashSlash, Slash, Percent, Caret, Tilde,
  LParen, RParen, LBracket, RBracket, LBrace, RBrace, Comma, Colon, Semi, Dot,
];

export const retLexer = new Lexer(allTokens, { positionTracking: 'full', ensureOptimizations: false });
export const KEYWORDS = new Set(['fn', 'model', 'import', 'let', 'hyper', 'size', 'weight', 'layer', 'if', 'else', 'sum']);
