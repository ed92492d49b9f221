"""The cpu kernel of a float stride-1 or stride-2 depthwise convolution, built with TVM's
IRBuilder, that reads its input in place: no padded copy of the plane.

The TE kernel (`lower/conv.conv2d`, kind "depthwise_conv2d") pads each channel's plane into
a scratch buffer, a zero fill and a copy as large as the plane, before its taps read it:
on mobilenet_v2's 32x112x112 layer the fill and the copy were about half the kernel's time
(perf); at stride 2 the copy also deinterleaved the columns. Here each output row block's
taps load the input rows themselves: for L output columns a vector of L input columns at
each tap's offset (stride 2: two vectors over the 2L - 1 columns and a shuffle of their
even lanes), whole vectors only. The first and the last vector of a row (the last one
moved back to end at the row's end, so every vector is whole) load the window moved
inside the row and shuffle in zeros where the taps pass the row's ends; an input row
outside the plane is skipped. Each loaded input vector feeds every output row of the
block that uses it. The epilogue is the TE kernel's own "epilogue" expression (fused bias,
clamp, swish, residual), its anchor value and indices substituted, over one vector.

Measured on the Xeon (kernel CPU time, one thread, against the TE kernel; outputs
identical): 32x112x112 3x3 230 -> 145 us, 960x7x7 92 -> 31; stride 2: 96x112x112 3x3
520 -> 237, 144x56x56 176 -> 90, 144x56x56 5x5 240-334 -> 145-160. Whole models:
mobilenet_v2 0.87x, efficientnet_b0 0.96x, shufflenet_v2 0.96x.

Only where it applies: stride 1 or 2 (on each axis), dilation 1, no upsampling, rows of at
least one vector (8 or 4 lanes for shorter rows, unless the epilogue is transcendental:
the TE kernel computes a swish over full-width tiles), planes at least one load wide,
float32; anything else keeps the TE kernel (`cpu.DepthwiseConv`).
"""

from __future__ import annotations

import tvm_ffi
from tvm import ir, s_tir, tirx
from tvm.script.ir_builder import IRBuilder
from tvm.target import Target
from tvm.tirx.script.builder import ir as T

from backends.tvm.schedules.cpu import PARALLEL_MIN_WINDOW_WORK, lanes
from backends.tvm.schedules.int_cpu import KernelRule
from backends.tvm.schedules.int_kernels import _args, _finish, _shape

Expr = tirx.Expr
ROWS = 4  # output rows per block: (ROWS - 1) * row stride + kh input rows of loads


