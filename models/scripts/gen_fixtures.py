#!/usr/bin/env python3
"""Golden fixtures for uqa-models: forward parity of every encoder, and forward + backward parity
of the whole Trm++ pre-training model, against independent PyTorch implementations.

The PyTorch side uses torch's own building blocks wherever one exists, so that the two
implementations share as little as possible: nn.TransformerEncoderLayer for SASRec,
F.scaled_dot_product_attention(is_causal=True) for Trm++ (as ../shared/bench/encoder_step.py),
nn.GRU for GRU4Rec, nn.EmbeddingBag(mode="mean") for the text bags, F.conv1d for Mamba's causal
depthwise convolution, and the official HSTU code's relative-bias construction. Everything runs
in float64 so the Rust side can compare to 1e-9.

Each fixture is one JSON file in models/tests/fixtures/: the encoder config (uqa's TOML/JSON
shape), weights under uqa's variable names, inputs, and expected outputs.

Usage (torch 2.4.1, numpy):  python models/scripts/gen_fixtures.py
Last run: 2026-11-22, torch 2.4.1 (CPU), Python 3.11; seed 0, so reruns reproduce the files.
"""
import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
B, T = 2, 5
LENGTHS = [5, 3]


def t2j(t):
    return {"shape": list(t.shape), "data": t.detach().reshape(-1).tolist()}


def randn(*shape, std=0.3):
    return torch.randn(*shape) * std


def mask():
    return (torch.arange(T)[None, :] < torch.tensor(LENGTHS)[:, None]).double()


def save(name, config, weights, x, y, extra=None):
    os.makedirs(OUT, exist_ok=True)
    doc = {
        "config": config,
        "weights": {k: t2j(v) for k, v in weights.items()},
        "lengths": LENGTHS,
        "x": t2j(x),
        "y": t2j(y),
    }
    doc.update(extra or {})
    with open(os.path.join(OUT, name + ".json"), "w") as f:
        json.dump(doc, f)
    print(f"wrote {name}: output {tuple(y.shape)}")


# ---------------------------------------------------------------- Trm++ (encoder_step.py)
def rms(x, w, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, base=10000.0):
    hd = x.shape[-1]
    inv = 1.0 / base ** (torch.arange(0, hd, 2).double() / hd)
    ang = torch.outer(torch.arange(x.shape[-2]).double(), inv)
    ang = torch.cat([ang, ang], -1)
    half = hd // 2
    rot = torch.cat([-x[..., half:], x[..., :half]], -1)
    return x * ang.cos() + rot * ang.sin()


def trmpp(w, x, layers, heads):
    b, t, d = x.shape
    for i in range(layers):
        p = f"layers.{i}."
        y = rms(x, w[p + "norm1.weight"])
        q, k, v = (
            (y @ w[p + f"attn.{n}.weight"].T).view(b, t, heads, -1).transpose(1, 2)
            for n in "qkv"
        )
        a = F.scaled_dot_product_attention(rope(q), rope(k), v, is_causal=True)
        x = x + a.transpose(1, 2).reshape(b, t, d) @ w[p + "attn.o.weight"].T
        y = rms(x, w[p + "norm2.weight"])
        g = F.silu(y @ w[p + "mlp.gate.weight"].T) * (y @ w[p + "mlp.up.weight"].T)
        x = x + g @ w[p + "mlp.down.weight"].T
    return x


def trmpp_weights(layers, d, hidden):
    w = {}
    for i in range(layers):
        p = f"layers.{i}."
        w[p + "norm1.weight"] = 1 + randn(d, std=0.1)
        w[p + "norm2.weight"] = 1 + randn(d, std=0.1)
        for n in "qkvo":
            w[p + f"attn.{n}.weight"] = randn(d, d)
        w[p + "mlp.gate.weight"] = randn(hidden, d)
        w[p + "mlp.up.weight"] = randn(hidden, d)
        w[p + "mlp.down.weight"] = randn(d, hidden)
    return w


def fixture_trmpp():
    cfg = {"kind": "trmpp", "layers": 2, "width": 8, "heads": 2, "dropout": 0.0}
    w = trmpp_weights(2, 8, 256)  # round_up(int(8/3 * 8), 256) = 256
    x = randn(B, T, 8, std=1.0)
    save("trmpp", cfg, w, x, trmpp(w, x, 2, 2))


