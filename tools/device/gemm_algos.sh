#!/usr/bin/env bash
# One short device call (no cmake build; about a minute with a cold start): cuBLASLt's algorithms for
# the MLP's training products timed against each other (bench/cuda_dev/gemm_algos.cpp), at the widths
# and token counts of poolformer_s12's stages (the S12/S18 MetaFormers': 64, 128, 320, 512 channels
# on 56², 28², 14², 7² tokens) and batch GEMM_BATCH (128). Writes $OUT/gemm_algos.md.
#   export OUT; bash tools/device/gemm_algos.sh
set -uo pipefail
: "${OUT:?set OUT}"
export PATH=/usr/local/cuda/bin:$PATH
cd "$(dirname "$0")/../.."
nvcc -O2 -std=c++17 -arch=sm_90 -Isrc -o /tmp/mf_gemm_algos bench/cuda_dev/gemm_algos.cpp -lcublasLt > "$OUT/gemm_algos.md" 2>&1 ||
  { echo "nvcc failed"; exit 1; }
timeout 300 /tmp/mf_gemm_algos --batch "${GEMM_BATCH:-128}" --dims 64,128,320,512 --tokens 3136,784,196,49 \
  --algos "${GEMM_ALGOS:-16}" --only "${GEMM_ONLY:-fwd,dgelu,dgelu_bgrad,dx1,dw2}" >> "$OUT/gemm_algos.md" 2>&1
echo "rc=$?" >> "$OUT/gemm_algos.md"
