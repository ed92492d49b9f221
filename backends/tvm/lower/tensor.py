"""Data movement: Transpose, Concat, Split, Slice, Gather, Expand, Tile, Pad, DepthToSpace,
SpaceToDepth.

Shape-only ops (Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout) are views and live
in `epilogue.lower_alias`. Inputs that decide shapes (Slice starts, Pad pads, ...) are
constants by the time a graph reaches a backend; their values are read here, while output
shapes always come from the graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tvm import te, tirx

from backends.tvm.lower.context import LowerCtx
from compiler.errors import EtchError
from compiler.ir import Node


def _const_input(ctx: LowerCtx, node: Node, k: int, default: list | None = None) -> list | None:
    """Input k of `node` as a Python list (it must be a constant), or `default` if absent."""
    if len(node.inputs) <= k or not node.inputs[k]:
        return default
    data = ctx.const(node.inputs[k])
    if data is None:
        raise EtchError(f"node {node.name}: {node.op} input {k} must be a constant")
    return data.reshape(-1).tolist()


def _emit_map(ctx: LowerCtx, node: Node, out: str, src: str,
              index: callable, kind: str = "injective", fill_from: str = "") -> None:
    """out[i] = src[index(i)] as one kernel; `index` may return (indices, condition, fill),
    where a fill of None reads the one-element tensor `fill_from` instead."""
    shape = ctx.shape(out)
    extra = [ctx.expr(fill_from)] if fill_from else []

    def compute(xt: te.Tensor, *ft: te.Tensor) -> te.Tensor:
        def body(*i: tirx.Expr) -> tirx.Expr:
            r = index(list(i))
            if isinstance(r, tuple):
                idx, cond, fill = r
                value = ft[0](*[0] * len(ft[0].shape)) if fill is None else \
                    tirx.const(fill, xt.dtype)
                return tirx.if_then_else(cond, xt(*idx), value)
            return xt(*r)
        return te.compute(shape, body, name="epilogue")

    ctx.env[out] = ctx.emit(compute, [ctx.expr(src), *extra], node, kind)


def lower_dropout(ctx: LowerCtx, node: Node) -> None:
    """Inference Dropout: the input, and a mask that keeps everything. A training_mode that
    is computed, or a constant true with a non-zero ratio, makes it random: refused."""
    flag = node.inputs[2] if len(node.inputs) > 2 else ""
    if flag:
        training = ctx.const(flag)
        ratio = ctx.const(node.inputs[1]) if node.inputs[1] else np.float32(0.5)
        if training is None or (bool(training.reshape(-1)[0]) and
                                (ratio is None or float(np.asarray(ratio).reshape(-1)[0]) > 0)):
            raise EtchError(f"node {node.name}: Dropout in training mode (a computed or true "
                            f"training_mode) is random; etch compiles inference")
    mask = [ctx.array(np.ones(ctx.shape(node.outputs[1]), bool))] if len(node.outputs) > 1 else []
    ctx.bind(node, ctx.expr(node.inputs[0]), *mask)


def lower_transpose(ctx: LowerCtx, node: Node) -> None:
    rank = len(ctx.shape(node.inputs[0]))
    perm = list(node.attrs.get("perm", range(rank)[::-1]))
    inverse = np.argsort(perm).tolist()
    _emit_map(ctx, node, node.outputs[0], node.inputs[0], lambda i: [i[p] for p in inverse],
              "transpose")


def lower_concat(ctx: LowerCtx, node: Node) -> None:
    out = node.outputs[0]
    shape = ctx.shape(out)
    axis = int(node.attrs["axis"]) % len(shape)
    names = [n for n in node.inputs if n and ctx.shape(n)[axis] > 0]
    offsets = np.cumsum([0] + [ctx.shape(n)[axis] for n in names]).tolist()

    def compute(*ts: te.Tensor) -> te.Tensor:
        def body(*i: tirx.Expr) -> tirx.Expr:
            at = lambda k: [v - offsets[k] if d == axis else v for d, v in enumerate(i)]
            value = ts[-1](*at(len(ts) - 1))
            for k in range(len(ts) - 2, -1, -1):
                value = tirx.if_then_else(i[axis] < offsets[k + 1], ts[k](*at(k)), value)
            return value
        return te.compute(shape, body, name="epilogue")

    ctx.bind(node, ctx.emit(compute, [ctx.expr(n) for n in names], node, "injective"))


def lower_split(ctx: LowerCtx, node: Node) -> None:
    """Each output is a slice along `axis` (one small kernel per output)."""
    axis = int(node.attrs.get("axis", 0)) % len(ctx.shape(node.inputs[0]))
    start = 0
    for out in node.outputs:
        size = ctx.shape(out)[axis] if out else 0
        if out and ctx.graph.values[out].size == 0:  # no kernel for an empty part
            ctx.env[out] = ctx.array(np.zeros(ctx.shape(out), ctx.dtype(out)))
        elif out:
            s = start
            _emit_map(ctx, node, out, node.inputs[0],
                      lambda i, s=s: [v + s if d == axis else v for d, v in enumerate(i)])
        start += size


def lower_slice(ctx: LowerCtx, node: Node) -> None:
    xshape = ctx.shape(node.inputs[0])
    rank = len(xshape)
    starts = _const_input(ctx, node, 1)
    axes = [int(a) % rank for a in _const_input(ctx, node, 3, list(range(len(starts))))]
    steps = _const_input(ctx, node, 4, [1] * len(starts))
    begin, step = [0] * rank, [1] * rank
    for a, s, st in zip(axes, starts, steps):
        dim = xshape[a]
        s = s + dim if s < 0 else s
        begin[a] = int(min(max(s, 0), dim if st > 0 else dim - 1))
        step[a] = int(st)
    _emit_map(ctx, node, node.outputs[0], node.inputs[0],
              lambda i: [begin[d] + v * step[d] for d, v in enumerate(i)])


def lower_gather(ctx: LowerCtx, node: Node) -> None:
    data, indices, out = node.inputs[0], node.inputs[1], node.outputs[0]
    dshape, ishape, oshape = ctx.shape(data), ctx.shape(indices), ctx.shape(out)
    axis = int(node.attrs.get("axis", 0)) % len(dshape)
    dim = dshape[axis]

    def compute(dt: te.Tensor, it: te.Tensor) -> te.Tensor:
        def body(*i: tirx.Expr) -> tirx.Expr:
            j = it(*i[axis:axis + len(ishape)]).astype("int64")
            j = tirx.Select(j < 0, j + dim, j)
            return dt(*i[:axis], j, *i[axis + len(ishape):])
        return te.compute(oshape, body, name="epilogue")

    ctx.bind(node, ctx.emit(compute, [ctx.expr(data), ctx.expr(indices)], node, "injective"))


def lower_expand(ctx: LowerCtx, node: Node) -> None:
    xshape = ctx.shape(node.inputs[0])
    oshape = ctx.shape(node.outputs[0])
    lead = len(oshape) - len(xshape)
    _emit_map(ctx, node, node.outputs[0], node.inputs[0],
              lambda i: [0 if d == 1 else i[lead + k] for k, d in enumerate(xshape)])


def lower_tile(ctx: LowerCtx, node: Node) -> None:
    xshape = ctx.shape(node.inputs[0])
    _emit_map(ctx, node, node.outputs[0], node.inputs[0],
              lambda i: [tirx.floormod(v, xshape[d]) for d, v in enumerate(i)])


def lower_pad(ctx: LowerCtx, node: Node) -> None:
    xshape = ctx.shape(node.inputs[0])
    rank = len(xshape)
    pads = _const_input(ctx, node, 1, node.attrs.get("pads"))
    fill = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else ""
    computed = fill and ctx.const(fill) is None  # a computed pad value is read at run time
    value = None if computed else (_const_input(ctx, node, 2, [node.attrs.get("value", 0.0)])
                                   or [0.0])[0]
    axes = [int(a) % rank for a in _const_input(ctx, node, 3, list(range(rank)))]
    begin = [0] * rank
    for k, a in enumerate(axes):
        begin[a] = int(pads[k])
    mode = node.attrs.get("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise EtchError(f"node {node.name}: Pad mode {mode!r} is not built")
    _emit_map(ctx, node, node.outputs[0], node.inputs[0],
              lambda i: _pad_index(i, begin, xshape, mode, value),
              fill_from=fill if computed and mode == "constant" else "")


def _pad_index(i: Sequence, begin: list, xshape: tuple, mode: str, value: float | None):
    src = [v - b for v, b in zip(i, begin)]
    if mode == "constant":
        cond = tirx.all(*[tirx.all(s >= 0, s < d) for s, d in zip(src, xshape)])
        return [tirx.max(tirx.min(s, d - 1), 0) for s, d in zip(src, xshape)], cond, value
    if mode == "edge":
        return [tirx.max(tirx.min(s, d - 1), 0) for s, d in zip(src, xshape)]
    if mode == "wrap":
        return [tirx.floormod(s, d) for s, d in zip(src, xshape)]
    out = []
    for s, d in zip(src, xshape):  # reflect without repeating the edge
        m = tirx.floormod(s, 2 * d - 2) if d > 1 else 0
        out.append(0 if d == 1 else (d - 1) - tirx.abs((d - 1) - m))
    return out


def lower_depth_to_space(ctx: LowerCtx, node: Node) -> None:
    """out[n, c, h, w] = x[n, channel, h / bs, w / bs] (DCR: depth-column-row, or CRD)."""
    bs = int(node.attrs["blocksize"])
    c_out = ctx.shape(node.outputs[0])[1]
    crd = node.attrs.get("mode", "DCR") == "CRD"

    def index(i: list) -> list:
        n, c, h, w = i
        off = tirx.floormod(h, bs) * bs + tirx.floormod(w, bs)
        ch = c * bs * bs + off if crd else off * c_out + c
        return [n, ch, tirx.floordiv(h, bs), tirx.floordiv(w, bs)]

    _emit_map(ctx, node, node.outputs[0], node.inputs[0], index)


def lower_space_to_depth(ctx: LowerCtx, node: Node) -> None:
    """out[n, channel, h, w] = x[n, c, h * bs + dh, w * bs + dw] (the inverse layout)."""
    bs = int(node.attrs["blocksize"])
    c_in = ctx.shape(node.inputs[0])[1]
    crd = node.attrs.get("mode", "DCR") == "CRD"

    def index(i: list) -> list:
        n, ch, h, w = i
        c, off = (tirx.floordiv(ch, bs * bs), tirx.floormod(ch, bs * bs)) if crd else \
            (tirx.floormod(ch, c_in), tirx.floordiv(ch, c_in))
        return [n, c, h * bs + tirx.floordiv(off, bs), w * bs + tirx.floormod(off, bs)]

    _emit_map(ctx, node, node.outputs[0], node.inputs[0], index)
