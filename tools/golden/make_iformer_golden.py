#!/usr/bin/env python3
"""Golden files for iFormer (sail-sg/iFormer, "Inception Transformer"), from the authors' own class
(models/inception_transformer.py's InceptionTransformer), run in float64 on the CPU with random weights.

Usage: python3 make_iformer_golden.py OUT AUTHORS
  AUTHORS/iFormer/models/inception_transformer.py: a snapshot of the authors' file (nothing else of
  theirs is imported). Needs torch, timm (the file imports timm's Mlp, DropPath, to_2tuple, ...) and
  safetensors. timm's model registry is bypassed (register_model is replaced by the identity), so that
  importing the file registers nothing.

Writes, each folder as `metaformer verify` reads it (config.json, weights.safetensors = the model's
state_dict() under the authors' keys, float32; io.safetensors = "input" NCHW and "logits"):
  OUT/iformer/           a 4-stage iFormer (dims 8..32, 1-2 blocks per stage), img_size 64, batch 2 (CI)
  OUT/iformer_224/       the same widths at img_size 224 (iFormer-S's 56, 28, 14, 7 grids), batch 1
  OUT/param_counts_iformer.json  the full-size models' parameter counts (iformer_small, _base, _large)
No 192x256 case: the authors' LowMixer reshapes its attention output to a square grid
(int(N ** 0.5) on each side), so their model takes square inputs only.
"""
import os

os.environ["CUDA_VISIBLE_DEVICES"] = ""

import importlib
import importlib.util
import json
import math
import sys
import types

import torch
from safetensors.torch import save_file

torch.set_default_dtype(torch.float64)


