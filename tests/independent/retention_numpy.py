#!/usr/bin/env python3
# Independent cross-check of retention, retention_state and gated retention: numpy float64
# (the parallel form with an explicit decay mask, gradients derived by hand, both confirmed
# here against a numpy recurrence and numpy finite differences) against `retnetc run` on the
# targets reference (the literal float64 interpreter), cpu (the kernel-IR executor, float32)
# and webgpu (Dawn, float32), forward and backward (--grad), every schedule.
#
# Nothing here comes from the project's code: the inputs go in as safetensors files written
# by this script, the results come back the same way.
#
# Bars (relative RMSE, RMS(got - want) / RMS(want), per tensor):
#   reference vs numpy  <= 1e-12   (both float64)
#   cpu, webgpu vs numpy <= 1e-5   (float32 kernels; ARCHITECTURE.md section 5)
# Any tensor over its bar, any non-finite value, or any failed `retnetc run` makes the exit
# status 1, with one line per failure at the end.
#
# Usage (after `npm ci` / `npx tsc -p tsconfig.build.json`, from any directory):
#   python3 tests/independent/retention_numpy.py [--targets reference,cpu,webgpu] [--cases small,big] [--jobs N] [--webgpu-optional]
# tests/independent.test.ts runs it under vitest.
import argparse, json, os, shutil, struct, subprocess, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI = os.path.join(ROOT, 'dist', 'runtime', 'cli', 'main.js')
BAR = {'reference': 1e-12, 'cpu': 1e-5, 'webgpu': 1e-5, 'cuda': 1e-5}


# ---- safetensors ---------------------------------------------------------------------------
def write_st(path, tensors):
    hdr, off, blobs = {}, 0, []
    for name, a in tensors.items():
        b = np.ascontiguousarray(a, dtype='<f8').tobytes()
        hdr[name] = {'dtype': 'F64', 'shape': list(np.shape(a)), 'data_offsets': [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(hdr).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)) + h + b''.join(blobs))


