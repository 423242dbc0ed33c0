#!/usr/bin/env bash
# Device: which commit changed a model's training images/s. Builds the `metaformer` binary of each
# bisect-<commit>.tar.gz in the stage (tools/device/cuda_bundle.sh with BISECT=c1,c2,...; tests left
# out) and of the working tree the call ships, then times 60 bf16 training steps of each model at
# batch 128 on synthetic data with every binary in turn, two rounds, printing the steady images/s and
# the seconds the step loop waited for data. Usage (device, repository root):
#   BISECT_MODELS=poolformer_s12 bash build/cuda-device/train_bisect.sh > $OUT/bisect.log
set -uo pipefail
stage=$(cd "$(dirname "$0")" && pwd)
tree=$(cd "$stage/../.." && pwd)
export PATH=/usr/local/cuda/bin:$PATH
OUT=${OUT:-/tmp/cuda_out}
mkdir -p "$OUT"
. "$stage/device_deps.sh"
build() {  # build SRC DIR
  local log="$OUT/bisect_build_$(basename "$2").log"
  cmake -S "$1" -B "$2" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMETAFORMER_CUDA=ON -DMETAFORMER_PYTHON=OFF \
    -DMETAFORMER_TESTS=OFF -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc > "$log" 2>&1 &&
    ninja -C "$2" -j"$(nproc)" metaformer >> "$log" 2>&1
}
bins=()
for tb in "$stage"/bisect-*.tar.gz; do
  [ -e "$tb" ] || continue
  c=$(basename "$tb" .tar.gz); c=${c#bisect-}
  t0=$(date +%s)
  rm -rf "/tmp/bis_src_$c" && mkdir -p "/tmp/bis_src_$c" && tar -xzf "$tb" -C "/tmp/bis_src_$c"
  build "/tmp/bis_src_$c" "/tmp/bis_$c"; echo "build $c rc=$? in $(( $(date +%s) - t0 )) s"
  [ -x "/tmp/bis_$c/metaformer" ] && bins+=("/tmp/bis_$c/metaformer")
done
t0=$(date +%s)
build "$tree" /tmp/bis_tree; echo "build tree rc=$? in $(( $(date +%s) - t0 )) s"
[ -x /tmp/bis_tree/metaformer ] && bins+=(/tmp/bis_tree/metaformer)
for round in 1 2; do
  for m in $(echo "${BISECT_MODELS:-poolformer_s12}" | tr , ' '); do
    for bin in "${bins[@]}"; do
      rm -rf /tmp/bis_out
      timeout 120 "$bin" train -m "$m" --data synthetic:7680 --batch 128 --epochs 1 --max-steps "${AB_STEPS:-60}" \
        --backend cuda --dtype bf16 --workers 8 --eval-subset 128 --no-progress --out /tmp/bis_out > /tmp/bis.log 2>&1
      figures=$(python3 -c "import json
r = json.loads(open('/tmp/bis_out/metrics.jsonl').readlines()[-1])
print('steady', round(r.get('steady_images_per_s', 0)), 'img/s,', end=' ')
print('data wait', round(r.get('data_wait_seconds', -1), 3), 's')" 2>&1 | tail -1)
      echo "round $round $m $(basename "$(dirname "$bin")"): $figures $(grep -iE 'error' /tmp/bis.log | tail -1)"
    done
  done
done
