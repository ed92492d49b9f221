"""FusePrologue: a pointwise GEMM convolution reads the channel concat and the per-channel
elementwise chain before it (DenseNet's Concat -> BN -> Relu -> 1x1 Conv) in its own input
copy: the concat chain is flattened, the absorbed nodes are gone, the reference result is
bit-identical, and the TVM kernel matches it; what does not qualify is left alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler import onnx_import, pipeline, reference
from compiler.options import CompileOptions
from passes.fuse_prologue import REPORT, FusePrologue, explain
from tests.golden import assert_bitexact

H = 10  # 100 positions: a partial last block of the kernel's copy, after whole ones


def dense_block(layers: int = 3, c0: int = 16, growth: int = 8, extra_reader: bool = False):
    """A DenseNet block as torchvision exports it: features grow one Concat at a time (each
    concat also read by the next), every layer BN -> Relu -> 1x1 conv -> BN -> Relu -> 3x3
    conv. `extra_reader`: the first concat is also read by a MaxPool (a graph output)."""
    rng = np.random.default_rng(0)
    nodes, inits, outs = [], [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr, np.float32), name))
        return name

    feats, cat, ch = ["x"], "x", c0
    for i in range(layers):
        if i:
            nodes.append(helper.make_node("Concat", [cat, feats[-1]], [f"cat{i}"], axis=1,
                                          name=f"cat{i}"))
            cat, ch = f"cat{i}", ch + growth
        nodes += [
            helper.make_node("BatchNormalization", [cat, const(f"g{i}", rng.uniform(.5, 1.5, ch)),
                                                    const(f"b{i}", rng.normal(size=ch)),
                                                    const(f"m{i}", rng.normal(size=ch)),
                                                    const(f"v{i}", rng.uniform(.5, 2, ch))],
                             [f"bn{i}"], name=f"bn{i}"),
            helper.make_node("Relu", [f"bn{i}"], [f"r{i}"]),
            helper.make_node("Conv", [f"r{i}", const(f"w{i}", rng.normal(size=(32, ch, 1, 1))
                                                     / np.sqrt(ch))], [f"pw{i}"], name=f"pw{i}"),
            helper.make_node("Relu", [f"pw{i}"], [f"pr{i}"]),
            helper.make_node("Conv", [f"pr{i}", const(f"k{i}", rng.normal(size=(growth, 32, 3, 3))
                                                      / 17)], [f"f{i}"], pads=[1] * 4,
                             name=f"conv{i}"),
        ]
        feats.append(f"f{i}")
    nodes.append(helper.make_node("Concat", [cat, feats[-1]], ["y"], axis=1, name="out"))
    outs.append("y")
    if extra_reader:
        nodes.append(helper.make_node("MaxPool", ["cat1"], ["pool"], kernel_shape=[2, 2]))
        outs.append("pool")
    graph = helper.make_graph(
        nodes, "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c0, H, H])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _before(model):
    """The cpu float pipeline up to (not including) FusePrologue."""
    passes = [p for p in pipeline.passes_for(CompileOptions(target="cpu", mcpu="skylake-avx512"))
              if p.label != "fuse_prologue"]
    graph, _ = pipeline.run(onnx_import.import_model(model), CompileOptions(target="cpu"),
                            passes)
    return graph


def test_dense_block_reads_its_features_through_the_conv_copy(rng) -> None:
    before = _before(dense_block())
    after, changed = FusePrologue().run(before)
    assert changed
    after.verify()
    ops = [n.op for n in after.nodes]
    # every layer's concat and BN + Relu chain are in its 1x1 conv; the block's output
    # concat (a graph output) stays, flattened to read every feature directly
    assert ops.count("Concat") == 1 and ops.count("etch.Fused") == ops.count("Conv") == 3
    [out] = [n for n in after.nodes if n.op == "Concat"]
    assert out.inputs == ["x", "f0", "f1", "f2"]
    pw = {n.name: n for n in after.nodes if n.name.endswith(("pw0", "pw1", "pw2"))}
    assert len(pw) == 3
    for node in pw.values():
        steps = [s["op"] for s in json.loads(node.attrs["prologue"])]
        assert steps == ["Mul", "Add", "Relu"] and json.loads(node.attrs["epilogue"])
    parts = json.loads(pw["fused_pw2"].attrs["concat_inputs"])
    assert [pw["fused_pw2"].inputs[i] for i in parts] == ["x", "f0", "f1"]
    assert "concat_inputs" not in pw["fused_pw0"].attrs  # the block input: no concat
    x = {"x": rng.standard_normal((1, 16, H, H)).astype(np.float32)}
    assert_bitexact(reference.run(after, x), reference.run(before, x))
    again, changed = FusePrologue().run(after)
    assert not changed and [n.op for n in again.nodes] == ops
    report = explain({REPORT: after.metadata[REPORT]})
    assert report.startswith("prologues (pointwise convs, row pools): 3") and "fused_pw2" in report


def test_a_concat_read_elsewhere_or_a_spatial_operand_stays(rng) -> None:
    before = _before(dense_block(extra_reader=True))
    after, _ = FusePrologue().run(before)
    cats = {n.name: n for n in after.nodes if n.op == "Concat"}
    assert "cat1" in cats  # the MaxPool reads it too: it is computed once, as before
    [pw1] = [n for n in after.nodes if n.name == "fused_pw1"]
    assert "concat_inputs" not in pw1.attrs and json.loads(pw1.attrs["prologue"])
    x = {"x": rng.standard_normal((1, 16, H, H)).astype(np.float32)}
    assert_bitexact(reference.run(after, x), reference.run(before, x))
    # an epilogue that reads the conv's own input (a residual of x) keeps that input
    before = _before(dense_block(layers=1, c0=32))  # 32 -> 32 channels
    [pw] = [n for n in before.nodes if n.name == "fused_pw0"]
    steps = json.loads(pw.attrs["epilogue"]) + [{"op": "Add", "args": ["y", 0], "attrs": {}}]
    pw.attrs["epilogue"] = json.dumps(steps)
    after, changed = FusePrologue().run(before)
    assert not changed
    # a chain whose operand varies over positions is not one value per channel
    before = _before(dense_block(layers=1))
    [chain] = [n for n in before.nodes if n.op == "etch.Fused" and not n.attrs["kernel"]]
    before.values[chain.inputs[1]].data = np.ones((16, H, H), np.float32)
    before.values[chain.inputs[1]].shape = (16, H, H)
    after, changed = FusePrologue().run(before)
    assert not changed


@pytest.mark.parametrize("layers", [1, 4])
def test_cpu_kernels_match_the_reference(rng, layers: int) -> None:
    """Compiled for the cpu: the pointwise kernels with their prologue (a concat of up to
    four parts over a partial last block of positions) against the reference."""
    import compiler

    art = compiler.compile(dense_block(layers=layers), target="cpu")
    assert any(n.attrs.get("prologue") for n in art.graph.nodes)
    x = {"x": rng.standard_normal((1, 16, H, H)).astype(np.float32)}
    got = art.run(x)
    want = reference.run(art.graph, x)
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, rtol=1e-4, atol=1e-5)


def _fire_classifier(oc: int):
    """squeezenet1_1's end: two expand convs (1x1 and 3x3, 64 -> 256 each, Relu) on 13x13,
    their Concat, and a 512 -> `oc` 1x1 classifier conv with Relu."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in [
        ("e1", rng.normal(size=(256, 64, 1, 1)) / 8), ("e3", rng.normal(size=(256, 64, 3, 3)) / 24),
        ("w", rng.normal(size=(oc, 512, 1, 1)) / 22), ("b", rng.normal(size=oc))]]
    nodes = [helper.make_node("Conv", ["x", "e1"], ["a"], name="expand1"),
             helper.make_node("Relu", ["a"], ["ra"]),
             helper.make_node("Conv", ["x", "e3"], ["c"], pads=[1] * 4, name="expand3"),
             helper.make_node("Relu", ["c"], ["rc"]),
             helper.make_node("Concat", ["ra", "rc"], ["cat"], axis=1, name="cat"),
             helper.make_node("Conv", ["cat", "w", "b"], ["z"], name="classifier"),
             helper.make_node("Relu", ["z"], ["y"])]
    graph = helper.make_graph(
        nodes, "fire", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 13, 13])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("oc", [1000, 128])
