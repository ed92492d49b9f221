"""The cuda target: artifacts build here with nvcc and no GPU; they run only where one is.

Building needs nvcc (CUDA toolkit); running needs an NVIDIA GPU (marked `gpu`).
"""

from __future__ import annotations

import shutil

import pytest

import compiler
import runtime
from compiler.errors import EtchError
from tests.backends import tvm_cases
from tests.golden import assert_close, run_ort

pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None,
                                reason="building cuda artifacts needs nvcc (CUDA toolkit)")


def _has_gpu() -> bool:
    import tvm

    return bool(tvm.cuda(0).exist)


@pytest.fixture(scope="module", params=["linear", "conv", "pool_norm"])
def built(request):
    model, inputs = tvm_cases.FAMILIES[request.param]()
    return compiler.compile(model, target="cuda"), model, inputs


def test_cuda_artifact_builds(built, tmp_path) -> None:
    art, _, _ = built
    m = art.manifest
    assert (m["runtime"], m["device"], m["library"]) == ("tvm", "cuda", "model.so")
    assert m["tvm_target"]["kind"] == "cuda" and m["tvm_target"]["arch"].startswith("sm_")
    assert "unscheduled" not in m["schedules"]
    assert (art.save(tmp_path / "art") / "model.so").stat().st_size > 0


@pytest.mark.skipif(_has_gpu(), reason="this machine has a CUDA device")
def test_no_gpu_is_a_clear_error(built, tmp_path) -> None:
    art, _, inputs = built
    with pytest.raises(EtchError, match="no CUDA device"):
        runtime.load(art.save(tmp_path / "art")).run(inputs)


@pytest.mark.gpu
@pytest.mark.skipif(not _has_gpu(), reason="needs an NVIDIA GPU")
def test_cuda_matches_ort(built) -> None:
    art, model, inputs = built
    assert_close(art.run(inputs), run_ort(model, inputs), rtol=1e-3, atol=1e-4)


def test_cuda_target_states_its_shared_memory(caplog) -> None:
    """dlight's GEMV rule sizes tiles by the target's shared memory and logs a warning per
    kernel when the target does not state it (14 lines for EfficientNet-B0)."""
    model, _ = tvm_cases.FAMILIES["linear"]()
    with caplog.at_level("WARNING"):
        art = compiler.compile(model, target="cuda", mcpu="sm_90")
    assert art.manifest["tvm_target"]["max_shared_memory_per_block"] == 48 * 1024
    assert not [r for r in caplog.records if "max_shared_memory" in r.getMessage()]
