# Independent cross-check (not part of npm test): numpy float64 retention, its gradients by
# hand, against `retnetc run` for the reference and every CPU schedule. Needs python3-numpy.
# Run from any directory after `npm ci`:  python3 tests/independent/retention_numpy.py [cpu] [webgpu] [cuda]
import json, os, struct, subprocess, sys, tempfile, numpy as np
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.chdir(tempfile.mkdtemp())
def write_st(path, tensors):
    hdr = {}; off = 0; blobs = []
    for k, a in tensors.items():
        a = np.ascontiguousarray(a, dtype=np.float64); b = a.tobytes()
        hdr[k] = {"dtype": "F64", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}; off += len(b); blobs.append(b)
    h = json.dumps(hdr).encode(); h += b' ' * ((8 - len(h) % 8) % 8)
    open(path, 'wb').write(struct.pack('<Q', len(h)) + h + b''.join(blobs))
def read_st(path):
    b = open(path, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8+n]); out = {}
    for k, v in h.items():
        if k == '__metadata__': continue
        dt = {'F64': np.float64, 'F32': np.float32}[v['dtype']]; s, e = v['data_offsets']
        out[k] = np.frombuffer(b[8+n+s:8+n+e], dtype=dt).reshape(v['shape']).astype(np.float64)
    return out
rng = np.random.default_rng(7)
B, H, T, K, V = 3, 2, 77, 19, 23   # shapes no test uses
q = rng.standard_normal((B,H,T,K)); k = rng.standard_normal((B,H,T,K)); v = rng.standard_normal((B,H,T,V))
gamma = np.array([1 - 2**-5, 1 - 2**-20]); dO = rng.standard_normal((B,H,T,V))
n = np.arange(T); diff = n[:, None] - n[None, :]
D = np.where(diff >= 0, gamma[:, None, None] ** np.maximum(diff, 0), 0.0)      # [H, T, T]
S = np.einsum('bhti,bhsi->bhts', q, k); P = S * D[None]
o = P @ v
G = np.einsum('bhtj,bhsj->bhts', dO, v) * D[None]
dq = G @ k; dk = np.einsum('bhts,bhti->bhsi', G, q); dv = np.einsum('bhts,bhtj->bhsj', P, dO)
dD = np.where(diff > 0, diff * gamma[:, None, None] ** np.maximum(diff - 1, 0), 0.0)
dgamma = np.einsum('bhts,bhts,hts->h', S, np.einsum('bhtj,bhsj->bhts', dO, v), dD)
write_st('in.safetensors', {'q': q, 'k': k, 'v': v, 'gamma': gamma}); write_st('dout.safetensors', {'o': dO})
rel = lambda a, b: float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b ** 2)))
cli = ['node', os.path.join(ROOT, 'dist/runtime/cli/main.js'), 'run', os.path.join(ROOT, 'models/retention.ret'), '--fn', 'retention', '--inputs', 'in.safetensors', '--grad', 'dout.safetensors']
runs = [('reference', [])] + [(f'{t} {s} chunk {c}', ['--target', t, '--schedule', s, '--chunk', str(c)]) for t in sys.argv[1:] or ['cpu', 'webgpu'] for s, c in [('parallel', 16), ('recurrent', 64), ('chunkwise', 16), ('chunkwise', 64), ('chunkwise', 5)]]
for name, extra in runs:
    subprocess.run(cli + ['--out', 'out.safetensors'] + extra, check=True, stderr=subprocess.DEVNULL)
    r = read_st('out.safetensors')
    print(f"{name:26s} o {rel(r['o'], o):.2e}  dq {rel(r['grad.q'], dq):.2e}  dk {rel(r['grad.k'], dk):.2e}  dv {rel(r['grad.v'], dv):.2e}  dgamma {rel(r['grad.gamma'], dgamma):.2e}")
