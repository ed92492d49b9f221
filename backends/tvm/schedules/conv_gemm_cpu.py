"""CPU schedule of the GEMM convolution (`lower/conv_gemm.py`, kind "conv_gemm").

The anchor is [N, OCp, Pp] over the reduction R = C*KH*KW. Loops, outermost first: (image,
chunk of `etch.chunk` column blocks), where the chunk's "panel" [chunk, R, vw] is packed
(sized by the lowering to stay in L2); the output-channel blocks, in parallel when the
kernel pays for it; the chunk's column blocks, so each weight block [R, ocb] is read from
memory once per chunk and then from cache (a 7x7 layer has one chunk: its weights, the
largest operand, are streamed once; with few channel blocks and a small weight the column
blocks come first, both loops one parallel loop: `columns_first`); the reduction; the
ocb x vw register tile (channels unrolled, columns vectorised) with the epilogue computed
right after it, while it is hot; where the image's positions are not whole blocks (55x55,
13x13), the epilogue runs once per channel block over all of them instead, vectorised
(`cpu.row_epilogue`). Kernels built for two threads or more (the target's "num-cores")
order three cases otherwise: over PARALLEL_IMAGES images or more (or a multiple of the
threads, with more positions than channels) the images are the parallel loop, each packing
its own panel; with WIDE_COLUMNS times as many positions as
channels the column blocks come first and are the parallel loop alone, split as the
panel's copy is, so each thread reads the blocks it packed (where the reduction is at
least the output channels: the panel the larger operand); any other whose positions are
whole blocks runs a contiguous run of each chunk's column blocks a thread, packing its own
panel and running every channel block over it (`column_groups`).
"""

from __future__ import annotations

from tvm.s_tir.dlight.base import ScheduleRule

from backends.tvm import prefetch
from backends.tvm.schedules import tiles
from backends.tvm.schedules.cpu import (
    PARALLEL_MIN_WORK,
    PARALLEL_PAD_ELEMENTS,
    KindRule,
    _schedule_pad,
    _vector_row,
    block,
    extent,
    finish_tile,
    lanes,
    maybe_parallel,
    region_buffer,
    row_epilogue,
    vectorize_loop,
    vectorize_tail,
    work,
)

