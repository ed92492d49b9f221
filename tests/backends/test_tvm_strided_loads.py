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
