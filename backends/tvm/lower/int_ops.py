"""The TVM lowerings of etch's quantisation ops (compiler/ops/etch_int.py is their meaning).

`INT_LOWERINGS` joins `backends.tvm.lower.LOWERINGS`:
- etch.QGemm (`int_gemm`), etch.QConv (`int_conv`): exact int32 dot products, x86 int8
  tensor intrinsics on CPU; each renders the etch.Requantize that is its accumulator's only
  reader in the same kernel (that Requantize's lowering then finds its output bound);
- etch.Requantize, etch.QAdd, etch.QSumPool, etch.Table, etch.Clamp, QuantizeLinear,
  DequantizeLinear (`int_eltwise`): the reference formulas in TIR;
- etch.Dequant (`int_dequant`): weight-only dequantisation, computed inside the
  Conv/Gemm/MatMul kernel that reads it, so the library holds the integer codes only.
  `DEQUANT_LOWERINGS` (etch.Dequant, and Conv/Gemm/MatMul/etch.Fused, which it sends to
  the float lowerings unless their weight is an etch.Dequant) also joins LOWERINGS.
MaxPool, Reshape, Transpose, Concat, Flatten on int8 run on the float lowerings, which are
dtype-generic.
"""

from __future__ import annotations

from backends.tvm.lower.int_conv import lower_qconv
from backends.tvm.lower.int_dequant import DEQUANT_LOWERINGS
from backends.tvm.lower.int_eltwise import (
                                            lower_clamp,
                                            lower_dequantize_linear,
                                            lower_qadd,
                                            lower_qsumpool,
                                            lower_quantize_linear,
                                            lower_requantize,
                                            lower_table,
)
from backends.tvm.lower.int_gemm import lower_qgemm

INT_LOWERINGS = {
    "etch.QGemm": lower_qgemm, "etch.QConv": lower_qconv,
    "etch.Requantize": lower_requantize, "etch.QAdd": lower_qadd,
    "etch.QSumPool": lower_qsumpool, "etch.Table": lower_table, "etch.Clamp": lower_clamp,
    "QuantizeLinear": lower_quantize_linear, "DequantizeLinear": lower_dequantize_linear,
}

__all__ = ["DEQUANT_LOWERINGS", "INT_LOWERINGS"]
