"""metaformer.cpp's CUDA backend against timm eager and timm + torch.compile, in one run on one GPU.

For each model: timm builds it with random weights (seeded), which are saved with timm's key names and
loaded by the engine; one random input batch feeds both. Before timing anything the script checks that
the engine's logits agree with timm's (bf16 engine against timm fp32: relative L2 within the bf16
golden bar, 5e-2; and the same top-1 on most rows). Then it times, at batch 256 (images/s) and batch 1
(latency), in bf16:
  - the engine: `metaformer bench --backend cuda --dtype bf16` (its own process, every pass ends with
    a device synchronise; median of --runs);
  - timm eager: bf16 autocast, channels-last, inference mode;
  - timm + torch.compile (mode "default"), the same settings;
with CUDA events around each pass (median), and the peak GPU memory of each (torch:
max_memory_allocated since a reset; the engine: its memory pool's peak), weights included.
The GEMM ceiling (a bf16 8192³ product) and the copy ceiling (a 2 GiB device-to-device copy) are
measured in the same run. Prints a markdown table; --json writes every figure.

  python3 bench/gpu_side_by_side.py --metaformer build/metaformer [--models a,b] [--json out.json]
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

MODELS = ["poolformer_s12", "convformer_s18", "caformer_s18", "mambaout_femto"]
BF16_BAR = 5e-2  # relative L2 of the logits, the bf16 golden bar of docs/tolerances.md


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def time_cuda(fn, warmup, runs):
    """Median milliseconds of fn() between CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ms = []
    for _ in range(runs):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ms.append(a.elapsed_time(b))
    return median(ms)


def ceilings():
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    ms = time_cuda(lambda: a @ b, 3, 20)
    gemm_tflops = 2 * n ** 3 / (ms * 1e-3) / 1e12
    x = torch.empty(1 << 30, device="cuda", dtype=torch.float16)  # 2 GiB
    y = torch.empty_like(x)
    ms = time_cuda(lambda: y.copy_(x), 3, 20)
    copy_tbs = 2 * x.numel() * 2 / (ms * 1e-3) / 1e12  # read + write
    del a, b, x, y
    torch.cuda.empty_cache()
    return gemm_tflops, copy_tbs


