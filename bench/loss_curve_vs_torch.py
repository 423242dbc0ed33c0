"""The engine's training loss curve against PyTorch's, from the same weights and the same batches.

Why: the issue's "bf16 loss curve" check. `metaformer train --backend cuda --matmul bf16` multiplies
on bf16 tensor cores; the claim to check is that its training follows what a PyTorch user gets with
`torch.autocast("cuda", dtype=torch.bfloat16)` (timm's train script) from the same starting point, and
that the fp32 engine follows PyTorch fp32 (TF32 off). A throughput table cannot show that; a loss
curve from identical inputs can.

How: the engine trains three times on Fashion-MNIST with `--trace` (same seed: the same initial weights
and the same batches; --matmul fp32, --matmul bf16, then --dtype bf16: bf16 activations, autocast's
mode). A trace holds the weights before the first step
(TRACE/init.safetensors, timm's key names) and, per optimizer step, the lr that step's AdamW update
used, the engine's loss (mean label-smoothed cross-entropy before the update) and the exact
normalised, augmented batch (TRACE/steps.bin, format in src/train/step_trace.h). The script checks
the traces carry the same batches, lrs and initial weights, then trains bench/reference_model.py (the
PyTorch MetaFormer built from the engine's resolved description, RUN/config.json) from init.safetensors
on the traced batches at the traced lrs with torch.optim.AdamW and the engine's weight-decay groups
(decay on tensors of 2 or more dimensions: conv and linear weights; none on norms, biases, scales),
label smoothing 0.1, no clipping:
  - fp32: TF32 off for matmuls and cuDNN, no autocast;
  - bf16: autocast(bfloat16) around forward and loss, fp32 master weights.
It writes OUTDIR/loss_curves.csv (step, lr, engine_fp32, torch_fp32, engine_bf16, engine_bf16act,
torch_bf16) and
OUTDIR/loss_curves.svg, and prints a markdown summary: per pair the first step's difference (a pure
forward check: same weights, same batch), the max and mean absolute difference over all steps, the mean
loss over the first and last 20 steps, a verdict, and the losses every 25 steps. Engine bf16 against
engine fp32 is printed for scale (how far rounding alone moves a curve).

Exit status: 0 when every pair follows, 3 when a pair's verdict is "differs", 1 on an error
(engine failed, malformed trace, weights that do not load), with one line saying which.

  python3 bench/loss_curve_vs_torch.py --engine build/metaformer --config configs/fmnist_convformer.json \
      --data /path/to/fashion-mnist --steps 300 --out /tmp/curve
  python3 bench/loss_curve_vs_torch.py --selftest-reader     # numpy only: the trace reader's checks
"""
import argparse
import hashlib
import html
import json
import math
import pathlib
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np

MAGIC = b"MFTRACE1"
RECORD_HEAD = struct.Struct("<qddqqqq")  # step, lr, loss, B, H, W, C


class TraceError(Exception):
    pass


