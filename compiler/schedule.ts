// Schedules: small serialisable records, separate from the algorithm (Halide, TVM). The
// lowering takes (function, schedule) and returns kernels; a tuner searches these records.
// A schedule is a default (form, chunk, tiles, workgroup, dtype) plus per-statement choices,
// keyed by the statement's target name as `retnetc compile --emit ir` prints it ('r',
// 'msr#2.r', '%n1.o'); the JSON of a Schedule is what `--schedule-file` reads.

export type Form = 'parallel' | 'recurrent' | 'chunkwise';
export const FORMS: readonly Form[] = ['parallel', 'recurrent', 'chunkwise'];

/**
 * How one statement is lowered, where it differs from the schedule's default. `form` and
 * `chunk` are for causal contractions (and `form: 'parallel'` for a statement that only has an
 * O(T^2) map kernel, such as softmax attention's scores); `workgroup` is the threads per
 * workgroup of the statement's kernel (a map's, or a contraction's over the value index).
 */
export interface StatementChoice {
  form?: Form;
  /** Chunk length (chunkwise) or tile of positions (parallel). */
  chunk?: number;
  workgroup?: number;
  /**
   * Tiles: `cols` is the key-position tile of a parallel contraction; m, n, k, regM, regN and
   * splitK tile a dense sum (compiler/lower/dense.ts DenseTile; k = 0: operands read unstaged).
   */
  tiles?: Record<string, number>;
  /** Chunkwise contractions as three kernels parallel over chunks (Schedule.chunkParallel). */
  chunkParallel?: boolean;
  /**
   * How this statement's dense sum is lowered (Schedule.dense), whatever the default: 'mma'
   * (tensor cores) for one projection, say.
   */
  dense?: DenseMode;
  /**
   * A statement whose value is a function of one sum: 'tree' lowers it as a tree reduction
   * (compiler/lower/reduce.ts; its `tiles` outs and lanes shape it) whatever the sizes, 'serial'
   * as one thread per output (Schedule.reduce).
   */
  reduce?: ReduceMode;
}

export interface Schedule {
  form: Form;
  /** Chunk length (chunkwise) or tile of positions (parallel). */
  chunk: number;
  /**
   * True where nobody chose `chunk` (makeSchedule without one, a schedule file without "chunk"):
   * a target's own default chunk may replace it (runtime/targets.ts withTargetDefaults), which
   * then clears this. An explicit chunk never has it, so it is always honoured. Not written to a
   * schedule file: the file states the chunk that was used.
   */
  chunkDefault?: true;
  /**
   * `cols`: positions per tile along the key axis in the parallel form. `state`: the most state
   * entries one thread keeps in the recurrent, chunkwise and chunk-parallel forms (all its state
   * arrays together; a longer key axis is split over threads or workgroups). Absent: each form's
   * own (64 recurrent and chunkwise, 16 chunk-parallel: registers on GPUs); CPUs keep state in
   * memory and take a whole key axis per thread (native's default).
   */
  tiles: { cols: number; state?: number };
  /** Threads per workgroup for contraction kernels (over the value index) and elementwise ones. */
  workgroup: { contraction: number; elementwise: number };
  /**
   * Storage dtype of the float tensors (inputs, outputs, intermediates): 'f16' or 'bf16' store
   * them in 2 bytes with f32 arithmetic (compiler/kir.ts). Decay tensors (what a contraction's
   * decay is computed from) and the gradients of decays stay f32 (compiler/plan.ts,
   * f32Tensors); state and accumulators are always f32.
   */
  dtype: StorageDtype;
  /**
   * How dense sums (projections, weight gradients: compiler/dense.ts) are lowered by default:
   * 'map' (absent) as one thread per output element with a serial sum (fastest on the CPU
   * executor, which runs barriers as generators), 'tiled' as tiled matrix products
   * (compiler/lower/dense.ts: workgroup tiles, register blocks, split-K), for GPUs; 'blocked' as
   * CPU matrix products (compiler/lower/dense-cpu.ts: single-thread macro tiles, packed panels,
   * micro tiles of lane loops; a statement's tiles m, n, k, regM, regN, lanes), for native;
   * 'mma' (opt-in, never a default: not yet confirmed on hardware by scripts/gpu-check.sh) as
   * tensor-core products on CUDA (compiler/lower/dense-mma.ts: mma.sync m16n8k16 with f32
   * accumulators), only with f16 or bf16 storage. A statement's `tiles` (m, n, k, regM, regN,
   * splitK) tile it whatever the default.
   */
  dense?: DenseMode;
  /**
   * Chunkwise contractions lowered parallel over chunks (compiler/lower/chunk-parallel.ts, as
   * flash-linear-attention does it): chunk-local state contributions of all chunks at once, a
   * scan over chunk states (sequential only over T / C), then all chunks' outputs at once.
   * Absent or false: one workgroup walks the chunks of a sequence (lowerChunkwise).
   */
  chunkParallel?: boolean;
  /** Per-statement choices by statement target name (absent: every statement takes the default). */
  statements?: Record<string, StatementChoice>;
  /**
   * Sums over a long extent into few outputs (norm weight and decay gradients, losses, squared
   * norms): 'serial' (absent) as one thread per output with a loop, 'tree' as a workgroup per
   * output whose threads stride over the sum and meet in a workgroup-memory tree
   * (compiler/lower/reduce.ts), where the sizes suit it (compiler/lower/reduce.ts treeSuits).
   */
  reduce?: ReduceMode;
  /**
   * f32 lanes of the CPU vector registers the blocked CPU lowerings (dense 'blocked': dense-cpu.ts,
   * chunk-cpu.ts, chunk-walk-cpu.ts) shape their micro tiles for: 16 (AVX-512, 32 registers; the
   * default where absent), 8 (AVX and AVX2, 16 registers), 4 (SSE, NEON). Native fills it from the
   * host's compiler (targets/native/compile.ts hostLanes).
   */
  lanes?: number;
}

