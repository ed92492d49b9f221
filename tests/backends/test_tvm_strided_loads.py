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


def _repeat(step: int, lanes: int, start: int, rows: int = 5) -> tirx.PrimFunc:
    """out[r, k] = a[r * 8 + (start + k) // step] for k < lanes: one vector store of a vector
    load whose index is a broadcast plus ramp(start, 1, lanes) // step per row."""
    with IRBuilder() as ib, T.prim_func():
        T.func_name("main")
        a = T.arg("a", T.buffer((rows * 8 + 64,), "float32"))
        out = T.arg("out", T.buffer((rows * lanes,), "float32"))
        with T.serial(0, rows) as r:
            index = tirx.Broadcast(r * 8, lanes) + tirx.FloorDiv(
                tirx.Ramp(start, 1, lanes), tirx.Broadcast(step, lanes))
            T.buffer_store(out, tirx.BufferLoad(a, [index]), [tirx.Ramp(r * lanes, 1, lanes)])
    return ib.get()


@pytest.mark.parametrize("step,lanes,start", [(4, 16, 0), (2, 16, 4), (4, 16, 8), (4, 7, 48),
                                              (2, 8, 0), (4, 4, 8)])
def test_repeating_loads_are_one_short_load_and_a_shuffle(step: int, lanes: int,
                                                          start: int) -> None:
    """Lanes reading each of a few consecutive elements `step` times in turn (the Winograd
    epilogue's output row reading a tile's value once per output of the tile) become one
    load of those elements and a shuffle: the same values, permutes in place of one
    extract and insert per lane (a tail of 7 lanes too; one element for all lanes: a
    broadcast)."""
    func = _repeat(step, lanes, start)
    rewritten = strided_loads.strided_loads(tvm.IRModule({"main": func}))["main"].script()
    # one element for every lane (a vector of 4 lanes of one F(4, 3) tile): a broadcast
    assert rewritten.count("T.Shuffle") == (lanes > step)
    assert "T.Broadcast(a[" in rewritten or lanes > step
    a = np.arange(5 * 8 + 64, dtype=np.float32) * 0.5
    want = np.concatenate([a[r * 8 + (start + np.arange(lanes)) // step] for r in range(5)])
    lib = tvm.tirx.build(tvm.IRModule({"main": func}), target=tvm.target.Target(
        {"kind": "llvm"}), pipeline=strided_loads.PIPELINE)
    out = tvm.runtime.tensor(np.zeros(5 * lanes, np.float32))
    lib["main"](tvm.runtime.tensor(a), out)
    np.testing.assert_array_equal(out.numpy(), want)
    if lanes == 16:
        asm = tvm.tirx.build(tvm.IRModule({"main": func}), target=tvm.target.Target(
            isa.target_json("avx512")), pipeline=strided_loads.PIPELINE).inspect_source("asm")
        assert "vpermps" in asm or "vpermt2ps" in asm or "vshufps" in asm, asm
        assert "vpextr" not in asm and "vinsertps" not in asm and "vgather" not in asm


def test_a_repeating_load_off_its_runs_is_left_alone() -> None:
    """A ramp starting part way through an element's run (start not a multiple of the
    step) keeps its load."""
    func = _repeat(4, 16, 2)
    assert _shuffles(strided_loads.strided_loads(tvm.IRModule({"main": func}))["main"]) == 0
