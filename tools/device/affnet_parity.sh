#!/usr/bin/env bash
# Runs on the GPU machine (torch there; the bundled binary from tools/device/bundle.sh): AFFNet's
# golden files from the authors' class and the full-size parity check (docs/affnet.md). Needs a copy
# of the authors' "Adaptive Frequency Filters" folder (microsoft/TokenMixers) as $1. Results in $OUT.
set -euo pipefail
export PYTHONUNBUFFERED=1
authors=${1:?usage: affnet_parity.sh AUTHORS_FOLDER}
xz -d -k -f .devbin/lib/libdnnl.so.2.xz
export LD_LIBRARY_PATH=$PWD/.devbin/lib
python3 tools/golden/make_affnet_golden.py /tmp/affnet "$authors" --full-dirs | grep -v '^False$'
cp /tmp/affnet/counts.json "$OUT/" && tar czf "$OUT/affnet_tiny.tar.gz" -C /tmp/affnet tiny tiny_bn
.devbin/metaformer verify /tmp/affnet/tiny /tmp/affnet/tiny_bn /tmp/affnet/full/*/ --tolerance 1e-4 \
  | tee "$OUT/affnet_parity.md"
