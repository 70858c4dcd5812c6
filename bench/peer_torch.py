#!/usr/bin/env python3
"""The peer of `npm run bench`: PyTorch eager at the bench's shapes, in the same run.

    python3 bench/peer_torch.py SPEC.json OUT.json

SPEC.json (written by bench/run.ts) lists cases; each names a safetensors file of inputs (the
same random tensors retnetc times) and, optionally, a file to write this peer's outputs to, so
that the bench checks each retnetc result against them. OUT.json gets one record per case:
{"id", "status": "ok", "median_ms", "min_ms", "max_ms", "n", "first_ms"} or
{"id", "status": "skipped", "reason"}. Timing: one warm-up run, then the median of N runs.

Retention is computed as torchscale and flash-linear-attention's reference code compute it:
  parallel  - scores (Q K^T) times the decay mask D[n, m] = gamma^(n - m) [m <= n], then (.) V;
  chunkwise - chunk C = 64: inside a chunk the parallel form, across chunks the K x V state
              (all chunks' contributions at once, a loop over chunk states, then all outputs);
  recurrent - one position at a time, S = gamma S + k^T v, o = q S.
No row normaliser (ARCHITECTURE.md section 3: retnetc does not apply it; all forms are then the
same function). The tiny RetNet is written here as a PyTorch module following ARCHITECTURE.md
section 3 and loads the bench's weights by torchscale's names.

Without torch the output says so (every case skipped with the reason) and the exit code is 0.
"""
import json
import math
import os
import struct
import sys
import time

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
    TORCH_ERROR = None
except Exception as e:  # noqa: BLE001 - any import failure means: no peer
    TORCH_ERROR = f"{type(e).__name__}: {e}"


# ---- safetensors (the format retnetc reads and writes), F32 / I32 only ------------------------

