"""`etch bench cuda`'s two steps: building cases where nvcc is (here), and running them where
a GPU is (on a machine without one each row says why, and the table still prints)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import compiler
import runtime
from benchmarks import bench_cuda
from compiler.errors import EtchError
from tests.backends import tvm_cases


def test_unknown_case_is_an_error() -> None:
    with pytest.raises(EtchError, match="unknown cuda case"):
        bench_cuda.cases(["resnet_block", "bogus"])


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="building cuda needs nvcc")
def test_build_then_run(tmp_path) -> None:
    names = ["resnet_block", "tiny_decoder.w2.lut"]
    plan = bench_cuda.build(tmp_path, "sm_90", names)
    assert [c["case"] for c in plan["cases"]] == names
    assert json.loads((tmp_path / "plan.json").read_text()) == plan
    assert [c["expected"] for c in plan["cases"]] == ["ort", "ref"]
    result = bench_cuda.run_cases(tmp_path, seconds=0.01)
    import tvm

    for row in result["rows"]:
        if tvm.cuda(0).exist:  # float layers round differently on the GPU: close, not exact
            assert row["close"], row
        else:
            assert "no CUDA device" in row["error"]
    text = bench_cuda.table(result)
    assert all(n in text for n in names)


def test_kernel_seconds_on_cpu() -> None:
    """The kernels alone, timed by TVM; the next run is unaffected."""
    model, inputs = tvm_cases.FAMILIES["conv"]()
    art = compiler.compile(model, target="cpu")
    before = art.run(inputs)
    times = runtime.load(art.path).kernel_seconds(inputs, number=3, repeat=4)
    assert len(times) == 4 and all(t > 0 for t in times)
    after = art.run(inputs)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_a_skipped_run_writes_no_result(tmp_path, monkeypatch, capsys) -> None:
    """Without nvcc or a GPU `etch bench cuda` says why and leaves results/ as it was."""
    from benchmarks import run as bench_run

    monkeypatch.setattr(bench_cuda, "_missing", lambda: "no CUDA device here")
    assert bench_run.main(["cuda", "--out-dir", str(tmp_path)]) == 0
    assert "cuda: skipped: no CUDA device here" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())


def test_running_cases_that_were_never_built_is_an_error(tmp_path) -> None:
    from benchmarks import run as bench_run

    with pytest.raises(EtchError, match="no plan.json"):
        bench_run.main(["cuda", "--cuda-from", str(tmp_path)])