def test_wide_channel_gemms_keep_their_tile_behind_a_bare_concat(rng, oc: int) -> None:
    """On AVX-512, squeezenet1_1's 512->1000 classifier on 13x13 keeps the channel-vector
    GEMM ("pointwise_channels", its channels padded to 1008) and leaves the Concat before it
    as a kernel (KEEP_CHANNELS_OC: 1437 us as "pointwise" with the concat in its copy, 1031
    + 24 as "pointwise_channels"); with 128 output channels the Concat runs in the
    "pointwise" GEMM's copy, as before. Compiled for the host, both match the reference."""
    import compiler

    after, _ = pipeline.run(onnx_import.import_model(_fire_classifier(oc)), CompileOptions(
        target="cpu"), pipeline.passes_for(CompileOptions(target="cpu", mcpu="znver4")))
    [conv] = [n for n in after.nodes if n.name.endswith("classifier")]
    concats = [n for n in after.nodes if n.op == "Concat"]
    if oc == 1000:
        assert conv.attrs["conv_algorithm"] == "pointwise_channels" and len(concats) == 1
    else:
        assert conv.attrs["conv_algorithm"] == "pointwise" and not concats
        assert json.loads(conv.attrs["concat_inputs"])
    art = compiler.compile(_fire_classifier(oc), target="cpu")
    x = {"x": rng.standard_normal((1, 64, 13, 13)).astype(np.float32)}
    want = reference.run(art.graph, x)["y"]
    np.testing.assert_allclose(art.run(x)["y"], want, rtol=1e-4, atol=1e-4)


