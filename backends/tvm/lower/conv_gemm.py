"""Convolution as one packed GEMM over the image, rendered where `choose_conv_algorithm`
recorded `conv_algorithm = "pointwise"` (1x1, stride 1) or `"im2col"` (any other ungrouped
2-D convolution it sends here: strided, or rows too narrow for the direct kernel's vector).

out[n, k, p] = sum_r W[k, r] * patch[n, r, p] with r = (c, ky, kx) and p = oy * OW + ox: the
output channels are the GEMM's rows, the flattened output positions its columns (the vector
axis), so a 7x7 image still fills whole vectors. Three stages in one kernel:
- "panel": the columns of one block of `vw` output positions, packed contiguous as
  [N, P/vw, R, vw] (for "pointwise" a copy of the input; for "im2col" the input patches, zero
  outside the image): the micro-kernel then reads one contiguous vector per reduction step
  instead of a strided row, and the schedule builds each block's panel just before it is used;
- "anchor": [N, OCp, Pp] accumulated in an ocb x vw register tile, the weight packed at
  compile time to [OCp/ocb, R, ocb] (zero rows pad OC up to the tile);
- "epilogue": bias, activation, residual on [N, OC, P] (viewed as the node's [N, OC, OH, OW]).

`conv_channels` renders `"pointwise_channels"`: the same 1x1 GEMM with the output channels
as the vector and the positions broadcast, for images whose positions would not fill whole
vectors; `conv_channels_direct` renders `"direct_channels"`: any other
convolution the same way, read from the padded input, no patches packed (their
docstrings).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
from tvm import relax, te, tirx

from backends.tvm.lower.context import LowerCtx, accumulator, cast, shape_of
from backends.tvm.lower.conv import ConvSpec, _padded_input
from backends.tvm.lower.epilogue import Epilogue
from backends.tvm.lower.prologue import Prologue
from backends.tvm.schedules import tiles
from compiler.errors import EtchError
from compiler.ir import Node

ALGORITHMS = ("pointwise", "im2col")


def fits(sp: ConvSpec) -> bool:
    """Whether the GEMM form computes this convolution (one group, no upsampling)."""
    return sp.groups == 1 and sp.upsample == (1, 1)


def pack_weight(w: np.ndarray, ocb: int) -> np.ndarray:
    """[OC, C, KH, KW] -> [OCp/ocb, C*KH*KW, ocb], OC padded with zero rows to OCp."""
    oc = w.shape[0]
    flat = w.reshape(oc, -1)
    ocp = tiles.padded(oc, ocb)
    if ocp != oc:
        flat = np.concatenate([flat, np.zeros((ocp - oc, flat.shape[1]), flat.dtype)])
    return np.ascontiguousarray(flat.reshape(ocp // ocb, ocb, -1).transpose(0, 2, 1))


def _pointwise(sp: ConvSpec) -> bool:
    return (sp.kh, sp.kw, sp.stride, sp.pad_top, sp.pad_left, sp.h, sp.w) == \
        (1, 1, (1, 1), 0, 0, sp.oh, sp.ow)


def _panel(x: te.Tensor, sp: ConvSpec, vw: int, blocks: int,
           read: Callable[..., tirx.Expr] | None = None, direct: bool = False) -> te.Tensor:
    """[N, blocks, C*KH*KW, vw]: the patch of every output position. A pointwise panel reads
    the input directly (`read(n, channel, position)`, default x[n, channel, 0, position]:
    a prologue's reader), zero past the last position, tested per block where blocks are
    whole (the same test for every lane: a per-lane test left TIR's vectoriser scalar); an
    im2col panel reads the zero-padded input (`conv._padded_input`) through an index vector,
    positions past the last one repeating it (their outputs are never written). `direct`
    (`in_place`): the blocks are the input's own positions, no test; the schedule inlines
    the panel into the GEMM, which then reads the input where it lies."""
    cols, taps = sp.oh * sp.ow, sp.kh * sp.kw
    if taps == 1 and _pointwise(sp):
        full = cols // vw
        if read is None:
            read = lambda n, r, p: x[n, r, 0, p]
        if direct:  # a partial last block reads the last vw positions (`in_place`)
            last = cols - vw
            start = (lambda b: b * vw) if cols % vw == 0 else \
                (lambda b: tirx.min(b * vw, last))
            return te.compute((sp.n, blocks, sp.c, vw),
                              lambda n, b, r, v: read(n, r, start(b) + v), name="panel")

        def copy(n: tirx.Expr, b: tirx.Expr, r: tirx.Expr, v: tirx.Expr) -> tirx.Expr:
            tail = tirx.if_then_else(b * vw + v < cols, read(n, r, b * vw + v),
                                     tirx.const(0, x.dtype))
            return tail if full == 0 else tirx.if_then_else(b < full, read(n, r, b * vw + v),
                                                            tail)

        return te.compute((sp.n, blocks, sp.c, vw), copy, name="panel")
    (sh, sw), (dh, dw) = sp.stride, sp.dilation
    ph, pw = (sp.oh - 1) * sh + (sp.kh - 1) * dh + 1, (sp.ow - 1) * sw + (sp.kw - 1) * dw + 1
    pad = _padded_input(x, sp, ph, pw, 1)

    def value(n: tirx.Expr, b: tirx.Expr, r: tirx.Expr, v: tirx.Expr) -> tirx.Expr:
        p = tirx.min(b * vw + v, cols - 1)
        c, t = (r // taps, r % taps) if taps > 1 else (r, 0)
        return pad[n, c, p // sp.ow * sh + t // sp.kw * dh, p % sp.ow * sw + t % sp.kw * dw]

    return te.compute((sp.n, blocks, sp.c * taps, vw), value, name="panel")


def conv_gemm(ctx: LowerCtx, node: Node, x: relax.Expr | Prologue, w: np.ndarray,
              sp: ConvSpec, epi: Epilogue) -> relax.Expr:
    """Emit the GEMM convolution of x [N, C, H, W] with constant w [OC, C, KH, KW]; returns
    [N, OC, OH*OW] (the caller reshapes it to the node's output). A pointwise convolution's
    x may be a Prologue: its parts and steps are read in the panel copy."""
    cols, width = sp.oh * sp.ow, sp.ow
    pro = x if isinstance(x, Prologue) else None
    if _pointwise(sp):  # the columns are the input's own: read it as one row of H*W
        if pro is not None:
            pro = replace(pro, parts=[ctx.reshape(p, (sp.n, shape_of(p)[1], 1, cols))
                                      for p in pro.parts])
        else:
            x = ctx.reshape(x, (sp.n, sp.c, 1, cols))
        sp = replace(sp, h=1, w=cols, oh=1, ow=cols)
    elif pro is not None:
        raise EtchError(f"node {node.name}: a conv prologue runs in pointwise GEMMs only")
    ocb, vw = tiles.gemm_tile(sp.oc, cols, sp.c * sp.kh * sp.kw, ctx.lanes,
                              vectors=int(node.attrs.get("gemm_vectors", 2)))
    weight = pack_weight(w, ocb)
    ocp, reduce = weight.shape[0] * ocb, weight.shape[1]
    direct = in_place(sp, pro, vw, ctx.lanes)
    chunk = tiles.gemm_chunk(reduce, vw, -(-cols // vw), tiles.panel_bytes(ctx.lanes), direct)
    blocks = tiles.padded(-(-cols // vw), chunk)  # whole chunks (past the end: never stored)
    acc_t = accumulator(w.dtype)
    epi.index_map = lambda i: [i[0], i[1], i[2] // width, i[2] % width]

    first = pro.exprs if pro is not None else [x]

    def compute(*ts: te.Tensor) -> te.Tensor:
        xs, wt, extra = ts[:len(first)], ts[len(first)], ts[len(first) + 1:]
        read = None if pro is None else (lambda n, r, p: pro.value(xs, n, r, 0, p))
        panel = _panel(xs[0], sp, vw, blocks, read, direct)
        rk = te.reduce_axis((0, reduce), "rk")
        acc = te.compute((sp.n, ocp, blocks * vw), lambda n, o, p: te.sum(
            cast(panel[n, p // vw, rk, p % vw], acc_t) * cast(wt[o // ocb, rk, o % ocb], acc_t),
            axis=rk), name="anchor")
        return te.compute((sp.n, sp.oc, cols), lambda n, o, p: epi.apply(
            cast(result(acc, n, o, p), xs[0].dtype), (n, o, p), extra), name="epilogue")

    def result(acc: te.Tensor, n: tirx.Expr, o: tirx.Expr, p: tirx.Expr) -> tirx.Expr:
        """Position p's sum: a shifted last block holds positions cols - vw on, so p past
        the whole blocks is `shift` further on (both reads lie inside the accumulators:
        a Select of two vector loads, no gather)."""
        shift = blocks * vw - cols
        if not direct or shift == 0:
            return acc(n, o, p)
        return tirx.Select(p < (blocks - 1) * vw, acc(n, o, p), acc(n, o, p + shift))

    return ctx.emit(compute, [*first, ctx.array(weight), *epi.exprs], node, "conv_gemm",
                    ocb=ocb, vw=vw, chunk=chunk, pointwise=int(_pointwise(sp)),
                    direct=int(direct))


# Positions that are not whole blocks are read in place (the last block shifted back) from
# this many blocks on. Zen 5, one thread, kernel time, packed -> in place: resnet50's
# 512->128 / 512->256 on 28x28 (25 blocks) 457 -> 405 / 913 -> 842 us, inception_v3's
# 35x35 reductions (39 blocks) 2-14% faster, squeezenet1_1's 128->32 on 27x27 (23) 33 -> 30;
# shufflenet_v2's 116->116 on 14x14 (7 blocks, 28 of the last one's 32 positions
# recomputed) at batch 4 75 -> 78 us.
RAGGED_MIN_BLOCKS = 16


def in_place(sp: ConvSpec, pro: Prologue | None, vw: int, lanes: int = 16) -> bool:
    """Whether a GEMM convolution reads its input where it lies instead of packing panels
    (`etch.direct`): a pointwise one over one input without a prologue (whose steps run
    once per value in the copy, not once per channel block), whole blocks of positions or
    RAGGED_MIN_BLOCKS of them at least (in chunks that divide the blocks:
    `tiles.gemm_chunk`; where the last block is partial it reads the last `vw` positions,
    overlapping the block before, and the epilogue takes those positions from it: `_panel`,
    `result`), and either one block (the input is the panel already) or no more output
    channels than input ones: the copy costs C*P against the GEMM's C*P*OC, and each block
    step then reads `vw` floats from each of C rows, too many streams for the prefetchers
    where many channel blocks re-read them. Zen 5, one thread, kernel time (time_evaluator,
    in turns), packed -> in place: resnet50's 256->64 on 56x56 477 -> 414 us, 64->64 119 ->
    113; mobilenet_v2's 32->16 on 112x112 96 -> 62, 96->24 and 144->24 on 56x56 79 -> 59,
    120 -> 91; inception_v3's 8x8 layers 1-3% faster. Expanding layers lost: resnet50's
    64->256 on 56x56 467 -> 502, mobilenet_v2's 16->96 on 112x112 176 -> 187,
    shufflenet_v2's 24->58 on 56x56 (29 blocks of 2 channels) 54 -> 72. Measured on
    AVX-512 only (`lanes` 16): with fewer lanes the panel stays."""
    cols = sp.oh * sp.ow
    return lanes >= 16 and _pointwise(sp) and pro is None and cols >= vw and \
        (cols % vw == 0 or cols >= RAGGED_MIN_BLOCKS * vw) and (sp.oc <= sp.c or cols == vw)


def _channel_tile(ctx: LowerCtx, node: Node, channels: int, positions: int,
                  gemm: bool = False, row: bool = False) -> tuple[int, int]:
    """(ocv, pr) of a channel-vector kernel (`tiles.channel_tile`; the GEMM's:
    `tiles.gemm_channel_tile`; a 1 x k kernel's: `tiles.row_channel_tile`); an EtchError
    where there is none (the pass chose a "*_channels" algorithm it should not have)."""
    pick = tiles.gemm_channel_tile if gemm else \
        tiles.row_channel_tile if row else tiles.channel_tile
    tile = pick(channels, positions, ctx.lanes)
    if tile is None:
        raise EtchError(f"node {node.name}: no channel tile for {channels} channels x "
                        f"{positions} positions (passes/choose_conv_algorithm.py should not "
                        "choose it)")
    return tile


def columns(sp: ConvSpec) -> bool:
    """Whether a convolution's taps are whole rows apart in its flattened input (a KH x 1
    kernel, stride 1, undilated, one group, no column padding): the GEMM of
    `conv_channels` over the positions, each tap an offset of whole rows."""
    return (sp.kw, sp.stride, sp.dilation, sp.groups, sp.pad_left, sp.ow, sp.upsample) == \
        (1, (1, 1), (1, 1), 1, 0, sp.w, (1, 1))


def conv_channels(ctx: LowerCtx, node: Node, x: relax.Expr, w: np.ndarray, sp: ConvSpec,
                  epi: Epilogue) -> relax.Expr:
    """Emit the pointwise convolution of x [N, C, H, W] with constant w [OC, C, 1, 1] as a
    GEMM whose vector axis is the output channels (`conv_algorithm = "pointwise_channels"`):
    "anchor" [N, P, OCp] accumulated in a `pr` positions x `ocv` channels register tile, each
    input value broadcast and each weight step one `ocv`-wide load of the weight packed at
    compile time to [OCp/ocv, C, ocv]; "epilogue" [N, OC, P] read back per tile. The
    positions need not fill vectors (a 7x7 image is 49 of them: a tile of positions as the
    vector pads them to 64), nor whole tiles (`pr` need not divide P: the last tile is
    partial). A KH x 1 kernel (`columns`, `conv_algorithm = "column_channels"`) is the same
    GEMM with KH steps per input channel, over "pad", the input padded by whole rows and
    flattened: output position p reads p + ky * W (the weight packed [OCp/ocv, C, KH, ocv]).
    Returns [N, OC, OH*OW]."""
    cols, width, taps = sp.oh * sp.ow, sp.ow, sp.kh * sp.kw
    ocv, pr = _channel_tile(ctx, node, sp.oc, cols, gemm=True)
    if taps > 1 and not columns(sp):
        raise EtchError(f"node {node.name}: a {sp.kh}x{sp.kw} kernel's taps are not whole "
                        "rows apart (passes/choose_conv_algorithm.py should not choose it)")
    (sh, sw), flat = sp.stride, taps > 1 or _pointwise(sp)
    if not flat and (sp.kh, sp.kw, sp.pad_top, sp.pad_left, sp.dilation) != (1, 1, 0, 0, (1, 1)):
        raise EtchError(f"node {node.name}: a strided channel GEMM takes an unpadded 1x1 "
                        "kernel only (passes/choose_conv_algorithm.py should not choose it)")
    x = ctx.reshape(x, (sp.n, sp.c, sp.h * sp.w))
    # each position's input, broadcast: its own (flattened), or a strided 1x1's window
    at = (lambda p: p) if flat else (lambda p: p // sp.ow * sh * sp.w + p % sp.ow * sw)
    weight = pack_weight(w, ocv)
    ocp = weight.shape[0] * ocv
    if taps > 1:
        weight = weight.reshape(ocp // ocv, sp.c, taps, ocv)
    acc_t = accumulator(w.dtype)
    epi.index_map = lambda i: [i[0], i[1], i[2] // width, i[2] % width]

    def compute(xt: te.Tensor, wt: te.Tensor, *extra: te.Tensor) -> te.Tensor:
        rk = te.reduce_axis((0, sp.c), "rk")
        if taps == 1:
            acc = te.compute((sp.n, cols, ocp), lambda n, p, o: te.sum(
                cast(xt[n, rk, at(p)], acc_t) * cast(wt[o // ocv, rk, o % ocv], acc_t),
                axis=rk), name="anchor")
        else:
            lo, hi = sp.pad_top * sp.w, (sp.pad_top + sp.h) * sp.w
            pad = te.compute((sp.n, sp.c, (sp.oh + sp.kh - 1) * sp.w), lambda n, c, i:
                             tirx.if_then_else(tirx.all(i >= lo, i < hi), xt[n, c, i - lo],
                                               tirx.const(0, xt.dtype)), name="pad")
            ry = te.reduce_axis((0, taps), "ry")
            acc = te.compute((sp.n, cols, ocp), lambda n, p, o: te.sum(
                cast(pad[n, rk, p + ry * sp.w], acc_t)
                * cast(wt[o // ocv, rk, ry, o % ocv], acc_t), axis=[rk, ry]), name="anchor")
        return te.compute((sp.n, sp.oc, cols), lambda n, o, p: epi.apply(
            cast(acc[n, p, o], xt.dtype), (n, o, p), extra), name="epilogue")

    return ctx.emit(compute, [x, ctx.array(weight), *epi.exprs], node, "conv_channels",
                    ocv=ocv, pr=pr)


def conv_channels_direct(ctx: LowerCtx, node: Node, x: relax.Expr, w: np.ndarray,
                         sp: ConvSpec, epi: Epilogue) -> relax.Expr:
    """Emit the convolution of x [N, C, H, W] with constant w [OC, C, KH, KW] (any kernel,
    stride and dilation, one group) with the output channels as the vector
    (`conv_algorithm = "direct_channels"`): "anchor" [N, OH, OW, OCp] accumulated in a tile
    of `pr` positions along a row (`pr` divides OW) by `ocv` channels over (c, ky, kx), each
    input value broadcast from the zero-padded input, the weight packed at compile time to
    [OCp/ocv, C, KH, KW, ocv]; "epilogue" [N, OC, OH, OW] read back per channel block. No
    patches are packed (an im2col GEMM copies each input value KH*KW / (sh*sw) times) and
    rows need not fill vectors. A 1 x k kernel of stride 1 may take a tile that does not
    divide the row (`tiles.row_channel_tile`: its last block partial). Returns
    [N, OC, OH, OW]."""
    ocv, pr = _channel_tile(ctx, node, sp.oc, sp.ow, row=(sp.kh, sp.stride) == (1, (1, 1)))
    (sh, sw), (dh, dw) = sp.stride, sp.dilation
    ph, pw = (sp.oh - 1) * sh + (sp.kh - 1) * dh + 1, (sp.ow - 1) * sw + (sp.kw - 1) * dw + 1
    ocp = w.shape[0]  # a multiple of ocv (`tiles.channel_tile`)
    weight = np.ascontiguousarray(
        w.reshape(ocp // ocv, ocv, *w.shape[1:]).transpose(0, 2, 3, 4, 1))
    acc_t = accumulator(w.dtype)

    def compute(xt: te.Tensor, wt: te.Tensor, *extra: te.Tensor) -> te.Tensor:
        pad = _padded_input(xt, sp, ph, pw, 1)
        rc = te.reduce_axis((0, sp.c), "rc")
        ry = te.reduce_axis((0, sp.kh), "ry")
        rx = te.reduce_axis((0, sp.kw), "rx")
        acc = te.compute((sp.n, sp.oh, sp.ow, ocp), lambda n, y, c, o: te.sum(
            cast(pad[n, rc, y * sh + ry * dh, c * sw + rx * dw], acc_t)
            * cast(wt[o // ocv, rc, ry, rx, o % ocv], acc_t), axis=[rc, ry, rx]),
            name="anchor")
        return te.compute((sp.n, sp.oc, sp.oh, sp.ow), lambda n, o, y, c: epi.apply(
            cast(acc[n, y, c, o], xt.dtype), (n, o, y, c), extra), name="epilogue")

    x = ctx.reshape(x, (sp.n, sp.c, sp.h, sp.w))
    return ctx.emit(compute, [x, ctx.array(weight), *epi.exprs], node, "conv_channels_direct",
                    ocv=ocv, pr=pr)
