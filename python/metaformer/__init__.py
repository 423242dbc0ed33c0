"""MetaFormer networks from the metaformer.cpp engine, with timm's names (docs/python.md).

    import metaformer
    model = metaformer.create_model("caformer_s18", weights="model.safetensors")
    model.classify("cat.jpg")                 # [(label, probability), ...] as `metaformer classify`
    logits = model(batch)                     # float32 (N, C, H, W) -> (N, num_classes), zero-copy

The engine is the same library as the command line's and the C API's: the same logits, the same
preprocessing, the same training code.
"""

import fnmatch
import json
import numbers
import os
import struct

from . import _core
from ._core import Error

__all__ = [
    "Error",
    "Model",
    "Transform",
    "compare",
    "create_model",
    "create_transform",
    "list_models",
    "resolve_data_config",
    "train",
]
__version__ = _core.__version__
Error.__module__ = __name__
Error.__doc__ = "An error reported by the engine (a bad file, an unknown model, ...): its one-line message."

# The thread counts the engine accepts (as the C API); None means all hardware threads.
_MAX_THREADS = 1024
_DTYPES = {"float32": "fp32", "fp32": "fp32", "bfloat16": "bf16", "bf16": "bf16"}


def list_models(filter="", exclude_filters="", *, pattern=None):
    """The zoo's model names, sorted; `filter` (or `pattern`) and `exclude_filters` are shell-style
    wildcards or lists of them, as in timm.list_models: list_models("caformer*")."""
    include = _patterns(pattern if pattern is not None else filter)
    exclude = _patterns(exclude_filters)
    names = sorted(_core.list_models())
    if include:
        names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in include)]
    if exclude:
        names = [n for n in names if not any(fnmatch.fnmatchcase(n, p) for p in exclude)]
    return names


def _patterns(value):
    if not value:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple, set)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise TypeError(f"a wildcard pattern must be a string or a list of strings, got {type(value).__name__}")


def _threads_arg(threads, what="threads"):
    """None -> 0 (all hardware threads); otherwise an int in 1.._MAX_THREADS."""
    if threads is None:
        return 0
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral):
        raise TypeError(f"{what} must be an int (or None for all cores), got {type(threads).__name__}")
    threads = int(threads)
    if not 1 <= threads <= _MAX_THREADS:
        raise ValueError(f"{what} must be 1..{_MAX_THREADS} (or None for all cores), got {threads}")
    return threads


def _path_arg(value, what):
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{what} must be a path (str or os.PathLike), got {type(value).__name__}")
    path = os.fspath(value)
    if not isinstance(path, str) or not path:
        raise ValueError(f"{what} must be a non-empty path")
    return path


