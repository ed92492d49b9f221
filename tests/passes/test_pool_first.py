"""PoolFirst: an average pool after a 1x1 convolution moves before it (DenseNet's transition:
BN -> Relu -> 1x1 conv -> 2x2 average pool), so the conv runs on the pooled positions only;
the result is the same to float rounding (reference and cpu against ONNX Runtime on the
original graph); whatever does not commute is left alone, with its reason in `--explain`."""

from __future__ import annotations

import json

import pytest
from onnx import helper

import compiler
from compiler import onnx_import, reference
from compiler.options import CompileOptions
from passes.base import DECLINED
from passes.pool_first import REPORT, PoolFirst, explain
from tests.golden import RandomInits, assert_close, run_ort


def transition(pool: str = "AveragePool", conv: dict | None = None, pool_attrs: dict | None = None,
               kernel: int = 1, extra_reader: bool = False, c: int = 24, hw: int = 14):
    """x -> BN -> Relu -> Conv(c -> c/2, `kernel`, bias) -> `pool` (2x2 stride 2 unless
    `pool_attrs`); `extra_reader`: the conv's output is also a graph output."""
    init = RandomInits(0)
    rng = init.rng
    bn = [init.bias("g", c), init.bias("beta", c), init.bias("mean", c)]
    init.tensors.append(helper.make_tensor("var", 1, [c], rng.uniform(0.5, 1.5, c)))
    attrs = pool_attrs if pool_attrs is not None else {"kernel_shape": [2, 2], "strides": [2, 2]}
    nodes = [helper.make_node("BatchNormalization", ["x", *bn, "var"], ["b"], name="bn"),
             helper.make_node("Relu", ["b"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", init.weight("w", c // 2, c, kernel, kernel),
                                       init.bias("bias", c // 2)], ["y"], name="conv",
                              **(conv or {})),
             helper.make_node(pool, ["y"], ["z"], name="pool",
                              **(attrs if pool == "AveragePool" else {}))]
    return init.model("transition", nodes, {"x": [2, c, hw, hw]},
                      ["z", "y"] if extra_reader else ["z"])


def _graph(model):
    from compiler import pipeline

    graph, _ = pipeline.run(onnx_import.import_model(model), CompileOptions(target="ref"),
                            pass_list=[])
    return graph


@pytest.mark.parametrize("pool,attrs,positions", [
    ("AveragePool", None, 49),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, 49),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1] * 4}, 49),
    ("GlobalAveragePool", None, 1),
])
def test_the_pool_moves_before_the_conv_and_the_result_stays(pool, attrs, positions) -> None:
    model, x = transition(pool, pool_attrs=attrs)
    before = _graph(model)
    after, changed = PoolFirst().run(before)
    assert changed
    after.verify()
    ops = [n.op for n in after.nodes]
    assert ops.index(pool) < ops.index("Conv")
    [conv] = [n for n in after.nodes if n.op == "Conv"]
    assert conv.name == "conv" and conv.outputs == ["z"] and after.outputs == ["z"]
    assert after.values[conv.inputs[0]].shape[2:] == after.values["z"].shape[2:]
    assert "y" not in after.values
    want = run_ort(model, x)
    assert_close(reference.run(after, x), want, rtol=1e-5, atol=1e-6)
    _, changed = PoolFirst().run(after)
    assert not changed
    [row] = json.loads(after.metadata[REPORT])
    assert row == {"conv": "conv", "pool": "pool", "positions": [196, positions]}
    assert explain(after.metadata).startswith("average pools moved before their 1x1 conv: 1")
    # compiled for the cpu: the pooled conv matches ONNX Runtime on the original graph
    art = compiler.compile(model, target="cpu")
    assert json.loads(art.graph.metadata[REPORT]) == [row]
    assert_close(art.run(x), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case,reason", [
    ({"kernel": 3, "conv": {"pads": [1] * 4}}, "is not 1x1"),
    ({"conv": {"strides": [2, 2]}}, "strided or dilated"),
    ({"conv": {"pads": [1] * 4}}, "padded (its border outputs"),
    ({"extra_reader": True}, "read by more than pool"),
    ({"pool_attrs": {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [1] * 4,
                     "count_include_pad": 1}}, "pool: counts its padding"),
    ({"pool_attrs": {"kernel_shape": [1, 1]}}, "keeps every position"),
])
def test_what_does_not_commute_stays_with_its_reason(case: dict, reason: str) -> None:
    model, _ = transition(**case)
    before = _graph(model)
    after, changed = PoolFirst().run(before)
    assert not changed
    assert [n.op for n in after.nodes] == [n.op for n in before.nodes]
    [declined] = json.loads(after.metadata[DECLINED])
    assert declined["rule"] == "pool_before_pointwise" and reason in declined["reason"]


