"""The TVM backend's integer ops and weight-only dequantisation (backends/tvm/lower/int_*.py,
backends/tvm/schedules/int_*.py).

Every integer result is compared bit for bit with the reference interpreter (the numerics
contract): each op on small hand-built IR graphs, grouped by the integer fusion pass as the
pipeline does (etch.QFused: one kernel per group) and alone, on the x86 kernels and (mcpu
x86-64, no AVX2) on the portable TE kernels, then the zoo models end to end (`--int` cpu vs
ref). The weight-only path is compared to float tolerance and checked to keep the codes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax, te

import compiler
from backends.tvm import lower, schedules
from backends.tvm import target as targets
from backends.tvm.builder import vm_passes
from backends.tvm.lower.int_eltwise import requantize
from backends.tvm.schedules import cpu as cpu_rules
from compiler import reference
from compiler.ir import Graph, Node, Value
from compiler.onnx_import import infer_outputs
from compiler.options import CompileOptions
from compiler.reference import quantize_multiplier
from models import zoo
from passes.flatten_pointwise import FlattenPointwise
from passes.fuse_integer import FuseInteger
from passes.linear_qadd import LinearQAdd
from runtime.host_cpu import host_features, runs_code_for
from tests.backends import isa
from tests.edge_tools import NEEDS_EDGE, needs_edge
from tests.golden import assert_bitexact, assert_close

ZOO = ["digits_mlp", "digits_cnn", "resnet_block", "mobilenet"]
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
AVX2 = "avx2" in host_features()  # as etch compile detects it
VBMI = {"avx512bw", "avx512vbmi"} <= set(host_features())


class IntGraph:
    """A hand-built IR graph: inputs with data, constants, nodes (shapes inferred)."""

    def __init__(self, seed: int = 0) -> None:
        self.g, self.feeds = Graph("int"), {}
        self.rng = np.random.default_rng(seed)

    def input(self, name: str, data: np.ndarray) -> str:
        self.g.add_value(Value(name, data.shape, data.dtype.name))
        self.g.inputs.append(name)
        self.feeds[name] = data
        return name

    def const(self, name: str, data) -> str:
        return self.g.add_const(name, np.asarray(data)).name

    def ints(self, name: str, dtype: str, shape: tuple, lo: int | None = None,
             hi: int | None = None) -> str:
        info = np.iinfo(dtype)
        lo, hi = info.min if lo is None else lo, info.max if hi is None else hi
        return self.input(name, self.rng.integers(lo, hi + 1, shape).astype(dtype))

    def op(self, op: str, inputs: list[str], out: str, **attrs) -> str:
        node = Node(op, list(inputs), [out], attrs)
        [(shape, dtype)] = infer_outputs(node, [self.g.values[i] if i else None
                                                for i in inputs])
        self.g.add_value(Value(out, tuple(shape), dtype))
        self.g.add_node(node)
        return out

    def requantize(self, acc: str, channels: int, axis: int = 1, scale: float = 1e-2) -> str:
        """Requantise `acc` to int8 "y" with per-channel multipliers up to `scale` (large
        ones make magnitudes that the kernels' vector form does not take)."""
        m0, shift = quantize_multiplier(self.rng.uniform(scale / 1000, scale, channels))
        return self.op("etch.Requantize", [acc, self.const("m0", m0.astype(np.int32)),
                                           self.const("shift", shift.astype(np.int32))],
                       "y", axis=axis, zero_point=3, qmin=-128, qmax=127, to="int8")

    def outputs(self, *names: str) -> IntGraph:
        self.g.outputs += list(names)
        return self


def build(graph: Graph, mcpu: str | None = None) -> tuple[tvm.IRModule, object]:
    """The scheduled Relax module of `graph` and its executable, for the host or `mcpu`."""
    target_json, info = targets.cpu_target(CompileOptions(target="cpu", mcpu=mcpu))
    target = tvm.target.Target(target_json)
    mod = schedules.apply_rules(lower.to_irmodule(graph, pack=True, lanes=info.lanes), target)
    return mod, tvm.compile(mod, target=target, relax_pipeline=vm_passes())


def run_tvm(case: IntGraph, mcpu: str | None = None, fuse: bool = True,
            linear: bool = True) -> dict[str, str]:
    """Run the graph in TVM (after the integer fusion passes of the cpu pipeline, unless
    `fuse` is False; `linear`: with LinearQAdd's straight-line residual adds), assert it
    equals the reference on the graph as built bit for bit; returns the schedule rules
    used."""
    graph = case.g
    if fuse:
        for p in (FuseInteger(), *[LinearQAdd()] * linear, FlattenPointwise()):
            graph, _ = p.run(graph)
            graph.verify()
    mod, ex = build(graph, mcpu)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(case.feeds[n]) for n in graph.inputs])
    outs = [out] if len(graph.outputs) == 1 else list(out)
    got = {n: o.numpy() for n, o in zip(graph.outputs, outs)}
    assert_bitexact(got, reference.run(case.g, case.feeds))
    return schedules.rule_names(mod)


# ---- the requantisation formula ---------------------------------------------------------
@pytest.mark.parametrize("acc_dtype", ["int32", "int64"])
def test_requantize_formula_matches_reference(acc_dtype: str) -> None:
    rng = np.random.default_rng(1)
    n = 256
    acc = rng.integers(INT32_MIN, INT32_MAX + 1, n).astype(np.int32)
    acc[:6] = [INT32_MIN, INT32_MAX, 0, -1, 1, -3]
    m0 = rng.integers(1 << 30, 1 << 31, n).astype(np.int32)
    shift = rng.integers(0, 63, n).astype(np.int32)
    m0[6:10], shift[6:10], acc[6:10] = 1 << 30, 31, [-5, 5, -7, 7]  # exact .5 ties
    a, m, s = (te.placeholder((n,), "int32") for _ in range(3))
    out = te.compute((n,), lambda i: requantize(a(i).astype(acc_dtype), m(i), s(i), -2,
                                                INT32_MIN, INT32_MAX))
    f = tvm.compile(tvm.IRModule({"main": te.create_prim_func([a, m, s, out])}),
                    target=tvm.target.Target({"kind": "llvm"}))
    got = tvm.runtime.tensor(np.zeros(n, np.int64))
    f(*(tvm.runtime.tensor(x) for x in (acc, m0, shift)), got)
    np.testing.assert_array_equal(got.numpy(),
                                  reference.requantize(acc, m0, shift, -2, INT32_MIN, INT32_MAX))


@pytest.mark.parametrize("to", ["int8", "uint8"])
def test_requantize_per_channel_ties_and_large_shifts(to: str) -> None:
    case = IntGraph()
    acc = np.array([[-5, 5, -7, 7, INT32_MIN, INT32_MAX], [-3, 3, -1, 1, 0, -2],
                    [-(3 << 10), 3 << 10, -(5 << 20), 5 << 20, 77, -77]], np.int32)
    x = case.input("acc", np.repeat(acc[:, None, :], 4, axis=1))  # [3, 4, 6], channels 4
    m0 = np.array([1 << 30, (1 << 31) - 1, 1 << 30, 1500000000], np.int32)
    shift = np.array([31, 32, 41, 50], np.int32)  # x/2, ~x/4, x/2^11 (ties), tiny
    case.op("etch.Requantize", [x, case.const("m0", m0), case.const("shift", shift)], "y",
            axis=1, zero_point=-4 if to == "int8" else 128, qmin=-128 if to == "int8" else 0,
            qmax=127 if to == "int8" else 255, to=to)
    run_tvm(case.outputs("y"))


# ---- QGemm -------------------------------------------------------------------------------
@pytest.mark.parametrize("adtype,bits,rows,n,scale", [
    ("int8", 8, 3, 24, 1e-2), ("uint8", 8, 1, 20, 1e-2), ("int8", 4, 5, 40, 1e-2),
    ("uint8", 4, 2, 16, 1e-2), ("int8", 8, 2, 16, 1.5)])
def test_qgemm_requantized(adtype: str, bits: int, rows: int, n: int, scale: float) -> None:
    case = IntGraph(bits)
    k = 37
    q = (1 << (bits - 1)) - 1
    a = case.ints("a", adtype, (2, rows, k))
    w = case.const("w", case.rng.integers(-q, q + 1, (k, n)).astype(np.int8))
    bias = case.const("bias", case.rng.integers(-9000, 9000, n).astype(np.int32))
    zero = case.const("a_zero", np.array(-9 if adtype == "int8" else 140, adtype))
    acc = case.op("etch.QGemm", [a, w, bias, zero], "acc")
    rules = run_tvm(case.outputs(case.requantize(acc, n, axis=-1, scale=scale)))
    if AVX2:
        assert rules == {"QDense": 1}


