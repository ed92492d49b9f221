"""The x86 "qconv2d" kernel whose vector is the output channels, for few output positions.

Vectors of output positions (`int_kernels.conv_kernel`, `int_flat`) leave lanes empty where
the positions do not fill them: a 7x7 output is 49 positions in 64 lanes, so a quarter of
every `vpdpbusd` is wasted (resnet50's last stage, mobilenet_v2's and efficientnet_b0's 7x7
layers). Here the weights are packed [OC/16, KH, KW, C/4, 16, 4] (`lower/int_conv.
pack_channels`, chosen by `channel_layout`), a tile is 16 positions x 16 output channels:
per tap and channel quad one weight vector and 16 broadcast input quads, read from the
quad-interleaved padded input (`int_kernels._conv_pad`) at offsets that are constants of
the (unrolled) tile. The requantisation runs on the channel lanes (each lane its channel's
multiplier); the 16 requantised vectors, narrowed to bytes, are transposed in registers
(four 64-byte shuffles) so each channel's 16 positions are one 16-byte row, which takes
the residual add or table in vectors and is stored NCHW. The last tile of fewer positions
finishes element by element.
"""

from __future__ import annotations

from tvm import tirx
from tvm.script.ir_builder import IRBuilder
from tvm.tirx.script.builder import ir as T

from backends.tvm.schedules.int_flat import flat_geometry
from backends.tvm.schedules.int_kernels import (
    PARALLEL_MIN_WORK,
    Dot,
    _args,
    _broadcast4,
    _conv_pad,
    _Epilogue,
    _finish,
    _shape,
    _step,
    _vec,
    _zero,
    stride_dilation,
)

Expr = tirx.Expr
POSITIONS = 16  # a tile's positions: its 16 x 16 requantised bytes transposed in registers


