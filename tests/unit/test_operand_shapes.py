"""Every op's shape rule checks its operands at import.

An operand that contradicts another (an `--input-shape` against a weight, a bias of the
wrong length) used to import and then either drop data silently or make a compiled kernel
read past its input. Each case below is one such model: import must fail with an EtchError
naming the node, and the same model with agreeing shapes must import.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.errors import EtchError
from compiler.onnx_import import import_model


def _model(op: str, x_shape: list[int], consts: dict[str, tuple], extra_inputs: list[str],
           **attrs: object):
    """x -> op(x, *consts) with constant operands given as shapes (float32 ones)."""
    inits = [numpy_helper.from_array(np.ones(shape, np.float32), name)
             for name, shape in consts.items()]
    node = helper.make_node(op, ["x", *extra_inputs], ["y"], name="the_node", **attrs)
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


# (case id, op, x shape that agrees, x shape that does not, constants, inputs, attrs)
CASES = [
    ("gemm_k_short", "Gemm", [1, 8], [1, 4], {"w": (16, 8)}, ["w"], {"transB": 1}),
    ("gemm_k_long", "Gemm", [1, 8], [1, 9], {"w": (16, 8)}, ["w"], {"transB": 1}),
    ("gemm_3d", "Gemm", [2, 8], [2, 8, 1], {"w": (8, 16)}, ["w"], {}),
    ("gemm_transA", "Gemm", [8, 2], [2, 8], {"w": (8, 16)}, ["w"], {"transA": 1}),
    ("matmul", "MatMul", [3, 8], [3, 9], {"w": (8, 4)}, ["w"], {}),
    ("conv_channels", "Conv", [1, 3, 8, 8], [1, 5, 8, 8], {"w": (4, 3, 3, 3)}, ["w"], {}),
    ("conv_rank", "Conv", [1, 3, 8, 8], [1, 3, 8], {"w": (4, 3, 3, 3)}, ["w"], {}),
    ("conv_groups", "Conv", [1, 4, 8, 8], [1, 2, 8, 8], {"w": (4, 2, 3, 3)}, ["w"],
     {"group": 2}),
    ("conv_transpose", "ConvTranspose", [1, 3, 4, 4], [1, 2, 4, 4], {"w": (3, 5, 2, 2)},
     ["w"], {}),
    ("batchnorm", "BatchNormalization", [1, 3, 4, 4], [1, 1, 4, 4],
     {"s": (3,), "b": (3,), "m": (3,), "v": (3,)}, ["s", "b", "m", "v"], {}),
    ("instancenorm", "InstanceNormalization", [1, 3, 4, 4], [1, 2, 4, 4],
     {"s": (3,), "b": (3,)}, ["s", "b"], {}),
    ("prelu", "PRelu", [2, 3], [2, 1], {"slope": (3,)}, ["slope"], {}),
    ("layernorm", "LayerNormalization", [2, 6], [2, 5], {"s": (6,)}, ["s"], {}),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_contradicting_operands_fail_at_import(case: tuple) -> None:
    _, op, good, bad, consts, inputs, attrs = case
    import_model(_model(op, good, consts, inputs, **attrs))
    with pytest.raises(EtchError, match="the_node"):
        import_model(_model(op, bad, consts, inputs, **attrs))


# Operands that only disagree with each other (constants): the bias and the kernel_shape.
CONST_CASES = [
    ("gemm_bias", "Gemm", [1, 8], {"w": (8, 16), "c": (15,)}, ["w", "c"], {}),
    ("conv_bias", "Conv", [1, 3, 8, 8], {"w": (4, 3, 3, 3), "b": (1,)}, ["w", "b"], {}),
    ("conv_kernel_shape", "Conv", [1, 3, 8, 8], {"w": (4, 3, 3, 3)}, ["w"],
     {"kernel_shape": [2, 2]}),
    ("conv_transpose_bias", "ConvTranspose", [1, 3, 4, 4], {"w": (3, 5, 2, 2), "b": (3,)},
     ["w", "b"], {}),
    ("batchnorm_broadcast_param", "BatchNormalization", [1, 3, 4, 4],
     {"s": (1,), "b": (3,), "m": (3,), "v": (3,)}, ["s", "b", "m", "v"], {}),
]


@pytest.mark.parametrize("case", CONST_CASES, ids=[c[0] for c in CONST_CASES])
def test_contradicting_constants_fail_at_import(case: tuple) -> None:
    _, op, x, consts, inputs, attrs = case
    with pytest.raises(EtchError, match="the_node"):
        import_model(_model(op, x, consts, inputs, **attrs))


def test_etch_integer_ops_check_their_operands() -> None:
    """The shape rules of etch's own ops (read back from a `ref` artifact's graph.onnx)."""
    from compiler import ops
    from compiler.ir import Value

    qgemm, requant = ops.get("etch.QGemm"), ops.get("etch.Requantize")
    a, w = Value("a", (2, 8), "int8"), Value("w", (8, 4), "int8")
    assert qgemm.infer({}, a, w)[0] == ((2, 4), "int32")
    with pytest.raises(EtchError, match="bias"):
        qgemm.infer({}, a, w, Value("b", (5,), "int32"))
    acc = Value("acc", (2, 4), "int32")
    with pytest.raises(EtchError, match="m0"):
        requant.infer({"axis": 1, "qmin": -128, "qmax": 127}, acc, Value("m0", (3,), "int32"),
                      Value("s", (3,), "int32"))