def _pooled_features(pool: str, **attrs):
    """Two feature maps concatenated, BN -> Relu, then `pool` with `attrs` (DenseNet's
    transition once `pool_first` put its average pool before the 1x1 conv)."""
    rng = np.random.default_rng(5)
    c = 24
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in [
        ("g", rng.uniform(.5, 1.5, c)), ("b", rng.normal(size=c)), ("m", rng.normal(size=c)),
        ("v", rng.uniform(.5, 2, c))]]
    nodes = [helper.make_node("Concat", ["x0", "x1"], ["cat"], axis=1, name="cat"),
             helper.make_node("BatchNormalization", ["cat", "g", "b", "m", "v"], ["bn"],
                              name="bn"),
             helper.make_node("Relu", ["bn"], ["r"], name="relu"),
             helper.make_node(pool, ["r"], ["y"], name="pool", **attrs)]
    graph = helper.make_graph(
        nodes, "pooled", [helper.make_tensor_value_info("x0", TensorProto.FLOAT, [1, 16, 13, 13]),
                          helper.make_tensor_value_info("x1", TensorProto.FLOAT, [1, 8, 13, 13])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _pool_anchored(model, kernel: str):
    """The graph before and after FusePrologue, which must leave one etch.Fused anchored on
    a `kernel` pool, and that node."""
    before = _before(model)
    after, changed = FusePrologue().run(before)
    assert changed
    after.verify()
    [node] = after.nodes
    assert node.op == "etch.Fused" and node.attrs["kernel"] == kernel
    return before, after, node


def test_an_average_row_pool_reads_its_input_through_the_concat_and_chain(rng) -> None:
    """An average pool whose windows lie inside its input (the row pool) takes the concat and
    the per-channel chain before it as a prologue, as the pointwise GEMM does: no concat or
    BN kernel left, the reference bit-identical, the cpu kernel equal to the reference."""
    import compiler

    model = _pooled_features("AveragePool", kernel_shape=[2, 2], strides=[2, 2])
    before, after, node = _pool_anchored(model, "AveragePool")
    assert [s["op"] for s in json.loads(node.attrs["prologue"])] == ["Mul", "Add", "Relu"]
    assert [node.inputs[i] for i in json.loads(node.attrs["concat_inputs"])] == ["x0", "x1"]
    x = {"x0": rng.standard_normal((1, 16, 13, 13)).astype(np.float32),
         "x1": rng.standard_normal((1, 8, 13, 13)).astype(np.float32)}
    assert_bitexact(reference.run(after, x), reference.run(before, x))
    art = compiler.compile(model, target="cpu")
    assert [n.op for n in art.graph.nodes] == ["etch.Fused"]
    np.testing.assert_allclose(art.run(x)["y"], reference.run(art.graph, x)["y"], rtol=1e-6,
                               atol=1e-6)


@pytest.mark.parametrize("pool,attrs", [
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2]}),
])
def test_a_padded_or_max_pool_keeps_its_producers(pool: str, attrs: dict) -> None:
    """A padded pool's windows leave the input (the tiled pool, bounds-checked reads), and a
    max reads each value three times (it would run a chain's steps as often): no prologue
    there, the concat and chain stay kernels."""
    before = _before(_pooled_features(pool, **attrs))
    after, changed = FusePrologue().run(before)
    assert not changed and [n.op for n in after.nodes] == [n.op for n in before.nodes]


