"""The cpu backend renders `conv_algorithm = pointwise / im2col` (chosen by
passes/choose_conv_algorithm.py) as one packed GEMM over the image (`lower/conv_gemm.py`):
results match ONNX Runtime (rtol 1e-3) on layers whose shapes exercise every edge of the
kernel: output positions not a multiple of the tile (7x7, 5x9), output channels not a
multiple of the register tile (70), strided, padded and dilated windows, a 1x1 stride-2
projection, a residual add in the epilogue, a batch of 2; `--explain` lists the choice; the
compiled GEMM is packed FMA on full-width vectors for an AVX-512 and an AVX2 CPU, named (not
the host)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from onnx import helper

import compiler
from compiler import onnx_import, pipeline
from compiler.options import CompileOptions
from passes.choose_conv_algorithm import ChooseConvAlgorithm, explain
from tests.backends import isa
from tests.golden import RandomInits, run_ort


def gemm_model(batch: int = 1):
    """Two chains. x [B, 64, 14, 14]: 3x3 stride 2 to 70 channels (im2col, 7x7 out), 1x1
    (pointwise) plus a residual add, 3x3 dilated 2 (im2col), added to a 1x1 stride-2
    projection of x (im2col). z [B, 96, 5, 9]: 3x3 stride 1 to 90 (im2col: rows of 9,
    narrower than a vector), 1x1 to 70 channels (pointwise over 45 positions). Output
    channels not whole vectors of 16 (70, 90): with them, AVX-512 takes the channel-vector
    kernels for such small images."""
    init = RandomInits(7)
    weight, bias = init.weight, init.bias
    conv = helper.make_node
    nodes = [
        conv("Conv", ["x", weight("w_down", 70, 64, 3, 3), bias("b_down", 70)], ["down"],
             name="down", strides=[2, 2], pads=[1, 1, 1, 1]),
        conv("Relu", ["down"], ["down_r"]),
        conv("Conv", ["down_r", weight("w_pw", 70, 70, 1, 1), bias("b_pw", 70)], ["pw"],
             name="pw"),
        conv("Add", ["pw", "down_r"], ["res"]),
        conv("Conv", ["res", weight("w_dil", 70, 70, 3, 3)], ["dil"], name="dil",
             dilations=[2, 2], pads=[2, 2, 2, 2]),
        conv("Conv", ["x", weight("w_proj", 70, 64, 1, 1), bias("b_proj", 70)], ["proj"],
             name="proj", strides=[2, 2]),
        conv("Add", ["dil", "proj"], ["y"]),
        conv("Conv", ["z", weight("w_narrow", 90, 96, 3, 3), bias("b_narrow", 90)], ["nar"],
             name="narrow", pads=[1, 1, 1, 1]),
        conv("Relu", ["nar"], ["nar_r"]),
        conv("Conv", ["nar_r", weight("w_pw2", 70, 90, 1, 1)], ["y2"], name="pw2"),
    ]
    shapes = {"x": [batch, 64, 14, 14], "z": [batch, 96, 5, 9]}
    return init.model("gemm_convs", nodes, shapes, ["y", "y2"])


# What choose_conv_algorithm picks at the host's float lanes (the manifest's vector_lanes):
# --explain's summary, `narrow`'s algorithm, the GEMM convs. With 8 lanes (AVX2) the 9-wide
# rows of `narrow` fill a vector, so that layer is Winograd F(2, 3).
ALGORITHMS = {16: ("im2col x4, pointwise x2", "im2col", 6),
              8: ("im2col x3, pointwise x2, winograd_f2 x1", "winograd_f2", 5)}


@pytest.fixture(scope="module", params=[1, 2], ids=["b1", "b2"])
def built(request):
    model, inputs = gemm_model(request.param)
    return model, inputs, compiler.compile(model, target="cpu")


def test_gemm_layers_match_onnx_runtime(built) -> None:
    model, inputs, art = built
    assert art.manifest["schedules"].get("ConvGemm") == ALGORITHMS[art.manifest["vector_lanes"]][2]
    want = run_ort(model, inputs)
    got = art.run(inputs)
    for name, ref in want.items():
        assert got[name].shape == ref.shape
        np.testing.assert_allclose(got[name], ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())


def test_explain_lists_pointwise_and_im2col(built) -> None:
    text, lanes = built[2].explain(), built[2].manifest["vector_lanes"]
    algorithms, narrow, _ = ALGORITHMS[lanes]
    assert f"conv algorithms: {algorithms}" in text
    assert re.search(rf"narrow\s+{narrow}\s+96->90 k3x3 out 5x9", text)
    assert "patches packed, one GEMM" in text


def test_explain_from_the_cli(tmp_path) -> None:
    model, _ = gemm_model()
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    run = subprocess.run([sys.executable, "-m", "compiler.cli", "compile", str(path),
                          "--target", "cpu", "-o", str(tmp_path / "out"), "--explain"],
                         check=False, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    lanes = json.loads((tmp_path / "out" / "manifest.json").read_text())["vector_lanes"]
    assert ALGORITHMS[lanes][0] in run.stdout


@pytest.mark.parametrize("isa_name,register,lanes,count",
                         [("avx512", "zmm", 16, 6), ("avx2", "ymm", 8, 5)])
def test_gemm_kernels_use_the_full_vector_width(isa_name: str, register: str, lanes: int,
                                                count: int) -> None:
    """Compiled for a named CPU (not the host): every GEMM conv's multiply-adds are packed
    FMAs on that CPU's widest float vectors, the 7x7 layers included (49 positions fill
    whole vectors, where the direct kernel's 7-wide rows could not). On AVX2 the 9-wide rows
    fill a vector, so that layer stays direct."""
    model, _ = gemm_model()
    graph = ChooseConvAlgorithm(lanes=lanes).run(onnx_import.import_model(model))[0]
    asm = isa.compile_graph(graph, isa_name)
    gemms = asm.of_kind("conv_gemm")
    assert len(gemms) == count
    for name, code in gemms.items():
        assert int(asm.attrs[name]["vw"]) >= lanes, name
        assert re.search(rf"vfmadd\w*ps\s+[^\n]*%{register}", code), f"{name}: no packed FMA"


def _conv_add_relu(init: RandomInits, name: str, c: int, oc: int) -> list:
    """out_a = Relu(Conv1x1(x) + b + r): a pointwise layer with bias, residual and ReLU."""
    node = helper.make_node
    return [node("Conv", ["x", init.weight("w_a", oc, c, 1, 1), init.bias("b_a", oc)], ["a"],
                 name=name),
            node("Add", ["a", "r"], ["a_r"]),
            node("Relu", ["a_r"], ["out_a"])]


def wide_tile_model():
    """The AVX-512 tiles of short reductions and the 1 MiB panel (`tiles.gemm_tile`,
    `tiles.panel_bytes`). x [1, 96, 14, 14]: 1x1 96->64 (K = 96: 8 x 2 zmm, 196 positions,
    the last block partial) plus a residual and ReLU; 1x1 64->66 (66 rows: 6 x 2); 1x1 64->80
    stride 2 (im2col, K = 64, 7x7 out: 4 channels x all 49 positions). y [1, 1024, 14, 14]:
    1x1 1024->24 (K = 1024: 7 blocks of 128 KiB, one chunk within 1 MiB)."""
    init = RandomInits(11)
    weight, bias = init.weight, init.bias
    node = helper.make_node
    nodes = [
        *_conv_add_relu(init, "short", 96, 64),
        node("Conv", ["out_a", weight("w_b", 66, 64, 1, 1), bias("b_b", 66)], ["out_b"],
             name="rows66"),
        node("Conv", ["out_a", weight("w_c", 80, 64, 1, 1)], ["out_c"], name="strided",
             strides=[2, 2]),
        node("Conv", ["y", weight("w_d", 24, 1024, 1, 1), bias("b_d", 24)], ["out_d"],
             name="long"),
    ]
    shapes = {"x": [1, 96, 14, 14], "r": [1, 64, 14, 14], "y": [1, 1024, 14, 14]}
    return init.model("wide_tiles", nodes, shapes, ["out_a", "out_b", "out_c", "out_d"])


def test_wide_tiles_match_onnx_runtime() -> None:
    model, inputs = wide_tile_model()
    got = compiler.compile(model, target="cpu").run(inputs)
    for name, ref in run_ort(model, inputs).items():
        np.testing.assert_allclose(got[name], ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())


def test_wide_tiles_on_avx512() -> None:
    """Compiled for an AVX-512 CPU (named, not the host): the tiles the docstring of
    `wide_tile_model` lists, each a packed FMA on zmm registers."""
    model, _ = wide_tile_model()
    graph = ChooseConvAlgorithm(lanes=16).run(onnx_import.import_model(model))[0]
    asm = isa.compile_graph(graph, "avx512")
    gemms = asm.of_kind("conv_gemm")
    tiles = {asm.attrs[k]["node"]: (int(asm.attrs[k]["ocb"]), int(asm.attrs[k]["vw"]),
                                    int(asm.attrs[k]["chunk"])) for k in gemms}
    assert {k.split("_", 1)[-1]: v for k, v in tiles.items()} == {
        "short": (8, 32, 7), "rows66": (6, 32, 7), "strided": (4, 64, 1), "long": (8, 32, 7)}
    for name, code in gemms.items():
        assert re.search(r"vfmadd\w*ps\s+[^\n]*%zmm", code), f"{name}: no packed FMA"


def test_wide_tiles_on_a_half_rate_avx512_cpu() -> None:
    """Where the pass records one vector of positions (`ChooseConvAlgorithm(one_vector_gemm=
    True)`: a CPU that runs one 512-bit FMA a cycle, Zen 4), the layers of
    `wide_tile_model` take one zmm of positions by up to 12 channels (96->64: 8, 64->66: 6,
    1024->24: 12), each a packed FMA on zmm registers; the 7x7 im2col layer keeps its one
    block of every position."""
    model, _ = wide_tile_model()
    graph = ChooseConvAlgorithm(lanes=16, one_vector_gemm=True).run(
        onnx_import.import_model(model))[0]
    asm = isa.compile_graph(graph, "avx512")
    gemms = asm.of_kind("conv_gemm")
    tiles = {asm.attrs[k]["node"]: (int(asm.attrs[k]["ocb"]), int(asm.attrs[k]["vw"]))
             for k in gemms}
    assert {k.split("_", 1)[-1]: v for k, v in tiles.items()} == {
        "short": (8, 16), "rows66": (6, 16), "strided": (4, 64), "long": (12, 16)}
    for name, code in gemms.items():
        assert re.search(r"vfmadd\w*ps\s+[^\n]*%zmm", code), f"{name}: no packed FMA"


@pytest.mark.parametrize("half_rate, ocb", [(False, 16), (True, 8)])
def test_a_long_direct_reduction_takes_8_channels_on_a_half_rate_cpu(half_rate: bool,
                                                                     ocb: int) -> None:
    """A 3->64 7x7 stride-2 stem (147 multiply-adds an output, rows of 48) takes a one-vector tile of
    16 channels (`tiles.conv_tile`), of 8 where the pass records `tile_channels` for a CPU
    that runs one 512-bit FMA a cycle; either is a packed zmm FMA, and the host's build
    matches ONNX Runtime."""
    init = RandomInits(23)
    model, inputs = init.model("stem", [helper.make_node(
        "Conv", ["x", init.weight("w", 64, 3, 7, 7), init.bias("b", 64)], ["y"],
        pads=[3, 3, 3, 3], strides=[2, 2])], {"x": [1, 3, 96, 96]}, ["y"])
    graph = ChooseConvAlgorithm(lanes=16, one_vector_gemm=half_rate).run(
        onnx_import.import_model(model))[0]
    asm = isa.compile_graph(graph, "avx512")
    [kernel] = asm.of_kind("conv2d")
    assert (int(asm.attrs[kernel]["ocb"]), int(asm.attrs[kernel]["vw"])) == (ocb, 16)
    assert re.search(r"vfmadd\w*ps\s+[^\n]*%zmm", asm.kernels[kernel]), kernel
    got = compiler.compile(model, target="cpu").run(inputs)["y"]
    np.testing.assert_allclose(got, run_ort(model, inputs)["y"], rtol=1e-4, atol=1e-4)


def test_one_vector_tiles_match_onnx_runtime(monkeypatch) -> None:
    """The host taken for a CPU that runs one 512-bit FMA a cycle (`target.HALF_RATE_512`):
    on an AVX-512 host its pointwise GEMMs take one vector of positions (the last block of
    14x14's 196 positions partial, read in place or packed) and match ONNX Runtime; with
    narrower vectors nothing changes."""
    from backends.tvm import target as targets

    info = targets.cpu_info(CompileOptions(target="cpu"))[0]
    monkeypatch.setattr(targets, "HALF_RATE_512", frozenset({info.mcpu}))
    model, inputs = wide_tile_model()
    art = compiler.compile(model, target="cpu")
    got = art.run(inputs)
    for name, ref in run_ort(model, inputs).items():
        np.testing.assert_allclose(got[name], ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())
    one = "one vector of positions wide" in art.explain()
    assert one == (info.lanes == 16), art.explain()
    if one:
        assert re.search(r"ConvGemm, 8 channels x 16 positions", art.explain()), art.explain()


def test_a_prime_block_count_is_padded_to_whole_chunks() -> None:
    """A 1x1 layer over 73 x 73 positions (inception_v3's 64->80): 167 column blocks of 32,
    a prime, so the GEMM pads them to two chunks of 84 (`tiles.gemm_chunk`) rather than
    packing one block at a time; at batch 2 the padded blocks are computed, never stored,
    and the result matches ONNX Runtime."""
    init = RandomInits(11)
    node = helper.make_node("Conv", ["x", init.weight("w", 80, 64, 1, 1), init.bias("b", 80)],
                            ["y"], name="pw73")
    model, inputs = init.model("pw73", [node], {"x": [2, 64, 73, 73]}, ["y"])
    art = compiler.compile(model, target="cpu")
    got, (ref,) = art.run(inputs)["y"], run_ort(model, inputs).values()
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())
    graph = ChooseConvAlgorithm(lanes=16).run(onnx_import.import_model(model))[0]
    asm = isa.compile_graph(graph, "avx512")
    [kernel] = asm.of_kind("conv_gemm")
    assert int(asm.attrs[kernel]["chunk"]) == 84


def channels_model(batch: int = 2, rows17: bool = True):
    """Layers that take the channel-vector kernels with 16 lanes. Pointwise
    (`pointwise_channels`): x [B, 160, 7, 7]: 1x1 160->64 (49 positions, chunks of 40 steps;
    with 16 lanes tiles of 12 positions, the last one partial) plus bias, a residual r and
    ReLU; then 1x1 64->16 (one vector of channels, a reduction of 64 in one chunk). y [B,
    192, 14, 14]: 1x1 192->96 (196 positions, chunks of 64; 96 channels: with 16 lanes 3
    vectors by 8 positions, the last tile partial), no bias. Direct (`direct_channels`): v [B, 48, 14, 14]:
    3x3 stride 2 to 64 channels (7x7 out) plus bias and ReLU, and 3x3 dilated 2 to 32
    channels (14x14 out, no bias); with `rows17`, u [B, 40, 17,
    17]: 1x7 padded (0, 3) to 16 channels, rows of 17 (a one-vector tile of 17 positions, on
    AVX-512 only)."""
    init = RandomInits(13)
    weight, bias = init.weight, init.bias
    node = helper.make_node
    nodes = [
        *_conv_add_relu(init, "seven", 160, 64),
        node("Conv", ["out_a", weight("w_b", 16, 64, 1, 1), bias("b_b", 16)], ["out_b"],
             name="narrow16"),
        node("Conv", ["y", weight("w_c", 96, 192, 1, 1)], ["out_c"], name="fourteen"),
        node("Conv", ["v", weight("w_d", 64, 48, 3, 3), bias("b_d", 64)], ["d"], name="down",
             strides=[2, 2], pads=[1, 1, 1, 1]),
        node("Relu", ["d"], ["out_d"]),
        node("Conv", ["v", weight("w_f", 32, 48, 3, 3)], ["out_f"], name="dilated",
             dilations=[2, 2], pads=[2, 2, 2, 2]),
    ]
    shapes = {"x": [batch, 160, 7, 7], "r": [batch, 64, 7, 7], "y": [batch, 192, 14, 14],
              "v": [batch, 48, 14, 14]}
    outs = ["out_a", "out_b", "out_c", "out_d", "out_f"]
    if rows17:
        nodes.append(node("Conv", ["u", weight("w_e", 16, 40, 1, 7)], ["out_e"],
                          name="onebyseven", pads=[0, 3, 0, 3]))
        shapes["u"], outs = [batch, 40, 17, 17], outs + ["out_e"]
    return init.model("channel_tiles", nodes, shapes, outs)


def _channels_graph(model):
    """The model through the cpu pipeline's passes, the conv algorithms chosen for 16 lanes
    (whatever the host's)."""
    graph = onnx_import.import_model(model)
    for p in pipeline.passes_for(CompileOptions(target="cpu")):
        if isinstance(p, ChooseConvAlgorithm):
            p = ChooseConvAlgorithm(lanes=16)
        graph = p.run(graph)[0]
    return graph


def test_channel_tiles_are_chosen_and_explained() -> None:
    """With 16 lanes the pointwise layers take the channel-vector GEMM, the others the
    channel-vector direct convolution, and `--explain` says why; with 8 (AVX2, not measured
    there) they keep the positions' GEMM and the direct kernel (under 64 channels)."""
    model, _ = channels_model()
    graph = _channels_graph(model)
    text = explain(graph.metadata)
    assert "direct_channels x3, pointwise_channels x3" in text
    assert re.search(r"down\s+direct_channels\s+48->64 k3x3 out 7x7\s+.*output channels as the "
                     r"vector, inputs broadcast", text)
    assert re.search(r"seven\s+pointwise_channels\s+160->64 k1x1 out 7x7\s+.*positions would "
                     r"not fill whole vectors", text)
    assert re.search(r"narrow16\s+pointwise_channels\s+.*one vector of them", text)
    avx2 = ChooseConvAlgorithm(lanes=8).run(onnx_import.import_model(model))[0]
    assert {n.attrs["conv_algorithm"] for n in avx2.nodes if n.op == "Conv"} == \
        {"pointwise", "direct"}


def test_channel_tiles_match_onnx_runtime_on_the_host() -> None:
    """The channel-vector kernels built for the host (its own lanes: 8 on an AVX2 host, 16
    on AVX-512; the 17-position tile on AVX-512 only), run at batch 2, against ONNX Runtime
    (rtol 1e-3)."""
    import tvm

    from backends.tvm import lower, schedules, strided_loads
    from backends.tvm import target as targets
    from backends.tvm.builder import tir_config, vm_passes
    from backends.tvm.schedules import cpu as cpu_rules

    target = tvm.target.Target(targets.cpu_target(CompileOptions(target="cpu", threads=1))[0])
    model, inputs = channels_model(rows17=cpu_rules.lanes(target) >= 16)
    graph = _channels_graph(model)
    mod = schedules.apply_rules(
        lower.to_irmodule(graph, pack=True, lanes=cpu_rules.lanes(target)), target)
    kinds = {str(f.attrs["etch.kind"]) for _, f in mod.functions_items()
             if isinstance(f, tvm.tirx.PrimFunc) and f.attrs and "etch.kind" in f.attrs}
    assert {"conv_channels", "conv_channels_direct"} <= kinds and "conv_gemm" not in kinds
    with tvm.transform.PassContext(opt_level=3, config=tir_config(target)):
        ex = tvm.compile(mod, target=target, relax_pipeline=vm_passes(),
                         tir_pipeline=strided_loads.PIPELINE)
    vm = tvm.runtime.vm.VirtualMachine(ex, tvm.cpu())
    outs = vm["main"](*[tvm.runtime.tensor(inputs[n]) for n in graph.inputs])
    want = run_ort(model, inputs)
    for got, (name, ref) in zip(outs, want.items()):
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-3,
                                   atol=1e-4 * np.abs(ref).max(), err_msg=name)


def test_channel_tiles_on_avx512() -> None:
    """Compiled for an AVX-512 CPU (named, not the host): each channel-vector kernel's tile
    (the GEMMs', `tiles.gemm_channel_tile`: two zmm of channels by 12 positions, 3 by 8,
    or one zmm by 7 with 16 channels; the direct kernels', `tiles.channel_tile`: two zmm by
    7, one by 17) and a packed FMA on zmm registers with a broadcast input."""
    model, _ = channels_model()
    asm = isa.compile_graph(_channels_graph(model), "avx512")
    gemms = asm.of_kind("conv_channels", "conv_channels_direct")
    tiles = {asm.attrs[k]["node"].split("_", 1)[-1]: (int(asm.attrs[k]["ocv"]),
                                                      int(asm.attrs[k]["pr"])) for k in gemms}
    assert tiles == {"seven": (32, 12), "narrow16": (16, 7), "fourteen": (48, 8),
                     "down": (32, 7), "dilated": (32, 7), "onebyseven": (16, 17)}
    for name, code in gemms.items():
        assert re.search(r"vfmadd\w*ps\s+[^\n]*%zmm", code), f"{name}: no packed FMA"
        assert re.search(r"vbroadcastss", code), f"{name}: no broadcast input"


NAMED_AVX512 = "znver5"


def _avx512_kernels(model, kind: str, threads: int = 1) -> list:
    """The model's scheduled kernels of `kind` (`etch.kind`), its convolutions' algorithms
    chosen for 16 lanes and built for a named AVX-512 CPU that runs two 512-bit FMAs a
    cycle (Zen 5: the positions' GEMMs tile two vectors) and `threads` threads."""
    import tvm

    from backends.tvm import lower, schedules
    from backends.tvm import target as targets

    graph = _channels_graph(model)
    opts = CompileOptions(target="cpu", mcpu=NAMED_AVX512, threads=threads)
    target = tvm.target.Target(targets.cpu_target(opts)[0])
    mod = schedules.apply_rules(lower.to_irmodule(graph, pack=True, lanes=16), target)
    return [f for _, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)
            and str(f.attrs.get("etch.kind", "")) == kind]


@pytest.mark.parametrize("oc, columns_first", [(24, True), (144, False)])
def test_few_channel_gemms_run_their_column_blocks_in_parallel(oc: int,
                                                               columns_first: bool) -> None:
    """A pointwise GEMM with few output channel blocks (144->24 on 56x56: three blocks of 8)
    matches ONNX Runtime on the host and
    runs each column block's channel blocks under one parallel loop over (column block,
    channel block), so each thread packs and reads its own columns (in parallel over the
    three channel blocks, each thread read the whole panel, half of it from the other
    core: slower with two threads than with one); many channel blocks (24->144) keep the
    channel blocks as the parallel loop (the column-first order wrote 144 planes at once)."""
    init = RandomInits(11)
    c = 144 if oc == 24 else 24
    model, inputs = init.model("few", [helper.make_node(
        "Conv", ["x", init.weight("w", oc, c, 1, 1)], ["y"])], {"x": [1, c, 56, 56]}, ["y"])
    # built for one thread: for two, a GEMM with far more positions than channels runs its
    # column blocks in parallel (`WIDE_COLUMNS`, the next test)
    [func] = _avx512_kernels(model, "conv_gemm")
    text = func.script()
    fused = re.search(r"for \w+_\w+_fused in T\.parallel", text) is not None
    assert fused == columns_first, text[:2000]
    got = compiler.compile(model, target="cpu", threads=2).run(inputs)["y"]  # on the host
    np.testing.assert_allclose(got, run_ort(model, inputs)["y"], rtol=1e-4, atol=1e-4)


def test_odd_channel_blocks_run_with_their_position_groups() -> None:
    """efficientnet_b0's 240->80 1x1 on 14x14 (`pointwise_channels`: 5 blocks of 16
    channels, 14 blocks of 14 positions) built for two threads runs two groups of its
    position blocks with each channel block, 10 tasks, not 5 split 3:2 (`position_groups`:
    its four such layers 438-443 -> 394-399 us in the model with two threads on Zen 5);
    built for one thread, or with an even count of channel blocks, no groups. Matches ONNX
    Runtime on the host with two threads."""
    from backends.tvm.schedules.conv_gemm_cpu import position_groups

    assert position_groups(5, 196, 14, 2) == 2 and position_groups(7, 196, 14, 2) == 2
    assert position_groups(5, 196, 14, 1) == 1 and position_groups(6, 196, 14, 2) == 1
    assert position_groups(5, 49, 12, 2) == 1  # a partial last block: not grouped
    model, inputs = _one_conv(19, 80, 240, [1, 240, 14, 14])
    [two] = _avx512_kernels(model, "conv_channels", threads=2)
    assert "channel blocks x position groups in parallel" in str(two.attrs["etch.tile"])
    assert re.search(r"T\.parallel\(T\.int64\(10\)\)", two.script())
    [one] = _avx512_kernels(model, "conv_channels", threads=1)
    assert "position groups" not in str(one.attrs["etch.tile"])
    got = compiler.compile(model, target="cpu", threads=2).run(inputs)["y"]
    np.testing.assert_allclose(got, run_ort(model, inputs)["y"], rtol=1e-4, atol=1e-4)


def test_a_one_block_channel_gemm_runs_its_positions_in_parallel() -> None:
    """squeezenet1_1's 64->16 1x1 on 55x55 (`pointwise_channels`: one block of 16 channels)
    runs groups of its position blocks in parallel (`position_groups`; it ran on one thread:
    140 us in the model with two threads, 66-78 after) and matches ONNX Runtime on the host
    with two threads; likewise densenet121's 128->32 3x3 on 14x14 (`direct_channels`, one
    block of 32 channels) its output rows (`row_groups`: 2.65 -> 2.01 ms over its 24 layers
    in the model with two threads). With four channel blocks there are no groups."""
    from backends.tvm.schedules.conv_gemm_cpu import position_groups, row_groups

    assert position_groups(1, 3025, 11) == 11 and position_groups(4, 3025, 11) == 1
    assert position_groups(1, 169, 8) == 1  # a partial last block: not grouped
    assert row_groups(1, 14) == 14 and row_groups(1, 7) == 7 and row_groups(4, 14) == 1
    init = RandomInits(12)
    model, inputs = init.model("one", [
        helper.make_node("Conv", ["x", init.weight("w", 16, 64, 1, 1), init.bias("b", 16)],
                         ["y"]),
        helper.make_node("Conv", ["v", init.weight("wv", 32, 128, 3, 3)], ["z"],
                         pads=[1, 1, 1, 1])], {"x": [1, 64, 55, 55], "v": [1, 128, 14, 14]},
        ["y", "z"])
    [gemm] = _avx512_kernels(model, "conv_channels", threads=2)
    assert gemm.script().count("in T.parallel(") == 1
    [direct] = _avx512_kernels(model, "conv_channels_direct", threads=2)
    direct = direct.script()  # 14 groups of one row, 32 channels
    assert re.search(r"in T\.parallel\((T\.int64\()?14\)", direct)
    got = compiler.compile(model, target="cpu", threads=2).run(inputs)  # on the host
    for name, want in run_ort(model, inputs).items():
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-4, err_msg=name)


