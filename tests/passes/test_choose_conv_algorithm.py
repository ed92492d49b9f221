"""ChooseConvAlgorithm: each convolution's algorithm recorded on its node (Conv or a
Conv-anchored etch.Fused) with a reason, nothing else changed; the cpu float pipeline runs
it, the integer and reference pipelines do not."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler import onnx_import, pipeline, reference
from compiler.options import CompileOptions
from passes.choose_conv_algorithm import (
    ATTR,
    GEMM_VECTORS,
    REPORT,
    TILE_CHANNELS,
    ChooseConvAlgorithm,
    Layer,
    explain,
)
from passes.fuse_epilogue import FuseEpilogue
from tests.golden import assert_bitexact


def conv_model(layers: list[tuple[str, int, int, dict]], c: int, h: int, w: int):
    """A chain of Conv(+Relu) layers: (name, out channels, kernel, attrs) each, pads keep
    the size for odd kernels; returns (ModelProto, input shape)."""
    rng = np.random.default_rng(0)
    nodes, inits, x, ch = [], [], "x", c
    for name, oc, k, attrs in layers:
        group = attrs.get("group", 1)
        wt = rng.normal(size=(oc, ch // group, k, k)) / np.sqrt(k * k * ch / group)
        inits += [numpy_helper.from_array(wt.astype(np.float32), f"{name}_w"),
                  numpy_helper.from_array(rng.normal(size=oc).astype(np.float32), f"{name}_b")]
        pads = attrs.pop("pads", [k // 2] * 4)
        nodes += [helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [f"{name}_c"],
                                   name=name, pads=pads, **attrs),
                  helper.make_node("Relu", [f"{name}_c"], [f"{name}_y"])]
        x, ch = f"{name}_y", oc
    graph = helper.make_graph(nodes, "convs",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                             [1, c, h, w])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), (1, c, h, w)


def _algorithms(graph) -> dict[str, str]:
    return {r["node"]: r["algorithm"] for r in json.loads(graph.metadata[REPORT])}


def test_each_layer_gets_the_algorithm_its_shape_calls_for(rng) -> None:
    model, shape = conv_model([("wide", 64, 3, {}), ("pw", 64, 1, {}),
                               ("dw", 64, 3, {"group": 64}), ("down", 64, 3, {"strides": [2, 2]}),
                               ("mid", 64, 3, {}), ("narrow", 64, 3, {"strides": [2, 2]}),
                               ("small", 64, 3, {}), ("down2", 64, 3, {"strides": [2, 2]}),
                               ("tiny", 64, 3, {}),
                               ("proj", 64, 1, {"strides": [2, 2], "pads": [0] * 4})], 64, 8, 64)
    graph, _ = FuseEpilogue().run(onnx_import.import_model(model))
    out, changed = ChooseConvAlgorithm(lanes=16).run(graph)
    assert changed
    by_name = {n.name: n for n in out.nodes}
    algos = {k.removeprefix("fused_"): v for k, v in _algorithms(out).items()}
    assert algos == {"wide": "winograd_f4", "pw": "pointwise", "dw": "depthwise",
                     "down": "direct_channels", "mid": "winograd_f4",
                     "narrow": "direct_channels", "small": "winograd_f2",
                     "down2": "direct_channels", "tiny": "direct_channels", "proj": "im2col"}
    assert all(n.attrs[ATTR] == algos[n.name.removeprefix("fused_")]
               for n in by_name.values() if ATTR in n.attrs)
    assert [n.op for n in out.nodes] == [n.op for n in graph.nodes]
    x = {"x": rng.normal(size=shape).astype(np.float32)}
    assert_bitexact(reference.run(out, x), reference.run(graph, x))
    again, changed = ChooseConvAlgorithm(lanes=16).run(out)
    assert not changed and _algorithms(again) == _algorithms(out)
    text = explain(out.metadata)
    assert "winograd_f4 x2" in text and "strided, dilated or grouped" in text
    assert "im2col x1" in text and "patches packed, one GEMM" in text
    assert "direct_channels x4" in text and "output channels as the vector" in text
    lanes8 = {k.removeprefix("fused_"): v for k, v in _algorithms(
        ChooseConvAlgorithm(lanes=8).run(graph)[0]).items()}
    assert "direct_channels" not in {lanes8[k] for k in ("down", "narrow", "down2", "tiny")}


def test_wide_stride_1_rows_go_implicit_and_gemms_can_be_off() -> None:
    """A 5x5 stride-1 layer with 64-wide rows and a long reduction (64 x 25) is an implicit
    GEMM; the same layer at 8 wide would drop half its columns: im2col; with GEMMs off, both
    are direct. With a short reduction (16 channels x 25) wide rows stay direct. (Without
    the channel-vector kernels: with them, all three are "direct_channels".)"""
    wide, _ = conv_model([("wide5", 64, 5, {})], 64, 8, 64)
    narrow, _ = conv_model([("narrow5", 64, 5, {})], 64, 8, 8)
    short, _ = conv_model([("short5", 64, 5, {})], 16, 8, 64)
    for model in (wide, narrow, short):
        with_channels = ChooseConvAlgorithm(lanes=16).run(onnx_import.import_model(model))[0]
        assert set(_algorithms(with_channels).values()) == {"direct_channels"}
    choose = ChooseConvAlgorithm(lanes=16, channels=False)
    wide_g = choose.run(onnx_import.import_model(wide))[0]
    assert _algorithms(wide_g) == {"wide5": "implicit_gemm"}
    assert "read from the padded input" in explain(wide_g.metadata)
    assert _algorithms(choose.run(onnx_import.import_model(narrow))[0]) == {"narrow5": "im2col"}
    assert _algorithms(choose.run(onnx_import.import_model(short))[0]) == {"short5": "direct"}
    for model, name in ((wide, "wide5"), (narrow, "narrow5")):
        off = ChooseConvAlgorithm(lanes=16, im2col=False, channels=False).run(
            onnx_import.import_model(model))
        assert _algorithms(off[0]) == {name: "direct"}


def test_few_channels_stay_direct_and_without_winograd_a_3x3_is_implicit() -> None:
    model, _ = conv_model([("thin", 16, 3, {}), ("stem", 64, 7, {"strides": [2, 2]})],
                          3, 8, 64)
    graph = onnx_import.import_model(model)
    few = _algorithms(ChooseConvAlgorithm(channels=False).run(graph)[0])
    assert set(few.values()) == {"direct"}
    # with the channel-vector kernels: the 3-channel layer stays direct (under 16 input
    # channels), the 16-channel stride-2 one (a 4x32 image) takes "direct_channels"
    few = _algorithms(ChooseConvAlgorithm().run(graph)[0])
    assert few == {"thin": "direct", "stem": "direct_channels"}
    model, _ = conv_model([("wide", 64, 3, {})], 64, 8, 64)
    graph = onnx_import.import_model(model)
    no_winograd = ChooseConvAlgorithm(winograd=False, channels=False).run(graph)[0]
    assert set(_algorithms(no_winograd).values()) == {"implicit_gemm"}


@pytest.mark.parametrize("options,runs", [({"target": "cpu"}, True),
                                          ({"target": "cpu", "fuse": False}, True),
                                          ({"target": "cpu", "int": True, "bits": 8}, False),
                                          ({"target": "ref"}, False),
                                          ({"target": "edge"}, False)])
def test_the_cpu_float_pipeline_chooses(options: dict, runs: bool) -> None:
    labels = [p.label for p in pipeline.passes_for(CompileOptions(**options))]
    assert ("choose_conv_algorithm" in labels) == runs


def test_one_by_k_kernels_go_to_a_gemm_even_on_wide_rows() -> None:
    """inception_v3's 1x7 / 7x1 layers (128 channels, 17x17) reuse each loaded row little in
    the direct kernel: the 7x1 drops no column as an implicit GEMM, the 1x7 would drop 6 of
    23 (over 1/6): patches packed; a square 5x5 on 17 wide rows stays direct; with 13
    columns a 3x3 is implicit (2/15 dropped), with 11 it is not."""
    from passes.choose_conv_algorithm import Layer

    def layer(kernel: tuple[int, int], pads: tuple[int, ...]) -> Layer:
        return Layer(c=128, oc=128, groups=1, kernel=kernel, strides=(1, 1), dilations=(1, 1),
                     pads=pads, out=(17, 17))

    choose = ChooseConvAlgorithm(lanes=16, channels=False)
    assert choose.choose(layer((1, 7), (0, 3, 0, 3)))[0] == "im2col"
    assert choose.choose(layer((7, 1), (3, 0, 3, 0)))[0] == "implicit_gemm"
    assert choose.choose(layer((5, 5), (2, 2, 2, 2)))[0] == "direct"
    for width, algorithm in ((13, "implicit_gemm"), (11, "im2col")):
        narrow = Layer(c=64, oc=64, groups=1, kernel=(3, 3), strides=(1, 1), dilations=(1, 1),
                       pads=(1, 1, 1, 1), out=(width, width))
        assert choose.choose(narrow)[0] == algorithm, width
    strided = Layer(c=256, oc=256, groups=1, kernel=(3, 3), strides=(2, 2), dilations=(1, 1),
                    pads=(1, 1, 1, 1), out=(14, 14))
    assert choose.choose(strided)[0] == "im2col"
    channels = ChooseConvAlgorithm(lanes=16)  # with the channel-vector kernels
    for kernel, pads in (((1, 7), (0, 3, 0, 3)), ((5, 5), (2,) * 4)):
        assert channels.choose(layer(kernel, pads))[0] == "direct_channels", kernel
    # a 7x1's taps are whole rows apart: the channels' GEMM over the flattened positions
    assert channels.choose(layer((7, 1), (3, 0, 3, 0)))[0] == "column_channels"
    assert channels.choose(strided)[0] == "direct_channels"


@pytest.mark.parametrize("c,oc,size,want", [
    (16, 64, 55, "winograd_f4"),   # squeezenet's expand layer: 2.2 MiB transformed
    (32, 128, 27, "winograd_f2"),
    (128, 32, 56, "winograd_f4"),  # densenet121's growth layer
    (32, 64, 147, "winograd_f4"),  # inception_v3's stem: 6 MiB transformed input, fused
    (32, 32, 147, "direct_channels"),  # ... its 32->32: as many outputs as inputs, lost
    (8, 16, 32, "direct"),         # under 16 channels
])
def test_small_channel_layers_take_winograd_where_the_transformed_image_fits(
        c: int, oc: int, size: int, want: str) -> None:
    """Layers of 16-63 channels take Winograd where one image's transformed input and
    output fit SMALL_WINOGRAD_BYTES (measured on Zen 4: the pass's `_small_reason`), or,
    with 16 lanes and 64 output channels or more, where the transformed input alone passes
    `winograd.CHUNK_BYTES` (the cpu kernel then fuses every stage chunk by chunk); --explain
    gives the size where they do not."""
    model, _ = conv_model([("c", oc, 3, {})], c, size, size)
    out, _ = ChooseConvAlgorithm(lanes=16).run(onnx_import.import_model(model))
    [row] = json.loads(out.metadata[REPORT])
    assert row["algorithm"] == want
    if (c, oc, size) == (32, 32, 147):
        assert "transformed image of 12.0 MiB" in row["why"]
    if (c, oc, size) == (32, 64, 147):  # measured with 16 lanes only
        out, _ = ChooseConvAlgorithm(lanes=8).run(onnx_import.import_model(model))
        [row] = json.loads(out.metadata[REPORT])
        assert row["algorithm"] != "winograd_f4" and "18.0 MiB" in row["why"]


@pytest.mark.parametrize("c,oc,size,n,lanes,want", [
    (256, 256, 14, 1, 16, "winograd_f4_image"),  # resnet50: 16 tiles of 4x4, one zmm vector
    (512, 512, 7, 1, 16, "direct_channels"),     # 16 tiles of 2x2: the weights cost too much
    (512, 512, 7, 8, 16, "winograd_f2_image"),   # ... unless 8 images share them
    (64, 256, 13, 1, 16, "direct_channels"),     # squeezenet1_1: 8.0 > IMAGE_MAX_COST
    (64, 256, 13, 8, 16, "winograd_f4_image"),   # the edge tiles half outside
    (48, 192, 13, 8, 16, "winograd_f4_image"),   # under 64 input channels, small transforms
    (448, 384, 8, 1, 16, "direct_channels"),     # inception_v3
    (448, 384, 8, 8, 16, "winograd_f2_image"),
    (128, 32, 14, 8, 16, "direct_channels"),     # densenet121: 32 output channels lost
    (512, 512, 4, 8, 16, "direct_channels"),     # 4 tiles in a vector of 8
    (256, 256, 14, 1, 8, "winograd_f4"),         # AVX2: a row of 4 tiles fills half a vector
    (512, 512, 7, 1, 8, "winograd_f2"),
])
def test_short_rows_take_winograd_over_the_image(c: int, oc: int, size: int, n: int,
                                                 lanes: int, want: str) -> None:
    """Rows too short for a vector of tiles (14, 13, 8, 7 outputs with 16 lanes) take
    Winograd with an image's tiles as the vector where they fit one vector, pad to whole
    tile rows and cost at most IMAGE_MAX_COST per output, the streamed transformed weights
    shared by the batch's images counted; --explain says why."""
    from passes.choose_conv_algorithm import Layer

    layer = Layer(c=c, oc=oc, groups=1, kernel=(3, 3), strides=(1, 1), dilations=(1, 1),
                  pads=(1, 1, 1, 1), out=(size, size), n=n)
    algorithm, why = ChooseConvAlgorithm(lanes=lanes).choose(layer)
    assert algorithm == want, why
    if want.endswith("_image"):
        assert f"rows of {size}: F({want[10]}, 3) over the image's tiles" in why
    elif not want.startswith("winograd"):
        assert "too few tiles to fill a vector" in why


@pytest.mark.parametrize("cache_mib,want", [
    (None, ["direct_channels", "direct_channels"]),  # not known (--mcpu): from memory
    (32, ["winograd_f4_image", "winograd_f4_image"]),  # squeezenet1_1's on Zen 4's L3
    (6.9, ["winograd_f4_image", "direct_channels"]),  # room for one transformed weight
    (2, ["direct_channels", "direct_channels"]),  # the model alone fills half of it
])
def test_cached_transformed_weights_make_image_winograd_cheaper(cache_mib: float | None,
                                                                 want: list[str]) -> None:
    """squeezenet1_1's 64->256 (and here 256->64) 3x3 layers on 13x13 at batch 1: with the
    transformed weights streamed from memory F(4, 3) over the image's tiles costs 7.7
    multiply-adds per output and channel pair (IMAGE_MAX_COST 7.5); where the model's
    weights and the transformed ones chosen so far stay within half the last-level cache,
    4.5, and the layer takes it, in graph order while there is room; --explain says so."""
    model, _ = conv_model([("a", 256, 3, {}), ("b", 64, 3, {})], 64, 13, 13)
    cache = None if cache_mib is None else int(cache_mib * (1 << 20))
    out, _ = ChooseConvAlgorithm(lanes=16, cache_bytes=cache).run(
        onnx_import.import_model(model))
    rows = json.loads(out.metadata[REPORT])
    assert [r["algorithm"] for r in rows] == want
    for row in rows:
        cached = "its transformed weights stay in the last-level cache" in row["why"]
        assert cached == row["algorithm"].endswith("_image"), row["why"]


def test_layers_of_one_weight_count_its_transformed_weight_once() -> None:
    """The images of a split batch (SplitBatch) are layers of one weight value, and the
    backend makes one transformed weight of it: room for one takes them all."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.normal(size=(64, 64, 3, 3)) / 24).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], pads=[1] * 4),
             helper.make_node("Conv", ["a", "w"], ["y"], pads=[1] * 4)]
    graph = helper.make_graph(
        nodes, "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 13, 13])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    weight, extra = 64 * 64 * 9 * 4, 64 * 64 * 27 * 4  # F(4, 3): 36 floats a pair, not 9
    cache = 2 * (weight + extra + 1000)  # half of it: the weight and one transformed copy
    out, _ = ChooseConvAlgorithm(lanes=16, cache_bytes=cache).run(
        onnx_import.import_model(model))
    assert [r["algorithm"] for r in json.loads(out.metadata[REPORT])] == \
        ["winograd_f4_image"] * 2


def test_the_cpu_pipeline_knows_the_cache_only_of_this_host(monkeypatch) -> None:
    """Compiling for this host, the conv algorithms see its last-level cache; for --mcpu
    (another machine's CPU) none: the weights count as streamed from memory."""
    import runtime.host_cpu

    monkeypatch.setattr(runtime.host_cpu, "last_level_cache_bytes", lambda: 32 << 20)
    for mcpu, want in ((None, 32 << 20), ("znver4", None)):
        [choose] = [p for p in pipeline.passes_for(CompileOptions(target="cpu", mcpu=mcpu))
                    if isinstance(p, ChooseConvAlgorithm)]
        assert choose.cache_bytes == want


@pytest.mark.parametrize("c,oc,size,lanes,algorithm", [
    (512, 2048, 7, 16, "pointwise_channels"),   # 49 positions pad to 64
    (1024, 256, 14, 16, "pointwise_channels"),  # 196 pad to 224
    (64, 16, 55, 16, "pointwise_channels"),     # one vector of output channels
    (8, 16, 11, 16, "pointwise"),               # ... over a reduction under 64
    (64, 256, 13, 16, "pointwise"),             # a short reduction (lost 1.16 -> 1.22)
    (512, 128, 28, 16, "pointwise"),            # 784 positions fill their blocks
    (512, 70, 7, 16, "pointwise"),              # 70 channels do not fill vectors
    (768, 192, 17, 16, "pointwise_channels"),   # 289 pad to 320; tiles of 17 positions
    (64, 16, 71, 16, "pointwise"),              # 5041 positions: no divisor from 4 to 17
    (512, 2048, 7, 8, "pointwise"),             # AVX2: not measured there
])
def test_pointwise_layers_take_the_channels_gemm_where_positions_waste_lanes(
        c: int, oc: int, size: int, lanes: int, algorithm: str) -> None:
    layer = Layer(c=c, oc=oc, groups=1, kernel=(1, 1), strides=(1, 1), dilations=(1, 1),
                  pads=(0, 0, 0, 0), out=(size, size))
    got, why = ChooseConvAlgorithm(lanes=lanes).choose(layer)
    assert got == algorithm, why
    assert why.startswith("1x1 stride 1: one GEMM over the image")


def test_a_half_rate_avx512_cpu_records_one_vector_gemm_tiles() -> None:
    """`one_vector_gemm` (a CPU that runs one 512-bit FMA a cycle, with 16 lanes) records
    GEMM_VECTORS = 1 on the GEMMs over positions (and "pointwise_channels", which
    fuse_prologue may turn into one), says so in the pointwise layer's reason, and nothing
    else; run again it changes nothing, and a pass without it takes the attribute off.
    With 8 lanes, or for the cpu pipeline of a CPU that runs two (Zen 5) or builds 256-bit
    vectors, nothing is recorded."""
    model, _ = conv_model([("pw", 64, 1, {}), ("dw", 64, 3, {"group": 64}),
                           ("wide", 64, 3, {})], 64, 14, 14)
    graph, _ = FuseEpilogue().run(onnx_import.import_model(model))
    out, changed = ChooseConvAlgorithm(lanes=16, one_vector_gemm=True).run(graph)
    nodes = {n.name.removeprefix("fused_"): n for n in out.nodes if n.op != "Relu"}
    assert {k: n.attrs.get(GEMM_VECTORS) for k, n in nodes.items()} == {
        "pw": 1, "dw": None, "wide": None}
    stem = ChooseConvAlgorithm(lanes=16, one_vector_gemm=True).run(FuseEpilogue().run(
        onnx_import.import_model(conv_model([("stem", 64, 7, {"strides": [2, 2]})], 3, 64,
                                            64)[0]))[0])[0]
    assert [n.attrs.get(TILE_CHANNELS) for n in stem.nodes if ATTR in n.attrs] == [8]
    assert all(TILE_CHANNELS not in n.attrs for n in out.nodes)
    why = {r["node"].removeprefix("fused_"): r["why"]
           for r in json.loads(out.metadata[REPORT])}
    assert "one vector of positions" in why["pw"] and "one vector" not in why["wide"]
    assert not ChooseConvAlgorithm(lanes=16, one_vector_gemm=True).run(out)[1]
    off, changed = ChooseConvAlgorithm(lanes=16).run(out)
    assert changed and all(GEMM_VECTORS not in n.attrs for n in off.nodes)
    assert ChooseConvAlgorithm(lanes=16).run(stem)[1]
    narrow = ChooseConvAlgorithm(lanes=8, one_vector_gemm=True).run(graph)[0]
    assert all(GEMM_VECTORS not in n.attrs for n in narrow.nodes)

    from backends.tvm.target import cpu_info
    half = {(mcpu, bits): cpu_info(CompileOptions(target="cpu", mcpu=mcpu,
                                                  vector_bits=bits))[0].half_rate_512
            for mcpu, bits in (("znver4", None), ("znver4", 256), ("znver5", None),
                               ("sapphirerapids", None))}
    assert half == {("znver4", None): True, ("znver4", 256): False, ("znver5", None): False,
                    ("sapphirerapids", None): False}
