#!/usr/bin/env bash
# The README's second command (and what CI runs): build if needed, run the whole test suite, then
# run each fuzzer briefly on its seed corpus under AddressSanitizer and UBSan.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
./scripts/build.sh
ctest --test-dir build --output-on-failure -j"$(nproc)"
./scripts/fuzz.sh smoke
