"""Property tests of the importer: bad bytes fail cleanly, random graphs match ORT."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from compiler import onnx_import
from compiler.errors import EtchError
from tests.golden import assert_matches_ort

FUZZ = settings(deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _seed_model() -> bytes:
    """A small valid model touching several importer paths (upgrades, folding, infer)."""
    rng = np.random.default_rng(0)
    n = helper.make_node
    nodes = [n("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             n("Relu", ["c"], ["r"]),
             n("Shape", ["r"], ["s"]),
             n("Slice", ["s", "zero", "two"], ["s2"]),
             n("Concat", ["s2", "minus1"], ["shape"], axis=0),
             n("Reshape", ["r", "shape"], ["f"]),
             n("Softmax", ["f"], ["y"], axis=-1)]
    inits = [numpy_helper.from_array(rng.standard_normal((2, 1, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(np.array([2], np.int64), "two"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1")]
    graph = helper.make_graph(
        nodes, "seed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 16])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def _old_seed_model() -> bytes:
    """An opset-9 model: the attribute forms that the upgrade hooks rewrite."""
    n = helper.make_node
    nodes = [n("Squeeze", ["x"], ["s"], axes=[0]),
             n("Slice", ["s"], ["sl"], starts=[0, 1], ends=[3, 100], axes=[0, 1]),
             n("Clip", ["sl"], ["c"], min=-1.0, max=1.0),
             n("Split", ["c"], ["a", "b"], axis=1, split=[1, 2]),
             n("Softmax", ["b"], ["y"], axis=1)]
    graph = helper.make_graph(
        nodes, "old", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)]).SerializeToString()


SEED, OLD_SEED = _seed_model(), _old_seed_model()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from([SEED, OLD_SEED])))
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "set", "drop", "insert"]))
        if kind == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[pos] = draw(st.integers(0, 255))
        elif kind == "drop":
            del data[pos:pos + draw(st.integers(1, 16))]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    return bytes(data)


def test_seed_models_import() -> None:
    graph = onnx_import.import_model(SEED)
    assert [nd.op for nd in graph.nodes] == ["Conv", "Relu", "Reshape", "Softmax"]
    graph = onnx_import.import_model(OLD_SEED)
    assert [nd.op for nd in graph.nodes] == ["Squeeze", "Slice", "Clip", "Split", "Softmax"]


def _edited(edit) -> bytes:
    model = onnx.load_from_string(SEED)
    edit(model)
    return model.SerializeToString()


@pytest.mark.parametrize("edit", [
    lambda m: setattr(m.graph.input[0].type.tensor_type, "elem_type", 88),
    lambda m: m.graph.node[0].attribute[0].ints.pop(),
    lambda m: setattr(m.graph.node[0].attribute[0], "type", 0),
    lambda m: m.graph.node[3].ClearField("input"),
    lambda m: m.graph.node[6].attribute[0].__setattr__("i", 7),
], ids=["unknown_elem_type", "short_pads", "untyped_attribute", "no_inputs", "bad_axis"])
def test_corrupt_models_raise_etch_error(edit) -> None:
    """Crashes the fuzzer found (KeyError, TypeError, IndexError) are EtchErrors now."""
    with pytest.raises(EtchError):
        onnx_import.import_model(_edited(edit))


def test_non_utf8_name_is_etch_error() -> None:
    data = SEED.replace(b"Softmax", b"Softm\xffx")
    with pytest.raises(EtchError, match="UTF-8"):
        onnx_import.import_model(data)


@settings(FUZZ, max_examples=300)
@given(mutated())
def test_mutated_bytes_raise_only_etch_error(data: bytes) -> None:
    try:
        onnx_import.import_model(data)
    except EtchError:
        pass


# ---- random valid graphs --------------------------------------------------------------------
UNARY = ["Relu", "Tanh", "Sigmoid", "Neg", "Abs", "Erf", "Softmax"]
BINARY = ["Add", "Sub", "Mul", "Max"]


@st.composite
def random_graph(draw: st.DrawFn) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A chain of 1..6 ops over one float32 input, with shapes tracked so it is valid."""
    shape = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    nodes, inits, cur = [], [], "x"
    x_shape = list(shape)

    def const(arr: np.ndarray) -> str:
        name = f"c{len(inits)}"
        inits.append(numpy_helper.from_array(arr, name))
        return name

    for k in range(draw(st.integers(1, 6))):
        out = f"t{k}"
        op = draw(st.sampled_from(["unary", "binary", "matmul", "reshape", "transpose",
                                   "concat"]))
        if op == "unary":
            nodes.append(helper.make_node(draw(st.sampled_from(UNARY)), [cur], [out]))
        elif op == "binary":  # broadcast a constant over a suffix of the shape
            tail = shape[draw(st.integers(0, len(shape))):]
            c = const(rng.standard_normal(tail).astype(np.float32))
            args = [cur, c] if draw(st.booleans()) else [c, cur]
            nodes.append(helper.make_node(draw(st.sampled_from(BINARY)), args, [out]))
        elif op == "matmul":
            n = draw(st.integers(1, 4))
            c = const(rng.standard_normal((shape[-1], n)).astype(np.float32))
            nodes.append(helper.make_node("MatMul", [cur, c], [out]))
            shape = shape[:-1] + [n]
        elif op == "reshape":
            new = [int(np.prod(shape))] if draw(st.booleans()) else list(reversed(shape))
            nodes.append(helper.make_node("Reshape", [cur, const(np.array(new, np.int64))],
                                          [out]))
            shape = new
        elif op == "transpose":
            perm = draw(st.permutations(range(len(shape))))
            nodes.append(helper.make_node("Transpose", [cur], [out], perm=list(perm)))
            shape = [shape[p] for p in perm]
        else:
            axis = draw(st.integers(-len(shape), len(shape) - 1))
            nodes.append(helper.make_node("Concat", [cur, cur], [out], axis=axis))
            shape = list(shape)
            shape[axis] *= 2
        cur = out
    nodes.append(helper.make_node("Identity", [cur], ["y"]))
    graph = helper.make_graph(
        nodes, "random", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model, {"x": rng.standard_normal(x_shape).astype(np.float32)}


@settings(FUZZ, max_examples=60)
@given(random_graph())
def test_random_graphs_match_ort(case: tuple[onnx.ModelProto, dict]) -> None:
    model, feeds = case
    onnx.checker.check_model(model)
    assert_matches_ort(model, feeds)