def import_iformer(authors):
    import timm  # noqa: F401  (the real timm, for Mlp, DropPath, PatchEmbed, ...)
    import timm.models  # noqa: F401

    # timm 1.x keeps timm.models.layers as a deprecated alias of timm.layers; make sure the
    # submodule the file imports exists.
    try:
        importlib.import_module("timm.models.layers.helpers")
    except Exception:  # noqa: BLE001
        from timm.layers import to_2tuple

        helpers = types.ModuleType("timm.models.layers.helpers")
        helpers.to_2tuple = to_2tuple
        sys.modules["timm.models.layers.helpers"] = helpers
    # The file imports build_model_with_cfg, named_apply and adapt_input_conv from the deprecated
    # timm.models.helpers and uses none of them.
    try:
        from timm.models.helpers import adapt_input_conv, build_model_with_cfg, named_apply  # noqa: F401
    except Exception:  # noqa: BLE001
        helpers = types.ModuleType("timm.models.helpers")
        helpers.adapt_input_conv = helpers.build_model_with_cfg = helpers.named_apply = None
        sys.modules["timm.models.helpers"] = helpers
    # Registering would put iformer_* into timm's global registry (and needs the module in
    # sys.modules): the identity decorator is enough here.
    registry = types.ModuleType("timm.models.registry")
    registry.register_model = lambda fn: fn
    saved_registry = sys.modules.get("timm.models.registry")
    sys.modules["timm.models.registry"] = registry
    try:
        path = os.path.join(authors, "iFormer", "models", "inception_transformer.py")
        spec = importlib.util.spec_from_file_location("authors_inception_transformer", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    finally:
        if saved_registry is not None:
            sys.modules["timm.models.registry"] = saved_registry
    return module


# ---------------------------------------------------------------------------------- helpers
def randomise(model, gen):
    """Every parameter random and O(1)-preserving, BatchNorm statistics and positional embeddings
    too, so that every path matters."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.split(".")[-1]
            if leaf.startswith("pos_embed"):
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            elif p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p[0].numel()))
            elif leaf == "bias":
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif leaf.startswith("layer_scale"):  # 1e-6 at init would hide the branches
                p.copy_(0.5 + 0.2 * torch.randn(p.shape, generator=gen))
            else:  # norm weights
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
        for name, b in model.named_buffers():  # BatchNorm's running statistics
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=gen))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))


def count(model):
    return sum(p.numel() for p in model.parameters())


def write(folder, model, config, inputs):
    os.makedirs(folder, exist_ok=True)
    model.eval()
    with torch.no_grad():
        logits = model(inputs)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    save_file({k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()},
              os.path.join(folder, "weights.safetensors"))
    save_file({"input": inputs.float().contiguous(), "logits": logits.float().contiguous()},
              os.path.join(folder, "io.safetensors"))
    print(f"{folder}: {count(model)} parameters, input {list(inputs.shape)}, |logits| max "
          f"{logits.abs().max().item():.3f}")


def image(gen, b, h, w):
    # Rounded to float32 first: the engine reads the float32 file.
    return torch.randn((b, 3, h, w), generator=gen).float().double()


# ---------------------------------------------------------------------------------- iFormer
LN6 = {"type": "layer_norm", "eps": 1e-6, "bias": True}
BN5 = {"type": "batch_norm", "eps": 1e-5, "momentum": 0.1}

# The authors' register_model functions (depths, embed_dims, num_heads, attention_heads per block).
FULL = {
    "iformer_small": ([3, 3, 9, 3], [96, 192, 320, 384], [3, 6, 10, 12], [1] * 3 + [3] * 3 + [7] * 4 + [9] * 5 + [11] * 3),
    "iformer_base": ([4, 6, 14, 6], [96, 192, 384, 512], [3, 6, 12, 16], [1] * 4 + [3] * 6 + [8] * 7 + [10] * 7 + [15] * 6),
    "iformer_large": ([4, 6, 18, 8], [96, 192, 448, 640], [3, 6, 14, 20],
                      [1] * 4 + [3] * 6 + [10] * 9 + [12] * 9 + [19] * 8),
}
# Reduced: head_dim = dim / heads; the low-frequency (attention) part is attention_heads × head_dim
# channels and the high-frequency part the rest, which must be even (split into the conv and max-pool
# halves). Stage 3 has two blocks with different attention widths, as iFormer-S's stage 3 does.
SMALL = ([1, 1, 2, 1], [8, 16, 24, 32], [2, 2, 4, 4], [1, 1, 2, 3, 2])


def iformer_model(module, img, depths, dims, heads, att, classes):
    return module.InceptionTransformer(img_size=img, depths=depths, embed_dims=dims, num_heads=heads,
                                       attention_heads=att, num_classes=classes, use_layer_scale=True,
                                       layer_scale_init_value=1e-6)


def iformer_config(name, img, depths, dims, heads, att, classes):
    # The engine's description (docs/wavemix-and-iformer.md): per stage an "inception" mixer with the
    # stage's head count, the attention heads of each of its blocks and the pooling of its
    # low-frequency branch (2 in stages 1-2, none after); layer scale in stages 3-4 only, as the
    # authors' class builds it.
    mixers, start = [], 0
    for s, d in enumerate(depths):
        mixers.append({"type": "inception", "heads": heads[s], "attention_heads": att[start:start + d],
                       "pool_size": 2 if s < 2 else 1})
        start += d
    return {
        "name": name, "layout": "iformer", "in_chans": 3, "num_classes": classes,
        "depths": depths, "dims": dims, "mixers": mixers, "norms": LN6,
        "mlp": {"act": "gelu", "bias": True, "ratio": 4},
        "layer_scale_init": [None, None, 1e-6, 1e-6],
        "stem": {"type": "two_conv", "kernel_size": 3, "stride": 2, "padding": 1, "norm": BN5, "mid_norm": True},
        "downsample": {"kernel_size": 3, "stride": 2, "padding": 1, "norm": BN5, "norm_after": True},
        "head": {"type": "linear", "norm": LN6}, "input": {"size": img, "crop_pct": 0.9},
    }


def make_iformer(out, authors, gen, counts):
    module = import_iformer(authors)
    for folder, img, batch in (("iformer", 64, 2), ("iformer_224", 224, 1)):
        model = iformer_model(module, img, *SMALL, 10)
        randomise(model, gen)
        write(os.path.join(out, folder), model, iformer_config(folder + "_golden", img, *SMALL, 10),
              image(gen, batch, img, img))
    for name, args in FULL.items():
        counts[name] = count(iformer_model(module, 224, *args, 1000))


def main():
    out, authors = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    counts = {}
    make_iformer(out, authors, torch.Generator().manual_seed(1721), counts)
    with open(os.path.join(out, "param_counts_iformer.json"), "w") as f:
        json.dump(counts, f, indent=1)
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
