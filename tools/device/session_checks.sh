#!/usr/bin/env bash
# One device call of about 600 s (tools/device/cuda_bundle.sh build/cuda-device first; OUT set) for the
# candidates waiting on a GPU, each checked before it is timed (all but COLSUM_FINISH=fused are on by
# default since their H100 run of 2026-12-07: the loop then checks the defaults, the A/B times 0 against
# them), then the training side by side of the
# models in SBS_MODELS (the folded layer scales' first run against torch.compile). With little time: QUICK=1, then
# SBS_ONLY=1 on the still-warm machine:
#   build.log     the build (metaformer, test-backend-ops, mf_tests)
#   checks.log    the op cases on cuda against the reference, bf16 and fp32, grad and test, with each
#                 switch on: the activation in the depthwise kernels (METAFORMER_CUDA_ACT_DW, on by
#                 default since 2026-12-07), the candidate column sums without a finish kernel
#                 (METAFORMER_CUDA_COLSUM_FINISH=fused) and the residual in training's last GEMMs
#                 (METAFORMER_CUDA_RES_LINEAR=1), the gated CNN's conv channels read and written where
#                 they lie (METAFORMER_CUDA_SLICE_DW=1), the depthwise weight gradient's finish by lanes
#                 (METAFORMER_CUDA_DW_FINISH=lanes), the attention backward from the forward's
#                 statistics (METAFORMER_CUDA_ATTN_STATS=1), the attention forward one CTA a sample
#                 and head (METAFORMER_CUDA_ATTN_FWD=head); the model-level gtests, with every candidate
#                 on; memcheck on the candidates' bf16 grad cases
#   ab.log        40-step bf16 training images/s with each candidate off and on (AB_ROUNDS rounds, 1):
#                 COLSUM_FINISH on mambaout_femto and poolformer_s12 (the most column sums a step);
#                 DW_FINISH serial → lanes (the depthwise weight gradient's finish by 32 lanes a
#                 weight) on mambaout_femto; RES_LINEAR (unscaled
#                 training halves' residual in the last GEMM) on caformer_s18 and mambaout_femto;
#                 SLICE_DW (MambaOut's conv channels without copies) on mambaout_femto; ATTN_STATS (the
#                 attention backward from the forward's log-sum-exps) on caformer_s18
#   trainsbs.md   bench/gpu_train_side_by_side.py --compile --no-fp32 --no-matmul-bf16 (SBS_MODELS, all four
#                 by default, SBS_TIMEOUT 330 s; SBS_ENV: switches for the engine's runs, e.g.
#                 "METAFORMER_CUDA_ACT_DW=1")
# QUICK=1: the build, the bf16 op cases and the gtests only (about 100 s on an H100).
# SBS_ONLY=1: only the side by side, on the binaries an earlier call of this machine built (/tmp/mfb).
# NO_SBS=1: everything but the side by side (the whole run can pass a call's 600 s: split it in two).
# FAST=1 (little device time, about 540 s with the A/B): no memcheck, and of the gtests only those with
# every candidate on (and the CudaTraining ones there).
# NO_AB=1: the build and the checks only; AB_ONLY=1: the A/B only, on an earlier call's binaries (then the
# side by side unless NO_SBS=1). Three calls on one warm machine: NO_AB=1, AB_ONLY=1 NO_SBS=1, SBS_ONLY=1.
set -uo pipefail
: "${OUT:?set OUT}"
export PATH=/usr/local/cuda/bin:$PATH
sbs() {
  cd /tmp/mfsrc && env ${SBS_ENV:-} timeout "${SBS_TIMEOUT:-330}" python3 bench/gpu_train_side_by_side.py \
    --metaformer /tmp/mfb/metaformer --compile --no-fp32 --no-matmul-bf16 \
    --models "${SBS_MODELS:-poolformer_s12,caformer_s18,mambaout_femto,convformer_s18}" > "$OUT/trainsbs.md" 2>&1
  echo "sbs rc=$?" >> "$OUT/trainsbs.md"
}
if [ "${SBS_ONLY:-0}" = 1 ]; then sbs; exit 0; fi
T=/tmp/mfb/tests/test-backend-ops
M=/tmp/mfb/metaformer
if [ "${AB_ONLY:-0}" != 1 ]; then
BUILD_TARGETS="metaformer test-backend-ops mf_tests" bash build/cuda-device/cuda_check.sh build > "$OUT/build.log" 2>&1
echo "build rc=$?" >> "$OUT/build.log"
{
  # CANDS: "VAR=VALUE|ops" entries, space-separated: the switches waiting on a GPU (the decided ones are
  # defaults now, checked by the gtests below); MF_DEFAULT_PATH=1 sets nothing: the defaults' op cases
  for cand in ${CANDS:-"MF_DEFAULT_PATH=1|attention,pool" "METAFORMER_CUDA_ATTN_FWD=head|attention" \
    "METAFORMER_CUDA_POOL_TAPS=unrolled|pool" "METAFORMER_CUDA_ATTN_BWD_DS=1|attention"}; do
    sw=${cand%%|*} ops=${cand#*|}
    for dt in bf16 $([ "${QUICK:-0}" = 1 ] || echo fp32); do
      for mode in grad test; do
        echo "== $sw $dt $mode ($ops)"
        env "$sw" timeout 60 "$T" --backend cuda --dtype $dt --mode $mode --op "$ops" 2>&1 | grep -E "FAIL|cases,|by input"
      done
    done
    [ "${QUICK:-0}" = 1 ] && continue
    [ "${FAST:-0}" = 1 ] && [ "${MEMCHECK:-0}" != 1 ] && continue  # MEMCHECK=1: the memcheck even with FAST=1
    env "$sw" timeout 90 compute-sanitizer --tool memcheck --error-exitcode 9 "$T" --backend cuda --dtype bf16 \
      --mode grad --op "$ops" > /tmp/mc.log 2>&1
    echo "memcheck $sw: rc=$? $(grep 'ERROR SUMMARY' /tmp/mc.log | tail -1)"
  done
  # The defaults: every CUDA gtest of the op cases, the goldens and training (not with FAST=1)
  [ "${FAST:-0}" = 1 ] || timeout 240 /tmp/mfb/tests/mf_tests \
    --gtest_filter='CudaBackend.*:CudaBackward.*:*TrainGolden*cuda*:CudaTraining.*' 2>&1 |
    grep -E "^\[ *(FAILED|PASSED|SKIPPED) |Failure" | sed 's/^/defaults: /' | head -60
  # The candidates together (a failure here is then bisected by a call of its own)
  METAFORMER_CUDA_ATTN_FWD=head METAFORMER_CUDA_POOL_TAPS=unrolled METAFORMER_CUDA_ATTN_BWD_DS=1 timeout 150 \
    /tmp/mfb/tests/mf_tests \
    --gtest_filter='*TrainGolden*cuda*:CudaTraining.*:*AttentionByHeads*:*UnrolledPoolTaps*:*PoolBranchStatistics*' 2>&1 |
    grep -E "^\[ *(FAILED|PASSED|SKIPPED) |Failure" | sed 's/^/candidates on: /'
} > "$OUT/checks.log" 2>&1
[ "${QUICK:-0}" = 1 ] && exit 0  # QUICK=1 (little device time): the build, bf16 op cases and the gtests only
[ "${NO_AB:-0}" = 1 ] && exit 0  # NO_AB=1: the build and the checks; the A/B in a second call (AB_ONLY=1)
fi
# images/s: model and switch, each off then on
ab_run() {  # MODEL VAR=VALUE
  rm -rf /tmp/ab
  env "$2" timeout 60 "$M" train -m "$1" --data synthetic:7680 --batch 128 --epochs 1 --max-steps 40 --backend cuda \
    --dtype bf16 --workers 8 --eval-subset 128 --no-progress --out /tmp/ab > /tmp/ab.log 2>&1
  echo "$1 $2: rc $?, $(grep -o '"steady_images_per_s": *[0-9.]*' /tmp/ab/metrics.jsonl | tail -1),"\
    "$(grep -o '"train_loss": *[0-9.]*' /tmp/ab/metrics.jsonl | tail -1)"
}
{
  for round in $(seq "${AB_ROUNDS:-1}"); do
    # AB_PAIRS: "model|VAR|off|on" pairs, space-separated, instead of these
    for pair in ${AB_PAIRS:-"caformer_s18|METAFORMER_CUDA_ATTN_FWD|tiles|head" "caformer_s18|METAFORMER_CUDA_ATTN_BWD_DS|0|1" \
      "poolformer_s12|METAFORMER_CUDA_POOL_TAPS|loop|unrolled"}; do
      IFS='|' read -r model var off on <<< "$pair"
      for v in "$off" "$on"; do ab_run "$model" "$var=$v"; done
    done
  done
} > "$OUT/ab.log" 2>&1
[ "${NO_SBS:-0}" = 1 ] && exit 0  # NO_SBS=1: the checks and the A/B; the side by side in a second call (SBS_ONLY=1)
sbs
