"""etch.QSumPool: int32 window sums of (x - x_zero), a tap in the padding adding 0, alone or
as the anchor of an etch.QFused group (then the group's output unit runs on each sum in the
same kernel: `int_epilogue`; the division by the window size is in the requantisation's
multiplier).

The kernel is "qsumpool": a reduction block "anchor" and, for a group, the elementwise
blocks "epilogue" (requantise) and "post" (table, residual add; `int_epilogue`), computed
inside the loop over the sums (`schedules/int_cpu.py`); a bare QSumPool is the reduction
alone, named "epilogue".
"""

from __future__ import annotations

from tvm import te, tirx

from backends.tvm.lower.context import LowerCtx
from backends.tvm.lower.int_epilogue import IntOut, int_epilogue
from compiler.errors import EtchError
from compiler.ir import Node
from compiler.ops.etch_int import pool_window

Expr = tirx.Expr


def qsumpool(ctx: LowerCtx, dst: IntOut, inputs: list[str], attrs: dict) -> None:
    """Window sums of inputs[0] (minus the zero point inputs[1]), then dst's output unit."""
    x = inputs[0]
    xshape, oshape = ctx.shape(x), ctx.shape(dst.value)
    win = pool_window(attrs, xshape)
    z = 0
    if len(inputs) > 1 and inputs[1]:
        zero = ctx.const(inputs[1])
        if zero is None or zero.size != 1:
            raise EtchError(f"node {dst.node.name}: etch.QSumPool's x_zero must be a constant "
                            "scalar")
        z = int(zero.reshape(()))
    reduce = [te.reduce_axis((0, k), f"r{i}") for i, k in enumerate(win.kernel)]
    sizes = xshape[2:]
    epi = int_epilogue(ctx, dst, None, len(oshape), 1, oshape) if dst.group else None

    def compute(xt: te.Tensor, *extra: te.Tensor) -> te.Tensor:
        def body(n: Expr, c: Expr, *o: Expr) -> Expr:
            pos = [o[i] * win.strides[i] - win.begin[i] + r * win.dilations[i]
                   for i, r in enumerate(reduce)]
            inside = tirx.all(*[tirx.all(p >= 0, p < s) for p, s in zip(pos, sizes)])
            v = xt(n, c, *pos).astype("int32") - tirx.const(z, "int32")
            return te.sum(tirx.if_then_else(inside, v, tirx.const(0, "int32")), axis=reduce)
        if epi is None:
            return te.compute(oshape, body, name="epilogue")
        acc = te.compute(oshape, body, name="anchor")
        return epi.compute(oshape, acc, extra)

    inputs_ = [ctx.expr(x), *(epi.exprs if epi else [])]
    ctx.bind(dst.node, ctx.emit(compute, inputs_, dst.node, "qsumpool"))


def lower_qsumpool(ctx: LowerCtx, node: Node) -> None:
    """A bare etch.QSumPool: the int32 sums."""
    qsumpool(ctx, IntOut(node, None, node.outputs[0]), list(node.inputs), node.attrs)