def _concat_pool(size: int, **attrs):
    """Two feature maps concatenated, then a MaxPool (squeezenet1_1's fire module and pool)."""
    nodes = [helper.make_node("Concat", ["x0", "x1"], ["cat"], axis=1, name="cat"),
             helper.make_node("MaxPool", ["cat"], ["y"], name="pool", **attrs)]
    graph = helper.make_graph(
        nodes, "concat_pool",
        [helper.make_tensor_value_info("x0", TensorProto.FLOAT, [1, 16, size, size]),
         helper.make_tensor_value_info("x1", TensorProto.FLOAT, [1, 8, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_max_row_pool_reads_through_a_bare_concat(rng) -> None:
    """A max pool whose windows lie inside its input (ceil_mode adding none: 27 -> 13, as
    squeezenet1_1's) reads the concat's parts directly: no concat kernel, the reference
    bit-identical, the cpu kernel equal to it, NaN kept from either part."""
    import compiler

    model = _concat_pool(27, kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    before, after, node = _pool_anchored(model, "MaxPool")
    assert "prologue" not in node.attrs
    assert [node.inputs[i] for i in json.loads(node.attrs["concat_inputs"])] == ["x0", "x1"]
    x = {"x0": rng.standard_normal((1, 16, 27, 27)).astype(np.float32),
         "x1": rng.standard_normal((1, 8, 27, 27)).astype(np.float32)}
    x["x0"][0, 3, 5, 7] = x["x1"][0, 2, 20, 26] = np.nan
    assert_bitexact(reference.run(after, x), reference.run(before, x))
    art = compiler.compile(model, target="cpu")
    assert [n.op for n in art.graph.nodes] == ["etch.Fused"]
    want = reference.run(before, x)["y"]
    assert np.isnan(want).sum() == 3  # the windows over the two NaNs
    np.testing.assert_array_equal(art.run(x)["y"], want)


def test_a_max_pool_whose_ceil_windows_overhang_keeps_its_concat() -> None:
    """ceil_mode on 12 columns (k3 s2 -> 6 windows, the last past the input): not a row
    pool, so no prologue."""
    before = _before(_concat_pool(12, kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1))
    after, changed = FusePrologue().run(before)
    assert not changed and [n.op for n in after.nodes] == ["Concat", "MaxPool"]
