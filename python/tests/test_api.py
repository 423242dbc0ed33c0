"""The package's timm-style surface: list_models, info, pretrained_cfg."""

import os

import pytest

from conftest import SKIP_REASON, golden_dir

metaformer = pytest.importorskip("metaformer", reason=SKIP_REASON)


def test_list_models_with_wildcards():
    everything = metaformer.list_models()
    assert everything == sorted(everything) and "caformer_s18" in everything and "poolformer_s12" in everything
    caformers = metaformer.list_models("caformer*")
    assert caformers and all(n.startswith("caformer") for n in caformers) and "caformer_s18" in caformers
    assert metaformer.list_models(pattern="caformer_s1?") == ["caformer_s18"]
    assert metaformer.list_models(["caformer_s18", "poolformer_s12"]) == ["caformer_s18", "poolformer_s12"]
    assert "caformer_s18" not in metaformer.list_models("caformer*", exclude_filters="*_s18")
    assert metaformer.list_models("no_such_*") == []
    with pytest.raises(TypeError):
        metaformer.list_models(3)


def test_info_and_pretrained_cfg_as_timm_names_them():
    model = metaformer.create_model("poolformer_s12.sail_in1k", threads=1)
    info = model.info()
    assert info["name"] == "poolformer_s12.sail_in1k"
    assert info["architecture"] == "poolformer_s12" and info["tag"] == "sail_in1k"
    assert info["parameters"] == 11915176  # timm's count
    assert info["input_size"] == (3, 224, 224) and info["num_classes"] == 1000
    assert info["mean"] == (0.485, 0.456, 0.406) and info["std"] == (0.229, 0.224, 0.225)
    assert info["crop_pct"] == 0.9 and info["interpolation"] == "bicubic" and info["crop_mode"] == "center"
    assert info["backend"] == "cpu" and info["dtype"] == "float32" and info["threads"] == 1
    assert info["weights"] is None and info["pretrained"] is False and info["fixed_input_size"] is False
    cfg = model.pretrained_cfg
    assert cfg is not model.pretrained_cfg  # a fresh dict: changing it changes nothing
    assert model.default_cfg == cfg
    assert cfg["input_size"] == (3, 224, 224) and cfg["num_classes"] == 1000 and cfg["crop_pct"] == 0.9
    assert metaformer.resolve_data_config(model)["input_size"] == (3, 224, 224)
    assert model.num_classes == 1000 and model.in_chans == 3
    assert "poolformer_s12" in repr(model)


def test_num_classes_and_dtype_options():
    model = metaformer.create_model("poolformer_s12", num_classes=7, dtype="bfloat16", threads=1)
    assert model.num_classes == 7 and model.info()["dtype"] == "bfloat16"
    assert model.pretrained_cfg["num_classes"] == 7


def test_a_json_path_as_the_name_is_a_description():
    path = os.path.join(golden_dir("poolformer"), "config.json")
    model = metaformer.create_model(path, threads=1)
    assert model.name == "golden_poolformer" and model.num_classes == 10
