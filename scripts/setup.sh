#!/usr/bin/env bash
# The README's first command: install the Debian packages, build, and run the main job on the
# embedded default (checks this build against timm's outputs on the bundled models).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
./scripts/build.sh
./scripts/demo.sh
