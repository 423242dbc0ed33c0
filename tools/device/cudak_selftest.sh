#!/usr/bin/env bash
# Builds the hand-written CUDA kernels (src/ops/cuda/kernels) with their standalone self-test
# (selftest.cu, its own main), runs it, then runs it again under compute-sanitizer's memcheck.
# Logs go to $OUT (the device tool's output folder), or ./cudak-out when OUT is unset.
#
# Usage: tools/device/cudak_selftest.sh [KERNEL_SRC_DIR]
#   KERNEL_SRC_DIR  the folder holding kernels.h and the .cu files (default src/ops/cuda/kernels)
#   NVCC            the compiler (default: nvcc on PATH, else /usr/local/cuda/bin/nvcc)
#   NVCC_EXTRA      extra nvcc flags (Debian's CUDA 11.8: NVCC=/usr/bin/nvcc NVCC_EXTRA="-ccbin clang++-14")
#   CUDAK_BIN       a self-test binary built beforehand (same flags): skips the build
#   CUDAK_BUILD_TO  build the self-test binary to this path and stop (no run, no memcheck)
# Build flags: sm_90 machine code plus compute_90 PTX, -O3, C++17, no fast math.
# Exit status: 0 when the self-test and memcheck both pass, 1 otherwise.
set -uo pipefail

SRC=${1:-src/ops/cuda/kernels}
OUT=${OUT:-$PWD/cudak-out}
mkdir -p "$OUT"
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
FLAGS=(-std=c++17 -O3 -lineinfo -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90)
# The kernels include a few project headers (core/bf16_bits.h): the src/ folder above them.
FLAGS+=(-I "$(cd "$SRC/../../.." && pwd)")
read -r -a EXTRA <<<"${NVCC_EXTRA:-}"
FLAGS+=("${EXTRA[@]}")

if [[ -n "${CUDAK_BIN:-}" ]]; then
  BIN=$CUDAK_BIN
  echo "using prebuilt $BIN"
else
  BUILD=$(mktemp -d)
  BIN=$BUILD/cudak_selftest
  echo "building with $("$NVCC" --version | tail -1)"
  pids=()
  for f in "$SRC"/*.cu; do
    "$NVCC" "${FLAGS[@]}" -Xptxas -v -c "$f" -o "$BUILD/$(basename "$f" .cu).o" >"$OUT/build_$(basename "$f" .cu).log" 2>&1 &
    pids+=($!)
  done
  ok=1
  for p in "${pids[@]}"; do wait "$p" || ok=0; done
  if [[ $ok == 0 ]]; then
    echo "build failed; see $OUT/build_*.log"
    cat "$OUT"/build_*.log | grep -i error | head -20
    exit 1
  fi
  "$NVCC" "${FLAGS[@]}" "$BUILD"/*.o -o "$BIN" || { echo "link failed"; exit 1; }
  if [[ -n "${CUDAK_BUILD_TO:-}" ]]; then
    cp "$BIN" "$CUDAK_BUILD_TO" && echo "built $CUDAK_BUILD_TO" && exit 0
    exit 1
  fi
fi

nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv,noheader 2>/dev/null | tee "$OUT/gpu.txt"

"$BIN" --perf 2>&1 | tee "$OUT/selftest.log"
selftest_rc=${PIPESTATUS[0]}
echo "selftest exit status: $selftest_rc"

SANITIZER=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
memcheck_rc=0
if [[ -x "$SANITIZER" ]]; then
  "$SANITIZER" --tool memcheck --leak-check full --error-exitcode 3 "$BIN" >"$OUT/memcheck.log" 2>&1
  memcheck_rc=$?
  tail -4 "$OUT/memcheck.log"
  echo "memcheck exit status: $memcheck_rc"
else
  echo "compute-sanitizer not found: memcheck not run"
  memcheck_rc=1
fi

[[ $selftest_rc == 0 && $memcheck_rc == 0 ]] && exit 0 || exit 1
