"""LinearQAdd: which residual adds get a straight-line form, on which input domain, what it
records (and refuses), idempotence, the report; bit-exact against the three-step formula."""

from __future__ import annotations

import json

import numpy as np

from compiler import onnx_export, onnx_import, reference
from compiler.ops import etch_int
from compiler.options import CompileOptions
from compiler.pipeline import passes_for
from passes.fuse_integer import FuseInteger
from passes.linear_qadd import LinearQAdd
from passes.quant_report import explain
from tests.golden import assert_bitexact
from tests.passes.fuse_helpers import check_idempotent, only, steps
from tests.passes.int_helpers import QADD, IntGraph

# short ratios between the scales (exact .5 ties the reference breaks by its rounding of each
# side): no straight line is exact
TIED = {**QADD, "a_m0": 1073741824, "a_shift": 32, "b_m0": 1073741824, "b_shift": 31,
        "m0": 1073741824, "shift": 50}


def _residual_group(attrs: dict, bounds: dict | None = None, table: bool = False):
    b = IntGraph(3)
    x, r = b.input("x", (1, 4, 5, 5)), b.input("r", (1, 6, 5, 5), "uint8")
    y = b.requantize(b.qconv(x, 6, "acc"), "y", **(bounds or {}))
    if table:
        y = b.table(y, "t")
    g = b.outputs(b.op("etch.QAdd", [r, y], "out", **{**attrs, "b_zero": 3}))
    fused, _ = FuseInteger().run(g.copy())
    return g, fused, b.feeds


def _linear(node) -> list[int] | None:
    return steps(node)[-1]["attrs"].get("linear")


def test_a_residual_group_records_the_line_proven_on_its_domain() -> None:
    g, fused, feeds = _residual_group(QADD, {"qmin": -40, "qmax": 90})
    out, changed = LinearQAdd().run(fused)
    out.verify()
    form = _linear(only(out, "etch.QFused"))
    # the residual r (input a, uint8: 0..255), the running value y (b, the requantisation's
    # clamp -40..90): the domain the pass proved it on
    attrs = {**QADD, "b_zero": 3}
    assert changed and form == etch_int.linear_qadd(attrs, (0, 255), (-40, 90))
    k, ca, cb, c = form
    a, b = np.meshgrid(np.arange(0, 256), np.arange(-40, 91), indexing="ij")
    np.testing.assert_array_equal(np.clip((a.astype(np.int64) * ca + c + b * cb) >> k,
                                          QADD["qmin"], QADD["qmax"]),
                                  etch_int._qadd({**attrs, "to": "int64"}, a, b))
    assert json.loads(out.metadata["etch.qadd_linear"]) == {"linear": 1, "general": 0}
    assert "residual adds: 1 as one int32 multiply-add line" in explain(out.metadata)
    assert_bitexact(reference.run(out, feeds), reference.run(g, feeds))
    check_idempotent(out, [LinearQAdd()])


def test_after_a_table_the_running_value_spans_its_type() -> None:
    _, fused, _ = _residual_group(QADD, {"qmin": -40, "qmax": 90}, table=True)
    out, _ = LinearQAdd().run(fused)
    assert _linear(only(out, "etch.QFused")) == etch_int.linear_qadd(
        {**QADD, "b_zero": 3}, (0, 255), (-128, 127))


def test_no_line_is_recorded_where_none_is_exact_and_a_stale_one_goes() -> None:
    _, fused, _ = _residual_group(TIED)
    node = only(fused, "etch.QFused")
    s = steps(node)
    s[-1]["attrs"]["linear"] = [20, 1, 1, 0]  # a bogus form, as a hand-made model might carry
    node.attrs["epilogue"] = json.dumps(s, sort_keys=True)
    out, changed = LinearQAdd().run(fused)
    assert changed and _linear(only(out, "etch.QFused")) is None
    assert json.loads(out.metadata["etch.qadd_linear"]) == {"linear": 0, "general": 1}


def test_a_standalone_add_uses_both_input_types() -> None:
    b = IntGraph(4)
    x, r = b.input("x", (2, 3, 4), "uint8"), b.input("r", (2, 3, 4))
    g = b.outputs(b.op("etch.QAdd", [x, r], "out", **QADD))
    out, _ = LinearQAdd().run(g.copy())
    [node] = out.nodes
    assert node.attrs["linear"] == etch_int.linear_qadd(QADD, (0, 255), (-128, 127))
    assert_bitexact(reference.run(out, b.feeds), reference.run(g, b.feeds))
    # the attr survives the artifact's ONNX export
    back = onnx_import.import_model(onnx_export.export_model(out))
    assert list(back.nodes[0].attrs["linear"]) == node.attrs["linear"]


def test_in_the_integer_pipelines_of_the_tvm_targets_only() -> None:
    def names(**kw) -> list[str]:
        return [p.label for p in passes_for(CompileOptions(**kw))]

    for target in ("cpu", "edge", "ref"):
        assert "linear_qadd" in names(target=target, int=True, bits=8)
    assert "linear_qadd" not in names(target="verilog")
    assert "linear_qadd" not in names(target="cpu", bits=4)
