#!/usr/bin/env bash
# Runs on the GPU machine (torch + timm): writes the training golden files with PyTorch, and checks
# that checkpoints written by `metaformer train` for zoo models load into timm with strict=True.
# Needs .devbin/ from tools/device/bundle.sh; GOLDEN_SCRIPTS names the folder holding the Python
# scripts (default tools/golden). Results land in $OUT.
set -euo pipefail
export PYTHONUNBUFFERED=1
xz -d -k -f .devbin/lib/libdnnl.so.2.xz
export LD_LIBRARY_PATH=$PWD/.devbin/lib
BIN=$PWD/.devbin/metaformer
G=${GOLDEN_SCRIPTS:-tools/golden}

echo "== training golden files (PyTorch, float64)"
python3 "$G/make_train_golden.py" tests/data/golden
tar czf "$OUT/train_golden.tar.gz" tests/data/golden/*/train.safetensors

echo "== checkpoints of metaformer train into timm"
python3 "$G/make_image_folder.py" /tmp/imgs
for m in poolformer_s12 poolformerv2_s12 convformer_s18 caformer_s18; do
  "$BIN" train --model "$m" --data /tmp/imgs --epochs 1 --batch 4 --max-steps 2 --out "/tmp/runs/$m" \
    --threads 16 --no-progress | tail -n 1
done
python3 "$G/check_timm_load.py" "$BIN" /tmp/runs/* | tee "$OUT/timm_load.md"
