#!/usr/bin/env python3
"""Golden files for WaveMix (pranavphoenix/WaveMix), from the authors' own classes (the `wavemix`
package: wavemix/__init__.py's Level{1,2,3,4}Waveblock and wavemix/classification.py's WaveMix), run in
float64 on the CPU with random weights.

Usage: python3 make_wavemix_golden.py OUT AUTHORS
  AUTHORS/WaveMix/wavemix/{__init__,classification}.py: a snapshot of the authors' package (nothing else
  is imported). Needs torch, numpy and safetensors; pywt and einops are replaced by the stand-ins below
  (the package uses only pywt.Wavelet('db1'), pywt.dwt_coeff_len and one einops Rearrange).

The package builds its DWT filters at import time with torch's default dtype, on "cuda:0" when a GPU is
visible: so the script hides the GPUs and sets float64 before importing it.

Writes, each folder as `metaformer verify` reads it (config.json, weights.safetensors = the model's
state_dict() under the authors' keys, float32; io.safetensors = "input" NCHW and "logits"):
  OUT/wavemix/            level 3, width 16, 2 blocks, 64x64, batch 2                  (CI)
  OUT/wavemix_level1/     level 1 (WaveMix-Lite's block), 32x32, batch 2              (CI)
  OUT/wavemix_level2/     level 2, 32x32, batch 2                                      (CI)
  OUT/wavemix_level4/     level 4, 64x64, batch 2                                      (CI)
  OUT/wavemix_strided/    level 2 with the 'strided' initial convolutions, 32x32      (CI)
  OUT/wavemix_224/        the ImageNet model's layout (level 3, patch 4) at width 16, 224x224, batch 1;
                          io_192x256.safetensors: the same model at 192x256
  OUT/param_counts_wavemix.json  the full-size ImageNet models' parameter counts (wavemix, wavemix_lite)
"""
import os

os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the package puts its filters on cuda:0 when it sees a GPU

import importlib
import json
import math
import sys
import types

import torch
from safetensors.torch import save_file

torch.set_default_dtype(torch.float64)  # before the package builds its filters


# ------------------------------------------------------------------------------ stand-ins
def install_pywt():
    """pywt.Wavelet('db1') (Haar) and dwt_coeff_len, the only parts the package uses."""
    pywt = types.ModuleType("pywt")
    r = 1.0 / math.sqrt(2.0)

    class Wavelet:
        def __init__(self, name):
            assert name in ("db1", "haar"), name
            self.name = name
            self.dec_lo = [r, r]
            self.dec_hi = [-r, r]
            self.rec_lo = [r, r]
            self.rec_hi = [r, -r]

    def dwt_coeff_len(data_len, filter_len, mode):
        if mode in ("per", "periodization"):
            return (data_len + 1) // 2
        return (data_len + filter_len - 1) // 2

    pywt.Wavelet = Wavelet
    pywt.dwt_coeff_len = dwt_coeff_len
    sys.modules["pywt"] = pywt


def install_einops():
    """einops' rearrange / repeat (imported, unused) and Rearrange('... () () -> ...')."""

    class Rearrange(torch.nn.Module):
        def __init__(self, pattern, **known):
            super().__init__()
            assert pattern.replace(" ", "") == "...()()->...", pattern
            self.pattern = pattern

        def forward(self, x):
            assert x.shape[-1] == 1 and x.shape[-2] == 1
            return x.flatten(-3)

    def unused(*args, **kwargs):
        raise NotImplementedError("einops stand-in")

    einops = types.ModuleType("einops")
    einops.rearrange = einops.repeat = unused
    layers = types.ModuleType("einops.layers")
    torch_layers = types.ModuleType("einops.layers.torch")
    torch_layers.Rearrange = Rearrange
    einops.layers, layers.torch = layers, torch_layers
    sys.modules.update({"einops": einops, "einops.layers": layers, "einops.layers.torch": torch_layers})


def install_numpy_shim():
    """The package imports hamming from numpy.lib.function_base, which NumPy 2 made private."""
    try:
        importlib.import_module("numpy.lib.function_base")
    except Exception:  # noqa: BLE001
        import numpy

        shim = types.ModuleType("numpy.lib.function_base")
        shim.hamming = numpy.hamming
        sys.modules["numpy.lib.function_base"] = shim


def import_wavemix(authors):
    install_pywt()
    install_einops()
    install_numpy_shim()
    sys.path.insert(0, os.path.join(authors, "WaveMix"))
    package = importlib.import_module("wavemix")
    classification = importlib.import_module("wavemix.classification")
    assert package.xf1.h0_col.dtype == torch.float64, "the DWT filters must be float64"
    return classification.WaveMix


