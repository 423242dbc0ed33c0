#!/usr/bin/env bash
# The main job on the embedded default: verify this build against timm's outputs for every bundled
# model family, show a zoo model, and time it.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== metaformer verify: this build against timm (float64 reference), bundled golden models"
build/metaformer verify tests/data/golden/*/
echo
echo "== metaformer train: one epoch of a small MetaFormer on Fashion-MNIST (configs/fmnist_convformer.json)"
rm -rf runs/demo
build/metaformer train --config configs/fmnist_convformer.json --data fashion-mnist --epochs 1 --batch 64 \
  --lr 2e-3 --out runs/demo
echo
echo "== metaformer eval of the trained weights"
build/metaformer eval --config runs/demo/config.json --weights runs/demo/model.safetensors --data fashion-mnist
echo
echo "== metaformer bench --model caformer_s18 --batch 1 (random weights)"
build/metaformer bench --model caformer_s18 --batch 1 --runs 5 --warmup 2
