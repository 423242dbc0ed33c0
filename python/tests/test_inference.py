"""Running a model from Python: the golden logits, the same logits as the CLI, the same logits from
every kind of input (numpy, buffer protocol, DLPack), and a clear exception for each bad input."""

import os

import pytest

from conftest import SKIP_REASON, golden_dir, read_safetensors, rel_error, run_cli

np = pytest.importorskip("numpy")
metaformer = pytest.importorskip("metaformer", reason=SKIP_REASON)


def test_golden_logits_match_timm(golden_poolformer):
    model, io = golden_poolformer
    logits = model(io["input"])
    assert logits.dtype == np.float32 and logits.shape == io["logits"].shape
    assert rel_error(logits, io["logits"]) <= 2e-5  # the golden tolerance of tests/test_golden.cpp


def test_logits_equal_the_cli_run_bit_for_bit(golden_poolformer, cli, tmp_path):
    model, io = golden_poolformer
    d = golden_dir("poolformer")
    np.save(tmp_path / "x.npy", io["input"])
    run_cli(cli, "run", "--config", os.path.join(d, "config.json"), "--weights", os.path.join(d, "weights.safetensors"),
            "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy"), "--threads", "2")
    np.testing.assert_array_equal(model(io["input"]), np.load(tmp_path / "y.npy"))


class DlpackOnly:
    """An object that offers its data only through DLPack, as a torch CPU tensor does."""

    def __init__(self, array):
        self.array = array

    def __dlpack__(self, stream=None):
        return self.array.__dlpack__()

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()


def test_numpy_buffer_protocol_and_dlpack_give_the_same_logits(golden_poolformer):
    model, io = golden_poolformer
    x = io["input"]
    expected = model(x)
    np.testing.assert_array_equal(model(memoryview(x)), expected)
    np.testing.assert_array_equal(model(DlpackOnly(x)), expected)
    # Bytes in a plain buffer, shaped without numpy.
    raw = memoryview(bytearray(x.tobytes())).cast("B").cast("f", list(x.shape))
    np.testing.assert_array_equal(model(raw), expected)
    # A read-only array is read in place too; the input is never modified.
    frozen = x.copy()
    frozen.setflags(write=False)
    np.testing.assert_array_equal(model(frozen), expected)
    np.testing.assert_array_equal(frozen, x)
    # One image (C, H, W) is a batch of one.
    np.testing.assert_array_equal(model(x[1]), expected[1:2])
    np.testing.assert_array_equal(model(DlpackOnly(x[1])), expected[1:2])


def test_wrong_dtype_is_a_type_error(golden_poolformer):
    model, io = golden_poolformer
    with pytest.raises(TypeError, match=r"float32; got float64 .*astype\(numpy.float32\)"):
        model(io["input"].astype(np.float64))
    with pytest.raises(TypeError, match="float32; got int32"):
        model(DlpackOnly(io["input"].astype(np.int32)))
    with pytest.raises(TypeError, match="float32; got big-endian float32"):
        model(io["input"].astype(">f4"))
    with pytest.raises(TypeError, match="numpy array, or an object with the buffer protocol or __dlpack__"):
        model(io["input"].tolist())