def test_large_image_direct_channels_run_rows_before_channel_chunks() -> None:
    """inception_v3's 32->32 3x3 on 147x147 takes the channel-vector direct convolution (no
    Winograd: 12 MiB transformed) with its output rows outside its input-channel chunks and
    each row's epilogue right after it (`ROWS_FIRST_BYTES`: a block's accumulators over
    the image are 2.7 MiB; chunks first, each chunk re-read and re-wrote them: its 32->64
    twin, direct then, 7.0 -> 5.3 ms in the model, one thread). Matches ONNX Runtime on the
    host with two threads."""
    init = RandomInits(17)
    model, inputs = init.model("one", [helper.make_node(
        "Conv", ["x", init.weight("w", 32, 32, 3, 3), init.bias("b", 32)], ["y"],
        pads=[1, 1, 1, 1])], {"x": [1, 32, 147, 147]}, ["y"])
    [func] = _avx512_kernels(model, "conv_channels_direct", threads=2)
    script = func.script()
    assert script.index("for y_1 in") < script.index("rc_0"), script
    assert "rows before channel chunks" in str(func.attrs["etch.tile"])  # --explain's note
    # the epilogue over one row of the channel block (32 channels x 147 positions)
    assert re.search(r"T\.grid\(T\.int64\(32\), T\.int64\(147\)\):\s+with "
                     r"T\.sblock\(\"epilogue\"\)", script), script
    got = compiler.compile(model, target="cpu", threads=2).run(inputs)["y"]
    np.testing.assert_allclose(got, run_ort(model, inputs)["y"], rtol=1e-4, atol=1e-4)


