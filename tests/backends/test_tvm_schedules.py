"""CPU schedules: every zoo-style kernel gets a rule, and the hot loops are vector code.

Reads the generated assembly, as docs/ARCHITECTURE.md asks, for each instruction set on any host
(`tests/backends/isa.py` compiles for a named CPU: AVX2, AVX-512 + VNNI, aarch64 NEON): the
dense and conv kernels must use packed FMAs on vectors as wide as their tile needs (the
target's full width when the tile is that wide) and keep their accumulator tile off the heap
(no TVMBackendAllocWorkspace in a kernel that needs no padded copy).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm

import compiler
from backends.tvm import edge
from backends.tvm import target as targets
from backends.tvm.schedules import cpu as cpu_rules
from backends.tvm.schedules import tiles
from compiler import onnx_import, pipeline
from compiler.errors import EtchError
from compiler.options import CompileOptions
from tests.backends import isa, tvm_cases
from tests.golden import run_ort

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


def row_kernels() -> tvm_cases.Case:
    """Row reductions of short and long rows: a 16x16 global pool, softmax over 16 and 256."""
    m = tvm_cases.ModelBuilder("rows")
    x = m.input("x", m.rng.standard_normal((1, 8, 16, 16)).astype("float32"))
    y = m.input("y", m.rng.standard_normal((4, 256)).astype("float32"))
    m.op("GlobalAveragePool", [x], "pool")
    m.op("Softmax", [x], "short", axis=-1)
    m.op("Softmax", [y], "long", axis=-1)
    return m.build()


def ragged_pointwise() -> tvm_cases.Case:
    """A 1x1 conv over 35x35 positions (not whole vector blocks) with a reduction long enough
    that its packed panel takes several chunks on every x86 ISA (inception_v3's 288 -> 64)."""
    m = tvm_cases.ModelBuilder("ragged")
    x = m.input("x", m.rng.standard_normal((1, 288, 35, 35)).astype("float32"))
    y = m.op("Conv", [x, m.weight("w", 64, 288, 1, 1), m.weight("b", 64)], "pointwise",
             output=False)
    m.op("Relu", [y], "relu")
    return m.build()


def wide_pools() -> tvm_cases.Case:
    """squeezenet's and inception_v3's unpadded 3x3 stride-2 max pool on rows wider than a
    vector (71 columns -> 35 outputs) and resnet50's padded one (`lower/pool._tiled_pool`)."""
    m = tvm_cases.ModelBuilder("pools")
    x = m.input("x", m.rng.standard_normal((1, 4, 9, 71)).astype("float32"))
    m.op("MaxPool", [x], "inside", kernel_shape=[3, 3], strides=[2, 2])
    m.op("MaxPool", [x], "padded", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    return m.build()


FAMILIES = {"aligned": aligned_convs, "rows": row_kernels, "ragged": ragged_pointwise,
            "pools": wide_pools, **tvm_cases.FAMILIES}


@pytest.fixture(scope="module")
def assembly():
    """(family, isa[@bits]) -> the family model's kernels compiled for that ISA (cached)."""
    cache: dict[tuple[str, str], isa.Assembly] = {}

    def get(family: str, name: str) -> isa.Assembly:
        if (family, name) not in cache:
            model, _ = FAMILIES[family]()
            graph, _ = pipeline.run(onnx_import.import_model(model), CompileOptions())
            isa_name, _, bits = name.partition("@")
            cache[family, name] = isa.compile_graph(graph, isa_name,
                                                    vector_bits=int(bits) if bits else None)
        return cache[family, name]
    return get


def test_width_comes_from_the_named_cpu_not_the_host() -> None:
    lanes = {cpu: targets.cpu_target(CompileOptions(mcpu=cpu))[1].lanes
             for cpu in ("znver3", "sapphirerapids", "znver4", "x86-64")}
    assert lanes == {"znver3": 8, "sapphirerapids": 16, "znver4": 16, "x86-64": 4}
    neon = tvm.target.Target(edge.edge_target("cortex-a76"))
    assert cpu_rules.lanes(neon) == 4


@pytest.mark.parametrize("mcpu,bits,lanes", [
    ("sapphirerapids", None, 16), ("sapphirerapids", 256, 8), ("znver4", None, 16),
    ("znver4", 256, 8), ("znver3", None, 8), ("x86-64", None, 4)])
def test_vector_width_is_declared_by_the_target(mcpu: str, bits: int | None,
                                                lanes: int) -> None:
    target, info = targets.cpu_target(CompileOptions(mcpu=mcpu, vector_bits=bits))
    assert (info.lanes, target["vector-width"]) == (lanes, 32 * lanes)
    assert "mattr" not in target  # LLVM's own tuning (prefer-256-bit on Intel) is left alone
    assert cpu_rules.lanes(tvm.target.Target(target)) == lanes  # the rules read it back


@pytest.mark.parametrize("mcpu,bits", [("znver3", 512), ("x86-64", 256), ("znver4", 128)])
def test_a_width_the_cpu_lacks_is_refused(mcpu: str, bits: int) -> None:
    with pytest.raises(EtchError, match=f"--vector-bits {bits}: the {mcpu} CPU takes"):
        targets.cpu_target(CompileOptions(mcpu=mcpu, vector_bits=bits))


def test_avx512_at_256_bits_tiles_in_ymm(assembly) -> None:
    """--vector-bits 256 on an AVX-512 CPU: tiles of whole 8-lane vectors, FMAs in ymm. (A
    tile of 13 columns is one 13-lane vector either way, which LLVM widens to a zmm.)"""
    asm = assembly("conv", "avx512@256")
    tiles = {k: int(asm.attrs[k]["vw"]) for k in asm.of_kind("conv2d", "depthwise_conv2d")}
    whole = [k for k, vw in tiles.items() if vw % 8 == 0]
    assert asm.lanes == 8 and whole and max(tiles.values()) <= 16
    for kernel in whole:
        assert asm.packed_fma(kernel, 8), f"{kernel}: no ymm FMA"
        assert not re.search(r"vfmadd\w*ps\s+[^\n]*%zmm", asm.kernels[kernel]), kernel


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
    depthwise = asm.rules.get("DepthwiseConv", 0) + asm.rules.get("FloatDepthwise", 0)
    assert asm.rules.get("Conv") and depthwise and asm.rules.get("ConvGemm")
    tiles = {k: int(asm.attrs[k]["vw"])
             for k in asm.of_kind("conv2d", "depthwise_conv2d", "conv_gemm")}
    assert len(tiles) == 10 and max(tiles.values()) >= asm.lanes  # some at the full width
    for kernel, tile in tiles.items():
        assert asm.packed_fma(kernel, tile), f"{kernel}: no packed FMA"


@pytest.mark.parametrize("name", ISAS)
def test_unpadded_conv_tiles_stay_off_the_heap(assembly, name: str) -> None:
    asm = assembly("aligned", name)
    assert asm.rules == {"Conv": 1, "ConvGemm": 1}
    for kernel, code in asm.kernels.items():
        assert asm.packed_fma(kernel, int(asm.attrs[kernel]["vw"])), f"{kernel}: no packed FMA"
        # the GEMM kernel's one workspace is its packed panel (per column block, by design);
        # the register tile never goes to the heap
        allowed = 1 if asm.attrs[kernel]["kind"] == "conv_gemm" else 0
        assert code.count("TVMBackendAllocWorkspace@") <= allowed, \
            f"{kernel}: heap workspace in a conv tile"


@pytest.mark.parametrize("name", ["avx2", "avx512"])
def test_ragged_pointwise_copies_and_finishes_in_vectors(assembly, name: str) -> None:
    """A pointwise GEMM whose positions are not whole blocks packs its panel with plain
    vector loads (the bounds test is per block, not per lane: a per-lane test compiled to
    gathers) and runs its bias + ReLU epilogue on vectors after the image's last chunk (at
    the tile it was a scalar loop behind a bounds check): a vector max, no gathers.
    inception_v3's 288 -> 64 on 35x35 at 0.58 -> 0.44 ms (Xeon, one thread)."""
    asm = assembly("ragged", name)
    [kernel] = asm.of_kind("conv_gemm")
    code = asm.kernels[kernel]
    assert asm.packed_fma(kernel, int(asm.attrs[kernel]["vw"]))
    assert int(asm.attrs[kernel]["chunk"]) * int(asm.attrs[kernel]["vw"]) < 35 * 35
    assert re.search(r"vmaxps\s+[^\n]*%[yz]mm", code), f"{kernel}: no vector ReLU"
    assert "vgather" not in code, f"{kernel}: the panel copy gathers"


@pytest.mark.parametrize("name", ISAS)
def test_max_pools_compare_in_vectors(assembly, name: str) -> None:
    """The NaN-keeping max of a pool window is vector code on every ISA: its NaN test is a
    bit test (TIR's `isnan` call made TVM scalarise the loop, which LLVM turned into gathers
    and scatters), and an unpadded pool's stride-2 window reads are vector loads and
    shuffles (`strided_loads`). squeezenet's 64x111x111 pool 373 -> 156-172 us, inception_v3's
    192x71x71 366 -> 213 us (Xeon, one thread, kernel CPU time); so are the padded pool's
    copy's, resnet50's 64x112x112 pool 202 -> 121 us (Zen 5, one thread)."""
    asm = assembly("pools", name)
    kinds = {asm.attrs[k]["kind"]: code for k, code in asm.of_kind("row_pool", "window_pool")
             .items()}
    assert set(kinds) == {"row_pool", "window_pool"}
    for kind, code in kinds.items():
        if name == "neon":
            assert re.search(r"fcm\w+\s+v\d+\.4s", code), f"{kind}: no vector compare"
            continue
        reg = "zmm" if name == "avx512" else "ymm"
        assert re.search(rf"vcmp\w*ps\s+[^\n]*%{reg}", code), f"{kind}: no {reg} compare"
        assert not re.search(r"vgather|vscatter", code), f"{kind}: gathers or scatters"
    if name == "avx512":
        assert "vpermt2ps" in kinds["row_pool"], "the stride-2 reads are not shuffles"
        # the padded pool's deinterleaving copy: its interior is branch-free, so its stride-2
        # reads are shuffles too (`cpu.vectorize_deinterleaved`; they were scalar inserts)
        assert "vpermt2ps" in kinds["window_pool"], "the padded copy's reads are not shuffles"
    if name == "avx2":
        assert "vinsertf128" not in kinds["window_pool"], "the padded copy inserts lanes"


@pytest.mark.parametrize("name", ISAS)
def test_row_kernels_accumulate_in_vectors(assembly, name: str) -> None:
    """Every row is summed in vector partial sums; on AVX-512 rows shorter than 8 zmm
    vectors use 8 lanes (`tiles.row_lanes`), long ones the full 16."""
    asm = assembly("rows", name)
    widths = {asm.attrs[k]["kind"] + str(int(asm.attrs[k]["row_lanes"])): k
              for k in asm.of_kind("reduce", "softmax")}
    short, full = {"avx2": (8, 8), "avx512": (8, 16), "neon": (4, 4)}[name]
    assert set(widths) == {f"reduce{full}", f"softmax{short}", f"softmax{full}"}
    add = r"fadd\s+v\d+\.4s" if name == "neon" else r"vaddps\s+[^\n]*%[yz]mm"
    for kernel in widths.values():
        assert re.search(add, asm.kernels[kernel]), f"{kernel}: no vector partial sums"


def test_row_pools_go_parallel_by_the_values_they_read() -> None:
    """squeezenet1_1's last max pool (3x3 stride 2 over 256 x 27 x 27: 43k outputs, 270k
    values read) runs its output rows in parallel (it counted its outputs and ran on one
    thread: 30 us with two threads, 16 in parallel on Zen 4); exact on the host."""
    from backends.tvm import lower, schedules

    m = tvm_cases.ModelBuilder("last_pool")
    x = m.input("x", m.rng.standard_normal((1, 256, 27, 27)).astype("float32"))
    m.op("MaxPool", [x], "pool", kernel_shape=[3, 3], strides=[2, 2])
    model, inputs = m.build()
    graph, _ = pipeline.run(onnx_import.import_model(model), CompileOptions())
    target = tvm.target.Target(isa.target_json("avx512"))
    mod = schedules.apply_rules(lower.to_irmodule(graph, pack=True, lanes=16), target)
    [pool] = [f for _, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)
              and str(f.attrs.get("etch.kind", "")) == "row_pool"]
    assert "T.parallel" in pool.script()
    got = compiler.compile(model, target="cpu", threads=2).run(inputs)["pool"]
    np.testing.assert_array_equal(got, run_ort(model, inputs)["pool"])


@pytest.mark.parametrize("name", ISAS)
def test_image_rows_run_in_vectors(assembly, name: str) -> None:
    """Global means and maxima over 14 x 14 and 7 x 7 maps accumulate in vectors (the map
    is one row of 196 or 49: `rows.flat_rows`), and the gate over 28 x 28 multiplies whole
    vectors, no value at a time (`epilogue.lower_elementwise`); each ran scalar before."""
    asm = assembly("image_rows", name)
    reduce = asm.of_kind("reduce")
    assert len(reduce) == 6, sorted(reduce)
    for kernel, code in reduce.items():  # maxima keep NaN: compares and blends, or fmax
        largest = "max" in asm.attrs[kernel].get("op", "").lower()
        if name == "neon":
            op = r"(fmax|fcm)\w*" if largest else "fadd"
            assert re.search(rf"{op}\s+v\d+\.4s", code), f"{kernel}: no vector {op}"
        else:
            op = r"(vmaxps|vcmp\w*ps)" if largest else "vaddps"
            assert re.search(rf"{op}\s+[^\n]*%[yz]mm", code), f"{kernel}: no vector {op}"
    gates = {k: c for k, c in asm.of_kind("elementwise").items()
             if asm.attrs[k].get("node", "").endswith("gate")}
    assert len(gates) == 1, sorted(asm.of_kind("elementwise"))
    code = next(iter(gates.values()))
    if name == "neon":
        assert re.search(r"fmul\s+v\d+\.4s", code) and not re.search(r"fmul\s+s\d+", code)
    else:
        reg = "zmm" if name == "avx512" else "ymm"
        assert re.search(rf"vmulps\s+[^\n]*%{reg}", code) and "vmulss" not in code


@pytest.mark.parametrize("row,lanes,want", [((16,), 16, 8), ((64,), 16, 8), ((128,), 16, 16),
                                            ((16, 16), 16, 16), ((16,), 8, 8), ((8,), 4, 4)])
def test_row_width(row: tuple, lanes: int, want: int) -> None:
    assert tiles.row_lanes(row, lanes) == want
