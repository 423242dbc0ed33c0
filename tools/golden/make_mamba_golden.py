#!/usr/bin/env python3
"""Reference outputs of Hugging Face transformers' MambaModel (the S6 selective-scan mixer and block).

A small MambaModel with random weights (every parameter drawn here: projections, conv, A_log, D,
dt_proj's bias, the RMSNorm weights, the embedding), run in float64 on the CPU. On the CPU
transformers always takes MambaMixer.slow_forward (its pure-PyTorch path: the fused CUDA kernels
are used only for weights on a CUDA device), and use_cache=False keeps the cache paths out. The
weights are rounded to float32 before the float64 run, so the float32 files hold exactly the
weights that produced the outputs. (slow_forward casts A_log, B and the conv output with .float(),
so a few intermediates pass through float32 even in a float64 model: relative effects ~1e-7.)

Writes into OUT_DIR:
  mamba_config.json           the MambaConfig fields used, and the input's shape
  mamba_model.safetensors     MambaModel's state dict, transformers' key names (float32)
  mamba_io.safetensors        (float32)
    input_ids [B, L]                       token ids (small integers, exact in float32)
    embeddings [B, L, D]                   the embedding's output
    layers.{i}.mixer_in [B, L, D]          what layer i's MambaMixer receives (after its RMSNorm)
    layers.{i}.mixer_out [B, L, D]         what it returns
    layers.{i}.out [B, L, D]               the block's output (residual added)
    last_hidden_state [B, L, D]            after norm_f
    grad.cotangent [B, L, D]               a random g; the gradients of sum(mixer_out_0 * g) over
    grad.input [B, L, D]                   layer 0's mixer input,
    grad.<param> ...                       and each of layer 0's mixer parameters (its own names:
                                           in_proj.weight, conv1d.weight, ..., A_log, D)

Usage: python3 make_mamba_golden.py OUT_DIR      (needs torch, transformers and safetensors)
"""
import json
import math
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import MambaConfig, MambaModel

CONFIG = dict(
    vocab_size=40,
    hidden_size=16,
    state_size=4,
    intermediate_size=32,   # expand 2
    num_hidden_layers=2,
    conv_kernel=4,
    time_step_rank=3,
    use_bias=False,         # Mamba's default: no in_proj / out_proj bias
    use_conv_bias=True,
    hidden_act="silu",
    layer_norm_epsilon=1e-5,
    residual_in_fp32=True,
    use_mambapy=False,
)
BATCH, LENGTH = 2, 70  # longer than the C++ test's smallest scan chunk, so chunk edges are crossed


def randomise(model, gen):
    """Every parameter random, at scales that keep dt moderate and the states from exploding."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("A_log"):
                # A = -exp(A_log) in [-4, -0.3]: states decay at different rates per channel
                p.copy_(torch.log(0.3 + 3.7 * torch.rand(p.shape, generator=gen, dtype=torch.float64)))
            elif name.endswith("dt_proj.bias"):
                # softplus(bias) around 0.05 .. 0.5, as Mamba's dt init range
                dt = 0.05 + 0.45 * torch.rand(p.shape, generator=gen, dtype=torch.float64)
                p.copy_(dt + torch.log(-torch.expm1(-dt)))
            elif name.endswith("norm.weight") or name.endswith("norm_f.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
            elif name.endswith(".D"):
                p.copy_(1.0 + 0.5 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
            elif p.dim() >= 2:
                fan_in = p.shape[1] * (p.shape[2] if p.dim() > 2 else 1)
                if name.startswith("embeddings"):
                    fan_in = 1
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) / math.sqrt(fan_in))
            else:  # biases
                p.copy_(0.1 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
            p.copy_(p.float().double())  # the float32 file holds exactly these weights


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1616)
    model = MambaModel(MambaConfig(**CONFIG)).double().eval()
    randomise(model, gen)
    for layer in model.layers:  # no CUDA fast path: the weights live on the CPU
        assert layer.mixer.x_proj.weight.device.type == "cpu"

    ids = torch.randint(0, CONFIG["vocab_size"], (BATCH, LENGTH), generator=gen)
    io = {"input_ids": ids.float()}
    captured = {}

    def keep(name):
        def hook(module, args, kwargs, output):
            captured[name + ".in"] = (args[0] if args else kwargs["hidden_states"]).detach().clone()
            captured[name + ".out"] = (output[0] if isinstance(output, tuple) else output).detach().clone()
        return hook

    for i, layer in enumerate(model.layers):
        layer.mixer.register_forward_hook(keep(f"layers.{i}.mixer"), with_kwargs=True)
        layer.register_forward_hook(keep(f"layers.{i}.block"), with_kwargs=True)
    model.embeddings.register_forward_hook(lambda m, a, o: captured.__setitem__("embeddings", o.detach().clone()))

    with torch.no_grad():
        out = model(input_ids=ids, use_cache=False, return_dict=True)
    io["embeddings"] = captured["embeddings"]
    for i in range(CONFIG["num_hidden_layers"]):
        io[f"layers.{i}.mixer_in"] = captured[f"layers.{i}.mixer.in"]
        io[f"layers.{i}.mixer_out"] = captured[f"layers.{i}.mixer.out"]
        io[f"layers.{i}.out"] = captured[f"layers.{i}.block.out"]
    io["last_hidden_state"] = out.last_hidden_state

    # Gradients of layer 0's mixer, by autograd through the same slow path.
    mixer = model.layers[0].mixer
    x = captured["layers.0.mixer.in"].clone().requires_grad_(True)
    g = torch.randn(x.shape, generator=gen, dtype=torch.float64).float().double()
    y = mixer(x)
    params = dict(mixer.named_parameters())
    grads = torch.autograd.grad((y * g).sum(), [x] + list(params.values()))
    io["grad.cotangent"] = g
    io["grad.input"] = grads[0]
    for (name, _), gr in zip(params.items(), grads[1:]):
        io["grad." + name] = gr
    scale = max(float(t.abs().max()) for t in io.values())
    assert math.isfinite(scale), "non-finite reference output"

    save_file({k: v.float().contiguous() for k, v in model.state_dict().items()},
              os.path.join(out_dir, "mamba_model.safetensors"))
    save_file({k: v.float().contiguous() for k, v in io.items()}, os.path.join(out_dir, "mamba_io.safetensors"))
    import transformers
    with open(os.path.join(out_dir, "mamba_config.json"), "w") as f:
        json.dump({"config": CONFIG, "batch": BATCH, "length": LENGTH, "torch": torch.__version__,
                   "transformers": transformers.__version__}, f, indent=1)
    for k, v in io.items():
        print(k, tuple(v.shape), f"max |.| {float(v.abs().max()):.4g}")


if __name__ == "__main__":
    main()