def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        dt = {"F32": np.float32, "I32": np.int32, "F64": np.float64}[t["dtype"]]
        arr = np.frombuffer(data[a:b], dtype=dt).reshape(t["shape"]).copy()
        out[name] = torch.from_numpy(arr)
    return out


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        a = t.detach().contiguous().cpu()
        if a.dtype == torch.float64:
            a = a.float()
        b = a.numpy().tobytes()
        header[name] = {"dtype": "I32" if a.dtype == torch.int32 else "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# ---- timing -------------------------------------------------------------------------------------

def timed(fn, reps, opts):
    """One warm-up run (its time is first_ms), then the median of `reps` runs, more for short cases
    (min_ms of them, at most max_short_reps: bench/run.ts runCount), within budget_ms. A warm-up
    longer than the whole budget is the one measurement (n = 1, warmup_only)."""
    budget_ms = opts["budget_ms"]
    t0 = time.perf_counter()
    fn()
    first = (time.perf_counter() - t0) * 1e3
    if first >= budget_ms:
        return {"status": "ok", "first_ms": first, "median_ms": first, "min_ms": first, "max_ms": first, "n": 1, "warmup_only": True}
    per = max(first, 1e-3)
    n = max(1, min(max(reps, min(opts["max_short_reps"], int(opts["min_ms"] // per))), int(budget_ms // per)))
    ms = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t0) * 1e3)
    ms.sort()
    med = ms[len(ms) // 2] if len(ms) % 2 else (ms[len(ms) // 2 - 1] + ms[len(ms) // 2]) / 2
    return {"status": "ok", "first_ms": first, "median_ms": med, "min_ms": ms[0], "max_ms": ms[-1], "n": n}


# ---- retention, three forms (torchscale / fla reference style) ---------------------------------

def decay_mask(gamma, T):
    """D[h, n, m] = gamma_h^(n - m) for m <= n, else 0; exponent never negative (log domain)."""
    n = torch.arange(T, dtype=torch.float32)
    diff = n[:, None] - n[None, :]
    lg = torch.log(gamma.double()).float()[:, None, None]
    return torch.where(diff >= 0, torch.exp(lg * diff.clamp(min=0)), torch.zeros(()))


def retention_parallel(q, k, v, gamma):
    T = q.shape[2]
    return ((q @ k.transpose(-1, -2)) * decay_mask(gamma, T)) @ v


def retention_chunkwise(q, k, v, gamma, C=64, s0=None, return_state=False):
    B, H, T, K = q.shape
    V = v.shape[-1]
    pad = (-T) % C
    if pad:
        z = lambda x: F.pad(x, (0, 0, 0, pad))  # zeros after the end change no earlier output
        q, k, v = z(q), z(k), z(v)
    N = (T + pad) // C
    qc, kc, vc = (x.reshape(B, H, N, C, x.shape[-1]) for x in (q, k, v))
    lg = torch.log(gamma.double()).float().view(1, H, 1, 1, 1)
    i = torch.arange(C, dtype=torch.float32).view(1, 1, 1, C, 1)
    inner = ((qc @ kc.transpose(-1, -2)) * decay_mask(gamma, C).view(1, H, 1, C, C)) @ vc
    # State contribution of every chunk at once: K_c^T (V_c * gamma^(C-1-j)).
    kv = (kc * torch.exp(lg * (C - 1 - i))).transpose(-1, -2) @ vc  # [B, H, N, K, V]
    gC = torch.exp(lg.view(1, H, 1, 1) * C)
    S = s0 if s0 is not None else torch.zeros(B, H, K, V)
    states = []
    for c in range(N):
        states.append(S)
        S = gC * S + kv[:, :, c]
    prev = torch.stack(states, dim=2)  # [B, H, N, K, V]: the state before each chunk
    cross = (qc * torch.exp(lg * (i + 1))) @ prev
    o = (inner + cross).reshape(B, H, N * C, V)[:, :, :T]
    return (o, S) if return_state else o


def retention_chunkwise_state(q, k, v, gamma, C=64, s0=None):
    """Chunkwise with the final state: whole chunks, then the partial last chunk step by step."""
    T = q.shape[2]
    full = T - T % C
    if full == T:
        return retention_chunkwise(q, k, v, gamma, C, s0, True)
    if full == 0:
        return retention_recurrent(q, k, v, gamma, s0, True)
    o1, S = retention_chunkwise(q[:, :, :full], k[:, :, :full], v[:, :, :full], gamma, C, s0, True)
    o2, S = retention_recurrent(q[:, :, full:], k[:, :, full:], v[:, :, full:], gamma, S, True)
    return torch.cat((o1, o2), dim=2), S


def retention_recurrent(q, k, v, gamma, s0=None, return_state=False):
    B, H, T, K = q.shape
    V = v.shape[-1]
    g = gamma.view(1, H, 1, 1)
    S = s0 if s0 is not None else torch.zeros(B, H, K, V)
    outs = []
    for t in range(T):
        S = g * S + k[:, :, t, :, None] * v[:, :, t, None, :]
        outs.append((q[:, :, t, None, :] @ S)[:, :, 0])
    o = torch.stack(outs, dim=2)
    return (o, S) if return_state else o


RETENTION = {"parallel": retention_parallel, "chunkwise": retention_chunkwise, "recurrent": retention_recurrent}


def retention_memory(form, direction, B, H, T, K, V):
    """Bytes the eager form holds at its peak (roughly): what decides a skip."""
    f = 4
    if form == "parallel":
        return f * B * H * T * T * (3 if direction == "fwd" else 6)
    if form == "recurrent":
        return f * B * H * K * V * (2 if direction == "fwd" else 3 * T)
    return f * (B * H * (T // 64 + 1) * K * V * 3 + B * H * T * 64 * 4)


def run_retention(case, opts):
    form, direction = case["form"], case["dir"]
    B, H, T, K, V = (case[x] for x in "BHTKV")
    need = retention_memory(form, direction, B, H, T, K, V)
    if need > opts["mem_cap"]:
        return {"status": "skipped", "reason": f"needs ~{need / 2**30:.1f} GiB (cap {opts['mem_cap'] / 2**30:.1f} GiB): the eager {form} form holds {'T x T scores' if form == 'parallel' else 'every step of the state for autograd'}"}
    if form == "recurrent" and T * (1 if direction == "fwd" else 3) > opts["max_recurrent_steps"]:
        return {"status": "skipped", "reason": f"a Python loop of {T} steps{' with autograd' if direction != 'fwd' else ''} exceeds the step cap {opts['max_recurrent_steps']}"}
    key, units = f"{form}.{direction}", (B * H * T * (T + 64) * (K + V) / 2 if form == "parallel" else B * H * T * K * V)
    seen = COST.get(key)
    if seen and seen[1] * units / seen[0] > opts["cap_ms"]:
        return {"status": "skipped", "reason": f"estimated {seen[1] * units / seen[0] / 1000:.1f} s per run > cap {opts['cap_ms'] / 1000:.1f} s (scaled from a smaller case)"}
    x = read_safetensors(case["input"])
    q, k, v, gamma = x["q"], x["k"], x["v"], x["gamma"]
    f = (lambda *a: retention_chunkwise(*a, C=CHUNK)) if form == "chunkwise" else RETENTION[form]
    out = {}
    if direction == "fwd":
        def once():
            with torch.no_grad():
                out["o"] = f(q, k, v, gamma)
    else:
        do = x["do"]
        def once():
            qq, kk, vv = (t.clone().requires_grad_(True) for t in (q, k, v))
            o = f(qq, kk, vv, gamma)
            o.backward(do)
            out.update({"o": o.detach(), "grad.q": qq.grad, "grad.k": kk.grad, "grad.v": vv.grad})
    r = timed(once, opts["reps"], opts)
    if not seen or units >= seen[0]:
        COST[key] = (units, r["median_ms"])
    if case.get("ref_out"):
        write_safetensors(case["ref_out"], out)
        r["ref_out"] = case["ref_out"]
    return r


COST = {}  # (form.dir) -> (units, ms) of the largest case measured: the estimate of the next


def run_matmul(case, opts):
    x = read_safetensors(case["input"])
    a, w = x["x"], x["w"]
    a2 = a.reshape(-1, a.shape[-1])
    out = {}
    def once():
        out["y"] = torch.matmul(a2, w.t()).reshape(*a.shape[:-1], w.shape[0])
    r = timed(once, opts["reps"], opts)
    r["gflops"] = 2 * a2.shape[0] * a2.shape[1] * w.shape[0] / (r["median_ms"] * 1e6)
    if case.get("ref_out"):
        write_safetensors(case["ref_out"], out)
        r["ref_out"] = case["ref_out"]
    return r


# ---- the RetNet as a PyTorch module (ARCHITECTURE.md section 3) ---------------------------------

class RetNet(torch.nn.Module if TORCH_ERROR is None else object):
    def __init__(self, hp, weights):
        super().__init__()
        self.hp = hp
        self.d = hp["embed_dim"]
        self.H = hp["heads"]
        self.dk = self.d // self.H
        self.dv = hp["value_dim"] // self.H
        self.L = hp["n_layers"]
        self.eps = hp["eps"]
        self.act = F.silu if hp["act"] == "swish" else F.gelu
        self.w = torch.nn.ParameterDict({n.replace(".", "__"): torch.nn.Parameter(t.float().clone()) for n, t in weights.items()})
        j = torch.arange(self.dk // 2, dtype=torch.float64)
        self.theta = (10000.0 ** (-j / max(self.dk // 2 - 1, 1))).repeat_interleave(2)  # per dim, pairs share
        h = torch.arange(self.H, dtype=torch.float64)
        self.gamma64 = 1 - 2.0 ** (-5 - h)
        self.gamma = self.gamma64.float()

    def W(self, name):
        return self.w[name.replace(".", "__")]

    def rms(self, x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w

    def rotate(self, x, t0):
        T = x.shape[2]
        ang = (torch.arange(T, dtype=torch.float64) + t0)[:, None] * self.theta[None, :]
        cos, sin = ang.cos().float(), ang.sin().float()
        x2 = x.reshape(*x.shape[:-1], -1, 2)
        rot = torch.stack((-x2[..., 1], x2[..., 0]), dim=-1).reshape(x.shape)  # (-x_{2j+1}, x_{2j})
        return x * cos + rot * sin

    def msr(self, x, p, mode, state, t0):
        B, T, _ = x.shape
        H, dk, dv = self.H, self.dk, self.dv
        q = (x @ self.W(p + "retention.q_proj.weight").t()).view(B, T, H, dk).transpose(1, 2)
        k = (x @ self.W(p + "retention.k_proj.weight").t()).view(B, T, H, dk).transpose(1, 2) * dk ** -0.5
        v = (x @ self.W(p + "retention.v_proj.weight").t()).view(B, T, H, dv).transpose(1, 2)
        g = x @ self.W(p + "retention.g_proj.weight").t()
        q, k = self.rotate(q, t0), self.rotate(k, t0)
        new_state = None
        if mode == "parallel" and state is None:
            r = retention_parallel(q, k, v, self.gamma)
        elif mode == "recurrent":
            r, new_state = retention_recurrent(q, k, v, self.gamma, s0=state, return_state=True)
        else:
            r, new_state = retention_chunkwise_state(q, k, v, self.gamma, CHUNK, s0=state)
        # row n divided by sqrt(c_n), c_n = sum_{s <= t0 + n} gamma^s (float64, closed form)
        n = torch.arange(T, dtype=torch.float64) + t0
        gm = self.gamma64[:, None]
        c = (1 - gm ** (n[None, :] + 1)) / (1 - gm)
        o = r / c.sqrt().float()[None, :, :, None]
        o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + self.eps)
        o = o.transpose(1, 2).reshape(B, T, H * dv)
        y = (F.silu(g) * o) @ self.W(p + "retention.out_proj.weight").t()
        return y, new_state

    def forward(self, tokens, mode="parallel", states=None, t0=0):
        x = self.W("embed_tokens.weight")[tokens.long()]
        if self.hp.get("scale_embedding"):
            x = x * math.sqrt(self.d)
        if self.hp.get("layernorm_embedding"):
            x = self.rms(x, self.W("layernorm_embedding.weight"))
        out_states = []
        for l in range(self.L):
            p = f"layers.{l}."
            m, s = self.msr(self.rms(x, self.W(p + "retention_layer_norm.weight")), p, mode, None if states is None else states[l], t0)
            out_states.append(s)
            h = x + m
            hn = self.rms(h, self.W(p + "final_layer_norm.weight"))
            z = self.act(hn @ self.W(p + "ffn.fc1.weight").t()) * (hn @ self.W(p + "ffn.gate.weight").t())
            x = h + z @ self.W(p + "ffn.fc2.weight").t()
        logits = self.rms(x, self.W("layer_norm.weight")) @ self.W("output_projection.weight").t()
        return logits, out_states


def run_retnet(case, opts):
    w = read_safetensors(case["weights"])
    x = read_safetensors(case["input"])
    model = RetNet(case["hypers"], {n: t for n, t in w.items()})
    tokens, mode = x["tokens"], case["form"]
    out = {}
    if case["dir"] == "fwd":
        def once():
            with torch.no_grad():
                out["logits"] = model(tokens, mode)[0]
    else:
        dl = x["dlogits"]
        def once():
            model.zero_grad(set_to_none=True)
            logits = model(tokens, mode)[0]
            logits.backward(dl)
            out["logits"] = logits.detach()
            for n, prm in model.w.items():
                out["grad." + n.replace("__", ".")] = prm.grad if prm.grad is not None else torch.zeros_like(prm)
    r = timed(once, opts["reps"], opts)
    if case.get("ref_out"):
        write_safetensors(case["ref_out"], out)
        r["ref_out"] = case["ref_out"]
    return r


def run_decode(case, opts):
    """Prefill (chunkwise, state carried) to each context length, then time one decode step there."""
    w = read_safetensors(case["weights"])
    x = read_safetensors(case["input"])
    model = RetNet(case["hypers"], w)
    prompt, step = x["prompt"], x["step"]
    results, refs = [], {}
    states, t0 = None, 0
    with torch.no_grad():
        for L in case["contexts"]:
            if L > t0:
                _, states = model(prompt[:, t0:L], "chunkwise", states, t0)
                t0 = L
            def once():
                refs[f"logits.{L}"] = model(step, "recurrent", states, t0)[0]
            r = timed(once, opts["reps_decode"], opts)
            r["context"] = L
            results.append(r)
    r = {"status": "ok", "points": results}
    if case.get("ref_out"):
        write_safetensors(case["ref_out"], refs)
        r["ref_out"] = case["ref_out"]
    return r


CHUNK = 64  # the chunk of the chunkwise forms: the bench's (spec "chunk")
KINDS = {"retention": run_retention, "matmul": run_matmul, "retnet": run_retnet, "decode": run_decode}


def main():
    spec = json.load(open(sys.argv[1]))
    out_path = sys.argv[2]
    global CHUNK
    CHUNK = spec.get("chunk", 64)
    opts = {"reps": spec.get("reps", 5), "reps_decode": spec.get("reps_decode", 20), "budget_ms": spec.get("budget_ms", 10000),
            "min_ms": spec.get("min_ms", 0), "max_short_reps": spec.get("max_short_reps", 50),
            "mem_cap": spec.get("mem_cap_bytes", 6 * 2**30), "max_recurrent_steps": spec.get("max_recurrent_steps", 50000),
            "cap_ms": spec.get("cap_ms", 6000)}
    res = {"available": TORCH_ERROR is None, "cases": {}}
    if TORCH_ERROR is not None:
        res["reason"] = f"PyTorch is not importable ({TORCH_ERROR}); install Debian's python3-torch and libopenblas0-pthread"
        json.dump(res, open(out_path, "w"))
        return
    torch.set_num_threads(spec.get("threads") or os.cpu_count() or 1)
    cfg = torch.__config__.show()
    res["torch"] = torch.__version__
    res["threads"] = torch.get_num_threads()
    blas = next((w.split("=", 1)[1] for w in cfg.replace(",", " ").split() if w.startswith("BLAS_INFO=")), "unknown")
    alt = "/etc/alternatives/libblas.so.3-x86_64-linux-gnu"
    res["blas"] = f"BLAS_INFO={blas}" + (f" -> {os.path.realpath(alt)}" if os.path.exists(alt) else "")
    res["python"] = sys.version.split()[0]
    for case in spec["cases"]:
        t0 = time.perf_counter()
        try:
            r = KINDS[case["kind"]](case, opts)
        except Exception as e:  # noqa: BLE001 - one case's failure is that case's result
            r = {"status": "error", "reason": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
        res["cases"][case["id"]] = r
        what = f"{r['median_ms']:.2f} ms (n={r['n']})" if r.get("status") == "ok" and "median_ms" in r else r.get("status") + (": " + r["reason"] if "reason" in r else "")
        print(f"[peer] {case['id']}: {what} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
        json.dump(res, open(out_path, "w"))  # after every case: a crash keeps what was measured
    json.dump(res, open(out_path, "w"))


if __name__ == "__main__":
    main()
