"""CPU schedule rules for the integer anchors of `lower/int_gemm.py` and `lower/int_conv.py`.

- QDense ("qdense": [M, K] x [N/NL, K/4, NL, 4], tiles of rows x NL-output vectors),
  QConv ("qconv2d": tiles of output channels x vectors of NL output columns): where the
  CPU has an x86 int8 dot product (`int_intrin.choose`: vpdpbusd, vpmaddubsw + vpmaddwd),
  the TE kernel is replaced by the
  hand-scheduled kernel of `int_kernels` (same parameters and result): register tiles of
  int32 accumulators, the reduction outside the tile, the requantising epilogue per tile.
  A conv's vectors run along output rows, flattened positions (`int_flat`; dense
  positions where `dense_vectors` pays for the copy) or, where the lowering packed the
  weights for it (attr layout "channels": few positions, 7x7), output channels
  (`int_channels`). Elsewhere the rule does not apply and the generic rules run the TE
  kernel as it is.
- QDepthwise ("qdepthwise"): `int_depthwise`'s kernels: with AVX512-VBMI and VNNI, byte
  windows of the uint8 plane (vpermb / vpermi2b put each output's four taps in its lane,
  vpdpbusd multiplies them: `windows`); elsewhere int32 multiply-adds of centred int16
  inputs and a broadcast weight.
- QSumPool ("qsumpool"): the output loops fused, parallel when large; windows inner.
- QMaxPool (integer "pool" / "window_pool" MaxPool kernels): `int_pool`'s row kernel.
- QChannelTable (etch.ChannelTable): `int_tables`' byte permutes per channel plane.
- QConcat (integer Concat kernels): `int_concat`'s block copies.
Tile sizes come from the register budget: AVX2 has 16 ymm registers and the "split" step
needs ~6 temporaries, so at most 8 accumulator vectors; AVX-512 has 32 (at most 16; with
vpdpbusd, which needs no temporaries, 24). A conv tile is chosen by `conv_tile`: with
vpdpbusd by a step model over the whole conv (tiles need not divide), else a port model.
These rules come first in `cpu.rules()`.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target, codegen

from backends.tvm.schedules import (
    int_batched,
    int_channels,
    int_concat,
    int_depthwise,
    int_flat,
    int_intrin,
    int_kernels,
    int_pool,
    int_tables,
)
from backends.tvm.schedules.cpu import (
    PARALLEL_MIN_ELEMENTS,
    KindRule,
    block,
    maybe_parallel,
    work,
)

MAX_ACC = {8: 8, 16: 16}
REGISTERS = {8: 16, 16: 32}  # vector registers: AVX2's ymm, AVX-512's zmm
VNNI_ACC = {8: 12, 16: 24}  # vpdpbusd needs no temporaries: more registers for accumulators
DOT_LATENCY = 5  # cycles of a dot step (vpdpbusd) before its result feeds the next
CHAINS = 12  # independent accumulators that keep both dot-product ports busy (latency 5)


def step_kind(func: tirx.PrimFunc, target: Target) -> str | None:
    """The kind of vector dot step (`int_intrin.choose`) for this kernel on `target`."""
    nl = int(func.attrs["etch.nl"])
    features = set(codegen.llvm_get_cpu_features(target))
    return int_intrin.choose(features, nl, bool(int(func.attrs["etch.pair_safe"])))


def step_for(func: tirx.PrimFunc, target: Target):
    """The vector dot step for this kernel on `target`, or None."""
    kind = step_kind(func, target)
    return None if kind is None else int_intrin.dot(kind, int(func.attrs["etch.nl"]))


def row_tile(m: int, nv: int, budget: int) -> int:
    """Rows per register tile beside nv accumulator vectors: enough independent dot-product
    chains (CHAINS) to hide the step's latency, within `budget` accumulators, with few
    padded rows (rows past M are recomputed copies of the last row, not stored): the
    candidate with the least padded work per chain, the larger on a tie."""
    best, cost = 1, float("inf")
    for mb in range(1, min(m, budget // nv) + 1):
        c = -(-m // mb) * mb / min(mb * nv, CHAINS)
        if c <= cost:
            best, cost = mb, c
    return best


def vectors(blocks: int, rows: int, nl: int) -> int:
    """Accumulator vectors along the outputs: the most (<= 4) that divide `blocks` and fit
    the register budget beside `rows` rows."""
    return next(nv for nv in (4, 3, 2, 1) if blocks % nv == 0 and nv * rows <= MAX_ACC[nl])


def _buffer_shape(func: tirx.PrimFunc, k: int) -> tuple[int, ...]:
    return tuple(int(d) for d in func.params[k].shape)


def _vbmi(target: Target) -> bool:
    """Whether `target` has AVX512-VBMI's byte permutes (vpermi2b) on 512-bit vectors."""
    return {"avx512bw", "avx512vbmi"} <= set(codegen.llvm_get_cpu_features(target))