def test_column_kernels_run_as_the_channels_gemm_over_padded_rows() -> None:
    """KH x 1 convolutions (stride 1, no column padding) take "column_channels" on
    AVX-512: the channel-vector GEMM over the image's flattened positions, its input
    padded by whole rows, each of the KH taps an offset of whole rows (inception_v3's 7x1
    layers on 17x17 in the model, one thread: 192->192 981 -> 906 us, 160->160 690 -> 641,
    kernel CPU time; they took the direct kernel's one-vector tile of 17 positions). A 1 x 7
    kernel keeps "direct_channels"; with 8 lanes neither is chosen. Asymmetric row padding
    and a batch of two match ONNX Runtime on the host."""
    init = RandomInits(18)
    model, inputs = init.model("one", [
        helper.make_node("Conv", ["x", init.weight("w", 48, 32, 7, 1), init.bias("b", 48)],
                         ["y"], pads=[3, 0, 3, 0]),
        helper.make_node("Conv", ["v", init.weight("wv", 32, 32, 3, 1)], ["z"],
                         pads=[2, 0, 0, 0]),
        helper.make_node("Conv", ["x", init.weight("wr", 48, 32, 1, 7)], ["r"],
                         pads=[0, 3, 0, 3])],
        {"x": [2, 32, 17, 17], "v": [2, 32, 9, 13]}, ["y", "z", "r"])
    graph = _channels_graph(model)
    chosen = {row["node"]: row["algorithm"] for row in json.loads(
        graph.metadata["etch.conv_algorithms"])}
    assert sorted(chosen.values()) == ["column_channels", "column_channels",
                                       "direct_channels"], chosen
    graph8 = onnx_import.import_model(model)
    graph8, _ = ChooseConvAlgorithm(lanes=8).run(graph8)
    assert "column_channels" not in graph8.metadata["etch.conv_algorithms"]
    scripts = [f.script() for f in _avx512_kernels(model, "conv_channels")]
    assert len(scripts) == 2 and all("pad_pad_const" in t and " ry" in t for t in scripts)
    got = compiler.compile(model, target="cpu").run(inputs)
    for name, want in run_ort(model, inputs).items():
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-4, err_msg=name)


