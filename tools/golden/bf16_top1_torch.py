#!/usr/bin/env python3
"""What PyTorch's own bf16 does on the golden models: timm under torch.autocast(bfloat16) on a GPU
(channels-last), with the committed golden weights and input, against the committed float64 logits.

The engine's bf16 mode is checked against the same logits (CudaBackend.GoldenModelsKeepTimmsTop1InBf16);
this script says whether a top-1 that the engine misses in bf16 is one that PyTorch's bf16 resolves,
and how large PyTorch's bf16 logit error is on each family. Prints a markdown table.

Usage (on the device, repository root):  python3 tools/golden/bf16_top1_torch.py [tests/data/golden]
"""
import os
import sys

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_golden  # noqa: E402
import make_golden_mixers  # noqa: E402
from timm.models.metaformer import MetaFormer  # noqa: E402


def builders():
    """name -> a function making the family's timm model (the golden scripts' own constructors)."""
    out = {}
    for name, kwargs, _cfg, _shape in make_golden.families():
        out[name] = (lambda kw: lambda: MetaFormer(depths=make_golden.DEPTHS, dims=make_golden.DIMS,
                                                   num_classes=make_golden.NUM_CLASSES, **kw))(kwargs)
    for entry in make_golden_mixers.families():
        out[entry[0]] = entry[1]
    return out


def rel_l2(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else 'tests/data/golden'
    dev = 'cuda' if torch.cuda.is_available() else 'cpu'
    print(f'torch {torch.__version__} on {dev}\n')
    print('| family | torch bf16 rel. L2 | top-1 kept (samples) | smallest relative top-2 margin |')
    print('|---|---:|---:|---:|')
    for name, make in builders().items():
        d = os.path.join(root, name)
        if not os.path.isdir(d):
            continue
        model = make().eval()
        model.load_state_dict(load_file(os.path.join(d, 'weights.safetensors')), strict=True)
        io = load_file(os.path.join(d, 'io.safetensors'))
        x, expected = io['input'], io['logits'].double()
        model = model.to(dev).to(memory_format=torch.channels_last)
        with torch.no_grad(), torch.autocast(device_type=dev, dtype=torch.bfloat16):
            got = model(x.to(dev).to(memory_format=torch.channels_last)).float().cpu().double()
        kept = int((got.argmax(1) == expected.argmax(1)).sum())
        top2 = expected.topk(2, dim=1).values
        margin = float(((top2[:, 0] - top2[:, 1]) / top2[:, 0].abs().clamp_min(1e-30)).min())
        print(f'| {name} | {rel_l2(got, expected):.2e} | {kept}/{expected.shape[0]} | {margin:.1e} |')


if __name__ == '__main__':
    main()