def read_st(path):
    b = open(path, 'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    out = {}
    for name, v in json.loads(b[8:8 + n]).items():
        if name == '__metadata__':
            continue
        dt = {'F64': '<f8', 'F32': '<f4'}[v['dtype']]
        s, e = v['data_offsets']
        out[name] = np.frombuffer(b[8 + n + s:8 + n + e], dtype=dt).reshape(v['shape']).astype(np.float64)
    return out


# ---- numpy float64 truth ---------------------------------------------------------------------
def causal_core(q, k, v, D, dO):
    """o = ((q k^T) * D) v with D the (masked) decay matrix [., H, T, T]; the gradients of q, k,
    v and A = dL/d(log D) (elementwise sensitivity of the loss to each decay weight)."""
    S = np.einsum('bhti,bhsi->bhts', q, k)
    P = S * D
    o = P @ v
    dP = np.einsum('bhtj,bhsj->bhts', dO, v)
    W = dP * D
    dq = W @ k
    dk = np.einsum('bhts,bhti->bhsi', W, q)
    dv = np.einsum('bhts,bhtj->bhsj', P, dO)
    return o, dq, dk, dv, dP * S, D


def retention_np(x, up, state):
    q, k, v, gamma = x['q'], x['k'], x['v'], x['gamma']
    T = q.shape[2]
    n = np.arange(T)
    d = n[:, None] - n[None, :]                                    # t - s
    g = gamma[:, None, None]
    D = np.where(d >= 0, g ** np.maximum(d, 0), 0.0)[None]         # gamma^(t-s) [s <= t]
    dD = np.where(d > 0, d * g ** np.maximum(d - 1, 0), 0.0)[None]  # d gamma^(t-s) / d gamma
    o, dq, dk, dv, dPS, _ = causal_core(q, k, v, D, up['o'])
    dgamma = np.einsum('bhts,hts->h', dPS, dD[0])
    out = {'o': o}
    if state:
        s0, dO, dsT = x['s0'], up['o'], up['sT']
        gh = gamma[None, :, None, None]
        pw = gamma[:, None] ** (n + 1)[None, :]                    # gamma^(t+1)  [H, T]
        o = o + pw[None, :, :, None] * np.einsum('bhti,bhij->bhtj', q, s0)
        tail = gamma[:, None] ** (T - 1 - n)[None, :]              # gamma^(T-1-s) [H, T]
        sT = gh ** T * s0 + np.einsum('hs,bhsi,bhsj->bhij', tail, k, v)
        out = {'o': o, 'sT': sT}
        dq = dq + pw[None, :, :, None] * np.einsum('bhtj,bhij->bhti', dO, s0)
        dk = dk + tail[None, :, :, None] * np.einsum('bhij,bhsj->bhsi', dsT, v)
        dv = dv + tail[None, :, :, None] * np.einsum('bhsi,bhij->bhsj', k, dsT)
        ds0 = np.einsum('ht,bhti,bhtj->bhij', pw, q, dO) + gh ** T * dsT
        dpw = (n + 1)[None, :] * gamma[:, None] ** n[None, :]       # d gamma^(t+1)
        dtail = np.where(n < T - 1, (T - 1 - n)[None, :] * gamma[:, None] ** np.maximum(T - 2 - n, 0)[None, :], 0.0)
        dgamma = (dgamma + np.einsum('ht,bhti,bhij,bhtj->h', dpw, q, s0, dO)
                  + T * gamma ** (T - 1) * np.einsum('bhij,bhij->h', s0, dsT)
                  + np.einsum('hs,bhsi,bhij,bhsj->h', dtail, k, dsT, v))
        return out, {'grad.q': dq, 'grad.k': dk, 'grad.v': dv, 'grad.gamma': dgamma, 'grad.s0': ds0}
    return out, {'grad.q': dq, 'grad.k': dk, 'grad.v': dv, 'grad.gamma': dgamma}


def gated_np(x, up):
    q, k, v, g = x['q'], x['k'], x['v'], x['g']
    T = q.shape[2]
    G = np.cumsum(g, axis=2)                                       # [B, H, T]
    mask = np.tril(np.ones((T, T), dtype=bool))
    E = np.where(mask, G[..., :, None] - G[..., None, :], -np.inf)  # G[t] - G[s], s <= t
    D = np.exp(E)
    o, dq, dk, dv, dPS, _ = causal_core(q, k, v, D, up['o'])
    A = dPS * D                                                    # dL / d(G[t] - G[s])
    dG = A.sum(axis=3) - A.sum(axis=2)
    dg = np.flip(np.cumsum(np.flip(dG, 2), 2), 2)                  # dG[t]/dg[u] = [u <= t]
    return {'o': o}, {'grad.q': dq, 'grad.k': dk, 'grad.v': dv, 'grad.g': dg}


def recurrent_np(x, decay_of):
    """The recurrence S_t = a_t S_{t-1} + k_t^T v_t, o_t = q_t S_t (a self-check of the mask form)."""
    q, k, v = x['q'], x['k'], x['v']
    B, H, T, K = q.shape
    S = x['s0'].copy() if 's0' in x else np.zeros((B, H, K, v.shape[3]))
    o = np.zeros(v.shape)
    for t in range(T):
        S = decay_of(t)[..., None, None] * S + np.einsum('bhi,bhj->bhij', k[:, :, t], v[:, :, t])
        o[:, :, t] = np.einsum('bhi,bhij->bhj', q[:, :, t], S)
    return o, S


FUNCS = {
    'retention': ('models/retention.ret', lambda x, up: retention_np(x, up, False)),
    'retention_state': ('models/retention.ret', lambda x, up: retention_np(x, up, True)),
    'gated_retention': ('models/gated_retention.ret', gated_np),
}


def f32(a):
    """Inputs are rounded to float32, so the float32 targets and numpy see the same numbers."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def make_case(fn, B, H, T, K, V, seed):
    rng = np.random.default_rng(seed)
    x = {'q': f32(rng.uniform(-1, 1, (B, H, T, K))), 'k': f32(rng.uniform(-1, 1, (B, H, T, K))),
         'v': f32(rng.uniform(-1, 1, (B, H, T, V)))}
    if fn in ('retention', 'retention_state'):
        x['gamma'] = f32([[1 - 2 ** -5, 1 - 2 ** -20, 0.5, 0.9][h % 4] for h in range(H)])
    if fn == 'retention_state':
        x['s0'] = f32(rng.uniform(-1, 1, (B, H, K, V)))
    if fn == 'gated_retention':
        u = rng.uniform(0, 1, (B, H, T))
        x['g'] = f32(np.where(u < 0.2, 0.0, np.log(0.5 + 0.5 * rng.uniform(0, 1, (B, H, T)))))  # log gates, some exactly 0
    up = {'o': f32(rng.uniform(-1, 1, (B, H, T, V)))}
    if fn == 'retention_state':
        up['sT'] = f32(rng.uniform(-1, 1, (B, H, K, V)))
    return x, up


def rel(a, b):
    den = np.sqrt(np.mean(b ** 2))
    num = np.sqrt(np.mean((a - b) ** 2))
    return float(num / den) if den > 0 else float(num)


failures = []


def fail(msg):
    failures.append(msg)
    print('FAIL ' + msg, flush=True)


def self_check():
    """The numpy truth itself: the mask form against the recurrence, and the hand-derived
    gradients against central finite differences of the numpy forward (float64)."""
    worst = 0.0
    for fn, (B, H, T, K, V) in [('retention', (2, 3, 13, 3, 4)), ('retention_state', (2, 3, 11, 4, 3)), ('gated_retention', (2, 2, 12, 3, 5))]:
        x, up = make_case(fn, B, H, T, K, V, 99)
        ref = FUNCS[fn][1]
        out, grads = ref(x, up)
        if fn == 'gated_retention':
            ro, rS = recurrent_np(x, lambda t: np.exp(x['g'][:, :, t]))
        else:
            ro, rS = recurrent_np(x, lambda t: x['gamma'][None, :])
        e = rel(out['o'], ro)
        if fn == 'retention_state':
            e = max(e, rel(out['sT'], rS))
        if not e <= 1e-13:
            fail(f'numpy self-check {fn}: mask form vs recurrence {e:.2e} > 1e-13')
        rng = np.random.default_rng(5)
        loss = lambda xx: sum(float(np.sum(up[nm] * o)) for nm, o in ref(xx, up)[0].items())
        for p in x:
            for trial in range(3):
                u = rng.standard_normal(x[p].shape)
                h = 1e-6 * max(1.0, float(np.max(np.abs(x[p]))))
                if p == 'gamma':
                    h = 1e-7                                        # a polynomial of degree T - 1 in gamma: a smaller step
                xp = dict(x); xp[p] = x[p] + h * u
                xm = dict(x); xm[p] = x[p] - h * u
                fd = (loss(xp) - loss(xm)) / (2 * h)
                ad = float(np.sum(grads['grad.' + p] * u))
                e = abs(ad - fd) / max(abs(fd), 1e-300)
                worst = max(worst, e)
                if not e <= 1e-6:
                    fail(f'numpy self-check {fn}: <grad.{p}, u> = {ad!r} but finite differences give {fd!r} (relative {e:.2e} > 1e-6)')
    print(f'numpy self-check: mask form = recurrence, gradients = finite differences (worst relative {worst:.1e})', flush=True)


def run_cli(workdir, fn, target, schedule, chunk):
    out = os.path.join(workdir, f'out.{target}.{schedule}.{chunk}.safetensors')
    cmd = ['node', CLI, 'run', os.path.join(ROOT, FUNCS[fn][0]), '--fn', fn, '--inputs', os.path.join(workdir, 'in.safetensors'),
           '--grad', os.path.join(workdir, 'dout.safetensors'), '--out', out, '--target', target]
    if schedule:
        cmd += ['--schedule', schedule]
    if chunk is not None:
        cmd += ['--chunk', str(chunk)]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.time() - t0
    if r.returncode != 0:
        lines = [l for l in r.stderr.splitlines() if 'error' in l] or r.stderr.splitlines()[-1:] or ['(no message)']
        return None, dt, f'exit {r.returncode}: {lines[0]}'
    return read_st(out), dt, None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--targets', default='reference,cpu,webgpu')
    ap.add_argument('--cases', default='small,big')
    ap.add_argument('--jobs', type=int, default=2)
    ap.add_argument('--webgpu-optional', action='store_true', help='skip webgpu (with the reason) when it has no adapter')
    args = ap.parse_args()
    targets = args.targets.split(',')
    unknown = [t for t in targets if t not in BAR]
    if unknown:
        print(f'FAIL unknown target(s) {unknown} (expected some of {list(BAR)})', flush=True)
        return 1
    kinds = args.cases.split(',')
    if not os.path.exists(CLI):
        print(f'FAIL {CLI} is missing: build it with npx tsc -p tsconfig.build.json', flush=True)
        return 1
    self_check()

    # Schedules as (form, chunk); the recurrent form takes no chunk. Chunks 5 and 16 do not
    # divide the T of any case, 64 only where said.
    P16, P32, P64, R, C5, C16, C32, C64 = (('parallel', 16), ('parallel', 32), ('parallel', 64), ('recurrent', None),
                                           ('chunkwise', 5), ('chunkwise', 16), ('chunkwise', 32), ('chunkwise', 64))
    # (function, B, H, T, K, V, reference?, cpu schedules, webgpu schedules). Small shapes, with
    # T not a multiple of the chunk and K != V: the reference runs only there (it is O(T^2 K V)).
    # Big: torchscale's head sizes K = 256, V = 432 (several workgroups along V) and K = V = 128,
    # T = 130 and 70: two or one full chunks of 64 and a partial one, eight or four chunks of 16
    # and a partial one (four chunks of 32 and a partial one). WebGPU on lavapipe compiles every
    # kernel of a plan per run, so it gets fewer schedules per case where
    # webgpu-schedules.test.ts already covers the rest, and its big retention cases take the
    # kernel shapes of that file's fixed cases (K, V, chunk = 256, 432, 64 and 128, 128, 32):
    # kernels depend on K, V and the chunk only, and Mesa's shader disk cache (on by default)
    # compiles each of them once for both files. A chunkwise plan at K = 256, V = 432 is the
    # costliest compile of the suite (minutes of CPU on lavapipe): webgpu runs chunk 16 there for
    # retention_state and gated retention, chunk 64 (shared) for retention.
    cases = [
        ('retention', 3, 2, 77, 19, 23, True, [P16, R, C16, C5], [P16, R, C16]),
        ('retention_state', 2, 3, 45, 7, 11, True, [P16, R, C16], [R, C5]),
        ('retention_state', 1, 2, 1, 3, 4, True, [C64], [P16]),
        ('gated_retention', 2, 3, 50, 9, 5, True, [P16, R, C16], [C16, P16]),
        ('retention', 1, 2, 130, 256, 432, False, [P64, R, C64, C16], [P64, R, C64]),
        ('retention', 1, 2, 130, 128, 128, False, [P64, R, C64], [P32, R, C32]),
        ('retention_state', 1, 2, 70, 256, 432, False, [P64, R, C64], [R, C16]),
        ('gated_retention', 1, 2, 70, 256, 432, False, [P64, R, C64], [P64, C16]),
    ]
    root = tempfile.mkdtemp(prefix='retention_numpy.')
    try:
        return run_cases(cases, kinds, targets, root, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_cases(cases, kinds, targets, root, args):
    if 'webgpu' in targets:
        # One tiny run first: a machine without a WebGPU adapter says so in one line.
        wd = os.path.join(root, 'probe')
        os.makedirs(wd)
        x, up = make_case('retention', 1, 1, 1, 1, 1, 0)
        write_st(os.path.join(wd, 'in.safetensors'), x)
        write_st(os.path.join(wd, 'dout.safetensors'), up)
        _, _, err = run_cli(wd, 'retention', 'webgpu', 'recurrent', None)
        if err and args.webgpu_optional:
            print(f'skipping webgpu: {err}', flush=True)
            targets = [t for t in targets if t != 'webgpu']
        elif err:
            fail(f'webgpu probe (retention, all sizes 1): retnetc run failed, {err}')
    jobs = []
    truth = {}
    for ci, (fn, B, H, T, K, V, with_ref, cpu_sched, gpu_sched) in enumerate(cases):
        if ('small' if with_ref else 'big') not in kinds:
            continue
        x, up = make_case(fn, B, H, T, K, V, 1000 + ci)
        out, grads = FUNCS[fn][1](x, up)
        wd = os.path.join(root, f'case{ci}')
        os.makedirs(wd)
        write_st(os.path.join(wd, 'in.safetensors'), x)
        write_st(os.path.join(wd, 'dout.safetensors'), up)
        truth[ci] = {**out, **grads}
        label = f'{fn} B={B} H={H} T={T} K={K} V={V}'
        for t in targets:
            if t == 'reference':
                if with_ref:
                    jobs.append((ci, label, wd, fn, t, None, None))
            else:
                jobs.extend((ci, label, wd, fn, t, s, c) for s, c in (gpu_sched if t == 'webgpu' else cpu_sched))

    worst = {}

    def one(job):
        ci, label, wd, fn, t, s, c = job
        return job, run_cli(wd, fn, t, s, c)

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for (ci, label, wd, fn, t, s, c), (got, dt, err) in pool.map(one, jobs):
            name = f'{label} {t}' + (f' {s}' if s else '') + (f' chunk {c}' if c else '')
            if err:
                fail(f'{name}: retnetc run failed, {err}')
                continue
            parts = []
            for tn, want in truth[ci].items():
                if tn not in got:
                    fail(f'{name}: no {tn} in the output')
                    continue
                if got[tn].shape != want.shape:
                    fail(f'{name}: {tn} has shape {list(got[tn].shape)}, numpy {list(want.shape)}')
                    continue
                nonfinite = int(np.sum(~np.isfinite(got[tn])))
                e = rel(got[tn], want)
                parts.append(f'{tn} {e:.1e}')
                key = (fn, t, tn)
                worst[key] = max(worst.get(key, 0.0), e)
                if nonfinite or not e <= BAR[t]:
                    fail(f'{name}: {tn} relative RMSE {e:.3e} > {BAR[t]:.0e}' + (f' ({nonfinite} non-finite values)' if nonfinite else ''))
            print(f'{name:60s} {dt:5.1f}s  ' + '  '.join(parts), flush=True)

    print('worst relative RMSE per (function, target, tensor):')
    for (fn, t, tn), e in sorted(worst.items()):
        print(f'  {fn:16s} {t:9s} {tn:11s} {e:.2e}  (bar {BAR[t]:.0e})')
    if failures:
        print(f'{len(failures)} failure(s):')
        for f in failures:
            print('  ' + f)
        return 1
    print(f'all {len(jobs)} runs within their bars')
    return 0


if __name__ == '__main__':
    sys.exit(main())
