"""Hand-scheduled x86 kernels for the integer anchors, built with TVM's IRBuilder.

The lowering (`lower/int_gemm.py`, `lower/int_conv.py`) emits a "qdense" / "qconv2d" TE
kernel: the exact computation, with weights already packed for a u8 x s8 dot product of
4 inputs against NL outputs, which any target can run. On x86 `int_cpu.py` replaces it
with the kernel built here: same parameters, same result, its inner step one vector dot
(`int_intrin`), accumulators in registers, the requantising epilogue per register tile.
(s_tir's `tensorize` would be the usual route, but in TVM 0.27 with this tvm-ffi it
deep-copies the intrinsic through JSON, and JSON serialisation of TIR crashes.)

Parameters, in order: activations, packed weights, bias, [m0, shift,] [the group's table,
residual,] [its numbers,] output; the bias and requantisation parameters are full
per-channel buffers, the residual is shaped like the output, the numbers one int64 vector
(zero point, the residual add's: `lower.int_epilogue.epilogue_numbers`), so layers that
differ only in these are one kernel. Attributes (`etch.*`) give the rest: nl, req/qmin/qmax,
post (the group's steps after the requantisation, `lower.int_epilogue`),
and for convs groups, stride, dilation, pad, x_zero, xb.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable

from tvm import tirx
from tvm.script.ir_builder import IRBuilder
from tvm.tirx.script.builder import ir as T

from backends.tvm.lower.int_eltwise import requantize
from backends.tvm.lower.int_epilogue import add_bias, apply_post, form_size, with_numbers
from backends.tvm.lower.int_gemm import to_u8
from backends.tvm.schedules import int_intrin

Expr = tirx.Expr
Dot = Callable[[Expr, Expr, Expr], Expr]
PARALLEL_MIN_WORK = 1 << 18  # multiply-adds; as cpu.py's threshold


def _shape(buf: tirx.Buffer) -> tuple[int, ...]:
    return tuple(int(d) for d in buf.shape)


def _vec(buf: tirx.Buffer, idx: list, lanes: int) -> Expr:
    """`lanes` consecutive elements of `buf` from `idx` (contiguous in the flat buffer)."""
    return tirx.BufferLoad(buf, [*idx[:-1], tirx.Ramp(idx[-1], 1, lanes)])


def _broadcast4(buf: tirx.Buffer, idx: list, nl: int, dtype: str = "uint8") -> Expr:
    """4 bytes of `buf` from `idx`, repeated nl times (the broadcast side of the dot)."""
    word = tirx.reinterpret("int32", _vec(buf, idx, 4))
    return tirx.reinterpret(f"{dtype}x{4 * nl}", tirx.Broadcast(word, nl))


def _attr(func: tirx.PrimFunc, name: str) -> int:
    return int(func.attrs[f"etch.{name}"])


def stride_dilation(func: tirx.PrimFunc) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A conv kernel's (stride, dilation) attributes as int tuples."""
    return tuple(tuple(int(v) for v in func.attrs[f"etch.{k}"]) for k in ("stride", "dilation"))