def fail(msg, code=1):
    print(f"loss_curve_vs_torch: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


# ----------------------------------------------------------------------------- the trace


def read_trace(path, keep_batches=True):
    """Reads TRACE/steps.bin. Returns dict(steps, lrs, losses: lists; digest: sha256 hex of every
    record's step, lr, shape, images and labels (not the loss, which depends on --matmul); batches: list
    of (images float32 [B,H,W,C], labels int64 [B]) when keep_batches). Raises TraceError."""
    path = pathlib.Path(path)
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise TraceError(f"{path}: cannot read ({e.strerror})")
    if len(blob) < len(MAGIC) or blob[:len(MAGIC)] != MAGIC:
        raise TraceError(f"{path}: not a step trace (the header is {blob[:8]!r}, expected {MAGIC!r})")
    pos, n = len(MAGIC), len(blob)
    steps, lrs, losses, batches = [], [], [], []
    digest = hashlib.sha256()
    while pos < n:
        k = len(steps)
        if n - pos < RECORD_HEAD.size:
            raise TraceError(f"{path}: record {k} at byte {pos} is cut short ({n - pos} bytes left, a record "
                             f"header takes {RECORD_HEAD.size}): the file does not end on a record boundary")
        step, lr, loss, b, h, w, c = RECORD_HEAD.unpack_from(blob, pos)
        if not (1 <= b <= 65536 and 1 <= h <= 4096 and 1 <= w <= 4096 and 1 <= c <= 64):
            raise TraceError(f"{path}: record {k} at byte {pos} has an implausible batch shape B={b} H={h} W={w} C={c}")
        if not (math.isfinite(lr) and lr >= 0):
            raise TraceError(f"{path}: record {k} (step {step}) has lr {lr}")
        if steps and step != steps[-1] + 1:
            raise TraceError(f"{path}: record {k} is step {step}, after step {steps[-1]} (steps must count up by one)")
        body = RECORD_HEAD.size + 4 * b * h * w * c + 8 * b
        if n - pos < body:
            raise TraceError(f"{path}: record {k} (step {step}, B={b} H={h} W={w} C={c}) needs {body} bytes but "
                             f"{n - pos} are left: the file does not end on a record boundary")
        img_at = pos + RECORD_HEAD.size
        lab_at = img_at + 4 * b * h * w * c
        images = np.frombuffer(blob, "<f4", b * h * w * c, img_at).reshape(b, h, w, c)
        labels = np.frombuffer(blob, "<i8", b, lab_at)
        if not np.isfinite(images).all():
            raise TraceError(f"{path}: record {k} (step {step}) has non-finite pixels")
        if labels.min() < 0:
            raise TraceError(f"{path}: record {k} (step {step}) has a negative label ({labels.min()})")
        digest.update(struct.pack("<qdqqqq", step, lr, b, h, w, c))
        digest.update(blob[img_at:pos + body])
        steps.append(step)
        lrs.append(lr)
        losses.append(loss)
        if keep_batches:
            batches.append((images.astype(np.float32), labels.astype(np.int64)))
        pos += body
    if not steps:
        raise TraceError(f"{path}: holds the header but no step")
    return dict(steps=steps, lrs=lrs, losses=losses, digest=digest.hexdigest(), batches=batches)


def read_safetensors_np(path):
    """{name: numpy array} (the `safetensors` package when importable, else this parser)."""
    try:
        from safetensors.numpy import load_file
        return load_file(str(path))
    except ImportError:
        pass
    dtypes = {"F32": "<f4", "F64": "<f8", "I64": "<i8", "I32": "<i4", "F16": "<f2"}
    blob = pathlib.Path(path).read_bytes()
    if len(blob) < 8:
        raise TraceError(f"{path}: too short for a safetensors file")
    (hn,) = struct.unpack("<Q", blob[:8])
    if 8 + hn > len(blob):
        raise TraceError(f"{path}: header length {hn} runs past the end of the file")
    header = json.loads(blob[8:8 + hn])
    out = {}
    for name, v in header.items():
        if name == "__metadata__":
            continue
        if v["dtype"] not in dtypes:
            raise TraceError(f"{path}: {name} has dtype {v['dtype']}, which this reader does not handle")
        a, b = v["data_offsets"]
        dt = np.dtype(dtypes[v["dtype"]])
        if 8 + hn + b > len(blob) or (b - a) != dt.itemsize * int(np.prod(v["shape"], dtype=np.int64)):
            raise TraceError(f"{path}: {name}'s data offsets do not fit its shape or the file")
        out[name] = np.frombuffer(blob, dt, (b - a) // dt.itemsize, 8 + hn + a).reshape(v["shape"]).copy()
    return out


def selftest_reader():
    """Writes synthetic traces and checks what the reader makes of them (numpy only)."""
    rng = np.random.default_rng(0)

    def record(step, lr, loss, imgs, labels):
        b, h, w, c = imgs.shape
        return RECORD_HEAD.pack(step, lr, loss, b, h, w, c) + imgs.astype("<f4").tobytes() + labels.astype("<i8").tobytes()

    recs = [(s, 1e-3 * (s + 1), 2.3 - 0.1 * s, rng.standard_normal((4, 5, 6, 1)).astype(np.float32),
             rng.integers(0, 10, 4)) for s in range(3)]
    good = MAGIC + b"".join(record(*r) for r in recs)
    with tempfile.TemporaryDirectory() as tmp:
        p = pathlib.Path(tmp) / "steps.bin"

        def expect_error(data, words, what):
            p.write_bytes(data)
            try:
                read_trace(p)
            except TraceError as e:
                assert words in str(e), f"{what}: unexpected message: {e}"
                return
            raise AssertionError(f"{what}: no error")

        p.write_bytes(good)
        t = read_trace(p)
        assert t["steps"] == [0, 1, 2] and t["lrs"] == [r[1] for r in recs] and t["losses"] == [r[2] for r in recs]
        for (img, lab), r in zip(t["batches"], recs):
            assert img.shape == (4, 5, 6, 1) and np.array_equal(img, r[3]) and np.array_equal(lab, r[4])
        # The digest ignores the loss (it differs between --matmul fp32 and bf16) but not the batches.
        other_loss = MAGIC + b"".join(record(r[0], r[1], r[2] + 1.0, r[3], r[4]) for r in recs)
        p.write_bytes(other_loss)
        assert read_trace(p, keep_batches=False)["digest"] == t["digest"]
        changed = list(recs)
        img = recs[1][3].copy()
        img[0, 0, 0, 0] += 1.0
        changed[1] = recs[1][:3] + (img, recs[1][4])
        p.write_bytes(MAGIC + b"".join(record(*r) for r in changed))
        assert read_trace(p, keep_batches=False)["digest"] != t["digest"]
        expect_error(b"MFTRACE2" + good[8:], "not a step trace", "bad magic")
        expect_error(b"", "not a step trace", "empty file")
        expect_error(MAGIC, "no step", "header only")
        expect_error(good[:-3], "record boundary", "cut inside the labels")
        expect_error(good + good[8:30], "record boundary", "cut inside a record header")
        expect_error(MAGIC + RECORD_HEAD.pack(0, 1e-3, 2.3, 0, 5, 6, 1), "implausible", "B = 0")
        expect_error(MAGIC + RECORD_HEAD.pack(0, 1e-3, 2.3, 4, 5, 6, 1 << 40), "implausible", "huge C")
        expect_error(MAGIC + record(*recs[0]) + record(*recs[2]), "count up", "a step missing")
        bad = recs[0][3].copy()
        bad[0, 0, 0, 0] = np.nan
        expect_error(MAGIC + record(0, 1e-3, 2.3, bad, recs[0][4]), "non-finite", "NaN pixel")
        expect_error(MAGIC + record(0, 1e-3, 2.3, recs[0][3], np.array([1, -1, 2, 3])), "negative", "negative label")
        expect_error(MAGIC + record(0, float("nan"), 2.3, recs[0][3], recs[0][4]), "lr", "NaN lr")
        # The safetensors parser on a hand-written file.
        st = pathlib.Path(tmp) / "w.safetensors"
        a = np.arange(6, dtype="<f4").reshape(2, 3)
        hdr = json.dumps({"__metadata__": {"format": "pt"}, "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
                          "n": {"dtype": "I64", "shape": [1], "data_offsets": [24, 32]}}).encode()
        st.write_bytes(struct.pack("<Q", len(hdr)) + hdr + a.tobytes() + np.array([7], "<i8").tobytes())
        w = read_safetensors_np(st)
        assert np.array_equal(w["a"], a) and w["n"].tolist() == [7] and set(w) == {"a", "n"}
    print("trace reader self-test: ok")


# ----------------------------------------------------------------------------- the engine


# The engine's precisions: fp32 (exact products), bf16 (--matmul bf16: bf16 products, fp32 storage) and
# bf16act (--dtype bf16: bf16 activations too, autocast's mode).
PRECISION_ARGS = {"fp32": ["--matmul", "fp32"], "bf16": ["--matmul", "bf16"], "bf16act": ["--dtype", "bf16"]}


def run_engine(a, matmul, out):
    run, trace = out / f"engine_{matmul}", out / f"trace_{matmul}"
    for d in (run, trace):  # the engine refuses a folder that holds a trace already
        if d.exists():
            shutil.rmtree(d)
    cmd = [a.engine, "train", "-c", a.config, "--data", a.data, "--out", str(run), "--trace", str(trace),
           "--backend", "cuda", *PRECISION_ARGS[matmul], "--epochs", "1", "--max-steps", str(a.steps), "--batch",
           str(a.batch), "--lr", str(a.lr), "--drop-path", "0", "--seed", str(a.seed), "--workers", str(a.workers),
           "--eval-subset", str(a.batch), "--no-progress"]
    log = out / f"engine_{matmul}.log"
    print(f"engine ({matmul}): {' '.join(cmd)}", flush=True)
    with open(log, "w") as f:
        try:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
        except OSError as e:
            fail(f"cannot run the engine {a.engine}: {e.strerror}")
    if rc != 0:
        lines = [l for l in log.read_text(errors="replace").splitlines() if l.strip()]
        fail(f"the engine ({' '.join(PRECISION_ARGS[matmul])}) exited with {rc}: {lines[-1] if lines else '(no output)'} "
             f"(log: {log})")
    return run, trace


def model_description(a, run):
    """The resolved description the engine trained: RUN/config.json, else `metaformer info -c CONFIG --json`."""
    p = run / "config.json"
    if p.exists():
        return json.loads(p.read_text())
    r = subprocess.run([a.engine, "info", "-c", a.config, "--json"], capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"{p} is missing and `metaformer info -c {a.config} --json` failed: {r.stderr.strip()[-300:]}")
    return json.loads(r.stdout)


# ----------------------------------------------------------------------------- PyTorch


def torch_curve(cfg, init, batches, lrs, bf16, a):
    """PyTorch's losses (before each update) on the traced batches, from the traced weights."""
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from reference_model import MetaFormer

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    model = MetaFormer(cfg)
    state = model.state_dict()
    missing, extra = sorted(set(state) - set(init)), sorted(set(init) - set(state))
    if missing or extra:
        fail(f"init.safetensors does not match the reference model: missing {missing[:5]}, unexpected {extra[:5]}")
    tensors = {}
    for k, v in init.items():
        if v.size != state[k].numel():
            fail(f"init.safetensors: {k} has shape {list(v.shape)}, the reference model {list(state[k].shape)}")
        # 1x1 convolutions and linear layers hold the same numbers in either shape.
        tensors[k] = torch.from_numpy(np.ascontiguousarray(v)).to(state[k].dtype).reshape(state[k].shape)
    model.load_state_dict(tensors, strict=True)
    model = model.cuda().train()

    decay = [p for p in model.parameters() if p.ndim > 1]  # the engine's Parameter::decay
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=lrs[0], betas=(0.9, 0.999), eps=1e-8, foreach=False)
    losses = []
    for (images, labels), lr in zip(batches, lrs):
        x = torch.from_numpy(images).cuda().permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
        y = torch.from_numpy(labels).cuda()
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y, label_smoothing=a.label_smoothing)
        loss.backward()
        opt.step()
        losses.append(float(loss.item()))
        if not math.isfinite(losses[-1]):
            fail(f"PyTorch's loss ({'bf16' if bf16 else 'fp32'}) diverged at step {len(losses) - 1}")
    del model, opt
    torch.cuda.empty_cache()
    return losses


