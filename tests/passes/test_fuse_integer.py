"""FuseInteger: which output-unit groups form, what the etch.QFused nodes record, bit-exact
numerics, idempotence; the op's checks and its ONNX round trip; the zoo's integer graphs."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from compiler import onnx_export, onnx_import, reference
from compiler.errors import EtchError
from compiler.ops import etch_qfused
from compiler.options import CompileOptions
from compiler.pipeline import passes_for
from passes import fuse_integer
from passes.fuse_integer import FuseInteger
from passes.quant_report import explain
from tests.golden import assert_bitexact
from tests.passes.fuse_helpers import check_idempotent, only, steps
from tests.passes.int_helpers import QADD, IntGraph
from tests.passes.quant_helpers import CNNS
from tests.passes.test_quant_activations import integer_graph


def fuse(graph):
    out, changed = FuseInteger().run(graph)
    out.verify()
    return out, changed


def check_same(before, after, feeds) -> None:
    assert after.outputs == before.outputs
    assert_bitexact(reference.run(after, feeds), reference.run(before, feeds))


def test_conv_requantize_clamp_table_residual_is_one_group() -> None:
    b = IntGraph(1)
    x, r = b.input("x", (1, 4, 5, 5)), b.input("r", (1, 6, 5, 5))
    y = b.requantize(b.qconv(x, 6, "acc"), "y")
    c = b.op("etch.Clamp", [y], "c", lo=-20, hi=90)
    t = b.table(c, "t")
    g = b.outputs(b.op("etch.QAdd", [r, t], "out", **QADD))
    out, changed = fuse(g)
    fused = only(out, "etch.QFused")
    assert changed and len(out.nodes) == 1 and fused.outputs == ["out"]
    assert fused.name == "QConv_acc"  # the anchor's name: kernel names do not change
    assert fused.inputs == ["x", "acc_w", "acc_b", "acc_z", "y_m0", "y_sh", "t_t", "r"]
    assert (fused.attrs["kernel"], fused.attrs["num_kernel_inputs"]) == ("etch.QConv", 4)
    assert json.loads(fused.attrs["kernel_attrs"]) == {"kernel_shape": [3, 3],
                                                       "pads": [1, 1, 1, 1]}
    assert steps(fused) == [
        {"op": "etch.Requantize", "args": ["y", 4, 5],
         "attrs": {"axis": 1, "zero_point": 2, "qmin": -20, "qmax": 90, "to": "int8"}},
        {"op": "etch.Table", "args": ["y", 6], "attrs": {}},
        {"op": "etch.QAdd", "args": [7, "y"], "attrs": QADD}]
    check_same(g, out, b.feeds)
    check_idempotent(out, [FuseInteger()])


def test_the_decoded_group_is_an_output_unit_configuration() -> None:
    b = IntGraph(2)
    x, r = b.input("x", (1, 4, 5, 5)), b.input("r", (1, 6, 5, 5))
    t = b.table(b.requantize(b.qconv(x, 6, "acc"), "y"), "t")
    out, _ = fuse(b.outputs(b.op("etch.QAdd", [t, r], "out", **QADD)))
    node = only(out, "etch.QFused")
    g = etch_qfused.group(node.attrs, node.inputs, node.outputs[0])
    assert (g.anchor, g.anchor_inputs, g.channel_axis) == ("etch.QConv", tuple(node.inputs[:4]), 1)
    assert g.requant.args == ("y", "y_m0", "y_sh") and g.table.args == ("y", "t_t")
    assert (g.y_side, g.residual_value, g.residual.attrs) == (0, "r", QADD)
    assert [s.op for s in g.steps] == ["etch.Requantize", "etch.Table", "etch.QAdd"]


@pytest.mark.parametrize("where", ["requantize", "table", "qadd"])
def test_a_clamp_merges_into_the_step_before_it(where: str) -> None:
    b = IntGraph(3)
    x, r = b.input("x", (1, 3, 4, 4)), b.input("r", (1, 5, 4, 4))
    v = b.requantize(b.qconv(x, 5, "acc"), "y")
    clamp = {"lo": -40, "hi": 30}
    if where == "requantize":
        v = b.op("etch.Clamp", [v], "c", **clamp)
    v = b.table(v, "t")
    if where == "table":
        v = b.op("etch.Clamp", [v], "c", **clamp)
    v = b.op("etch.QAdd", [v, r], "a", **QADD)
    if where == "qadd":
        v = b.op("etch.Clamp", [v], "c", **clamp)
    g = b.outputs(v)
    out, _ = fuse(g)
    fused = only(out, "etch.QFused")
    ops = [s["op"] for s in steps(fused)]
    assert len(out.nodes) == 1 and ops == ["etch.Requantize", "etch.Table", "etch.QAdd"]
    if where == "table":
        table = out.values[fused.inputs[steps(fused)[1]["args"][1]]].data
        assert table.min() >= -40 and table.max() <= 30 and "t_t" not in out.values
    else:
        step = steps(fused)[0 if where == "requantize" else 2]["attrs"]
        assert (step["qmin"], step["qmax"]) == (-40, 30)
    check_same(g, out, b.feeds)


def test_clamp_of_a_clamp_is_the_clamp_to_clipped_bounds() -> None:
    """The algebra behind the merge: clip(clip(v, a, b), c, d) = clip(v, clip(a, c, d),
    clip(b, c, d)), disjoint intervals included."""
    v = np.arange(-12, 13)
    for a, b_, c, d in itertools.product(range(-6, 7, 3), repeat=4):
        if a <= b_ and c <= d:
            want = np.clip(np.clip(v, a, b_), c, d)
            assert np.array_equal(np.clip(v, np.clip(a, c, d), np.clip(b_, c, d)), want)


def test_a_residual_add_goes_to_the_later_anchor() -> None:
    b = IntGraph(4)
    x = b.input("x", (1, 4, 6, 6))
    main = b.requantize(b.qconv(x, 8, "acc1"), "y1")
    short = b.requantize(b.qconv(x, 8, "acc2", k=1), "y2")
    g = b.outputs(b.op("etch.QAdd", [main, short], "out", **QADD))
    out, _ = fuse(g)
    first, second = [n for n in out.nodes if n.op == "etch.QFused"]
    assert [s["op"] for s in steps(first)] == ["etch.Requantize"]
    assert first.outputs == ["y1"] and second.outputs == ["out"]
    assert steps(second)[-1]["args"] == [len(second.inputs) - 1, "y"]
    assert second.inputs[-1] == "y1"  # the earlier group's output is the residual
    check_same(g, out, b.feeds)
    report = json.loads(out.metadata["etch.int_groups"])
    assert report == {"groups": {"QConv > Requantize": 1, "QConv > Requantize > QAdd": 1},
                      "ungrouped": []}


def test_gemm_and_pool_anchors() -> None:
    b = IntGraph(5)
    x = b.input("x", (1, 4, 6, 6))
    pooled = b.requantize(b.op("etch.QSumPool", [x, b.const("pz", np.int8(1))], "sum",
                               **{"global": 1}), "p", axis=None)
    flat = b.op("Reshape", [pooled, b.const("shape", np.array([1, 4]))], "f")
    logits = b.requantize(b.qgemm(flat, 10, "lacc"), "logits", axis=1)
    g = b.outputs(logits)
    out, _ = fuse(g)
    anchors = [n.attrs["kernel"] for n in out.nodes if n.op == "etch.QFused"]
    assert anchors == ["etch.QSumPool", "etch.QGemm"] and len(out.nodes) == 3
    check_same(g, out, b.feeds)


def test_groups_stop_where_a_value_must_exist() -> None:
    b = IntGraph(6)
    x = b.input("x", (1, 4, 5, 5))
    y = b.requantize(b.qconv(x, 4, "acc"), "y")  # a graph output: the table cannot join
    t = b.table(y, "t")
    u = b.requantize(b.qconv(x, 4, "acc2"), "u")
    t1, t2 = b.table(u, "t1"), b.table(u, "t2")  # two readers
    g = b.outputs(y, t, t1, t2)
    out, _ = fuse(g)
    groups = [n for n in out.nodes if n.op == "etch.QFused"]
    assert sorted(n.outputs[0] for n in groups) == ["u", "y"]
    assert out.op_counts()["etch.Table"] == 3
    check_same(g, out, b.feeds)


@pytest.mark.parametrize("case", ["output", "readers", "axis", "computed"])
def test_anchors_that_form_no_group_say_why(case: str) -> None:
    b = IntGraph(7)
    x = b.input("x", (1, 4, 5, 5))
    acc = b.qconv(x, 4, "acc")
    outs = [b.requantize(acc, "y", axis=2 if case == "axis" else 1)]
    if case == "output":
        outs.append(acc)
    if case == "readers":
        outs.append(b.requantize(acc, "y2"))
    if case == "computed":
        m0 = b.op("etch.Clamp", [b.input("m", (4,), "int32")], "m0", lo=1 << 30, hi=1 << 31)
        b.g.nodes[-2].inputs[1] = m0
        b.g.toposort()
    g = b.outputs(*outs)
    reason = fuse_integer.fusion_reason(g, only(g, "etch.QConv"))
    words = {"output": "graph output", "readers": "exactly one", "axis": "not the output",
             "computed": "not constants"}
    assert reason is not None and words[case] in reason
    out, changed = fuse(g)
    assert not changed and "etch.QFused" not in out.op_counts()
    assert f"not grouped: QConv_acc: {reason}" in explain(out.metadata)


@pytest.mark.parametrize("name", CNNS)
def test_zoo_integer_graphs_fuse_bit_exactly(name: str) -> None:
    g = integer_graph(name)
    out, changed = fuse(g)
    anchors = {"etch.QConv", "etch.QGemm", "etch.QSumPool", "etch.Requantize"}
    assert changed and not anchors & set(out.op_counts())
    rng = np.random.default_rng(0)
    x = {g.inputs[0]: rng.normal(size=g.values[g.inputs[0]].shape).astype(np.float32)}
    check_same(g, out, x)
    check_idempotent(out, [FuseInteger()])
    report = json.loads(out.metadata["etch.int_groups"])
    assert report["ungrouped"] == [] and sum(report["groups"].values()) == \
        out.op_counts()["etch.QFused"]


def test_qfused_round_trips_through_onnx() -> None:
    b = IntGraph(8)
    x, r = b.input("x", (1, 4, 5, 5)), b.input("r", (1, 6, 5, 5))
    t = b.table(b.requantize(b.qconv(x, 6, "acc"), "y"), "t")
    g, _ = fuse(b.outputs(b.op("etch.QAdd", [t, r], "out", **QADD)))
    back = onnx_import.import_model(onnx_export.export_model(g))
    node = only(back, "etch.QFused")
    assert node.attrs == only(g, "etch.QFused").attrs
    assert back.values["out"].shape == (1, 6, 5, 5) and back.values["out"].dtype == "int8"
    check_same(g, back, b.feeds)


@pytest.mark.parametrize("edit,words", [
    (lambda a: a.update(kernel="etch.QAdd"), "anchor"),
    (lambda a: a.update(epilogue=a["epilogue"].replace("etch.Requantize", "etch.Table")),
     "start with"),
    (lambda a: a.update(epilogue=json.dumps(json.loads(a["epilogue"]) * 2)), "ordered"),
    (lambda a: a.update(epilogue=a["epilogue"].replace('"args": ["y", 4', '"args": ["y", 9')),
     "name no step operand"),
    (lambda a: a.update(epilogue="[{"), "do not parse"),
])
def test_a_malformed_qfused_is_one_clear_error(edit, words: str) -> None:
    b = IntGraph(9)
    x = b.input("x", (1, 4, 5, 5))
    g, _ = fuse(b.outputs(b.requantize(b.qconv(x, 6, "acc"), "y")))
    edit(only(g, "etch.QFused").attrs)
    with pytest.raises(EtchError, match=words):
        reference.run(g, b.feeds)
    with pytest.raises(EtchError, match=words):
        onnx_import.import_model(onnx_export.export_model(g))


def test_pipelines_fuse_integer_graphs() -> None:
    def names(**kw) -> list[str]:
        return [p.label for p in passes_for(CompileOptions(**kw))]

    for target in ("cpu", "edge", "ref"):
        tail = names(target=target, int=True, bits=8)[-5:]
        assert tail == ["quantize_activations", "fuse_integer", "linear_qadd",
                        "flatten_pointwise", "fuse_epilogue"]
    assert "fuse_integer" in names(target="verilog") and \
        "flatten_pointwise" not in names(target="verilog")
    assert "fuse_integer" not in names(target="cpu", int=True, fuse=False)
    assert "fuse_integer" not in names(target="cpu", bits=4)