class _Epilogue:
    """What a kernel does to an accumulator: + bias, then the output unit of the group it
    renders (`lower.int_epilogue`): requantise (`compiler.reference.requantize`), then the
    steps after it (table, residual add). `scalar` is the general TIR form (vectorised by
    TVM where the loop is); `vector` is the x86 requantisation (`int_intrin.
    requantize_vector`) for a vector of nl (8 or 16) accumulators, usable where `self.vec`. With steps after the
    requantisation (`self.post`) a tile is `staged`: the requantised values go back into
    the int32 accumulator tile, and `finish` applies the steps in a second loop (the add's
    formula reads its input several times: one small load, not a whole epilogue)."""

    def __init__(self, func: tirx.PrimFunc, params: list, out_dtype: str, nl: int) -> None:
        self.post = json.loads(str(func.attrs["etch.post"])) if "etch.post" in func.attrs \
            else []
        n_req = (3 if int(func.attrs.get("etch.req_mf", 0)) else 2) if _attr(func, "req") \
            else 0
        self.bias, self.req = params[0], params[1:min(3, 1 + n_req)]
        # M0 2^-shift in float64 (`lower.int_epilogue.float_multipliers`), where the lowering
        # passed it
        self.mf = params[3] if n_req == 3 else None
        self.post_bufs = params[1 + n_req:len(params) - (1 if n_req else 0)]
        # the group's numbers (`lower.int_epilogue.epilogue_numbers`: zero point, then the
        # residual add's), bound once here, before the kernel's loops: read where they are
        # used, LLVM reloaded them per vector (it cannot tell them from the stores)
        count = 1 + sum(map(form_size, self.post)) if n_req else 0
        self.numbers = [T.bind(tirx.BufferLoad(params[-1], [k])) for k in range(count)]
        self.dtype = out_dtype
        self.attrs = [_attr(func, k) for k in ("qmin", "qmax")]
        self.nl = nl
        self.vec = bool(self.req) and nl in (8, 16) and bool(_attr(func, "req_vec")) and \
            self.bias.dtype == "int32"
        # the float64 requantisation (`int_intrin.requantize_f64`) where the schedule rule
        # chose it (`int_cpu.float64_requant`: proven exact, 16 lanes)
        self.f64 = self.vec and nl == 16 and self.mf is not None and \
            str(func.attrs.get("etch.requant", "")) == "float64"
        self.staged = bool(self.post)
        self.post_vec = self.vec and int(func.attrs.get("etch.post_vec", 0)) == 1
        # a lone table step looked up in registers where the schedule recorded how
        self.table_vec = self.vec and nl == 16 and [s["op"] for s in self.post] == ["table"] \
            and str(func.attrs.get("etch.table_lookup", "")) == int_intrin.TABLE_VBMI

    def finish_vector(self, y: Expr, residual: Expr) -> Expr:
        """The output vector from nl staged requantised values y and the residual's nl
        values (`int_intrin.qadd_vector`; only where `post_vec`)."""
        r = residual.astype(f"int32x{self.nl}")
        step = with_numbers(self.post[0], lambda k: self.numbers[1 + k])
        pair = (y, r) if step["side"] == 0 else (r, y)
        return int_intrin.qadd_vector(*pair, step, self.nl).astype(f"{self.dtype}x{self.nl}")

    def finish_table(self, y: Expr) -> Expr:
        """The output vector from nl staged requantised values y (`int_intrin.table_vector`;
        only where `table_vec`)."""
        return int_intrin.table_vector(y, self.post_bufs[0], int(self.post[0]["lo"]),
                                       self.nl).astype(f"{self.dtype}x{self.nl}")

    def channel(self, col: Expr) -> list:
        """The index of output channel `col` in the per-channel parameter buffers ([1, N]
        or [1, .., N])."""
        return [0] * (len(self.bias.shape) - 1) + [col]

    @property
    def stage_dtype(self) -> str:
        """What the first loop stores: the output, or the requantised value in int32."""
        return "int32" if self.staged else self.dtype

    def scalar(self, acc: Expr, idx: list) -> Expr:
        """The requantised accumulator (the output when not staged); `idx` indexes the
        per-channel parameter buffers."""
        y = add_bias(acc, tirx.BufferLoad(self.bias, idx))
        if self.req:
            y = requantize(y, *(tirx.BufferLoad(b, idx) for b in self.req), self.numbers[0],
                           *self.attrs)
        return y.astype(self.stage_dtype)

    def vector(self, acc: Expr, load: Callable[[tirx.Buffer], Expr],
               dtype: str | None = None) -> Expr:
        """nl values from nl accumulators, as `dtype` (default: the stage's); load(buffer)
        gives the nl lanes' parameters."""
        if self.f64:
            y = int_intrin.requantize_f64(acc + load(self.bias), load(self.mf),
                                          self.numbers[0], *self.attrs)
        else:
            y = int_intrin.requantize_vector(acc + load(self.bias), *map(load, self.req),
                                             self.numbers[0], *self.attrs, nl=self.nl)
        return y.astype(f"{dtype or self.stage_dtype}x{self.nl}")

    def finish(self, y: Expr, at: list) -> Expr:
        """The output at position `at` from its staged requantised value y."""
        steps = apply_post(self.post, y.astype("int64"), at,
                           lambda j, ix: tirx.BufferLoad(self.post_bufs[j], ix),
                           lambda k: self.numbers[1 + k])
        return steps.astype(self.dtype)


