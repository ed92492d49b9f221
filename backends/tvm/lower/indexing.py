"""Ops that compute or follow indices: ArgMax, ArgMin, GatherElements, Trilu, CumSum, OneHot,
TopK (constant k), and the arg-reducer MaxPool's Indices output shares.

`arg_reducer` is a TE reducer over (index, value) pairs: the larger value wins (the smaller
for ArgMin), a tie goes to the first index (the last with select_last_index). It is
commutative, so TVM may split the reduction. An index below zero marks "nothing yet", so a
row of -inf still yields its first position. TopK selects one rank at a time: the k-th
largest is the element with exactly k-1 elements ahead of it in (value desc, index asc)
order, counted by a reduction (O(n^2) per row: small rows, as ONNX's cases and typical
top-k heads have).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tvm import relax, te, tirx

from backends.tvm.lower.context import LowerCtx
from compiler.ir import Node

Expr = tirx.Expr


def arg_reducer(largest: bool, last: bool) -> te.CommReducer:
    """Reducer over (index int64, value): see the module docstring."""
    def better(i0: Expr, v0: Expr, i1: Expr, v1: Expr) -> Expr:
        wins = v1 > v0 if largest else v1 < v0
        tie = tirx.all(v1 == v0, i1 > i0 if last else i1 < i0)
        return tirx.any(i0 < 0, tirx.all(i1 >= 0, tirx.any(wins, tie)))

    def combine(x: tuple, y: tuple) -> tuple:
        take = better(x[0], x[1], y[0], y[1])
        return tirx.Select(take, y[0], x[0]), tirx.Select(take, y[1], x[1])

    def identity(idx_dtype: str, val_dtype: str) -> tuple:
        return tirx.const(-1, idx_dtype), tirx.const(0, val_dtype)

    return te.comm_reducer(combine, identity, name="argmax" if largest else "argmin")


def _axis(node: Node, rank: int) -> int:
    return int(node.attrs.get("axis", 0)) % max(rank, 1)


def lower_arg(ctx: LowerCtx, node: Node) -> None:
    """ArgMax / ArgMin along `axis` (keepdims, select_last_index), int64 indices."""
    x, out = node.inputs[0], node.outputs[0]
    xshape, oshape = ctx.shape(x), ctx.shape(out)
    axis = _axis(node, len(xshape))
    keep = bool(node.attrs.get("keepdims", 1))
    reducer = arg_reducer(node.op == "ArgMax", bool(node.attrs.get("select_last_index", 0)))

    def compute(xt: te.Tensor) -> te.Tensor:
        r = te.reduce_axis((0, xshape[axis]), "r")

        def body(*i: Expr) -> tuple:
            lead = list(i[:axis])
            rest = list(i[axis + 1:] if keep else i[axis:])
            return reducer((r.var.astype("int64"), xt(*lead, r, *rest)), axis=r)

        idx, _ = te.compute(oshape, body, name="anchor")
        return te.compute(oshape, lambda *i: idx(*i), name="epilogue")

    ctx.bind(node, ctx.emit(compute, [ctx.expr(x)], node, "reduce"))


def lower_gather_elements(ctx: LowerCtx, node: Node) -> None:
    """out[i] = data[i with i[axis] replaced by indices[i]] (negative indices wrap)."""
    data, indices, out = node.inputs[0], node.inputs[1], node.outputs[0]
    dshape = ctx.shape(data)
    axis = _axis(node, len(dshape))
    dim = dshape[axis]

    def compute(dt: te.Tensor, it: te.Tensor) -> te.Tensor:
        def body(*i: Expr) -> Expr:
            j = it(*i).astype("int64")
            j = tirx.Select(j < 0, j + dim, j)
            return dt(*i[:axis], j, *i[axis + 1:])
        return te.compute(ctx.shape(out), body, name="epilogue")

    ctx.bind(node, ctx.emit(compute, [ctx.expr(data), ctx.expr(indices)], node, "injective"))


def _scalar_operand(ctx: LowerCtx, node: Node, k: int, default: int) -> tuple[list, object]:
    """Input k, a one-element integer (absent: `default`), as (relax inputs, reader): the
    reader maps the kernel's extra TE tensors to its value, an immediate when constant."""
    name = node.inputs[k] if len(node.inputs) > k else ""
    data = ctx.const(name) if name else np.asarray(default)
    if data is not None:
        value = tirx.const(int(data.reshape(-1)[0]), "int64")
        return [], lambda ts: value
    rank = len(ctx.shape(name))
    return [ctx.expr(name)], lambda ts: ts[0](*[0] * rank).astype("int64")


def lower_trilu(ctx: LowerCtx, node: Node) -> None:
    """Upper (upper=1) or lower triangle of the last two dims, diagonal offset k (a constant,
    or read at run time)."""
    x, out = node.inputs[0], node.outputs[0]
    extra, k_of = _scalar_operand(ctx, node, 1, 0)
    upper = bool(node.attrs.get("upper", 1))

    def compute(xt: te.Tensor, *ts: te.Tensor) -> te.Tensor:
        k = k_of(ts)

        def body(*i: Expr) -> Expr:
            diag = i[-1].astype("int64") - i[-2].astype("int64")
            keep = diag >= k if upper else diag <= k
            return tirx.Select(keep, xt(*i), tirx.const(0, xt.dtype))
        return te.compute(ctx.shape(out), body, name="epilogue")

    ctx.bind(node, ctx.emit(compute, [ctx.expr(x), *extra], node, "injective"))


