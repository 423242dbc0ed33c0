#!/usr/bin/env python3
"""Generate the golden files that tie metaformer.cpp to timm.

For each MetaFormer family this builds a *small* model with timm's own classes (reduced depths and
widths, awkward sizes), gives every parameter a random value (so that every path matters: timm's
init would leave layer scales at 1e-5 and norms at identity), runs it in float64 on the CPU, and
writes to OUT_DIR/<family>/:

  config.json          the same model as a metaformer.cpp JSON description
  weights.safetensors  model.state_dict() (float32, timm's key names)
  io.safetensors       "input" (NCHW), "stem", "stages.0".."stages.3" (NCHW, as timm returns them),
                       "logits"; all float32 from the float64 run

Also writes OUT_DIR/imagenet_classes.inc (timm's ImageNet-1k descriptions; copy to src/io/) and, when
IMAGE is given, OUT_DIR/preprocess/<name>.safetensors with timm's eval transform of that image for
each of a few transform settings.

Usage (wherever torch and timm 1.0.x are installed):  python3 make_golden.py OUT_DIR [IMAGE ...]
"""
import json
import os
import sys

import torch
import torch.nn as nn

import timm
from timm.models.metaformer import (MetaFormer, Pooling, SepConv, Attention, GroupNorm1, GroupNorm1NoBias,
                                    LayerNorm2dNoBias, LayerNormNoBias)
from safetensors.torch import save_file

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False

DEPTHS = (1, 1, 2, 1)
DIMS = (16, 24, 40, 48)
HEAD_DIM = 8          # attention heads: 40 / 8 = 5 and 48 / 8 = 6
NUM_CLASSES = 10
INPUT_NCHW = (2, 3, 61, 47)   # odd, non-square: stages are 15x12, 8x6, 4x3, 2x2


class RandomMixing(nn.Module):
    """RandFormer's mixer (MetaFormer Baselines), channels-first here to sit in timm's NCHW stages."""
    num_tokens = 0

    def __init__(self, dim=None, **kwargs):
        super().__init__()
        self.random_matrix = nn.Parameter(torch.softmax(torch.rand(self.num_tokens, self.num_tokens), dim=-1),
                                          requires_grad=False)

    def forward(self, x):
        B, C, H, W = x.shape
        t = x.reshape(B, C, H * W)
        return torch.einsum('mn,bcn->bcm', self.random_matrix, t).reshape(B, C, H, W)


def random_mixing(tokens):
    return type(f'RandomMixing{tokens}', (RandomMixing,), {'num_tokens': tokens})


def norm_json(kind, bias, eps):
    return {'type': kind, 'bias': bias, 'eps': eps}


def families():
    """(name, timm kwargs, our config, input shape) for each family."""
    ln_nb = norm_json('layer_norm', False, 1e-6)
    base_cfg = {
        'in_chans': 3, 'num_classes': NUM_CLASSES, 'depths': list(DEPTHS), 'dims': list(DIMS),
        'mlp': {'act': 'starrelu', 'bias': False, 'ratio': 4},
        'layer_scale_init': None, 'res_scale_init': [None, None, 1.0, 1.0],
        'stem': {'kernel_size': 7, 'stride': 4, 'padding': 2, 'norm': ln_nb},
        'downsample': {'kernel_size': 3, 'stride': 2, 'padding': 1, 'norm': ln_nb},
        'head': {'type': 'mlp'},
    }
    v1 = dict(base_cfg, mixers='pooling', norms=norm_json('group_norm1', True, 1e-5),
              mlp={'act': 'gelu', 'bias': True, 'ratio': 4}, layer_scale_init=1e-5, res_scale_init=None,
              stem={'kernel_size': 7, 'stride': 4, 'padding': 2, 'norm': None},
              downsample={'kernel_size': 3, 'stride': 2, 'padding': 1, 'norm': None}, head={'type': 'linear'})
    yield ('poolformer', dict(token_mixers=Pooling, norm_layers=GroupNorm1, mlp_act=nn.GELU, mlp_bias=True,
                              layer_scale_init_values=1e-5, res_scale_init_values=None, downsample_norm=None,
                              use_mlp_head=False), v1, INPUT_NCHW)
    yield ('poolformerv2', dict(token_mixers=Pooling, norm_layers=GroupNorm1NoBias, use_mlp_head=False),
           dict(base_cfg, mixers='pooling', norms=norm_json('group_norm1', False, 1e-6), head={'type': 'linear'}),
           INPUT_NCHW)
    yield ('convformer', dict(token_mixers=SepConv, norm_layers=LayerNorm2dNoBias),
           dict(base_cfg, mixers='sepconv', norms=ln_nb), INPUT_NCHW)
    att = {'type': 'attention', 'head_dim': HEAD_DIM}
    yield ('caformer', dict(token_mixers=[SepConv, SepConv, Attention, Attention],
                            norm_layers=[LayerNorm2dNoBias] * 2 + [LayerNormNoBias] * 2, head_dim=HEAD_DIM),
           dict(base_cfg, mixers=['sepconv', 'sepconv', att, att], norms=ln_nb), INPUT_NCHW)
    yield ('identityformer', dict(token_mixers=nn.Identity, norm_layers=GroupNorm1NoBias, use_mlp_head=False),
           dict(base_cfg, mixers='identity', norms=norm_json('group_norm1', False, 1e-6), head={'type': 'linear'}),
           INPUT_NCHW)
    # RandFormer's token matrices fix the input size: 64x64 -> stages 16x16, 8x8, 4x4, 2x2.
    yield ('randformer', dict(token_mixers=[nn.Identity, nn.Identity, random_mixing(16), random_mixing(4)],
                              norm_layers=GroupNorm1NoBias, use_mlp_head=False),
           dict(base_cfg, mixers=['identity', 'identity', 'random', 'random'],
                norms=norm_json('group_norm1', False, 1e-6), head={'type': 'linear'}, input={'size': 64}),
           (2, 3, 64, 64))


