"""metaformer.train: the CLI's train subcommand in-process, its options as keywords."""

import os

import pytest

from conftest import SKIP_REASON, REPO

np = pytest.importorskip("numpy")
metaformer = pytest.importorskip("metaformer", reason=SKIP_REASON)

CONFIG = os.path.join(REPO, "configs", "fmnist_convformer.json")
FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def test_a_tiny_run_returns_its_metrics(tmp_path):
    data = "fashion-mnist" if os.path.isdir(FASHION_MNIST) else "long-range"
    metrics = metaformer.train(config=CONFIG, data=data, epochs=1, subset=64, eval_subset=64, batch=32,
                               out=tmp_path / "run", threads=1, workers=1, seed=3, no_progress=True, lr=3e-3)
    assert isinstance(metrics, list) and len(metrics) == 1
    assert metrics[0]["epoch"] == 1
    assert os.path.exists(tmp_path / "run" / "model.safetensors")
    # The trained weights load back for inference.
    model = metaformer.create_model(config=CONFIG, weights=tmp_path / "run" / "model.safetensors", threads=1)
    assert model.num_classes == 10


def test_unknown_keywords_are_a_type_error_naming_them():
    with pytest.raises(TypeError, match="epoch, learning_rate"):
        metaformer.train(config=CONFIG, learning_rate=1.0, epoch=3)
    with pytest.raises(TypeError, match="no_progress is a flag"):
        metaformer.train(config=CONFIG, no_progress="yes")


def test_bad_values_are_value_errors_and_engine_refusals_metaformer_errors(tmp_path):
    with pytest.raises(ValueError, match="epochs"):
        metaformer.train(config=CONFIG, data="fashion-mnist", epochs=0, out=tmp_path / "a")
    with pytest.raises(ValueError, match="threads must be 1..1024"):
        metaformer.train(config=CONFIG, data="fashion-mnist", threads=0, out=tmp_path / "a")
    with pytest.raises(TypeError, match="needs out="):
        metaformer.train(config=CONFIG, data="fashion-mnist")
    with pytest.raises(metaformer.Error, match="give --data"):
        metaformer.train(config=CONFIG, out=tmp_path / "b")
