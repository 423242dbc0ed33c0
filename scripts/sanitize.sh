#!/usr/bin/env bash
# The whole test suite under AddressSanitizer + UndefinedBehaviorSanitizer (gcc), in build-asan/.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
[ -f build-asan/CMakeCache.txt ] || cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMETAFORMER_SANITIZE=ON
cmake --build build-asan -j"$(nproc)"
# oneDNN's JIT code and OpenMP's thread pool are not instrumented; leaks are checked in our code.
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j"$(nproc)"
