#!/usr/bin/env bash
# Runs on the GPU machine (which has torch and timm): generates the golden files with timm and runs
# the full-size parity check with the bundled binary (tools/device/bundle.sh). Results land in $OUT.
set -euo pipefail
export PYTHONUNBUFFERED=1
xz -d -k -f .devbin/lib/libdnnl.so.2.xz
export LD_LIBRARY_PATH=$PWD/.devbin/lib
echo "== machine"
ldd --version | head -1
nproc
python3 -c 'import torch, timm; print("torch", torch.__version__, "timm", timm.__version__)'
grep -m1 'model name' /proc/cpuinfo

echo "== golden files"
python3 - <<'PY' || echo "no sample image"
import skimage.data, PIL.Image
PIL.Image.fromarray(skimage.data.chelsea()).save('/tmp/cat.jpg', quality=90)
PY
imgs="tests/data/image/photo.png"
[ -f /tmp/cat.jpg ] && imgs="$imgs /tmp/cat.jpg"
python3 tools/golden/make_golden.py /tmp/golden $imgs
[ -f /tmp/cat.jpg ] && cp /tmp/cat.jpg /tmp/golden/
tar czf "$OUT/golden.tar.gz" -C /tmp golden
families="poolformer poolformerv2 convformer caformer identityformer randformer"
.devbin/metaformer verify $(for f in $families; do echo /tmp/golden/$f; done) --tolerance 2e-5 \
  | tee "$OUT/verify_golden.md" || true

echo "== full-size parity"
python3 tools/golden/full_parity.py /tmp/full
for backend in cpu; do
  .devbin/metaformer verify /tmp/full/*/ --backend $backend | tee "$OUT/parity_full_$backend.md" || true
done
