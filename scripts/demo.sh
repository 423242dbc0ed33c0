#!/usr/bin/env bash
# The main job on the embedded default: verify this build against timm's outputs for every bundled
# model family, show a zoo model, and time it.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== metaformer verify: this build against timm (float64 reference), bundled golden models"
build/metaformer verify tests/data/golden/*/
echo
echo "== metaformer info --model caformer_s18"
build/metaformer info --model caformer_s18 --depth 1
echo
echo "== metaformer bench --model caformer_s18 --batch 1 (random weights)"
build/metaformer bench --model caformer_s18 --batch 1 --runs 5 --warmup 2
