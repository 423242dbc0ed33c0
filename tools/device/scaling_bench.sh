#!/usr/bin/env bash
# On a GPU machine with N NVIDIA GPUs (the lent kinds: 2, 4 or 8 H200s): issue 14's scaling benchmark.
# Issue 14 is done when data-parallel training on GPUs (mpirun -np N metaformer train --backend cuda,
# gradients averaged by NCCL) keeps a scaling efficiency of at least 95 % at the largest N, trains at
# least 1.5x as fast as timm + torch.compile under DDP, and a 2-GPU run with one rank killed resumes
# on 1 GPU from its last checkpoint. This script measures all three and logs under $OUT:
#   scaling.md   the table: for each model and N (1, 2, 4, 8: those <= the GPUs present) training
#                images/s at 128 images per GPU, bf16 activations, 224x224, synthetic data, of
#                  - the engine:  mpirun -np N $M train -m MODEL --data synthetic:S --batch 128
#                                 --backend cuda --dtype bf16 --epochs 1 ...
#                  - the peer:    torchrun --standalone --nproc_per_node N bench/ddp_train_bench.py
#                                 (timm, channels-last, bf16 autocast, fused AdamW, torch.compile, DDP)
#                their scaling efficiencies (img/s at N / (N x img/s at 1)), the engine / peer ratio,
#                the peak GPU memory of both (rank 0), the done-when verdicts at the largest N, and
#                the resume demonstration's one-line summary
#   results.jsonl every measurement as one JSON object (also the engine's whole-epoch rate)
#   engine_MODEL_nN.log, engine_MODEL_nN_metrics.jsonl, peer_MODEL_nN.log: the raw logs
#   resume.log   the resume demonstration's transcript
#   machine.log  GPUs, topology (nvidia-smi topo -m), mpirun, torch, timm
#
# How the engine's steady rate is read. metrics.jsonl's images_per_s is the whole epoch's rate: it
# includes the first steps (cuBLASLt heuristics, first allocations, the NCCL communicator made on the
# first all-reduce), which weigh differently at each N and would bias the efficiency. The progress
# output (rank 0, on stderr; one line at the first step and at every quarter of the epoch when stderr
# is not a terminal) gives, at step d, the images/s since the epoch began, r_d = 128 N d / t_d; so
# t_d = 128 N d / r_d, and the rate between the first quarter line at or after ENGINE_WARMUP steps
# (step w) and the last step (T) is 128 N (T - w) / (t_T - t_w): the steady rate over the last
# T - w steps of ONE run, with start-up and warm-up excluded. (The alternative, two runs of 10 and
# 40 steps and the difference of their training seconds, as bench/gpu_train_side_by_side.py does on
# one GPU, costs a second launch per point and adds run-to-run variation; it is what one would fall
# back on if the progress format changed. If no progress line can be read, the table falls back to
# the epoch's images_per_s and marks it "*".) The run is therefore started without --no-progress.
# S = 128 N T samples, so that the one epoch is exactly T = ENGINE_WARMUP + STEPS steps
# (src/data/synthetic.cpp: synthetic:S has S training samples; steps per epoch = S / (N x 128),
# rounded down; --max-steps T is then the epoch's end as well). Evaluation (--eval-subset 128 N)
# and the checkpoint come after the epoch's timing.
#
# mpirun runs with --bind-to none: OpenMPI otherwise binds each rank to ONE core for N <= 2 (the
# rank's compute threads, its 4 loader threads and the thread driving the GPU then share it) and to a
# socket above that, which would change the CPU each rank has with N and bias the efficiency. With
# --bind-to none each rank gets cores / N threads (src/train/distributed.h). MPIRUN_ARGS overrides.
#
# The resume demonstration: mpirun -np 2 ... --batch 64 --epochs 3 on synthetic data of 32 steps an
# epoch; when checkpoints/epoch-0001 exists (src/train/checkpoint.h: written to epoch-NNNN.tmp,
# renamed, then `latest`), rank 1's process (its OMPI_COMM_WORLD_RANK) is killed with SIGKILL; mpirun
# must end non-zero; then `$M train --resume DIR --backend cuda` alone (1 GPU, the global batch 128)
# must say it resumes from epoch 1 and leave metrics.jsonl with epochs 1, 2 and 3.
#
# Usage (device, repository root, after the engine is built at $M, e.g. by
# `BUILD_TARGETS=metaformer bash build/cuda-device/cuda_check.sh build`):
#   bash tools/device/scaling_bench.sh
# Knobs (environment): M (engine binary, default /tmp/mfb/metaformer), OUT (default /tmp/scaling_out),
# MODELS (default "convformer_s18 caformer_s18"), COUNTS (default "1 2 4 8", those > the GPUs present
# dropped), STEPS (timed steps, default 30), ENGINE_WARMUP (engine steps before the timed ones, 10),
# PEER_WARMUP (5; the first compiles), SKIP_ENGINE=1, SKIP_PEER=1, SKIP_RESUME=1, BUDGET (seconds for
# the whole script, default 560: an item that cannot start in time is skipped and every command's
# timeout is cut to what is left, so the table is always written), ENGINE_TIMEOUT (150),
# PEER_TIMEOUT (300: the first run of a model compiles it), RUNS (run folders, /tmp/scaling_runs),
# KEEP_RESULTS=1 (add to an earlier call's results in $RUNS/results.jsonl on the same warm machine,
# e.g. SKIP_ENGINE=1 SKIP_RESUME=1 KEEP_RESULTS=1 to finish peer runs a first call had no time for),
# MPIRUN_ARGS (default "--bind-to none"), ENGINE_ARGS (more options for the engine's benchmark runs,
# e.g. "--allreduce bf16" where the build has it; the default, fp32 gradients, is what DDP sends; or
# "--bucket-mb 0" for one all-reduce after the backward pass instead of the default 25 MiB buckets
# overlapped with it, to measure what the overlap gives).
# NCCL_NVLS_ENABLE=0 is exported for every run (the lent machines need NVLink SHARP off). The
# inductor cache (TORCHINDUCTOR_CACHE_DIR, default /tmp/scaling_inductor) serves a model's later
# torchrun launches after its first has compiled it.
# shellcheck disable=SC2012  # ls of the engine's own checkpoint folder names
set -uo pipefail
export PYTHONUNBUFFERED=1
export NCCL_NVLS_ENABLE=0
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/scaling_inductor}
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-/tmp/scaling_out}
RUNS=${RUNS:-/tmp/scaling_runs}
M=${M:-/tmp/mfb/metaformer}
MODELS=$(echo "${MODELS:-convformer_s18 caformer_s18}" | tr , ' ')
STEPS=${STEPS:-30}
ENGINE_WARMUP=${ENGINE_WARMUP:-10}
PEER_WARMUP=${PEER_WARMUP:-5}
BATCH=128
BUDGET=${BUDGET:-560}
ENGINE_TIMEOUT=${ENGINE_TIMEOUT:-150}
PEER_TIMEOUT=${PEER_TIMEOUT:-300}
read -r -a MPI_EXTRA <<< "${MPIRUN_ARGS---bind-to none}"
read -r -a ENGINE_EXTRA <<< "${ENGINE_ARGS:-}"
# bf16 activations (autocast's mode, the fastest on one GPU: docs/cuda.md); PRECISION="--matmul bf16"
# keeps fp32 storage with bf16 products.
read -r -a PRECISION_ARGS <<< "${PRECISION:---dtype bf16}"
mkdir -p "$OUT" "$RUNS"
RES=$RUNS/results.jsonl
[ "${KEEP_RESULTS:-0}" = 1 ] || : > "$RES"
touch "$RES"
t_start=$(date +%s)