def test_one_by_k_kernels_take_a_partial_last_block_of_the_row() -> None:
    """A 1x7 192->192 layer on 17x17 (inception_v3's) takes 2 zmm of channels by 9
    positions, the row's last block of 8 a loop of its own (`tiles.row_channel_tile`: 1.24
    -> 0.90x ONNX Runtime, one layer, one thread); it matches ONNX Runtime on the host."""
    init = RandomInits(19)
    model, inputs = init.model("one", [helper.make_node(
        "Conv", ["x", init.weight("w", 192, 32, 1, 7), init.bias("b", 192)], ["y"],
        pads=[0, 3, 0, 3])], {"x": [1, 32, 17, 17]}, ["y"])
    [func] = _avx512_kernels(model, "conv_channels_direct")
    assert func.attrs["etch.ocv"] == 32 and func.attrs["etch.pr"] == 9
    script = func.script()
    assert re.search(r"for c_01 in range\(T\.int64\(1\), T\.int64\(2\)\)", script), script
    got = compiler.compile(model, target="cpu").run(inputs)["y"]
    np.testing.assert_allclose(got, run_ort(model, inputs)["y"], rtol=1e-4, atol=1e-4)


def _one_conv(seed: int, oc: int, c: int, shape: list[int]):
    """(model, inputs) of one 1x1 conv with bias, x -> y."""
    init = RandomInits(seed)
    return init.model("one", [helper.make_node(
        "Conv", ["x", init.weight("w", oc, c, 1, 1), init.bias("b", oc)], ["y"])],
        {"x": shape}, ["y"])


