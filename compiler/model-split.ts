// Whole models as programs of functions: the model's forward is cut at its layer calls into
// parts; each part and each layer's forward becomes a plain function whose weights are
// parameters named by their torchscale path. A layer repeated L times is one function run
// L times with different weight bindings (one kernel set, L launches of it), not L copies.
import type { CheckedFn, CheckedModel, CParam, CStmt, CVar } from '../dsl/checked.js';
import type { Dim } from '../dsl/dims.js';

/** Where a step's parameter comes from: a model tensor (by variable id) or a weight (by full name). */
export type Source = { kind: 'var'; id: string } | { kind: 'weight'; name: string };

export interface Step {
  /** Index into ModelProgram.fns: the function this step runs. */
  fn: number;
  /** Parameter name -> source. */
  inputs: Map<string, Source>;
  /** Output name -> model variable id it defines. */
  outputs: Map<string, string>;
  /** For a layer instance: its weight prefix ('layers.3.'), which also names its state. */
  scope?: string;
}

export interface ModelProgram {
  model: CheckedModel;
  /** The distinct functions (model parts and layer forwards), weights as parameters. */
  fns: CheckedFn[];
  steps: Step[];
  /** The model's own inputs and outputs (tokens -> logits). */
  params: CParam[];
  outputs: CParam[];
  /** Every model tensor a step reads or writes, by id. */
  vars: Map<string, CVar>;
}

const safe = (s: string): string => s.replace(/[^A-Za-z0-9_]/g, '_');

/** The variables a statement reads. */
function reads(s: CStmt): string[] {
  if (s.k === 'call') return s.args;
  const out: string[] = [];
  const go = (e: import('../dsl/checked.js').CExpr): void => {
    switch (e.k) {
      case 'load': out.push(e.v); e.indices.forEach(go); return;
      case 'unary': go(e.a); return;
      case 'binary': go(e.a); go(e.b); return;
      case 'select': go(e.cond); go(e.a); go(e.b); return;
      case 'reduce': go(e.body); e.constraints.forEach((c) => go(c.rhs)); return;
      default: return;
    }
  };
  go(s.value);
  return out;
}
const writes = (s: CStmt): string[] => (s.k === 'call' ? s.outs : [s.target]);

/** `fn` with each weight it reads turned into a parameter named by the weight's path. */
export function withWeightParams(fn: CheckedFn): CheckedFn {
  const weights = [...fn.vars.values()].filter((v) => v.role === 'weight' && fn.body.some((s) => reads(s).includes(v.id)));
  const params: CParam[] = [...fn.params, ...weights.map((w) => ({ name: w.path!, dtype: w.dtype, shape: w.shape, v: w.id }))];
  return { ...fn, params };
}

/** Splits a model's forward into parts and layer runs. */
export function splitModel(model: CheckedModel): ModelProgram {
  const f = model.forward;
  const fns: CheckedFn[] = [];
  const steps: Step[] = [];
  const vars = new Map(f.vars);
  const layerFns = new Map<string, number>();
  // Runs of non-layer statements between layer calls.
  const groups: ({ k: 'part'; body: CStmt[] } | { k: 'layer'; s: Extract<CStmt, { k: 'call' }> })[] = [];
  for (const s of f.body) {
    if (s.k === 'call' && s.callee.kind === 'layer') groups.push({ k: 'layer', s });
    else if (groups.at(-1)?.k === 'part') (groups.at(-1) as { body: CStmt[] }).body.push(s);
    else groups.push({ k: 'part', body: [s] });
  }
  const outputIds = new Set(f.outputs.map((o) => o.v));
  const readLater = (gi: number): Set<string> => {
    const out = new Set(outputIds);
    for (const g of groups.slice(gi + 1)) for (const s of g.k === 'part' ? g.body : [g.s]) for (const v of reads(s)) out.add(v);
    return out;
  };
  let part = 0;
  groups.forEach((g, gi) => {
    if (g.k === 'part') {
      const defined = new Set<string>();
      const params: CParam[] = [];
      const inputs = new Map<string, Source>();
      for (const s of g.body) {
        for (const id of reads(s)) {
          if (defined.has(id) || inputs.has(id)) continue;
          const cv = f.vars.get(id)!;
          const name = cv.role === 'weight' ? cv.path! : id;
          params.push({ name, dtype: cv.dtype, shape: cv.shape, v: id });
          inputs.set(name, cv.role === 'weight' ? { kind: 'weight', name: cv.path! } : { kind: 'var', id });
        }
        for (const id of writes(s)) defined.add(id);
      }
      const later = readLater(gi);
      const outs = [...defined].filter((id) => later.has(id));
      const outputs: CParam[] = outs.map((id) => { const cv = f.vars.get(id)!; return { name: id, dtype: cv.dtype, shape: cv.shape, v: id }; });
      const sizes = [...new Set([...params, ...outputs].flatMap((p) => p.shape.flatMap((d) => [...d.keys()].flatMap((m) => (m ? m.split('*') : [])))))].filter((a) => f.sizes.includes(a));
      fns.push({ name: `${safe(model.name)}_part${part++}`, span: g.body[0]!.span, sizes, params, outputs, vars: f.vars, body: g.body });
      steps.push({ fn: fns.length - 1, inputs, outputs: new Map(outs.map((id) => [id, id])) });
      return;
    }
    const layer = g.s.callee.kind === 'layer' ? g.s.callee.layer : undefined!;
    let fi = layerFns.get(layer.name);
    if (fi === undefined) {
      const lf = withWeightParams(layer.forward);
      fns.push({ ...lf, name: `${safe(model.name)}_${safe(layer.name)}` });
      fi = fns.length - 1;
      layerFns.set(layer.name, fi);
    }
    const lf = fns[fi]!;
    const n = layer.count ?? 1;
    const declared = layer.forward.params;
    let cur = g.s.args[0]!;
    for (let i = 0; i < n; i++) {
      const scope = layer.count === undefined ? `${layer.name}.` : `${layer.name}.${i}.`;
      const inputs = new Map<string, Source>();
      declared.forEach((p, j) => inputs.set(p.name, { kind: 'var', id: j === 0 ? cur : g.s.args[j]! }));
      for (const p of lf.params.slice(declared.length)) inputs.set(p.name, { kind: 'weight', name: scope + p.name });
      const out = i === n - 1 ? g.s.outs[0]! : `${g.s.outs[0]}@${scope}`;
      if (!vars.has(out)) vars.set(out, { ...f.vars.get(g.s.outs[0]!)!, id: out });
      steps.push({ fn: fi, inputs, outputs: new Map([[lf.outputs[0]!.name, out]]), scope });
      cur = out;
    }
  });
  return { model, fns, steps, params: f.params, outputs: f.outputs, vars };
}

/** Every weight the steps bind, with its shape (numbers: a model's weights have constant shapes). */
export function boundWeights(mp: ModelProgram): Map<string, { shape: Dim[]; dtype: CParam['dtype'] }> {
  const out = new Map<string, { shape: Dim[]; dtype: CParam['dtype'] }>();
  for (const st of mp.steps) {
    const fn = mp.fns[st.fn]!;
    for (const p of fn.params) {
      const src = st.inputs.get(p.name);
      if (src?.kind === 'weight') out.set(src.name, { shape: p.shape, dtype: p.dtype });
    }
  }
  return out;
}