/** The values Schedule.lanes takes. */
export const CPU_LANES: readonly number[] = [4, 8, 16];

export type DenseMode = 'map' | 'tiled' | 'blocked' | 'mma';
export const DENSE_MODES: readonly DenseMode[] = ['map', 'tiled', 'blocked', 'mma'];

export type StorageDtype = 'f32' | 'f16' | 'bf16';
export const STORAGE_DTYPES: readonly StorageDtype[] = ['f32', 'f16', 'bf16'];
export type ReduceMode = 'serial' | 'tree';
export const REDUCE_MODES: readonly ReduceMode[] = ['serial', 'tree'];


export const DEFAULT_CHUNK = 64;
export const MAX_CHUNK = 1024;
/** The most threads a workgroup may have on any target (WebGPU's guaranteed 256 is checked against the target later). */
export const MAX_WORKGROUP = 1024;

/** A schedule record that is not well formed (a schedule file's mistake). */
export class ScheduleFormatError extends RangeError {}

const checkChunk = (chunk: unknown, what: string): number => {
  if (typeof chunk !== 'number' || !Number.isInteger(chunk) || chunk < 1 || chunk > MAX_CHUNK) throw new ScheduleFormatError(`${what} must be an integer in 1..${MAX_CHUNK}, got ${JSON.stringify(chunk)}`);
  return chunk;
};
const checkThreads = (n: unknown, what: string): number => {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > MAX_WORKGROUP) throw new ScheduleFormatError(`${what} must be an integer in 1..${MAX_WORKGROUP}, got ${JSON.stringify(n)}`);
  return n;
};

