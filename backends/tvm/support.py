"""The ops the TVM backend builds (cpu, cuda; edge shares the lowering). Imported by
`etch inspect`, so it imports nothing heavy: the list is written out, and
tests/backends/test_tvm_ops.py checks it equals `backends.tvm.lower.LOWERINGS`."""

ELEMENTWISE_OPS = frozenset({
    "Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Exp", "Log", "Sqrt", "Erf", "Neg", "Abs",
    "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Softplus", "Not", "Cast", "Clip",
    "HardSigmoid", "HardSwish", "Gelu", "Elu", "Selu", "Add", "Sub", "Mul", "Div", "Mod", "Pow",
    "Max", "Min", "Sum", "Mean", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
    "And", "Or", "Xor", "Where", "Sin", "Cos", "Softsign", "Mish", "ThresholdedRelu", "IsNaN",
    "CastLike",
})

SUPPORTED_OPS = ELEMENTWISE_OPS | frozenset({
    "Identity", "Dropout", "Reshape", "Flatten", "Squeeze", "Unsqueeze",
    "Conv", "ConvTranspose", "Gemm", "MatMul",
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LRN", "LpPool",
    "ArgMax", "ArgMin", "GatherElements", "Trilu", "CumSum", "OneHot", "TopK",
    "BatchNormalization", "LayerNormalization", "Softmax", "LogSoftmax",
    "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceSumSquare", "ReduceL1",
    "ReduceL2", "ReduceProd", "ReduceLogSum", "ReduceLogSumExp", "InstanceNormalization",
    "Transpose", "Concat", "Split", "Slice", "Gather", "Expand", "Tile", "Pad", "DepthToSpace",
    "SpaceToDepth", "Einsum",
    "etch.Fused",
    "etch.QGemm", "etch.QConv", "etch.Requantize", "etch.QAdd", "etch.QSumPool", "etch.Table",
    "etch.Clamp", "etch.QFused", "QuantizeLinear", "DequantizeLinear", "etch.Dequant",
    "etch.LutGemm",
    "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv",
})

# Element types TVM stores and computes here. ONNX's other numeric types (float8, float8e8m0,
# float6, float4, int4/uint4, int2/uint2) have no byte-addressed TVM storage or no working
# casts in TVM 0.27: a graph that computes with them is refused at compile time. (Constant
# int4 weights under DequantizeLinear are widened to int8 codes by passes.absorb_qdq first.)
DTYPES = frozenset({"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                    "uint64", "float16", "bfloat16", "float32", "float64"})


def error_line(e: BaseException) -> str:
    """The line of a TVM (or other foreign) exception that says what failed: TVM's reports
    end with it, after a traceback."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {(lines[-1] if lines else '')[:300]}"
