"""metaformer.compare: the CLI's compare subcommand in-process, its options as keywords."""

import os

import pytest

from conftest import SKIP_REASON, REPO

metaformer = pytest.importorskip("metaformer", reason=SKIP_REASON)

BASE = os.path.join(REPO, "configs", "compare_long_range.json")
TINY = dict(base=BASE, data="long-range", epochs=1, batch=16, subset=64, eval_subset=32, seeds=1, threads=1,
            workers=0, latency_runs=1, throughput_runs=1, no_progress=True)


def test_a_tiny_comparison_returns_its_results(tmp_path):
    results = metaformer.compare(mixers=["identity", "pooling"], out=tmp_path / "cmp", **TINY)
    assert [m["mixer"] for m in results["mixers"]] == ["identity", "pooling"]
    for m in results["mixers"]:
        assert 0 <= m["top1_mean"] <= 100
        assert m["params"] > 0
    assert len(results["runs"]) == 2
    assert results["budget"]["seeds"] == 1
    assert os.path.exists(tmp_path / "cmp" / "report.md")
    # The same call again reuses the finished runs and gives the same numbers.
    again = metaformer.compare(mixers="identity,pooling", out=tmp_path / "cmp", **TINY)
    assert [m["top1"] for m in again["mixers"]] == [m["top1"] for m in results["mixers"]]


def test_bad_calls_are_clear_errors(tmp_path):
    with pytest.raises(TypeError, match="mixer"):
        metaformer.compare(mixer="pooling", out=tmp_path / "a", **TINY)
    with pytest.raises(TypeError, match="needs out="):
        metaformer.compare(mixers="pooling", **TINY)
    with pytest.raises(metaformer.Error, match="poolng"):
        metaformer.compare(mixers="pooling,poolng", out=tmp_path / "b", **TINY)
    assert not os.path.exists(tmp_path / "b")