/** `chunk` undefined: DEFAULT_CHUNK, marked as the default (Schedule.chunkDefault) for a target to replace. */
export function makeSchedule(form: Form, chunkGiven?: number, overrides: Partial<Omit<Schedule, 'form' | 'chunk' | 'chunkDefault'>> = {}): Schedule {
  const chunk = chunkGiven ?? DEFAULT_CHUNK;
  if (!Number.isInteger(chunk) || chunk < 1 || chunk > MAX_CHUNK) throw new RangeError(`chunk must be an integer in 1..${MAX_CHUNK}, got ${chunk}`);
  const dtype = overrides.dtype ?? 'f32';
  if (!STORAGE_DTYPES.includes(dtype)) throw new RangeError(`dtype must be one of ${STORAGE_DTYPES.join(', ')}, got ${String(dtype)}`);
  const state = overrides.tiles?.state;
  if (state !== undefined) checkChunk(state, 'tiles.state');
  const s: Schedule = { form, chunk, tiles: { cols: overrides.tiles?.cols ?? chunk, ...(state !== undefined ? { state } : {}) }, workgroup: overrides.workgroup ?? { contraction: 64, elementwise: 256 }, dtype };
  if (overrides.dense !== undefined && overrides.dense !== 'map') {
    if (!DENSE_MODES.includes(overrides.dense)) throw new RangeError(`dense must be one of ${DENSE_MODES.join(', ')}, got ${String(overrides.dense)}`);
    s.dense = overrides.dense;
  }
  if (overrides.chunkParallel) s.chunkParallel = true;
  if (chunkGiven === undefined) s.chunkDefault = true;
  if (overrides.lanes !== undefined) {
    if (!CPU_LANES.includes(overrides.lanes)) throw new ScheduleFormatError(`lanes must be one of ${CPU_LANES.join(', ')}, got ${JSON.stringify(overrides.lanes)}`);
    s.lanes = overrides.lanes;
  }
  const st = overrides.statements;
  if (st && Object.keys(st).length) s.statements = Object.fromEntries(Object.entries(st).map(([k, c]) => [k, checkChoice(c, `statement '${k}'`)]));
  if (overrides.reduce !== undefined && overrides.reduce !== 'serial') {
    if (!REDUCE_MODES.includes(overrides.reduce)) throw new RangeError(`reduce must be one of ${REDUCE_MODES.join(', ')}, got ${String(overrides.reduce)}`);
    s.reduce = overrides.reduce;
  }
  return s;
}

/** A statement choice, checked field by field (unknown fields are an error: a typo must not pass silently). */
export function checkChoice(c: unknown, where: string): StatementChoice {
  if (!c || typeof c !== 'object' || Array.isArray(c)) throw new ScheduleFormatError(`${where}: expected an object such as {"form": "chunkwise", "chunk": 16}, got ${JSON.stringify(c)}`);
  const out: StatementChoice = {};
  for (const [k, v] of Object.entries(c as Record<string, unknown>)) {
    if (v === undefined) continue;
    if (k === 'form') {
      if (typeof v !== 'string' || !(FORMS as readonly string[]).includes(v)) throw new ScheduleFormatError(`${where}: form must be one of ${FORMS.join(', ')}, got ${JSON.stringify(v)}`);
      out.form = v as Form;
    } else if (k === 'chunk') out.chunk = checkChunk(v, `${where}: chunk`);
    else if (k === 'workgroup') out.workgroup = checkThreads(v, `${where}: workgroup`);
    else if (k === 'tiles') {
      if (!v || typeof v !== 'object' || Array.isArray(v)) throw new ScheduleFormatError(`${where}: tiles must be an object of positive integers such as {"cols": 32}, got ${JSON.stringify(v)}`);
      out.tiles = Object.fromEntries(Object.entries(v as Record<string, unknown>).map(([a, n]) => [a, checkChunk(n, `${where}: tiles.${a}`)]));
    } else if (k === 'chunkParallel') {
      if (typeof v !== 'boolean') throw new ScheduleFormatError(`${where}: chunkParallel must be true or false, got ${JSON.stringify(v)}`);
      out.chunkParallel = v;
    } else if (k === 'reduce') {
      if (typeof v !== 'string' || !(REDUCE_MODES as readonly string[]).includes(v)) throw new ScheduleFormatError(`${where}: reduce must be one of ${REDUCE_MODES.join(', ')}, got ${JSON.stringify(v)}`);
      out.reduce = v as ReduceMode;
    } else if (k === 'dense') {
      if (typeof v !== 'string' || !(DENSE_MODES as readonly string[]).includes(v)) throw new ScheduleFormatError(`${where}: dense must be one of ${DENSE_MODES.join(', ')}, got ${JSON.stringify(v)}`);
      out.dense = v as DenseMode;
    } else throw new ScheduleFormatError(`${where}: unknown field '${k}' (a statement's choice has form, chunk, workgroup, tiles, chunkParallel, reduce, dense)`);
  }
  if (out.form === 'recurrent' && out.chunk !== undefined) throw new ScheduleFormatError(`${where}: chunk does not apply to the recurrent form (it steps one position at a time)`);
  return out;
}

