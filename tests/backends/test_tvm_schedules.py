"""CPU schedules: every zoo-style kernel gets a rule, and the hot loops are vector code.

Reads the generated assembly, as DESIGN.md asks: the dense and conv kernels must use packed
FMAs on full-width registers and keep their accumulator tile off the heap (no
TVMBackendAllocWorkspace in a kernel that needs no padded copy).
"""

from __future__ import annotations

import re

import pytest
import tvm

from backends.tvm import builder, lower, schedules
from backends.tvm import target as targets
from compiler import onnx_import, pipeline
from compiler.options import CompileOptions
from tests.backends import tvm_cases


def aligned_convs() -> tvm_cases.Case:
    """Convs whose output rows are a multiple of the vector width (no padded copy needed)."""
    m = tvm_cases.ModelBuilder("aligned")
    x = m.input("x", m.rng.standard_normal((1, 8, 8, 16)).astype("float32"))
    m.op("Conv", [x, m.weight("w0", 16, 8, 1, 1)], "pointwise")
    m.op("Conv", [x, m.weight("w1", 16, 8, 1, 3)], "row", pads=[0, 0, 0, 0])
    return m.build()


def _assembly(family: str) -> tuple[dict[str, str], dict[str, int], tuple[str, ...]]:
    """(kernel name -> its assembly, rule counts, CPU features) for an op-family model."""
    model, _ = aligned_convs() if family == "aligned" else tvm_cases.FAMILIES[family]()
    opts = CompileOptions(target="cpu")
    graph, _ = pipeline.run(onnx_import.import_model(model), opts)
    target_json, info = targets.cpu_target(opts)
    target = tvm.target.Target(target_json)
    mod = schedules.apply_rules(lower.to_irmodule(graph, pack=True, lanes=info.lanes), target)
    ex = tvm.compile(mod, target=target, relax_pipeline=builder.vm_passes())
    source = ex.mod.imports[0].inspect_source("asm")
    parts = re.split(r"\n(?=[A-Za-z_]\w*:\n)", source)
    kernels = {p.split(":", 1)[0]: p for p in parts if p.split(":", 1)[0].endswith("_compute_")}
    return kernels, schedules.rule_names(mod), info.features


@pytest.fixture(scope="module")
def linear_asm():
    return _assembly("linear")


@pytest.fixture(scope="module")
def conv_asm():
    return _assembly("conv")


@pytest.fixture(scope="module")
def aligned_asm():
    return _assembly("aligned")


def _vector_register(features: tuple[str, ...]) -> str:
    return "zmm" if "avx512f" in features else "ymm" if "avx2" in features else "xmm"


def test_every_kernel_has_a_rule(linear_asm, conv_asm) -> None:
    for _, rules, _ in (linear_asm, conv_asm):
        assert "unscheduled" not in rules and "Fallback" not in rules, rules


def test_dense_kernels_are_vector_fma_without_heap(linear_asm) -> None:
    kernels, _, features = linear_asm
    if "fma" not in features:
        pytest.skip("this CPU has no FMA")
    reg = _vector_register(features)
    dense = {k: v for k, v in kernels.items() if k.startswith("dense_")}
    assert dense
    for name, asm in dense.items():
        assert re.search(rf"vfmadd\w*ps\s+[^\n]*%{reg}", asm), f"{name}: no packed FMA"
        assert "TVMBackendAllocWorkspace" not in asm, f"{name}: heap workspace in a dense tile"


def test_conv_kernels_are_vector_fma(conv_asm) -> None:
    kernels, rules, features = conv_asm
    if "fma" not in features:
        pytest.skip("this CPU has no FMA")
    assert rules.get("Conv") and rules.get("DepthwiseConv")
    reg = _vector_register(features)
    for name, asm in kernels.items():
        if "conv2d" in name:
            assert re.search(rf"vfmadd\w*ps\s+[^\n]*%{reg}", asm), f"{name}: no packed FMA"


def test_unpadded_conv_tiles_stay_off_the_heap(aligned_asm) -> None:
    kernels, rules, _ = aligned_asm
    assert rules == {"Conv": 2}
    for name, asm in kernels.items():
        assert "TVMBackendAllocWorkspace" not in asm, f"{name}: heap workspace in a conv tile"
