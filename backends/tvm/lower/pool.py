"""Pooling (MaxPool with its Indices, AveragePool, LpPool, global pools) and LRN, NCHW, any
number of spatial dims.

Windows are read with bounds checks instead of a padded copy: pooling is memory-bound and a
copy would double its traffic. ceil_mode only changes the output size (taken from the
graph); a window that runs past the padded input counts only what it covers. AveragePool's
divisor is the window clipped to the padded input (count_include_pad=1) or to the input.
"""

from __future__ import annotations

from collections.abc import Callable

from tvm import relax, te, tirx

from backends.tvm.lower import fastmath
from backends.tvm.lower.context import LowerCtx
from backends.tvm.lower.indexing import arg_reducer, spatial_index
from backends.tvm.lower.prologue import Prologue
from backends.tvm.lower.rows import flat_rows, row_reduce
from backends.tvm.schedules import tiles
from compiler.errors import EtchError
from compiler.ir import Node


def _geometry(attrs: dict, xshape: tuple, oshape: tuple) -> tuple[list, list, list, list]:
    """(kernel, strides, dilations, begin pads) per spatial dim, auto_pad resolved."""
    from backends.tvm.lower.conv import same_pads

    rank = len(xshape) - 2
    kernel = list(attrs["kernel_shape"])
    strides = list(attrs.get("strides", [1] * rank))
    dil = list(attrs.get("dilations", [1] * rank))
    pads = list(attrs.get("pads", [0] * 2 * rank))
    auto = attrs.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pairs = [same_pads(auto, xshape[2 + i], oshape[2 + i], kernel[i], strides[i], dil[i])
                 for i in range(rank)]
        pads = [p[0] for p in pairs] + [p[1] for p in pairs]
    elif auto == "VALID":
        pads = [0] * 2 * rank
    return kernel, strides, dil, pads


def lower_pool(ctx: LowerCtx, node: Node) -> None:
    """MaxPool / AveragePool / LpPool over any number of spatial dims."""
    x, out = node.inputs[0], node.outputs[0]
    if len(node.outputs) > 1 and node.outputs[1]:
        _max_pool_indices(ctx, node)
        return
    xshape, oshape = ctx.shape(x), ctx.shape(out)
    rank = len(xshape) - 2
    kernel, strides, dil, pads = _geometry(node.attrs, xshape, oshape)
    op = node.op
    include_pad = bool(node.attrs.get("count_include_pad", 0))
    p = int(node.attrs.get("p", 2))
    sizes = xshape[2:]
    # a 2-D MaxPool's window for the integer kernel (`schedules/int_pool.py`)
    hints = {"kernel": kernel, "strides": strides, "dilations": dil, "pads": pads} \
        if op == "MaxPool" and rank == 2 else {}
    if ctx.pack and rank == 2 and op in ("MaxPool", "AveragePool") and any(pads):
        geo = (kernel, strides, dil, pads)
        ctx.bind(node, _tiled_pool(ctx, node, geo, xshape, oshape, include_pad, hints))
        return
    # integer MaxPools keep kind "pool" for the int8 row kernel (`int_cpu.QMaxPool`)
    floating = ctx.dtype(x).startswith(("float", "bfloat"))
    if ctx.pack and rank == 2 and op in ("MaxPool", "AveragePool") and floating and _inside(
            kernel, strides, dil, xshape, oshape):
        geo = (kernel, strides, dil, pads)
        ctx.bind(node, _row_pool(ctx, node, geo, xshape, oshape, include_pad))
        return
    reduce = [te.reduce_axis((0, k), f"r{i}") for i, k in enumerate(kernel)]

    def compute(xt: te.Tensor) -> te.Tensor:
        def body(*idx: tirx.Expr) -> tirx.Expr:
            pos = [idx[2 + i] * strides[i] - pads[i] + reduce[i] * dil[i] for i in range(rank)]
            inside = tirx.all(*[tirx.all(q >= 0, q < sizes[i]) for i, q in enumerate(pos)])
            v = xt(idx[0], idx[1], *pos)  # read only where inside: if_then_else is lazy
            if op == "MaxPool":
                low = _lowest(xt.dtype)
                return ctx.max_reducer(xt.dtype)(tirx.if_then_else(inside, v, low), axis=reduce)
            v = _lp_term(v, p) if op == "LpPool" else v
            return te.sum(tirx.if_then_else(inside, v, tirx.const(0, xt.dtype)), axis=reduce)

        acc = te.compute(oshape, body, name="anchor")
        if op == "MaxPool":
            return te.compute(oshape, lambda *i: acc(*i), name="epilogue")
        if op == "LpPool":
            return te.compute(oshape, lambda *i: _lp_root(acc(*i), p), name="epilogue")
        return te.compute(oshape, lambda *i: acc(*i) / _count(i, kernel, strides, dil, pads,
                                                              sizes, include_pad, xt.dtype),
                          name="epilogue")

    ctx.bind(node, ctx.emit(compute, [ctx.expr(x)], node, "pool", **hints))