/**
 * A schedule from its JSON (a schedule file): `form` is required; `chunk`, `tiles`,
 * `workgroup`, `dtype` and `statements` default as makeSchedule has them.
 */
export function scheduleFromJson(json: unknown): Schedule {
  if (!json || typeof json !== 'object' || Array.isArray(json)) throw new ScheduleFormatError(`expected a JSON object such as {"form": "chunkwise", "chunk": 64, "statements": {...}}, got ${JSON.stringify(json)}`);
  const r = json as Record<string, unknown>;
  const known = ['form', 'chunk', 'tiles', 'workgroup', 'dtype', 'dense', 'chunkParallel', 'reduce', 'lanes', 'statements'];
  for (const k of Object.keys(r)) if (!known.includes(k)) throw new ScheduleFormatError(`unknown field '${k}' (a schedule has ${known.join(', ')})`);
  if (typeof r['form'] !== 'string' || !(FORMS as readonly string[]).includes(r['form'])) throw new ScheduleFormatError(`form must be one of ${FORMS.join(', ')}, got ${JSON.stringify(r['form'])}`);
  const form = r['form'] as Form;
  const chunkGiven = r['chunk'] === undefined ? undefined : checkChunk(r['chunk'], 'chunk');
  const chunk = chunkGiven ?? DEFAULT_CHUNK;
  const overrides: Partial<Omit<Schedule, 'form' | 'chunk'>> = {};
  if (r['tiles'] !== undefined) {
    const t = r['tiles'] as Record<string, unknown> | null;
    if (!t || typeof t !== 'object' || Object.keys(t).some((k) => k !== 'cols' && k !== 'state')) throw new ScheduleFormatError(`tiles must be {"cols": N} or {"cols": N, "state": N}, got ${JSON.stringify(r['tiles'])}`);
    overrides.tiles = { cols: t['cols'] === undefined ? chunk : checkChunk(t['cols'], 'tiles.cols'), ...(t['state'] !== undefined ? { state: checkChunk(t['state'], 'tiles.state') } : {}) };
  }
  if (r['workgroup'] !== undefined) {
    const w = r['workgroup'] as Record<string, unknown> | null;
    if (!w || typeof w !== 'object' || Object.keys(w).some((k) => k !== 'contraction' && k !== 'elementwise')) throw new ScheduleFormatError(`workgroup must be {"contraction": N, "elementwise": N}, got ${JSON.stringify(r['workgroup'])}`);
    overrides.workgroup = { contraction: w['contraction'] === undefined ? 64 : checkThreads(w['contraction'], 'workgroup.contraction'), elementwise: w['elementwise'] === undefined ? 256 : checkThreads(w['elementwise'], 'workgroup.elementwise') };
  }
  if (r['dtype'] !== undefined) {
    if (typeof r['dtype'] !== 'string' || !(STORAGE_DTYPES as readonly string[]).includes(r['dtype'])) throw new ScheduleFormatError(`dtype must be one of ${STORAGE_DTYPES.join(', ')}, got ${JSON.stringify(r['dtype'])}`);
    overrides.dtype = r['dtype'] as StorageDtype;
  }
  if (r['dense'] !== undefined) {
    if (typeof r['dense'] !== 'string' || !(DENSE_MODES as readonly string[]).includes(r['dense'])) throw new ScheduleFormatError(`dense must be one of ${DENSE_MODES.join(', ')}, got ${JSON.stringify(r['dense'])}`);
    overrides.dense = r['dense'] as DenseMode;
  }
  if (r['chunkParallel'] !== undefined) {
    if (typeof r['chunkParallel'] !== 'boolean') throw new ScheduleFormatError(`chunkParallel must be true or false, got ${JSON.stringify(r['chunkParallel'])}`);
    overrides.chunkParallel = r['chunkParallel'];
  }
  if (r['reduce'] !== undefined) {
    if (typeof r['reduce'] !== 'string' || !(REDUCE_MODES as readonly string[]).includes(r['reduce'])) throw new ScheduleFormatError(`reduce must be one of ${REDUCE_MODES.join(', ')}, got ${JSON.stringify(r['reduce'])}`);
    overrides.reduce = r['reduce'] as ReduceMode;
  }
  if (r['lanes'] !== undefined) overrides.lanes = r['lanes'] as number;
  if (r['statements'] !== undefined) {
    const st = r['statements'];
    if (!st || typeof st !== 'object' || Array.isArray(st)) throw new ScheduleFormatError(`statements must be an object keyed by statement name, got ${JSON.stringify(st)}`);
    overrides.statements = Object.fromEntries(Object.entries(st as Record<string, unknown>).map(([k, c]) => [k, checkChoice(c, `statement '${k}'`)]));
  }
  return makeSchedule(form, chunkGiven, overrides);
}

