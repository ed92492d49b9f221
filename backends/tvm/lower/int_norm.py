"""etch.QLayerNorm and etch.QSoftmax: the integer row ops (compiler/ops/etch_qnorm.py is
their meaning), each one row kernel like the float LayerNormalization/Softmax (`norm.py`).

Integer sums are associative, so the vectorised partial sums of `rows.row_reduce` give the
reference's bits in any order; the rest is per row or per element:
- `isqrt`: `compiler.reference.isqrt` (float64 root of the exact radicand, floored, then one
  correction each way);
- `div_round`: `compiler.reference.div_round` ((|a| + (b >> 1)) / b on magnitudes, the sign
  restored: round half away from zero), the quotient from a float64 division corrected by
  its exact remainder (see the function: equal wherever the 8-bit result can tell).
Row sums are int32 when no row can overflow it (n * 128^2 < 2^31), else int64; everything
after them is int64. The kernels are "layer_norm" / "softmax" row kernels (the CPU rule
`RowReduction` schedules them) with the rows hint when the reduced axes are the last.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from tvm import te, tirx

from backends.tvm.lower.context import LowerCtx
from backends.tvm.lower.fastmath import dtype_of
from backends.tvm.lower.rows import row_reduce
from backends.tvm.schedules import tiles
from compiler.errors import EtchError
from compiler.ir import Node
from compiler.ops.common import axis_of
from compiler.ops.etch_qnorm import TABLE_SIZE

Expr = tirx.Expr
INT32_SUM_LIMIT = 1 << 31


def _i64(v: int | Expr) -> Expr:
    return tirx.const(v, "int64") if isinstance(v, int) else v.astype("int64")


def let(value: Expr, body: Callable[[Expr], Expr], name: str = "t") -> Expr:
    """body(v) with v bound to `value` once (tirx.Let): an expression used several times is
    computed once, and the expression tree stays linear (nested Selects over repeated
    operands grow exponentially, and so does LLVM's time to compile them)."""
    var = tirx.Var(name, dtype_of(value))
    return tirx.Let(var, value, body(var))


def isqrt(r: Expr) -> Expr:
    """floor(sqrt(r)) of an int64 0 <= r < 2^62, exactly (`compiler.reference.isqrt`)."""
    one = _i64(1)

    def correct(rr: Expr) -> Expr:
        return let(tirx.floor(tirx.sqrt(rr.astype("float64"))).astype("int64"), lambda s0: let(
            tirx.Select(s0 * s0 > rr, s0 - one, s0),
            lambda s: tirx.Select((s + one) * (s + one) <= rr, s + one, s), "s"), "s0")

    return let(r, correct, "r")


def div_round(a: Expr, b: Expr, inv: Expr | None = None) -> Expr:
    """round_half_away(a / b) for int64 a and b > 0 (`compiler.reference.div_round`) where
    the result is saturated to 8 bits after: the magnitude quotient (|a| + (b >> 1)) / b as
    a float64 division (vectorised; x86 has no vector integer division), or a product with
    `inv` = 1.0 / b (float64, computed once per row: no division per element), truncated,
    then one correction by the exact remainder. The float quotient is within 1 of the true
    one while that is below 2^50 (relative error < 2^-51 divided, < 2^-50 by the
    reciprocal), so the result is exact there; a larger quotient is off by a few units at
    most and saturates the same way."""
    def rounded(a: Expr, b: Expr) -> Expr:
        def quotient(num: Expr) -> Expr:
            est = num.astype("float64") * inv if inv is not None else \
                num.astype("float64") / b.astype("float64")
            return let(est.astype("int64"), lambda q: let(num - q * b, lambda r: let(
                tirx.Select(r < _i64(0), q - _i64(1), tirx.Select(r >= b, q + _i64(1), q)),
                lambda mag: tirx.Select(a < _i64(0), -mag, mag), "mag"), "rem"), "q")

        return let(tirx.abs(a) + tirx.shift_right(b, _i64(1)), quotient, "num")

    return let(a, lambda av: let(b, lambda bv: rounded(av, bv), "b"), "a")


def _saturate(y: Expr, zero_point: Expr, attrs: dict, dtype: str) -> Expr:
    y = y + zero_point
    y = tirx.min(tirx.max(y, _i64(int(attrs["qmin"]))), _i64(int(attrs["qmax"])))
    return y.astype(dtype)


def _row_const(ctx: LowerCtx, node: Node, k: int, inner: tuple[int, ...]) -> np.ndarray:
    data = ctx.const(node.inputs[k]) if len(node.inputs) > k else None
    if data is None:
        raise EtchError(f"node {node.name}: {node.op} input {k} must be a constant")
    return np.ascontiguousarray(np.broadcast_to(data.astype(np.int64), inner))


def lower_qlayernorm(ctx: LowerCtx, node: Node) -> None:
    """etch.QLayerNorm over dims [axis:]: S and SS per row, D per row, then per element."""
    x, out = node.inputs[0], node.outputs[0]
    shape, dtype, at = ctx.shape(x), ctx.dtype(out), node.attrs
    axis = axis_of(int(at.get("axis", -1)), len(shape))
    rows, inner = shape[:axis], shape[axis:]
    n = int(np.prod(inner))
    acc_t = "int32" if n * 128 * 128 < INT32_SUM_LIMIT else "int64"
    lanes = tiles.row_lanes(inner, ctx.lanes)
    # the node's numbers, read from one operand (`LowerCtx.scalars`): 2 x sqrt_bits, eps,
    # shift, zero point
    numbers = ctx.scalars([2 * int(at["sqrt_bits"]), int(at["eps"]), int(at["shift"]),
                           int(at.get("zero_point", 0))])
    zeros = (0,) * len(inner)

    def compute(xt: te.Tensor, gt: te.Tensor, bt: te.Tensor, st: te.Tensor) -> te.Tensor:
        k2, eps, shift, zero_point = (st[k] for k in range(4))
        code = lambda r, j: xt(*r, *j).astype(acc_t)
        s = row_reduce("sum", rows, inner, code, te.sum, lanes)
        ss = row_reduce("sumsq", rows, inner, lambda r, j: code(r, j) * code(r, j), te.sum,
                        lanes)

        def denominator(*i: Expr) -> Expr:
            total = _i64(s(*i))
            radicand = tirx.shift_left(_i64(n) * _i64(ss(*i)) - total * total, k2)
            return tirx.max(isqrt(radicand + eps), _i64(1))

        d = te.compute(rows + (1,) * len(inner), denominator, name="denominator")
        inv = te.compute(rows + (1,) * len(inner), lambda *r: tirx.const(1.0, "float64") / (
            tirx.shift_left(d(*r), shift).astype("float64")), name="reciprocal")

        def body(*i: Expr) -> Expr:
            lead, j = tuple(i[:axis]) + zeros, i[axis:]
            num = _i64(n) * _i64(xt(*i)) - _i64(s(*lead))
            dl = d(*lead)
            y = div_round(num * gt(*j) + bt(*j) * dl, tirx.shift_left(dl, shift),
                          inv(*lead))
            return _saturate(y, zero_point, at, dtype)

        return te.compute(shape, body, name="epilogue")

    params = [ctx.array(_row_const(ctx, node, k, inner)) for k in (1, 2)]
    ctx.bind(node, ctx.emit(compute, [ctx.expr(x), *params, numbers], node, "layer_norm",
                            rows=axis,
                            row_lanes=lanes))


def lower_qsoftmax(ctx: LowerCtx, node: Node) -> None:
    """etch.QSoftmax along one axis: the row's max kept code, the table's exps and their
    exact sum, then one division per element."""
    x, out = node.inputs[0], node.outputs[0]
    shape, dtype, at = ctx.shape(x), ctx.dtype(out), node.attrs
    axis = axis_of(int(at.get("axis", -1)), len(shape))
    table = ctx.const(node.inputs[1])
    if table is None or table.shape != (TABLE_SIZE,):
        raise EtchError(f"node {node.name}: etch.QSoftmax's table must be a constant of "
                        f"{TABLE_SIZE} entries")
    n = shape[axis]
    last = axis == len(shape) - 1
    lanes = tiles.row_lanes((n,), ctx.lanes) if last else 1
    row = _Row(shape, axis, "int32" if n * int(table.max()) < INT32_SUM_LIMIT else "int64",
               lanes)
    masked = len(node.inputs) > 2 and bool(node.inputs[2])
    # the node's numbers, read from one operand (`LowerCtx.scalars`)
    numbers = ctx.scalars([int(at["mult"]), int(at["shift"]), int(at.get("zero_point", 0))])

    def compute(xt: te.Tensor, tt: te.Tensor, st: te.Tensor, *mt: te.Tensor) -> te.Tensor:
        mult, shift, zero_point = (st[k] for k in range(3))
        code = lambda i: xt(*i).astype("int32")
        keep = _keep(row, mt[0]) if masked else (lambda i: tirx.const(True, "bool"))
        mx = row.reduce("rowmax", lambda i: tirx.Select(keep(i), code(i), tirx.const(
            -TABLE_SIZE, "int32")), te.max)
        top = tirx.const(TABLE_SIZE - 1, "int32")

        def exp(i: tuple) -> Expr:
            idx = tirx.min(tirx.max(code(i) - mx(*row.of(i), 0) + top, tirx.const(0, "int32")),
                           top)
            return tirx.Select(keep(i), tt[idx], tirx.const(0, "int32"))

        exps = te.compute(shape, lambda *i: exp(i), name="exps")
        z = row.reduce("rowsum", lambda i: exps(*i).astype(row.sum_t), te.sum)
        divisor = lambda r: tirx.shift_left(_i64(z(*r, 0)), shift)
        inv = te.compute(row.rows + (1,), lambda *r: tirx.const(1.0, "float64") / divisor(
            r[:-1]).astype("float64"), name="reciprocal")

        def body(*i: Expr) -> Expr:
            r = row.of(i)
            y = div_round(_i64(exps(*i)) * mult, divisor(r), inv(*r, 0))
            return _saturate(y, zero_point, at, dtype)

        return te.compute(shape, body, name="epilogue")

    inputs = [ctx.expr(x), ctx.array(table.astype(np.int32)), numbers]
    if masked:
        mask = ctx.const(node.inputs[2])
        if mask is None:
            raise EtchError(f"node {node.name}: etch.QSoftmax's mask must be a constant")
        inputs.append(ctx.array(np.ascontiguousarray(np.broadcast_to(mask != 0, shape),
                                                     np.uint8)))
    hints = {"rows": axis, "row_lanes": lanes} if last else {}
    ctx.bind(node, ctx.emit(compute, inputs, node, "softmax", **hints))


class _Row:
    """Reductions along one axis of `shape`: rows are the other axes, in order."""

    def __init__(self, shape: tuple[int, ...], axis: int, sum_t: str, lanes: int) -> None:
        self.shape, self.axis, self.sum_t, self.lanes = shape, axis, sum_t, lanes
        self.rows = shape[:axis] + shape[axis + 1:]

    def at(self, r: tuple, j: tuple) -> tuple:
        return tuple(r[:self.axis]) + tuple(j) + tuple(r[self.axis:])

    def of(self, i: tuple) -> tuple:
        return tuple(i[:self.axis]) + tuple(i[self.axis + 1:])

    def reduce(self, name: str, value: Callable[[tuple], Expr],
               reducer: Callable) -> te.Tensor:
        """reducer over the axis of value(position), shaped rows + (1,)."""
        return row_reduce(name, self.rows, (self.shape[self.axis],),
                          lambda r, j: value(self.at(r, j)), reducer, self.lanes)


def _keep(row: _Row, mt: te.Tensor) -> Callable[[tuple], Expr]:
    """Whether position i takes part: not masked, or its row has no unmasked entry."""
    kept = lambda i: mt(*i) == tirx.const(0, "uint8")
    any_kept = row.reduce("rowkept", lambda i: kept(i).astype("int32"), te.max)
    return lambda i: tirx.any(kept(i), any_kept(*row.of(i), 0) == tirx.const(0, "int32"))
