#!/usr/bin/env python3
"""Golden files for AFFNet from the authors' own model class (microsoft/TokenMixers, "Adaptive
Frequency Filters", class AffNet in affnet/models/classification/affnet.py), in float64 on the CPU.

Usage: python3 make_affnet_golden.py OUT AUTHORS [--full-dirs]
  AUTHORS: a copy of the repository's "Adaptive Frequency Filters" folder (holding affnet/, utils/,
  options/ ...). Third-party packages the folder imports but the model does not use (pycocotools,
  matplotlib, einops, wandb ...) are replaced by empty stand-ins when they are not installed.

Options: the authors' configs are not in the repository (they are behind download links), so the
model is built with MobileViT-v2's recipe, on which AFFNet's code is based: activation swish (the
filter's too: it reads the same option), BatchNorm (momentum 0.1) after every convolution, and the
AFF blocks' norm layer_norm_2d (GroupNorm with one group), the getattr default of affnet.py. The
"_bn" cases set that norm to batch_norm instead.

Writes (all float32 from the float64 run, except num_batches_tracked, kept as PyTorch's int64):
  OUT/tiny/, OUT/tiny_bn/: a reduced AFFNet (the authors' class with a smaller layer table, below;
      10 classes): config.json (metaformer.cpp's description), weights.safetensors (state_dict() as
      saved from their model), io.safetensors ("input" [2, 3, 64, 64] NCHW, "logits", and the
      outputs of layer_2 .. layer_5 and conv_1x1_exp, NCHW); tiny/ also io_64x96.safetensors (input
      and logits only)
  OUT/counts.json: for xx_small (AFFNet-ET), x_small (AFFNet-T) and small (AFFNet): the number of
      parameters (buffers excluded) and every state-dict key with its shape
  OUT/full_logits.safetensors: the logits of the three full-size models at 224x224 and 192x256,
      batch 1, with weights and input from a formula (SplitMix64; formula_weights) that
      tests/test_affnet.cpp repeats: full-size parity in CI without storing the weights
  OUT/full/<name>_<H>x<W>/ (with --full-dirs): the full-size models at 224x224 and 192x256 with 1000 classes
      (model.txt, weights, io; tens of MB: for `metaformer verify` on the machine that made them,
      tools/device/affnet_parity.sh, not for CI)
"""
import argparse
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import types

import torch
from safetensors.torch import save_file

OPTIONAL = {'pycocotools', 'matplotlib', 'mpl_toolkits', 'fvcore', 'cv2', 'wandb', 'tqdm', 'einops', 'yaml',
            'psutil', 'coremltools', 'complexPyTorch', 'cityscapesscripts', 'loss_landscape', 'requests', 'PIL',
            'torchvision', 'packaging', 'ptflops', 'torchstat', 'internal', 'scipy', 'sklearn', 'pandas', 'seaborn',
            'tensorboard', 'torchtext', 'timm'}


class _AnyMeta(type):
    """Attributes of a stand-in class are stand-in classes too (pycocotools.coco.COCO, ...)."""
    def __getattr__(cls, name):
        if name.startswith('__'):
            raise AttributeError(name)
        return _AnyMeta(name, (_Anything,), {})


class _Anything(metaclass=_AnyMeta):
    """Stands for any attribute of a missing package: callable, subclassable, indexable."""
    def __init__(self, *a, **k):
        pass

    def __call__(self, *a, **k):
        return _Anything()

    def __getattr__(self, name):
        if name.startswith('__'):
            raise AttributeError(name)
        return _Anything()

    def __getitem__(self, key):
        return _Anything()

    def __iter__(self):
        return iter(())

    def __bool__(self):
        return False


class _StubModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith('__'):
            raise AttributeError(name)
        return _AnyMeta(name, (_Anything,), {})


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname.split('.')[0] not in OPTIONAL:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec):
        m = _StubModule(spec.name)
        m.__path__ = []
        return m

    def exec_module(self, module):
        pass


def install_stubs():
    missing = set()
    for name in sorted(OPTIONAL):
        try:
            if importlib.util.find_spec(name) is None:
                missing.add(name)
        except (ImportError, ValueError):
            missing.add(name)
    OPTIONAL.intersection_update(missing)
    sys.meta_path.append(_StubFinder())  # last: installed packages always win
    print('stand-ins for missing packages:', ', '.join(sorted(OPTIONAL)) or 'none')


