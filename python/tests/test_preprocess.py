"""The preprocessing transform and classify: the engine's own code, so the results equal
`metaformer classify`'s."""

import os
import re

import pytest

from conftest import SKIP_REASON, DATA, golden_dir, run_cli

np = pytest.importorskip("numpy")
metaformer = pytest.importorskip("metaformer", reason=SKIP_REASON)

PHOTO = os.path.join(DATA, "image", "photo.png")


@pytest.fixture(scope="module")
def caformer():
    d = golden_dir("caformer")
    return metaformer.create_model(config=os.path.join(d, "config.json"),
                                   weights=os.path.join(d, "weights.safetensors"), threads=2)


def write_ppm(path, pixels):
    """Binary PPM (which the engine's decoder reads) of uint8 pixels (H, W, 3)."""
    h, w, _ = pixels.shape
    with open(path, "wb") as f:
        f.write(b"P6\n%d %d\n255\n" % (w, h) + pixels.tobytes())


def test_transform_of_a_path_and_of_its_pixels_agree(caformer, tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    write_ppm(tmp_path / "img.ppm", pixels)
    batch = caformer.transform(str(tmp_path / "img.ppm"))
    assert batch.shape == (1, 3, 224, 224) and batch.dtype == np.float32
    np.testing.assert_array_equal(caformer.transform(pixels), batch)
    np.testing.assert_array_equal(metaformer.create_transform(caformer)(tmp_path / "img.ppm"), batch)
    # Grey pixels are RGB with three equal channels, as PIL's convert("RGB").
    grey = pixels[:, :, 0]
    np.testing.assert_array_equal(caformer.transform(grey), caformer.transform(np.repeat(grey[:, :, None], 3, 2)))


def test_transform_refuses_what_is_not_an_image(caformer, tmp_path):
    with pytest.raises(TypeError, match="uint8"):
        caformer.transform(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        caformer.transform(np.zeros((8, 8, 5), np.uint8))
    with pytest.raises(TypeError, match="a path, a PIL image or a numpy uint8 array"):
        caformer.transform(42)
    with pytest.raises(metaformer.Error, match="missing.png"):
        caformer.transform(str(tmp_path / "missing.png"))


def test_pil_images_are_taken_too(caformer):
    Image = pytest.importorskip("PIL.Image")
    with Image.open(PHOTO) as img:  # PNG: lossless, so PIL's pixels are the engine's
        np.testing.assert_array_equal(caformer.transform(img), caformer.transform(PHOTO))


def test_transform_then_model_equals_the_cli_bit_for_bit(caformer, cli, tmp_path):
    d = golden_dir("caformer")
    batch = caformer.transform(PHOTO)
    np.save(tmp_path / "x.npy", batch)
    run_cli(cli, "run", "--config", os.path.join(d, "config.json"), "--weights", os.path.join(d, "weights.safetensors"),
            "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy"), "--threads", "2")
    np.testing.assert_array_equal(caformer(batch), np.load(tmp_path / "y.npy"))


def cli_top(cli_path, *args):
    """[(label, percent text)] from `metaformer classify`'s output."""
    out = run_cli(cli_path, "classify", *args)
    return [(m.group(2), m.group(1)) for m in re.finditer(r"^\s+\d+\.\s+([\d.]+)%\s+(.*) \(\d+\)$", out, re.M)]


def test_classify_equals_the_cli(caformer, cli):
    d = golden_dir("caformer")
    expected = cli_top(cli, "--config", os.path.join(d, "config.json"), "--weights",
                       os.path.join(d, "weights.safetensors"), "--threads", "2", "--top", "5", PHOTO)
    got = [(label, f"{100 * p:.2f}") for label, p in caformer.classify(PHOTO, topk=5)]
    assert len(expected) == 5 and got == expected


def test_classify_names_imagenet_classes(cli):
    # The golden description with 1000 classes and the seeded random weights both sides use.
    config = os.path.join(golden_dir("caformer"), "config.json")
    model = metaformer.create_model(config=config, num_classes=1000, threads=2)
    expected = cli_top(cli, "--config", config, "--num-classes", "1000", "--threads", "2", "--top", "3", PHOTO)
    top = model.classify(PHOTO, topk=3)
    assert [(label, f"{100 * p:.2f}") for label, p in top] == expected
    assert all(not label.startswith("class ") for label, _ in top)
    with pytest.raises(ValueError, match="topk"):
        model.classify(PHOTO, topk=0)
