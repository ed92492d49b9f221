"""CPU (llvm) schedule rules for the kernels `backends.tvm.lower` emits.

Every anchor kernel is an "anchor" reduction block followed by an "epilogue" block. The rules
tile the anchor into a register tile (vector axis innermost, unrolled rows/channels around
it, the reduction outside both), then move the epilogue into the tile loop
(`reverse_compute_at`), so bias, activation and residual are applied while the tile is hot
and the anchor's buffer shrinks to the tile: a small default-scope buffer that stays on the
stack (a "local" one would become a heap workspace; see docs/ARCHITECTURE.md). Outer loops run in
parallel when the kernel has enough work to pay for a thread-pool launch.

The vector width is the target's (`lanes(target)`: its CPU features and `vector-width`, see
`backends.tvm.target`); a tile's vector loop is cut into vectors of that width
(`vectorize_loop`), so a 256-bit build on an AVX-512 CPU does not get zmm registers from LLVM
widening a longer vector. Row kernels read their own width (`etch.row_lanes`).

Rules, in order: Dense, Conv, DepthwiseConv, BatchMatmul (`matmul_cpu.py`), RowReduction,
Pool, dlight's CPU Reduction for large reductions that are not over rows, Injective, Fallback.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import tvm_ffi
from tvm import ir, s_tir, sym, tirx
from tvm.s_tir import ScheduleError, dlight
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

from backends.tvm.schedules import tiles
from backends.tvm.target import float_lanes

# Multiply-adds below which a kernel runs on one thread. A parallel launch costs ~4 us on a
# shared 2-core VM (measured), and TVM splits a loop statically, so the kernel waits for its
# slowest thread: on that machine kernels under ~1M multiply-adds (~15 us on one core) ran no
# faster on two. Memory-bound kernels (copies, elementwise) count elements.
PARALLEL_MIN_WORK = 1 << 20
# Depthwise convolutions and window pools do a few multiply-adds per loaded value: ~6
# GMAC/s on one core, so their threshold is lower (PARALLEL_MIN_WORK would keep a 120 us
# kernel on one thread).
PARALLEL_MIN_WINDOW_WORK = 1 << 17
PARALLEL_MIN_ELEMENTS = 1 << 14
# A padded copy (and a GEMM's packed panel, a row epilogue) runs on one thread below this
# many elements: a copy of a small input costs less than the extra parallel launch (and
# barrier) it would need. It was 256k, which kept copies of up to 1 MB on one thread while
# the other waited; whole models with two threads, etch-only A/B on the AVX-512 Xeon, 256k
# -> 64k: mobilenet_v2 4.48 -> 4.18 ms, densenet121 28.8 -> 27.4, resnet50 34.8 -> 33.1,
# efficientnet_b0 7.45 -> 7.24, inception_v3 50.7 -> 49.3, squeezenet1_1 3.96 -> 3.88;
# one thread even. Both thresholds 64k -> 16k on the Zen 5 VM (a parallel launch there
# ~0.6 us): 64k still kept a 13x13 image's Winograd stages (48 x 16 tiles x 36 = 27.6k
# values, 192 x 169 = 32k outputs) and a 384 x 169 GEMM panel on one thread while the
# other waited: squeezenet1_1's 13x13 Winograd layers 1.35-1.41x faster with two threads;
# whole models, two threads, alternating rounds, best of 6: squeezenet1_1 1.91 -> 1.76 ms,
# shufflenet_v2 1.30 -> 1.27, the others even within the VM's noise.
PARALLEL_PAD_ELEMENTS = 1 << 14
# Reduction steps of a dense tile unrolled together: fewer loop branches between the FMAs;
# measured on the AVX-512 Xeon 1.05-1.10x faster on vit_b16's dense kernels than none.
REDUCE_UNROLL = 4
# Vectors of a padded copy's interior row at most, each a piece of its own
# (`_vector_pieces`): up to 256 columns with 16 lanes (a 512-wide image at stride 2). At 8
# (128 columns), inception_v3's 299-wide stride-2 stem (149 columns, 9 vectors) copied its
# input by a gather and a bounds check per value, ~21% of the kernel: alone on Zen 5, one
# thread, 325-331 -> 258-261 us (ORT 163), bit-identical.
INTERIOR_VECTORS = 16
Loop = s_tir.schedule.LoopRV


def lanes(target: Target) -> int:
    """float32 lanes of the kernels' vectors on `target`: its CPU's features (never the
    host's) and its `vector-width`, if it declares one."""
    from tvm.target import codegen

    return float_lanes(codegen.llvm_get_cpu_features(target), target.attrs.get("vector-width"))


def region_buffer(region) -> tirx.Buffer:
    """The buffer of a block's read or write region (`BufferRegion.buffer`, or `source`
    where the region is a TensorRegion)."""
    return region.buffer if hasattr(region, "buffer") else region.source


def extent(sch: s_tir.Schedule, loop: Loop) -> int:
    return int(sch.get(loop).extent)


def work(sch: s_tir.Schedule, loops: Sequence[Loop]) -> int:
    total = 1
    for loop in loops:
        total *= extent(sch, loop)
    return total


def block(sch: s_tir.Schedule, name: str) -> s_tir.schedule.SBlockRV | None:
    """The block called `name`, or None."""
    try:
        return sch.get_sblock(name)
    except ScheduleError:  # s_tir's answer for a missing block
        return None


def maybe_parallel(sch: s_tir.Schedule, loop: Loop, amount: int,
                   threshold: int = PARALLEL_MIN_WORK) -> bool:
    """Run `loop` in parallel if the kernel's work (`amount`) pays for the launch; whether
    it does."""
    if amount >= threshold and extent(sch, loop) > 1:
        sch.parallel(loop)
        return True
    return False


def vectorize_inner(sch: s_tir.Schedule, blk: s_tir.schedule.SBlockRV, width: int,
                    skip: int = 0) -> None:
    """Vectorise the innermost loop of `blk` by `width` lanes where it divides evenly; the
    `skip` outermost loops (a row loop other blocks are computed at) are left alone."""
    loops = sch.get_loops(blk)[skip:]
    if not loops:
        return
    n = extent(sch, loops[-1])
    if n <= width and n > 1:
        sch.vectorize(loops[-1])
    elif n % width == 0:
        sch.vectorize(sch.split(loops[-1], [None, width])[1])


def vectorize_loop(sch: s_tir.Schedule, loop: Loop, width: int) -> bool:
    """Vectorise `loop` as vectors of `width` lanes: a loop of several whole vectors is split
    and its outer part unrolled, so LLVM sees vectors of the target's width (a wider vector
    it would legalise to the CPU's widest registers: zmm on an AVX-512 CPU built for 256).
    Whether it split."""
    n = extent(sch, loop)
    split = n > width and n % width == 0
    if split:
        outer, loop = sch.split(loop, [None, width])
        sch.unroll(outer)
    sch.vectorize(loop)
    return split


def finish_tile(sch: s_tir.Schedule, anchor: s_tir.schedule.SBlockRV, reduce_first: Loop,
                rows: Loop | None, vec: Loop, epilogue_vec: bool, width: int) -> None:
    """Unroll the tile's row loop, vectorise its vector loop by `width` lanes, split off the
    init."""
    if rows is not None:
        sch.unroll(rows)
    split = vectorize_loop(sch, vec, width)
    init = sch.decompose_reduction(anchor, reduce_first)
    init_loops = sch.get_loops(init)
    if split:
        sch.unroll(init_loops[-2])
    sch.vectorize(init_loops[-1])
    epi = block(sch, "epilogue")
    if epi is not None and epilogue_vec:
        vectorize_loop(sch, sch.get_loops(epi)[-1], width)


def unroll_reduction(sch: s_tir.Schedule, k: Loop) -> tuple[Loop, Loop | None]:
    """Split `k` into (outer, REDUCE_UNROLL steps) where that divides it; the steps are
    unrolled once the tile is finished (`finish_tile` decomposes at the outer loop)."""
    if extent(sch, k) % REDUCE_UNROLL or extent(sch, k) == REDUCE_UNROLL:
        return k, None
    ko, ku = sch.split(k, [None, REDUCE_UNROLL])
    return ko, ku


class KindRule(ScheduleRule):
    """A rule for PrimFuncs whose `etch.kind` attribute is in `kinds` (empty: any).
    `schedule` returns False where the rule does not apply after all, or a line saying
    what it chose (tile, loop order, parallel loop), kept as `note` for the kernel's
    `etch.tile` (`--explain`)."""

    kinds: tuple[str, ...] = ()
    note: str | None = None

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool = False):
        self.note = None
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        kind = str(func.attrs.get("etch.kind", "")) if func.attrs else ""
        if self.kinds and kind not in self.kinds:
            return None
        sch = s_tir.Schedule(func)
        done = self.schedule(sch, func, target)
        if done is False:
            return None
        self.note = done if isinstance(done, str) else None
        return sch

    def schedule(self, sch: s_tir.Schedule, func: tirx.PrimFunc,
                 target: Target) -> bool | str | None:
        raise NotImplementedError


