"""etch.LutGemm (compiler/ops/etch_lut.py): one kernel per node, the table look-up GEMM.

The lowering flattens the activation's leading axes into rows M and emits the portable
kernel (`schedules/lut_kernels.py`: the reference's steps as scalar TIR, tables built inside
the kernel), tagged `etch.kind` = "lut_gemm" with its spec; the schedule rules replace it
with the vector table kernel of the target (`schedules/lut_cpu.py`: vpshufb on x86, tbl on
aarch64; `schedules/lut_cuda.py`: CUDA). The layout, table block and table mode are the
node's attributes: the pass chose them, this renders them.
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from backends.tvm.lower.context import LowerCtx, sanitize
from backends.tvm.schedules.lut_kernels import KIND, LutSpec, portable_kernel
from compiler.ir import Node
from compiler.ops.etch_lut import Params


def lower_lut_gemm(ctx: LowerCtx, node: Node) -> None:
    """etch.LutGemm(x [..., K], w, scale[, zero]) -> [..., N]."""
    p = Params.of(node.attrs)
    xs = ctx.shape(node.inputs[0])
    m = int(np.prod(xs[:-1], dtype=np.int64))
    zero = node.inputs[3] if len(node.inputs) > 3 else ""
    spec = LutSpec.make(dict(node.attrs), m, bool(zero))
    ctx.kernels += 1
    label = sanitize(node.name)
    name = f"{KIND}_{ctx.kernels}" + (f"_{label}" if label else "")
    gv = ctx.bb.add_func(portable_kernel(spec).with_attr("global_symbol", name), name)
    args = [ctx.reshape(ctx.expr(node.inputs[0]), (m, p.k))]
    args += [ctx.expr(name) for name in node.inputs[1:] if name]
    y = ctx.bb.emit(relax.call_tir(gv, args, relax.TensorType((m, p.n), "float32")))
    ctx.bind(node, ctx.reshape(y, ctx.shape(node.outputs[0])))
