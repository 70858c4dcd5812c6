import { parseSource } from '../dsl/parser.js';
import { SourceFile, formatDiagnostic } from '../dsl/source.js';
const src = new SourceFile('x.ret', `
# retention
fn retention(q: f32[B,H,T,K], k: f32[B,H,T,K], v: f32[B,H,T,V], gamma: f32[H]) -> o: f32[B,H,T,V] {
  o[b,h,t,j] = sum[s <= t, i] gamma[h]^(t - s) * q[b,h,t,i] * k[b,h,s,i] * v[b,h,s,j]
}
fn bad(x: f32[N]) -> y: f32[N] { y[n] = (x[n] + }
fn bad2(x: f33[N]) -> y: f32[N] { y[n] = x[n] }
`);
const r = parseSource(src);
console.log(JSON.stringify(r.ast.fns[0], (k, v) => k === 'span' || k==='nameSpan' ? undefined : v));
for (const d of r.diagnostics) console.log(formatDiagnostic(d, src));