elapsed() { echo $(( $(date +%s) - t_start )); }
left() { echo $(( BUDGET - $(elapsed) )); }
# A command's timeout: its own limit, cut to what is left of the budget.
limit() { local l; l=$(left); if (( l < $1 )); then echo $(( l > 1 ? l : 1 )); else echo "$1"; fi; }
# Whether an item needing at least $1 seconds can start; if not, the skip is recorded.
can_start() {  # seconds kind model n
  if (( $(left) >= $1 )); then return 0; fi
  echo "skipped $2 $3 N=$4: $(left) s of the budget left" | tee -a "$OUT/skipped.log"
  printf '{"kind": "%s", "model": "%s", "n": %s, "skipped": "time budget"}\n' "$2" "$3" "$4" >> "$RES"
  return 1
}
# Processes still alive whose command line holds $1 (a run folder or file unique to one item): a
# timed-out launcher can leave ranks behind, which would hold a GPU through the next item.
end_leftovers() {
  local pid
  for pid in $(pgrep -f -- "$1"); do
    echo "leftover process $pid ($(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | cut -c1-120)): kill -9"
    kill -9 "$pid" 2>/dev/null
  done
}

echo "== machine" | tee "$OUT/machine.log"
ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')
{ nvidia-smi --query-gpu=index,name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  echo "GPUs: $ngpu, CPUs: $(nproc)"
  timeout 20 nvidia-smi topo -m
  timeout 10 mpirun --version 2>&1 | head -1
  timeout 60 python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, 'cuda', torch.version.cuda)"
  echo "engine: $M ($(stat -c '%y' "$M" 2>/dev/null || echo missing))"
  ldd "$M" 2>/dev/null | grep -Ei 'mpi|nccl'
} 2>&1 | tee -a "$OUT/machine.log"
if [ -z "${COUNTS:-}" ]; then COUNTS="1 2 4 8"; fi
counts=""
for n in $(echo "$COUNTS" | tr , ' '); do (( n <= ngpu )) && counts="$counts $n"; done
counts=${counts# }
echo "counts: ${counts:-none} (of $COUNTS; $ngpu GPUs), models: $MODELS, $STEPS timed steps, batch $BATCH per GPU"
if [ -z "$counts" ]; then echo "no GPU count to run"; fi
if command -v torchrun > /dev/null; then TORCHRUN=(torchrun); else TORCHRUN=(python3 -m torch.distributed.run); fi

# The table, from $RES (the newest row of each kind, model and N wins), printed when $1 = print.
write_table() {
  cp "$RES" "$OUT/results.jsonl"
  python3 - "$RES" "$OUT/scaling.md" "$BATCH" "$STEPS" "$ngpu" "${1:-}" <<'EOF'
import json, sys
res, md, batch, steps, ngpu, show = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
rows, resume = {}, None
for line in open(res):
    try:
        r = json.loads(line)
    except ValueError:
        continue
    if r.get("kind") == "resume":
        resume = r
    elif "kind" in r:
        rows[(r["kind"], r["model"], int(r["n"]))] = r
models = list(dict.fromkeys(k[1] for k in rows))
counts = sorted({k[2] for k in rows})
def ips(kind, m, n):
    r = rows.get((kind, m, n))
    return r.get("images_per_s") if r else None
def eff(kind, m, n):
    a, b = ips(kind, m, n), ips(kind, m, 1)
    return a / (n * b) if a and b else None
def cell(r, key, fmt):
    if r is None:
        return "–"
    if r.get("skipped"):
        return "skipped"
    v = r.get(key)
    return fmt.format(v) if v is not None else "failed"
out = [f"# Training scaling: {batch} images per GPU, 224x224, bf16, synthetic data ({ngpu} GPUs here)", "",
       "| model | N | engine img/s | engine efficiency | timm+compile+DDP img/s | its efficiency | engine / peer "
       "| engine peak MiB | peer peak MiB |",
       "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
verdicts = []
for m in models:
    for n in counts:
        e, p = rows.get(("engine", m, n)), rows.get(("peer", m, n))
        if e is None and p is None:
            continue
        ev = cell(e, "images_per_s", "{:,.0f}") + ("*" if e and e.get("method", "").startswith("epoch") else "")
        if e and e.get("images_per_s") and e.get("rc"):
            ev += f" (exit {e['rc']})"
        ee, pe = eff("engine", m, n), eff("peer", m, n)
        ratio = ips("engine", m, n) / ips("peer", m, n) if ips("engine", m, n) and ips("peer", m, n) else None
        out.append(f"| {m} | {n} | {ev} | {'–' if ee is None else f'{100 * ee:.1f} %'} "
                   f"| {cell(p, 'images_per_s', '{:,.0f}')} | {'–' if pe is None else f'{100 * pe:.1f} %'} "
                   f"| {'–' if ratio is None else f'{ratio:.2f}'} | {cell(e, 'peak_mib', '{:,.0f}')} "
                   f"| {cell(p, 'peak_mib', '{:,.0f}')} |")
    done = [n for n in counts if ips("engine", m, n)]
    if done:
        n = max(done)
        ee, e1 = eff("engine", m, n), ips("peer", m, n)
        ratio = ips("engine", m, n) / e1 if e1 else None
        verdicts.append(f"- {m}, largest N measured = {n}: engine efficiency "
                        + ("– (no N = 1 run)" if ee is None else f"{100 * ee:.1f} % (>= 95 %: {'yes' if ee >= 0.95 else 'NO'})")
                        + "; engine / timm+compile+DDP "
                        + ("– (no peer run)" if ratio is None else f"{ratio:.2f} (>= 1.5: {'yes' if ratio >= 1.5 else 'NO'})"))
out += ["", "Issue 14's bars:"] + (verdicts or ["- no engine run"])
out += ["", f"Engine: steady images/s of all ranks over the last {steps} (nominal) of its epoch's steps, read from "
        "rank 0's progress lines (see tools/device/scaling_bench.sh); * = the epoch's images_per_s, warm-up "
        "included, when no progress line could be read. Peak: rank 0's GPU memory pool peak over the run "
        "(metrics.jsonl peak_gpu_mb). Peer: bench/ddp_train_bench.py under torchrun, images/s of all ranks over "
        f"{steps} timed steps after the compiling warm-up (the slowest rank's time), peak: rank 0's "
        "torch.cuda.max_memory_allocated over the timed steps. Efficiency: img/s at N / (N x img/s at N = 1)."]
if resume:
    out += ["", "Resume (2 GPUs, one rank killed, resumed on 1 GPU): "
            + (resume.get("summary") or "skipped (" + resume.get("skipped", "?") + ")")]
text = "\n".join(out) + "\n"
open(md, "w").write(text)
if show == "print":
    print(text)
EOF
}

engine_run() {  # model n
  local m=$1 n=$2 total=$(( STEPS + ENGINE_WARMUP )) t0 rc
  local dir="$RUNS/engine_${m}_n$n" log="$OUT/engine_${m}_n$n.log"
  local s=$(( BATCH * n * total ))
  rm -rf "$dir"
  local cmd=(mpirun --allow-run-as-root --oversubscribe "${MPI_EXTRA[@]}" -x NCCL_NVLS_ENABLE -np "$n"
             "$M" train -m "$m" --data "synthetic:$s" --batch "$BATCH" --backend cuda "${PRECISION_ARGS[@]}" --epochs 1
             --max-steps "$total" --warmup-epochs 0 --eval-subset $(( BATCH * n )) --workers 4 --out "$dir"
             "${ENGINE_EXTRA[@]}")
  t0=$(date +%s)
  echo "\$ NCCL_NVLS_ENABLE=0 ${cmd[*]}" > "$log"
  timeout -k 15 "$(limit "$ENGINE_TIMEOUT")" "${cmd[@]}" >> "$log" 2>&1
  rc=$?
  echo "exit code $rc" >> "$log"
  end_leftovers "--out $dir" >> "$log"
  cp "$dir/metrics.jsonl" "$OUT/engine_${m}_n${n}_metrics.jsonl" 2>/dev/null
  python3 - "$log" "$dir/metrics.jsonl" "$m" "$n" "$BATCH" "$ENGINE_WARMUP" "$rc" "$(( $(date +%s) - t0 ))" "$RES" <<'EOF'
import json, re, sys
log, metrics, model, n, batch, warm, rc, secs, res = sys.argv[1:]
n, batch, warm, rc = int(n), int(batch), int(warm), int(rc)
# rank 0's progress: "epoch 1/1 [######..................] 10/40  loss 6.9123  1234 img/s  ETA 0:05"
pts = []
for line in open(log, errors="replace"):
    g = re.search(r"epoch 1/1 \[[#.]*\] (\d+)/(\d+)\s+loss \S+\s+(\d+) img/s", line)
    if g and int(g.group(3)) > 0:
        d, total, r = map(int, g.groups())
        pts.append((d, total, batch * n * d / r))  # (step, steps, seconds since the epoch began)
try:
    row = [json.loads(l) for l in open(metrics) if l.strip()][-1]
except (OSError, IndexError, ValueError):
    row = {}
out = {"kind": "engine", "model": model, "n": n, "rc": rc, "seconds": int(secs), "batch_per_gpu": batch,
       "ranks": row.get("ranks", 1) if row else None, "epoch_images_per_s": row.get("images_per_s"),
       "peak_mib": row.get("peak_gpu_mb"), "step": row.get("step"), "images_per_s": None}
if pts and pts[-1][0] == pts[-1][1]:
    last = pts[-1]
    first = next((p for p in pts if warm <= p[0] < last[0]), None)
    if first and last[2] > first[2]:
        out.update(images_per_s=batch * n * (last[0] - first[0]) / (last[2] - first[2]), method="progress",
                   timed_from_step=first[0], timed_steps=last[0] - first[0], step_ms=1000 * (last[2] - first[2]) / (last[0] - first[0]))
if out["images_per_s"] is None and rc == 0 and row.get("images_per_s"):
    out.update(images_per_s=row["images_per_s"], method="epoch (warm-up included)")
if rc == 0 and n > 1 and out["ranks"] != n:
    out["warning"] = f"metrics say {out['ranks']} ranks, not {n}"
open(res, "a").write(json.dumps(out) + "\n")
ips = out["images_per_s"]
print(f"engine {model} N={n}: " + (f"{ips:,.0f} img/s ({out['method']}" if ips else "no rate (") +
      (f", steps {out['timed_from_step']}-{out['timed_from_step'] + out['timed_steps']}" if out.get("timed_steps") else "") +
      f"; epoch average {out['epoch_images_per_s'] or float('nan'):,.0f}), peak {out['peak_mib'] or float('nan'):,.0f} MiB, exit code {rc}, "
      f"{secs} s" + (f"; WARNING {out['warning']}" if out.get("warning") else ""))
EOF
  if [ "$rc" -ne 0 ]; then tail -5 "$log" | sed 's/^/  /'; fi
}

peer_run() {  # model n
  local m=$1 n=$2 t0 rc
  local log="$OUT/peer_${m}_n$n.log" js="$RUNS/peer_${m}_n$n.json"
  rm -f "$js"
  local cmd=("${TORCHRUN[@]}" --standalone --nproc_per_node "$n" bench/ddp_train_bench.py --model "$m" --batch "$BATCH"
             --steps "$STEPS" --warmup "$PEER_WARMUP" --json "$js")
  t0=$(date +%s)
  echo "\$ NCCL_NVLS_ENABLE=0 ${cmd[*]}" > "$log"
  timeout -k 20 "$(limit "$PEER_TIMEOUT")" "${cmd[@]}" >> "$log" 2>&1
  rc=$?
  echo "exit code $rc" >> "$log"
  end_leftovers "--json $js" >> "$log"
  python3 - "$log" "$m" "$n" "$rc" "$(( $(date +%s) - t0 ))" "$RES" <<'EOF'
import json, sys
log, model, n, rc, secs, res = sys.argv[1:]
r = None
for line in open(log, errors="replace"):
    if line.startswith('{"bench": "ddp_train"'):
        try:
            r = json.loads(line)
        except ValueError:
            pass
out = {"kind": "peer", "model": model, "n": int(n), "rc": int(rc), "seconds": int(secs), "images_per_s": None}
if r:
    out.update(r)
    out.update(kind="peer", model=model, n=int(n))
open(res, "a").write(json.dumps(out) + "\n")
print(f"peer (timm+compile+DDP) {model} N={n}: " +
      (f"{r['images_per_s']:,.0f} img/s, {r['step_ms']:.1f} ms a step, peak {r['peak_mib']:,.0f} MiB, "
       f"warm-up with compile {r['warmup_s']:.0f} s" if r else "no result") + f", exit code {rc}, {secs} s")
EOF
  if [ "$rc" -ne 0 ]; then grep -E "Error|error" "$log" | tail -5 | sed 's/^/  /'; tail -3 "$log" | sed 's/^/  /'; fi
}

resume_demo() {
  local dir="$RUNS/resume" log="$OUT/resume.log" per_epoch=${RESUME_STEPS:-32} t0 job rc rc2 victim="" vrank="" pid r
  local s=$(( 64 * 2 * per_epoch ))
  say() { echo "$*" | tee -a "$log"; }
  nonzero() { [ -n "$1" ] && [ "$1" != 0 ]; }
  t0=$(date +%s)
  rm -rf "$dir" "$RUNS"/resume_*.out "$RUNS"/resume_*.err
  : > "$log"
  local cmd=(mpirun --allow-run-as-root --oversubscribe "${MPI_EXTRA[@]}" -x NCCL_NVLS_ENABLE -np 2
             "$M" train -m convformer_s18 --data "synthetic:$s" --batch 64 --backend cuda "${PRECISION_ARGS[@]}" --epochs 3
             --workers 4 --eval-subset 256 --no-progress --out "$dir")
  say "== 2 GPUs, 3 epochs of $per_epoch steps (global batch 128): kill one rank in epoch 2, resume on 1 GPU"
  say "\$ NCCL_NVLS_ENABLE=0 ${cmd[*]} &"
  timeout -k 10 "$(limit 240)" "${cmd[@]}" > "$RUNS/resume_mpirun.out" 2> "$RUNS/resume_mpirun.err" &
  job=$!
  local deadline=$(( $(date +%s) + $(limit 180) ))
  while [ ! -d "$dir/checkpoints/epoch-0001" ] && kill -0 "$job" 2>/dev/null && (( $(date +%s) < deadline )); do
    sleep 0.2
  done
  if [ ! -d "$dir/checkpoints/epoch-0001" ]; then
    say "no checkpoints/epoch-0001 after $(( $(date +%s) - t0 )) s; the run's output:"
    kill -TERM "$job" 2>/dev/null; wait "$job"; rc=$?
    say "mpirun exit code $rc"; tail -15 "$RUNS/resume_mpirun.out" "$RUNS/resume_mpirun.err" | tee -a "$log"
    end_leftovers "--out $dir" | tee -a "$log"
    printf '{"kind": "resume", "ok": false, "summary": "FAILED: no epoch-1 checkpoint appeared (see resume.log)"}\n' >> "$RES"
    return
  fi
  # Then until rank 0 has finished epoch 1's files (latest names the checkpoint, the metrics row is
  # written), and a moment more: the ranks are then early in epoch 2, far from its checkpoint.
  while { [ "$(cat "$dir/checkpoints/latest" 2>/dev/null)" != epoch-0001 ] ||
          [ "$(wc -l < "$dir/metrics.jsonl" 2>/dev/null)" != 1 ]; } &&
        kill -0 "$job" 2>/dev/null && (( $(date +%s) < deadline )); do
    sleep 0.1
  done
  sleep "${KILL_DELAY:-0.5}"
  say "checkpoints/epoch-0001 appeared after $(( $(date +%s) - t0 )) s; now: checkpoints/ holds" \
      "$(ls "$dir/checkpoints" | tr '\n' ' ')(latest: $(cat "$dir/checkpoints/latest" 2>/dev/null))," \
      "metrics.jsonl $(wc -l < "$dir/metrics.jsonl" 2>/dev/null) rows"
  # The ranks: of the processes with the run folder in their command line (timeout, mpirun, the
  # ranks), those with a rank in their environment (OpenMPI's OMPI_COMM_WORLD_RANK), or else running
  # the engine's executable. Rank 1 if it can be told, else any.
  for pid in $(pgrep -f -- "--out $dir"); do
    r=$(tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | sed -n 's/^OMPI_COMM_WORLD_RANK=//p')
    if [ -z "$r" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != "$(basename "$M" | cut -c1-15)" ]; then continue; fi
    say "rank process $pid: rank ${r:-unknown}"
    if [ -z "$victim" ] || { ! nonzero "$vrank" && nonzero "$r"; }; then victim=$pid; vrank=$r; fi
  done
  if [ -z "$victim" ]; then
    say "no rank process found (did the run end already?)"; vrank=none
  else
    say "\$ kill -9 $victim   # rank ${vrank:-unknown}"
    kill -9 "$victim"
  fi
  local end=$(( $(date +%s) + 60 ))
  while kill -0 "$job" 2>/dev/null && (( $(date +%s) < end )); do sleep 0.5; done
  if kill -0 "$job" 2>/dev/null; then say "mpirun still running 60 s after the kill: ending it"; kill -TERM "$job"; fi
  wait "$job"; rc=$?
  say "mpirun exit code: $rc ($(( $(date +%s) - t0 )) s since the start)"
  say "mpirun's stdout (rank 0):"; sed 's/^/  /' "$RUNS/resume_mpirun.out" | tee -a "$log"
  say "mpirun's last stderr lines:"; tail -8 "$RUNS/resume_mpirun.err" | sed 's/^/  /' | tee -a "$log"
  end_leftovers "--out $dir" | tee -a "$log"
  say "after the kill: checkpoints/ holds $(ls "$dir/checkpoints" | tr '\n' ' ')(latest: $(cat "$dir/checkpoints/latest" 2>/dev/null))"
  say "metrics.jsonl:"; sed 's/^/  /' "$dir/metrics.jsonl" | tee -a "$log"
  local cmd2=("$M" train --resume "$dir" --backend cuda --no-progress)
  say "\$ NCCL_NVLS_ENABLE=0 ${cmd2[*]}"
  timeout -k 10 "$(limit 300)" "${cmd2[@]}" > "$RUNS/resume_1gpu.out" 2>&1
  rc2=$?
  sed 's/^/  /' "$RUNS/resume_1gpu.out" | tee -a "$log"
  say "exit code $rc2"
  say "metrics.jsonl after the resume:"; sed 's/^/  /' "$dir/metrics.jsonl" | tee -a "$log"
  python3 - "$dir/metrics.jsonl" "$RUNS/resume_1gpu.out" "$rc" "$rc2" "$vrank" "$per_epoch" "$RES" <<'EOF' | tee -a "$log"
import json, re, sys
metrics, out1, rc, rc2, vrank, per_epoch, res = sys.argv[1:]
rc, rc2, per_epoch = int(rc), int(rc2), int(per_epoch)
try:
    rows = [json.loads(l) for l in open(metrics) if l.strip()]
except (OSError, ValueError):
    rows = []
text = open(out1, errors="replace").read()
g = re.search(r"resuming \S+ from \S+ \(epoch (\d+), step (\d+)\)", text)
epochs = [r.get("epoch") for r in rows]
ok = (rc != 0 and rc2 == 0 and g is not None and int(g.group(1)) == 1 and epochs == [1, 2, 3]
      and rows[-1].get("step") == 3 * per_epoch and "ranks" not in rows[-1] and rows[0].get("ranks") == 2)
summary = (f"{'PASS' if ok else 'FAILED'}: mpirun -np 2 ended with exit code {rc} after rank {vrank or '?'} was killed "
           f"(SIGKILL) in epoch 2; the 1-GPU --resume "
           + (f"continued from epoch {g.group(1)}, step {g.group(2)}" if g else "printed no 'resuming' line")
           + f", exit code {rc2}; metrics.jsonl epochs {epochs}, steps {[r.get('step') for r in rows]}, "
           f"ranks {[r.get('ranks', 1) for r in rows]}")
print(summary)
open(res, "a").write(json.dumps({"kind": "resume", "ok": ok, "summary": summary}) + "\n")
EOF
  say "resume demonstration: $(( $(date +%s) - t0 )) s"
}

if [ ! -x "$M" ]; then
  echo "no engine at $M (build it first: BUILD_TARGETS=metaformer bash build/cuda-device/cuda_check.sh build)"
  exit 1
fi

if [ "${SKIP_ENGINE:-0}" != 1 ]; then
  echo "== engine: mpirun -np N $M train --backend cuda ${PRECISION_ARGS[*]}, batch $BATCH per GPU, $ENGINE_WARMUP + $STEPS steps"
  for m in $MODELS; do
    for n in $counts; do
      can_start 30 engine "$m" "$n" || continue
      engine_run "$m" "$n"
      write_table
    done
  done
fi

if [ "${SKIP_RESUME:-0}" != 1 ]; then
  echo "== resume: 2 GPUs, one rank killed, resumed on 1 GPU (transcript: resume.log)"
  if (( ngpu < 2 )); then
    echo "skipped: $ngpu GPU(s) here" | tee "$OUT/resume.log"
  elif can_start 60 resume convformer_s18 2; then
    resume_demo
    write_table
  fi
fi

if [ "${SKIP_PEER:-0}" != 1 ]; then
  echo "== peer: torchrun bench/ddp_train_bench.py (timm + torch.compile + DDP, bf16 autocast), batch $BATCH per GPU"
  for m in $MODELS; do
    for n in $counts; do
      can_start 45 peer "$m" "$n" || continue
      peer_run "$m" "$n"
      write_table
    done
  done
fi

echo "== table (scaling.md), $(elapsed) s in all"
write_table print
