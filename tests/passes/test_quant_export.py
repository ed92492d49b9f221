"""QDQ export of weight-only graphs, and the quantisation reports in words."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import qdq_export, reference
from passes.quant_report import explain
from passes.quantize_activations import QuantizeActivations
from passes.quantize_weights import QuantizeWeights
from passes.rearrange_channels import RearrangeChannels
from tests.passes.quant_helpers import calib_for, folded, inputs_for, ort_session


@pytest.mark.parametrize("kwargs", [{"bits": 4}, {"bits": 4, "group_size": 16},
                                    {"bits": 3, "per": "ic"}, {"bits": 4, "symmetric": False}])
def test_weight_only_graph_runs_in_ort(kwargs: dict) -> None:
    g = folded("digits_cnn")
    q, _ = QuantizeWeights(**kwargs).run(g)
    model = qdq_export.export_qdq(q)
    assert not [n for n in model.graph.node if n.domain == "etch"]
    sess = ort_session(model)
    for x in inputs_for("digits_cnn", g, 4, offset=-1):
        feed = {"input": x[None]}
        np.testing.assert_allclose(sess.run(None, feed)[0], reference.run(q, feed)["logits"],
                                   rtol=1e-4, atol=1e-4)


def test_explain_names_layers_groups_and_placement() -> None:
    g = folded("digits_mlp")
    r, _ = RearrangeChannels(group_size=16).run(g)
    w, _ = QuantizeWeights(bits=8, integer=True).run(r)
    i, _ = QuantizeActivations(calib_for("digits_mlp", g, 16)).run(w)
    text = explain(i.metadata)
    assert "node_linear_1" in text and "s8" in text
    assert "rearranged 2 channel space(s)" in text and "groups [" in text
    assert "accelerator: etch.QGemm x3, etch.Requantize x3" in text
    assert explain({}) == ""
