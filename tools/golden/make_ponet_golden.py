#!/usr/bin/env python3
"""Reference outputs of the `ponet` mixer: PoNet's multi-granularity pooling token mixer, transcribed in
float64 PyTorch from the paper's definition (Tan et al., "PoNet: Pooling Network for Efficient Token
Mixing in Long Sequences", ICLR 2022, section 3):

    Q, K, V, O, S, Lo = split(proj(tokens))            six dim-wide projections of every token
    global aggregation (GA), per head h of head_dim channels:
        g_h  = mean_t Q_h[t]                            the average-pooled query
        a_h  = softmax_t(<g_h, K_h[t]> / sqrt(head_dim))
        g'_h = Σ_t a_h[t] V_h[t]                        one query attending over the sequence
    segment max-pooling (SMP):  s[t] = max over t's segment of S         (per channel)
    local max-pooling (LMP):    l[t] = max_{|t' - t| <= k // 2} Lo[t']   (MaxPool1d(k, 1, k // 2))
    fusion:                     o[t] = O[t] ⊙ (g' + s[t]) + l[t]
    output:                     out_proj(o)

Segments follow the authors' LRA code (lxchtan/PoNet, examples/LRA/code/attention_ponet.py,
get_segment_index): `segments` segments of L // segments + 1 tokens each, the last one shorter. The
script checks itself against a transcription of that code's PoNetAttention.forward (its scatter_reduce
segment max and its MaxPool1d), which ties the GA's values to its keys (V = K) and takes O from W_v:
with V's weights set to K's the two must agree. (The paper's V has its own projection; so does this
mixer.) There is no padding mask: the engine's other sequence mixers have none either.

Writes into OUT_DIR:
  ponet_config.json        the mixer's options and the input's shape
  ponet_mixer.safetensors  proj.weight [6 dim, dim], proj.bias, out_proj.weight, out_proj.bias (float32)
  ponet_io.safetensors     input [B, L, dim], output, grad.cotangent, grad.input, grad.<param>

Usage: python3 make_ponet_golden.py OUT_DIR          (needs torch and safetensors)
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

DIM, HEADS, SEGMENTS, LOCAL = 8, 2, 4, 3
BATCH, LENGTH = 2, 37  # 4 segments of 10 tokens, the last of 7


def make_params(gen):
    p = {
        "proj.weight": torch.randn(6 * DIM, DIM, generator=gen, dtype=torch.float64) / math.sqrt(DIM),
        "proj.bias": 0.1 * torch.randn(6 * DIM, generator=gen, dtype=torch.float64),
        "out_proj.weight": torch.randn(DIM, DIM, generator=gen, dtype=torch.float64) / math.sqrt(DIM),
        "out_proj.bias": 0.1 * torch.randn(DIM, generator=gen, dtype=torch.float64),
    }
    return {k: v.float().double() for k, v in p.items()}


def segment_index(length, segments):
    seg_len = length // segments + 1
    return torch.arange(length) // seg_len


def ponet_fusion(Q, K, V, O, S, Lo):
    """The paper's pooling and fusion on [b, L, dim] projections."""
    b, L, d = Q.shape
    hd = d // HEADS
    heads = lambda t: t.view(b, L, HEADS, hd)
    g = heads(Q).mean(dim=1)                                              # [b, H, hd]
    a = torch.softmax(torch.einsum("bhc,blhc->bhl", g, heads(K)) / math.sqrt(hd), dim=-1)
    g2 = torch.einsum("bhl,blhc->bhc", a, heads(V)).reshape(b, 1, d)
    idx = segment_index(L, SEGMENTS)
    s = torch.empty_like(S)
    for seg in idx.unique():
        mask = idx == seg
        s[:, mask] = S[:, mask].amax(dim=1, keepdim=True)
    pad = torch.full((b, LOCAL // 2, d), -math.inf, dtype=Lo.dtype)
    padded = torch.cat([pad, Lo, pad], dim=1)
    l = torch.stack([padded[:, t:t + LOCAL].amax(dim=1) for t in range(L)], dim=1)
    return O * (g2 + s) + l


def mixer(p, tokens):
    proj = F.linear(tokens, p["proj.weight"], p["proj.bias"])
    Q, K, V, O, S, Lo = proj.split(DIM, dim=-1)
    return F.linear(ponet_fusion(Q, K, V, O, S, Lo), p["out_proj.weight"], p["out_proj.bias"])


def authors_attention(Q, K, O, local, segment, length):
    """A transcription of the authors' LRA PoNetAttention.forward without a mask (V = K)."""
    b = Q.shape[0]
    hd = DIM // HEADS
    split = lambda t: t.view(b, length, HEADS, hd).permute(0, 2, 1, 3)   # bdlh
    Qh, Kh, Oh = split(Q), split(K), split(O)
    q = Qh.mean(dim=-2)
    att = torch.einsum("bdh,bdlh -> bdl", q, Kh) / math.sqrt(hd)
    v = torch.einsum("bdlh,bdl->bdh", Kh, att.softmax(dim=-1))
    loc = F.max_pool1d(local.permute(0, 2, 1), LOCAL, stride=1, padding=LOCAL // 2).permute(0, 2, 1)
    index = segment_index(length, SEGMENTS).view(1, -1).repeat(b, 1)
    out = torch.zeros_like(segment).scatter_reduce(1, index.unsqueeze(-1).expand_as(segment), segment,
                                                   reduce="amax", include_self=False)
    seg = torch.gather(out, 1, index.unsqueeze(-1).expand(b, length, DIM))
    loc, seg = split(loc), split(seg)
    ctx = (v.unsqueeze(dim=-2) + seg) * Oh + loc
    return ctx.permute(0, 2, 1, 3).reshape(b, length, DIM)


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    gen = torch.Generator().manual_seed(1618)
    p = make_params(gen)
    tokens = torch.randn(BATCH, LENGTH, DIM, generator=gen, dtype=torch.float64).float().double()

    with torch.no_grad():  # cross-check: the paper's fusion against the authors' code, V tied to K
        proj = F.linear(tokens, p["proj.weight"], p["proj.bias"])
        Q, K, V, O, S, Lo = proj.split(DIM, dim=-1)
        mine = ponet_fusion(Q, K, K, O, S, Lo)
        theirs = authors_attention(Q, K, O, Lo, S, LENGTH)
        err = float((mine - theirs).abs().max() / mine.abs().max())
        print(f"paper's fusion vs the authors' LRA PoNetAttention (V = K): max relative difference {err:.3g}")
        assert err < 1e-12, "the transcription and the authors' code disagree"
        y = mixer(p, tokens)

    x = tokens.clone().requires_grad_(True)
    leaves = {k: v.clone().requires_grad_(True) for k, v in p.items()}
    g = torch.randn(y.shape, generator=gen, dtype=torch.float64).float().double()
    out = mixer(leaves, x)
    grads = torch.autograd.grad((out * g).sum(), [x] + list(leaves.values()))
    io = {"input": tokens, "output": y, "grad.cotangent": g, "grad.input": grads[0]}
    for name, gr in zip(leaves, grads[1:]):
        io["grad." + name] = gr
    assert all(math.isfinite(float(t.abs().max())) for t in io.values()), "non-finite reference output"
    save_file({k: v.float().contiguous() for k, v in p.items()}, os.path.join(out_dir, "ponet_mixer.safetensors"))
    save_file({k: v.float().contiguous() for k, v in io.items()}, os.path.join(out_dir, "ponet_io.safetensors"))
    options = {"type": "ponet", "head_dim": DIM // HEADS, "segments": SEGMENTS, "local_kernel": LOCAL}
    with open(os.path.join(out_dir, "ponet_config.json"), "w") as f:
        json.dump({"dim": DIM, "options": options, "batch": BATCH, "length": LENGTH, "torch": torch.__version__},
                  f, indent=1)
    for k, v in io.items():
        print(k, tuple(v.shape), f"max |.| {float(v.abs().max()):.4g}")


if __name__ == "__main__":
    main()