# A GEMM with at most FEW_CHANNEL_BLOCKS output-channel blocks and a weight of at most
# SMALL_WEIGHT_BYTES runs its column blocks outside its channel blocks, both under one
# parallel loop (`columns_first`): with the channel blocks as the parallel loop, each of two
# threads read the whole packed panel, half of it from the other core's L2, and three
# blocks split 2:1. Measured on the Intel Xeon, two threads, wall time, whole-model A/B
# without ORT in the process: mobilenet_v2's 32->16 / 96->24 / 144->24 1x1 layers 195 /
# 178 / 276 us with one thread, 253 / 251 / 371 with two before, 196 / 183 / 302 after;
# mobilenet_v2 5.14 -> 4.88 ms, efficientnet_b0 8.50 -> 8.38, one thread unchanged (+-1%).
# Not for many channel blocks: 16->96 on 112x112 went 250 -> 343 us (each column block
# then writes 96 output planes).
SMALL_WEIGHT_BYTES = 256 << 10
FEW_CHANNEL_BLOCKS = 4
# Built for two threads or more, a GEMM with WIDE_COLUMNS times as many positions as output
# channels and a reduction of WIDE_MIN_REDUCTION or more runs its column blocks in parallel
# (`wide`): the packed panel is the larger operand, and each thread then reads the blocks it
# packed (split by channel blocks, each thread read the whole panel, half of it packed in
# the other core's cache). squeezenet1_1 with two threads (kernel wall us, channel-parallel
# -> column-parallel): 256->32 on 27x27 120 -> 90, 128->32 64 -> 52, 512->64 on 13x13 86 ->
# 73, 384->64 66 -> 55, 384->48 58 -> 49; one thread they were 5-8% slower (each column
# block reads every weight block), so one-thread builds keep the channel-parallel order;
# 16->64 on 55x55 (a reduction of 16) lost 136 -> 175. Nor where the output channels
# outnumber the reduction: each thread then writes a few positions of every output row
# (and reads the residual so), and the panel it would otherwise read whole is the smaller
# operand. resnet50's 64->256 on 56x56 (with the residual), kernel wall us with two
# threads, column-parallel -> channel-parallel: 922 -> 439, 684 -> 383 without the
# residual; whole models, two threads, A/B: resnet50 32.0 -> 30.7 ms, inception_v3
# (64->80 on 73x73) 47.0 -> 46.5, densenet121 (64->128, 96->128 on 56x56) even.
WIDE_COLUMNS = 2
WIDE_MIN_REDUCTION = 64  # (a chunk split unevenly: with its channel blocks, `_uneven`)
# Built for two threads or more, a GEMM that would split its channel blocks between the
# threads (neither `columns_first` nor `wide`) runs a contiguous run of each chunk's column
# blocks a thread instead, every channel block on it (`column_groups`): each thread packs
# the panel of its own columns (one parallel loop, not the copy's and then the channels')
# and reads only that half, a weight block staying in L1 over its run, and writes runs of
# whole output rows. Only where the positions are whole blocks and the chunk splits evenly.
# Measured on Zen 4, two threads, kernel wall time (time_evaluator, the two builds timed in
# turns), channel blocks -> column runs: mobilenet_v2's 16->96 on 112x112 262 -> 213 us,
# 24->144 on 56x56 135 -> 115; resnet50's 64->256 on 56x56 5% faster; densenet121's
# 64->128 on 56x56 (its input through the BN-ReLU prologue) 421 -> 290. Whole models at
# batch 1, two threads (separate processes in turns, best of four; this VM's noise ~3%):
# mobilenet_v2 3.91 -> 3.86 ms, densenet121 27.8 -> 27.5, resnet50 36.1 -> 35.9.
# Built for two threads or more, a GEMM over this many images or more (in one chunk each)
# runs the images in parallel, each thread packing its images' panels and running every
# channel block on them (`ConvGemm`); so does one over a multiple of the threads' count of
# images with more positions than output channels (the groups of images that split_batch
# runs, one image a thread: the image, not the weight, is the larger operand there).
PARALLEL_IMAGES = 4
# A channel-vector GEMM with fewer image and channel blocks than this runs groups of its
# position blocks in parallel too (`position_groups`).
FEW_PARALLEL_BLOCKS = 4
# A channel-vector direct convolution whose channel block's accumulators over the image
# exceed this many bytes (past L2's share) runs its output rows outside its input-channel
# chunks, each row's epilogue right after it, the chunks of up to 64 channels
# (`ConvChannelsDirect`): in the chunks-first order every chunk of 4 channels read and
# wrote the whole image's accumulators (2.7 MiB a block for 147x147 x 32 channels).
# inception_v3's 3x3 layers on 147x147, one thread, kernel us in the model, `direct`
# (positions as the vector) -> rows first: 32->64 7039 -> 5266, 32->32 3881 -> 2716;
# inception_v3 86.7 -> 82.5 ms with one thread, 47.3 -> 45.8 with two (A/B).
ROWS_FIRST_BYTES = 256 << 10


