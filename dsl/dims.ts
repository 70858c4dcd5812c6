// Symbolic sizes: normalised polynomials over size symbols with exact-integer checks.
// A quotient that is not polynomial (D / H with both symbolic) becomes an opaque atom.

/** Monomial key (sorted atoms joined by '*', '' for the constant) -> coefficient. */
export type Dim = ReadonlyMap<string, number>;

const norm = (m: Map<string, number>): Dim => {
  for (const [k, v] of m) if (v === 0) m.delete(k);
  return m;
};

export const dconst = (n: number): Dim => norm(new Map([['', n]]));
export const dsym = (name: string): Dim => new Map([[name, 1]]);

export function dadd(a: Dim, b: Dim, sign = 1): Dim {
  const m = new Map(a);
  for (const [k, v] of b) m.set(k, (m.get(k) ?? 0) + sign * v);
  return norm(m);
}
export const dsub = (a: Dim, b: Dim): Dim => dadd(a, b, -1);

export function dmul(a: Dim, b: Dim): Dim {
  const m = new Map<string, number>();
  for (const [ka, va] of a) {
    for (const [kb, vb] of b) {
      const key = [...(ka ? ka.split('*') : []), ...(kb ? kb.split('*') : [])].sort().join('*');
      m.set(key, (m.get(key) ?? 0) + va * vb);
    }
  }
  return norm(m);
}

export function isConst(a: Dim): boolean {
  for (const k of a.keys()) if (k !== '') return false;
  return true;
}
export const constValue = (a: Dim): number => a.get('') ?? 0;

export function ddiv(a: Dim, b: Dim): Dim {
  if (isConst(b)) {
    const c = constValue(b);
    const m = new Map<string, number>();
    for (const [k, v] of a) m.set(k, v / c);
    return norm(m);
  }
  if (deq(a, b)) return dconst(1);
  // A single-monomial divisor that divides every term exactly.
  if (b.size === 1) {
    const [[kb, vb]] = [...b] as [[string, number]];
    const parts = kb.split('*');
    const m = new Map<string, number>();
    let ok = true;
    for (const [k, v] of a) {
      const atoms = k ? k.split('*') : [];
      for (const p of parts) {
        const i = atoms.indexOf(p);
        if (i < 0) { ok = false; break; }
        atoms.splice(i, 1);
      }
      if (!ok) break;
      m.set(atoms.join('*'), v / vb);
    }
    if (ok) return norm(m);
  }
  return dsym(`(${dimToString(a)})/(${dimToString(b)})`);
}

export function deq(a: Dim, b: Dim): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}

/** Atoms (symbols) a dimension mentions. */
export function dimSymbols(a: Dim): Set<string> {
  const s = new Set<string>();
  for (const k of a.keys()) if (k) for (const p of k.split('*')) s.add(p);
  return s;
}

export function dimToString(a: Dim): string {
  if (a.size === 0) return '0';
  const terms = [...a].sort(([x], [y]) => (x === '' ? 1 : y === '' ? -1 : x < y ? -1 : 1)).map(([k, v]) => {
    if (k === '') return String(v);
    if (v === 1) return k;
    if (v === -1) return '-' + k;
    return `${v}*${k}`;
  });
  return terms.join(' + ').replace(/\+ -/g, '- ');
}

/** Substitute atoms by dims (symbols not in the map stay). Opaque quotient atoms are re-divided. */
export function dsubst(a: Dim, env: ReadonlyMap<string, Dim>): Dim {
  let out: Dim = dconst(0);
  for (const [k, v] of a) {
    let term: Dim = dconst(v);
    for (const atom of k ? k.split('*') : []) term = dmul(term, substAtom(atom, env));
    out = dadd(out, term);
  }
  return out;
}

function substAtom(atom: string, env: ReadonlyMap<string, Dim>): Dim {
  const direct = env.get(atom);
  if (direct) return direct;
  if (atom.startsWith('(')) {
    const q = splitQuotient(atom);
    if (q) return ddiv(dsubst(parseDimString(q[0]), env), dsubst(parseDimString(q[1]), env));
  }
  return dsym(atom);
}

function splitQuotient(atom: string): [string, string] | undefined {
  let depth = 0;
  for (let i = 0; i < atom.length; i++) {
    const c = atom[i];
    if (c === '(') depth++;
    else if (c === ')') { depth--; if (depth === 0 && atom[i + 1] === '/') return [atom.slice(1, i), atom.slice(i + 3, -1)]; }
  }
  return undefined;
}

/** Parses dimToString's output back (used only for opaque quotient atoms). */
function parseDimString(s: string): Dim {
  let out: Dim = dconst(0);
  for (const raw of s.replace(/- /g, '+ -').split(' + ')) {
    const t = raw.trim();
    if (!t) continue;
    let term: Dim = dconst(1);
    let body = t;
    if (body.startsWith('-')) { term = dconst(-1); body = body.slice(1); }
    for (const f of splitTopLevel(body, '*')) {
      term = dmul(term, /^-?[\d.e+-]+$/.test(f) ? dconst(Number(f)) : f.startsWith('(') && splitQuotient(f) ? substAtom(f, new Map()) : dsym(f));
    }
    out = dadd(out, term);
  }
  return out;
}

function splitTopLevel(s: string, sep: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '(') depth++;
    else if (s[i] === ')') depth--;
    else if (s[i] === sep && depth === 0) { parts.push(s.slice(start, i)); start = i + 1; }
  }
  parts.push(s.slice(start));
  return parts;
}

/** Concrete value given numeric sizes; undefined when a symbol is unbound. */
export function devaluate(a: Dim, env: ReadonlyMap<string, number>): number | undefined {
  const denv = new Map<string, Dim>();
  for (const [k, v] of env) denv.set(k, dconst(v));
  const r = dsubst(a, denv);
  return isConst(r) ? constValue(r) : undefined;
}

export const shapeToString = (dims: readonly Dim[]): string => `[${dims.map(dimToString).join(', ')}]`;
