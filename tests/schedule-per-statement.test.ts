// Schedules per statement (compiler/schedule.ts `statements`, compiler/plan.ts): a plan with a
// per-statement choice computes what the default plan computes (CPU executor), and its kernels
// show the choice; the choices a statement cannot have are ScheduleErrors at it; schedule
// records round-trip through JSON and key caches by their statements. And the linear cost of
// RetNet's recurrent and chunkwise forms: no kernel of the layer's forward or backward does
// O(T^2) work (an upper bound on each kernel's work from its grid, workgroup and loop bounds).
import { describe, expect, test } from 'vitest';
import type { KExpr, Kernel, KStmt } from '../compiler/kir.js';
import { modelProgram } from '../compiler/pipeline.js';
import { compilePlan, forwardStatementNames, type Plan, ScheduleError, spelledOutSchedule, unknownStatementKeys } from '../compiler/plan.js';
import { type Form, makeSchedule, type Schedule, scheduleFromJson, scheduleKey, ScheduleFormatError, scheduleToJson } from '../compiler/schedule.js';
import type { CheckedFn } from '../dsl/checked.js';
import { loadProgram } from '../dsl/program.js';
import type { Value } from '../dsl/reference/interpreter.js';
import { runPlanCpu } from '../runtime/plan-runner.js';

const fnOf = (file: string, name: string): CheckedFn => loadProgram(`models/${file}.ret`).checked!.fns.get(name)!;
const tinyModel = () => loadProgram('models/retnet.ret').checked!.models.get('retnet')!.instances.get('tiny')!;
const layerOf = (): CheckedFn => modelProgram(tinyModel()).fns.find((f) => f.name === 'retnet_layers')!;

/** Deterministic values in [-scale, scale). */
function rand(n: number, seed: number, scale = 1): Float64Array {
  let s = seed >>> 0 || 1;
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    out[i] = ((s / 2 ** 32) * 2 - 1) * scale;
  }
  return out;
}

/** Random inputs for every parameter of a plan's function, with the sizes given (numbers in shapes are kept). */
function inputsFor(plan: Plan, sizes: ReadonlyMap<string, number>, seed = 1): Map<string, Value> {
  const out = new Map<string, Value>();
  let k = seed;
  for (const p of plan.fn.params) {
    if (p.default !== undefined) continue;
    const shape = p.shape.map((d) => {
      let v = 0;
      for (const [mono, coef] of d) v += coef * (mono ? mono.split('*').reduce((a, x) => a * sizes.get(x)!, 1) : 1);
      return v;
    });
    const n = shape.reduce((a, b) => a * b, 1);
    // Decays in (0.5, 1) where a function takes them (retention's gamma).
    const data = p.name === 'gamma' ? rand(n, k++).map((x) => 0.75 + 0.2 * x) : rand(n, k++, p.name.startsWith('grad.') ? 1 : 0.5);
    out.set(p.name, { shape, data });
  }
  return out;
}

function maxRelDiff(a: Map<string, { data: ArrayLike<number> }>, b: Map<string, { data: ArrayLike<number> }>): number {
  let worst = 0;
  for (const [name, x] of a) {
    const y = b.get(name)!;
    expect(y.data.length, name).toBe(x.data.length);
    let scale = 0;
    for (let i = 0; i < x.data.length; i++) scale = Math.max(scale, Math.abs(x.data[i]!));
    for (let i = 0; i < x.data.length; i++) worst = Math.max(worst, Math.abs(x.data[i]! - y.data[i]!) / Math.max(scale, 1e-30));
  }
  return worst;
}

