#!/usr/bin/env bash
# The MetaFormer Baselines experiment of docs/experiments/: every token mixer of the engine in the same
# MetaFormer, two seeds, on the synthetic long-range task and on Fashion-MNIST, with short schedules
# (about 30 minutes on a quiet 2-core machine). Run folders go to runs/ (not committed); the reports and
# plots are copied to docs/experiments/<task>/. Re-running skips finished runs (trained with the same settings); extra arguments go to
# both commands (e.g. --remeasure to time inference again on a quiet machine).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=build/metaformer
THREADS=${THREADS:-2}
COMMON=(--seeds 2 --batch 64 --lr 2e-3 --threads "$THREADS" --no-progress "$@")

"$BIN" compare --base configs/compare_long_range.json \
  --mixers identity,random,pooling,sepconv,attention,gated_cnn,token_mlp,spatial_mlp,spatial_gating,global_filter,aff,axial_mlp,wavelet \
  --data long-range --epochs 4 --subset 10000 --eval-subset 4000 "${COMMON[@]}" --out runs/compare_long_range

"$BIN" compare --base configs/compare_fmnist.json \
  --mixers identity,random,pooling,sepconv,sepconv+sepconv+attention,gated_cnn,token_mlp,spatial_mlp,spatial_gating,global_filter,aff,axial_mlp,wavelet \
  --data fashion-mnist --epochs 2 --subset 6000 --eval-subset 3000 "${COMMON[@]}" --out runs/compare_fmnist

for task in long_range fmnist; do
  mkdir -p "docs/experiments/$task"
  cp "runs/compare_$task"/{report.md,results.json,accuracy_vs_macs.svg,accuracy_vs_latency.svg,curves.svg} \
    "docs/experiments/$task/"
done
