#!/usr/bin/env python3
"""Golden files for the token-mixer families of timm beyond metaformer.py: MambaOut (mambaout.py) and
MLP-Mixer, gMixer, ResMLP and gMLP (mlp_mixer.py).

As make_golden.py (same layout, same randomisation idea): for each family a small model built with
timm's own classes, every parameter random, run in float64 on the CPU. Writes OUT_DIR/<family>/:

  config.json          the same model as a metaformer.cpp JSON description
  weights.safetensors  model.state_dict() (float32, timm's key names)
  io.safetensors       "input" (NCHW), "stem", "stages.0".."stages.3" (MambaOut) or "blocks" (the
                       isotropic models), all as NCHW, and "logits"; float32 from the float64 run
  train.safetensors    as make_train_golden.py: a batch, the label-smoothed loss, every parameter's
                       gradient, PyTorch's own float32 gradient error, and three AdamW steps

Usage (wherever torch and timm 1.0.x are installed):  python3 make_golden_mixers.py OUT_DIR
"""
import json
import os
import sys
from functools import partial

import torch
import torch.nn as nn
from safetensors.torch import save_file

import timm
from timm.models.mambaout import MambaOut
from timm.models.mlp_mixer import MlpMixer, ResBlock, SpatialGatingBlock, Affine
from timm.layers import GluMlp, GatedMlp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_train_golden import adamw_losses  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False

NUM_CLASSES = 10
LABEL_SMOOTHING = 0.1  # as make_train_golden.py


def ln(eps=1e-6, bias=True):
    return {'type': 'layer_norm', 'bias': bias, 'eps': eps}


def families():
    """(name, constructor, our config, input shape, train input shape, intermediates)."""
    depths, dims = [1, 1, 2, 1], [16, 24, 40, 48]
    conv = {'kernel_size': 3, 'stride': 2, 'padding': 1, 'norm': ln()}
    mamba = {
        'in_chans': 3, 'num_classes': NUM_CLASSES, 'depths': depths, 'dims': dims, 'block': 'mambaout',
        'mixers': 'gated_cnn', 'norms': ln(), 'layer_scale_init': None, 'res_scale_init': None,
        'stem': dict(conv, type='two_conv', mid_norm=True, act='gelu'),
        'downsample': dict(conv, norm_after=True),
        'head': {'type': 'mambaout_mlp', 'norm': ln(), 'mlp_ratio': 4, 'act': 'gelu', 'mlp_norm': ln()},
    }
    stages = ['stem'] + [f'stages.{i}' for i in range(4)]
    yield ('mambaout', lambda: MambaOut(num_classes=NUM_CLASSES, depths=depths, dims=dims), mamba,
           (2, 3, 61, 47), (4, 3, 40, 36), stages)
    # The rw variant with SiLU and a partial conv (conv_ratio 1.25, expansion 3): every option at once.
    mamba_rw = dict(mamba, mixers={'type': 'gated_cnn', 'expansion_ratio': 3.0, 'conv_ratio': 1.25, 'act': 'silu'},
                    layer_scale_init=1e-5, stem=dict(conv, type='two_conv', mid_norm=False, act='silu'),
                    downsample=dict(conv, norm_after=False),
                    head={'type': 'norm_mlp', 'norm': ln(), 'mlp_ratio': 4, 'act': 'gelu'})
    yield ('mambaout_rw', lambda: MambaOut(num_classes=NUM_CLASSES, depths=depths, dims=dims, expansion_ratio=3.0,
                                           conv_ratio=1.25, stem_mid_norm=False, downsample='conv_nf',
                                           ls_init_value=1e-6, act_layer='silu', head_fn='norm_mlp'),
           mamba_rw, (2, 3, 61, 47), (4, 3, 40, 36), stages)

    # Isotropic: 40x40 inputs, patch 8 -> a 5x5 token grid (25 tokens, 24 channels: N != C).
    size, patch, dim, blocks = 40, 8, 24, 2
    iso = {
        'in_chans': 3, 'num_classes': NUM_CLASSES, 'layout': 'isotropic', 'depths': [blocks], 'dims': [dim],
        'norms': ln(), 'mlp': {'act': 'gelu', 'bias': True, 'ratio': 4},
        'stem': {'type': 'patch', 'kernel_size': patch, 'stride': patch, 'padding': 0, 'norm': None},
        'head': {'type': 'token_norm_linear', 'norm': ln()}, 'input': {'size': size},
    }
    shape = (2, 3, size, size)
    common = dict(num_classes=NUM_CLASSES, img_size=size, patch_size=patch, num_blocks=blocks, embed_dim=dim)
    io = ['stem', 'blocks']
    yield ('mixer', lambda: MlpMixer(**common), dict(iso, block='mlp_mixer', mixers='token_mlp'), shape, shape, io)
    yield ('gmixer', lambda: MlpMixer(**common, mlp_ratio=(1.0, 4.0), mlp_layer=GluMlp, act_layer=nn.SiLU),
           dict(iso, block='mlp_mixer', mixers={'type': 'token_mlp', 'ratio': 1.0, 'glu': True},
                mlp={'act': 'silu', 'bias': True, 'ratio': 4, 'glu': True}), shape, shape, io)
    yield ('resmlp', lambda: MlpMixer(**common, mlp_ratio=4, block_layer=partial(ResBlock, init_values=1e-4),
                                      norm_layer=Affine),
           dict(iso, block='resmlp', mixers='spatial_mlp', norms='affine', layer_scale_init=1e-4,
                head={'type': 'token_norm_linear', 'norm': 'affine'}), shape, shape, io)
    yield ('gmlp', lambda: MlpMixer(**common, mlp_ratio=6, block_layer=SpatialGatingBlock, mlp_layer=GatedMlp),
           dict(iso, block='gmlp', mixers='spatial_gating'), shape, shape, io)