class ConvGemm(KindRule):
    """The panel, register tile and epilogue of a GEMM convolution (module docstring)."""

    kinds = ("conv_gemm",)

    def schedule(self, sch, func, target):
        ocb, vw, width = int(func.attrs["etch.ocb"]), int(func.attrs["etch.vw"]), lanes(target)
        chunk = int(func.attrs["etch.chunk"])
        anchor = sch.get_sblock("anchor")
        n, o, p, rk = sch.get_loops(anchor)
        total = work(sch, [n, o, p, rk])
        epilogue = sch.get_sblock("epilogue")
        *_, e_o, e_p = sch.get_loops(epilogue)
        cols = extent(sch, e_p)
        whole = cols % vw == 0 and extent(sch, e_o) % ocb == 0
        # positions that are not whole blocks: the epilogue over whole rows of positions,
        # vectorised but for a short tail (`row_epilogue`): after all of a channel block's
        # column blocks where they are one chunk, else after the image's last chunk
        ragged = cols % vw != 0
        one_chunk = extent(sch, p) == chunk * vw
        small = extent(sch, o) * extent(sch, rk) * 4 <= SMALL_WEIGHT_BYTES
        few = extent(sch, o) <= FEW_CHANNEL_BLOCKS * ocb
        columns_first = small and few and not (ragged and one_chunk)
        cores = _cores(target)
        images = cores > 1 and one_chunk and (extent(sch, n) >= PARALLEL_IMAGES or (
            extent(sch, n) % cores == 0 and cols >= extent(sch, o)))
        reduce = extent(sch, rk)
        wide = not images and cores > 1 and chunk >= 2 and reduce >= WIDE_MIN_REDUCTION \
            and reduce >= extent(sch, o) and cols >= WIDE_COLUMNS * extent(sch, o)
        oo, oi = sch.split(o, [None, ocb])
        po, pi = sch.split(p, [None, vw])
        pc, pb = sch.split(po, [None, chunk])
        columns = not images and (columns_first or wide)
        groups = not images and not columns and column_groups(cores, chunk, ragged, total)
        if groups:  # a contiguous run of the chunk's column blocks a thread
            pg, pb = sch.split(pb, [cores, None])
            sch.reorder(n, pc, pg, oo, pb, rk, oi, pi)
        else:
            sch.reorder(n, pc, *((pb, oo) if columns else (oo, pb)), rk, oi, pi)
        panel = sch.get_sblock("panel")
        direct = bool(int(func.attrs.get("etch.direct", 0)))
        if direct:  # the GEMM reads the input in place (`conv_gemm.in_place`)
            sch.compute_inline(panel)

        def rows(at, parallel: bool = False) -> bool:
            """`row_epilogue` at `at` (each schedule below calls this once at most); in
            place with a shifted last block, the epilogue reads two places per position
            (`conv_gemm.conv_gemm`'s `result`), which no compute-at solves: a loop of its
            own after the GEMM instead."""
            if not (direct and ragged):
                return row_epilogue(sch, at, width, parallel=parallel)
            _root_epilogue(sch, epilogue, width, cores > 1)
            return True
        outer = 1  # loops above the panel's own
        if groups:  # each thread packs its own columns' panel, then runs every channel block
            sch.parallel(pg)
            if not direct:
                sch.compute_at(panel, pg)
            outer = 3
            parallel = "column runs"
            sch.reverse_compute_at(epilogue, pb)
        elif images:  # images in parallel, each packing its own panel and running every block
            loop = sch.fuse(n, pc)
            if not direct:
                sch.compute_at(panel, loop)
            parallel = maybe_parallel(sch, loop, total) and "images"
            if not ragged or not rows(oo):
                sch.reverse_compute_at(epilogue, pb)
        else:
            if ragged and (wide or not one_chunk) and rows(n, parallel=True):
                if not direct:
                    sch.compute_at(panel, pc)
                outer = 2
            elif not direct:
                sch.compute_at(panel, sch.fuse(n, pc))
            else:
                sch.fuse(n, pc)
            if wide and not _uneven(chunk, cores):
                parallel = maybe_parallel(sch, pb, total) and "column blocks"
                if not ragged:
                    sch.reverse_compute_at(epilogue, pb)
            elif wide or columns_first:  # (a wide chunk split unevenly: with its channels)
                blocks = sch.fuse(pb, oo)
                parallel = maybe_parallel(sch, blocks, total) and "column x channel blocks"
                if not ragged:
                    sch.reverse_compute_at(epilogue, blocks)
            else:
                parallel = maybe_parallel(sch, oo, total) and "channel blocks"
                if not ragged or (one_chunk and not rows(oo)):
                    sch.reverse_compute_at(epilogue, pb)
        ahead = not columns and _prefetch_weights(  # the column blocks share each weight block
            sch, pb, _packed_weight(sch, anchor, extent(sch, oo), extent(sch, rk), ocb),
            extent(sch, rk))
        finish_tile(sch, anchor, rk, oi, pi, whole, width)
        pointwise = bool(int(func.attrs.get("etch.pointwise", 0)))
        full = cols // vw if ragged and one_chunk and pointwise else 0
        # under the images' or the column runs' parallel loop, the panel's own loop stays
        # serial; before a channel-parallel loop every thread reads all of it: packed in
        # parallel however small (`_schedule_panel`)
        if not direct:
            _schedule_panel(sch, panel, outer, full, min(width, vw),
                            parallel=not (images or groups),
                            eager=cores > 1 and parallel == "channel blocks")
        _schedule_pad(sch, width)
        return (f"{ocb} channels x {vw} positions, "
                + ("the input read in place, " if direct else "panels of ")
                + f"{chunk} column blocks{' a chunk' if direct else ''}, "
                f"{_parallel(parallel, cores)}"
                + (", each with every channel block" if groups else "")
                + (", the next weight block prefetched" if ahead else ""))