# ----------------------------------------------------------------------------- outputs


def nice_ticks(lo, hi, n=6):
    span = max(hi - lo, 1e-12)
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    ticks, t = [], first
    while t <= hi + 1e-9 * span:
        ticks.append(round(t, 10))
        t += step
    return ticks


def write_svg(path, steps, curves, title):
    """A plain line plot: curves is [(label, colour, dashed, values)]."""
    W, H, L, R, T, B = 900, 520, 70, 20, 40, 60
    pw, ph = W - L - R, H - T - B
    x0, x1 = steps[0], max(steps[-1], steps[0] + 1)
    ys = [v for _, _, _, vals in curves for v in vals if math.isfinite(v)]
    y0, y1 = min(ys), max(ys)
    pad = 0.05 * max(y1 - y0, 1e-6)
    y0, y1 = y0 - pad, y1 + pad
    sx = lambda s: L + (s - x0) / (x1 - x0) * pw  # noqa: E731
    sy = lambda v: T + (1 - (v - y0) / (y1 - y0)) * ph  # noqa: E731
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
         f'font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="15">{html.escape(title)}</text>']
    for t in nice_ticks(y0, y1):
        y = sy(t)
        o.append(f'<line x1="{L}" y1="{y:.1f}" x2="{L + pw}" y2="{y:.1f}" stroke="#e4e4e4"/>')
        o.append(f'<text x="{L - 6}" y="{y + 4:.1f}" text-anchor="end">{t:g}</text>')
    for t in nice_ticks(x0, x1):
        x = sx(t)
        o.append(f'<line x1="{x:.1f}" y1="{T + ph}" x2="{x:.1f}" y2="{T + ph + 5}" stroke="black"/>')
        o.append(f'<text x="{x:.1f}" y="{T + ph + 19}" text-anchor="middle">{t:g}</text>')
    o.append(f'<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="black"/>')
    o.append(f'<text x="{L + pw / 2}" y="{H - 15}" text-anchor="middle">optimizer step</text>')
    o.append(f'<text x="18" y="{T + ph / 2}" text-anchor="middle" transform="rotate(-90 18 {T + ph / 2})">'
             f'training loss (label smoothing 0.1)</text>')
    for label, colour, dashed, vals in curves:
        pts = " ".join(f"{sx(s):.1f},{sy(v):.1f}" for s, v in zip(steps, vals) if math.isfinite(v))
        dash = ' stroke-dasharray="5,3"' if dashed else ""
        o.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.3"{dash}/>')
    lx, ly = L + pw - 190, T + 12
    o.append(f'<rect x="{lx - 8}" y="{ly - 10}" width="190" height="{18 * len(curves) + 6}" fill="white" '
             f'stroke="#999"/>')
    for i, (label, colour, dashed, _) in enumerate(curves):
        y = ly + 18 * i + 4
        dash = ' stroke-dasharray="5,3"' if dashed else ""
        o.append(f'<line x1="{lx}" y1="{y}" x2="{lx + 30}" y2="{y}" stroke="{colour}" stroke-width="2"{dash}/>')
        o.append(f'<text x="{lx + 38}" y="{y + 4}">{html.escape(label)}</text>')
    o.append("</svg>")
    pathlib.Path(path).write_text("\n".join(o) + "\n")