def randomize(model, gen):
    """Random values for every parameter, scaled so that activations stay O(1) through the net."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit('.', 1)[-1]
            if leaf == 'weight' and p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5)
            elif leaf in ('weight', 'alpha'):   # norm weights, Affine's scale
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif leaf in ('bias', 'beta'):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif leaf in ('gamma', 'ls1', 'ls2'):   # layer scales
                p.copy_(0.3 + 0.7 * torch.rand(p.shape, generator=gen))
            else:
                raise ValueError(f'no rule for parameter {name}')


def nchw(t):
    """timm's NHWC (MambaOut) or [B, N, C] token (mlp_mixer) tensors as NCHW."""
    return t.permute(0, 3, 1, 2)


def forward_io(model, name, x):
    acts = {'input': x}
    with torch.no_grad():
        if isinstance(model, MambaOut):
            h = model.stem(x.double())
            acts['stem'] = nchw(h)
            for i, stage in enumerate(model.stages):
                h = stage(h)
                acts[f'stages.{i}'] = nchw(h)
            acts['logits'] = model.forward_head(h)
        else:
            grid = model.stem.grid_size
            h = model.stem(x.double())
            acts['stem'] = nchw(h.reshape(h.shape[0], grid[0], grid[1], -1))
            h = model.blocks(h)
            acts['blocks'] = nchw(h.reshape(h.shape[0], grid[0], grid[1], -1))
            acts['logits'] = model.forward_head(model.norm(h))
    return acts


def train_golden(make, weights, shape, seed):
    gen = torch.Generator().manual_seed(seed)
    model = make()
    model.load_state_dict(weights, strict=True)
    model = model.double().train()
    x = torch.randn(shape, generator=gen, dtype=torch.float64).float()
    y = torch.randint(0, NUM_CLASSES, (shape[0],), generator=gen)
    crit = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    loss = crit(model(x.double()), y)
    loss.backward()
    out = {'input': x.contiguous(), 'labels': y.to(torch.int64), 'loss': loss.detach().float().reshape(1)}
    for n, p in model.named_parameters():
        if p.requires_grad:
            out['grad.' + n] = p.grad.float().contiguous()
    model32 = make()
    model32.load_state_dict(weights, strict=True)
    model32.train()
    crit(model32(x), y).backward()
    for (n, p), (_, p32) in zip(model.named_parameters(), model32.named_parameters()):
        if p.requires_grad:
            err = (p32.grad.double() - p.grad).norm() / p.grad.norm().clamp_min(1e-300)
            out['fp32_error.' + n] = err.float().reshape(1)
    losses = adamw_losses(model, crit, x, y)
    out['losses'] = torch.tensor(losses, dtype=torch.float32)
    return out, losses


def main():
    out_dir = sys.argv[1]
    print(f'torch {torch.__version__}, timm {timm.__version__}')
    for i, (name, make, cfg, shape, train_shape, _) in enumerate(families()):
        torch.manual_seed(3000 + i)
        gen = torch.Generator().manual_seed(3000 + i)
        model = make().eval()
        randomize(model, gen)
        x = torch.randn(shape, generator=gen)
        d = os.path.join(out_dir, name)
        os.makedirs(d, exist_ok=True)
        weights = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(weights, os.path.join(d, 'weights.safetensors'))
        acts = forward_io(model.double(), name, x)
        save_file({k: v.float().contiguous() for k, v in acts.items()}, os.path.join(d, 'io.safetensors'))
        with open(os.path.join(d, 'config.json'), 'w') as f:
            json.dump(dict(cfg, name=f'golden_{name}'), f, indent=2)
        train, losses = train_golden(make, weights, train_shape, 6000 + i)
        save_file(train, os.path.join(d, 'train.safetensors'))
        n = sum(p.numel() for p in model.parameters())
        print(f'{name}: {n} params, |logits| {acts["logits"].abs().max():.3f}, loss {train["loss"].item():.5f} '
              f'-> {losses[-1]:.5f} after 3 AdamW steps')


if __name__ == '__main__':
    main()