def randomize(model, gen):
    """Random values for every parameter, scaled so that activations stay O(1) through the net."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit('.', 1)[-1]
            if 'random_matrix' in name:
                p.copy_(torch.softmax(torch.rand(p.shape, generator=gen), dim=-1))
            elif leaf == 'weight' and p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in ** 0.5)
            elif leaf == 'weight':        # norm weights
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif leaf == 'bias' and p.numel() == 1:   # StarReLU bias
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif leaf == 'bias':
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif leaf == 'scale' and p.numel() == 1:  # StarReLU scale
                p.copy_(0.8 + 0.4 * torch.rand(p.shape, generator=gen))
            elif leaf in ('scale', 'gamma'):          # layer / res scale
                p.copy_(0.3 + 0.7 * torch.rand(p.shape, generator=gen))
            else:
                raise ValueError(f'no rule for parameter {name}')


def run_family(out_dir, name, kwargs, cfg, shape, seed):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = MetaFormer(depths=DEPTHS, dims=DIMS, num_classes=NUM_CLASSES, **kwargs).eval()
    randomize(model, gen)
    x = torch.randn(shape, generator=gen)
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(d, 'weights.safetensors'))
    m64 = model.double()
    with torch.no_grad():
        acts = {'input': x}
        h = m64.stem(x.double())
        acts['stem'] = h
        for i, stage in enumerate(m64.stages):
            h = stage(h)
            acts[f'stages.{i}'] = h
        acts['logits'] = m64.forward_head(h)
    save_file({k: v.float().contiguous() for k, v in acts.items()}, os.path.join(d, 'io.safetensors'))
    cfg = dict(cfg, name=f'golden_{name}')
    with open(os.path.join(d, 'config.json'), 'w') as f:
        json.dump(cfg, f, indent=2)
    n = sum(p.numel() for p in model.parameters())
    print(f'{name}: {n} params, logits {tuple(acts["logits"].shape)}, |logits| {acts["logits"].abs().max():.3f}')


def write_labels(out_dir):
    """src/io/imagenet_classes.inc: the class descriptions as a C++ array."""
    from timm.data import ImageNetInfo
    info = ImageNetInfo()
    with open(os.path.join(out_dir, 'imagenet_classes.inc'), 'w') as f:
        f.write('// ImageNet-1k class descriptions in index order, as timm 1.0.29 gives them\n')
        f.write('// (timm.data.ImageNetInfo().index_to_description), written by tools/golden/make_golden.py.\n')
        f.write('const std::array<const char*, 1000> kImagenetClasses{\n')
        for i in range(1000):
            text = info.index_to_description(i).replace('\\', '\\\\').replace('"', '\\"')
            f.write(f'    "{text}",\n')
        f.write('};\n')


def write_preprocess(out_dir, images):
    from PIL import Image
    from timm.data import create_transform
    settings = {
        'crop100_bicubic': dict(input_size=(3, 224, 224), crop_pct=1.0, interpolation='bicubic'),
        'crop090_bicubic': dict(input_size=(3, 224, 224), crop_pct=0.9, interpolation='bicubic'),
        'crop095_bilinear_160': dict(input_size=(3, 160, 160), crop_pct=0.95, interpolation='bilinear'),
        'squash_100_bicubic': dict(input_size=(3, 192, 192), crop_pct=1.0, interpolation='bicubic',
                                   crop_mode='squash'),
    }
    d = os.path.join(out_dir, 'preprocess')
    os.makedirs(d, exist_ok=True)
    for path in images:
        img = Image.open(path).convert('RGB')
        tensors = {}
        for key, kw in settings.items():
            t = create_transform(**kw, is_training=False)
            tensors[key] = t(img).contiguous()
        base = os.path.splitext(os.path.basename(path))[0]
        save_file(tensors, os.path.join(d, base + '.safetensors'))
        print(f'preprocess {path}: {img.size}')


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    print(f'torch {torch.__version__}, timm {timm.__version__}')
    for seed, (name, kwargs, cfg, shape) in enumerate(families()):
        run_family(out_dir, name, kwargs, cfg, shape, seed=1000 + seed)
    write_labels(out_dir)
    if len(sys.argv) > 2:
        write_preprocess(out_dir, sys.argv[2:])


if __name__ == '__main__':
    main()
