"""The ops of a float model that the tensor engine runs in hardware (`etch inspect`).

--target verilog quantises the model to the integer graph (passes/quantize_activations.py)
and maps it onto the engine (passes/plan_engine.py). These ops come out as engine layers:
convolutions and matrix products with constant weights, their bias/scale/BatchNorm folds
and ReLU/Clip clamps, residual adds, pools, views, and one-input elementwise functions
(256-entry tables). Every other op (Softmax, LayerNormalization, a MatMul of two
activations, ...) still compiles: it runs on the host, between engine segments, and the
artifact's manifest says which nodes run where and why. Imported integer ops (QDQ,
QLinear*) map the same way after import.
"""

from compiler.ops import ELEMENTWISE

LAYERS = frozenset({
    "Conv", "Gemm", "MatMul", "BatchNormalization", "Relu", "Clip", "Add", "Sub", "Mul", "Div",
    "MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean",
    "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout",
    "QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "MatMulInteger",
    "etch.QGemm", "etch.QConv", "etch.QFused", "etch.Requantize", "etch.QAdd",
    "etch.QSumPool", "etch.Table", "etch.Clamp",
})
# one-input elementwise functions become tables
SUPPORTED_OPS = LAYERS | frozenset(ELEMENTWISE)