def table_lookup(func: tirx.PrimFunc, target: Target) -> tirx.PrimFunc:
    """`func` with `etch.table_lookup` recorded: "vpermi2b" (the group's 256-entry table in
    registers, `int_intrin.table_vector`) where the kernel has a table step and 16 lanes and
    the CPU has AVX512-VBMI; otherwise unchanged (the table is read entry by entry)."""
    post = str(func.attrs["etch.post"]) if "etch.post" in func.attrs else "[]"
    if '"table"' not in post or int(func.attrs["etch.nl"]) != 16 or not _vbmi(target):
        return func
    return func.with_attr("etch.table_lookup", int_intrin.TABLE_VBMI)


class KernelRule(KindRule):
    """A rule that replaces the kernel by a hand-scheduled one: `kernel(func, target)`
    returns the new PrimFunc, or None (the rule does not apply)."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool = False):
        if KindRule.apply(self, func, target, tunable) is None:
            return None
        kernel = self.kernel(table_lookup(func, target), target)
        return None if kernel is None else s_tir.Schedule(kernel)

    def schedule(self, sch, func, target) -> bool:
        return True  # KindRule's kind and target checks only

    def kernel(self, func: tirx.PrimFunc, target: Target) -> tirx.PrimFunc | None:
        raise NotImplementedError


class QDense(KernelRule):
    """[M, K] x packed [N/NL, K/4, NL, 4]: tile mb rows x nv vectors."""

    kinds = ("qdense",)

    def kernel(self, func, target):
        kind = step_kind(func, target)
        if kind is None:
            return None
        m = _buffer_shape(func, 0)[0]
        nb, _, nl, _ = _buffer_shape(func, 1)
        budget = (VNNI_ACC if kind == "vnni" else MAX_ACC)[nl]
        nv = vectors(nb, 1, nl)
        mb = row_tile(m, nv, budget)
        return int_kernels.dense_kernel(
            _tiled(func, f"{mb} rows x {nv} vectors", kind, _buffer_shape(func, 1)[1]),
            int_intrin.dot(kind, nl), mb, nv)


class QBatch(KernelRule):
    """Two activations [B, M, K] x [B, K, N]: tile mb rows x nv vectors (N padded to whole
    tiles inside the kernel, so nv is free), the pair with the least padded work per chain."""

    kinds = ("qbatch",)

    def kernel(self, func, target):
        kind = step_kind(func, target)
        if kind is None:
            return None
        _, m, k = _buffer_shape(func, 0)
        nl, n = int(func.attrs["etch.nl"]), _buffer_shape(func, 1)[2]
        budget = (VNNI_ACC if kind == "vnni" else MAX_ACC)[nl]
        nvec = -(-n // nl)
        tiles = [(row_tile(m, nv, budget), nv) for nv in (4, 3, 2, 1)]
        mb, nv = min(tiles, key=lambda t: _tile_cost(m, nvec, *t))
        return int_batched.batched_kernel(
            _tiled(func, f"{mb} rows x {nv} vectors", kind, -(-k // 4)),
            int_intrin.dot(kind, nl), mb, nv)


def _tiled(func: tirx.PrimFunc, tile: str, kind: str, steps: int = 0) -> tirx.PrimFunc:
    """`func` with its register tile and dot step recorded (`--explain` lists them), and
    its requantisation where it is the float64 one (`float64_requant`, for kernels of
    `steps` dot steps per output)."""
    attrs = {"etch.tile": tile, "etch.step": STEP_NAMES[kind]}
    if float64_requant(func, steps):
        attrs["etch.requant"] = "float64"
    return func.with_attrs(attrs)


# Dot steps per output (taps x channel quads) from which a kernel requantises in float64
# (`int_intrin.requantize_f64`, where proven exact). Its conversions share Zen 4's vector
# pipes with the integer work; below this the requantisation is the kernel's bottleneck,
# and the 64-bit integer form (more, cheaper instructions) was faster. Measured there, one
# thread, kernel us, integer -> float64: efficientnet_b0's 1x1 16 -> 96 on 112x112 422 ->
# 438, 24 -> 144 182 -> 185, 112 -> 672 on 14x14 119 -> 114; resnet50's 3x3 on 28x28 594 ->
# 573, 14x14 587 -> 574, its 7x7 stem 879 -> 843; mobilenet_v2's depthwise (9 steps)
# 1-9% slower, its 1x1 convs 1-5% faster. The channel-vector kernels keep the integer form
# too (efficientnet_b0's 1x1 layers on 7x7 1-2% slower with float64, resnet50's level).
F64_MIN_STEPS = 16


def float64_requant(func: tirx.PrimFunc, steps: int) -> bool:
    """Whether a kernel of `steps` dot steps per output requantises in float64
    (`int_intrin.requantize_f64`): at 16 lanes (its rounding is in the instruction), where
    the lowering proved it exact for every accumulator (`lower.int_epilogue.f64_exact`)
    and the steps hide its conversions (F64_MIN_STEPS)."""
    return int(func.attrs.get("etch.nl", 0)) == 16 and steps >= F64_MIN_STEPS and \
        int(func.attrs.get("etch.req_f64", 0)) == 1


STEP_NAMES = {"vnni": "vpdpbusd", "madd": "vpmaddubsw + vpmaddwd",
              "split": "vpmaddubsw on activation nibbles + vpmaddwd"}


def _tile_cost(m: int, nvec: int, mb: int, nv: int) -> float:
    """Padded work per independent chain of an mb x nv tile (lower is better)."""
    return -(-m // mb) * mb * -(-nvec // nv) * nv / min(mb * nv, CHAINS)


class QConv(KernelRule):
    """Direct conv: tile ocb output channels x xv vectors of output columns."""

    kinds = ("qconv2d",)

    def kernel(self, func, target):
        kind = step_kind(func, target)
        if kind is None:
            return None
        nl, groups = int(func.attrs["etch.nl"]), int(func.attrs["etch.groups"])
        if str(func.attrs.get("etch.layout", "")) == "channels":
            return int_channels.channel_conv_kernel(
                _tiled(func, f"channel vectors, {int_channels.POSITIONS} positions x 1 vector",
                       kind), int_intrin.dot(kind, nl))
        _, oc, oh, ow = _buffer_shape(func, len(func.params) - 1)
        budget = (VNNI_ACC if kind == "vnni" else MAX_ACC)[nl]
        _, kh, kw, cq, _ = _buffer_shape(func, 1)
        steps = kh * kw * cq
        flat = flat_vectors(func, nl)
        dense = dense_vectors(func, nl, flat or oh * -(-ow // nl))
        if flat or dense:
            vecs, name = (dense, "dense positions") if dense else (flat, "flat positions")
            ocb, xv = conv_tile(oc // groups, vecs, budget, kind, REGISTERS[nl], steps)
            return int_flat.flat_conv_kernel(
                _tiled(func, f"{name}, {ocb} channels x {xv} vectors", kind, steps),
                int_intrin.dot(kind, nl), ocb, xv, dense=bool(dense))
        ocb, xv = conv_tile(oc // groups, -(-ow // nl), budget, kind, REGISTERS[nl], steps)
        return int_kernels.conv_kernel(
            _tiled(func, f"output rows, {ocb} channels x {xv} vectors", kind, steps),
            int_intrin.dot(kind, nl), ocb, xv)


# Flatten where it needs no more vectors than the rows. Since the flat kernel stages each
# channel block's outputs at their virtual positions and copies whole rows out (not element
# by element), it is faster wherever it saves lanes: measured on Zen 4, `--int`, one
# thread, kernel us, in turns, rows -> flat: squeezenet1_1's 16->64 3x3 on 55x55 201 ->
# 161, 32->128 on 27x27 175 -> 146, 64->256 on 13x13 159 -> 147, its 3->64 stride-2 stem
# 351 -> 267; resnet50's 3x3 layers on 56x56 and 28x28 642 -> 562, 692 -> 625; vgg16's
# on 56x56 4870 -> 4330, 28x28 9578 -> 8852, 14x14 2407 -> 2346; none slower (the
# element-wise copy had made 55x55 231 us and the stem 544: FLAT_SAVING was 0.8).
FLAT_SAVING = 1.0


def flat_vectors(func: tirx.PrimFunc, nl: int) -> int:
    """Vectors of the flattened conv (`int_flat`) where its positions, rows joined at the
    plane's row length, take at most FLAT_SAVING of the lanes of whole vectors per output
    row (short rows: 7 columns fill 7 of 16 lanes; 7x7 outputs are 4 flat vectors, not 7;
    56x56 with a 3x3 kernel 203, not 224); else 0."""
    _, _, oh, ow = _buffer_shape(func, len(func.params) - 1)
    _, kh, kw, _, _ = _buffer_shape(func, 1)
    stride, dilation = int_kernels.stride_dilation(func)
    _, positions, _ = int_flat.flat_geometry(oh, ow, (kh, kw), stride, dilation)
    nvec = -(-positions // nl)
    return nvec if oh > 1 and nvec <= FLAT_SAVING * oh * -(-ow // nl) else 0


# Bytes of the dense planes' copy worth one dot step saved (`dense_vectors`): the copy
# streams through the core's caches at ~16-32 bytes a cycle, a zmm dot step is a cycle.
DENSE_COPY_BYTES = 4


def dense_vectors(func: tirx.PrimFunc, nl: int, current: int) -> int:
    """Vectors of the flattened conv over dense planes (`int_flat.dense_geometry`: the
    outputs themselves, no dropped columns) where that is fewer than `current` (the flat or
    the row layout's) and the dot steps it saves (vectors x output channels x taps x
    channel quads) outweigh its kw-fold copy of the input at DENSE_COPY_BYTES a step (a
    3x3 on 28x28 in 49 vectors, not 53; vgg16's 224x224 layer keeps its rows: 28 vectors
    saved of 3164 do not pay for copying 9.7 MB); else 0. Only for kernels wider than one
    column (a 1 x 1 conv's flat positions are dense already)."""
    _, oc, oh, ow = _buffer_shape(func, len(func.params) - 1)
    _, kh, kw, cq, _ = _buffer_shape(func, 1)
    groups = int(func.attrs["etch.groups"])
    stride, dilation = int_kernels.stride_dilation(func)
    if kw == 1 or oh <= 1:
        return 0
    ni, positions, _ = int_flat.dense_geometry(oh, ow, (kh, kw), stride, dilation)
    nvec = -(-positions // nl)
    copy = groups * cq * stride[0] * kw * ni * ow * 4
    saved = (current - nvec) * oc * kh * kw * cq
    return nvec if nvec < current and saved * DENSE_COPY_BYTES >= copy else 0


def conv_tile(ocpg: int, nvec: int, budget: int, kind: str = "vnni",
              registers: int = 32, steps: int = 0) -> tuple[int, int]:
    """(ocb, xv) of the direct conv's register tile: ocb output channels (one broadcast weight
    load each) x xv vectors of output columns (one vector load each) within `budget`
    accumulators. vpdpbusd: any sizes (the kernels narrow the last tile of each) whose
    accumulators, activation vectors and a broadcast fit the vector `registers`, the pair
    with the fewest cycles over the whole conv by `vnni_step_cycles` and, given the dot
    `steps` of a tile (taps x channel quads), its epilogue's per-channel part (EPI_CHANNEL
    per tile row, over the steps: it counts where the reduction is short); the other steps: ocb |
    ocpg, xv | nvec, the pair with the fewest cycles per dot step by a port model (2 dot
    steps and 2 loads per cycle, each of the ocb * xv chains one step per DOT_LATENCY
    cycles). Ties: the larger tile."""
    if kind == "vnni":
        def total(t: tuple[int, int]) -> tuple[float, int]:
            ocs, vecs = (int_kernels.tail_tiles(n, s) for n, s in zip((ocpg, nvec), t))
            cycles = sum(bn * vn * (vnni_step_cycles(b, v) + (b * EPI_CHANNEL / steps
                                                               if steps else 0))
                         for _, bn, b in ocs for _, vn, v in vecs)
            return cycles * (1 + TAIL_COST * (len(ocs) * len(vecs) - 1)), -t[0] * t[1]

        return min(((b, v) for b in range(1, min(ocpg, budget) + 1)
                    for v in range(1, min(nvec, MAX_TILE_VECTORS) + 1)
                    if b * v <= budget and b * v + v + 1 <= registers),
                   key=total)

    def cycles(t: tuple[int, int]) -> tuple[float, int]:
        ocb, xv = t
        chains = ocb * xv
        return max(0.5, (ocb + xv) / (2 * chains), DOT_LATENCY / chains), -chains

    pairs = [(b, v) for b in range(1, 17) for v in range(1, 5)
             if ocpg % b == 0 and nvec % v == 0 and b * v <= budget]
    return min(pairs, key=cycles)


# Cycles of a tile row's epilogue set-up (its channel's multiplier, shift, bias and rounding
# term loaded and derived) before its vectors are requantised.
EPI_CHANNEL = 4.0
MAX_TILE_VECTORS = 8  # activation vectors of a conv tile (more only add vector loads)
# Each narrower last tile is another unrolled copy of the tile's body and epilogue: LLVM's
# time, and the code, grow with the copies. A tiling with tails must be this much cheaper
# per tail-tile variant than one without (measured A/B on the Xeon: free tails made
# resnet50 and mobilenet_v2 `--int` 4.5% faster and densenet121's build 28.4 -> 39.2 s).
TAIL_COST = 0.06


def vnni_step_cycles(ocb: int, xv: int) -> float:
    """Cycles of one step (a tap's channel quad) of an ocb x xv vpdpbusd tile: the longer of
    a chain's step (~5.5 cycles: one result feeds the next) and the issue of its ocb * xv
    dots (2 a cycle) plus its loads, a broadcast weight ~0.1 cycle and an activation vector
    (unaligned: it usually spans two cache lines) ~0.6. Fitted to a loop of such steps on
    the Intel Xeon of the README (within 8% for 24 shapes from 1x1 to 24x1): 6x4, 12x2 and
    8x3 tiles run ~15% more dots a second than 4x4, and 2x2 half as many."""
    return max(5.5, ocb * xv / 2 + 0.1 * ocb + 0.6 * xv)


def windows(func: tirx.PrimFunc, nl: int, kh: int, kw: int, features: set[str]) -> bool:
    """Whether a depthwise kernel runs on uint8 byte windows (`int_depthwise.windows_kernel`:
    vpermb / vpermi2b gather each output's taps, vpdpbusd multiplies four a lane): 16-lane
    kernels on a CPU with AVX512-VBMI and VNNI, int8 weights, chunks of four taps within two
    kernel rows, and a vector's outputs reading at most 64 bytes of a row. Measured on Zen 4
    against the int16 planes' kernels (mobilenet_v2 `--int`, one thread, kernel us, both
    builds timed in turns): 144 channels 3x3 on 56x56 189.5 -> 155.4, 96 stride 2 on 112x112
    238.6 -> 132.2, 32 on 112x112 157.6 -> 118.4, rows of one vector too (576 stride 2 on
    14x14 56.1 -> 35.4, 576 on 14x14 58.9 -> 56.8); the model 4.15 -> 3.82 ms,
    efficientnet_b0 `--int` (5x5 layers) 7.71 -> 6.87 (separate processes in turns, best of
    four)."""
    stride, dilation = int_kernels.stride_dilation(func)
    return nl == 16 and {"avx512vbmi", "avx512vnni"} <= features and \
        int(func.attrs.get("etch.w8", 0)) == 1 and \
        int_depthwise.window_chunks(kh, kw) is not None and \
        int_depthwise.window_fits(kw, stride[1], dilation[1], nl)


def flat_windows(func: tirx.PrimFunc, nl: int, kh: int, kw: int) -> tuple | None:
    """The geometry of a byte-window depthwise kernel over flattened output positions
    (`int_depthwise.flat_windows`: row pitch, vectors) where its rows are shorter than a
    vector and that takes fewer vectors than the rows do; None otherwise. Measured on Zen 4 against the row
    windows (mobilenet_v2 `--int`, one thread, kernel us, in turns): 960 channels on 7x7
    50.9 -> 32.8, 576 on 14x14 56.6 -> 39.4, 384 on 14x14 38.8 -> 26.3, 576 stride 2 to
    7x7 32.2 -> 22.7; the model 3.58 -> 3.43 ms, efficientnet_b0 `--int` 6.65 -> 6.11."""
    oh, ow = _buffer_shape(func, len(func.params) - 1)[2:]
    if ow >= nl:
        return None
    stride, dilation = int_kernels.stride_dilation(func)
    flat = int_depthwise.flat_windows((oh, ow), (kh, kw), stride, dilation, nl)
    return flat if flat and len(flat[1]) < oh else None


class QDepthwise(KernelRule):
    """Depthwise conv: tile xv vectors of output columns of one channel's row."""

    kinds = ("qdepthwise",)

    def kernel(self, func, target):
        nl = int(func.attrs["etch.nl"])
        features = set(codegen.llvm_get_cpu_features(target))
        if ("avx512f" if nl == 16 else "avx2") not in features:
            return None
        nvec = -(-_buffer_shape(func, len(func.params) - 1)[3] // nl)
        kh = _buffer_shape(func, 1)[1]
        # row pairs where rows have 2+ vectors: on short rows the pairs' copy outweighs them
        w16 = int(func.attrs.get("etch.w16", 0)) == 1
        pairs = kh > 1 and nvec > 1 and int(func.attrs["etch.dilation"][0]) == 1 and w16
        # rows of one zmm: pairs of a row's taps, read from the plane itself (no copy)
        kw = _buffer_shape(func, 1)[2]
        columns = nl == 16 and nvec == 1 and kw > 1 and w16 and \
            all(int(d) == 1 for d in func.attrs["etch.dilation"])
        xv = next(v for v in (4, 2, 1) if nvec % v == 0)
        if windows(func, nl, kh, kw, features):
            flat = flat_windows(func, nl, kh, kw)
            if flat:
                func = func.with_attr("etch.tile", f"flat byte windows, {len(flat[1])} vectors")
                return int_depthwise.flat_windows_kernel(func, flat)
            func = func.with_attr("etch.tile", f"byte windows, {xv} vectors")
            return int_depthwise.windows_kernel(func, xv)
        layout = "row pairs" if pairs else "column pairs" if columns else "rows"
        func = func.with_attr("etch.tile", f"{layout}, {xv} vectors")
        return int_depthwise.depthwise_kernel(func, xv, pairs, columns,
                                              vnni="avx512vnni" in features)


class QSumPool(KindRule):
    """Window sums: the (n, c, out...) loops fused and run in parallel when large; a fused
    group's output unit (block "epilogue" after the sums, block "anchor") computed inside
    the same loop, one sum at a time."""

    kinds = ("qsumpool",)

    def schedule(self, sch, func, target):
        epilogue, blk = sch.get_sblock("epilogue"), block(sch, "anchor")
        blk = epilogue if blk is None else blk
        loops = sch.get_loops(blk)
        spatial = len(sch.get(blk).iter_vars) - sum(
            iv.iter_type != tirx.IterVar.DataPar for iv in sch.get(blk).iter_vars)
        total = work(sch, loops)
        outer = sch.fuse(*loops[:spatial]) if spatial > 1 else loops[0]
        maybe_parallel(sch, outer, total, PARALLEL_MIN_ELEMENTS)
        if blk is not epilogue:
            sch.reverse_compute_at(epilogue, outer)
        return True


class QMaxPool(KernelRule):
    """An int8/uint8 2-D MaxPool (`int_pool`): rows of whole vectors, byte shuffles for the
    stride; where `int_pool.geometry` declines or the CPU lacks AVX2, the float rules."""

    kinds = ("pool", "window_pool")

    def kernel(self, func, target):
        geo = int_pool.geometry(func)
        if geo is None or "avx2" not in set(codegen.llvm_get_cpu_features(target)):
            return None
        return int_pool.max_pool_kernel(func.with_attr("etch.tile", "int8 max rows"), geo)


class QChannelTable(KernelRule):
    """etch.ChannelTable (`int_tables`): per channel plane, the channel's table in four
    registers and two vpermi2b per 64 bytes; without AVX512-VBMI the generic gather."""

    kinds = ("injective",)

    def kernel(self, func, target):
        axis = int_tables.channel_axis(func)
        if axis is None or not _vbmi(target):
            return None
        return int_tables.channel_table_kernel(func.with_attr("etch.tile", "vpermi2b planes"),
                                               axis)


class QConcat(KernelRule):
    """An int8/uint8 Concat (`int_concat`): block copies of whole vectors."""

    kinds = ("injective",)

    def kernel(self, func, target):
        axis = int_concat.concat_axis(func)
        return None if axis is None else int_concat.concat_kernel(func, axis)


def rules() -> list:
    return [QDense(), QBatch(), QConv(), QDepthwise(), QSumPool(), QMaxPool(), QChannelTable(),
            QConcat()]
