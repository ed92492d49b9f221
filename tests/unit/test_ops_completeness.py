"""The op table is complete: every op has reference semantics, every required op exists,
and the named op sets name real ops."""

from __future__ import annotations

import inspect

import pytest

from compiler import ops

# The ops etch must import and run (ONNX names; com.microsoft for the contrib op).
LISTED_OPS = frozenset({
    "Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Pow", "Sqrt",
    "Exp", "Erf", "Tanh", "Sigmoid", "Relu", "LeakyRelu", "Clip", "HardSigmoid", "HardSwish",
    "Gelu", "BatchNormalization", "LayerNormalization", "Softmax", "LogSoftmax", "MaxPool",
    "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LRN", "Dropout", "Flatten",
    "Reshape", "Transpose", "Concat", "Split", "Slice", "Gather", "Squeeze", "Unsqueeze",
    "Expand", "Sum", "Mean", "Max", "Min", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin",
    "ReduceProd", "Cast", "Identity", "Where", "Neg", "Abs", "Reciprocal", "Floor", "Ceil",
    "Log", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or",
    "Shape", "Size", "ConstantOfShape", "Range", "Tile", "Pad", "Resize", "MatMulInteger",
    "ConvInteger", "QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul",
    "com.microsoft.MatMulNBits", "Einsum", "Trilu", "CumSum", "TopK", "etch.LutGemm",
})

NAMED_SETS = {name: getattr(ops, name) for name in (
    "UNARY_ELEMENTWISE", "BINARY_ELEMENTWISE", "ELEMENTWISE", "ACTIVATIONS", "REDUCTION",
    "LINEAR", "SHAPE_ONLY")}


def test_listed_ops_are_registered() -> None:
    missing = sorted(LISTED_OPS - set(ops.registry()))
    assert not missing, f"required ops missing from the registry: {missing}"


@pytest.mark.parametrize("name", sorted(ops.registry()))
def test_op_has_reference(name: str) -> None:
    opdef = ops.registry()[name]
    assert opdef.name == name
    assert callable(opdef.run), f"{name} has no reference run"
    params = list(inspect.signature(opdef.run).parameters)
    assert params and params[0] == "attrs", f"{name}.run must take attrs first"
    for hook in (opdef.infer, opdef.upgrade):
        assert hook is None or callable(hook)
    assert all(isinstance(k, int) and k >= 0 for k in opdef.shape_inputs)


@pytest.mark.parametrize("set_name", sorted(NAMED_SETS))
def test_named_op_sets_name_registered_ops(set_name: str) -> None:
    unknown = sorted(NAMED_SETS[set_name] - set(ops.registry()))
    assert not unknown, f"{set_name} names ops with no definition: {unknown}"
