"""The peer of the engine's multi-GPU scaling benchmark: timm + torch.compile under DistributedDataParallel.

Issue 14 ("Scaling benchmark on the device") asks that `mpirun -np N metaformer train --backend cuda`
keep >= 95 % scaling efficiency at the largest N and train >= 1.5x as fast as timm with torch.compile
and DDP. This script measures that peer, one process per GPU, launched by torchrun:

  torchrun --standalone --nproc_per_node N bench/ddp_train_bench.py --model convformer_s18 --batch 128 \
      --steps 30 --warmup 5

What each rank runs (the settings of bench/gpu_train_side_by_side.py's timm bf16 run, plus compile and
DDP): `timm.create_model(name, pretrained=False)` in channels-last, bf16 autocast, cross-entropy with
label smoothing 0.1, fused AdamW (lr 1e-4), TF32 off (as that script sets it; under bf16 autocast the
convolutions and products are bf16 anyway), random inputs made once on the device, `--batch` images
per GPU. The model is wrapped in DDP (default buckets: bucket_cap_mb 25, gradients not as bucket
views) and then compiled, `torch.compile(DDP(model))` in the default mode, which lets dynamo split
the graph at the bucket boundaries (DDPOptimizer) so that the all-reduces overlap the backward pass.
DDP is used at N = 1 too: the compiled graphs are then the same at every N (and the inductor cache
of the first run serves the next ones), and the efficiency compares like with like.

Timing (as gpu_train_side_by_side.py): --warmup steps (the first one compiles), synchronise, reset
the peak memory, then --steps steps between two synchronisations. All ranks start the timed steps
together (a barrier) and the slowest rank's time counts (an all-reduce of the times, MAX).
Rank 0 prints one JSON line: images/s of all ranks over the timed steps, the step time, and its
peak GPU memory over the timed steps (torch.cuda.max_memory_allocated, MiB; also the peak with the
compiling warm-up, and the warm-up's seconds). --json PATH writes the same object to PATH.
"""
import argparse
import json
import os
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


def nccl_version():
    v = torch.cuda.nccl.version()  # a tuple (major, minor, patch); an int in older torch
    return ".".join(map(str, v)) if isinstance(v, tuple) else str(v)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="convformer_s18")
    p.add_argument("--batch", type=int, default=128, help="images per GPU")
    p.add_argument("--steps", type=int, default=30, help="timed steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (the first compiles)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--no-compile", action="store_true", help="eager DDP (a check of the harness)")
    p.add_argument("--json", help="also write rank 0's result to this file")
    a = p.parse_args()

    import timm

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank)
    dist.init_process_group("nccl", device_id=device)
    rank, world = dist.get_rank(), dist.get_world_size()

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    model = timm.create_model(a.model, pretrained=False).to(device).to(memory_format=torch.channels_last)
    ddp = DDP(model, device_ids=[local_rank])  # DDP broadcasts rank 0's weights
    net = ddp if a.no_compile else torch.compile(ddp)
    opt = torch.optim.AdamW(ddp.parameters(), lr=1e-4, fused=True)
    gen = torch.Generator(device=device).manual_seed(1000 + rank)  # each rank its own batch
    x = torch.randn(a.batch, 3, a.image_size, a.image_size, device=device, generator=gen)
    x = x.to(memory_format=torch.channels_last)
    y = torch.randint(0, getattr(model, "num_classes", 1000), (a.batch,), device=device, generator=gen)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        return loss

    t_warm = time.perf_counter()
    for _ in range(a.warmup):
        loss = step()
    torch.cuda.synchronize()
    warmup_s = time.perf_counter() - t_warm
    peak_with_warmup = torch.cuda.max_memory_allocated() / 2**20
    torch.cuda.reset_peak_memory_stats()
    dist.barrier(device_ids=[local_rank])
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**20
    slowest = torch.tensor([dt], device=device, dtype=torch.float64)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    dt = float(slowest.item())
    final_loss = float(loss.detach().float().item())

    if rank == 0:
        r = {
            "bench": "ddp_train",
            "model": a.model,
            "world": world,
            "batch_per_gpu": a.batch,
            "global_batch": a.batch * world,
            "image_size": a.image_size,
            "compiled": not a.no_compile,
            "warmup": a.warmup,
            "steps": a.steps,
            "images_per_s": a.steps * a.batch * world / dt,
            "step_ms": 1000.0 * dt / a.steps,
            "peak_mib": peak,
            "peak_mib_with_warmup": peak_with_warmup,
            "warmup_s": warmup_s,
            "loss": final_loss,
            "gpu": torch.cuda.get_device_name(device),
            "torch": torch.__version__,
            "timm": timm.__version__,
            "nccl": nccl_version(),
        }
        line = json.dumps(r)
        print(line, flush=True)
        if a.json:
            with open(a.json, "w") as f:
                f.write(line + "\n")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