class _Geometry:
    """The convolution's sizes from the TE kernel's buffers and attributes."""

    def __init__(self, func: tirx.PrimFunc, width: int) -> None:
        x, w, out = func.params[0], func.params[1], func.params[-1]
        self.n, self.c, self.h, self.w = _shape(x)
        self.oc, _, self.kh, self.kw = _shape(w)
        self.multiplier = self.oc // self.c  # output channels per input channel
        self.oh, self.ow = _shape(out)[2:]
        self.top, self.left = (int(v) for v in func.attrs["etch.pad"])
        self.row_stride, self.stride = (int(v) for v in func.attrs["etch.stride"])
        self.lanes = width
        self.span = self.stride * (width - 1) + 1  # input columns one output vector spans
        self.rb = min(ROWS, self.oh)
        self.blocks = -(-self.ow // width)

    def start(self, xb: int) -> int:
        """First output column of vector xb (the last one ends at the row's end)."""
        return min(xb * self.lanes, self.ow - self.lanes)

    def first(self, start: int | Expr, rx: int) -> int | Expr:
        """The input column of tap rx for output column `start`."""
        return start * self.stride + rx - self.left

    def inside(self, start: int) -> bool:
        """Whether every tap's vector from output column `start` lies inside the row."""
        return self.first(start, 0) >= 0 and self.first(start, self.kw - 1) + self.span <= self.w


def applies(func: tirx.PrimFunc, width: int) -> bool:
    attrs = func.attrs
    if any(k not in attrs for k in ("etch.pad", "etch.stride", "etch.dilation")):
        return False
    if any(int(v) not in (1, 2) for v in attrs["etch.stride"]) or \
            [int(v) for v in attrs["etch.dilation"]] != [1, 1] or \
            int(attrs.get("etch.upsample", 0)):
        return False
    if any(str(p.dtype) != "float32" for p in (func.params[0], func.params[1], func.params[-1])):
        return False
    geo = _Geometry(func, width)
    if geo.ow < width or geo.w < geo.span or geo.left >= width:
        return False
    # the middle vectors read inside the row (checked at their first and last start)
    return all(geo.inside(geo.start(xb)) for xb in {1, geo.blocks - 2} if 0 < xb < geo.blocks - 1)


def _epilogue(func: tirx.PrimFunc) -> tuple[tirx.PrimExpr, list, tirx.Buffer]:
    """The "epilogue" block's stored value, its iteration variables and the anchor buffer."""
    sch = s_tir.Schedule(func)
    epi = sch.get(sch.get_sblock("epilogue"))
    anchor = sch.get(sch.get_sblock("anchor")).writes[0].source
    return epi.body.value, [iv.var for iv in epi.iter_vars], anchor


def _substitute(value: Expr, iters: dict, anchor: tirx.Buffer, acc: Expr,
                buffers: list[tuple[tirx.Buffer, tirx.Buffer]]) -> Expr:
    """`value` with its iteration variables replaced by `iters`, its anchor load by `acc`
    and the TE kernel's parameter buffers by the new kernel's."""

    def var(v: ir.expr.Var) -> Expr:
        for old, new in iters.items():
            if v.same_as(old):
                return new
        return v

    def load(ld: ir.expr.TensorLoad) -> Expr:
        if ld.source.same_as(anchor):
            return acc
        for old, new in buffers:
            if ld.source.same_as(old):
                return tirx.BufferLoad(new, list(ld.indices))
        return ld

    return tvm_ffi.structural_map(value, [(ir.expr.Var, var), (ir.expr.TensorLoad, load)])


def _tap(x: tirx.Buffer, at: tuple, col: int | Expr, geo: _Geometry, edge: bool) -> Expr:
    """The input values of row `at` at columns col + stride k for the L lanes k (0 outside
    the row). Inside the row: one vector load (stride 2: two, the second ending at the last
    column read, and a shuffle of their even lanes). At an edge (`edge`, col a constant):
    the same loads from the window moved inside the row and a shuffle that picks each
    lane's column or a zero."""
    b, ch, row = at
    lanes, stride = geo.lanes, geo.stride

    def load(start: int | Expr) -> list[Expr]:
        firsts = [start] if stride == 1 else [start, start + lanes - 1]
        return [tirx.BufferLoad(x, [b, ch, row, tirx.Ramp(f, 1, lanes)]) for f in firsts]

    def at_offset(offset: int) -> int:  # concatenated lane of window column `offset`
        return offset if offset < lanes else lanes + offset - (lanes - 1)

    if not edge or (col >= 0 and col + geo.span <= geo.w):
        vectors = load(col)
        if stride == 1:
            return vectors[0]
        picks = [at_offset(stride * k) for k in range(lanes)]
        return tirx.Shuffle(vectors, [tirx.const(p, "int32") for p in picks])
    window = min(max(col, 0), geo.w - geo.span)  # a constant: the row's first or last span
    vectors = load(window)
    zero = len(vectors) * lanes  # the zeros vector's first lane
    picks = []
    for k in range(lanes):
        c = col + stride * k
        picks.append(at_offset(c - window) if 0 <= c < geo.w else zero)
    zeros = tirx.Broadcast(tirx.const(0.0, "float32"), lanes)
    return tirx.Shuffle([*vectors, zeros], [tirx.const(p, "int32") for p in picks])


def depthwise_kernel(func: tirx.PrimFunc, width: int) -> tirx.PrimFunc:
    geo = _Geometry(func, width)
    value, iters, anchor = _epilogue(func)
    lanes, rb = geo.lanes, geo.rb
    with IRBuilder() as ib, T.prim_func():
        T.func_name("main")
        new = _args(func)
        x, w, out = new[0], new[1], new[-1]
        pairs = list(zip(func.params, new))
        work = geo.n * geo.oc * geo.oh * geo.ow * geo.kh * geo.kw
        loop = T.parallel if work >= PARALLEL_MIN_WINDOW_WORK and geo.n * geo.oc > 1 \
            else T.serial
        with loop(0, geo.n * geo.oc) as t:
            b, ch = t // geo.oc, t % geo.oc
            src = ch // geo.multiplier if geo.multiplier > 1 else ch  # its input channel
            with T.serial(0, -(-geo.oh // rb)) as yb:
                y0 = tirx.min(yb * rb, geo.oh - rb)

                def block(start: int | Expr, edge: bool) -> None:
                    acc = T.alloc_buffer((rb, lanes), "float32")
                    for r in range(rb):
                        T.buffer_store(acc, tirx.Broadcast(tirx.const(0.0, "float32"), lanes),
                                       [r, tirx.Ramp(0, 1, lanes)])
                    sh = geo.row_stride
                    for r in range((rb - 1) * sh + geo.kh):  # the block's input rows
                        row = y0 * sh + r - geo.top
                        uses = [(yy, r - yy * sh) for yy in range(rb) if 0 <= r - yy * sh < geo.kh]
                        with T.If(tirx.all(row >= 0, row < geo.h)), T.Then():
                            for rx in range(geo.kw):
                                v = _tap(x, (b, src, row), geo.first(start, rx), geo, edge)
                                for yy, ry in uses:
                                    idx = [yy, tirx.Ramp(0, 1, lanes)]
                                    wv = tirx.Broadcast(tirx.BufferLoad(w, [ch, 0, ry, rx]),
                                                        lanes)
                                    T.buffer_store(acc, tirx.BufferLoad(acc, idx) + v * wv, idx)
                    for yy in range(rb):
                        with T.vectorized(0, lanes) as lane:
                            at = {iters[0]: b, iters[1]: ch, iters[2]: y0 + yy,
                                  iters[3]: start + lane}
                            y = _substitute(value, at, anchor,
                                            tirx.BufferLoad(acc, [yy, lane]), pairs)
                            T.buffer_store(out, y, [b, ch, y0 + yy, start + lane])

                block(0, True)
                if geo.blocks > 2:
                    with T.serial(1, geo.blocks - 1) as xb:
                        block(xb * lanes, False)
                if geo.blocks > 1:
                    block(geo.ow - lanes, True)
    kernel = _finish(ib, func)
    return kernel.with_attr("etch.vw", width).with_attr("etch.rb", rb)  # what it runs


class FloatDepthwise(KernelRule):
    """A stride-1 or stride-2 float depthwise conv as `depthwise_kernel` (see the module
    docstring)."""

    kinds = ("depthwise_conv2d",)

    def kernel(self, func: tirx.PrimFunc, target: Target) -> tirx.PrimFunc | None:
        width = lanes(target)
        ow = _shape(func.params[-1])[3]
        # rows under a vector: narrower vectors, unless the epilogue evaluates a function
        # (swish), which the TE kernel runs over its whole full-width tiles
        while width > 4 and ow < width and not int(func.attrs.get("etch.transcendental", 0)):
            width //= 2
        return depthwise_kernel(func, width) if applies(func, width) else None
