#!/usr/bin/env python3
"""A tiny image folder for smoke-training zoo models (3 classes x 4 random 80x96 PNGs).

Usage: python3 make_image_folder.py DIR
"""
import os
import sys

import numpy as np
from PIL import Image


def main():
    root = sys.argv[1]
    rng = np.random.default_rng(0)
    for c in ('apples', 'boats', 'clouds'):
        os.makedirs(os.path.join(root, c), exist_ok=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(os.path.join(root, c, f'{i}.png'))


if __name__ == '__main__':
    main()
