"""Compile-time binding of graph inputs (`compile(..., bind=...)`, `etch compile --bind`) and
the importer's reading of opsets below 9, at import (fast; the CLI is tested in
tests/e2e/test_bind_cli.py)."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from compiler import binding, onnx_import
from compiler.errors import EtchError


def _reduce_model(opset: int = 18, x_dims: list | None = None) -> onnx.ModelProto:
    """y = ReduceSum(x, axes) and z = Reshape(x, Concat(shape_head, [-1])): `axes` and
    `shape_head` decide output shapes."""
    nodes = [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0),
             helper.make_node("Concat", ["shape_head", "minus1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["z"])]
    minus1 = onnx.numpy_helper.from_array(np.array([-1], np.int64), "minus1")
    graph = helper.make_graph(
        nodes, "bindme",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_dims or [2, 3, 4]),
         helper.make_tensor_value_info("axes", TensorProto.INT64, [1]),
         helper.make_tensor_value_info("shape_head", TensorProto.INT64, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], [minus1])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


BIND = {"axes": np.array([1], np.int64), "shape_head": np.array([2, 2], np.int64)}


def test_bound_inputs_become_constants_and_shapes_fold() -> None:
    graph = onnx_import.import_model(_reduce_model(), bind=BIND)
    assert graph.inputs == ["x"]
    assert graph.values["y"].shape == (2, 4) and graph.values["z"].shape == (2, 2, 6)
    assert np.array_equal(graph.values["axes"].data, [1])
    records = binding.records(graph)
    assert [r["name"] for r in records] == ["axes", "shape_head"]  # model order
    assert records[1] == {"name": "shape_head", "shape": [2], "dtype": "int64",
                          "sha256": hashlib.sha256(np.array([2, 2], "<i8").tobytes())
                          .hexdigest()}


def test_bound_value_is_a_private_copy_in_native_order() -> None:
    axes = np.array([1], ">i8")
    graph = onnx_import.import_model(_reduce_model(), bind={**BIND, "axes": axes})
    axes[0] = 2
    assert graph.values["axes"].data.tolist() == [1] and graph.values["axes"].data.dtype.isnative
    # the digest is of the values, not of the bytes the caller happened to hold
    assert binding.records(graph)[0]["sha256"] == \
        hashlib.sha256(np.array([1], "<i8").tobytes()).hexdigest()


def test_unbound_shape_deciding_input_names_the_graph_inputs_and_bind() -> None:
    with pytest.raises(EtchError, match=r"input 'axes' decides the output shape but is "
                                        r"computed at run time; .*\['axes'\].*--bind"):
        onnx_import.import_model(_reduce_model(), bind={"shape_head": BIND["shape_head"]})
    with pytest.raises(EtchError, match=r"input 'shape' decides .*\['shape_head'\].*--bind"):
        onnx_import.import_model(_reduce_model(), {"shape_head": (2,)}, bind={"axes": BIND["axes"]})


@pytest.mark.parametrize("bind, needle", [
    ({"nope": np.array([1])},
     r"--bind names unknown input\(s\) \['nope'\]; the model's inputs are \['x', 'axes', "),
    ({"minus1": np.array([1])}, r"unknown input\(s\) \['minus1'\]"),  # an initializer
    ({"axes": np.array([1], np.int32)},
     r"--bind axes: value has dtype int32, the model's input is int64"),
    ({"axes": np.array([1, 2], np.int64)},
     r"--bind axes: value has shape \[2\], the model's input has \[1\]"),
    ({"axes": np.int64(1)}, r"value has shape \[\], the model's input has \[1\]"),
    ({"shape_head": np.array([[2]], np.int64)}, r"value has shape \[1, 1\], .* has \[\?\]"),
])
def test_bad_bindings_are_one_clear_error(bind: dict, needle: str) -> None:
    with pytest.raises(EtchError, match=needle):
        onnx_import.import_model(_reduce_model(), bind={**BIND, **bind})


def test_bind_and_input_shape_on_one_input_is_refused() -> None:
    with pytest.raises(EtchError, match=r"\['axes'\] are given both --input-shape and --bind"):
        onnx_import.import_model(_reduce_model(), {"axes": (1,)}, bind=BIND)


def test_bound_dynamic_dims_take_the_value_shape() -> None:
    graph = onnx_import.import_model(_reduce_model(), bind={**BIND, "shape_head": np.array(
        [4, 1, 3], np.int64)})
    assert graph.values["z"].shape == (4, 1, 3, 2)
    assert binding.records(graph)[1]["shape"] == [3]


# ---- opsets below 9 ------------------------------------------------------------------------
def _one_node(op: str, opset: int, **attrs: object) -> onnx.ModelProto:
    elem = TensorProto.BOOL if op in ("And", "Not") else TensorProto.FLOAT
    ins = ["a", "b"][:2 if op == "And" else 1]
    graph = helper.make_graph([helper.make_node(op, ins, ["y"], **attrs)], "old",
                              [helper.make_tensor_value_info(n, elem, [3]) for n in ins],
                              [helper.make_tensor_value_info("y", elem, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("op, opset", [("And", 7), ("And", 8), ("Not", 1), ("Relu", 8)])
def test_old_opset_ops_unchanged_since_9_are_read(op: str, opset: int) -> None:
    graph = onnx_import.import_model(_one_node(op, opset))
    assert graph.metadata["etch.source_opset"] == str(opset)
    assert graph.opset == onnx_import.CANONICAL_OPSET and [n.op for n in graph.nodes] == [op]


@pytest.mark.parametrize("op, opset, old", [("Relu", 5, "Relu-1"), ("Cast", 8, "Cast-6"),
                                            ("Sign", 8, "Sign-undefined")])
def test_old_opset_ops_changed_since_are_refused_by_name(op: str, opset: int, old: str) -> None:
    attrs = {"to": TensorProto.FLOAT} if op == "Cast" else {}
    with pytest.raises(EtchError, match=rf"model uses ONNX opset {opset}: etch reads ops as "
                                        rf"defined from opset 9 on, and {old} changed since"):
        onnx_import.import_model(_one_node(op, opset, **attrs))
