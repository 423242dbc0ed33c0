#!/usr/bin/env python3
"""Golden files for CAS-ViT (Tianfang-Zhang/CAS-ViT), from the authors' own RCViT class, run in float64
on the CPU with random weights and random BatchNorm running statistics (eval mode: the two heads'
mean, as their forward returns it outside training).

Usage: python3 make_casvit_golden.py OUT AUTHORS
  AUTHORS/CAS-ViT/classification/model/rcvit.py: a snapshot of the authors' file (nothing else of
  theirs is imported). Needs torch, timm, numpy and safetensors; the file's unused einops import is
  stubbed, and timm's register_model too where this timm lacks timm.models.registry.

Writes, each folder as `metaformer verify` reads it (config.json, weights.safetensors = the model's
state_dict() under the authors' keys, float32, num_batches_tracked int64; io.safetensors = "input"
NCHW and "logits"):
  OUT/casvit/           widths 8, 16, 24, 32, depths 1, 1, 2, 1, 64x64, batch 2 (CI)
  OUT/casvit_224/       widths 8, 16, 24, 32, one block per stage, 224x224, batch 1;
                        io_192x256.safetensors: the same model at 192x256
  OUT/param_counts.json the full-size models' parameter counts (rcvit_xs, _s, _m, _t: CAS-ViT XS/S/M/T)
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

VARIANTS = {  # the authors' rcvit_xs / _s / _m / _t
    "xs": ([2, 2, 4, 2], [48, 56, 112, 220]),
    "s": ([3, 3, 6, 3], [48, 64, 128, 256]),
    "m": ([3, 3, 6, 3], [64, 96, 192, 384]),
    "t": ([3, 3, 6, 3], [96, 128, 256, 512]),
}


def load_authors(authors):
    if "einops" not in sys.modules:  # imported, never used
        einops = types.ModuleType("einops")
        einops.rearrange = einops.repeat = None
        sys.modules["einops"] = einops
    try:  # imported, never used; deprecated in recent torch
        from torch.cuda.amp import autocast  # noqa: F401
    except ImportError:
        amp = types.ModuleType("torch.cuda.amp")
        amp.autocast = None
        sys.modules["torch.cuda.amp"] = amp
    try:
        import timm.models.registry  # noqa: F401
    except ImportError:
        registry = types.ModuleType("timm.models.registry")
        registry.register_model = lambda fn: fn
        sys.modules["timm.models.registry"] = registry
    path = os.path.join(authors, "CAS-ViT", "classification", "model", "rcvit.py")
    spec = importlib.util.spec_from_file_location("authors_rcvit", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # timm's register_model looks its module up there
    spec.loader.exec_module(module)
    return module.RCViT


def randomise(model, gen):
    """Every parameter and BatchNorm statistic random and O(1)-preserving, so that every path matters."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.split(".")[-1]
            if p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
            elif leaf == "bias":
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:  # BatchNorm weights
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


def config(name, layers, dims, size, classes):
    return {
        "name": name, "layout": "casvit", "in_chans": 3, "num_classes": classes,
        "depths": layers, "dims": dims,
        "mixers": [{"type": "additive"}] * 4,
        "norms": BN, "mlp": {"act": "gelu", "bias": True, "ratio": 4},
        "stem": {"type": "two_conv", "kernel_size": 3, "stride": 2, "padding": 1, "norm": BN, "act": "relu"},
        "downsample": {"kernel_size": 3, "stride": 2, "padding": 1, "norm": BN, "norm_after": True},
        "head": {"type": "linear", "norm": BN}, "input": {"size": size},
    }


def logits_of(model, inputs):
    model.eval()
    with torch.no_grad():
        return model(inputs)


def write(folder, model, cfg, inputs):
    os.makedirs(folder, exist_ok=True)
    logits = logits_of(model, inputs)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    save_file({k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()},
              os.path.join(folder, "weights.safetensors"))
    save_file({"input": inputs.float().contiguous(), "logits": logits.float().contiguous()},
              os.path.join(folder, "io.safetensors"))
    print(f"{folder}: {count(model)} parameters, input {list(inputs.shape)}, |logits| max "
          f"{logits.abs().max().item():.3f}")


def net(RCViT, layers, dims, classes):
    import torch.nn as nn
    return RCViT(layers=layers, embed_dims=dims, mlp_ratios=4, downsamples=[True, True, True, True],
                 norm_layer=nn.BatchNorm2d, attn_bias=False, act_layer=nn.GELU, drop_rate=0.0, fork_feat=False,
                 init_cfg=None, num_classes=classes)


def main():
    out, authors = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    RCViT = load_authors(authors)
    gen = torch.Generator().manual_seed(1720)
    dims = [8, 16, 24, 32]

    model = net(RCViT, [1, 1, 2, 1], dims, 10)
    randomise(model, gen)
    write(os.path.join(out, "casvit"), model, config("casvit_golden", [1, 1, 2, 1], dims, 64, 10),
          image(gen, 2, 64, 64))

    model = net(RCViT, [1, 1, 1, 1], dims, 10)
    randomise(model, gen)
    folder = os.path.join(out, "casvit_224")
    write(folder, model, config("casvit_narrow_224", [1, 1, 1, 1], dims, 224, 10), image(gen, 1, 224, 224))
    wide = image(gen, 1, 192, 256)  # the model is fully convolutional: any size divisible by 32
    save_file({"input": wide.float().contiguous(), "logits": logits_of(model, wide).float().contiguous()},
              os.path.join(folder, "io_192x256.safetensors"))

    counts = {f"casvit_{tag}": count(net(RCViT, layers, d, 1000)) for tag, (layers, d) in VARIANTS.items()}
    with open(os.path.join(out, "param_counts.json"), "w") as f:
        json.dump(counts, f, indent=1)
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
