"""PlanEngine: what it decides and records (layers, host placement, tiles, widths), on zoo
models and on small graphs that exercise the output unit's epilogue and the pool unit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from compiler.errors import EtchError
from passes.engine_tiling import act_bound, signed_width
from passes.plan_engine import PlanEngine
from tests.backends import engine_graphs
from tests.backends.engine_helpers import (
    engine_meta,
    integer_graph,
    model_mismatches,
    plan_graph,
    planned,
)


def test_mlp_layers_and_exact_widths() -> None:
    g = planned("digits_mlp", 8, (8, 8))
    meta, recs = engine_meta(g)
    (seg,) = meta["segments"]
    assert [recs[n]["kind"] for n in seg["layers"]] == ["gemm"] * 3
    assert [t["name"] for t in seg["inputs"]] == ["input_q"] and meta["host"] == {}
    bounds, amax, wmax = [], 0, 0
    for name in seg["layers"]:
        node = next(n for n in g.nodes if n.name == name)
        w = g.values[node.inputs[1]].data.astype(np.int64)
        bias = g.values[node.inputs[2]].data.astype(np.int64)
        a = act_bound("int8", int(g.values[node.inputs[3]].data))
        bounds.append(w.shape[0] * a * int(np.abs(w).max()) + int(np.abs(bias).max()))
        amax, wmax = max(amax, a), max(wmax, int(np.abs(w).max()))
        assert recs[name]["bound"] == bounds[-1]
    c = meta["config"]
    assert c["pw"] == signed_width(8 * amax * wmax)
    assert c["accw"] == max(max(signed_width(b) for b in bounds), c["pw"] + 1, c["bw"] + 1)
    assert c["ww"] == 8


def test_depthwise_keeps_only_block_diagonal_tiles() -> None:
    g = planned("mobilenet", 8, (8, 8))
    _, recs = engine_meta(g)
    dw = recs["node_Conv_231"]  # 64 channels, group 64, 3x3
    assert len(dw["ktiles"]) == 9 * 64 // 8
    assert [len(p) for p in dw["passes"]] == [9] * (64 // 8)


def test_residual_add_joins_the_later_convolution() -> None:
    _, recs = engine_meta(planned("resnet_block"))
    add = recs["node_Conv_101"]  # the shortcut, computed after the body's last conv
    assert add["epilogue"]["qadd"] and add["res"]["value"] == "getitem_6_q"
    assert recs["node_Conv_99"]["epilogue"]["qadd"] is None


def test_unmappable_integer_ops_run_on_the_host_with_a_reason() -> None:
    meta, _ = engine_meta(planned("tiny_encoder"))
    assert "activations" in meta["host"]["node_matmul"]
    assert len(meta["segments"]) > 1


def test_a_float_op_on_the_accelerator_is_an_error() -> None:
    g = integer_graph("tiny_encoder").copy()
    next(n for n in g.nodes if n.op == "DequantizeLinear").attrs["placement"] = "accel"
    with pytest.raises(EtchError, match="DequantizeLinear.*no integer form"):
        PlanEngine().run(g)


def test_idempotent() -> None:
    once = planned("digits_cnn")
    twice, _ = PlanEngine().run(once)
    assert once.metadata == twice.metadata
    assert [n.attrs.get("engine") for n in once.nodes] == \
        [n.attrs.get("engine") for n in twice.nodes]


@pytest.mark.parametrize("array", [(6, 8), (8, 0), (128, 8)])
def test_bad_arrays(array: tuple[int, int]) -> None:
    with pytest.raises(EtchError, match="--array"):
        PlanEngine(array=array)


def test_chunks_fit_the_accumulator() -> None:
    _, recs = engine_meta(planned("resnet_block", 8, (8, 8), acc_entries=40))
    stem = recs["node_Conv_95"]  # 32x32 outputs, 2 input-channel tiles... 9 kernel taps
    assert all(rows * 32 <= 40 for _, rows in stem["chunks"]) and len(stem["chunks"]) == 32


@pytest.mark.parametrize("name", sorted(engine_graphs.GRAPHS))
def test_small_graphs_are_one_segment_and_bit_exact(name: str) -> None:
    g0 = engine_graphs.GRAPHS[name]()
    g = plan_graph(g0, (8, 4))
    meta, _ = engine_meta(g)
    assert meta["host"] == {} and len(meta["segments"]) == 1
    assert model_mismatches(g, engine_graphs.inputs(g0, 3)) == []


def test_epilogue_folds_every_clamp() -> None:
    """QGemm -> Requantize -> Clamp -> Table | -> Table -> Clamp -> QAdd -> Clamp: the
    fusion group holds one table; the rest is one elementwise layer."""
    g = plan_graph(engine_graphs.epilogue_chain())
    _, recs = engine_meta(g)
    gemm, ew = sorted(recs.values(), key=lambda r: r["id"])
    assert (gemm["kind"], ew["kind"]) == ("gemm", "ew")
    req = gemm["epilogue"]["requant"]
    assert (req["qmin"], req["qmax"]) == (-100, 90)
    assert len(gemm["epilogue"]["table"]["values"]) == 1
    epi = ew["epilogue"]
    assert gemm["nodes"] == ["n_acc"] and ew["nodes"] == ["n_t2", "n_c2", "n_sum", "n_c3"]
    assert epi["table"]["clamp"] == [-60, 100] and len(epi["table"]["values"]) == 1
    assert (epi["qadd"]["qmin"], epi["qadd"]["qmax"]) == (-7, 77)
    assert epi["qadd"]["y_zero"] == -20  # the layer's value is the QAdd's second operand
    json.dumps(ew)
