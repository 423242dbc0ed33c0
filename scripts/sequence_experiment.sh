#!/usr/bin/env bash
# The sequence experiment of docs/experiments/sequences.md: seven token mixers (identity, pooling,
# attention, Mamba's S6, Hydra's bidirectional SSM, PoNet's pooling, PatchTSMixer's time MLP) in the
# same 1-D MetaFormer, two seeds each, on ListOps (classification) and on two real series (weekly
# CO2 and yearly sunspots, forecasting), with short schedules (about 40 minutes on a 2-core machine).
# Run folders go to runs/ (not committed); reports and plots are copied to docs/experiments/<task>/.
# Re-running skips finished runs (trained with the same settings); extra arguments go to every command
# (e.g. --remeasure to time inference again on a quiet machine). The series come with Debian's
# python3-statsmodels, which this script installs (scripts/deps.sh) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh python3-statsmodels
BIN=${BIN:-build/metaformer}
THREADS=${THREADS:-2}
MIXERS=identity,pooling,attention,s6,hydra,ponet,time_mlp
COMMON=(--mixers "$MIXERS" --seeds 2 --lr 1e-3 --threads "$THREADS" --no-progress "$@")

"$BIN" compare --base configs/compare_co2.json --data co2 --epochs 10 --batch 32 "${COMMON[@]}" --out runs/compare_co2
"$BIN" compare --base configs/compare_sunspots.json --data sunspots --epochs 30 --batch 16 "${COMMON[@]}" \
  --out runs/compare_sunspots
"$BIN" compare --base configs/compare_listops.json --data listops-256 --epochs 6 --batch 32 "${COMMON[@]}" \
  --out runs/compare_listops

for task in co2 sunspots; do
  mkdir -p "docs/experiments/$task"
  cp "runs/compare_$task"/{report.md,results.json,mse_vs_macs.svg,mse_vs_latency.svg,curves.svg} "docs/experiments/$task/"
done
mkdir -p docs/experiments/listops
cp runs/compare_listops/{report.md,results.json,accuracy_vs_macs.svg,accuracy_vs_latency.svg,curves.svg} \
  docs/experiments/listops/
