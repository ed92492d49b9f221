"""QuantizeActivations: the integer graph, checked against ONNX Runtime on its QDQ export,
its structure (integer ops, host split, tables), and the CLI path on the ref target."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from compiler import qdq_export, reference
from compiler.errors import EtchError
from compiler.ir import Graph
from models import zoo
from passes.quantize_activations import QuantizeActivations
from passes.quantize_weights import QuantizeWeights
from tests.passes.fuse_helpers import build, f32, node
from tests.passes.quant_helpers import (
    CNNS,
    TRANSFORMERS,
    calib_for,
    folded,
    inputs_for,
    lsb_differences,
    ort_session,
)


def integer_graph(name: str, bits: int = 8, calib_n: int = 64,
                  group_size: int | None = None) -> Graph:
    g = folded(name)
    w, _ = QuantizeWeights(bits=bits, integer=True, group_size=group_size).run(g)
    out, _ = QuantizeActivations(calib_for(name, g, calib_n)).run(w)
    return out


@pytest.mark.parametrize("name,bits", [(n, b) for n in CNNS for b in (8, 4)])
def test_integer_graph_matches_ort_qdq_within_one_lsb(name: str, bits: int) -> None:
    """Every int8 activation (outputs included), sample by sample: >= 99.9% within 1 LSB."""
    g = integer_graph(name, bits)
    assert "Conv" not in g.op_counts() and "Gemm" not in g.op_counts()
    d = lsb_differences(g, inputs_for(name, g, 8, offset=-1))
    assert d.size > 0 and np.mean(d <= 1) >= 0.999 and d.max() <= 2


@pytest.mark.parametrize("name,group_size", [("digits_cnn", 16), ("resnet_block", 8)])
def test_integer_groups_match_ort(name: str, group_size: int) -> None:
    """Groups along K in the integer path: QConv/QGemm with integer group multipliers."""
    g = integer_graph(name, 4, group_size=group_size)
    grouped = [n for n in g.nodes if n.op in ("etch.QConv", "etch.QGemm") and
               len(n.inputs) > 5 and n.inputs[5]]
    assert grouped and all(n.attrs["group_size"] == group_size for n in grouped)
    d = lsb_differences(g, inputs_for(name, g, 4, offset=-1))
    assert np.mean(d <= 1) >= 0.999 and d.max() <= 2


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_transformer_integer_parts_match_ort(name: str) -> None:
    g = integer_graph(name)
    placement = json.loads(g.metadata["etch.placement"])
    assert placement["accel"]["etch.QGemm"] == 16 and placement["accel"]["etch.Table"] == 2
    assert placement["accel"]["etch.QLayerNorm"] == 5 and placement["accel"]["etch.QSoftmax"] == 2
    assert set(placement["host"]) == {"QuantizeLinear", "DequantizeLinear"}
    d = lsb_differences(g, inputs_for(name, g, 2, offset=-1))
    assert np.mean(d <= 1) >= 0.999


def test_cnn_is_all_integer_between_the_boundaries() -> None:
    g = integer_graph("resnet_block")
    hosts = [n for n in g.nodes if n.attrs["placement"] == "host"]
    assert sorted(n.op for n in hosts) == ["DequantizeLinear", "QuantizeLinear"]
    ops = g.op_counts()
    assert ops["etch.QAdd"] == 2 and ops["etch.QConv"] == 6 and "Relu" not in ops
    assert g.inputs == ["input"] and g.outputs == folded("resnet_block").outputs


def test_relu6_and_bias_fold_into_requantize(rng: np.random.Generator) -> None:
    g = build([node("MatMul", ["x", "w"], "m"), node("Add", ["m", "b"], "a"),
               node("Clip", ["a", "lo", "hi"], "y")], {"x": (2, 3, 8)}, ["y"],
              {"w": f32(rng, 8, 4), "b": f32(rng, 4), "lo": np.float32(0), "hi": np.float32(2)})
    w, _ = QuantizeWeights(bits=8, integer=True).run(g)
    q, _ = QuantizeActivations({"x": f32(rng, 16, 3, 8)}).run(w)
    assert [n.op for n in q.nodes] == ["QuantizeLinear", "etch.QGemm", "etch.Requantize",
                                       "DequantizeLinear"]
    req = q.nodes[2]
    assert req.attrs["qmin"] == req.attrs["zero_point"]  # the clamp at 0
    x = {"x": f32(rng, 2, 3, 8)}
    want, got = reference.run(g, x)["y"], reference.run(q, x)["y"]
    assert np.abs(got - want).max() < 0.03 and got.min() >= 0 and got.max() <= 2 + 1e-6


def test_sigmoid_becomes_a_table(rng: np.random.Generator) -> None:
    g = build([node("MatMul", ["x", "w"], "m"), node("Sigmoid", ["m"], "s"),
               node("Mul", ["s", "k"], "y"), node("MatMul", ["y", "w2"], "z")],
              {"x": (4, 8)}, ["z"], {"w": f32(rng, 8, 8), "w2": f32(rng, 8, 3),
                                     "k": np.float32(3.0)})
    w, _ = QuantizeWeights(bits=8, integer=True).run(g)
    q, _ = QuantizeActivations({"x": f32(rng, 32, 4, 8)}).run(w)
    table = [n for n in q.nodes if n.op == "etch.Table"]
    assert len(table) == 1 and q.values[table[0].inputs[1]].shape == (256,)
    assert [s["op"] for s in json.loads(table[0].attrs["epilogue"])] == ["Sigmoid", "Mul"]
    x = {"x": f32(rng, 4, 8)}
    want, got = reference.run(g, x)["z"], reference.run(q, x)["z"]
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()


def _concat_bn_relu(rng: np.random.Generator) -> Graph:
    """DenseNet's pattern: two convs, their Concat, then a BatchNorm (per-channel Mul, Add)
    and a Relu that no conv before it can absorb, then a conv."""
    c = lambda *s: f32(rng, *s)
    return build([node("Conv", ["x", "w1"], "a", pads=[1, 1, 1, 1]),
                  node("Conv", ["x", "w2"], "b", pads=[1, 1, 1, 1]),
                  node("Concat", ["a", "b"], "cat", axis=1),
                  node("Mul", ["cat", "gamma"], "m"), node("Add", ["m", "beta"], "n"),
                  node("Relu", ["n"], "r"), node("Conv", ["r", "w3"], "y")],
                 {"x": (1, 3, 6, 7)}, ["y"],
                 {"w1": c(4, 3, 3, 3), "w2": c(2, 3, 3, 3), "gamma": c(6, 1, 1),
                  "beta": c(1, 6, 1, 1), "w3": c(5, 6, 1, 1)})


@pytest.mark.parametrize("channels", [True, False])
def test_a_per_channel_region_becomes_a_channel_table(rng: np.random.Generator,
                                                      channels: bool) -> None:
    """A BatchNorm + ReLU between integer ops (after a Concat): with channel tables (the TVM
    targets) one etch.ChannelTable, each channel's 256 entries the region's float ops on
    that input level, so the integer graph computes what the host path (DequantizeLinear,
    float ops, QuantizeLinear) computes, bit for bit; without them, that host path."""
    g = _concat_bn_relu(rng)
    w, _ = QuantizeWeights(bits=8, integer=True).run(g)
    calib = {"x": f32(rng, 16, 1, 3, 6, 7)}
    q, _ = QuantizeActivations(calib, channel_tables=channels).run(w.copy())
    host, _ = QuantizeActivations(calib).run(w.copy())
    ops = [n.op for n in q.nodes]
    if not channels:
        assert "etch.ChannelTable" not in ops and {"Mul", "Add", "Relu"} <= set(ops)
        return
    [table] = [n for n in q.nodes if n.op == "etch.ChannelTable"]
    assert not {"Mul", "Add", "Relu"} & set(ops) and table.attrs["axis"] == 1
    assert q.values[table.inputs[1]].shape == (6, 256)
    assert [s["op"] for s in json.loads(table.attrs["epilogue"])] == ["Mul", "Add", "Relu"]
    x = {"x": f32(rng, 1, 3, 6, 7)}
    np.testing.assert_array_equal(reference.run(q, x)["y"], reference.run(host, x)["y"])
    assert not any(n.attrs.get("placement") == "host" for n in q.nodes
                   if n.op not in ("QuantizeLinear", "DequantizeLinear"))
    # its QDQ export (the recorded float function between DQ and Q) runs in ORT, equal
    sess = ort_session(qdq_export.export_qdq(q))
    np.testing.assert_array_equal(sess.run(None, x)[0], reference.run(q, x)["y"])


@pytest.mark.parametrize("products", [True, False])
def test_a_product_of_two_activations_becomes_qmul(rng: np.random.Generator,
                                                   products: bool) -> None:
    """Mul of two integer activations (a squeeze-and-excitation gate: a feature map times a
    per-channel sigmoid): with `products` (the TVM targets) one etch.QMul on the
    accelerator, within one output code of the host path (Dequantize, float Mul, Quantize:
    the same real product, rounded half to even in float32 there) and of its QDQ export run
    by ONNX Runtime; without them, that host path."""
    g = build([node("Conv", ["x", "w1"], "a"), node("Relu", ["a"], "r"),
               node("GlobalAveragePool", ["r"], "p"), node("Conv", ["p", "w2"], "c"),
               node("Sigmoid", ["c"], "s"), node("Mul", ["r", "s"], "m"),
               node("Conv", ["m", "w3"], "y")],
              {"x": (1, 3, 6, 7)}, ["y"],
              {"w1": f32(rng, 4, 3, 3, 3), "w2": f32(rng, 4, 4, 1, 1),
               "w3": f32(rng, 5, 4, 1, 1)})
    w, _ = QuantizeWeights(bits=8, integer=True).run(g)
    calib = {"x": f32(rng, 16, 1, 3, 6, 7)}
    q, _ = QuantizeActivations(calib, products=products).run(w.copy())
    host, _ = QuantizeActivations(calib).run(w.copy())
    ops = [n.op for n in q.nodes]
    if not products:
        assert "etch.QMul" not in ops and "Mul" in ops
        return
    assert ops.count("etch.QMul") == 1 and "Mul" not in ops
    assert not any(n.attrs.get("placement") == "host" for n in q.nodes
                   if n.op not in ("QuantizeLinear", "DequantizeLinear"))
    [mul] = [n for n in q.nodes if n.op == "etch.QMul"]
    [mul_host] = [n for n in host.nodes if n.op == "Mul"]
    x = {"x": f32(rng, 1, 3, 6, 7)}
    got = reference.run(q, x, keep=True)[mul.outputs[0]].astype(np.int64)
    want = reference.run(host, x, keep=True)
    [quant] = [n for n in host.nodes if n.op == "QuantizeLinear" and
               n.inputs[0] == mul_host.outputs[0]]
    assert np.abs(got - want[quant.outputs[0]].astype(np.int64)).max() <= 1
    sess = ort_session(qdq_export.export_qdq(q))
    assert np.abs(sess.run(None, x)[0] - reference.run(q, x)["y"]).max() <= \
        0.05 * np.abs(reference.run(q, x)["y"]).max()


def test_a_constant_over_more_than_one_axis_stays_on_the_host(
        rng: np.random.Generator) -> None:
    """A table needs every constant scalar or one value per channel of one axis; a Mul by
    a full [4, 8] tensor runs in float on the host, a Mul by [8] (per channel of the last
    axis) is a channel table."""
    g = build([node("MatMul", ["x", "w"], "a"), node("Mul", ["a", "k"], "m"),
               node("Mul", ["m", "j"], "n"), node("MatMul", ["n", "w2"], "y")],
              {"x": (4, 8)}, ["y"], {"w": f32(rng, 8, 8), "k": f32(rng, 8),
                                     "j": f32(rng, 4, 8), "w2": f32(rng, 8, 3)})
    w, _ = QuantizeWeights(bits=8, integer=True).run(g)
    q, _ = QuantizeActivations({"x": f32(rng, 32, 4, 8)}, channel_tables=True).run(w)
    [mul] = [n for n in q.nodes if n.op == "Mul"]
    [table] = [n for n in q.nodes if n.op == "etch.ChannelTable"]
    assert mul.inputs[1] == "j" and mul.attrs["placement"] == "host"
    assert table.attrs["axis"] == 1 and q.values[table.inputs[1]].shape == (8, 256)


def test_needs_calibration_data(rng: np.random.Generator) -> None:
    g = build([node("MatMul", ["x", "w"], "y")], {"x": (1, 8)}, ["y"], {"w": f32(rng, 8, 4)})
    g, _ = QuantizeWeights(bits=8, integer=True).run(g)
    with pytest.raises(EtchError, match="needs an activation scale.*--calib"):
        QuantizeActivations(None).run(g)
    with pytest.raises(EtchError, match="lacks input"):
        QuantizeActivations({"other": f32(rng, 1, 8)}).run(g)


def test_ref_target_runs_the_integer_graph_from_the_cli(tmp_path: Path) -> None:
    """`etch compile --target ref --bits 4 --int --calib` then `etch run`, as a user does."""
    model = zoo.model_path("digits_cnn")
    g = folded("digits_cnn")
    np.savez(tmp_path / "calib.npz", input=inputs_for("digits_cnn", g, 64))
    x = inputs_for("digits_cnn", g, 1, offset=-1)
    np.savez(tmp_path / "in.npz", input=x)
    etch = [sys.executable, "-m", "compiler.cli"]
    art = tmp_path / "cnn.ref"
    done = subprocess.run(etch + ["compile", str(model), "--target", "ref", "--bits", "4",
                                  "--int", "--calib", str(tmp_path / "calib.npz"), "-o",
                                  str(art), "--explain"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "quantize_activations" in done.stdout and "etch.QConv" in done.stdout
    assert "integer groups (etch.QFused, one output-unit pass each): 5" in done.stdout
    assert "QConv > Requantize > QAdd x1" in done.stdout
    done = subprocess.run(etch + ["run", str(art), "--inputs", str(tmp_path / "in.npz"),
                                  "--out", str(tmp_path / "out.npz")], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr
    got = np.load(tmp_path / "out.npz")["logits"]
    calib = {"input": inputs_for("digits_cnn", g, 64)}  # weights' clips use the data too
    w, _ = QuantizeWeights(bits=4, integer=True, calib=calib).run(g)
    q, _ = QuantizeActivations(calib).run(w)
    assert np.array_equal(got, reference.run(q, {"input": x})["logits"])


def test_cli_refuses_per_input_channel_integer(tmp_path: Path) -> None:
    np.savez(tmp_path / "calib.npz", input=np.zeros((4, 64), np.float32))
    done = subprocess.run([sys.executable, "-m", "compiler.cli", "compile",
                           str(zoo.model_path("digits_mlp")), "--target", "ref", "--int",
                           "--per", "ic", "--calib", str(tmp_path / "calib.npz"), "-o",
                           str(tmp_path / "x")], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 1
    assert "layer node_linear" in done.stderr and "cannot be factored out" in done.stderr
    assert not (tmp_path / "x").exists()
