"""CPU schedule of the Winograd convolution (`lower/winograd.py`, kind "winograd_conv2d").

- "pad": zero fill and interior copy, as the direct convolution's (`cpu._schedule_pad`);
- "wino_in": parallel over (channel, tile row), the (m+2)^2 transform outputs unrolled (so
  the matrix entries are constants and the zero terms vanish), tiles as the vector; with
  image tiles (`etch.image_cols` > 0) parallel over (channel, image), a loop over tile rows
  and a row's tiles as the vector;
- "anchor": the direct convolution's register tile (kb channels x vw tiles, reduction over
  input channels outside it), accumulated in a tile-sized buffer (`cache_write`, computed at
  the tile loop) so the partial sums stay in registers; parallel over (ev, row chunk, kb
  block): the rows of tiles in chunks whose transformed input stays in L2 (`_chunk_rows`),
  each chunk read by every channel block in turn;
- "wino_out": parallel over (channel, tile row), the m x m outputs unrolled, tiles vector;
- "epilogue": parallel over (image, channel).
"""

from __future__ import annotations

from tvm.s_tir.dlight.base import ScheduleRule

from backends.tvm.schedules import tiles
from backends.tvm.schedules.cpu import (
    KindRule,
    _schedule_pad,
    extent,
    finish_tile,
    lanes,
    maybe_parallel,
    vectorize_loop,
    work,
)


class WinogradConv(KindRule):
    """The five blocks of a Winograd kernel, each as the module docstring says."""

    kinds = ("winograd_conv2d",)

    def schedule(self, sch, func, target):
        kb, vw, width = int(func.attrs["etch.kb"]), int(func.attrs["etch.vw"]), lanes(target)
        _gemm(sch, kb, vw, width)
        _transform(sch, "wino_in", width, int(func.attrs.get("etch.image_cols", 0)))
        _transform(sch, "wino_out", width)
        epi = sch.get_sblock("epilogue")
        loops = sch.get_loops(epi)
        total = work(sch, loops)
        maybe_parallel(sch, sch.fuse(*loops[:2]), total)
        _schedule_pad(sch, width)
        return True


def _chunk_rows(rows: int, row_bytes: int, budget: int) -> int:
    """Rows of tiles per chunk of the GEMM: the most that divide `rows` and whose transformed
    input (`row_bytes` each: input channels x tiles of a row) fits `budget`, at least one.
    Every output-channel block reads the whole chunk, so a chunk past L2 is streamed from
    memory once per block: vgg16 at batch 8 on the AVX-512 Xeon (28x28 512->512, F(2, 3):
    all 112 rows, 3.7 MB per transformed position) took 307 ms a call, 19x its batch-1 time."""
    chunk = max(1, min(rows, budget // max(1, row_bytes)))
    while rows % chunk:
        chunk -= 1
    return chunk


def _gemm(sch, kb: int, vw: int, width: int) -> None:
    anchor = sch.get_sblock("anchor")
    ev, k, q, j, rc = sch.get_loops(anchor)
    total = work(sch, [ev, k, q, j, rc])
    rows = _chunk_rows(extent(sch, q), extent(sch, rc) * extent(sch, j) * 4,
                       tiles.panel_bytes(width))
    ko, ki = sch.split(k, [None, kb])
    jo, ji = sch.split(j, [None, vw])
    qo, qi = sch.split(q, [None, rows])
    sch.reorder(ev, qo, ko, qi, jo, rc, ki, ji)
    outer = sch.fuse(ev, qo, ko)
    maybe_parallel(sch, outer, total)
    tile = sch.cache_write(anchor, 0, "global")
    sch.reverse_compute_at(tile, jo)
    finish_tile(sch, anchor, rc, ki, ji, epilogue_vec=False, width=width)
    vectorize_loop(sch, sch.get_loops(tile)[-1], width)


def _transform(sch, name: str, width: int, image_cols: int = 0) -> None:
    """A transform block: its two parallel loops fused (and run in parallel when large),
    the matrix-index loops unrolled, the tiles loop (innermost) vectorised.
    "wino_in" loops are (ev, c, q, j): reordered to (c, q, ev, j), or with image tiles
    (c, q, tile row, ev, tile column); "wino_out" loops are (k, q, a, b, j)."""
    blk = sch.get_sblock(name)
    loops = sch.get_loops(blk)
    total = work(sch, loops)
    if name == "wino_in" and image_cols:
        row, col = sch.split(loops[3], [None, image_cols])
        sch.reorder(loops[1], loops[2], row, loops[0], col)
        maybe_parallel(sch, sch.fuse(loops[1], loops[2]), total)
        sch.unroll(loops[0])
        sch.vectorize(col)
        return
    if name == "wino_in":
        sch.reorder(loops[1], loops[2], loops[0], loops[3])
        outer, unrolled = loops[1:3], loops[:1]
    else:
        outer, unrolled = loops[:2], loops[2:4]
    maybe_parallel(sch, sch.fuse(*outer), total)
    for loop in unrolled:
        sch.unroll(loop)
    vectorize_loop(sch, sch.get_loops(blk)[-1], width)


def rules() -> list[ScheduleRule]:
    return [WinogradConv()]
