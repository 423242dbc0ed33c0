#!/usr/bin/env python3
"""Reference outputs of Hugging Face transformers' PatchTSMixer (forecasting and classification).

Two small models with random weights (every parameter drawn here, norm weights and biases and the
BatchNorm running statistics included), run in float64 on the CPU with dropout 0:

  prediction       PatchTSMixerForPrediction, mode common_channel (channel independence: one patch
                   sequence per input channel), LayerNorm, gated attention on, std scaling (the
                   per-channel mean / std of the context, the forecast mapped back with them), a
                   linear head per channel over the flattened patches.
  classification   PatchTSMixerForTimeSeriesClassification, mode common_channel, BatchNorm (eval:
                   running statistics), no gating, no scaling (so no InjectScalerStatistics4D),
                   mean over the patches, a linear classifier over the flattened channels.

Both use a context that does not divide into patches (30 steps, patches of 8 every 4): PatchTSMixer
keeps the LAST 28 steps (it drops the first 2), which the engine must reproduce.

The weights are rounded to float32 before the float64 run, so the float32 files hold exactly the
weights that produced the outputs.

Writes into OUT_DIR, for NAME in prediction, classification:
  patchtsmixer_config.json          both configs (PatchTSMixerConfig fields), shapes, versions
  patchtsmixer_NAME.safetensors     the model's state dict, transformers' key names (float32)
  patchtsmixer_NAME_io.safetensors  (float32)
    past_values [B, L, C]                  the input series
    loc, scale [B, 1, C]                   the scaler's statistics (prediction only)
    patches [B, C, N, D]                   the patch embedding's output (encoder.patcher)
    layers.{i}.patch_mixer_out [B, C, N, D]  after layer i's patch (time) mixer, residual added
    layers.{i}.out [B, C, N, D]            after layer i (feature mixer too)
    last_hidden_state [B, C, N, D]
    prediction_outputs                     [B, P, C] forecast (scaled back) / [B, K] logits
    grad.cotangent                         a random g shaped like prediction_outputs; the gradients
    grad.<param>                           of sum(prediction_outputs * g) for every parameter
                                           (state-dict names; prediction only: LayerNorm, so eval
                                           and training modes give the same gradients)

Usage: python3 make_patchtsmixer_golden.py OUT_DIR     (needs torch, transformers and safetensors)
"""
import json
import math
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import (PatchTSMixerConfig, PatchTSMixerForPrediction,
                          PatchTSMixerForTimeSeriesClassification)

COMMON = dict(
    context_length=30,
    patch_length=8,
    patch_stride=4,          # (30 - 8) // 4 + 1 = 6 patches covering the last 28 steps
    num_input_channels=3,
    d_model=16,
    expansion_factor=2,
    num_layers=2,
    dropout=0.0,
    head_dropout=0.0,
    mode="common_channel",
    self_attn=False,
    use_positional_encoding=False,
    norm_eps=1e-5,
)
PREDICTION = dict(COMMON, norm_mlp="LayerNorm", gated_attn=True, scaling="std", loss="mse",
                  prediction_length=5)
CLASSIFICATION = dict(COMMON, norm_mlp="BatchNorm", gated_attn=False, scaling=None, num_targets=4,
                      head_aggregation="avg_pool", output_range=None)
BATCH = 2


def randomise(model, gen):
    """Every parameter and buffer that affects the output random, at moderate scales."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".norm." in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
            elif p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) / math.sqrt(p.shape[1]))
            else:  # biases, norm biases
                p.copy_(0.1 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
            p.copy_(p.float().double())
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_((0.2 * torch.randn(b.shape, generator=gen, dtype=torch.float64)).float().double())
            elif name.endswith("running_var"):
                b.copy_((0.5 + torch.rand(b.shape, generator=gen, dtype=torch.float64)).float().double())


def make_series(gen, cfg):
    """Sines of different periods, per-channel offsets and scales (so the std scaler matters), noise."""
    t = torch.arange(cfg["context_length"], dtype=torch.float64)
    out = torch.empty(BATCH, cfg["context_length"], cfg["num_input_channels"], dtype=torch.float64)
    for b in range(BATCH):
        for c in range(cfg["num_input_channels"]):
            period = 5.0 + 3.0 * c + b
            out[b, :, c] = (2.0 + c) * torch.sin(2 * math.pi * t / period + b) + 3.0 * c - 1.0
    out += 0.3 * torch.randn(out.shape, generator=gen, dtype=torch.float64)
    return out.float().double()


def run(name, cls, cfg, gen, out_dir, with_grads):
    model = cls(PatchTSMixerConfig(**cfg)).double().eval()
    randomise(model, gen)
    past = make_series(gen, cfg)
    captured = {}

    def keep(key):
        def hook(module, args, output):
            captured[key] = (output[0] if isinstance(output, tuple) else output).detach().clone()
        return hook

    backbone = model.model
    backbone.encoder.patcher.register_forward_hook(keep("patches"))
    for i, layer in enumerate(backbone.encoder.mlp_mixer_encoder.mixers):
        layer.patch_mixer.register_forward_hook(keep(f"layers.{i}.patch_mixer_out"))
        layer.register_forward_hook(keep(f"layers.{i}.out"))

    out = model(past_values=past, return_dict=True)
    pred = out.prediction_outputs
    io = {"past_values": past}
    io.update(captured)
    io["last_hidden_state"] = out.last_hidden_state
    io["prediction_outputs"] = pred.detach()
    if getattr(out, "loc", None) is not None:
        io["loc"] = out.loc.detach()
        io["scale"] = out.scale.detach()
    if with_grads:
        g = torch.randn(pred.shape, generator=gen, dtype=torch.float64).float().double()
        params = dict(model.named_parameters())
        grads = torch.autograd.grad((pred * g).sum(), list(params.values()), allow_unused=True)
        io["grad.cotangent"] = g
        for pname, gr in zip(params, grads):
            if gr is not None:
                io["grad." + pname] = gr
    io = {k: v.detach() for k, v in io.items()}
    for k, v in io.items():
        assert math.isfinite(float(v.abs().max())), f"non-finite reference output {k}"

    save_file({k: v.float().contiguous() for k, v in model.state_dict().items()},
              os.path.join(out_dir, f"patchtsmixer_{name}.safetensors"))
    save_file({k: v.float().contiguous() for k, v in io.items()},
              os.path.join(out_dir, f"patchtsmixer_{name}_io.safetensors"))
    info = {"config": cfg, "batch": BATCH, "num_patches": int(model.config.num_patches),
            "keys": {k: list(v.shape) for k, v in model.state_dict().items()},
            "num_parameters": sum(p.numel() for p in model.parameters())}
    scaler = getattr(backbone, "scaler", None)
    if scaler is not None and hasattr(scaler, "minimum_scale"):
        info["scaler_minimum_scale"] = float(scaler.minimum_scale)
    print(name, type(scaler).__name__ if scaler is not None else None)
    for k, v in io.items():
        print(" ", k, tuple(v.shape), f"max |.| {float(v.abs().max()):.4g}")
    return info


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1616)
    info = {"prediction": run("prediction", PatchTSMixerForPrediction, PREDICTION, gen, out_dir, True),
            "classification": run("classification", PatchTSMixerForTimeSeriesClassification, CLASSIFICATION,
                                  gen, out_dir, False)}
    import transformers
    info["torch"] = torch.__version__
    info["transformers"] = transformers.__version__
    with open(os.path.join(out_dir, "patchtsmixer_config.json"), "w") as f:
        json.dump(info, f, indent=1)


if __name__ == "__main__":
    main()