def make_opts(mode, classes, attn_norm):
    o = argparse.Namespace()
    for k, v in {
        'model.classification.name': 'affnet',
        'model.classification.affnet.mode': mode,
        'model.classification.n_classes': classes,
        'model.classification.classifier_dropout': 0.0,
        'model.classification.affnet.dropout': 0.0,
        'model.classification.affnet.attn_dropout': 0.0,
        'model.classification.affnet.ffn_dropout': 0.0,
        'model.classification.affnet.attn_norm_layer': attn_norm,
        'model.classification.affnet.conv_kernel_size': 3,
        'model.classification.affnet.head_dim': None,
        'model.classification.affnet.number_heads': 4,
        'model.activation.name': 'swish',
        'model.activation.inplace': False,
        'model.activation.neg_slope': 0.1,
        'model.activation.sparsity_threshold': 0.01,
        'model.normalization.name': 'batch_norm',
        'model.normalization.momentum': 0.1,
        'model.layer.global_pool': 'mean',
        'common.enable_coreml_compatible_module': False,
        'benchmark.use_jit_model': False,
    }.items():
        setattr(o, k, v)
    return o


# A reduced layer table in the authors' format (affnet.py's get_configuration), and the same as
# metaformer.cpp's mode "custom".
TINY_EXPAND = 2
TINY = {
    'layer1': {'out_channels': 16, 'expand_ratio': TINY_EXPAND, 'num_blocks': 1, 'stride': 1, 'block_type': 'mv2'},
    'layer2': {'out_channels': 16, 'expand_ratio': TINY_EXPAND, 'num_blocks': 2, 'stride': 2, 'block_type': 'mv2'},
    'layer3': {'out_channels': 24, 'transformer_channels': 24, 'ffn_dim': 48, 'transformer_blocks': 2,
               'patch_h': 2, 'patch_w': 2, 'stride': 2, 'mv_expand_ratio': TINY_EXPAND, 'head_dim': None,
               'num_heads': 4, 'block_type': 'aff_block'},
    'layer4': {'out_channels': 32, 'transformer_channels': 32, 'ffn_dim': 64, 'transformer_blocks': 1,
               'patch_h': 2, 'patch_w': 2, 'stride': 2, 'mv_expand_ratio': TINY_EXPAND, 'head_dim': None,
               'num_heads': 4, 'block_type': 'aff_block'},
    'layer5': {'out_channels': 40, 'transformer_channels': 40, 'ffn_dim': 80, 'transformer_blocks': 1,
               'patch_h': 2, 'patch_w': 2, 'stride': 2, 'mv_expand_ratio': TINY_EXPAND, 'head_dim': None,
               'num_heads': 4, 'block_type': 'aff_block'},
    'last_layer_exp_factor': 4,
}


def tiny_json(attn_norm):
    layers = []
    for i in range(1, 6):
        l = TINY[f'layer{i}']
        if l['block_type'] == 'mv2':
            layers.append({'type': 'mv2', 'out': l['out_channels'], 'blocks': l['num_blocks'], 'stride': l['stride'],
                           'ffn': 0})
        else:
            layers.append({'type': 'aff', 'out': l['out_channels'], 'blocks': l['transformer_blocks'],
                           'stride': l['stride'], 'ffn': l['ffn_dim']})
    norm = ({'type': 'group_norm1', 'bias': True, 'eps': 1e-5} if attn_norm == 'layer_norm_2d'
            else {'type': 'batch_norm', 'bias': True, 'eps': 1e-5, 'momentum': 0.1})
    return {'name': 'affnet_tiny' + ('_bn' if attn_norm != 'layer_norm_2d' else ''), 'num_classes': 10,
            'layout': 'affnet',
            'affnet': {'mode': 'custom', 'expand_ratio': TINY_EXPAND, 'layers': layers, 'attn_norm': norm,
                       'act': 'silu'}}