class Dense(KindRule):
    """[M, K] x packed [N/nb, K, nb]: tile mb x nb, vector axis N, parallel over tiles. The
    lowering records mb (`etch.mb`, M padded to it) where it chose one."""

    kinds = ("dense",)

    def schedule(self, sch, func, target):
        nb = int(func.attrs["etch.nb"])
        anchor = sch.get_sblock("anchor")
        m, n, k = sch.get_loops(anchor)
        if extent(sch, n) % nb:
            return False
        total = work(sch, [m, n, k])
        mb = int(func.attrs["etch.mb"]) if "etch.mb" in func.attrs else \
            tiles.dense_mb(extent(sch, m), nb, lanes(target))
        if extent(sch, m) % mb:
            return False
        mo, mi = sch.split(m, [None, mb])
        no, ni = sch.split(n, [None, nb])
        ko, ku = unroll_reduction(sch, k) if "etch.mb" in func.attrs else (k, None)
        sch.reorder(no, mo, ko, *([ku] if ku else []), mi, ni)  # a weight block stays in
        outer = sch.fuse(no, mo)                                # cache across row tiles
        maybe_parallel(sch, outer, total)
        n_out = int(sch.get(sch.get_loops(sch.get_sblock("epilogue"))[-1]).extent)
        sch.reverse_compute_at(sch.get_sblock("epilogue"), outer)
        finish_tile(sch, anchor, ko, mi, ni, n_out % nb == 0, lanes(target))
        if ku is not None:
            sch.unroll(ku)
        return True


