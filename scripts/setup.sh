#!/usr/bin/env bash
# The README's first command: install the Debian packages, build, install the Python module, and run
# the main job on the embedded default (checks this build against timm's outputs on the bundled models).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
./scripts/build.sh
# The Python module into the system python3's path (/usr/local/lib/python3.X/dist-packages), so that
# `python3 -c "import metaformer"` works from here on (docs/python.md). Only that component: the
# CLI and the C library stay in build/ unless you install them (docs/c-api.md).
if ls build/python/metaformer/_core*.so >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO cmake --install build --component python
else
  echo "note: the Python module was not built (it needs pybind11-dev and python3-dev)"
fi
./scripts/demo.sh
