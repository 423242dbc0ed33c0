#!/usr/bin/env python3
"""Checks that checkpoints written by `metaformer train` load into timm unchanged.

For each RUN_DIR: builds timm's model of the run's name (with the run's classes and input channels),
loads RUN_DIR/model.safetensors with load_state_dict(strict=True), and compares timm's logits on a
random batch with those of `metaformer run` on the same weights (float32 CPU, TF32 irrelevant).
Prints a markdown table.

Usage: python3 check_timm_load.py METAFORMER_BINARY RUN_DIR...
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import timm
import torch
from safetensors.torch import load_file


def main():
    binary, runs = sys.argv[1], sys.argv[2:]
    print('| run | timm model | tensors | load_state_dict(strict=True) | logits rel. error vs timm |')
    print('|---|---|---:|---|---:|')
    failures = 0
    for run in runs:
        cfg = json.load(open(os.path.join(run, 'config.json')))
        name = cfg['name']
        model = timm.create_model(name, pretrained=False, num_classes=cfg['num_classes'], in_chans=cfg['in_chans'])
        state = load_file(os.path.join(run, 'model.safetensors'))
        try:
            model.load_state_dict(state, strict=True)
            status = 'ok'
        except RuntimeError as e:
            status = 'FAILED: ' + str(e).splitlines()[0]
            failures += 1
        err = float('nan')
        if status == 'ok':
            model.eval()
            size = cfg['input']['size']
            x = torch.randn(2, cfg['in_chans'], size, size, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                ref = model.double()(x.double()).float().numpy()
            with tempfile.TemporaryDirectory() as tmp:
                np.save(os.path.join(tmp, 'x.npy'), x.numpy())
                subprocess.run([binary, 'run', '--config', os.path.join(run, 'config.json'), '--weights',
                                os.path.join(run, 'model.safetensors'), '--input', os.path.join(tmp, 'x.npy'),
                                '--output', os.path.join(tmp, 'y.npy')], check=True, capture_output=True)
                ours = np.load(os.path.join(tmp, 'y.npy'))
            err = float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))
        print(f'| {os.path.basename(run)} | {name} | {len(state)} | {status} | {err:.2e} |')
    sys.exit(1 if failures else 0)


if __name__ == '__main__':
    main()