class Conv(KindRule):
    """Direct NCHW conv: tile ocb channels x vw columns; parallel over (n, oc-block, row).
    Rows that the tile width does not divide take their epilogue per row (`row_epilogue`)."""

    kinds = ("conv2d",)

    def schedule(self, sch, func, target):
        ocb, vw = int(func.attrs["etch.ocb"]), int(func.attrs["etch.vw"])
        anchor = sch.get_sblock("anchor")
        n, o, y, x, rc, ry, rx = sch.get_loops(anchor)
        total = work(sch, [n, o, y, x, rc, ry, rx])
        ow = extent(sch, sch.get_loops(sch.get_sblock("epilogue"))[-1])
        oo, oi = sch.split(o, [None, ocb])
        xo, xi = sch.split(x, [None, vw])
        sch.reorder(n, oo, y, xo, rc, ry, rx, oi, xi)
        outer = sch.fuse(n, oo, y)
        maybe_parallel(sch, outer, total)
        if ow % vw == 0 or not row_epilogue(sch, outer, lanes(target)):
            _tile_epilogue(sch, xo)
        if extent(sch, rx) * extent(sch, ry) <= 9:  # a 3x3 window: one straight-line body
            sch.unroll(ry)
            sch.unroll(rx)
        width = lanes(target)
        finish_tile(sch, anchor, rc, oi, xi, ow % vw == 0, width)
        _schedule_pad(sch, width)
        return True


class DepthwiseConv(KindRule):
    """One channel per tile, `etch.rb` output rows (default 1) x vw columns (the vector),
    the rows and the kernel's columns unrolled; rows that vw does not divide take their
    epilogue per `etch.rb` rows (`row_epilogue`)."""

    kinds = ("depthwise_conv2d", "window_pool")  # pools: `lower/pool._tiled_pool`

    def schedule(self, sch, func, target):
        vw, rb = int(func.attrs["etch.vw"]), int(func.attrs.get("etch.rb", 1))
        anchor = sch.get_sblock("anchor")
        n, o, y, x, ry, rx = sch.get_loops(anchor)
        total = work(sch, [n, o, y, x, ry, rx])
        ow = extent(sch, sch.get_loops(sch.get_sblock("epilogue"))[-1])
        yo, yi = sch.split(y, [None, rb])
        xo, xi = sch.split(x, [None, vw])
        sch.reorder(n, o, yo, xo, ry, rx, yi, xi)
        outer = sch.fuse(n, o)
        maybe_parallel(sch, outer, total, PARALLEL_MIN_WINDOW_WORK)
        if ow % vw == 0 or not row_epilogue(sch, yo, lanes(target)):
            _tile_epilogue(sch, xo)
        sch.unroll(rx)
        finish_tile(sch, anchor, ry, yi if rb > 1 else None, xi, ow % vw == 0, lanes(target))
        pad = block(sch, "pad")
        if pad is not None:  # pad one channel at a time, just before it is read (L1-hot)
            sch.compute_at(pad, outer)
            _decompose_pad(sch, pad, lanes(target))
        return True


