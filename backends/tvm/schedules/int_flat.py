"""The x86 "qconv2d" kernel over flattened output positions, for short output rows.

`int_kernels.conv_kernel` puts the vector along one output row: a 7-column row fills 7 of
16 lanes. Here the input is padded and split into planes by the stride's phases (`int_kernels.
_conv_pad` with `planes`): plane (ry % sh, rx % sw) holds padded rows i // sh and columns
j // sw, pws columns a row, so output (y, x) at a tap reads plane offset y * pws + x + a
constant of the tap. Over the "virtual" positions p = y * pws + x (x < pws: the columns
past the row's end are computed and dropped) a run of nl consecutive outputs is one vector
load at every tap: a 7x7 output is 55-63 positions (4 vectors of 16, was 7 of one
vector each). The tile is requantised in the accumulators and stored whole, narrowed, at
its virtual positions in the channel block's staging buffer; once the block's tiles are
done its rows are copied out, each row's columns one vector copy (an epilogue whose steps
after the requantisation need each output's position copies element by element instead).
The schedule (`int_cpu.QConv`, `flat_vectors`) chooses this layout where it saves lanes.
"""

from __future__ import annotations

from tvm import tirx
from tvm.script.ir_builder import IRBuilder
from tvm.tirx.script.builder import ir as T

from backends.tvm.schedules.int_kernels import (
    PARALLEL_MIN_WORK,
    Dot,
    _args,
    _attr,
    _broadcast4,
    _conv_pad,
    _Epilogue,
    _finish,
    _shape,
    _step,
    _Then,
    _vec,
    _zero,
    block_origin,
    by_size,
    stride_dilation,
    tail_tiles,
)

Expr = tirx.Expr


