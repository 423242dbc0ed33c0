#!/usr/bin/env python3
"""Golden files for RaftMLP (okojoalg/raft-mlp) and MS-MLP (JegZheng/MS-MLP), from the authors' own
model classes, run in float64 on the CPU with random weights.

Usage: python3 make_shiftmlp_golden.py OUT AUTHORS
  AUTHORS holds the authors' code: AUTHORS/raft-mlp/libs/{models,modules,consts,regularizations}.py and
  AUTHORS/MS-MLP/models/ms_mlp.py (snapshots of the two repositories; nothing else is imported).
  Needs torch and timm (MS-MLP imports timm.models.layers) and safetensors; raft-mlp's einops is
  replaced by the small einops stand-in below (only rearrange, Rearrange and Reduce are used).

Writes, each folder as `metaformer verify` reads it (config.json, weights.safetensors = the model's
state_dict() under the authors' keys, float32; io.safetensors = "input" NCHW and "logits"):
  OUT/raftmlp/          a 3-level RaftMLP (raft sizes 2, 4, 2), 32x32, batch 2   (CI)
  OUT/raftmlp_224/      RaftMLP-S's layout at width 8..32, one block per level, 224x224, batch 1;
                        io_192x256.safetensors: the same model at 192x256
  OUT/msmlp/            a 4-stage MS-MLP (dims 10..80), 64x64, batch 2              (CI)
  OUT/msmlp_224/        MS-MLP-T's layout at width 10..80, one block per stage, 224x224, batch 1
  OUT/msmlp_192x256/    the same weights at 192x256 (MS-MLP built for img_size (192, 256))
  OUT/param_counts.json the full-size models' parameter counts (RaftMLP-S/M/L, MS-MLP-T)
(Strip-MLP has its own script: make_stripmlp_golden.py.)
"""
import importlib.util
import json
import math
import os
import re
import sys
import types

import torch
from safetensors.torch import save_file

torch.set_default_dtype(torch.float64)


# ------------------------------------------------------------------------------ einops stand-in
def _groups(side):
    """'b (h w) c' -> [['b'], ['h', 'w'], ['c']]."""
    out, i, tokens = [], 0, re.findall(r"\(|\)|[A-Za-z_][A-Za-z0-9_]*", side)
    while i < len(tokens):
        if tokens[i] == "(":
            j = tokens.index(")", i)
            out.append(tokens[i + 1:j])
            i = j + 1
        else:
            out.append([tokens[i]])
            i += 1
    return out


def _sizes(groups, shape, known):
    sizes = dict(known)
    for g, n in zip(groups, shape):
        unknown = [a for a in g if a not in sizes]
        prod = math.prod(sizes[a] for a in g if a in sizes)
        if len(unknown) == 1:
            sizes[unknown[0]] = n // prod
        assert math.prod(sizes[a] for a in g) == n, (groups, shape, known)
    return sizes


def rearrange(x, pattern, **known):
    left, right = (_groups(s) for s in pattern.split("->"))
    sizes = _sizes(left, x.shape, known)
    flat_left = [a for g in left for a in g]
    flat_right = [a for g in right for a in g]
    x = x.reshape([sizes[a] for a in flat_left]).permute([flat_left.index(a) for a in flat_right])
    return x.reshape([math.prod(sizes[a] for a in g) for g in right])


def reduce_mean(x, pattern):
    left, right = (_groups(s) for s in pattern.split("->"))
    flat_left = [a for g in left for a in g]
    flat_right = [a for g in right for a in g]
    dims = [i for i, a in enumerate(flat_left) if a not in flat_right]
    return x.mean(dim=dims)


class Rearrange(torch.nn.Module):
    def __init__(self, pattern, **known):
        super().__init__()
        self.pattern, self.known = pattern, known

    def forward(self, x):
        return rearrange(x, self.pattern, **self.known)


