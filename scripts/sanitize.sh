#!/usr/bin/env bash
# The whole test suite under AddressSanitizer + UndefinedBehaviorSanitizer (gcc), in build-asan/.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
# Without MPI: OpenMPI keeps allocations from MPI_Init past MPI_Finalize, which LeakSanitizer may
# report in every rank (the data-parallel tests run in the normal build; here they skip, and the
# no-MPI refusal is tested).
[ -f build-asan/CMakeCache.txt ] || cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMETAFORMER_SANITIZE=ON \
  -DMETAFORMER_MPI=OFF
cmake --build build-asan -j"$(nproc)"
# oneDNN's JIT code and OpenMP's thread pool are not instrumented; leaks are checked in our code.
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j"$(nproc)"
