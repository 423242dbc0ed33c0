"""Training throughput on one GPU: metaformer.cpp's `train --backend cuda` against timm, in one run.

For each model, at batch 128, 224x224, random data, cross-entropy, AdamW:
  - the engine: `metaformer train --backend cuda --data synthetic`, fp32 storage with exact fp32
    matrix products (--matmul fp32, TF32 off) and with bf16 tensor-core products (--matmul bf16), and
    with bf16 activations (--dtype bf16: autocast's mixed precision, the peers' mode). A run that fails
    is reported as such and the others go on. One run of 5 + N steps; its metrics' steady_images_per_s
    times the N steps after the fifth (a synchronize marks the start), which excludes start-up (uploads,
    the first cudaMallocs, cuBLASLt's heuristics) and the evaluation, as the peers' 5 untimed steps do.
    (Until 2026-12-05 it was the difference of two runs of 8 and 8 + N steps: two start-ups that differ
    by tens of milliseconds move the difference by a tenth or more where N steps take 0.3 s, as
    poolformer_s12's do);
  - timm eager fp32 (TF32 off), the engine's own arithmetic;
  - timm eager with bf16 autocast, channels-last, fused AdamW (issue 13's peer settings);
  - with --compile, the same plus torch.compile (mode "default") on the model: issue 13's peer,
    measured in the same run (its compilation happens in the warm-up steps, untimed).
Peak GPU memory: torch's max_memory_allocated; the engine's memory-pool peak (metrics' peak_gpu_mb).
Prints a markdown table of the runs made (--no-fp32 and --no-matmul-bf16 leave their columns out);
--json writes every figure.

  python3 bench/gpu_train_side_by_side.py --metaformer build/metaformer [--models a,b] [--steps N] [--compile]
      [--no-fp32] [--no-matmul-bf16]
"""
import argparse
import json
import pathlib
import subprocess
import tempfile
import time

import torch

MODELS = ["poolformer_s12", "convformer_s18", "caformer_s18", "mambaout_femto"]
# Untimed steps before the timed ones, for every engine and peer alike. The engine's are the first
# steps of its run: its metrics' steady_images_per_s counts from the end of its fifth step.
WARMUP_STEPS = 5


def engine(binary, model, batch, steps, mode):
    """(images/s over `steps` steady steps, peak GPU MiB); (nan, nan) when the engine fails (its error printed).
    mode: extra arguments of `train` (the precision)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "run"
        n = WARMUP_STEPS + steps
        cmd = [binary, "train", "-m", model, "--data", f"synthetic:{batch * n}", "--batch", str(batch),
               "--epochs", "1", "--max-steps", str(n), "--backend", "cuda", "--out", str(out), "--workers", "8",
               "--eval-subset", str(batch), "--no-progress", "--warmup-epochs", "0"] + mode
        r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            err = r.stderr.strip().splitlines()
            print(f"engine {' '.join(mode)} on {model} failed ({r.returncode}): {err[-1] if err else ''}", flush=True)
            return float("nan"), float("nan")
        row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
        return row["steady_images_per_s"], row.get("peak_gpu_mb", float("nan"))


def timm_train(model_name, batch, steps, bf16, compile_model=False):
    import timm

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    model = timm.create_model(model_name, num_classes=1000).cuda()
    if bf16:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    forward = torch.compile(model) if compile_model else model
    x = torch.randn(batch, 3, 224, 224, device="cuda")
    if bf16:
        x = x.to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device="cuda")
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(forward(x), y)
        loss.backward()
        opt.step()

    for _ in range(WARMUP_STEPS):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**20
    del model, opt, forward
    if compile_model:
        torch._dynamo.reset()
    torch.cuda.empty_cache()
    return steps * batch / dt, peak


def columns(fp32, matmul_bf16, compiled):
    """The table's columns for the runs made: (header, function of a row giving the cell). Skipped runs
    leave their columns out rather than print nan."""
    def run(key):
        return lambda r: f"{r[key]:,.0f} ({r[key + '_mib']:,.0f})"

    def ratio(num, den):
        return lambda r: f"{r[num] / r[den]:.2f}"

    cols = [("model", lambda r: r["model"])]
    if fp32:
        cols += [("engine fp32 img/s (MiB)", run("engine")), ("timm eager fp32 img/s (MiB)", run("timm_fp32")),
                 ("engine / timm, fp32", ratio("engine", "timm_fp32"))]
    if matmul_bf16:
        cols += [("engine --matmul bf16 img/s (MiB)", run("engine_bf16_matmul"))]
    cols += [("engine --dtype bf16 img/s (MiB)", run("engine_bf16")),
             ("timm eager bf16 autocast img/s (MiB)", run("timm_bf16")),
             ("engine --dtype bf16 / timm bf16", ratio("engine_bf16", "timm_bf16"))]
    if compiled:
        cols += [("torch.compile bf16 img/s (MiB)", run("compile_bf16")),
                 ("engine --dtype bf16 / torch.compile", ratio("engine_bf16", "compile_bf16")),
                 ("peak memory engine / torch.compile", ratio("engine_bf16_mib", "compile_bf16_mib"))]
    return cols


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--metaformer", required=True)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--compile", action="store_true", help="add timm + torch.compile, bf16 autocast")
    p.add_argument("--no-fp32", action="store_true", help="skip the fp32 columns (engine and timm eager): a shorter run")
    p.add_argument("--no-matmul-bf16", action="store_true",
                   help="skip the engine's --matmul bf16 column (fp32 activations, bf16 products): a shorter run")
    p.add_argument("--json")
    a = p.parse_args()
    rows = []
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, batch {a.batch}, 224x224, {a.steps} timed steps")
    print()
    cols = columns(not a.no_fp32, not a.no_matmul_bf16, a.compile)
    print("| " + " | ".join(h for h, _ in cols) + " |")
    print("| --- " + "| ---: " * (len(cols) - 1) + "|")
    for m in a.models.split(","):
        nan = (float("nan"), float("nan"))
        e, e_mem = nan if a.no_fp32 else engine(a.metaformer, m, a.batch, a.steps, ["--matmul", "fp32"])
        eb, eb_mem = nan if a.no_matmul_bf16 else engine(a.metaformer, m, a.batch, a.steps, ["--matmul", "bf16"])
        ed, ed_mem = engine(a.metaformer, m, a.batch, a.steps, ["--dtype", "bf16"])
        t32, t32_mem = nan if a.no_fp32 else timm_train(m, a.batch, a.steps, False)
        t16, t16_mem = timm_train(m, a.batch, a.steps, True)
        row = dict(model=m, engine=e, engine_mib=e_mem, engine_bf16_matmul=eb, engine_bf16_matmul_mib=eb_mem,
                   engine_bf16=ed, engine_bf16_mib=ed_mem, timm_fp32=t32, timm_fp32_mib=t32_mem, timm_bf16=t16,
                   timm_bf16_mib=t16_mem)
        if a.compile:
            tc, tc_mem = timm_train(m, a.batch, a.steps, True, compile_model=True)
            row.update(compile_bf16=tc, compile_bf16_mib=tc_mem)
        rows.append(row)
        print("| " + " | ".join(cell(row) for _, cell in cols) + " |", flush=True)
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