def create_model(model_name=None, pretrained=False, weights=None, *, checkpoint_path=None, backend="cpu",
                 dtype="float32", threads=None, num_classes=None, config=None):
    """A ready-to-run model, as timm.create_model.

    model_name   a zoo name ("caformer_s18"), optionally with a pretrained tag ("caformer_s18.sail_in1k");
                 see list_models(). Or leave it out and give config=.
    pretrained   True: timm's weights from the Hugging Face hub (cached; the hub's cache layout).
    weights      a .safetensors file with timm's key names (checkpoint_path= is timm's name for it).
                 Neither: seeded random weights (the outputs are then meaningless).
    backend      "cpu" (oneDNN and the engine's kernels), "ref" (plain reference loops) or "cuda".
    dtype        "float32", or "bfloat16" (the matrix products in bf16, cpu backend).
    threads      compute threads, 1..1024; None: all cores.
    num_classes  the classifier's size; None: the checkpoint's (or the description's).
    config       a JSON model description (docs/config.md) instead of model_name (a model_name
                 ending in ".json" is taken as one, as the C API does).
    """
    if config is None and isinstance(model_name, str) and model_name.endswith(".json"):
        model_name, config = None, model_name  # a description's path, as the C API takes it
    if checkpoint_path is not None:
        if weights is not None:
            raise ValueError("give weights= or checkpoint_path= (the same thing), not both")
        weights = checkpoint_path
    if (model_name is None) == (config is None):
        raise ValueError("give a model: a zoo name (create_model('caformer_s18')) or config='model.json', not both")
    if model_name is not None and (not isinstance(model_name, str) or not model_name):
        raise TypeError(f"model_name must be a non-empty string, got {model_name!r}")
    config = _path_arg(config, "config")
    weights = _path_arg(weights, "weights")
    if not isinstance(pretrained, bool):
        raise TypeError(f"pretrained must be True or False, got {pretrained!r}")
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string (cpu, ref or cuda), got {type(backend).__name__}")
    engine_dtype = _DTYPES.get(getattr(dtype, "name", dtype) if not isinstance(dtype, str) else dtype)
    if engine_dtype is None:
        raise ValueError(f"unknown dtype {dtype!r} (float32 or bfloat16)")
    threads = _threads_arg(threads)
    if num_classes is None:
        num_classes = 0
    elif isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
        raise TypeError(f"num_classes must be an int, got {type(num_classes).__name__}")
    elif not 1 <= num_classes <= 1000000:
        raise ValueError(f"num_classes must be 1..1000000, got {num_classes}")
    num_classes = int(num_classes)

    architecture, tag = None, None
    if model_name is not None:
        architecture, _, tag = model_name.partition(".")
        tag = tag or None
    if pretrained:
        if config is not None:
            raise ValueError("pretrained=True needs a zoo name (the hub has timm's models), not config=")
        if weights is not None:
            raise ValueError("give pretrained=True or weights=, not both")
        weights = _core.fetch_pretrained(model_name)
    core = _core.Model(config if config is not None else architecture, config is not None, weights or "",
                       backend, engine_dtype, threads, num_classes)
    return Model(core, model_name=model_name, architecture=architecture, tag=tag, pretrained=pretrained)


