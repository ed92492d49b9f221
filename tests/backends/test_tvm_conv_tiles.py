"""The direct and depthwise convolution tiles (`schedules/tiles.py`): depthwise tiles of
several output rows (`depthwise_rows`), 8 x 2 zmm direct tiles on AVX-512 (`acc_budget`), and
a transcendental epilogue (swish) computed over whole tiles, then cropped
(`lower/conv.transcendental`). Results match ONNX Runtime (rtol 1e-3) on odd shapes; the
tiles and the vectorised swish are checked in the assembly for named CPUs (not the host)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from onnx import TensorProto, helper

import compiler
from backends.tvm import lower, schedules
from backends.tvm.schedules import cpu as cpu_rules
from compiler import onnx_import, pipeline
from compiler.options import CompileOptions
from tests.backends import isa
from tests.golden import RandomInits, run_ort


def tiles_model():
    """x [1, 24, 7, 7]: 5x5 depthwise + swish (rows of 7: every tile partial, 7 rows a
    tile). z [1, 16, 13, 11]: 3x3 stride-2 depthwise + swish (7x6 out; the swish on rows
    under a vector keeps both depthwise convs on the tiled TE kernel, not
    `depthwise_cpu`); 3x3 16->12 + swish
    (rows of 11); 3x3 8->16 + ReLU on 40 wide rows (two-vector tiles). Both 3x3s have under
    16 input or output channels, so they are direct, not Winograd, on every ISA (with 8
    lanes a 16->24 layer on rows of 11 takes small-channel Winograd F(2, 3))."""
    init = RandomInits(3)
    rng = init.rng

    def weight(name: str, *shape: int) -> str:  # each weight with its bias, name + "_b"
        init.weight(name, *shape)
        init.bias(name + "_b", shape[0])
        return name

    node = helper.make_node

    def conv(x: str, w: str, out: str, act: str, **attrs) -> list:
        nodes = [node("Conv", [x, w, w + "_b"], [out + "_c"], name=out, **attrs)]
        if act == "relu":
            return nodes + [node("Relu", [out + "_c"], [out])]
        return nodes + [node("Sigmoid", [out + "_c"], [out + "_s"]),
                        node("Mul", [out + "_c", out + "_s"], [out])]

    nodes = [
        *conv("x", weight("w_dw5", 24, 1, 5, 5), "dw5", "swish", group=24, pads=[2, 2, 2, 2]),
        *conv("z", weight("w_dws2", 16, 1, 3, 3), "dws2", "swish", group=16, strides=[2, 2],
              pads=[1, 1, 1, 1]),
        *conv("z", weight("w_swish", 12, 16, 3, 3), "dir_swish", "swish", pads=[1, 1, 1, 1]),
        *conv("zw", weight("w_wide", 16, 8, 3, 3), "dir_wide", "relu", pads=[1, 1, 1, 1]),
    ]
    value = helper.make_tensor_value_info
    shapes = {"x": [1, 24, 7, 7], "z": [1, 16, 13, 11], "zw": [1, 8, 6, 40]}
    graph = helper.make_graph(
        nodes, "conv_tiles", [value(k, TensorProto.FLOAT, s) for k, s in shapes.items()],
        [value(o, TensorProto.FLOAT, None) for o in ("dw5", "dws2", "dir_swish", "dir_wide")],
        init.tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    inputs = {k: rng.normal(size=s).astype(np.float32) * 2 for k, s in shapes.items()}
    return model, inputs


@pytest.fixture(scope="module")
def built():
    model, inputs = tiles_model()
    return model, inputs, compiler.compile(model, target="cpu")


def test_tiles_match_onnx_runtime(built) -> None:
    model, inputs, art = built
    assert art.manifest["schedules"].get("DepthwiseConv") == 2
    assert art.manifest["schedules"].get("Conv") == 2
    want = run_ort(model, inputs)
    got = art.run(inputs)
    for name, ref in want.items():
        assert got[name].shape == ref.shape
        np.testing.assert_allclose(got[name], ref, rtol=1e-3, atol=1e-5 * np.abs(ref).max())


@pytest.fixture(scope="module")
def assembly():
    model, _ = tiles_model()
    graph, _ = pipeline.run(onnx_import.import_model(model), CompileOptions())
    return {name: isa.compile_graph(graph, name) for name in ("avx512", "avx2")}


def _kernel(asm: isa.Assembly, node: str) -> str:
    return next(k for k in asm.kernels if k.endswith(node))


@pytest.mark.parametrize("name,tile", [("avx512", (8, 32)), ("avx2", (8, 8))])
def test_direct_tile_uses_the_register_file(assembly, name: str, tile: tuple) -> None:
    """16 channels on rows of 40: with AVX-512's 32 registers 8 channels x 2 zmm (16
    accumulators; 4 x 2 before `acc_budget`); AVX2 keeps within 12 of its 16 (40 columns
    are 5 whole ymm vectors: one a tile)."""
    asm = assembly[name]
    kernel = _kernel(asm, "dir_wide")
    assert (int(asm.attrs[kernel]["ocb"]), int(asm.attrs[kernel]["vw"])) == tile
    assert asm.packed_fma(kernel, tile[1]), kernel


@pytest.mark.parametrize("name", ["avx512", "avx2"])
def test_depthwise_tiles_hold_several_rows(assembly, name: str) -> None:
    asm = assembly[name]
    assert int(asm.attrs[_kernel(asm, "dw5")]["rb"]) == 7      # 7 rows of one vector
    assert int(asm.attrs[_kernel(asm, "dws2")]["rb"]) == 7     # 7 output rows
    for node in ("dw5", "dws2"):
        kernel = _kernel(asm, node)
        assert asm.packed_fma(kernel, int(asm.attrs[kernel]["vw"])), kernel


@pytest.mark.parametrize("name,register", [("avx512", "[yz]mm"), ("avx2", "ymm")])
def test_swish_on_partial_tiles_is_vectorised(assembly, name: str, register: str) -> None:
    """Rows of 7 and 11 never fill a tile: the sigmoid (fastmath's exp: a vector multiply
    by log2(e), a vector reciprocal or divide) is computed over whole tiles, not lane by
    lane (no scalar division `vdivss`)."""
    asm = assembly[name]
    for node in ("dw5", "dir_swish"):
        code = asm.kernels[_kernel(asm, node)]
        assert re.search(rf"v(div|rcp\w*)ps\s+[^\n]*%{register}", code), f"{node}: no vector"
        assert not re.search(r"vdivss", code), f"{node}: scalar sigmoid"


def ragged_model():
    """Rows that no tile width divides, each conv + ReLU: y [1, 8, 20, 20] through a 3x3
    direct and a 3x3 depthwise conv (rows of 20: one whole vector and a tail on AVX-512, two
    and a tail on AVX2), x [1, 8, 11, 11] through a 1x1 (121 positions, one GEMM chunk); y
    through a 3x3 stride-2 depthwise conv (rows of 10; in the tiled TE kernel its
    deinterleaved padded copy has rows of 17)."""
    init = RandomInits(4)
    for name, shape in {"w_pw": (16, 8, 1, 1), "w_dir": (8, 8, 3, 3),
                        "w_dw": (8, 1, 3, 3), "w_dws2": (8, 1, 3, 3)}.items():
        init.weight(name, *shape)
        init.bias(name + "_b", shape[0])
    node = helper.make_node
    convs = {"pw": ("x", {}), "dir": ("y", {"pads": [1, 1, 1, 1]}),
             "dw": ("y", {"pads": [1, 1, 1, 1], "group": 8}),
             "dws2": ("y", {"pads": [1, 1, 1, 1], "group": 8, "strides": [2, 2]})}
    nodes = [n for out, (src, attrs) in convs.items() for n in (
        node("Conv", [src, f"w_{out}", f"w_{out}_b"], [out + "_c"], name=out, **attrs),
        node("Relu", [out + "_c"], [out]))]
    return init.model("ragged", nodes, {"x": [1, 8, 11, 11], "y": [1, 8, 20, 20]},
                      list(convs))


def test_ragged_rows_match_onnx_runtime() -> None:
    model, inputs = ragged_model()
    art = compiler.compile(model, target="cpu")
    # both depthwise convs: the in-place kernel (`depthwise_cpu`)
    assert art.manifest["schedules"] == {"Conv": 1, "FloatDepthwise": 2, "ConvGemm": 1}
    want = run_ort(model, inputs)
    got = art.run(inputs)
    for name, ref in want.items():
        np.testing.assert_allclose(got[name], ref, rtol=1e-3, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("name,register", [("avx512", "zmm"), ("avx2", "ymm")])
def test_epilogue_of_ragged_rows_is_vectorised(name: str, register: str) -> None:
    """The ReLU of rows no tile divides runs on full-width vectors (`cpu.row_epilogue`):
    computed at the tile, behind its bounds check, LLVM left it scalar or half-width."""
    model, _ = ragged_model()
    graph, _ = pipeline.run(onnx_import.import_model(model), CompileOptions())
    asm = isa.compile_graph(graph, name)
    for node in ("pw", "dir", "dw"):
        code = asm.kernels[_kernel(asm, node)]
        assert re.search(rf"vmaxps\s+[^\n]*%{register}", code), f"{node}: no vector ReLU"


@pytest.mark.parametrize("name", ["avx512", "avx2"])
def test_deinterleaved_pad_is_vectorised(name: str) -> None:
    """A stride-2 depthwise conv's padded copy in the tiled TE kernel (columns split by the
    stride, so not the plain padding pattern) still copies whole vectors
    (`cpu.vectorize_tail`); it was a scalar loop with a bounds check per element. (The
    kernel where `depthwise_cpu` does not apply: a swish on rows under a vector, a dilation,
    ConvTranspose's upsampling, planes narrower than its loads.)"""
    model, _ = ragged_model()
    graph, _ = pipeline.run(onnx_import.import_model(model), CompileOptions())
    target = tvm.target.Target(isa.target_json(name))
    lanes = cpu_rules.lanes(target)
    mod = schedules.apply_rules(lower.to_irmodule(graph, pack=True, lanes=lanes), target,
                                rules=[cpu_rules.DepthwiseConv()])
    func = next(f for g, f in mod.functions_items() if g.name_hint.endswith("dws2"))
    assert re.search(rf'T\.vectorized\(T\.int64\({lanes}\)\):\n\s*with T\.sblock\("pad',
                     func.script()), "scalar padded copy"


POOLS = {  # name: (op, attrs): padded windows on odd sizes, x [1, 6, 13, 34]
    "max_s2": ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "max_ceil": ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 1, 0],
                             "ceil_mode": 1}),
    "avg_s1": ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    "avg_incl": ("AveragePool", {"kernel_shape": [3, 2], "strides": [2, 1],
                                 "pads": [1, 1, 0, 1], "count_include_pad": 1}),
    "max_dil": ("MaxPool", {"kernel_shape": [2, 2], "dilations": [2, 2], "pads": [1, 1, 1, 1]}),
    "max_plain": ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2]}),  # unpadded
    "avg_plain": ("AveragePool", {"kernel_shape": [3, 2], "strides": [2, 2]}),
}