def channel_conv_kernel(func: tirx.PrimFunc, dot: Dot) -> tirx.PrimFunc:
    """Direct conv with 16 output channels a vector (see the module docstring): per image
    its padded copy, then per channel vector (in parallel where the work is large) its
    position tiles."""
    with IRBuilder() as ib, T.prim_func():
        T.func_name("main")
        x, w, *params, out = _args(func)
        n, (ocv, kh, kw, cq, nl, _) = _shape(x)[0], _shape(w)
        oh, ow = _shape(out)[2:]
        stride, dilation = stride_dilation(func)
        (sh, sw), (dh, dw) = stride, dilation
        positions = oh * ow
        pws, _, ph = flat_geometry(oh, ow, (kh, kw), stride, dilation)
        epi = _Epilogue(func, params, out.dtype, nl)
        work = ocv * nl * positions * kh * kw * cq * 4
        loop = T.parallel if work >= PARALLEL_MIN_WORK and ocv > 1 else T.serial
        size = n * ocv * nl * positions
        flat = T.decl_buffer((size,), out.dtype, data=out.data)
        residual = [T.decl_buffer((size,), b.dtype, data=b.data) for b in epi.post_bufs
                    if _shape(b) == _shape(out)]
        # the per-channel parameters ([1, OC, 1, 1]) as [OC]: a vector of channels is a Ramp
        per_channel = {buf.name: T.decl_buffer((ocv * nl,), buf.dtype, data=buf.data)
                       for buf in [epi.bias, *epi.req] + ([epi.mf] if epi.mf is not None else [])}
        with T.serial(0, n) as b:
            pad, at = _conv_pad(func, x, cq, (cq, ph, sw, pws), b)
            with loop(0, ocv) as cv:
                for p0 in range(0, positions, POSITIONS):
                    count = min(POSITIONS, positions - p0)
                    offsets = [((p // ow) * sh * sw * pws + p % ow) * 4
                               for p in range(p0, p0 + count)]
                    acc = T.alloc_buffer((count, nl), "int32")
                    _zero(acc, count, 1, nl)
                    with T.grid(kh, kw, cq) as (ry, rx, rq):
                        base = at(rq, ry * dh, rx * dw % sw, rx * dw // sw)
                        wv = _vec(w, [cv, ry, rx, rq, 0, 0], 4 * nl)
                        for k, off in enumerate(offsets):
                            _step(acc, k, 0, nl, _broadcast4(pad, [base + off], nl), wv, dot)
                    _store(out, (flat, residual, per_channel), acc, epi, (b, cv * nl, p0, count))
    return _finish(ib, func)


def _shuffle(vectors: list, index: list[int]) -> Expr:
    return T.bind(tirx.Shuffle(vectors, [tirx.const(i, "int32") for i in index]))


def _transpose(rows: list) -> list:
    """16 rows of 16 bytes (position k: channels 0-15) -> 4 vectors of 64 bytes (q: channels
    4q .. 4q + 3, each its 16 positions), in two-source byte permutes (`vpermt2b` with
    VBMI): the rows four to a vector (Z_m: positions 4m .. 4m + 3), then per half h of the
    channels 8 channels x 8 positions from Z_0, Z_1 (A_h) and from Z_2, Z_3 (B_h), then
    each quarter from A_h and B_h."""
    z = [_shuffle(rows[4 * m:4 * m + 4], list(range(64))) for m in range(4)]
    half = [[_shuffle(z[2 * s:2 * s + 2], [k // 4 * 64 + k % 4 * 16 + 8 * h + c
                                           for c in range(8) for k in range(8)])
             for s in range(2)] for h in range(2)]
    return [_shuffle(half[q // 2], [(4 * (q % 2) + j) * 8 + k if k < 8 else
                                    64 + (4 * (q % 2) + j) * 8 + k - 8
                                    for j in range(4) for k in range(16)])
            for q in range(4)]


def _store(out: tirx.Buffer, views: tuple, acc: tirx.Buffer, epi: _Epilogue, at: tuple
           ) -> None:
    """Requantise a tile's `count` position vectors on their channel lanes, transpose the
    bytes to channel rows, finish and store each row (see the module docstring). `views`:
    the output and the residual as flat buffers, the per-channel parameters as [OC]."""
    flat, residual, per_channel = views
    b, c0, p0, count = at
    nl = epi.nl
    _, oc, oh, ow = _shape(out)
    positions = oh * ow
    lanes = tirx.Ramp(c0, 1, nl)
    qmin, _ = epi.attrs
    small = "uint8" if qmin >= 0 else "int8"  # the requantised values' own 8-bit type
    # each value bound once: the shuffles below read every row several times
    rows = [T.bind(epi.vector(_vec(acc, [k, 0], nl), lambda buf: tirx.BufferLoad(
        per_channel[buf.name], [lanes]), "int32").astype(f"{small}x{nl}"))
        for k in range(count)]
    rows += [rows[0]] * (POSITIONS - count)
    # the transposed tile, [channel][position], read back a channel row at a time (the rows
    # are a loop: one copy of the finishing steps, not one per channel)
    stage = T.alloc_buffer((nl * POSITIONS,), small)
    for q, quarter in enumerate(_transpose(rows)):
        T.buffer_store(stage, quarter, [tirx.Ramp(q * 4 * POSITIONS, 1, 4 * POSITIONS)])
    if count == POSITIONS and (not epi.post or epi.post_vec or epi.table_vec):
        with T.serial(0, nl) as c:
            row = tirx.BufferLoad(stage, [tirx.Ramp(c * POSITIONS, 1, POSITIONS)])
            idx = [tirx.Ramp((b * oc + c0 + c) * positions + p0, 1, POSITIONS)]
            y = row.astype(f"int32x{POSITIONS}")
            if epi.post_vec:
                value = epi.finish_vector(y, tirx.BufferLoad(residual[0], idx))
            elif epi.table_vec:
                value = epi.finish_table(y)
            else:
                value = row.astype(f"{out.dtype}x{POSITIONS}")
            T.buffer_store(flat, value, idx)
        return
    with T.serial(0, nl) as c, T.serial(0, count) as k:  # element by element
        p = p0 + k
        pos = [b, c0 + c, p // ow, p % ow]
        y = tirx.BufferLoad(stage, [c * POSITIONS + k])
        T.buffer_store(out, epi.finish(y.astype("int32"), pos) if epi.post else
                       y.astype(out.dtype), pos)