# ---------------------------------------------------------------------------------- helpers
def randomise(model, gen):
    """Every parameter random and O(1)-preserving, BatchNorm statistics too, so that every path
    matters."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.ConvTranspose2d):
                w = module.weight  # [in, out, k, k]: each output sees in × (k/stride)² taps
                fan_in = w.shape[0] * (w.shape[2] // module.stride[0]) * (w.shape[3] // module.stride[1])
                w.copy_(torch.randn(w.shape, generator=gen) / math.sqrt(fan_in))
            elif isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                w = module.weight
                w.copy_(torch.randn(w.shape, generator=gen) / math.sqrt(w[0].numel()))
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.weight.copy_(1.0 + 0.2 * torch.randn(module.weight.shape, generator=gen))
                module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=gen))
            else:
                continue
            if getattr(module, "bias", None) is not None:
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))


def count(model):
    return sum(p.numel() for p in model.parameters())


def run(model, inputs):
    model.eval()
    with torch.no_grad():
        return model(inputs)


def write(folder, model, config, inputs):
    os.makedirs(folder, exist_ok=True)
    logits = run(model, inputs)
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


# ---------------------------------------------------------------------------------- WaveMix
BN5 = {"type": "batch_norm", "eps": 1e-5, "momentum": 0.1}


def wavemix_model(WaveMix, dim, ff, depth, level, classes, strided=False, patch=4, stride=2):
    return WaveMix(num_classes=classes, depth=depth, mult=2, ff_channel=ff, final_dim=dim, dropout=0.5, level=level,
                   initial_conv="strided" if strided else "pachify", patch_size=patch, stride=stride)


def wavemix_config(name, dim, ff, depth, level, classes, size, strided=False, patch=4, stride=2):
    # The engine's description (docs/wavemix-and-iformer.md): one stage of `depth` WaveMix blocks; the
    # stem is the 'pachify' convolutions (type "patch", kernel = stride = patch size) or the 'strided'
    # ones (type "two_conv", 3x3 with the given stride).
    stem = ({"type": "two_conv", "kernel_size": 3, "stride": stride, "padding": 1, "norm": None} if strided else
            {"type": "patch", "kernel_size": patch, "stride": patch, "padding": 0, "norm": BN5})
    return {
        "name": name, "layout": "wavemix", "in_chans": 3, "num_classes": classes,
        "depths": [depth], "dims": [dim],
        "mixers": [{"type": "wavemix", "level": level, "ff_channel": ff, "mult": 2}],
        "norms": BN5,
        "stem": stem, "head": {"type": "linear"}, "input": {"size": size},
    }


def make_wavemix(out, authors, gen, counts):
    WaveMix = import_wavemix(authors)
    cases = [  # folder, dim, ff, depth, level, size, strided
        ("wavemix", 16, 12, 2, 3, 64, False),
        ("wavemix_level1", 16, 12, 2, 1, 32, False),
        ("wavemix_level2", 16, 12, 2, 2, 32, False),
        ("wavemix_level4", 16, 12, 1, 4, 64, False),
        ("wavemix_strided", 16, 12, 2, 2, 32, True),
    ]
    for folder, dim, ff, depth, level, size, strided in cases:
        model = wavemix_model(WaveMix, dim, ff, depth, level, 10, strided)
        randomise(model, gen)
        write(os.path.join(out, folder), model,
              wavemix_config(folder + "_golden", dim, ff, depth, level, 10, size, strided), image(gen, 2, size, size))

    # The ImageNet model's layout (level 3, 4x4 patches) at width 16: every resolution of the block at
    # the ImageNet size (56, 28, 14, 7 tokens), and 192x256 (48x64 .. 6x8) with the same weights.
    model = wavemix_model(WaveMix, 16, 16, 2, 3, 10)
    randomise(model, gen)
    write(os.path.join(out, "wavemix_224"), model, wavemix_config("wavemix_narrow_224", 16, 16, 2, 3, 10, 224),
          image(gen, 1, 224, 224))
    wide = image(gen, 1, 192, 256)
    save_file({"input": wide.float().contiguous(), "logits": run(model, wide).float().contiguous()},
              os.path.join(out, "wavemix_224", "io_192x256.safetensors"))

    # The authors' ImageNet checkpoints (Saved_weights/ImageNet, Image_Classification/timm.py):
    # WaveMix-192/16 level 3 (wavemix_28M_75.06.py) and level 1 (wavemix_12M_71.18.py, timm.py's
    # wavemix_lite).
    counts["wavemix"] = count(wavemix_model(WaveMix, 192, 192, 16, 3, 1000))
    counts["wavemix_lite"] = count(wavemix_model(WaveMix, 192, 192, 16, 1, 1000))


def main():
    out, authors = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    counts = {}
    make_wavemix(out, authors, torch.Generator().manual_seed(1720), counts)
    with open(os.path.join(out, "param_counts_wavemix.json"), "w") as f:
        json.dump(counts, f, indent=1)
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
