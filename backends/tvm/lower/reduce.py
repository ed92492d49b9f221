"""Reduce{Sum,Mean,Max,Min,Prod,SumSquare,L1,L2,LogSum,LogSumExp} over constant axes.

Semantics are the reference's (compiler/ops/reduce.py): results keep the input dtype, an
integer mean truncates, an empty reduction gives the identity (-inf for Max, +inf for Min,
0 for sums, 1 for Prod; TVM's own max/min start from the dtype's finite extremes, so etch
uses its own reducers, which also keep NaN as numpy does; bool Max/Min are any/all).
LogSumExp subtracts the finite maximum first. A reduction over the trailing dims is a row
reduction (vectorised; `rows.py`), any other a plain one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from tvm import te, tirx

from backends.tvm.lower import fastmath
from backends.tvm.lower.context import LowerCtx, accumulator, cast
from backends.tvm.lower.rows import flat_rows, row_reduce
from backends.tvm.schedules import tiles
from compiler.errors import EtchError
from compiler.ir import Node

Expr = tirx.Expr
_SUMS = ("ReduceSum", "ReduceMean", "ReduceSumSquare", "ReduceL2", "ReduceL1", "ReduceLogSum",
         "ReduceLogSumExp")
OPS = (*_SUMS, "ReduceMax", "ReduceMin", "ReduceProd")


def extreme(dtype: object, high: bool) -> Expr:
    """+inf / -inf for floats, else the dtype's largest / smallest value."""
    dtype = str(dtype)
    if dtype.startswith(("float", "bfloat")):
        return tirx.const(float("inf") if high else float("-inf"), dtype)
    return tirx.max_value(dtype) if high else tirx.min_value(dtype)


# max/min keep NaN (fastmath.fmax/fmin, as the reference's numpy) and start from -inf/+inf.
MAX = te.comm_reducer(fastmath.fmax, lambda t: extreme(t, False), name="nan_max")
MIN = te.comm_reducer(fastmath.fmin, lambda t: extreme(t, True), name="nan_min")
PROD = te.comm_reducer(lambda x, y: x * y, lambda t: tirx.const(1, t), name="prod")
# bool max/min (TVM has no extremes for bool): any / all
ANY = te.comm_reducer(lambda x, y: tirx.Or(x, y), lambda t: tirx.const(False, t), name="any")
ALL = te.comm_reducer(lambda x, y: tirx.And(x, y), lambda t: tirx.const(True, t), name="all")


def _reducer(ctx: LowerCtx, op: str, dtype: str) -> Callable:
    if dtype == "bool" and op in ("ReduceMax", "ReduceMin"):
        return ANY if op == "ReduceMax" else ALL
    if op in ("ReduceMax", "ReduceMin") and ctx.lanes == 1:
        return te.max if op == "ReduceMax" else te.min  # dlight's GPU rules match only these
    return {"ReduceMax": MAX, "ReduceMin": MIN, "ReduceProd": PROD}.get(op, te.sum)


def reduce_axes(ctx: LowerCtx, node: Node, rank: int) -> list[int]:
    """The axes a Reduce* node reduces (attribute or constant input; empty means all)."""
    axes = node.attrs.get("axes")
    if len(node.inputs) > 1 and node.inputs[1]:
        data = ctx.const(node.inputs[1])
        if data is None:
            raise EtchError(f"node {node.name}: computed reduction axes are not supported")
        axes = data.tolist()
    if not axes:
        return [] if node.attrs.get("noop_with_empty_axes", 0) else list(range(rank))
    return sorted(int(a) % rank for a in axes)


def _term(op: str, v: Expr, shift: Expr | None) -> Expr:
    """What each element contributes to the reduction."""
    if op in ("ReduceSumSquare", "ReduceL2"):
        return v * v
    if op == "ReduceL1":
        return tirx.abs(v)
    if op == "ReduceLogSumExp":
        return tirx.exp(v - shift)
    return v


