"""A PyTorch reference of the MetaFormer models the side-by-side benchmark times.

Written for this repository (not timm's code): it builds a network from the same JSON model
description the engine reads (`metaformer info -m <model> --json`, docs/config.md) and uses timm's
state-dict key names, so one `.safetensors` file feeds the engine, this model and its ONNX export.
The layout mirrors timm's, because that is what a PyTorch user would run: NCHW with 1x1
convolutions in the pooling/conv stages, channels-last (B, N, C) tokens in attention stages, NHWC
throughout MambaOut. `check_reference.py` checks it against timm's logits in tests/data/golden/.

Covered: block "metaformer" (mixers pooling, sepconv, attention, identity) and block "mambaout"
(gated_cnn), the stems, downsamplers and heads those models use.
"""
import json
import math
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------- small pieces


def norm_fn(spec, channels):
    """A norm from a config entry: (kind, weight, bias-or-None, eps)."""
    if spec is None:
        return None
    return NormParams(spec["type"], channels, spec.get("bias", True), spec.get("eps", 1e-6))


class NormParams(nn.Module):
    def __init__(self, kind, channels, bias, eps):
        super().__init__()
        assert kind in ("layer_norm", "group_norm1"), kind
        self.kind, self.eps = kind, eps
        self.weight = nn.Parameter(torch.ones(channels))
        # Bias-free norms still pass an explicit zero bias to the functional call: PyTorch 1.13
        # exports a missing bias as an empty ONNX input, on which onnxruntime 1.30's
        # SkipLayerNormFusion crashes (peers.md). A zero buffer is the same function.
        if bias:
            self.bias = nn.Parameter(torch.zeros(channels))
        else:
            self.register_buffer("zero_bias", torch.zeros(channels), persistent=False)
            self.bias = None

    def b(self):
        return self.bias if self.bias is not None else self.zero_bias

    def last(self, x):  # normalise the last dimension (channels-last data)
        return F.layer_norm(x, (self.weight.shape[0],), self.weight, self.b(), self.eps)

    def nchw(self, x):
        if self.kind == "group_norm1":
            return F.group_norm(x, 1, self.weight, self.b(), self.eps)
        return self.last(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def act_fn(name):
    return {"gelu": nn.GELU(), "relu": nn.ReLU(), "silu": nn.SiLU(), "starrelu": StarReLU(),
            "squared_relu": SquaredReLU(), "identity": nn.Identity()}[name]


class StarReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.scale * F.relu(x) ** 2 + self.bias


class SquaredReLU(nn.Module):
    def forward(self, x):
        return F.relu(x) ** 2


class Scale(nn.Module):
    """Per-channel scale; `dim` is the channel axis (1 for NCHW, -1 for channels-last)."""

    def __init__(self, channels, init, dim):
        super().__init__()
        self.scale = nn.Parameter(torch.full((channels,), float(init)))
        self.dim = dim

    def forward(self, x):
        return x * (self.scale.view(-1, 1, 1) if self.dim == 1 else self.scale)


def pointwise(cin, cout, bias, nchw):
    return nn.Conv2d(cin, cout, 1, bias=bias) if nchw else nn.Linear(cin, cout, bias=bias)


# ----------------------------------------------------------------------------- token mixers


class Pooling(nn.Module):
    def __init__(self, dim, opts, nchw):
        super().__init__()
        k = opts.get("pool_size", 3)
        self.pool = nn.AvgPool2d(k, 1, k // 2, count_include_pad=False)

    def forward(self, x):
        return self.pool(x) - x


class SepConv(nn.Module):
    def __init__(self, dim, opts, nchw):
        super().__init__()
        mid = int(opts.get("expansion_ratio", 2) * dim)
        k = opts.get("kernel_size", 7)
        self.pwconv1 = nn.Conv2d(dim, mid, 1, bias=False)
        self.act1 = StarReLU()
        self.dwconv = nn.Conv2d(mid, mid, k, padding=k // 2, groups=mid, bias=False)
        self.pwconv2 = nn.Conv2d(mid, dim, 1, bias=False)

    def forward(self, x):
        return self.pwconv2(self.dwconv(self.act1(self.pwconv1(x))))


class Attention(nn.Module):
    def __init__(self, dim, opts, nchw):
        super().__init__()
        assert not nchw
        self.head_dim = opts.get("head_dim", 32)
        self.heads = dim // self.head_dim
        self.qkv = nn.Linear(dim, 3 * self.heads * self.head_dim, bias=False)
        self.proj = nn.Linear(self.heads * self.head_dim, dim, bias=False)

    def forward(self, x):  # (B, N, C)
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * self.head_dim ** -0.5) @ k.transpose(-2, -1)
        y = attn.softmax(dim=-1) @ v
        return self.proj(y.transpose(1, 2).reshape(b, n, -1))


class Identity(nn.Module):
    def __init__(self, dim, opts, nchw):
        super().__init__()

    def forward(self, x):
        return x


MIXERS = {"pooling": Pooling, "sepconv": SepConv, "attention": Attention, "identity": Identity}


# ----------------------------------------------------------------------------- blocks


class MetaFormerBlock(nn.Module):
    def __init__(self, dim, mixer, cfg, ls_init, rs_init, nchw):
        super().__init__()
        self.nchw = nchw
        self.norm1 = norm_fn(cfg["norms"], dim)
        self.token_mixer = MIXERS[mixer["type"]](dim, mixer, nchw)
        self.norm2 = norm_fn(cfg["norms"], dim)
        m = cfg["mlp"]
        self.mlp = nn.Sequential()
        self.mlp.add_module("fc1", pointwise(dim, int(m["ratio"] * dim), m["bias"], nchw))
        self.mlp.add_module("act", act_fn(m["act"]))
        self.mlp.add_module("fc2", pointwise(int(m["ratio"] * dim), dim, m["bias"], nchw))
        axis = 1 if nchw else -1
        if ls_init is not None:
            self.layer_scale1, self.layer_scale2 = Scale(dim, ls_init, axis), Scale(dim, ls_init, axis)
        if rs_init is not None:
            self.res_scale1, self.res_scale2 = Scale(dim, rs_init, axis), Scale(dim, rs_init, axis)

    def _norm(self, norm, x):
        return norm.nchw(x) if self.nchw else norm.last(x)

    def forward(self, x):
        for norm, branch, ls, rs in ((self.norm1, self.token_mixer, "layer_scale1", "res_scale1"),
                                     (self.norm2, self.mlp, "layer_scale2", "res_scale2")):
            y = branch(self._norm(norm, x))
            if hasattr(self, ls):
                y = getattr(self, ls)(y)
            x = (getattr(self, rs)(x) if hasattr(self, rs) else x) + y
        return x


class GatedCnnBlock(nn.Module):
    """MambaOut's block on NHWC data (spec section 7.1)."""

    def __init__(self, dim, mixer, cfg, ls_init):
        super().__init__()
        ratio = mixer.get("expansion_ratio", 8 / 3)
        self.hidden = int(ratio * dim)
        self.conv_ch = int(mixer.get("conv_ratio", 1.0) * dim)
        k = mixer.get("kernel_size", 7)
        self.norm = norm_fn(cfg["norms"], dim)
        self.fc1 = nn.Linear(dim, 2 * self.hidden)
        self.act = act_fn(mixer.get("act", "gelu"))
        self.conv = nn.Conv2d(self.conv_ch, self.conv_ch, k, padding=k // 2, groups=self.conv_ch)
        self.fc2 = nn.Linear(self.hidden, dim)
        if ls_init is not None:  # the *_rw variants: LayerScale at `ls.gamma`
            self.ls = nn.Module()
            self.ls.gamma = nn.Parameter(torch.full((dim,), float(ls_init)))

    def forward(self, x):
        y = self.fc1(self.norm.last(x))
        g, i, c = torch.split(y, [self.hidden, self.hidden - self.conv_ch, self.conv_ch], dim=-1)
        c = self.conv(c.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        y = self.fc2(self.act(g) * torch.cat((i, c), dim=-1))
        return x + (y * self.ls.gamma if hasattr(self, "ls") else y)


# ----------------------------------------------------------------------------- stem, stages, heads


class Stem(nn.Module):
    def __init__(self, cfg, out):
        super().__init__()
        s = cfg["stem"]
        self.two = s.get("type", "conv") == "two_conv"
        k, st, p = s["kernel_size"], s["stride"], s["padding"]
        if self.two:  # MambaOut: conv1 -> [norm1] -> act -> conv2 -> norm2, NHWC out
            self.conv1 = nn.Conv2d(cfg["in_chans"], out // 2, k, st, p)
            self.norm1 = norm_fn(s["norm"], out // 2) if s.get("mid_norm", False) else None
            self.act = act_fn(s.get("act", "gelu"))
            self.conv2 = nn.Conv2d(out // 2, out, k, st, p)
            self.norm2 = norm_fn(s["norm"], out)
        else:
            self.conv = nn.Conv2d(cfg["in_chans"], out, k, st, p)
            self.norm = norm_fn(s["norm"], out)

    def forward(self, x):
        if self.two:
            x = self.conv1(x)
            if self.norm1 is not None:
                x = self.norm1.nchw(x)
            x = self.conv2(self.act(x))
            return self.norm2.last(x.permute(0, 2, 3, 1))
        x = self.conv(x)
        return self.norm.nchw(x) if self.norm is not None else x


class Downsample(nn.Module):
    def __init__(self, cfg, cin, cout, channels_last):
        super().__init__()
        d = cfg["downsample"]
        self.after = d.get("norm_after", False)
        self.channels_last = channels_last
        self.norm = norm_fn(d["norm"], cout if self.after else cin)
        self.conv = nn.Conv2d(cin, cout, d["kernel_size"], d["stride"], d["padding"])

    def forward(self, x):
        if self.channels_last:  # MambaOut: NHWC in and out
            if self.norm is not None and not self.after:
                x = self.norm.last(x)
            x = self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            return self.norm.last(x) if self.norm is not None and self.after else x
        if self.norm is not None:
            x = self.norm.nchw(x)
        return self.conv(x)


class Stage(nn.Module):
    def __init__(self, cfg, i, mixer, cin):
        super().__init__()
        dim = cfg["dims"][i]
        self.mambaout = cfg.get("block", "metaformer") == "mambaout"
        self.tokens = not self.mambaout and mixer["type"] == "attention"
        if i > 0:
            self.downsample = Downsample(cfg, cin, dim, self.mambaout)
        ls = cfg.get("layer_scale_init")
        rs = cfg.get("res_scale_init")
        ls = ls[i] if isinstance(ls, list) else ls
        rs = rs[i] if isinstance(rs, list) else rs
        if isinstance(cfg["norms"], list):  # per-stage norms, as `metaformer info --json` writes them
            cfg = dict(cfg, norms=cfg["norms"][i])
        if self.mambaout:
            self.blocks = nn.Sequential(*[GatedCnnBlock(dim, mixer, cfg, ls) for _ in range(cfg["depths"][i])])
        else:
            self.blocks = nn.Sequential(*[MetaFormerBlock(dim, mixer, cfg, ls, rs, not self.tokens)
                                          for _ in range(cfg["depths"][i])])

    def forward(self, x):
        if hasattr(self, "downsample"):
            x = self.downsample(x)
        if self.tokens:
            b, c, h, w = x.shape
            x = self.blocks(x.flatten(2).transpose(1, 2))
            return x.transpose(1, 2).reshape(b, c, h, w)
        return self.blocks(x)


class Head(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h = cfg.get("head", {"type": "linear"})
        c, n = cfg["dims"][-1], cfg["num_classes"]
        self.kind = h["type"]
        self.norm = norm_fn(h.get("norm", {"type": "layer_norm", "bias": True, "eps": 1e-6}), c)
        hidden = int(h.get("mlp_ratio", 4) * c)
        if self.kind == "linear":
            self.fc = nn.Linear(c, n)
        elif self.kind == "mlp":  # timm MlpHead under head.fc
            self.fc = nn.Sequential()
            self.fc.add_module("fc1", nn.Linear(c, hidden))
            self.fc.add_module("act", act_fn(h.get("act", "squared_relu")))
            self.fc.add_module("norm", LastNorm(norm_fn(h.get("mlp_norm", {"type": "layer_norm"}), hidden)))
            self.fc.add_module("fc2", nn.Linear(hidden, n))
        elif self.kind == "mambaout_mlp":  # head.pre_logits.{fc, norm}, head.fc
            self.pre_logits = nn.Sequential()
            self.pre_logits.add_module("fc", nn.Linear(c, hidden))
            self.pre_logits.add_module("act", act_fn(h.get("act", "gelu")))
            self.pre_logits.add_module("norm", LastNorm(norm_fn(h["mlp_norm"], hidden)))
            self.fc = nn.Linear(hidden, n)
        elif self.kind == "norm_mlp":  # timm ClNormMlpClassifierHead: no norm after the activation
            self.pre_logits = nn.Sequential()
            self.pre_logits.add_module("fc", nn.Linear(c, hidden))
            self.pre_logits.add_module("act", act_fn(h.get("act", "gelu")))
            self.fc = nn.Linear(hidden, n)
        else:
            raise ValueError(f"head type {self.kind} is not in the reference")

    def forward(self, x, channels_last):
        x = x.mean(dim=(1, 2) if channels_last else (2, 3))
        x = self.norm.last(x)
        if self.kind in ("mambaout_mlp", "norm_mlp"):
            x = self.pre_logits(x)
        return self.fc(x)


class LastNorm(nn.Module):
    """A norm over the last dimension, its parameters at this module's own key."""

    def __init__(self, p):
        super().__init__()
        self.weight, self.eps = p.weight, p.eps
        self.bias = p.bias
        if p.bias is None:
            self.register_buffer("zero_bias", torch.zeros_like(p.weight), persistent=False)

    def forward(self, x):
        b = self.bias if self.bias is not None else self.zero_bias
        return F.layer_norm(x, (self.weight.shape[0],), self.weight, b, self.eps)


class MetaFormer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        assert cfg.get("layout", "hierarchical") == "hierarchical"
        assert cfg.get("block", "metaformer") in ("metaformer", "mambaout")
        self.channels_last = cfg.get("block", "metaformer") == "mambaout"
        mixers = cfg["mixers"]
        mixers = mixers if isinstance(mixers, list) else [mixers] * len(cfg["depths"])
        mixers = [m if isinstance(m, dict) else {"type": m} for m in mixers]
        self.stem = Stem(cfg, cfg["dims"][0])
        self.stages = nn.Sequential(*[Stage(cfg, i, mixers[i], cfg["dims"][i - 1] if i else cfg["dims"][0])
                                      for i in range(len(cfg["depths"]))])
        self.head = Head(cfg)

    def forward(self, x):  # (B, 3, H, W) -> logits
        return self.head(self.stages(self.stem(x)), self.channels_last)


# ----------------------------------------------------------------------------- weights


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        assert v["dtype"] == "F32", f"{path}: {k} is {v['dtype']}, expected F32"
        a, b = v["data_offsets"]
        out[k] = torch.from_numpy(np.frombuffer(blob, np.float32, (b - a) // 4, 8 + n + a).reshape(v["shape"]).copy())
    return out


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for k, t in tensors.items():
        a = t.detach().contiguous().float().numpy().tobytes()
        header[k] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(a)]}
        offset += len(a)
        blobs.append(a)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def load_weights(model, tensors):
    """Loads timm-named tensors; 1x1 conv weights and linear weights convert either way."""
    state = model.state_dict()
    missing = set(state) - set(tensors)
    extra = set(tensors) - set(state)
    if missing or extra:
        raise KeyError(f"missing {sorted(missing)[:5]}, unexpected {sorted(extra)[:5]}")
    model.load_state_dict({k: v.reshape(state[k].shape) for k, v in tensors.items()})


def random_weights(model, seed):
    """Deterministic weights with realistic scale (trunc-normal 0.02 like timm's init, norms near 1)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in model.state_dict().items():
        if k.endswith("scale") and v.numel() > 1:  # layer / residual scales
            t = 1.0 + 0.1 * torch.randn(v.shape, generator=g)
        elif v.ndim == 1 or k.endswith(".scale"):  # norm weights, biases, StarReLU scale/bias
            base = 1.0 if k.endswith("weight") or k.endswith(".scale") else 0.0
            t = base + 0.1 * torch.randn(v.shape, generator=g)
        else:
            fan_in = v[0].numel()
            t = torch.randn(v.shape, generator=g) * math.sqrt(1.0 / fan_in)
        out[k] = t.float()
    return out
