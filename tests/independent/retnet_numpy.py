#!/usr/bin/env python3
"""Torchscale-format RetNet checkpoints the model tests never saw, with float64 logits.

An independent RetNet in numpy, written from torchscale's RetNetDecoder (ARCHITECTURE.md
section 3, no score normaliser): embedding (optionally times sqrt(d), optionally RMSNorm),
pre-norm blocks x += MSR(RMSNorm(x)); x += GLU(RMSNorm(x)), final RMSNorm, output projection.
Retention is computed twice, in the parallel form with torchscale's row-normalised decay mask
and in the recurrent form with the running scale c_n = gamma c_{n-1} + 1; the two must agree
(to 1e-12) before a file is written. Random configs: widths, heads, value dims, FFN dims,
layers, vocab sizes, activations (swish, gelu), scale_embedding and layernorm_embedding, eps,
batch sizes and lengths.

usage: retnet_numpy.py OUT_DIR [--count N] [--seed S]
       retnet_numpy.py --check FIXTURE.safetensors...   (this RetNet vs torchscale's golden logits)
Writes OUT_DIR/case-K.safetensors (state_dict names, `tokens`, `logits.recurrent`,
`logits.parallel`; metadata `config` JSON as torchscale's RetNetConfig keyword arguments) and
prints one line per file.
"""
import json
import math
import os
import struct
import sys

import numpy as np

erf = np.vectorize(math.erf)


def rmsnorm(x, w, eps):
    y = x / np.sqrt((x * x).mean(-1, keepdims=True) + eps)
    return y * w if w is not None else y


def act(name, x):
    if name == "swish":
        return x / (1 + np.exp(-x))
    if name == "gelu":
        return 0.5 * x * (1 + erf(x / math.sqrt(2)))
    raise ValueError(name)


def theta_shift(x, kd, t0=0):
    """x [B, H, T, kd]: rotate interleaved pairs (2j, 2j+1) by n * 10000^(-j / (kd/2 - 1))."""
    T = x.shape[2]
    half = kd // 2
    angle = 1.0 / (10000 ** np.linspace(0, 1, half))
    angle = np.repeat(angle, 2)  # [kd], pairs share an angle
    n = np.arange(t0, t0 + T, dtype=np.float64)[:, None]
    sin, cos = np.sin(n * angle), np.cos(n * angle)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    rot = np.stack([-x2, x1], axis=-1).reshape(x.shape)  # rotate_every_two
    return x * cos + rot * sin


def msr_parallel(x, W, H, kd, vd, eps):
    B, T, _ = x.shape
    q = (x @ W["q"].T).reshape(B, T, H, kd).transpose(0, 2, 1, 3)
    k = (x @ W["k"].T).reshape(B, T, H, kd).transpose(0, 2, 1, 3) * kd ** -0.5
    v = (x @ W["v"].T).reshape(B, T, H, vd).transpose(0, 2, 1, 3)
    g = x @ W["g"].T
    q, k = theta_shift(q, kd), theta_shift(k, kd)
    decay = np.log(1 - 2.0 ** (-5 - np.arange(H, dtype=np.float64)))
    n = np.arange(T)
    dist = n[:, None] - n[None, :]
    mask = np.where(dist >= 0, np.exp(np.maximum(dist, 0)[None] * decay[:, None, None]), 0.0)  # [H, T, T]
    mask = mask / np.sqrt(mask.sum(-1, keepdims=True))
    o = ((q @ k.transpose(0, 1, 3, 2)) * mask[None]) @ v  # [B, H, T, vd]
    o = rmsnorm(o, None, eps)
    o = o.transpose(0, 2, 1, 3).reshape(B, T, H * vd)
    return (act("swish", g) * o) @ W["o"].T