def row_epilogue(sch: s_tir.Schedule, at: Loop, width: int, parallel: bool = False) -> bool:
    """Compute the epilogue at `at`, a loop above every tile of its rows, its columns as
    whole vectors of `width` lanes and a scalar tail. For rows that no tile width divides
    (55, 27 or 13 columns, 55x55 positions): an epilogue computed at the tile runs over the
    tile's padded columns behind a bounds check, which LLVM leaves scalar, and after a short
    reduction that scalar loop costs as much as the tile. A row under one vector (14, 13 or
    7 columns) is one short vector (it was left scalar: mobilenet_v2's 384-channel 3x3
    depthwise on 14x14 171 -> 51 us, ORT 60; whole models single-threaded, CPU time:
    shufflenet_v2 6.4 -> 4.8 ms, efficientnet_b0 16.3 -> 14.5, inception_v3 145 -> 132,
    mobilenet_v2 9.5 -> 9.1). False (nothing done) where the lowering added a "crop" (its
    epilogue covers whole tiles) or a row has one column.
    Measured single-threaded on the Zen 4 host (kernel CPU time, interleaved with the tile
    epilogue, load 4-5): squeezenet's 16->64 1x1 on 55x55 175 -> 119 us, 3->64 3x3 stride 2
    0.98 -> 0.72 ms, 16->64 3x3 0.69 -> 0.65 ms; mobilenet_v2's 144-channel depthwise 3x3
    on 56x56 0.28 -> 0.20-0.30 ms, on 28x28 98 -> 73-79 us (a fused rows x columns loop
    was 1.6x slower: the tile's rows are padded, so its reads became gathers).
    `parallel`: its row loop in parallel where the rows are large enough (an epilogue
    computed outside the kernel's parallel loop)."""
    epi = sch.get_sblock("epilogue")
    if block(sch, "crop") is not None or extent(sch, sch.get_loops(epi)[-1]) < 2:
        return False
    sch.reverse_compute_at(epi, at)
    loops = sch.get_loops(epi)
    if parallel and len(loops) > 1:
        maybe_parallel(sch, loops[-2], work(sch, loops[-2:]), PARALLEL_PAD_ELEMENTS)
    _vector_row(sch, loops[-1], width)
    return True


def _tile_epilogue(sch: s_tir.Schedule, tile: Loop) -> None:
    """The epilogue computed in the tile loop, and its "crop" (the real columns of an
    epilogue over whole tiles, `lower/conv.transcendental`) right after it."""
    sch.reverse_compute_at(sch.get_sblock("epilogue"), tile)
    crop = block(sch, "crop")
    if crop is not None:
        sch.reverse_compute_at(crop, tile)


def _decompose_pad(sch: s_tir.Schedule, pad: s_tir.schedule.SBlockRV, width: int) -> None:
    """Zero fill + branch-free interior copy, both vectorised, where the pattern allows."""
    try:
        fill = sch.decompose_padding(pad, sch.get_loops(pad)[-2])
    except ScheduleError:  # not the plain padding pattern: a deinterleaved copy
        vectorize_deinterleaved(sch, pad, width)
        return
    for blk in (fill, pad):
        vectorize_inner(sch, blk, width)


def vectorize_tail(sch: s_tir.Schedule, loop: Loop, width: int) -> None:
    """Vectorise `loop` as whole vectors of `width` lanes and its tail as one short vector
    (nothing under one vector). A deinterleaved padded copy (stride-2 convolutions, depthwise convolutions and
    tiled pools) keeps its bounds checks and strided reads, which LLVM still vectorises:
    measured single-threaded on the Zen 4 host (kernel CPU time, interleaved with the scalar
    copy, load 4-5), mobilenet_v2's 96-channel 3x3 stride-2 depthwise on 112x112 1.00-1.10
    -> 0.53-0.56 ms (ORT 0.36-0.49), 144-channel on 56x56 316-339 -> 242-289 us,
    efficientnet_b0's 5x5 stride 2 on 56x56 376-383 -> 313-345 us, the 3->32 3x3 stride-2
    stem 247-287 -> 224-230 us, squeezenet's 3->64 705-724 -> 634-678 us."""
    n = extent(sch, loop)
    if n < width:
        return
    if n % width:
        loop, tail = sch.loop_partition(loop, [n - n % width, None])[:2]
        if n % width > 1:  # one short vector (12 of a 28-column row), not a scalar loop
            sch.vectorize(tail)
    sch.vectorize(sch.split(loop, [None, width])[1])


