"""Reductions and normalisations: Reduce*, Softmax, LogSoftmax, LayerNormalization,
BatchNormalization (inference).

Softmax subtracts the row maximum before exp (ONNX's definition is exact either way; this
keeps exp in range). LayerNormalization computes the mean, then the variance of x - mean
(two passes: the one-pass E[x^2] - E[x]^2 loses precision when |mean| >> std).
BatchNormalization folds its four constants into one scale and shift at compile time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from tvm import te, tirx

from backends.tvm.lower import fastmath
from backends.tvm.lower.context import LowerCtx
from backends.tvm.lower.epilogue import Epilogue, add_operand
from backends.tvm.lower.rows import row_reduce
from compiler.errors import EtchError
from compiler.ir import Node

_REDUCERS = {"ReduceSum": te.sum, "ReduceMean": te.sum, "ReduceMax": te.max,
             "ReduceMin": te.min, "ReduceSumSquare": te.sum, "ReduceL2": te.sum,
             "ReduceL1": te.sum}


def _reducer(ctx: LowerCtx, op: str, dtype: object) -> Callable:
    """The reducer of a Reduce* op (max/min keep NaN, as the reference does: `ctx.max_reducer`)."""
    red = _REDUCERS[op]
    return red if red is te.sum else ctx.max_reducer(dtype, minimum=red is te.min)


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


def lower_reduce(ctx: LowerCtx, node: Node) -> None:
    x, out = node.inputs[0], node.outputs[0]
    xshape, oshape = ctx.shape(x), ctx.shape(out)
    axes = reduce_axes(ctx, node, len(xshape))
    keep = bool(node.attrs.get("keepdims", 1))
    count = int(np.prod([xshape[a] for a in axes])) if axes else 1
    op = node.op

    def compute(xt: te.Tensor) -> te.Tensor:
        red = [te.reduce_axis((0, xshape[a]), f"r{a}") for a in axes]

        def source(i: tuple) -> list:
            it, rt, full = iter(i), iter(red), []
            for a in range(len(xshape)):
                if a in axes:
                    full.append(next(rt))
                    if keep:
                        next(it)
                else:
                    full.append(next(it))
            return full

        def body(*i: tirx.Expr) -> tirx.Expr:
            v = xt(*source(i))
            v = v * v if op in ("ReduceSumSquare", "ReduceL2") else v
            v = tirx.abs(v) if op == "ReduceL1" else v
            return _reducer(ctx, op, xt.dtype)(v, axis=red) if red else v

        acc = te.compute(oshape, body, name="anchor")

        def finish(*i: tirx.Expr) -> tirx.Expr:
            if op == "ReduceMean":
                return acc(*i) / tirx.const(count, xt.dtype)
            return tirx.sqrt(acc(*i)) if op == "ReduceL2" else acc(*i)

        return te.compute(oshape, finish, name="epilogue")

    if op not in _REDUCERS:
        raise EtchError(f"node {node.name}: {op} is not built by the TVM backend")
    first = axes[0] if axes else len(xshape)
    if axes and axes == list(range(first, len(xshape))):
        compute = _trailing_reduce(ctx, op, xshape, oshape, first, count)
        ctx.bind(node, ctx.emit(compute, [ctx.expr(x)], node, "reduce", rows=first))
        return
    ctx.bind(node, ctx.emit(compute, [ctx.expr(x)], node, "reduce"))


def _trailing_reduce(ctx: LowerCtx, op: str, xshape: tuple, oshape: tuple, first: int,
                     count: int) -> Callable:
    """A Reduce* over the trailing dims [first:] as a row reduction."""
    def value(r: Sequence, j: Sequence, xt: te.Tensor) -> tirx.Expr:
        v = xt(*r, *j)
        v = v * v if op in ("ReduceSumSquare", "ReduceL2") else v
        return tirx.abs(v) if op == "ReduceL1" else v

    def compute(xt: te.Tensor) -> te.Tensor:
        acc = row_reduce("anchor", xshape[:first], xshape[first:],
                         lambda r, j: value(r, j, xt), _reducer(ctx, op, xt.dtype), ctx.lanes,
                         oshape)

        def finish(*i: tirx.Expr) -> tirx.Expr:
            if op == "ReduceMean":
                return acc(*i) * tirx.const(1.0 / count, xt.dtype)
            return tirx.sqrt(acc(*i)) if op == "ReduceL2" else acc(*i)

        return te.compute(oshape, finish, name="epilogue")

    return compute


def lower_softmax(ctx: LowerCtx, node: Node) -> None:
    """Softmax / LogSoftmax along one axis (opset 13 semantics)."""
    x = node.inputs[0]
    shape = ctx.shape(x)
    axis = int(node.attrs.get("axis", -1)) % len(shape)
    log = node.op == "LogSoftmax"
    last = axis == len(shape) - 1
    lanes = ctx.lanes if last else 1  # rows are contiguous only along the last axis

    def compute(xt: te.Tensor) -> te.Tensor:
        rows = shape[:axis] + shape[axis + 1:]
        at = lambda r, j: tuple(r[:axis]) + tuple(j) + tuple(r[axis:])
        row_of = lambda i: tuple(i[:axis]) + tuple(i[axis + 1:])
        # a NaN in the row needs no NaN-aware max: exp(NaN - max) makes the sum NaN
        mx = row_reduce("rowmax", rows, (shape[axis],), lambda r, j: xt(*at(r, j)), te.max,
                        lanes)
        ex = row_reduce("rowsum", rows, (shape[axis],), lambda r, j: fastmath.exp(
            xt(*at(r, j)) - mx(*r, 0)), te.sum, lanes)
        if log:
            return te.compute(shape, lambda *i: xt(*i) - mx(*row_of(i), 0)
                              - tirx.log(ex(*row_of(i), 0)), name="epilogue")
        return te.compute(shape, lambda *i: fastmath.exp(xt(*i) - mx(*row_of(i), 0))
                          / ex(*row_of(i), 0), name="epilogue")

    hints = {"rows": axis} if last else {}
    ctx.bind(node, ctx.emit(compute, [ctx.expr(x)], node, "softmax", **hints))


def lower_layer_norm(ctx: LowerCtx, node: Node) -> None:
    """LayerNormalization over dims [axis:], with scale and optional bias."""
    for extra in node.outputs[1:]:
        if extra and (extra in ctx.graph.consumers() or extra in ctx.graph.outputs):
            raise EtchError(f"node {node.name}: LayerNormalization's mean/inv-std outputs "
                            f"are not built")
    x, out = node.inputs[0], node.outputs[0]
    shape = ctx.shape(x)
    axis = int(node.attrs.get("axis", -1)) % len(shape)
    eps = float(node.attrs.get("epsilon", 1e-5))
    inner = shape[axis:]
    count = int(np.prod(inner))
    epi = Epilogue(ctx.dtype(out))
    epi.steps.append(("Mul", {}, ["y", add_operand(epi, ctx, node.inputs[1])]))
    if len(node.inputs) > 2 and node.inputs[2]:
        epi.steps.append(("Add", {}, ["y", add_operand(epi, ctx, node.inputs[2])]))

    def compute(xt: te.Tensor, *extra: te.Tensor) -> te.Tensor:
        rows, inv = shape[:axis], tirx.const(1.0 / count, xt.dtype)
        zeros = (0,) * len(inner)
        mean = row_reduce("mean", rows, inner, lambda r, j: xt(*r, *j) * inv, te.sum,
                          ctx.lanes)
        var = row_reduce("var", rows, inner, lambda r, j: _sq(xt(*r, *j) - mean(*r, *zeros))
                         * inv, te.sum, ctx.lanes)
        lead = lambda i: tuple(i[:axis]) + zeros
        return te.compute(shape, lambda *i: epi.apply(
            (xt(*i) - mean(*lead(i))) / tirx.sqrt(var(*lead(i)) + tirx.const(eps, xt.dtype)),
            i, extra), name="epilogue")

    ctx.bind(node, ctx.emit(compute, [ctx.expr(x), *epi.exprs], node, "layer_norm", rows=axis))


def _sq(v: tirx.Expr) -> tirx.Expr:
    return v * v


def lower_batch_norm(ctx: LowerCtx, node: Node) -> None:
    """Inference BatchNormalization: y = x * scale + shift per channel (folded constants)."""
    x, out = node.inputs[0], node.outputs[0]
    consts = [ctx.const(n) for n in node.inputs[1:5]]
    if any(c is None for c in consts):
        raise EtchError(f"node {node.name}: BatchNormalization with computed statistics")
    gamma, beta, mean, var = (c.astype(np.float64) for c in consts)
    eps = float(node.attrs.get("epsilon", 1e-5))
    scale = gamma / np.sqrt(var + eps)
    shift = beta - mean * scale
    rank = len(ctx.shape(x))
    dtype = ctx.dtype(out)
    tail = (-1,) + (1,) * (rank - 2)
    epi = Epilogue(dtype)
    epi.steps = [("Mul", {}, ["y", add_operand(epi, ctx, data=scale.astype(dtype).reshape(tail))]),
                 ("Add", {}, ["y", add_operand(epi, ctx, data=shift.astype(dtype).reshape(tail))])]
    shape = ctx.shape(out)

    def compute(xt: te.Tensor, *extra: te.Tensor) -> te.Tensor:
        return te.compute(shape, lambda *i: epi.apply(xt(*i), i, extra), name="epilogue")

    ctx.bind(node, ctx.emit(compute, [ctx.expr(x), *epi.exprs], node, "elementwise"))
