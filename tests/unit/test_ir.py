"""The IR's own invariants: verify, toposort, prune, copy, text form."""

from __future__ import annotations

import numpy as np
import pytest

from compiler.errors import EtchError
from compiler.ir import Graph, Node, Value
from compiler.reference import quantize_multiplier, requantize


def _chain() -> Graph:
    g = Graph("t")
    g.add_value(Value("x", (2, 3)))
    g.inputs = ["x"]
    w = g.add_const("w", np.ones((3, 4), np.float32))
    for name in ("h", "y", "dead"):
        g.add_value(Value(name, (2, 4)))
    g.add_node(Node("MatMul", ["x", w.name], ["h"]))
    g.add_node(Node("Relu", ["h"], ["y"]))
    g.add_node(Node("Relu", ["h"], ["dead"]))
    g.outputs = ["y"]
    return g


def test_verify_accepts_and_rejects() -> None:
    g = _chain()
    g.verify()
    g.nodes.reverse()
    with pytest.raises(EtchError, match="before it is defined"):
        g.verify()
    g.toposort()
    g.verify()


def test_prune_drops_dead_nodes_and_values() -> None:
    g = _chain()
    assert g.prune() == 1
    assert "dead" not in g.values and len(g.nodes) == 2


def test_copy_is_independent() -> None:
    g = _chain()
    c = g.copy()
    c.nodes[0].inputs[0] = "zzz"
    assert g.nodes[0].inputs[0] == "x"


def test_text_form_names_everything() -> None:
    text = str(_chain())
    assert "MatMul(%x, %w)" in text and "float32[2x4]" in text


@pytest.mark.parametrize("real", [1e-9, 0.0003, 0.25, 0.5, 0.999999, 1.0, 3.7])
def test_quantize_multiplier_range(real: float) -> None:
    m0, shift = quantize_multiplier(real)
    assert (1 << 30) <= int(m0) < (1 << 31)
    assert abs(int(m0) * 2.0 ** -int(shift) - real) <= real * 2 ** -30


def test_requantize_rounds_half_away_and_saturates() -> None:
    m0, shift = quantize_multiplier(0.5)
    acc = np.array([-3, -1, 1, 3, 1000, -1000])
    y = requantize(acc, m0, shift, np.int64(0), -128, 127)
    np.testing.assert_array_equal(y, [-2, -1, 1, 2, 127, -128])
