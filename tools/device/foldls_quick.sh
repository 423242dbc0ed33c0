#!/usr/bin/env bash
# The folded layer scales (METAFORMER_CUDA_FOLD_LS=1) in about 180 s of one device call, for a session
# with little device time left (foldls_sbs.sh is the full run): build, the folded ops' cases on cuda
# against the reference (grad and test, bf16 and fp32), PoolFormer's training golden with the switch
# on and FoldedLayerScales.*OnTheGpu, then 40-step bf16 training images/s of poolformer_s12, off and on, two rounds;
# GroupNorm's 16-byte cell sums (METAFORMER_CUDA_COLSUM=fvec): op cases and one more round. Logs under $OUT.
set -uo pipefail
: "${OUT:?set OUT}"
export PATH=/usr/local/cuda/bin:$PATH
BUILD_TARGETS="metaformer test-backend-ops mf_tests" bash build/cuda-device/cuda_check.sh build > "$OUT/build.log" 2>&1
T=/tmp/mfb/tests/test-backend-ops
for dt in bf16 fp32; do
  for mode in grad test; do
    echo "== $dt $mode"
    METAFORMER_CUDA_FOLD_LS=1 timeout 60 "$T" --backend cuda --dtype $dt --mode $mode --op pool_branch,mlp_train_scaled 2>&1 |
      grep -E "FAIL|cases,"
  done
done > "$OUT/ops.log" 2>&1
# GroupNorm's cell sums through their 16-byte view (METAFORMER_CUDA_COLSUM=fvec; not yet a default)
for dt in bf16 fp32; do
  echo "== COLSUM=fvec $dt grad"
  METAFORMER_CUDA_COLSUM=fvec timeout 60 "$T" --backend cuda --dtype $dt --mode grad --op group_norm1,pool_branch 2>&1 |
    grep -E "FAIL|cases,"
done >> "$OUT/ops.log" 2>&1
METAFORMER_CUDA_FOLD_LS=1 timeout 60 /tmp/mfb/tests/mf_tests --gtest_filter='*TrainGolden*poolformer_cuda*:*FoldedLayerScales*' \
  > "$OUT/golden.log" 2>&1
echo "golden rc=$?" >> "$OUT/golden.log"
for v in 0 1 0 1; do
  rm -rf /tmp/ab
  METAFORMER_CUDA_FOLD_LS=$v timeout 45 /tmp/mfb/metaformer train -m poolformer_s12 --data synthetic:7680 --batch 128 \
    --epochs 1 --max-steps 40 --backend cuda --dtype bf16 --workers 8 --eval-subset 128 --no-progress --out /tmp/ab \
    > /tmp/ab.log 2>&1
  echo "METAFORMER_CUDA_FOLD_LS=$v: rc $?, $(grep -o '"steady_images_per_s": *[0-9.]*' /tmp/ab/metrics.jsonl | tail -1),"\
    "$(grep -o '"train_loss": *[0-9.]*' /tmp/ab/metrics.jsonl | tail -1)"
done > "$OUT/ab.log" 2>&1
rm -rf /tmp/ab
METAFORMER_CUDA_FOLD_LS=1 METAFORMER_CUDA_COLSUM=fvec timeout 45 /tmp/mfb/metaformer train -m poolformer_s12 \
  --data synthetic:7680 --batch 128 --epochs 1 --max-steps 40 --backend cuda --dtype bf16 --workers 8 --eval-subset 128 \
  --no-progress --out /tmp/ab > /tmp/ab.log 2>&1
echo "METAFORMER_CUDA_FOLD_LS=1 METAFORMER_CUDA_COLSUM=fvec: rc $?,"\
  "$(grep -o '"steady_images_per_s": *[0-9.]*' /tmp/ab/metrics.jsonl | tail -1)" >> "$OUT/ab.log" 2>&1