def _root_epilogue(sch, epilogue, width: int, parallel: bool) -> None:
    """The epilogue as a loop nest of its own after the GEMM: (image, channel) in parallel
    where large (`parallel`: built for two threads or more), each row of positions
    vectorised with a short tail."""
    *lead, row = sch.get_loops(epilogue)
    rows = sch.fuse(*lead)
    if parallel:
        maybe_parallel(sch, rows, work(sch, [rows, row]), PARALLEL_PAD_ELEMENTS)
    _vector_row(sch, row, width)


def _uneven(blocks: int, cores: int) -> bool:
    """Whether a chunk's `blocks` column blocks split unevenly between `cores` threads (5
    blocks on two threads: 3 and 2, one thread idle a sixth of the time). A `wide` GEMM
    then runs the chunk's column blocks and channel blocks under one parallel loop, as
    `columns_first` does, each thread half of the (column, channel) block pairs: resnet50's
    512->128 and 512->256 1x1 on 28x28 (25 blocks in chunks of 5) ran 1.59x and 1.66x
    faster with two threads than with one, against 1.93-2.01x for its other GEMMs.
    Measured on Zen 5, two threads, kernel wall time in the model (profile, alternating
    runs): those two 832-888 -> 732-735 and 544-575 -> 482-528 us; in all, inception_v3's 9
    such kernels (chunks of 13 and 39) 1245-1266 -> 1154-1175 us, densenet121's 17 (13-49)
    3455-3520 -> 3300-3325, mobilenet_v2's 4 175-222 -> 166-265 and efficientnet_b0's 4
    166-249 -> 164-247 (noisy), squeezenet1_1's 2 (one chunk of 23) 99-115 -> 99-110."""
    return blocks % cores != 0


def column_groups(cores: int, chunk: int, ragged: bool, work_: int) -> bool:
    """Whether a GEMM built for `cores` threads that would split its channel blocks runs a
    contiguous run of each chunk's column blocks a thread instead, every channel block on
    it (the comment above PARALLEL_IMAGES): where the positions are whole blocks, the chunk
    splits evenly and the kernel pays for a parallel loop."""
    return cores > 1 and not ragged and chunk % cores == 0 and work_ >= PARALLEL_MIN_WORK


def _parallel(loop: str | bool, cores: int) -> str:
    """The note's part on the parallel loop (`KindRule.note`)."""
    built = f"built for {cores} thread{'s' if cores > 1 else ''}"
    return f"{loop} in parallel ({built})" if loop else f"one thread ({built})"


def _cores(target) -> int:
    """The threads the kernels are built for (the target's "num-cores": `--threads`)."""
    return int(target.attrs.get("num-cores", 1) or 1)