def pool_branch(oc: int = 8, c: int = 24, include_pad: int = 1, bias: bool = True,
                conv: dict | None = None, pool_attrs: dict | None = None,
                extra_reader: bool = False):
    """Inception's pool branch: x -> AveragePool(3x3, stride 1, pads 1) -> Conv(c -> oc, 1x1)
    -> Relu; `extra_reader`: the pool's output is also a graph output."""
    init = RandomInits(1)
    attrs = pool_attrs if pool_attrs is not None else {
        "kernel_shape": [3, 3], "pads": [1] * 4, "count_include_pad": include_pad}
    inputs = ["p", init.weight("w", oc, c, 1, 1)] + ([init.bias("bias", oc)] if bias else [])
    nodes = [helper.make_node("AveragePool", ["x"], ["p"], name="pool", **attrs),
             helper.make_node("Conv", inputs, ["y"], name="conv", **(conv or {})),
             helper.make_node("Relu", ["y"], ["z"], name="relu")]
    return init.model("pool_branch", nodes, {"x": [2, c, 9, 9]},
                      ["z", "p"] if extra_reader else ["z"])


@pytest.mark.parametrize("include_pad,bias", [(1, True), (0, True), (1, False)])
def test_a_same_size_pool_moves_after_a_conv_that_reduces_channels(include_pad, bias) -> None:
    model, x = pool_branch(include_pad=include_pad, bias=bias)
    before = _graph(model)
    after, changed = PoolFirst().run(before)
    assert changed
    after.verify()
    ops = [n.op for n in after.nodes]
    assert ops == ["Conv", "AveragePool"] + (["Add"] if bias else []) + ["Relu"]
    conv, pool = after.nodes[:2]
    assert conv.name == "conv" and len(conv.inputs) == 2 and conv.inputs[0] == "x"
    assert pool.name == "pool" and after.values[pool.inputs[0]].shape == (2, 8, 9, 9)
    assert after.nodes[-2].outputs == ["y"] and "p" not in after.values
    want = run_ort(model, x)
    assert_close(reference.run(after, x), want, rtol=1e-5, atol=1e-6)
    assert not PoolFirst().run(after)[1]
    [row] = json.loads(after.metadata[REPORT])
    assert row == {"conv": "conv", "pool": "pool", "after": True, "channels": [24, 8]}
    assert explain(after.metadata) == (
        "average pools moved after their 1x1 conv: 1\n"
        "  pool                     after conv: the pool on 8 channels, not 24")
    art = compiler.compile(model, target="cpu")
    assert json.loads(art.graph.metadata[REPORT]) == [row]
    assert_close(art.run(x), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case,reason", [
    ({"oc": 24}, "conv: does not reduce the channels (24 -> 24)"),
    ({"conv": {"strides": [2, 2]}}, "strided or dilated"),
    ({"extra_reader": True}, "pool: its output is read by more than conv"),
])
def test_a_pool_stays_before_a_conv_it_cannot_pass(case: dict, reason: str) -> None:
    model, _ = pool_branch(**case)
    before = _graph(model)
    after, changed = PoolFirst().run(before)
    assert not changed
    [declined] = json.loads(after.metadata[DECLINED])
    assert declined["rule"] == "conv_before_pool" and reason in declined["reason"]


def test_a_pool_that_drops_positions_is_not_moved_after_the_conv() -> None:
    """A strided pool before the conv already leaves the conv fewer positions: no match."""
    model, _ = pool_branch(pool_attrs={"kernel_shape": [3, 3], "strides": [2, 2]})
    after, changed = PoolFirst().run(_graph(model))
    assert not changed and DECLINED not in after.metadata


@pytest.mark.parametrize("attrs,group", [
    ({"kernel_shape": [3, 3], "pads": [1] * 4, "count_include_pad": 1}, 2),
    ({"kernel_shape": [2, 2], "pads": [0, 0, 1, 1]}, 1),
    ({"kernel_shape": [5, 5], "pads": [2] * 4, "ceil_mode": 1}, 1),
])
def test_grouped_convs_and_uneven_windows_commute_too(attrs: dict, group: int) -> None:
    """A grouped 1x1 conv is per position too, and a window padded on one side only, or 5x5
    under ceil_mode, keeps every position: moved, and the same to float rounding."""
    init = RandomInits(3)
    nodes = [helper.make_node("AveragePool", ["x"], ["p"], name="pool", **attrs),
             helper.make_node("Conv", ["p", init.weight("w", 8, 24 // group, 1, 1),
                                       init.bias("b", 8)], ["y"], name="conv", group=group)]
    model, x = init.model("grouped", nodes, {"x": [2, 24, 9, 9]}, ["y"])
    after, changed = PoolFirst().run(_graph(model))
    assert changed and [n.op for n in after.nodes] == ["Conv", "AveragePool", "Add"]
    want = run_ort(model, x)
    assert_close(reference.run(after, x), want, rtol=1e-5, atol=1e-6)
    assert_close(compiler.compile(model, target="cpu").run(x), want, rtol=1e-4, atol=1e-5)