def randomise(model, gen):
    """Every parameter and BatchNorm buffer random, so every path matters: weights ~ N(0, 1/fan_in),
    norm weights around 1, biases and running means around 0, running variances in [0.5, 1.5], and a
    nonzero num_batches_tracked. The filter's weights are scaled to keep its mask away from all-zero."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2 and not name.endswith(('.w1', '.w2')):
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) / fan_in ** 0.5)
            elif name.endswith(('.w1', '.w2')):
                bs = p.shape[-1]
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) / bs ** 0.5)
            elif name.endswith('.weight'):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
        for name, b in model.named_buffers():
            if name.endswith('running_mean'):
                b.copy_(0.1 * torch.randn(b.shape, generator=gen, dtype=torch.float64))
            elif name.endswith('running_var'):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen, dtype=torch.float64))
            elif name.endswith('num_batches_tracked'):
                b.fill_(1234)


def splitmix_uniform(seed, n):
    """n uniforms in [0, 1) from SplitMix64 at counters seed + 1 .. seed + n: the same numbers as
    tests/test_affnet.cpp computes, so full-size weights need not be stored."""
    import numpy as np
    x = (np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) + np.uint64(seed)
    z = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 2 ** 53)


def formula_value(name, shape, u):
    """Tensor `name` from uniforms u: the rule tests/test_affnet.cpp repeats."""
    s = 3 ** 0.5 * (2 * u - 1)  # unit variance
    numel = int(u.size)
    if name.endswith(('.b1', '.b2')):
        return 0.1 * s
    if name.endswith(('.w1', '.w2')):
        return s / shape[-1] ** 0.5
    if name.endswith('num_batches_tracked'):
        return u * 0 + 1234
    if name.endswith('running_mean'):
        return 0.1 * s
    if name.endswith('running_var'):
        return 0.5 + u
    if len(shape) >= 2:
        return s / (numel // shape[0]) ** 0.5
    if name.endswith('.weight'):
        return 1 + 0.2 * s
    return 0.1 * s


def formula_weights(model):
    """Every state-dict tensor k (in order) from splitmix_uniform(1000003 * (k + 1), numel)."""
    with torch.no_grad():
        for k, (name, t) in enumerate(model.state_dict().items()):
            u = splitmix_uniform(1000003 * (k + 1), t.numel())
            v = torch.from_numpy(formula_value(name, list(t.shape), u)).reshape(t.shape)
            t.copy_(v.to(t.dtype))


def state_dict_file(model):
    out = {}
    for k, v in model.state_dict().items():
        out[k] = v.contiguous() if not v.is_floating_point() else v.float().contiguous()
    return out


def nchw_f32(t):
    return t.detach().float().contiguous()


class float64_filter:
    """AFNO2D_channelfirst.forward casts its input to float32 (x.float(), for mixed precision); in this
    float64 run that would mix dtypes in its einsums. While the model runs, .float() leaves float64
    tensors as they are, so the whole network is float64."""
    def __enter__(self):
        self.original = torch.Tensor.float
        original = self.original
        torch.Tensor.float = lambda t, *a, **k: t if t.dtype == torch.float64 else original(t, *a, **k)

    def __exit__(self, *exc):
        torch.Tensor.float = self.original


def forward(model, x, taps):
    outputs = {}
    hooks = [getattr(model, name).register_forward_hook(
        lambda m, i, o, name=name: outputs.__setitem__(name, o.detach().to(torch.float32).contiguous()))
        for name in taps]
    with torch.no_grad(), float64_filter():
        logits = model(x)
    for h in hooks:
        h.remove()
    return logits, outputs


def write_io(folder, x, logits, outputs, config=None, model_txt=None, name='io.safetensors'):
    os.makedirs(folder, exist_ok=True)
    io = {'input': x.to(torch.float32).contiguous(), 'logits': logits.to(torch.float32).contiguous()}
    io.update(outputs)
    save_file(io, os.path.join(folder, name))
    if config is not None:
        with open(os.path.join(folder, 'config.json'), 'w') as f:
            json.dump(config, f, indent=1)
    if model_txt is not None:
        with open(os.path.join(folder, 'model.txt'), 'w') as f:
            f.write(model_txt + '\n')
    print(f'{folder}: input {list(x.shape)}, |logits| max {logits.abs().max().item():.3f}')


def new_model(AffNet, opts, gen):
    model = AffNet(opts).to(torch.float64).eval()
    randomise(model, gen)
    return model


def save_weights(model, folder):
    os.makedirs(folder, exist_ok=True)
    save_file(state_dict_file(model), os.path.join(folder, 'weights.safetensors'))


TAPS = ['layer_2', 'layer_3', 'layer_4', 'layer_5', 'conv_1x1_exp']  # the earlier ones are large and checked through these


def import_affnet(authors):
    """As the authors' scripts import it (the package and its registries, every model file); if some
    unrelated file of the package does not import here, the classification model alone, with the
    package's __init__ files that only fill registries replaced by empty packages."""
    try:
        return importlib.import_module('affnet.models.classification.affnet')
    except Exception as e:  # noqa: BLE001 - report, then the narrower route
        import traceback
        traceback.print_exc()
        print(f'importing the whole package failed ({e!r}); importing the classification model alone')
    for name in [n for n in sys.modules if n == 'affnet' or n.startswith('affnet.')]:
        del sys.modules[name]
    root = os.path.join(authors, 'affnet')

    def empty_package(name, folder):
        m = types.ModuleType(name)
        m.__path__ = [folder]
        m.__package__ = name
        sys.modules[name] = m
        return m

    pkg = empty_package('affnet', root)
    models = empty_package('affnet.models', os.path.join(root, 'models'))
    models.register_tasks = lambda name: (lambda cls: cls)
    models.register_task_arguments = lambda name: (lambda fn: fn)
    cls = empty_package('affnet.models.classification', os.path.join(root, 'models', 'classification'))
    cls.register_cls_models = lambda name: (lambda c: c)
    pkg.parameter_list = importlib.import_module('affnet.misc.common').parameter_list
    return importlib.import_module('affnet.models.classification.affnet')


