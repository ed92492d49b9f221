"""Direct N-d Conv and ConvTranspose for what the tiled kernels of `conv.py` do not take: a
computed (non-constant) weight or bias, 3 or more spatial dims, 1-D ConvTranspose, and the
integer convolutions (ConvInteger, QLinearConv; `qlinear.py` finishes those).

One reduction per output element over (input channels of its group, kernel taps), window
positions bounds-checked in place (no padded copy). The geometry is the reference's own
(`compiler.ops.conv.conv_window`, `conv_transpose_geometry`), so both agree on auto_pad,
output_shape and output_padding. ConvTranspose gathers: output position p takes tap k from
input i = (p + pad - k * dilation) / stride where that divides exactly and lies inside.
These kernels are plain reductions (the cpu Fallback rule parallelises their outer loops):
correct for any shape, not tuned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tvm import relax, te, tirx

from backends.tvm.lower.context import LowerCtx, accumulator, cast
from backends.tvm.lower.epilogue import Epilogue
from compiler.ir import Node
from compiler.ops.conv import conv_transpose_geometry, conv_window

Expr = tirx.Expr
# An input's zero point at a channel (None: no zero point): x - zero_x, w - zero_w.
Zero = Callable[[Expr], Expr] | None


@dataclass(frozen=True)
class Geometry:
    """A convolution's window along each spatial dim; `transpose` for ConvTranspose."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    begin: tuple[int, ...]
    groups: int
    transpose: bool


def geometry(attrs: dict, xshape: tuple, wshape: tuple, transpose: bool) -> Geometry:
    """The Geometry of a Conv (transpose=False) or ConvTranspose node."""
    rank = len(xshape) - 2
    strides = tuple(attrs.get("strides") or [1] * rank)
    groups = int(attrs.get("group", 1))
    if transpose:
        kernel, dil, begin, _ = conv_transpose_geometry(attrs, xshape, wshape)
        return Geometry(kernel, strides, tuple(dil), tuple(begin), groups, True)
    win = conv_window(attrs, xshape, wshape)
    return Geometry(win.kernel, win.strides, win.dilations, win.begin, groups, False)


def accumulate(xt: te.Tensor, wt: te.Tensor, geo: Geometry, oshape: tuple, acc_dtype: str,
               x_zero: Zero = None, w_zero: Zero = None) -> te.Tensor:
    """The convolution's sum, [N, OC, *out], in `acc_dtype` (operands cast to it first)."""
    xshape = [int(d) for d in xt.shape]
    icg = xshape[1] // geo.groups
    ocg = oshape[1] // geo.groups
    rc = te.reduce_axis((0, icg), "rc")
    taps = [te.reduce_axis((0, k), f"rk{i}") for i, k in enumerate(geo.kernel)]

    def body(n: Expr, oc: Expr, *pos: Expr) -> Expr:
        c = oc // ocg * icg + rc
        src, inside = _source(geo, pos, taps, xshape[2:])
        x = xt(n, c, *src).astype(acc_dtype)
        if x_zero is not None:
            x = x - x_zero(c).astype(acc_dtype)
        w = (wt(c, oc % ocg, *taps) if geo.transpose else wt(oc, rc, *taps)).astype(acc_dtype)
        if w_zero is not None:
            w = w - w_zero(oc).astype(acc_dtype)
        zero = tirx.const(0, acc_dtype)
        return te.sum(tirx.if_then_else(inside, x * w, zero), axis=[rc, *taps])

    return te.compute(oshape, body, name="anchor")


def _source(geo: Geometry, pos: Sequence[Expr], taps: Sequence, sizes: Sequence[int]
            ) -> tuple[list[Expr], Expr]:
    """Input coordinates read by output `pos` at `taps`, clamped inside, and whether the
    read is a real input element (not padding, nor a ConvTranspose gap)."""
    src, conds = [], []
    for p, k, s, d, b, size in zip(pos, taps, geo.strides, geo.dilations, geo.begin, sizes):
        if geo.transpose:
            num = p + b - k * d
            i = tirx.floordiv(num, s)
            conds += [num >= 0, tirx.floormod(num, s) == 0, i < size]
        else:
            i = p * s - b + k * d
            conds += [i >= 0, i < size]
        src.append(tirx.max(tirx.min(i, size - 1), 0))
    return src, tirx.all(*conds)


def conv_direct(ctx: LowerCtx, node: Node, inputs: list[str], attrs: dict, out: str,
                epi: Epilogue, transpose: bool) -> relax.Expr:
    """A float Conv/ConvTranspose of any rank with computed operands, then the epilogue."""
    x, w = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 and inputs[2] else ""
    oshape, dtype = ctx.shape(out), ctx.dtype(x)
    geo = geometry(attrs, ctx.shape(x), ctx.shape(w), transpose)
    extra = [ctx.expr(bias)] if bias else []

    def compute(xt: te.Tensor, wt: te.Tensor, *rest: te.Tensor) -> te.Tensor:
        acc = accumulate(xt, wt, geo, oshape, accumulator(dtype))
        bt, others = (rest[0], rest[1:]) if bias else (None, rest)

        def finish(*i: Expr) -> Expr:
            y = cast(acc(*i), dtype)
            return epi.apply(y + bt(i[1]) if bt is not None else y, i, others)

        return te.compute(oshape, finish, name="epilogue")

    return ctx.emit(compute, [ctx.expr(x), ctx.expr(w), *extra, *epi.exprs], node, "direct_conv")
