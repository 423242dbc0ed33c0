#!/usr/bin/env bash
# The MetaFormer Baselines experiment of docs/experiments/, redone on one GPU with a budget at which a
# ranking can mean something: Fashion-MNIST resized to 64×64 (a 32×32 token grid in the first stage),
# 9 epochs of all 60 000 training images at batch 128 (4 212 steps per run: 22× the CPU run's 188,
# and 44× its images), the full 10 000-image test set, two seeds, every mixer that has GPU backward
# passes. About 35 minutes on one H200 (37–122 s of training a run, plus data loading and evaluation;
# docs/experiments/README.md).
# Run folders go to $RUNS (default runs/compare_fmnist_gpu); the report and plots are copied to
# $DOCS (default docs/experiments/fmnist_gpu). Re-running skips finished runs and resumes interrupted
# ones (same settings); extra arguments go to compare.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-build/metaformer}
RUNS=${RUNS:-runs/compare_fmnist_gpu}
DOCS=${DOCS:-docs/experiments/fmnist_gpu}
# The papers' five first (identity < random < pooling < sepconv <= sepconv+attention), then the
# other mixers of the CPU experiment. identity+identity+random is the closest this three-stage base
# gets to the paper's RandFormer (identity mixing first, random mixing only late).
MIXERS=${MIXERS:-identity,random,identity+identity+random,pooling,sepconv,sepconv+sepconv+attention,gated_cnn,token_mlp,spatial_mlp,spatial_gating,global_filter,aff,axial_mlp,wavelet}

"$BIN" compare --base configs/compare_fmnist.json --mixers "$MIXERS" \
  --data fashion-mnist:64 --backend cuda --epochs 9 --batch 128 --lr 2e-3 --seeds 2 --workers 8 \
  --no-progress "$@" --out "$RUNS"

mkdir -p "$DOCS"
cp "$RUNS"/{report.md,results.json,accuracy_vs_macs.svg,accuracy_vs_latency.svg,curves.svg} "$DOCS/"
