"""etch.QConv (1-D and 2-D, NCHW): exact int32 convolution, + bias, then the output unit of
the etch.QFused group it anchors (`int_epilogue`; `int_gemm` has the u8-domain zero-point
algebra).

Kernels:
- "qconv2d" (CPU, constant weights that fit int8 after folding, not depthwise): the input
  is padded and relaid in the u8 domain as channel quads, P[n, q, row, col, 4] (columns
  deinterleaved by the stride), so the 4 input channels of NL consecutive output columns at
  one tap are 4 * NL contiguous bytes; the weight is [OC, KH, KW, C/4, 4], one 32-bit
  broadcast per channel quad. The vector axis is the output row, as in the float conv, so
  the requantising epilogue stores whole vectors NCHW. (A 1x1 conv arrives as one row of
  H*W outputs where `passes/flatten_pointwise.py` made it so.) Over few output positions
  that vectors of them would leave partly empty (`channel_layout`: 7x7), the vector is the
  output channels instead (attr layout "channels", `schedules/int_channels.py`): the
  weight is [OC/16, KH, KW, C/4, 16, 4], one vector per tap and quad.
- "qdepthwise" (CPU, depthwise): the input padded, centred to int16 and deinterleaved by
  the stride, so one tap of nl consecutive outputs is one vector; int32 products.
- "conv2d"/"depthwise_conv2d" (everything else): the float kernel's
  structure (pad block, anchor, epilogue; weight [OC/ocb, C/g, KH, KW, ocb]) on centred
  int16 inputs (padding is 0 = the real zero) and int32 products, so `cpu.py`'s Conv and
  DepthwiseConv rules vectorise it over output columns.
"""

from __future__ import annotations

import numpy as np
from tvm import relax, te, tirx

from backends.tvm.lower.context import LowerCtx
from backends.tvm.lower.conv import ConvSpec, conv_spec, pack_conv
from backends.tvm.lower.int_epilogue import IntOut, int_epilogue, kernel_hints
from backends.tvm.lower.int_gemm import (
    KI,
    acc_bound,
    fast_weight_ok,
    fold_weight,
    pair_safe,
    to_u8,
    u8_zero,
    vector_lanes,
)
from backends.tvm.schedules import tiles
from compiler.errors import EtchError
from compiler.ir import Node
from compiler.ops.etch_int import INT32_MAX

Expr = tirx.Expr


def _inside(sp: ConvSpec, i: Expr, j: Expr) -> tuple[Expr, Expr, Expr]:
    hi, wi = i - sp.pad_top, j - sp.pad_left
    return tirx.all(hi >= 0, hi < sp.h, wi >= 0, wi < sp.w), hi, wi


def _extent(sp: ConvSpec, owp: int) -> tuple[int, int]:
    """(rows, columns) of the padded input that an output of width owp reads."""
    (sh, sw), (dh, dw) = sp.stride, sp.dilation
    return (sp.oh - 1) * sh + (sp.kh - 1) * dh + 1, (owp - 1) * sw + (sp.kw - 1) * dw + 1


def pack_qconv(wc: np.ndarray, cq: int) -> np.ndarray:
    """[OC, C/g, KH, KW] -> [OC, KH, KW, cq, 4] int8: each tap's input channels in quads
    (zero-padded), one 32-bit broadcast each."""
    oc, icg, kh, kw = wc.shape
    w = np.zeros((oc, cq * KI, kh, kw), np.int8)
    w[:, :icg] = wc
    return np.ascontiguousarray(w.reshape(oc, cq, KI, kh, kw).transpose(0, 3, 4, 1, 2))


# The channel-vector layout (`schedules/int_channels.py`): at most this many output positions
# (its position tiles are unrolled), where vectors of positions would leave at least
# CHANNEL_WASTE of their lanes empty (7x7: 49 positions in 64 lanes).
CHANNEL_POSITIONS = 64
CHANNEL_WASTE = 1 / 8


