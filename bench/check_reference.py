"""Checks bench/reference_model.py against timm: for every golden folder of a model family the
reference covers, it loads timm's weights, runs timm's input and compares with timm's logits
(tests/data/golden/*/io.safetensors were written by tools/golden/make_golden.py with timm 1.0.29).
Exit status 1 when any model differs by more than the engine's parity tolerance."""
import json
import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from reference_model import MetaFormer, load_weights, read_safetensors  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOL = 1e-5  # relative L2 of the logits, as `metaformer verify` (docs/tolerances.md)


def main():
    worst, failed = 0.0, False
    for d in sorted((ROOT / "tests/data/golden").iterdir()):
        if not (d / "config.json").is_file():  # files beside the folders (casvit_param_counts.json)
            continue
        cfg = json.loads((d / "config.json").read_text())
        if cfg.get("block", "metaformer") not in ("metaformer", "mambaout") or cfg.get("layout", "hierarchical") != "hierarchical":
            continue
        mixers = cfg["mixers"] if isinstance(cfg["mixers"], list) else [cfg["mixers"]]
        if any((m if isinstance(m, str) else m["type"]) == "random" for m in mixers):
            continue
        model = MetaFormer(cfg).eval()
        load_weights(model, read_safetensors(d / "weights.safetensors"))
        io = read_safetensors(d / "io.safetensors")
        with torch.inference_mode():
            y = model(io["input"])
        rel = float((y - io["logits"]).norm() / io["logits"].norm())
        ok = rel <= TOL
        failed |= not ok
        worst = max(worst, rel)
        print(f"{d.name:16s} relative L2 {rel:.2e} {'ok' if ok else 'FAIL'}")
    print(f"reference vs timm: worst {worst:.2e} (tolerance {TOL:.0e})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
