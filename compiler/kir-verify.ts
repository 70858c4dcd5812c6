// The kernel IR verifier: the checks every consumer of kernel IR relies on, in one function that
// the CPU executor and every printer call before they translate a kernel (compiler/kir.ts holds
// the semantics). It throws one Error, `kernel IR error in kernel NAME: ...`, for the first
// problem found:
//   - workgroup sizes (positive integers), buffer storage (f16 / bf16 on f32 buffers only),
//     parameters declared twice, shared and local array sizes (positive integers; with
//     `maxSharedBytes`, the total of the shared arrays within it);
//   - names: unknown variables and arrays, a decl twice in one scope (a decl may shadow an outer
//     name; its initialiser sees the outer one), assignments to unknown variables or to scalar
//     parameters, grids that use anything but scalar parameters;
//   - types: every node's type is what its operands give (bin operands of one type, && and ||
//     on bool, comparisons give bool, no arithmetic on bool, indexes and loop bounds i32,
//     conditions bool), decl / assign / store values of the declared type, loop steps non-zero
//     i32 constants; stores to read-only buffers;
//   - barriers only in uniform control flow: an `if` or `for` that holds a barrier must have a
//     condition (bounds) that every thread of a workgroup computes alike (`uniformity` below).
//     The executor checks the dynamic counterpart (all threads at the same barrier) as it runs;
//   - mma (tensor cores, kir.ts KMma): only where the consumer says it prints or runs it
//     (`mma: true`: CUDA, the CPU executor); in uniform control flow (a warp executes it
//     together), a workgroup [T, 1, 1] with T a multiple of 32, operands in shared arrays of its
//     half storage, row strides multiples of 8, accumulators in a local f32 array large enough.
import type { Kernel, KExpr, KStmt, KType } from './kir.js';

export class KirError extends Error {}

export interface VerifyOptions {
  /** The most bytes the shared arrays of one workgroup may take together (a target's limit). */
  maxSharedBytes?: number;
  /**
   * Require barriers in uniform control flow (default true). The CPU executor passes false: it
   * checks the dynamic property (every thread at the same barrier) as it runs, and names the
   * threads that diverge.
   */
  uniformBarriers?: boolean;
  /** The consumer prints or runs tensor-core mma statements (CUDA, the CPU executor); else they are refused. */
  mma?: boolean;
}

/** The statement of the first tensor-core mma statement of a kernel, if it has one. */
export function mmaStatement(k: Pick<Kernel, 'body'>): string | undefined {
  let of: string | undefined;
  walk(k.body, (s) => { if (s.k === 'mma' && of === undefined) of = s.of; });
  return of;
}

const elemBytes = (t: KType, half?: string): number => (half ? 2 : t === 'bool' ? 1 : 4);

interface VarInfo { kind: 'var'; type: KType; param: boolean }
interface ArrInfo { kind: 'buffer' | 'shared' | 'local'; type: KType; writable: boolean; storage?: string; size?: number }
type Info = VarInfo | ArrInfo;

export function hasBarrier(ss: readonly KStmt[]): boolean {
  return ss.some((s) => s.k === 'barrier' || (s.k === 'if' && (hasBarrier(s.then) || hasBarrier(s.else))) || (s.k === 'for' && hasBarrier(s.body)));
}

/** Whether a block holds an mma statement (a warp executes it together, as a barrier). */
const hasMma = (ss: readonly KStmt[]): boolean => ss.some((s) => s.k === 'mma' || (s.k === 'if' && (hasMma(s.then) || hasMma(s.else))) || (s.k === 'for' && hasMma(s.body)));

