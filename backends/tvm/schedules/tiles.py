"""Register-tile sizes for the CPU kernels, shared by lowering (which packs weights to match)
and the schedule rules (which tile loops to match). Pure Python: no TVM import.

The register budget is AVX2's 16 vector registers (32 with AVX-512): an accumulator tile of
at most ~12 vectors leaves room for the loaded operand and the broadcast weights.
"""

from __future__ import annotations

MAX_ACC_VECTORS = 12
WIDE_ACC_VECTORS = 16  # with 32 vector registers (AVX-512): `acc_budget`
WIDE_ONE_VECTOR = 128  # multiply-adds an output from which one-vector conv tiles take 16 channels
ROW_FULL_VECTORS = 8
PANEL_BYTES = 512 * 1024  # a packed panel that stays in L2 (Zen 3: 512 KiB per core)
WIDE_PANEL_BYTES = 1024 * 1024  # AVX-512 CPUs: L2 of 1 MiB (Zen 4, Skylake-SP) to 2 MiB
PAD_WASTE = 16  # a GEMM may pad its column blocks to whole chunks by 1/16 of them at most
LONG_REDUCTION = 512  # multiply-adds per output that pay for a heap-allocated tile
CHANNEL_ROWS = 17  # positions of a one-vector channel tile at most (`channel_tile`)
SHORT_WIDE_MIN = 64  # rows and multiply-adds of a short reduction's wide tile: `short_wide`


def dense_nb(n: int, lanes: int, m: int = 8) -> int:
    """Columns per packed weight block for a [M, K] x [K, N] kernel (vector axis N).

    With one or two rows (GEMV) a tile of two vectors would be two FMA dependency chains,
    each waiting out the FMA latency at every k: wider blocks give 4-8 independent chains.
    """
    wide = (8 * lanes, 4 * lanes) if m <= 2 else ()
    for nb in (*wide, 2 * lanes, lanes):
        if n % nb == 0:
            return nb
    if n <= 4 * lanes:
        return n
    return 2 * lanes  # N is padded up to a multiple; the epilogue writes only N columns


