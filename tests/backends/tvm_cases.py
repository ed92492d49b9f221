"""Small hand-built ONNX models, one per op family, for the TVM backend tests.

Each builder returns (ModelProto, inputs). A family model runs many ops side by side, each
into its own graph output, so one compile covers the family and a failure names the op.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

Case = tuple[onnx.ModelProto, dict[str, np.ndarray]]
F = TensorProto.FLOAT


class ModelBuilder:
    """Collects nodes, initializers and outputs; output shapes come from ONNX inference."""

    def __init__(self, name: str, seed: int = 0) -> None:
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.feeds: dict[str, np.ndarray] = {}
        self.outputs: list[str] = []

    def input(self, name: str, data: np.ndarray) -> str:
        dtype = helper.np_dtype_to_tensor_dtype(data.dtype)
        self.inputs.append(helper.make_tensor_value_info(name, dtype, list(data.shape)))
        self.feeds[name] = data
        return name

    def const(self, name: str, data: np.ndarray | float | list) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(data), name))
        return name

    def weight(self, name: str, *shape: int, scale: float = 0.3) -> str:
        return self.const(name, (self.rng.standard_normal(shape) * scale).astype(np.float32))

    def op(self, op: str, inputs: list[str], out: str, output: bool = True, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{op}_{out}", **attrs))
        if output:
            self.outputs.append(out)
        return out

    def build(self, opset: int = 17) -> Case:
        graph = helper.make_graph(self.nodes, self.name, self.inputs,
                                  [helper.make_empty_tensor_value_info(o) for o in self.outputs],
                                  initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        typed = {v.name: v for v in model.graph.value_info}
        del model.graph.output[:]
        model.graph.output.extend(typed[o] for o in self.outputs)
        onnx.checker.check_model(model, full_check=True)
        return model, dict(self.feeds)


def _rand(rng: np.random.Generator, *shape: int, low: float = -3, high: float = 3) -> np.ndarray:
    return rng.uniform(low, high, shape).astype(np.float32)


def unary() -> Case:
    m = ModelBuilder("unary")
    x = m.input("x", _rand(m.rng, 2, 3, 4, 5))
    p = m.input("p", _rand(m.rng, 2, 3, 4, 5, low=0.1, high=4))
    for op in ("Relu", "Sigmoid", "Tanh", "Exp", "Erf", "Neg", "Abs", "Floor", "Ceil", "Round",
               "Sign", "Softplus", "HardSwish", "Identity"):
        m.op(op, [x], op.lower())
    for op in ("Log", "Sqrt", "Reciprocal"):
        m.op(op, [p], op.lower())
    m.op("LeakyRelu", [x], "leaky", alpha=0.1)
    m.op("HardSigmoid", [x], "hsig", alpha=0.3, beta=0.4)
    m.op("Elu", [x], "elu", alpha=0.7)
    m.op("Selu", [x], "selu")
    m.op("Clip", [x, m.const("lo", np.float32(-1)), m.const("hi", np.float32(2))], "clip")
    m.op("Clip", [x, "", m.const("hi6", np.float32(6))], "clip_hi")
    m.op("Cast", [x], "to_int", to=TensorProto.INT32)
    m.op("Cast", [m.op("Cast", [x], "xi", output=False, to=TensorProto.INT64)], "to_float", to=F)
    return m.build()


def gelu() -> Case:
    m = ModelBuilder("gelu")
    x = m.input("x", _rand(m.rng, 3, 17))
    m.op("Gelu", [x], "exact")
    m.op("Gelu", [x], "tanh", approximate="tanh")
    return m.build(opset=20)


def binary() -> Case:
    m = ModelBuilder("binary")
    a = m.input("a", _rand(m.rng, 2, 3, 4))
    b = m.input("b", _rand(m.rng, 3, 1))
    p = m.input("p", _rand(m.rng, 2, 3, 4, low=0.5, high=2))
    for op in ("Add", "Sub", "Mul", "Max", "Min"):
        m.op(op, [a, b], op.lower())
    m.op("Div", [a, m.op("Abs", [b], "absb", output=False)], "div")
    m.op("Pow", [p, m.const("two", np.float32(2))], "square")
    m.op("Pow", [p, m.const("e", np.float32(1.7))], "pow")
    m.op("Pow", [p, b], "pow_t")
    m.op("Add", [a, m.weight("w", 4)], "add_const")
    m.op("PRelu", [a, m.weight("slope", 3, 1)], "prelu")
    m.op("Sum", [a, b, p], "sum3")
    m.op("Mean", [a, b], "mean2")
    m.op("Max", [a, b, p], "max3")
    for op in ("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"):
        m.op(op, [m.op("Floor", [a], f"fa_{op}", output=False), m.const(f"z_{op}",
                                                                        np.float32(0))],
             op.lower())
    m.op("Where", [m.op("Greater", [a, b], "gt", output=False), a, b], "where")
    m.op("Not", ["gt"], "not")
    m.op("And", ["gt", m.op("Less", [a, p], "lt", output=False)], "and")
    m.op("Or", ["gt", "lt"], "or")
    m.op("Xor", ["gt", "lt"], "xor")
    return m.build()


def conv() -> Case:
    m = ModelBuilder("conv", seed=1)
    x = m.input("x", _rand(m.rng, 1, 8, 11, 13))
    m.op("Conv", [x, m.weight("w0", 16, 8, 3, 3), m.weight("b0", 16)], "plain", pads=[1, 1, 1, 1])
    m.op("Conv", [x, m.weight("w1", 12, 8, 3, 3)], "strided", strides=[2, 2], pads=[1, 0, 2, 1])
    m.op("Conv", [x, m.weight("w2", 8, 8, 3, 3)], "dilated", dilations=[2, 2], pads=[2, 2, 2, 2])
    m.op("Conv", [x, m.weight("w3", 12, 4, 3, 3)], "grouped", group=2, pads=[1, 1, 1, 1])
    m.op("Conv", [x, m.weight("w4", 8, 1, 3, 3), m.weight("b4", 8)], "depthwise", group=8,
         pads=[1, 1, 1, 1])
    m.op("Conv", [x, m.weight("w5", 16, 1, 3, 3)], "depthwise_s2", group=8, strides=[2, 2],
         pads=[1, 1, 1, 1])
    m.op("Conv", [x, m.weight("w6", 16, 8, 1, 1)], "pointwise")
    m.op("Conv", [x, m.weight("w7", 6, 8, 5, 5)], "same", auto_pad="SAME_UPPER", strides=[2, 2])
    m.op("Conv", [x, m.weight("w8", 10, 8, 1, 1)], "pointwise_s2", strides=[2, 2])
    y = m.input("y", _rand(m.rng, 1, 4, 9))
    m.op("Conv", [y, m.weight("w9", 6, 4, 3), m.weight("b9", 6)], "conv1d", pads=[1, 2],
         strides=[2])
    return m.build()


def conv_transpose() -> Case:
    m = ModelBuilder("conv_transpose", seed=2)
    x = m.input("x", _rand(m.rng, 1, 4, 5, 6))
    m.op("ConvTranspose", [x, m.weight("w0", 4, 6, 3, 3), m.weight("b0", 6)], "s2",
         strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])
    m.op("ConvTranspose", [x, m.weight("w1", 4, 3, 2, 2)], "grouped", group=2, strides=[2, 2])
    m.op("ConvTranspose", [x, m.weight("w2", 4, 5, 3, 3)], "s1_dil", dilations=[2, 1])
    return m.build()


def linear() -> Case:
    m = ModelBuilder("linear", seed=3)
    a = m.input("a", _rand(m.rng, 5, 12))
    m.op("Gemm", [a, m.weight("w0", 12, 20), m.weight("c0", 20)], "gemm")
    m.op("Gemm", [a, m.weight("w1", 10, 12), m.weight("c1", 1, 10)], "gemm_tb", transB=1,
         alpha=0.5, beta=2.0)
    m.op("Gemm", [m.input("at", _rand(m.rng, 12, 5)), m.weight("w2", 12, 7)], "gemm_ta",
         transA=1)
    m.op("Gemm", [a, m.input("bt", _rand(m.rng, 12, 6)), m.weight("c3", 5, 6)], "gemm_act",
         alpha=1.5)
    m.op("MatMul", [a, m.weight("w4", 12, 100)], "matmul_pad")  # N not a lane multiple
    x3 = m.input("x3", _rand(m.rng, 2, 3, 12))
    m.op("MatMul", [x3, m.weight("w5", 12, 16)], "matmul_3d")
    m.op("MatMul", [x3, m.input("y3", _rand(m.rng, 2, 12, 9))], "batched")
    m.op("MatMul", [m.input("q", _rand(m.rng, 2, 1, 4, 8)), m.input("k", _rand(m.rng, 3, 8, 5))],
         "broadcast")
    m.op("MatMul", [m.input("v", _rand(m.rng, 12)), m.weight("w8", 12, 16)], "vec_mat")
    m.op("MatMul", [x3, m.input("u", _rand(m.rng, 12))], "mat_vec")
    return m.build()


def pool_norm() -> Case:
    m = ModelBuilder("pool_norm", seed=4)
    x = m.input("x", _rand(m.rng, 1, 6, 9, 10))
    m.op("MaxPool", [x], "maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    m.op("MaxPool", [x], "maxpool_ceil", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)
    m.op("MaxPool", [x], "maxpool_dil", kernel_shape=[2, 2], dilations=[2, 2])
    m.op("AveragePool", [x], "avgpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    m.op("AveragePool", [x], "avgpool_incl", kernel_shape=[3, 3], strides=[2, 2],
         pads=[1, 1, 1, 1], count_include_pad=1)
    m.op("AveragePool", [x], "avgpool_ceil", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)
    m.op("GlobalAveragePool", [x], "gap")
    m.op("GlobalMaxPool", [x], "gmp")
    m.op("LRN", [x], "lrn", size=3, alpha=1e-2, beta=0.75, bias=2.0)
    m.op("BatchNormalization", [x, m.weight("g", 6), m.weight("bb", 6), m.weight("mu", 6),
                                m.const("var", np.linspace(0.5, 2, 6).astype(np.float32))],
         "bn", epsilon=1e-3)
    s = m.input("s", _rand(m.rng, 2, 5, 16))
    m.op("LayerNormalization", [s, m.weight("ln_g", 16), m.weight("ln_b", 16)], "ln")
    m.op("LayerNormalization", [s, m.weight("ln_g2", 5, 16)], "ln2", axis=-2)
    m.op("Softmax", [s], "softmax")
    m.op("Softmax", [s], "softmax_ax1", axis=1)
    m.op("LogSoftmax", [s], "logsoftmax")
    return m.build()


def reduce() -> Case:
    m = ModelBuilder("reduce", seed=5)
    x = m.input("x", _rand(m.rng, 2, 3, 4, 5))
    m.op("ReduceMean", [x], "mean_hw", axes=[2, 3])
    m.op("ReduceSum", [x, m.const("rs_axes", np.array([1], np.int64))], "sum_c", keepdims=0)
    m.op("ReduceMax", [x], "max_all", keepdims=0)
    m.op("ReduceMin", [x], "min_neg", axes=[-1])
    m.op("ReduceSumSquare", [x], "sumsq", axes=[0, 2])
    m.op("ReduceL2", [x], "l2", axes=[3], keepdims=0)
    return m.build()


def image_rows() -> Case:
    """Reductions and elementwise ops over image maps whose rows no vector divides: the
    squeeze-and-excitation block's global means over 14 x 14 and 7 x 7 (one row each,
    `rows.flat_rows`) and its gate over 28 x 28, beside operands that broadcast along the
    columns only (not merged with the rows, `context.merged_tail`)."""
    m = ModelBuilder("image_rows", seed=7)
    x = m.input("x", _rand(m.rng, 1, 12, 14, 14))
    y = m.input("y", _rand(m.rng, 2, 8, 7, 7))
    z = m.input("z", _rand(m.rng, 1, 12, 28, 28))
    m.op("ReduceMean", [x], "mean_hw", axes=[2, 3])
    m.op("ReduceMax", [x], "max_hw", axes=[2, 3], keepdims=0)
    m.op("ReduceSum", [y, m.const("chw", np.array([1, 2, 3], np.int64))], "sum_chw")
    m.op("GlobalAveragePool", [y], "gap7")
    m.op("GlobalMaxPool", [y], "gmp7")
    gate = m.op("Sigmoid", [m.op("ReduceMean", [z], "zmean", axes=[2, 3], output=False)], "g",
                output=False)
    m.op("Mul", [z, gate], "gate")
    m.op("Add", [z, z], "whole")
    m.op("Mul", [m.input("hw", _rand(m.rng, 1, 1, 28, 28)), z], "per_position")
    m.op("Sub", [z, m.weight("chan", 12, 1, 1)], "chan3")
    m.op("Mul", [z, m.input("rows", _rand(m.rng, 1, 12, 28, 1))], "per_row")
    m.op("Add", [y, m.input("b7", _rand(m.rng, 2, 8, 1, 1))], "gate7")
    return m.build()


def tensor() -> Case:
    m = ModelBuilder("tensor", seed=6)
    x = m.input("x", _rand(m.rng, 2, 3, 4, 5))
    m.op("Flatten", [x], "flatten", axis=2)
    m.op("Reshape", [x, m.const("shape", np.array([6, -1], np.int64))], "reshape")
    m.op("Transpose", [x], "transpose", perm=[0, 3, 1, 2])
    m.op("Concat", [x, m.op("Neg", [x], "nx", output=False), m.weight("cw", 2, 3, 4, 2)],
         "concat", axis=3)
    m.op("Squeeze", [m.op("Slice", [x, *(m.const(f"sl{k}", np.array(v, np.int64)) for k, v in
                                        enumerate(([1], [2], [0], [1])))], "s0", output=False),
                     m.const("sq_axes", np.array([0], np.int64))], "squeeze")
    m.op("Unsqueeze", [x, m.const("us_axes", np.array([1, -1], np.int64))], "unsqueeze")
    m.op("Slice", [x, m.const("st", np.array([-1, 1], np.int64)),
                   m.const("en", np.array([-5, 4], np.int64)), m.const("ax", np.array([3, 1],
                                                                                      np.int64)),
                   m.const("sp", np.array([-2, 1], np.int64))], "slice_neg")
    m.op("Gather", [x, m.const("idx", np.array([[2, -1], [0, 1]], np.int64))], "gather", axis=2)
    m.op("Gather", [x, m.input("ids", np.array([1, 0, 1], np.int64))], "gather_dyn", axis=0)
    # a scalar index (ViT's x[:, 0]) and an int64 constant beyond int32
    m.op("Gather", [x, m.const("idx0", np.array(1, np.int64))], "gather_scalar", axis=1)
    m.op("Add", [m.input("big", np.array([1, -2, 3], np.int64)),
                 m.const("big_c", np.array([3 << 40, -(1 << 33), 5], np.int64))], "add_int64")
    m.op("Expand", [m.input("e", _rand(m.rng, 3, 1)), m.const("es", np.array([2, 3, 4],
                                                                             np.int64))],
         "expand")
    m.op("Tile", [m.input("t", _rand(m.rng, 2, 3)), m.const("rep", np.array([2, 3], np.int64))],
         "tile")
    for mode in ("constant", "reflect", "edge"):
        m.op("Pad", [x, m.const(f"pads_{mode}", np.array([0, 0, 1, 2, 0, 1, 2, 1], np.int64)),
                     m.const(f"pv_{mode}", np.float32(0.5)) if mode == "constant" else ""],
             f"pad_{mode}", mode=mode)
    split = m.const("split", np.array([1, 3, 1], np.int64))
    m.nodes.append(helper.make_node("Split", [x, split], ["sp0", "sp1", "sp2"], axis=3,
                                    name="split"))
    m.outputs += ["sp0", "sp1", "sp2"]
    return m.build()


FAMILIES: dict[str, Callable[[], Case]] = {
    "unary": unary, "gelu": gelu, "binary": binary, "conv": conv,
    "conv_transpose": conv_transpose, "linear": linear, "pool_norm": pool_norm,
    "reduce": reduce, "image_rows": image_rows, "tensor": tensor,
}
