"""Resize (Upsample is read as a Resize at import) with constant roi, scales and sizes.

The arithmetic is the op table's (`compiler.ops.resize.plan`): per resized axis, innermost
first, each output position is a weighted sum of input taps (nearest: one, linear: two,
cubic: four), with tf_crop_and_resize's positions outside the roi set to
`extrapolation_value`. Here each axis is one kernel reading its taps and weights from
constant tables, computed in the input's float type as the reference computes it. Refused:
a roi, scales or sizes computed at run time (bind the graph inputs they come from with
--bind), and integer inputs (the reference interpolates them in float64 and truncates;
LLVM's fused multiply-adds round differently, so a result that is an integer in exact
arithmetic could truncate one lower).
"""

from __future__ import annotations

import numpy as np
from tvm import relax, te, tirx

from backends.tvm.lower.context import LowerCtx
from compiler.errors import EtchError
from compiler.ir import Node
from compiler.ops.resize import AxisPlan, plan


def lower_resize(ctx: LowerCtx, node: Node) -> None:
    x, out = node.inputs[0], node.outputs[0]
    consts = []
    for k, what in ((1, "roi"), (2, "scales"), (3, "sizes")):
        name = node.inputs[k] if k < len(node.inputs) else ""
        if name and ctx.const(name) is None:
            raise EtchError(f"node {node.name}: Resize {what} computed at run time is not "
                            f"built (bind the graph inputs it comes from with --bind)")
        consts.append(ctx.const(name) if name else None)
    dtype = ctx.dtype(x)
    if not dtype.startswith(("float", "bfloat")):
        raise EtchError(f"node {node.name}: Resize of {dtype} is not built on this target "
                        f"(float inputs only)")
    shape = ctx.shape(x)
    y: relax.Expr = ctx.expr(x)
    steps = plan(node.attrs, shape, *consts)
    for n, p in enumerate(steps):
        shape = tuple(len(p.taps) if a == p.axis else d for a, d in enumerate(shape))
        y = _axis(ctx, node, y, p, shape, dtype)
    if not steps:  # nothing resized: a copy
        y = _axis(ctx, node, y, None, shape, dtype)
    ctx.bind(node, y)
    assert shape == ctx.shape(out), (shape, ctx.shape(out))


def _axis(ctx: LowerCtx, node: Node, y: relax.Expr, p: AxisPlan | None, shape: tuple,
          work: str) -> relax.Expr:
    """One kernel: `y` resized along `p.axis` (a copy when `p` is None), in `work` type."""
    fill = float(node.attrs.get("extrapolation_value", 0.0))
    tables = [] if p is None else [ctx.array(p.taps.astype(np.int32)),
                                   ctx.array(p.weights.astype(work))]
    if p is not None and p.outside is not None:
        tables.append(ctx.array(p.outside.astype(np.int8)))

    def compute(xt: te.Tensor, *tt: te.Tensor) -> te.Tensor:
        def body(*i: tirx.Expr) -> tirx.Expr:
            if p is None:
                return xt(*i)
            j, acc = i[p.axis], None
            for t in range(p.taps.shape[1]):
                src = [tt[0][j, t] if a == p.axis else v for a, v in enumerate(i)]
                term = tt[1][j, t] * xt(*src)
                acc = term if acc is None else acc + term
            if len(tt) > 2:
                acc = tirx.Select(tt[2][j] != 0, tirx.const(fill, work), acc)
            return acc
        return te.compute(shape, body, name="epilogue")

    return ctx.emit(compute, [y, *tables], node, "injective")