describe('a plan with per-statement choices computes what the default computes, and its kernels show the choice', { timeout: 120_000 }, () => {
  test('RetNet layer (tiny): the retention statement chunkwise chunk 16, the rest recurrent; forward and backward', () => {
    const fn = layerOf();
    const names = forwardStatementNames(fn);
    expect(names).toContain('msr#2.r');
    expect(names).toContain('%n1.o'); // the per-position scale's scan
    const sizes = new Map([['B', 1], ['T', 37]]);
    for (const backward of [false, true]) {
      const base = compilePlan(fn, makeSchedule('recurrent'), { backward });
      const mixed = compilePlan(fn, makeSchedule('recurrent', 64, { statements: { 'msr#2.r': { form: 'chunkwise', chunk: 16 } } }), { backward });
      const inputs = inputsFor(base, sizes);
      const d = maxRelDiff(runPlanCpu(base, inputs), runPlanCpu(mixed, inputs));
      console.log(`[per-statement] retnet_layers ${backward ? 'backward' : 'forward'}, retention chunkwise 16 in a recurrent plan: max relative difference ${d.toExponential(2)}`);
      expect(d).toBeLessThan(2e-5);
      // The choice shows in the kernels: the retention statement's (and in the backward its
      // gradient contractions') kernels are chunkwise with chunk 16, every other contraction recurrent.
      const contractions = mixed.launches.filter((l) => l.how === 'contraction');
      const chunked = contractions.filter((l) => /_chunkwise$/.test(l.kernel.name));
      expect(chunked.map((l) => l.target)).toContain('msr#2.r');
      expect(chunked.length).toBe(backward ? 4 : 1); // r itself, and in the backward dq, dk, dv
      for (const l of chunked) expect(l.schedule).toMatchObject({ form: 'chunkwise', chunk: 16 });
      for (const l of contractions.filter((x) => !chunked.includes(x))) {
        expect(l.kernel.name).toMatch(/_recurrent$/);
        expect(l.schedule!.form).toBe('recurrent');
      }
      expect(contractions.find((l) => l.target === '%n1.o')!.kernel.name).toMatch(/_recurrent$/);
      // Chunk 16's shared arrays are smaller than chunk 64's.
      const c64 = compilePlan(fn, makeSchedule('chunkwise', 64), { backward }).launches.find((l) => l.target === 'msr#2.r')!.kernel;
      const c16 = chunked.find((l) => l.target === 'msr#2.r')!.kernel;
      const smem = (k: Kernel) => k.shared.reduce((a, s) => a + s.size, 0);
      expect(smem(c16)).toBeLessThan(smem(c64));
    }
  });

  test('retention: one statement recurrent in a chunkwise plan (and chunkwise 8 in a parallel one); a map workgroup choice', () => {
    const fn = fnOf('retention', 'retention');
    const K = new Map([['K', 8], ['V', 4]]);
    const sizes = new Map([['B', 1], ['H', 2], ['T', 29], ['K', 8], ['V', 4]]);
    for (const backward of [false, true]) {
      const base = compilePlan(fn, makeSchedule('chunkwise', 8), { backward, constants: K });
      const inputs = inputsFor(base, sizes, 7);
      const ref = runPlanCpu(base, inputs);
      for (const [def, choice] of [['chunkwise', { form: 'recurrent' }], ['parallel', { form: 'chunkwise', chunk: 8 }]] as [Form, object][]) {
        const plan = compilePlan(fn, makeSchedule(def, 8, { statements: { o: choice } }), { backward, constants: K });
        const d = maxRelDiff(ref, runPlanCpu(plan, inputs));
        expect(d, `${def} + o ${JSON.stringify(choice)}${backward ? ' backward' : ''}`).toBeLessThan(2e-5);
        const want = (choice as { form: string }).form;
        const cs = plan.launches.filter((l) => l.how === 'contraction');
        expect(cs.length).toBeGreaterThan(0);
        // o's kernel and (backward) the gradient contractions it derives take o's form.
        for (const l of cs) expect(l.kernel.name, l.target).toMatch(new RegExp(`_${want}$`));
      }
    }
    // A map's workgroup: retention_state's elementwise statement.
    const st = fnOf('retention', 'retention_state');
    const maps = forwardStatementNames(st);
    const plan = compilePlan(st, makeSchedule('chunkwise', 8), { constants: K });
    const map = plan.launches.find((l) => l.how === 'elementwise');
    if (map) {
      const p2 = compilePlan(st, makeSchedule('chunkwise', 8, { statements: { [map.target]: { workgroup: 64 } } }), { constants: K });
      expect(p2.launches.find((l) => l.target === map.target)!.kernel.workgroup[0]).toBe(64);
      expect(plan.launches.find((l) => l.target === map.target)!.kernel.workgroup[0]).toBe(256);
    } else expect(maps.length).toBeGreaterThan(0);
  });

  test('the stateful form takes the choice of the statement whose state it carries', () => {
    const fn = layerOf();
    const plan = compilePlan(fn, makeSchedule('recurrent', 64, { statements: { 'msr.r': { form: 'chunkwise', chunk: 16 } } }), { stateful: true });
    const block = plan.launches.find((l) => l.target === 'msr#2.r%block')!;
    expect(block.kernel.name).toMatch(/_chunkwise$/);
    expect(block.schedule).toMatchObject({ form: 'chunkwise', chunk: 16 });
    expect(plan.launches.find((l) => l.target === '%n1.o%block')!.kernel.name).toMatch(/_recurrent$/);
  });

  test('choices a statement cannot have are ScheduleErrors at the statement; unknown names are found', () => {
    const fn = fnOf('retention', 'retention');
    const K = new Map([['K', 8], ['V', 4]]);
    const st = fnOf('retention', 'retention_state');
    const mapName = compilePlan(st, makeSchedule('chunkwise'), { constants: K }).launches.find((l) => l.how === 'elementwise')?.target;
    if (mapName) {
      expect(() => compilePlan(st, makeSchedule('chunkwise', 64, { statements: { [mapName]: { form: 'recurrent' } } }), { constants: K })).toThrow(/is elementwise \(a map kernel, the same in every form\): only workgroup applies to it, not form recurrent/);
    }
    expect(() => compilePlan(fn, makeSchedule('recurrent', 64, { statements: { o: { chunk: 16 } } }), { constants: K })).toThrow(/statement 'o': chunk 16 does not apply to the recurrent form/);
    // Softmax attention's statements have only the parallel form: a recurrent choice says why, at the statement.
    const sm = fnOf('softmax_attention', 'softmax_attention');
    let err: unknown;
    try { compilePlan(sm, makeSchedule('parallel', 64, { statements: { z: { form: 'recurrent' } } }), { constants: K }); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(ScheduleError);
    expect((err as ScheduleError).message).toMatch(/statement 'z' has no recurrent form: .*; only the parallel form exists for it/);
    expect((err as ScheduleError).span?.line).toBeGreaterThan(1);
    // Its default recurrent schedule is refused as before; naming every statement parallel compiles it.
    expect(() => compilePlan(sm, makeSchedule('recurrent'), { constants: K })).toThrow(/'softmax_attention' has no recurrent schedule: /);
    const all = Object.fromEntries(forwardStatementNames(sm).map((n) => [n, { form: 'parallel' as const }]));
    const ok = compilePlan(sm, makeSchedule('recurrent', 64, { statements: all }), { constants: K });
    expect(ok.launches.length).toBeGreaterThan(0);
    for (const backward of [false, true]) expect(() => compilePlan(sm, makeSchedule('recurrent', 64, { statements: all }), { backward, constants: K })).not.toThrow();
    // Unknown keys (exact, instance-free 'msr.r', scoped 'fn/name').
    const layer = layerOf();
    const names = new Map([[layer.name, forwardStatementNames(layer)]]);
    expect(unknownStatementKeys(makeSchedule('chunkwise', 64, { statements: { 'msr#2.r': {}, 'msr.r': {}, 'retnet_layers/msr.r': {}, 'retnet_layers/xn': {}, rr: {}, 'other/xn': {} } }), names)).toEqual(['rr', 'other/xn']);
  });

  test('schedule records: JSON round trip, validation, keys include the statements (in any order)', () => {
    const s = makeSchedule('chunkwise', 32, { statements: { b: { workgroup: 64 }, a: { form: 'recurrent' } } });
    const t = makeSchedule('chunkwise', 32, { statements: { a: { form: 'recurrent' }, b: { workgroup: 64 } } });
    expect(scheduleKey(s)).toBe(scheduleKey(t));
    expect(scheduleKey(s)).not.toBe(scheduleKey(makeSchedule('chunkwise', 32)));
    expect(scheduleKey(makeSchedule('chunkwise', 32))).toBe(JSON.stringify(makeSchedule('chunkwise', 32))); // unchanged for plain schedules
    expect(scheduleFromJson(JSON.parse(JSON.stringify(scheduleToJson(s))))).toEqual(s);
    expect(scheduleFromJson({ form: 'recurrent' })).toEqual(makeSchedule('recurrent'));
    const bad: [unknown, RegExp][] = [
      [{ form: 'chunky' }, /form must be one of parallel, recurrent, chunkwise/],
      [{ form: 'chunkwise', chunk: 0 }, /chunk must be an integer in 1\.\.1024, got 0/],
      [{ form: 'chunkwise', statements: { o: { form: 'recurrent', chunk: 8 } } }, /statement 'o': chunk does not apply to the recurrent form/],
      [{ form: 'chunkwise', statements: { o: { chunks: 8 } } }, /statement 'o': unknown field 'chunks'/],
      [{ form: 'chunkwise', statements: { o: { workgroup: 2000 } } }, /workgroup must be an integer in 1\.\.1024/],
      [{ form: 'chunkwise', statements: [] }, /statements must be an object/],
      [{ form: 'chunkwise', tile: 3 }, /unknown field 'tile'/],
    ];
    for (const [json, re] of bad) expect(() => scheduleFromJson(json)).toThrow(ScheduleFormatError), expect(() => scheduleFromJson(json)).toThrow(re);
    // The spelled-out schedule (what --emit ir prints) compiles to the same kernels.
    const fn = layerOf();
    const sched = makeSchedule('recurrent', 64, { statements: { 'msr.r': { form: 'chunkwise', chunk: 16 }, xn: { workgroup: 128 } } });
    const full = spelledOutSchedule(sched, [fn]);
    expect(Object.keys(full.statements!).length).toBe(forwardStatementNames(fn).length);
    expect(full.statements!['msr#2.r']).toEqual({ form: 'chunkwise', chunk: 16, workgroup: 64 });
    expect(full.statements!['xn']).toEqual({ workgroup: 128 });
    const back = scheduleFromJson(JSON.parse(JSON.stringify(full)));
    for (const backward of [false, true]) {
      const a = compilePlan(fn, sched, { backward }).launches.map((l) => JSON.stringify(l.kernel));
      const b = compilePlan(fn, back, { backward }).launches.map((l) => JSON.stringify(l.kernel));
      expect(b).toEqual(a);
    }
  });
});

// ---- linear cost in T ----------------------------------------------------------------------

type Iv = [number, number];
const TOP: Iv = [-Infinity, Infinity];
const mulIv = (a: Iv, b: Iv): Iv => {
  const p = [a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]].map((x) => (Number.isNaN(x) ? 0 : x));
  return [Math.min(...p), Math.max(...p)];
};

