"""The cpu backend renders `conv_algorithm = winograd_f4 / winograd_f2` (chosen by
passes/choose_conv_algorithm.py) as the Winograd kernel: one compiled model holds an F(4, 3)
layer (a 32-wide image) and an F(2, 3) layer (16 wide) with bias, ReLU and an edge tile that
is partly outside the image; results match ONNX Runtime and the direct convolution within
`compiler.winograd.TOLERANCE`, and `--explain` lists each layer's algorithm."""

from __future__ import annotations

import numpy as np
import pytest

import compiler
from compiler import winograd
from compiler.errors import EtchError
from tests.golden import run_ort
from tests.passes.test_choose_conv_algorithm import conv_model


@pytest.fixture(scope="module")
def built():
    model, shape = conv_model([("wide", 64, 3, {}), ("down", 64, 3, {"strides": [2, 2]}),
                               ("small", 64, 3, {})], 64, 6, 31)
    art = compiler.compile(model, target="cpu")
    return model, shape, art


def test_winograd_layers_match_onnx_runtime(built) -> None:
    model, shape, art = built
    assert art.manifest["schedules"].get("WinogradConv") == 2
    x = {"x": np.random.default_rng(0).normal(size=shape).astype(np.float32)}
    (name, want), = run_ort(model, x).items()
    got = art.run(x)[name]
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 2 * winograd.TOLERANCE[4] * np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())


def test_explain_lists_the_algorithm_of_each_layer(built) -> None:
    text, lanes = built[2].explain(), built[2].manifest["vector_lanes"]
    down = "direct_channels" if lanes >= 16 else "im2col"  # the stride-2 layer, 3x16 out
    assert f"conv algorithms: {down} x1, winograd_f2 x1, winograd_f4 x1" in text
    assert "F(4, 3)" in text and "F(2, 3)" in text


def test_a_recorded_winograd_the_kernel_cannot_build_is_an_error() -> None:
    from backends.tvm.lower import winograd as lowering

    with pytest.raises(EtchError, match="F\\(2, 3\\) and F\\(4, 3\\)"):
        lowering.tile_size("winograd_f6")
    with pytest.raises(EtchError, match="row or image tiles"):
        lowering.tile_size("winograd_f4_column")
    assert lowering.tile_size("winograd_f2_image") == (2, True)


@pytest.mark.parametrize("isa_name,register,size", [("avx512", "zmm", (4, 64)),
                                                     ("avx2", "ymm", (4, 64)),
                                                     ("avx512", "zmm", (14, 14))])
def test_winograd_gemm_uses_the_full_vector_width(isa_name: str, register: str,
                                                  size: tuple[int, int]) -> None:
    """Compiled for a named CPU (not the host): a 64-wide image has 16 tiles of 4 per row,
    one full AVX-512 vector (two AVX2 ones) per multiply-add of the transformed GEMM; so does
    a 14x14 image's 4 x 4 tiles over the image."""
    import re

    from compiler import onnx_import
    from passes.choose_conv_algorithm import ChooseConvAlgorithm
    from tests.backends import isa

    model, _ = conv_model([("wide", 64, 3, {})], 64, *size)
    lanes = {"avx512": 16, "avx2": 8}[isa_name]
    graph = ChooseConvAlgorithm(lanes=lanes).run(onnx_import.import_model(model))[0]
    asm = isa.compile_graph(graph, isa_name)
    (code,) = asm.of_kind("winograd_conv2d").values()
    assert re.search(rf"vfmadd\w*ps\s+[^\n]*%{register}", code)


def test_image_tiled_winograd_matches_onnx_runtime() -> None:
    """Rows too short for a vector of tiles: a 13x13 layer takes F(4, 3) over the image's
    4 x 4 tiles (the last tile row and column mostly outside it), a 7x7 one F(2, 3) over
    its 16 tiles; a batch of four images (one vector of tiles each, sharing the transformed
    weights), bias and ReLU; within Winograd's tolerance of ONNX Runtime."""
    from tests.passes.test_choose_conv_algorithm import conv_model

    model, (_, c, h, w) = conv_model([("a", 64, 3, {}), ("down", 64, 3, {"strides": [2, 2]}),
                                      ("b", 64, 3, {})], 48, 13, 13)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4
    art = compiler.compile(model, target="cpu")
    text = art.explain()
    assert "winograd_f2_image x1" in text and "winograd_f4_image x1" in text, text
    x = {"x": np.random.default_rng(1).normal(size=(4, c, h, w)).astype(np.float32)}
    (name, want), = run_ort(model, x).items()
    got = art.run(x)[name]
    assert got.shape == want.shape == (4, 64, 7, 7)
    assert np.abs(got - want).max() <= 2 * winograd.TOLERANCE[4] * np.abs(want).max()