def _tiled_pool(ctx: LowerCtx, node: Node, geo: tuple, xshape: tuple, oshape: tuple,
                include_pad: bool, hints: dict) -> relax.Expr:
    """A 2-D MaxPool / AveragePool as the depthwise convolution's tiles (kind "window_pool",
    scheduled by `cpu.DepthwiseConv`): the input padded per channel with the reduction's
    identity (-inf for max, 0 for a sum), its columns deinterleaved by the stride, so that a
    window tap reads a contiguous vector of outputs' inputs with no bounds checks; rows
    padded to whole vectors, the epilogue writing the real columns. Only for padded
    windows: measured single-threaded on the AVX-512 Xeon (CPU time, ORT beside it),
    resnet50's 3x3 stride-2 max pool with pads of 1 on 64x112x112 took 0.73 ms tiled, 1.50
    bounds-checked (ORT 0.48), inception_v3's 3x3 stride-1 average pool on 192x35x35 0.29
    / 0.36 (ORT 0.22); unpadded stride-2 pools (squeezenet's), whose bounds checks fold
    away, ran 1.05-1.3x slower tiled (the deinterleaving copy is scalar)."""
    kernel, strides, dil, pads = geo
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dil
    n, c, oh, ow = oshape
    vw = tiles.conv_tile(1, ow, ctx.lanes)[1]
    owp = tiles.padded(ow, vw)
    ph, pw = (oh - 1) * sh + (kh - 1) * dh + 1, (owp - 1) * sw + (kw - 1) * dw + 1
    is_max = node.op == "MaxPool"
    h, w = xshape[2:]

    def compute(xt: te.Tensor) -> te.Tensor:
        fill = _lowest(xt.dtype) if is_max else tirx.const(0, xt.dtype)

        def value(b: tirx.Expr, ch: tirx.Expr, i: tirx.Expr, j: tirx.Expr) -> tirx.Expr:
            hi, wi = i - pads[0], j - pads[1]
            inside = tirx.all(hi >= 0, hi < h, wi >= 0, wi < w)
            return tirx.if_then_else(inside, xt[b, ch, hi, wi], fill)

        pad = te.compute((n, c, ph, sw, -(-pw // sw)),
                         lambda b, ch, i, q, r: value(b, ch, i, r * sw + q), name="pad")
        ry, rx = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
        red = ctx.max_reducer(xt.dtype) if is_max else te.sum

        def body(b: tirx.Expr, ch: tirx.Expr, i: tirx.Expr, j: tirx.Expr) -> tirx.Expr:
            col = rx * dw
            return red(pad[b, ch, i * sh + ry * dh, col % sw, j + col // sw], axis=[ry, rx])

        acc = te.compute((n, c, oh, owp), body, name="anchor")
        if is_max:
            return te.compute(oshape, lambda *i: acc(*i), name="epilogue")
        return te.compute(oshape, lambda *i: acc(*i) / _count(
            i, kernel, strides, dil, pads, (h, w), include_pad, xt.dtype), name="epilogue")

    rb = tiles.depthwise_rows(oh, vw, ctx.lanes)
    return ctx.emit(compute, [ctx.expr(node.inputs[0])], node, "window_pool", vw=vw, rb=rb,
                    **hints)


def _inside(kernel: list, strides: list, dil: list, xshape: tuple, oshape: tuple) -> bool:
    """Whether every window lies inside the (unpadded) input: no bounds check needed."""
    return all((o - 1) * s + (k - 1) * d + 1 <= size
               for o, s, k, d, size in zip(oshape[2:], strides, kernel, dil, xshape[2:]))


def pool_anchor(ctx: LowerCtx, node: Node, inputs: list[str], attrs: dict, out: str,
                epi: object) -> relax.Expr:
    """An `etch.Fused` row pool (`passes/fuse_prologue.py`: an AveragePool or MaxPool whose
    windows lie inside its input): its input, the channel concatenation of some of the
    node's inputs with per-channel steps applied (a MaxPool's: the concat only), is read
    through the prologue in the row pool's first pass, so neither the concat nor the steps
    write a tensor of their own."""
    pro = Prologue.of(ctx, node)
    if pro is None or epi.steps:
        raise EtchError(f"node {node.name}: a fused pool runs a prologue and no epilogue")
    oshape = ctx.shape(out)
    geo = _geometry(attrs, pro.shape, oshape)
    if any(geo[3]) or not _inside(*geo[:3], pro.shape, oshape):
        raise EtchError(f"node {node.name}: a fused pool's windows must lie inside its input")
    return _row_pool(ctx, node, geo, pro.shape, oshape,
                     bool(attrs.get("count_include_pad", 0)), pro)


def _row_pool(ctx: LowerCtx, node: Node, geo: tuple, xshape: tuple, oshape: tuple,
              include_pad: bool, pro: Prologue | None = None) -> relax.Expr:
    """A 2-D MaxPool / AveragePool whose windows all lie inside the input (unpadded, as
    squeezenet's and inception_v3's stride-2 max pools): per output row, "rows" reduces the
    window's input rows column by column (contiguous vectors: `cpu.RowPool` vectorises
    it), then the anchor reduces each window's columns of that row (strided reads, no bounds
    checks); kind "row_pool". The window's kh x kw reads per output become kh per input
    column and kw per output; a whole vector of strided reads is vector loads and a shuffle
    (`strided_loads`). Measured single-threaded on the Zen 4 host (kernel CPU time,
    interleaved with the bounds-checked pool, load 6-6.5), squeezenet's 3x3 stride-2 pool
    on 256x27x27 172-222 -> 87-94 us (ORT 48-64), inception_v3's on 768x17x17 212-214 ->
    83-94 us (ORT 56-63). Wider rows were 2-6x slower until the max's NaN test stopped
    scalarising the loop (`fastmath._isnan`; LLVM had re-vectorised it with gathers and
    scatters); on the Xeon now (kernel CPU time, one thread, against the generic kernel):
    64x111x111 373 -> 156-172 us, 128x55x55 155 -> 85-87, 256x27x27 105 -> 29-32,
    64x147x147 471 -> 311, 192x71x71 366 -> 213, 768x35x35 314 -> 228."""
    kernel, strides, dil, pads = geo
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dil
    n, c, oh, ow = oshape
    cols = (ow - 1) * sw + (kw - 1) * dw + 1
    is_max = node.attrs.get("kernel", node.op) == "MaxPool"  # an etch.Fused: its anchor

    def compute(*ts: te.Tensor) -> te.Tensor:
        combine = fastmath.fmax if is_max else tirx.Add  # float pools only (`lower_pool`)
        xt = ts[0] if pro is None else (lambda *i: pro.value(ts, *i))

        def window(read: Callable[[int], tirx.Expr], taps: int) -> tirx.Expr:
            total = read(0)
            for t in range(1, taps):
                total = combine(total, read(t))
            return total

        rows = te.compute((n, c, oh, cols), lambda b, ch, i, j: window(
            lambda t: xt(b, ch, i * sh + t * dh, j), kh), name="rows")
        acc = te.compute(oshape, lambda b, ch, i, j: window(
            lambda t: rows(b, ch, i, j * sw + t * dw), kw), name="anchor")
        if is_max:
            return te.compute(oshape, lambda *i: acc(*i), name="epilogue")
        return te.compute(oshape, lambda *i: acc(*i) / _count(
            i, kernel, strides, dil, pads, xshape[2:], include_pad, ts[0].dtype),
            name="epilogue")

    inputs = pro.exprs if pro is not None else [ctx.expr(node.inputs[0])]
    return ctx.emit(compute, inputs, node, "row_pool")


def _lowest(dtype: object) -> tirx.Expr:
    """What a max over nothing starts from: -inf for floats (a window of -inf stays -inf)."""
    dtype = str(dtype)
    if dtype.startswith("float"):
        return tirx.const(float("-inf"), dtype)
    return tirx.min_value(dtype)


def _lp_term(v: tirx.Expr, p: int) -> tirx.Expr:
    a = tirx.abs(v)
    return a * a if p == 2 else tirx.power(a, tirx.const(float(p), v.ty.dtype))


def _lp_root(total: tirx.Expr, p: int) -> tirx.Expr:
    if p == 2:
        return tirx.sqrt(total)
    return tirx.power(total, tirx.const(1.0 / p, total.ty.dtype))


def _max_pool_indices(ctx: LowerCtx, node: Node) -> None:
    """MaxPool with its Indices output: the first maximum's flat position in the input
    (N and C included; spatial order row-major, or column-major with storage_order=1)."""
    x = node.inputs[0]
    xshape, oshape = ctx.shape(x), ctx.shape(node.outputs[0])
    rank = len(xshape) - 2
    kernel, strides, dil, pads = _geometry(node.attrs, xshape, oshape)
    sizes = xshape[2:]
    column = bool(node.attrs.get("storage_order", 0))
    reducer = arg_reducer(largest=True, last=False)
    reduce = [te.reduce_axis((0, k), f"r{i}") for i, k in enumerate(kernel)]
    plane = 1
    for d in sizes:
        plane *= d

    def compute(xt: te.Tensor) -> list[te.Tensor]:
        def body(*idx: tirx.Expr) -> tuple:
            pos = [idx[2 + i] * strides[i] - pads[i] + reduce[i] * dil[i] for i in range(rank)]
            inside = tirx.all(*[tirx.all(q >= 0, q < sizes[i]) for i, q in enumerate(pos)])
            flat = spatial_index(pos, sizes, column) + \
                (idx[0] * xshape[1] + idx[1]).astype("int64") * plane
            key = tirx.Select(inside, flat, tirx.max_value("int64"))
            v = tirx.if_then_else(inside, xt(idx[0], idx[1], *pos), _lowest(xt.dtype))
            return reducer((key, v), axis=reduce)

        arg, val = te.compute(oshape, body, name="anchor")
        return [te.compute(oshape, lambda *i: val(*i), name="epilogue"),
                te.compute(oshape, lambda *i: arg(*i), name="indices")]

    both = ctx.emit(compute, [ctx.expr(x)], node, "pool_indices")
    ctx.bind(node, *(ctx.bb.emit(relax.TupleGetItem(both, k)) for k in range(2)))


def _count(idx: tuple, kernel: list, strides: list, dil: list, pads: list, sizes: tuple,
           include_pad: bool, dtype: str) -> tirx.Expr:
    """How many window taps an average divides by at output position idx."""
    rank = len(kernel)
    total = tirx.const(1, "int32")
    for i in range(rank):
        lo = -pads[i] if include_pad else 0
        hi = sizes[i] + (pads[rank + i] if include_pad else 0)
        start = idx[2 + i] * strides[i] - pads[i]
        # taps t in [0, k) with lo <= start + t*d < hi
        first = tirx.max(0, (lo - start + dil[i] - 1) // dil[i])
        last = tirx.min(kernel[i], (hi - start + dil[i] - 1) // dil[i])
        total = total * tirx.max(last - first, 1)
    return total.astype(dtype)


def lower_global_pool(ctx: LowerCtx, node: Node) -> None:
    """GlobalAveragePool / GlobalMaxPool: reduce all spatial dims, keep them as 1s."""
    x, out = node.inputs[0], node.outputs[0]
    xshape, oshape = ctx.shape(x), ctx.shape(out)
    spatial = xshape[2:]
    count = 1
    for d in spatial:
        count *= d
    is_max = node.op == "GlobalMaxPool"
    lanes = tiles.row_lanes(spatial, ctx.lanes)
    xshape, xin = flat_rows(ctx, ctx.expr(x), xshape, 2)

    def compute(xt: te.Tensor) -> te.Tensor:
        red = ctx.max_reducer(xt.dtype) if is_max else te.sum
        acc = row_reduce("anchor", xshape[:2], xshape[2:], lambda r, j: xt(*r, *j), red, lanes,
                         oshape, tail=True)
        scale = tirx.const(1.0 / count, xt.dtype)
        return te.compute(oshape, lambda *i: acc(*i) if is_max else acc(*i) * scale,
                          name="epilogue")

    ctx.bind(node, ctx.emit(compute, [xin], node, "reduce", rows=2, row_lanes=lanes,
                            row_tail=1))


def lower_lrn(ctx: LowerCtx, node: Node) -> None:
    """LRN across channels: x / (bias + alpha/size * sum of squares in the window)^beta."""
    x = node.inputs[0]
    shape = ctx.shape(x)
    size = int(node.attrs["size"])
    alpha, beta = float(node.attrs.get("alpha", 1e-4)), float(node.attrs.get("beta", 0.75))
    bias = float(node.attrs.get("bias", 1.0))
    lo = (size - 1) // 2

    def compute(xt: te.Tensor) -> te.Tensor:
        r = te.reduce_axis((0, size), "r")

        def sq(n, c, *rest):
            cc = c - lo + r
            v = tirx.if_then_else(tirx.all(cc >= 0, cc < shape[1]), xt(n, cc, *rest), 0.0)
            return te.sum(v * v, axis=r)

        acc = te.compute(shape, sq, name="anchor")
        f = tirx.const
        return te.compute(shape, lambda *i: xt(*i) / tirx.power(
            f(bias, xt.dtype) + f(alpha / size, xt.dtype) * acc(*i), f(beta, xt.dtype)),
            name="epilogue")

    ctx.bind(node, ctx.emit(compute, [ctx.expr(x)], node, "reduce"))