class Model:
    """A model built by create_model(). Call it on a float32 batch (N, C, H, W) or one image
    (C, H, W): a numpy array, anything with the buffer protocol or __dlpack__ (a torch CPU tensor),
    read in place when C-contiguous. Returns numpy float32 logits (N, num_classes)."""

    def __init__(self, core, model_name, architecture, tag, pretrained):
        self._core = core
        self._config = json.loads(core.config_json())
        self._architecture = architecture
        self._tag = tag
        self._pretrained = pretrained
        self.name = model_name if model_name is not None else self._config.get("name", "custom")

    def __call__(self, x):
        return self._core.run(x)

    forward = __call__

    def __repr__(self):
        return (f"metaformer.Model({self.name!r}, {self.num_parameters / 1e6:.2f}M parameters, "
                f"input {self.default_cfg['input_size']}, {self.num_classes} classes, backend {self._core.backend})")

    # timm's attribute names
    @property
    def num_classes(self):
        return self._config["num_classes"]

    @property
    def in_chans(self):
        return self._config["in_chans"]

    @property
    def num_parameters(self):
        return self._core.num_parameters

    @property
    def config(self):
        """The model's JSON description (docs/config.md), as a dict."""
        return json.loads(json.dumps(self._config))

    @property
    def pretrained_cfg(self):
        """timm's pretrained_cfg: the input size and preprocessing the weights expect."""
        cfg = self._config
        inp = cfg.get("input", {})
        size = inp.get("size", 224)
        hub_id = None
        if self._architecture is not None:
            try:
                hub_id = _core.pretrained_repo(self.name)
            except Error:
                hub_id = None
        return {
            "architecture": self._architecture or cfg.get("name"),
            "tag": self._tag,
            "hf_hub_id": hub_id,
            "input_size": (cfg["in_chans"], size, size),
            "fixed_input_size": self._core.fixed_input_size,
            "interpolation": inp.get("interpolation", "bicubic"),
            "crop_pct": inp.get("crop_pct", 1.0),
            "crop_mode": inp.get("crop_mode", "center"),
            "mean": tuple(_f32(v) for v in inp.get("mean", (0.485, 0.456, 0.406))),
            "std": tuple(_f32(v) for v in inp.get("std", (0.229, 0.224, 0.225))),
            "num_classes": cfg["num_classes"],
        }

    default_cfg = pretrained_cfg  # timm's older name

    def info(self):
        """What the model is and how it runs, as a dict."""
        cfg = self.pretrained_cfg
        return {
            "name": self.name,
            "architecture": cfg["architecture"],
            "tag": self._tag,
            "parameters": self.num_parameters,
            "input_size": cfg["input_size"],
            "fixed_input_size": cfg["fixed_input_size"],
            "in_chans": self.in_chans,
            "num_classes": self.num_classes,
            "mean": cfg["mean"],
            "std": cfg["std"],
            "crop_pct": cfg["crop_pct"],
            "crop_mode": cfg["crop_mode"],
            "interpolation": cfg["interpolation"],
            "backend": self._core.backend,
            "dtype": {"fp32": "float32", "bf16": "bfloat16"}[self._core.dtype],
            "threads": self._core.threads or None,
            "weights": self._core.weights or None,
            "pretrained": self._pretrained,
        }

    def transform(self, image):
        """timm's evaluation transform of this model, by the engine's own code (so the logits equal
        `metaformer classify`'s): an image path, a PIL image or uint8 pixels (H, W, 3) -> a float32
        batch (1, 3, size, size)."""
        if isinstance(image, (str, os.PathLike)):
            return self._core.preprocess_file(os.fspath(image))
        return self._core.preprocess_rgb(_rgb_pixels(image))

    def classify(self, image, topk=5):
        """The top classes of one image (path, PIL image or uint8 pixels) as (label, probability)
        pairs, most likely first; labels are ImageNet's for 1000-class models."""
        import numpy as np

        if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
            raise ValueError(f"topk must be a positive int, got {topk!r}")
        logits = self(self.transform(image))[0]
        # As the CLI: exp(l - max) in double, normalised.
        p = np.exp((logits - logits.max()).astype(np.float64))
        p /= p.sum()
        order = np.argsort(-p, kind="stable")[: min(topk, len(p))]
        return [(_core.class_label(int(k), len(p)), float(p[k])) for k in order]


def _f32(value):
    """The engine keeps mean and std in float32: the shortest decimal that is the same float32
    (0.485, as timm writes it, not 0.48500001430511475)."""
    exact = struct.pack("<f", value)
    for digits in range(6, 10):
        short = float(f"{value:.{digits}g}")
        if struct.pack("<f", short) == exact:
            return short
    return value


def _rgb_pixels(image):
    """A PIL image or a numpy uint8 array as C-contiguous RGB pixels (H, W, 3)."""
    import numpy as np

    if hasattr(image, "convert") and type(image).__module__.startswith("PIL."):
        image = np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise TypeError("an image must be a path, a PIL image or a numpy uint8 array (H, W, 3); got "
                        f"{type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"image pixels must be uint8 (H, W, 3), got {image.dtype}; a float batch that is already "
                        "preprocessed goes to the model directly")
    if image.ndim == 2:  # grey, as PIL's convert("RGB")
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:  # RGBA: alpha dropped, as convert("RGB")
        image = image[:, :, :3]
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image pixels must be (H, W, 3) (or (H, W) grey, (H, W, 4) RGBA); got shape {image.shape}")
    return np.ascontiguousarray(image)


class Transform:
    """The evaluation transform of a model (create_transform(model)): image -> (1, 3, size, size)."""

    def __init__(self, model):
        self._model = model

    def __call__(self, image):
        return self._model.transform(image)

    def __repr__(self):
        cfg = self._model.pretrained_cfg
        return (f"metaformer.Transform(size={cfg['input_size'][1]}, crop_pct={cfg['crop_pct']}, "
                f"interpolation={cfg['interpolation']!r}, crop_mode={cfg['crop_mode']!r}, mean={cfg['mean']}, "
                f"std={cfg['std']})")


