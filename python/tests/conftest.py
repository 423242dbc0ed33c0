"""Shared fixtures of the Python module's tests: where the repository's test data and the built
CLI are, and a reader for the golden models' safetensors files."""

import json
import os
import shutil
import struct
import subprocess

import pytest

# As scripts/test.sh does for ctest: libgomp's threads wait passively, so that the engine in this
# process and the CLI runs it starts do not spin against each other on a busy machine. Read when
# the engine's OpenMP runtime starts, so set before any test module imports metaformer.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    import numpy
except ImportError:  # the test modules skip, each with the reason
    numpy = None

# Each test module imports the package through this, so that a build without the module skips with
# a reason instead of failing to collect.
SKIP_REASON = ("the metaformer module is not importable: build it (CMake option METAFORMER_PYTHON, needs "
               "pybind11-dev and python3-dev) and put build/python on PYTHONPATH")

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DATA = os.path.join(REPO, "tests", "data")


def golden_dir(family):
    return os.path.join(DATA, "golden", family)


def read_safetensors(path):
    """{name: float32 numpy array} of a safetensors file's F32 tensors (enough for the tests)."""
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
        body = f.read()
    out = {}
    for name, entry in header.items():
        if name == "__metadata__" or entry["dtype"] != "F32":
            continue
        begin, end = entry["data_offsets"]
        out[name] = numpy.frombuffer(body[begin:end], dtype="<f4").reshape(entry["shape"]).copy()
    return out


@pytest.fixture(scope="session")
def cli():
    """The built `metaformer` binary: $METAFORMER_CLI (set by ctest), else build/metaformer, else PATH."""
    for candidate in (os.environ.get("METAFORMER_CLI"), os.path.join(REPO, "build", "metaformer"),
                      shutil.which("metaformer")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.skip("the metaformer CLI binary was not found (set METAFORMER_CLI)")


def run_cli(cli_path, *args):
    r = subprocess.run([cli_path, *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="session")
def golden_poolformer():
    import metaformer

    d = golden_dir("poolformer")
    model = metaformer.create_model(config=os.path.join(d, "config.json"),
                                    weights=os.path.join(d, "weights.safetensors"), threads=2)
    return model, read_safetensors(os.path.join(d, "io.safetensors"))


def rel_error(a, b):
    a = numpy.asarray(a, dtype=numpy.float64)
    b = numpy.asarray(b, dtype=numpy.float64)
    return float(numpy.sqrt(((a - b) ** 2).sum() / (b ** 2).sum()))


