"""Hand-scheduled x86 kernels for the integer anchors, built with TVM's IRBuilder.

The lowering (`lower/int_gemm.py`, `lower/int_conv.py`) emits a "qdense" / "qconv2d" TE
kernel: the exact computation, with weights already packed for a u8 x s8 dot product of
4 inputs against NL outputs, which any target can run. On x86 `int_cpu.py` replaces it
with the kernel built here: same parameters, same result, its inner step one vector dot
(`int_intrin`), accumulators in registers, the requantising epilogue per register tile.
(s_tir's `tensorize` would be the usual route, but in TVM 0.27 with this tvm-ffi it
deep-copies the intrinsic through JSON, and JSON serialisation of TIR crashes.)

Parameters, in order: activations, packed weights, bias, [m0, shift,] output; the bias and
requantisation parameters are full per-channel buffers. Attributes (`etch.*`) give the
rest: nl, req/zp/qmin/qmax, and for convs groups, stride, dilation, pad, x_zero, xb.
"""

from __future__ import annotations

from typing import Callable

from tvm import tirx
from tvm.script.ir_builder import IRBuilder
from tvm.tirx.script.builder import ir as T

from backends.tvm.lower.int_eltwise import requantize
from backends.tvm.lower.int_gemm import add_bias, to_u8

Expr = tirx.Expr
Dot = Callable[[Expr, Expr, Expr], Expr]
PARALLEL_MIN_WORK = 1 << 18  # multiply-adds; as cpu.py's threshold


def _shape(buf: tirx.Buffer) -> tuple[int, ...]:
    return tuple(int(d) for d in buf.shape)


def _vec(buf: tirx.Buffer, idx: list, lanes: int) -> Expr:
    """`lanes` consecutive elements of `buf` from `idx` (contiguous in the flat buffer)."""
    return tirx.BufferLoad(buf, [*idx[:-1], tirx.Ramp(idx[-1], 1, lanes)])


def _broadcast4(buf: tirx.Buffer, idx: list, nl: int) -> Expr:
    """4 bytes of `buf` from `idx`, repeated nl times: the activation side of the dot."""
    word = tirx.reinterpret("int32", _vec(buf, idx, 4))
    return tirx.reinterpret(f"uint8x{4 * nl}", tirx.Broadcast(word, nl))


def _attr(func: tirx.PrimFunc, name: str) -> int:
    return int(func.attrs[f"etch.{name}"])


def _epilogue(func: tirx.PrimFunc, params: list, out_dtype: str) -> Callable:
    """value(acc, channel_index) -> the output value: + bias, requantised if the kernel
    absorbed a Requantize (`compiler.reference.requantize`, via `lower.int_eltwise`)."""
    bias, *req = params

    def value(acc: Expr, idx: list) -> Expr:
        y = add_bias(acc, tirx.BufferLoad(bias, idx))
        if req:
            y = requantize(y, tirx.BufferLoad(req[0], idx), tirx.BufferLoad(req[1], idx),
                           _attr(func, "zp"), _attr(func, "qmin"), _attr(func, "qmax"))
        return y.astype(out_dtype)
    return value


def _args(func: tirx.PrimFunc) -> list[tirx.Buffer]:
    bufs = list(func.params)
    return [T.arg(f"p{k}", T.buffer(_shape(b), b.dtype)) for k, b in enumerate(bufs)]


def _finish(ib: IRBuilder, func: tirx.PrimFunc) -> tirx.PrimFunc:
    new = ib.get()
    for key, val in func.attrs.items():
        new = new.with_attr(key, val)
    return new


def _zero(acc: tirx.Buffer, rows: int, vectors: int, nl: int) -> None:
    with T.unroll(0, rows) as r:
        with T.unroll(0, vectors) as v:
            T.buffer_store(acc, tirx.Broadcast(tirx.const(0, "int32"), nl),
                           [r, tirx.Ramp(v * nl, 1, nl)])


def _step(acc: tirx.Buffer, row: Expr, v: Expr, nl: int, a: Expr, w: Expr, dot: Dot) -> None:
    """acc[row, v-th vector] += dot(a, w)."""
    idx = [row, tirx.Ramp(v * nl, 1, nl)]
    T.buffer_store(acc, dot(tirx.BufferLoad(acc, idx), a, w), idx)


