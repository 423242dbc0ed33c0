#!/usr/bin/env python3
"""Golden files for Strip-MLP (Med-Process/Strip_MLP), from the authors' own StripMLPNet class, run in
float64 on the CPU with random weights and random BatchNorm running statistics (eval mode).

Usage: python3 make_stripmlp_golden.py OUT AUTHORS
  AUTHORS/Strip_MLP/models/strip_mlp.py: a snapshot of the authors' file (nothing else of theirs is
  imported). Needs torch, timm (the file imports timm.models.layers), numpy and safetensors; its unused
  matplotlib import is stubbed.

Writes, each folder as `metaformer verify` reads it (config.json, weights.safetensors = the model's
state_dict() under the authors' keys, float32, num_batches_tracked int64; io.safetensors = "input"
NCHW and "logits"):
  OUT/stripmlp/         embed dim 10 (widths 10, 20, 40, 80: the last stage takes the authors' "width
                        divisible by 80" strip rule, the others the other one), one block per stage,
                        64x64, batch 2 (CI)
  OUT/stripmlp_224/     the same widths at 224x224 (the token grids 56, 28, 14, 7 of Strip-MLP-T),
                        batch 1
  OUT/param_counts.json the full-size models' parameter counts (Strip-MLP-T is the zoo's; light-tiny,
                        small and base for the docs)
Not written: 192x256. The authors' strip projections are built for a square token grid (StripMLP_Block
asserts H == W, and proj_h / proj_w take the built grid's width as their input channels), so their
model cannot run a non-square input.
"""
import importlib.util
import json
import math
import os
import sys
import types

import torch
from safetensors.torch import save_file

torch.set_default_dtype(torch.float64)


def load_authors(authors):
    # The authors' file imports matplotlib.pyplot.axis and never uses it.
    if "matplotlib" not in sys.modules:
        mpl = types.ModuleType("matplotlib")
        pyplot = types.ModuleType("matplotlib.pyplot")
        pyplot.axis = None
        mpl.pyplot = pyplot
        sys.modules["matplotlib"], sys.modules["matplotlib.pyplot"] = mpl, pyplot
    path = os.path.join(authors, "Strip_MLP", "models", "strip_mlp.py")
    spec = importlib.util.spec_from_file_location("authors_strip_mlp", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.StripMLPNet


def randomise(model, gen):
    """Every parameter and BatchNorm statistic random and O(1)-preserving, so that every path matters."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.split(".")[-1]
            if leaf in ("gamma", "beta"):  # GRN's [1, 1, 1, C] scale and shift (zeros at init)
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            elif leaf == "embeddings_table":  # relative positions [2H + 1, C]
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            elif p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
            elif leaf == "bias":
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:  # norm weights
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=gen))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))
            elif name.endswith("num_batches_tracked"):
                b.fill_(7)


def count(model):
    return sum(p.numel() for p in model.parameters())


def image(gen, b, h, w):
    # Rounded to float32 first: the engine reads the float32 file.
    return torch.randn((b, 3, h, w), generator=gen).float().double()


BN = {"type": "batch_norm", "eps": 1e-5, "bias": True, "momentum": 0.1}
LN5 = {"type": "layer_norm", "eps": 1e-5, "bias": True}


def config(name, embed, layers, size, classes):
    return {
        "name": name, "layout": "stripmlp", "in_chans": 3, "num_classes": classes,
        "depths": layers, "dims": [embed * 2 ** i for i in range(4)],
        "mixers": [{"type": "strip"}] * 4,
        "norms": LN5, "mlp": {"act": "gelu", "bias": True, "ratio": 3},
        "stem": {"kernel_size": 4, "stride": 4, "padding": 0},
        "downsample": {"kernel_size": 2, "stride": 2, "padding": 0},
        "head": {"type": "linear", "norm": BN}, "input": {"size": size},
    }


def write(folder, model, cfg, inputs):
    os.makedirs(folder, exist_ok=True)
    model.eval()
    with torch.no_grad():
        logits = model(inputs)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    save_file({k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()},
              os.path.join(folder, "weights.safetensors"))
    save_file({"input": inputs.float().contiguous(), "logits": logits.float().contiguous()},
              os.path.join(folder, "io.safetensors"))
    print(f"{folder}: {count(model)} parameters, input {list(inputs.shape)}, |logits| max "
          f"{logits.abs().max().item():.3f}")


def net(StripMLPNet, size, embed, layers, classes):
    return StripMLPNet(img_size=size, patch_size=4, in_chans=3, num_classes=classes, embed_dim=embed, layers=layers,
                       drop_rate=0.0, alpha=3)


def main():
    out, authors = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    StripMLPNet = load_authors(authors)
    gen = torch.Generator().manual_seed(1719)

    model = net(StripMLPNet, 64, 10, [1, 1, 1, 1], 10)
    randomise(model, gen)
    write(os.path.join(out, "stripmlp"), model, config("stripmlp_golden", 10, [1, 1, 1, 1], 64, 10),
          image(gen, 2, 64, 64))

    model = net(StripMLPNet, 224, 10, [1, 1, 1, 1], 10)
    randomise(model, gen)
    write(os.path.join(out, "stripmlp_224"), model, config("stripmlp_narrow_224", 10, [1, 1, 1, 1], 224, 10),
          image(gen, 1, 224, 224))

    # The authors' variants (models/strip_mlp.py's __main__ and configs/smlp_*_imagenet1k.yaml).
    counts = {}
    for tag, embed, layers in (("tiny_light", 80, [2, 2, 6, 2]), ("tiny", 80, [2, 2, 12, 2]),
                               ("small", 96, [2, 2, 18, 2]), ("base", 112, [2, 2, 18, 2])):
        counts[f"stripmlp_{tag}"] = count(net(StripMLPNet, 224, embed, layers, 1000))
    with open(os.path.join(out, "param_counts.json"), "w") as f:
        json.dump(counts, f, indent=1)
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
