#!/usr/bin/env bash
# One device call of about 600 s (tools/device/cuda_bundle.sh build/cuda-device first; OUT set) for the
# switches waiting on a GPU (CANDS, "VAR=VALUE|ops" entries), each checked before it is timed, then the
# training side by side of the models in SBS_MODELS. The three candidates of 2026-12-07 (ATTN_FWD=head,
# POOL_TAPS=unrolled, ATTN_BWD_DS=1) are defaults since that day's H200 run: the entries below check them
# (setting a default is harmless) and the A/B times the old kernel against them.
#   build.log     the build (metaformer, test-backend-ops, mf_tests)
#   checks.log    the op cases on cuda against the reference, bf16 and fp32, grad and test, with each
#                 switch; memcheck of each switch's bf16 grad cases; the CUDA gtests on the defaults
#                 (not with FAST=1), and the model-level gtests with every switch on
#   ab.log        40-step bf16 training images/s, each AB_PAIRS entry ("model|VAR|off|on") off then on
#                 (AB_ROUNDS rounds, 1)
#   trainsbs.md   bench/gpu_train_side_by_side.py --compile --no-fp32 --no-matmul-bf16 (SBS_MODELS, all four
#                 by default, SBS_TIMEOUT 330 s; SBS_ENV: switches for the engine's runs)
# QUICK=1: the build, the bf16 op cases and the gtests only (about 100 s on an H100).
# SBS_ONLY=1: only the side by side, on the binaries an earlier call of this machine built (/tmp/mfb).
# NO_SBS=1: everything but the side by side (the whole run can pass a call's 600 s: split it in two).
# FAST=1 (little device time; about 200 s with the A/B on a warm H200, 2026-12-07): no memcheck (unless
# MEMCHECK=1), and of the gtests only those with every switch on.
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
  # CANDS: "VAR=VALUE|ops" entries, space-separated; MF_DEFAULT_PATH=1 sets nothing: the defaults' op cases
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
    --gtest_filter='*TrainGolden*cuda*:CudaTraining.*:*AttentionByHeads*:*UnrolledPoolTaps*:*PoolBranchStatistics*' \
    2>&1 |
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
    for pair in ${AB_PAIRS:-"caformer_s18|METAFORMER_CUDA_ATTN_FWD|tiles|head" \
      "caformer_s18|METAFORMER_CUDA_ATTN_BWD_DS|0|1" \
      "poolformer_s12|METAFORMER_CUDA_POOL_TAPS|loop|unrolled"}; do
      IFS='|' read -r model var off on <<< "$pair"
      for v in "$off" "$on"; do ab_run "$model" "$var=$v"; done
    done
  done
} > "$OUT/ab.log" 2>&1
[ "${NO_SBS:-0}" = 1 ] && exit 0  # NO_SBS=1: the checks and the A/B; the side by side in a second call (SBS_ONLY=1)
sbs