/** Interval of an integer expression, given intervals of variables and builtins. */
function evalIv(e: KExpr, env: ReadonlyMap<string, Iv>): Iv {
  switch (e.k) {
    case 'const': return [e.value, e.value];
    case 'var': return env.get(e.name) ?? TOP;
    case 'builtin': return env.get(e.name) ?? TOP;
    case 'load': return TOP;
    case 'cast': return evalIv(e.a, env);
    case 'select': { const a = evalIv(e.a, env), b = evalIv(e.b, env); return [Math.min(a[0], b[0]), Math.max(a[1], b[1])]; }
    case 'un': { if (e.op === 'neg') { const a = evalIv(e.a, env); return [-a[1], -a[0]]; } return e.op === 'not' ? [0, 1] : TOP; }
    case 'bin': {
      if (['<', '<=', '>', '>=', '==', '!=', '&&', '||'].includes(e.op)) return [0, 1];
      const a = evalIv(e.a, env), b = evalIv(e.b, env);
      switch (e.op) {
        case '+': return [a[0] + b[0], a[1] + b[1]];
        case '-': return [a[0] - b[1], a[1] - b[0]];
        case '*': return mulIv(a, b);
        case 'min': return [Math.min(a[0], b[0]), Math.min(a[1], b[1])];
        case 'max': return [Math.max(a[0], b[0]), Math.max(a[1], b[1])];
        case '/': if (b[0] > 0) { const q = [a[0] / b[0], a[0] / b[1], a[1] / b[0], a[1] / b[1]]; return [Math.floor(Math.min(...q)), Math.ceil(Math.max(...q))]; } return TOP;
        case '%': if (b[0] > 0) return a[0] >= 0 ? [0, Math.min(a[1], b[1] - 1)] : [-(b[1] - 1), b[1] - 1]; return TOP;
        default: return TOP;
      }
    }
  }
}