# ---------------------------------------------------------------- SASRec (nn.TransformerEncoderLayer)
def fixture_sasrec():
    d, heads, ffn, layers, max_len = 8, 2, 12, 2, 7
    cfg = {"kind": "sasrec", "layers": layers, "width": d, "heads": heads, "ffn": ffn,
           "dropout": 0.0, "max_len": max_len}
    torch_layers = [nn.TransformerEncoderLayer(d, heads, ffn, dropout=0.0, batch_first=True)
                    for _ in range(layers)]
    final = nn.LayerNorm(d)
    pos = randn(max_len, d)
    w = {"pos": pos}
    for i, lyr in enumerate(torch_layers):
        for prm in lyr.parameters():
            nn.init.normal_(prm, std=0.3)
        p = f"layers.{i}."
        qkv_w, qkv_b = lyr.self_attn.in_proj_weight, lyr.self_attn.in_proj_bias
        for j, n in enumerate("qkv"):
            w[p + f"attn.{n}.weight"] = qkv_w[j * d:(j + 1) * d]
            w[p + f"attn.{n}.bias"] = qkv_b[j * d:(j + 1) * d]
        w[p + "attn.o.weight"] = lyr.self_attn.out_proj.weight
        w[p + "attn.o.bias"] = lyr.self_attn.out_proj.bias
        w[p + "norm1.weight"], w[p + "norm1.bias"] = lyr.norm1.weight, lyr.norm1.bias
        w[p + "ffn1.weight"], w[p + "ffn1.bias"] = lyr.linear1.weight, lyr.linear1.bias
        w[p + "ffn2.weight"], w[p + "ffn2.bias"] = lyr.linear2.weight, lyr.linear2.bias
        w[p + "norm2.weight"], w[p + "norm2.bias"] = lyr.norm2.weight, lyr.norm2.bias
    nn.init.normal_(final.weight, 1.0, 0.1)
    nn.init.normal_(final.bias, 0.0, 0.1)
    w["final_norm.weight"], w["final_norm.bias"] = final.weight, final.bias
    x = randn(B, T, d, std=1.0)
    causal = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
    pad = mask() == 0
    h = x + pos[:T]
    with torch.no_grad():
        for lyr in torch_layers:
            lyr.eval()
            h = lyr(h, src_mask=causal, src_key_padding_mask=pad)
        y = final(h)
    save("sasrec", cfg, w, x, y)


# ---------------------------------------------------------------- HSTU (official formulation)
def hstu(w, x, ts, layers, heads, dv, dqk, max_len, buckets, compat):
    b, n, d = x.shape
    valid = mask()
    for i in range(layers):
        p = f"layers.{i}."
        normed = F.layer_norm(x, [d], eps=1e-6)
        uvqk = F.silu(normed @ w[p + "uvqk.weight"].T + w[p + "uvqk.bias"])
        u, v, q, k = torch.split(uvqk, [heads * dv, heads * dv, heads * dqk, heads * dqk], -1)
        q = q.view(b, n, heads, dqk)
        k = k.view(b, n, heads, dqk)
        qk = torch.einsum("bnhd,bmhd->bhnm", q, k)
        if not compat:
            # Official RelativeBucketedTimeAndPositionBasedEncoder, position part, built for
            # N = max_len (the official code always pads to the maximum length) ...
            N = max_len
            t = F.pad(w[p + "pos_w"][: 2 * N - 1], [0, N]).repeat(N)
            t = t[..., :-N].reshape(1, N, 3 * N - 2)
            r = (2 * N - 1) // 2
            qk = qk + t[:, :, r:-r][:, :n, :n].unsqueeze(1)
            # ... and time part: query time = next timestamp (the last valid uses its own).
            if ts is not None:
                tq = ts.clone()
                for row, ln in enumerate(LENGTHS):
                    tq[row, : ln - 1] = ts[row, 1:ln]
                    tq[row, ln - 1:] = ts[row, ln - 1:]
                gap = (tq[:, :, None] - ts[:, None, :]).abs().clamp(min=1)
                bucket = (torch.log(gap.double()) / 0.301).long().clamp(max=buckets)
                qk = qk + w[p + "ts_w"][bucket].unsqueeze(1)
        allowed = torch.tril(torch.ones(n, n)) * valid[:, None, None, :]
        div = max_len if compat else torch.arange(1, n + 1).double()[None, None, :, None]
        a = F.silu(qk) * allowed / div
        av = torch.einsum("bhnm,bmhd->bnhd", a, v.view(b, n, heads, dv)).reshape(b, n, heads * dv)
        y = u * F.layer_norm(av, [heads * dv], eps=1e-6)
        x = x + y @ w[p + "o.weight"].T + w[p + "o.bias"]
    return x


