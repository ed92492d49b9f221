"""The cpu backend renders `conv_algorithm = implicit_gemm` (chosen by
passes/choose_conv_algorithm.py) as one GEMM read from the padded input
(`lower/conv_implicit.py`): results match ONNX Runtime (rtol 1e-3) on layers whose shapes
exercise every edge of the kernel: positions along the padded width not a multiple of the
tile (13x13 -> 15 x 13), output channels not a multiple of the register tile (58), a
dilated 3x3, a 7x1 kernel with padding on one axis only, an unpadded 3x1 whose input is read
in place (no pad kernel), a residual add in the epilogue, a batch of 2; `--explain` lists
the choice; the compiled GEMM is packed FMA on full-width vectors for an AVX-512 and an AVX2
CPU, named (not the host)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from onnx import TensorProto, helper

import compiler
from backends.tvm.lower import conv_implicit
from backends.tvm.lower.conv import ConvSpec
from compiler import onnx_import
from passes.choose_conv_algorithm import ChooseConvAlgorithm
from tests.backends import isa
from tests.golden import RandomInits, run_ort


def implicit_model(batch: int = 1):
    """x [B, 60, 13, 13]: 3x3 to 58 channels (+ReLU), 3x3 back to 60 plus the residual x
    (under 64 output channels: in a batch, layers of 64 or more on 13x13 take Winograd over
    the image's tiles). z [B, 64, 26, 26]: 3x3 dilated 2 to 74 channels, then 7x1 padded
    (3, 0) (74 channels, not whole vectors of 16: with them, AVX-512 takes the channel-vector
    direct convolution for a 26x26 image). u [B, 192, 10, 16]: 3x1 with no padding (the input is its own padded form)."""
    init = RandomInits(11)
    rng, weight, bias = init.rng, init.weight, init.bias
    node = helper.make_node
    nodes = [
        node("Conv", ["x", weight("w_a", 58, 60, 3, 3), bias("b_a", 58)], ["a"], name="a",
             pads=[1, 1, 1, 1]),
        node("Relu", ["a"], ["a_r"]),
        node("Conv", ["a_r", weight("w_b", 60, 58, 3, 3), bias("b_b", 60)], ["b"], name="b",
             pads=[1, 1, 1, 1]),
        node("Add", ["b", "x"], ["y"]),
        node("Conv", ["z", weight("w_dil", 74, 64, 3, 3)], ["dil"], name="dil",
             dilations=[2, 2], pads=[2, 2, 2, 2]),
        node("Conv", ["dil", weight("w_7x1", 74, 74, 7, 1), bias("b_7x1", 74)], ["y2"],
             name="seven", pads=[3, 0, 3, 0]),
        node("Conv", ["u", weight("w_3x1", 40, 192, 3, 1)], ["y3"], name="valid"),
    ]
    value = helper.make_tensor_value_info
    shapes = {"x": [batch, 60, 13, 13], "z": [batch, 64, 26, 26], "u": [batch, 192, 10, 16]}
    graph = helper.make_graph(
        nodes, "implicit_convs", [value(k, TensorProto.FLOAT, s) for k, s in shapes.items()],
        [value(y, TensorProto.FLOAT, None) for y in ("y", "y2", "y3")], init.tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    inputs = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    return model, inputs


@pytest.fixture(scope="module", params=[1, 2], ids=["b1", "b2"])
def built(request):
    model, inputs = implicit_model(request.param)
    return model, inputs, compiler.compile(model, target="cpu")


def test_implicit_layers_match_onnx_runtime(built) -> None:
    model, inputs, art = built
    assert art.manifest["schedules"].get("ConvImplicit") == 5
    assert art.manifest["schedules"].get("ConvPad") == 4  # the 3x1 reads its input in place
    want = run_ort(model, inputs)
    got = art.run(inputs)
    for name, ref in want.items():
        assert got[name].shape == ref.shape
        np.testing.assert_allclose(got[name], ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())


def test_explain_lists_implicit_gemms(built) -> None:
    text = built[2].explain()
    assert "implicit_gemm x5" in text
    assert re.search(r"seven\s+implicit_gemm\s+74->74 k7x1 out 26x26", text)


def test_the_padded_input_covers_the_last_block() -> None:
    """The padded input has rows enough for the last column block's furthest read."""
    sp = ConvSpec(n=1, c=60, h=13, w=13, oc=58, kh=3, kw=3, oh=13, ow=13, stride=(1, 1),
                  dilation=(1, 1), pad_top=1, pad_left=1, groups=1)
    ocb, vw, pw, ph, blocks = conv_implicit.geometry(sp, 16)
    assert pw == 15 and blocks * vw >= 13 * pw and ocb * (vw // 16) <= 16
    assert ph * pw >= 2 * pw + 2 + blocks * vw


@pytest.mark.parametrize("isa_name,register,lanes,count",
                         [("avx512", "zmm", 16, 5), ("avx2", "ymm", 8, 3)])
def test_implicit_kernels_use_the_full_vector_width(isa_name: str, register: str, lanes: int,
                                                    count: int) -> None:
    """Compiled for a named CPU (not the host): every implicit GEMM's multiply-adds are
    packed FMAs on that CPU's widest float vectors. With 8 lanes the 13-wide 3x3 layers
    have tiles enough for Winograd F(2, 3)."""
    model, _ = implicit_model()
    graph = ChooseConvAlgorithm(lanes=lanes).run(onnx_import.import_model(model))[0]
    asm = isa.compile_graph(graph, isa_name)
    gemms = asm.of_kind("conv_implicit")
    assert len(gemms) == count
    for name, code in gemms.items():
        assert int(asm.attrs[name]["vw"]) >= lanes, name
        assert re.search(rf"vfmadd\w*ps\s+[^\n]*%{register}", code), f"{name}: no packed FMA"
