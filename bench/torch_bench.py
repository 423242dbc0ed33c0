"""PyTorch side of bench/side_by_side.py: the reference model (bench/reference_model.py) in one
fresh process per measurement, so that its peak RSS is its own. One JSON line on stdout.

  torch_bench.py run  config.json weights.safetensors input.bin B threads out.bin
  torch_bench.py time config.json weights.safetensors input.bin B threads warmup runs

The caller sets the environment of the "set up well" configuration (peers.md): OpenMP OpenBLAS,
GLIBC_TUNABLES keeping malloc'd memory, OPENBLAS_CORETYPE for the AVX-512 kernels.
"""
import json
import pathlib
import resource
import sys
import time

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from reference_model import MetaFormer, load_weights, read_safetensors  # noqa: E402


def main():
    mode, cfg_path, weights, in_file, batch, threads, *rest = sys.argv[1:]
    batch, threads = int(batch), int(threads)
    torch.set_num_threads(threads)
    cfg = json.loads(pathlib.Path(cfg_path).read_text())
    model = MetaFormer(cfg).eval()
    load_weights(model, read_safetensors(weights))
    side = cfg.get("input", {}).get("size", 224)
    x = torch.from_numpy(np.fromfile(in_file, np.float32)).reshape(-1, 3, side, side)[:batch].contiguous()
    with torch.inference_mode():
        if mode == "run":
            model(x).numpy().astype(np.float32).tofile(rest[0])
            print(json.dumps({"shape": [batch, cfg["num_classes"]]}))
            return
        warmup, runs = int(rest[0]), int(rest[1])
        for _ in range(warmup):
            model(x)
        ms = []
        for _ in range(runs):
            t0 = time.perf_counter()
            model(x)
            ms.append((time.perf_counter() - t0) * 1e3)
    ms.sort()
    n = len(ms)
    median = ms[n // 2] if n % 2 else 0.5 * (ms[n // 2 - 1] + ms[n // 2])
    print(json.dumps({"median_ms": median, "min_ms": ms[0], "max_ms": ms[-1], "rss_mb": peak_rss_mb()}))


def peak_rss_mb():
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across exec, so a child started from
    # a big parent (the driver, with torch loaded) would report the parent's size.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
