#!/usr/bin/env bash
# The side-by-side benchmark in one command: installs the peers (Debian's python3-torch with the
# OpenMP build of OpenBLAS; npm's onnxruntime-node, whose CPU build ships inside the package),
# builds the engine, checks the PyTorch reference against timm's golden outputs, then times the
# engine, ONNX Runtime and PyTorch and prints a markdown table (bench/README.md).
# Arguments go to bench/side_by_side.py (e.g. --models convformer_s18 --no-bf16).
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS=(python3-torch python3-numpy libopenblas0-openmp)
command -v node > /dev/null || PEERS+=(nodejs npm)
./scripts/deps.sh "${PEERS[@]}"
# The package's install script would download CUDA binaries; the CPU build needs none of them.
[ -d bench/node_modules/onnxruntime-node ] ||
  (cd bench && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund --loglevel=error)
./scripts/build.sh > /dev/null
# Debian's python3 (the one with python3-torch), whatever python3 comes first on PATH.
/usr/bin/python3 bench/check_reference.py
/usr/bin/python3 bench/side_by_side.py "$@"