/** Variables a kernel assigns (their values change: unknown, so a loop bounded by one is unbounded). */
function assigned(body: readonly KStmt[], out = new Set<string>()): Set<string> {
  for (const s of body) {
    if (s.k === 'assign') out.add(s.name);
    else if (s.k === 'if') { assigned(s.then, out); assigned(s.else, out); } else if (s.k === 'for') assigned(s.body, out);
  }
  return out;
}

/**
 * An upper bound on the statements one thread executes: every loop runs at most
 * ceil((end_max - start_min) / step) times, with its variable in [start_min, end_max - 1].
 */
function threadCost(body: readonly KStmt[], env: Map<string, Iv>, changing: ReadonlySet<string>): number {
  let cost = 0;
  for (const s of body) {
    cost += 1;
    if (s.k === 'decl') env.set(s.name, changing.has(s.name) ? TOP : evalIv(s.init, env));
    else if (s.k === 'if') cost += Math.max(threadCost(s.then, new Map(env), changing), threadCost(s.else, new Map(env), changing));
    else if (s.k === 'for') {
      const a = evalIv(s.start, env), b = evalIv(s.end, env);
      const trips = s.step > 0 ? Math.max(0, Math.ceil((b[1] - a[0]) / s.step)) : Math.max(0, Math.ceil((a[1] - b[0]) / -s.step));
      const inner = new Map(env);
      inner.set(s.v, s.step > 0 ? [a[0], b[1] - 1] : [b[0] + 1, a[1]]);
      cost += trips * threadCost(s.body, inner, changing);
    }
  }
  return cost;
}

