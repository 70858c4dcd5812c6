// Barrier split: a kernel-IR pass that turns a SIMT kernel into one whose workgroup is a single
// thread and which has no barriers, as POCL runs OpenCL kernels on CPUs. The result is ordinary
// kernel IR (the CPU executor runs it with the same results), so a target for sequential
// machines only has to print it and spread workgroups over cores.
//
//   - The body is split at barriers into parallel regions. Each region becomes a work-item
//     loop `for (rn_t = 0; rn_t < threads; rn_t++)` that runs the region's statements for every
//     thread of the workgroup in the order the CPU executor runs them (tid.x fastest); the tid
//     builtins become functions of rn_t.
//   - An `if` or `for` that holds a barrier must be uniform (compiler/kir-verify.ts checks it):
//     it becomes a region boundary, evaluated once for the whole workgroup, and its body is
//     split in turn (a loop with a barrier runs once for all threads; its body's regions are
//     work-item loops).
//   - A variable or local array declared at a region boundary's level and used outside the
//     region that declares it lives across a barrier: it becomes a per-thread context array, a
//     workgroup array `NAME_ctx[threads]` (`[threads * size]` for local arrays) indexed by rn_t.
//     Uniform code (loop bounds, conditions) reads a uniform variable's slot 0.
//   - A variable never assigned and computed without loads from tid, scalars and uniform values
//     (j = wg.x * 64 + tid.x) is recomputed at the top of each region that uses it instead.
//   - A declaration at such a level that every thread computes alike (uniform, never assigned)
//     is hoisted out of the work-item loops instead: it is evaluated once, where it stands, and
//     read as a plain variable by the regions after it.
// Names are made unique first (every declaration gets a name of its own), so that hoisted names
// and context arrays cannot collide. Names starting with `rn_` are the pass's and the printers'.
import { anyExpr, mapExpr, NameSupply, walkExpr } from '../../compiler/c-printer.js';
import type { Kernel, KExpr, KShared, KStmt, KType } from '../../compiler/kir.js';
import * as K from '../../compiler/kir.js';
import { hasBarrier, uniformity, verifyKernel } from '../../compiler/kir-verify.js';

export interface SplitKernel {
  /** The kernel with workgroup [1, 1, 1] and no barriers; context arrays appended to `shared`. */
  kernel: Kernel;
  /** Threads per workgroup of the original kernel. */
  threads: number;
  /** The work-item loops (statement objects of kernel.body), for printers that vectorise them. */
  workItemLoops: Set<KStmt>;
  /** Context arrays the pass added (a subset of kernel.shared). */
  context: KShared[];
  /** Declarations hoisted out of work-item loops (uniform, by their unique names). */
  hoisted: string[];
  /** Declarations recomputed in every region that uses them. */
  rematerialised: string[];
}

/** The loop variable of the work-item loops. */
export const WORK_ITEM = 'rn_t';

/** Gives every declared name of `k` (decl, local, loop variable) a spelling of its own. */
export function uniquifyNames(k: Kernel, reserved: ReadonlySet<string> = new Set()): Kernel {
  const taken = new Set<string>([...reserved, k.name, ...k.buffers.map((b) => b.name), ...k.scalars.map((s) => s.name), ...k.shared.map((s) => s.name)]);
  const supply = new NameSupply(taken);
  const fresh = (n: string): string => supply.fresh(n.startsWith('rn_') ? `u_${n}` : n);
  const scopes: Map<string, string>[] = [new Map()];
  const lookup = (name: string): string => {
    for (let i = scopes.length - 1; i >= 0; i--) { const n = scopes[i]!.get(name); if (n !== undefined) return n; }
    return name; // parameters and shared arrays keep their names
  };
  const declare = (name: string): string => { const n = fresh(name); scopes[scopes.length - 1]!.set(name, n); return n; };
  const ex = (e: KExpr): KExpr => mapExpr(e, (x) => (x.k === 'var' ? { ...x, name: lookup(x.name) } : x.k === 'load' ? { ...x, array: lookup(x.array) } : x));
  const block = (ss: readonly KStmt[]): KStmt[] => { scopes.push(new Map()); const out = ss.map(stmt); scopes.pop(); return out; };
  const stmt = (s: KStmt): KStmt => {
    switch (s.k) {
      case 'decl': { const init = ex(s.init); return { ...s, init, name: declare(s.name) }; }
      case 'local': return { ...s, name: declare(s.name) };
      case 'assign': return { ...s, name: lookup(s.name), value: ex(s.value) };
      case 'store': return { ...s, array: lookup(s.array), index: ex(s.index), value: ex(s.value) };
      case 'if': return { ...s, cond: ex(s.cond), then: block(s.then), else: block(s.else) };
      case 'for': {
        const start = ex(s.start);
        scopes.push(new Map());
        const v = declare(s.v);
        const end = ex(s.end);
        const body = block(s.body);
        scopes.pop();
        return { ...s, v, start, end, body };
      }
      default: return s;
    }
  };
  return { ...k, body: block(k.body) };
}