def test_non_contiguous_input_is_a_value_error_saying_what_to_do(golden_poolformer):
    model, io = golden_poolformer
    strided = io["input"][:, :, ::2, :]
    with pytest.raises(ValueError, match=r"not C-contiguous.*numpy.ascontiguousarray"):
        model(strided)
    with pytest.raises(ValueError, match=r"not C-contiguous.*x.contiguous\(\)"):
        model(DlpackOnly(strided))
    channels_last = np.ascontiguousarray(io["input"].transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    with pytest.raises(ValueError, match="not C-contiguous"):
        model(channels_last)
    # What the message says to do works.
    np.testing.assert_array_equal(model(np.ascontiguousarray(channels_last)), model(io["input"]))


def test_wrong_rank_channels_and_size_are_value_errors(golden_poolformer):
    model, io = golden_poolformer
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) or one image \(C, H, W\); got shape \(3, 61\)"):
        model(np.zeros((3, 61), np.float32))
    with pytest.raises(ValueError, match=r"takes 3 input channel\(s\); got shape \(2, 4, 61, 47\)"):
        model(np.zeros((2, 4, 61, 47), np.float32))
    with pytest.raises(ValueError, match="empty batch"):
        model(np.zeros((0, 3, 61, 47), np.float32))
    with pytest.raises(ValueError, match="smaller than the stem"):
        model(np.zeros((1, 3, 1, 1), np.float32))
    # A model whose token-mixing weights fix the input size says so.
    d = golden_dir("mixer")
    mixer = metaformer.create_model(config=os.path.join(d, "config.json"),
                                    weights=os.path.join(d, "weights.safetensors"), threads=1)
    x = read_safetensors(os.path.join(d, "io.safetensors"))["input"]
    assert mixer.info()["fixed_input_size"]
    assert rel_error(mixer(x), read_safetensors(os.path.join(d, "io.safetensors"))["logits"]) <= 2e-5
    with pytest.raises(ValueError, match=r"runs only at 40x40"):
        mixer(np.zeros((1, 3, 48, 48), np.float32))


@pytest.mark.parametrize("threads", [0, -1, 1025, 10**9])
def test_a_wrong_thread_count_is_a_value_error(threads):
    with pytest.raises(ValueError, match=r"threads must be 1..1024"):
        metaformer.create_model("poolformer_s12", threads=threads)


def test_bad_arguments_are_value_or_type_errors():
    with pytest.raises(TypeError, match="threads must be an int"):
        metaformer.create_model("poolformer_s12", threads="2")
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        metaformer.create_model("poolformer_s12", backend="tpu")
    with pytest.raises(ValueError, match="unknown dtype 'float16'"):
        metaformer.create_model("poolformer_s12", dtype="float16")
    with pytest.raises(ValueError, match="num_classes must be"):
        metaformer.create_model("poolformer_s12", num_classes=0)
    with pytest.raises(ValueError, match="not both"):
        metaformer.create_model("poolformer_s12", config="x.json")
    with pytest.raises(ValueError, match="give a model"):
        metaformer.create_model()


def test_engine_errors_are_metaformer_error_with_the_engine_message(tmp_path):
    assert issubclass(metaformer.Error, RuntimeError)
    with pytest.raises(metaformer.Error, match="unknown model 'resnet50'"):
        metaformer.create_model("resnet50")
    missing = str(tmp_path / "nope.safetensors")
    with pytest.raises(metaformer.Error, match="cannot open") as e:
        metaformer.create_model("poolformer_s12", weights=missing)
    assert "\n" not in str(e.value)


def test_pretrained_offline_without_a_cache_is_a_metaformer_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(metaformer.Error, match="poolformer_s12"):
        metaformer.create_model("poolformer_s12", pretrained=True)
    with pytest.raises(ValueError, match="not both"):
        metaformer.create_model("poolformer_s12", pretrained=True, weights="w.safetensors")


def test_threads_may_share_a_model(golden_poolformer):
    # Runs release the GIL and take turns on the engine: concurrent calls give the serial results.
    from concurrent.futures import ThreadPoolExecutor

    model, io = golden_poolformer
    expected = model(io["input"])
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: model(io["input"]), range(8)))
    for r in results:
        np.testing.assert_array_equal(r, expected)


def test_a_torch_cpu_tensor_goes_through_dlpack(golden_poolformer):
    torch = pytest.importorskip("torch")
    model, io = golden_poolformer
    np.testing.assert_array_equal(model(torch.from_numpy(io["input"])), model(io["input"]))
    with pytest.raises(TypeError, match="float32; got float64"):
        model(torch.from_numpy(io["input"]).double())