/** Checks `k`; throws a KirError naming the kernel and the first problem. */
export function verifyKernel(k: Kernel, opts: VerifyOptions = {}): void {
  const fail = (msg: string): never => { throw new KirError(`kernel IR error in kernel ${k.name}: ${msg}`); };
  if (!k.workgroup.every((n) => Number.isInteger(n) && n > 0)) fail(`workgroup size ${k.workgroup.join('x')}`);
  const globals = new Map<string, Info>();
  const add = (name: string, info: Info): void => {
    if (globals.has(name)) fail(`parameter '${name}' declared twice`);
    globals.set(name, info);
  };
  for (const b of k.buffers) {
    if (b.storage && b.type !== 'f32') fail(`buffer '${b.name}' of type ${b.type} has ${b.storage} storage (only f32 buffers may)`);
    if (b.storage && b.storage !== 'f16' && b.storage !== 'bf16') fail(`buffer '${b.name}' has unknown storage '${String(b.storage)}'`);
    add(b.name, { kind: 'buffer', type: b.type, writable: b.access === 'read_write' });
  }
  for (const s of k.scalars) add(s.name, { kind: 'var', type: s.type, param: true });
  let sharedBytes = 0;
  for (const s of k.shared) {
    if (!Number.isInteger(s.size) || s.size <= 0) fail(`shared array '${s.name}' has size ${s.size}`);
    if (s.storage && (s.type !== 'f32' || (s.storage !== 'f16' && s.storage !== 'bf16'))) fail(`shared array '${s.name}' of type ${s.type} has ${String(s.storage)} storage (only f32 arrays may have f16 or bf16)`);
    add(s.name, { kind: 'shared', type: s.type, writable: true, ...(s.storage ? { storage: s.storage } : {}) });
    sharedBytes += s.size * elemBytes(s.type, s.storage);
  }
  if (opts.maxSharedBytes !== undefined && sharedBytes > opts.maxSharedBytes) {
    fail(`its shared arrays need ${sharedBytes} bytes, more than the ${opts.maxSharedBytes} a workgroup may have`);
  }

  const scopes: Map<string, Info>[] = [globals];
  let gridMode = false;
  const lookup = (name: string): Info | undefined => {
    for (let i = scopes.length - 1; i >= 0; i--) { const s = scopes[i]!.get(name); if (s) return s; }
    return undefined;
  };
  const declare = (name: string, info: Info): void => {
    const top = scopes[scopes.length - 1]!;
    if (top.has(name)) fail(`'${name}' declared twice in one scope`);
    top.set(name, info);
  };
  const array = (name: string): ArrInfo => {
    const s = lookup(name);
    if (!s || s.kind === 'var') return fail(`unknown array '${name}'`);
    return s;
  };

  const expr = (e: KExpr): void => {
    const want = (got: KType, what: string): void => { if (got !== e.type) fail(`${what} has type ${got} but is marked ${e.type}`); };
    switch (e.k) {
      case 'const':
        if (typeof e.value !== 'number') fail(`constant of type ${e.type} has value ${String(e.value)}`);
        return;
      case 'var': {
        const s = lookup(e.name);
        if (!s || s.kind !== 'var') fail(`unknown variable '${e.name}'`);
        const v = s as VarInfo;
        if (gridMode && !v.param) fail(`grid uses '${e.name}', which is not a scalar parameter`);
        want(v.type, `variable '${e.name}'`);
        return;
      }
      case 'builtin':
        if (gridMode) fail(`grid uses builtin ${e.name}`);
        if ((e.type as KType) !== 'i32') fail(`builtin ${e.name} is marked ${String(e.type)}`);
        return;
      case 'load': {
        if (gridMode) fail(`grid loads from '${e.array}'`);
        const a = array(e.array);
        want(a.type, `load from '${e.array}'`);
        index(e.index);
        return;
      }
      case 'un': {
        expr(e.a);
        const t = e.a.type;
        if (e.op === 'not') {
          if (t !== 'bool') fail(`'not' on ${t}`);
          want('bool', "'not'");
          return;
        }
        want(t, `'${e.op}'`);
        if (t === 'i32' && (e.op === 'neg' || e.op === 'abs')) return;
        if (t !== 'f32') fail(`'${e.op}' on ${t}`);
        return;
      }
      case 'bin': {
        expr(e.a); expr(e.b);
        const ta = e.a.type, tb = e.b.type;
        if (ta !== tb) fail(`'${e.op}' on ${ta} and ${tb}`);
        switch (e.op) {
          case '&&': case '||':
            if (ta !== 'bool') fail(`'${e.op}' on ${ta}`);
            want('bool', `'${e.op}'`);
            return;
          case '==': case '!=':
            want('bool', `'${e.op}'`);
            return;
          case '<': case '<=': case '>': case '>=':
            if (ta === 'bool') fail(`'${e.op}' on bool`);
            want('bool', `'${e.op}'`);
            return;
        }
        want(ta, `'${e.op}'`);
        if (ta === 'bool') fail(`'${e.op}' on bool`);
        if (ta === 'i32' && e.op === 'pow') fail(`'pow' on i32`);
        return;
      }
      case 'select':
        expr(e.cond); expr(e.a); expr(e.b);
        if (e.cond.type !== 'bool') fail(`select condition is ${e.cond.type}`);
        if (e.a.type !== e.b.type) fail(`select of ${e.a.type} and ${e.b.type}`);
        want(e.a.type, 'select');
        return;
      case 'cast':
        expr(e.a);
        return;
      default:
        fail(`unknown expression kind '${(e as { k: string }).k}'`);
    }
  };
  const index = (e: KExpr): void => {
    if (e.type !== 'i32') fail(`array index has type ${e.type}`);
    expr(e);
  };

  gridMode = true;
  k.grid.forEach((e, i) => {
    if (e.type !== 'i32') fail(`grid[${i}] has type ${e.type}`);
    expr(e);
  });
  gridMode = false;

  const block = (ss: readonly KStmt[]): void => {
    scopes.push(new Map());
    for (const s of ss) stmt(s);
    scopes.pop();
  };
  const stmt = (s: KStmt): void => {
    switch (s.k) {
      case 'decl':
        expr(s.init); // before declaring: the initialiser sees outer names
        if (s.init.type !== s.type) fail(`'${s.name}' is ${s.type} but initialised with ${s.init.type}`);
        declare(s.name, { kind: 'var', type: s.type, param: false });
        return;
      case 'assign': {
        const v = lookup(s.name);
        if (!v || v.kind !== 'var') fail(`assignment to unknown variable '${s.name}'`);
        if ((v as VarInfo).param) fail(`assignment to scalar parameter '${s.name}'`);
        expr(s.value);
        if (s.value.type !== (v as VarInfo).type) fail(`'${s.name}' is ${(v as VarInfo).type} but assigned ${s.value.type}`);
        return;
      }
      case 'local':
        if (!Number.isInteger(s.size) || s.size <= 0) fail(`local array '${s.name}' has size ${s.size}`);
        declare(s.name, { kind: 'local', type: s.type, writable: true, size: s.size });
        return;
      case 'mma': {
        // WGSL and native C (their printers verify without `mma`) refuse it here, in one line.
        if (!opts.mma) fail(`statement '${s.of}': dense 'mma' (tensor cores) is CUDA only; use dense 'tiled' or 'blocked' on this target`);
        if (k.workgroup[1] !== 1 || k.workgroup[2] !== 1 || k.workgroup[0] % 32 !== 0) fail(`mma needs a workgroup [32 n, 1, 1], not ${k.workgroup.join('x')}`);
        if (s.input !== 'f16' && s.input !== 'bf16') fail(`mma input '${String(s.input)}' (f16 or bf16)`);
        if (![s.mt, s.nt].every((n) => Number.isInteger(n) && n > 0)) fail(`mma blocks ${s.mt}x${s.nt}`);
        for (const [arr, stride] of [[s.a, s.aStride], [s.b, s.bStride]] as const) {
          const a = array(arr);
          if (a.kind !== 'shared' || a.storage !== s.input) fail(`mma operand '${arr}' must be a shared array of ${s.input} storage`);
          if (!Number.isInteger(stride) || stride <= 0 || stride % 8 !== 0 || stride < 16) fail(`mma row stride ${stride} of '${arr}' (a multiple of 8, at least 16)`);
        }
        index(s.aOff);
        index(s.bOff);
        const c = array(s.c);
        if (c.kind !== 'local' || c.type !== 'f32') fail(`mma accumulators '${s.c}' must be a local f32 array`);
        if (!Number.isInteger(s.cOff) || s.cOff < 0 || s.cOff + 4 * s.mt * s.nt > c.size!) fail(`mma accumulators ${s.c}[${s.cOff} .. ${s.cOff + 4 * s.mt * s.nt}) out of its ${c.size}`);
        return;
      }
      case 'store': {
        const a = array(s.array);
        if (!a.writable) fail(`store to read-only buffer '${s.array}'`);
        index(s.index);
        expr(s.value);
        if (s.value.type !== a.type) fail(`store of ${s.value.type} into ${a.type} array '${s.array}'`);
        return;
      }
      case 'if':
        expr(s.cond);
        if (s.cond.type !== 'bool') fail(`if condition is ${s.cond.type}`);
        block(s.then);
        block(s.else);
        return;
      case 'for':
        if (s.start.type !== 'i32' || s.end.type !== 'i32') fail(`loop '${s.v}' bounds must be i32`);
        if (!Number.isInteger(s.step) || s.step === 0 || (s.step | 0) !== s.step) fail(`loop '${s.v}' has step ${s.step}`);
        expr(s.start);
        scopes.push(new Map());
        declare(s.v, { kind: 'var', type: 'i32', param: false });
        expr(s.end);
        block(s.body);
        scopes.pop();
        return;
      case 'barrier': case 'comment':
        return;
      default:
        fail(`unknown statement kind '${(s as { k: string }).k}'`);
    }
  };
  block(k.body);

  if (opts.uniformBarriers !== false || mmaStatement(k) !== undefined) {
    const u = uniformity(k);
    if (u.problem && (opts.uniformBarriers !== false || u.problem.includes('mma'))) fail(u.problem);
  }
}

