#!/usr/bin/env bash
# One device call of about 550 s (tools/device/cuda_bundle.sh build/cuda-device first; OUT set): the
# folded layer scales (METAFORMER_CUDA_FOLD_LS=1) checked and timed, then issue 13's training side by
# side with them on:
#   run.log       the build, then cuda_check.sh foldls with SC_QUICK=1: op cases (grad and test, bf16
#                 and fp32) with the switch on, and 40-step bf16 training images/s, off against on
#   golden.log    the training goldens of PoolFormer on the GPU with it on (gradients and three AdamW
#                 steps against PyTorch float64), and FoldedLayerScales.*OnTheGpu (one step's
#                 gradients folded and not, fp32, to 1e-5)
#   memcheck.log  compute-sanitizer memcheck on the folded ops' bf16 grad cases
#   trainsbs.md   bench/gpu_train_side_by_side.py --compile --no-fp32 --no-matmul-bf16 (SBS_MODELS)
set -uo pipefail
: "${OUT:?set OUT}"
export PATH=/usr/local/cuda/bin:$PATH
st=build/cuda-device
AB_STEPS=${AB_STEPS:-40} BUILD_TARGETS="metaformer test-backend-ops mf_tests" SC_QUICK=1 \
  bash "$st/cuda_check.sh" build foldls > "$OUT/run.log" 2>&1
export METAFORMER_CUDA_FOLD_LS=1
timeout 120 /tmp/mfb/tests/mf_tests --gtest_filter='*TrainGolden*poolformer_cuda*:*FoldedLayerScales*' > "$OUT/golden.log" 2>&1
echo "golden rc=$?" >> "$OUT/golden.log"
timeout 90 compute-sanitizer --tool memcheck --error-exitcode 9 /tmp/mfb/tests/test-backend-ops --backend cuda \
  --dtype bf16 --mode grad --op pool_branch_train,mlp_train_scaled > "$OUT/memcheck.log" 2>&1
echo "memcheck rc=$?" >> "$OUT/memcheck.log"
cd /tmp/mfsrc && timeout "${SBS_TIMEOUT:-330}" python3 bench/gpu_train_side_by_side.py --metaformer /tmp/mfb/metaformer \
  --compile --no-fp32 --no-matmul-bf16 --models "${SBS_MODELS:-poolformer_s12,caformer_s18,mambaout_femto,convformer_s18}" \
  > "$OUT/trainsbs.md" 2>&1
echo "sbs rc=$?" >> "$OUT/trainsbs.md"