def compare(a, b, tol_first, tol_mean, tol_end, window):
    d = np.abs(np.asarray(a) - np.asarray(b))
    first, end = float(d[0]), abs(float(np.mean(a[-window:])) - float(np.mean(b[-window:])))
    ok = first <= tol_first and float(d.mean()) <= tol_mean and end <= tol_end
    return dict(first=first, max=float(d.max()), mean=float(d.mean()), end=end, ok=ok)


# ----------------------------------------------------------------------------- main


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--engine", help="the metaformer binary (built with CUDA)")
    p.add_argument("--config", default="configs/fmnist_convformer.json")
    p.add_argument("--data", default="fashion-mnist", help="fashion-mnist or a folder of its idx files")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--out", help="output folder (the engine's runs and traces go under it)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--weight-decay", type=float, default=0.05, help="the engine's default")
    p.add_argument("--label-smoothing", type=float, default=0.1, help="the engine's default")
    p.add_argument("--window", type=int, default=20, help="steps averaged at the start and the end")
    p.add_argument("--every", type=int, default=25, help="rows of the printed loss table")
    p.add_argument("--reuse-traces", action="store_true", help="do not run the engine: read OUT's traces")
    p.add_argument("--tol-first", type=str, default="1e-4,2e-2",
                   help="fp32,bf16: largest |difference| at the first step (same weights and batch)")
    p.add_argument("--tol-mean", type=float, default=0.05, help="largest mean |difference| over all steps")
    p.add_argument("--tol-end", type=float, default=0.05, help="largest difference of the last-window means")
    p.add_argument("--selftest-reader", action="store_true", help="check the trace reader (numpy only) and exit")
    a = p.parse_args()
    if a.selftest_reader:
        selftest_reader()
        return 0
    if not a.engine or not a.out:
        p.error("--engine and --out are required")
    tol_first = dict(zip(("fp32", "bf16"), (float(x) for x in a.tol_first.split(","))))
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    runs, traces = {}, {}
    for matmul in ("fp32", "bf16", "bf16act"):
        if a.reuse_traces:
            runs[matmul], traces[matmul] = out / f"engine_{matmul}", out / f"trace_{matmul}"
        else:
            runs[matmul], traces[matmul] = run_engine(a, matmul, out)

    try:
        t32 = read_trace(traces["fp32"] / "steps.bin", keep_batches=True)
        t16 = read_trace(traces["bf16"] / "steps.bin", keep_batches=False)
        t16a = read_trace(traces["bf16act"] / "steps.bin", keep_batches=False)
        init32 = read_safetensors_np(traces["fp32"] / "init.safetensors")
        init16 = {k: read_safetensors_np(traces[k] / "init.safetensors") for k in ("bf16", "bf16act")}
    except (TraceError, OSError, ValueError, KeyError) as e:
        fail(str(e))
    for name, t in (("fp32", t32), ("bf16", t16), ("bf16act", t16a)):
        if len(t["steps"]) != a.steps:
            fail(f"the {name} trace holds {len(t['steps'])} steps, not the {a.steps} asked for")
    if t32["digest"] != t16["digest"] or t32["digest"] != t16a["digest"]:
        fail("the fp32 and bf16 runs did not see the same batches or lrs (trace digests differ): the seed "
             "does not fix the data order, or --matmul/--dtype changes it")
    for name, init in init16.items():
        if set(init32) != set(init) or any(init32[k].tobytes() != init[k].tobytes() for k in init32):
            fail(f"the fp32 and {name} runs did not start from the same weights (init.safetensors differ)")

    cfg = model_description(a, runs["fp32"])
    for name in ("bf16", "bf16act"):
        cfg16 = runs[name] / "config.json"
        if cfg16.exists() and json.loads(cfg16.read_text()) != cfg:
            fail(f"the fp32 and {name} runs trained different model descriptions (config.json differ)")
    b0, h0, w0, c0 = t32["batches"][0][0].shape
    if c0 != cfg.get("in_chans", 3):
        fail(f"the traced images have {c0} channels, the model {cfg.get('in_chans', 3)}")
    top = max(int(lab.max()) for _, lab in t32["batches"])
    if top >= cfg.get("num_classes", 1000):
        fail(f"a traced label is {top}, the model has {cfg.get('num_classes', 1000)} classes")
    print(f"traces agree: {len(t32['steps'])} steps, batch {b0}, {h0}x{w0}x{c0}, batches and lrs digest "
          f"{t32['digest'][:16]}, {len(init32)} initial tensors identical", flush=True)

    import torch
    if not torch.cuda.is_available():
        fail("PyTorch sees no CUDA device")
    lrs = t32["lrs"]
    curves = {"engine_fp32": t32["losses"], "engine_bf16": t16["losses"], "engine_bf16act": t16a["losses"]}
    print("PyTorch fp32 (TF32 off) ...", flush=True)
    curves["torch_fp32"] = torch_curve(cfg, init32, t32["batches"], lrs, False, a)
    print("PyTorch bf16 autocast ...", flush=True)
    curves["torch_bf16"] = torch_curve(cfg, init32, t32["batches"], lrs, True, a)

    steps = t32["steps"]
    cols = ["engine_fp32", "torch_fp32", "engine_bf16", "engine_bf16act", "torch_bf16"]
    with open(out / "loss_curves.csv", "w") as f:
        f.write("step,lr," + ",".join(cols) + "\n")
        for i, s in enumerate(steps):
            f.write(f"{s},{lrs[i]:.9g}," + ",".join(f"{curves[c][i]:.9g}" for c in cols) + "\n")
    write_svg(out / "loss_curves.svg", steps,
              [("engine fp32", "#1f5fbf", False, curves["engine_fp32"]),
               ("PyTorch fp32", "#6fa8ff", True, curves["torch_fp32"]),
               ("engine --matmul bf16", "#c0392b", False, curves["engine_bf16"]),
               ("engine --dtype bf16", "#27ae60", False, curves["engine_bf16act"]),
               ("PyTorch bf16 autocast", "#f39c12", True, curves["torch_bf16"])],
              f"{cfg.get('name', 'model')}: training loss, engine vs PyTorch (same weights, same batches)")

    w = a.window
    pairs = [("engine fp32 vs PyTorch fp32", "engine_fp32", "torch_fp32", "fp32"),
             ("engine bf16 vs PyTorch bf16 autocast", "engine_bf16", "torch_bf16", "bf16"),
             ("engine --dtype bf16 vs PyTorch bf16 autocast", "engine_bf16act", "torch_bf16", "bf16"),
             ("engine bf16 vs engine fp32 (scale)", "engine_bf16", "engine_fp32", None)]
    results = []
    gpu = torch.cuda.get_device_name()
    print()
    print(f"## Loss curve: engine against PyTorch ({cfg.get('name', 'model')}, {len(steps)} steps, batch {b0}, "
          f"lr {a.lr:g} peak, seed {a.seed})")
    print()
    print(f"{gpu}, torch {torch.__version__}. Same initial weights and batches for all five curves; "
          f"losses are each step's mean label-smoothed cross-entropy before the update.")
    print()
    print(f"| pair | first step abs diff | max abs diff | mean abs diff | first {w} mean (a / b) | last {w} mean (a / b) | verdict |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for label, x, y, kind in pairs:
        r = compare(curves[x], curves[y], tol_first[kind] if kind else math.inf, a.tol_mean, a.tol_end, w)
        verdict = "(for scale)" if kind is None else ("follows" if r["ok"] else "DIFFERS")
        if kind:
            results.append((label, r))
        print(f"| {label} | {r['first']:.2e} | {r['max']:.4f} | {r['mean']:.4f} | "
              f"{np.mean(curves[x][:w]):.4f} / {np.mean(curves[y][:w]):.4f} | "
              f"{np.mean(curves[x][-w:]):.4f} / {np.mean(curves[y][-w:]):.4f} | {verdict} |")
    print()
    print(f"Bars: first-step |diff| <= {tol_first['fp32']:g} (fp32) / {tol_first['bf16']:g} (bf16), mean |diff| <= "
          f"{a.tol_mean:g}, last-{w}-step means within {a.tol_end:g}.")
    print()
    print("| step | lr | engine fp32 | PyTorch fp32 | engine --matmul bf16 | engine --dtype bf16 | PyTorch bf16 |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    rows = sorted(set(range(0, len(steps), a.every)) | {len(steps) - 1})
    for i in rows:
        print(f"| {steps[i]} | {lrs[i]:.3e} | " + " | ".join(f"{curves[c][i]:.4f}" for c in cols) + " |")
    print()
    bad = [label for label, r in results if not r["ok"]]
    if bad:
        print(f"verdict: DIFFERS: {'; '.join(bad)} (files: {out / 'loss_curves.csv'}, {out / 'loss_curves.svg'})")
        return 3
    print(f"verdict: the engine's loss curves follow PyTorch's in fp32 and in both bf16 modes "
          f"(files: {out / 'loss_curves.csv'}, {out / 'loss_curves.svg'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
