"""metaformer.cpp against ONNX Runtime and PyTorch, side by side, in one run on one machine.

For each model: the engine's description (`metaformer info --json`) builds the PyTorch reference
(bench/reference_model.py, checked against timm by bench/check_reference.py); one set of random
weights (timm's key names) and one random input batch feed all three; the reference is exported to
ONNX. Before timing anything the script checks that the three agree on the logits. Then, for batch 1
(latency, median of --b1-runs) and batch 8 (throughput, median of --b8-runs), each runtime runs in a
fresh process of its own, back to back, after warm-up: `metaformer bench`, `node ort_bench.js`,
`python3 torch_bench.py`. All of that is repeated --rounds times, the runtimes taking turns, and each
figure is the median round (a burst of load on the shared machine then hits one round of every
runtime, not all rounds of one); the ratios are taken within each round, then the median over rounds. Peak memory is each process's peak RSS at batch 8.

Run it through bench/run.sh, which installs the peers and builds the engine first.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import torch

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from reference_model import MetaFormer, random_weights, load_weights, write_safetensors  # noqa: E402

MODELS = ["poolformer_s12", "poolformerv2_s12", "convformer_s18", "caformer_s18", "mambaout_femto"]
PARITY = 1e-4  # relative L2 of the logits between runtimes (the engine issue's full-size bar)

# PyTorch "set up well" (peers.md): OpenMP OpenBLAS (package libopenblas0-openmp), malloc that
# keeps its memory, and OpenBLAS's AVX-512 kernels (this overrides the machine's
# OPENBLAS_CORETYPE=Haswell guard for the PyTorch command only).
TORCH_ENV = {
    "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=4294967296",
    "OPENBLAS_CORETYPE": "Cooperlake",
}


def sh(cmd, env=None):
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if r.returncode != 0:
        sys.exit(f"side_by_side: {' '.join(map(str, cmd))} failed ({r.returncode}): {r.stderr.strip()[-600:]}")
    return r.stdout


def last_json(out):
    return json.loads(out.strip().splitlines()[-1])


def rel_l2(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def median_round(measurements):
    """The round with the median time (its memory figure too: the peak RSS is the same every round)."""
    ordered = sorted(measurements, key=lambda m: m["ms"])
    return {**ordered[len(ordered) // 2], "rounds_ms": [m["ms"] for m in measurements]}


def paired_ratios(rounds):
    """Each ratio against the best peer taken within a round (the runtimes ran back to back), then
    the median over rounds: a pairing that cancels the machine's drift between rounds."""
    def med(values):
        return sorted(values)[len(values) // 2]
    n = len(rounds["engine_b1"])
    best1 = [min(rounds["ort_b1"][i]["ms"], rounds["torch_b1"][i]["ms"]) for i in range(n)]
    best8 = [min(rounds["ort_b8"][i]["ms"], rounds["torch_b8"][i]["ms"]) for i in range(n)]  # ms: smaller is faster
    out = {"b1": med([rounds["engine_b1"][i]["ms"] / best1[i] for i in range(n)]),
           "b8": med([best8[i] / rounds["engine_b8"][i]["ms"] for i in range(n)])}
    if "bf16_b8" in rounds:
        out["bf16"] = med([best8[i] / rounds["bf16_b8"][i]["ms"] for i in range(n)])
    return out


class Runner:
    def __init__(self, args, work):
        self.a, self.work = args, work
        self.engine = str(args.engine)

    def prepare(self, model):
        """Description, weights, input and ONNX export for one model; returns the file paths."""
        d = self.work / model
        d.mkdir(parents=True, exist_ok=True)
        cfg = json.loads(sh([self.engine, "info", "-m", model, "--json"]))
        (d / "config.json").write_text(json.dumps(cfg))
        ref = MetaFormer(cfg).eval()
        load_weights(ref, random_weights(ref, seed=self.a.seed))
        write_safetensors(d / "weights.safetensors", ref.state_dict())
        side = cfg.get("input", {}).get("size", 224)
        x = torch.from_numpy(np.random.default_rng(self.a.seed).standard_normal((8, 3, side, side), dtype=np.float32))
        np.save(d / "input.npy", x.numpy())
        x.numpy().tofile(d / "input.bin")
        torch.onnx.export(ref, x[:1], str(d / "model.onnx"), opset_version=17, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        return d

    def agree(self, model, d):
        """Logits of all three on the 8-image batch; returns the relative differences to PyTorch."""
        t = self.a.threads
        sh([sys.executable, HERE / "torch_bench.py", "run", d / "config.json", d / "weights.safetensors",
            d / "input.bin", "8", str(t), d / "torch.bin"], TORCH_ENV)
        sh(["node", HERE / "ort_bench.js", "run", d / "model.onnx", d / "input.bin", "8", str(t), d / "ort.bin"])
        sh([self.engine, "run", "-m", model, "-w", d / "weights.safetensors", "-i", d / "input.npy", "-o",
            d / "engine.npy", "-t", str(t)])
        ref = np.fromfile(d / "torch.bin", np.float32)
        out = {"engine": rel_l2(np.load(d / "engine.npy").ravel(), ref),
               "ort": rel_l2(np.fromfile(d / "ort.bin", np.float32), ref)}
        if self.a.bf16:
            sh([self.engine, "run", "-m", model, "-w", d / "weights.safetensors", "-i", d / "input.npy", "-o",
                d / "engine_bf16.npy", "-t", str(t), "--dtype", "bf16"])
            b = np.load(d / "engine_bf16.npy")
            out["bf16"] = rel_l2(b.ravel(), ref)
            out["bf16_top1"] = float(np.mean(b.argmax(1) == ref.reshape(b.shape).argmax(1)))
        return out

    def time_engine(self, model, d, batch, runs, dtype="fp32"):
        j = d / f"engine_{dtype}_b{batch}.json"
        cmd = [self.engine, "bench", "-m", model, "-w", d / "weights.safetensors", "-i", d / "input.npy",
               "-b", str(batch), "-t", str(self.a.threads), "--warmup", str(self.a.warmup), "--runs", str(runs),
               "--json", j]
        if dtype != "fp32":
            cmd += ["--dtype", dtype]
        sh(cmd)
        p = json.loads(j.read_text())[0]
        return {"ms": p["median_ms"], "rss": p["peak_rss_mb"], "gmacs": p["gmacs_per_image"]}

    def time_ort(self, d, batch, runs):
        p = last_json(sh(["node", HERE / "ort_bench.js", "time", d / "model.onnx", d / "input.bin", str(batch),
                          str(self.a.threads), str(self.a.warmup), str(runs)]))
        return {"ms": p["median_ms"], "rss": p["rss_mb"]}

    def time_torch(self, d, batch, runs):
        p = last_json(sh([sys.executable, HERE / "torch_bench.py", "time", d / "config.json", d / "weights.safetensors",
                          d / "input.bin", str(batch), str(self.a.threads), str(self.a.warmup), str(runs)], TORCH_ENV))
        return {"ms": p["median_ms"], "rss": p["rss_mb"]}


def at_least(lowest):
    """An argparse type: an integer no smaller than `lowest` (argparse then reports one clear line)."""
    def integer(text):
        value = int(text)
        if value < lowest:
            raise argparse.ArgumentTypeError(f"must be at least {lowest}, got {value}")
        return value
    return integer


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--threads", type=at_least(1), default=2)
    ap.add_argument("--b1-runs", type=at_least(1), default=30)
    ap.add_argument("--b8-runs", type=at_least(1), default=7)
    ap.add_argument("--warmup", type=at_least(0), default=3)
    ap.add_argument("--rounds", type=at_least(1), default=5, help="measure everything this many times, in turn")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True, help="also time the engine in bf16")
    ap.add_argument("--engine", type=pathlib.Path, default=ROOT / "build" / "metaformer")
    ap.add_argument("--work", type=pathlib.Path, default=ROOT / "build" / "side_by_side")
    ap.add_argument("--json", type=pathlib.Path, help="also write all measurements here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    a.work.mkdir(parents=True, exist_ok=True)
    r = Runner(a, a.work)

    sh([a.engine, "bench", "--gemm", "-t", str(a.threads), "--json", a.work / "gemm.json"])
    gemm = json.loads((a.work / "gemm.json").read_text())
    peak32 = next(g["gflops"] for g in gemm if g["name"] == "fp32")
    rows = []
    for model in a.models.split(","):
        t0 = time.time()
        d = r.prepare(model)
        agree = r.agree(model, d)
        bad = {k: v for k, v in agree.items() if k in ("engine", "ort") and v > PARITY}
        if bad:
            sys.exit(f"side_by_side: {model}: outputs disagree with PyTorch's: {bad} (bar {PARITY})")
        row = {"model": model, "agree": agree}
        # Rounds: every measurement of the model once per round, in turn, so that a slow spell of the
        # (shared) machine lands on all runtimes alike; each figure is then the median of its rounds.
        rounds = {}
        for _ in range(a.rounds):
            for batch, runs in ((1, a.b1_runs), (8, a.b8_runs)):
                rounds.setdefault(f"engine_b{batch}", []).append(r.time_engine(model, d, batch, runs))
                rounds.setdefault(f"ort_b{batch}", []).append(r.time_ort(d, batch, runs))
                rounds.setdefault(f"torch_b{batch}", []).append(r.time_torch(d, batch, runs))
                if a.bf16 and batch == 8:
                    rounds.setdefault("bf16_b8", []).append(r.time_engine(model, d, batch, runs, "bf16"))
        for key, ms in rounds.items():
            row[key] = median_round(ms)
        row["ratios"] = paired_ratios(rounds)
        rows.append(row)
        print(f"{model}: done in {time.time() - t0:.0f} s", file=sys.stderr)

    print_table(rows, a, gemm, peak32)
    if a.json:
        a.json.write_text(json.dumps({"gemm": gemm, "rows": rows}, indent=2))


def print_table(rows, a, gemm, peak32):
    ips = lambda m: 8000.0 / m["ms"]  # noqa: E731
    print(f"{a.threads} threads, 224x224 fp32 unless marked; batch 1: median of {a.b1_runs} runs, batch 8: median of "
          f"{a.b8_runs}, after {a.warmup} warm-up runs; each figure the median of {a.rounds} rounds that measure every "
          "runtime in turn. Ratios are against the best peer (the faster of ONNX Runtime and PyTorch for that "
          "model), taken within each round and then the median over rounds (so they need not equal the quotient "
          "of the medians shown).\n")
    print("| model | b1 ms engine | ORT | PyTorch | engine / best | b8 img/s engine | ORT | PyTorch | engine / best "
          "| bf16 b8 img/s | bf16 / best fp32 | peak MB engine | ORT | PyTorch | fp32 b8 % of GEMM peak "
          "| 1.3× best peer needs |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for w in rows:
        e1, o1, t1 = w["engine_b1"]["ms"], w["ort_b1"]["ms"], w["torch_b1"]["ms"]
        e8, o8, t8 = ips(w["engine_b8"]), ips(w["ort_b8"]), ips(w["torch_b8"])
        best1, best8 = min(o1, t1), max(o8, t8)
        bf = ips(w["bf16_b8"]) if "bf16_b8" in w else float("nan")
        frac = 2 * w["engine_b8"]["gmacs"] * e8 / peak32
        # The fp32 batch-8 target (1.3× the best peer) as a fraction of the same ceiling: above ~95 %
        # the whole network would have to run at the rate of a 2048³ GEMM.
        need = 1.3 * 2 * w["engine_b8"]["gmacs"] * best8 / peak32
        q = w["ratios"]
        print(f"| {w['model']} | {e1:.1f} | {o1:.1f} | {t1:.1f} | **{q['b1']:.2f}** | {e8:.1f} | {o8:.1f} | {t8:.1f} "
              f"| **{q['b8']:.2f}** | {bf:.1f} | **{q.get('bf16', float('nan')):.2f}** | {w['engine_b8']['rss']:.0f} "
              f"| {w['ort_b8']['rss']:.0f} | {w['torch_b8']['rss']:.0f} | {100 * frac:.0f}% | {100 * need:.0f}% |")
    mats = [g for g in gemm if g["size"]]
    print("\nGEMM ceiling (oneDNN matmul, `metaformer bench --gemm`): " +
          ", ".join(f"{g['name']} {g['gflops']:.0f} GFLOP/s" for g in mats) + f" at {mats[0]['size']}^3" +
          "".join(f"; the cores' fp32 FMA issue rate (a loop on registers) {g['gflops']:.0f} GFLOP/s"
                  for g in gemm if not g["size"]) + ".")
    print("\nLogits against PyTorch's (relative L2, 8 images): " + "; ".join(
        f"{w['model']} engine {w['agree']['engine']:.1e}, ORT {w['agree']['ort']:.1e}"
        + (f", bf16 {w['agree']['bf16']:.1e} (top-1 agreement {100 * w['agree']['bf16_top1']:.0f}%)"
           if "bf16" in w["agree"] else "") for w in rows) + ".")
    print(f"\nPeers: onnxruntime-node {ort_version()} (graph optimisation all, sequential, intra-op {a.threads}); "
          f"PyTorch {torch.__version__} (Debian python3-torch) with {blas_name()}, inference_mode, "
          "GLIBC_TUNABLES keeping malloc'd memory, OPENBLAS_CORETYPE=Cooperlake.")


def ort_version():
    try:
        return json.loads((HERE / "node_modules/onnxruntime-node/package.json").read_text())["version"]
    except OSError:
        return "?"


def blas_name():
    try:
        target = os.path.realpath("/usr/lib/x86_64-linux-gnu/libblas.so.3")
        return "OpenMP OpenBLAS" if "openmp" in target else target
    except OSError:
        return "?"


if __name__ == "__main__":
    main()