// ---- uniformity ------------------------------------------------------------------------

export interface Uniformity {
  /** Declared names (decl, for variables, local arrays) whose values may differ between the threads of a workgroup. */
  varying: Set<string>;
  /** True when `e` has the same value in every thread of a workgroup (given `varying`). */
  uniform(e: KExpr): boolean;
  /** The first barrier in non-uniform control flow, as a message. */
  problem?: string;
}

/**
 * Which variables may differ between the threads of a workgroup, and whether every barrier sits
 * in uniform control flow. An expression is varying when it reads tid on an axis whose workgroup
 * size is above 1, a varying variable, or a local (per-thread) array, or loads at a varying index
 * (a load at a uniform index reads one element, the same for every thread of a race-free
 * kernel). A variable is varying when a decl or assignment gives it a varying value or happens
 * under varying control (an `if` with a varying condition, a loop with varying bounds); loop
 * variables follow their bounds. Names are tracked by spelling: a name declared twice is varying
 * when any of its declarations is (conservative, and exact after a uniquifying rename).
 */
export function uniformity(k: Kernel): Uniformity {
  const varying = new Set<string>();
  const locals = new Set<string>();
  walk(k.body, (s) => { if (s.k === 'local') { locals.add(s.name); varying.add(s.name); } });
  const uniform = (e: KExpr): boolean => {
    switch (e.k) {
      case 'const': return true;
      case 'var': return !varying.has(e.name);
      case 'builtin': {
        const axis = e.name.split('.');
        if (axis[0] === 'wg') return true;
        return k.workgroup['xyz'.indexOf(axis[1]!)] === 1;
      }
      case 'load': return !locals.has(e.array) && uniform(e.index);
      case 'un': case 'cast': return uniform(e.a);
      case 'bin': return uniform(e.a) && uniform(e.b);
      case 'select': return uniform(e.cond) && uniform(e.a) && uniform(e.b);
    }
  };
  let problem: string | undefined;
  const pass = (ss: readonly KStmt[], control: boolean, check: boolean): void => {
    for (const s of ss) {
      switch (s.k) {
        case 'decl':
          if (!control || !uniform(s.init)) varying.add(s.name);
          break;
        case 'assign':
          if (!control || !uniform(s.value)) varying.add(s.name);
          break;
        case 'if': {
          const c = control && uniform(s.cond);
          if (check && !c && !problem && (hasBarrier(s.then) || hasBarrier(s.else))) problem = `a barrier inside an if whose condition differs between threads (${control ? 'the condition depends on the thread' : 'in non-uniform control flow'})`;
          if (check && !c && !problem && (hasMma(s.then) || hasMma(s.else))) problem = `an mma inside an if whose condition differs between threads (a warp executes it together)`;
          pass(s.then, c, check);
          pass(s.else, c, check);
          break;
        }
        case 'for': {
          const c = control && uniform(s.start) && uniform(s.end);
          if (!c) varying.add(s.v);
          if (check && !c && !problem && hasBarrier(s.body)) problem = `a barrier inside loop '${s.v}' whose bounds differ between threads (${control ? 'the bounds depend on the thread' : 'in non-uniform control flow'})`;
          if (check && !c && !problem && hasMma(s.body)) problem = `an mma inside loop '${s.v}' whose bounds differ between threads (a warp executes it together)`;
          pass(s.body, c, check);
          break;
        }
        default: break;
      }
    }
  };
  // Grow the varying set to a fixpoint (an assignment can make a variable read earlier varying).
  for (let n = -1; n !== varying.size;) { n = varying.size; pass(k.body, true, false); }
  pass(k.body, true, true);
  return { varying, uniform, ...(problem ? { problem } : {}) };
}

function walk(ss: readonly KStmt[], f: (s: KStmt) => void): void {
  for (const s of ss) {
    f(s);
    if (s.k === 'if') { walk(s.then, f); walk(s.else, f); }
    if (s.k === 'for') walk(s.body, f);
  }
}
