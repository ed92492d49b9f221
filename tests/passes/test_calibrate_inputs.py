"""Calibration input handling (`passes.calibrate.batches`): samples are rows along axis 0,
so the calibration set's size does not depend on the batch a model is deployed at."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.errors import EtchError
from compiler.ir import Graph
from compiler.onnx_import import import_model
from passes import calibrate
from passes.quantize_activations import QuantizeActivations
from passes.quantize_weights import QuantizeWeights


def _graph(batch: int, mix_rows: bool = False) -> Graph:
    """x [batch, 16] -> MatMul -> Relu (-> minus its mean over the batch, if mix_rows)."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 8))
                                .astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["r"])]
    if mix_rows:
        zero = numpy_helper.from_array(np.array([0], np.int64), "axis0")
        nodes += [helper.make_node("ReduceMean", ["r", "axis0"], ["m"]),
                  helper.make_node("Sub", ["r", "m"], ["y"])]
    else:
        nodes.append(helper.make_node("Identity", ["r"], ["y"]))
    inits = [w] + ([zero] if mix_rows else [])
    g = helper.make_graph(nodes, "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return import_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]))


def _rows(n: int) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((n, 16)).astype(np.float32)


def test_independent_rows_run_in_chunks_whatever_the_batch() -> None:
    runs = calibrate.batches(_graph(397), {"x": _rows(64)})
    assert [r["x"].shape for r in runs] == [(64, 16)]
    runs = calibrate.batches(_graph(1), {"x": _rows(130)})
    assert [len(r["x"]) for r in runs] == [64, 64, 2]
    np.testing.assert_array_equal(np.concatenate([r["x"] for r in runs]), _rows(130))


def test_one_deployed_batch_is_one_run_without_the_probe(monkeypatch) -> None:
    """Data of exactly the deployed batch is one run whether or not rows mix: the check
    (three reference runs of the whole model) is skipped."""
    def probe(*_: object) -> bool:
        raise AssertionError("the independence check ran")

    monkeypatch.setattr(calibrate, "_rows_independent", probe)
    for g in (_graph(1), _graph(4, mix_rows=True)):
        n = int(g.values["x"].shape[0])
        runs = calibrate.batches(g, {"x": _rows(n)})
        assert len(runs) == 1
        np.testing.assert_array_equal(runs[0]["x"], _rows(n))


def test_a_stack_of_whole_inputs_is_rows_too() -> None:
    stack = _rows(12).reshape(3, 4, 16)  # [S, *shape] at batch 4
    runs = calibrate.batches(_graph(4), {"x": stack})
    np.testing.assert_array_equal(np.concatenate([r["x"] for r in runs]), _rows(12))


def test_rows_that_mix_need_whole_batches() -> None:
    g = _graph(4, mix_rows=True)
    runs = calibrate.batches(g, {"x": _rows(8)})
    assert [r["x"].shape for r in runs] == [(4, 16), (4, 16)]
    with pytest.raises(EtchError, match="multiple of the model's batch 4"):
        calibrate.batches(g, {"x": _rows(6)})


def test_activation_ranges_match_across_batches() -> None:
    """Calibrating at batch 397 with 64 samples gives batch 1's ranges: the same scales."""
    calib = {"x": _rows(64)}
    scales = []
    for batch in (1, 397):
        g, _ = QuantizeWeights(bits=8, integer=True).run(_graph(batch))
        g, _ = QuantizeActivations(calib).run(g)
        scales.append(sorted(float(v.quant.scale) for v in g.values.values()
                             if v.quant is not None and v.dtype == "int8" and not v.is_const))
    assert scales[0] == scales[1] and scales[0]


def test_gptq_calibrates_at_any_batch() -> None:
    g, _ = QuantizeWeights(bits=4, method="gptq", calib={"x": _rows(64)}).run(_graph(397))
    assert "etch.Dequant" in g.op_counts()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_calibration_data_is_refused(bad: float) -> None:
    x = _rows(64)
    x[5, 3] = bad
    with pytest.raises(EtchError, match="must be finite"):
        calibrate.batches(_graph(1), {"x": x})


def test_wrong_sample_shape_names_the_forms() -> None:
    with pytest.raises(EtchError, match=r"\[R, 16\]"):
        calibrate.batches(_graph(397), {"x": _rows(64)[:, :15]})