class Reduce(torch.nn.Module):
    def __init__(self, pattern, reduction):
        super().__init__()
        assert reduction == "mean"
        self.pattern = pattern

    def forward(self, x):
        return reduce_mean(x, self.pattern)


def install_einops():
    einops = types.ModuleType("einops")
    einops.rearrange = rearrange
    layers = types.ModuleType("einops.layers")
    torch_layers = types.ModuleType("einops.layers.torch")
    torch_layers.Rearrange, torch_layers.Reduce = Rearrange, Reduce
    einops.layers = layers
    layers.torch = torch_layers
    sys.modules.update({"einops": einops, "einops.layers": layers, "einops.layers.torch": torch_layers})


# ---------------------------------------------------------------------------------- helpers
def randomise(model, gen):
    """Every parameter random and O(1)-preserving, so that every path matters."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.split(".")[-1]
            if p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
            elif leaf == "bias":
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif leaf == "gamma":  # MS-MLP's layer scale (1e-6 at init would hide the branch)
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


# ---------------------------------------------------------------------------------- RaftMLP
LN5 = {"type": "layer_norm", "eps": 1e-5, "bias": True}
RAFT_SIZES = {  # the authors' configs/settings/imagenet-raft-mlp-cross-mlp-emb-{s,m,l}.yaml
    "s": [64, 128, 256, 512],
    "m": [96, 192, 384, 768],
    "l": [128, 192, 512, 1024],
}


def raft_layers(depths, dims, rafts, kernels):
    return [{"depth": d, "dim": c, "patch_size": k[0], "raft_size": r, "embedding_kernels": k}
            for d, c, r, k in zip(depths, dims, rafts, kernels)]


def raft_model(RaftMLP, layers, size, classes):
    return RaftMLP(layers=layers, in_channels=3, pretrained_image_size=size, num_classes=classes,
                   token_expansion_factor=2, channel_expansion_factor=4, dropout=0.0, token_mixing_type="ser_pm",
                   embedding_type="emb_cross_mlp", shortcut=False, drop_path_rate=0.0)


def raft_config(name, layers, size, classes):
    return {
        "name": name, "layout": "raftmlp", "in_chans": 3, "num_classes": classes,
        "depths": [l["depth"] for l in layers], "dims": [l["dim"] for l in layers],
        "mixers": [{"type": "raft", "raft_size": l["raft_size"], "expansion": 2} for l in layers],
        "embed_kernels": [l["embedding_kernels"] for l in layers],
        "norms": LN5, "mlp": {"act": "gelu", "bias": True, "ratio": 4},
        "head": {"type": "linear", "norm": LN5}, "input": {"size": size},
    }


def make_raft(out, authors, gen, counts):
    sys.path.insert(0, os.path.join(authors, "raft-mlp"))
    from libs.models import RaftMLP

    layers = raft_layers([1, 1, 2], [8, 16, 24], [2, 4, 2], [[4, 8], [2, 4], [2]])
    model = raft_model(RaftMLP, layers, 32, 10)
    randomise(model, gen)
    write(os.path.join(out, "raftmlp"), model, raft_config("raftmlp_golden", layers, 32, 10), image(gen, 2, 32, 32))

    s_kernels = [[4, 8], [2, 4], [2, 4], [2]]
    layers = raft_layers([1, 1, 1, 1], [8, 16, 24, 32], [2, 2, 2, 2], s_kernels)
    model = raft_model(RaftMLP, layers, 224, 10)
    randomise(model, gen)
    write(os.path.join(out, "raftmlp_224"), model, raft_config("raftmlp_narrow_224", layers, 224, 10),
          image(gen, 1, 224, 224))
    # The same model at 192x256: the authors resize bicubically to the 224x224 grids around the token
    # MLPs. Only the input and logits (the weights are raftmlp_224's).
    wide = image(gen, 1, 192, 256)
    with torch.no_grad():
        logits = model(wide)
    save_file({"input": wide.float().contiguous(), "logits": logits.float().contiguous()},
              os.path.join(out, "raftmlp_224", "io_192x256.safetensors"))

    for tag, dims in RAFT_SIZES.items():
        full = raft_model(RaftMLP, raft_layers([2, 2, 6, 2], dims, [2, 2, 2, 2], s_kernels), 224, 1000)
        counts[f"raftmlp_{tag}"] = count(full)


# ----------------------------------------------------------------------------------- MS-MLP
LN6 = {"type": "layer_norm", "eps": 1e-6, "bias": True}
MS_SHIFT = [-2, -1, 0, 1, 2]
MS_MIX_T = [[1, 1, 3, 5, 7], [1, 3, 3, 5, 7], [1, 5, 5, 5, 7], [1, 7, 7, 7, 7]]  # msmlp_tiny_patch4_shift5_224


def ms_model(MS_MLP, img, dim, depths, classes):
    return MS_MLP(img_size=img, patch_size=4, in_chans=3, num_classes=classes, embed_dim=dim, depths=depths,
                  shift_size=5, shift_dist=MS_SHIFT, mix_size=MS_MIX_T, mlp_ratio=4.0, drop_rate=0.0,
                  drop_path_rate=0.0, patch_norm=True)


def ms_config(name, dim, depths, size, classes):
    return {
        "name": name, "layout": "msmlp", "in_chans": 3, "num_classes": classes,
        "depths": depths, "dims": [dim * 2 ** i for i in range(4)],
        "mixers": [{"type": "mix_shift", "shifts": MS_SHIFT, "kernels": k} for k in MS_MIX_T],
        "norms": LN6, "mlp": {"act": "gelu", "bias": True, "ratio": 4}, "layer_scale_init": 1e-6,
        "stem": {"kernel_size": 4, "stride": 4, "padding": 0, "norm": LN6},
        "downsample": {"kernel_size": 2, "stride": 2, "padding": 0, "norm": LN6, "norm_after": True},
        "head": {"type": "linear", "norm": LN6}, "input": {"size": size},
    }


def make_ms(out, authors, gen, counts):
    path = os.path.join(authors, "MS-MLP", "models", "ms_mlp.py")
    spec = importlib.util.spec_from_file_location("authors_ms_mlp", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    MS_MLP = module.MS_MLP

    model = ms_model(MS_MLP, 64, 10, [1, 1, 2, 1], 10)
    randomise(model, gen)
    write(os.path.join(out, "msmlp"), model, ms_config("msmlp_golden", 10, [1, 1, 2, 1], 64, 10),
          image(gen, 2, 64, 64))

    model = ms_model(MS_MLP, 224, 10, [1, 1, 1, 1], 10)
    randomise(model, gen)
    write(os.path.join(out, "msmlp_224"), model, ms_config("msmlp_narrow_224", 10, [1, 1, 1, 1], 224, 10),
          image(gen, 1, 224, 224))
    # The same weights in a model built for 192x256 (the authors' PatchEmbed checks the size it was
    # built for; no parameter depends on it).
    wide = ms_model(MS_MLP, (192, 256), 10, [1, 1, 1, 1], 10)
    wide.load_state_dict(model.state_dict())
    write(os.path.join(out, "msmlp_192x256"), wide, ms_config("msmlp_narrow_192x256", 10, [1, 1, 1, 1], 224, 10),
          image(gen, 1, 192, 256))

    counts["msmlp_tiny"] = count(ms_model(MS_MLP, 224, 96, [3, 3, 9, 3], 1000))


def main():
    out, authors = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    install_einops()
    counts = {}
    make_raft(out, authors, torch.Generator().manual_seed(1717), counts)
    make_ms(out, authors, torch.Generator().manual_seed(1718), counts)
    with open(os.path.join(out, "param_counts.json"), "w") as f:
        json.dump(counts, f, indent=1)
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