def msr_recurrent(x, W, H, kd, vd, eps):
    B, T, _ = x.shape
    q = (x @ W["q"].T).reshape(B, T, H, kd).transpose(0, 2, 1, 3)
    k = (x @ W["k"].T).reshape(B, T, H, kd).transpose(0, 2, 1, 3) * kd ** -0.5
    v = (x @ W["v"].T).reshape(B, T, H, vd).transpose(0, 2, 1, 3)
    g = x @ W["g"].T
    q, k = theta_shift(q, kd), theta_shift(k, kd)
    gamma = 1 - 2.0 ** (-5 - np.arange(H, dtype=np.float64))
    S = np.zeros((B, H, kd, vd))
    c = np.zeros(H)
    out = np.zeros((B, H, T, vd))
    for t in range(T):
        S = gamma[None, :, None, None] * S + k[:, :, t, :, None] * v[:, :, t, None, :]
        c = gamma * c + 1
        out[:, :, t] = np.einsum("bhk,bhkv->bhv", q[:, :, t], S) / np.sqrt(c)[None, :, None]
    o = rmsnorm(out, None, eps).transpose(0, 2, 1, 3).reshape(B, T, H * vd)
    return (act("swish", g) * o) @ W["o"].T


def forward(cfg, W, tokens, msr):
    d, H = cfg["decoder_embed_dim"], cfg["decoder_retention_heads"]
    kd, vd = d // H, cfg["decoder_value_embed_dim"] // H
    eps = cfg["layernorm_eps"]
    x = W["embed_tokens.weight"][tokens]
    if not cfg["no_scale_embedding"]:
        x = x * math.sqrt(d)
    if cfg.get("layernorm_embedding"):
        x = rmsnorm(x, W["layernorm_embedding.weight"], eps)
    for i in range(cfg["decoder_layers"]):
        p = f"layers.{i}."
        lw = {s: W[f"{p}retention.{s}_proj.weight"] for s in ["q", "k", "v", "g"]}
        lw["o"] = W[f"{p}retention.out_proj.weight"]
        x = x + msr(rmsnorm(x, W[p + "retention_layer_norm.weight"], eps), lw, H, kd, vd, eps)
        h = rmsnorm(x, W[p + "final_layer_norm.weight"], eps)
        z = act(cfg["activation_fn"], h @ W[p + "ffn.fc1.weight"].T) * (h @ W[p + "ffn.gate.weight"].T)
        x = x + z @ W[p + "ffn.fc2.weight"].T
    return rmsnorm(x, W["layer_norm.weight"], eps) @ W["output_projection.weight"].T


def random_case(rng):
    H = int(rng.choice([1, 2, 3, 4]))
    kd = int(rng.choice([2, 4, 6, 8, 12, 16]))
    d = H * kd
    cfg = {
        "decoder_embed_dim": d,
        "decoder_value_embed_dim": H * int(rng.choice([2, 3, 5, 8, 12])),
        "decoder_retention_heads": H,
        "decoder_ffn_embed_dim": int(rng.integers(4, 80)),
        "decoder_layers": int(rng.integers(1, 4)),
        "activation_fn": str(rng.choice(["swish", "gelu"])),
        "vocab_size": int(rng.integers(5, 90)),
        "recurrent_chunk_size": int(rng.choice([4, 8, 16])),
        "layernorm_eps": float(rng.choice([1e-6, 1e-5])),
        "no_scale_embedding": bool(rng.integers(0, 2)),
        "layernorm_embedding": bool(rng.integers(0, 2)),
    }
    B, T = int(rng.integers(1, 4)), int(rng.integers(1, 41))
    d, dv, f, V = d, cfg["decoder_value_embed_dim"], cfg["decoder_ffn_embed_dim"], cfg["vocab_size"]
    W = {}

    def w(name, *shape, scale=None):
        s = scale if scale is not None else (2.0 / (shape[0] + shape[-1])) ** 0.5
        W[name] = (rng.standard_normal(shape) * s).astype(np.float32)

    w("embed_tokens.weight", V, d, scale=d ** -0.5)
    if cfg["layernorm_embedding"]:
        W["layernorm_embedding.weight"] = (1 + 0.1 * rng.standard_normal(d)).astype(np.float32)
    for i in range(cfg["decoder_layers"]):
        p = f"layers.{i}."
        w(p + "retention.q_proj.weight", d, d)
        w(p + "retention.k_proj.weight", d, d)
        w(p + "retention.v_proj.weight", dv, d)
        w(p + "retention.g_proj.weight", dv, d)
        w(p + "retention.out_proj.weight", d, dv)
        W[p + "retention_layer_norm.weight"] = (1 + 0.1 * rng.standard_normal(d)).astype(np.float32)
        w(p + "ffn.fc1.weight", f, d)
        w(p + "ffn.gate.weight", f, d)
        w(p + "ffn.fc2.weight", d, f)
        W[p + "final_layer_norm.weight"] = (1 + 0.1 * rng.standard_normal(d)).astype(np.float32)
    W["layer_norm.weight"] = (1 + 0.1 * rng.standard_normal(d)).astype(np.float32)
    w("output_projection.weight", V, d, scale=d ** -0.5)
    tokens = rng.integers(0, V, size=(B, T)).astype(np.int32)
    return cfg, W, tokens


