"""ChooseConvAlgorithm: the algorithm of every float 2-D convolution, recorded on its node.

Rewrites: none; sets `conv_algorithm` on each Conv node and each `etch.Fused` node whose
anchor is a Conv, one of
- "winograd_f4" / "winograd_f2": Winograd F(4, 3) / F(2, 3) (compiler/winograd.py) for a
  3x3, stride-1, undilated, ungrouped convolution with at least `min_channels` input and
  output channels and rows long enough that their tiles fill half a vector (the kernel's
  vector axis is the tiles along a row): 4x / 2.25x fewer multiplies than direct, at the
  cost of the input and output transforms, which the multiplies over C (and OC) must pay
  for. F(4, 3) when a row has `lanes` / 2 tiles of 4 (with 16 lanes: 29+ outputs), else
  F(2, 3) (with 16 lanes: rows of 15-28). Layers with `small_channels` to `min_channels`
  channels take it too where one image's transformed input and output fit
  SMALL_WINOGRAD_BYTES (`_small_reason`);
- "winograd_f4_image" / "winograd_f2_image": the same where rows are too short for that
  (14x14 outputs at batch 1; 13x13, 8x8, 7x7 in batches, or at batch 1 where the weights
  stay cached), the vector axis being every tile
  of one image: taken where an image's tiles fit one vector, pad to whole tile rows and
  cost at most IMAGE_MAX_COST multiply-adds per output and channel pair, padding tiles and
  the transformed weight's memory traffic counted -- less where the model's weights,
  transformed ones included, stay in the last-level cache between calls (`cache_bytes`,
  the host's when compiling for it: `_image_tile`);
- "pointwise": a 1x1 stride-1 unpadded convolution, run as one [OC, C] x [C, H*W] GEMM,
  output positions as the vector;
- "pointwise_channels": the same GEMM with output channels as the vector, where the
  positions would not fill whole vectors (7x7, 14x14, 13x13 images) or the output channels
  are one vector with a reduction of 64+ (`_channels_reason`);
- "implicit_gemm": any other stride-1 ungrouped 2-D convolution with a long reduction
  (C*KH*KW >= 512) whose rows are not too narrow: one GEMM whose vectors are read from the
  padded input in place (`_implicit_reason`);
- "column_channels": a KH x 1 convolution (stride 1, no column padding): the channels' GEMM
  over the positions, each tap whole rows further in the row-padded input (`_column_reason`);
- "direct_channels": a convolution without Winograd (strided, 1 x k, 5x5, too few tiles,
  16-63 channels on a large image) with rows that a tile of 4-17 positions divides:
  direct, output channels as the vector, inputs broadcast (`_direct_channels_reason`);
- "depthwise": one input channel per group;
- "im2col": a strided (or short-reduction narrow) convolution: patches packed, one GEMM;
- "direct": every other convolution (the packed direct kernel).
The TVM cpu backend renders the choice (backends/tvm/lower/winograd.py for Winograd); the
reasons go to graph.metadata[REPORT] (JSON list of {node, algorithm, shape, why}), which
`etch compile --explain` prints.

Preconditions: shapes are static (after import). Invariants: the graph's ops, values and
outputs are unchanged; only the attribute is set, so the reference result is unchanged.
Winograd differs from direct convolution by float rounding only, bounded by
`compiler.winograd.TOLERANCE`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from compiler import winograd
from compiler.ir import Graph, Node
from compiler.ops.etch_ops import kernel_attrs
from passes.base import Pass
from passes.lut_lowering import RESIDENT_SHARE  # the LUT layouts' share, the same cache

ATTR = "conv_algorithm"
CHANNEL_ROWS = 17  # positions of a channels' tile at most (one vector: tiles.CHANNEL_ROWS)
CHANNELS_MIN_REDUCTION = 128  # input channels of a "pointwise_channels" GEMM at least
CHANNEL_TILE_VECTORS = (3, 2, 4)  # vectors of channels of its tiles (tiles.WIDE_CHANNEL_TILES)
CHANNEL_PAD_WASTE = 16  # ... which may pad the channels by 1/16 at most (tiles.PAD_WASTE)
CHANNEL_TILE_POSITIONS = 12  # ... and take up to 12 positions (tiles.WIDE_CHANNEL_TILES)
IMPLICIT_MIN_REDUCTION = 512  # C*KH*KW of an implicit GEMM at least: `_implicit_reason`
SMALL_WINOGRAD_BYTES = 8 << 20  # transformed image of a small-channel Winograd layer at most
IMAGE_MAX_COST = 7.5  # multiply-adds per output and channel pair of image Winograd (direct: 9)
ROW_WASTE = 4  # row tiles padded by 1/4 of their vectors or more take image tiles (`_flat`)
FLAT_MAX_BYTES = 4 << 20  # ... where the transformed image input is at most this
IMAGE_WEIGHT_FMAS = 20  # the cost of streaming one transformed weight, in multiply-adds
CACHED_WEIGHT_FMAS = 5  # ... read from the last-level cache instead (`_image_tile`)
REPORT = "etch.conv_algorithms"
GEMM_VECTORS = "gemm_vectors"  # vectors of positions in a GEMM's tile, where chosen here
TILE_CHANNELS = "tile_channels"  # channels of a direct conv's tile at most, where chosen here
ONE_VECTOR = ("pointwise", "im2col")  # the GEMMs over positions (`conv_gemm.conv_gemm`)
POINTWISE_WHY = "1x1 stride 1: one GEMM over the image"  # and fuse_prologue's
ONE_VECTOR_WHY = "; tiles one vector of positions wide (one 512-bit FMA a cycle)"


@dataclass(frozen=True)
class Layer:
    """What the choice looks at: channels, groups, kernel, stride, dilation, pads, sizes."""

    c: int
    oc: int
    groups: int
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int, ...]
    out: tuple[int, ...]
    n: int = 1  # images in the batch
    weight: str = ""  # the weight's value: layers of one weight share its transformed one


class ChooseConvAlgorithm(Pass):
    """Winograd only with `winograd` (the cpu target); `min_channels` is where the GEMM's
    saving outweighs the transforms. Measured single-threaded on the shared AVX-512 Xeon
    (3x3 conv + bias + ReLU, direct / F(2,3) / F(4,3), timed in turns): 32 ch 16x16
    0.04 / 0.05 / 0.06 ms, 64 ch 56x56 5.3 / 7.9 / 1.3 ms, 128 ch 28x28 5.4 / 1.4 / 1.3 ms,
    512 ch 7x7 11.6 / 15.2 / 31.5 ms (a 7-wide row leaves the vector of tiles mostly empty)."""

    name = "choose_conv_algorithm"

    def __init__(self, winograd: bool = True, min_channels: int = 64, lanes: int = 16,
                 im2col: bool = True, small_channels: int = 16, channels: bool = True,
                 cache_bytes: int | None = None, one_vector_gemm: bool = False) -> None:
        self.winograd, self.min_channels, self.lanes = winograd, min_channels, lanes
        self.im2col, self.small_channels = im2col, small_channels
        self.channels = channels  # the channel-vector kernels ("*_channels") at all
        self.cache_bytes = cache_bytes  # the CPU's last-level cache (None: not known)
        self.room: int | None = None  # cache bytes left for transformed weights (`run`)
        self.transformed: set[tuple[str, int]] = set()  # (weight, m) counted in `room`
        # a CPU that runs one 512-bit FMA a cycle: the positions' GEMM tiles one vector wide
        self.one_vector_gemm = one_vector_gemm and lanes >= 16

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        graph = graph.copy()
        report, changed = [], False
        self.room = None if self.cache_bytes is None else int(
            RESIDENT_SHARE * self.cache_bytes) - sum(
            v.data.nbytes for v in graph.values.values() if v.is_const)
        self.transformed = set()
        for node in graph.nodes:
            layer = _layer(graph, node)
            if layer is None:
                continue
            algorithm, why = self.choose(layer)
            m = int(algorithm[len("winograd_f")]) if algorithm.startswith("winograd_f") else 0
            if self.room is not None and m and (layer.weight, m) not in self.transformed:
                self.room -= _transformed_extra(layer, m)
                self.transformed.add((layer.weight, m))
            changed |= node.attrs.get(ATTR) != algorithm
            node.attrs[ATTR] = algorithm
            changed |= self._gemm_vectors(node, algorithm)
            changed |= self._tile_channels(node, algorithm)
            if GEMM_VECTORS in node.attrs and algorithm in ONE_VECTOR:
                why += ONE_VECTOR_WHY
            report.append({"node": node.name, "algorithm": algorithm, "why": why,
                           "shape": f"{layer.c}->{layer.oc} k{'x'.join(map(str, layer.kernel))}"
                                    f" out {'x'.join(map(str, layer.out))}"})
        if report:
            graph.metadata[REPORT] = json.dumps(report)
        return graph, changed

    def _gemm_vectors(self, node: Node, algorithm: str) -> bool:
        """Record GEMM_VECTORS = 1 on the GEMMs over positions (ONE_VECTOR, and
        "pointwise_channels", which `fuse_prologue` may make "pointwise") where
        `one_vector_gemm`, else none; whether that changed the node.
        `conv_gemm.conv_gemm` renders a tile of one vector of positions by up to 12
        channels (`tiles.gemm_tile`) instead of two vectors by up to 8: on Zen 4, whose
        AVX-512 runs one 512-bit FMA a cycle, 8 or 12 chains keep it busy, the 8 x 1 tile
        (512 bytes) lives on the stack where 8 x 2 was a heap workspace, and a 14x14 or
        13x13 image wastes 6% of its positions instead of 14%. Measured on Zen 4 (one
        thread, each layer alone with bias and Clip, best of 3 processes in turns, two
        vectors -> one): 256->64 on 56x56 1226 -> 1032 us, 64->256 on 56x56 1225 -> 1096,
        512->128 on 28x28 1046 -> 987, 128->512 on 28x28 1053 -> 951, 32->192 on 28x28
        137 -> 117, 96->576 on 14x14 262 -> 236, 112->672 on 14x14 358 -> 327 (ORT 295);
        16 x 1 (a heap tile again) lost to 8 x 1 on each. Whole models (one thread, best of
        3 processes in turns): resnet50 68.8 -> 66.4 ms, densenet121 45.4 -> 43.3,
        mobilenet_v2 -1% (two threads 4.21 -> 3.96 ms), inception_v3, efficientnet_b0 and
        shufflenet_v2 within 1%. Not measured on CPUs that run two 512-bit FMAs a cycle
        (Zen 5, Intel's server cores): they keep two vectors."""
        wanted = self.one_vector_gemm and algorithm in (*ONE_VECTOR, "pointwise_channels")
        return _record(node, GEMM_VECTORS, 1 if wanted else None)

    def _tile_channels(self, node: Node, algorithm: str) -> bool:
        """Record TILE_CHANNELS = 8 on "direct" layers where `one_vector_gemm`, else none;
        whether that changed the node. A direct convolution whose outputs sum 128 products
        or more takes a one-vector tile of 16 channels (`tiles.conv_tile`, measured on
        Zen 5: resnet50's stem 1124 -> 1040 us), a 1 KiB heap workspace; where the CPU
        runs one 512-bit FMA a cycle, 8 channels (512 bytes, on the stack) keep it as busy:
        resnet50's 3->64 7x7 stride-2 stem alone on Zen 4, one thread, best of 3 processes
        in turns, 2330 -> 2189 us (8 x 2 vectors 2637); vit_b16's 16x16 patch conv 2396 ->
        2364."""
        wanted = self.one_vector_gemm and algorithm == "direct"
        return _record(node, TILE_CHANNELS, 8 if wanted else None)

    def choose(self, layer: Layer) -> tuple[str, str]:
        """(algorithm, reason) for one convolution."""
        if layer.groups == layer.c and layer.c > 1:
            return "depthwise", "one input channel per group"
        ones = (1,) * len(layer.kernel)
        if layer.kernel == ones and layer.strides == ones and not any(layer.pads):
            channels = self._channels_reason(layer)
            if channels is None:
                why = ("one vector of them" if layer.oc <= self.lanes else
                       "the positions would not fill whole vectors")
                why = f"{POINTWISE_WHY}, output channels as the vector ({why})"
                return "pointwise_channels", why
            return "pointwise", POINTWISE_WHY
        if self._strided_pointwise(layer) and self._channels_reason(layer) is None:
            return "pointwise_channels", (
                f"1x1 stride {'x'.join(map(str, layer.strides))}: one GEMM over the output "
                "positions, each broadcast from its input position, output channels as the "
                "vector (the positions would not fill whole vectors)")
        reason = self._winograd_reason(layer)
        if reason is None:
            m, image = self._tiling(layer)
            if image:
                tw = winograd.tiles(layer.out[1], m)
                padded = (f" ({tw} tiles of {m}, {_whole(tw, self.lanes)} with their "
                          "vectors' padding)" if tw >= self.lanes // 2 else "")
                cached = ("; its transformed weights stay in the last-level cache with the "
                          "model's" if self._cached(layer, m) else "")
                why = (f"3x3 stride 1, {layer.c}->{layer.oc} channels, rows of "
                       f"{layer.out[1]}{padded}: F({m}, 3) over the image's tiles{cached}")
                return f"winograd_f{m}_image", why
            return f"winograd_f{m}", f"3x3 stride 1, {layer.c}->{layer.oc} channels: F({m}, 3)"
        if self._column_reason(layer) is None:
            return "column_channels", (f"{reason}; a {layer.kernel[0]}x1 kernel: one GEMM over "
                                       "the positions, output channels as the vector, each "
                                       "tap whole rows further")
        if self._direct_channels_reason(layer) is None:
            return "direct_channels", (f"{reason}; an image of {layer.out[0]}x{layer.out[1]}: "
                                       "output channels as the vector, inputs broadcast")
        implicit = self._implicit_reason(layer)
        if implicit is None:
            return "implicit_gemm", f"{reason}; stride 1: one GEMM read from the padded input"
        im2col = self._im2col_reason(layer)
        if im2col is None:
            return "im2col", f"{reason}; strided, narrow or 1 x k: patches packed, one GEMM"
        return "direct", f"{reason}; {im2col}"

    def _channels_reason(self, layer: Layer) -> str | None:
        """None when a pointwise layer's GEMM takes the output channels as its vector
        ("pointwise_channels", backends/tvm/lower/conv_gemm.conv_channels: a tile of 4-17
        positions, a divisor of the image's, by one or two vectors of channels, each input
        value broadcast) instead of the positions ("pointwise": a tile of two vectors of
        positions by up to 8 channels), else why not. The positions' tile pads them to
        whole blocks of two vectors: 49 positions (7x7) to 64, 196 (14x14) to 224, work
        computed and dropped. Measured single-threaded on the AVX-512 Xeon (CPU time, one
        layer with bias and ReLU, ONNX Runtime beside it, etch/ORT, positions -> channels):
        512->2048 on 7x7 1.27 -> 1.06, 2048->512 1.29 -> 1.04, 160->960 1.30 -> 1.12,
        960->160 1.42 -> 1.05; 1024->256 on 14x14 1.30 -> 1.03, 256->1024 1.14 -> 1.03,
        384->64 1.31 -> 0.98; 512->64 on 13x13 1.27 -> 1.12; with at most one vector of
        output channels (and a reduction of 64 or more) also where the positions fill their
        blocks: 64->16 on 55x55 1.61 -> 0.99. Lost: a short reduction, 64->256 on 13x13
        1.16 -> 1.22; and where whole blocks waste nothing, every input row is re-read per
        channel block: 512->128 on 28x28 1.22 -> 1.31, 256->64 on 56x56 1.34 -> 1.65.
        Measured on AVX-512 only: with fewer lanes the positions' tile stays."""
        if not self.channels or self.lanes < 16:
            return "the channels' tile is off, or not measured with these lanes (AVX-512 only)"
        cols = layer.out[0] * layer.out[1]
        if not _fills_channel_tile(layer.oc, self.lanes) or not _tile_rows(cols):
            return (f"{layer.oc} channels do not fill vectors, or {cols} positions have no "
                    f"divisor from 4 to {CHANNEL_ROWS} (a tile's positions)")
        blocks = _whole(cols, 2 * self.lanes)
        if layer.oc <= self.lanes:  # measured with a reduction of 64; shorter ones not
            return None if layer.c >= 64 else "one vector of channels, a reduction under 64"
        if (blocks - cols) * 16 < blocks:
            return "the positions fill their vectors"
        if layer.c < CHANNELS_MIN_REDUCTION:
            return f"a reduction under {CHANNELS_MIN_REDUCTION}"
        return None

    @staticmethod
    def _strided_pointwise(layer: Layer) -> bool:
        """An unpadded, undilated, ungrouped 2-D 1x1 convolution with a stride: the channel
        GEMM ("pointwise_channels", `conv_gemm.conv_channels`) reads each output position's
        input where it lies (a broadcast: no patches packed), where `_channels_reason`
        takes it (positions that would not fill whole vectors). Measured on Zen 5, one
        thread, one layer with bias and ReLU, im2col -> channels: resnet50's 1024->2048
        stride 2 to 7x7 1.14 -> 0.96 ms (ORT 1.10 in its model), 512->1024 to 14x14 0.98
        -> 0.98; 256->512 to 28x28 (whole blocks, not taken) 0.96 -> 1.14."""
        return (layer.kernel == (1, 1) and layer.groups == 1
                and layer.strides != (1, 1) and layer.dilations == (1, 1)
                and not any(layer.pads))

    def _column_reason(self, layer: Layer) -> str | None:
        """None when a KH x 1 convolution (stride 1, undilated, one group, no column
        padding) runs as the channel-vector GEMM over its flattened positions, each of its
        KH taps an offset of whole rows ("column_channels", backends/tvm/lower/conv_gemm.
        conv_channels: a 24-accumulator tile, positions not whole tiles), else why not. The
        direct kernel's tile is a divisor of the row (17x17: one vector of channels by 17
        positions, a broadcast per multiply-add vector: a k x 1 kernel's taps share none).
        Measured on the AVX-512 Xeon (one layer with bias and ReLU, one thread, CPU time,
        ONNX Runtime beside it): 192->192 7x1 on 17x17 1.24 -> 1.13 ORT; inception_v3's 7x1
        layers in the model 4-9% faster each, the model 80.8 -> 80.0 ms (45.9 with two
        threads, where the 160-channel layers' five channel blocks split 3:2 and lost)."""
        if not self.channels or self.lanes < 16:
            return "the channels' tile is off, or not measured with these lanes (AVX-512 only)"
        if (layer.groups, len(layer.kernel)) != (1, 2) or layer.kernel[1] != 1 or \
                layer.kernel[0] == 1:
            return "not a KH x 1 kernel of one group"
        if layer.strides != (1, 1) or layer.dilations != (1, 1) or layer.pads[1] or \
                layer.pads[3]:
            return "strided, dilated or padded along rows"
        if layer.c < self.small_channels:
            return f"under {self.small_channels} input channels (not measured)"
        if not _fills_channel_tile(layer.oc, self.lanes):
            return f"{layer.oc} channels do not fill vectors"
        if layer.out[0] * layer.out[1] < CHANNEL_TILE_POSITIONS:
            return f"under {CHANNEL_TILE_POSITIONS} positions"
        return None

    def _direct_channels_reason(self, layer: Layer) -> str | None:
        """None when a convolution that takes no Winograd runs as a direct convolution with
        the output channels as the vector ("direct_channels", backends/tvm/lower/
        conv_gemm.conv_channels_direct: a tile of 4-17 positions along an output row by one
        or two vectors of channels, each input value broadcast from the padded input, no
        patches packed), else why not. Measured single-threaded on the AVX-512 Xeon (CPU
        time, one layer with bias and ReLU, ONNX Runtime beside it, etch/ORT, the
        algorithm chosen before -> direct_channels): 3x3 stride 2 128->128 on 56x56 1.60 ->
        1.21, 256->256 on 28x28 1.42 -> 1.05, 512->512 on 14x14 1.40 -> 0.94, 96->96 on
        35x35 1.76 -> 1.08, 288->384 VALID on 35x35 1.25 -> 1.05 (im2col); 3x3 512->512 on
        7x7 1.32 -> 0.83 (im2col), 48->192 on 13x13 1.41 -> 1.05 (direct), 64->256 on
        13x13 1.34 -> 0.99, 128->32 on 7x7 / 14x14 / 28x28 1.30 / 1.03 / 1.15 -> 0.82 /
        0.94 / 1.00, 48->64 5x5 on 35x35 1.12 -> 0.93 (implicit GEMM); 192->192 1x7 / 7x1
        on 17x17 1.39 / 1.35 -> 1.17 / 1.28, 384->384 1x3 on 8x8 1.19 -> 1.03. Lost: large
        images, every input row re-read per channel block: 32->64 3x3 on 147x147 1.39 ->
        1.91 (with the output rows before the channel chunks there, 1.44 -> 1.15:
        `conv_gemm_cpu.ROWS_FIRST_BYTES`; so the image size limit went: one thread, ms,
        the algorithm chosen before -> direct_channels rows first: 3x3 stride 2 32->64 to
        112x112 6.41 -> 4.20 (direct), 48->96 to 75x75 9.31 -> 4.46 (direct), 64->128 to
        56x56 4.80 -> 4.12 (im2col); lost: 16->32 5x5 on 64x64 0.65 -> 0.70 (direct)),
        the 3->64 7x7 stride-2 stem (112x112 out) 1.18
        -> 1.57 (under `small_channels`, not chosen); strided 1x1
        projections (no taps to reuse a broadcast over): 256->512 to 28x28 1.05 -> 1.88,
        512->1024 to 14x14 1.01 -> 1.13. Winograd, where it applies, stayed faster (3x3
        256->256 on 14x14 0.64 vs 0.99, 64->64 on 56x56 0.84 vs 1.19)."""
        if not self.channels or self.lanes < 16:
            return "the channels' tile is off, or not measured with these lanes (AVX-512 only)"
        if layer.groups != 1 or len(layer.kernel) != 2:
            return "grouped or not 2-D"
        if layer.kernel == (1, 1):
            return "a 1x1 kernel: no taps share a broadcast"
        if layer.c < self.small_channels:
            return f"under {self.small_channels} input channels (not measured)"
        if layer.oc % self.lanes or not _tile_rows(layer.out[1]):
            return (f"{layer.oc} channels do not fill vectors, or rows of {layer.out[1]} "
                    f"have no divisor from 4 to {CHANNEL_ROWS}")
        return None

    def _im2col_reason(self, layer: Layer) -> str | None:
        """None when the GEMM over packed patches beats the direct kernel, else why not: the
        direct kernel's vector runs along an output row, so a strided layer reads scattered
        inputs, a row narrower than `lanes` leaves the vector partly empty and a 1 x k or
        k x 1 kernel reuses each loaded row little (inception_v3's 128->128 1x7 on 17x17:
        0.63 ms as a GEMM, 0.90 direct, on the AVX-512 Xeon), while the
        GEMM's vector runs along all output positions. Packing the patches costs a gather per
        element, paid for only by enough output channels (the 3-channel stem lost 1.3x)."""
        if not self.im2col or layer.groups != 1 or len(layer.kernel) != 2:
            return "direct convolution"
        if min(layer.c, layer.oc) < self.min_channels:
            return f"under {self.min_channels} channels: packing patches would cost more"
        square = len(set(layer.kernel)) == 1
        if max(layer.strides) == 1 and layer.out[1] >= self.lanes and square:
            return f"rows of {layer.out[1]} fill the direct kernel's vectors"
        return None

    def _implicit_reason(self, layer: Layer) -> str | None:
        """None when the implicit GEMM (backends/tvm/lower/conv_implicit.py) beats the
        others, else why not. It reads each reduction step's vector of positions straight
        from the padded input, numbering positions along the padded width: no patches are
        packed, at the cost of (KW-1)*dilation extra columns per row. Measured single-
        threaded on the AVX-512 Xeon (CPU time, ORT beside it, etch/ORT): 256->256 3x3 14x14
        1.14 (im2col 1.50), 128->32 3x3 on 56/28/14 1.25/1.13/1.04 (direct 1.35/1.25/1.17);
        with short reductions it lost: 32->128 3x3 27x27 1.46 (direct 1.23), 16->64 55x55
        1.40 (direct 1.31), 64->256 13x13 alike (its epilogue is a pass of its own, paid for
        by long reductions). 7-wide rows drop 2/7 of the columns: alone, 512->512 3x3 7x7
        ran at 1.26 (im2col 1.41), but resnet50 as a whole was slower with it (etch/ORT
        1.37 against 1.29, twice in turns), so rows must be 6 (KW-1) dilations wide.
        inception_v3's 7x1 on 17x17 (nothing dropped), 128 / 192 channels: 1.31 / 1.27
        (im2col 1.80 / 1.59); its 48->64 5x5 on 35x35 1.12 (direct 1.84)."""
        if not self.im2col or layer.groups != 1 or len(layer.kernel) != 2:
            return "direct convolution"
        if layer.strides != (1, 1):
            return "strided"
        if layer.c * layer.kernel[0] * layer.kernel[1] < IMPLICIT_MIN_REDUCTION:
            return f"under {IMPLICIT_MIN_REDUCTION} multiply-adds per output"
        if 6 * (layer.kernel[1] - 1) * layer.dilations[1] > layer.out[1]:
            return "rows too narrow: over 1/6 of the implicit GEMM's columns dropped"
        return None

    def _winograd_reason(self, layer: Layer) -> str | None:
        """None when Winograd applies, else why not."""
        if not self.winograd:
            return "Winograd is off for this target"
        if len(layer.kernel) != 2 or layer.kernel != (3, 3):
            return "not a 3x3 kernel"
        if layer.strides != (1, 1) or layer.dilations != (1, 1) or layer.groups != 1:
            return "strided, dilated or grouped"
        if min(layer.c, layer.oc) < self.small_channels:
            return f"under {self.small_channels} channels: the transforms would cost more"
        if winograd.tiles(layer.out[1], 2) < self.lanes // 2 and self._image_tile(layer) is None:
            return (f"rows of {layer.out[1]} outputs: too few tiles to fill a vector (and "
                    f"over the image's tiles: under {self.min_channels} output channels, or "
                    "too many tiles for one vector or too costly to pad)")
        if min(layer.c, layer.oc) < self.min_channels:
            return self._small_reason(layer)
        return None

    def _small_reason(self, layer: Layer) -> str | None:
        """None when a layer of `small_channels` to `min_channels` channels takes Winograd,
        else why not: one image's transformed input and output ((C + OC) x (m + 2)^2 x tiles
        floats) must fit SMALL_WINOGRAD_BYTES. Its GEMM's reduction or width is short, so
        the transforms' memory traffic is not hidden once it spills. Measured single-
        threaded on Zen 4 (kernel CPU time, direct or implicit GEMM -> Winograd):
        squeezenet1_1's 16->64 on 55x55 1.24 -> 0.95 ms and 32->128 on 27x27 1.17 -> 0.73
        (2 layers each), densenet121's 128->32 on 56x56 12.6 -> 6.6 ms (6 layers) and on
        28x28 6.7 -> 4.4 (12), 32->64 on 56x56 1.22 -> 0.67, on 112x112 (10.3 MiB) 4.17 ->
        3.61; lost: inception_v3's 32->32 and 32->64 on 147x147 (12.0 and 18.0 MiB) 4.5 ->
        7.0 and 8.5 -> 11.3 ms; even: 32->32 on 16x16, 16->32 on 32x32 (0.11 -> 0.12). The
        bound is below the smallest loss, with room: the first win past it is given up.
        With 16 lanes, row tiles of `min_channels` or more output channels whose transformed
        input alone passes `winograd.CHUNK_BYTES` take it whatever their size: the cpu
        kernel then runs chunk by chunk of tile rows, every stage in L2 (`winograd_cpu.
        _fused_chunks`). Measured on Zen 5, one thread, each layer alone, kernel CPU time,
        direct_channels -> fused Winograd: inception_v3's 32->64 on 147x147 3.48-3.71 ->
        2.43-3.04 ms (ORT 2.9 in its model); its 32->32 on 147x147 stayed even (1.71-1.84
        -> 1.71-1.96: with as few output channels as input ones, the input transform is a
        third of the kernel), so fewer output channels keep the direct kernel."""
        m, image = self._tiling(layer)
        tiles = winograd.tiles(layer.out[0], m) * winograd.tiles(layer.out[1], m)
        if image:
            tiles = _whole(tiles, min(8, self.lanes))
        size = (layer.c + layer.oc) * (m + 2) ** 2 * tiles * 4
        if not image and self.lanes >= 16 and layer.oc >= self.min_channels and \
                layer.c * (m + 2) ** 2 * tiles * 4 > winograd.CHUNK_BYTES:
            return None  # made, multiplied and transformed back chunk by chunk, in L2
        if size > SMALL_WINOGRAD_BYTES:
            return (f"under {self.min_channels} channels with a transformed image of "
                    f"{size / (1 << 20):.1f} MiB: the transforms would cost more")
        return None

    def _tiling(self, layer: Layer) -> tuple[int, bool]:
        """(m, image tiles): F(4, 3) along rows when a row has at least `lanes` / 2 tiles of
        4 (the vector of tiles is mostly full), else F(2, 3) when it has that many tiles of
        2, else over the image's tiles (`_image_tile`); over the image's tiles too where the
        rows' tiles would pad badly (`_flat`)."""
        for m in (4, 2):
            if winograd.tiles(layer.out[1], m) >= self.lanes // 2:
                return m, self._flat(layer, m)
        m = self._image_tile(layer)
        assert m is not None, "checked by _winograd_reason"
        return m, True

    def _flat(self, layer: Layer, m: int) -> bool:
        """Whether F(m, 3) with rows long enough for a vector of tiles still runs over the
        image's tiles (one vector axis through all of them, padded once at the image's end):
        where a row's tiles pad to whole vectors by 1/ROW_WASTE or more and the image's
        tiles pad less (to two vectors), with a transformed input of at most FLAT_MAX_BYTES
        (past it the row tiles' GEMM runs in chunks of rows that stay in L2). inception_v3's
        71x71 (18 tiles of 4 a row, padded to 32) and 35x35 (9, to 16) layers computed 44%
        padding tiles. Measured on the AVX-512 Xeon (one layer with bias and ReLU, one
        thread, CPU time, ONNX Runtime beside it, rows -> image tiles): 80->192 on 71x71
        6.81 -> 4.73 ms (ORT 7.71), 64->96 on 35x35 0.77 -> 0.53 (ORT 0.78), 96->96 1.08 ->
        0.73 (ORT 1.10). Measured with 16 lanes only (AVX2 keeps the rows' tiles)."""
        if self.lanes < 16:
            return False
        th, tw = winograd.tiles(layer.out[0], m), winograd.tiles(layer.out[1], m)
        row = _whole(tw, self.lanes)
        image = _whole(th * tw, 2 * self.lanes)
        size = layer.c * (m + 2) ** 2 * image * 4
        return (row - tw) * ROW_WASTE >= row and th * row > image and size <= FLAT_MAX_BYTES

    def _image_tile(self, layer: Layer) -> int | None:
        """m of image-tiled Winograd, else None: the tile of least cost per output and
        channel pair, (m+2)^2 x (tiles + IMAGE_WEIGHT_FMAS / images) / outputs (the tiles
        padded to the kernel's vector block, `min(8, lanes)`), among those whose tiles fit
        one vector and pad to whole tile rows (the input transform runs along a row), if at
        most IMAGE_MAX_COST (direct: 9), for layers of `min_channels` or more output
        channels. Each transformed weight, (m+2)^2 / 9 times the weight's size, serves only
        one vector of tiles per image, so at batch 1 streaming it from memory costs about as
        much as the multiplies: on the AVX-512 Xeon (one core streams ~16 GB/s and does ~86
        G multiply-adds/s) a float costs ~20 multiply-adds. With 16 lanes at batch 1: 14x14
        F(4, 3) 6.9 (16 tiles); 13x13 F(4, 3) 8.0, 8x8 F(2, 3) 9.4, 7x7 F(2, 3) 12.2: not
        taken; at batch 8 they cost 4.0, 4.7 and 6.1. Measured single-threaded on the Xeon
        (implicit GEMM or im2col -> image Winograd, per call, CPU time), a chain of six
        256->256 14x14 layers (resnet50's; 56 MB of transformed weights, none cached): 1.33
        -> 1.02 ms at batch 1 (cost 6.9 / 9 = 0.77), 11 -> 6.7 ms at batch 8; vgg16's
        512->512 on 14x14 in the model 6.1 -> 5.0 ms; four 512->512 7x7 layers at batch 1:
        even to 1.3x slower (cost 12.2). With the weights cached (one layer timed alone)
        every one of these wins (7x7 1.93 -> 1.05 ms; inception_v3's 448->384 on 8x8 1.33
        -> 0.76; squeezenet1_1's 64->256 on 13x13 0.38 -> 0.23), but a model's weights are
        not. densenet121's 128->32 on 14x14 lost even so (0.097 -> 0.11 ms): 32 output
        channels do not pay for the input transform."""
        if layer.oc < self.min_channels:
            return None
        best = None
        for m in winograd.TILES:
            th, tw = winograd.tiles(layer.out[0], m), winograd.tiles(layer.out[1], m)
            padded = _whole(th * tw, min(8, self.lanes))
            if th * tw > self.lanes or padded % tw:
                continue
            weight = CACHED_WEIGHT_FMAS if self._cached(layer, m) else IMAGE_WEIGHT_FMAS
            cost = (m + 2) ** 2 * (padded + weight / layer.n) / (layer.out[0] * layer.out[1])
            if cost <= IMAGE_MAX_COST and (best is None or cost < best[0]):
                best = (cost, m)
        return None if best is None else best[1]

    def _cached(self, layer: Layer, m: int) -> bool:
        """Whether F(m, 3)'s transformed weights of `layer` stay in the last-level cache
        between calls: the model's weights and the Winograd layers' transformed ones chosen
        so far leave `room` for them within RESIDENT_SHARE of the cache (as the LUT layouts'
        `resides`), or they are there already (the images of a split batch share a weight
        and its transformed copy). Then a transformed weight is read from the cache, not
        from memory, and costs CACHED_WEIGHT_FMAS. squeezenet1_1 (4.7 MiB of weights, 7.4
        MiB more transformed) on Zen 4 (32 MiB L3): its four 48->192 and 64->256 3x3 layers
        on 13x13 (cost 7.7 from memory, 4.5 cached) take F(4, 3) over the image's tiles in
        place of the channel-vector direct kernel; the model, best of 4-6 in turns, ms:
        batch 1 one thread 7.56 -> 6.64, two threads 4.11 -> 3.96; batch 8 (split into
        images) 59.0 -> 53.2 and 33.7 -> 32.6 (the Xeon's one-layer A/B with the weights
        cached, above: 0.38 -> 0.23 ms)."""
        return self.room is not None and ((layer.weight, m) in self.transformed or
                                          _transformed_extra(layer, m) <= self.room)


def _transformed_extra(layer: Layer, m: int) -> int:
    """Bytes F(m, 3)'s transformed weight of `layer` takes beyond the weight itself."""
    return layer.c * layer.oc * ((m + 2) ** 2 - 9) * 4


def _tile_rows(positions: int) -> bool:
    """Whether a channels' tile has a count of positions for `positions` (a divisor from 4
    to CHANNEL_ROWS; backends/tvm/schedules/tiles.channel_tile picks it)."""
    return any(positions % r == 0 for r in range(4, CHANNEL_ROWS + 1))


def _fills_channel_tile(oc: int, lanes: int) -> bool:
    """Whether `oc` output channels fill the vectors of a channel-vector GEMM tile: a
    multiple of the vector, or padded to one of CHANNEL_TILE_VECTORS vectors by at most
    1/CHANNEL_PAD_WASTE of them (backends/tvm/schedules/tiles.gemm_channel_tile: 1000 ->
    1008, 232 -> 240)."""
    return oc % lanes == 0 or any((_whole(oc, v * lanes) - oc) * CHANNEL_PAD_WASTE <= oc
                                  for v in CHANNEL_TILE_VECTORS)


def _whole(n: int, block: int) -> int:
    """n rounded up to a multiple of block."""
    return -(-n // block) * block


def _record(node: Node, key: str, value: int | None) -> bool:
    """Set node attribute `key` to `value` (None: remove it); whether that changed it."""
    if value is None:
        return node.attrs.pop(key, None) is not None
    changed = node.attrs.get(key) != value
    node.attrs[key] = value
    return changed


def _layer(graph: Graph, node: Node) -> Layer | None:
    """The Layer of a Conv or Conv-anchored etch.Fused with a constant weight, else None."""
    if node.op == "Conv":
        attrs = node.attrs
    elif node.op == "etch.Fused" and node.attrs.get("kernel") == "Conv":
        attrs = kernel_attrs(node.attrs)
    else:
        return None
    w = graph.values[node.inputs[1]]
    out = graph.values[node.outputs[0]].shape
    if w.data is None or len(out) < 3 or attrs.get("auto_pad", "NOTSET") != "NOTSET":
        return None
    rank = len(out) - 2
    return Layer(c=w.shape[1] * int(attrs.get("group", 1)), oc=w.shape[0],
                 groups=int(attrs.get("group", 1)), kernel=tuple(w.shape[2:]),
                 strides=tuple(attrs.get("strides", [1] * rank)),
                 dilations=tuple(attrs.get("dilations", [1] * rank)),
                 pads=tuple(attrs.get("pads", [0] * 2 * rank)), out=tuple(out[2:]),
                 n=int(out[0]), weight=node.inputs[1])


def explain(reports: dict[str, str]) -> str:
    """The per-layer choices for `etch compile --explain` ("" when the pass did not run)."""
    if REPORT not in reports:
        return ""
    rows = json.loads(reports[REPORT])
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["algorithm"]] = counts.get(r["algorithm"], 0) + 1
    lines = ["conv algorithms: " + ", ".join(f"{a} x{k}" for a, k in sorted(counts.items()))]
    lines += [f"  {r['node']:<32} {r['algorithm']:<12} {r['shape']:<28} {r['why']}"
              for r in rows]
    return "\n".join(lines)
