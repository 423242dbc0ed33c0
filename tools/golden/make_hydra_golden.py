#!/usr/bin/env python3
"""Reference outputs of the `hydra` mixer: Hydra's bidirectional (quasiseparable) SSM, transcribed in
float64 PyTorch from the paper's definition (Hwang et al., "Hydra: Bidirectional State Space Models
Through Generalized Matrix Mixers", 2024), with the engine's selective SSM (Mamba's S6: a diagonal A
per channel and state, input-dependent dt, B, C) as its semiseparable part:

    QS(X) = shift(SS(X; dt_f, B_f, C_f)) + flip(shift(SS(flip(X); flip dt_b, flip B_b, flip C_b))) + diag(δ) X

    SS's matrix: SS[i, j] = Σ_n C[i, n] exp(Σ_{k=j+1..i} dt[k] A[n]) B[j, n] dt[j]   for j <= i, else 0
    shift: moves the rows down by one (row 0 becomes zero): shift(M)[i] = M[i - 1]
    δ[t]:  fc_D(u[t]) + D, one value per head of `headdim` channels (Hydra's input-dependent diagonal)

Here SS is built as an explicit L x L matrix per channel (the paper's matrix-mixer view), a code path
independent of the engine's recurrences. The mixer around it follows the authors' Hydra module
(goombalab/hydra, hydra/modules/hydra.py) where the S6 form allows:

    x, z   = split(in_proj(tokens))                     Di channels each
    u      = SiLU(conv1d(x))                            depthwise, kernel K (odd), padding K // 2: not causal
    dt_in, B_f, C_f, B_b, C_b = split(x_proj(u))        R, N, N, N, N
    dt_f, dt_b = split(softplus(dt_proj(dt_in)))        Di each (the two directions' step sizes)
    A      = -exp(A_log)                                [Di, N], shared by the two directions
    q      = QS(u) per channel
    y      = out_proj(RMSNorm(q) * norm.weight * SiLU(z))   Hydra's gated RMSNorm, norm_before_gate=True

Differences from the authors' module, all deliberate (the engine reuses Mamba-1's S6 scan): their
SSD (Mamba-2) scan has one scalar A per head and takes B, C and dt from in_proj (B and C through the
conv); here A is diagonal per channel and B, C, dt come from x_proj(u) as in Mamba-1. The quasiseparable
structure (two shifted scans sharing every projection, flip, the input-dependent diagonal
x * (fc_D(x) + D) per head, the gated RMSNorm) is theirs. The script also checks its matrix form against
a transcription of the authors' roll/flip code path (their torch.roll + flip on a batch of both
directions, with a plain sequential scan in place of mamba_chunk_scan_combined).

Writes into OUT_DIR:
  hydra_config.json        the mixer's options and the input's shape
  hydra_mixer.safetensors  the mixer's parameters, the engine's names and shapes (float32)
  hydra_io.safetensors     input [B, L, dim], output [B, L, dim], grad.cotangent, grad.input,
                           grad.<param> (the gradients of sum(output * cotangent))

Usage: python3 make_hydra_golden.py OUT_DIR          (needs torch and safetensors)
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

DIM, INNER, STATE, RANK, KERNEL, HEADDIM = 8, 16, 4, 2, 5, 4
BATCH, LENGTH = 2, 40  # longer than the C++ test's scan chunk of 16, so chunk edges are crossed
EPS = 1e-5


def make_params(gen):
    def rnd(*shape, scale=1.0):
        return scale * torch.randn(*shape, generator=gen, dtype=torch.float64)

    heads = INNER // HEADDIM
    dt = 0.05 + 0.45 * torch.rand(2 * INNER, generator=gen, dtype=torch.float64)
    p = {
        "in_proj.weight": rnd(2 * INNER, DIM, scale=1 / math.sqrt(DIM)),
        "in_proj.bias": rnd(2 * INNER, scale=0.1),
        "conv1d.weight": rnd(INNER, 1, 1, KERNEL, scale=1 / math.sqrt(KERNEL)),
        "conv1d.bias": rnd(INNER, scale=0.1),
        "x_proj.weight": rnd(RANK + 4 * STATE, INNER, scale=1 / math.sqrt(INNER)),
        "dt_proj.weight": rnd(2 * INNER, RANK, scale=1 / math.sqrt(RANK)),
        "dt_proj.bias": dt + torch.log(-torch.expm1(-dt)),  # softplus(bias) in [0.05, 0.5]
        "A_log": torch.log(0.3 + 3.7 * torch.rand(INNER, STATE, generator=gen, dtype=torch.float64)),
        "fc_D.weight": rnd(heads, INNER, scale=0.5 / math.sqrt(INNER)),
        "D": 1.0 + 0.5 * rnd(heads),
        "norm.weight": 1.0 + 0.2 * rnd(INNER),
        "out_proj.weight": rnd(DIM, INNER, scale=1 / math.sqrt(INNER)),
        "out_proj.bias": rnd(DIM, scale=0.1),
    }
    return {k: v.float().double() for k, v in p.items()}  # the float32 file holds exactly these


def ss_matrix(dt, A, B, C):
    """The semiseparable matrix of a selective SSM, per batch and channel: [b, d, i, j].
    dt [b, L, d], A [d, n], B and C [b, L, n]."""
    L = dt.shape[1]
    cum = torch.cumsum(dt[..., None] * A, dim=1)                       # [b, L, d, n]: Σ_{k<=t} dt[k] A
    seg = cum[:, :, None] - cum[:, None, :]                            # [b, i, j, d, n]: Σ_{k=j+1..i}
    lower = torch.tril(torch.ones(L, L, dtype=torch.bool))[None, :, :, None, None]
    decay = torch.exp(torch.where(lower, seg, torch.full_like(seg, -math.inf)))
    m = torch.einsum("bin,bijdn,bjn,bjd->bdij", C, decay, B, dt)
    return m


def shift(y):  # y [b, L, d]: row t takes row t - 1, row 0 is zero
    return torch.cat([torch.zeros_like(y[:, :1]), y[:, :-1]], dim=1)


def ss_apply(dt, A, B, C, u):
    return torch.einsum("bdij,bjd->bid", ss_matrix(dt, A, B, C), u)


def quasiseparable(u, dt_f, dt_b, A, Bf, Cf, Bb, Cb, delta):
    fl = lambda t: torch.flip(t, (1,))
    fwd = shift(ss_apply(dt_f, A, Bf, Cf, u))
    bwd = fl(shift(ss_apply(fl(dt_b), A, fl(Bb), fl(Cb), fl(u))))
    return fwd + bwd + u * delta


def sequential_scan(x, dt, A, B, C):
    """h[t] = exp(dt[t] A) h[t-1] + dt[t] B[t] x[t]; y[t] = <h[t], C[t]> (a plain loop)."""
    b, L, d = x.shape
    h = torch.zeros(b, d, A.shape[1], dtype=x.dtype)
    ys = []
    for t in range(L):
        h = torch.exp(dt[:, t, :, None] * A) * h + dt[:, t, :, None] * B[:, t, None, :] * x[:, t, :, None]
        ys.append((h * C[:, t, None, :]).sum(-1))
    return torch.stack(ys, dim=1)


def authors_structure(u, dt_f, dt_b, A, Bf, Cf, Bb, Cb, delta):
    """The roll/flip path of the authors' Hydra.forward, with a sequential scan for their SSD kernel."""
    batch = u.shape[0]
    x = torch.cat((u, torch.flip(u, (1,))), dim=0)
    dt = torch.cat((dt_f, torch.flip(dt_b, (1,))), dim=0)
    B = torch.cat((Bf, torch.flip(Bb, (1,))), dim=0)
    C = torch.cat((Cf, torch.flip(Cb, (1,))), dim=0)
    y = sequential_scan(x, dt, A, B, C)
    y = torch.roll(y, shifts=1, dims=1)
    y[:, 0, :] = 0.0
    return y[:batch] + torch.flip(y[batch:], (1,)) + u * delta


