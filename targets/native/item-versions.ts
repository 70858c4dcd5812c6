// Analyses behind the versions of a work-item loop that targets/native/printer.ts prints:
//
// - bounds pre-check: when every index of the loop body (and every if / select condition guarding
//   an access) is integer arithmetic on kernel scalars, builtins, the work-item variable and
//   integer declarations of the body, a first vectorisable loop computes only those indices and
//   ANDs their bounds tests; when all pass, the body runs without checks (plain loads and stores,
//   which GCC vectorises), else it runs checked, exactly as before. The test is conservative (a
//   guard with a load counts as true), so it can only send a workgroup to the checked loop.
// - re-run: sin and cos take a vectorised fast path for |x| <= TRIG_FAST_LIMIT and flag larger
//   arguments; a loop whose stores touch no array it loads (and that assigns no variable declared
//   outside it) computes the same values when run again, so it re-runs with libm when flagged.
import { walkExpr, walkStmts, stmtExprs } from '../../compiler/c-printer.js';
import type { KExpr, KStmt } from '../../compiler/kir.js';

/** True when the statements compute sin or cos. */
export function hasTrig(ss: readonly KStmt[]): boolean {
  let found = false;
  walkStmts(ss, (s) => { for (const e of stmtExprs(s)) walkExpr(e, (x) => { if (x.k === 'un' && (x.op === 'sin' || x.op === 'cos')) found = true; return !found; }); });
  return found;
}

/** True when running the statements twice leaves what running them once does. */
export function rerunnable(ss: readonly KStmt[]): boolean {
  const loaded = new Set<string>(), stored = new Set<string>(), declared = new Set<string>();
  let ok = true;
  walkStmts(ss, (s) => {
    if (s.k === 'decl' || s.k === 'local') declared.add(s.name);
    if (s.k === 'for') declared.add(s.v);
    if (s.k === 'store') stored.add(s.array);
    for (const e of stmtExprs(s)) walkExpr(e, (x) => { if (x.k === 'load') loaded.add(x.array); });
  });
  walkStmts(ss, (s) => { if (s.k === 'assign' && !declared.has(s.name)) ok = false; });
  for (const a of stored) if (loaded.has(a)) ok = false;
  return ok;
}

/** One access to bounds-test: in range whenever all its guards hold. */
export interface PreAccess { array: string; index: KExpr; guards: { cond: KExpr; holds: boolean }[] }

export interface Precheck {
  /** The body's integer declarations the indices and guards use (all of them, in order). */
  decls: Extract<KStmt, { k: 'decl' }>[];
  accesses: PreAccess[];
  /**
   * The body is declarations, stores and ifs on computable conditions only (no assignment): when
   * every access is in range whatever the guards and every if condition holds (a full workgroup
   * under `if (gid < n)`), it runs flat: the then-blocks only, every declaration and both arms of
   * every select computed, so GCC needs no masked load or store (it cannot vectorise some).
   */
  flat: boolean;
  /** The if conditions (all true for the flat body). */
  conds: KExpr[];
}

const noLoad = (e: KExpr): boolean => { let ok = true; walkExpr(e, (x) => { if (x.k === 'load') ok = false; return ok; }); return ok; };

/**
 * The pre-check of a loop body, or undefined when an index reads memory or a variable it cannot
 * compute (a float, a loaded value, an assigned variable), or the body has loops or local arrays.
 * `needsCheck(array, index)` says which accesses the checked body tests. A variable the body
 * does not declare is declared outside the loop (valid kernel IR), so invariant unless assigned.
 */
export function precheck(body: readonly KStmt[], assigned: ReadonlySet<string>, loopVar: string,
  needsCheck: (array: string, index: KExpr) => boolean): Precheck | undefined {
  const decls: Extract<KStmt, { k: 'decl' }>[] = [];
  const known = new Set<string>([loopVar]);
  const seen = new Set<string>();
  const out: PreAccess[] = [];
  let ok = true, flat = true;
  const conds: KExpr[] = [];
  const computable = (e: KExpr): boolean => {
    let good = true;
    walkExpr(e, (x) => {
      if (x.k === 'load') good = false;
      if (x.k === 'var' && !known.has(x.name) && (seen.has(x.name) || assigned.has(x.name))) good = false;
      return good;
    });
    return good;
  };
  type G = PreAccess['guards'];
  const access = (array: string, index: KExpr, guards: G): void => {
    if (!needsCheck(array, index)) return;
    if (!computable(index)) { ok = false; return; }
    out.push({ array, index, guards });
  };
  const expr = (e: KExpr, guards: G): void => {
    switch (e.k) {
      case 'load': if (!noLoad(e.index)) { ok = false; return; } access(e.array, e.index, guards); return;
      case 'un': case 'cast': expr(e.a, guards); return;
      case 'bin': expr(e.a, guards); expr(e.b, guards); return;
      case 'select': {
        expr(e.cond, guards);
        const g = computable(e.cond);
        expr(e.a, g ? [...guards, { cond: e.cond, holds: true }] : guards);
        expr(e.b, g ? [...guards, { cond: e.cond, holds: false }] : guards);
        return;
      }
      default: return;
    }
  };
  const stmts = (ss: readonly KStmt[], guards: G): void => {
    for (const s of ss) {
      if (!ok) return;
      switch (s.k) {
        case 'decl':
          expr(s.init, guards);
          if (seen.has(s.name)) { ok = false; return; }
          seen.add(s.name);
          if (s.type !== 'f32' && !assigned.has(s.name) && computable(s.init)) { known.add(s.name); decls.push(s); }
          break;
        case 'assign': flat = false; expr(s.value, guards); break;
        case 'store': if (!noLoad(s.index)) { ok = false; return; } expr(s.value, guards); access(s.array, s.index, guards); break;
        case 'if': {
          expr(s.cond, guards);
          const g = computable(s.cond);
          if (g) conds.push(s.cond); else flat = false;
          stmts(s.then, g ? [...guards, { cond: s.cond, holds: true }] : guards);
          stmts(s.else, g ? [...guards, { cond: s.cond, holds: false }] : guards);
          break;
        }
        case 'for': case 'local': case 'barrier': ok = false; return;
        default: break;
      }
    }
  };
  stmts(body, []);
  return ok && out.length ? { decls, accesses: out, flat, conds } : undefined;
}
