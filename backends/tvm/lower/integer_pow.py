"""Pow with an integer base and a computed integer exponent, exact like numpy (wrapping).

x ** y = prod_k (bit k of y ? x ** 2**k : 1). As one scalar expression each square repeats
the previous one twice (TVM expands shared subexpressions, so the tree grows as 2**bits);
here each square is its own TE stage `square<k>` reading the last, and the final stage
multiplies the squares that y's bits select. A negative y gives the truncated real power
(1 or -1 for |x| = 1, else 0). Every other Pow (a float base, a float or small constant
exponent) is an ordinary elementwise kernel (`scalar._pow`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tvm import te, tirx

from backends.tvm.lower.context import LowerCtx
from backends.tvm.lower.epilogue import lower_elementwise
from backends.tvm.lower.scalar import UNROLLED_POW
from compiler.ir import Node


def _needs_stages(ctx: LowerCtx, node: Node) -> bool:
    x, y = node.inputs[:2]
    if np.dtype(ctx.dtype(x)).kind not in "iu" or np.dtype(ctx.dtype(y)).kind not in "iu":
        return False
    e = ctx.const(y)
    return e is None or e.size != 1 or not -UNROLLED_POW <= int(e.reshape(())) <= UNROLLED_POW


def lower_pow(ctx: LowerCtx, node: Node) -> None:
    """Pow: the staged integer kernel where it is needed, else an elementwise kernel."""
    if not _needs_stages(ctx, node):
        lower_elementwise(ctx, node)
        return
    out = node.outputs[0]
    shape, dtype = ctx.shape(out), ctx.dtype(out)
    signed = np.dtype(dtype).kind == "i"
    bits = np.dtype(dtype).itemsize * 8 - (1 if signed else 0)
    ops = ctx.operands(node.inputs[:2])

    def compute(*ts: te.Tensor) -> te.Tensor:
        squares = [te.compute(shape, lambda *i: ops.load(ts, i)[0].astype(dtype), name="square0")]
        for k in range(1, bits):
            squares.append(te.compute(shape, _square(squares[-1]), name=f"square{k}"))

        def body(*i: tirx.Expr) -> tirx.Expr:
            x, y = (v.astype(dtype) for v in ops.load(ts, i))
            return _power(x, y, [sq(*i) for sq in squares], signed)

        return te.compute(shape, body, name="epilogue")

    ctx.bind(node, ctx.emit(compute, ops.exprs, node, "elementwise"))


def _square(prev: te.Tensor):
    return lambda *i: prev(*i) * prev(*i)


def _power(x: tirx.Expr, y: tirx.Expr, squares: Sequence[tirx.Expr], signed: bool) -> tirx.Expr:
    """prod_k (bit k of y ? squares[k] : 1), with the negative-exponent rule."""
    dtype = str(x.ty.dtype)
    one, zero = tirx.const(1, dtype), tirx.const(0, dtype)
    acc = one
    for k, sq in enumerate(squares):
        bit = tirx.bitwise_and(tirx.shift_right(y, tirx.const(k, dtype)), one)
        acc = acc * tirx.Select(bit == one, sq, one)
    if not signed:
        return acc
    odd = tirx.bitwise_and(y, one) == one
    negative = tirx.Select(x == one, one, tirx.Select(x == -one, tirx.Select(odd, -one, one),
                                                      zero))
    return tirx.Select(y < zero, negative, acc)