def _gemm_parallel_loops(model, threads: int) -> list[str]:
    """The parallel loops of the model's `conv_gemm` kernel built for a named AVX-512 CPU
    and `threads` threads, whose `--explain` names the parallel loop the kernel's note
    names; the model built for the host with `threads` threads matches ONNX Runtime."""
    model, inputs = model
    [func] = _avx512_kernels(model, "conv_gemm", threads)
    art = compiler.compile(model, target="cpu", threads=threads)
    np.testing.assert_allclose(art.run(inputs)["y"], run_ort(model, inputs)["y"], rtol=1e-4,
                               atol=1e-4)
    named = compiler.compile(model, target="cpu", mcpu=NAMED_AVX512, threads=threads)
    note = str(func.attrs["etch.tile"])
    loop = re.search(r", ([a-z x]+) in parallel \(built for", note)
    assert loop and loop[1] in named.explain(), (note, named.explain())
    return re.findall(r"for (\w+) in T\.parallel", func.script())


@pytest.mark.parametrize("threads", [1, 2])
def test_wide_gemms_built_for_two_threads_run_their_column_blocks_in_parallel(
        threads: int) -> None:
    """A 256->32 1x1 on 32x32 (1024 positions, 32 column blocks; the GEMM's positions as
    the vector) built for two threads runs its column blocks in parallel, each thread
    reading the panel blocks it packed (`WIDE_COLUMNS`: squeezenet1_1's 256->32 on 27x27
    120 -> 90 us in the model with two threads); built for one thread it keeps the channel
    blocks outside (5-8% faster there). Both match ONNX Runtime on the host."""
    parallel = _gemm_parallel_loops(_one_conv(14, 32, 256, [1, 256, 32, 32]), threads)
    # the parallel loop over the column blocks (p_*) or over the channel blocks (o_*)
    assert any(v.startswith("p_") for v in parallel) == (threads == 2), parallel
    assert any(v.startswith("o_") for v in parallel) == (threads == 1), parallel
    [func] = _avx512_kernels(_one_conv(14, 32, 256, [1, 256, 32, 32])[0], "conv_gemm", threads)
    want = "column blocks in parallel (built for 2 threads)" if threads == 2 else \
        "channel blocks in parallel (built for 1 thread)"
    assert want in str(func.attrs["etch.tile"]), func.attrs["etch.tile"]