def main():
    out, authors = sys.argv[1], os.path.abspath(sys.argv[2])
    sys.path.insert(0, authors)
    install_stubs()
    mod = import_affnet(authors)
    AffNet = mod.AffNet
    gen = torch.Generator().manual_seed(20231)

    # Parameter counts and keys of the authors' three models.
    counts = {}
    for mode, ours in [('xx_small', 'affnet_et'), ('x_small', 'affnet_t'), ('small', 'affnet')]:
        m = AffNet(make_opts(mode, 1000, 'layer_norm_2d'))
        counts[ours] = {'mode': mode, 'params': sum(p.numel() for p in m.parameters()),
                        'keys': [[k, list(v.shape)] for k, v in m.state_dict().items()]}
        print(f'{ours} ({mode}): {counts[ours]["params"]} parameters, {len(counts[ours]["keys"])} state-dict keys')
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, 'counts.json'), 'w') as f:
        json.dump(counts, f)

    # The reduced model: the authors' class with the TINY table.
    original = mod.get_configuration
    mod.get_configuration = lambda opts: TINY
    try:
        for attn_norm, tag, shapes in [('layer_norm_2d', 'tiny', [(2, 3, 64, 64), (2, 3, 64, 96)]),
                                       ('batch_norm', 'tiny_bn', [(2, 3, 64, 64)])]:
            model = new_model(AffNet, make_opts('xx_small', 10, attn_norm), gen)
            folder = os.path.join(out, tag)
            save_weights(model, folder)
            for k, shape in enumerate(shapes):
                x = torch.rand(shape, generator=gen, dtype=torch.float64)  # cvnets' inputs: [0, 1]
                logits, outputs = forward(model, x, TAPS if k == 0 else [])
                write_io(folder, x, logits, outputs, config=tiny_json(attn_norm),
                         name='io.safetensors' if k == 0 else f'io_{shape[2]}x{shape[3]}.safetensors')
            print(f'{tag}: {sum(p.numel() for p in model.parameters())} parameters')
    finally:
        mod.get_configuration = original

    # Full size with formula weights and inputs (reproduced by tests/test_affnet.cpp): the logits
    # only, batch 1, at 224x224 and 192x256.
    full_logits = {}
    for mode, ours in [('xx_small', 'affnet_et'), ('x_small', 'affnet_t'), ('small', 'affnet')]:
        model = AffNet(make_opts(mode, 1000, 'layer_norm_2d')).to(torch.float64).eval()
        formula_weights(model)
        for h, w in [(224, 224), (192, 256)]:
            x = torch.from_numpy(splitmix_uniform(777, 3 * h * w)).reshape(1, 3, h, w)
            logits, _ = forward(model, x, [])
            full_logits[f'{ours}.{h}x{w}'] = logits.to(torch.float32).contiguous()
            print(f'{ours} {h}x{w} (formula weights): |logits| max {logits.abs().max().item():.3f}')
    save_file(full_logits, os.path.join(out, 'full_logits.safetensors'))

    # Full size, 1000 classes, at 224x224 and 192x256, weights saved (only with --full-dirs).
    if '--full-dirs' not in sys.argv[3:]:
        return
    for mode, ours in [('xx_small', 'affnet_et'), ('x_small', 'affnet_t'), ('small', 'affnet')]:
        model = new_model(AffNet, make_opts(mode, 1000, 'layer_norm_2d'), gen)
        for h, w in [(224, 224), (192, 256)]:
            folder = os.path.join(out, 'full', f'{ours}_{h}x{w}')
            save_weights(model, folder)
            x = torch.rand((2, 3, h, w), generator=gen, dtype=torch.float64)
            logits, _ = forward(model, x, [])
            write_io(folder, x, logits, {}, model_txt=ours)


if __name__ == '__main__':
    main()