def test_rows_that_pad_badly_take_the_images_tiles() -> None:
    """inception_v3's 35x35 layers (rows of 9 tiles of 4, padded to 16) take F(4, 3) over
    the image's 81 tiles instead (padded once, to 96 with 16 lanes), so the tile count
    is no multiple of a row's: the input transform runs whole tile rows past the GEMM's
    last vector; a batch of two with bias and ReLU within Winograd's tolerance of ONNX
    Runtime. The pass keeps rows for 56x56 (14 tiles, padded to 16), for 71x71 with 256
    input channels (a transformed input past 4 MiB) and with 8 lanes (not measured)."""
    from compiler import onnx_import
    from passes.choose_conv_algorithm import ChooseConvAlgorithm, Layer
    from tests.passes.test_choose_conv_algorithm import conv_model

    def algorithm(c: int, oc: int, size: int) -> str:
        return ChooseConvAlgorithm(lanes=16).choose(Layer(
            c=c, oc=oc, groups=1, kernel=(3, 3), strides=(1, 1), dilations=(1, 1),
            pads=(0,) * 4, out=(size, size)))[0]

    assert algorithm(80, 192, 71) == algorithm(96, 96, 35) == "winograd_f4_image"
    assert "rows of 71 (18 tiles of 4, 32 with their vectors' padding)" in \
        ChooseConvAlgorithm(lanes=16).choose(Layer(
            c=80, oc=192, groups=1, kernel=(3, 3), strides=(1, 1), dilations=(1, 1),
            pads=(0,) * 4, out=(71, 71)))[1]
    assert algorithm(64, 64, 56) == algorithm(256, 192, 71) == "winograd_f4"
    model, (_, c, h, w) = conv_model([("a", 96, 3, {})], 64, 35, 35)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2
    graph = ChooseConvAlgorithm(lanes=8).run(onnx_import.import_model(model))[0]
    assert "winograd_f4_image" not in graph.metadata["etch.conv_algorithms"]  # not on AVX2
    art = compiler.compile(model, target="cpu")  # image tiles on an AVX-512 host
    wide = art.manifest["vector_lanes"] >= 16
    assert f"winograd_f4{'_image' if wide else ''} x1" in art.explain()
    # the kernel's schedule note in --explain
    assert f"of {'an image' if wide else 'a row'}'s tiles" in art.explain(), art.explain()
    x = {"x": np.random.default_rng(3).normal(size=(2, c, h, w)).astype(np.float32)}
    (name, want), = run_ort(model, x).items()
    got = art.run(x)[name]
    assert got.shape == want.shape == (2, 96, 35, 35)
    assert np.abs(got - want).max() <= 2 * winograd.TOLERANCE[4] * np.abs(want).max()


def test_a_large_transformed_input_is_made_chunk_by_chunk() -> None:
    """A 112x112 64-channel layer's transformed input (8.3 MB, its weight 0.6 MB) is made
    and used chunk by chunk of tile rows (`winograd_cpu.chunked`), within Winograd's
    tolerance of ONNX Runtime; a transformed input no larger than twice the weight, or
    small, is made whole."""
    from backends.tvm.schedules.winograd_cpu import chunked
    from tests.passes.test_choose_conv_algorithm import conv_model

    assert chunked(33 << 20, 600 << 10) and chunked(59 << 20, 17 << 20)
    assert not chunked(8 << 20, 9 << 20) and not chunked(9 << 20, 38 << 20)
    assert not chunked(3 << 20, 1 << 10)
    model, shape = conv_model([("a", 64, 3, {})], 64, 112, 112)
    art = compiler.compile(model, target="cpu")
    assert "winograd_f4 x1" in art.explain()
    assert "WinogradConv, F(4, 3)" in art.explain()  # its own rule, not a generic fallback
    x = {"x": np.random.default_rng(2).normal(size=shape).astype(np.float32)}
    (name, want), = run_ort(model, x).items()
    got = art.run(x)[name]
    assert np.abs(got - want).max() <= 2 * winograd.TOLERANCE[4] * np.abs(want).max()


def _scheduled_for_znver4(model, threads: int = 1, cache_bytes: int | None = None):
    """The model's Winograd kernels as built for Zen 4 (16 lanes), whatever the host;
    `cache_bytes`: the last-level cache the conv pass is told of (None: as --mcpu gives)."""
    import tvm

    from backends.tvm import lower, schedules
    from backends.tvm import target as targets
    from compiler import onnx_import, pipeline
    from compiler.options import CompileOptions
    from passes.choose_conv_algorithm import ChooseConvAlgorithm

    opts = CompileOptions(target="cpu", mcpu="znver4", threads=threads)
    graph = onnx_import.import_model(model)
    for p in pipeline.passes_for(opts):
        if cache_bytes is not None and isinstance(p, ChooseConvAlgorithm):
            p.cache_bytes = cache_bytes
        graph = p.run(graph)[0]
    target = tvm.target.Target(targets.cpu_target(opts)[0])
    mod = schedules.apply_rules(lower.to_irmodule(graph, pack=True, lanes=16), target)
    return [f for _, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)
            and str(f.attrs.get("etch.kind", "")) == "winograd_conv2d"]