def mixer(p, tokens, check_authors=False):
    Di, N, R = INNER, STATE, RANK
    xz = F.linear(tokens, p["in_proj.weight"], p["in_proj.bias"])
    x, z = xz[..., :Di], xz[..., Di:]
    conv = F.conv1d(x.transpose(1, 2), p["conv1d.weight"].view(Di, 1, KERNEL), p["conv1d.bias"],
                    padding=KERNEL // 2, groups=Di).transpose(1, 2)
    u = F.silu(conv)
    bc = F.linear(u, p["x_proj.weight"])
    dt = F.softplus(F.linear(bc[..., :R], p["dt_proj.weight"], p["dt_proj.bias"]))
    dt_f, dt_b = dt[..., :Di], dt[..., Di:]
    Bf, Cf, Bb, Cb = (bc[..., R + k * N:R + (k + 1) * N] for k in range(4))
    A = -torch.exp(p["A_log"])
    delta = torch.repeat_interleave(F.linear(u, p["fc_D.weight"]) + p["D"], HEADDIM, dim=-1)
    q = quasiseparable(u, dt_f, dt_b, A, Bf, Cf, Bb, Cb, delta)
    if check_authors:
        q2 = authors_structure(u, dt_f, dt_b, A, Bf, Cf, Bb, Cb, delta)
        err = float((q - q2).abs().max() / q.abs().max())
        print(f"matrix form vs the authors' roll/flip structure: max relative difference {err:.3g}")
        assert err < 1e-12, "the matrix form and the authors' structure disagree"
    normed = q * torch.rsqrt(q.pow(2).mean(-1, keepdim=True) + EPS) * p["norm.weight"]
    return F.linear(normed * F.silu(z), p["out_proj.weight"], p["out_proj.bias"])


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    gen = torch.Generator().manual_seed(1617)
    p = make_params(gen)
    tokens = torch.randn(BATCH, LENGTH, DIM, generator=gen, dtype=torch.float64).float().double()
    with torch.no_grad():
        y = mixer(p, tokens, check_authors=True)
    x = tokens.clone().requires_grad_(True)
    leaves = {k: v.clone().requires_grad_(True) for k, v in p.items()}
    g = torch.randn(y.shape, generator=gen, dtype=torch.float64).float().double()
    out = mixer(leaves, x)
    assert torch.allclose(out, y, rtol=0, atol=1e-13)
    grads = torch.autograd.grad((out * g).sum(), [x] + list(leaves.values()))
    io = {"input": tokens, "output": y, "grad.cotangent": g, "grad.input": grads[0]}
    for name, gr in zip(leaves, grads[1:]):
        io["grad." + name] = gr
    assert all(math.isfinite(float(t.abs().max())) for t in io.values()), "non-finite reference output"
    save_file({k: v.float().contiguous() for k, v in p.items()}, os.path.join(out_dir, "hydra_mixer.safetensors"))
    save_file({k: v.float().contiguous() for k, v in io.items()}, os.path.join(out_dir, "hydra_io.safetensors"))
    options = {"type": "hydra", "d_inner": INNER, "d_state": STATE, "dt_rank": RANK, "d_conv": KERNEL,
               "headdim": HEADDIM, "bias": True}
    with open(os.path.join(out_dir, "hydra_config.json"), "w") as f:
        json.dump({"dim": DIM, "options": options, "batch": BATCH, "length": LENGTH, "torch": torch.__version__},
                  f, indent=1)
    for k, v in io.items():
        print(k, tuple(v.shape), f"max |.| {float(v.abs().max()):.4g}")


if __name__ == "__main__":
    main()