@pytest.mark.parametrize("c, oc, size", [(256, 32, 27), (512, 128, 28)])
def test_wide_gemm_chunks_that_split_unevenly_run_with_their_channel_blocks(
        c: int, oc: int, size: int) -> None:
    """squeezenet1_1's 256->32 1x1 on 27x27 (one chunk of 23 column blocks) and resnet50's
    512->128 on 28x28 (25 blocks, chunks of 5) built for two threads: a chunk's column
    blocks would split 12:11 and 3:2, so its column and channel blocks run under one
    parallel loop, half of the pairs a thread (`conv_gemm_cpu._uneven`: resnet50's layer
    832-888 -> 732-735 us with two threads on Zen 5). Matches ONNX Runtime on the host."""
    conv = _one_conv(15, oc, c, [1, c, size, size])
    parallel = _gemm_parallel_loops(conv, 2)
    # the GEMM's loop over (column block, channel block) pairs (a ragged in-place GEMM's
    # epilogue is a parallel loop of its own after it)
    assert parallel[0].startswith("p_") and "_o_" in parallel[0], parallel
    [func] = _avx512_kernels(conv[0], "conv_gemm", 2)
    assert "column x channel blocks in parallel (built for 2 threads)" in \
        str(func.attrs["etch.tile"]), func.attrs["etch.tile"]
    assert int(func.attrs["etch.chunk"]) % 2 == 1


