"""The TVM lowerings of etch's quantisation ops (compiler/ops/etch_int.py and
compiler/ops/etch_qfused.py are their meaning).

`INT_LOWERINGS` joins `backends.tvm.lower.LOWERINGS`:
- etch.QFused (`lower_qfused`): the group the integer fusion pass recorded, one kernel: the
  anchor's kernel (`int_gemm`, `int_conv`, `int_pool`) with the group's output unit
  (requantise, table, residual add) in its epilogue (`int_epilogue`);
- etch.QGemm, etch.QConv, etch.QSumPool alone: the same kernels storing the int32
  accumulator;
- etch.Requantize, etch.QAdd, etch.QMul, etch.Table, etch.ChannelTable, etch.Clamp, QuantizeLinear, DequantizeLinear
  alone (`int_eltwise`): the reference formulas in TIR;
- etch.QLayerNorm, etch.QSoftmax (`int_norm`): integer row kernels (exact sums, an exact
  integer square root, one rounding division per element);
- etch.Dequant (`int_dequant`): weight-only dequantisation, computed inside the
  Conv/Gemm/MatMul kernel that reads it, so the library holds the integer codes only.
  `DEQUANT_LOWERINGS` (etch.Dequant, and Conv/Gemm/MatMul/etch.Fused, which it sends to
  the float lowerings unless their weight is an etch.Dequant) also joins LOWERINGS.
MaxPool, Reshape, Transpose, Concat, Flatten on int8 run on the float lowerings, which are
dtype-generic. Nothing here decides fusion or rewrites ops: the passes did, on the IR.
"""

from __future__ import annotations

from backends.tvm.lower.context import LowerCtx
from backends.tvm.lower.int_conv import lower_qconv, qconv
from backends.tvm.lower.int_dequant import DEQUANT_LOWERINGS
from backends.tvm.lower.int_eltwise import (
    lower_channel_table,
    lower_clamp,
    lower_dequantize_linear,
    lower_qadd,
    lower_qmul,
    lower_quantize_linear,
    lower_requantize,
    lower_table,
)
from backends.tvm.lower.int_epilogue import IntOut
from backends.tvm.lower.int_gemm import lower_qgemm, qgemm
from backends.tvm.lower.int_norm import lower_qlayernorm, lower_qsoftmax
from backends.tvm.lower.int_pool import lower_qsumpool, qsumpool
from compiler.ir import Node
from compiler.ops.etch_qfused import group

ANCHORS = {"etch.QGemm": qgemm, "etch.QConv": qconv, "etch.QSumPool": qsumpool}


def lower_qfused(ctx: LowerCtx, node: Node) -> None:
    """etch.QFused: the anchor's kernel, rendering the group's output unit in its epilogue."""
    g = group(node.attrs, node.inputs, node.outputs[0])
    ANCHORS[g.anchor](ctx, IntOut(node, g, node.outputs[0]), list(g.anchor_inputs),
                      g.anchor_attrs)


INT_LOWERINGS = {
    "etch.QFused": lower_qfused,
    "etch.QGemm": lower_qgemm, "etch.QConv": lower_qconv, "etch.QSumPool": lower_qsumpool,
    "etch.Requantize": lower_requantize, "etch.QAdd": lower_qadd, "etch.QMul": lower_qmul,
    "etch.Table": lower_table, "etch.ChannelTable": lower_channel_table,
    "etch.Clamp": lower_clamp,
    "etch.QLayerNorm": lower_qlayernorm, "etch.QSoftmax": lower_qsoftmax,
    "QuantizeLinear": lower_quantize_linear, "DequantizeLinear": lower_dequantize_linear,
}

__all__ = ["DEQUANT_LOWERINGS", "INT_LOWERINGS"]
