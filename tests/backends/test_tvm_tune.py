"""`--tune N`: MetaSchedule where this TVM build can run it, a clear error where it cannot."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import compiler
from backends.tvm import tune
from compiler.errors import EtchError
from models import zoo
from tests.backends import tvm_cases
from tests.golden import assert_close, run_ort


def _tuner_or_skip() -> None:
    try:
        tune.check_tuner()
    except EtchError as e:
        pytest.skip(str(e))


def test_tune_is_refused_clearly_or_works(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("ETCH_CACHE", str(tmp_path))
    model, _ = tvm_cases.gelu()
    try:
        tune.check_tuner()
    except EtchError:
        with pytest.raises(EtchError, match="--tune"):
            compiler.compile(model, target="cpu", tune=2)
        return
    assert "tuning/key.txt" in compiler.compile(model, target="cpu", tune=2).manifest["files"]


@pytest.mark.slow
def test_tuned_database_is_cached_and_reused(monkeypatch, tmp_path) -> None:
    _tuner_or_skip()
    monkeypatch.setenv("ETCH_CACHE", str(tmp_path))
    path = zoo.model_path("digits_mlp")
    model = onnx.load(str(path))
    inputs = {"input": np.random.default_rng(0).random((1, 64), dtype=np.float32)}
    art = compiler.compile(path, target="cpu", tune=4)
    assert_close(art.run(inputs), run_ort(model, inputs), rtol=1e-3, atol=1e-4)
    files = art.manifest["files"]
    assert {"tuning/database_workload.json", "tuning/database_tuning_record.json",
            "tuning/key.txt"} <= set(files)
    first = art.manifest["tuning"]
    assert not first["reused"] and first["tuned_kernels"] >= 1
    assert art.manifest["schedules"].get("MetaSchedule", 0) == first["tuned_kernels"]

    def no_search(*args: object) -> None:
        raise AssertionError("the cached database should have been reused")

    monkeypatch.setattr(tune, "_search", no_search)
    again = compiler.compile(path, target="cpu", tune=4)
    assert again.manifest["tuning"]["reused"]
    assert again.manifest["tuning"]["key"] == first["key"]
    assert again.manifest["schedules"] == art.manifest["schedules"]
    assert_close(again.run(inputs), run_ort(model, inputs), rtol=1e-3, atol=1e-4)
