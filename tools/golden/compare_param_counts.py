#!/usr/bin/env python3
"""Compares the parameter count of every zoo model of `metaformer` with timm's model of that name.

Usage: python3 compare_param_counts.py path/to/metaformer   (prints a markdown table; exit 1 on a
mismatch). Models timm does not have (identityformer_*, randformer_*) are listed as such.
"""
import re
import subprocess
import sys

import timm
import torch


def main():
    binary = sys.argv[1]
    listing = subprocess.run([binary, 'info', '--list'], capture_output=True, text=True, check=True).stdout
    names = re.findall(r'^  (\w+)\s+[\d.]+ M params', listing, re.M)
    bad = 0
    known = set(timm.list_models())
    print('| model | metaformer.cpp | timm | |')
    print('| --- | ---: | ---: | --- |')
    for name in names:
        info = subprocess.run([binary, 'info', '--model', name, '--depth', '0'], capture_output=True, text=True,
                              check=True).stdout
        ours = int(re.search(r'\[(\d+) params\]', info).group(1))
        if name not in known:
            print(f'| {name} | {ours:,} | (not in timm) | |')
            continue
        with torch.device('meta'):
            theirs = sum(p.numel() for p in timm.create_model(name, pretrained=False).parameters())
        ok = ours == theirs
        bad += not ok
        print(f'| {name} | {ours:,} | {theirs:,} | {"equal" if ok else "DIFFERENT"} |', flush=True)
    sys.exit(1 if bad else 0)


if __name__ == '__main__':
    main()
