"""Reductions and normalisations: Reduce*, Softmax, LogSoftmax, LayerNormalization,
BatchNormalization (inference).

Softmax subtracts the row maximum before exp (ONNX's definition is exact either way; this
keeps exp in range). LayerNormalization computes the mean, then the variance of x - mean
(two passes: the one-pass E[x^2] - E[x]^2 loses precision when |mean| >> std).
BatchNormalization folds its four constants into one scale and shift at compile time.
"""

from __future__ import annotations

import numpy as np
from tvm import te, tirx

from backends.tvm.lower import fastmath
from backends.tvm.lower.context import LowerCtx
from backends.tvm.lower.epilogue import Epilogue, add_operand
from compiler.errors import EtchError
from compiler.ir import Node

_REDUCERS = {"ReduceSum": te.sum, "ReduceMean": te.sum, "ReduceMax": te.max,
             "ReduceMin": te.min, "ReduceSumSquare": te.sum, "ReduceL2": te.sum,
             "ReduceL1": te.sum}


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
            return _REDUCERS[op](v, axis=red) if red else v

        acc = te.compute(oshape, body, name="anchor")

        def finish(*i: tirx.Expr) -> tirx.Expr:
            if op == "ReduceMean":
                return acc(*i) / tirx.const(count, xt.dtype)
            return tirx.sqrt(acc(*i)) if op == "ReduceL2" else acc(*i)

        return te.compute(oshape, finish, name="epilogue")

    if op not in _REDUCERS:
        raise EtchError(f"node {node.name}: {op} is not built by the TVM backend")
    ctx.bind(node, ctx.emit(compute, [ctx.expr(x)], node, "reduce"))


def lower_softmax(ctx: LowerCtx, node: Node) -> None:
    """Softmax / LogSoftmax along one axis (opset 13 semantics)."""
    x, out = node.inputs[0], node.outputs[0]
    shape = ctx.shape(x)
    axis = int(node.attrs.get("axis", -1)) % len(shape)
    log = node.op == "LogSoftmax"

    def compute(xt: te.Tensor) -> te.Tensor:
        row = shape[:axis] + (1,) + shape[axis + 1:]
        at = lambda i, r: tuple(i[:axis]) + (r,) + tuple(i[axis + 1:])  # noqa: E731
        r1 = te.reduce_axis((0, shape[axis]), "r1")
        mx = te.compute(row, lambda *i: te.max(xt(*at(i, r1)), axis=r1), name="rowmax")
        r2 = te.reduce_axis((0, shape[axis]), "r2")
        ex = te.compute(row, lambda *i: te.sum(
            fastmath.exp(xt(*at(i, r2)) - mx(*i)), axis=r2), name="rowsum")
        if log:
            return te.compute(shape, lambda *i: xt(*i) - mx(*at(i, 0)) - tirx.log(ex(*at(i, 0))),
                              name="epilogue")
        return te.compute(shape, lambda *i: fastmath.exp(xt(*i) - mx(*at(i, 0))) / ex(*at(i, 0)),
                          name="epilogue")

    ctx.bind(node, ctx.emit(compute, [ctx.expr(x)], node, "softmax"))


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
        row = shape[:axis] + (1,) * len(inner)
        inv = tirx.const(1.0 / count, xt.dtype)

        def over(name: str, f) -> te.Tensor:
            rs = [te.reduce_axis((0, d), f"{name}{k}") for k, d in enumerate(inner)]
            return te.compute(row, lambda *i: te.sum(f(tuple(i[:axis]) + tuple(rs), i), axis=rs),
                              name=name)

        mean = over("mean", lambda j, i: xt(*j) * inv)
        var = over("var", lambda j, i: _sq(xt(*j) - mean(*i)) * inv)
        lead = lambda i: tuple(i[:axis]) + (0,) * len(inner)  # noqa: E731
        return te.compute(shape, lambda *i: epi.apply(
            (xt(*i) - mean(*lead(i))) / tirx.sqrt(var(*lead(i)) + tirx.const(eps, xt.dtype)),
            i, extra), name="epilogue")

    ctx.bind(node, ctx.emit(compute, [ctx.expr(x), *epi.exprs], node, "layer_norm"))


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