type Node =
  | { k: 'piece'; id: number; stmts: KStmt[] }
  | { k: 'hoist'; s: Extract<KStmt, { k: 'decl' }> }
  | { k: 'for'; s: Extract<KStmt, { k: 'for' }>; body: Node[] }
  | { k: 'if'; s: Extract<KStmt, { k: 'if' }>; then: Node[]; else: Node[] }
  | { k: 'range'; s: Extract<KStmt, { k: 'if' }>; lim: string; count: KExpr; then: Node[] };

/** Names a statement list reads or writes (variables, arrays). */
function namesIn(ss: readonly KStmt[], out: Set<string>): void {
  const ex = (e: KExpr): void => walkExpr(e, (x) => { if (x.k === 'var') out.add(x.name); if (x.k === 'load') out.add(x.array); });
  for (const s of ss) {
    switch (s.k) {
      case 'decl': ex(s.init); break;
      case 'assign': out.add(s.name); ex(s.value); break;
      case 'store': out.add(s.array); ex(s.index); ex(s.value); break;
      case 'if': ex(s.cond); namesIn(s.then, out); namesIn(s.else, out); break;
      case 'for': ex(s.start); ex(s.end); namesIn(s.body, out); break;
      default: break;
    }
  }
}

/**
 * Splits `k` at its barriers (see the header). The kernel is verified first (barriers only in
 * uniform control flow); `reserved` names are kept free (the printer's own identifiers).
 */
export interface SplitOptions {
  /**
   * Loop fission. true (RETNETC_NATIVE_FISSION=1): uniform loops (and uniform
   * ifs holding them) become region boundaries as if they held barriers, so that work-item loops
   * end up innermost, where the C compiler vectorises them; a thread-dependent `if` around such
   * loops is pushed into them first (if-conversion: its condition becomes a per-thread mask,
   * declarations inside it are evaluated under `select`). Inserting barriers changes nothing in
   * a race-free kernel: every thread still runs its own operations in its own order. Not the
   * default: GCC 12 does not vectorise the masked work-item loops it makes (`data ref analysis
   * failed: .MASK_LOAD`), and the extra context traffic made retention 10-50% slower.
   * 'innermost' (the default; defaultFission): no if-conversion; uniform loops are fissioned
   * where they hold no loop or hold fissioned loops, unless a select with a thread-dependent
   * condition guards a transcendental call in them; bounds guards `if (U0 + tid.x < U)` become
   * ranged work-item loops (see `ranges` in splitBarriers). false: no fission.
   */
  fission?: boolean | 'innermost';
}

/**
 * The default fission mode (RETNETC_NATIVE_FISSION: 0 off, 1 full, else 'innermost'). 'innermost':
 * only uniform loops whose body holds no loop, outside any thread-dependent `if` (no
 * if-conversion), are fissioned: the work-item loop then runs inside the uniform loop around
 * straight-line code, which GCC vectorises across work-items (the K loop of a tiled matrix product:
 * 2 -> 40 GFLOP/s at [4096, 512] x [512, 512]).
 */
export function defaultFission(env: NodeJS.ProcessEnv = process.env): boolean | 'innermost' {
  const v = env['RETNETC_NATIVE_FISSION'];
  return v === '0' ? false : v === '1' ? true : 'innermost';
}