def pools_model():
    rng = np.random.default_rng(5)
    nodes = [helper.make_node(op, ["x"], [name], name=name, **attrs)
             for name, (op, attrs) in POOLS.items()]
    value = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "pools", [value("x", TensorProto.FLOAT, [1, 6, 13, 34])],
                              [value(name, TensorProto.FLOAT, None) for name in POOLS])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    return model, {"x": rng.normal(size=(1, 6, 13, 34)).astype(np.float32)}


def test_padded_pools_are_tiled_and_match_onnx_runtime() -> None:
    """Padded 2-D max/average pools run as depthwise-style tiles (`lower/pool._tiled_pool`,
    the DepthwiseConv rule); the unpadded ones (rows of 16 and 17 outputs) as row pools."""
    model, inputs = pools_model()
    art = compiler.compile(model, target="cpu")
    schedules = art.manifest["schedules"]
    assert schedules.get("DepthwiseConv") == 5
    assert schedules.get("RowPool") == 2
    want, got = run_ort(model, inputs), art.run(inputs)
    for name, ref in want.items():
        assert got[name].shape == ref.shape, name
        np.testing.assert_allclose(got[name], ref, rtol=1e-6, atol=1e-6, err_msg=name)


WIDE_COPIES = {  # padded copies whose interior rows hold whole vectors (`vectorize_deinterleaved`)
    "max_s2": ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "avg_s2": ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
                               "count_include_pad": 1}),
    "avg_s2_uneven": ("AveragePool", {"kernel_shape": [2, 3], "strides": [2, 2],
                                      "pads": [0, 2, 1, 0]}),
    "max_s3": ("MaxPool", {"kernel_shape": [3, 3], "strides": [3, 3], "pads": [1, 1, 1, 1]}),
}