def fixture_hstu(compat):
    layers, d, heads, dv, dqk, max_len, buckets = 2, 8, 2, 3, 4, 7, 40
    cfg = {"kind": "hstu", "layers": layers, "width": d, "heads": heads, "linear_dim": dv,
           "attention_dim": dqk, "dropout": 0.0, "max_len": max_len, "time_buckets": buckets,
           "reference_compat": compat}
    w = {}
    for i in range(layers):
        p = f"layers.{i}."
        w[p + "uvqk.weight"] = randn(2 * heads * (dv + dqk), d)
        w[p + "uvqk.bias"] = randn(2 * heads * (dv + dqk))
        w[p + "o.weight"] = randn(d, heads * dv)
        w[p + "o.bias"] = randn(d)
        w[p + "pos_w"] = randn(2 * max_len - 1)
        w[p + "ts_w"] = randn(buckets + 1)
    x = randn(B, T, d, std=1.0)
    ts = torch.tensor([[0, 1, 30, 900, 86_400], [0, 5, 500, 0, 0]], dtype=torch.int64)
    y = hstu(w, x, None if compat else ts, layers, heads, dv, dqk, max_len, buckets, compat)
    extra = {} if compat else {"timestamps": ts.reshape(-1).tolist()}
    save("hstu_compat" if compat else "hstu", cfg, w, x, y, extra)


# ---------------------------------------------------------------- GRU4Rec (nn.GRU)
def fixture_gru4rec():
    layers, d, hidden = 2, 6, 5
    cfg = {"kind": "gru4rec", "layers": layers, "width": d, "hidden": hidden, "dropout": 0.0}
    gru = nn.GRU(d, hidden, num_layers=layers, batch_first=True)
    out, norm = nn.Linear(hidden, d), nn.LayerNorm(d)
    nn.init.normal_(norm.weight, 1.0, 0.1)
    nn.init.normal_(norm.bias, 0.0, 0.1)
    w = {}
    for i in range(layers):
        for ours, theirs in [("w_ih", "weight_ih"), ("w_hh", "weight_hh"),
                             ("b_ih", "bias_ih"), ("b_hh", "bias_hh")]:
            w[f"layers.{i}.{ours}"] = getattr(gru, f"{theirs}_l{i}")
    w["out.weight"], w["out.bias"] = out.weight, out.bias
    w["norm.weight"], w["norm.bias"] = norm.weight, norm.bias
    x = randn(B, T, d, std=1.0)
    with torch.no_grad():
        y = norm(out(gru(x)[0]))
    save("gru4rec", cfg, w, x, y)


# ---------------------------------------------------------------- Mamba4Rec (selective_scan_ref)
def mamba4rec(w, x, layers, e, n, r, k):
    b, t, d = x.shape
    for i in range(layers):
        p = f"layers.{i}."
        h = rms(x, w[p + "norm.weight"])
        xz = h @ w[p + "mixer.in_proj.weight"].T
        xs, z = xz[..., :e], xz[..., e:]
        conv = F.conv1d(xs.transpose(1, 2), w[p + "mixer.conv_w"][:, None, :],
                        w[p + "mixer.conv_b"], padding=k - 1, groups=e)[..., :t]
        xs = F.silu(conv.transpose(1, 2))
        dbc = xs @ w[p + "mixer.x_proj.weight"].T
        dt = F.softplus(dbc[..., :r] @ w[p + "mixer.dt_proj.weight"].T + w[p + "mixer.dt_proj.bias"])
        bm, cm = dbc[..., r:r + n], dbc[..., r + n:]
        a_log = w[p + "mixer.a_log"] + torch.log(torch.arange(1, n + 1).double())[None, :]
        a = -torch.exp(a_log)
        s = torch.zeros(b, e, n)
        ys = []
        for step in range(t):
            s = torch.exp(dt[:, step, :, None] * a) * s \
                + (dt[:, step] * xs[:, step])[:, :, None] * bm[:, step, None, :]
            ys.append((s * cm[:, step, None, :]).sum(-1))
        y = torch.stack(ys, 1) + xs * w[p + "mixer.d"]
        x = x + (y * F.silu(z)) @ w[p + "mixer.out_proj.weight"].T
    return rms(x, w["final_norm.weight"])


def fixture_mamba4rec():
    layers, d, n, k, expand, r = 2, 4, 3, 3, 2, 1
    e = expand * d
    cfg = {"kind": "mamba4rec", "layers": layers, "width": d, "d_state": n, "d_conv": k,
           "expand": expand, "dt_rank": r, "dropout": 0.0}
    w = {"final_norm.weight": 1 + randn(d, std=0.1)}
    for i in range(layers):
        p = f"layers.{i}."
        w[p + "norm.weight"] = 1 + randn(d, std=0.1)
        w[p + "mixer.in_proj.weight"] = randn(2 * e, d, std=0.5)
        w[p + "mixer.conv_w"] = randn(e, k, std=0.5)
        w[p + "mixer.conv_b"] = randn(e)
        w[p + "mixer.x_proj.weight"] = randn(r + 2 * n, e, std=0.5)
        w[p + "mixer.dt_proj.weight"] = randn(e, r, std=0.5)
        w[p + "mixer.dt_proj.bias"] = randn(e, std=1.0) - 2.0
        w[p + "mixer.a_log"] = randn(e, n, std=0.2)
        w[p + "mixer.d"] = 1 + randn(e, std=0.1)
        w[p + "mixer.out_proj.weight"] = randn(d, e, std=0.5)
    x = randn(B, T, d, std=1.0)
    save("mamba4rec", cfg, w, x, mamba4rec(w, x, layers, e, n, r, k))