def create_transform(model):
    """The model's evaluation preprocessing as a callable (timm.data.create_transform's role)."""
    if not isinstance(model, Model):
        raise TypeError(f"create_transform takes a metaformer.Model, got {type(model).__name__}")
    return Transform(model)


def resolve_data_config(model):
    """timm.data.resolve_data_config(model=...): input_size, interpolation, mean, std, crop_pct, crop_mode."""
    if not isinstance(model, Model):
        raise TypeError(f"resolve_data_config takes a metaformer.Model, got {type(model).__name__}")
    cfg = model.pretrained_cfg
    return {k: cfg[k] for k in ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")}


def _command_args(command, options):
    """A CLI command's arguments from keywords: each a long option with "_" for "-"."""
    known = dict(_core.command_options(command))  # long option -> takes a value (False: a flag)
    unknown = [k for k in options if k.replace("_", "-") not in known]
    if unknown:
        raise TypeError(f"{command}() got unexpected keyword argument(s): {', '.join(sorted(unknown))} (options: "
                        f"{', '.join(sorted(o.replace('-', '_') for o in known))})")
    if "threads" in options:
        _threads_arg(options["threads"])
    args = []
    for key, value in options.items():
        option = "--" + key.replace("_", "-")
        if value is None:
            continue
        if not known[key.replace("_", "-")]:
            if not isinstance(value, bool):
                raise TypeError(f"{command}(): {key} is a flag: pass True or False, got {value!r}")
            if value:
                args.append(option)
            continue
        if isinstance(value, bool):
            raise TypeError(f"{command}(): {key} takes a value, not {value!r}")
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        elif isinstance(value, numbers.Integral):
            value = int(value)
        elif isinstance(value, numbers.Real):
            value = repr(float(value))  # every digit: 3e-3 stays 0.003
        elif isinstance(value, (list, tuple)) and command == "compare" and key == "mixers":
            value = ",".join(str(v) for v in value)  # mixers=["pooling", "sepconv"]
        elif not isinstance(value, str):
            raise TypeError(f"{command}(): {key} must be a string or a number, got {type(value).__name__}")
        args += [option, str(value)]
    return args


def train(**options):
    """`metaformer train` in this process, with the same options (docs/training.md): each keyword is
    a long option with "_" for "-" (epochs=1, data="fashion-mnist", out="runs/a", no_progress=True).
    Returns the run's metrics: one dict per epoch, from OUT/metrics.jsonl.

        metaformer.train(model="poolformer_s12", data="fashion-mnist", epochs=1, subset=256, out="runs/a")
    """
    args = _command_args("train", options)
    if options.get("out") is None and options.get("resume") is None:
        raise TypeError("train() needs out= (the run folder to create) or resume= (a run folder to continue)")
    _core.run_command("train", args)
    run_dir = options.get("out") or options.get("resume")
    return _read_metrics(os.path.join(os.fspath(run_dir), "metrics.jsonl"))


def compare(**options):
    """`metaformer compare` in this process (docs/compare.md): the same MetaFormer trained once per
    token mixer and seed, with the same keywords-as-options rule as train(); `mixers` may be a list.
    Returns OUT/results.json as a dict (per-mixer means and spreads, every run, the budget); the
    report and plots are in OUT as with the command.

        r = metaformer.compare(base="configs/compare_fmnist.json", mixers=["identity", "pooling"],
                               data="fashion-mnist", epochs=1, subset=512, seeds=2, out="runs/cmp")
        [(m["mixer"], m["top1_mean"]) for m in r["mixers"]]
    """
    args = _command_args("compare", options)
    if options.get("out") is None:
        raise TypeError("compare() needs out= (the folder for the report and the runs)")
    _core.run_command("compare", args)
    with open(os.path.join(os.fspath(options["out"]), "results.json"), encoding="utf-8") as f:
        return json.load(f)


def _read_metrics(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
