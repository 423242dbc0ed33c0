#!/usr/bin/env python3
"""Full-size parity: timm models against `metaformer verify`, on random weights.

For each model this builds timm's full-size model, gives every parameter a random value (as
make_golden.py does, so that layer scales and norms are far from their init and every block
matters), saves model.state_dict() as safetensors, and for each input size writes a folder

  OUT_DIR/<model>_<H>x<W>/  model.txt (the zoo name), weights.safetensors, io.safetensors
                            ("input" [2, 3, H, W] and "logits" from a float64 CPU forward pass)

which `metaformer verify` then checks (relative error of the logits).

Usage: python3 full_parity.py OUT_DIR [MODEL ...]
"""
import os
import sys

import torch
import timm
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_golden  # noqa: E402
import make_golden_mixers  # noqa: E402

MODELS = ['poolformer_s12', 'poolformerv2_s12', 'convformer_s18', 'caformer_s18', 'mambaout_femto',
          'mambaout_small_rw', 'mixer_s16_224', 'gmixer_12_224', 'resmlp_12_224', 'gmlp_s16_224']
SIZES = [(224, 224), (192, 256)]
FIXED_SIZE = ('mixer_', 'gmixer_', 'resmlp_', 'gmlp_')   # mlp_mixer.py: 224x224 only


def randomize(name, model, gen):
    if name.startswith(FIXED_SIZE) or name.startswith('mambaout'):
        make_golden_mixers.randomize(model, gen)
    else:
        make_golden.randomize(model, gen)


def main():
    out_dir = sys.argv[1]
    models = sys.argv[2:] or MODELS
    torch.set_num_threads(os.cpu_count())
    for i, name in enumerate(models):
        gen = torch.Generator().manual_seed(2024 + i)
        model = timm.create_model(name, pretrained=False).eval()
        randomize(name, model, gen)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        m64 = model.double()
        weights_path = None
        for h, w in (SIZES[:1] if name.startswith(FIXED_SIZE) else SIZES):
            d = os.path.join(out_dir, f'{name}_{h}x{w}')
            os.makedirs(d, exist_ok=True)
            if weights_path is None:
                weights_path = os.path.join(d, 'weights.safetensors')
                save_file(state, weights_path)
            else:
                os.symlink(os.path.abspath(weights_path), os.path.join(d, 'weights.safetensors'))
            with open(os.path.join(d, 'model.txt'), 'w') as f:
                f.write(name + '\n')
            x = torch.randn((2, 3, h, w), generator=gen)
            with torch.no_grad():
                logits = m64(x.double())
            save_file({'input': x.contiguous(), 'logits': logits.float().contiguous()}, os.path.join(d, 'io.safetensors'))
            print(f'{name} {h}x{w}: |logits| max {logits.abs().max():.3f}', flush=True)


if __name__ == '__main__':
    main()