const noLoads = (e: KExpr): boolean => !anyExpr(e, (x) => x.k === 'load');
const COSTLY = new Set(['exp', 'exp2', 'log', 'log2', 'log1p', 'sin', 'cos', 'tanh', 'rsqrt', 'erf', 'pow']);
const costly = (e: KExpr): boolean => anyExpr(e, (x) => x.k === 'load' || ((x.k === 'un' || x.k === 'bin') && COSTLY.has(x.op)));
/**
 * A select with a thread-dependent condition whose branches load or call a transcendental
 * function: C evaluates only the branch taken, a loop vectorised across work-items evaluates both
 * (gathers, every exp: the delta sums of autodiff ran 3-10x slower fissioned). Such loops are not
 * fissioned in 'innermost' mode.
 */
function costlySelect(ss: readonly KStmt[], uniform: (e: KExpr) => boolean): boolean {
  const e = (x: KExpr): boolean => anyExpr(x, (y) => y.k === 'select' && !uniform(y.cond) && (costly(y.a) || costly(y.b)));
  return ss.some((s) => {
    switch (s.k) {
      case 'decl': return e(s.init);
      case 'assign': return e(s.value);
      case 'store': return e(s.index) || e(s.value);
      case 'if': return e(s.cond) || costlySelect(s.then, uniform) || costlySelect(s.else, uniform);
      case 'for': return e(s.start) || e(s.end) || costlySelect(s.body, uniform);
      default: return false;
    }
  });
}
const ZERO: Record<KType, KExpr> = { f32: K.f32(0), i32: K.i32(0), bool: K.bool(false) };

/** If-conversion of thread-dependent ifs around uniform loops (SplitOptions.fission). */
function pushIfs(k: Kernel, supply: NameSupply): Kernel {
  const u = uniformity(k);
  const assigned = new Set<string>();
  const walkAll = (ss: readonly KStmt[]): void => { for (const s of ss) { if (s.k === 'assign') assigned.add(s.name); if (s.k === 'if') { walkAll(s.then); walkAll(s.else); } if (s.k === 'for') walkAll(s.body); } };
  walkAll(k.body);
  const uniformHead = (e: KExpr): boolean => u.uniform(e) && noLoads(e);
  const loopable = (s: KStmt): boolean => s.k === 'for' && uniformHead(s.start) && uniformHead(s.end);
  const holdsLoop = (ss: readonly KStmt[]): boolean => ss.some((s) => loopable(s) || (s.k === 'if' && (holdsLoop(s.then) || holdsLoop(s.else))));
  const guard = (ss: readonly KStmt[], m: KExpr): KStmt[] => ss.flatMap((s): KStmt[] => {
    switch (s.k) {
      case 'decl':
        return [uniformHead(s.init) && !assigned.has(s.name) ? s : { ...s, init: K.select(m, s.init, ZERO[s.type]) }];
      case 'local': case 'comment': return [s];
      case 'for': return loopable(s) ? [{ ...s, body: guard(s.body, m) }] : [K.iff(m, [s])];
      case 'if':
        if (uniformHead(s.cond)) return [{ ...s, then: guard(s.then, m), else: guard(s.else, m) }];
        if (!s.else.length && holdsLoop(s.then)) { const m2 = supply.fresh('rn_m'); return [K.decl(m2, 'bool', K.and(m, s.cond)), ...guard(s.then, K.v(m2, 'bool'))]; }
        return [K.iff(m, [s])];
      default: return [K.iff(m, [s])];
    }
  });
  const top = (ss: readonly KStmt[]): KStmt[] => ss.flatMap((s): KStmt[] => {
    if (s.k === 'for') return [loopable(s) || hasBarrier(s.body) ? { ...s, body: top(s.body) } : s];
    if (s.k !== 'if') return [s];
    if (u.uniform(s.cond)) return [{ ...s, then: top(s.then), else: top(s.else) }];
    if (!s.else.length && !hasBarrier(s.then) && holdsLoop(s.then)) { const m = supply.fresh('rn_m'); return [K.decl(m, 'bool', s.cond), ...guard(s.then, K.v(m, 'bool'))]; }
    return [s];
  });
  return { ...k, body: top(k.body) };
}