def vectorize_deinterleaved(sch: s_tir.Schedule, pad: s_tir.schedule.SBlockRV,
                            width: int) -> None:
    """A padded copy that is not the plain pattern (columns deinterleaved by a stride, or an
    upsampled input): its rows and columns split where the bounds checks hold for every
    value, so the interior is a branch-free vector copy (a stride-2 column read becomes
    whole vectors and a permute, `strided_loads`), the border rows and columns bounds-checked
    as before (`vectorize_tail`). Where a check is not a plain interval of one row or column
    (an upsampled input's modulo), or the interior holds no whole vector (Winograd's
    4-phase copies of 17 columns), all of it is bounds-checked as before: splitting their
    rows alone made resnet50's 56x56 Winograd kernel 5% slower. Measured on Zen 5, one
    thread, kernel CPU time: resnet50's 3x3 stride-2 max pool on 64x112x112 alone 202 ->
    121 us (ORT 110), in the model 270-296 -> 159-167 (bit-identical logits)."""
    loops = sch.get_loops(pad)
    parts = _interior(sch, pad, loops)
    columns = parts and _column_pieces(parts[1][1], extent(sch, loops[-1]), width)
    if not columns:
        vectorize_tail(sch, loops[-1], width)  # no whole vector of columns inside
        return
    (row, rows), (col, _) = parts
    if rows is None or rows == (0, extent(sch, row)):
        _vector_pieces(sch, col, columns)
        return
    lo, hi = rows
    pieces = _partition(sch, row, [lo, hi - lo, extent(sch, row) - hi])
    middle = pieces[1 if lo else 0]
    for piece in pieces:  # each row piece has its own copy of the column loop
        inner = sch.get_loops(_leaf(sch, sch.get_child_blocks(piece)[0]))[-1]
        if piece is middle:
            _vector_pieces(sch, inner, columns)
        else:
            vectorize_tail(sch, inner, width)


def _leaf(sch: s_tir.Schedule, blk: s_tir.schedule.SBlockRV) -> s_tir.schedule.SBlockRV:
    """The innermost block under `blk` (a loop partition wraps its pieces in blocks)."""
    while True:
        children = sch.get_child_blocks(blk)
        if not children:
            return blk
        blk = children[0]


def _partition(sch: s_tir.Schedule, loop: Loop, sizes: list[int]) -> list[Loop]:
    """`loop` cut into consecutive pieces of `sizes` (empty ones left out; they sum to its
    extent, the last one inferred as loop_partition wants)."""
    sizes = [size for size in sizes if size]
    return sch.loop_partition(loop, sizes[:-1] + [None])


def _column_pieces(cols: tuple[int, int] | None, n: int,
                   width: int) -> list[tuple[int, bool]] | None:
    """The pieces (size, vectorised) a padded copy's column loop of `n` is cut into: the
    columns before the interior `cols` (scalar, or one short vector), the interior's whole
    vectors and one short vector, the columns after it; None where the interior holds no
    whole vector, more than INTERIOR_VECTORS of them, or is the whole row."""
    if cols is None or cols == (0, n):
        return None
    lo, hi = cols
    whole, rest = divmod(hi - lo, width)
    if not 0 < whole <= INTERIOR_VECTORS:
        return None
    sizes = [(lo, lo > 1)] + [(width, True)] * whole + [(rest, rest > 1), (n - hi, n - hi > 1)]
    return [(size, vector) for size, vector in sizes if size]


def _vector_pieces(sch: s_tir.Schedule, col: Loop, pieces: list[tuple[int, bool]]) -> None:
    """The column loop cut into `_column_pieces`, each its own loop (s_tir splits only
    loops that start at 0): the interior's vectors read without bounds checks."""
    for loop, (_, vector) in zip(_partition(sch, col, [size for size, _ in pieces]), pieces):
        if vector:
            sch.vectorize(loop)


def _interior(sch: s_tir.Schedule, pad: s_tir.schedule.SBlockRV, loops: list[Loop]):
    """((row loop, rows), (column loop, columns)): the ranges of the copy's last-but-two and
    last loops where every bounds check of the padded copy holds, whatever the others' values
    (None for a loop without checks); None where the copy's checks are not intervals of the
    row, the column and the stride's phase alone."""
    stmt = sch.get(pad)
    store = stmt.body
    value = getattr(store, "value", None)
    if not (isinstance(value, ir.Call) and getattr(value.op, "name", "").endswith(
            "if_then_else")) or len(loops) < 3 or len(stmt.iter_vars) < 3:
        return None
    ivs = list(stmt.iter_vars)
    if any(int(iv.dom.extent) != extent(sch, lp) for iv, lp in zip(ivs[-3:], loops[-3:])):
        return None
    deinterleaved = len(ivs) >= 5  # [.., row, phase, column]
    row_v, mid_v, col_v = (iv.var for iv in ivs[-3:])
    phases = {mid_v: int(ivs[-2].dom.extent)} if deinterleaved else {}
    if not deinterleaved:  # [.., channel?, row, column]: the middle var is not ours
        row_v = mid_v
    conds, rows, cols = _conjuncts(value.args[0]), [], []
    for c in conds:
        used = _vars(c)
        if col_v in used and used <= {col_v} | set(phases):
            cols.append(c)
        elif used == {row_v}:
            rows.append(c)
        elif used:
            return None
    row_loop = loops[-3] if deinterleaved else loops[-2]
    types = {iv.var: iv.dom.extent.ty.dtype for iv in ivs}
    return ((row_loop, _holds(rows, row_v, extent(sch, row_loop), {}, types)),
            (loops[-1], _holds(cols, col_v, extent(sch, loops[-1]), phases, types)))