def channel_layout(sp: ConvSpec, nl: int, hints: dict, post: list) -> bool:
    """Whether the conv takes the channel-vector kernel: 16-lane vectors of output channels
    (a multiple of 16, one group) over few output positions whose position vectors would
    waste lanes, the requantisation in vectors, and after it nothing, a residual add in
    int32 lanes or a table."""
    positions = sp.oh * sp.ow
    lanes = -(-positions // nl) * nl
    return nl == 16 and sp.groups == 1 and sp.oc % nl == 0 and positions <= CHANNEL_POSITIONS \
        and lanes >= positions * (1 + CHANNEL_WASTE) and bool(hints.get("req_vec")) and \
        (not post or bool(hints.get("post_vec")) or [s["op"] for s in post] == ["table"])


def pack_channels(packed: np.ndarray, nl: int) -> np.ndarray:
    """[OC, KH, KW, cq, 4] -> [OC/nl, KH, KW, cq, nl, 4]: per tap and channel quad, the
    quads of nl consecutive output channels in one vector."""
    oc, kh, kw, cq, ki = packed.shape
    return np.ascontiguousarray(packed.reshape(oc // nl, nl, kh, kw, cq, ki)
                                .transpose(0, 2, 3, 4, 1, 5))


def qconv_fast(ctx: LowerCtx, dst: IntOut, x: relax.Expr, sp: ConvSpec, wc: np.ndarray,
               zero: int, bias: np.ndarray | None) -> relax.Expr | None:
    """The u8 x s8 dot-product kernel, or None where it does not apply (depthwise convs,
    weights that do not fit int8).

    Layout: P[n, g * cq + q, i, p, j', c] holds input channel 4q + c of group g at padded
    row i and padded column j' * sw + p (columns deinterleaved by the stride, so the inputs
    of nl consecutive outputs at one tap are contiguous), in the u8 domain, the zero point
    in the padding; a vector of nl outputs x one broadcast weight quad is one dot step."""
    nl = vector_lanes(ctx)
    ocpg, icg = sp.oc // sp.groups, sp.c // sp.groups
    if not ctx.pack or (icg == 1 and sp.groups > 1) or not fast_weight_ok(wc):
        return None
    cq = -(-icg // KI)
    packed = pack_qconv(wc.astype(np.int8), cq)
    owp = tiles.padded(sp.ow, nl)
    (sh, sw), (dh, dw) = sp.stride, sp.dilation
    ph, pw = _extent(sp, owp)
    pws = -(-pw // sw)
    zu = u8_zero(x.ty.dtype, zero)
    total = -zu * wc.reshape(sp.oc, -1).sum(axis=1) + \
        (0 if bias is None else bias.astype(np.int64))
    epi = int_epilogue(ctx, dst, total, 4, 1, _out(sp), channels=sp.oc)
    hints = kernel_hints(epi, acc_bound(wc, bias, 0))
    # the channel kernel's requantisation is the vector one, which reads an int32 bias
    channels = channel_layout(sp, nl, hints, epi.post) and \
        np.abs(total).max(initial=0) <= INT32_MAX
    weights = pack_channels(packed, nl) if channels else packed

    def compute(xt: te.Tensor, wt: te.Tensor, *extra: te.Tensor) -> te.Tensor:
        def weight(o: Expr, ry: Expr, rx: Expr, rq: Expr, rc: Expr) -> Expr:
            return wt[o // nl, ry, rx, rq, o % nl, rc] if channels else wt[o, ry, rx, rq, rc]

        def pad_value(n, gq, i, p, j, c):
            inside, hi, wi = _inside(sp, i, j * sw + p)
            ch = gq % cq * KI + c
            v = to_u8(xt(n, gq // cq * icg + ch, hi, wi))
            return tirx.if_then_else(tirx.all(inside, ch < icg), v, tirx.const(zu, "uint8"))

        pad = te.compute((sp.n, sp.groups * cq, ph, sw, pws, KI), pad_value, name="pad")
        ry, rx = te.reduce_axis((0, sp.kh), "ry"), te.reduce_axis((0, sp.kw), "rx")
        rq, rc = te.reduce_axis((0, cq), "rq"), te.reduce_axis((0, KI), "rc")

        def body(n, o, i, j):
            gq = o // ocpg * cq + rq if sp.groups > 1 else rq
            a = pad[n, gq, i * sh + ry * dh, rx * dw % sw, j + rx * dw // sw, rc]
            return te.sum(a.astype("int32") * weight(o, ry, rx, rq, rc).astype("int32"),
                          axis=[ry, rx, rq, rc])

        acc = te.compute((sp.n, sp.oc, sp.oh, owp), body, name="anchor")
        return epi.compute(_out(sp), acc, extra)

    return ctx.emit(compute, [x, ctx.array(weights), *epi.exprs], dst.node, "qconv2d", nl=nl,
                    pair_safe=int(pair_safe(packed)), groups=sp.groups, stride=list(sp.stride),
                    dilation=list(sp.dilation), pad=[sp.pad_top, sp.pad_left], x_zero=zu,
                    layout="channels" if channels else "positions", **hints)


def qdepthwise(ctx: LowerCtx, dst: IntOut, x: relax.Expr, sp: ConvSpec, wc: np.ndarray,
               zero: int, bias: np.ndarray | None) -> relax.Expr | None:
    """Depthwise (one input channel per output channel) on CPU: the input padded, centred
    to int16 (the padding is 0, the real zero) and its columns deinterleaved by the stride,
    P[n, c, row, p, j'], so nl consecutive outputs of one tap are one vector; int32
    products with the folded weights [C, KH, KW] (attribute w8: they are int8, which the
    byte-window kernel needs; w16: int16). None where it does not apply."""
    nl = vector_lanes(ctx)
    if not ctx.pack or sp.c != sp.groups or sp.oc != sp.c or \
            wc[0].size * 255 * int(np.abs(wc).max(initial=0)) > INT32_MAX:
        return None
    owp = tiles.padded(sp.ow, nl)
    (sh, sw), (dh, dw) = sp.stride, sp.dilation
    ph, pw = _extent(sp, owp)
    weights = wc.reshape(sp.oc, sp.kh, sp.kw).astype(np.int32)
    # the x86 kernel reads a bias buffer first: a conv without one gets zeros
    bias = np.zeros(sp.oc, np.int64) if bias is None else bias
    epi = int_epilogue(ctx, dst, bias, 4, 1, _out(sp), channels=sp.oc)

    def compute(xt: te.Tensor, wt: te.Tensor, *extra: te.Tensor) -> te.Tensor:
        def pad_value(n, c, i, p, j):
            inside, hi, wi = _inside(sp, i, j * sw + p)
            v = xt(n, c, hi, wi).astype("int16") - tirx.const(zero, "int16")
            return tirx.if_then_else(inside, v, tirx.const(0, "int16"))

        pad = te.compute((sp.n, sp.c, ph, sw, -(-pw // sw)), pad_value, name="pad")
        ry, rx = te.reduce_axis((0, sp.kh), "ry"), te.reduce_axis((0, sp.kw), "rx")
        acc = te.compute((sp.n, sp.oc, sp.oh, owp), lambda n, o, i, j: te.sum(
            pad[n, o, i * sh + ry * dh, rx * dw % sw, j + rx * dw // sw].astype("int32")
            * wt[o, ry, rx], axis=[ry, rx]), name="anchor")
        return epi.compute(_out(sp), acc, extra)

    return ctx.emit(compute, [x, ctx.array(weights), *epi.exprs], dst.node, "qdepthwise",
                    nl=nl, stride=list(sp.stride), dilation=list(sp.dilation),
                    pad=[sp.pad_top, sp.pad_left], x_zero=zero,
                    w16=int(np.abs(weights).max(initial=0) < 1 << 15),
                    w8=int(weights.size > 0 and -128 <= weights.min() and weights.max() <= 127),
                    **kernel_hints(epi, acc_bound(wc, bias, 0)))


def qconv_generic(ctx: LowerCtx, dst: IntOut, x: relax.Expr, sp: ConvSpec, wc: np.ndarray,
                  zero: int, bias: np.ndarray | None) -> relax.Expr:
    """Direct convolution of centred int16 inputs with the folded weights, int32 products
    (int64 where K * 255 * max|w| does not fit int32)."""
    ocpg, icg = sp.oc // sp.groups, sp.c // sp.groups
    depthwise = icg == 1 and ocpg == 1
    ocb, vw = tiles.conv_tile(ocpg, sp.ow, ctx.lanes) if ctx.pack else (1, sp.ow)
    ocb = 1 if depthwise else ocb
    owp = tiles.padded(sp.ow, vw)
    ph, pw = _extent(sp, owp)
    wmax = int(np.abs(wc).max(initial=0))
    acc_t = "int32" if wc[0].size * 255 * wmax <= INT32_MAX else "int64"
    wdata = wc.astype(np.int32 if acc_t == "int32" else np.int64)
    weight = ctx.array(pack_conv(wdata, ocb) if ocb > 1 else wdata)
    epi = int_epilogue(ctx, dst, bias, 4, 1, _out(sp))
    (sh, sw), (dh, dw) = sp.stride, sp.dilation

    def compute(xt: te.Tensor, wt: te.Tensor, *extra: te.Tensor) -> te.Tensor:
        def pad_value(n, c, i, j):
            inside, hi, wi = _inside(sp, i, j)
            v = xt[n, c, hi, wi].astype("int16") - tirx.const(zero, "int16")
            return tirx.if_then_else(inside, v, tirx.const(0, "int16"))

        pad = te.compute((sp.n, sp.c, ph, pw), pad_value, name="pad")
        rc = te.reduce_axis((0, icg), "rc")
        ry, rx = te.reduce_axis((0, sp.kh), "ry"), te.reduce_axis((0, sp.kw), "rx")
        ic = 0 if depthwise else rc

        def body(n, o, i, j):
            c = o // ocpg * icg + ic if sp.groups > 1 else ic
            w = wt[o // ocb, ic, ry, rx, o % ocb] if ocb > 1 else wt[o, ic, ry, rx]
            a = pad[n, c, i * sh + ry * dh, j * sw + rx * dw]
            return te.sum(a.astype(acc_t) * w.astype(acc_t),
                          axis=[ry, rx] if depthwise else [rc, ry, rx])

        acc = te.compute((sp.n, sp.oc, sp.oh, owp), body, name="anchor")
        return epi.compute(_out(sp), acc, extra)

    kind = "depthwise_conv2d" if depthwise else "conv2d"
    return ctx.emit(compute, [x, weight, *epi.exprs], dst.node, kind, ocb=ocb, vw=vw)


def _out(sp: ConvSpec) -> tuple[int, int, int, int]:
    """The kernels' output shape (a 1-D conv has one row)."""
    return (sp.n, sp.oc, sp.oh, sp.ow)


def qconv(ctx: LowerCtx, dst: IntOut, inputs: list[str], attrs: dict) -> None:
    """etch.QConv(inputs; attrs) with a constant weight, then dst's output unit."""
    node = dst.node
    names = list(inputs) + [""] * (6 - len(inputs))
    w = ctx.const(names[1])
    bias, zero, w_zero, w_mult = (ctx.const(n) if n else None for n in names[2:6])
    if w is None or any(n and ctx.const(n) is None for n in names[2:6]):
        raise EtchError(f"node {node.name}: etch.QConv takes constant weights and parameters")
    if zero is not None and zero.size != 1:
        raise EtchError(f"node {node.name}: etch.QConv's x_zero must be a scalar")
    z = 0 if zero is None else int(zero.reshape(()))
    xshape, oshape = ctx.shape(names[0]), ctx.shape(dst.value)
    wc = fold_weight(w, w_zero, w_mult, int(attrs.get("group_size", 0)), 0)
    sp = conv_spec(attrs, xshape, wc.shape, oshape)
    x = ctx.reshape(ctx.expr(names[0]), (sp.n, sp.c, sp.h, sp.w))
    wc4 = wc.reshape(sp.oc, wc.shape[1], sp.kh, sp.kw)
    y = qconv_fast(ctx, dst, x, sp, wc4, z, bias)
    if y is None:
        y = qdepthwise(ctx, dst, x, sp, wc4, z, bias)
    if y is None:
        y = qconv_generic(ctx, dst, x, sp, wc4, z, bias)
    ctx.bind(node, ctx.reshape(y, oshape))


def lower_qconv(ctx: LowerCtx, node: Node) -> None:
    """A bare etch.QConv: the int32 accumulator."""
    qconv(ctx, IntOut(node, None, node.outputs[0]), list(node.inputs), node.attrs)


__all__ = ["lower_qconv", "qconv"]
