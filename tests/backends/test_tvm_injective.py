"""The cpu Injective rule's contiguous runs (`cpu.contiguous_rows`): data-movement and
elementwise kernels whose rows are no whole number of vectors (13x13 and 7x7 planes) but
whose trailing dims are one contiguous run in every buffer -- shufflenet's channel shuffle
(Reshape, Transpose keeping the plane, Reshape), channel slices and concats, a per-channel
scale -- are vectorised as one run with a short tail; a broadcast along the row is not a
run and keeps its rows. Exactness against ONNX Runtime on the host; the vector code in the
scheduled kernels of both x86 ISAs (any host)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from onnx import TensorProto, helper
from tvm import s_tir

import compiler
from backends.tvm import lower, schedules
from backends.tvm.schedules import cpu as cpu_rules
from compiler import onnx_import, pipeline
from compiler.options import CompileOptions
from tests.backends import isa
from tests.golden import run_ort

C = 6  # channels of each half


def shuffle_model(hw: int):
    """x [1, 2C, hw, hw] -> channel shuffle -> the two channel halves (Slice) -> Concat(second,
    Relu(first)) -> times a per-channel scale [1, 2C, 1, 1] (a run) -> plus a per-column
    offset [1, 1, 1, hw] (a broadcast along the row: no run)."""
    node = helper.make_node
    rng = np.random.default_rng(hw)
    inits = [helper.make_tensor("split", TensorProto.INT64, [5], [1, 2, C, hw, hw]),
             helper.make_tensor("merged", TensorProto.INT64, [4], [1, 2 * C, hw, hw]),
             helper.make_tensor("lo", TensorProto.INT64, [1], [0]),
             helper.make_tensor("mid", TensorProto.INT64, [1], [C]),
             helper.make_tensor("hi", TensorProto.INT64, [1], [2 * C]),
             helper.make_tensor("axis", TensorProto.INT64, [1], [1]),
             helper.make_tensor("scale", TensorProto.FLOAT, [1, 2 * C, 1, 1],
                                rng.normal(size=2 * C).astype(np.float32)),
             helper.make_tensor("offset", TensorProto.FLOAT, [1, 1, 1, hw],
                                rng.normal(size=hw).astype(np.float32))]
    nodes = [node("Reshape", ["x", "split"], ["x5"], name="split_groups"),
             node("Transpose", ["x5"], ["t5"], name="shuffle", perm=[0, 2, 1, 3, 4]),
             node("Reshape", ["t5", "merged"], ["shuffled"], name="merge_groups"),
             node("Slice", ["shuffled", "lo", "mid", "axis"], ["first"], name="first_half"),
             node("Slice", ["shuffled", "mid", "hi", "axis"], ["second"], name="second_half"),
             node("Relu", ["first"], ["first_r"], name="relu"),
             node("Concat", ["second", "first_r"], ["cat"], name="cat", axis=1),
             node("Mul", ["cat", "scale"], ["scaled"], name="per_channel"),
             node("Add", ["scaled", "offset"], ["y"], name="per_column")]
    value = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "shuffle", [value("x", TensorProto.FLOAT,
                                                       [1, 2 * C, hw, hw])],
                              [value("y", TensorProto.FLOAT, None),
                               value("shuffled", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


@pytest.mark.parametrize("hw", [7, 13, 28])
def test_contiguous_runs_match_onnx_runtime(hw: int) -> None:
    """Every value as ONNX Runtime's: the copies exactly, the scale and offset (one FMA
    here, a multiply and an add in ORT) to float rounding."""
    model = shuffle_model(hw)
    inputs = {"x": np.random.default_rng(1).normal(size=(1, 2 * C, hw, hw)).astype(
        np.float32)}
    got, want = compiler.compile(model, target="cpu").run(inputs), run_ort(model, inputs)
    np.testing.assert_array_equal(got["shuffled"], want["shuffled"])
    np.testing.assert_allclose(got["y"], want["y"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name,lanes", [("avx512", 16), ("avx2", 8)])
def test_contiguous_runs_are_vector_copies(name: str, lanes: int) -> None:
    """On 13x13 planes (169 floats: 10 zmm or 21 ymm vectors and a tail) the shuffle's
    transpose, the channel slices and the concat loop over whole vectors of the plane
    (LLVM makes some of them memcpy), no loop over rows of 13 left; the per-channel scale
    fused with the per-column offset keeps its rows of 13."""
    graph, _ = pipeline.run(onnx_import.import_model(shuffle_model(13)), CompileOptions())
    target = tvm.target.Target(isa.target_json(name))
    mod = schedules.apply_rules(lower.to_irmodule(graph, pack=True, lanes=lanes), target)
    loops = {gv.name_hint: re.findall(r"for (\w+) in ([\w.]+)\((.*)\):", f.script())
             for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}
    runs = [k for k in loops if re.search("shuffle|half|cat", k)]
    assert len(runs) == 4, loops
    for kernel in runs:
        assert ("vectorized", f"T.int64({lanes})") in [(kind[2:], ext) for _, kind, ext
                                                       in loops[kernel]], loops[kernel]
        assert not any(ext == "T.int64(13)" for _, _, ext in loops[kernel]), loops[kernel]
    [scaled] = [f.script() for gv, f in mod.functions_items() if "per_channel" in gv.name_hint]
    assert "i2_i3" not in scaled and "v_i3 = T.axis.spatial(T.int64(13), i3)" in scaled


def test_only_runs_in_every_buffer_are_fused() -> None:
    """`contiguous_rows` per kernel of the model: the transpose keeps its last two axes and
    the slices, the Relu and the concat read whole planes (2 dims); the per-channel scale
    fused with the per-column offset, which indexes the row's own dim but broadcasts over
    rows, is no run (1: the rows stay)."""
    graph, _ = pipeline.run(onnx_import.import_model(shuffle_model(13)), CompileOptions())
    mod = lower.to_irmodule(graph, pack=True, lanes=16)
    runs = {}
    for gv, func in mod.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc) or "etch.node" not in (func.attrs or {}):
            continue
        sch = s_tir.Schedule(func)
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        if len(blocks) == 1:
            runs[str(func.attrs["etch.node"])] = cpu_rules.contiguous_rows(sch, blocks[0])
    assert {k: runs.get(k) for k in ("shuffle", "first_half", "second_half", "relu", "cat",
                                     "fused_per_channel")} == {
        "shuffle": 2, "first_half": 2, "second_half": 2, "relu": 2, "cat": 2,
        "fused_per_channel": 1}, runs