export function splitBarriers(k0: Kernel, reserved: ReadonlySet<string> = new Set(), opts: SplitOptions = {}): SplitKernel {
  verifyKernel(k0);
  const mode = opts.fission ?? defaultFission();
  const fission = mode !== false;
  let k = uniquifyNames(k0, reserved);
  // A one-thread workgroup without barriers is what the split makes already (the blocked dense
  // products of compiler/lower/dense-cpu.ts): no work-item loops, so the printer sees its loops.
  if (k.workgroup.every((w) => w === 1) && !hasBarrier(k.body)) {
    const ex = (e: KExpr): KExpr => mapExpr(e, (x) => (x.k === 'builtin' && x.name.startsWith('tid.') ? K.i32(0) : x));
    const rs = (ss: readonly KStmt[]): KStmt[] => ss.map((s): KStmt => {
      switch (s.k) {
        case 'decl': return { ...s, init: ex(s.init) };
        case 'assign': return { ...s, value: ex(s.value) };
        case 'store': return { ...s, index: ex(s.index), value: ex(s.value) };
        case 'if': return { ...s, cond: ex(s.cond), then: rs(s.then), else: rs(s.else) };
        case 'for': return { ...s, start: ex(s.start), end: ex(s.end), body: rs(s.body) };
        default: return s;
      }
    });
    return { kernel: { ...k, body: rs(k.body) }, threads: 1, workItemLoops: new Set(), context: [], hoisted: [], rematerialised: [] };
  }
  if (mode === true) {
    const names = new NameSupply(new Set([...reserved, k.name, ...k.buffers.map((b) => b.name), ...k.scalars.map((s) => s.name), ...k.shared.map((s) => s.name)]));
    const all = (ss: readonly KStmt[]): void => { for (const s of ss) { if (s.k === 'decl' || s.k === 'local') names.taken.add(s.name); if (s.k === 'for') { names.taken.add(s.v); all(s.body); } if (s.k === 'if') { all(s.then); all(s.else); } } };
    all(k.body);
    k = pushIfs(k, names);
  }
  const [TX, TY, TZ] = k.workgroup;
  const T = TX * TY * TZ;
  // Ranged ifs (with fission): `if (x < U) { ... }` with x = U0 + tid.x (a 1-D workgroup; U0 and U
  // uniform, without loads) runs its body for the work-items 0 .. clamp(U - U0, 0, T) - 1 exactly:
  // the work-item loops inside it run to that count instead of testing every work-item, and the
  // body is split like uniform code (its loops fissioned). Uniformity inside such an if is that of
  // the kernel with the condition taken as true: the work-items that run it are a prefix.
  const ranges = new Map<KStmt, { count: KExpr }>();
  if (fission && TY * TZ === 1 && T > 1) {
    const u0 = uniformity(k);
    const pure = (e: KExpr): boolean => u0.uniform(e) && noLoads(e) && !anyExpr(e, (x) => x.k === 'builtin' && x.name.startsWith('tid.'));
    const assigned0 = new Set<string>();
    const inits = new Map<string, KExpr>();
    const scanAll = (ss: readonly KStmt[]): void => { for (const s of ss) { if (s.k === 'assign') assigned0.add(s.name); if (s.k === 'decl') inits.set(s.name, s.init); if (s.k === 'if') { scanAll(s.then); scanAll(s.else); } if (s.k === 'for') scanAll(s.body); } };
    scanAll(k.body);
    const isTid = (e: KExpr): boolean => e.k === 'builtin' && e.name === 'tid.x';
    const baseOf = (x: KExpr): KExpr | undefined => {
      if (x.k !== 'var' || assigned0.has(x.name)) return undefined;
      const init = inits.get(x.name);
      if (!init) return undefined;
      if (isTid(init)) return K.i32(0);
      if (init.k === 'bin' && init.op === '+') {
        if (isTid(init.b) && pure(init.a)) return init.a;
        if (isTid(init.a) && pure(init.b)) return init.b;
      }
      return undefined;
    };
    const holdsAnyFor = (ss: readonly KStmt[]): boolean => ss.some((s) => s.k === 'for' || (s.k === 'if' && (holdsAnyFor(s.then) || holdsAnyFor(s.else))));
    const find = (ss: readonly KStmt[], ctl: boolean): void => {
      for (const s of ss) {
        if (s.k === 'for') find(s.body, ctl && u0.uniform(s.start) && u0.uniform(s.end));
        if (s.k !== 'if') continue;
        const c = s.cond;
        if (ctl && !s.else.length && !hasBarrier(s.then) && holdsAnyFor(s.then) && c.k === 'bin' && c.op === '<' && c.a.type === 'i32' && pure(c.b)) {
          const base = baseOf(c.a);
          if (base) { ranges.set(s, { count: K.bin('min', K.bin('max', K.sub(c.b, base), K.i32(0)), K.i32(T)) }); continue; }
        }
        const uc = ctl && u0.uniform(s.cond);
        find(s.then, uc); find(s.else, uc);
      }
    };
    find(k.body, true);
  }
  const asTrue = (ss: readonly KStmt[]): KStmt[] => ss.map((s): KStmt => s.k === 'if' ? { ...s, cond: ranges.has(s) ? K.bool(true) : s.cond, then: asTrue(s.then), else: asTrue(s.else) } : s.k === 'for' ? { ...s, body: asTrue(s.body) } : s);
  const u = ranges.size ? uniformity({ ...k, body: asTrue(k.body) }) : uniformity(k);
  const uniformHead = (e: KExpr): boolean => u.uniform(e) && noLoads(e);
  const holdsFor = (ss: readonly KStmt[]): boolean => ss.some((s) => s.k === 'for' || (s.k === 'if' && (holdsFor(s.then) || holdsFor(s.else))));
  // 'innermost': a uniform loop is a boundary when its body holds no loop, or holds a boundary loop.
  const loopable = (s: KStmt): boolean => fission && s.k === 'for' && uniformHead(s.start) && uniformHead(s.end) && (mode === true || ((!holdsFor(s.body) || holdsLoop(s.body)) && !costlySelect(s.body, u.uniform)));
  const holdsLoop = (ss: readonly KStmt[]): boolean => ss.some((s) => loopable(s) || (s.k === 'if' && (ranges.has(s) || (uniformHead(s.cond) && (holdsLoop(s.then) || holdsLoop(s.else))))));
  const assigned = new Set<string>();
  const walkAll = (ss: readonly KStmt[], f: (s: KStmt) => void): void => {
    for (const s of ss) { f(s); if (s.k === 'if') { walkAll(s.then, f); walkAll(s.else, f); } if (s.k === 'for') walkAll(s.body, f); }
  };
  walkAll(k.body, (s) => { if (s.k === 'assign') assigned.add(s.name); });

  // 1. The structure: pieces (work-item loops), hoisted declarations and uniform constructs.
  let pieces = 0;
  const hoisted: string[] = [];
  const build = (ss: readonly KStmt[]): Node[] => {
    const out: Node[] = [];
    let cur: KStmt[] = [];
    const close = (): void => {
      if (cur.some((s) => s.k !== 'comment')) out.push({ k: 'piece', id: pieces++, stmts: cur });
      cur = [];
    };
    for (const s of ss) {
      if (s.k === 'barrier') close();
      else if (s.k === 'for' && (hasBarrier(s.body) || loopable(s))) { close(); out.push({ k: 'for', s, body: build(s.body) }); }
      else if (s.k === 'if' && ranges.has(s)) { close(); out.push({ k: 'range', s, lim: '', count: ranges.get(s)!.count, then: build(s.then) }); }
      else if (s.k === 'if' && (hasBarrier(s.then) || hasBarrier(s.else) || (fission && uniformHead(s.cond) && (holdsLoop(s.then) || holdsLoop(s.else))))) { close(); out.push({ k: 'if', s, then: build(s.then), else: build(s.else) }); }
      else if (s.k === 'decl' && !u.varying.has(s.name) && !assigned.has(s.name)) {
        // Evaluated once, where it stands; or before the open region when it reads nothing that
        // region declares or assigns and loads nothing (then the region need not be split).
        const reads = new Set<string>();
        walkExpr(s.init, (x) => { if (x.k === 'var') reads.add(x.name); if (x.k === 'load') reads.add(''); });
        const touched = new Set<string>();
        walkAll(cur, (c) => { if (c.k === 'decl' || c.k === 'local' || c.k === 'assign') touched.add(c.name); });
        if (reads.has('') || [...reads].some((r) => touched.has(r))) close();
        out.push({ k: 'hoist', s });
        hoisted.push(s.name);
      }
      else cur.push(s);
    }
    close();
    return out;
  };
  const tree = build(k.body);

  // 2. Where each name is used: piece ids, or -1 for uniform code (hoisted initialisers, bounds, conditions).
  const uses = new Map<string, Set<number>>();
  const note = (names: Set<string>, place: number): void => { for (const n of names) { let s = uses.get(n); if (!s) uses.set(n, (s = new Set())); s.add(place); } };
  const uniformNames = (es: KExpr[]): Set<string> => { const s = new Set<string>(); for (const e of es) walkExpr(e, (x) => { if (x.k === 'var') s.add(x.name); if (x.k === 'load') s.add(x.array); }); return s; };
  // Declarations at a boundary level, by the piece that holds them.
  const declaredIn = new Map<string, { id: number; s: KStmt }>();
  const pieceNames = new Map<number, Set<string>>();
  const scan = (ns: Node[]): void => {
    for (const n of ns) {
      switch (n.k) {
        case 'piece': {
          const names = new Set<string>();
          namesIn(n.stmts, names);
          note(names, n.id);
          pieceNames.set(n.id, names);
          for (const s of n.stmts) if (s.k === 'decl' || s.k === 'local') declaredIn.set(s.name, { id: n.id, s });
          break;
        }
        case 'hoist': note(uniformNames([n.s.init]), -1); break;
        case 'for': note(uniformNames([n.s.start, n.s.end]), -1); scan(n.body); break;
        case 'if': note(uniformNames([n.s.cond]), -1); scan(n.then); scan(n.else); break;
        case 'range': note(uniformNames([n.count]), -1); scan(n.then); break;
      }
    }
  };
  scan(tree);

  // 3. Context arrays for what lives across regions.
  const supply = new NameSupply(new Set([...reserved, k.name, ...k.buffers.map((b) => b.name), ...k.scalars.map((s) => s.name), ...k.shared.map((s) => s.name)]));
  walkAll(k.body, (s) => { if (s.k === 'decl' || s.k === 'local') supply.taken.add(s.name); if (s.k === 'for') supply.taken.add(s.v); });
  const ctxVar = new Map<string, { array: string; type: KType }>();
  const ctxLocal = new Map<string, { array: string; size: number }>();
  const context: KShared[] = [];
  // A variable that is never assigned and computed from tid, constants, scalars and uniform
  // variables without loads (j = wg.x * 64 + tid.x) is recomputed at the top of each region that
  // uses it (rematerialised) instead of living in a context array.
  const remat = new Map<string, Extract<KStmt, { k: 'decl' }>>();
  const rematerialisable = (e: KExpr): boolean => {
    let ok = true;
    walkExpr(e, (x) => {
      if (x.k === 'load') ok = false;
      if (x.k === 'var' && (assigned.has(x.name) || (u.varying.has(x.name) && !remat.has(x.name)))) ok = false;
      return ok;
    });
    return ok;
  };
  for (const [name, { id, s }] of declaredIn) {
    const places = uses.get(name);
    if (!places || [...places].every((p) => p === id)) continue;
    if (s.k === 'decl' && !assigned.has(name) && !places.has(-1) && rematerialisable(s.init)) { remat.set(name, s); continue; }
    const array = supply.fresh(`${name}_ctx`);
    if (s.k === 'decl') { ctxVar.set(name, { array, type: s.type }); context.push({ name: array, type: s.type, size: T }); }
    else if (s.k === 'local') { ctxLocal.set(name, { array, size: s.size }); context.push({ name: array, type: s.type, size: T * s.size }); }
  }

  // 4. Rewriting: context references, tid builtins, work-item loops.
  const t = K.v(WORK_ITEM);
  const tidOf = (axis: string): KExpr => {
    if (axis === 'x') return TX === 1 ? K.i32(0) : TY * TZ === 1 ? t : K.bin('%', t, K.i32(TX));
    if (axis === 'y') { if (TY === 1) return K.i32(0); const q = TX === 1 ? t : K.div(t, K.i32(TX)); return TZ === 1 ? q : K.bin('%', q, K.i32(TY)); }
    return TZ === 1 ? K.i32(0) : TX * TY === 1 ? t : K.div(t, K.i32(TX * TY));
  };
  // Context arrays of local arrays are laid out element-major ([size][threads]): work-item i's
  // element j at j * threads + i, so that a work-item loop reads consecutive addresses.
  const ctxIndex = (index: KExpr): KExpr => K.add(K.mul(index, K.i32(T)), t);
  const ex = (e: KExpr, region: boolean): KExpr => mapExpr(e, (x) => {
    if (x.k === 'builtin' && x.name.startsWith('tid.')) {
      const axis = x.name.slice(4);
      if (!region && k.workgroup['xyz'.indexOf(axis)] !== 1) throw new Error(`internal error: barrier split of kernel ${k.name}: ${x.name} in uniform code`);
      return tidOf(axis);
    }
    if (x.k === 'var') { const c = ctxVar.get(x.name); if (c) return K.load(c.array, region ? t : K.i32(0), c.type); }
    if (x.k === 'load') { const c = ctxLocal.get(x.array); if (c) { if (!region) throw new Error(`internal error: barrier split of kernel ${k.name}: local array ${x.array} read in uniform code`); return { ...x, array: c.array, index: ctxIndex(x.index) }; } }
    return x;
  });
  const rs = (ss: readonly KStmt[]): KStmt[] => ss.flatMap((s): KStmt[] => {
    switch (s.k) {
      case 'decl': { const c = ctxVar.get(s.name); const init = ex(s.init, true); return c ? [K.store(c.array, t, init)] : [{ ...s, init }]; }
      case 'assign': { const c = ctxVar.get(s.name); const value = ex(s.value, true); return c ? [K.store(c.array, t, value)] : [{ ...s, value }]; }
      case 'local': return ctxLocal.has(s.name) ? [] : [s];
      case 'store': {
        const c = ctxLocal.get(s.array);
        const index = ex(s.index, true), value = ex(s.value, true);
        return c ? [K.store(c.array, ctxIndex(index), value)] : [{ ...s, index, value }];
      }
      case 'if': return [{ ...s, cond: ex(s.cond, true), then: rs(s.then), else: rs(s.else) }];
      case 'for': return [{ ...s, start: ex(s.start, true), end: ex(s.end, true), body: rs(s.body) }];
      case 'barrier': throw new Error(`internal error: barrier split of kernel ${k.name}: a barrier inside a region`);
      default: return [s];
    }
  });
  const workItemLoops = new Set<KStmt>();
  const emit = (ns: Node[], end: KExpr = K.i32(T)): KStmt[] => ns.flatMap((n): KStmt[] => {
    switch (n.k) {
      case 'piece': {
        const needed = new Set(pieceNames.get(n.id));
        const mine = new Set(n.stmts.flatMap((s) => (s.k === 'decl' ? [s.name] : [])));
        const order = [...remat.keys()];
        for (const r of [...order].reverse()) if (needed.has(r)) walkExpr(remat.get(r)!.init, (x) => { if (x.k === 'var') needed.add(x.name); });
        const pre = order.filter((r) => needed.has(r) && !mine.has(r)).map((r) => remat.get(r)!);
        const l = K.loop(WORK_ITEM, K.i32(0), end, rs([...pre, ...n.stmts]));
        workItemLoops.add(l);
        return [l];
      }
      case 'hoist': return [{ ...n.s, init: ex(n.s.init, false) }];
      case 'for': return [{ ...n.s, start: ex(n.s.start, false), end: ex(n.s.end, false), body: emit(n.body, end) }];
      case 'if': return [{ ...n.s, cond: ex(n.s.cond, false), then: emit(n.then, end), else: emit(n.else, end) }];
      case 'range': {
        const lim = supply.fresh('rn_wi');
        const cnt = K.v(lim);
        return [K.decl(lim, 'i32', ex(n.count, false)), K.iff(K.lt(K.i32(0), cnt), emit(n.then, cnt))];
      }
    }
  });
  const body = emit(tree);
  return {
    kernel: { ...k, workgroup: [1, 1, 1], shared: [...k.shared, ...context], body },
    threads: T,
    workItemLoops,
    context,
    hoisted,
    rematerialised: [...remat.keys()],
  };
}