/** An upper bound on a kernel's work (threads x statements per thread) for the scalars given. */
function kernelWork(k: Kernel, scalars: Record<string, number>): number {
  const env = new Map<string, Iv>(Object.entries(scalars).map(([n, v]) => [n, [v, v] as Iv]));
  const grid = k.grid.map((g) => evalIv(g, env)[1]);
  (['x', 'y', 'z'] as const).forEach((a, i) => {
    env.set(`tid.${a}`, [0, k.workgroup[i]! - 1]);
    env.set(`wg.${a}`, [0, Math.max(0, grid[i]! - 1)]);
  });
  return grid.reduce((p, g) => p * g, 1) * k.workgroup.reduce((p, w) => p * w, 1) * threadCost(k.body, env, assigned(k.body));
}

/** Work of every launch at T and 2T (B = 2, the plan's other sizes as given), and the ratio. */
function growth(plan: Plan, sizes: ReadonlyMap<string, number>, T: number): { kernel: string; target: string; ratio: number; work: number }[] {
  return plan.launches.map((l) => {
    const at = (t: number): number => {
      const scalars: Record<string, number> = {};
      for (const [name, atom] of Object.entries(l.scalars)) scalars[name] = atom === 'T' ? t : sizes.get(atom) ?? NaN;
      return kernelWork(l.kernel, scalars);
    };
    const w1 = at(T), w2 = at(2 * T);
    return { kernel: l.kernel.name, target: l.target, ratio: w2 / w1, work: w1 };
  });
}

describe('RetNet\'s recurrent and chunkwise forms cost O(T): no kernel of the layer does O(T^2) work', { timeout: 120_000 }, () => {
  const T = 4096;
  const sizes = new Map([['B', 2]]);

  test('the work bound sees quadratic kernels (its negative controls: the parallel form, softmax attention)', () => {
    const par = growth(compilePlan(layerOf(), makeSchedule('parallel', 64)), sizes, T);
    expect(par.find((g) => g.target === 'msr#2.r')!.ratio).toBeGreaterThan(3.5);
    const sm = growth(compilePlan(fnOf('softmax_attention', 'softmax_attention'), makeSchedule('parallel', 64), { constants: new Map([['K', 8], ['V', 8]]) }), new Map([['B', 1], ['H', 1]]), T);
    expect(Math.max(...sm.map((g) => g.ratio))).toBeGreaterThan(3.5);
  });

  for (const form of ['recurrent', 'chunkwise'] as const) for (const mode of ['forward', 'backward', 'stateful'] as const) {
    test(`${form} ${mode}: every kernel's work at 2T is at most 2.1x its work at T (T = ${T})`, () => {
      const plan = compilePlan(layerOf(), makeSchedule(form, 64), { backward: mode === 'backward', stateful: mode === 'stateful' });
      const g = growth(plan, sizes, T);
      expect(g.length).toBe(plan.launches.length);
      const linear = g.filter((x) => x.ratio > 1.5).length, flat = g.filter((x) => x.ratio <= 1.05).length;
      console.log(`[per-statement] ${form} ${mode}: ${g.length} kernels, ${linear} with work linear in T, ${flat} constant in T, largest growth x${Math.max(...g.map((x) => x.ratio)).toFixed(3)}`);
      const bad = g.filter((x) => !(x.ratio <= 2.1)).map((x) => `${x.kernel} (${x.target}): work x${x.ratio.toFixed(2)} when T doubles`);
      expect(bad).toEqual([]);
      // The scans are in: the retention state and the per-position scale grow linearly, not constantly.
      for (const t of ['msr#2.r', '%n1.o']) {
        const x = g.find((y) => y.target === t || y.target === `${t}%block`)!;
        expect(x.ratio, t).toBeGreaterThan(1.5);
      }
    });
  }
});

export type { Schedule };
