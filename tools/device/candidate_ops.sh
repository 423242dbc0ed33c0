#!/usr/bin/env bash
# The shortest device check of the candidates' new CUDA code (about 200 s on an H100, for a session
# with little device time left): builds test-backend-ops only, then runs the op cases of the new ops
# and of the ops each candidate switch changes, on cuda in bf16 (test and grad modes), with the
# switch set. Logs: $OUT/build.log, $OUT/ops.log. tools/device/cuda_bundle.sh build/cuda-device first.
set -uo pipefail
: "${OUT:?set OUT}"
export PATH=/usr/local/cuda/bin:$PATH
BUILD_TARGETS="test-backend-ops" bash build/cuda-device/cuda_check.sh build > "$OUT/build.log" 2>&1
echo "build rc=$?" >> "$OUT/build.log"
T=/tmp/mfb/tests/test-backend-ops
{
  for cand in "METAFORMER_CUDA_DEFAULTS=1|gated_conv,linear_residual,attention_training" \
    "METAFORMER_CUDA_ATTN_STATS=1|attention_training" "METAFORMER_CUDA_DW_FINISH=lanes|depthwise,gated_conv" \
    "METAFORMER_CUDA_COLSUM_FINISH=fused|linear,norm,depthwise,gated_conv"; do
    sw=${cand%%|*} ops=${cand#*|}
    for mode in test grad; do
      echo "== $sw bf16 $mode ($ops)"
      env "$sw" timeout 40 "$T" --backend cuda --dtype bf16 --mode $mode --op "$ops" 2>&1 | grep -E "FAIL|cases,"
    done
  done
} > "$OUT/ops.log" 2>&1
