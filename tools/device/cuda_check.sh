#!/usr/bin/env bash
# On the GPU machine (one H200; see docs/cuda.md): builds the CUDA backend from the staged source
# (tools/device/cuda_bundle.sh) and runs, logging under $OUT:
#   ops.log       test-backend-ops --backend cuda: every op case against the reference backend (fp32,
#                 then bf16 storage)
#   grad.log      test-backend-ops --mode grad --backend cuda: every backward pass the cuda backend has
#                 (grad_bf16.log: the same with bf16 activations, --dtype bf16)
#   bf16train.log (step bf16train) train --dtype bf16: its tests, then 40 steps of each model with
#                 --matmul bf16 and --dtype bf16 (images/s, peak pool MiB, step times)
#                 (fp32) against the reference backward, the rest listed as "skip (no cuda backward)"
#   checks.log    the golden models on cuda (verify), the CUDA unit tests, out of GPU memory, a bad device
#   train.log     (step train) the training goldens on cuda: gradients and three AdamW steps of every
#                 family against PyTorch float64 (tests/test_train_golden.cpp)
#   gputrain.log  (step gputrain) training on the GPU: the CudaTraining tests (bit-exact resume, runs moving
#                 between GPU and CPU), the README's Fashion-MNIST configuration trained there, and
#                 bench/gpu_train_side_by_side.py (training images/s against timm eager, batch 128;
#                 TRAIN_SBS_COMPILE=1 adds timm + torch.compile, minutes of compilation; FMNIST_EPOCHS=0
#                 skips the Fashion-MNIST run)
#   parity.md     full-size parity of every zoo family against timm's float64 logits (224, and 192x256)
#   bench.md      batch-256 throughput (fp32, TF32 off; then bf16) of poolformer_s12, convformer_s18,
#                 caformer_s18, mambaout_femto, with --profile
#   peak.md       (step peak, not in the default set) the blocks of the GPU pool live at each model's bf16
#                 batch-256 inference peak (METAFORMER_CUDA_PEAK_BLOCKS=1), with a host image and a .npy input
#   sbs.md        (step sbs, not in the default set: minutes of torch.compile) bench/gpu_side_by_side.py:
#                 the engine against timm eager and torch.compile in bf16, batch 256 and 1, peak memory
#   curve.md      (step curve, not in the default set) bench/loss_curve_vs_torch.py: the engine's training loss
#                 over 300 Fashion-MNIST steps (--matmul fp32 and bf16, --trace) against PyTorch fp32 and bf16
#                 autocast from the same initial weights and batches; loss_curves.csv and loss_curves.svg beside it
#   attnab.log    (step attnab, not in the default set) the fused attention backward
#                 (METAFORMER_CUDA_ATTN_BWD=fused): grad cases, memcheck, the training goldens; then a
#                 caformer_s18 training profile with each version (gemm, the default; materialised; fused)
#   compare.log   (step compare, not in the default set) scripts/compare_experiment_gpu.sh: the MetaFormer
#                 experiment on the GPU (runs in /tmp/cmp_gpu, resumed by a later call; COMPARE_TIMEOUT;
#                 runs finished on an earlier machine are carried in build/cuda-device/cmp_prior/runs);
#                 compare.tgz holds the report, its plots and every run's record (runs.tar)
#   families.log  (step families) the paper networks' ops (RaftMLP, MS-MLP, Strip-MLP, CAS-ViT, WaveMix,
#                 iFormer, AFFNet) and the simpler sequence ops: their op
#                 cases (test and grad, fp32 and bf16), every mixer trained on the GPU, the CudaFamily
#                 tests (golden logits, one step's gradients), verify on their golden folders, memcheck,
#                 bf16 bench and 10 training steps of each family, ListOps models trained on CPU and GPU
#   memcheck.log  compute-sanitizer memcheck on the op harness (forward and grad modes) and on one model run
#   kernels.md    (step kernels) every kernel's GPU time in one bf16 batch-256 pass (ncu's
#                 gpu__time_duration, summed by kernel name: tools/device/kernel_table.py)
#   trainkernels.md (step trainkernels) every kernel's GPU time in two training steps (--matmul bf16, batch
#                 128, synthetic) of poolformer_s12 and caformer_s18 (TRAINK_MODELS; TRAINK_ARGS="--dtype bf16"
#                 for bf16 activations), by kernel and by launch shape
#   ptxas.md      (step ptxas) registers, spills and blocks an SM of every kernel that spills or takes 128
#                 registers or more, from the device's CUDA (tools/ptxas_registers.py on the build)
#   pinnedab.log  (step pinnedab) how a step is fed: the CudaTraining tests with training batches in
#                 page-locked memory (METAFORMER_CUDA_PINNED_BATCHES=1), then 40-step training runs of
#                 poolformer_s12 and convformer_s18 (PINNED_MODELS) with every upload waiting for the
#                 stream (METAFORMER_CUDA_STAGED_COPIES=0), with small copies staged (the default) and
#                 with pinned batches as well, twice, alternating
#   dwab.log      (step dwab) A/B of the defaults against the previous depthwise kernels
#                 (METAFORMER_CUDA_DW=tiled1: one row a thread, scalar staging; =strip) and against no
#                 CUDA graphs (METAFORMER_CUDA_GRAPHS=0): op harness with tiled1 in fp32 and bf16, then
#                 bf16 batch 256 and 1 of each
#   dwmma.log     (step dwmma) the tensor-core depthwise forward (METAFORMER_CUDA_DW=mma, mma2): bf16 op
#                 and grad cases of the depthwise ops, the bf16 gtests, memcheck (DWMMA_PARTS=checks),
#                 the kernels' self-test and kernel times with each variant (kernel), then inference
#                 (batch 256 and 1) and 40-step training images/s against the default (speed)
#   chunkab.log   (step chunkab) sample-chunked branches (METAFORMER_CUDA_CHUNK_MB): op cases and golden
#                 models with tiny chunks, then bf16 inference time and peak memory at budgets 0-48 MiB
#   imagefolder.log (step imagefolder) bf16 training on a page-cached folder of 5,120 JPEGs against synthetic
#                 data: images/s and the seconds the step loop waited for data
#   gpuaug.log    (step gpuaug) augmentation by the backend (METAFORMER_BACKEND_AUGMENT=1): the CUDA kernels
#                 against the CPU transform bit for bit, memcheck, the same weights after 30 steps with and
#                 without it, images/s and data wait against the loader augmenting and synthetic data
#   gluvec.log    (step gluvec) the 16-byte GLU backward: op cases fp32/bf16, CUDA training tests, a bf16
#                 mambaout_femto step's kernel table, an image folder run with the default augmentation
#   colsumab.log  (step colsumab) the 16-byte column sums (METAFORMER_CUDA_COLSUM=vec): backward op cases
#                 and CUDA training tests with them, bf16 training images/s off and on, a kernel table
#   kprofile.log  (step kprofile) Nsight Compute's full set on one launch of each of the largest kernels of a
#                 bf16 training step (KPROFILE): throughput, occupancy, stall reasons, bank conflicts;
#                 kprofile_<kernel>.txt the whole report
#   attntiles.log (step attntiles) the key-tile attention backward (METAFORMER_CUDA_ATTN_BWD=tiles): bf16
#                 attention cases, memcheck and racecheck, CUDA training tests, kernel time, images/s
#   colsumbatch.log (step colsumbatch) column sums with rows batched (METAFORMER_CUDA_COLSUM=batch): as attntiles
#   foldls.log    (step foldls) training's layer-scaled MLP halves folded into fc2 (METAFORMER_CUDA_FOLD_LS=1)
#                 against the separate ops: as attntiles, on poolformer_s12
#   actdw.log     (step actdw) training's SepConv activation applied by the depthwise kernels
#                 (METAFORMER_CUDA_ACT_DW=1) against the separate ops: as attntiles, on convformer_s18
#   colsumf.log   (step colsumf) column sums with float running sums a thread (METAFORMER_CUDA_COLSUM=fbatch):
#                 as attntiles, on every op that reduces columns, poolformer_s12 and mambaout_femto
#   attnmma.log   (step attnmma) attention's backward with raw mma.sync (METAFORMER_CUDA_ATTN_BWD=mma): as attntiles
#   dwbatch.log   (step dwbatch) the depthwise forward with batched staging loads (METAFORMER_CUDA_DW=batch):
#                 bf16 depthwise cases, memcheck and racecheck, CUDA tests, kernel time, images/s, inference
#   dwvariants.log (step dwvariants) every depthwise forward and weight-gradient variant timed against the
#                 others in one process (build/bench/mf_cuda_dw_variants), outputs compared
#   dwbatch2.log  (step dwbatch2) the batched staging with conflict-free shared stores (METAFORMER_CUDA_DW=batch2)
#                 against batch: as dwbatch, then its Nsight Compute headline (bank conflicts, local traffic)
#   dwwide.log    (step dwwide) the depthwise forward on 16-column patches (METAFORMER_CUDA_DW=wide) against
#                 batch: as dwbatch, inference for batch, batch2 and wide
#   dwdwtiled.log (step dwdwtiled) the depthwise weight gradient from staged tiles (METAFORMER_CUDA_DW_DW=tiled)
#                 against rows2: as attntiles
#   geluepi.log   (step geluepi) the MLP's GELU in the GEMM epilogues in training
#                 (METAFORMER_CUDA_GELU_EPILOGUE=1) against the activation kernels: as attntiles
#   gnbwd.log     (step gnbwd) GroupNorm's backward in one reduction pass (METAFORMER_CUDA_GN_BWD=onepass, the
#                 default since 2026-12-06) against the two of split: as attntiles
#   dwact.log     (step dwact) the depthwise forward with compile-time activations (METAFORMER_CUDA_DW=batchact,
#                 the default from 2026-12-06 until lean) against batch: the kernels one by one, then as dwbatch
#   dwlean.log    (step dwlean) the depthwise forward with 32-bit staging index math (METAFORMER_CUDA_DW=lean)
#                 (the default since 2026-12-06) against batchact: the kernels one by one, then as dwbatch
#   hostab.log    (step hostab, after basebuild) the host time of a training step, this tree against the base
#                 build: step times and the host profile per op (HOSTAB_MODELS)
#   baseab.log    (step baseab, after basebuild) this tree's training images/s and kernel times against the
#                 base commit's (cuda_bundle.sh BASE=), for changes without a switch
#   glurows.log   (step glurows) the gated product's backward in one pass over its inputs
#                 (METAFORMER_CUDA_GLU_BWD=rows, glu_rows_vec_kernel) against glu_dt + glu_dc (split): op
#                 cases, sanitizers, CUDA tests, kernel time of two mambaout_femto steps, images/s
#   colsummamba.log (step colsummamba) the 16-byte column sums (METAFORMER_CUDA_COLSUM=vec) on mambaout_femto,
#                 as glurows
#   normvec.log   (step normvec) LayerNorm's one-pass backward 16 bytes a load (METAFORMER_CUDA_NORM_BWD=vec)
#                 against the fused default: as attntiles
#   uploadab.log  (step uploadab) the next batch's upload on a copy stream (METAFORMER_CUDA_UPLOAD_AHEAD=1):
#                 the same weights bit for bit, the CudaTraining tests, then images/s off and on
#   candidates.log (step candidates) every kernel variant behind a switch (the depthwise dW kernels, the
#                 LayerNorm backward in two passes, the depthwise forward with weights in registers,
#                 attention's GEMM backward): op and grad
#                 cases in fp32 and bf16, kernel time against the default in
#                 two convformer_s18 --dtype bf16 steps (CAND_PARTS=checks), then bf16 inference at
#                 batch 256 and 40-step training images/s of each model with each switch alone and
#                 all of CAND_ALL together (the previous defaults; CAND_PARTS=speed; CAND_MODELS);
#                 each part fits one call
#   steptimes.log (step steptimes) per model, 40 training steps with METAFORMER_STEP_TIMES=1, pinned batches
#                 on and off: the wall time of a step and how long the host waited for the losses
#   hostprofile.log (step hostprofile) the host's time per op family over 30 training steps
#                 (METAFORMER_PROFILE_HOST=1 --profile): where it spends the time it takes to queue a step
#   hoststacks.log (step hoststacks) backtraces of the training process sampled with cuda-gdb: the functions
#                 the main thread is in while it queues steps (stacks.txt: the raw samples)
#   trainmemcheck.log (step trainmemcheck) compute-sanitizer memcheck on a few GPU training steps
#   racecheck.log (step racecheck) compute-sanitizer racecheck on the bf16 grad op cases RACE_OPS (colsumf's by
#                 default), once per setting in RACE_SETTINGS (space-separated VAR=value, or "default"),
#                 each hazard's two accesses by kernel: which kernel a candidate's hazards are in, and
#                 whether the default has them too
#   build.log
# Usage (device, repository root): bash build/cuda-device/cuda_check.sh [steps]   steps: any of
# build basebuild ops grad checks train gputrain bf16train families parity bench memcheck sbs ncu kernels kprofile trainkernels steptimes hostprofile hoststacks trainmemcheck racecheck pinnedab dwab
# candidates dwmma chunkab imagefolder gpuaug gluvec colsumab colsumbatch colsumf foldls actdw attntiles attnmma dwbatch dwvariants
# dwbatch2 dwwide dwdwtiled geluepi gnbwd dwact dwlean normvec glurows colsummamba baseab hostab uploadab curve compare
# attnab (default: build ops grad
# checks parity bench memcheck). SC_QUICK=1 cuts a switch step to its op cases and images/s, AB_STEPS
# (60) the steps of each images/s run. SBS_MODELS and
# SBS_TIMEOUT narrow the side-by-side run; BUILD_TARGETS the build (e.g. "metaformer test-backend-ops"
# when the unit tests are not needed: the checks step wants mf_tests).
set -uo pipefail
export PYTHONUNBUFFERED=1
stage=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-/tmp/cuda_out}
# The comma-separated model lists take spaces as commas too (SBS_MODELS="a b" once reached
# timm as one model name "a b" and cost a device call).
for v in SBS_MODELS BASEAB_MODELS TRAINK_MODELS IMAGEFOLDER_MODELS; do
  if [ -n "${!v:-}" ]; then val=${!v}; val=${val// /,}; while [[ $val == *,,* ]]; do val=${val//,,/,}; done; export "$v=$val"; fi
done
mkdir -p "$OUT"
steps=${*:-build ops grad checks parity bench memcheck}
has() { [[ " $steps " == *" $1 "* ]]; }
B=${MF_BUILD:-/tmp/mfb}  # MF_BUILD=/tmp/mfbase runs the steps on the basebuild step's binaries
S=/tmp/mfsrc
export PATH=/usr/local/cuda/bin:$PATH

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader
nvcc --version | tail -1
g++ --version | head -1
cmake --version | head -1
nproc

# A later call on a machine still warm reuses the build; a fresh machine builds first.
if ! has build && [ ! -x "$B/metaformer" ]; then steps="build $steps"; fi
if has build; then
  echo "== build"
  . "$stage/device_deps.sh"
  if [ -f "$stage/src.tar.gz" ]; then
    rm -rf "$S" && mkdir -p "$S" && tar -xzf "$stage/src.tar.gz" -C "$S"
  else  # NO_SRC=1 bundle: the checkout the stage lives in (build/cuda-device/../..)
    rm -rf "$S" && ln -s "$(cd "$stage/../.." && pwd)" "$S"
  fi
  if has parity; then  # timm's float64 references on the CPU, while the build runs
    (cd "$S" && OMP_NUM_THREADS=8 timeout 500 python3 tools/golden/full_parity.py /tmp/full > /tmp/parity_gen.log 2>&1;
     echo "rc=$?" >> /tmp/parity_gen.log; touch /tmp/parity_gen.done) &
  fi
  t0=$(date +%s)
  { cmake -S "$S" -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMETAFORMER_CUDA=ON -DMETAFORMER_PYTHON=OFF \
      -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc &&
    ninja -C "$B" -k 0 -j"$(nproc)" ${BUILD_TARGETS:-metaformer test-backend-ops mf_tests mf_cuda_dw_variants}; } > "$OUT/build.log" 2>&1
  rc=$?
  echo "build rc=$rc in $(( $(date +%s) - t0 )) s"
  if [ $rc -ne 0 ]; then grep -E "error|Error" "$OUT/build.log" | head -30; tail -5 "$OUT/build.log"; fi
  [ -x "$B/metaformer" ] || exit 1  # (the other targets are checked by the steps that use them)
fi
if has basebuild; then
  # A baseline to time against on the same card: the stage's base.tar.gz (cuda_bundle.sh with
  # BASE=<commit>) built into /tmp/mfbase (metaformer only); MF_BUILD=/tmp/mfbase OUT=... runs a step on it.
  echo "== basebuild"
  t0=$(date +%s)
  rm -rf /tmp/mfbase_src && mkdir -p /tmp/mfbase_src && tar -xzf "$stage/base.tar.gz" -C /tmp/mfbase_src &&
  { cmake -S /tmp/mfbase_src -B /tmp/mfbase -G Ninja -DCMAKE_BUILD_TYPE=Release -DMETAFORMER_CUDA=ON \
      -DMETAFORMER_PYTHON=OFF -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc &&
    ninja -C /tmp/mfbase -j"$(nproc)" metaformer; } > "$OUT/basebuild.log" 2>&1
  echo "basebuild rc=$? in $(( $(date +%s) - t0 )) s ($(cat /tmp/mfbase_src/.base_commit 2>/dev/null))"
fi
M=$B/metaformer
T=$B/tests/test-backend-ops

if has ops; then
  echo "== op harness, cuda vs ref (fp32)"
  timeout 300 "$T" --backend cuda > "$OUT/ops.log" 2>&1; echo "rc=$?"
  grep -E "FAIL|cases," "$OUT/ops.log" | tail -25
  echo "== op harness, cuda bf16 vs ref"
  timeout 300 "$T" --backend cuda --dtype bf16 > "$OUT/ops_bf16.log" 2>&1; echo "rc=$?"
  grep -E "FAIL|cases," "$OUT/ops_bf16.log" | tail -25
  if grep -q FAIL "$OUT/ops.log"; then  # tell a tuned kernel's bug from the backend's
    echo "== op harness with the plain kernels (METAFORMER_CUDA_KERNELS=simple)" | tee -a "$OUT/ops.log"
    METAFORMER_CUDA_KERNELS=simple timeout 300 "$T" --backend cuda > /tmp/ops_simple.log 2>&1; echo "rc=$?"
    cat /tmp/ops_simple.log >> "$OUT/ops.log"
    grep -E "FAIL|cases," /tmp/ops_simple.log | tail -15
  fi
fi

if has grad; then
  echo "== op harness, backward passes: cuda vs ref (fp32)"
  timeout 400 "$T" --mode grad --backend cuda > "$OUT/grad.log" 2>&1; echo "rc=$?"
  grep -E "FAIL|cases," "$OUT/grad.log" | tail -25
  echo "skipped, no cuda backward: $(grep -c 'no cuda backward' "$OUT/grad.log") cases"
  echo "== op harness, backward passes: cuda with bf16 activations vs ref (bar 1e-2; mixers 5e-2)"
  timeout 400 "$T" --mode grad --backend cuda --dtype bf16 > "$OUT/grad_bf16.log" 2>&1; echo "rc=$?"
  grep -E "FAIL|cases," "$OUT/grad_bf16.log" | tail -25
fi

if has bf16train; then  # train --dtype bf16: the tests, then throughput and memory against --matmul bf16
  echo "== bf16 activations in training: tests" | tee "$OUT/bf16train.log"
  timeout 300 "$B/tests/mf_tests" --gtest_filter='CudaTraining.Bf16*:CudaBackend.EveryBackwardCaseMatchesTheReferenceInBf16' \
    2>&1 | tail -12 | tee -a "$OUT/bf16train.log"
  echo "== 40 steps, batch 128, synthetic: images/s and peak pool MiB, --matmul bf16 then --dtype bf16" | tee -a "$OUT/bf16train.log"
  for m in $(echo "${SBS_MODELS:-poolformer_s12,convformer_s18,caformer_s18,mambaout_femto}" | tr , ' '); do
    for mode in "--matmul bf16" "--dtype bf16"; do
      rm -rf /tmp/bt
      METAFORMER_STEP_TIMES=1 timeout 150 "$M" train -m $m --data synthetic:5120 --batch 128 --epochs 1 --max-steps 40 \
        --backend cuda $mode --workers 8 --eval-subset 128 --no-progress --out /tmp/bt > /tmp/bt.log 2>&1
      rc=$?
      peak=$(tail -1 /tmp/bt/metrics.jsonl 2>/dev/null | python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print(r.get('peak_gpu_mb'), r.get('images_per_s'), r.get('train_loss'))" 2>/dev/null)
      echo "$m $mode: rc=$rc peak_mib,img/s,loss=$peak $(grep -E 'step times' /tmp/bt.log | cut -c1-160) $(grep -iE 'error' /tmp/bt.log | tail -1)" | tee -a "$OUT/bf16train.log"
    done
  done
fi

if has checks; then
  echo "== golden models on cuda" | tee "$OUT/checks.log"
  timeout 120 "$M" verify --backend cuda $(ls -d "$S"/tests/data/golden/*/) --tolerance 2e-5 2>&1 | tee -a "$OUT/checks.log"
  echo "== golden models on cuda, bf16 (bar 5e-2, top-1 agreement printed)" | tee -a "$OUT/checks.log"
  timeout 120 "$M" verify --backend cuda --dtype bf16 $(ls -d "$S"/tests/data/golden/*/) --tolerance 5e-2 2>&1 | tee -a "$OUT/checks.log"
  echo "== CUDA unit tests, and compare timing its mixers on the GPU" | tee -a "$OUT/checks.log"
  timeout 300 "$B/tests/mf_tests" --gtest_filter='CudaBackend.*:CudaOptimizer.*:CudaTraining.AdamW*:Compare.TimingOnTheGpu*' 2>&1 | tail -30 | tee -a "$OUT/checks.log"
  # (bench caps --batch at 4096: a 4096x4096 input at batch 64 needs well over the H200's 141 GB)
  echo "== out of GPU memory: bench at batch 64, 4096x4096" | tee -a "$OUT/checks.log"
  timeout 240 "$M" bench -m poolformer_s12 --backend cuda -b 64 -r 4096 --runs 1 --warmup 0 >> "$OUT/checks.log" 2>&1
  echo "exit code $?" | tee -a "$OUT/checks.log"; tail -2 "$OUT/checks.log"
  echo "== bad device index" | tee -a "$OUT/checks.log"
  "$M" bench -m poolformer_s12 --backend cuda --device cuda:7 -b 1 --runs 1 >> "$OUT/checks.log" 2>&1
  echo "exit code $?" | tee -a "$OUT/checks.log"; tail -2 "$OUT/checks.log"
fi

if has train; then
  # Issue 13's gradient parity: every golden family's loss, parameter gradients and three AdamW steps
  # on the cuda backend (fp32) against PyTorch float64 (tests/test_train_golden.cpp, the CPU bars).
  echo "== training goldens on cuda (gradients and AdamW steps against PyTorch float64)" | tee "$OUT/train.log"
  timeout 400 "$B/tests/mf_tests" --gtest_filter='Families/TrainGolden.*_cuda' 2>&1 | tee -a "$OUT/train.log" |
    grep -E "^\[  (FAILED|PASSED|SKIPPED) |OK \]|Failure|rel|skipped" | head -60
fi

if has gputrain; then
  echo "== training on the GPU: CudaTraining tests" | tee "$OUT/gputrain.log"
  timeout 300 "$B/tests/mf_tests" --gtest_filter='CudaTraining.*' 2>&1 | tee -a "$OUT/gputrain.log" |
    grep -E "^\[  (FAILED|PASSED|SKIPPED) |OK \]|Failure|error" | head -20
  echo "== Fashion-MNIST, the README's configuration, on the GPU" | tee -a "$OUT/gputrain.log"
  [ -d "$stage/fashion-mnist" ] && FMNIST_DIR=${FMNIST_DIR:-$stage/fashion-mnist}
  if [ "${FMNIST_EPOCHS:-10}" = 0 ]; then
    echo "skipped (FMNIST_EPOCHS=0)" | tee -a "$OUT/gputrain.log"
  elif [ -d /usr/share/datasets/fashion-mnist ] || [ -d "${FMNIST_DIR:-/nonexistent}" ]; then
    timeout "${FMNIST_TIMEOUT:-240}" "$M" train --config "$S/configs/fmnist_convformer.json" \
      --data "${FMNIST_DIR:-fashion-mnist}" --epochs "${FMNIST_EPOCHS:-10}" --batch 128 --lr 2e-3 --backend cuda \
      --workers 8 --no-progress --out /tmp/fmnist_gpu 2>&1 | tee -a "$OUT/gputrain.log" | grep -E "epoch|done|rror"
    cp /tmp/fmnist_gpu/metrics.jsonl "$OUT/fmnist_gpu_metrics.jsonl" 2>/dev/null
  else
    echo "no Fashion-MNIST here (set FMNIST_DIR)" | tee -a "$OUT/gputrain.log"
  fi
  echo "== where a GPU training step's time goes (--profile, --matmul bf16, batch 128, synthetic)" | tee -a "$OUT/gputrain.log"
  for m in $(echo "${SBS_MODELS:-poolformer_s12,convformer_s18,caformer_s18,mambaout_femto}" | tr , ' '); do
    rm -rf /tmp/prof_$m
    timeout 120 "$M" train -m $m --data synthetic:1280 --batch 128 --epochs 1 --max-steps 6 --backend cuda --matmul bf16 \
      --workers 8 --eval-subset 128 --no-progress --profile --out /tmp/prof_$m 2>&1 | grep -E "time per op|rror" |
      sed "s/^/$m: /" | tee -a "$OUT/gputrain.log"
  done
  echo "== training throughput against timm eager (batch 128)" | tee -a "$OUT/gputrain.log"
  (cd "$S" && timeout "${TRAIN_SBS_TIMEOUT:-300}" python3 bench/gpu_train_side_by_side.py --metaformer "$M" \
     --models "${SBS_MODELS:-poolformer_s12,convformer_s18,caformer_s18,mambaout_femto}" --json "$OUT/train_sbs.json" \
     $([ "${TRAIN_SBS_COMPILE:-0}" = 1 ] && echo --compile) 2>&1) |
    tee -a "$OUT/gputrain.log" | tail -8
fi

if has curve; then
  # The issue's bf16 loss-curve check: 300 traced engine steps (fp32, --matmul bf16, --dtype bf16) replayed in PyTorch.
  echo "== loss curve against PyTorch: Fashion-MNIST, 300 steps, fp32 and bf16" | tee "$OUT/curve.md"
  [ -d "$stage/fashion-mnist" ] && FMNIST_DIR=${FMNIST_DIR:-$stage/fashion-mnist}
  rm -rf /tmp/curve
  (cd "$S" && timeout 400 python3 bench/loss_curve_vs_torch.py --engine "$M" --config configs/fmnist_convformer.json \
     --data "${FMNIST_DIR:-fashion-mnist}" --steps 300 --out /tmp/curve 2>&1) | tee -a "$OUT/curve.md"
  echo "rc=${PIPESTATUS[0]}" | tee -a "$OUT/curve.md"
  cp /tmp/curve/loss_curves.csv /tmp/curve/loss_curves.svg "$OUT/" 2>/dev/null
fi

if has attnab; then
  # The fused attention backward (METAFORMER_CUDA_ATTN_BWD=fused, attention_backward.cu): the op
  # harness's attention cases in grad mode, under memcheck too, the training goldens that have
  # attention; then a caformer_s18 training profile with each of the three versions.
  echo "== attention backward: fused, then the three versions timed" | tee "$OUT/attnab.log"
  METAFORMER_CUDA_ATTN_BWD=fused timeout 120 "$T" --mode grad --backend cuda --op attention 2>&1 |
    grep -E "FAIL|cases|attention" | tail -12 | tee -a "$OUT/attnab.log"
  METAFORMER_CUDA_ATTN_BWD=fused timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 "$T" --mode grad \
    --backend cuda --op attention > /tmp/attn_memcheck.log 2>&1
  echo "fused attention grad cases under memcheck: rc=$?" | tee -a "$OUT/attnab.log"
  grep -E "ERROR SUMMARY" /tmp/attn_memcheck.log | tee -a "$OUT/attnab.log"
  METAFORMER_CUDA_ATTN_BWD=fused timeout 200 "$B/tests/mf_tests" --gtest_filter='*TrainGolden*former*cuda*' 2>&1 |
    grep -E "^\[  (FAILED|PASSED)|OK \]" | tee -a "$OUT/attnab.log"
  for v in gemm materialised fused; do
    rm -rf /tmp/attn_$v
    METAFORMER_CUDA_ATTN_BWD=$v timeout 150 "$M" train -m caformer_s18 --data synthetic:1280 --batch 128 --epochs 1 \
      --max-steps 6 --backend cuda --matmul bf16 --workers 8 --eval-subset 128 --no-progress --profile \
      --out /tmp/attn_$v 2>&1 | grep -E "time per op|img/s|rror" | sed "s/^/$v: /" | tee -a "$OUT/attnab.log"
  done
fi

if has compare; then
  # The MetaFormer experiment redone on the GPU (docs/experiments/README.md). A call that runs out of
  # time leaves its finished runs in /tmp/cmp_gpu; the next call on the same warm machine goes on.
  echo "== the MetaFormer experiment on the GPU: scripts/compare_experiment_gpu.sh" | tee "$OUT/compare.log"
  if [ ! -e /usr/share/datasets/fashion-mnist ] && [ -d "$stage/fashion-mnist" ]; then
    mkdir -p /usr/share/datasets && ln -sfn "$stage/fashion-mnist" /usr/share/datasets/fashion-mnist
  fi
  # Runs finished on an earlier machine (their result.json, metrics.jsonl and settings files, carried
  # in $stage/cmp_prior) are reused: compare checks that their recorded settings equal this request's.
  if [ -d "$stage/cmp_prior/runs" ] && [ ! -d /tmp/cmp_gpu/runs ]; then
    mkdir -p /tmp/cmp_gpu && cp -r "$stage/cmp_prior/runs" /tmp/cmp_gpu/
  fi
  (cd "$S" && BIN="$M" RUNS=/tmp/cmp_gpu DOCS="$OUT/fmnist_gpu" timeout "${COMPARE_TIMEOUT:-500}" \
     bash scripts/compare_experiment_gpu.sh 2>&1) > /tmp/compare.out
  rc=$?
  echo "rc=$rc" | tee -a "$OUT/compare.log"
  if [ $rc = 0 ]; then  # every run finished: time every mixer again in one process, so latencies compare
    (cd "$S" && BIN="$M" RUNS=/tmp/cmp_gpu DOCS="$OUT/fmnist_gpu" timeout 200 \
       bash scripts/compare_experiment_gpu.sh --remeasure 2>&1) > /tmp/compare.out
    echo "retimed: rc=$?" | tee -a "$OUT/compare.log"
  else  # out of time: report the candidates whose every seed has finished (timed in one process)
    done_mixers=$(cd "$S" && sed -n 's/^MIXERS=\${MIXERS:-\(.*\)}$/\1/p' scripts/compare_experiment_gpu.sh | tr ',' '\n' |
      while read -r m; do [ -f "/tmp/cmp_gpu/runs/$m/seed0/result.json" ] && [ -f "/tmp/cmp_gpu/runs/$m/seed1/result.json" ] &&
        echo "$m"; done | paste -sd,)
    echo "reporting the finished candidates: $done_mixers" | tee -a "$OUT/compare.log"
    (cd "$S" && MIXERS="$done_mixers" BIN="$M" RUNS=/tmp/cmp_gpu DOCS="$OUT/fmnist_gpu" timeout 200 \
       bash scripts/compare_experiment_gpu.sh --remeasure 2>&1) > /tmp/compare.out
    echo "partial report: rc=$?" | tee -a "$OUT/compare.log"
  fi
  grep -vE "^epoch|^training|^resuming|^  " /tmp/compare.out | tail -40 | tee -a "$OUT/compare.log"
  ls /tmp/cmp_gpu/runs/*/seed*/result.json 2> /dev/null | wc -l | sed 's/^/finished runs: /' | tee -a "$OUT/compare.log"
  # One archive (the device returns few files): every run's record, and the report with its plots.
  rm -rf /tmp/cmp_pack && mkdir -p /tmp/cmp_pack && cp -r "$OUT/fmnist_gpu" /tmp/cmp_pack/ 2> /dev/null
  rm -rf "$OUT/fmnist_gpu"
  (cd /tmp/cmp_gpu && tar cf /tmp/cmp_pack/runs.tar runs/*/seed*/{result.json,metrics.jsonl,train_args.json,config.json} \
     2> /dev/null)
  tar czf "$OUT/compare.tgz" -C /tmp/cmp_pack .
fi

if has parity; then
  echo "== full-size parity against timm float64"
  if [ ! -f /tmp/parity_gen.done ] && ! pgrep -f full_parity.py > /dev/null; then
    (cd "$S" && timeout 400 python3 tools/golden/full_parity.py /tmp/full > /tmp/parity_gen.log 2>&1; touch /tmp/parity_gen.done)
  fi
  while [ ! -f /tmp/parity_gen.done ]; do sleep 2; done
  tail -3 /tmp/parity_gen.log
  timeout 200 "$M" verify --backend cuda /tmp/full/*/ --tolerance 1e-4 2>&1 | tee "$OUT/parity.md"
fi

if has bench; then
  echo "== throughput, batch 256, fp32 (TF32 off)"
  timeout 300 "$M" bench --backend cuda -m poolformer_s12,convformer_s18,caformer_s18,mambaout_femto -b 256 \
    --runs 10 --warmup 2 --profile 2>&1 | tee "$OUT/bench.md"
  echo "== throughput, batch 256 and 1, bf16"
  timeout 300 "$M" bench --backend cuda --dtype bf16 -m poolformer_s12,convformer_s18,caformer_s18,mambaout_femto \
    -b 256,1 --runs 20 --warmup 3 --profile 2>&1 | tee -a "$OUT/bench.md"
fi

if has sbs; then
  echo "== side by side with timm eager and torch.compile (bf16)"
  (cd "$S" && timeout "${SBS_TIMEOUT:-560}" python3 bench/gpu_side_by_side.py --metaformer "$M" \
     --models "${SBS_MODELS:-poolformer_s12,convformer_s18,caformer_s18,mambaout_femto}" --json "$OUT/sbs.json" 2>&1) |
    tee "$OUT/sbs.md"
fi

if has peak; then  # what the inference peak is made of (METAFORMER_CUDA_PEAK_BLOCKS=1), bf16 batch 256
  echo "== peak GPU memory: blocks live at the peak, bf16 batch 256, a constant host image and a .npy input"
  python3 -c "import numpy as np; np.save('/tmp/peak_in.npy', np.random.default_rng(0).random((256, 3, 224, 224), dtype=np.float32))"
  for m in $(echo "${PEAK_MODELS:-poolformer_s12 convformer_s18 caformer_s18 mambaout_femto}" | tr , ' '); do
    for input in "" /tmp/peak_in.npy; do
      METAFORMER_CUDA_PEAK_BLOCKS=1 timeout 120 "$M" bench -m $m --backend cuda --dtype bf16 -b 256 \
        ${input:+-i $input} --runs 10 --warmup 3 2>&1 | grep -E "peak GPU memory of|^\| $m" | tee -a "$OUT/peak.md"
    done
  done
fi

if has ncu; then  # where the bf16 time goes inside the slowest kernels (Nsight Compute, when installed)
  # NCU_MODELS and NCU_KERNELS pick others, e.g. NCU_MODELS=poolformer_s12 NCU_KERNELS=pool_stats
  echo "== ncu: ${NCU_KERNELS:-dw_tiled|layer_norm|im2col} kernels, ${NCU_MODELS:-mambaout_femto convformer_s18}, bf16 batch 256"
  for m in ${NCU_MODELS:-mambaout_femto convformer_s18}; do
    timeout 120 ncu --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
      --section MemoryWorkloadAnalysis --kernel-name regex:"${NCU_KERNELS:-dw_tiled|layer_norm|im2col}" --launch-count 3 \
      "$M" bench -m $m --backend cuda --dtype bf16 -b 256 --runs 1 --warmup 0 > "$OUT/ncu_$m.log" 2>&1
    echo "$m: rc=$?"; grep -E "^  [a-z_]+.*\(|Duration|Memory Throughput|Compute \(SM\)|Achieved Occupancy|Registers Per|Stall|Warp Cycles|Issued Warp" "$OUT/ncu_$m.log" | head -60
  done
fi

if has kernels; then  # where the GPU time goes, kernel by kernel (no synchronisation between ops)
  : > "$OUT/kernels.md"
  echo "== kernels: GPU time per kernel, bf16 batch 256, one pass (the first: weight casts included)"
  for m in $(echo "${KERNEL_MODELS:-poolformer_s12 convformer_s18 caformer_s18 mambaout_femto}" | tr , ' '); do
    timeout 200 ncu --clock-control none --csv --metrics gpu__time_duration.sum \
      "$M" bench -m $m --backend cuda --dtype bf16 -b 256 --runs 1 --warmup 0 > "/tmp/kernels_$m.csv" 2> /tmp/kernels.err
    echo "$m: rc=$?"; tail -3 /tmp/kernels.err
    python3 "$stage/kernel_table.py" "/tmp/kernels_$m.csv" > /tmp/kernels_$m.md 2>&1
    { echo "## $m"; cat /tmp/kernels_$m.md; echo; } >> "$OUT/kernels.md"
    head -16 /tmp/kernels_$m.md | cut -c1-150
  done
fi

if has kprofile; then
  # Why a kernel is slow, not only how slow: Nsight Compute's full set on one launch of each of the
  # largest kernels of a bf16 training step, at its largest shape: throughput against the SM's and
  # memory's peaks, occupancy, the warps' stall reasons, shared-memory bank conflicts. One text file
  # a kernel (kprofile_<name>.txt) and the headline lines in kprofile.log. KPROFILE picks the list:
  # "name|model|launches to skip" (backward passes run stage 4 first: skipping 15 of ConvFormer's
  # 18 reaches stage 1, 3 of CAFormer's attention blocks reaches stage 3).
  log=$OUT/kprofile.log
  : > "$log"
  for spec in ${KPROFILE:-dw_tiled_kernel\|convformer_s18\|0 depthwise_dw_units_kernel\|convformer_s18\|15 \
      attention_backward_tiles_kernel\|caformer_s18\|3 star_relu_backward_vec_kernel\|convformer_s18\|30 \
      activation_vec_kernel\|convformer_s18\|0 scaled_residual_vec_kernel\|poolformer_s12\|0}; do
    IFS='|' read -r kname kmodel kskip <<< "$spec"
    # The stall reasons as cycles a warp spends per issued instruction (the Warp State section's chart,
    # which the text report leaves out): the top ones go to kprofile.log. Without them if this ncu
    # does not know the metrics.
    local_rc=1
    for stalls in "--metrics regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" ""; do
      rm -rf /tmp/kp_run
      timeout 300 ncu --set full $stalls -k "regex:$kname" --launch-skip "$kskip" --launch-count 1 "$M" train \
        -m "$kmodel" --data synthetic:256 --batch 128 --epochs 1 --max-steps 1 --backend cuda --dtype bf16 \
        --workers 4 --eval-subset 128 --no-progress --out /tmp/kp_run > "$OUT/kprofile_$kname.txt" 2>&1
      local_rc=$?
      [ $local_rc = 0 ] && ! grep -q "==ERROR==" "$OUT/kprofile_$kname.txt" && break
    done
    echo "== $kname ($kmodel, skip $kskip): rc=$local_rc" | tee -a "$log"
    grep -E "^  [a-z_:<>, 0-9A-Z]+\(|Duration|Compute \(SM\) Throughput|Memory Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per Thread|Block Limit|Issue Slots Busy|No Eligible|Warp Cycles Per Issued|Bank Conflicts|Shared Memory Configuration Size|Dynamic Shared Memory|Grid Size|Block Size" \
      "$OUT/kprofile_$kname.txt" | head -40 | tee -a "$log"
    grep -E -A3 "^    (WRN|OPT) +" "$OUT/kprofile_$kname.txt" | cut -c1-200 | head -24 | tee -a "$log"
    grep -E "issue_stalled" "$OUT/kprofile_$kname.txt" | awk '{print $NF, $1}' | sort -gr | head -8 |
      sed "s/^/stall (cycles per issued instruction): /" | tee -a "$log"
  done
fi

if has ptxas; then  # what the device's ptxas gives each kernel (registers decide warps an SM)
  python3 "$S/tools/ptxas_registers.py" "$B" --jobs 16 > "$OUT/ptxas.md" 2>&1
  echo "== ptxas: $(tail -1 "$OUT/ptxas.md")"
fi

if has trainkernels; then  # where a training step's GPU time goes, kernel by kernel
  : > "$OUT/trainkernels.md"
  echo "== trainkernels: GPU time per kernel, two training steps, ${TRAINK_ARGS:---matmul bf16}, batch 128"
  for m in $(echo "${TRAINK_MODELS:-poolformer_s12,caformer_s18}" | tr , ' '); do
    rm -rf /tmp/tk_$m
    timeout 240 ncu --clock-control none --csv --metrics gpu__time_duration.sum "$M" train -m $m \
      --data synthetic:256 --batch 128 --epochs 1 --max-steps 2 --backend cuda ${TRAINK_ARGS:---matmul bf16} --workers 4 \
      --eval-subset 128 --no-progress --out /tmp/tk_$m > "/tmp/tk_$m.csv" 2> /tmp/tk.err
    echo "$m: rc=$?"; tail -3 /tmp/tk.err
    python3 "$stage/kernel_table.py" "/tmp/tk_$m.csv" > /tmp/tk_$m.md 2>&1
    { echo "## $m (two steps and one small evaluation)"; cat /tmp/tk_$m.md; echo; } >> "$OUT/trainkernels.md"
    head -24 /tmp/tk_$m.md | cut -c1-160
  done
fi

if has candidates; then
  # Every kernel candidate behind an environment switch, in one call: its op and grad cases in fp32
  # and bf16, its kernels' time against the default's (two convformer_s18 --dtype bf16 steps under
  # Nsight Compute), bf16 inference at batch 256 where it touches forward kernels, then training
  # images/s over 40 steps with each candidate alone and the best guess of all together (CAND_ALL).
  # A candidate: "SWITCH=VALUE|harness filters|kernel-name pattern[|model whose kernels are timed]".
  log=$OUT/candidates.log
  echo "== candidates: correctness, kernel time and throughput of each switch against the default" | tee "$log"
  # Since the A/B of 2026-12-05 (docs/cuda-log.md) rows2, the fused LayerNorm backward and the wmma
  # attention backward are the defaults; the switches below are the previous defaults and the losers.
  cands=(
    "METAFORMER_CUDA_DW_DW=window|depthwise mixer/sepconv mixer/gated_cnn|depthwise_dw"
    "METAFORMER_CUDA_DW_DW=blocked|depthwise mixer/sepconv mixer/gated_cnn|depthwise_dw"
    "METAFORMER_CUDA_DW_DW=rows4|depthwise mixer/sepconv mixer/gated_cnn|depthwise_dw"
    "METAFORMER_CUDA_NORM_BWD=split|layer_norm mlp_branch sepconv_branch|norm_rows|column_partials|column_finish"
    "METAFORMER_CUDA_DW=regw|depthwise sepconv mixer/sepconv mixer/gated_cnn gated_cnn|dw_tiled"
    "METAFORMER_CUDA_ATTN_BWD=gemm|attention mixer/attention|attention|softmax|caformer_s18"
  )
  read -r -a all_on <<< "${CAND_ALL:-METAFORMER_CUDA_DW_DW=window METAFORMER_CUDA_NORM_BWD=split METAFORMER_CUDA_ATTN_BWD=gemm}"
  kernels_of() {  # kernels_of LABEL MODEL PATTERN SWITCH...: two steps of MODEL under ncu, the lines matching
    local label=$1 model=$2 pattern=$3; shift 3
    rm -rf /tmp/cand
    env METAFORMER_CANDIDATE=1 "$@" timeout 120 ncu --clock-control none --csv --metrics gpu__time_duration.sum \
      "$M" train -m "$model" --data synthetic:256 --batch 128 --epochs 1 --max-steps 2 --backend cuda \
      --dtype bf16 --workers 4 --eval-subset 128 --no-progress --out /tmp/cand > /tmp/cand.csv 2> /dev/null
    python3 "$stage/kernel_table.py" /tmp/cand.csv > /tmp/cand_table.txt 2>&1
    grep -E "launches|${pattern}" /tmp/cand_table.txt | head -8 | cut -c1-150 | sed "s/^/$label $model: /" | tee -a "$log"
  }
  parts=" ${CAND_PARTS:-checks speed} "  # the two halves fit one 10-minute call each
  [[ $parts == *" checks "* ]] && kernels_of default convformer_s18 "depthwise_dw|norm_rows|column_partials|column_finish|dw_tiled"
  [[ $parts == *" checks "* ]] && kernels_of default caformer_s18 "attention|softmax|gemm|Kernel"
  [[ $parts == *" checks "* ]] && for cand in "${cands[@]}"; do
    IFS='|' read -r switch filters pattern <<< "$cand"
    model=convformer_s18
    if [[ $pattern == *"|caformer_s18" ]]; then model=caformer_s18; pattern=${pattern%|caformer_s18}; fi
    for mode in test grad; do
      for dt in fp32 bf16; do
        for op in $filters; do
          env "$switch" "$T" --backend cuda --dtype $dt --mode $mode --op "$op" 2>&1 | grep -E "FAIL|cases,"
        done | tr '\n' ' ' | sed "s/^/$switch, $dt $mode: /" | tee -a "$log"; echo | tee -a "$log"
      done
    done
    kernels_of "$switch" "$model" "$pattern" "$switch"
  done
  # Inference, batch 256 in bf16 (issue 12's measure), for the switch that touches forward kernels.
  [[ $parts == *" speed "* ]] && for v in default METAFORMER_CUDA_DW=regw; do
    env METAFORMER_CANDIDATE=1 ${v/#default/} timeout 200 "$M" bench --backend cuda --dtype bf16 \
      -m convformer_s18,caformer_s18,mambaout_femto -b 256 --runs 20 --warmup 3 2>&1 | grep -E "^\|" |
      sed "s/^/inference $v: /" | tee -a "$log"
  done
  [[ $parts == *" speed "* ]] && for m in $(echo "${CAND_MODELS:-convformer_s18,caformer_s18,mambaout_femto}" | tr , ' '); do
    for v in default "${cands[@]%%|*}" all; do
      sw=()
      [ "$v" = all ] && sw=("${all_on[@]}")
      [ "$v" != all ] && [ "$v" != default ] && sw=("$v")
      rm -rf /tmp/cand
      env METAFORMER_CANDIDATE=1 "${sw[@]}" timeout 120 "$M" train -m $m --data synthetic:5120 --batch 128 \
        --epochs 1 --max-steps 40 --backend cuda --dtype bf16 --workers 8 --eval-subset 128 --no-progress \
        --out /tmp/cand 2>&1 | grep -E "img/s|rror" | tail -1 | sed "s/^/$m $v: /" | tee -a "$log"
    done
  done
fi

if has steptimes; then  # is a training step bound by the host queuing work or by the GPU?
  echo "== step times (METAFORMER_STEP_TIMES=1): the host queuing a step, then waiting for the GPU to finish it" | tee "$OUT/steptimes.log"
  for m in $(echo "${SBS_MODELS:-poolformer_s12,convformer_s18,caformer_s18,mambaout_femto}" | tr , ' '); do
    for pinned in 1 0; do
      rm -rf /tmp/st
      METAFORMER_STEP_TIMES=1 METAFORMER_CUDA_PINNED_BATCHES=$pinned timeout 120 "$M" train -m $m \
        --data synthetic:5120 --batch 128 --epochs 1 --max-steps 40 --backend cuda --matmul bf16 --workers 8 \
        --eval-subset 128 --no-progress --out /tmp/st 2>&1 | grep -E "step times|img/s|rror" | tr '\n' ' ' |
        sed "s/^/$m pinned=$pinned: /; s/$/\n/" | tee -a "$OUT/steptimes.log"
    done
  done
  NSYS=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -1)
  if [ -n "$NSYS" ]; then  # the host's CUDA calls, summed by API, over 20 steps of the first model
    m=$(echo "${SBS_MODELS:-poolformer_s12}" | cut -d, -f1)
    rm -rf /tmp/st /tmp/ns.*
    timeout 150 "$NSYS" profile -t cuda,osrt -o /tmp/ns "$M" train -m $m --data synthetic:2560 --batch 128 --epochs 1 \
      --max-steps 20 --backend cuda --matmul bf16 --workers 8 --eval-subset 128 --no-progress --out /tmp/st > /tmp/ns.log 2>&1
    echo "nsys rc=$?" | tee -a "$OUT/steptimes.log"
    timeout 120 "$NSYS" stats --report cuda_api_sum,cuda_gpu_kern_sum --format csv /tmp/ns.nsys-rep > "$OUT/nsys_stats.csv" 2>&1
    grep -A14 -i "api" "$OUT/nsys_stats.csv" | cut -c1-200 | head -16 | tee -a "$OUT/steptimes.log"
  else
    echo "no nsys here" | tee -a "$OUT/steptimes.log"
  fi
fi

if has hostprofile; then  # the host's time per op while it queues training steps (no waiting around ops)
  echo "== host time per op (METAFORMER_PROFILE_HOST=1 --profile), 30 steps, --matmul bf16, batch 128" | tee "$OUT/hostprofile.log"
  for m in $(echo "${SBS_MODELS:-poolformer_s12,convformer_s18}" | tr , ' '); do
    rm -rf /tmp/hp
    METAFORMER_PROFILE_HOST=1 METAFORMER_STEP_TIMES=1 timeout 120 "$M" train -m $m --data synthetic:3840 --batch 128 \
      --epochs 1 --max-steps 30 --backend cuda --matmul bf16 --workers 8 --eval-subset 128 --no-progress --profile \
      --out /tmp/hp 2>&1 | grep -E "per op|step times|rror" | sed "s/^/$m: /" | tee -a "$OUT/hostprofile.log"
  done
fi

if has hoststacks; then  # a sampling profile of the host thread that queues the training steps
  # The device has no perf or nsys; cuda-gdb attaches. Each sample is one attach and one backtrace of
  # every thread; tools/device/stack_table.py counts the functions on the main thread's stacks.
  # Caveat (docs/cuda-log.md, eleventh session): once attached, cuda-gdb's library (libcudadebugger)
  # takes a lock in every kernel launch, so samples inside cuLaunchKernel say nothing about an
  # undisturbed run. Good for hangs and for host code between launches, not for launch costs.
  GDB=$(command -v gdb || command -v cuda-gdb || ls /usr/local/cuda/bin/cuda-gdb 2>/dev/null | head -1)
  m=$(echo "${SBS_MODELS:-poolformer_s12}" | cut -d, -f1)
  echo "== host stacks of $m training (--matmul bf16, batch 128), sampled with $GDB" | tee "$OUT/hoststacks.log"
  rm -rf /tmp/hs /tmp/stacks.txt
  timeout 200 "$M" train -m $m --data synthetic:64000 --batch 128 --epochs 1 --max-steps 480 --backend cuda \
    --matmul bf16 --workers 8 --eval-subset 128 --no-progress --out /tmp/hs > /tmp/hs.log 2>&1 &
  tpid=$!
  sleep 12
  pid=$(pgrep -P $tpid | head -1)  # the training process, not the timeout that runs it
  t0=$(date +%s)
  for i in $(seq 1 ${HOSTSTACK_SAMPLES:-30}); do
    kill -0 $pid 2>/dev/null || break
    [ $(( $(date +%s) - t0 )) -lt ${HOSTSTACK_SECONDS:-100} ] || break
    echo "=== sample $i" >> /tmp/stacks.txt
    timeout 30 "$GDB" -p $pid -batch -nx -ex "set pagination off" -ex "thread apply all bt 40" >> /tmp/stacks.txt 2>/dev/null
    sleep 0.3
  done
  kill $pid 2>/dev/null; wait $tpid 2>/dev/null
  echo "samples taken: $(grep -c '^=== sample' /tmp/stacks.txt) in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/hoststacks.log"
  cp /tmp/stacks.txt "$OUT/stacks.txt"
  python3 "$stage/stack_table.py" /tmp/stacks.txt 2>&1 | tee -a "$OUT/hoststacks.log"
fi

if has trainmemcheck; then  # the training step's copies (staged, pinned, read late) under memcheck
  echo "== compute-sanitizer memcheck on 3 GPU training steps" | tee "$OUT/trainmemcheck.log"
  rm -rf /tmp/tm
  timeout 240 compute-sanitizer --tool memcheck --error-exitcode 9 "$M" train -m poolformer_s12 \
    --data synthetic:48 --batch 8 --epochs 2 --max-steps 4 --backend cuda --workers 4 --eval-subset 8 \
    --drop-path 0.1 --mixup 0.2 --no-progress --out /tmp/tm >> "$OUT/trainmemcheck.log" 2>&1
  echo "training under memcheck: rc=$?" | tee -a "$OUT/trainmemcheck.log"
  tail -3 "$OUT/trainmemcheck.log"
fi

if has pinnedab; then
  # Three ways of feeding a step: every host-to-device copy waiting for the stream (staged=0 pinned=0,
  # the old default), small copies staged through page-locked blocks (staged=1 pinned=0, the default),
  # and the batch itself written by the loader into page-locked memory too (staged=1 pinned=1).
  echo "== staged small copies and pinned training batches against the old default" | tee "$OUT/pinnedab.log"
  METAFORMER_CUDA_PINNED_BATCHES=1 timeout 200 "$B/tests/mf_tests" --gtest_filter='CudaTraining.*' 2>&1 |
    grep -E "^\[  (FAILED|PASSED|SKIPPED) |OK \]|Failure" | tee -a "$OUT/pinnedab.log"
  for round in 1 2; do
    for v in "0 0" "1 0" "1 1"; do
      read -r staged pinned <<< "$v"
      for m in ${PINNED_MODELS:-poolformer_s12 convformer_s18}; do
        rm -rf /tmp/pin
        METAFORMER_CUDA_STAGED_COPIES=$staged METAFORMER_CUDA_PINNED_BATCHES=$pinned timeout 90 "$M" train -m $m \
          --data synthetic:5120 --batch 128 --epochs 1 --max-steps 40 --backend cuda --matmul bf16 --workers 8 \
          --eval-subset 128 --no-progress --out /tmp/pin 2>&1 |
          grep -E "img/s|rror" | sed "s/^/round $round staged=$staged pinned=$pinned $m: /" | tee -a "$OUT/pinnedab.log"
      done
    done
  done
fi

if has dwab; then
  echo "== depthwise A/B: the default against METAFORMER_CUDA_DW=tiled1 and =strip, and graphs off" | tee "$OUT/dwab.log"
  for dt in fp32 bf16; do
    METAFORMER_CUDA_DW=tiled1 timeout 200 "$T" --backend cuda --dtype $dt > /tmp/dw_ops.log 2>&1
    echo "op harness tiled1 $dt: rc=$?" | tee -a "$OUT/dwab.log"; grep -E "FAIL|cases," /tmp/dw_ops.log | tail -8 | tee -a "$OUT/dwab.log"
  done
  for v in default METAFORMER_CUDA_DW=tiled1 METAFORMER_CUDA_DW=strip METAFORMER_CUDA_GRAPHS=0; do
    env $([ $v = default ] || echo $v) timeout 200 "$M" bench --backend cuda --dtype bf16 \
      -m poolformer_s12,convformer_s18,caformer_s18,mambaout_femto -b 256,1 --runs 20 --warmup 3 2>&1 |
      grep "cuda" | sed "s/^/$v /" | tee -a "$OUT/dwab.log"
  done
fi

if has dwmma; then
  # The tensor-core depthwise forward (src/ops/cuda/kernels/depthwise_mma.cu; METAFORMER_CUDA_DW=mma,
  # mma2 for the tall blocks): the bf16 op and grad cases of every op that runs a
  # depthwise convolution (dx at stride 1 is the forward kernel), the golden models in bf16 and the
  # bf16 training tests, memcheck on the op cases, then bf16 inference at batch 256 and 1 and 40-step
  # training images/s against the default kernel.
  # DWMMA_PARTS picks parts ("checks kernel speed" by default; each is a few minutes, so a call
  # near its 10-minute limit can take them one or two at a time).
  log=$OUT/dwmma.log
  echo "== tensor-core depthwise: checks, then speed against the default" | tee -a "$log"
  dw_parts=" ${DWMMA_PARTS:-checks kernel speed} "
  dw_ops=depthwise,sepconv,gated_cnn,mixer/,convformer,mambaout
  [[ $dw_parts == *" checks "* ]] && for v in mma mma2; do
    for mode in test grad; do
      METAFORMER_CUDA_DW=$v timeout 200 "$T" --backend cuda --dtype bf16 --mode $mode --op "$dw_ops" > /tmp/dwm.log 2>&1
      echo "op harness $v bf16 $mode: rc=$?" | tee -a "$log"; grep -E "FAIL|cases," /tmp/dwm.log | tail -8 | tee -a "$log"
    done
  done
  [[ $dw_parts == *" checks "* ]] && METAFORMER_CUDA_DW=mma timeout 300 "$B/tests/mf_tests" \
    --gtest_filter='CudaBackend.*Bf16*:CudaTraining.Bf16*' 2>&1 | grep -E "^\[ *(OK|FAILED|PASSED|SKIPPED) |error|rel" |
    head -40 | sed "s/^/mma gtest: /" | tee -a "$log"
  if [[ $dw_parts == *" checks "* ]]; then
    METAFORMER_CUDA_DW=mma timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 "$T" --backend cuda \
      --dtype bf16 --op depthwise,sepconv,gated_cnn > /tmp/dwm_mc.log 2>&1
    echo "memcheck mma: rc=$? $(grep -c 'Invalid' /tmp/dwm_mc.log) invalid accesses" | tee -a "$log"
  fi
  # The kernels' own self-test (a double host reference, src/ops/cuda/kernels/selftest.cu) with each
  # variant, and its kernel times at ConvFormer's four depthwise shapes (batch 256, bf16).
  if [[ $dw_parts == *" kernel "* ]] && CUDAK_BUILD_TO=/tmp/cudak OUT=/tmp/cudak_out bash "$S/tools/device/cudak_selftest.sh" "$S/src/ops/cuda/kernels" > /tmp/cudak_build.log 2>&1; then
    for v in default mma mma2; do
      env $([ $v = default ] || echo METAFORMER_CUDA_DW=$v) timeout 200 /tmp/cudak --perf > /tmp/cudak_$v.log 2>&1
      echo "selftest $v: rc=$? $(grep -c '^PASS' /tmp/cudak_$v.log) passed, $(grep -c '^FAIL' /tmp/cudak_$v.log) failed" | tee -a "$log"
      grep -E "^FAIL" /tmp/cudak_$v.log | head -5 | tee -a "$log"
      grep -E "^perf +depthwise" /tmp/cudak_$v.log | sed "s/^/$v /" | tee -a "$log"
    done
  elif [[ $dw_parts == *" kernel "* ]]; then
    echo "selftest build failed" | tee -a "$log"; tail -5 /tmp/cudak_build.log | tee -a "$log"
  fi
  [[ $dw_parts == *" speed "* ]] && for v in default METAFORMER_CUDA_DW=mma METAFORMER_CUDA_DW=mma2; do
    env $([ $v = default ] || echo $v) timeout 200 "$M" bench --backend cuda --dtype bf16 \
      -m convformer_s18,caformer_s18,mambaout_femto -b 256,1 --runs 20 --warmup 3 2>&1 |
      grep "cuda" | sed "s/^/$v /" | tee -a "$log"
  done
  [[ $dw_parts == *" speed "* ]] && for m in convformer_s18 mambaout_femto; do
    for v in default METAFORMER_CUDA_DW=mma METAFORMER_CUDA_DW=mma2; do
      rm -rf /tmp/cand
      env $([ $v = default ] || echo $v) timeout 120 "$M" train -m $m --data synthetic:5120 --batch 128 \
        --epochs 1 --max-steps 40 --backend cuda --dtype bf16 --workers 8 --eval-subset 128 --no-progress \
        --out /tmp/cand 2>&1 | grep -E "img/s|rror" | tail -1 | sed "s/^/$m $v: /" | tee -a "$log"
    done
  done
fi

if has chunkab; then
  # Sample-chunked branches (METAFORMER_CUDA_CHUNK_MB, src/ops/cuda/cuda_backend.cpp): first the
  # chunked path's correctness with chunks of a few samples (0.01 MiB: every op case of a branch is
  # cut), the op cases in fp32 and bf16 and the golden models against timm; then bf16 inference at
  # batch 256 and 1 (time and peak memory) with budgets of 8, 16, 32 and 48 MiB against none.
  log=$OUT/chunkab.log
  echo "== sample-chunked branches: checks, then speed and memory" | tee "$log"
  for dt in fp32 bf16; do
    METAFORMER_CUDA_CHUNK_MB=0.01 timeout 200 "$T" --backend cuda --dtype $dt \
      --op mlp_branch,sepconv,gated_cnn,pool_branch,mixer/,convformer,mambaout,poolformer > /tmp/chk.log 2>&1
    echo "op harness chunked $dt: rc=$?" | tee -a "$log"; grep -E "FAIL|cases," /tmp/chk.log | tail -8 | tee -a "$log"
  done
  METAFORMER_CUDA_CHUNK_MB=0.01 timeout 300 "$B/tests/mf_tests" \
    --gtest_filter='CudaBackend.GoldenModels*:CudaBackend.RepeatedRuns*' 2>&1 |
    grep -E "^\[ *(OK|FAILED|PASSED|SKIPPED) |rel" | head -40 | sed "s/^/chunked gtest: /" | tee -a "$log"
  for mb in 0 8 16 32 48; do
    METAFORMER_CUDA_CHUNK_MB=$mb timeout 200 "$M" bench --backend cuda --dtype bf16 \
      -m poolformer_s12,convformer_s18,caformer_s18,mambaout_femto -b 256,1 --runs 20 --warmup 3 2>&1 |
      grep "cuda" | sed "s/^/chunk ${mb} MiB: /" | tee -a "$log"
  done
fi

# A folder of 5,120 JPEGs of ImageNet's typical size (500x375, smooth random content, 10 classes;
# made with PIL) and 256 for validation, in /tmp/jpegs, read once so that it is in the page cache.
make_jpegs() {
  local log=$1
  if [ ! -d /tmp/jpegs/train ]; then
    python3 - <<'PY' >> "$log" 2>&1
import os, numpy as np
from PIL import Image
rng = np.random.default_rng(0)
for split, n in (("train", 5120), ("val", 256)):
    for i in range(n):
        d = f"/tmp/jpegs/{split}/c{i % 10}"
        os.makedirs(d, exist_ok=True)
        base = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)  # smooth content, JPEG-sized like a photo
        Image.fromarray(base).resize((500, 375), Image.BICUBIC).save(f"{d}/{i}.jpg", quality=90)
print("made", sum(len(f) for _, _, f in os.walk("/tmp/jpegs")), "JPEGs,", os.popen("du -sh /tmp/jpegs").read().split()[0])
PY
  fi
  cat /tmp/jpegs/*/*/*.jpg > /dev/null
}

# A/B of an environment switch: bf16 training images/s over 60 steps (batch 128, synthetic data) of
# each model with each value, twice alternating. Usage: ab_images_per_s LOG VARIABLE "VALUES" MODELS
# One 60-step (AB_STEPS) bf16 training run of MODEL with BIN under the environment ENV (NAME=VALUE,
# or "" for none), its epoch line and steady images/s appended to LOG after LABEL:
#   ab_train_run LOG LABEL BIN ENV MODEL
ab_train_run() {
  local log=$1 label=$2 bin=$3 envspec=$4 m=$5 steady
  rm -rf /tmp/ab
  # The epoch line's img/s includes start-up; steady_images_per_s (after the fifth step) does not.
  env $envspec timeout 120 "$bin" train -m $m --data synthetic:7680 --batch 128 --epochs 1 --max-steps "${AB_STEPS:-60}" \
    --backend cuda --dtype bf16 --workers 8 --eval-subset 128 --no-progress --out /tmp/ab > /tmp/ab.log 2>&1
  steady=$(python3 -c "import json; print(round(json.loads(open('/tmp/ab/metrics.jsonl').readlines()[-1]).get('steady_images_per_s', 0)))" 2>/dev/null)
  echo "$label: $(grep -E "img/s|rror" /tmp/ab.log | tail -1), steady ${steady:-?} img/s" | tee -a "$log"
}

ab_images_per_s() {
  local log=$1 var=$2 values=$3 models=$4 round m v
  for round in 1 2; do
    for m in $(echo "$models" | tr , ' '); do
      for v in $values; do ab_train_run "$log" "round $round $m $var=$v" "$M" "$var=$v" $m; done
    done
  done
}

if has baseab; then
  # The working tree against the basebuild step's commit (/tmp/mfbase): for a change with no switch
  # (model code, a kernel's signature), 60-step bf16 training images/s and losses of each model,
  # alternating the two binaries, two rounds (BASEAB_MODELS), then their kernel time in two
  # steps of BASEAB_KMODEL (default convformer_s18; BASEAB_KERNELS: a grep pattern of the kernel table).
  log=$OUT/baseab.log
  echo "== this tree against the base build ($(cat /tmp/mfbase_src/.base_commit 2>/dev/null)): images/s, kernels" | tee "$log"
  for round in 1 2; do
    for m in $(echo "${BASEAB_MODELS:-poolformer_s12,convformer_s18,caformer_s18,mambaout_femto}" | tr , ' '); do
      for bin in /tmp/mfbase/metaformer "$M"; do ab_train_run "$log" "round $round $m $bin" "$bin" "" $m; done
    done
  done
  for bin in /tmp/mfbase/metaformer "$M"; do
    rm -rf /tmp/tk_sc
    timeout 200 ncu --clock-control none --csv --metrics gpu__time_duration.sum "$bin" train \
      -m "${BASEAB_KMODEL:-convformer_s18}" --data synthetic:256 --batch 128 --epochs 1 --max-steps 2 --backend cuda \
      --dtype bf16 --workers 4 --eval-subset 128 --no-progress --out /tmp/tk_sc > /tmp/tk_sc.csv 2> /tmp/tk.err
    python3 "$stage/kernel_table.py" /tmp/tk_sc.csv > /tmp/tk_sc.md 2>&1
    { head -1 /tmp/tk_sc.md; grep -E "${BASEAB_KERNELS:-norm|residual|column}" /tmp/tk_sc.md; } | cut -c1-150 |
      sed "s|^|$bin: |" | tee -a "$log"
  done
fi

if has hostab; then
  # The host's side of a bf16 training step, this tree against the basebuild step's commit: the time
  # the host took to queue a step and then waited for the GPU (METAFORMER_STEP_TIMES=1), and its time
  # per op family (METAFORMER_PROFILE_HOST=1 --profile). For a step whose kernel time is unchanged
  # but whose images/s fell (poolformer_s12, 2026-12-06). HOSTAB_MODELS, default poolformer_s12.
  log=$OUT/hostab.log
  echo "== host time of a training step, this tree against the base build ($(cat /tmp/mfbase_src/.base_commit 2>/dev/null))" | tee "$log"
  for m in $(echo "${HOSTAB_MODELS:-poolformer_s12}" | tr , ' '); do
    for bin in /tmp/mfbase/metaformer "$M"; do
      rm -rf /tmp/hab
      METAFORMER_STEP_TIMES=1 timeout 120 "$bin" train -m $m --data synthetic:7680 --batch 128 --epochs 1 --max-steps 40 \
        --backend cuda --dtype bf16 --workers 8 --eval-subset 128 --no-progress --out /tmp/hab 2>&1 |
        grep -E "step times|img/s|rror" | sed "s|^|$m $bin: |" | tee -a "$log"
      rm -rf /tmp/hab
      METAFORMER_PROFILE_HOST=1 timeout 120 "$bin" train -m $m --data synthetic:3840 --batch 128 --epochs 1 --max-steps 30 \
        --backend cuda --dtype bf16 --workers 8 --eval-subset 128 --no-progress --profile --out /tmp/hab 2>&1 |
        grep -vE "^epoch|^\s*$" | head -40 | sed "s|^|$m $bin host: |" | tee -a "$log"
    done
  done
fi

if has imagefolder; then
  # Issue 13: "the GPU never waits for data on an image folder that fits in the page cache". A folder
  # of 5,120 JPEGs of ImageNet's typical size (500×375, random content, 10 classes; made with PIL,
  # read once so that it is in the page cache), then 60 bf16 training steps of each model at batch
  # 128 with 14 decoding workers: images/s and the seconds the step loop waited for data
  # (metrics.jsonl's data_wait_seconds), against the same run on synthetic data.
  log=$OUT/imagefolder.log
  echo "== image folder: does the GPU wait for data?" | tee "$log"
  make_jpegs "$log"
  # IMAGEFOLDER_STEPS (default 120: the loader's start is a smaller part of the run than in 60) and
  # IMAGEFOLDER_WORKERS (default "14 8": do fewer decoding threads leave the step loop more CPU?).
  steps_if=${IMAGEFOLDER_STEPS:-120}
  for m in $(echo "${IMAGEFOLDER_MODELS:-poolformer_s12,convformer_s18}" | tr , ' '); do
    for w in ${IMAGEFOLDER_WORKERS:-14 8}; do
      for data in /tmp/jpegs synthetic:5120; do
        rm -rf /tmp/imf
        # 40 batches an epoch: as many epochs as the steps need
        timeout 200 "$M" train -m $m --data $data --batch 128 --epochs $(( (steps_if + 39) / 40 )) --max-steps $steps_if --backend cuda \
          --dtype bf16 --workers $w --eval-subset 128 --no-progress --out /tmp/imf 2>&1 | grep -E "img/s|waited|rror" |
          tail -2 | sed "s|^|$m $w workers $data: |" | tee -a "$log"
        grep -o '"data_wait_seconds":[0-9.]*' /tmp/imf/metrics.jsonl 2>/dev/null | sed "s|^|$m $w workers $data: |" |
          tee -a "$log"
      done
    done
  done
fi

if has gpuaug; then
  # Augmentation by the backend (METAFORMER_BACKEND_AUGMENT=1, data/device_crops.h): the CUDA kernels
  # against the CPU transform (the gtests, bit for bit), memcheck on them, 30 bf16 steps on the image
  # folder with and without it (the same model.safetensors), then images/s and the step loop's data
  # wait with the loader augmenting, with the backend augmenting, and on synthetic data.
  log=$OUT/gpuaug.log
  echo "== augmentation by the backend: bits, then images/s" | tee "$log"
  timeout 200 "$B/tests/mf_tests" --gtest_filter='CudaAugment.*:DeviceCrops.*:TrainParts.Mix*' 2>&1 |
    grep -E "^\[ *(OK|FAILED|PASSED|SKIPPED) |Failure|differ|size" | head -20 | sed "s/^/gtest: /" | tee -a "$log"
  timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 "$B/tests/mf_tests" \
    --gtest_filter='CudaAugment.*' > /tmp/aug_mc.log 2>&1
  echo "memcheck CudaAugment: rc=$? $(grep -m1 'ERROR SUMMARY' /tmp/aug_mc.log)" | tee -a "$log"
  make_jpegs "$log"
  for v in 0 1; do
    rm -rf /tmp/aug_$v
    METAFORMER_BACKEND_AUGMENT=$v timeout 200 "$M" train -m poolformer_s12 --data /tmp/jpegs --batch 128 --epochs 1 \
      --max-steps 30 --backend cuda --dtype bf16 --workers 14 --eval-subset 128 --drop-path 0.1 --seed 3 \
      --no-progress --out /tmp/aug_$v 2>&1 | grep -E "img/s|augmentation|rror" | tail -2 | sed "s/^/bits $v: /" |
      tee -a "$log"
  done
  cmp /tmp/aug_0/model.safetensors /tmp/aug_1/model.safetensors && echo "backend augmentation: the same weights, bit for bit" |
    tee -a "$log" || echo "backend augmentation: THE WEIGHTS DIFFER" | tee -a "$log"
  # Mixup and CutMix: on the host (METAFORMER_BACKEND_MIX=0), by the backend, and by the backend after
  # its own augmentation: the same weights after 30 steps
  for v in host backend both; do
    rm -rf /tmp/mix_$v
    METAFORMER_BACKEND_MIX=$([ $v = host ] && echo 0 || echo 1) METAFORMER_BACKEND_AUGMENT=$([ $v = both ] && echo 1 || echo 0) \
      timeout 200 "$M" train -m poolformer_s12 --data /tmp/jpegs --batch 128 --epochs 1 --max-steps 30 --backend cuda \
      --dtype bf16 --workers 14 --eval-subset 128 --drop-path 0.1 --mixup 0.8 --cutmix 1.0 --seed 3 --no-progress \
      --out /tmp/mix_$v 2>&1 | grep -E "img/s|augmentation|rror|note" | tail -2 | sed "s/^/mix bits $v: /" | tee -a "$log"
  done
  for v in backend both; do
    cmp /tmp/mix_host/model.safetensors /tmp/mix_$v/model.safetensors &&
      echo "mixup $v: the same weights as mixing on the host, bit for bit" | tee -a "$log" ||
      echo "mixup $v: THE WEIGHTS DIFFER from mixing on the host" | tee -a "$log"
  done
  for m in $(echo "${GPUAUG_MODELS:-poolformer_s12,convformer_s18}" | tr , ' '); do
    # loader-mix / backend-mix: with Mixup and CutMix, everything on the host against everything by
    # the backend
    for v in loader backend synthetic loader-mix backend-mix; do
      rm -rf /tmp/augs
      data=/tmp/jpegs
      [ $v = synthetic ] && data=synthetic:5120
      mixargs=""
      case $v in *-mix) mixargs="--mixup 0.8 --cutmix 1.0" ;; esac
      # three epochs of the 40 batches: the last one's images/s, every epoch's data wait
      METAFORMER_BACKEND_AUGMENT=$(case $v in backend*) echo 1 ;; *) echo 0 ;; esac) \
      METAFORMER_BACKEND_MIX=$(case $v in backend*) echo 1 ;; *) echo 0 ;; esac) timeout 200 "$M" train -m $m --data $data \
        --batch 128 --epochs 3 --max-steps 120 --backend cuda --dtype bf16 --workers 14 --eval-subset 128 $mixargs \
        --no-progress --out /tmp/augs 2>&1 | grep -E "img/s|rror" | tail -1 | sed "s/^/$m $v: /" | tee -a "$log"
      grep -o '"data_wait_seconds":[0-9.]*' /tmp/augs/metrics.jsonl 2>/dev/null | sed "s/^/$m $v: /" | tee -a "$log"
    done
  done
fi

if has gluvec; then
  # The 16-byte GLU backward kernels (backward_kernels.cu: glu_dt_vec_kernel, glu_dc_vec_kernel),
  # the stems' im2col (conv.cu: im2col_flat_kernel) and the one-pass norm backward (NormAllMoments,
  # norm_dx_vec_kernel): the op harness's GLU, gated-mixer, conv2d and norm cases in fp32 and bf16,
  # the CUDA training tests and golden models, then where a bf16 mambaout_femto and poolformer_s12
  # training step's kernel time goes, and the default augmentation by the backend on an image folder.
  log=$OUT/gluvec.log
  echo "== 16-byte GLU backward" | tee "$log"
  for dt in fp32 bf16; do
    for mode in test grad; do
      timeout 200 "$T" --backend cuda --dtype $dt --mode $mode --op glu,gated,mambaout,token_mlp,conv2d,stem,norm > /tmp/gv.log 2>&1
      echo "op harness $dt $mode: rc=$?" | tee -a "$log"; grep -E "FAIL|cases," /tmp/gv.log | tail -6 | tee -a "$log"
    done
  done
  timeout 400 "$B/tests/mf_tests" --gtest_filter='CudaTraining.*:CudaBackend.EveryBackwardCase*:CudaBackend.Golden*' 2>&1 |
    grep -E "^\[ *(OK|FAILED|PASSED|SKIPPED) |Failure|sample" | head -40 | sed "s/^/gtest: /" | tee -a "$log"
  for m in mambaout_femto poolformer_s12; do
    rm -rf /tmp/tk_gv
    timeout 200 ncu --clock-control none --csv --metrics gpu__time_duration.sum "$M" train -m $m \
      --data synthetic:256 --batch 128 --epochs 1 --max-steps 2 --backend cuda --dtype bf16 --workers 4 \
      --eval-subset 128 --no-progress --out /tmp/tk_gv > /tmp/tk_gv.csv 2> /tmp/tk.err
    echo "## $m, two bf16 steps and one small evaluation" | tee -a "$log"
    python3 "$stage/kernel_table.py" /tmp/tk_gv.csv 2>&1 | head -24 | cut -c1-150 | tee -a "$log"
  done
  make_jpegs "$log"
  rm -rf /tmp/gv_if
  timeout 200 "$M" train -m poolformer_s12 --data /tmp/jpegs --batch 128 --epochs 1 --max-steps 30 --backend cuda \
    --dtype bf16 --workers 14 --eval-subset 128 --mixup 0.8 --cutmix 1.0 --no-progress --out /tmp/gv_if 2>&1 |
    grep -E "img/s|augmentation|rror" | sed "s/^/image folder, defaults: /" | tee -a "$log"
fi

if has colsumab; then
  # The 16-byte column sums (METAFORMER_CUDA_COLSUM=vec; backward_common.cuh, column_partials_vec_kernel:
  # bias gradients, the norms' parameter gradients, the layer and residual scales' gradients): the op
  # harness's backward cases and the CUDA training tests with it, then bf16 training images/s off and
  # on (60 steps, twice alternating) and the kernel table of two poolformer_s12 steps with it.
  log=$OUT/colsumab.log
  echo "== 16-byte column sums: checks, then images/s" | tee "$log"
  for dt in fp32 bf16; do
    METAFORMER_CUDA_COLSUM=vec timeout 300 "$T" --backend cuda --dtype $dt --mode grad > /tmp/cs.log 2>&1
    echo "op harness grad $dt, vec: rc=$?" | tee -a "$log"; grep -E "FAIL|cases," /tmp/cs.log | tail -6 | tee -a "$log"
  done
  METAFORMER_CUDA_COLSUM=vec timeout 300 "$B/tests/mf_tests" --gtest_filter='CudaTraining.*:CudaBackend.EveryBackwardCase*' 2>&1 |
    grep -E "^\[ *(OK|FAILED|PASSED|SKIPPED) |Failure" | head -30 | sed "s/^/vec gtest: /" | tee -a "$log"
  ab_images_per_s "$log" METAFORMER_CUDA_COLSUM "scalar vec" "${COLSUM_MODELS:-poolformer_s12,convformer_s18,caformer_s18}"
  rm -rf /tmp/tk_cs
  METAFORMER_CUDA_COLSUM=vec timeout 200 ncu --clock-control none --csv --metrics gpu__time_duration.sum "$M" train \
    -m poolformer_s12 --data synthetic:256 --batch 128 --epochs 1 --max-steps 2 --backend cuda --dtype bf16 \
    --workers 4 --eval-subset 128 --no-progress --out /tmp/tk_cs > /tmp/tk_cs.csv 2> /tmp/tk.err
  python3 "$stage/kernel_table.py" /tmp/tk_cs.csv 2>&1 | head -20 | cut -c1-150 | tee -a "$log"
fi

# One kernel candidate behind an environment switch, checked and timed against the default in one
# go: the op harness's cases of OPS (grad and test, bf16 and fp32) with it, under memcheck and racecheck, the
# CUDA backward and training tests with it; then the kernels matching PATTERN in two bf16 training
# steps of MODEL under Nsight Compute, default then candidate, and training images/s (60 steps,
# twice alternating) of AB_MODELS. OWN is a pattern of the candidate's own kernel names: a run whose
# table lacks it says so loudly (the first `batch` run of 2026-12-05 ran another kernel unnoticed).
#   switch_check LOG VAR DEFAULT CANDIDATE OPS MODEL PATTERN AB_MODELS OWN
switch_check() {
  local log=$1 var=$2 def=$3 cand=$4 ops=$5 model=$6 pattern=$7 ab_models=$8 own=$9 mode tool v
  for dt in bf16 fp32; do
    for mode in grad test; do
      env "$var=$cand" timeout 200 "$T" --backend cuda --dtype $dt --mode $mode --op "$ops" > /tmp/sc.log 2>&1
      echo "op harness $dt $mode, $var=$cand: rc=$?" | tee -a "$log"; grep -E "FAIL|cases," /tmp/sc.log | tail -8 | tee -a "$log"
    done
  done
  # SC_QUICK=1 (a call with little device time left): the op cases and images/s only.
  if [ "${SC_QUICK:-0}" = 1 ]; then
    ab_images_per_s "$log" "$var" "$def $cand" "$ab_models"
    return
  fi
  for tool in memcheck racecheck; do
    env "$var=$cand" timeout 200 compute-sanitizer --tool $tool --error-exitcode 9 "$T" --backend cuda \
      --dtype bf16 --mode grad --op "$ops" > /tmp/sc_$tool.log 2>&1
    echo "$tool, $cand: rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' /tmp/sc_$tool.log | tail -1)" | tee -a "$log"
  done
  # Which kernels racecheck's hazards are in: cuBLASLt's nvjet kernels report two whatever the switch
  # (H100, 2026-12-07, step racecheck); a hazard in one of ours is what matters.
  grep -E "Race reported|access at" /tmp/sc_racecheck.log | sed 's/+0x[0-9a-f]*//g; s/\[[0-9]* hazards\]//' |
    sort -u | head -6 | sed 's/^/  racecheck hazard: /' | tee -a "$log"
  env "$var=$cand" timeout 300 "$B/tests/mf_tests" \
    --gtest_filter='CudaTraining.*:CudaBackend.EveryBackwardCase*:CudaBackend.*Bf16*:*TrainGolden*former*cuda*' 2>&1 |
    grep -E "^\[ *(FAILED|PASSED|SKIPPED) |Failure" | head -40 | sed "s/^/$cand gtest: /" | tee -a "$log"
  for v in $def $cand; do
    rm -rf /tmp/tk_sc
    env "$var=$v" timeout 200 ncu --clock-control none --csv --metrics gpu__time_duration.sum "$M" train \
      -m "$model" --data synthetic:256 --batch 128 --epochs 1 --max-steps 2 --backend cuda --dtype bf16 \
      --workers 4 --eval-subset 128 --no-progress --out /tmp/tk_sc > /tmp/tk_sc.csv 2> /tmp/tk.err
    python3 "$stage/kernel_table.py" /tmp/tk_sc.csv > /tmp/tk_sc.md 2>&1
    { head -1 /tmp/tk_sc.md; grep -E "$pattern" /tmp/tk_sc.md; } | cut -c1-150 | sed "s/^/$v: /" | tee -a "$log"
    [ "$v" = "$cand" ] && ! grep -qE "$own" /tmp/tk_sc.md &&
      echo "WARNING: $var=$cand did not run its own kernels ($own): the checks above did not test it" | tee -a "$log"
  done
  ab_images_per_s "$log" "$var" "$def $cand" "$ab_models"
}

# bf16 inference at batch 256 for each value of a kernel switch, into LOG:
#   inference_ab LOG VAR "VALUES"
inference_ab() {
  local log=$1 var=$2 v
  for v in $3; do
    env "$var=$v" timeout 200 "$M" bench --backend cuda --dtype bf16 \
      -m convformer_s18,caformer_s18,mambaout_femto -b 256 --runs 20 --warmup 3 2>&1 | grep -E "^\|" |
      sed "s/^/inference $v: /" | tee -a "$log"
  done
}

# A depthwise-forward candidate (METAFORMER_CUDA_DW) against a baseline: switch_check on the
# depthwise ops and convformer_s18's dw_tiled kernels (OWN: the candidate's kernel names), then bf16
# inference at batch 256 for each of INFERENCE.
#   dw_forward_check LOG BASELINE CANDIDATE OWN "INFERENCE"
dw_forward_check() {
  switch_check "$1" METAFORMER_CUDA_DW "$2" "$3" depthwise,sepconv,gated_cnn,mixer/,convformer,mambaout \
    convformer_s18 "dw_tiled" "${DWBATCH_MODELS:-convformer_s18,mambaout_femto}" "$4"
  inference_ab "$1" METAFORMER_CUDA_DW "$5"
}

if has attntiles; then
  # The key-tile attention backward (attention_backward_wmma.cu; the default since this step's run
  # of 2026-12-05) against the lock-step kernel (METAFORMER_CUDA_ATTN_BWD=wmma).
  log=$OUT/attntiles.log
  echo "== key-tile attention backward: checks, kernel time, images/s" | tee "$log"
  switch_check "$log" METAFORMER_CUDA_ATTN_BWD wmma tiles attention/ caformer_s18 "attention" "${ATTN_MODELS:-caformer_s18}" \
    "attention_backward_tiles_kernel"
fi

if has attnmma; then
  # Attention's backward with raw mma.sync, P and dS in registers (attention_backward_mma.cu,
  # METAFORMER_CUDA_ATTN_BWD=mma) against the key-tile default.
  log=$OUT/attnmma.log
  echo "== attention backward with raw mma.sync: checks, kernel time, images/s" | tee "$log"
  switch_check "$log" METAFORMER_CUDA_ATTN_BWD tiles mma attention/ caformer_s18 "attention" "${ATTN_MODELS:-caformer_s18}" \
    "attention_backward_mma_kernel"
fi

if has colsumbatch; then
  # The column sums with a thread's next rows loaded before their stores (METAFORMER_CUDA_COLSUM=batch,
  # backward_common.cuh; ScaleGrads opts in: the layer and residual scales' gradients with dx and
  # dbranch) against the scalar default, on poolformer_s12, whose table it tops.
  log=$OUT/colsumbatch.log
  echo "== column sums, rows batched: checks, kernel time, images/s" | tee "$log"
  switch_check "$log" METAFORMER_CUDA_COLSUM scalar batch scaled_residual,_branch,mixer/ poolformer_s12 \
    "column_partials|ScaleGrads" "${COLSUM_MODELS:-poolformer_s12,convformer_s18}" "column_partials_vec_kernel<.*ScaleGrads.*, 4"
fi

if has racecheck; then
  log=$OUT/racecheck.log
  : > "$log"
  for setting in ${RACE_SETTINGS:-default METAFORMER_CUDA_COLSUM=fvec}; do
    envset=(); [ "$setting" != default ] && envset=("$setting")
    # The default report (analysis) names each hazard's two accesses once, by kernel; hazard mode would
    # print every racing pair (484 for the 2 of 2026-12-07).
    env "${envset[@]}" timeout 300 compute-sanitizer --tool racecheck --error-exitcode 9 \
      "$T" --backend cuda --dtype bf16 --mode grad \
      --op "${RACE_OPS:-scaled_residual,_branch,mixer/,linear,glu,gated_cnn,conv2d,norm}" > /tmp/race.log 2>&1
    echo "== $setting: rc=$? $(grep -E 'RACECHECK SUMMARY' /tmp/race.log | tail -1)" | tee -a "$log"
    # Each hazard by kernel (offsets and counts dropped): on 2026-12-07 (H100) the only two were inside
    # cuBLASLt's own nvjet kernels, with the default as with fvec. --kernel-name-exclude kns=nvjet made
    # the sanitizer itself fail ("failed to handle a hardware exception"), so they are not filtered out.
    grep -E "Race reported|access at|cases," /tmp/race.log | sed 's/+0x[0-9a-f]*//g; s/\[[0-9]* hazards\]//' |
      sort | uniq -c | sort -rn | head -20 | tee -a "$log"
  done
fi

if has colsumf; then
  # The column sums with float running sums a thread (METAFORMER_CUDA_COLSUM=fbatch: the batched rows
  # of `batch` where the functor has them, ScaleGrads; the 16-byte kernel elsewhere: bias gradients,
  # norm parameters) against the scalar kernel everywhere: every op case that reduces columns,
  # poolformer_s12's kernel table, and images/s of the model it tops and of mambaout_femto (122 bias
  # sums a step). Run on an H200 on 2026-12-06; since then fbatch is ScaleGrads' default.
  log=$OUT/colsumf.log
  echo "== column sums, float running sums: checks, kernel time, images/s" | tee "$log"
  # COLSUMF_DEF / COLSUMF_CAND pick the two values (e.g. auto against fbatch: the unrolled bias sums).
  switch_check "$log" METAFORMER_CUDA_COLSUM "${COLSUMF_DEF:-scalar}" "${COLSUMF_CAND:-fbatch}" scaled_residual,_branch,mixer/,linear,glu,gated_cnn,conv2d,norm \
    poolformer_s12 "column_partials|ScaleGrads|ColumnSum" "${COLSUM_MODELS:-poolformer_s12,mambaout_femto}" \
    "column_partials_vec_kernel<.*float>"
fi

if has foldls; then
  # Training's layer-scaled MLP halves with the scale folded into fc2 (METAFORMER_CUDA_FOLD_LS=1:
  # linear_scaled_residual, linear_act_scaled_backward, layer_scale_fold_grads_kernel) against the
  # separate ops: the MLP and residual op cases, the CUDA tests and training goldens with it on,
  # poolformer_s12's kernel table and images/s (FOLDLS_MODELS).
  log=$OUT/foldls.log
  echo "== folded layer scales in training: checks, kernel time, images/s" | tee "$log"
  switch_check "$log" METAFORMER_CUDA_FOLD_LS 0 1 mlp_train,linear,scaled_residual,pool_branch,group_norm1 poolformer_s12 \
    "layer_scale_fold|ScaleGrads|scaled_residual|pool|gn_|group_norm|nvjet" "${FOLDLS_MODELS:-poolformer_s12}" "layer_scale_fold"
fi

if has actdw; then
  # Training's StarReLU → depthwise convolution as one op (METAFORMER_CUDA_ACT_DW=1: act_depthwise_conv2d,
  # the forward kernel's input activation, the tiled dW kernel with PRE) against the separate ops: the
  # depthwise and activation op cases, the CUDA tests and training goldens with it on, convformer_s18's
  # kernel table and images/s (ACTDW_MODELS). The model-level comparison is mf_tests'
  # FusedActDepthwise.*OnTheGpu (fp32).
  log=$OUT/actdw.log
  echo "== activation in the depthwise kernels in training: checks, kernel time, images/s" | tee "$log"
  switch_check "$log" METAFORMER_CUDA_ACT_DW 0 1 act_depthwise,depthwise,sepconv,activation convformer_s18 \
    "depthwise|dw_|activation|star_relu" "${ACTDW_MODELS:-convformer_s18,caformer_s18}" \
    "depthwise_dw_tiled_kernel<7, [^,]*, 2>"
  timeout 300 "$B/tests/mf_tests" --gtest_filter='*FusedActDepthwise*' 2>&1 |
    grep -E "^\[ *(FAILED|PASSED|SKIPPED) |Failure" | head -20 | tee -a "$log"
fi

if has dwbatch; then
  # The depthwise forward with the staging's global loads issued first (METAFORMER_CUDA_DW=batch,
  # conv.cu's BATCH) against the default tiled kernel; then bf16 inference at batch 256.
  log=$OUT/dwbatch.log
  echo "== depthwise forward, batched staging: checks, kernel time, images/s" | tee "$log"
  dw_forward_check "$log" tiled batch "dw_tiled_kernel<[^>]*, 0, 1, 0" "tiled batch"
fi

if has dwvariants; then
  # Every depthwise variant against the others in one process (bench/cuda_dev/depthwise_variants.cpp):
  # ConvFormer-S18's four 7×7 shapes in bf16 at batch 128, CUDA-event medians, outputs compared with the
  # first variant's. Needs the mf_cuda_dw_variants target (in the default build targets).
  log=$OUT/dwvariants.log
  echo "== depthwise variants, kernel by kernel" | tee "$log"
  if [ -x "$B/bench/mf_cuda_dw_variants" ]; then
    timeout 200 "$B/bench/mf_cuda_dw_variants" ${DWVARIANTS_ARGS:-} 2>&1 | tee -a "$log"
  else
    echo "no $B/bench/mf_cuda_dw_variants: build it (BUILD_TARGETS)" | tee -a "$log"
  fi
fi

if has dwbatch2; then
  # The batched staging's shared stores in a bank-conflict-free order (METAFORMER_CUDA_DW=batch2, conv.cu's
  # store_staged with SWZ) against the batch default: Nsight Compute counted 5.5 wavefronts a shared
  # store request in both tiled kernels (H100, 2026-12-05, kprofile). Then bf16 inference at batch 256.
  log=$OUT/dwbatch2.log
  echo "== depthwise forward, conflict-free staging stores: checks, kernel time, images/s" | tee "$log"
  dw_forward_check "$log" batch batch2 "dw_tiled_kernel<[^>]*, 0, 1, 1" "batch batch2"
  KPROFILE="dw_tiled_kernel|convformer_s18|0" METAFORMER_CUDA_DW=batch2 NO_BUILD=1 bash "$0" kprofile > /dev/null 2>&1
  grep -E "Duration|Registers|Bank|bank|local" "$OUT/kprofile.log" | cut -c1-160 | sed "s/^/batch2 kprofile: /" | tee -a "$log"
fi

if has dwwide; then
  # The depthwise forward on patches 16 columns wide (METAFORMER_CUDA_DW=wide: batch2 with TW = 16,
  # two blocks an SM) against batch2 and the batch default: op checks and kernel time against batch,
  # then bf16 inference at batch 256 for all three.
  log=$OUT/dwwide.log
  echo "== depthwise forward, 16-column patches: checks, kernel time, images/s" | tee "$log"
  dw_forward_check "$log" batch wide "dw_tiled_kernel<[^>]*, 1, 1, 16" "batch batch2 wide"
fi

if has dwact; then
  # The depthwise forward with its activations' kinds fixed at compile time (METAFORMER_CUDA_DW=batchact,
  # conv.cu's act_static: no switch per staged input and output; the default from this step's run of
  # 2026-12-06 until lean) against batch: its op cases, the kernels one by one (mf_cuda_dw_variants, with and
  # without ConvFormer's StarReLU first), the switch checks, then bf16 inference (DWACT_INFERENCE).
  log=$OUT/dwact.log
  echo "== depthwise forward, static activations: checks, kernel time, images/s" | tee "$log"
  if [ -x "$B/bench/mf_cuda_dw_variants" ]; then
    timeout 120 "$B/bench/mf_cuda_dw_variants" --fwd batch,batchact --dw tiled 2>&1 | tee -a "$log"
  fi
  # Own kernels: StarReLU first, nothing after, not lean (the template's last three arguments).
  dw_forward_check "$log" batch batchact "dw_tiled_kernel<[^>]*, 8, 2, 0, 0>" "${DWACT_INFERENCE:-batch batchact}"
fi

if has dwlean; then
  # The depthwise forward's staging with 32-bit index math, walked (METAFORMER_CUDA_DW=lean,
  # conv.cu's dw_patch_load_lean; the default since this step's run of 2026-12-06) against batchact:
  # the kernels one by one (mf_cuda_dw_variants), the switch checks, then bf16 inference.
  log=$OUT/dwlean.log
  echo "== depthwise forward, 32-bit staging: checks, kernel time, images/s" | tee "$log"
  if [ -x "$B/bench/mf_cuda_dw_variants" ]; then
    timeout 120 "$B/bench/mf_cuda_dw_variants" --fwd batchact,lean --dw tiled 2>&1 | tee -a "$log"
  fi
  dw_forward_check "$log" batchact lean "dw_tiled_kernel<[^>]*, 0, 1>" "${DWLEAN_INFERENCE:-batchact lean}"
fi

if has normvec; then
  # LayerNorm's backward with the parameter gradients in one pass, G lanes a row and 16-byte loads
  # (norm_backward_vec.cuh, METAFORMER_CUDA_NORM_BWD=vec) against the fused kernel (2-byte loads).
  log=$OUT/normvec.log
  echo "== LayerNorm backward, 16 bytes a load: checks, kernel time, images/s" | tee "$log"
  switch_check "$log" METAFORMER_CUDA_NORM_BWD fused vec layer_norm,mlp_branch,sepconv_branch,gated_cnn_branch convformer_s18 \
    "norm_rows" "${NORMVEC_MODELS:-convformer_s18,caformer_s18}" "norm_rows_backward_vec_kernel"
fi

if has glurows; then
  # The gated product's backward reading its gate, value and dy once (backward_kernels.cu's
  # glu_rows_vec_kernel, METAFORMER_CUDA_GLU_BWD=rows, the default on its branch) against glu_dt_vec
  # and glu_dc_vec (split). The same float operations: the losses should match to the last digit.
  log=$OUT/glurows.log
  echo "== gated product backward in one pass: checks, kernel time, images/s" | tee "$log"
  switch_check "$log" METAFORMER_CUDA_GLU_BWD split rows glu,gated_cnn,mlp,mixer/gated mambaout_femto \
    "glu" "${GLUROWS_MODELS:-mambaout_femto}" "glu_rows_vec_kernel"
fi

if has colsummamba; then
  # The 16-byte column sums (METAFORMER_CUDA_COLSUM=vec) on mambaout_femto, where the bias gradients'
  # column sums are 7.6 % of a bf16 step's kernel time (H100, 2026-12-06) and which colsumab never
  # timed (its "no faster" was poolformer_s12, convformer_s18 and caformer_s18).
  log=$OUT/colsummamba.log
  echo "== 16-byte column sums on mambaout_femto: checks, kernel time, images/s" | tee "$log"
  switch_check "$log" METAFORMER_CUDA_COLSUM scalar vec linear,glu,gated_cnn,conv2d mambaout_femto \
    "Column|column" "${COLSUMMAMBA_MODELS:-mambaout_femto}" "column_partials_vec_kernel"
fi

if has dwdwtiled; then
  # The depthwise weight gradient from tiles staged in shared memory (METAFORMER_CUDA_DW_DW=tiled,
  # conv_backward.cu's depthwise_dw_tiled_kernel) against the units default (rows2).
  log=$OUT/dwdwtiled.log
  echo "== depthwise weight gradient, staged tiles: checks, kernel time, images/s" | tee "$log"
  switch_check "$log" METAFORMER_CUDA_DW_DW rows2 tiled depthwise,sepconv,gated_cnn,mixer/,convformer,mambaout \
    convformer_s18 "depthwise_dw" "${DWDW_MODELS:-convformer_s18,mambaout_femto}" "depthwise_dw_tiled_kernel"
fi

if has geluepi; then
  # A training step's MLP GELU in cuBLASLt's epilogues (METAFORMER_CUDA_GELU_EPILOGUE=1, the default
  # since this step's run of 2026-12-05: GELU_AUX_BIAS in fc1's GEMM, DGELU in fc2's dx product;
  # Backend::linear_act_train and linear_act_backward) against the activation kernels (=0): the MLP
  # op cases and the linear ones, sanitizers, CUDA tests, kernel time and images/s of poolformer_s12
  # (GELU MLPs; ConvFormer's and CAFormer's StarReLU are unchanged).
  log=$OUT/geluepi.log
  echo "== GELU in the GEMM epilogues in training: checks, kernel time, images/s" | tee "$log"
  switch_check "$log" METAFORMER_CUDA_GELU_EPILOGUE 0 1 mlp_train,mlp/,linear poolformer_s12 \
    "activation|gelu" "${GELU_MODELS:-poolformer_s12}" "gelu"
fi

if has gnbwd; then
  # GroupNorm's backward with one reduction pass (METAFORMER_CUDA_GN_BWD=onepass: per sample and
  # channel sums of x, x², dy and dy · x, from which the statistics, the gradient's means and the
  # parameter gradients follow; the default since 2026-12-06) against split's two.
  log=$OUT/gnbwd.log
  echo "== GroupNorm backward in one reduction pass: checks, kernel time, images/s" | tee "$log"
  switch_check "$log" METAFORMER_CUDA_GN_BWD split onepass group_norm1,_branch poolformer_s12 \
    "Norm|norm_dx|gn_" "${GN_MODELS:-poolformer_s12}" "gn_onepass"
fi

if has uploadab; then
  # The next batch uploaded on a copy stream while the step computes (METAFORMER_CUDA_UPLOAD_AHEAD=1,
  # Backend::upload_ahead): first that it changes no bit (30 --dtype bf16 steps with drop path and
  # Mixup, off and on: the same model.safetensors), the CudaTraining tests with it on, then images/s
  # over 60 steps of each model, off and on, twice alternating.
  log=$OUT/uploadab.log
  echo "== upload ahead: the same bits, then images/s" | tee "$log"
  for v in 0 1; do
    rm -rf /tmp/upl_$v
    METAFORMER_CUDA_UPLOAD_AHEAD=$v timeout 200 "$M" train -m poolformer_s12 --data synthetic:3840 --batch 128 \
      --epochs 1 --max-steps 30 --backend cuda --dtype bf16 --workers 8 --eval-subset 128 --drop-path 0.1 \
      --mixup 0.8 --cutmix 1.0 --seed 3 --no-progress --out /tmp/upl_$v 2>&1 | grep -E "img/s|rror" | tail -1 |
      sed "s/^/bits $v: /" | tee -a "$log"
  done
  cmp /tmp/upl_0/model.safetensors /tmp/upl_1/model.safetensors && echo "upload ahead: the same weights, bit for bit" | tee -a "$log" ||
    echo "upload ahead: THE WEIGHTS DIFFER" | tee -a "$log"
  METAFORMER_CUDA_UPLOAD_AHEAD=1 timeout 300 "$B/tests/mf_tests" --gtest_filter='CudaTraining.*' 2>&1 |
    grep -E "^\[ *(OK|FAILED|PASSED|SKIPPED) " | sed "s/^/upload ahead gtest: /" | tee -a "$log"
  ab_images_per_s "$log" METAFORMER_CUDA_UPLOAD_AHEAD "0 1" "${UPLOAD_MODELS:-poolformer_s12,convformer_s18}"
fi

if has families; then
  # The paper networks' and sequence models' ops (src/ops/cuda/cuda_family_ops.h; offered by default
  # since this step passed, the variable kept for older trees): every op case in both modes and dtypes,
  # the mixers trained on the GPU, the families' golden models (logits, one step's gradients against
  # the reference backend), memcheck, then bf16 inference and a few training steps of each family.
  export METAFORMER_CUDA_FAMILY_OPS=1
  fam_ops=permute,spatial_shift,resize_bicubic,max_pool2d,avg_pool2d,upsample_nearest,conv_transpose2d,strip_mix,split_attention,grn,gate/,batch_norm,add_positions,embedding,rms_norm,softmax_gate,causal_conv1d,causal_attention,selective_scan,bidirectional_scan,ponet_pool
  : > "$OUT/families.log"
  for dtype in fp32 bf16; do
    for mode in test grad; do
      echo "== family op cases: $mode, $dtype" | tee -a "$OUT/families.log"
      timeout 200 "$T" --backend cuda --dtype $dtype --mode $mode --op "$fam_ops" >> "$OUT/families.log" 2>&1
      echo "rc=$?" | tee -a "$OUT/families.log"
    done
  done
  echo "op cases: $(grep -c '^  ok' "$OUT/families.log") ok, $(grep -c '^  FAIL' "$OUT/families.log") failed"
  grep -E "^  FAIL" "$OUT/families.log" | head -30
  for dtype in fp32 bf16; do
    echo "== every mixer trained on the GPU ($dtype)" | tee -a "$OUT/families.log"
    timeout 300 "$T" --backend cuda --dtype $dtype --mode grad --op mixer/ >> "$OUT/families.log" 2>&1
    echo "rc=$?" | tee -a "$OUT/families.log"
  done
  grep -E "FAIL  mixer" "$OUT/families.log" | head -20
  echo "== the families' golden models (CudaFamily tests) and the CUDA backend's tests" | tee -a "$OUT/families.log"
  timeout 300 "$B/tests/mf_tests" --gtest_filter='Families/CudaFamily.*:CudaBackend.*' 2>&1 | tee -a "$OUT/families.log" |
    grep -E "^\[  (FAILED|PASSED|SKIPPED) |Failure|actual" | head -30
  fam_dirs=$(ls -d "$S"/tests/data/golden/{raftmlp,msmlp,stripmlp,casvit,wavemix,iformer}*/ 2>/dev/null)
  echo "== verify, fp32 (2e-5) then bf16 (5e-2)" | tee -a "$OUT/families.log"
  timeout 120 "$M" verify --backend cuda $fam_dirs --tolerance 2e-5 2>&1 | tee -a "$OUT/families.log" | tail -25
  timeout 120 "$M" verify --backend cuda --dtype bf16 $fam_dirs --tolerance 5e-2 2>&1 | tee -a "$OUT/families.log" | tail -25
  echo "== compute-sanitizer memcheck on the family op cases" | tee -a "$OUT/families.log"
  for dtype in fp32 bf16; do
    for mode in test grad; do
      timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 "$T" --backend cuda --dtype $dtype --mode $mode \
        --op "$fam_ops" > /tmp/fam_mc.log 2>&1
      echo "$mode $dtype under memcheck: rc=$? $(grep -m1 'ERROR SUMMARY' /tmp/fam_mc.log)" | tee -a "$OUT/families.log"
      grep -m5 -E "Invalid|out of bounds" /tmp/fam_mc.log
    done
  done
  echo "== bf16 inference, batch 64, and 10 training steps (--dtype bf16, batch 32) of each family" | tee -a "$OUT/families.log"
  fam_models=${FAM_MODELS:-raftmlp_s,msmlp_tiny,stripmlp_tiny,casvit_xs,wavemix_lite,iformer_small,affnet_t}
  timeout 300 "$M" bench -m $fam_models --backend cuda --dtype bf16 -b 64 --runs 5 2>&1 | tee -a "$OUT/families.log" | tail -12
  for m in $(echo "$fam_models" | tr , ' '); do
    rm -rf /tmp/famt
    timeout 120 "$M" train -m $m --data synthetic:640 --batch 32 --epochs 1 --max-steps 10 --backend cuda --dtype bf16 \
      --workers 4 --eval-subset 64 --no-progress --out /tmp/famt > /tmp/famt.log 2>&1
    echo "$m: rc=$? $(tail -1 /tmp/famt/metrics.jsonl 2>/dev/null | cut -c1-200) $(grep -iE 'error' /tmp/famt.log | tail -1)" |
      tee -a "$OUT/families.log"
  done
  echo "== sequence models: ListOps with eight mixers, 5 steps on the CPU and on the GPU (fp32), the last losses side by side" |
    tee -a "$OUT/families.log"
  for mx in identity pooling attention time_mlp gated_time_mlp s6 hydra ponet; do
    python3 -c "import json,sys; c=json.load(open('$S/configs/compare_listops.json')); c['mixers']='$mx'; json.dump(c, open('/tmp/lo_$mx.json','w'))"
    line="$mx:"
    for be in cpu cuda; do
      rm -rf /tmp/lo_run
      timeout 120 "$M" train --config /tmp/lo_$mx.json --data listops --batch 16 --epochs 1 --max-steps 5 --eval-subset 32 \
        --backend $be --seed 0 --workers 2 --no-progress --out /tmp/lo_run > /tmp/lo.log 2>&1
      line="$line $be rc=$? loss=$(tail -1 /tmp/lo_run/metrics.jsonl 2>/dev/null | python3 -c "import json,sys; print(json.loads(sys.stdin.read())['train_loss'])" 2>/dev/null) $(grep -iE 'error' /tmp/lo.log | tail -1)"
    done
    echo "$line" | tee -a "$OUT/families.log"
  done
  unset METAFORMER_CUDA_FAMILY_OPS
fi

if has memcheck; then
  echo "== compute-sanitizer memcheck"
  timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 "$T" --backend cuda > "$OUT/memcheck.log" 2>&1
  echo "op harness under memcheck: rc=$?" | tee -a "$OUT/memcheck.log"
  timeout 300 compute-sanitizer --tool memcheck --error-exitcode 9 "$T" --mode grad --backend cuda >> "$OUT/memcheck.log" 2>&1
  echo "op harness, grad mode, under memcheck: rc=$?" | tee -a "$OUT/memcheck.log"
  timeout 100 compute-sanitizer --tool memcheck --error-exitcode 9 "$M" bench -m caformer_s18 --backend cuda -b 2 \
    --runs 1 --warmup 0 >> "$OUT/memcheck.log" 2>&1
  echo "caformer_s18 under memcheck: rc=$?" | tee -a "$OUT/memcheck.log"
  timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 "$T" --backend cuda --dtype bf16 >> "$OUT/memcheck.log" 2>&1
  echo "op harness bf16 under memcheck: rc=$?" | tee -a "$OUT/memcheck.log"
  timeout 300 compute-sanitizer --tool memcheck --error-exitcode 9 "$T" --mode grad --backend cuda --dtype bf16 >> "$OUT/memcheck.log" 2>&1
  echo "op harness, grad mode, bf16 under memcheck: rc=$?" | tee -a "$OUT/memcheck.log"
  timeout 100 compute-sanitizer --tool memcheck --error-exitcode 9 "$M" bench -m caformer_s18,mambaout_femto,poolformer_s12 \
    --backend cuda --dtype bf16 -b 2 --runs 1 --warmup 0 >> "$OUT/memcheck.log" 2>&1
  echo "caformer_s18, mambaout_femto, poolformer_s12 bf16 under memcheck: rc=$?" | tee -a "$OUT/memcheck.log"
  grep -E "ERROR SUMMARY" "$OUT/memcheck.log"
fi