def lower_cumsum(ctx: LowerCtx, node: Node) -> None:
    """CumSum (exclusive, reverse) as a reduction over each prefix. The axis may be computed:
    then every axis' sum is formed and the run-time axis picks one (rank times the work; an
    exported model's axis is a constant, which builds one sum)."""
    x = node.inputs[0]
    shape = ctx.shape(x)
    rank = len(shape)
    extra, axis_of = _scalar_operand(ctx, node, 1, 0)
    const_axis = ctx.const(node.inputs[1])
    axes = [int(const_axis.reshape(-1)[0]) % rank] if const_axis is not None else range(rank)
    exclusive, reverse = bool(node.attrs.get("exclusive", 0)), bool(node.attrs.get("reverse", 0))

    def prefix_sum(xt: te.Tensor, axis: int) -> te.Tensor:
        r = te.reduce_axis((0, shape[axis]), f"r{axis}")

        def body(*i: Expr) -> Expr:
            p = i[axis]
            taken = (r > p if exclusive else r >= p) if reverse else \
                (r < p if exclusive else r <= p)
            v = xt(*i[:axis], r, *i[axis + 1:])
            return te.sum(tirx.Select(taken, v, tirx.const(0, xt.dtype)), axis=r)

        return te.compute(shape, body, name=f"anchor{axis}")

    def compute(xt: te.Tensor, *ts: te.Tensor) -> te.Tensor:
        sums = {a: prefix_sum(xt, a) for a in axes}
        axis = axis_of(ts)
        axis = tirx.Select(axis < 0, axis + rank, axis)

        def pick(*i: Expr) -> Expr:
            value = sums[axes[-1]](*i)
            for a in list(axes)[:-1]:
                value = tirx.Select(axis == a, sums[a](*i), value)
            return value

        return te.compute(shape, pick, name="epilogue")

    ctx.bind(node, ctx.emit(compute, [ctx.expr(x), *extra], node, "reduce"))


def lower_one_hot(ctx: LowerCtx, node: Node) -> None:
    """OneHot(indices, depth, values): values[1] where index == position along the new
    axis (negative indices count from depth), values[0] elsewhere."""
    indices, values, out = node.inputs[0], node.inputs[2], node.outputs[0]
    oshape = ctx.shape(out)
    axis = int(node.attrs.get("axis", -1)) % len(oshape)
    depth = oshape[axis]

    def compute(it: te.Tensor, vt: te.Tensor) -> te.Tensor:
        def body(*i: Expr) -> Expr:
            j = it(*i[:axis], *i[axis + 1:]).astype("int64")
            j = tirx.Select(j < 0, j + depth, j)
            return tirx.Select(j == i[axis].astype("int64"), vt(1), vt(0))
        return te.compute(oshape, body, name="epilogue")

    ctx.bind(node, ctx.emit(compute, [ctx.expr(indices), ctx.expr(values)], node, "injective"))


def lower_topk(ctx: LowerCtx, node: Node) -> None:
    """TopK with a constant k (largest/smallest, sorted): values and int64 indices."""
    x, (values, indices) = node.inputs[0], node.outputs[:2]
    xshape, oshape = ctx.shape(x), ctx.shape(values or indices)
    axis = int(node.attrs.get("axis", -1)) % len(xshape)
    largest = bool(node.attrs.get("largest", 1))
    n = xshape[axis]

    def compute(xt: te.Tensor) -> list[te.Tensor]:
        at = lambda i, j: xt(*i[:axis], j, *i[axis + 1:])
        ra = te.reduce_axis((0, n), "ra")

        def ahead(*i: Expr) -> Expr:  # rank of element i[axis]: how many come before it
            j, v = i[axis], at(i, i[axis])
            w = at(i, ra)
            before = tirx.any(w > v if largest else w < v, tirx.all(w == v, ra < j))
            return te.sum(tirx.Select(before, tirx.const(1, "int32"), tirx.const(0, "int32")),
                          axis=ra)

        rank = te.compute(xshape, ahead, name="rank")
        rb = te.reduce_axis((0, n), "rb")
        pick = arg_reducer(largest=False, last=False)

        def select(*i: Expr) -> tuple:
            hit = rank(*i[:axis], rb, *i[axis + 1:]) == i[axis].astype("int32")
            key = tirx.Select(hit, tirx.const(0, "int32"), tirx.const(1, "int32"))
            return pick((rb.var.astype("int64"), key), axis=rb)

        idx, _ = te.compute(oshape, select, name="anchor")
        val = te.compute(oshape, lambda *i: at(i, idx(*i)), name="epilogue")
        return [val, te.compute(oshape, lambda *i: idx(*i), name="indices")]

    both = ctx.emit(compute, [ctx.expr(x)], node, "topk")
    ctx.bind(node, *(ctx.bb.emit(relax.TupleGetItem(both, k)) for k in range(2)))


def spatial_index(pos: Sequence[Expr], sizes: Sequence[int], column_major: bool) -> Expr:
    """The flat position of `pos` in an array of `sizes` (row- or column-major)."""
    order = range(len(sizes)) if not column_major else range(len(sizes) - 1, -1, -1)
    flat: Expr = tirx.const(0, "int64")
    for d in order:
        flat = flat * int(sizes[d]) + pos[d].astype("int64")
    return flat

