"""RearrangeChannels: exact on every zoo model, groups outliers, ties q and k together."""

from __future__ import annotations

import json

import numpy as np
import pytest

from compiler import reference
from compiler.ir import Graph
from models import zoo
from passes.channel_spaces import analyse
from passes.quantize_weights import QuantizeWeights
from passes.rearrange_channels import RearrangeChannels
from tests.golden import assert_bitexact
from tests.passes.fuse_helpers import build, f32, node
from tests.passes.quant_helpers import folded, inputs_for, run_f64

NAMES = zoo.select(None, include_large=False)


def check_exact(before: Graph, after: Graph, inputs: dict[str, np.ndarray]) -> None:
    """Bit-identical in float64 rounded to float32; float32 differs by summation order only."""
    assert_bitexact(run_f64(after, inputs), run_f64(before, inputs))
    want, got = reference.run(before, inputs), reference.run(after, inputs)
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, rtol=1e-5, atol=1e-5 * np.abs(v).max())


@pytest.mark.parametrize("name", NAMES)
def test_exact_on_zoo_models(name: str) -> None:
    g = folded(name)
    out, changed = RearrangeChannels(group_size=8).run(g)
    report = json.loads(out.metadata["etch.rearrange"])
    assert changed == bool(report)
    if len(g.nodes) > 2:
        assert report, f"{name}: nothing was rearranged"
    x = inputs_for(name, g, 2, offset=-1)
    for sample in x:
        check_exact(g, out, {g.inputs[0]: sample[None]})
    _, again = RearrangeChannels(group_size=8).run(out)
    assert not again  # sorted already: idempotent


def outlier_mlp(rng: np.random.Generator) -> Graph:
    """Gemm -> Relu -> Gemm whose second weight has 6 outlier input channels scattered over
    the K axis (every group of 16 gets one or two)."""
    w2 = f32(rng, 10, 96)
    w2[:, [3, 20, 37, 50, 70, 90]] *= 25.0
    return build([node("Gemm", ["x", "w1", "b1"], "h", transB=1), node("Relu", ["h"], "r"),
                  node("Gemm", ["r", "w2"], "y", transB=1)], {"x": (4, 32)}, ["y"],
                 {"w1": f32(rng, 96, 32), "b1": f32(rng, 96), "w2": w2})


def test_outlier_channels_share_groups_and_the_error_drops(rng: np.random.Generator) -> None:
    g = outlier_mlp(rng)
    out, changed = RearrangeChannels(group_size=16, bits=4).run(g)
    assert changed
    (space,) = json.loads(out.metadata["etch.rearrange"])
    (layer,) = space["layers"]
    assert layer["layer"] == "Gemm_y" and len(layer["groups_before"]) == 6
    assert layer["error_after"] < 0.7 * layer["error_before"]
    assert max(layer["groups_after"][1:]) < min(layer["groups_before"])  # outliers in group 0
    x = {"x": f32(rng, 4, 32)}
    check_exact(g, out, x)
    # The quantised model is better too.
    q0, _ = QuantizeWeights(bits=4, group_size=16).run(g)
    q1, _ = QuantizeWeights(bits=4, group_size=16).run(out)
    want = reference.run(g, x)["y"]
    e0 = np.square(reference.run(q0, x)["y"] - want).mean()
    e1 = np.square(reference.run(q1, x)["y"] - want).mean()
    assert e1 < 0.7 * e0


def attention(rng: np.random.Generator) -> Graph:
    """q, k projections split into 2 heads of 8, scores = q k^T; key channel 3 of head 1 and
    channel 5 of head 0 are outliers."""
    wk = f32(rng, 16, 16)
    wk[:, [5, 11]] *= 30.0
    shape = np.array([1, 4, 2, 8], np.int64)
    nodes = [node("MatMul", ["x", "wq"], "q0"), node("Add", ["q0", "bq"], "q1"),
             node("Reshape", ["q1", "shape"], "q2"), node("Transpose", ["q2"], "q", perm=[0, 2, 1, 3]),
             node("MatMul", ["x", "wk"], "k0"), node("Add", ["k0", "bk"], "k1"),
             node("Reshape", ["k1", "shape"], "k2"), node("Transpose", ["k2"], "kt",
                                                          perm=[0, 2, 3, 1]),
             node("MatMul", ["q", "kt"], "s"), node("Softmax", ["s"], "y", axis=-1)]
    return build(nodes, {"x": (1, 4, 16)}, ["y"],
                 {"wq": f32(rng, 16, 16), "bq": f32(rng, 16), "wk": wk, "bk": f32(rng, 16),
                  "shape": shape})


def test_query_and_key_are_permuted_together_within_heads(rng: np.random.Generator) -> None:
    g = attention(rng)
    (space,) = analyse(g).values()
    assert space.channels == 16 and space.block == 8
    out, changed = RearrangeChannels(group_size=4).run(g)
    assert changed
    wk = out.values[next(n for n in out.nodes if n.outputs[0] == "k0").inputs[1]].data
    col = np.abs(wk).max(axis=0)
    assert col[0] > 10 * np.median(col) and col[8] > 10 * np.median(col)  # heads' first keys
    check_exact(g, out, {"x": f32(rng, 1, 4, 16)})


def test_residual_space_spans_both_branches(rng: np.random.Generator) -> None:
    g = build([node("Conv", ["x", "w0"], "a"), node("Relu", ["a"], "r"),
               node("Conv", ["r", "w1"], "b", pads=[1, 1, 1, 1]), node("Relu", ["b"], "c"),
               node("Conv", ["c", "w2"], "d", pads=[1, 1, 1, 1]), node("Add", ["r", "d"], "e"),
               node("GlobalAveragePool", ["e"], "p"), node("Flatten", ["p"], "f"),
               node("Gemm", ["f", "wf"], "y", transB=1)], {"x": (1, 3, 6, 6)}, ["y"],
              {"w0": f32(rng, 8, 3, 1, 1), "w1": f32(rng, 8, 8, 3, 3), "w2": f32(rng, 8, 8, 3, 3),
               "wf": f32(rng, 5, 8)})
    spaces = analyse(g)
    big = max(spaces.values(), key=lambda s: len(s.edits))
    touched = {e.node.name for e in big.edits}
    assert {"Conv_a", "Conv_d", "Conv_b", "Gemm_y"} <= touched
    out, _ = RearrangeChannels(group_size=4).run(g)
    check_exact(g, out, {"x": f32(rng, 1, 3, 6, 6)})


def test_spaces_reaching_outputs_or_unknown_ops_are_pinned(rng: np.random.Generator) -> None:
    g = build([node("MatMul", ["x", "w1"], "h"), node("Softmax", ["h"], "s", axis=-1),
               node("MatMul", ["s", "w2"], "y"), node("MatMul", ["y", "w3"], "z")],
              {"x": (2, 8)}, ["y", "z"], {"w1": f32(rng, 8, 8), "w2": f32(rng, 8, 8),
                                          "w3": f32(rng, 8, 8)})
    assert analyse(g) == {}
    _, changed = RearrangeChannels().run(g)
    assert not changed
