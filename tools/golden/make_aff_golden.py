#!/usr/bin/env python3
"""Reference outputs and gradients of AFFNet's adaptive frequency filter, from its official definition.

The filter (microsoft/TokenMixers, "Adaptive Frequency Filters", class AFNO2D_channelfirst; spec
section 8.1) written here with torch.fft — our own code, from the spec, not the repository's — run in
float64 on the CPU with random weights. For each case it stores (NHWC where an image):

  case{k}.x [B, H, W, C], case{k}.w1 / .w2 [2, nb, bs, bs], case{k}.b1 / .b2 [2, nb, bs],
  case{k}.y [B, H, W, C]  (the filter's output, its own skip included),
  case{k}.g [B, H, W, C]  (a random cotangent), and the gradients of sum(y * g):
  case{k}.grad.x, case{k}.grad.w1, case{k}.grad.b1, case{k}.grad.w2, case{k}.grad.b2 (float32)

Activation ReLU (the argparse default of the official code), soft-shrink threshold 0.01.

Usage: python3 make_aff_golden.py OUT.safetensors     (needs torch and safetensors only)
"""
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

CASES = [  # B, C, H, W, num_blocks
    (2, 16, 7, 7, 8),
    (2, 16, 8, 6, 8),
    (1, 24, 5, 9, 4),
]
LAMBDA = 0.01


def aff(x, w1, b1, w2, b2):
    """x: NCHW. Returns irfft2(M * rfft2(x)) + x, M from a block-diagonal complex two-layer MLP."""
    B, C, H, W = x.shape
    nb, bs = w1.shape[1], w1.shape[2]
    spec = torch.fft.rfft2(x, dim=(2, 3), norm='ortho')
    z = spec.reshape(B, nb, bs, H, W // 2 + 1)

    def mix(re, im, w, b):  # y[o] = sum_i x[i] W[k, i, o], complex
        out_re = torch.einsum('bkihw,kio->bkohw', re, w[0]) - torch.einsum('bkihw,kio->bkohw', im, w[1])
        out_im = torch.einsum('bkihw,kio->bkohw', im, w[0]) + torch.einsum('bkihw,kio->bkohw', re, w[1])
        return out_re + b[0][None, :, :, None, None], out_im + b[1][None, :, :, None, None]

    o1_re, o1_im = mix(z.real, z.imag, w1, b1)
    o1_re, o1_im = F.relu(o1_re), F.relu(o1_im)
    o2_re, o2_im = mix(o1_re, o1_im, w2, b2)
    mask = torch.complex(F.softshrink(o2_re, LAMBDA), F.softshrink(o2_im, LAMBDA)).reshape(B, C, H, W // 2 + 1)
    return torch.fft.irfft2(mask * spec, s=(H, W), dim=(2, 3), norm='ortho') + x


def main():
    out = {}
    gen = torch.Generator().manual_seed(4242)
    for k, (B, C, H, W, nb) in enumerate(CASES):
        bs = C // nb
        # Scales that keep the mask's pre-activations O(1) and away from being all shrunk to zero.
        x = torch.randn((B, H, W, C), generator=gen).float()
        w1 = (torch.randn((2, nb, bs, bs), generator=gen) / bs ** 0.5).float()
        b1 = (0.1 * torch.randn((2, nb, bs), generator=gen)).float()
        w2 = (torch.randn((2, nb, bs, bs), generator=gen) / bs ** 0.5).float()
        b2 = (0.1 * torch.randn((2, nb, bs), generator=gen)).float()
        g = torch.randn((B, H, W, C), generator=gen).float()
        leaves = {n: t.double().requires_grad_(True) for n, t in dict(x=x, w1=w1, b1=b1, w2=w2, b2=b2).items()}
        y = aff(leaves['x'].permute(0, 3, 1, 2), leaves['w1'], leaves['b1'], leaves['w2'], leaves['b2'])
        y = y.permute(0, 2, 3, 1)
        (y * g.double()).sum().backward()
        for n, t in dict(x=x, w1=w1, b1=b1, w2=w2, b2=b2, g=g).items():
            out[f'case{k}.{n}'] = t.contiguous()
        out[f'case{k}.y'] = y.detach().float().contiguous()
        for n, t in leaves.items():
            out[f'case{k}.grad.{n}'] = t.grad.float().contiguous()
        print(f'case {k}: B={B} C={C} H={H} W={W} blocks={nb}: |y| {y.abs().max().item():.3f}')
    save_file(out, sys.argv[1])


if __name__ == '__main__':
    main()
