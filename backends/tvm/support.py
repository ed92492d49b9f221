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
    "SpaceToDepth", "Einsum", "Resize",
    "etch.Fused",
    "etch.QGemm", "etch.QConv", "etch.Requantize", "etch.QAdd", "etch.QMul", "etch.QSumPool",
    "etch.Table",
    "etch.ChannelTable", "etch.Clamp", "etch.QFused", "etch.QLayerNorm", "etch.QSoftmax", "QuantizeLinear",
    "DequantizeLinear", "etch.Dequant",
    "etch.LutGemm",
    "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv",
})

# Element types TVM stores and computes in.
NATIVE = frozenset({"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                    "uint64", "float16", "bfloat16", "float32", "float64"})
# ONNX's narrow types, which TVM 0.27 cannot store byte-addressed or cast to: carried in a
# wider type that holds each of their values exactly (backends/tvm/lower/narrow.py rounds
# where a value of one is made; the executor converts at the artifact's edge).
STORAGE = {
    "int4": "int8", "int2": "int8", "uint4": "uint8", "uint2": "uint8",
    **{t: "float32" for t in ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2",
                              "float8_e5m2fnuz", "float6_e2m3fn", "float6_e3m2fn",
                              "float4_e2m1fn", "float8_e8m0fnu")},
}
# Every element type a graph may hold on the TVM targets.
DTYPES = NATIVE | frozenset(STORAGE)


def storage(dtype: str) -> str:
    """The type TVM holds values of element type `dtype` in."""
    return STORAGE.get(dtype, dtype)


def error_line(e: BaseException) -> str:
    """The line of a TVM (or other foreign) exception that says what failed: TVM's reports
    end with it, after a traceback."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {(lines[-1] if lines else '')[:300]}"
