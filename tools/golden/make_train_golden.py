#!/usr/bin/env python3
"""Golden files for training: gradients and AdamW steps of timm's models, from PyTorch.

For each small model of make_golden.py (loaded from tests/data/golden/<family>/weights.safetensors so
that forward and training goldens share one set of weights), in float64 on the CPU, in train mode:
a batch of 4 random images with random labels, cross-entropy with label smoothing 0.1, the gradient
of every trainable parameter, then three steps of torch.optim.AdamW (lr 1e-3, weight decay 0.05 on
weights of rank >= 2 and not on biases, norms or scales: timm's param_groups_weight_decay), recording
the loss before each step and after the last. Writes tests/data/golden/<family>/train.safetensors:

  input [4, 3, H, W], labels [4] (int64), loss [1], grad.<parameter> (float32), losses [4],
  fp32_error.<parameter> [1]: the relative error of PyTorch's own float32 gradient of that parameter
  (same weights, same batch) against the float64 one: the noise floor of float32 arithmetic for it

Usage: python3 make_train_golden.py GOLDEN_DIR   (the folder holding the families' subfolders)
"""
import os
import sys

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_golden import DEPTHS, DIMS, NUM_CLASSES, MetaFormer, families  # noqa: E402

LABEL_SMOOTHING = 0.1
LR, WEIGHT_DECAY = 1e-3, 0.05


def adamw_losses(model, crit, x, y, steps=3):
    """Losses before each of `steps` AdamW steps and after the last, with timm's weight-decay groups
    (param_groups_weight_decay: no decay for tensors of rank <= 1 and for biases)."""
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim > 1 and not n.endswith('.bias')]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and (p.ndim <= 1 or n.endswith('.bias'))]
    opt = torch.optim.AdamW([{'params': no_decay, 'weight_decay': 0.0},
                             {'params': decay, 'weight_decay': WEIGHT_DECAY}], lr=LR)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        step_loss = crit(model(x.double()), y)
        losses.append(step_loss.item())
        step_loss.backward()
        opt.step()
    with torch.no_grad():
        losses.append(crit(model(x.double()), y).item())
    return losses


def main():
    golden = sys.argv[1]
    for i, (name, kwargs, cfg, shape) in enumerate(families()):
        model = MetaFormer(depths=DEPTHS, dims=DIMS, num_classes=NUM_CLASSES, **kwargs)
        model.load_state_dict(load_file(os.path.join(golden, name, 'weights.safetensors')), strict=True)
        model = model.double().train()
        gen = torch.Generator().manual_seed(5000 + i)
        h, w = (shape[2], shape[3]) if name == 'randformer' else (40, 36)
        x = torch.randn((4, 3, h, w), generator=gen, dtype=torch.float64).float()
        y = torch.randint(0, NUM_CLASSES, (4,), generator=gen)
        crit = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)

        loss = crit(model(x.double()), y)
        loss.backward()
        out = {'input': x.contiguous(), 'labels': y.to(torch.int64), 'loss': loss.detach().float().reshape(1)}
        for n, p in model.named_parameters():
            if p.requires_grad:
                out['grad.' + n] = p.grad.float().contiguous()

        # PyTorch's own float32 gradients: how far float32 arithmetic alone lands from float64.
        model32 = MetaFormer(depths=DEPTHS, dims=DIMS, num_classes=NUM_CLASSES, **kwargs)
        model32.load_state_dict(load_file(os.path.join(golden, name, 'weights.safetensors')), strict=True)
        model32.train()
        crit(model32(x), y).backward()
        for (n, p), (n32, p32) in zip(model.named_parameters(), model32.named_parameters()):
            assert n == n32
            if p.requires_grad:
                err = (p32.grad.double() - p.grad).norm() / p.grad.norm().clamp_min(1e-300)
                out['fp32_error.' + n] = err.float().reshape(1)

        losses = adamw_losses(model, crit, x, y)
        out['losses'] = torch.tensor(losses, dtype=torch.float32)
        save_file(out, os.path.join(golden, name, 'train.safetensors'))
        print(f'{name}: loss {loss.item():.6f}, after 3 AdamW steps {losses[-1]:.6f}')


if __name__ == '__main__':
    main()