def dense_mb(m: int, nb: int, lanes: int) -> int:
    """Rows per register tile: as many as the accumulator budget allows, dividing M."""
    vectors = max(1, -(-nb // lanes))
    for mb in (8, 6, 4, 3, 2):
        if m % mb == 0 and mb * vectors <= MAX_ACC_VECTORS:
            return mb
    return 1


def dense_tile(m: int, n: int, k: int, lanes: int) -> tuple[int, int]:
    """(rows, columns) of a float [M, K] x [K, N] kernel's register tile: M is padded up to a
    multiple of the rows (the padded rows re-read the last one and are never written), N to
    a multiple of the columns (`dense_nb`, the vector axis, the packed weight's block).

    GEMMs of one or two rows keep `dense_nb`'s wide blocks. Others take a GEMM convolution's
    tile (`gemm_tile`, output positions as the vector, rows broadcast): a transformer's
    M = 197 tokens is prime, and the largest divisor rule gave one row, a GEMV per row that
    reloads the weight block for every token (vit_b16's dense kernels 3x ONNX Runtime).
    AVX-512 over a long reduction: 6 rows x 4 vectors (24 of the 32 registers, as ONNX
    Runtime's 12 x 2), measured on the AVX-512 Xeon 1.08x faster than 8 x 2 on vit_b16's
    [197, 768] x [768, 3072] and [197, 3072] x [3072, 768], alike on 768 x 768."""
    if m <= 2:
        nb = dense_nb(n, lanes, m)
        return dense_mb(m, nb, lanes), nb
    if lanes >= 16 and k >= LONG_REDUCTION and n % (4 * lanes) == 0:
        # 6 rows unless their padding wastes over 1/16 of the work (8 decoder tokens: 4)
        return (6 if padded(m, 6) - m <= m // 16 else 4), 4 * lanes
    mb, nb = gemm_tile(m, n, k, lanes, short_budget=MAX_ACC_VECTORS)
    return min(mb, padded(m, 2)), nb


def conv_tile(oc_per_group: int, out_w: int, lanes: int,
              budget: int = MAX_ACC_VECTORS, reduction: int = 0,
              max_channels: int = 16) -> tuple[int, int]:
    """(output channels, output columns) of a direct-convolution register tile.

    Columns are the vector axis (NCHW keeps a row contiguous); channels share each loaded
    input vector, each with its own broadcast weight. A row of more than one vector is
    padded to whole vectors: a 24-lane tile on AVX-512 (rows of 17-24, or 17-24 Winograd
    tiles) is legalised by LLVM into slow code, measured 8-27x slower than 32 lanes on the
    AVX-512 Xeon (64->64 3x3 Winograd with 17 tiles a row 34 ms, 16 tiles 1.3 ms; a
    128->128 1x7 layer on 17x17 4.4 ms). `budget`: accumulator vectors (`acc_budget`);
    `reduction`: the multiply-adds of each output (C/groups x KH x KW): a one-vector tile
    takes 16 channels where it is WIDE_ONE_VECTOR or more (`acc_budget`), at most
    `max_channels` (8 where `passes/choose_conv_algorithm` records `tile_channels`: a CPU
    that runs one 512-bit FMA a cycle).
    """
    vw = padded(out_w, lanes if out_w > lanes else min(8, lanes)) if out_w <= 2 * lanes else (
        2 * lanes if out_w % (2 * lanes) == 0 or out_w % lanes != 0 else lanes)
    vectors = max(1, -(-vw // lanes))
    ocb = 1
    for cand in (16, 8, 6, 4, 2) if reduction >= WIDE_ONE_VECTOR else (8, 6, 4, 2):
        if oc_per_group % cand == 0 and cand * vectors <= budget and cand <= max_channels:
            ocb = cand
            break
    return ocb, vw


def acc_budget(lanes: int) -> int:
    """Accumulator vectors of the direct convolution's tile: WIDE_ACC_VECTORS with 16 lanes
    (AVX-512's 32 registers), else MAX_ACC_VECTORS; in `conv_tile` that turns a 4 x 2 zmm
    tile into 8 x 2. Measured single-threaded (CPU time, ORT beside it) on the AVX-512 Xeon,
    8 x 2 against 4 x 2: 128->32 3x3 on 56x56 2.30 / 2.75 ms (ORT 1.65), on 28x28 0.47 /
    0.56 ms (ORT 0.41), 32->128 on 27x27 0.44 / 0.51 ms, 16->64 on 55x55 0.55 / 0.60 ms.
    The 8 x 2 tile is 1 KiB, which TVM allocates as a heap workspace per tile (stack only
    under 1 KiB); LLVM still keeps its accumulators in registers over the reduction, and it
    measured faster all the same. 16 x 1 (also 1 KiB, also on the heap) gained nothing on
    48->192 13x13 on the Xeon, but a one-vector tile of 8 channels is 8 FMA chains, just
    what two FMA pipes of 4 cycles' latency need, with no slack; over a long reduction
    that binds. On Zen 5 (two zmm FMAs a cycle), one thread, each layer alone, 8 x 1 -> 16
    x 1: resnet50's 7x7 stride-2 stem (147 multiply-adds an output) 1124 -> 1040 us (ORT
    960), vit_b16's 16x16 patch conv (768) 1125 -> 1077, but mobilenet_v2's 3->32 stem
    (27) only 132 -> 129; the stem in resnet50 1179 -> 1076, bit-identical. So one-vector
    tiles take 16 channels where they divide and each output sums WIDE_ONE_VECTOR products
    or more; short ones keep 8 (and their 512-byte tile on the stack). Winograd's GEMM
    keeps MAX_ACC_VECTORS."""
    return WIDE_ACC_VECTORS if lanes >= 16 else MAX_ACC_VECTORS


def depthwise_rows(out_h: int, vw: int, lanes: int) -> int:
    """Output rows of a depthwise register tile (each `vw` columns wide): as many as the
    accumulator budget holds, dividing the output height. A depthwise tile has one channel,
    so a single row is one FMA chain per vector over the taps, each waiting out the FMA
    latency; rows give independent chains sharing each broadcast weight."""
    vectors = max(1, -(-vw // lanes))
    for rows in (8, 7, 6, 5, 4, 3, 2):
        if out_h % rows == 0 and rows * vectors <= MAX_ACC_VECTORS:
            return rows
    return 1


def gemm_tile(rows: int, cols: int, reduce: int, lanes: int,
              short_budget: int = WIDE_ACC_VECTORS, vectors: int = 2) -> tuple[int, int]:
    """(rows, columns) of the register tile of a convolution run as a GEMM (`conv_gemm`) with
    `reduce` multiply-adds per output: two vectors of output positions (one for images
    narrower than that) by as many output channels as the accumulator budget holds; rows
    that no candidate divides are padded up to a multiple of the largest.

    A tile of 1 KiB or more is a heap workspace in TVM (not a stack array), allocated per
    tile (TVM allocates on the stack only under 1 KiB; moving the allocation out of the tile
    loop, one per channel block, measured slower: the tile no longer stays in L1).
    AVX-512's 32 registers hold 16 accumulators (8 x 2 zmm, 1 KiB), worth the allocation
    over a long reduction: measured on the AVX-512 Xeon, 8x2 zmm ran 1.1x faster than 6x2
    at K = 2048. Over a short one (`short_wide`), only where 12 accumulators would leave a
    4 x 2 tile (6 does not divide the rows): measured in whole models (kernel CPU time,
    `etch run --profile`), 8 x 2 instead of 4 x 2 ran resnet50's 64->256 56x56 (K = 64),
    256->64 and 128->512 layers 1.1-1.3x faster, but it was 1.05-1.2x slower than 6 x 2
    (mobilenet_v2's 96->24, 144->24), than 4 x 2 over K under 64 (32->16, 16->96 112x112)
    and over 16-32 rows (squeezenet's 64->16, 256->32). `short_budget`: the budget there
    (`dense_tile` passes MAX_ACC_VECTORS). With 16 accumulators a narrow image (up to 4
    vectors of positions: 7x7) is one block of 4 channels x all positions, so each weight
    is read once per call: 1.3x faster on a chain of 512->512 3x3 7x7 layers whose 9 MB
    weights come from memory, as in resnet50, than two blocks of 2 vectors. `vectors` = 1
    (recorded by `passes/choose_conv_algorithm` for CPUs that run one 512-bit FMA a
    cycle): blocks of one vector of positions instead of two, by up to 12 channels (a
    tile under 1 KiB)."""
    budget = MAX_ACC_VECTORS
    if lanes >= 16 and reduce >= LONG_REDUCTION:
        budget = WIDE_ACC_VECTORS
    elif lanes >= 16 and short_wide(rows, reduce):
        budget = short_budget
    whole = -(-cols // lanes)
    if whole > 2 and 4 * whole <= budget:  # one block holds every position
        vw = whole * lanes
    else:
        vw = vectors * lanes if cols > lanes else padded(cols, min(8, lanes))
    vectors = max(1, -(-vw // lanes))
    fitting = [c for c in (12, 8, 6, 4, 2) if c * vectors <= budget]
    ocb = next((c for c in fitting if rows % c == 0 and c <= rows), 0)
    return (ocb or min(fitting[0], padded(rows, 2))), vw


def short_wide(rows: int, reduce: int) -> bool:
    """Whether a short reduction (under LONG_REDUCTION) still takes AVX-512's 16
    accumulators (`gemm_tile`): SHORT_WIDE_MIN rows and multiply-adds at least, and rows that
    6 does not divide (12 accumulators would leave a 4 x 2 tile)."""
    return rows >= SHORT_WIDE_MIN and reduce >= SHORT_WIDE_MIN and rows % 6 != 0


def panel_bytes(lanes: int) -> int:
    """The packed panel's budget (`gemm_chunk`): WIDE_PANEL_BYTES on AVX-512 (16 lanes),
    whose cores have 1-2 MiB of L2, else PANEL_BYTES. With 512 KiB, 14x14 layers with a
    reduction of 1024 (7 blocks of 128 KiB) had no even split but one block per chunk, so
    their weights (1-2 MB) were read from L3 seven times a call: on the AVX-512 Xeon (2 MiB
    L2, one thread, L2 flushed between runs, kernel CPU time) resnet50's 1024->256 1x1 on
    14x14 took 0.687 ms with 512 KiB, 0.662 with 1 MiB (ORT 0.615 / 0.657 beside them),
    1024->512 1.368 / 1.357 (ORT 1.188 / 1.263)."""
    return WIDE_PANEL_BYTES if lanes >= 16 else PANEL_BYTES


def gemm_chunk(reduce: int, vw: int, blocks: int, budget: int = PANEL_BYTES,
               exact: bool = False) -> int:
    """Column blocks of a GEMM convolution packed together (`conv_gemm`): as many as keep
    the packed panel within `budget` bytes (`panel_bytes`), so every weight block is read
    from memory once per chunk, not once per column block. Whole-model profiles on the
    AVX-512 Xeon showed resnet50's 7x7 layers at 2x their isolated time when weights (9 MB
    for 512->512 3x3) were streamed once per column block. The GEMM pads its blocks to whole
    chunks (`conv_gemm`) where that adds at most 1/PAD_WASTE of its work, else the chunks
    divide the blocks: an even split of a prime count (167 blocks of inception_v3's 73 x 73
    positions) was one block per chunk, so each panel read 128 bytes from each of its 64
    input rows, too many streams for the prefetchers once the input is not in L2 (batch 8:
    16x the batch-1 time; two chunks of 84: 9.6x, ORT 7.5x). `exact`: chunks that divide
    the blocks (a GEMM reading its input in place has nothing past the last block)."""
    per_block = reduce * vw * 4
    most = max(1, min(blocks, budget // per_block))
    even = next(c for c in range(most, 0, -1) if blocks % c == 0)
    balanced = -(-blocks // -(-blocks // most))  # the fewest chunks, as even as they go
    waste = padded(blocks, balanced) - blocks
    return balanced if waste * PAD_WASTE <= blocks and not exact else even


def padded(n: int, block: int) -> int:
    """n rounded up to a multiple of block."""
    return -(-n // block) * block


def row_lanes(row: tuple[int, ...], lanes: int) -> int:
    """Vector lanes for a row kernel (softmax, layer norm, trailing reductions) over rows of
    shape `row`: on AVX-512 (16 lanes) the full width only for rows of ROW_FULL_VECTORS
    vectors or more, else 8 lanes. Short rows are a few vectors and a horizontal reduction
    each, which costs more across a zmm register: measured on an AVX-512 Xeon, softmax over
    16 ran 1.45x faster at 8 lanes, layer norm over 64 1.3x, a 16x16 global mean 1.2x, while
    layer norm over 256 ran 1.08x faster at 16. Other widths are kept as they are."""
    size = 1
    for d in row:
        size *= d
    return lanes // 2 if lanes >= 16 and size < ROW_FULL_VECTORS * lanes else lanes


def channel_tile(channels: int, cols: int, lanes: int) -> tuple[int, int] | None:
    """(ocv, pr) of a GEMM or convolution with output channels as the vector
    (`conv_channels`, `conv_channels_direct`): `ocv` channels (two vectors where the
    channels fill them, else one) by `pr` positions, the largest divisor of `cols` (the
    image's positions, or a row's) that the accumulator budget holds, at least 4 (fewer
    leaves each broadcast feeding too few FMAs); None where there is none or the channels do
    not fill vectors. Two vectors: at most 7 positions (a tile under 1 KiB stays on the
    stack); one vector on AVX-512: up to CHANNEL_ROWS (17: 17 accumulators, the weight and
    a broadcast fit its 32 registers; a 17-position tile is a heap workspace, which LLVM
    still keeps in registers over the reduction), so 17x17 images' rows of 17 take one
    tile: inception_v3's 192->192 1x7 on 17x17 ran 1.17x ONNX Runtime with it, 1.39x as
    the im2col GEMM."""
    if channels % lanes:
        return None
    budget = WIDE_ACC_VECTORS if lanes >= 16 else MAX_ACC_VECTORS
    for vectors in (2, 1):
        if channels % (vectors * lanes):
            continue
        most = CHANNEL_ROWS if vectors == 1 and lanes >= 16 else budget // vectors
        pr = next((r for r in range(most, 3, -1) if cols % r == 0 and (
            r * vectors * lanes * 4 < 1024 or vectors == 1 and lanes >= 16)), None)
        if pr is not None:
            return vectors * lanes, pr
    return None


ROW_TILE_POSITIONS = 9  # positions of a 1 x k kernel's two-vector tile at most


def row_channel_tile(channels: int, cols: int, lanes: int) -> tuple[int, int] | None:
    """(ocv, pr) of a 1 x k convolution with output channels as the vector
    (`conv_channels_direct`, stride 1): on AVX-512, 2 vectors of channels by the row cut
    into the fewest blocks of at most ROW_TILE_POSITIONS, as even as they go (17: 9 + 8),
    the last block partial where they do not divide it (the schedule runs it as a loop of
    its own), the KW taps sharing each broadcast; else `channel_tile`'s. The divisor rule
    left rows of 17 one vector by 17 positions (a weight load and 17 broadcasts a step
    for 17 multiply-adds, the taps' reuse aside). Measured on the AVX-512 Xeon (one layer
    with bias and ReLU, one thread, CPU time, ONNX Runtime beside it, etch/ORT, divisor
    rule -> 2 x 9 / 2 x 6 / 3 x 8): 1x7 on 17x17 192->192 1.24 -> 0.90 / 0.90 / 0.99-1.01,
    160->160 1.17 -> 0.86 / 0.88 / -, 128->128 1.28 -> 0.94 / 0.93 / -; not for k x k
    kernels (3x3 on 13x13 / 35x35 / 147x147, 5x5 with 3 x 8: 1.2-1.8x slower)."""
    if lanes >= 16 and channels % (2 * lanes) == 0 and cols > ROW_TILE_POSITIONS:
        blocks = -(-cols // ROW_TILE_POSITIONS)
        return 2 * lanes, -(-cols // blocks)
    return channel_tile(channels, cols, lanes)


# The channel-vector GEMM's (`conv_channels`) tiles on AVX-512, (vectors of channels,
# positions), in order of preference: 24 accumulators each (`gemm_channel_tile`).
WIDE_CHANNEL_TILES = ((3, 8), (2, 12), (4, 6))


def gemm_channel_tile(channels: int, cols: int, lanes: int) -> tuple[int, int] | None:
    """(ocv, pr) of the pointwise GEMM with output channels as the vector (`conv_channels`).
    On AVX-512 a tile of 24 accumulators, the first of WIDE_CHANNEL_TILES whose vectors the
    channels fill, whether or not `pr` divides the positions (the schedule runs the last,
    partial tile as a loop of its own); else `channel_tile`'s. A divisor of the positions
    left 17x17 and 13x13 images (289 and 169 of them) a one-vector tile of 17 or 13
    positions: each step one weight load and 17 broadcasts for 17 multiply-adds, against 3
    and 8 for 24 in a 3 x 8 tile. Measured single-threaded on the AVX-512 Xeon (CPU time,
    one layer with bias and ReLU, ONNX Runtime beside it, etch/ORT, divisor tile -> 3 x 8
    / 2 x 12 / 4 x 6): 768->192 on 17x17 1.17 -> 0.99 / 1.04 / 1.08, 768->128 1.17 -> - /
    1.04 / 1.08, 384->48 on 13x13 1.09 -> 0.96, 512->64 1.10 -> - / 0.99 / 0.97, 2048->512
    on 7x7 1.05 -> - / 0.99 / 0.99, 160->960 1.09 -> 1.04 / 1.08 / 1.01, 1024->256 on
    14x14 1.07 -> - / 1.05 / 1.02, 576->96 1.02 -> 1.01; even (+-2%): 384->64 and
    256->1024 on 14x14, 960->160 on 7x7. Channels that no tile's vectors fill take the
    first tile that pads them by 1/PAD_WASTE at most (zero weight columns, never stored):
    squeezenet1_1's 512->1000 classifier on 13x13 (to 1008) 1437 -> 1031 us in the model,
    shufflenet_v2's 232->232 (to 240) on 7x7 1.05x faster, one thread."""
    if lanes >= 16:
        for vectors, rows in WIDE_CHANNEL_TILES:
            if channels % (vectors * lanes) == 0 and cols >= rows:
                return vectors * lanes, rows
        for vectors, rows in WIDE_CHANNEL_TILES:
            if (padded(channels, vectors * lanes) - channels) * PAD_WASTE <= channels \
                    and cols >= rows:
                return vectors * lanes, rows
    return channel_tile(channels, cols, lanes)


def channel_chunk(reduce: int, taps: int = 1) -> int:
    """Reduction steps (`taps` = 1: a GEMM's) or input channels of `taps` steps each (a
    direct convolution's) of one chunk of a channel-vector kernel (`ConvChannels`,
    `ConvChannelsDirect`): the most, dividing `reduce`, of at most 64 steps, so a 32-channel
    weight block's chunk is at most 8 KiB (L1); for a GEMM at least 16 steps, or `reduce`
    itself where it is 64 or less or has no such divisor."""
    if taps > 1:
        most = max(1, 64 // taps)
        return next(c for c in range(min(most, reduce), 0, -1) if reduce % c == 0)
    if reduce <= 64:
        return reduce
    return next((k for k in range(64, 15, -1) if reduce % k == 0), reduce)