def _schedule_panel(sch, panel, outer: int, full: int, width: int,
                    parallel: bool = True, eager: bool = False) -> None:
    """The panel copy: its block loop in parallel where it pays, its vector loop
    vectorised. A pointwise panel whose last block is partial tests each lane of that block
    against the last position, and TIR's vectoriser leaves a loop with such a test scalar
    (each block's, as the test is in the loop body): with one chunk (`full` whole blocks,
    then the partial one) the whole blocks are a loop of their own, where the test is known
    to pass. `eager`: in parallel however small it is (a kernel built for two threads or
    more whose channel blocks are its parallel loop). A small panel packed on one thread
    (under PARALLEL_PAD_ELEMENTS) left the other idle and cold before the channel loop:
    measured on Zen 4, two threads, kernel wall time (time_evaluator, both builds in one
    process, in turns), serial -> parallel: squeezenet1_1's 16->64 1x1 on 55x55 59 -> 51
    us, 32->128 on 27x27 42 -> 38; densenet121's 1x1 layers whose panels apply the BN-ReLU
    prologue, 512-928 -> 128 on 7x7 20-33% faster (141-161 -> 108-117 us), on 14x14 7-11%,
    the model at batch 1 27.4 -> 27.1 ms (separate processes in turns); where the
    column blocks are (part of) the parallel loop, a second parallel loop lost (mobilenet_v2's
    32->16 on 112x112, `columns_first`, 86 -> 97 us), and tiny kernels with a serial main
    loop keep the threshold (efficientnet_b0's squeeze-and-excitation layers lost 2x)."""
    loops = sch.get_loops(panel)[outer:]
    amount = work(sch, loops)
    blocks = loops[0]
    if 0 < full < extent(sch, blocks):
        blocks = sch.loop_partition(blocks, [full, None])[0]  # the tail stays as it was
        [panel] = sch.get_child_blocks(blocks)
    vectorize_loop(sch, sch.get_loops(panel)[-1], width)
    if parallel:  # not under a parallel loop already
        maybe_parallel(sch, blocks, amount, 1 if eager else PARALLEL_PAD_ELEMENTS)