# ---------------------------------------------------------------- Full Trm++ pre-training step
VOCAB = {"items": 23, "cates": 5, "brands": 7, "shops": 6, "sellers": 6, "tokens": 17}


def fixture_pretrain():
    """Embedder (EmbeddingBag mean) -> Trm++ -> head -> tied full-softmax CE: loss and grads."""
    g = torch.Generator().manual_seed(3)
    item_dim, side_dim, d, layers, heads = 4, 3, 8, 1, 2
    ids = []
    for vocab in ["items", "cates", "brands", "shops", "sellers"]:
        col = torch.randint(1, VOCAB[vocab], (B, T), generator=g)
        ids.append(col * mask().long())
    bags = []
    for _ in range(5):
        flat, offsets = [], [0]
        for row in range(B):
            for pos in range(T):
                if pos < LENGTHS[row]:
                    n = int(torch.randint(0, 4, (1,), generator=g))
                    flat += torch.randint(0, VOCAB["tokens"], (n,), generator=g).tolist()
                offsets.append(len(flat))
        bags.append((flat, offsets))
    tables = {"item": (VOCAB["items"], item_dim), "cate": (VOCAB["cates"], side_dim),
              "brand": (VOCAB["brands"], side_dim), "shop": (VOCAB["shops"], side_dim),
              "seller": (VOCAB["sellers"], side_dim), "tokens": (VOCAB["tokens"], side_dim)}
    params = {f"embedder.{k}": randn(*s, std=0.5) for k, s in tables.items()}
    concat = item_dim + 9 * side_dim
    params["embedder.proj.weight"] = randn(d, concat)
    params["embedder.proj.bias"] = randn(d)
    params.update({f"encoder.{k}": v for k, v in trmpp_weights(layers, d, 256).items()})
    params["head.weight"] = randn(item_dim, d)
    params["head.bias"] = randn(item_dim)
    for v in params.values():
        v.requires_grad_(True)
    P = params
    feats = [F.embedding(ids[0], P["embedder.item"])]
    for j, name in enumerate(["cate", "brand", "shop", "seller"]):
        feats.append(F.embedding(ids[j + 1], P[f"embedder.{name}"]))
    for flat, offsets in bags:
        pooled = F.embedding_bag(torch.tensor(flat, dtype=torch.long), P["embedder.tokens"],
                                 torch.tensor(offsets[:-1], dtype=torch.long), mode="mean")
        feats.append(pooled.view(B, T, side_dim))
    x = torch.cat(feats, -1) @ P["embedder.proj.weight"].T + P["embedder.proj.bias"]
    enc = {k[len("encoder."):]: v for k, v in P.items() if k.startswith("encoder.")}
    h = trmpp(enc, x, layers, heads) @ P["head.weight"].T + P["head.bias"]
    labels = torch.full((B, T), -100, dtype=torch.long)
    for row, ln in enumerate(LENGTHS):
        labels[row, : ln - 1] = ids[0][row, 1:ln]
    logits = h.reshape(B * T, item_dim) @ P["embedder.item"].T
    loss_sum = F.cross_entropy(logits, labels.reshape(-1), ignore_index=-100, reduction="sum")
    count = int((labels != -100).sum())
    (loss_sum / count).backward()
    cfg = {"embedder": {"variant": "full", "item_dim": item_dim, "side_dim": side_dim},
           "encoder": {"kind": "trmpp", "layers": layers, "width": d, "heads": heads,
                       "dropout": 0.0},
           "objective": {"kind": "next-item", "chunk": 5}}
    doc = {
        "config": cfg,
        "vocab": VOCAB,
        "lengths": LENGTHS,
        "seq_len": T,
        "ids": [c.reshape(-1).tolist() for c in ids],
        "bags": [{"ids": f, "offsets": o} for f, o in bags],
        "weights": {k: t2j(v) for k, v in P.items()},
        "grads": {k: t2j(v.grad) for k, v in P.items()},
        "loss_sum": float(loss_sum),
        "count": count,
    }
    with open(os.path.join(OUT, "pretrain_trmpp.json"), "w") as f:
        json.dump(doc, f)
    print(f"wrote pretrain_trmpp: loss {float(loss_sum) / count:.6f} over {count} labels")


if __name__ == "__main__":
    torch.manual_seed(0)
    fixture_trmpp()
    fixture_sasrec()
    fixture_hstu(False)
    fixture_hstu(True)
    fixture_gru4rec()
    fixture_mamba4rec()
    fixture_pretrain()