def write_safetensors(path, tensors, metadata):
    header, blobs, off = {"__metadata__": metadata}, [], 0
    for name, a in tensors.items():
        dt = {np.dtype(np.float32): "F32", np.dtype(np.int32): "I32"}[a.dtype]
        b = np.ascontiguousarray(a).tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def read_safetensors(path):
    with open(path, "rb") as fh:
        raw = fh.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    dts = {"F32": np.float32, "I32": np.int32, "I64": np.int64, "F64": np.float64}
    out = {}
    for name, h in header.items():
        a, b = h["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=dts[h["dtype"]]).reshape(h["shape"])
    return out, meta


def check_fixture(path):
    """This numpy RetNet against a torchscale golden file (its logits.recurrent)."""
    t, meta = read_safetensors(path)
    cfg = json.loads(meta["config"])
    W = {k: v.astype(np.float64) for k, v in t.items()}
    want = t["logits.recurrent"].astype(np.float64)
    for name, msr in [("parallel", msr_parallel), ("recurrent", msr_recurrent)]:
        got = forward(cfg, W, t["tokens"], msr)
        rel = np.sqrt(((got - want) ** 2).mean() / (want ** 2).mean())
        print(f"{path}: numpy {name} form vs torchscale logits.recurrent: rel. RMSE {rel:.2e}")
        if not rel < 1e-6:
            sys.exit(1)


def main():
    args = sys.argv[1:]
    if args and args[0] == "--check":
        for f in args[1:]:
            check_fixture(f)
        return
    if not args:
        print(__doc__.strip().split("\n\n")[-2], file=sys.stderr)
        sys.exit(2)
    out = args[0]
    count = int(args[args.index("--count") + 1]) if "--count" in args else 6
    seed = int(args[args.index("--seed") + 1]) if "--seed" in args else 0
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(seed)
    for c in range(count):
        cfg, W, tokens = random_case(rng)
        W64 = {k: v.astype(np.float64) for k, v in W.items()}
        par = forward(cfg, W64, tokens, msr_parallel)
        rec = forward(cfg, W64, tokens, msr_recurrent)
        gap = np.sqrt(((par - rec) ** 2).mean() / (rec ** 2).mean())
        if not gap < 1e-12:
            print(f"case {c}: the parallel and recurrent forms disagree ({gap:.2e})", file=sys.stderr)
            sys.exit(1)
        tensors = dict(W)
        tensors["tokens"] = tokens
        tensors["logits.recurrent"] = rec.astype(np.float32)
        tensors["logits.parallel"] = par.astype(np.float32)
        path = os.path.join(out, f"case-{c}.safetensors")
        write_safetensors(path, tensors, {"config": json.dumps(cfg), "source": "tests/independent/retnet_numpy.py"})
        B, T = tokens.shape
        print(f"{path}: B={B} T={T} d={cfg['decoder_embed_dim']} heads={cfg['decoder_retention_heads']} "
              f"value_dim={cfg['decoder_value_embed_dim']} ffn={cfg['decoder_ffn_embed_dim']} layers={cfg['decoder_layers']} "
              f"act={cfg['activation_fn']} vocab={cfg['vocab_size']} scale_embedding={not cfg['no_scale_embedding']} "
              f"layernorm_embedding={cfg['layernorm_embedding']} eps={cfg['layernorm_eps']} (forms agree to {gap:.1e})")


if __name__ == "__main__":
    main()