class ConvChannels(KindRule):
    """The pointwise GEMM with output channels as the vector (`lower/conv_gemm.conv_channels`):
    loops (image and channel block, in parallel when it pays, with groups of the position
    blocks where the channel blocks are few: `position_groups`; reduction chunk; position
    block; the chunk's steps; the pr x ocv register tile, positions unrolled, channels
    vectorised; where pr does not divide the positions, the whole position blocks are a loop
    of their own, without the test of each position against the last that the partial
    block needs), then the epilogue over the channel block (a transposing copy of its P x ocv
    accumulators, in L1 or L2). The reduction is cut into chunks of `tiles.channel_chunk`
    steps, each run over every position block before the next, so the weight block's chunk
    (64 steps x 32 channels: 8 KiB) stays in L1 while the position blocks stream past it;
    without chunks each position block re-read the whole [C, ocv] weight block (64 KiB at
    C = 512) from L2. Measured single-threaded on the AVX-512 Xeon (CPU time, ONNX Runtime
    beside it, etch/ORT): 512->2048 on 7x7 1.14 unchunked, 1.06-1.08 in chunks of 64 or
    32, 1.12 in chunks of 256."""

    kinds = ("conv_channels",)

    def schedule(self, sch, func, target):
        ocv, pr, width = int(func.attrs["etch.ocv"]), int(func.attrs["etch.pr"]), lanes(target)
        anchor = sch.get_sblock("anchor")
        n, p, o, rk, *taps = sch.get_loops(anchor)  # taps: a KH x 1 kernel's rows
        total = work(sch, [n, p, o, rk, *taps])
        cols, reduce = extent(sch, p), extent(sch, rk)
        po, pi = sch.split(p, [None, pr])
        oo, oi = sch.split(o, [None, ocv])
        blocks = extent(sch, oo)
        chunk = tiles.channel_chunk(reduce, work(sch, taps))
        rko, rki = sch.split(rk, [None, chunk])
        groups = position_groups(extent(sch, n) * blocks, cols, pr, _cores(target))
        if groups > 1:  # few channel blocks: the positions' blocks in groups, in parallel
            pg, po = sch.split(po, [groups, None])
            sch.reorder(n, oo, pg, rko, po, rki, *taps, pi, oi)
            outer = sch.fuse(n, oo, pg)
        else:
            sch.reorder(n, oo, rko, po, rki, *taps, pi, oi)
            outer = sch.fuse(n, oo)
        parallel = maybe_parallel(sch, outer, total) and (
            "channel blocks x position groups" if groups > 1 else "channel blocks")
        sch.reverse_compute_at(sch.get_sblock("epilogue"), outer)
        finish_tile(sch, anchor, rko, pi, oi, False, width)
        update = sch.get_sblock("anchor_update")
        weight = _packed_weight(sch, update, blocks, reduce, ocv)
        whole = sch.get_loops(update)[2]
        if cols % pr:  # a partial last tile: the whole ones a loop without its position test
            whole = sch.loop_partition(whole, [cols // pr, None])[0]
        ahead = _prefetch_weights(sch, whole, weight, chunk)
        _schedule_row_pad(sch, width)
        return (f"{pr} positions x {ocv} channels, reduction in chunks of {chunk}, "
                f"{_parallel(parallel, _cores(target))}"
                + (", the next weight chunk prefetched" if ahead else ""))


def _packed_weight(sch, anchor, blocks: int, reduce: int, ocv: int) -> tuple[str, int] | None:
    """(name, elements per reduction step) of the anchor's weight operand, packed [blocks,
    reduce, (taps,) ocv]; None where no operand has that shape."""
    for region in sch.get(anchor).reads:
        buf = region_buffer(region)
        shape = [int(d) for d in buf.shape]
        if len(shape) >= 3 and (shape[0], shape[1], shape[-1]) == (blocks, reduce, ocv):
            step = 1
            for d in shape[2:]:
                step *= d
            return buf.name, step
    return None


def _prefetch_weights(sch, loop, weight: tuple[str, int] | None, steps: int) -> bool:
    """Annotate `loop` (the loop over the position or column blocks that share one weight
    block, or one reduction chunk of it) to prefetch the next `steps` reduction steps of
    the packed `weight` in memory (`backends.tvm.prefetch`). Where the model's weights do
    not stay in the last-level cache, the first position block read each chunk from DRAM,
    stalling at every 4 KiB page (the hardware prefetchers stop there): resnet50's (100 MB
    of weights) 1x1 layers, one thread on Zen 5, kernel CPU time in the model: 256->1024 on
    14x14 535 -> 445 us, 1024->256 492 -> 410, 512->2048 on 7x7 699 -> 446, 1024->2048
    stride 2 1386 -> 1214-1266 (ORT 420, 405, 500, 1068); the model 35.4-36.9 -> 32.5-33.1
    ms, bit-identical. False (nothing done) without a weight."""
    if weight is None:
        return False
    name, step = weight
    prefetch.annotate(sch, loop, name, steps * step)
    return True


def _schedule_row_pad(sch, width: int) -> None:
    """A KH x 1 kernel's input padded by whole rows and flattened (`conv_channels`), if
    any: a zero fill and a copy over (image, channel), in parallel when large, each
    vectorised with a short last vector (rows of 17: 391 and 289 values a channel)."""
    pad = block(sch, "pad")
    if pad is None:
        return
    loops = sch.get_loops(pad)
    elements = work(sch, loops)
    maybe_parallel(sch, sch.fuse(*loops[:2]), elements, PARALLEL_PAD_ELEMENTS)
    fill = sch.decompose_padding(pad, sch.get_loops(pad)[1])
    for blk in (fill, pad):
        vectorize_tail(sch, sch.get_loops(blk)[-1], width)


def position_groups(blocks: int, cols: int, pr: int, cores: int = 1) -> int:
    """Groups of a channel-vector GEMM's position blocks, each group under the parallel
    loop with every channel block (1: none). Where the image and channel blocks are fewer
    than FEW_PARALLEL_BLOCKS, a divisor of the position blocks (`_groups`), two blocks a
    group at least; none where the last block is partial or nothing divides.
    squeezenet1_1's 64->16 on 55x55 (one block of 16 channels, 275 blocks of 11 positions)
    ran on one thread: 91 us with one thread, 117-158 with two (its input, made by a
    parallel pool, half in the other core's cache), 66-78 in groups. Built for `cores`
    threads, where more blocks than that do not split evenly between them (efficientnet_b0's
    80 and 112 channels on 14x14: 5 and 7 blocks of 16, 3:2 and 4:3), the fewest groups
    that make the tasks a multiple of the threads, dividing the position blocks: its four
    such layers 438-443 -> 394-399 us with two threads on Zen 5 (kernel wall time in the
    model, alternating runs). A split into groups that do not divide the blocks (a masked
    last group: inception_v3's 160 channels on 17x17, mobilenet_v2's on 7x7) measured
    1.1-1.75x slower than the uneven split, so those keep it."""
    if cols % pr:
        return 1
    if blocks >= FEW_PARALLEL_BLOCKS:
        if cores < 2 or blocks % cores == 0:
            return 1
        return next((g for g in range(2, cores + 1) if (cols // pr) % g == 0
                     and blocks * g % cores == 0), 1)
    return _groups(cols // pr, 2)


def row_groups(blocks: int, rows: int) -> int:
    """Groups of a channel-vector direct convolution's output rows, each group under the
    parallel loop with every channel block (1: none): as `position_groups`, one row per group
    at least. densenet121's 32 channels of 3x3 on 14x14 (24 layers) and 7x7 (16) are one
    channel block each and ran on one thread: the 14x14 ones 2.55 ms a run with one thread,
    2.65 with two, 2.01 in row groups."""
    return 1 if blocks >= FEW_PARALLEL_BLOCKS else _groups(rows, 1)


def _groups(count: int, least: int) -> int:
    """Groups of `count` blocks (at least `least` each): the smallest even divisor from
    FEW_PARALLEL_BLOCKS to 4 times it (two threads split it evenly), else the largest odd
    one (the least uneven), else 1."""
    fits = [g for g in range(FEW_PARALLEL_BLOCKS, 4 * FEW_PARALLEL_BLOCKS + 1)
            if count % g == 0 and count // g >= least]
    even = [g for g in fits if g % 2 == 0]
    return even[0] if even else (fits[-1] if fits else 1)


class ConvChannelsDirect(KindRule):
    """The channel-vector direct convolution (`lower/conv_gemm.conv_channels_direct`): loops
    (image and channel block, in parallel when it pays, with groups of the output rows where
    the channel blocks are few: `row_groups`; input-channel chunk; output row;
    position block; the chunk's channels; the KH x KW taps, the columns' unrolled; the
    pr x ocv register tile; where pr does not divide the row, `tiles.row_channel_tile`'s,
    the whole blocks a loop of their own), then the epilogue over the channel block; the
    zero-padded input first, whole. The input channels run in chunks of `tiles.channel_chunk` (about
    64 reduction steps), so a chunk's weights (64 x 32 channels: 8 KiB) stay in L1 while
    the image's positions stream past them, as in `ConvChannels`. Where a channel block's
    accumulators over the image exceed ROWS_FIRST_BYTES, the output row comes before the
    chunks (of up to 64 channels) and each row's epilogue follows it."""

    kinds = ("conv_channels_direct",)

    def schedule(self, sch, func, target):
        ocv, pr, width = int(func.attrs["etch.ocv"]), int(func.attrs["etch.pr"]), lanes(target)
        anchor = sch.get_sblock("anchor")
        n, y, x, o, rc, ry, rx = sch.get_loops(anchor)
        total = work(sch, [n, y, x, o, rc, ry, rx])
        row = extent(sch, x)
        xo, xi = sch.split(x, [None, pr])
        oo, oi = sch.split(o, [None, ocv])
        taps = extent(sch, ry) * extent(sch, rx)
        rows_first = extent(sch, y) * extent(sch, xo) * pr * ocv * 4 > ROWS_FIRST_BYTES
        chunk = tiles.channel_chunk(extent(sch, rc), 1 if rows_first else taps)
        weight = _packed_weight(sch, anchor, extent(sch, oo), extent(sch, rc), ocv)
        rco, rci = sch.split(rc, [None, chunk])
        groups = row_groups(extent(sch, n) * extent(sch, oo), extent(sch, y))
        lead = [n, oo]
        if groups > 1:  # few channel blocks: the output rows in groups, in parallel
            yg, y = sch.split(y, [groups, None])
            lead.append(yg)
        sch.reorder(*lead, *((y, rco) if rows_first else (rco, y)), xo, rci, ry, rx, xi, oi)
        outer = sch.fuse(*lead)
        parallel = maybe_parallel(sch, outer, total) and (
            "channel blocks x row groups" if groups > 1 else "channel blocks")
        sch.reverse_compute_at(sch.get_sblock("epilogue"), y if rows_first else outer)
        sch.unroll(rx)
        # the rows share each weight chunk: resnet50's stride-2 3x3 layers on 14x14 and 7x7
        # 1090 -> 920 and 1150 -> 925 us in the model (Zen 5, one thread; ORT 966, 1220)
        ahead = not rows_first and _prefetch_weights(sch, y, weight, chunk)
        finish_tile(sch, anchor, rco, xi, oi, False, width)
        if row % pr:  # a 1 x k kernel's partial last block of a row: a loop of its own
            sch.loop_partition(sch.get_loops(sch.get_sblock("anchor_update"))[3],
                               [row // pr, None])
        _schedule_pad(sch, width)
        order = "rows before channel chunks" if rows_first else "channel chunks before rows"
        return (f"{pr} positions x {ocv} channels, chunks of {chunk} input channels, {order}, "
                f"{_parallel(parallel, _cores(target))}"
                + (", the next weight chunk prefetched" if ahead else ""))


class ConvImplicit(KindRule):
    """The implicit GEMM (`lower/conv_implicit.py`): loops (image and output-channel block,
    in parallel when it pays; column block; input channel; the KH x KW taps, unrolled; the
    ocb x vw register tile). Every step's vectors are read from the padded input in place.
    The epilogue runs per output-channel block over the whole image (its positions skip the
    dropped columns, so it cannot follow each column block)."""

    kinds = ("conv_implicit",)

    def schedule(self, sch, func, target):
        ocb, vw, width = int(func.attrs["etch.ocb"]), int(func.attrs["etch.vw"]), lanes(target)
        anchor = sch.get_sblock("anchor")
        n, o, q, rc, ry, rx = sch.get_loops(anchor)
        total = work(sch, [n, o, q, rc, ry, rx])
        oo, oi = sch.split(o, [None, ocb])
        qo, qi = sch.split(q, [None, vw])
        sch.reorder(n, oo, qo, rc, ry, rx, oi, qi)
        outer = sch.fuse(n, oo)
        maybe_parallel(sch, outer, total)
        sch.unroll(rx)
        finish_tile(sch, anchor, rc, oi, qi, False, width)
        loops = sch.get_loops(sch.get_sblock("epilogue"))
        elements = work(sch, loops)
        maybe_parallel(sch, sch.fuse(*loops[:-1]), elements, PARALLEL_PAD_ELEMENTS)
        if extent(sch, loops[-1]) % width == 0:
            vectorize_loop(sch, loops[-1], width)
        return True


class ConvPad(KindRule):
    """The padded input of an implicit GEMM: a zero fill and a vectorised copy."""

    kinds = ("conv_pad",)

    def schedule(self, sch, func, target):
        _schedule_pad(sch, lanes(target))
        return True


def rules() -> list[ScheduleRule]:
    return [ConvGemm(), ConvChannels(), ConvChannelsDirect(), ConvImplicit(), ConvPad()]