def _args(func: tirx.PrimFunc) -> list[tirx.Buffer]:
    bufs = list(func.params)
    return [T.arg(f"p{k}", T.buffer(_shape(b), b.dtype)) for k, b in enumerate(bufs)]


def _finish(ib: IRBuilder, func: tirx.PrimFunc) -> tirx.PrimFunc:
    new = ib.get()
    for key, val in func.attrs.items():
        new = new.with_attr(key, val)
    return new


def _zero(acc: tirx.Buffer, rows: int, vectors: int, nl: int) -> None:
    with T.unroll(0, rows) as r, T.unroll(0, vectors) as v:
        T.buffer_store(acc, tirx.Broadcast(tirx.const(0, "int32"), nl),
                       [r, tirx.Ramp(v * nl, 1, nl)])


def _step(acc: tirx.Buffer, row: Expr, v: Expr, nl: int, a: Expr, w: Expr, dot: Dot) -> None:
    """acc[row, v-th vector] += dot(a, w)."""
    idx = [row, tirx.Ramp(v * nl, 1, nl)]
    T.buffer_store(acc, dot(tirx.BufferLoad(acc, idx), a, w), idx)


# ---- QGemm --------------------------------------------------------------------------------
def dense_kernel(func: tirx.PrimFunc, dot: Dot, mb: int, nv: int) -> tirx.PrimFunc:
    """[M, K] x [N/nl, K/4, nl, 4]: tiles of mb rows x nv vectors, weights-stationary
    order (consecutive tiles share a weight block). mb need not divide M: the last tile's
    rows past M read row M - 1 and are not stored (mb x nv independent accumulator chains
    hide the dot product's latency whatever M is)."""
    with IRBuilder() as ib, T.prim_func():
        T.func_name("main")
        a, w, *params, out = _args(func)
        (m, k), (nb, kb, nl, _), n = _shape(a), _shape(w), _shape(out)[1]
        src = _dense_pack(a, kb * 4)
        rows = -(-m // mb)
        loop = T.parallel if m * n * k >= PARALLEL_MIN_WORK and nb // nv * rows > 1 \
                else T.serial
        value = _Epilogue(func, params, out.dtype, nl)
        with loop(0, nb // nv * rows) as t:
            nbo, mo = t // rows, t % rows
            acc = T.alloc_buffer((mb, nv * nl), "int32")
            _zero(acc, mb, nv, nl)
            with T.serial(0, kb) as ko, T.unroll(0, mb) as mi:
                a4 = _broadcast4(src, [clamp_row(mo * mb + mi, m, mb), ko * 4], nl)
                with T.unroll(0, nv) as v:
                    wv = _vec(w, [nbo * nv + v, ko, 0, 0], 4 * nl)
                    _step(acc, mi, v, nl, a4, wv, dot)
            _dense_store(out, acc, value, (mo * mb, nbo * nv * nl), (mb, nv, nl, n, m),
                         lambda r, c: [r, c])
    return _finish(ib, func)


def clamp_row(row: Expr, m: int, mb: int) -> Expr:
    """Row `row` of an M-row operand tiled by mb: clamped to M - 1 when mb does not divide M
    (the last tile's extra rows recompute row M - 1; their results are not stored)."""
    return row if m % mb == 0 else tirx.min(row, m - 1)


def guard_row(row: Expr, m: int, mb: int):
    """A scope that runs its body for rows inside M only (a no-op when mb divides M)."""
    if m % mb == 0:
        return contextlib.nullcontext()
    return _Then(row < m)


class _Then:
    """`with _Then(cond):` = T.If(cond) + T.Then() as one context."""

    def __init__(self, cond: Expr) -> None:
        self.frames = [T.If(cond), T.Then()]

    def __enter__(self) -> None:
        for f in self.frames:
            f.__enter__()

    def __exit__(self, *exc) -> None:
        for f in reversed(self.frames):
            f.__exit__(*exc)


def _dense_store(out: tirx.Buffer, acc: tirx.Buffer, epi: _Epilogue, at: tuple,
                 sizes: tuple, pos: Callable[[Expr, Expr], list]) -> None:
    """Write one tile: rows row0 + mi (those inside M), columns col0 + c at output position
    pos(row, col): whole vectors, unrolled, when the tile lies inside N; else (the last
    tile of a row, when nv nl does not divide N) element by element in one loop (one copy
    of the scalar epilogue, not one per vector). A staged tile goes back into `acc`, then
    through `_finish_tile`."""
    row0, col0 = at
    mb, nv, nl, n, m = sizes

    def sink(mi: Expr, c: Expr, value: Expr, lanes: int = 1) -> None:
        col = (lambda x: tirx.Ramp(x, 1, lanes)) if lanes > 1 else (lambda x: x)
        if epi.staged:
            T.buffer_store(acc, value, [mi, col(c)])
            return
        idx = pos(row0 + mi, col0 + c)
        T.buffer_store(out, value, idx[:-1] + [col(idx[-1])])

    def store(mi: Expr, c: Expr) -> None:
        sink(mi, c, epi.scalar(tirx.BufferLoad(acc, [mi, c]), epi.channel(col0 + c)))

    def vectors() -> None:
        with T.unroll(0, mb) as mi, guard_row(row0 + mi, m, mb), T.unroll(0, nv) as v:
            if not epi.vec:
                with T.vectorized(0, nl) as j:
                    store(mi, v * nl + j)
            else:
                lanes = tirx.Ramp(col0 + v * nl, 1, nl)
                sink(mi, v * nl, epi.vector(_vec(acc, [mi, v * nl], nl),
                                            lambda b: tirx.BufferLoad(b, epi.channel(lanes))),
                     nl)

    if n % (nv * nl) == 0:
        vectors()
    else:
        with T.If(col0 + nv * nl <= n):
            with T.Then():
                vectors()
            with T.Else(), T.serial(0, mb) as mi, guard_row(row0 + mi, m, mb), \
                        T.serial(0, nv * nl) as c, _Then(col0 + c < n):
                store(mi, c)
    if epi.staged:
        _finish_tile(out, acc, epi, (mb, nv, nl), col0, n, lambda r, c: pos(row0 + r, c),
                     rows_left=m - row0 if m % mb else None)


def _dense_pack(a: tirx.Buffer, kp: int) -> tirx.Buffer:
    """The activations in the u8 domain, K padded to kp (a itself when already so)."""
    m, k = _shape(a)
    if a.dtype == "uint8" and k == kp:
        return a
    src = T.alloc_buffer((m, kp), "uint8")
    with T.serial(0, m) as i, T.serial(0, kp) as j:
        v = to_u8(tirx.BufferLoad(a, [i, tirx.min(j, k - 1)]))
        T.buffer_store(src, tirx.Select(j < k, v, tirx.const(0, "uint8")), [i, j])
    return src


# ---- QConv --------------------------------------------------------------------------------
def conv_kernel(func: tirx.PrimFunc, dot: Dot, ocb: int, xv: int) -> tirx.PrimFunc:
    """Direct conv over the quad-interleaved u8 copy of the input, one image at a time (its
    copy, then its tiles: the copy is still in the core's caches): tiles of ocb output
    channels (one broadcast weight quad each) x xv vectors of nl output columns (one
    activation vector each, shared by the ocb channels); taps and quads outside the tile.
    ocb need not divide the channels of a group nor xv the row's vectors: the last tile of
    each is narrower (`tail_tiles`)."""
    with IRBuilder() as ib, T.prim_func():
        T.func_name("main")
        x, w, *params, out = _args(func)
        n, (oc, kh, kw, cq, _) = _shape(x)[0], _shape(w)
        oh, ow = _shape(out)[2:]
        g, nl = _attr(func, "groups"), _attr(func, "nl")
        (sh, sw), (dh, dw) = stride_dilation(func)
        nvec = -(-ow // nl)
        geo = (g * cq, (oh - 1) * sh + (kh - 1) * dh + 1, sw,
               -(-((nvec * nl - 1) * sw + (kw - 1) * dw + 1) // sw))
        value = _Epilogue(func, params, out.dtype, nl)
        ocpg, blocks = oc // g, -(-(oc // g) // ocb)
        tiles = g * blocks * oh
        work = oc * oh * ow * kh * kw * cq * 4
        loop = T.parallel if work >= PARALLEL_MIN_WORK and tiles > 1 else T.serial

        def tile(b: Expr, o0: Expr, q0: Expr, y: Expr, col0: Expr, rows: int, vecs: int
                 ) -> None:
            acc = T.alloc_buffer((rows, vecs * nl), "int32")
            _zero(acc, rows, vecs, nl)
            with T.grid(kh, kw, cq) as (ry, rx, rq):
                row, p = y * sh + ry * dh, rx * dw % sw
                col = col0 + rx * dw // sw
                with T.unroll(0, rows) as k:
                    wq = _broadcast4(w, [o0 + k, ry, rx, rq, 0], nl, "int8")
                    with T.unroll(0, vecs) as v:
                        a = _vec(pad, [at(q0 + rq, row, p, col + v * nl)], 4 * nl)
                        _step(acc, k, v, nl, a, wq, dot)
            _conv_store(out, acc, value, (b, o0, y, col0), (rows, vecs, nl, ow))

        with T.serial(0, n) as b:
            pad, at = _conv_pad(func, x, cq, geo, b)
            with loop(0, tiles) as t:
                gb, y = t // oh, t % oh
                o0, q0 = block_origin(gb, blocks, ocpg, ocb, cq, g)
                each_tile(gb % blocks, (ocpg, ocb), (nvec, xv),
                          lambda rows, v0, vecs: tile(b, o0, q0, y, v0 * nl, rows, vecs))
    return _finish(ib, func)


def block_origin(gb: Expr, blocks: int, ocpg: int, ocb: int, cq: int, g: int
                 ) -> tuple[Expr, Expr]:
    """(first output channel, first input channel quad) of channel block gb of a grouped
    conv tiled ocb channels at a time (`blocks` blocks a group of ocpg channels)."""
    return gb // blocks * ocpg + gb % blocks * ocb, (gb // blocks * cq if g > 1 else 0)


def each_tile(block: Expr, channels: tuple[int, int], vectors: tuple[int, int],
              emit: Callable[[int, Expr, int], None]) -> None:
    """emit(rows, first vector, vectors) for every tile of channel block `block`:
    channels = (a group's channels, tile rows), vectors = (vectors, tile vectors); the last
    tile of each is narrower where the tile does not divide (`tail_tiles`)."""
    def row_of_tiles(rows: int) -> None:
        for start, count, vecs in tail_tiles(*vectors):
            with T.serial(0, count) as xo:
                emit(rows, start + xo * vecs, vecs)

    by_size(block, tail_tiles(*channels), row_of_tiles)


def tail_tiles(total: int, size: int) -> list[tuple[int, int, int]]:
    """[(start, count, size)]: `total` items in tiles of `size`, the last one narrower
    where size does not divide total (count 0 tiles left out)."""
    whole = total // size
    out = [(0, whole, size)] if whole else []
    return out + ([(whole * size, 1, total % size)] if total % size else [])


def by_size(block: Expr, parts: list[tuple[int, int, int]], emit: Callable[[int], None]
             ) -> None:
    """emit(size) for the tile size of block index `block` (parts as `tail_tiles`): one
    body, or the whole tiles' and the narrower last tile's behind a branch."""
    if len(parts) == 1:
        emit(parts[0][2])
        return
    (_, whole, size), (_, _, last) = parts
    with T.If(block < whole):
        with T.Then():
            emit(size)
        with T.Else():
            emit(last)


def _conv_pad(func: tirx.PrimFunc, x: tirx.Buffer, cq: int, geo: tuple, image: Expr,
              planes: tuple[int, int] | None = None) -> tuple[tirx.Buffer, Callable]:
    """P[g * cq + q, i, p, j, c] (flat) of input image `image`: its channel 4q + c of group
    g at padded row i, padded column j * sw + p, in the u8 domain; the zero point in the
    padding and in the channels past C/g (their weights are 0). One image a copy: the
    conv runs that image's tiles right after it, while it is in the core's caches. Two
    branch-free passes: the zero point where the copy does not write (`_fill_border`; the
    whole buffer where quads are partial), then the interior. Returns the buffer and its
    index function at(gq, i, p, j) (of channel 0 of the quad).

    planes=(sh, tail): the rows split by the row stride too, P[gq, i % sh, p, i // sh, j,
    c], so one (row phase, column phase) plane is contiguous and output (y, x) of a tap
    reads plane offset y * pws + x + const (`int_flat`); `tail` spare quads at the end
    (the last tile's reads past the last plane)."""
    c, h, wd = _shape(x)[1:]
    quads, ph, sw, pws = geo
    top, left = (int(v) for v in func.attrs["etch.pad"])
    zu, icg = _attr(func, "x_zero"), c // (quads // cq)
    sh, tail = planes or (1, 0)
    ni = -(-ph // sh)
    size = (quads * sh * ni * sw * pws + tail) * 4
    pad = T.alloc_buffer((size,), "uint8")

    def at(gq: Expr, i: Expr, p: Expr, j: Expr) -> Expr:
        if planes is None:
            return (((gq * ph + i) * sw + p) * pws + j) * 4
        return ((((gq * sh + i % sh) * sw + p) * ni + i // sh) * pws + j) * 4

    rows, cols = min(h, ph - top), min(wd, sw * pws - left)
    if icg % 4:
        _fill(pad, 0, size, zu)  # the partial quads' lanes past C/g: everywhere
    else:
        _fill_border(pad, at, zu, (quads, ni * sh, sw, pws), (top, rows, left, cols))
        _fill(pad, size - tail * 4, tail * 4, zu)
    loop = T.parallel if size >= 1 << 16 and c > 1 else T.serial
    per = 16 if _attr(func, "nl") >= 16 else 8  # columns a phase: a zmm or a ymm of quads
    width = per * sw  # input columns per block: one vector of per x 4 bytes per phase
    blocks = cols // width if sw <= 2 else 0
    if blocks:
        with loop(0, quads) as gq, T.grid(rows, blocks) as (i, jb):
            origin = (image, gq // cq * icg, gq % cq * 4, i, jb * width)
            for phase, quad in enumerate(_quad_of_rows(x, origin, icg, zu, sw, per)):
                jj = jb * width + phase + left
                T.buffer_store(pad, quad, [tirx.Ramp(
                    at(gq, i + top, jj % sw, jj // sw), 1, 4 * per)])
    with loop(0, c) as ch:
        gq, lane = ch // icg * cq + ch % icg // 4, ch % icg % 4
        with T.grid(rows, cols - blocks * width) as (i, j0):
            j = j0 + blocks * width
            jj = j + left
            T.buffer_store(pad, to_u8(tirx.BufferLoad(x, [image, ch, i, j])),
                           [at(gq, i + top, jj % sw, jj // sw) + lane])
    return pad, at


def _fill(buf: tirx.Buffer, start: Expr | int, count: int, value: int, lanes: int = 32
          ) -> None:
    """buf[start:start + count] = value (in buf's type), `lanes` elements a store, then
    the rest one at a time."""
    whole = count // lanes
    if whole:
        with T.serial(0, whole) as t:
            T.buffer_store(buf, tirx.Broadcast(tirx.const(value, buf.dtype), lanes),
                           [tirx.Ramp(start + t * lanes, 1, lanes)])
    if count % lanes:
        with T.serial(0, count % lanes) as t:
            T.buffer_store(buf, tirx.const(value, buf.dtype), [start + whole * lanes + t])


def _fill_border(pad: tirx.Buffer, at: Callable, zu: int, dims: tuple, inside: tuple
                 ) -> None:
    """The zero point in what the copy of `_conv_pad` does not write, where every quad is
    whole: the padded rows outside [top, top + rows) (the row phases' spare rows too), and
    in the rows between, each column phase's columns outside [left, left + cols). The copy
    writes the rest, so the buffer is written once, not twice (it was zero-filled whole:
    a memset the size of the layer's input, ~3% of mobilenet_v2 `--int` in perf)."""
    quads, prows, sw, pws = dims
    top, rows, left, cols = inside
    with T.serial(0, quads) as gq:
        for lo, hi in ((0, top), (top + rows, prows)):
            if hi > lo:
                with T.serial(lo, hi) as i:
                    for p in range(sw):
                        _fill(pad, at(gq, i, p, 0), pws * 4, zu)
        with T.serial(top, top + rows) as i:
            for p in range(sw):
                first = max(0, -(-(left - p) // sw))  # the phase's first written column
                end = min(pws, max(0, -(-(left + cols - p) // sw)))
                _fill(pad, at(gq, i, p, 0), first * 4, zu)
                _fill(pad, at(gq, i, p, end), (pws - end) * 4, zu)


def _quad_of_rows(x: tirx.Buffer, at: tuple, icg: int, zu: int, sw: int = 1,
                  per: int = 8) -> list[Expr]:
    """`per` * sw columns of 4 channels of x from column j (a multiple of sw), split by the
    stride's phase: phase r is columns j + r + sw k (k < per), interleaved [col][channel]
    (vpunpck* / vpermb), 4 * per bytes each (one ymm for 8 columns, one zmm for 16); the
    channels past the group's icg read as the zero point."""
    b, base, first, i, j = at
    c = _shape(x)[1]
    rows, span = [], per * sw
    for lane in range(4):
        ch = tirx.min(base + first + lane, c - 1)
        raw = tirx.BufferLoad(x, [b, ch, i, tirx.Ramp(j, 1, span)])
        if x.dtype == "int8":
            raw = tirx.bitwise_xor(raw, tirx.Broadcast(tirx.const(-128, "int8"), span))
        vec = raw.astype(f"uint8x{span}")
        rows.append(tirx.Select(tirx.Broadcast(first + lane < icg, span), vec,
                                tirx.Broadcast(tirx.const(zu, "uint8"), span)))
    return [tirx.Shuffle(rows, [tirx.const(lane * span + sw * k + r, "int32")
                                for k in range(per) for lane in range(4)]) for r in range(sw)]


def _conv_store(out: tirx.Buffer, acc: tirx.Buffer, epi: _Epilogue, at: tuple,
                sizes: tuple, spill: bool = False) -> None:
    """Write one tile NCHW: channel o0 + k, columns col0 + v * nl + j: whole vectors where
    the row has them, element by element at its end; a staged tile goes back into `acc`,
    then through `_finish_tile`. `spill` (a kernel that writes each channel's rows in
    order, in one thread): a row's partial last vector is stored whole where its extra
    lanes land inside the channel's later rows (rewritten after), not element by element."""
    b, o0, y, col0 = at
    ocb, xv, nl, ow = sizes
    with T.unroll(0, ocb) as k, T.unroll(0, xv) as v:
        start, o = col0 + v * nl, o0 + k

        def sink(value: Expr, j: Expr, lanes: int = 1) -> None:
            """Store `lanes` values from tile column v * nl + j (back into the tile when
            staged)."""
            col = lambda c: tirx.Ramp(c, 1, lanes) if lanes > 1 else c
            if epi.staged:
                T.buffer_store(acc, value, [k, col(v * nl + j)])
            else:
                T.buffer_store(out, value, [b, o, y, col(start + j)])

        def store(j: Expr) -> None:
            sink(epi.scalar(tirx.BufferLoad(acc, [k, v * nl + j]), [0, o, 0, 0]), j)

        def store_vector() -> None:
            if not epi.vec:
                with T.vectorized(0, nl) as j:
                    store(j)
                return
            scalar = lambda buf: tirx.Broadcast(tirx.BufferLoad(buf, [0, o, 0, 0]), nl)
            sink(epi.vector(_vec(acc, [k, v * nl], nl), scalar), 0, nl)

        def requantize_in_tile() -> None:  # the row's last, partial vector: in the tile
            scalar = lambda buf: tirx.Broadcast(tirx.BufferLoad(buf, [0, o, 0, 0]), nl)
            idx = [k, tirx.Ramp(v * nl, 1, nl)]
            T.buffer_store(acc, epi.vector(_vec(acc, [k, v * nl], nl), scalar, "int32"), idx)

        def copy(j: Expr) -> None:
            sink(tirx.BufferLoad(acc, [k, v * nl + j]).astype(out.dtype), j)

        if ow % nl == 0 or epi.staged:  # a staged tile has room for whole vectors
            store_vector()
        elif epi.vec and spill:
            oh = _shape(out)[2]
            _store_tail(start, nl, ow, store_vector, copy, requantize_in_tile,
                        fits=(y * ow + start + nl <= oh * ow))
        elif epi.vec:  # the partial vector requantised whole, then copied element-wise
            _store_tail(start, nl, ow, store_vector, copy, requantize_in_tile)
        else:
            _store_tail(start, nl, ow, store_vector, store)
    if epi.staged:
        _finish_tile(out, acc, epi, (ocb, xv, nl), col0, ow, lambda r, c: [b, o0 + r, y, c])


def _finish_tile(out: tirx.Buffer, acc: tirx.Buffer, epi: _Epilogue, tile: tuple,
                 col0: Expr, width: int, pos: Callable[[Expr, Expr], list],
                 rows_left: Expr | None = None) -> None:
    """The steps after the requantisation, from a staged tile of `rows` x `nv` vectors of nl
    (in `acc`) to the output: pos(r, col) is the output position of tile row r at column
    col; columns from col0, guarded past `width`; rows from rows_left on are not stored."""
    rows, nv, nl = tile
    guard = contextlib.nullcontext() if rows_left is None else None
    with T.serial(0, rows) as r, guard or _Then(r < rows_left), T.serial(0, nv) as v:
        start = col0 + v * nl

        def store(j: Expr) -> None:
            at = pos(r, start + j)
            T.buffer_store(out, epi.finish(tirx.BufferLoad(acc, [r, v * nl + j]), at), at)

        def whole() -> None:
            if epi.post_vec:
                at = pos(r, start)
                idx = at[:-1] + [tirx.Ramp(at[-1], 1, nl)]
                y = _vec(acc, [r, v * nl], nl)
                T.buffer_store(out, epi.finish_vector(
                    y, tirx.BufferLoad(epi.post_bufs[0], idx)), idx)
                return
            if epi.table_vec:
                at = pos(r, start)
                idx = at[:-1] + [tirx.Ramp(at[-1], 1, nl)]
                T.buffer_store(out, epi.finish_table(_vec(acc, [r, v * nl], nl)), idx)
                return
            with T.vectorized(0, nl) as j:
                store(j)

        def lookup_in_tile() -> None:  # a partial vector's table look-up, in the tile
            idx = [r, tirx.Ramp(v * nl, 1, nl)]
            T.buffer_store(acc, epi.finish_table(_vec(acc, [r, v * nl], nl)).astype(
                f"int32x{nl}"), idx)

        def copy(j: Expr) -> None:
            at = pos(r, start + j)
            T.buffer_store(out, tirx.BufferLoad(acc, [r, v * nl + j]).astype(out.dtype), at)

        if width % (nv * nl) == 0:
            whole()
        elif epi.table_vec:  # lanes past the width hold finite values: looked up, unused
            _store_tail(start, nl, width, whole, copy, lookup_in_tile)
        else:
            _store_tail(start, nl, width, whole, store)


def _store_tail(start: Expr, nl: int, ow: int, whole: Callable, store: Callable,
                prepare: Callable | None = None, fits: Expr | None = None) -> None:
    """A vector of a row whose width is not a multiple of nl: whole when it fits (or where
    `fits`), else `prepare()` (if given) and then store(j) for each column inside the row."""
    cond = start + nl <= ow
    with T.If(cond if fits is None else tirx.any(cond, fits)):
        with T.Then():
            whole()
        with T.Else():
            if prepare is not None:
                prepare()
            with T.serial(0, nl) as j, T.If(start + j < ow), T.Then():
                store(j)
