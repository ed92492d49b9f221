"""Concat on the integer graph: calibration gives a Concat's inputs and output one range
(through a MaxPool branch too), the branches requantise straight to it and the Concat runs
on int8 (no float island), bit-identical on cpu and in the reference."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import compiler
from passes.int_rules import concat_groups
from tests.golden import assert_bitexact


def _inception_like():
    """Three branches (1x1 conv, 3x3 conv, max-pool) concatenated, then a 1x1 conv."""
    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def conv(x: str, name: str, oc: int, c: int, k: int) -> str:
        w = rng.normal(size=(oc, c, k, k)) / np.sqrt(c * k * k)
        inits.extend([numpy_helper.from_array(w.astype(np.float32), f"{name}_w"),
                      numpy_helper.from_array(rng.normal(size=oc).astype(np.float32),
                                              f"{name}_b")])
        nodes.extend([helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [f"{name}_c"],
                                       pads=[k // 2] * 4),
                      helper.make_node("Relu", [f"{name}_c"], [name])])
        return name

    a, b = conv("x", "a", 8, 6, 1), conv("x", "b", 12, 6, 3)
    nodes.append(helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[3, 3], pads=[1] * 4))
    nodes.append(helper.make_node("Concat", [a, b, "p"], ["cat"], axis=1))
    y = conv("cat", "y", 4, 26, 1)
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 6, 9, 9])], [helper.make_tensor_value_info(
            y, TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_concat_groups_join_inputs_output_and_moves() -> None:
    from compiler import onnx_import

    graph = onnx_import.import_model(_inception_like())
    assert concat_groups(graph) == [{"a", "b", "p", "cat", "x"}]


def test_concat_runs_on_int8_and_matches_the_reference(tmp_path) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 6, 9, 9)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    opts = {"bits": 8, "int": True, "calib": str(tmp_path / "calib.npz")}
    ref = compiler.compile(_inception_like(), target="ref", **opts)
    concat = [n for n in ref.graph.nodes if n.op == "Concat"]
    assert len(concat) == 1 and concat[0].attrs["placement"] == "accel"
    counts = ref.manifest["op_counts"]
    assert counts.get("QuantizeLinear") == 1 and counts.get("DequantizeLinear") == 1
    cpu = compiler.compile(_inception_like(), target="cpu", **opts)
    for sample in (x[:1], x[1:2] * 1.5):
        assert_bitexact(cpu.run({"x": sample}), ref.run({"x": sample}))
