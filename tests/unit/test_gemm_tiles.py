"""tiles.gemm_tile / gemm_chunk: the register tile and panel chunk of a GEMM convolution."""

from __future__ import annotations

import pytest

from backends.tvm.schedules import tiles


@pytest.mark.parametrize("rows,cols,reduce,lanes,want", [
    (512, 49, 4608, 16, (4, 64)),   # 7x7, long reduction: one block of all 49 positions
    (512, 49, 256, 16, (4, 64)),    # short reduction, 6 does not divide 512: 16 accumulators
    (128, 3136, 2048, 16, (8, 32)), # 8 x 2 zmm accumulators
    (128, 3136, 64, 16, (8, 32)),   # short reduction: 8 x 2 zmm, not 4 x 2
    (24, 3136, 96, 16, (6, 32)),    # 6 divides the rows: 6 x 2, a stack tile
    (16, 12544, 32, 16, (4, 32)),   # few rows, K under 64: 4 x 2
    (32, 729, 256, 16, (4, 32)),    # 32 rows: 4 x 2
    (64, 3136, 256, 16, (8, 32)),   # resnet50's 256->64 pointwise (was 4 x 2)
    (192, 784, 64, 8, (6, 16)),     # AVX2: 12 accumulators, 6 x 2 ymm
    (70, 196, 576, 16, (2, 32)),    # 70 = 2 x 35 (8 and 4 do not divide it)
    (3, 196, 576, 16, (4, 32)),     # fewer rows than any divisor: padded to 4
    (64, 49, 576, 8, (4, 16)),      # AVX2: 16 registers, 4 x 2 ymm
    (64, 9, 64, 16, (8, 16)),       # one vector of positions, 8 channels
])
def test_gemm_tile(rows: int, cols: int, reduce: int, lanes: int, want: tuple) -> None:
    ocb, vw = tiles.gemm_tile(rows, cols, reduce, lanes)
    assert (ocb, vw) == want
    assert vw % min(8, lanes) == 0 and ocb * -(-vw // lanes) <= 16


def test_gemm_chunk_keeps_the_panel_in_l2_in_the_fewest_chunks() -> None:
    assert tiles.gemm_chunk(64, 32, 98) == 49  # 8 KiB per block: two chunks of 49
    assert tiles.gemm_chunk(4608, 32, 2) == 1  # 576 KiB per block
    assert tiles.gemm_chunk(256, 32, 7) == 7   # 7 blocks of 32 KiB
    # a prime count (inception_v3's 73 x 73 positions: 167 blocks of 32) is not one block a
    # chunk but two chunks of 84, the GEMM padding its blocks to 168
    assert tiles.gemm_chunk(64, 32, 167, 1 << 20) == 84
    # resnet50's 1024->256 on 14x14: no even split within 512 KiB; one chunk within 1 MiB
    assert tiles.gemm_chunk(1024, 32, 7) == 1
    assert tiles.gemm_chunk(1024, 32, 7, tiles.panel_bytes(16)) == 7
    assert tiles.panel_bytes(8) == tiles.PANEL_BYTES  # AVX2 (Zen 3: 512 KiB of L2)
    for reduce, blocks in ((64, 98), (300, 13), (9, 1)):
        chunk = tiles.gemm_chunk(reduce, 32, blocks)
        assert blocks % chunk == 0 and (chunk == 1 or chunk * reduce * 128 <= tiles.PANEL_BYTES)


@pytest.mark.parametrize("out_w,lanes,want", [
    (17, 16, 32), (24, 16, 32),  # more than one zmm: whole vectors (24 lanes ran 8-27x slower)
    (14, 16, 16), (8, 16, 8),    # one vector or less: padded to 8
    (12, 8, 16), (56, 16, 32),   # AVX2 pads to 8-lane vectors; wide rows: two vectors
])
def test_conv_tile_columns_are_whole_vectors(out_w: int, lanes: int, want: int) -> None:
    """The direct and Winograd kernels' vector of columns (or tiles) is whole vectors."""
    assert tiles.conv_tile(64, out_w, lanes)[1] == want


@pytest.mark.parametrize("oc,out_w,reduction,want", [
    (64, 112, 147, (16, 16)),  # resnet50's 7x7 stem: 16 FMA chains (8 left no slack)
    (768, 14, 768, (16, 16)),  # vit_b16's patch conv
    (32, 112, 27, (8, 16)),    # mobilenet_v2's stem: too short a reduction to pay
    (40, 112, 147, (8, 16)),   # 16 does not divide 40
    (64, 56, 576, (8, 32)),    # two vectors: 8 x 2 as before
])
def test_long_one_vector_tiles_take_16_channels(oc: int, out_w: int, reduction: int,
                                                want: tuple) -> None:
    assert tiles.conv_tile(oc, out_w, 16, tiles.acc_budget(16), reduction) == want
    assert tiles.conv_tile(oc, out_w, 8, tiles.acc_budget(8), reduction)[0] <= 8  # AVX2


@pytest.mark.parametrize("oc,out_w,lanes,want", [
    (32, 56, 16, (8, 32)),  # AVX-512: 8 channels x 2 zmm (16 of 32 registers)
    (32, 48, 8, (4, 16)),   # AVX2: 4 x 2 ymm (12 of 16 at most)
    (48, 13, 16, (8, 16)),  # one vector, a short reduction: 8 channels (a 512-byte tile)
    (6, 40, 16, (6, 32)),   # 6 x 2 zmm: 6 divides the channels
])
def test_conv_tile_with_the_isas_accumulator_budget(oc: int, out_w: int, lanes: int,
                                                    want: tuple) -> None:
    assert tiles.conv_tile(oc, out_w, lanes, tiles.acc_budget(lanes)) == want
    assert tiles.conv_tile(32, 56, 16) == (4, 32)  # the default budget: AVX2's


@pytest.mark.parametrize("out_h,vw,lanes,want", [
    (7, 8, 16, 7), (14, 16, 16, 7), (28, 32, 16, 4), (112, 32, 16, 4), (56, 32, 8, 2),  # AVX2: 4 ymm a row
    (13, 16, 16, 1),  # a prime height: one row a tile
])
def test_depthwise_rows_divide_the_height_within_the_budget(out_h: int, vw: int, lanes: int,
                                                            want: int) -> None:
    rows = tiles.depthwise_rows(out_h, vw, lanes)
    assert rows == want and out_h % rows == 0
    assert rows * -(-vw // lanes) <= tiles.MAX_ACC_VECTORS


@pytest.mark.parametrize("ocpg,nvec,budget,registers,want", [
    (64, 4, 24, 32, (8, 2)),    # resnet50's 56-wide rows: was 4 x 4, ~10% slower; 12 x 2
                                # saves less than its tail tile costs (TAIL_COST)
    (64, 14, 24, 32, (8, 2)),   # 224-wide rows
    (512, 1, 24, 32, (16, 1)),  # one vector a row
    (48, 1, 24, 32, (24, 1)),
    (29, 4, 24, 32, (12, 2)),   # a prime channel count: 12 + 12 + 5
    (12, 5, 24, 32, (12, 2)),   # 5 vectors: 2 + 2 + 1
    (16, 1, 12, 16, (8, 1)),    # AVX2 with AVX-VNNI: 16 ymm hold 12 accumulators + 2
    (10, 1, 24, 32, (10, 1)),
])
def test_vnni_conv_tile_is_the_cheapest_over_the_conv(ocpg: int, nvec: int, budget: int,
                                                      registers: int, want: tuple) -> None:
    """`int_cpu.conv_tile` for vpdpbusd: any sizes within the accumulator budget and the
    registers, the least total of `vnni_step_cycles` over the tiles (last ones narrower)."""
    from backends.tvm.schedules import int_cpu

    got = int_cpu.conv_tile(ocpg, nvec, budget, "vnni", registers)
    assert got == want
    b, v = got
    assert b * v <= budget and b * v + v + 1 <= registers
    # the other dot steps keep divisors and the port model
    b, v = int_cpu.conv_tile(64, 4, 16, "madd")
    assert 64 % b == 0 and 4 % v == 0


def test_vnni_step_cycles_follow_the_measured_ranking() -> None:
    """The step model ranks tile shapes as measured on the Xeon: 24 chains with few
    activation vectors best, then 8x2, 4x4, and short chains latency-bound."""
    from backends.tvm.schedules.int_cpu import vnni_step_cycles

    per_dot = {t: vnni_step_cycles(*t) / (t[0] * t[1]) for t in
               [(12, 2), (6, 4), (8, 2), (4, 4), (2, 2), (1, 1)]}
    assert per_dot[(12, 2)] < per_dot[(8, 2)] < per_dot[(4, 4)] < per_dot[(2, 2)] < \
        per_dot[(1, 1)]
    assert per_dot[(6, 4)] < per_dot[(4, 4)]


@pytest.mark.parametrize("channels, cols, lanes, want", [
    (192, 289, 16, (48, 8)),   # 17x17: 3 zmm x 8 positions, the last tile one position
    (128, 289, 16, (32, 12)),  # 2 x 12 where 48 does not divide the channels
    (64, 169, 16, (32, 12)),   # 13x13
    (256, 196, 16, (32, 12)),  # 14x14 (was 2 x 7)
    (16, 49, 16, (16, 7)),     # one vector of channels: a divisor of the positions, as before
    (32, 8, 16, (32, 4)),      # fewer positions than the tile: the divisor tile, as before
    (192, 289, 8, None),       # AVX2: the divisor tile, as before (none for 289 there)
    (1000, 169, 16, (48, 8)),  # squeezenet1_1's classifier: padded to 1008 (1/125)
    (232, 49, 16, (48, 8)),    # shufflenet_v2: padded to 240
    (200, 49, 16, None),       # 1/8 or more padding with any tile: none
])
def test_gemm_channel_tile_takes_24_accumulators_on_avx512(channels: int, cols: int,
                                                           lanes: int, want) -> None:
    """`tiles.gemm_channel_tile`: on AVX-512 the first of 3 x 8, 2 x 12, 4 x 6 whose vectors
    the channels fill, the positions not necessarily whole tiles; or, where none fills
    them, the first that pads them by 1/16 at most; else `channel_tile`."""
    from backends.tvm.schedules import tiles

    assert tiles.gemm_channel_tile(channels, cols, lanes) == \
        (want if want is not None else tiles.channel_tile(channels, cols, lanes))


@pytest.mark.parametrize("channels, cols, lanes, want", [
    (192, 17, 16, (32, 9)),   # inception_v3's 1x7 on 17x17: 9 + a partial block of 8
    (160, 17, 16, (32, 9)),
    (128, 28, 16, (32, 7)),   # four blocks of 7
    (48, 17, 16, None),       # channels that two vectors do not fill: as before
    (192, 8, 16, None),       # a row of one block: as before
    (192, 17, 8, None),       # AVX2: as before
])
def test_row_channel_tile_takes_two_vectors_by_a_cut_row(channels: int, cols: int,
                                                         lanes: int, want) -> None:
    """`tiles.row_channel_tile` (1 x k kernels): on AVX-512, 2 vectors of channels by the
    row cut into the fewest blocks of at most 9 positions, the last partial; else
    `channel_tile`."""
    from backends.tvm.schedules import tiles

    assert tiles.row_channel_tile(channels, cols, lanes) == \
        (want if want is not None else tiles.channel_tile(channels, cols, lanes))
