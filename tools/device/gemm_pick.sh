#!/usr/bin/env bash
# One device call of about 5 minutes (tools/device/cuda_bundle.sh build/cuda-device first; OUT set):
# the GEMM algorithm bench (tools/device/gemm_algos.sh: $OUT/gemm_algos.md), then the engine built
# (metaformer only) and 40-step bf16 training of PICK_MODELS (poolformer_s12) with
# METAFORMER_CUDA_GEMM_PICK=first and =timed, alternating, PICK_ROUNDS (2) rounds ($OUT/pick_ab.log),
# the two runs' weights compared byte for byte, and one run with timed-verbose listing each
# choice ($OUT/pick_choices.log). NO_BENCH=1 skips the bench.
set -uo pipefail
: "${OUT:?set OUT}"
export PATH=/usr/local/cuda/bin:$PATH
cd "$(dirname "$0")/../.."
[ "${NO_BENCH:-0}" = 1 ] || bash tools/device/gemm_algos.sh
BUILD_TARGETS="metaformer" bash build/cuda-device/cuda_check.sh build > "$OUT/build.log" 2>&1
echo "build rc=$?" >> "$OUT/build.log"
M=/tmp/mfb/metaformer
train() {  # MODEL PICK [extra env]
  rm -rf /tmp/pk
  env METAFORMER_CUDA_GEMM_PICK="$2" timeout 90 "$M" train -m "$1" --data synthetic:7680 --batch 128 --epochs 1 \
    --max-steps 40 --backend cuda --dtype bf16 --workers 8 --eval-subset 128 --no-progress --out /tmp/pk > /tmp/pk.log 2>&1
  echo "$1 GEMM_PICK=$2: rc $?, $(grep -o '"steady_images_per_s": *[0-9.]*' /tmp/pk/metrics.jsonl | tail -1),"\
    "$(grep -o '"train_loss": *[0-9.]*' /tmp/pk/metrics.jsonl | tail -1)"
  cp /tmp/pk/model.safetensors "/tmp/pk_$1_$2.safetensors" 2>/dev/null
}
{
  for round in $(seq "${PICK_ROUNDS:-2}"); do
    for m in ${PICK_MODELS:-poolformer_s12}; do train "$m" first; train "$m" timed; done
  done
  for m in ${PICK_MODELS:-poolformer_s12}; do  # the same bits by construction: the weights after 40 steps
    if [ ! -f "/tmp/pk_${m}_first.safetensors" ] || [ ! -f "/tmp/pk_${m}_timed.safetensors" ]; then
      echo "$m: no checkpoint to compare"
    elif cmp -s "/tmp/pk_${m}_first.safetensors" "/tmp/pk_${m}_timed.safetensors"; then echo "$m: the same weights"
    else echo "$m: the weights DIFFER"; fi
  done
} > "$OUT/pick_ab.log" 2>&1
m=${PICK_MODELS:-poolformer_s12}; m=${m%% *}
train "$m" timed-verbose >> "$OUT/pick_ab.log" 2>&1
grep "gemm pick" /tmp/pk.log > "$OUT/pick_choices.log"