@pytest.mark.parametrize("shape,oc", [([1, 64, 56, 56], 256), ([1, 16, 112, 112], 96)])
def test_gemms_with_more_channels_than_reduction_run_column_runs_a_thread(shape, oc) -> None:
    """resnet50's 64->256 1x1 on 56x56 and mobilenet_v2's 16->96 on 112x112 built for two
    threads run a contiguous half of their column blocks a thread, each thread packing
    that half's panel and running every channel block over it (`column_groups`): with the
    channel blocks split, each thread read the whole panel, half of it packed in the other
    core's cache (262 -> 213 us for 16->96 on Zen 4); with the column blocks outermost
    (`wide`), each thread wrote a few positions of every output row (resnet50's 922 us
    against 439 split by channels). Matches ONNX Runtime on the host."""
    parallel = _gemm_parallel_loops(_one_conv(16, oc, shape[1], shape), 2)
    assert len(parallel) == 1 and parallel[0].startswith("p_"), parallel
    [func] = _avx512_kernels(_one_conv(16, oc, shape[1], shape)[0], "conv_gemm", 2)
    assert "column runs in parallel (built for 2 threads)" in str(func.attrs["etch.tile"])
    [one] = _avx512_kernels(_one_conv(16, oc, shape[1], shape)[0], "conv_gemm", 1)
    assert "channel blocks in parallel (built for 1 thread)" in str(one.attrs["etch.tile"])


@pytest.mark.parametrize("threads", [1, 2])
def test_channel_parallel_gemms_pack_small_panels_in_parallel(threads: int) -> None:
    """A 16->128 1x1 on 31x31 (positions not whole blocks: its channel blocks are the
    parallel loop) built for two threads packs its 15k-value panel in parallel too, under
    PARALLEL_PAD_ELEMENTS (`_schedule_panel`'s `eager`: squeezenet1_1's 16->64 on 55x55,
    a 48k-value panel when that threshold was 64k, packed on one thread 59 us a call, 51 in
    parallel, on Zen 4); built for one thread the small panel stays one serial loop. Both
    match ONNX Runtime on the host."""
    parallel = _gemm_parallel_loops(_one_conv(18, 128, 16, [1, 16, 31, 31]), threads)
    assert len(parallel) == threads, parallel  # two: the panel's blocks, the channel blocks
    assert any(v.startswith("o_") for v in parallel), parallel


@pytest.mark.parametrize("threads", [1, 2])
def test_batched_gemms_built_for_two_threads_run_their_images_in_parallel(
        threads: int) -> None:
    """shufflenet_v2's 116->116 1x1 on 14x14 at batch 8 (four images here) built for two
    threads runs its images in parallel, each thread packing its images' panels and running
    every channel block on them (`PARALLEL_IMAGES`; it ran image after image, each split by
    channel blocks with a panel packed on one thread: shufflenet_v2 batch 8, two threads,
    19.8 -> 16.7 ms); for one thread the channel blocks stay the parallel loop, each
    image's panel (22.7k values, over PARALLEL_PAD_ELEMENTS) packed in parallel before
    them. Both match ONNX Runtime on the host."""
    parallel = _gemm_parallel_loops(_one_conv(15, 116, 116, [4, 116, 14, 14]), threads)
    assert parallel == (["n_p_0_0_fused"] if threads == 2 else ["ax00", "o_0"]), parallel