# ---- QGemm --------------------------------------------------------------------------------
def dense_kernel(func: tirx.PrimFunc, dot: Dot, mb: int, nv: int) -> tirx.PrimFunc:
    """[M, K] x [N/nl, K/4, nl, 4]: tiles of mb rows x nv vectors, weights-stationary
    order (consecutive tiles share a weight block)."""
    with IRBuilder() as ib:
        with T.prim_func():
            T.func_name("main")
            a, w, *params, out = _args(func)
            (m, k), (nb, kb, nl, _), n = _shape(a), _shape(w), _shape(out)[1]
            src = _dense_pack(a, kb * 4)
            rows = m // mb
            loop = T.parallel if m * n * k >= PARALLEL_MIN_WORK and nb // nv * rows > 1 \
                else T.serial
            value = _epilogue(func, params, out.dtype)
            with loop(0, nb // nv * rows) as t:
                nbo, mo = t // rows, t % rows
                acc = T.alloc_buffer((mb, nv * nl), "int32")
                _zero(acc, mb, nv, nl)
                with T.serial(0, kb) as ko:
                    with T.unroll(0, mb) as mi:
                        a4 = _broadcast4(src, [mo * mb + mi, ko * 4], nl)
                        with T.unroll(0, nv) as v:
                            wv = _vec(w, [nbo * nv + v, ko, 0, 0], 4 * nl)
                            _step(acc, mi, v, nl, a4, wv, dot)
                full = n % (nv * nl) == 0
                with T.unroll(0, mb) as mi:
                    with T.unroll(0, nv) as v:
                        with (T.vectorized if full else T.serial)(0, nl) as j:
                            col = (nbo * nv + v) * nl + j
                            row = mo * mb + mi
                            store = (out, value(tirx.BufferLoad(acc, [mi, v * nl + j]),
                                                [0, col]), [row, col])
                            if full:
                                T.buffer_store(*store)
                            else:
                                with T.If(col < n):
                                    with T.Then():
                                        T.buffer_store(*store)
    return _finish(ib, func)


def _dense_pack(a: tirx.Buffer, kp: int) -> tirx.Buffer:
    """The activations in the u8 domain, K padded to kp (a itself when already so)."""
    m, k = _shape(a)
    if a.dtype == "uint8" and k == kp:
        return a
    src = T.alloc_buffer((m, kp), "uint8")
    with T.serial(0, m) as i:
        with T.serial(0, kp) as j:
            v = to_u8(tirx.BufferLoad(a, [i, tirx.min(j, k - 1)]))
            T.buffer_store(src, tirx.Select(j < k, v, tirx.const(0, "uint8")), [i, j])
    return src


# ---- QConv --------------------------------------------------------------------------------
def conv_kernel(func: tirx.PrimFunc, dot: Dot, nv: int) -> tirx.PrimFunc:
    """Direct conv over the channels-last u8 copy of the input: tiles of xb columns x nv
    vectors of nl channels, the taps and channel quads outside the tile."""
    with IRBuilder() as ib:
        with T.prim_func():
            T.func_name("main")
            x, w, *params, out = _args(func)
            (n, c, h, wd), (ob, kh, kw, cq, nl, _) = _shape(x), _shape(w)
            oc, oh, ow = _shape(out)[1:]
            g, xb = _attr(func, "groups"), _attr(func, "xb")
            sh, sw = (int(s) for s in func.attrs["etch.stride"])
            dh, dw = (int(d) for d in func.attrs["etch.dilation"])
            owp = -(-ow // xb) * xb
            geo = (sh, sw, dh, dw, (oh - 1) * sh + (kh - 1) * dh + 1,
                   (owp - 1) * sw + (kw - 1) * dw + 1)
            pad, at = _conv_pad(func, x, g, cq * 4, geo)
            value = _epilogue(func, params, out.dtype)
            tiles = n * (ob // nv) * oh
            work = n * oc * oh * ow * kh * kw * cq * 4
            loop = T.parallel if work >= PARALLEL_MIN_WORK and tiles > 1 else T.serial
            ocpg = oc // g
            with loop(0, tiles) as t:
                b, obo, y = t // (ob // nv * oh), t // oh % (ob // nv), t % oh
                base = (obo * nv * nl // ocpg) * cq * 4 if g > 1 else 0
                with T.serial(0, owp // xb) as xo:
                    acc = T.alloc_buffer((xb, nv * nl), "int32")
                    _zero(acc, xb, nv, nl)
                    with T.grid(kh, kw, cq) as (ry, rx, rc):
                        with T.unroll(0, xb) as xi:
                            a4 = _broadcast4(pad, [at(b, y * sh + ry * dh,
                                                      (xo * xb + xi) * sw + rx * dw,
                                                      base + rc * 4)], nl)
                            with T.unroll(0, nv) as v:
                                wv = _vec(w, [obo * nv + v, ry, rx, rc, 0, 0], 4 * nl)
                                _step(acc, xi, v, nl, a4, wv, dot)
                    _conv_store(out, acc, value, (b, obo, y, xo), (nv, nl, xb, ow, oc))
    return _finish(ib, func)


def _conv_pad(func: tirx.PrimFunc, x: tirx.Buffer, g: int, c4: int,
              geo: tuple) -> tuple[tirx.Buffer, Callable]:
    """P[n, i, j, g * c4 + c] (flat): the padded input, channels last, in the u8 domain;
    padding and the channels past C/g hold the zero point (their weights are 0). Filled in
    two branch-free passes: the zero point everywhere (vectorised), then the interior.
    Returns the buffer and its flat index function."""
    n, c, h, wd = _shape(x)
    ph, pw = geo[4], geo[5]
    top, left = (int(p) for p in func.attrs["etch.pad"])
    zu, icg, gc = _attr(func, "x_zero"), c // g, g * c4
    size = n * ph * pw * gc
    pad = T.alloc_buffer((size,), "uint8")

    def at(b: Expr, i: Expr, j: Expr, cc: Expr) -> Expr:
        return ((b * ph + i) * pw + j) * gc + cc

    with T.serial(0, size // 32) as t:
        T.buffer_store(pad, tirx.Broadcast(tirx.const(zu, "uint8"), 32), [tirx.Ramp(t * 32, 1, 32)])
    with T.serial(size // 32 * 32, size) as t:
        T.buffer_store(pad, tirx.const(zu, "uint8"), [t])
    rows, cols = min(h, ph - top), min(wd, pw - left)
    loop = T.parallel if size >= 1 << 16 and n * c > 1 else T.serial
    with loop(0, n * c) as r:
        b, ch = r // c, r % c
        with T.grid(rows, cols) as (i, j):
            v = to_u8(tirx.BufferLoad(x, [b, ch, i, j]))
            T.buffer_store(pad, v, [at(b, i + top, j + left, ch // icg * c4 + ch % icg)])
    return pad, at


def _conv_store(out: tirx.Buffer, acc: tirx.Buffer, value: Callable, at: tuple,
                sizes: tuple) -> None:
    """Write one tile NCHW: output channel (obo * nv + v) * nl + j, column xo * xb + xi;
    the requantisation runs on vectors of nl channels (a strided store)."""
    b, obo, y, xo = at
    nv, nl, xb, ow, oc = sizes
    partial_channels = oc % (nv * nl) != 0
    with T.unroll(0, xb) as xi:
        col = xo * xb + xi
        with T.If(col < ow) if ow % xb else _nothing():
            with (T.Then() if ow % xb else _nothing()):
                with T.unroll(0, nv) as v:
                    with (T.serial if partial_channels else T.vectorized)(0, nl) as j:
                        o = (obo * nv + v) * nl + j
                        store = (out, value(tirx.BufferLoad(acc, [xi, v * nl + j]),
                                            [0, o, 0, 0]), [b, o, y, col])
                        if partial_channels:
                            with T.If(o < oc):
                                with T.Then():
                                    T.buffer_store(*store)
                        else:
                            T.buffer_store(*store)


class _nothing:
    """A `with` frame that does nothing (for optional T.If/T.Then)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc) -> None:
        return None