def _conjuncts(e: tirx.Expr) -> list[tirx.Expr]:
    if isinstance(e, tirx.And):
        return _conjuncts(e.a) + _conjuncts(e.b)
    return [e]


def _vars(e: tirx.Expr) -> set:
    found = set()

    def seen(v: ir.expr.Var) -> ir.expr.Var:
        found.add(v)
        return v

    tvm_ffi.structural_map(e, [(ir.expr.Var, seen)])
    return found


def _substitute(e: tirx.Expr, values: dict) -> tirx.Expr:
    return tvm_ffi.structural_map(e, [(ir.expr.Var, lambda v: values.get(v, v))])


def _holds(conds: list[tirx.Expr], var: tirx.Var, n: int, others: dict,
           types: dict) -> tuple[int, int] | None:
    """The one interval of `var` in [0, n) where every condition holds for every value of
    the `others` (var -> extent); None where there are no conditions, the interval is
    empty or the values where they hold are not one interval."""
    if not conds:
        return None
    analyzer = sym.Analyzer()
    good = []
    for v in range(n):
        ok = True
        for combo in itertools.product(*(range(k) for k in others.values())):
            sub = {var: tirx.const(v, types[var])}
            sub.update({o: tirx.const(k, types[o]) for o, k in zip(others, combo)})
            for c in conds:
                r = analyzer.simplify(_substitute(c, sub))
                if not (isinstance(r, tirx.IntImm) and r.value):
                    ok = False
        good.append(ok)
    if not any(good):
        return None
    lo = good.index(True)
    hi = n - good[::-1].index(True)
    return (lo, hi) if all(good[lo:hi]) else None


def _schedule_pad(sch: s_tir.Schedule, width: int) -> None:
    """Split the pad block into a zero fill and a branch-free copy of the interior (which
    vectorises); both run over (n, c), in parallel when the input is large."""
    pad = block(sch, "pad")
    if pad is None:
        return
    loops = sch.get_loops(pad)
    elements = work(sch, loops)
    outer = sch.fuse(*loops[:2])
    maybe_parallel(sch, outer, elements, PARALLEL_PAD_ELEMENTS)
    try:
        fill = sch.decompose_padding(pad, sch.get_loops(pad)[1])
    except ScheduleError:  # not the plain padding pattern (upsampled or deinterleaved
        vectorize_deinterleaved(sch, pad, width)  # inputs): `vectorize_deinterleaved`
        return
    for blk in (fill, pad):
        vectorize_inner(sch, blk, width)


class RowReduction(KindRule):
    """Row reductions from `lower/rows.py` (softmax, layer norm, trailing Reduce*, global
    pools): all stages of a row computed together under one (parallel) row loop, partial
    reductions accumulated in a vector, elementwise stages vectorised."""

    kinds = ("reduce", "softmax", "layer_norm")

    def schedule(self, sch, func, target):
        if "etch.rows" not in func.attrs:
            return False
        rows = int(func.attrs["etch.rows"])
        width = int(func.attrs.get("etch.row_lanes", lanes(target)))  # `tiles.row_lanes`
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        total = max(work(sch, sch.get_loops(b)) for b in blocks)
        outer = None
        if rows:
            loops = sch.get_loops(blocks[-1])
            outer = sch.fuse(*loops[:rows]) if rows > 1 else loops[0]
            maybe_parallel(sch, outer, total, PARALLEL_MIN_ELEMENTS)
            for blk in reversed(blocks[:-1]):
                sch.compute_at(blk, outer)
        for blk in blocks:
            if sch.get(blk).name_hint.endswith("_part"):
                _vector_accumulate(sch, blk, 1 if rows else 0)
            elif all(iv.iter_type == tirx.IterVar.DataPar for iv in sch.get(blk).iter_vars):
                if "etch.row_tail" in func.attrs:  # the lowering built the tail stages
                    _vectorize_row(sch, blk, width, 1 if rows else 0)
                else:
                    vectorize_inner(sch, blk, width, 1 if rows else 0)
        return True


