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
  each chunk read by every channel block in turn; where the transformed input is large
  (`chunked`), parallel over chunks, each made by "wino_in" computed at the chunk loop;
- fused chunks, for small-channel layers whose transformed input is large (`_fused_rows`):
  one parallel loop over chunks of tile rows, each chunk's input transform, then per block of
  output channels its GEMMs, output transform and epilogue rows (`_fused_chunks`);
- "wino_out" and "epilogue": parallel over (image, channel) output planes, each plane's
  m x (m+2) values per tile (unrolled, tiles vector) computed next to its epilogue, whose
  output row is vectorised (`_output`).
The transforms and the epilogue run in parallel from PARALLEL_MIN_ELEMENTS values, not the
GEMMs' PARALLEL_MIN_WORK multiply-adds: each value costs several loads and adds, and below
the GEMMs' threshold they ran on one thread while the other waited (squeezenet1_1's 16->64
on 55x55: its transforms 113k and 200k values, its epilogue 194k; the layer took 362 us with
two threads against 395 with one, 294 after; whole models with two threads, etch-only A/B:
squeezenet1_1 4.33 -> 4.01 ms, inception_v3 52.7 -> 51.3, resnet50 37.0 -> 36.0).
"""

from __future__ import annotations

from tvm.s_tir import ScheduleError
from tvm.s_tir.dlight.base import ScheduleRule

from backends.tvm.schedules import tiles
from backends.tvm.schedules.cpu import (
    PARALLEL_MIN_ELEMENTS,
    KindRule,
    _leaf,
    _schedule_pad,
    _vector_row,
    extent,
    finish_tile,
    lanes,
    maybe_parallel,
    vectorize_loop,
    work,
)
from compiler import winograd


class WinogradConv(KindRule):
    """The five blocks of a Winograd kernel, each as the module docstring says."""

    kinds = ("winograd_conv2d",)

    def schedule(self, sch, func, target):
        kb, vw, width = int(func.attrs["etch.kb"]), int(func.attrs["etch.vw"]), lanes(target)
        image_cols = int(func.attrs.get("etch.image_cols", 0))
        m = int(func.attrs["etch.m"])
        rows = _fused_rows(sch, m) if not image_cols else None
        if rows is not None and _fuses(sch, kb, vw, m, rows, width):
            _fused_chunks(sch, kb, vw, m, rows, width)
            _schedule_pad(sch, width)
            return (f"F({m}, 3): {kb} channels x {vw} of a row's tiles, chunks of {rows} tile "
                    "rows each transformed, multiplied, transformed back and written in turn")
        chunk = _gemm(sch, kb, vw, width)
        if chunk is not None:  # each chunk of rows transformed next to its GEMM
            sch.compute_at(sch.get_sblock("wino_in"), chunk)
        _input_transform(sch, width, image_cols, inner=chunk is not None)
        _output(sch, width)
        _schedule_pad(sch, width)
        tiles_of = "an image's tiles" if image_cols else "a row's tiles"
        made = ", made and used in chunks of tile rows" if chunk is not None else ""
        return f"F({m}, 3): {kb} channels x {vw} of {tiles_of}{made}"


FUSED_CHUNK_BYTES = 256 << 10  # a fused chunk's transformed input at most (`_fused_rows`)
FUSED_MAX_CHANNELS = 64  # fused chunks only where the input or output channels are fewer
# (the layers `choose_conv_algorithm` gives Winograd for being chunked; measured there);
# wider layers (vgg16's 64->64 on 224x224) keep `_gemm`'s chunks


def chunked(vin_bytes: int, weight_bytes: int) -> bool:
    """Whether the GEMM runs chunk by chunk, each transformed next to it (`_gemm`)."""
    return vin_bytes > max(winograd.CHUNK_BYTES, 2 * weight_bytes)


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


def _gemm(sch, kb: int, vw: int, width: int):
    """Schedule the GEMM; the loop over chunks of rows when the transformed input is past
    CHUNK_BYTES and twice the transformed weight, else None: the chunks then run one after
    another (in parallel), each made by the input transform (computed at the chunk loop)
    and used by all (m+2)^2 GEMMs while in L2, at the cost of reading the weight once per
    chunk. Measured per call on the AVX-512 Xeon, one thread, chunked vs not (transformed
    input / weight in MB): 512->512 on 28x28 at batch 8 (59 / 17) 133 vs 164 ms, 256->256
    56x56 batch 8 (66 / 9.4) 106 vs 113, 128->128 56x56 batch 8 (33 / 2.4) 31 vs 36, 64->64
    224x224 batch 1 (33 / 0.6) 18.5 vs 19.8; even: 128->128 112x112 batch 1 (16.5 / 2.4);
    lost: 256->256 56x56 batch 1 (8.3 / 9.4) 10.8 vs 10.0, image tiles 512->512 on 14x14 at
    batch 8 (9.4 / 38) 38 vs 24."""
    anchor = sch.get_sblock("anchor")
    ev, k, q, j, rc = sch.get_loops(anchor)
    total = work(sch, [ev, k, q, j, rc])
    row_bytes = extent(sch, rc) * extent(sch, j) * 4
    by_chunk = chunked(row_bytes * extent(sch, q) * extent(sch, ev),
                       extent(sch, ev) * extent(sch, rc) * extent(sch, k) * 4)
    rows = _chunk_rows(extent(sch, q), row_bytes * (extent(sch, ev) if by_chunk else 1),
                       tiles.panel_bytes(width))
    ko, ki = sch.split(k, [None, kb])
    jo, ji = sch.split(j, [None, vw])
    qo, qi = sch.split(q, [None, rows])
    if by_chunk:
        sch.reorder(qo, ev, ko, qi, jo, rc, ki, ji)
        maybe_parallel(sch, qo, total)
    else:
        sch.reorder(ev, qo, ko, qi, jo, rc, ki, ji)
        maybe_parallel(sch, sch.fuse(ev, qo, ko), total)
    tile = sch.cache_write(anchor, 0, "global")
    sch.reverse_compute_at(tile, jo)
    finish_tile(sch, anchor, rc, ki, ji, epilogue_vec=False, width=width)
    vectorize_loop(sch, sch.get_loops(tile)[-1], width)
    return qo if by_chunk else None


def _fused_rows(sch, m: int) -> int | None:
    """Tile rows per chunk of a fully fused kernel (`_fused_chunks`), or None: where the
    transformed input is large (`chunked`: streaming it and the GEMM's output through
    memory costs more than the multiplies saved), the most rows of one image whose
    transformed input fits FUSED_CHUNK_BYTES."""
    anchor = sch.get_sblock("anchor")
    ev, k, q, j, rc = sch.get_loops(anchor)
    c, oc, a2, tiles_ = extent(sch, rc), extent(sch, k), extent(sch, ev), extent(sch, j)
    row_bytes = c * tiles_ * a2 * 4
    if min(c, oc) >= FUSED_MAX_CHANNELS or \
            not chunked(row_bytes * extent(sch, q), a2 * c * oc * 4):
        return None
    th = -(-extent(sch, sch.get_loops(sch.get_sblock("epilogue"))[2]) // m)
    return _chunk_rows(th, row_bytes, FUSED_CHUNK_BYTES)


def _fused_chunks(sch, kb: int, vw: int, m: int, rows: int, width: int) -> None:
    """The whole kernel chunk by chunk of `rows` tile rows of one image (in parallel): the
    chunk's input transform, then per block of kb output channels its (m+2)^2 GEMMs, output
    transform and epilogue rows, so the transformed input, the GEMMs' output and the
    transformed output stay in L2 (the layer otherwise streams all three through memory:
    inception_v3's 32->64 on 147x147, 8 MB of transformed input and 16 MB of GEMM output,
    ran 4.1-4.5 ms one thread on Zen 5 against 3.3 by the direct channel kernel). Measured
    on Zen 5, one thread, kernel CPU time: that layer alone 3.48-3.71 ms direct -> 2.43-3.04
    fused; in the model 3.57 -> 2.71 (ORT 2.9), logits within 6e-8. Every stage is computed
    at the epilogue's loops, which give it the region it needs: the GEMM's tiles are then the
    row's real tiles, not the vector-padded ones, so its tile loop is split into whole
    register tiles and a tail (a predicated tile would not vectorise), each accumulated in
    place (a cache_write tile does not narrow under the split's blocks)."""
    epi = sch.get_sblock("epilogue")
    n, k, h, x = sch.get_loops(epi)
    total = work(sch, [n, k, h, x])
    ho, hi = sch.split(h, [None, rows * m])
    ko, ki = sch.split(k, [None, kb])
    sch.reorder(n, ho, ko, ki, hi, x)
    chunk = sch.fuse(n, ho)
    maybe_parallel(sch, chunk, total)
    out, anchor = sch.get_sblock("wino_out"), sch.get_sblock("anchor")
    sch.compute_at(out, ko)
    sch.compute_at(anchor, ko)
    sch.compute_at(sch.get_sblock("wino_in"), chunk)
    *_, a, v, jj = sch.get_loops(out)
    sch.unroll(a)
    sch.unroll(v)
    _vector_row(sch, jj, width)
    _fused_gemm(sch, anchor, ko, vw, width)
    inner = _under(sch, sch.get_sblock("wino_in"), chunk)  # (ev, c, [q], j)
    ev, c, q, j = inner if len(inner) == 4 else (inner[0], inner[1], None, inner[2])
    sch.reorder(*[x_ for x_ in (c, q, ev, j) if x_ is not None])
    sch.unroll(ev)
    _vector_row(sch, j, width)
    _vector_row(sch, x, width)


def _fuses(sch, kb: int, vw: int, m: int, rows: int, width: int) -> bool:
    """Whether `_fused_chunks` schedules this kernel (tried on a copy first): a rule that
    raises hands its kernel to a generic schedule ~1000x slower, and the primitives refuse
    some loop structures under a partition (a first version vectorised the GEMM's tiles
    after splitting off their init, refused for every row cut into pieces); a kernel they
    refuse takes the chunked schedule (`_gemm`) instead."""
    try:
        trial = sch.copy()
        _fused_chunks(trial, kb, vw, m, rows, width)
        _schedule_pad(trial, width)
    except ScheduleError:
        return False
    return True


def _under(sch, blk, loop) -> list:
    """The loops of `blk` inside `loop`."""
    loops = sch.get_loops(blk)
    at = [sch.get(x).same_as(sch.get(loop)) for x in loops].index(True)
    return loops[at + 1:]


def _fused_gemm(sch, anchor, ko, vw: int, width: int) -> None:
    """The GEMM of one channel block of a fused chunk (`_fused_chunks`): loops (ev, k, [q],
    j, rc) under `ko` as (ev, [q], j, rc, k), j cut into whole vectors and a short tail,
    the whole ones in register tiles of vw (or one vector), each (tile, rc, k unrolled, the
    tile's lanes vectorised) with its init split off."""
    inner = _under(sch, anchor, ko)
    ev, k, q, j, rc = inner if len(inner) == 5 else (inner[0], inner[1], None, *inner[2:])
    sch.reorder(*[x for x in (ev, q, j, rc, k) if x is not None])
    tiles_ = extent(sch, j)
    pieces = sch.loop_partition(j, [tiles_ - tiles_ % width, None]) \
        if tiles_ % width and tiles_ > width else [j]
    for piece in pieces:
        leaf = _leaf(sch, sch.get_child_blocks(piece)[0])
        lj, lrc, lk = sch.get_loops(leaf)[-3:]
        n = extent(sch, lj)
        tile = vw if n % vw == 0 else width if n % width == 0 else n  # n < width: one short
        if tile < n:  # (a tail piece does not start at 0: it is one tile, never split)
            jo, lj = sch.split(lj, [None, tile])
            sch.reorder(jo, lrc, lk, lj)
        else:
            sch.reorder(lrc, lk, lj)
        finish_tile(sch, leaf, lrc, lk, lj, epilogue_vec=False, width=width)


def _input_transform(sch, width: int, image_cols: int = 0, inner: bool = False) -> None:
    """The "wino_in" block: its loops (ev, c, q, j) reordered to (c, q, ev, j), or with image
    tiles (c, q, tile row, ev, tile column); (c, q) fused (and run in parallel when large,
    unless `inner`: under the GEMM's loop over chunks), ev unrolled, the tiles loop
    (innermost) vectorised."""
    blk = sch.get_sblock("wino_in")
    loops = sch.get_loops(blk)[1 if inner else 0:]
    if len(loops) == 3:  # a chunk of one row: compute_at left no loop over q
        loops = [loops[0], loops[1], None, loops[2]]
    total = 0 if inner else work(sch, loops)
    if image_cols:
        row, col = sch.split(loops[3], [None, image_cols])
        sch.reorder(*[x for x in (loops[1], loops[2], row, loops[0], col) if x is not None])
        maybe_parallel(sch, _fuse(sch, loops[1:3]), total, PARALLEL_MIN_ELEMENTS)
        sch.unroll(loops[0])
        _vector_row(sch, col, width)  # whole vectors and a short one (18 tiles: 16 + 2)
        return
    sch.reorder(*[x for x in (loops[1], loops[2], loops[0], loops[3]) if x is not None])
    maybe_parallel(sch, _fuse(sch, loops[1:3]), total, PARALLEL_MIN_ELEMENTS)
    sch.unroll(loops[0])
    vectorize_loop(sch, sch.get_loops(blk)[-1], width)


def _output(sch, width: int) -> None:
    """The "epilogue" block over (image, channel) planes, in parallel when large; each
    plane's "wino_out" (loops (k, q, a, v, j)) computed inside it, a and v unrolled, the
    tiles vectorised; the output row vectorised: whole vectors and a short one, or one
    short vector where the row is shorter than a vector (13x13 image tiles). Measured on
    Zen 5, one thread, kernels alone in turns, against the m x m output transform over all
    planes before the epilogue (which read each output from its tile by a gather):
    squeezenet1_1's 16->64 on 55x55 168-218 -> 149-153 us, 64->256 on 13x13 (image tiles)
    170-177 -> 150-151 us; in the model (profile, one thread) its Winograd layers 1.0-1.5x,
    resnet50's 1.0-1.17x; whole models in alternating rounds, best of 5: squeezenet1_1
    3.02 -> 2.76 ms, inception_v3 44.6 -> 42.5, resnet50 and densenet121 even within the
    VM's noise."""
    epi = sch.get_sblock("epilogue")
    loops = sch.get_loops(epi)
    total = work(sch, loops)
    plane = sch.fuse(*loops[:2])
    maybe_parallel(sch, plane, total, PARALLEL_MIN_ELEMENTS)
    out = sch.get_sblock("wino_out")
    sch.compute_at(out, plane)  # before the row's partition hides the epilogue's reads
    *_, a, v, j = sch.get_loops(out)
    sch.unroll(a)
    sch.unroll(v)
    vectorize_loop(sch, j, width)
    _vector_row(sch, loops[-1], width)


def _fuse(sch, loops):
    """The loops (None: absent) fused into one."""
    present = [x for x in loops if x is not None]
    return sch.fuse(*present) if len(present) > 1 else present[0]


def rules() -> list[ScheduleRule]:
    return [WinogradConv()]