def flat_geometry(oh: int, ow: int, kernel: tuple, stride: tuple, dilation: tuple
                  ) -> tuple[int, int, int]:
    """(pws, positions, rows read): the plane's row length, the virtual positions
    (oh - 1) * pws + ow, and the padded input rows the conv reads."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    pws = -(-((ow - 1) * sw + (kw - 1) * dw + 1) // sw)
    return pws, (oh - 1) * pws + ow, (oh - 1) * sh + (kh - 1) * dh + 1


def dense_geometry(oh: int, ow: int, kernel: tuple, stride: tuple, dilation: tuple
                   ) -> tuple[int, int, int]:
    """(plane rows, positions, quads read past the last plane) of the dense layout: kw
    column-shifted copies of each row phase's plane at the output's own row length ow."""
    (kh, _), (sh, _), (dh, _) = kernel, stride, dilation
    _, _, ph = flat_geometry(oh, ow, kernel, stride, dilation)
    ni, positions = -(-ph // sh), oh * ow
    return ni, positions, (kh - 1) * dh // sh * ow


def flat_conv_kernel(func: tirx.PrimFunc, dot: Dot, ocb: int, xv: int,
                     dense: bool = False) -> tirx.PrimFunc:
    """Direct conv over the flattened positions: tiles of ocb output channels x xv vectors
    of nl positions (the last of each narrower where they do not divide: `int_kernels.each_tile`);
    taps and channel quads outside the tile. `dense` (`int_cpu.dense_vectors`): the planes
    copied once more, kw times, each shifted by one tap's columns and packed at the output's
    row length (`_dense_planes`), so the virtual positions are the outputs themselves
    (y * OW + x) and no lane computes a dropped column."""
    with IRBuilder() as ib, T.prim_func():
        T.func_name("main")
        x, w, *params, out = _args(func)
        n, (oc, kh, kw, cq, _) = _shape(x)[0], _shape(w)
        oh, ow = _shape(out)[2:]
        g, nl = _attr(func, "groups"), _attr(func, "nl")
        stride, dilation = stride_dilation(func)
        (sh, sw), (dh, dw) = stride, dilation
        pws, positions, ph = flat_geometry(oh, ow, (kh, kw), stride, dilation)
        ni = -(-ph // sh)
        if dense:
            _, positions, below = dense_geometry(oh, ow, (kh, kw), stride, dilation)
        nvec = -(-positions // nl)
        reach = (kh - 1) * dh // sh * pws + (kw - 1) * dw // sw + nvec * nl
        pitch = ow if dense else pws
        epi = _Epilogue(func, params, out.dtype, nl)
        ocpg, blocks = oc // g, -(-(oc // g) // ocb)
        tiles = g * blocks
        work = oc * oh * ow * kh * kw * cq * 4
        loop = T.parallel if work >= PARALLEL_MIN_WORK and tiles > 1 else T.serial

        def tile(b: Expr, o0: Expr, q0: Expr, p0: Expr, rows: int, vecs: int) -> None:
            acc = T.alloc_buffer((rows, vecs * nl), "int32")
            _zero(acc, rows, vecs, nl)
            with T.grid(kh, kw, cq) as (ry, rx, rq):
                base = at(q0 + rq, ry * dh, rx) if dense else \
                    at(q0 + rq, ry * dh, rx * dw % sw, rx * dw // sw)
                base = base + p0 * 4
                with T.unroll(0, rows) as k:
                    wq = _broadcast4(w, [o0 + k, ry, rx, rq, 0], nl, "int8")
                    with T.unroll(0, vecs) as v:
                        a = _vec(pad, [base + v * nl * 4], 4 * nl)
                        _step(acc, k, v, nl, a, wq, dot)
            _flat_store(out, acc, epi, (b, o0, p0), (rows, vecs, nl, pitch), stage)

        direct = not epi.staged or epi.table_vec
        with T.serial(0, n) as b:
            if dense:
                planes, plane_at = _conv_pad(func, x, cq, (g * cq, ph, sw, pws), b,
                                             planes=(sh, 0))
                pad, at = _dense_planes(planes, plane_at, (g * cq, sh, kw, ni, ow),
                                        (sw, dw), max(0, below + nvec * nl - ni * ow))
            else:
                pad, at = _conv_pad(func, x, cq, (g * cq, ph, sw, pws), b,
                                    planes=(sh, max(0, reach - ni * pws)))
            with loop(0, tiles) as t:
                o0, q0 = block_origin(t, blocks, ocpg, ocb, cq, g)
                # the block's outputs at their virtual positions, then copied out row by row
                stage = T.alloc_buffer((ocb, nvec * nl), out.dtype) if direct else None

                def block(rows: int) -> None:
                    for start, count, vecs in tail_tiles(nvec, xv):
                        with T.serial(0, count) as xo:
                            tile(b, o0, q0, (start + xo * vecs) * nl, rows, vecs)
                    if stage is not None:
                        with T.serial(0, rows) as k, T.serial(0, oh) as y, \
                                T.vectorized(0, ow) as xc:
                            T.buffer_store(out, tirx.BufferLoad(stage, [k, y * pitch + xc]),
                                           [b, o0 + k, y, xc])

                by_size(t % blocks, tail_tiles(ocpg, ocb), block)
    return _finish(ib, func)


def _dense_planes(planes: tirx.Buffer, plane_at, geo: tuple, col: tuple, tail: int
                  ) -> tuple[tirx.Buffer, object]:
    """D[gq, r, kx, i, x] (flat, 4 bytes a position) = the stride-phase planes' quad gq at
    padded row i * sh + r, padded column x * sw + kx * dw: per (quad, row phase, tap column)
    a plane of the output's row length, so output (y, x) at tap (ry, rx) reads D's plane
    (r = ry dh % sh, rx) at position y * OW + x + (ry dh // sh) OW. Each row is one
    contiguous copy out of the phase planes (its columns are adjacent there). `tail` spare
    quads after the last plane (the last tile's reads past it), zeroed. Returns D and
    at(gq, i, kx) for i = ry * dh: the offset of tap (ry, rx)'s plane row for output row 0."""
    quads, sh, kw, ni, ow = geo
    sw, dw = col
    size = (quads * sh * kw * ni * ow + tail) * 4
    dense = T.alloc_buffer((size,), "uint8")

    def dat(gq: Expr, r: Expr, kx: Expr, i: Expr) -> Expr:
        return (((gq * sh + r) * kw + kx) * ni + i) * ow * 4

    loop = T.parallel if size >= 1 << 16 and quads > 1 else T.serial
    with loop(0, quads) as gq, T.grid(sh, kw, ni) as (r, kx, i):
        src = plane_at(gq, i * sh + r, kx * dw % sw, kx * dw // sw)
        with T.vectorized(0, ow * 4) as e:
            T.buffer_store(dense, tirx.BufferLoad(planes, [src + e]), [dat(gq, r, kx, i) + e])
    if tail:
        with T.vectorized(0, tail * 4) as e:
            T.buffer_store(dense, tirx.const(0, "uint8"), [size - tail * 4 + e])
    return dense, lambda gq, i, kx: dat(gq, i % sh, kx, i // sh)


def _flat_store(out: tirx.Buffer, acc: tirx.Buffer, epi: _Epilogue, at: tuple,
                sizes: tuple, stage: tirx.Buffer | None) -> None:
    """Requantise the tile in place (whole vectors: the dropped positions hold finite
    values), look the table up there where `epi.table_vec`, then store it whole at its
    virtual positions in the block's `stage`; without one (an epilogue with steps after
    the requantisation that need each output's position), copy the positions that are
    outputs with those steps applied element by element: per tile row, the output rows the
    tile's positions touch, columns < OW."""
    b, o0, p0 = at
    ocb, xv, nl, pws = sizes
    oh, ow = _shape(out)[2:]
    span = xv * nl
    with T.unroll(0, ocb) as k, T.unroll(0, xv) as v:
        o, idx = o0 + k, [k, tirx.Ramp(v * nl, 1, nl)]
        if epi.vec:
            def channel(buf: tirx.Buffer, o: Expr = o) -> Expr:
                return tirx.Broadcast(tirx.BufferLoad(buf, [0, o, 0, 0]), nl)

            y = epi.vector(_vec(acc, [k, v * nl], nl), channel, "int32")
            if epi.table_vec:
                y = epi.finish_table(y).astype(f"int32x{nl}")
            T.buffer_store(acc, y, idx)
        else:
            with T.vectorized(0, nl) as j:
                value = epi.scalar(tirx.BufferLoad(acc, [k, v * nl + j]), [0, o, 0, 0])
                T.buffer_store(acc, value.astype("int32"), [k, v * nl + j])
    if stage is not None:  # whole vectors into the block's virtual positions
        with T.unroll(0, ocb) as k, T.unroll(0, xv) as v:
            T.buffer_store(stage, _vec(acc, [k, v * nl], nl).astype(f"{out.dtype}x{nl}"),
                           [k, tirx.Ramp(p0 + v * nl, 1, nl)])
        return
    rows = span // pws + 2
    with T.serial(0, ocb) as k, T.serial(0, rows) as r:
        y = p0 // pws + r
        with _Then(y < oh), T.serial(0, ow) as xcol:
            p = y * pws + xcol - p0
            with _Then(tirx.all(p >= 0, p < span)):
                pos = [b, o0 + k, y, xcol]
                T.buffer_store(out, epi.finish(tirx.BufferLoad(acc, [k, p]), pos), pos)