def _vectorize_row(sch: s_tir.Schedule, blk: s_tir.schedule.SBlockRV, width: int,
                   skip: int) -> None:
    """`vectorize_inner`, and for a one-dim row longer than a vector that no vector divides
    (softmax over 197 tokens), whole vectors followed by a scalar tail loop."""
    loops = sch.get_loops(blk)[skip:]
    n = extent(sch, loops[-1]) if loops else 0
    if len(loops) != 1 or n <= width or n % width == 0:
        vectorize_inner(sch, blk, width, skip)
        return
    body, _ = sch.loop_partition(loops[-1], [n - n % width, None])
    vectorize_loop(sch, body, width)


def _vector_accumulate(sch: s_tir.Schedule, blk: s_tir.schedule.SBlockRV, skip: int) -> None:
    """A `_part` block's loops are (lane, reduce...): reduce outside, lanes as the vector."""
    lane, *reduce = sch.get_loops(blk)[skip:]
    sch.reorder(*reduce, lane)
    sch.vectorize(lane)
    init = sch.decompose_reduction(blk, reduce[0])
    sch.vectorize(sch.get_loops(init)[-1])


class Pool(KindRule):
    """Max/average pooling: one task per output row (n, c, oh), the epilogue (the average's
    divide) inside it; window bounds checks keep the row loop scalar."""

    kinds = ("pool",)

    def schedule(self, sch, func, target):
        anchor = sch.get_sblock("anchor")
        loops = sch.get_loops(anchor)
        spatial = sum(iv.iter_type == tirx.IterVar.DataPar for iv in sch.get(anchor).iter_vars)
        total = work(sch, loops)
        outer = sch.fuse(*loops[:spatial - 1])
        maybe_parallel(sch, outer, total, PARALLEL_MIN_ELEMENTS)
        sch.reverse_compute_at(sch.get_sblock("epilogue"), outer)
        return True


class RowPool(KindRule):
    """A pool of windows inside the input (`lower/pool._row_pool`): one task per output row
    (n, c, oh), its "rows" stage (the window's rows reduced per input column), the anchor
    (each window's columns) and the epilogue computed in it, each with its columns as the
    vector: contiguous reads for "rows", strided ones for the anchor (an output row of at
    most one vector: `_row_pool`)."""

    kinds = ("row_pool",)

    def schedule(self, sch, func, target):
        width = lanes(target)
        rows, anchor = sch.get_sblock("rows"), sch.get_sblock("anchor")
        b, ch, i, j = sch.get_loops(anchor)
        # the values its "rows" stage reads, not its outputs: squeezenet1_1's 3x3 stride-2
        # pool of 256 x 27 x 27 (43k outputs, 270k values) ran on one thread, 30 us with
        # two, 16 in parallel; inception_v3's 768 x 17 x 17 72 -> 38 (Zen 4, kernel wall)
        total = max(work(sch, [b, ch, i, j]), work(sch, sch.get_loops(rows)))
        outer = sch.fuse(b, ch, i)
        maybe_parallel(sch, outer, total, PARALLEL_MIN_ELEMENTS)
        sch.compute_at(rows, outer)
        sch.reverse_compute_at(sch.get_sblock("epilogue"), outer)
        for blk in (rows, anchor, sch.get_sblock("epilogue")):
            _vector_row(sch, sch.get_loops(blk)[-1], width)
        return True


def _vector_row(sch: s_tir.Schedule, loop: Loop, width: int) -> None:
    """A row of up to one vector as one vector, a longer one as `vectorize_tail`'s."""
    if 1 < extent(sch, loop) <= width:
        sch.vectorize(loop)
    else:
        vectorize_tail(sch, loop, width)


class IfLarge(ScheduleRule):
    """`rule` only for kernels with enough work to run in parallel (dlight's CPU rules
    parallelise unconditionally); smaller ones fall through to the next rule."""

    def __init__(self, rule: ScheduleRule) -> None:
        self.rule = rule

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool = False):
        if not isinstance(func, tirx.PrimFunc):
            return None
        sch = s_tir.Schedule(func)
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        if max((work(sch, sch.get_loops(b)) for b in blocks), default=0) < PARALLEL_MIN_ELEMENTS:
            return None
        return self.rule.apply(func, target, tunable)


