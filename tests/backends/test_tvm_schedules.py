"""CPU schedules: every zoo-style kernel gets a rule, and the hot loops are vector code.

Reads the generated assembly, as docs/ARCHITECTURE.md asks, for each instruction set on any host
(`tests/backends/isa.py` compiles for a named CPU: AVX2, AVX-512 + VNNI, aarch64 NEON): the
dense and conv kernels must use packed FMAs on vectors as wide as their tile needs (the
target's full width when the tile is that wide) and keep their accumulator tile off the heap
(no TVMBackendAllocWorkspace in a kernel that needs no padded copy).
"""

from __future__ import annotations

import pytest
import tvm

from backends.tvm import edge
from backends.tvm import target as targets
from backends.tvm.schedules import cpu as cpu_rules
from compiler import onnx_import, pipeline
from compiler.options import CompileOptions
from tests.backends import isa, tvm_cases

ISAS = sorted(isa.ISA_CPUS)


def aligned_convs() -> tvm_cases.Case:
    """Convs whose output rows (16 columns) are a multiple of every ISA's vector width: no
    padded copy needed."""
    m = tvm_cases.ModelBuilder("aligned")
    x = m.input("x", m.rng.standard_normal((1, 8, 8, 16)).astype("float32"))
    y = m.input("y", m.rng.standard_normal((1, 8, 8, 18)).astype("float32"))
    m.op("Conv", [x, m.weight("w0", 16, 8, 1, 1)], "pointwise")
    m.op("Conv", [y, m.weight("w1", 16, 8, 1, 3)], "row", pads=[0, 0, 0, 0])
    return m.build()


FAMILIES = {"aligned": aligned_convs, **tvm_cases.FAMILIES}


@pytest.fixture(scope="module")
def assembly():
    """(family, isa) -> the family model's kernels compiled for that ISA (cached)."""
    cache: dict[tuple[str, str], isa.Assembly] = {}

    def get(family: str, name: str) -> isa.Assembly:
        if (family, name) not in cache:
            model, _ = FAMILIES[family]()
            graph, _ = pipeline.run(onnx_import.import_model(model), CompileOptions())
            cache[family, name] = isa.compile_graph(graph, name)
        return cache[family, name]
    return get


def test_width_comes_from_the_named_cpu_not_the_host() -> None:
    lanes = {cpu: targets.cpu_target(CompileOptions(mcpu=cpu))[1].lanes
             for cpu in ("znver3", "sapphirerapids", "znver4", "x86-64")}
    assert lanes == {"znver3": 8, "sapphirerapids": 16, "znver4": 16, "x86-64": 4}
    neon = tvm.target.Target(edge.edge_target("cortex-a76"))
    assert cpu_rules.lanes(neon) == 4


@pytest.mark.parametrize("name", ISAS)
def test_every_kernel_has_a_rule(assembly, name: str) -> None:
    for family in ("linear", "conv"):
        rules = assembly(family, name).rules
        assert "unscheduled" not in rules and "Fallback" not in rules, rules


@pytest.mark.parametrize("name", ISAS)
def test_dense_kernels_are_vector_fma_without_heap(assembly, name: str) -> None:
    asm = assembly("linear", name)
    dense = asm.of_kind("dense")
    assert dense
    for kernel, code in dense.items():
        assert asm.packed_fma(kernel, int(asm.attrs[kernel]["nb"])), f"{kernel}: no packed FMA"
        assert "TVMBackendAllocWorkspace" not in code, f"{kernel}: heap workspace in a dense tile"


@pytest.mark.parametrize("name", ISAS)
def test_conv_kernels_are_vector_fma(assembly, name: str) -> None:
    asm = assembly("conv", name)
    assert asm.rules.get("Conv") and asm.rules.get("DepthwiseConv")
    tiles = {k: int(asm.attrs[k]["vw"]) for k in asm.of_kind("conv2d", "depthwise_conv2d")}
    assert len(tiles) == 10 and max(tiles.values()) >= asm.lanes  # some at the full width
    for kernel, tile in tiles.items():
        assert asm.packed_fma(kernel, tile), f"{kernel}: no packed FMA"


@pytest.mark.parametrize("name", ISAS)
def test_unpadded_conv_tiles_stay_off_the_heap(assembly, name: str) -> None:
    asm = assembly("aligned", name)
    assert asm.rules == {"Conv": 2}
    for kernel, code in asm.kernels.items():
        assert asm.packed_fma(kernel, int(asm.attrs[kernel]["vw"])), f"{kernel}: no packed FMA"
        assert "TVMBackendAllocWorkspace" not in code, f"{kernel}: heap workspace in a conv tile"
