"""The x86 kernel of an int8/uint8 2-D MaxPool (`lower/pool.py`'s "pool" and "window_pool"
kernels on integer tensors, undilated windows): the pooled values are the integers
themselves (a max commutes with the monotone quantisation), so no centring or widening.

Per (image, channel) and output row: the row-wise max of the window's input rows, whole
vectors of the input row (the extra lanes read the next rows, unused), into a small row
buffer R with the left padding in front; R's padding takes the value of the row's first
or last column. A window clipped to the input has the same max as the window with its
padded taps replaced by the nearest column (or row) inside it, so padded taps need no
-inf and windows need no bounds checks: output column j is then the max over the kw taps
of R[j * sw + rx], one vector of L outputs per tap (a contiguous load of L * sw bytes and,
for a stride, one byte shuffle: vpermb with AVX512-VBMI). Was: one bounds-checked scalar
max per tap (the generic "pool" schedule on 13-column rows).
"""

from __future__ import annotations

from tvm import tirx
from tvm.script.ir_builder import IRBuilder
from tvm.tirx.script.builder import ir as T

from backends.tvm.schedules.int_kernels import PARALLEL_MIN_WORK, _args, _finish, _shape

Expr = tirx.Expr
DTYPES = ("int8", "uint8")


def geometry(func: tirx.PrimFunc) -> tuple | None:
    """((kh, kw), (sh, sw), (top, left)) of a MaxPool kernel this module renders: integer
    NCHW in and out, undilated, every window overlapping the input; else None."""
    attrs = func.attrs
    if str(attrs.get("etch.op", "")) != "MaxPool" or "etch.kernel" not in attrs or \
            len(func.params) != 2:
        return None
    x, out = func.params
    if x.dtype not in DTYPES or out.dtype != x.dtype or len(x.shape) != 4:
        return None
    kernel, strides, dil, pads = ([int(v) for v in attrs[f"etch.{k}"]]
                                  for k in ("kernel", "strides", "dilations", "pads"))
    if len(kernel) != 2 or dil != [1, 1]:
        return None
    for size, osize, k, s, p in zip(_shape(x)[2:], _shape(out)[2:], kernel, strides, pads):
        if -p + k - 1 < 0 or (osize - 1) * s - p > size - 1:
            return None  # a window wholly in the padding: the max of nothing
    return tuple(kernel), tuple(strides), tuple(pads[:2])


def lanes_for(width: int) -> int:
    """Bytes per vector for a row of `width`: the fewest padded lanes among 16/32/64."""
    return 64 if width >= 48 else 32 if width >= 24 else 16


def max_pool_kernel(func: tirx.PrimFunc, geo: tuple) -> tirx.PrimFunc:
    (kh, kw), (sh, sw), (top, left) = geo
    with IRBuilder() as ib, T.prim_func():
        T.func_name("main")
        x, out = _args(func)
        n, c, h, wd = _shape(x)
        oh, ow = _shape(out)[2:]
        dtype = x.dtype
        lo = lanes_for(ow)  # outputs per vector
        nvec = -(-ow // lo)
        li = lanes_for(wd)  # input columns per vector of the row max
        blocks = -(-wd // li)
        span = nvec * lo * sw + kw  # R's columns the taps read
        size = max(left + blocks * li, span)
        total = n * c * h * wd
        work = n * c * oh * ow * kh * kw
        loop = T.parallel if work >= PARALLEL_MIN_WORK and n * c > 1 else T.serial
        # a root block: Relax asks a one-input kernel whether it is a reshape, which
        # needs one
        with T.sblock("root"), loop(0, n * c) as t:
            b, ch = t // c, t % c
            with T.serial(0, oh) as i:
                row = T.alloc_buffer((size,), dtype)
                rows = [tirx.min(tirx.max(i * sh - top + r, 0), h - 1) for r in range(kh)]
                with T.serial(0, blocks) as jb:
                    col = jb * li
                    last = ((b * c + ch) * h + rows[-1]) * wd + col  # the farthest load
                    with T.If(last + li <= total):
                        with T.Then():
                            vec = None
                            for r in rows:
                                v = tirx.BufferLoad(x, [b, ch, r, tirx.Ramp(col, 1, li)])
                                vec = v if vec is None else tirx.max(vec, v)
                            T.buffer_store(row, vec, [tirx.Ramp(left + col, 1, li)])
                        with T.Else(), T.serial(0, li) as k:
                            cc = tirx.min(col + k, wd - 1)
                            val = None
                            for r in rows:
                                v = tirx.BufferLoad(x, [b, ch, r, cc])
                                val = v if val is None else tirx.max(val, v)
                            T.buffer_store(row, val, [left + col + k])
                _edge(row, left, tirx.BufferLoad(row, [left]))
                right = span - left - wd
                if right > 0:
                    _edge(row, right, tirx.BufferLoad(row, [left + wd - 1]), left + wd)
                with T.serial(0, nvec) as v:
                    j0 = v * lo
                    acc = None
                    for rx in range(kw):
                        seg = tirx.BufferLoad(row, [tirx.Ramp(j0 * sw + rx, 1, lo * sw)])
                        if sw > 1:
                            seg = tirx.Shuffle([seg], [tirx.const(k * sw, "int32")
                                                       for k in range(lo)])
                        acc = seg if acc is None else tirx.max(acc, seg)
                    tmp = T.alloc_buffer((lo,), dtype)
                    T.buffer_store(tmp, acc, [tirx.Ramp(0, 1, lo)])
                    # whole when it ends inside this plane: the lanes past the row land
                    # in this plane's later rows, which this thread writes afterwards
                    with T.If(i * ow + j0 + lo <= oh * ow):
                        with T.Then():
                            T.buffer_store(out, tirx.BufferLoad(tmp, [tirx.Ramp(0, 1, lo)]),
                                           [b, ch, i, tirx.Ramp(j0, 1, lo)])
                        with T.Else(), T.serial(0, lo) as k, T.If(j0 + k < ow), T.Then():
                            T.buffer_store(out, tirx.BufferLoad(tmp, [k]), [b, ch, i, j0 + k])
    return _finish(ib, func)


def _edge(row: tirx.Buffer, count: int, value: Expr, start: int = 0) -> None:
    """row[start : start + count] = value (one broadcast store)."""
    if count == 1:
        T.buffer_store(row, value, [start])
    elif count > 1:
        T.buffer_store(row, tirx.Broadcast(value, count), [tirx.Ramp(start, 1, count)])