@pytest.mark.parametrize("shape,oc,images", [
    ([2, 116, 28, 28], 116, True),   # shufflenet_v2's branch layer, two images
    ([2, 64, 28, 28], 1024, False),  # more output channels than positions
])
def test_image_pairs_built_for_two_threads_run_an_image_a_thread(shape, oc, images) -> None:
    """Two images (the groups split_batch runs when built for two threads) of a GEMM with
    more positions than output channels run as the parallel loop, one image a thread (the
    image, not the weight, the larger operand: shufflenet_v2 batch 8 with two threads
    22.8 -> 20.8 ms, squeezenet1_1 39.8 -> 35.4, with the grouping); with more channels
    than positions the channel blocks stay the parallel loop. Both match ONNX Runtime."""
    parallel = _gemm_parallel_loops(_one_conv(17, oc, shape[1], shape), 2)
    # a GEMM read in place whose last block is partial runs its epilogue as a loop of its
    # own after it ("n_o_fused", `conv_gemm_cpu._root_epilogue`), in parallel too
    gemm = [v for v in parallel if v != "n_o_fused"]
    assert (gemm == ["n_p_0_0_fused"]) == images, parallel


@pytest.mark.parametrize("shape,oc,threads,direct", [
    ([1, 256, 16, 16], 64, 1, True),   # fewer output channels than input: in place
    ([2, 256, 16, 16], 64, 2, True),   # two images, one a thread
    ([1, 128, 56, 56], 64, 2, True),   # 98 blocks: chunks of 14 that divide them
    ([1, 512, 8, 8], 640, 1, True),    # one block holds the image: the input is the panel
    ([1, 64, 16, 16], 256, 1, False),  # expanding: each input block re-read by 32 blocks
    ([1, 256, 28, 28], 64, 1, True),   # 784 positions: the last block overlaps the one before
    ([1, 192, 35, 35], 48, 2, True),   # 1225: column blocks in parallel, the last partial
    ([2, 192, 35, 35], 64, 2, True),   # two images, one a thread, each's last block partial
    ([3, 96, 5, 9], 40, 1, False),     # 45 positions, under one block: the panel pads them
])
def test_reducing_pointwise_gemms_read_their_input_in_place(shape, oc, threads,
                                                            direct) -> None:
    """A pointwise GEMM with at least one block of positions and no more output channels
    than input ones (or one block) reads its input where it lies, no panel packed
    (`conv_gemm.in_place`: resnet50's 256->64 on 56x56 477 -> 414 us on Zen 5, 512->128 on
    28x28 457 -> 405), in chunks that divide its blocks; where the last block is partial it
    reads the last block's worth of positions and the epilogue takes them from there; an
    expanding one or one under a block keeps the packed panel. `--explain` says which;
    all match ONNX Runtime on the host."""
    model, inputs = _one_conv(19, oc, shape[1], shape)
    [func] = _avx512_kernels(model, "conv_gemm", threads)
    script = func.script()
    assert int(func.attrs["etch.direct"]) == direct
    assert ('panel = T.sblock_alloc_buffer' not in script) == direct
    assert ("the input read in place" in str(func.attrs["etch.tile"])) == direct
    blocks = -(-shape[2] * shape[3] // int(func.attrs["etch.vw"]))
    if direct:
        assert blocks % int(func.attrs["etch.chunk"]) == 0
    art = compiler.compile(model, target="cpu", threads=threads)
    np.testing.assert_allclose(art.run(inputs)["y"], run_ort(model, inputs)["y"], rtol=1e-4,
                               atol=1e-4)
    assert ("the input read in place" in art.explain()) == (
        direct and art.manifest["vector_lanes"] == 16)


@pytest.mark.parametrize("shape,oc,threads,channels", [
    ([2, 256, 14, 14], 512, 2, True),   # 7x7 out (49 positions): the channel GEMM
    ([1, 128, 28, 28], 256, 1, True),   # 14x14 out (196)
    ([1, 64, 56, 56], 128, 1, False),   # 28x28 out: whole blocks of positions, im2col
])
def test_strided_pointwise_convs_take_the_channel_gemm(shape, oc, threads, channels) -> None:
    """A 1x1 stride-2 projection whose output positions would not fill whole vectors
    (resnet50's 1024->2048 to 7x7: 1.24 -> 0.99 ms in the model on Zen 5, ORT 1.10) runs
    as the channel-vector GEMM, each output position's input broadcast where it lies, no
    patches packed; one whose positions fill their blocks keeps im2col. `--explain` says
    why; both match ONNX Runtime on the host."""
    init = RandomInits(23)
    node = helper.make_node("Conv", ["x", init.weight("w", oc, shape[1], 1, 1),
                                     init.bias("b", oc)], ["y"], strides=[2, 2])
    model, inputs = init.model("proj", [node], {"x": shape}, ["y"])
    graph = _channels_graph(model)
    [conv] = [n for n in graph.nodes if n.op in ("Conv", "etch.Fused")]
    assert (conv.attrs["conv_algorithm"] == "pointwise_channels") == channels
    assert ("1x1 stride 2x2: one GEMM over the output positions" in explain(graph.metadata)) == channels
    if channels:
        assert _avx512_kernels(model, "conv_channels", threads)
    art = compiler.compile(model, target="cpu", threads=threads)
    np.testing.assert_allclose(art.run(inputs)["y"], run_ort(model, inputs)["y"], rtol=1e-4,
                               atol=1e-4)


def test_avx2_gemms_keep_their_panel() -> None:
    """Reading in place was measured on AVX-512 only: compiled for an AVX2 CPU (named, not
    the host) the same reducing 1x1 GEMM packs its panel."""
    model, _ = _one_conv(19, 64, 256, [1, 256, 16, 16])
    graph = ChooseConvAlgorithm(lanes=8).run(onnx_import.import_model(model))[0]
    asm = isa.compile_graph(graph, "avx2")
    [kernel] = asm.of_kind("conv_gemm")
    assert int(asm.attrs[kernel]["direct"]) == 0