@pytest.mark.parametrize("channels, out, size, loops", [(16, 64, 55, 4), (32, 64, 55, 4),
                                                       (48, 192, 13, 4)])
def test_mid_size_winograd_transforms_run_in_parallel(channels: int, out: int, size: int,
                                                      loops: int) -> None:
    """squeezenet1_1's 16->64 3x3 on 55x55 (F(4, 3)): its input transform (113k values),
    output transform (200k) and epilogue (194k) run in parallel (the output transform of
    each output plane inside the epilogue's loop since it reads the tiles as whole vectors) (from
    PARALLEL_MIN_ELEMENTS: under the GEMMs' 1M they ran on one thread while the other
    waited, and the layer took 362 us with two threads against 395 with one; 294 after), and
    two threads match ONNX Runtime within Winograd's tolerance. Its zero-padded input (16 x
    58 x 58, 54k values; 108k with 32 channels) is copied in parallel too
    (PARALLEL_PAD_ELEMENTS, 16k; 256k kept copies of up to 1 MB on one thread). Its 48->192
    on 13x13 (an image's tiles): the input transform (27.6k values) and epilogue (32k) in
    parallel as well (under 64k they ran on one thread: the layer 1.35-1.41x slower with two
    threads on Zen 5), and its padded input (48 x 18 rows of 4 x 5, 17k values) copied in
    parallel."""
    from backends.tvm import schedules

    model, shape = conv_model([("mid", out, 3, {})], channels, size, size)
    # the model's weights cached, as on Zen 4's L3
    [func] = _scheduled_for_znver4(model, threads=2, cache_bytes=32 << 20)
    # the padded copy, the GEMM, the input transform and the epilogue: four parallel loops,
    # the output transform of each output plane computed inside the epilogue's, its row
    # vectorised
    # scheduled by the Winograd rule itself: a ScheduleError inside it would hand the
    # kernel to a generic rule, right but orders of magnitude slower
    assert str(func.attrs[schedules.RULE_ATTR]) == "WinogradConv"
    script = func.script()
    assert script.count("in T.parallel(") == loops
    last = script[script.rindex("in T.parallel("):]
    assert 'T.sblock("wino_out")' in last and "epilogue" in last and "T.vectorized" in last
    art = compiler.compile(model, target="cpu", threads=2)
    x = {"x": np.random.default_rng(3).normal(size=shape).astype(np.float32)}
    (name, want), = run_ort(model, x).items()
    got = art.run(x)[name]
    assert np.abs(got - want).max() <= 2 * winograd.TOLERANCE[4] * np.abs(want).max()


def test_a_large_small_channel_layer_runs_fused_chunk_by_chunk() -> None:
    """inception_v3's 32->64 3x3 on 147x147: its transformed input (8 MB) passes
    CHUNK_BYTES, so with 16 lanes the pass gives it Winograd and the kernel runs every
    stage chunk by chunk of tile rows (`winograd_cpu._fused_chunks`): the chunk's input
    transform, then per channel block its GEMMs (37 tiles a row: a tile of two vectors and a
    5-tile tail), output transform and epilogue, in one parallel loop; scheduled by the
    Winograd rule itself; values within Winograd's tolerance of ONNX Runtime on the host
    (whatever kernel the host's lanes give it). Its 32->32 twin keeps the direct kernel."""
    from backends.tvm import schedules

    model, shape = conv_model([("big", 64, 3, {})], 32, 147, 147)
    [func] = _scheduled_for_znver4(model, threads=2)
    assert str(func.attrs[schedules.RULE_ATTR]) == "WinogradConv"
    assert "each transformed, multiplied, transformed back" in str(func.attrs["etch.tile"])
    script = func.script()
    assert script.count("in T.parallel(") == 2  # the padded copy, the chunks
    chunk = script[script.rindex("in T.parallel("):]
    for stage in ("wino_in", "anchor", "wino_out", "epilogue"):
        assert f'T.sblock("{stage}' in chunk, stage
    twin, _ = conv_model([("twin", 32, 3, {})], 32, 147, 147)
    assert not _scheduled_for_znver4(twin)
    art = compiler.compile(model, target="cpu", threads=2)
    x = {"x": np.random.default_rng(4).normal(size=shape).astype(np.float32)}
    (name, want), = run_ort(model, x).items()
    got = art.run(x)[name]
    assert np.abs(got - want).max() <= 2 * winograd.TOLERANCE[4] * np.abs(want).max()