/**
 * The schedule one statement is lowered with: the default with the statement's choice put in
 * (a chunk without tiles also sets the parallel form's key tile, as makeSchedule does), and no
 * per-statement choices of its own.
 */
export function statementSchedule(s: Schedule, c: StatementChoice | undefined): Schedule {
  const { statements: _, ...base } = s;
  if (!c) return base;
  const chunk = c.chunk ?? s.chunk;
  const cols = c.tiles?.['cols'] ?? (c.chunk !== undefined ? c.chunk : s.tiles.cols);
  const workgroup = c.workgroup === undefined ? s.workgroup : { contraction: c.workgroup, elementwise: c.workgroup };
  const state = c.tiles?.['state'] ?? s.tiles.state;
  const out: Schedule = { ...base, form: c.form ?? s.form, chunk, tiles: { cols, ...(state !== undefined ? { state } : {}) }, workgroup };
  if (c.chunk !== undefined) delete out.chunkDefault;
  if (c.chunkParallel !== undefined) {
    if (c.chunkParallel) out.chunkParallel = true;
    else delete out.chunkParallel;
  }
  if (c.reduce !== undefined) {
    if (c.reduce === 'tree') out.reduce = 'tree';
    else delete out.reduce;
  }
  if (c.dense !== undefined) {
    if (c.dense !== 'map') out.dense = c.dense;
    else delete out.dense;
  }
  return out;
}

const sortedChoice = (c: StatementChoice): StatementChoice => {
  const out: StatementChoice = {};
  if (c.form !== undefined) out.form = c.form;
  if (c.chunk !== undefined) out.chunk = c.chunk;
  if (c.workgroup !== undefined) out.workgroup = c.workgroup;
  if (c.tiles !== undefined) out.tiles = Object.fromEntries(Object.entries(c.tiles).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  if (c.chunkParallel !== undefined) out.chunkParallel = c.chunkParallel;
  if (c.reduce !== undefined) out.reduce = c.reduce;
  if (c.dense !== undefined) out.dense = c.dense;
  return out;
};

/** The schedule as it is written to a file: fields in a fixed order, empty choices dropped (`sort`: statements sorted by name). */
export function scheduleToJson(s: Schedule, sort = false): Schedule {
  const out: Schedule = { form: s.form, chunk: s.chunk, tiles: { cols: s.tiles.cols, ...(s.tiles.state !== undefined ? { state: s.tiles.state } : {}) }, workgroup: { contraction: s.workgroup.contraction, elementwise: s.workgroup.elementwise }, dtype: s.dtype };
  if (s.dense && s.dense !== 'map') out.dense = s.dense;
  if (s.chunkParallel) out.chunkParallel = true;
  if (s.reduce && s.reduce !== 'serial') out.reduce = s.reduce;
  if (s.lanes !== undefined) out.lanes = s.lanes;
  const st = Object.entries(s.statements ?? {}).map(([k, c]) => [k, sortedChoice(c)] as const).filter(([, c]) => Object.keys(c).length > 0);
  if (st.length) out.statements = Object.fromEntries(sort ? st.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)) : st);
  return out;
}

/** A cache key: equal for schedules that lower alike field for field (statements included, in any order). */
export const scheduleKey = (s: Schedule): string => JSON.stringify(scheduleToJson(s, true));
