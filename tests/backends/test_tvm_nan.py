"""NaN semantics on the TVM targets: a NaN input stays NaN through every clamp-like op.

TIR's max/min return their second operand when either is NaN, so a lowering written as
`max(x, 0)` turned NaN into 0 where ONNX Runtime and the reference keep it. One model holds
each op (standalone and as a fused epilogue of Gemm/Conv) as a separate output; it is built
once per configuration and compared with the reference interpreter: NaN where the
reference has NaN, close elsewhere, and with ONNX Runtime where ORT is well defined.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import compiler
from compiler import onnx_import, reference
from tests.edge_tools import needs_edge
from tests.golden import run_ort

# op, attrs, extra inputs (constants below or the second input "x2")
UNARY = [("Relu", {}, []), ("Clip", {}, ["lo", "hi"]), ("Max", {}, ["zero"]),
         ("Min", {}, ["zero"]), ("Max", {}, ["x2"]), ("Min", {}, ["x2"]),
         ("LeakyRelu", {}, []), ("HardSigmoid", {}, []), ("HardSwish", {}, []),
         ("Sigmoid", {}, []), ("Tanh", {}, []), ("Exp", {}, []), ("Erf", {}, []),
         ("Gelu", {}, []), ("Softplus", {}, []), ("Elu", {}, []), ("Selu", {}, []),
         ("PRelu", {}, ["slope"]), ("Sign", {}, []), ("Softmax", {}, [])]
# reductions: numpy (the reference) propagates NaN; ORT's depends on the NaN's position
REDUCE = [("ReduceMax", {}, ["axis2"]), ("ReduceMin", {}, ["axis2"]),
          ("MaxPool", {"kernel_shape": [2], "strides": [2]}, []), ("GlobalMaxPool", {}, [])]
WIDTH = 16


def _x() -> np.ndarray:
    x = np.linspace(-3, 3, WIDTH, dtype=np.float32).reshape(1, WIDTH)
    x[0, [0, 5, 11]] = np.nan
    x[0, 3], x[0, 8] = np.inf, -np.inf
    return x


def _inputs() -> dict[str, np.ndarray]:
    x2 = np.ones((1, WIDTH), np.float32)
    x2[0, [1, 5]] = np.nan
    return {"x": _x(), "x2": x2}


def nan_model() -> onnx.ModelProto:
    """Every op of UNARY and REDUCE on x, plus Gemm+bias+Relu and Conv+Clip (fused)."""
    rng = np.random.default_rng(3)
    t = numpy_helper.from_array
    inits = [t(np.float32(-1), "lo"), t(np.float32(1), "hi"),
             t(np.zeros(WIDTH, np.float32), "zero"), t(np.full(WIDTH, 0.1, np.float32), "slope"),
             t(rng.standard_normal((WIDTH, 8)).astype(np.float32), "w"),
             t(rng.standard_normal(8).astype(np.float32), "b"),
             t(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "wc"),
             t(np.array([1, 1, WIDTH], np.int64), "shape3"), t(np.array([2], np.int64), "axis2"),
             t(np.array([1, 1, 4, WIDTH // 4], np.int64), "shape4")]
    nodes, outs = [], []
    for k, (op, attrs, extra) in enumerate(UNARY):
        nodes.append(helper.make_node(op, ["x", *extra], [f"{op}_{k}"], **attrs))
        outs.append(f"{op}_{k}")
    nodes.append(helper.make_node("Reshape", ["x", "shape3"], ["x3"]))
    for k, (op, attrs, extra) in enumerate(REDUCE):
        nodes.append(helper.make_node(op, ["x3", *extra], [f"{op}_r{k}"], **attrs))
        outs.append(f"{op}_r{k}")
    nodes += [helper.make_node("Gemm", ["x", "w", "b"], ["g"]),
              helper.make_node("Relu", ["g"], ["gemm_relu"]),
              helper.make_node("Reshape", ["x", "shape4"], ["x4"]),
              helper.make_node("Conv", ["x4", "wc"], ["c"], pads=[1, 1, 1, 1]),
              helper.make_node("Clip", ["c", "lo", "hi"], ["conv_clip"])]
    outs += ["gemm_relu", "conv_clip"]
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "nan", [vi("x", TensorProto.FLOAT, [1, WIDTH]),
                                             vi("x2", TensorProto.FLOAT, [1, WIDTH])],
                              [vi(o, TensorProto.FLOAT, None) for o in outs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return nan_model()


@pytest.fixture(scope="module")
def expected(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return reference.run(onnx_import.import_model(model), _inputs())


def _assert_same_nans(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    for name, w in want.items():
        g = got[name]
        assert np.array_equal(np.isnan(g), np.isnan(w)), f"{name}: {g} vs {w}"
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-5, err_msg=name)


def test_reference_keeps_nan_as_onnx_runtime_does(model: onnx.ModelProto,
                                                  expected: dict[str, np.ndarray]) -> None:
    ort = run_ort(model, _inputs())
    for name in [o for o in expected if not o.split("_")[-1].startswith("r")]:
        assert np.array_equal(np.isnan(ort[name]), np.isnan(expected[name])), name
    assert np.isnan(expected["Relu_0"][0, 0]) and np.isnan(expected["gemm_relu"]).any()


@pytest.mark.parametrize("options", [{}, {"bits": 4}], ids=["float", "w4"])
def test_cpu_keeps_nan(model: onnx.ModelProto, expected: dict[str, np.ndarray],
                       options: dict) -> None:
    got = compiler.compile(model, target="cpu", **options).run(_inputs())
    if options:  # weight-only: the quantised Gemm/Conv differ from float; NaNs must not
        want = reference.run(compiler.compile(model, target="ref", **options).graph, _inputs())
    else:
        want = expected
    _assert_same_nans(got, want)


@needs_edge
def test_edge_keeps_nan(model: onnx.ModelProto, expected: dict[str, np.ndarray]) -> None:
    _assert_same_nans(compiler.compile(model, target="edge").run(_inputs()), expected)


def test_cpu_pools_keep_nan_across_vector_rows() -> None:
    """Max pools over rows wider than a vector (the vector code of the window max: its NaN
    test, the unpadded pool's shuffled stride-2 reads, the padded one's tile): NaN wherever
    a window holds one, the reference's values elsewhere."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 3, 9, 71)).astype(np.float32)
    x.flat[rng.choice(x.size, 25, replace=False)] = np.nan
    vi = helper.make_tensor_value_info
    nodes = [helper.make_node("MaxPool", ["x"], ["inside"], kernel_shape=[3, 3], strides=[2, 2]),
             helper.make_node("MaxPool", ["x"], ["padded"], kernel_shape=[3, 3], strides=[2, 2],
                              pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "pools", [vi("x", TensorProto.FLOAT, list(x.shape))],
                              [vi(o, TensorProto.FLOAT, None) for o in ("inside", "padded")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    want = reference.run(onnx_import.import_model(model), {"x": x})
    got = compiler.compile(model, target="cpu").run({"x": x})
    for name, w in want.items():
        assert np.isnan(w).sum() > 10, name
        assert np.array_equal(got[name], w, equal_nan=True), name
