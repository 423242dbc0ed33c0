#!/usr/bin/env bash
# Runs on the GPU machine (torch + timm) for the token-mixer families (MambaOut, mlp_mixer.py): golden
# files of small models (forward and training), full-size parity of the six models, parameter
# counts of every zoo model against timm, strict loading into timm of checkpoints written by
# `metaformer train`, and the AFF reference (torch.fft) when its script is present.
# Needs .devbin/ from tools/device/bundle.sh. Results land in $OUT.
set -euo pipefail
export PYTHONUNBUFFERED=1
xz -d -k -f .devbin/lib/libdnnl.so.2.xz
export LD_LIBRARY_PATH=$PWD/.devbin/lib
BIN=$PWD/.devbin/metaformer
G=tools/golden

echo "== golden files: MambaOut and mlp_mixer.py families"
python3 "$G/make_golden_mixers.py" /tmp/golden
# AFF against PyTorch: copy $OUT/aff.safetensors to tests/data/aff/.
python3 "$G/make_aff_golden.py" "$OUT/aff.safetensors"
tar czf "$OUT/golden_mixers.tar.gz" -C /tmp golden
"$BIN" verify /tmp/golden/{mambaout,mambaout_rw,mixer,gmixer,resmlp,gmlp} --tolerance 2e-5 \
  | tee "$OUT/verify_golden.md" || true

echo "== full-size parity"
python3 "$G/full_parity.py" /tmp/full mambaout_femto mambaout_small_rw mixer_s16_224 gmixer_12_224 resmlp_12_224 \
  gmlp_s16_224
"$BIN" verify /tmp/full/*/ | tee "$OUT/parity_full.md" || true

echo "== parameter counts against timm"
python3 "$G/compare_param_counts.py" "$BIN" | tee "$OUT/param_counts.md" || true

echo "== checkpoints of metaformer train into timm"
python3 "$G/make_image_folder.py" /tmp/imgs
for m in mambaout_femto mambaout_small_rw mixer_s16_224 gmixer_12_224 resmlp_12_224 gmlp_s16_224; do
  "$BIN" train --model "$m" --data /tmp/imgs --epochs 1 --batch 4 --max-steps 2 --out "/tmp/runs/$m" \
    --threads 16 --no-progress | tail -n 1
done
python3 "$G/check_timm_load.py" "$BIN" /tmp/runs/* | tee "$OUT/timm_load.md"