def _finish(op: str, acc: Expr, count: int, shift: Expr | None) -> Expr:
    """The result from the reduction's value."""
    dtype = str(acc.ty.dtype)
    if op == "ReduceMean":
        if dtype.startswith("float"):
            return acc * tirx.const(1.0 / count, dtype) if count else acc / tirx.const(0, dtype)
        return tirx.truncdiv(acc, tirx.const(max(count, 1), dtype))
    if op == "ReduceL2":
        return tirx.sqrt(acc)
    if op == "ReduceLogSum":
        return tirx.log(acc)
    if op == "ReduceLogSumExp":
        return tirx.log(acc) + shift
    return acc


def lower_reduce(ctx: LowerCtx, node: Node) -> None:
    x, out = node.inputs[0], node.outputs[0]
    xshape, oshape = ctx.shape(x), ctx.shape(out)
    axes = reduce_axes(ctx, node, len(xshape))
    keep = bool(node.attrs.get("keepdims", 1))
    count = int(np.prod([xshape[a] for a in axes])) if axes else 1
    op = node.op
    first = axes[0] if axes else len(xshape)
    rows = bool(axes) and axes == list(range(first, len(xshape))) and op != "ReduceLogSumExp"
    lanes = tiles.row_lanes(xshape[first:], ctx.lanes) if rows else 1
    xin = ctx.expr(x)
    if rows:  # the trailing dims are contiguous: one row (`flat_rows`)
        xshape, xin = flat_rows(ctx, xin, xshape, first)

    def compute(xt: te.Tensor) -> te.Tensor:
        # Sums of 16-bit floats accumulate in float32 (as numpy's pairwise sums); each term
        # and the result round to the type, as the reference's numpy does.
        dt = str(xt.dtype)
        acc_t = accumulator(dt) if op in _SUMS else dt
        source = _source(xshape, axes, keep)
        shift = None
        if op == "ReduceLogSumExp":  # the finite maximum, else 0
            shift = _plain(oshape, axes, xshape, lambda i, r: xt(*source(i, r)), MAX, "max")
        at = lambda i: _finite(shift(*i)) if shift is not None else None
        if rows:
            acc = row_reduce("anchor", xshape[:first], xshape[first:],
                             lambda r, j: cast(_term(op, xt(*r, *j), None), acc_t),
                             _reducer(ctx, op, acc_t), lanes, oshape, tail=True)
        else:
            acc = _plain(oshape, axes, xshape, lambda i, r: cast(
                _term(op, xt(*source(i, r)), at(i)), acc_t), _reducer(ctx, op, acc_t), "anchor")
        return te.compute(oshape, lambda *i: _finish(op, cast(acc(*i), dt), count, at(i)),
                          name="epilogue")

    hints = {"rows": first, "row_lanes": lanes, "row_tail": 1} if rows else {}
    ctx.bind(node, ctx.emit(compute, [xin], node, "reduce", **hints))


def _finite(m: Expr) -> Expr:
    return tirx.Select(tirx.isfinite(m), m, tirx.const(0, str(m.ty.dtype)))


def _source(xshape: tuple, axes: list[int], keep: bool):
    """Maps (output index, reduce vars) to the input index."""
    def at(i: Sequence[Expr], red: Sequence) -> list:
        it, rt, full = iter(i), iter(red), []
        for a in range(len(xshape)):
            if a in axes:
                full.append(next(rt))
                if keep:
                    next(it)
            else:
                full.append(next(it))
        return full
    return at


def _plain(oshape: tuple, axes: list[int], xshape: tuple, value: Callable, reducer: Callable,
           name: str) -> te.Tensor:
    """reducer over `axes` of value(output index, reduce vars) as one TE stage."""
    def body(*i: Expr) -> Expr:
        red = [te.reduce_axis((0, xshape[a]), f"{name}_r{a}") for a in axes]
        v = value(i, red)
        return reducer(v, axis=red) if red else v
    return te.compute(oshape, body, name=name)
