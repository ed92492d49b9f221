"""The x86 depthwise kernels of "qdepthwise" (`lower/int_conv.qdepthwise`): one input channel
per output channel. `depthwise_kernel`: int32 multiply-adds of centred int16 inputs and a
broadcast weight, nl output columns per vector. `windows_kernel` (AVX512-VBMI and VNNI, int8
weights): the uint8 plane itself, a byte permute gathering each output's four taps into its
int32 lane and one vpdpbusd multiplying them by the four weights. Parameters and attributes
as the other hand-scheduled integer kernels (`int_kernels`).

Each (image, channel) pads its own plane into a small buffer (a few tens of KB: it stays in
the core's caches between the copy and the taps) instead of one padded copy of the whole
tensor, which for mobilenet_v2's early layers is megabytes written and read back through
memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from tvm import tirx
from tvm.script.ir_builder import IRBuilder
from tvm.tirx.script.builder import ir as T

from backends.tvm.lower.int_gemm import to_u8, u8_zero
from backends.tvm.schedules.int_intrin import PMADDWD, VPDPBUSD, VPDPWSSD
from backends.tvm.schedules.int_kernels import (
    PARALLEL_MIN_WORK,
    _args,
    _attr,
    _conv_store,
    _Epilogue,
    _fill,
    _finish,
    _shape,
    _vec,
    _zero,
    stride_dilation,
)

Expr = tirx.Expr
DEINTERLEAVE = 16  # outputs per phase of one vectorised block of the plane copy


class _Conv(NamedTuple):
    """What every depthwise kernel reads first (inside its IRBuilder prim_func): the
    buffers, the sizes, the stride and dilation, the epilogue and the channel loop."""

    x: tirx.Buffer
    w: tirx.Buffer
    out: tirx.Buffer
    n: int
    c: int
    kh: int
    kw: int
    oh: int
    ow: int
    nl: int
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    epi: _Epilogue
    loop: Callable


def _conv(func: tirx.PrimFunc) -> _Conv:
    x, w, *params, out = _args(func)
    (n, c), (_, kh, kw), (oh, ow) = _shape(x)[:2], _shape(w), _shape(out)[2:]
    nl = _attr(func, "nl")
    work = n * c * oh * ow * kh * kw
    loop = T.parallel if work >= PARALLEL_MIN_WORK // 4 and n * c > 1 else T.serial
    stride, dilation = stride_dilation(func)
    return _Conv(x, w, out, n, c, kh, kw, oh, ow, nl, stride, dilation,
                 _Epilogue(func, params, out.dtype, nl), loop)


def depthwise_kernel(func: tirx.PrimFunc, xv: int, pairs: bool = False,
                     columns: bool = False, vnni: bool = False) -> tirx.PrimFunc:
    """Depthwise conv: per (image, channel) its padded plane, then per output row tiles of
    xv vectors of nl output columns; each tap is one int16 vector of centred inputs times
    the broadcast weight. With `pairs` (the schedule's choice: undilated rows, int16
    weights) two taps of one column, rows ry and ry + 1, are one vpmaddwd (vpdpwssd with
    VNNI) on the plane's row pairs (`_row_pairs`): 6 multiply-adds for a 3x3, not 9 int32
    multiplies and adds. With `columns` (rows of one vector, undilated) two taps of one row
    are one multiply-add on the plane itself (`_column_pairs_kernel`)."""
    if pairs:
        return _pairs_kernel(func, xv)
    if columns:
        return _column_pairs_kernel(func, vnni)
    with IRBuilder() as ib, T.prim_func():
        T.func_name("main")
        x, w, out, n, c, kh, kw, oh, ow, nl, stride, dilation, epi, loop = _conv(func)
        (sh, sw), (dh, dw) = stride, dilation
        nvec = -(-ow // nl)
        geo = ((oh - 1) * sh + (kh - 1) * dh + 1, sw,
               -(-((nvec * nl - 1) * sw + (kw - 1) * dw + 1) // sw))
        with loop(0, n * c) as t:
            b, ch = t // c, t % c
            pad, at = _plane(func, x, geo, (b, ch))
            with T.serial(0, oh) as y, T.serial(0, nvec // xv) as xo:
                acc = T.alloc_buffer((1, xv * nl), "int32")
                _zero(acc, 1, xv, nl)
                with T.unroll(0, kh) as ry, T.unroll(0, kw) as rx:
                    wv = tirx.Broadcast(tirx.BufferLoad(w, [ch, ry, rx]), nl)
                    col = xo * xv * nl + rx * dw // sw
                    with T.unroll(0, xv) as v:
                        a = _vec(pad, [at(y * sh + ry * dh, rx * dw % sw, col + v * nl)],
                                 nl).astype(f"int32x{nl}")
                        idx = [0, tirx.Ramp(v * nl, 1, nl)]
                        T.buffer_store(acc, tirx.BufferLoad(acc, idx) + a * wv, idx)
                _conv_store(out, acc, epi, (b, ch, y, xo * xv * nl), (1, xv, nl, ow),
                            spill=True)
    return _finish(ib, func)


def _column_pairs_kernel(func: tirx.PrimFunc, vnni: bool) -> tirx.PrimFunc:
    """Rows of one vector (nl outputs, undilated): the taps of one row in one stride phase
    read consecutive plane columns, so a pair of them, k and k + 1, is one 16-bit pair
    multiply-add (vpmaddwd; vpdpwssd with VNNI) of the plane read as int16 pairs: loaded
    from column 2m (+ the pair's first tap) its nl/2 pairs are the taps of outputs 0, 2,
    4, ...; loaded one column later, of outputs 1, 3, 5, .... Per row of a 3x3: 4 half-width
    multiply-adds for nl outputs, not 3 int32 multiplies and adds of full width; the even
    and odd outputs are interleaved (one vpermt2d) before the epilogue. An odd tap count
    pairs its last tap with a zero weight (the lanes it reads past the row are in the
    plane's spare columns). `vnni`: the accumulating form (vpdpwssd) named directly, as
    LLVM sums an unrolled chain of vpmaddwd as a tree instead of folding it."""
    with IRBuilder() as ib, T.prim_func():
        T.func_name("main")
        x, w, out, n, c, kh, kw, oh, ow, nl, (sh, sw), _, epi, loop = _conv(func)
        half = nl // 2
        taps = [[rx for rx in range(kw) if rx % sw == p] for p in range(sw)]  # per phase
        # the odd outputs' loads reach column (taps - 1) + 1 + nl - 1 of their phase row
        pws = max(-(-((nl - 1) * sw + kw) // sw), max(len(t) for t in taps) + nl + 1)
        geo = ((oh - 1) * sh + kh, sw, pws)
        with loop(0, n * c) as t:
            b, ch = t // c, t % c
            pad, at = _plane(func, x, geo, (b, ch))
            with T.serial(0, oh) as y:
                acc = T.alloc_buffer((1, nl), "int32")
                _zero(acc, 1, 1, nl)  # [even outputs | odd outputs], then interleaved
                for ry in range(kh):
                    for p, row_taps in enumerate(taps):
                        for k in range(0, len(row_taps), 2):
                            wv = _weight_word(w, ch, ry, row_taps[k:k + 2], half)
                            for odd in range(2):
                                a = _vec(pad, [at(y * sh + ry, p, k + odd)], nl)
                                idx = [0, tirx.Ramp(odd * half, 1, half)]
                                T.buffer_store(acc, _pair_step(tirx.BufferLoad(acc, idx), a,
                                                               wv, half, vnni), idx)
                both = tirx.Shuffle([_vec(acc, [0, 0], half), _vec(acc, [0, half], half)],
                                    [tirx.const(j // 2 + j % 2 * half, "int32")
                                     for j in range(nl)])
                T.buffer_store(acc, both, [0, tirx.Ramp(0, 1, nl)])
                _conv_store(out, acc, epi, (b, ch, y, 0), (1, 1, nl, ow), spill=True)
    return _finish(ib, func)


def _pair_step(acc: Expr, a: Expr, wv: Expr, lanes: int, vnni: bool) -> Expr:
    """acc + the 16-bit pair products of a and wv (int32 x lanes)."""
    if vnni:
        return tirx.call_llvm_pure_intrin(f"int32x{lanes}", VPDPWSSD[lanes], acc, a, wv)
    return acc + tirx.call_llvm_pure_intrin(f"int32x{lanes}", PMADDWD[lanes], a, wv)


def _weight_word(w: tirx.Buffer, ch: Expr, ry: int, taps: list[int], half: int) -> Expr:
    """(w[ch, ry, taps[0]], w[ch, ry, taps[1]] or 0) as an int16 pair, half times."""
    lo = tirx.BufferLoad(w, [ch, ry, taps[0]])
    hi = tirx.BufferLoad(w, [ch, ry, taps[1]]) if len(taps) > 1 else tirx.const(0, "int32")
    word = tirx.bitwise_or(tirx.bitwise_and(lo, tirx.const(0xFFFF, "int32")),
                           tirx.shift_left(hi, tirx.const(16, "int32")))
    return tirx.reinterpret(f"int16x{2 * half}", tirx.Broadcast(word, half))


def _plane(func: tirx.PrimFunc, x: tirx.Buffer, geo: tuple, src: tuple
           ) -> tuple[tirx.Buffer, Callable]:
    """P[i, p, j] (flat, int16) of image b, channel ch: x - x_zero at padded row i, padded
    column j * sw + p; 0 in the padding. Returns the buffer and at(i, p, j)."""
    b, ch = src
    h, wd = _shape(x)[2:]
    ph, sw, pws = geo
    top, left = (int(v) for v in func.attrs["etch.pad"])
    cols = min(wd, sw * pws - left)
    # rows shorter than a vector, stride 1: each row copied as one vector (its extra
    # lanes read the next input row, land in the right padding and are zeroed again)
    short = sw == 1 and cols < DEINTERLEAVE and left + DEINTERLEAVE <= pws
    size = ph * sw * pws
    pad = T.alloc_buffer((size + (DEINTERLEAVE if short else 0),), "int16")

    def at(i: Expr, p: Expr, j: Expr) -> Expr:
        return (i * sw + p) * pws + j

    _fill(pad, 0, size, 0, 16)
    rows = min(h, ph - top)
    zero = tirx.const(_attr(func, "x_zero"), "int16")
    width = sw * DEINTERLEAVE
    # whole blocks, the last one moved back to end near the row's end (a multiple of sw:
    # it rewrites some columns with the same values), then < sw columns one by one
    if short:
        _short_rows(x, pad, (b, ch, rows, cols), zero, lambda i: at(i + top, 0, left))
        return pad, at
    blocks = -(-cols // width) if cols >= width else 0
    last = (cols - width) // sw * sw
    done = last + width if blocks else 0
    with T.grid(rows, blocks) as (i, jb):
        _deinterleave(x, pad, (b, ch, i, tirx.min(jb * width, last)), zero,
                      lambda p, q: at(i + top, p, q), (sw, left))
    with T.grid(rows, cols - done) as (i, j0):
        jj = j0 + done + left
        value = tirx.BufferLoad(x, [b, ch, i, j0 + done]).astype("int16") - zero
        T.buffer_store(pad, value, [at(i + top, jj % sw, jj // sw)])
    return pad, at


def _short_rows(x: tirx.Buffer, pad: tirx.Buffer, src: tuple, zero: Expr,
                start: Callable[[Expr], Expr]) -> None:
    """Rows of cols < DEINTERLEAVE inputs (stride 1), in order: each one vector load (past
    the row: the next input row) and store from start(i), then DEINTERLEAVE zeros from
    start(i) + cols (the right padding again, and the next row's left padding and columns,
    which its own copy rewrites); element by element where the load would pass the end of
    the input."""
    b, ch, rows, cols = src
    c, h, wd = _shape(x)[1:]
    total = _shape(x)[0] * c * h * wd
    with T.serial(0, rows) as i, T.If(((b * c + ch) * h + i) * wd + DEINTERLEAVE <= total):
        with T.Then():
            row = tirx.BufferLoad(x, [b, ch, i, tirx.Ramp(0, 1, DEINTERLEAVE)])
            T.buffer_store(pad, row.astype(f"int16x{DEINTERLEAVE}") -
                           tirx.Broadcast(zero, DEINTERLEAVE),
                           [tirx.Ramp(start(i), 1, DEINTERLEAVE)])
            T.buffer_store(pad, tirx.Broadcast(tirx.const(0, "int16"), DEINTERLEAVE),
                           [tirx.Ramp(start(i) + cols, 1, DEINTERLEAVE)])
        with T.Else(), T.serial(0, cols) as j:
            value = tirx.BufferLoad(x, [b, ch, i, j]).astype("int16") - zero
            T.buffer_store(pad, value, [start(i) + j])


def _deinterleave(x: tirx.Buffer, pad: tirx.Buffer, src: tuple, zero: Expr,
                  at: Callable[[Expr, Expr], Expr], geo: tuple[int, int]) -> None:
    """sw * L consecutive inputs of a row from column j0 (a multiple of sw), centred to
    int16, split by phase: input j0 + sw k + r lands at padded column j0 + r + left, i.e.
    phase (r + left) % sw, position (j0 + r + left) // sw + k, so each phase is L
    contiguous values (one vector load, sw shuffles, sw vector stores)."""
    sw, left = geo
    b, ch, i, j0 = src
    lanes = sw * DEINTERLEAVE
    row = tirx.BufferLoad(x, [b, ch, i, tirx.Ramp(j0, 1, lanes)]).astype(f"int16x{lanes}")
    row = row - tirx.Broadcast(zero, lanes)
    for r in range(sw):
        part = row if sw == 1 else tirx.Shuffle(
            [row], [tirx.const(r + sw * k, "int32") for k in range(DEINTERLEAVE)])
        start = at((r + left) % sw, (j0 + r + left) // sw)
        T.buffer_store(pad, part, [tirx.Ramp(start, 1, DEINTERLEAVE)])


def _pairs_kernel(func: tirx.PrimFunc, xv: int) -> tirx.PrimFunc:
    with IRBuilder() as ib, T.prim_func():
        T.func_name("main")
        x, w, out, n, c, kh, kw, oh, ow, nl, stride, dilation, epi, loop = _conv(func)
        (sh, sw), dw = stride, dilation[1]
        nvec = -(-ow // nl)
        ph = (oh - 1) * sh + kh
        geo = (ph + 1, sw, -(-((nvec * nl - 1) * sw + (kw - 1) * dw + 1) // sw))
        with loop(0, n * c) as t:
            b, ch = t // c, t % c
            plane, at = _plane(func, x, geo, (b, ch))
            pairs = _row_pairs(plane, geo, ph, 2 if sh % 2 == 0 else 1)
            with T.serial(0, oh) as y, T.serial(0, nvec // xv) as xo:
                acc = T.alloc_buffer((1, xv * nl), "int32")
                _zero(acc, 1, xv, nl)
                for ry in range(0, kh, 2):
                    with T.unroll(0, kw) as rx:
                        wv = _weight_pair(w, ch, ry, rx, kh, nl)
                        col = xo * xv * nl + rx * dw // sw
                        with T.unroll(0, xv) as v:
                            a = _vec(pairs, [at(y * sh + ry, rx * dw % sw, col + v * nl) * 2],
                                     2 * nl)
                            idx = [0, tirx.Ramp(v * nl, 1, nl)]
                            T.buffer_store(acc, tirx.BufferLoad(acc, idx) + tirx.
                                           call_llvm_pure_intrin(f"int32x{nl}", PMADDWD[nl],
                                                                 a, wv), idx)
                _conv_store(out, acc, epi, (b, ch, y, xo * xv * nl), (1, xv, nl, ow),
                            spill=True)
    return _finish(ib, func)


def _weight_pair(w: tirx.Buffer, ch: Expr, ry: int, rx: Expr, kh: int, nl: int) -> Expr:
    """(w[ch, ry, rx], w[ch, ry + 1, rx]) as int16 pairs, nl times (0 past the last row)."""
    lo = tirx.BufferLoad(w, [ch, ry, rx])
    hi = tirx.BufferLoad(w, [ch, ry + 1, rx]) if ry + 1 < kh else tirx.const(0, "int32")
    word = tirx.bitwise_or(tirx.bitwise_and(lo, tirx.const(0xFFFF, "int32")),
                           tirx.shift_left(hi, tirx.const(16, "int32")))
    return tirx.reinterpret(f"int16x{2 * nl}", tirx.Broadcast(word, nl))


def _row_pairs(plane: tirx.Buffer, geo: tuple, ph: int, step: int) -> tirx.Buffer:
    """Q[i, p, j, 2] (flat, int16) = (P[i, p, j], P[i + 1, p, j]) for rows i < ph of the
    plane P (which has ph + 1 rows): the two taps of rows i and i + 1 at one column are
    adjacent, so one 2nl-lane load feeds nl pair dot products. Only rows i that are
    multiples of `step` (2 for an even row stride: pairs start at y * sh + 2k)."""
    _, sw, pws = geo
    row = sw * pws
    pairs = T.alloc_buffer((ph * row * 2,), "int16")
    if row >= DEINTERLEAVE:
        with T.grid(-(-ph // step), -(-row // DEINTERLEAVE)) as (ii, jb):
            i = ii * step
            j = tirx.min(jb * DEINTERLEAVE, row - DEINTERLEAVE)
            top = _vec(plane, [i * row + j], DEINTERLEAVE)
            low = _vec(plane, [(i + 1) * row + j], DEINTERLEAVE)
            both = tirx.Shuffle([top, low], [tirx.const(k // 2 + k % 2 * DEINTERLEAVE, "int32")
                                             for k in range(2 * DEINTERLEAVE)])
            T.buffer_store(pairs, both, [tirx.Ramp((i * row + j) * 2, 1, 2 * DEINTERLEAVE)])
    else:
        with T.grid(-(-ph // step), row) as (ii, j):
            i = ii * step
            T.buffer_store(pairs, tirx.BufferLoad(plane, [i * row + j]), [(i * row + j) * 2])
            T.buffer_store(pairs, tirx.BufferLoad(plane, [(i + 1) * row + j]),
                           [(i * row + j) * 2 + 1])
    return pairs


# ---- byte windows: vpermb / vpermi2b + vpdpbusd (AVX512-VBMI and VNNI) -------------------
PERMB = "llvm.x86.avx512.permvar.qi.512"
PERMI2B = "llvm.x86.avx512.vpermi2var.qi.512"
WINDOW = 64  # bytes of one plane row a vector of outputs reads (one zmm)


def window_chunks(kh: int, kw: int) -> list[list[tuple[int, int]]] | None:
    """The taps (ry, rx) in row-major order, four to a chunk (one int32 lane's four bytes
    of vpdpbusd), or None where a chunk would span more than two kernel rows (a kernel one
    column wide): vpermi2b reads two plane rows."""
    taps = [(ry, rx) for ry in range(kh) for rx in range(kw)]
    chunks = [taps[i:i + 4] for i in range(0, len(taps), 4)]
    if any(chunk[-1][0] - chunk[0][0] > 1 for chunk in chunks):
        return None
    return chunks


def window_fits(kw: int, stride: int, dilation: int, nl: int) -> bool:
    """Whether nl outputs of one row read at most WINDOW bytes of their plane row."""
    return (nl - 1) * stride + (kw - 1) * dilation < WINDOW


def _window_index(chunk: list[tuple[int, int]], first: int, geo: tuple) -> Expr:
    """vpermi2b's (or vpermb's) byte index, a constant: lane p of the int32 vector, byte q
    is tap chunk[q] of output p: column p * sw + rx * dw of kernel row ry's plane row, from
    the first source (bytes 0-63) for row `first`, the second (64-127) for row first + 1;
    a missing fourth tap reads byte 0 (its weight is 0)."""
    nl, sw, dw = geo
    return _byte_constant([(chunk[q][0] - first) * WINDOW + p * sw + chunk[q][1] * dw
                           if q < len(chunk) else 0 for p in range(nl) for q in range(4)])


def _weight_word4(w: tirx.Buffer, ch: Expr, chunk: list[tuple[int, int]]) -> Expr:
    """The chunk's four weights as int8 bytes of one int32 (0 for a missing tap)."""
    word = tirx.const(0, "int32")
    for q, (ry, rx) in enumerate(chunk):
        byte = tirx.bitwise_and(tirx.BufferLoad(w, [ch, ry, rx]).astype("int32"),
                                tirx.const(255, "int32"))
        word = tirx.bitwise_or(word, tirx.shift_left(byte, tirx.const(8 * q, "int32")))
    return word


def _u8_plane(func: tirx.PrimFunc, x: tirx.Buffer, geo: tuple, src: tuple) -> tirx.Buffer:
    """One channel's plane in the u8 domain for the byte-window kernels: ph rows of pw bytes
    (+ `slack` past the last, for windows read past it), the zero point zu everywhere, the
    input's rows copied in at (top, left)."""
    ph, pw, slack, zu = geo
    b, ch = src
    h, wd = _shape(x)[2:]
    top, left = (int(v) for v in func.attrs["etch.pad"])
    size = ph * pw + slack
    plane = T.alloc_buffer((size,), "uint8")
    _fill(plane, 0, size, zu, WINDOW)
    with T.serial(0, min(h, ph - top)) as i, T.vectorized(0, min(wd, pw - left)) as j:
        T.buffer_store(plane, to_u8(tirx.BufferLoad(x, [b, ch, i, j])),
                       [(i + top) * pw + left + j])
    return plane


def _chunk_weights(w: tirx.Buffer, ch: Expr, chunks: list, zu: int, nl: int
                   ) -> tuple[list[Expr], Expr]:
    """Each chunk's four weights as int8 x 4nl (the word broadcast), and the accumulators'
    start -zu * sum(w) as int32 x nl."""
    words = [tirx.reinterpret(f"int8x{4 * nl}", tirx.Broadcast(_weight_word4(w, ch, chunk),
                                                                nl)) for chunk in chunks]
    total = tirx.const(0, "int32")
    for ry, rx in (tap for chunk in chunks for tap in chunk):
        total = total + tirx.BufferLoad(w, [ch, ry, rx]).astype("int32")
    return words, tirx.Broadcast(total * tirx.const(-zu, "int32"), nl)


def _dot(acc: tirx.Buffer, idx: list, win: Expr, word: Expr, nl: int) -> None:
    """acc[idx] += vpdpbusd(window bytes, the chunk's weights)."""
    T.buffer_store(acc, tirx.call_llvm_pure_intrin(
        f"int32x{nl}", VPDPBUSD[nl], tirx.BufferLoad(acc, idx), win, word), idx)


def _permute(a: Expr, index: Expr, second: Expr | None) -> Expr:
    """vpermi2b over a and `second` (128 bytes), or vpermb over a."""
    if second is None:
        return tirx.call_llvm_pure_intrin(f"uint8x{WINDOW}", PERMB, a, index)
    return tirx.call_llvm_pure_intrin(f"uint8x{WINDOW}", PERMI2B, a, index, second)


def windows_kernel(func: tirx.PrimFunc, xv: int) -> tirx.PrimFunc:
    """Depthwise conv on uint8 planes (AVX512-VBMI + VNNI; the schedule checks int8
    weights, `window_chunks` and `window_fits`): per (image, channel) its plane padded
    with the zero point in the u8 domain, rows of at least (vectors - 1) * nl * sw +
    WINDOW bytes; per output row, tiles of xv vectors of nl outputs. For each chunk of
    four taps one vpermi2b (vpermb where the chunk stays in one kernel row) gathers, from
    the 64 bytes of the two plane rows the vector's outputs read, every output's four
    input bytes into its int32 lane, and one vpdpbusd adds them times the chunk's four
    weights: 3 permutes and 3 dot products per nl outputs of a 3x3 (the int16 planes'
    kernel: 6 multiply-adds, the centring copy and the row pairs' copy). The stride and
    dilation are in the constant indices. The accumulators start at -zu * sum(w), so
    they hold sum w (x - zero) exactly, as the int16 kernel's."""
    with IRBuilder() as ib, T.prim_func():
        T.func_name("main")
        x, w, out, n, c, kh, kw, oh, ow, nl, (sh, sw), (dh, dw), epi, loop = _conv(func)
        left, wd = int(func.attrs["etch.pad"][1]), _shape(x)[3]
        zu = u8_zero(x.dtype, _attr(func, "x_zero"))
        chunks = window_chunks(kh, kw)
        nvec = -(-ow // nl)
        ph = (oh - 1) * sh + (kh - 1) * dh + 1
        pw = max(left + wd, (nvec - 1) * nl * sw + WINDOW)
        with loop(0, n * c) as t:
            b, ch = t // c, t % c
            plane = _u8_plane(func, x, (ph, pw, 0, zu), (b, ch))
            words, start = _chunk_weights(w, ch, chunks, zu, nl)
            with T.serial(0, oh) as y, T.serial(0, nvec // xv) as xo:
                acc = T.alloc_buffer((1, xv * nl), "int32")
                with T.unroll(0, xv) as v:
                    T.buffer_store(acc, start, [0, tirx.Ramp(v * nl, 1, nl)])
                for chunk, word in zip(chunks, words):
                    first = chunk[0][0]
                    index = _window_index(chunk, first, (nl, sw, dw))
                    with T.unroll(0, xv) as v:
                        row = (y * sh + first * dh) * pw + (xo * xv + v) * nl * sw
                        second = _vec(plane, [row + dh * pw], WINDOW) \
                            if chunk[-1][0] > first else None
                        win = _permute(_vec(plane, [row], WINDOW), index, second)
                        _dot(acc, [0, tirx.Ramp(v * nl, 1, nl)], win, word, nl)
                _conv_store(out, acc, epi, (b, ch, y, xo * xv * nl), (1, xv, nl, ow),
                            spill=True)
    return _finish(ib, func)


FLAT_MAX_VECTORS = 16  # a flat-window kernel's vectors per plane at most (each unrolled)


def flat_windows(shape: tuple, kernel: tuple, stride: tuple, dilation: tuple,
                 nl: int) -> tuple[int, list] | None:
    """Byte windows over the flattened output positions of a plane with rows shorter than a
    vector: (the plane's row pitch, per vector (its first byte, per chunk its byte
    offsets)), or None where a vector's outputs and taps span more than two windows or the
    plane has more than FLAT_MAX_VECTORS vectors. Vector v holds outputs nl v .. nl v +
    nl - 1 in row-major order (a 7x7 plane is 4 vectors, not 7 of 7 lanes); the plane's
    rows are (ow - 1) sw + (kw - 1) dw + 1 bytes, so several fit one window."""
    oh, ow = shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    chunks = window_chunks(kh, kw)
    total = oh * ow
    count = -(-total // nl)
    if chunks is None or count > FLAT_MAX_VECTORS:
        return None
    pw = (ow - 1) * sw + (kw - 1) * dw + 1
    vectors = []
    for v in range(count):
        base = v * nl // ow * sh * pw
        offsets = []
        for chunk in chunks:
            offs = []
            for o in range(v * nl, v * nl + nl):
                y, x = divmod(o, ow)
                offs += [(y * sh + ry * dh) * pw + x * sw + rx * dw - base
                         if o < total else 0 for ry, rx in chunk] + [0] * (4 - len(chunk))
            offsets.append(offs)
        if max(max(offs) for offs in offsets) >= 2 * WINDOW:
            return None
        vectors.append((base, offsets))
    return pw, vectors


def _byte_constant(values: list[int]) -> Expr:
    """int8 x len(values) of the constants 0-127 (a Shuffle of two Ramps: LLVM folds it)."""
    both = [tirx.Ramp(tirx.const(WINDOW * h, "int8"), tirx.const(1, "int8"), WINDOW)
            for h in range(2)]
    return tirx.Shuffle(both, [tirx.const(i, "int32") for i in values])


def flat_windows_kernel(func: tirx.PrimFunc, geometry: tuple) -> tirx.PrimFunc:
    """`windows_kernel` over flattened output positions (`geometry`: what `flat_windows`
    returned for this conv, rows shorter than a vector): the plane's rows packed at their own width, and per vector of nl consecutive
    outputs one permute per chunk of four taps (vpermb within 64 bytes of the vector's
    first row, vpermi2b within 128) and one vpdpbusd; the outputs are consecutive in the
    channel's plane, so each vector is stored whole (the last, partial one element by
    element)."""
    with IRBuilder() as ib, T.prim_func():
        T.func_name("main")
        x, w, out, n, c, kh, kw, oh, ow, nl, stride, dilation, epi, loop = _conv(func)
        zu = u8_zero(x.dtype, _attr(func, "x_zero"))
        chunks = window_chunks(kh, kw)
        pw, vectors = geometry
        ph = (oh - 1) * stride[0] + (kh - 1) * dilation[0] + 1
        flat = T.decl_buffer((n, c, 1, oh * ow), out.dtype, data=out.data)
        with loop(0, n * c) as t:
            b, ch = t // c, t % c
            # the last vectors' windows read up to two windows past the last row
            plane = _u8_plane(func, x, (ph, pw, 2 * WINDOW, zu), (b, ch))
            words, start = _chunk_weights(w, ch, chunks, zu, nl)
            acc = T.alloc_buffer((1, nl), "int32")
            idx = [0, tirx.Ramp(0, 1, nl)]
            for v, (base, offsets) in enumerate(vectors):
                T.buffer_store(acc, start, idx)
                two = max(max(o) for o in offsets) >= WINDOW
                a = _vec(plane, [base], WINDOW)
                second = _vec(plane, [base + WINDOW], WINDOW) if two else None
                for word, offs in zip(words, offsets):
                    _dot(acc, idx, _permute(a, _byte_constant(offs), second), word, nl)
                _conv_store(flat, acc, epi, (b, ch, 0, v * nl), (1, 1, nl, oh * ow))
    return _finish(ib, func)