def contiguous_rows(sch: s_tir.Schedule, blk: s_tir.schedule.SBlockRV) -> int:
    """How many trailing loops of an unscheduled one-block kernel every buffer access takes
    in place: each access either indexes the last j dims of its buffer by those loops' own
    variables, in order and over the whole dims, or uses none of them (a broadcast). Fused,
    they are one contiguous run in every buffer (a transpose that keeps its last axes, a
    slice or concat along channels: the rows of 28 floats of a 28x28 plane become one row
    of 784)."""
    block = sch.get(blk)
    loops = sch.get_loops(blk)
    ivs = [iv.var for iv in block.iter_vars]
    if len(ivs) != len(loops) or any(iv.iter_type != tirx.IterVar.DataPar
                                     for iv in block.iter_vars):
        return 1
    accesses = [(region_buffer(r), [rg.min for rg in r.region], [rg.extent for rg in r.region])
                for r in list(block.reads) + list(block.writes)]

    def uses(expr, tail) -> bool:
        return any(v.same_as(t) for v in tirx.analysis.undefined_vars(expr, []) for t in tail)

    best = 1
    for j in range(2, len(ivs) + 1):
        tail = ivs[-j:]
        sizes = [int(block.iter_vars[len(ivs) - j + k].dom.extent) for k in range(j)]
        for buf, idx, ext in accesses:
            if not any(uses(i, tail) for i in idx):
                continue  # invariant over the run
            if len(idx) < j or any(uses(i, tail) for i in idx[:-j]) or \
                    any(not (isinstance(i, tirx.Var) and i.same_as(v))
                        for i, v in zip(idx[-j:], tail)) or \
                    [int(d) for d in buf.shape[-j:]] != sizes or \
                    any(int(e) != 1 for e in ext):
                return best
        best = j
    return best


class Injective(KindRule):
    """Elementwise and data-movement kernels: vectorise the innermost dim, parallel outer;
    a kernel with `etch.vector_tail` vectorises a row that vectors do not divide too, its
    last vector short (`vectorize_tail`). Where the innermost dim alone is no whole number
    of vectors and the trailing dims are one contiguous run in every buffer
    (`contiguous_rows`), they are fused and vectorised as one row, its tail short:
    shufflenet_v2's channel-shuffle transpose, slices and concats on 28x28 planes (rows of
    28 floats, scalar copies before): on Zen 5, one thread, batch 8, their kernel time 5.4
    -> 1.7 ms (the transposes 2.57 -> 0.78), the model 19.5-19.8 -> 15.7-15.9 ms (ORT
    18.0); batch 1 shufflenet_v2 2.31 -> 2.11 ms, inception_v3 49.3 -> 47.9, squeezenet1_1
    3.48 -> 3.38; every ImageNet zoo model bit-identical."""

    kinds = ("elementwise", "injective", "transpose")

    def schedule(self, sch, func, target):
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        if len(blocks) != 1:
            return False
        blk = blocks[0]
        loops = sch.get_loops(blk)
        if not loops:
            return True
        total = work(sch, loops)
        tail = int(func.attrs.get("etch.vector_tail", 0))  # the lowering asked for it
        rows = contiguous_rows(sch, blk)
        if rows > 1 and extent(sch, loops[-1]) % lanes(target):
            sch.fuse(*loops[-rows:])  # one run of contiguous rows: whole vectors, a tail
            tail = tail or extent(sch, sch.get_loops(blk)[-1]) % lanes(target)
        if not tail:
            vectorize_inner(sch, blk, lanes(target))
        loops = sch.get_loops(blk)
        if len(loops) > 1:
            outer = sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0]
            maybe_parallel(sch, outer, total, PARALLEL_MIN_ELEMENTS)
        if tail:  # last: the partition copies the block
            vectorize_tail(sch, sch.get_loops(blk)[-1], lanes(target))
        return True


class Fallback(KindRule):
    """Anything else: parallel over each block's leading spatial loops when it is large."""

    def schedule(self, sch, func, target):
        for blk in sch.get_child_blocks(sch.get_sblock("root")):
            loops = sch.get_loops(blk)
            kinds = [iv.iter_type for iv in sch.get(blk).iter_vars]
            if not loops or len(kinds) != len(loops):
                continue
            lead = 0
            while lead < len(loops) and kinds[lead] == tirx.IterVar.DataPar:
                lead += 1
            if lead:
                total = work(sch, loops)
                outer = sch.fuse(*loops[:lead]) if lead > 1 else loops[0]
                maybe_parallel(sch, outer, total)
        return True


def rules() -> list[ScheduleRule]:
    # int8 rules build on this module; lut_cpu has etch.LutGemm's table kernels
    from backends.tvm.schedules import (
        conv_gemm_cpu,
        depthwise_cpu,
        int_cpu,
        lut_cpu,
        matmul_cpu,
        winograd_cpu,
    )

    return [*lut_cpu.rules(), *int_cpu.rules(), *winograd_cpu.rules(), *conv_gemm_cpu.rules(),
            Dense(), Conv(),
            depthwise_cpu.FloatDepthwise(), DepthwiseConv(), *matmul_cpu.rules(),
            RowReduction(), RowPool(), Pool(), IfLarge(dlight.cpu.Reduction()), Injective(), Fallback()]
