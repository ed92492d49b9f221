"""Conv and ConvTranspose (1-D and 2-D, NCHW, constant weights), tiled direct convolution;
the rest (computed weights or bias, other ranks) goes to `conv_direct`.

The input is padded into a scratch buffer ("pad" block) so the inner loop has no bounds
checks. The output width is rounded up to the register tile's width (`tiles.conv_tile`), so
the anchor loops divide evenly; the epilogue writes only the real columns. On CPU the weight
is packed at compile time to [OC/ocb, IC/g, KH, KW, ocb]: the ocb weights that share one
loaded input vector are contiguous. Depthwise convs (one input channel per output channel)
keep their [OC, 1, KH, KW] weight: a tile there is one channel.

ConvTranspose is the convolution of the zero-upsampled input with the flipped kernel: its
weight is flipped and regrouped at compile time and the zero insertion happens in the pad
block, so it runs on the same kernel and schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import relax, te, tirx

from backends.tvm.lower.context import LowerCtx, accumulator, cast
from backends.tvm.lower.conv_direct import conv_direct
from backends.tvm.lower.epilogue import Epilogue, add_operand
from backends.tvm.schedules import tiles
from compiler.errors import EtchError
from compiler.ir import Node

TRANSCENDENTAL = frozenset({"Sigmoid", "Tanh", "Exp", "Erf", "Gelu", "Softplus", "Mish", "Elu",
                            "Selu", "Log", "Pow"})


@dataclass
class ConvSpec:
    """A 2-D NCHW convolution; 1-D convs are run with H = 1."""

    n: int
    c: int
    h: int
    w: int
    oc: int
    kh: int
    kw: int
    oh: int
    ow: int
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pad_top: int
    pad_left: int
    groups: int
    upsample: tuple[int, int] = (1, 1)  # ConvTranspose: zeros inserted between inputs

    @property
    def depthwise(self) -> bool:
        return self.c == self.groups


def same_pads(auto_pad: str, size: int, out: int, k: int, s: int, d: int) -> tuple[int, int]:
    """(begin, end) padding of an auto_pad SAME_UPPER / SAME_LOWER convolution."""
    total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
    small = total // 2
    return (small, total - small) if auto_pad == "SAME_UPPER" else (total - small, small)


def conv_spec(attrs: dict, xshape: tuple, wshape: tuple, oshape: tuple) -> ConvSpec:
    """The ConvSpec of an ONNX Conv from its attributes and (static) shapes."""
    rank = len(xshape) - 2
    if rank not in (1, 2):
        raise EtchError(f"Conv over {rank} spatial dims: the TVM backend builds 1-D and 2-D")
    strides = list(attrs.get("strides", [1] * rank))
    dil = list(attrs.get("dilations", [1] * rank))
    pads = list(attrs.get("pads", [0] * 2 * rank))
    auto = attrs.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pairs = [same_pads(auto, xshape[2 + i], oshape[2 + i], wshape[2 + i], strides[i], dil[i])
                 for i in range(rank)]
        pads = [p[0] for p in pairs] + [p[1] for p in pairs]
    elif auto == "VALID":
        pads = [0] * 2 * rank
    if rank == 1:
        xshape, wshape, oshape = (xshape[:2] + (1,) + xshape[2:], wshape[:2] + (1,) + wshape[2:],
                                  oshape[:2] + (1,) + oshape[2:])
        strides, dil, pads = [1] + strides, [1] + dil, [0, pads[0], 0, pads[1]]
    return ConvSpec(xshape[0], xshape[1], xshape[2], xshape[3], wshape[0], wshape[2], wshape[3],
                    oshape[2], oshape[3], (strides[0], strides[1]), (dil[0], dil[1]),
                    pads[0], pads[1], int(attrs.get("group", 1)))


def pack_conv(w: np.ndarray, ocb: int) -> np.ndarray:
    """[OC, ICg, KH, KW] -> [OC/ocb, ICg, KH, KW, ocb]."""
    oc, icg, kh, kw = w.shape
    return np.ascontiguousarray(w.reshape(oc // ocb, ocb, icg, kh, kw).transpose(0, 2, 3, 4, 1))


def _padded_input(x: te.Tensor, sp: ConvSpec, ph: int, pw: int, split: int) -> te.Tensor:
    """The zero-padded (for ConvTranspose also zero-upsampled) input. With split > 1 (the
    stride along W) columns are deinterleaved, [N, C, ph, split, pw/split], so that a
    strided conv reads each tap's inputs as one contiguous vector."""
    uh, uw = sp.upsample
    plain = (sp.pad_top, sp.pad_left, uh, uw, split) == (0, 0, 1, 1, 1)
    if plain and ph <= sp.h and pw <= sp.w:
        return x

    def value(n: tirx.Expr, c: tirx.Expr, i: tirx.Expr, j: tirx.Expr) -> tirx.Expr:
        hi, wi = i - sp.pad_top, j - sp.pad_left
        inside = tirx.all(hi >= 0, hi < (sp.h - 1) * uh + 1, wi >= 0, wi < (sp.w - 1) * uw + 1)
        if uh > 1 or uw > 1:
            inside = tirx.all(inside, tirx.floormod(hi, uh) == 0, tirx.floormod(wi, uw) == 0)
            hi, wi = tirx.floordiv(hi, uh), tirx.floordiv(wi, uw)
        return tirx.if_then_else(inside, x[n, c, hi, wi], tirx.const(0, x.dtype))

    if split == 1:
        return te.compute((sp.n, sp.c, ph, pw), value, name="pad")
    return te.compute((sp.n, sp.c, ph, split, -(-pw // split)),
                      lambda n, c, i, p, q: value(n, c, i, q * split + p), name="pad")


def conv_geometry(ctx: LowerCtx, sp: ConvSpec,
                  max_channels: int = 16) -> tuple[int, int, int, int, int]:
    """The direct convolution's tiling: (output-channel block, vector width along the output
    row, padded output width, padded input height and width). Shared by the float and the
    weight-only (in-kernel dequantisation) convolutions, which must tile alike.
    `max_channels`: the tile's channels at most (a node's `tile_channels`)."""
    ocpg, icg = sp.oc // sp.groups, sp.c // sp.groups
    budget = tiles.acc_budget(ctx.lanes)
    ocb, vw = tiles.conv_tile(ocpg, sp.ow, ctx.lanes, budget, icg * sp.kh * sp.kw,
                              max_channels) if ctx.pack else (1, sp.ow)
    ocb = 1 if icg == 1 else ocb
    owp = tiles.padded(sp.ow, vw)
    (sh, sw), (dh, dw) = sp.stride, sp.dilation
    ph, pw = (sp.oh - 1) * sh + (sp.kh - 1) * dh + 1, (owp - 1) * sw + (sp.kw - 1) * dw + 1
    return ocb, vw, owp, ph, pw


def conv2d(ctx: LowerCtx, node: Node, x: relax.Expr, w: np.ndarray, sp: ConvSpec,
           epi: Epilogue) -> relax.Expr:
    """Emit the direct convolution of x [N, C, H, W] with constant w, then the epilogue."""
    ocpg, icg = sp.oc // sp.groups, sp.c // sp.groups
    ocb, vw, owp, ph, pw = conv_geometry(ctx, sp, int(node.attrs.get("tile_channels", 16)))
    depthwise = icg == 1
    (sh, sw), (dh, dw) = sp.stride, sp.dilation
    weight = ctx.array(pack_conv(w, ocb) if ocb > 1 else w)

    split = sw if ctx.pack and sw > 1 else 1
    acc_t = accumulator(w.dtype)
    whole_epilogue = ctx.pack and owp != sp.ow and transcendental(epi)

    def compute(xt: te.Tensor, wt: te.Tensor, *extra: te.Tensor) -> te.Tensor:
        pad = _padded_input(xt, sp, ph, pw, split)

        def tap(n: tirx.Expr, c: tirx.Expr, i: tirx.Expr, j: tirx.Expr) -> tirx.Expr:
            row = i * sh + ry * dh
            if split == 1:
                return pad[n, c, row, j * sw + rx * dw]
            return pad[n, c, row, tirx.floormod(rx * dw, split), j + tirx.floordiv(rx * dw, split)]

        rc = te.reduce_axis((0, icg), "rc")
        ry, rx = te.reduce_axis((0, sp.kh), "ry"), te.reduce_axis((0, sp.kw), "rx")

        ic = 0 if depthwise else rc

        def weight_at(o: tirx.Expr) -> tirx.Expr:
            if ocb > 1:
                return wt[o // ocb, ic, ry, rx, o % ocb]
            return wt[o, ic, ry, rx]

        def body(n, o, i, j):
            c = o // ocpg * icg + ic if sp.groups > 1 else ic
            return te.sum(cast(tap(n, c, i, j), acc_t) * cast(weight_at(o), acc_t),
                          axis=[ry, rx] if depthwise else [rc, ry, rx])

        acc = te.compute((sp.n, sp.oc, sp.oh, owp), body, name="anchor")
        if whole_epilogue:  # the tile's padded columns too, then "crop" copies the real ones
            last = sp.ow - 1
            full = te.compute((sp.n, sp.oc, sp.oh, owp), lambda n, o, i, j: epi.apply(
                cast(acc(n, o, i, j), xt.dtype), (n, o, i, tirx.min(j, last)), extra),
                name="epilogue")
            return te.compute((sp.n, sp.oc, sp.oh, sp.ow), lambda *i: full(*i), name="crop")
        return te.compute((sp.n, sp.oc, sp.oh, sp.ow), lambda n, o, i, j: epi.apply(
            cast(acc(n, o, i, j), xt.dtype), (n, o, i, j), extra), name="epilogue")

    if depthwise:
        rb = tiles.depthwise_rows(sp.oh, vw, ctx.lanes) if ctx.pack else 1
        return ctx.emit(compute, [x, weight, *epi.exprs], node, "depthwise_conv2d", vw=vw, rb=rb,
                        pad=[sp.pad_top, sp.pad_left], stride=list(sp.stride),
                        dilation=list(sp.dilation), upsample=int(sp.upsample != (1, 1)),
                        transcendental=int(transcendental(epi)))
    return ctx.emit(compute, [x, weight, *epi.exprs], node, "conv2d", ocb=ocb, vw=vw)


def transcendental(epi: Epilogue) -> bool:
    """Whether the epilogue evaluates a function such as a sigmoid (swish, SiLU): worth
    computing over a tile's padded columns too, as whole vectors, where the row is not a
    whole number of tiles. A partial tile's epilogue is scalar; measured single-threaded on
    the AVX-512 Xeon, a swish after efficientnet_b0's 1152-channel 5x5 depthwise conv on 7x7
    cost 0.20 ms scalar (the conv 0.11 ms; ORT's whole layer 0.08 ms), and 0.41 ms after a
    144-channel 3x3 on 56x56 (ORT 0.18). Cheap epilogues (ReLU, bias, residual) stay in
    place: a copy would cost them more than it saves."""
    return any(op in TRANSCENDENTAL for op, _, _ in (*epi.pre, *epi.steps))


def _pointwise(sp: ConvSpec) -> bool:
    return (sp.kh, sp.kw, sp.stride, sp.pad_top, sp.pad_left, sp.h, sp.w) == \
        (1, 1, (1, 1), 0, 0, sp.oh, sp.ow)


def _computed_bias(ctx: LowerCtx, inputs: list[str]) -> bool:
    return len(inputs) > 2 and bool(inputs[2]) and ctx.const(inputs[2]) is None


def _with_bias(ctx: LowerCtx, epi: Epilogue, bias: str, rank: int) -> Epilogue:
    """Add a per-channel bias [OC] (viewed as [OC, 1, ...] to broadcast over NC...)."""
    if not bias:
        return epi
    data = ctx.const(bias)
    if data is None:
        raise EtchError(f"conv bias %{bias} is computed; etch expects a constant bias")
    return epi.with_bias(add_operand(epi, ctx, data=data.reshape((-1,) + (1,) * rank)))


def conv(ctx: LowerCtx, node: Node, inputs: list[str], attrs: dict, out: str,
         epi: Epilogue) -> relax.Expr:
    """ONNX Conv, then the epilogue: tiled for a constant 1-D/2-D weight and bias, else the
    direct kernel of `conv_direct`."""
    from backends.tvm.lower.prologue import Prologue

    w = ctx.const(inputs[1])
    pro = Prologue.of(ctx, node) if node.op == "etch.Fused" else None
    algorithm = str(node.attrs.get("conv_algorithm", "direct"))
    xshape, oshape = pro.shape if pro else ctx.shape(inputs[0]), ctx.shape(out)
    if pro is not None and not (algorithm == "pointwise" and ctx.pack and len(oshape) == 4
                                and w is not None and not _computed_bias(ctx, inputs)):
        raise EtchError(f"node {node.name}: a conv prologue (passes/fuse_prologue.py) runs in "
                        f"the cpu's pointwise GEMM only; this conv is {algorithm}")
    if w is None or len(xshape) not in (3, 4) or _computed_bias(ctx, inputs):
        return conv_direct(ctx, node, inputs, attrs, out, epi, transpose=False)
    sp = conv_spec(attrs, xshape, w.shape, oshape)
    epi = _with_bias(ctx, epi, inputs[2] if len(inputs) > 2 else "", len(oshape) - 2)
    if algorithm.startswith("winograd"):  # recorded by passes/choose_conv_algorithm.py
        from backends.tvm.lower import winograd

        x = ctx.reshape(ctx.expr(inputs[0]), (sp.n, sp.c, sp.h, sp.w))
        m, image = winograd.tile_size(algorithm)
        y = winograd.winograd_conv2d(ctx, node, x, w.reshape(sp.oc, w.shape[1], sp.kh, sp.kw),
                                     sp, epi, m, image)
        return ctx.reshape(y, oshape)
    if algorithm == "implicit_gemm" and ctx.pack and len(oshape) == 4:
        from backends.tvm.lower import conv_implicit

        if conv_implicit.fits(sp):
            x = ctx.reshape(ctx.expr(inputs[0]), (sp.n, sp.c, sp.h, sp.w))
            return ctx.reshape(conv_implicit.conv_implicit(ctx, node, x, w, sp, epi), oshape)
    if algorithm in ("pointwise_channels", "column_channels", "direct_channels") and \
            ctx.pack and len(oshape) == 4 and pro is None:
        from backends.tvm.lower import conv_gemm

        render = conv_gemm.conv_channels_direct if algorithm == "direct_channels" else \
            conv_gemm.conv_channels
        return ctx.reshape(render(ctx, node, ctx.expr(inputs[0]), w, sp, epi), oshape)
    if algorithm in ("pointwise", "im2col") and ctx.pack and len(oshape) == 4:
        from backends.tvm.lower import conv_gemm

        if conv_gemm.fits(sp) or pro is not None:  # a pointwise conv always fits
            x = ctx.expr(inputs[0]) if pro is None else pro
            return ctx.reshape(conv_gemm.conv_gemm(ctx, node, x, w, sp, epi), oshape)
    if len(oshape) == 3:
        epi.index_map = lambda i: [i[0], i[1], i[3]]
    elif _pointwise(sp) and sp.h > 1:
        # A 1x1 stride-1 conv is a matmul over the flattened image: run it as one row of
        # H*W columns so the vector axis is long even when the image is narrow.
        width = sp.w
        epi.index_map = lambda i: [i[0], i[1], i[3] // width, i[3] % width]
        sp.w = sp.ow = sp.h * sp.w
        sp.h = sp.oh = 1
    x = ctx.reshape(ctx.expr(inputs[0]), (sp.n, sp.c, sp.h, sp.w))
    w4 = w.reshape(sp.oc, w.shape[1], sp.kh, sp.kw)
    return ctx.reshape(conv2d(ctx, node, x, w4, sp, epi), oshape)


def transpose_weight(w: np.ndarray, groups: int) -> np.ndarray:
    """ConvTranspose weight [C, OC/g, KH, KW] -> the equivalent Conv weight [OC, C/g, KH, KW],
    spatially flipped."""
    c, ocg = w.shape[:2]
    wg = w.reshape(groups, c // groups, ocg, *w.shape[2:])
    wg = wg.transpose(0, 2, 1, *range(3, w.ndim + 1))[..., ::-1, ::-1]
    return np.ascontiguousarray(wg.reshape(groups * ocg, c // groups, *w.shape[2:]))


def conv_transpose(ctx: LowerCtx, node: Node, inputs: list[str], attrs: dict, out: str,
                   epi: Epilogue) -> relax.Expr:
    """ONNX ConvTranspose as a stride-1 convolution of the upsampled, padded input (2-D, a
    constant weight and bias, pads within the kernel's extent), else the direct kernel."""
    w = ctx.const(inputs[1])
    xshape, oshape = ctx.shape(inputs[0]), ctx.shape(out)
    rank = len(xshape) - 2
    if w is None or rank != 2 or _computed_bias(ctx, inputs):
        return conv_direct(ctx, node, inputs, attrs, out, epi, transpose=True)
    groups = int(attrs.get("group", 1))
    strides = list(attrs.get("strides", [1, 1]))
    dil = list(attrs.get("dilations", [1, 1]))
    pads = _transpose_pads(attrs, xshape, w.shape, oshape, strides, dil)
    wc = transpose_weight(w, groups)
    sp = ConvSpec(xshape[0], xshape[1], xshape[2], xshape[3], wc.shape[0], w.shape[2], w.shape[3],
                  oshape[2], oshape[3], (1, 1), (dil[0], dil[1]),
                  dil[0] * (w.shape[2] - 1) - pads[0], dil[1] * (w.shape[3] - 1) - pads[1],
                  groups, upsample=(strides[0], strides[1]))
    if sp.pad_top < 0 or sp.pad_left < 0:  # pads beyond the kernel's extent: crop, gathering
        return conv_direct(ctx, node, inputs, attrs, out, epi, transpose=True)
    epi = _with_bias(ctx, epi, inputs[2] if len(inputs) > 2 else "", rank)
    return conv2d(ctx, node, ctx.expr(inputs[0]), wc, sp, epi)


def _transpose_pads(attrs: dict, xshape: tuple, wshape: tuple, oshape: tuple,
                    strides: list, dil: list) -> list[int]:
    """The begin pads of a ConvTranspose (explicit, or derived for auto_pad/output_shape)."""
    auto = attrs.get("auto_pad", "NOTSET")
    if auto == "NOTSET" and "pads" in attrs:
        return list(attrs["pads"])[:2]
    if auto == "NOTSET" and "output_shape" not in attrs:
        return [0, 0]
    out_pad = list(attrs.get("output_padding", [0, 0]))
    begins = []
    for i in range(2):
        full = strides[i] * (xshape[2 + i] - 1) + out_pad[i] + (wshape[2 + i] - 1) * dil[i] + 1
        total = max(0, full - oshape[2 + i])
        begins.append(total // 2 if auto != "SAME_LOWER" else total - total // 2)
    return begins


def lower_conv(ctx: LowerCtx, node: Node) -> None:
    out = node.outputs[0]
    ctx.bind(node, conv(ctx, node, node.inputs, node.attrs, out, Epilogue(ctx.dtype(out))))


def lower_conv_transpose(ctx: LowerCtx, node: Node) -> None:
    out = node.outputs[0]
    ctx.bind(node, conv_transpose(ctx, node, node.inputs, node.attrs, out,
                                  Epilogue(ctx.dtype(out))))
