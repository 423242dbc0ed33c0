#!/usr/bin/env bash
# libFuzzer targets for every parser (safetensors, .npy, JSON config, images, IDX, series CSV), built with clang,
# AddressSanitizer and UndefinedBehaviorSanitizer in build-fuzz/.
#   scripts/fuzz.sh smoke         run each target over its seed corpus only (CI)
#   scripts/fuzz.sh run SECONDS   fuzz each target for SECONDS (new inputs go to fuzz/work/, ignored)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-smoke}
CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMETAFORMER_FUZZ=ON \
  -DMETAFORMER_SANITIZE=ON -DMETAFORMER_NATIVE=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" >build-fuzz/build.log 2>&1 || { tail -n 40 build-fuzz/build.log; exit 1; }
export OMP_NUM_THREADS=1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
for target in build-fuzz/fuzz/fuzz_*; do
  name=$(basename "$target")
  corpus=fuzz/corpus/${name#fuzz_}
  case "$mode" in
    smoke) "$target" -runs=0 "$corpus" 2>&1 | tail -n 1 ;;
    run)
      mkdir -p "fuzz/work/$name"
      "$target" -max_total_time="${2:-600}" -print_final_stats=1 "fuzz/work/$name" "$corpus" 2>&1 |
        grep -E "stat::number_of_executed_units|stat::peak_rss|ERROR|SUMMARY" || true
      ;;
    *) echo "usage: $0 smoke | run SECONDS" >&2; exit 2 ;;
  esac
done