@pytest.mark.parametrize("width", [75, 100])
def test_wide_padded_copies_match_onnx_runtime(width: int) -> None:
    """Pools and a stride-2 convolution whose padded, deinterleaved input copy has rows of
    2-4 vectors inside the padding: the copy's interior rows and columns are loops of their
    own without bounds checks (`cpu.vectorize_deinterleaved`), the borders checked; every
    value as ONNX Runtime's, on the host."""
    rng = np.random.default_rng(width)
    nodes = [helper.make_node(op, ["x"], [name], name=name, **attrs)
             for name, (op, attrs) in WIDE_COPIES.items()]
    w = rng.normal(size=(8, 4, 3, 3)).astype(np.float32)
    nodes.append(helper.make_node("Conv", ["x", "w"], ["conv_s2"], name="conv_s2",
                                  kernel_shape=[3, 3], strides=[2, 2], pads=[1, 2, 1, 0]))
    value = helper.make_tensor_value_info
    outputs = [*WIDE_COPIES, "conv_s2"]
    graph = helper.make_graph(nodes, "wide", [value("x", TensorProto.FLOAT, [1, 4, 9, width])],
                              [value(name, TensorProto.FLOAT, None) for name in outputs],
                              [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    inputs = {"x": rng.normal(size=(1, 4, 9, width)).astype(np.float32)}
    art = compiler.compile(model, target="cpu")
    want, got = run_ort(model, inputs), art.run(inputs)
    for name, ref in want.items():
        assert got[name].shape == ref.shape, name
        np.testing.assert_allclose(got[name], ref, rtol=1e-5, atol=1e-5, err_msg=name)


def test_tiled_pool_is_vector_code() -> None:
    model, _ = pools_model()
    graph, _ = pipeline.run(onnx_import.import_model(model), CompileOptions())
    asm = isa.compile_graph(graph, "avx512")
    pools = asm.of_kind("window_pool")
    assert len(pools) == 5
    # rows of 17-34 outputs: whole zmm vectors (the max is NaN-propagating: compare, blend)
    assert re.search(r"vcmpltps\s+[^\n]*%zmm", asm.kernels[_kernel(asm, "max_s2")])
    assert re.search(r"vaddps\s+[^\n]*%zmm", asm.kernels[_kernel(asm, "avg_s1")])


def test_unpadded_pools_are_vector_row_pools() -> None:
    """The unpadded pools (rows of 16 and 17 outputs) are row pools (`_row_pool`) on both
    x86 ISAs, whatever their width: the window's rows reduced as vectors of the input's
    columns, then its columns from shuffled stride-2 vector loads (`strided_loads`); the
    max NaN-propagating on full-width vectors, no gathers or scatters. Rows wider than a
    vector were the bounds-checked Pool kernel until the max's NaN test stopped
    scalarising the loop."""
    model, _ = pools_model()
    graph, _ = pipeline.run(onnx_import.import_model(model), CompileOptions())
    for name, reg in (("avx512", "zmm"), ("avx2", "ymm")):
        asm = isa.compile_graph(graph, name)
        plain = {_kernel(asm, "max_plain"), _kernel(asm, "avg_plain")}
        assert set(asm.of_kind("row_pool")) == plain, name
        code = asm.kernels[_kernel(asm, "max_plain")]
        assert len(re.findall(rf"vcmpltps\s+[^\n]*%{reg}", code)) >= 2, name
        assert not re.search(r"vgather|vscatter", code), name


def short_rows_model():
    """Convolutions + ReLU whose output rows are under one vector or leave a tail of
    several lanes: depthwise 3x3 on 14x14 and 7x7, direct 3x3 on 13x13, a stride-2
    depthwise 56x56 -> 28x28 (one zmm and 12 lanes)."""
    init = RandomInits(5)
    convs = {"dw14": ("a", (8, 1, 3, 3), {"group": 8}), "dw7": ("b", (8, 1, 3, 3), {"group": 8}),
             "dir13": ("c", (8, 8, 3, 3), {}),
             "dws2": ("d", (8, 1, 3, 3), {"group": 8, "strides": [2, 2]})}
    shapes = {"a": [1, 8, 14, 14], "b": [1, 8, 7, 7], "c": [1, 8, 13, 13], "d": [1, 8, 56, 56]}
    nodes = []
    for out, (src, shape, attrs) in convs.items():
        init.weight(f"w_{out}", *shape)
        init.bias(f"w_{out}_b", shape[0])
        nodes += [helper.make_node("Conv", [src, f"w_{out}", f"w_{out}_b"], [out + "_c"],
                                   name=out, pads=[1, 1, 1, 1], **attrs),
                  helper.make_node("Relu", [out + "_c"], [out])]
    return init.model("short", nodes, shapes, list(convs))


def test_short_rows_match_onnx_runtime() -> None:
    model, inputs = short_rows_model()
    got, want = compiler.compile(model, target="cpu").run(inputs), run_ort(model, inputs)
    for name, ref in want.items():
        np.testing.assert_allclose(got[name], ref, rtol=1e-3, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("name", ["avx512", "avx2"])
def test_epilogue_of_short_rows_is_vectorised(name: str) -> None:
    """A row under one vector (14, 13 or 7 columns) takes its epilogue as one short vector,
    and a row's tail past its whole vectors (12 of 28) as another (`cpu.row_epilogue`,
    `vectorize_tail`): both were scalar loops, mobilenet_v2's and efficientnet_b0's 14x14
    and 7x7 depthwise layers 2x ONNX Runtime's time."""
    model, _ = short_rows_model()
    graph, _ = pipeline.run(onnx_import.import_model(model), CompileOptions())
    asm = isa.compile_graph(graph, name)
    for node in ("dw14", "dw7", "dir13", "dws2"):
        code = asm.kernels[_kernel(asm, node)]
        assert re.search(r"vmaxps|vcmp\w*ps", code), f"{node}: no vector ReLU"
        assert not re.search(r"vmaxss|vcmp\w*ss", code), f"{node}: scalar ReLU"


def test_a_wide_stride_2_input_copy_is_vector_code() -> None:
    """A stride-2 stem on 299-wide rows (inception_v3's): its deinterleaved padded copy has
    9 whole vectors of columns inside the bounds (`cpu.INTERIOR_VECTORS`), copied as vector
    loads and permutes, no gather (a gather and a bounds check per value before); every
    value as ONNX Runtime's, on the host."""
    rng = np.random.default_rng(7)
    w = (rng.normal(size=(8, 3, 3, 3)) / 5).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="stem", kernel_shape=[3, 3],
                            strides=[2, 2])
    value = helper.make_tensor_value_info
    graph = helper.make_graph([node], "stem", [value("x", TensorProto.FLOAT, [1, 3, 5, 299])],
                              [value("y", TensorProto.FLOAT, None)],
                              [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    graph_ir, _ = pipeline.run(onnx_import.import_model(model), CompileOptions())
    code = isa.compile_graph(graph_ir, "avx512").kernels
    kernel = next(k for k in code if k.endswith("stem"))
    assert re.search(r"vpermt2ps\s+[^\n]*%zmm", code[kernel])
    assert not re.search(r"vgather", code[kernel])
    inputs = {"x": rng.normal(size=(1, 3, 5, 299)).astype(np.float32)}
    got = compiler.compile(model, target="cpu").run(inputs)["y"]
    np.testing.assert_allclose(got, run_ort(model, inputs)["y"], rtol=1e-5, atol=1e-5)