def test_qgemm_group_multipliers_and_weight_zero_points() -> None:
    case = IntGraph(2)
    k, n, g = 32, 12, 8
    a = case.ints("a", "uint8", (3, k))
    w = case.const("w", case.rng.integers(-7, 8, (k, n)).astype(np.int8))
    w_zero = case.const("w_zero", case.rng.integers(-2, 3, n).astype(np.int8))
    mult = case.const("w_mult", case.rng.integers(1, 60, (k // g, n)).astype(np.int32))
    acc = case.op("etch.QGemm", [a, w, "", case.const("z", np.uint8(128)), w_zero, mult],
                  "acc", group_size=g)
    run_tvm(case.outputs(acc))


def test_qgemm_of_two_activations() -> None:
    case = IntGraph(3)
    a = case.ints("a", "int8", (2, 4, 9))
    b = case.ints("b", "int8", (2, 9, 5))
    acc = case.op("etch.QGemm", [a, b, "", case.const("za", np.int8(3)), "", ""], "acc")
    run_tvm(case.outputs(acc))


# ---- QConv -------------------------------------------------------------------------------
CONVS = {  # name: (x dtype, C, OC, H, W, k, attrs, weight bits)
    "3x3": ("int8", 8, 16, 6, 7, 3, {"pads": [1, 1, 1, 1]}, 8),
    "stride2_uint8": ("uint8", 3, 16, 9, 9, 3, {"pads": [1, 1, 1, 1], "strides": [2, 2]}, 8),
    "grouped": ("int8", 32, 32, 5, 5, 3, {"pads": [1, 1, 1, 1], "group": 2}, 4),
    # rows of 16+ columns: the stride-2 input copy's vector blocks (even and odd left pads)
    "stride2_wide": ("int8", 8, 16, 5, 37, 3, {"pads": [1, 2, 1, 0], "strides": [2, 2]}, 8),
    # short rows: flattened output positions (`int_flat`)
    "flat_7x7": ("int8", 12, 16, 7, 7, 3, {"pads": [1, 1, 1, 1]}, 8),
    "flat_stride2": ("uint8", 8, 32, 14, 13, 3, {"pads": [1, 0, 1, 1], "strides": [2, 2]}, 8),
    "flat_5x5_dilated": ("int8", 4, 16, 9, 8, 3, {"pads": [2, 1, 2, 3], "dilations": [2, 2]},
                         8),
    "wide_rows": ("int8", 8, 16, 4, 32, 3, {"pads": [1, 1, 1, 1]}, 8),  # 2 whole vectors
    # rows of 40 (3 vectors, 48 lanes): 32 flat vectors against 36, rows copied out whole
    "rows_of_40": ("uint8", 8, 16, 12, 40, 3, {"pads": [1, 1, 1, 1]}, 8),
    "stem_stride2": ("uint8", 3, 16, 9, 40, 7, {"pads": [3, 3, 3, 3], "strides": [2, 2]}, 8),
    "depthwise": ("int8", 16, 16, 6, 6, 3, {"pads": [1, 1, 1, 1], "group": 16}, 8),
    "depthwise_stride2": ("uint8", 8, 8, 19, 17, 3, {"pads": [1, 1, 1, 1], "group": 8,
                                                      "strides": [2, 2]}, 8),
    "depthwise_wide": ("int8", 4, 4, 3, 37, 3, {"pads": [1, 1, 1, 1], "group": 4}, 8),
    "depthwise_stride2_wide": ("uint8", 4, 4, 5, 71, 3, {"pads": [1, 1, 1, 1], "group": 4,
                                                          "strides": [2, 2]}, 8),
    "depthwise_stride3_wide": ("int8", 4, 4, 4, 50, 3, {"pads": [0, 2, 0, 2], "group": 4,
                                                         "strides": [1, 3]}, 8),
    # byte windows: chunks of four taps over two kernel rows (5x5, 7x7), dilated taps, an
    # asymmetric pad; and a stride whose 16 outputs read past one 64-byte window (the int16
    # kernel)
    "depthwise_5x5_dilated": ("int8", 6, 6, 12, 40, 5, {"pads": [4, 3, 4, 5], "group": 6,
                                                        "dilations": [2, 2]}, 8),
    "depthwise_7x7": ("uint8", 5, 5, 11, 23, 7, {"pads": [3, 3, 3, 3], "group": 5}, 8),
    "depthwise_stride5_wide": ("uint8", 3, 3, 7, 90, 5, {"pads": [2, 2, 2, 2], "group": 3,
                                                         "strides": [2, 5]}, 8),
    # rows shorter than a vector: byte windows over the flattened outputs (7x7 in 4 vectors;
    # 5x5 taps over two windows; 14x14; stride 2 with an asymmetric pad)
    "depthwise_flat_5x5": ("int8", 6, 6, 7, 7, 5, {"pads": [2, 2, 2, 2], "group": 6}, 8),
    "depthwise_flat_14": ("uint8", 4, 4, 14, 14, 3, {"pads": [1, 1, 1, 1], "group": 4}, 8),
    "depthwise_flat_stride2": ("int8", 5, 5, 14, 13, 3, {"pads": [1, 0, 1, 1], "group": 5,
                                                          "strides": [2, 2]}, 8),
    "pointwise": ("int8", 16, 24, 4, 4, 1, {}, 8),
    "partial_quads": ("int8", 6, 16, 5, 19, 3, {"pads": [1, 2, 0, 1]}, 8),
    "grouped_partial_quads": ("uint8", 12, 16, 10, 10, 3, {"pads": [1, 1, 1, 1],
                                                            "group": 2}, 8),
    "dilated_4bit": ("int8", 8, 10, 9, 9, 3, {"pads": [2, 2, 2, 2], "dilations": [2, 2]}, 4),
    # tiles that divide the channels or the vectors not (VNNI: the last tile narrower):
    # rows of 5 vectors in 2 + 2 + 1; 29 channels a group in 12 + 12 + 5; 7 flat vectors
    # (64 input channels: a reduction long enough that the epilogue does not decide the tile)
    "tail_tiles": ("uint8", 64, 12, 4, 80, 3, {"pads": [1, 1, 1, 1]}, 8),
    # a pointwise conv over one long row (as `FlattenPointwise` leaves it), 16 channels
    "pointwise_row": ("int8", 16, 24, 1, 256, 1, {}, 8),
    "tail_tiles_grouped": ("int8", 16, 58, 3, 64, 3, {"pads": [1, 1, 1, 1], "group": 2}, 8),
    "tail_tiles_flat": ("int8", 8, 8, 9, 9, 3, {"pads": [1, 1, 1, 1]}, 8),
    # dense planes (`int_flat._dense_planes`) at stride 2, with tail tiles and a last
    # vector reading past the last plane: 14x14 outputs in 13 vectors (flat: 14)
    "dense_stride2": ("uint8", 16, 144, 28, 28, 3, {"pads": [1, 1, 1, 1], "strides": [2, 2]},
                      8),
    "dense_5x5": ("int8", 8, 40, 12, 12, 5, {"pads": [2, 1, 2, 3]}, 8),
    "dense_partial_quads": ("int8", 6, 48, 10, 10, 3, {"pads": [1, 1, 1, 1]}, 8),
    # channel vectors (`int_channels`): 7x7 outputs (49 positions: 3 tiles of 16 and one)
    "channels_7x7": ("uint8", 24, 32, 7, 7, 3, {"pads": [1, 1, 1, 1]}, 8),
    "channels_stride2": ("int8", 16, 48, 14, 13, 3, {"pads": [1, 0, 1, 1], "strides": [2, 2]},
                         8),
    "channels_1x1": ("int8", 40, 64, 1, 49, 1, {}, 8),
    "channels_5x5": ("uint8", 8, 16, 5, 5, 3, {"pads": [2, 2, 2, 2], "dilations": [2, 2]}, 8),
}
# layouts only (compiled, not run): big planes whose kw-fold copy costs more than it saves
LAYOUTS = {
    "vgg_224": ("uint8", 64, 64, 224, 224, 3, {"pads": [1, 1, 1, 1]}, 8),
}


def _qconv_case(name: str, requant: bool = True, extra: tuple = (), batch: int = 1
                ) -> IntGraph:
    dtype, c, oc, h, w, k, attrs, bits = {**CONVS, **LAYOUTS}[name]
    case = IntGraph(len(name))
    x = case.ints("x", dtype, (batch, c, h, w))
    q = (1 << (bits - 1)) - 1
    group = attrs.get("group", 1)
    wt = case.const("w", case.rng.integers(-q, q + 1, (oc, c // group, k, k)).astype(np.int8))
    bias = case.const("bias", case.rng.integers(-5000, 5000, oc).astype(np.int32))
    zero = case.const("x_zero", np.array(-7 if dtype == "int8" else 130, dtype))
    acc = case.op("etch.QConv", [x, wt, bias, zero, *extra], "acc", kernel_shape=[k, k],
                  **attrs)
    return case.outputs(case.requantize(acc, oc) if requant else acc)


@pytest.mark.parametrize("name", sorted(CONVS))
def test_qconv(name: str) -> None:
    rules = run_tvm(_qconv_case(name))
    if AVX2:
        assert rules == ({"QDepthwise": 1} if name.startswith("depthwise") else {"QConv": 1})


@pytest.mark.parametrize("name", ["tail_tiles", "tail_tiles_flat", "grouped", "3x3",
                                  "dense_stride2", "channels_stride2"])
def test_qconv_batch(name: str) -> None:
    """A batch of 3 images through the row, flat, dense, channel-vector and grouped
    kernels."""
    run_tvm(_qconv_case(name, batch=3))


@pytest.mark.parametrize("name,copies", [("dense_5x5", 2), ("3x3", 1), ("flat_7x7", 1),
                                         ("wide_rows", 1)])
def test_qconv_pads_one_image_at_a_time(name: str, copies: int) -> None:
    """The row and flat kernels copy one image into the padded quad layout (the dense
    layout once more into its shifted planes), then run its tiles, image by image: at
    batch 3 the copies' buffers are one image's, as at batch 1 (a copy of the whole batch
    at once left the images' copies in L3 or memory at batch 8: `--int` batch 8 was 5-10%
    slower on every ImageNet model of the zoo). Exactness: test_qconv_batch."""
    def pads(batch: int) -> list[str]:
        graph = _qconv_case(name, requant=False, batch=batch).g
        target = tvm.target.Target(isa.target_json("znver4"))
        mod = schedules.apply_rules(
            lower.to_irmodule(graph, pack=True, lanes=cpu_rules.lanes(target)), target)
        [func] = [f for g, f in mod.functions_items() if "qconv2d" in g.name_hint]
        return re.findall(r"alloc_buffer\((\(\d+,\)), \"uint8\"\)", func.script())

    assert len(pads(1)) == copies and pads(3) == pads(1)


@pytest.mark.parametrize("name,layout", [
    ("flat_7x7", "flat"), ("flat_stride2", "flat"), ("rows_of_40", "flat"), ("3x3", "flat"),
    ("partial_quads", "flat"), ("dense_stride2", "dense"), ("dense_5x5", "dense"),
    ("dense_partial_quads", "dense"), ("wide_rows", "output rows"),
    ("vgg_224", "output rows")])
def test_short_rows_are_flattened(name: str, layout: str) -> None:
    """On a 16-lane VNNI CPU, convs run over flattened positions (`int_flat`: a 7x7 output
    is 4 vectors, not 7; rows of 40 are 32, not 36) wherever that takes no more vectors
    than the rows; over dense positions (the outputs themselves, from kw column-shifted
    planes: 14x14 in 13 vectors, not 14) where that takes fewer still and the steps it
    saves pay for the copy (`int_cpu.dense_vectors`; a 7x7 output is 4 vectors either
    way, 224x224 rows of whole vectors lose nothing); the schedule records the tile; rows
    of whole vectors keep the per-row kernel. Exactness: test_qconv."""
    asm = isa.compile_graph(_qconv_case(name, requant=False).g, "znver4")
    [kernel] = asm.of_kind("qconv2d")
    tile = str(asm.attrs[kernel].get("tile", ""))
    assert asm.rules == {"QConv": 1} and tile.startswith(layout), tile


@pytest.mark.parametrize("name,kind,channels,vectors", [
    ("tail_tiles", "output rows", 12, 5), ("tail_tiles_grouped", "output rows", 29, 4),
    ("tail_tiles_flat", "flat positions", 8, 7)])
def test_vnni_conv_tiles_need_not_divide(name: str, kind: str, channels: int,
                                         vectors: int) -> None:
    """With vpdpbusd the conv tile is the step model's choice over the whole conv
    (`int_cpu.conv_tile`), not always a divisor of a group's channels and the vectors:
    12 x 2 for 12 channels x 5 vectors and for 29 x 4, 8 x 3 for 8 x 7 (the last tiles
    narrower). Exactness: test_qconv."""
    from backends.tvm.schedules import int_cpu

    asm = isa.compile_graph(_qconv_case(name, requant=False).g, "znver4")
    [kernel] = asm.of_kind("qconv2d")
    c, k, group = CONVS[name][1], CONVS[name][5], CONVS[name][6].get("group", 1)
    steps = k * k * -(-c // group // 4)
    ocb, xv = int_cpu.conv_tile(channels, vectors, int_cpu.VNNI_ACC[16], steps=steps)
    assert channels % ocb or vectors % xv
    assert str(asm.attrs[kernel].get("tile", "")) == f"{kind}, {ocb} channels x {xv} vectors"
    assert "vpdpbusd" in asm.kernels[kernel]


def test_vnni_conv_tile_counts_the_epilogue() -> None:
    """With a short reduction the requantising epilogue's per-channel set-up (the channel's
    multiplier, shift, bias and rounding term, `int_cpu.EPI_CHANNEL`) is a large share of a
    tile's work, so the step model takes fewer channels and more vectors a tile; a long
    reduction keeps the tile the dot steps alone choose. (A/B on the Xeon, `--int`, one
    thread, identical outputs: squeezenet1_1 0.94, efficientnet_b0 0.93, resnet50 0.96 at
    batch 1 and 8, mobilenet_v2 0.99, densenet121 1.00.)"""
    from backends.tvm.schedules import int_cpu

    short = int_cpu.conv_tile(24, 16, int_cpu.VNNI_ACC[16], steps=4)
    assert short[1] >= 4 and short[1] > int_cpu.conv_tile(24, 16, int_cpu.VNNI_ACC[16])[1]
    assert int_cpu.conv_tile(64, 4, int_cpu.VNNI_ACC[16], steps=144) == \
        int_cpu.conv_tile(64, 4, int_cpu.VNNI_ACC[16])
    asm = isa.compile_graph(_qconv_case("pointwise_row", requant=False).g, "znver4")
    [kernel] = asm.of_kind("qconv2d")
    assert str(asm.attrs[kernel]["tile"]) == \
        f"output rows, {short[0]} channels x {short[1]} vectors"


@pytest.mark.parametrize("mcpu,step", [("skylake-avx512", "vpmaddwd"), ("haswell", "vpmaddwd")])
@pytest.mark.parametrize("name,layouts", [  # (16 lanes, 8 lanes)
    ("depthwise_wide", ("row pairs", "row pairs")),
    ("depthwise_stride2_wide", ("row pairs", "row pairs")),
    ("depthwise", ("column pairs", "rows")),               # 6 columns: one vector
    ("depthwise_stride2", ("column pairs", "row pairs"))])  # 9 columns: 1 zmm, 2 ymm
def test_depthwise_tap_pairs(name: str, layouts: tuple, mcpu: str, step: str) -> None:
    """Without AVX512-VBMI and VNNI, depthwise rows of 2+ vectors take two taps (rows ry,
    ry + 1) per 16-bit pair multiply-add (vpmaddwd); rows of one zmm take two taps of one
    row (columns k, k + 1 of a stride phase, read from the plane itself); no int32
    multiplies either way. AVX2's one-vector rows keep the int32 products (`vpmulld`).
    Exactness: `test_depthwise_kernels_run_exactly`."""
    asm = isa.compile_graph(_qconv_case(name, requant=False).g, mcpu)
    [kernel] = asm.of_kind("qdepthwise")
    code = asm.kernels[kernel]
    layout = layouts[mcpu == "haswell"]
    assert asm.attrs[kernel].get("tile", "").startswith(layout)
    paired = layout != "rows"
    assert (re.search(rf"{step}\s", code) is not None) == paired
    assert ("vpmulld" in code) != paired


DEPTHWISE = sorted(n for n in CONVS if n.startswith("depthwise"))


@pytest.mark.parametrize("mcpu", ["znver4", "icelake-server"])
@pytest.mark.parametrize("name", DEPTHWISE)
def test_depthwise_byte_windows(name: str, mcpu: str) -> None:
    """With AVX512-VBMI and VNNI every depthwise layer whose 16 outputs read at most 64
    bytes of a plane row runs on byte windows: per chunk of four taps one byte permute
    (vpermb, or vpermi2b / vpermt2b over two kernel rows) and one vpdpbusd; no int16
    plane, no 16-bit or 32-bit multiplies. Rows shorter than a vector run over the
    flattened outputs where that takes fewer vectors than the rows (a 6x6 plane in 3, a 7x7
    in 4). A stride-5 row reads past the window: the int16 kernel. Exactness:
    `test_depthwise_kernels_run_exactly`."""
    asm = isa.compile_graph(_qconv_case(name, requant=False).g, mcpu)
    [kernel] = asm.of_kind("qdepthwise")
    code, tile = asm.kernels[kernel], str(asm.attrs[kernel].get("tile", ""))
    windows = name != "depthwise_stride5_wide"
    flat = name in ("depthwise", "depthwise_stride2") or name.startswith("depthwise_flat")
    assert ("byte windows" in tile) == windows and tile.startswith("flat") == flat, tile
    if windows:
        assert re.search(r"vperm(i2|t2)?b\s", code) and re.search(r"vpdpbusd\s", code)
        assert not re.search(r"vpmaddwd\s|vpdpwssd\s|vpmulld\s", code)


@pytest.mark.parametrize("mcpu", [None, "skylake-avx512", "icelake-server", "haswell"])
@pytest.mark.parametrize("name", DEPTHWISE)
def test_depthwise_kernels_run_exactly(name: str, mcpu: str | None) -> None:
    """Each depthwise kernel (the host's; the int16 planes' at 16 lanes, skylake-avx512;
    the byte windows, icelake-server; 8 lanes, haswell) against the reference, bit for
    bit, where this CPU runs that code."""
    if mcpu is not None and not runs_code_for(mcpu):
        pytest.skip(f"this CPU does not run code built for {mcpu}")
    assert run_tvm(_qconv_case(name), mcpu=mcpu) == {"QDepthwise": 1}


@pytest.mark.parametrize("name", ["dense_partial_quads", "dense_stride2", "dense_5x5"])
@pytest.mark.parametrize("mcpu", [None, "skylake-avx512", "haswell"])
def test_dense_positions_run_exactly(name: str, mcpu: str | None) -> None:
    """The dense-positions conv with each step (the host's; vpmaddubsw at 16 lanes,
    skylake-avx512; 8 lanes, haswell), alone and with a residual add or a table after it,
    against the reference, bit for bit, where this CPU runs that code; the named CPUs'
    builds take the dense layout."""
    if mcpu is not None and not runs_code_for(mcpu):
        pytest.skip(f"this CPU does not run code built for {mcpu}")
    graph = _qconv_case(name, requant=False).g
    asm = isa.compile_graph(graph, mcpu or "znver4")
    [kernel] = asm.of_kind("qconv2d")
    assert str(asm.attrs[kernel].get("tile", "")).startswith("dense"), asm.attrs[kernel]
    assert run_tvm(_qconv_case(name), mcpu=mcpu) == {"QConv": 1}
    for steps in ("residual_a", "table"):
        assert run_tvm(_with_steps(_qconv_case(name), steps), mcpu=mcpu) == {"QConv": 1}


CHANNEL_CASES = ["channels_7x7", "channels_stride2", "channels_1x1", "channels_5x5"]


@pytest.mark.parametrize("name", CHANNEL_CASES)
def test_few_positions_take_channel_vectors(name: str) -> None:
    """A requantising conv over at most 64 positions that vectors of positions would leave a
    1/8 empty (7x7: 49 in 64 lanes; 5x5; a flattened 1x1 row of 49) takes the output
    channels as the vector on a 16-lane VNNI CPU (`int_channels`): weight vectors, broadcast
    input quads, the requantised bytes transposed with byte permutes. A bare anchor (int32
    out) keeps the positions. Exactness: test_qconv, test_channel_vectors_run_exactly."""
    graph, _ = FuseInteger().run(_qconv_case(name).g)
    asm = isa.compile_graph(graph, "znver4")
    [kernel] = asm.of_kind("qconv2d")
    assert str(asm.attrs[kernel].get("tile", "")).startswith("channel vectors")
    assert re.search(r"vpdpbusd\s+[^\n]*%zmm", asm.kernels[kernel])
    assert "vpermt2b" in asm.kernels[kernel]
    bare = isa.compile_graph(_qconv_case(name, requant=False).g, "znver4")
    [kernel] = bare.of_kind("qconv2d")
    assert not str(bare.attrs[kernel].get("tile", "")).startswith("channel")


@pytest.mark.parametrize("name", CHANNEL_CASES)
@pytest.mark.parametrize("mcpu", [None, "skylake-avx512"])
def test_channel_vectors_run_exactly(name: str, mcpu: str | None) -> None:
    """The channel-vector conv (the host's; vpmaddubsw and no byte permutes at 16 lanes,
    skylake-avx512) alone, with a residual add on either side and with a table after it,
    against the reference, bit for bit, where this CPU runs that code."""
    if mcpu is not None and not runs_code_for(mcpu):
        pytest.skip(f"this CPU does not run code built for {mcpu}")
    assert run_tvm(_qconv_case(name), mcpu=mcpu) == {"QConv": 1}
    for steps in ("residual_a", "residual_b", "table"):
        assert run_tvm(_with_steps(_qconv_case(name), steps), mcpu=mcpu) == {"QConv": 1}


def test_qconv_int32_output_and_group_multipliers() -> None:
    run_tvm(_qconv_case("3x3", requant=False))
    case = IntGraph(5)
    x = case.ints("x", "uint8", (1, 16, 5, 5))
    w = case.const("w", case.rng.integers(-7, 8, (8, 16, 3, 3)).astype(np.int8))
    mult = case.const("m", case.rng.integers(1, 30, (8, 4)).astype(np.int32))
    wz = case.const("wz", case.rng.integers(-2, 3, 8).astype(np.int8))
    acc = case.op("etch.QConv", [x, w, "", case.const("z", np.uint8(120)), wz, mult], "acc",
                  kernel_shape=[3, 3], pads=[1, 1, 1, 1], group_size=4)
    run_tvm(case.outputs(acc))


def test_depthwise_without_bias() -> None:
    """The x86 kernel reads a bias buffer first: a conv without one gets zeros."""
    case = IntGraph(14)
    x = case.ints("x", "int8", (1, 16, 6, 6))
    w = case.const("w", case.rng.integers(-127, 128, (16, 1, 3, 3)).astype(np.int8))
    acc = case.op("etch.QConv", [x, w, "", case.const("z", np.int8(-7))], "acc",
                  kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=16)
    rules = run_tvm(case.outputs(case.requantize(acc, 16)))
    assert rules == {"QDepthwise": 1} or not AVX2


def test_qconv_1d() -> None:
    case = IntGraph(6)
    x = case.ints("x", "int8", (1, 8, 11))
    w = case.const("w", case.rng.integers(-127, 128, (16, 8, 3)).astype(np.int8))
    acc = case.op("etch.QConv", [x, w, "", case.const("z", np.int8(5))], "acc",
                  kernel_shape=[3], pads=[1, 1], strides=[2])
    run_tvm(case.outputs(case.requantize(acc, 16)))


@pytest.mark.parametrize("name", ["3x3", "grouped", "stride2_uint8", "depthwise"])
def test_portable_kernels_without_avx2(name: str) -> None:
    """mcpu x86-64 has no int8 dot product: the TE kernels run as they are, still exact."""
    rules = run_tvm(_qconv_case(name), mcpu="x86-64")
    assert "QConv" not in rules


# ---- fused groups: the output unit in the anchor's kernel ---------------------------------------
QADD = {"a_zero": 3, "b_zero": -7, "a_m0": 1388937755, "a_shift": 33, "b_m0": 1073741824,
        "b_shift": 31, "m0": 1623864644, "shift": 49, "left_shift": 20, "zero_point": -10,
        "qmin": -100, "qmax": 120, "to": "int8"}
STEPS = {"table": (True, None), "residual_a": (False, 0), "residual_b": (False, 1),
         "table_residual": (True, 1)}


def _with_steps(case: IntGraph, steps: str) -> IntGraph:
    """`case` (ending in a Requantize) followed by a table and/or a residual QAdd."""
    table, side = STEPS[steps]
    v = case.g.outputs.pop()
    if table:
        t = case.const("table", case.rng.integers(-128, 128, 256).astype(np.int8))
        v = case.op("etch.Table", [v, t], "t")
    if side is not None:
        r = case.ints("r", "int8", case.g.values[v].shape)
        v = case.op("etch.QAdd", [v, r] if side == 0 else [r, v], "out", **QADD)
    return case.outputs(v)


def _qgemm_group(adtype: str, rows: int, n: int) -> IntGraph:
    case = IntGraph(12)
    a = case.ints("a", adtype, (rows, 40))
    w = case.const("w", case.rng.integers(-127, 128, (40, n)).astype(np.int8))
    bias = case.const("bias", case.rng.integers(-900, 900, n).astype(np.int32))
    zero = case.const("a_zero", np.array(5 if adtype == "int8" else 130, adtype))
    acc = case.op("etch.QGemm", [a, w, bias, zero], "acc")
    return case.outputs(case.requantize(acc, n, axis=-1))


GROUP_ANCHORS = {  # name: (case, the x86 rule that renders it)
    "3x3": (lambda: _qconv_case("3x3"), "QConv"),
    "dense_stride2": (lambda: _qconv_case("dense_stride2"), "QConv"),
    "stride2_uint8": (lambda: _qconv_case("stride2_uint8"), "QConv"),
    "partial_quads": (lambda: _qconv_case("partial_quads"), "QConv"),
    "pointwise": (lambda: _qconv_case("pointwise"), "QConv"),
    "depthwise": (lambda: _qconv_case("depthwise_stride2"), "QDepthwise"),
    "qgemm": (lambda: _qgemm_group("int8", 5, 24), "QDense"),
    "qgemm_tail": (lambda: _qgemm_group("uint8", 3, 20), "QDense"),
}


@pytest.mark.parametrize("steps", sorted(STEPS))
@pytest.mark.parametrize("anchor", sorted(GROUP_ANCHORS))
def test_a_group_is_one_kernel(anchor: str, steps: str) -> None:
    make, rule = GROUP_ANCHORS[anchor]
    rules = run_tvm(_with_steps(make(), steps))
    assert sum(rules.values()) == 1
    if AVX2:
        assert rules == {rule: 1}


@pytest.mark.skipif(not AVX2, reason="runs AVX2 code: the host has no AVX2")
@pytest.mark.parametrize("steps", ["table_residual", "residual_a"])
@pytest.mark.parametrize("anchor", ["partial_quads", "depthwise", "qgemm_tail"])
def test_a_group_on_the_avx2_kernels(anchor: str, steps: str) -> None:
    """mcpu haswell: 8-lane kernels with the AVX2 requantisation (an AVX-512 host builds
    16-lane ones), run here."""
    make, rule = GROUP_ANCHORS[anchor]
    assert run_tvm(_with_steps(make(), steps), mcpu="haswell") == {rule: 1}


@pytest.mark.parametrize("anchor", ["3x3", "depthwise", "qgemm", "pointwise"])
def test_a_group_on_the_portable_kernels(anchor: str) -> None:
    rules = run_tvm(_with_steps(GROUP_ANCHORS[anchor][0](), "table_residual"), mcpu="x86-64")
    assert sum(rules.values()) == 1 and not {"QConv", "QDense", "QDepthwise"} & set(rules)


@pytest.mark.parametrize("linear", [True, False])
@pytest.mark.parametrize("anchor", ["pointwise", "3x3", "qgemm_tail", "depthwise"])
def test_a_residual_group_in_both_forms(anchor: str, linear: bool) -> None:
    """The residual add as LinearQAdd's proven straight line (one int32 multiply-add per
    side) and as the general three-step requantisation: both bit-exact, one kernel."""
    case = _with_steps(GROUP_ANCHORS[anchor][0](), "residual_b")
    graph, _ = FuseInteger().run(case.g.copy())
    graph, _ = LinearQAdd().run(graph)
    assert json.loads(graph.metadata["etch.qadd_linear"]) == {"linear": 1, "general": 0}
    rules = run_tvm(case, linear=linear)
    assert sum(rules.values()) == 1
    if AVX2:
        assert rules == {GROUP_ANCHORS[anchor][1]: 1}


def test_a_pool_group_is_one_kernel() -> None:
    case = IntGraph(13)
    x = case.ints("x", "int8", (2, 8, 5, 6))
    acc = case.op("etch.QSumPool", [x, case.const("z", np.int8(-3))], "acc", **{"global": 1})
    case.outputs(case.requantize(acc, 8, scale=0.02))
    assert run_tvm(_with_steps(case, "table_residual")) == {"QSumPool": 1}


def test_unfused_integer_ops_each_run_alone() -> None:
    """Without the fusion pass (`--no-fuse`), a bare anchor stores its int32 accumulator."""
    rules = run_tvm(_with_steps(_qconv_case("3x3"), "table_residual"), fuse=False)
    assert sum(rules.values()) == 4


# ---- elementwise, pooling, Q/DQ ------------------------------------------------------------
@pytest.mark.parametrize("linear", [True, False])
@pytest.mark.parametrize("to", ["int8", "uint8"])
def test_qadd(to: str, linear: bool) -> None:
    case = IntGraph(7)
    a, b = case.ints("a", "int8", (2, 3, 4, 5)), case.ints("b", "int8", (1, 3, 1, 5))
    lo, hi = (-128, 127) if to == "int8" else (0, 255)
    y = case.op("etch.QAdd", [a, b], "y", a_zero=-128, b_zero=7, a_m0=1388937755,
                a_shift=33, b_m0=1073741824, b_shift=31, m0=1623864644, shift=49,
                left_shift=20, zero_point=-100 if to == "int8" else 10, qmin=lo, qmax=hi,
                to=to)
    case.outputs(y)
    graph, _ = LinearQAdd().run(case.g.copy())
    [node] = graph.nodes
    assert len(node.attrs["linear"]) == 4  # a straight line exists for these scales
    run_tvm(case, linear=linear)


@pytest.mark.parametrize("to", ["int8", "uint8"])
def test_qmul_broadcast_gate(to: str) -> None:
    """etch.QMul of a feature map and a per-channel gate (squeeze-and-excitation), extreme
    codes included: the TVM kernel equals the reference bit for bit."""
    case = IntGraph(9)
    x = case.ints("x", "uint8" if to == "uint8" else "int8", (2, 5, 7, 9))
    g = case.ints("g", "int8", (2, 5, 1, 1))
    lo, hi = (-128, 127) if to == "int8" else (0, 255)
    m0, shift = quantize_multiplier(0.0031)
    y = case.op("etch.QMul", [x, g], "y", a_zero=3, b_zero=-128, m0=int(m0), shift=int(shift),
                zero_point=-20 if to == "int8" else 40, qmin=lo, qmax=hi, to=to)
    run_tvm(case.outputs(y))


def test_qmul_matches_float_within_one_code() -> None:
    """The reference QMul is the float product dequantised, multiplied and quantised again,
    within one output code (one requantisation of the exact product, round half away)."""
    rng = np.random.default_rng(4)
    a, b = rng.integers(-128, 128, 4000).astype(np.int8), rng.integers(-128, 128, 4000).astype(
        np.int8)
    sa, sb, sy, za, zb, zy = 0.05, 1 / 255, 0.02, 3, -128, -5
    m0, shift = quantize_multiplier(sa * sb / sy)
    attrs = {"a_zero": za, "b_zero": zb, "m0": int(m0), "shift": int(shift),
             "zero_point": zy, "qmin": -128, "qmax": 127, "to": "int8"}
    [got] = reference.run_node(Node("etch.QMul", ["a", "b"], ["y"], attrs), [a, b])
    real = (sa * (a.astype(np.float64) - za)) * (sb * (b.astype(np.float64) - zb))
    want = np.clip(np.round(real / sy) + zy, -128, 127)
    assert np.abs(got.astype(np.int64) - want).max() <= 1


def test_squeeze_excitation_gate_is_an_integer_product(tmp_path: Path) -> None:
    """A squeeze-and-excitation block compiled with --int: the gate's Mul of two integer
    activations is etch.QMul on the accelerator (no host Mul, Dequantize or Quantize
    between the convolutions), bit for bit the reference, close to float ONNX Runtime."""
    from tests.backends.tvm_cases import ModelBuilder
    from tests.golden import run_ort

    b = ModelBuilder("se")
    x = b.input("x", np.random.default_rng(5).standard_normal((1, 8, 6, 6)).astype(np.float32))
    h = b.op("Relu", [b.op("Conv", [x, b.weight("w0", 8, 8, 3, 3)], "c0", output=False,
                           pads=[1, 1, 1, 1])], "r0", output=False)
    p = b.op("GlobalAveragePool", [h], "p", output=False)
    gate = b.op("Sigmoid", [b.op("Conv", [p, b.weight("w1", 8, 8, 1, 1), b.weight("b1", 8)],
                                 "c1", output=False)], "s", output=False)
    m = b.op("Mul", [h, gate], "m", output=False)
    b.op("Conv", [m, b.weight("w2", 4, 8, 1, 1)], "y")
    model, feeds = b.build()
    calib = tmp_path / "calib.npz"
    np.savez(calib, **feeds)
    opts = {"bits": 8, "int": True, "calib": str(calib)}
    cpu = compiler.compile(model, target="cpu", **opts)
    ref = compiler.compile(model, target="ref", **opts)
    assert cpu.manifest["op_counts"].get("etch.QMul") == 1
    host = sorted(n.op for n in ref.graph.nodes if n.attrs.get("placement") != "accel")
    assert host == ["DequantizeLinear", "QuantizeLinear"], host
    got = cpu.run(feeds)
    assert_bitexact(got, ref.run(feeds))
    want = run_ort(model, feeds)["y"]
    assert np.abs(got["y"] - want).max() <= 0.1 * np.abs(want).max()


def test_qsumpool_global_and_windowed() -> None:
    case = IntGraph(8)
    x = case.ints("x", "int8", (2, 3, 7, 6))
    z = case.const("z", np.int8(-128))
    g = case.op("etch.QSumPool", [x, z], "g", **{"global": 1})
    w = case.op("etch.QSumPool", [x, z], "w", kernel_shape=[3, 2], strides=[2, 2],
                pads=[1, 0, 1, 1])
    run_tvm(case.outputs(g, w))


MAX_POOLS = {  # (N, C, H, W), MaxPool attributes
    "squeezenet 3x3 s2": ((1, 3, 27, 27), {"kernel_shape": [3, 3], "strides": [2, 2],
                                           "ceil_mode": 1}),
    "ceil past the end": ((2, 3, 12, 30), {"kernel_shape": [3, 3], "strides": [2, 2],
                                           "ceil_mode": 1}),
    "padded s2 wide": ((1, 2, 9, 113), {"kernel_shape": [3, 3], "strides": [2, 2],
                                        "pads": [1, 1, 1, 1]}),
    "padded s1": ((1, 4, 7, 35), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    "2x2 s2": ((1, 3, 8, 70), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    "asymmetric 4x3 s3": ((1, 2, 11, 19), {"kernel_shape": [4, 3], "strides": [3, 2],
                                           "pads": [2, 0, 1, 2]}),
    "tiny planes": ((1, 5, 3, 4), {"kernel_shape": [2, 2], "strides": [2, 2]}),
}


@pytest.mark.parametrize("name", sorted(MAX_POOLS))
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_int8_max_pool(name: str, dtype: str) -> None:
    """An integer 2-D MaxPool runs `int_pool`'s row kernel (rule QMaxPool) on AVX2 and
    AVX-512 (padding, ceil_mode, strides over and under the window, rows shorter and longer
    than a vector, planes shorter than one), bit-exact; mcpu x86-64 keeps the generic
    pool kernel, also exact. Values near both ends of the range, so a wrong clamp or
    padding value changes the max."""
    shape, attrs = MAX_POOLS[name]
    for mcpu, rule in (("znver4", "QMaxPool"), ("haswell", "QMaxPool"), ("x86-64", None)):
        case = IntGraph(21)
        x = case.ints("x", dtype, shape)
        node = Node("MaxPool", [x], ["y"], attrs)
        (oshape, _), *_ = infer_outputs(node, [case.g.values[x]])
        case.g.add_value(Value("y", tuple(oshape), dtype))
        case.g.add_node(node)
        case.outputs("y")
        # the host's own AVX-512 kernels where znver4's code cannot run here (an AVX2 CPU,
        # or an Intel one: no SSE4A)
        rules = run_tvm(case, mcpu=mcpu if mcpu != "znver4" or runs_code_for(mcpu) else None)
        assert (rule in rules) if rule else ("QMaxPool" not in rules), (mcpu, rules)


CONCATS = {  # name -> (input shapes, axis)
    "channels": ([(1, 5, 27, 27), (1, 3, 27, 27)], 1),
    "batch of 2, three inputs": ([(2, 4, 5, 13), (2, 1, 5, 13), (2, 7, 5, 13)], 1),
    "last axis, short runs": ([(2, 3, 10), (2, 3, 70), (2, 3, 1)], 2),
    "first axis": ([(1, 3, 9), (2, 3, 9)], 0),
}


@pytest.mark.parametrize("name", sorted(CONCATS))
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_int8_concat(name: str, dtype: str) -> None:
    """An integer Concat is `int_concat`'s block copy (rule QConcat): runs longer and
    shorter than a vector, any axis, several inputs and images; bit-exact."""
    shapes, axis = CONCATS[name]
    case = IntGraph(5)
    xs = [case.ints(f"x{k}", dtype, s) for k, s in enumerate(shapes)]
    case.outputs(case.op("Concat", xs, "y", axis=axis))
    assert run_tvm(case) == {"QConcat": 1}


@pytest.mark.parametrize("mcpu", ["znver4", "znver3"])
def test_quantize_and_max_pool_are_vector_code(mcpu: str) -> None:
    """QuantizeLinear rounds whole vectors (vroundps/vrndscaleps; TIR's nearbyint made the
    vectorised loop scalar: one vpextrb store per value) and an int8 MaxPool takes the max
    of whole byte vectors (vpmaxsb); compiled for an explicit CPU."""
    case = IntGraph(1)
    x = case.input("x", np.zeros((1, 3, 16, 40), np.float32))
    q = case.op("QuantizeLinear", [x, case.const("s", np.float32(0.03)),
                                   case.const("z", np.int8(4))], "q")
    [code] = isa.compile_graph(case.outputs(q).g, mcpu).kernels.values()
    assert re.search(r"v(round|rndscale)ps", code) and not re.search("vpextrb|vgather", code)
    case = IntGraph(1)
    x = case.ints("x", "int8", (1, 8, 27, 27))
    node = Node("MaxPool", [x], ["y"], {"kernel_shape": [3, 3], "strides": [2, 2]})
    case.g.add_value(Value("y", (1, 8, 13, 13), "int8"))
    case.g.add_node(node)
    asm = isa.compile_graph(case.outputs("y").g, mcpu)
    assert asm.rules == {"QMaxPool": 1} and "vpmaxsb" in next(iter(asm.kernels.values()))


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_table_and_clamp(dtype: str) -> None:
    case = IntGraph(9)
    x = case.ints("x", dtype, (2, 3, 17))
    table = case.rng.integers(-128, 128, 256).astype(np.int8)
    t = case.op("etch.Table", [x, case.const("table", table)], "t")
    c = case.op("etch.Clamp", [x], "c", lo=-5 if dtype == "int8" else 10, hi=99)
    run_tvm(case.outputs(t, c))


CHANNEL_TABLES = {  # name -> (shape, axis)
    "planes of 65": ((2, 3, 5, 13), 1),  # a whole vector and one moved back to the end
    "planes of 9": ((1, 4, 3, 3), 1),  # under one vector: byte by byte
    "last axis": ((3, 70), 1),
    "planes of 128": ((1, 2, 128), 1),
}


@pytest.mark.parametrize("name", sorted(CHANNEL_TABLES))
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_channel_table(name: str, dtype: str) -> None:
    """etch.ChannelTable, bit-exact: with AVX512-VBMI `int_tables`' byte permutes (rule
    QChannelTable), elsewhere the generic gather (mcpu haswell)."""
    shape, axis = CHANNEL_TABLES[name]
    for mcpu, rule in ((None, VBMI), ("haswell", False)):
        case = IntGraph(23)
        x = case.ints("x", dtype, shape)
        table = case.rng.integers(-128, 128, (shape[axis], 256)).astype(np.int8)
        case.outputs(case.op("etch.ChannelTable", [x, case.const("table", table)], "y",
                             axis=axis))
        rules = run_tvm(case, mcpu=mcpu)
        assert ("QChannelTable" in rules) == rule, (mcpu, rules)


@pytest.mark.parametrize("mcpu,step", [("znver4", "vpdpbusd"),
                                       ("haswell", "vpmaddubsw on activation nibbles")])
def test_explain_lists_each_int_kernels_tile_and_step(mcpu: str, step: str) -> None:
    """`--explain` names, per integer kernel, the rule, the register tile the schedule chose
    and the dot step of the named CPU (a table group: the table in registers with VBMI)."""
    case = _with_steps(_qconv_case("3x3"), "table")
    graph, _ = FuseInteger().run(case.g)
    mod, _ = build(graph, mcpu)
    lines = schedules.explain_lines(mod)
    assert lines[0].startswith("kernel schedules") and len(lines) == 2, lines
    tile = r"((flat positions|dense positions|output rows), \d+ channels x \d+ vectors|" \
        r"channel vectors, 16 positions x 1 vector)"
    assert re.match(rf"  \S+: QConv, {tile}, {step}", lines[1]), lines
    assert ("table in registers (vpermi2b)" in lines[1]) == (mcpu == "znver4")


@pytest.mark.parametrize("mcpu,vbmi", [("znver4", True), ("icelake-server", True),
                                       ("skylake-avx512", False)])
def test_channel_tables_are_byte_permutes_with_vbmi(mcpu: str, vbmi: bool) -> None:
    case = IntGraph(2)
    x = case.ints("x", "int8", (1, 6, 14, 14))
    table = case.rng.integers(-128, 128, (6, 256)).astype(np.int8)
    case.outputs(case.op("etch.ChannelTable", [x, case.const("table", table)], "y", axis=1))
    asm = isa.compile_graph(case.g, mcpu)
    [code] = asm.kernels.values()
    assert ("QChannelTable" in asm.rules) == vbmi
    assert bool(re.search(r"vperm[it]2b\s+[^\n]*%zmm", code)) == vbmi


def test_quantize_dequantize_linear() -> None:
    case = IntGraph(10)
    scale = np.float32(0.25)
    ties = (np.arange(-70, 70, dtype=np.float32) + 0.5) * scale  # x / scale = k + 1/2
    x = case.input("x", np.concatenate([ties, [1e9, -1e9, 0.0]]).astype(np.float32))
    q8 = case.op("QuantizeLinear", [x, case.const("s", scale), case.const("z", np.int8(3))],
                 "q8")
    qu = case.op("QuantizeLinear", [x, case.const("s2", np.float32(0.3)),
                                    case.const("z2", np.uint8(128))], "qu")
    dq = case.op("DequantizeLinear", [q8, case.const("s3", np.float32(0.1)),
                                      case.const("z3", np.int8(3))], "dq")
    c = case.input("c", case.rng.normal(size=(2, 3, 4)).astype(np.float32))
    per_axis = case.op("QuantizeLinear", [c, case.const("sa", np.float32([0.01, 0.02, 0.5])),
                                          case.const("za", np.int8([0, -5, 9]))], "qa", axis=1)
    # per tensor on 4-D: the kernels run on the tensor viewed flat (whole vectors, a tail)
    x4 = case.input("x4", (ties.reshape(2, 2, 5, 7) * 3).astype(np.float32))
    q4 = case.op("QuantizeLinear", [x4, case.const("s4", np.float32(0.75)),
                                    case.const("z4", np.uint8(120))], "q4")
    dq4 = case.op("DequantizeLinear", [q4, case.const("s5", np.float32(0.5)),
                                       case.const("z5", np.uint8(100))], "dq4")
    run_tvm(case.outputs(q8, qu, dq, per_axis, q4, dq4))


# ---- kernels: instructions (compiled for a named CPU: any host) -------------------------------
INT8_DOT = {  # mcpu -> the int8 dot-product instructions its QGemm kernel must use
    "znver3": ("vpmaddubsw", "vpmaddwd", "ymm"),          # AVX2
    "skylake-avx512": ("vpmaddubsw", "vpmaddwd", "zmm"),  # AVX-512BW without VNNI
    "sapphirerapids": ("vpdpbusd", "vpdpbusd", "zmm"),    # AVX-512 VNNI
    "znver4": ("vpdpbusd", "vpdpbusd", "zmm"),
    "alderlake": ("vpdpbusd", "vpdpbusd", "ymm"),         # AVX-VNNI (256 bits)
    "sapphirerapids@256": ("vpdpbusd", "vpdpbusd", "ymm"),  # --vector-bits 256: AVX512-VL
}


def _qgemm_asm(bits: int, mcpu: str) -> str:
    case = IntGraph(11)
    q = (1 << (bits - 1)) - 1
    a = case.ints("a", "uint8", (4, 64))
    w = case.const("w", case.rng.integers(-q, q + 1, (64, 32)).astype(np.int8))
    case.outputs(case.op("etch.QGemm", [a, w], "acc"))
    cpu, _, width = mcpu.partition("@")
    asm = isa.compile_graph(case.g, cpu, vector_bits=int(width) if width else None)
    assert asm.rules == {"QDense": 1}
    [code] = asm.kernels.values()
    return code


@pytest.mark.parametrize("mcpu", sorted(INT8_DOT))
@pytest.mark.parametrize("bits", [8, 4])  # 8: the exact "split" step; 4: plain madd / vnni
def test_int8_kernels_use_the_cpus_dot_product(mcpu: str, bits: int) -> None:
    """The QGemm kernel's instructions follow the named CPU's features, not the host's."""
    first, second, reg = INT8_DOT[mcpu]
    asm = _qgemm_asm(bits, mcpu)
    assert re.search(rf"{first}\s+[^\n]*%{reg}", asm) and re.search(rf"{second}\s+[^\n]*%{reg}",
                                                                     asm)
    if first != "vpdpbusd":
        assert "vpdpbusd" not in asm


@pytest.mark.parametrize("isa_name", ["avx2", "avx512", "neon"])
def test_a_residual_group_is_one_kernel_on_every_isa(isa_name: str) -> None:
    """conv -> requantise -> table -> residual add compiles to one kernel: the x86 dot-product
    kernel (its int8 dot steps kept) or, on aarch64, the portable one."""
    graph, _ = FuseInteger().run(_with_steps(_qconv_case("3x3"), "table_residual").g)
    asm = isa.compile_graph(graph, isa_name)
    assert sum(asm.rules.values()) == 1 and len(asm.kernels) == 1
    [code] = asm.kernels.values()
    if isa_name == "avx2":
        assert asm.rules == {"QConv": 1} and re.search(r"vpmaddubsw\s+[^\n]*%ymm", code)
    if isa_name == "avx512":
        assert asm.rules == {"QConv": 1} and re.search(r"vpdpbusd\s+[^\n]*%zmm", code)


@pytest.mark.parametrize("mcpu,vbmi", [("znver4", True), ("icelake-server", True),
                                       ("skylake-avx512", False)])
@pytest.mark.parametrize("anchor", ["3x3", "depthwise", "qgemm"])
def test_a_table_group_looks_up_in_registers_with_vbmi(anchor: str, mcpu: str,
                                                       vbmi: bool) -> None:
    """conv/depthwise/dense -> requantise -> table: with AVX512-VBMI the 256-entry table is
    four zmm registers and each 16 outputs two vpermi2b (the schedule records it as
    `etch.table_lookup`); without VBMI the table is read entry by entry."""
    graph, _ = FuseInteger().run(_with_steps(GROUP_ANCHORS[anchor][0](), "table").g)
    asm = isa.compile_graph(graph, mcpu)
    [(name, code)] = asm.kernels.items()
    assert asm.rules == {GROUP_ANCHORS[anchor][1]: 1}
    found = re.findall(r"vperm[it]2b\s+[^\n]*%zmm", code)
    assert (len(found) >= 2) == vbmi and ("table_lookup" in asm.attrs[name]) == vbmi


# ---- the zoo, end to end -------------------------------------------------------------------
@pytest.fixture(scope="module")
def calib(tmp_path_factory: pytest.TempPathFactory):
    """name -> (calibration .npz path, three test inputs): the zoo sample and noisy copies."""
    root = tmp_path_factory.mktemp("calib")

    def make(name: str) -> tuple[Path, list[dict]]:
        sample = zoo.load_sample(name)[0]
        key, x = next(iter(sample.items()))
        rng = np.random.default_rng(0)
        noisy = [(x + rng.normal(0, 0.3, x.shape) * x.std()).astype(np.float32)
                 for _ in range(7)]
        path = root / f"{name}.npz"
        np.savez(path, **{key: np.concatenate([x] + noisy)})
        return path, [{key: x}] + [{key: v} for v in noisy[:2]]
    return make


@pytest.mark.parametrize("name,mcpu", [(n, None) for n in ZOO] + [("resnet_block", "haswell")])
def test_zoo_int8_bit_exact(name: str, mcpu: str | None, calib) -> None:
    if mcpu == "haswell" and not AVX2:
        pytest.skip("runs AVX2 code: the host has no AVX2")
    path, inputs = calib(name)
    opts = {"bits": 8, "int": True, "calib": str(path)}
    cpu = compiler.compile(str(zoo.model_path(name)), target="cpu", mcpu=mcpu, **opts)
    ref = compiler.compile(str(zoo.model_path(name)), target="ref", **opts)
    assert {"QDense", "QConv"} & set(cpu.manifest["schedules"]) or not AVX2
    for x in inputs:
        assert_bitexact(cpu.run(x), ref.run(x))


def _concat_bn_relu_model() -> onnx.ModelProto:
    """Two convs, their Concat, a BatchNorm + ReLU (per-channel constants: a channel
    table in --int), a conv: DenseNet's pattern in small."""
    rng = np.random.default_rng(3)
    w = lambda *s: numpy_helper.from_array(rng.normal(size=s).astype(np.float32))
    inits = [w(4, 3, 3, 3), w(2, 3, 3, 3), w(6), w(6), w(6), w(5, 6, 1, 1)]
    inits[4] = numpy_helper.from_array(rng.uniform(0.5, 1.5, 6).astype(np.float32))
    for t, name in zip(inits, ["w1", "w2", "g", "b", "v", "w3"]):
        t.name = name
    mean = numpy_helper.from_array(np.zeros(6, np.float32), "m")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "w2"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Concat", ["a", "c"], ["cat"], axis=1),
             helper.make_node("BatchNormalization", ["cat", "g", "b", "m", "v"], ["n"]),
             helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("Conv", ["r", "w3"], ["y"])]
    graph = helper.make_graph(
        nodes, "cbr", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 9, 70])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [*inits, mean])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("target", ["cpu", pytest.param("edge", marks=[pytest.mark.slow,
                                                                        *NEEDS_EDGE])])
def test_a_concat_batchnorm_relu_is_a_channel_table(target: str, tmp_path: Path) -> None:
    """End to end with --int: the BatchNorm + ReLU after a Concat is one etch.ChannelTable
    (no host float ops), bit-exact against the integer reference on cpu and on aarch64
    (qemu; the portable gather)."""
    rng = np.random.default_rng(4)
    x = {"x": rng.normal(size=(1, 3, 9, 70)).astype(np.float32)}
    np.savez(tmp_path / "calib.npz", **x)
    opts = {"bits": 8, "int": True, "calib": str(tmp_path / "calib.npz")}
    dev = compiler.compile(_concat_bn_relu_model(), target=target, **opts)
    ref = compiler.compile(_concat_bn_relu_model(), target="ref", **opts)
    counts = dev.manifest["op_counts"]
    assert counts.get("etch.ChannelTable") == 1 and "Relu" not in counts
    assert_bitexact(dev.run(x), ref.run(x))


@pytest.mark.slow
@needs_edge
def test_zoo_int8_on_edge_bit_exact(calib) -> None:
    """The groups on the portable kernels, cross-compiled for aarch64 and run under qemu."""
    path, inputs = calib("resnet_block")
    opts = {"bits": 8, "int": True, "calib": str(path)}
    dev = compiler.compile(str(zoo.model_path("resnet_block")), target="edge", **opts)
    ref = compiler.compile(str(zoo.model_path("resnet_block")), target="ref", **opts)
    assert dev.manifest["op_counts"]["etch.QFused"] == 8
    for x in inputs:
        assert_bitexact(dev.run(x), ref.run(x))


def test_zoo_w4a8_bit_exact(calib) -> None:
    path, inputs = calib("resnet_block")
    opts = {"bits": 4, "int": True, "calib": str(path)}
    cpu = compiler.compile(str(zoo.model_path("resnet_block")), target="cpu", **opts)
    ref = compiler.compile(str(zoo.model_path("resnet_block")), target="ref", **opts)
    for x in inputs:
        assert_bitexact(cpu.run(x), ref.run(x))


# ---- weight-only ---------------------------------------------------------------------------
@pytest.mark.parametrize("name,group", [("digits_mlp", 32), ("digits_cnn", None),
                                        ("mobilenet", 8)])
def test_weight_only_matches_reference(name: str, group: int | None) -> None:
    sample = zoo.load_sample(name)[0]
    opts = {"bits": 4, "group_size": group}
    cpu = compiler.compile(str(zoo.model_path(name)), target="cpu", **opts)
    ref = compiler.compile(str(zoo.model_path(name)), target="ref", **opts)
    assert "etch.Dequant" in cpu.manifest["op_counts"]
    assert_close(cpu.run(sample), ref.run(sample), rtol=1e-4, atol=1e-5)


def test_weight_only_library_holds_codes() -> None:
    name = "gemv_k1024_n1024_b1"
    path, sample = zoo.model_path(name), zoo.load_sample(name)[0]
    art = compiler.compile(str(path), target="cpu", bits=4, group_size=32)
    assert_close(art.run(sample), compiler.compile(str(path), target="ref", bits=4,
                                                   group_size=32).run(sample), rtol=1e-4)
    floats = compiler.compile(str(path), target="cpu")
    size = lambda a: sum((a.path / f).stat().st_size for f in a.manifest["files"])
    assert size(art) < 0.35 * size(floats)
    mod = lower.to_irmodule(art.graph, pack=True, lanes=8)
    consts = [c for c in _constants(mod["main"]) if c.dtype == "float32"]
    assert max(c.size for c in consts) < 1024 * 1024 // 8  # scales only, no float weight


def _constants(func: relax.Function) -> list[np.ndarray]:
    found: list[np.ndarray] = []
    relax.analysis.post_order_visit(
        func, lambda e: found.append(e.value.numpy()) if isinstance(e, tvm.ir.expr.Constant)
        and hasattr(e.value, "numpy") else None)
    return found


@pytest.mark.parametrize("isa_name,reg,sign", [("avx2", "ymm", r"vpsignd"),
                                               ("avx512", "zmm", r"vpsub")])
@pytest.mark.parametrize("anchor", ["3x3", "depthwise"])
def test_requantisation_is_vector_code_on_both_widths(isa_name: str, reg: str, sign: str,
                                                       anchor: str) -> None:
    """The requantising epilogue of the x86 kernels is the int32-lane vector formula at 8
    lanes (AVX2) and at 16 (AVX-512: vpsrlvq on zmm, the sign by a masked subtraction), for
    whole vectors and a row's partial last one alike; compiled for an explicit CPU."""
    case, rule = GROUP_ANCHORS[anchor]
    graph, _ = FuseInteger().run(case().g)
    asm = isa.compile_graph(graph, isa_name)
    assert asm.rules == {rule: 1}
    [code] = asm.kernels.values()
    # |acc| in int32 lanes (vpabsd; the generic int64 formula takes vpabsq), the shift in
    # int64 ones
    assert re.search(rf"vpabsd\s+[^\n]*%{reg}", code)
    assert re.search(rf"vpsrlvq\s+[^\n]*%{reg}", code) and re.search(sign, code)
