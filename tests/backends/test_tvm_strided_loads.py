"""`strided_loads`: a vector load of a constant-stride ramp becomes whole-vector loads and a
shuffle (same values, no element outside the original first..last), compiled by the cpu
pipeline to permutes instead of one scalar load per lane."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import tirx
from tvm.script.ir_builder import IRBuilder
from tvm.tirx.script.builder import ir as T

from backends.tvm import strided_loads
from tests.backends import isa


def _gather(stride: int, lanes: int, rows: int = 6) -> tirx.PrimFunc:
    """out[r, p, k] = a[r * stride * lanes + p + stride * k] for each phase p < stride, as
    one vector store of a strided vector load per (r, p)."""
    size = rows * stride * lanes
    with IRBuilder() as ib, T.prim_func():
        T.func_name("main")
        a = T.arg("a", T.buffer((size,), "float32"))
        out = T.arg("out", T.buffer((rows * stride * lanes,), "float32"))
        with T.serial(0, rows) as r:
            for p in range(stride):
                base = r * stride * lanes + p
                T.buffer_store(out, tirx.BufferLoad(a, [tirx.Ramp(base, stride, lanes)]),
                               [tirx.Ramp((r * stride + p) * lanes, 1, lanes)])
    return ib.get()


def _shuffles(func: tirx.PrimFunc) -> int:
    return func.script().count("T.Shuffle")


@pytest.mark.parametrize("stride,lanes", [(2, 16), (2, 8), (3, 16), (4, 8)])
def test_strided_loads_are_shuffles_with_the_same_values(stride: int, lanes: int) -> None:
    func = _gather(stride, lanes)
    assert _shuffles(strided_loads.strided_loads(tvm.IRModule({"main": func}))["main"]) == \
        stride
    target = tvm.target.Target(isa.target_json("avx512"))
    host = tvm.target.Target({"kind": "llvm"})
    a = np.arange(6 * stride * lanes, dtype=np.float32) * 0.5
    for pipeline, tgt in (("default", host), (strided_loads.PIPELINE, host)):
        lib = tvm.tirx.build(tvm.IRModule({"main": func}), target=tgt, pipeline=pipeline)
        out = tvm.runtime.tensor(np.zeros_like(a))
        lib["main"](tvm.runtime.tensor(a), out)
        want = np.concatenate([a[r * stride * lanes + p:(r + 1) * stride * lanes:stride]
                               for r in range(6) for p in range(stride)])
        np.testing.assert_array_equal(out.numpy(), want)
    asm = tvm.tirx.build(tvm.IRModule({"main": func}), target=target,
                         pipeline=strided_loads.PIPELINE).inspect_source("asm")
    assert "vpermt2ps" in asm or "vpermps" in asm or "vshufps" in asm
    assert "vinsertps" not in asm and "vgather" not in asm


def test_short_and_odd_vectors_are_left_to_llvm() -> None:
    """A row's tail (7 or 13 lanes) keeps its strided load: LLVM's own code for it measured
    faster than shuffles of loads that straddle the row's just-written vectors."""
    for lanes in (4, 7, 13):
        func = _gather(2, lanes)
        assert _shuffles(strided_loads.strided_loads(tvm.IRModule({"main": func}))["main"]) == 0


def _transpose(lanes: int, row: int, blocks: int = 3, size: int | None = None) -> tirx.PrimFunc:
    """out[c, q] = a[q * row + c] for the first `lanes` channels c of each of `blocks`
    blocks of `lanes` positions q (a channel-vector GEMM's transposing epilogue: rows of
    `row` accumulators), each channel one vector store of a load `row` apart."""
    size = size if size is not None else blocks * lanes * row
    with IRBuilder() as ib, T.prim_func():
        T.func_name("main")
        a = T.arg("a", T.buffer((size,), "float32"))
        out = T.arg("out", T.buffer((lanes * blocks * lanes,), "float32"))
        with T.serial(0, blocks) as b:
            for c in range(lanes):
                T.buffer_store(out, tirx.BufferLoad(a, [tirx.Ramp(b * lanes * row + c, row,
                                                                  lanes)]),
                               [tirx.Ramp(c * blocks * lanes + b * lanes, 1, lanes)])
    return ib.get()


@pytest.mark.parametrize("lanes,row", [(16, 16), (16, 32), (8, 24)])
def test_a_transposing_read_takes_the_block_rows_and_a_shuffle(lanes: int, row: int) -> None:
    """Loads `row` (a multiple of the lanes) apart whose start is known modulo the lanes:
    each lane from the aligned row vector holding it, the same rows for every channel of a
    block (the epilogues' assembly: `test_channel_gemm_epilogues_transpose_with_permutes`);
    the values are the same."""
    func = _transpose(lanes, row)
    rewritten = strided_loads.strided_loads(tvm.IRModule({"main": func}))["main"]
    assert _shuffles(rewritten) == lanes
    a = np.arange(3 * lanes * row, dtype=np.float32) * 0.25
    host = tvm.target.Target({"kind": "llvm"})
    lib = tvm.tirx.build(tvm.IRModule({"main": func}), target=host,
                         pipeline=strided_loads.PIPELINE)
    out = tvm.runtime.tensor(np.zeros(lanes * 3 * lanes, np.float32))
    lib["main"](tvm.runtime.tensor(a), out)
    want = a.reshape(3 * lanes, row)[:, :lanes].T.reshape(-1)
    np.testing.assert_array_equal(out.numpy(), want)


def test_a_transposing_read_of_a_ragged_buffer_is_left_alone() -> None:
    """A buffer that does not end on a whole vector: the last row vector could read past
    it, so the load stays (LLVM's own code)."""
    func = _transpose(16, 16, size=3 * 16 * 16 - 8)
    assert _shuffles(strided_loads.strided_loads(tvm.IRModule({"main": func}))["main"]) == 0