def torch_measure(model, x256, x1, runs):
    """(images/s at 256, ms at batch 1, peak GiB) for one torch callable under bf16 autocast."""
    out = {}
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        ms = time_cuda(lambda: model(x256), 3, runs)
        out["ips256"] = 256 / (ms * 1e-3)
        out["peak_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
        out["ms1"] = time_cuda(lambda: model(x1), 10, 5 * runs)
    return out


def engine_measure(binary, name, weights, inp_npy, batch, runs, warmup):
    with tempfile.TemporaryDirectory() as d:
        j = pathlib.Path(d) / "bench.json"
        cmd = [binary, "bench", "-m", name, "-w", weights, "-i", inp_npy, "--backend", "cuda", "--dtype", "bf16",
               "-b", str(batch), "--runs", str(runs), "--warmup", str(warmup), "--json", str(j)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"engine bench failed: {' '.join(cmd)}\n{r.stderr}")
        return json.loads(j.read_text())[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--metaformer", default="build/metaformer")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (quick checks)")
    ap.add_argument("--json")
    args = ap.parse_args()
    import timm
    from safetensors.torch import save_file

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.cuda.get_device_name()
    gemm_tflops, copy_tbs = ceilings()
    print(f"device: {dev}; torch {torch.__version__}, timm {timm.__version__}")
    print(f"ceilings measured now: bf16 GEMM {gemm_tflops:.0f} TFLOP/s, device copy {copy_tbs:.2f} TB/s\n")
    rows = []
    work = pathlib.Path(tempfile.mkdtemp(prefix="gpu_sbs_"))
    rng = np.random.default_rng(0)
    x256_np = rng.standard_normal((256, 3, 224, 224), dtype=np.float32)
    inp = work / "input.npy"
    np.save(inp, x256_np)
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False).eval()
        weights = work / f"{name}.safetensors"
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(weights))
        model = model.cuda().to(memory_format=torch.channels_last)
        x256 = torch.from_numpy(x256_np).cuda().to(memory_format=torch.channels_last)
        x1 = x256[:1].contiguous(memory_format=torch.channels_last)

        # Agreement first: 16 images, the engine in bf16 against timm in fp32.
        small = work / "small.npy"
        np.save(small, x256_np[:16])
        out = work / "out.npy"
        r = subprocess.run([args.metaformer, "run", "-m", name, "-w", str(weights), "-i", str(small), "-o", str(out),
                            "--backend", "cuda", "--dtype", "bf16"], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"{name}: engine run failed: {r.stderr.strip()}")
        got = np.load(out).astype(np.float64)
        with torch.inference_mode():
            ref = model(x256[:16].float()).double().cpu().numpy()
        rel = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
        top1 = float(np.mean(got.argmax(1) == ref.argmax(1)))
        print(f"{name}: engine bf16 vs timm fp32 logits: rel L2 {rel:.2e}, top-1 agreement {top1:.0%}")
        if not rel <= BF16_BAR:
            raise SystemExit(f"{name}: the engine's logits disagree with timm's ({rel:.2e} > {BF16_BAR}); not timing")

        e256 = engine_measure(args.metaformer, name, str(weights), str(inp), 256, args.runs, 3)
        e1 = engine_measure(args.metaformer, name, str(weights), str(inp), 1, 5 * args.runs, 10)
        eager = torch_measure(model, x256, x1, args.runs)
        row = {"model": name, "rel_l2_vs_timm_fp32": rel, "top1_agreement": top1,
               "engine_ips256": 256e3 / e256["median_ms"], "engine_ms1": e1["median_ms"],
               "engine_peak_gib": e256.get("peak_gpu_mb", float("nan")) / 1024,
               "engine_gflops256": e256["gflops_per_s"], "gmacs_per_image": e256["gmacs_per_image"],
               "eager_ips256": eager["ips256"], "eager_ms1": eager["ms1"], "eager_peak_gib": eager["peak_gib"]}
        if not args.no_compile:
            t0 = time.time()
            compiled = torch.compile(model)
            comp = torch_measure(compiled, x256, x1, args.runs)
            row.update({"compile_ips256": comp["ips256"], "compile_ms1": comp["ms1"], "compile_peak_gib": comp["peak_gib"],
                        "compile_seconds_incl_timing": time.time() - t0})
        rows.append(row)
        print(json.dumps(row))
        del model
        torch.cuda.empty_cache()
        torch._dynamo.reset()

    print(f"\n{dev}, bf16, batch 256 at 224x224 (images/s) and batch 1 (ms); peak GPU memory at batch 256 "
          f"(GiB); ratios engine / torch.compile.\n")
    print("| model | engine img/s | eager img/s | compile img/s | engine/compile | engine b1 ms | compile b1 ms | "
          "b1 ratio | engine GiB | compile GiB | engine TFLOP/s (% of GEMM ceiling) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    nan = float("nan")
    for r in rows:
        c_ips, c_ms, c_gib = r.get("compile_ips256", nan), r.get("compile_ms1", nan), r.get("compile_peak_gib", nan)
        tf = r["engine_gflops256"] / 1e3
        print(f"| {r['model']} | {r['engine_ips256']:,.0f} | {r['eager_ips256']:,.0f} | {c_ips:,.0f} | "
              f"{r['engine_ips256'] / c_ips:.2f} | {r['engine_ms1']:.2f} | {c_ms:.2f} | {r['engine_ms1'] / c_ms:.2f} | "
              f"{r['engine_peak_gib']:.2f} | {c_gib:.2f} | {tf:.0f} ({100 * tf / gemm_tflops:.0f} %) |")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"device": dev, "torch": torch.__version__,
                                                        "timm": timm.__version__, "gemm_tflops": gemm_tflops,
                                                        "copy_tbs": copy_tbs, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
