"""Normalisations: Softmax, LogSoftmax, LayerNormalization, InstanceNormalization,
BatchNormalization (inference). (Reduce* live in `reduce.py`.)

Softmax subtracts the row maximum before exp (ONNX's definition is exact either way; this
keeps exp in range). LayerNormalization computes the mean, then the variance of x - mean
(two passes: the one-pass E[x^2] - E[x]^2 loses precision when |mean| >> std).
BatchNormalization folds its four constants into one scale and shift at compile time.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from tvm import relax, te, tirx

from backends.tvm.lower import fastmath
from backends.tvm.lower.context import LowerCtx, accumulator, cast
from backends.tvm.lower.epilogue import Epilogue, add_operand
from backends.tvm.lower.rows import row_reduce, row_width
from backends.tvm.schedules import tiles
from compiler.errors import EtchError
from compiler.ir import Node


def lower_softmax(ctx: LowerCtx, node: Node) -> None:
    """Softmax / LogSoftmax along one axis (opset 13 semantics)."""
    x = node.inputs[0]
    shape = ctx.shape(x)
    axis = int(node.attrs.get("axis", -1)) % len(shape)
    log = node.op == "LogSoftmax"
    last = axis == len(shape) - 1
    # rows are contiguous only along the last axis
    lanes = tiles.row_lanes((shape[axis],), ctx.lanes) if last else 1

    def compute(xt: te.Tensor) -> te.Tensor:
        # A 16-bit float rounds after each step, as the reference's numpy does; the row sum
        # accumulates in float32 (numpy's pairwise sums do too), exp is evaluated in float32.
        dt, acc_t = str(xt.dtype), accumulator(xt.dtype)
        rows = shape[:axis] + shape[axis + 1:]
        at = lambda r, j: tuple(r[:axis]) + tuple(j) + tuple(r[axis:])
        row_of = lambda i: tuple(i[:axis]) + tuple(i[axis + 1:])
        # a NaN in the row needs no NaN-aware max: exp(NaN - max) makes the sum NaN
        mx = row_reduce("rowmax", rows, (shape[axis],), lambda r, j: xt(*at(r, j)), te.max,
                        lanes, tail=True)
        exp = lambda v: cast(fastmath.exp(cast(v, acc_t)), dt)
        term = lambda r, j: cast(exp(xt(*at(r, j)) - mx(*r, 0)), acc_t)
        if last and not log:
            return _exp_rows(xt, shape, lanes, mx, exp, acc_t)
        ex = row_reduce("rowsum", rows, (shape[axis],), term, te.sum, lanes, tail=True)
        total = lambda i: cast(ex(*row_of(i), 0), dt)
        if log:
            return te.compute(shape, lambda *i: xt(*i) - mx(*row_of(i), 0)
                              - cast(tirx.log(cast(total(i), acc_t)), dt), name="epilogue")
        return te.compute(shape, lambda *i: exp(xt(*i) - mx(*row_of(i), 0)) / total(i),
                          name="epilogue")

    # row_tail: rows no vector divides run whole vectors and a tail (`rows.row_reduce`)
    hints = {"rows": axis, "row_lanes": lanes, "row_tail": 1} if last else {}
    ctx.bind(node, ctx.emit(compute, [ctx.expr(x)], node, "softmax", **hints))


def _exp_rows(xt: te.Tensor, shape: tuple[int, ...], lanes: int, mx: te.Tensor,
              exp: Callable, acc_t: str) -> te.Tensor:
    """Softmax along the last axis with each exp evaluated once, into row buffers that the
    sum and the divide read: "exps" for the whole vectors of the row and "exps_tail" for the
    elements past them (`rows.row_width`), so each is a small per-row buffer that the
    schedule vectorises without a partitioned (and so uncompacted) loop."""
    last, rows = shape[-1], shape[:-1]
    width = row_width((last,), lanes)
    rest = last % width if width else 0
    body = last - rest
    exps = te.compute(rows + (body,), lambda *i: exp(xt(*i) - mx(*i[:-1], 0)), name="exps")
    tail = te.compute(rows + (rest,), lambda *i: exp(xt(*i[:-1], i[-1] + body)
                                                      - mx(*i[:-1], 0)),
                      name="exps_tail") if rest else None
    ex = row_reduce("rowsum", rows, (last,), lambda r, j: cast(exps(*r, *j), acc_t), te.sum,
                    lanes, tail=True,
                    tail_value=(lambda r, j: cast(tail(*r, *j), acc_t)) if rest else None)
    dt = str(xt.dtype)

    def value(*i: tirx.Expr) -> tirx.Expr:
        if tail is None:
            return exps(*i)
        j = i[-1]
        return tirx.if_then_else(j < body, exps(*i[:-1], tirx.min(j, body - 1)),
                                 tail(*i[:-1], tirx.max(j - body, 0)))

    if dt != "float32":  # a 16-bit float divides, rounding as the reference does
        return te.compute(shape, lambda *i: value(*i) / cast(ex(*i[:-1], 0), dt),
                          name="epilogue")
    # one division per row, a multiply per element (a vector divide costs ~10x a multiply;
    # ONNX Runtime's softmax scales by the reciprocal too): within an ulp of the quotient
    return te.compute(shape, lambda *i: value(*i) * (tirx.const(1, dt) / ex(*i[:-1], 0)),
                      name="epilogue")


# ONNX element types a LayerNormalization's stash_type may name.
_STASH = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16"}


def lower_layer_norm(ctx: LowerCtx, node: Node) -> None:
    """LayerNormalization over dims [axis:], with scale and optional bias. Statistics in the
    stash type; Mean and InvStdDev, when read, come out of the same kernel."""
    x, out = node.inputs[0], node.outputs[0]
    stash = _STASH.get(int(node.attrs.get("stash_type", 1)), "")
    if not stash:
        raise EtchError(f"node {node.name}: LayerNormalization stash_type "
                        f"{node.attrs.get('stash_type')} is not built")
    read = [o for o in node.outputs[1:3]
            if o and (o in ctx.graph.consumers() or o in ctx.graph.outputs)]
    if read or stash != ctx.dtype(x):
        _layer_norm_stats(ctx, node, stash)
        return
    shape = ctx.shape(x)
    axis = int(node.attrs.get("axis", -1)) % len(shape)
    eps = float(node.attrs.get("epsilon", 1e-5))
    inner = shape[axis:]
    count = int(np.prod(inner))
    lanes = tiles.row_lanes(inner, ctx.lanes)
    epi = Epilogue(ctx.dtype(out))
    epi.steps.append(("Mul", {}, ["y", add_operand(epi, ctx, node.inputs[1])]))
    if len(node.inputs) > 2 and node.inputs[2]:
        epi.steps.append(("Add", {}, ["y", add_operand(epi, ctx, node.inputs[2])]))

    def compute(xt: te.Tensor, *extra: te.Tensor) -> te.Tensor:
        rows, inv = shape[:axis], tirx.const(1.0 / count, xt.dtype)
        zeros = (0,) * len(inner)
        mean = row_reduce("mean", rows, inner, lambda r, j: xt(*r, *j) * inv, te.sum, lanes)
        var = row_reduce("var", rows, inner, lambda r, j: _sq(xt(*r, *j) - mean(*r, *zeros))
                         * inv, te.sum, lanes)
        lead = lambda i: tuple(i[:axis]) + zeros
        return te.compute(shape, lambda *i: epi.apply(
            (xt(*i) - mean(*lead(i))) / tirx.sqrt(var(*lead(i)) + tirx.const(eps, xt.dtype)),
            i, extra), name="epilogue")

    ctx.bind(node, ctx.emit(compute, [ctx.expr(x), *epi.exprs], node, "layer_norm", rows=axis,
                            row_lanes=lanes))


def _layer_norm_stats(ctx: LowerCtx, node: Node, stash: str) -> None:
    """LayerNormalization as the reference computes it: mean and 1/sqrt(var + eps) in the
    stash type, y = ((x - mean) * inv) in x's type, times scale, plus bias; outputs Y, Mean,
    InvStdDev (one kernel)."""
    x = node.inputs[0]
    shape, dtype = ctx.shape(x), ctx.dtype(x)
    axis = int(node.attrs.get("axis", -1)) % len(shape)
    inner = shape[axis:]
    rows, zeros = shape[:axis], (0,) * len(inner)
    count = int(np.prod(inner))
    eps = tirx.const(float(node.attrs.get("epsilon", 1e-5)), stash)
    names = [n for n in node.inputs[1:3] if n]
    ops = ctx.operands(names)

    def compute(xt: te.Tensor, *ts: te.Tensor) -> list[te.Tensor]:
        xs = lambda *i: xt(*i).astype(stash)
        div = tirx.const(count, stash)
        total = row_reduce("mean", rows, inner, lambda r, j: xs(*r, *j), te.sum, 1)
        mean = te.compute(total.shape, lambda *i: total(*i) / div, name="mean_out")
        sq = row_reduce("var", rows, inner, lambda r, j: _sq(xs(*r, *j) - mean(*r, *zeros)),
                        te.sum, 1)
        inv = te.compute(total.shape, lambda *i: tirx.const(1, stash) / tirx.sqrt(
            sq(*i) / div + eps), name="inv_out")

        def body(*i: tirx.Expr) -> tirx.Expr:
            lead = tuple(i[:axis]) + zeros
            y = ((xs(*i) - mean(*lead)) * inv(*lead)).astype(dtype)
            params = ops.load(ts, i)
            y = y * params[0]
            return y + params[1] if len(params) > 1 else y

        return [te.compute(shape, body, name="epilogue"), mean, inv]

    both = ctx.emit(compute, [ctx.expr(x), *ops.exprs], node, "layer_norm_stats")
    ctx.bind(node, *(ctx.bb.emit(relax.TupleGetItem(both, k)) for k in range(3)))


def _sq(v: tirx.Expr) -> tirx.Expr:
    return v * v


def lower_batch_norm(ctx: LowerCtx, node: Node) -> None:
    """Inference BatchNormalization: y = x * scale + shift per channel (folded constants;
    computed statistics are folded in the kernel)."""
    x, out = node.inputs[0], node.outputs[0]
    consts = [ctx.const(n) for n in node.inputs[1:5]]
    if any(c is None for c in consts):
        _channel_norm(ctx, node, node.inputs[1:5], stats=False)
        return
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


def lower_instance_norm(ctx: LowerCtx, node: Node) -> None:
    """InstanceNormalization: each (n, c) plane normalised by its own mean and variance."""
    _channel_norm(ctx, node, [node.inputs[1], node.inputs[2]], stats=True)


def _channel_norm(ctx: LowerCtx, node: Node, params: list[str], stats: bool) -> None:
    """y = (x - mean) / sqrt(var + eps) * scale[c] + bias[c] with per-channel parameters read
    at run time: BatchNormalization with computed statistics (params scale, bias, mean, var;
    y = x * s + (bias - mean * s), s = scale / sqrt(var + eps), the reference's fold) or
    InstanceNormalization (stats: mean and var of each plane; params scale, bias)."""
    x = node.inputs[0]
    shape = ctx.shape(x)
    eps = float(node.attrs.get("epsilon", 1e-5))
    spatial = shape[2:]
    count = int(np.prod(spatial))

    def compute(xt: te.Tensor, *ps: te.Tensor) -> te.Tensor:
        e = tirx.const(eps, xt.dtype)
        if not stats:
            scale, bias, mean, var = (lambda c, t=t: t(c) for t in ps)
            s = lambda c: scale(c) / tirx.sqrt(var(c) + e)
            return te.compute(shape, lambda *i: xt(*i) * s(i[1]) + (bias(i[1]) - mean(i[1])
                                                                    * s(i[1])), name="epilogue")
        div = tirx.const(count, xt.dtype)
        total = row_reduce("mean", shape[:2], spatial, lambda r, j: xt(*r, *j), te.sum, 1)
        zeros = (0,) * len(spatial)
        sq = row_reduce("var", shape[:2], spatial, lambda r, j: _sq(
            xt(*r, *j) - total(*r, *zeros) / div), te.sum, 1)

        def body(*i: tirx.Expr) -> tirx.Expr:
            lead = tuple(i[:2]) + zeros
            y = (xt(*i) - total(*lead) / div) / tirx.sqrt(sq(*lead) / div + e)
            return y * ps[0](i[1]) + ps[1](i[1])

        return te.compute(shape, body, name="epilogue")

    exprs = [ctx.reshape(ctx.expr(p), (shape[1],)) for p in params]
    ctx.bind(node, ctx.emit(compute, [ctx.expr(x), *exprs], node, "channel_norm"))
