"""Integer matmuls of two activations ("qbatch": `lower/int_gemm.qbatch`,
`schedules/int_batched.py`) and the dense kernel's row tiles (`schedules/int_cpu.row_tile`).

Every result is compared bit for bit with the reference interpreter, on odd shapes (M, K, N
that no tile or quad divides) and extreme zero points, on the host's kernels, the AVX2 ones
(mcpu haswell, where the host has AVX2) and the portable TE kernels (mcpu x86-64); the
instruction choice is checked on assembly compiled for named CPUs (any host).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from backends.tvm.schedules import int_cpu
from passes.fuse_integer import FuseInteger
from tests.backends import isa
from tests.backends.test_tvm_int import AVX2, IntGraph, _with_steps, run_tvm

ZEROS = {"int8": (-128, -7, 127), "uint8": (0, 131, 255)}


def _batched(adt: str, bdt: str, shape: tuple, seed: int = 0, bias: bool = False,
             requant: bool = True, zeros: tuple[int, int] | None = None) -> IntGraph:
    """[*lead, M, K] x [*lead, K, N] of two activations, optionally requantised per tensor."""
    *lead, m, k, n = shape
    case = IntGraph(seed)
    a = case.ints("a", adt, (*lead, m, k))
    b = case.ints("b", bdt, (*lead, k, n))
    za, zb = zeros or (ZEROS[adt][seed % 3], ZEROS[bdt][(seed + 1) % 3])
    bias_in = case.const("bias", case.rng.integers(-3000, 3000, n).astype(np.int32)) \
        if bias else ""
    acc = case.op("etch.QGemm", [a, b, bias_in, case.const("za", np.array(za, adt)),
                                 case.const("zb", np.array(zb, bdt)), ""], "acc")
    if not requant:
        return case.outputs(acc)
    m0, shift = (np.array(v, np.int32) for v in (1518500250, 45))  # ~ 4.3e-5
    y = case.op("etch.Requantize", [acc, case.const("m0", m0), case.const("shift", shift)],
                "y", zero_point=-3, qmin=-128, qmax=127, to="int8")
    return case.outputs(y)


@pytest.mark.parametrize("adt,bdt", [("int8", "int8"), ("uint8", "int8"), ("int8", "uint8"),
                                     ("uint8", "uint8")])
@pytest.mark.parametrize("shape", [(3, 13, 37, 21), (1, 2, 7, 5, 40), (2, 1, 4, 16)])
def test_two_activations_are_exact(adt: str, bdt: str, shape: tuple) -> None:
    rules = run_tvm(_batched(adt, bdt, shape, seed=len(shape) + shape[-1]))
    if AVX2:
        assert rules == {"QBatch": 1}


@pytest.mark.parametrize("zeros", [(-128, 127), (127, -128), (0, 0)])
def test_extreme_codes_and_zero_points(zeros: tuple[int, int]) -> None:
    """Every code at an extreme, K = 301: the int32 partial sums and both corrections at
    their largest; int32 output (no requantisation hides an error)."""
    case = _batched("int8", "int8", (2, 5, 301, 19), requant=False, zeros=zeros)
    for name, v in (("a", -128), ("b", 127)):
        case.feeds[name][...] = v
        case.feeds[name][0, 0, :7] = -v - 1
    run_tvm(case)


def test_bias_and_int32_output() -> None:
    run_tvm(_batched("uint8", "int8", (2, 9, 11, 33), seed=4, bias=True, requant=False))


@pytest.mark.parametrize("steps", ["table_residual", "residual_b"])
def test_a_batched_group_is_one_kernel(steps: str) -> None:
    rules = run_tvm(_with_steps(_batched("int8", "uint8", (2, 7, 20, 19), seed=5), steps))
    assert sum(rules.values()) == 1
    if AVX2:
        assert rules == {"QBatch": 1}


@pytest.mark.skipif(not AVX2, reason="runs AVX2 code: the host has no AVX2")
@pytest.mark.parametrize("steps", ["table_residual", None])
def test_batched_on_the_avx2_kernels(steps: str | None) -> None:
    """mcpu haswell: 8 lanes and the exact "split" step (the run-time b may make
    vpmaddubsw's pair sums saturate)."""
    case = _batched("uint8", "int8", (3, 11, 26, 13), seed=6)
    assert run_tvm(_with_steps(case, steps) if steps else case, mcpu="haswell") == \
        {"QBatch": 1}


def test_batched_on_the_portable_kernels() -> None:
    rules = run_tvm(_with_steps(_batched("int8", "int8", (2, 5, 9, 7)), "table_residual"),
                    mcpu="x86-64")
    assert "QBatch" not in rules


def test_broadcast_batches_take_the_generic_kernel() -> None:
    """b shared by every batch ([1, K, N] against [2, M, K]): not "qbatch", still exact."""
    case = IntGraph(8)
    a = case.ints("a", "int8", (2, 6, 9))
    b = case.ints("b", "int8", (1, 9, 5))
    acc = case.op("etch.QGemm", [a, b, "", case.const("za", np.int8(3)), "", ""], "acc")
    assert "QBatch" not in run_tvm(case.outputs(acc))


@pytest.mark.parametrize("rows", [13, 197])
def test_dense_rows_no_tile_divides(rows: int) -> None:
    """M prime: the last row tile recomputes row M - 1 and stores only rows inside M."""
    case = IntGraph(rows)
    a = case.ints("a", "int8", (rows, 40))
    w = case.const("w", case.rng.integers(-127, 128, (40, 48)).astype(np.int8))
    acc = case.op("etch.QGemm", [a, w, "", case.const("z", np.int8(-2))], "acc")
    rules = run_tvm(_with_steps(case.outputs(case.requantize(acc, 48, axis=-1)), "residual_a"))
    if AVX2:
        assert rules == {"QDense": 1}
        assert run_tvm(case, mcpu="haswell") == {"QDense": 1}


def test_row_tiles_hide_the_dot_latency() -> None:
    """197 rows (prime) against 4 vectors: 6-row tiles (24 chains, one padded row), not the
    1-row tiles that dividing M would force."""
    assert int_cpu.row_tile(197, 4, int_cpu.VNNI_ACC[16]) == 6
    assert int_cpu.row_tile(4, 4, int_cpu.VNNI_ACC[16]) == 4
    assert int_cpu.row_tile(197, 2, int_cpu.MAX_ACC[8]) == 4


@pytest.mark.parametrize("cpu,inst,reg", [("sapphirerapids", "vpdpbusd", "zmm"),
                                          ("znver3", "vpmaddubsw", "ymm")])
def test_batched_kernel_uses_the_cpus_dot_product(cpu: str, inst: str, reg: str) -> None:
    """The attention shapes' kernel (QK^T of 2 heads) uses the named CPU's int8 dot product
    with at least CHAINS independent accumulators on VNNI."""
    graph, _ = FuseInteger().run(_batched("int8", "int8", (2, 197, 64, 197)).g)
    asm = isa.compile_graph(graph, cpu)
    assert asm.rules == {"QBatch": 1}
    [code] = asm.of_kind("qbatch").values()
    assert re.search(rf"{inst}\s+[^\n]*%{reg}", code)
    if inst == "vpdpbusd":
        accs = set(re.findall(r"vpdpbusd\s+[^\n]*,\s*%(zmm\d+)\n", code))
        assert len(accs) >= int_cpu.CHAINS
