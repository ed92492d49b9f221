"""The rule driver keeps the reasons its checks give, for `etch compile --explain`."""

from __future__ import annotations

import json

from compiler.ir import Graph, Node, Value
from passes.base import DECLINED, Rule, apply_rules, explain_declined


def _graph() -> Graph:
    g = Graph("g")
    for name in ("x", "a", "b"):
        g.add_value(Value(name, (2,)))
    g.inputs, g.outputs = ["x"], ["b"]
    g.add_node(Node("Relu", ["x"], ["a"], name="first"))
    g.add_node(Node("Relu", ["a"], ["b"], name="second"))
    return g


def test_declined_checks_are_kept_at_the_fixed_point() -> None:
    g = _graph()
    fired = []
    rule = Rule("drop_second_relu", lambda g, n: n.op == "Relu",
                lambda g, n: fired.append(n.name) or setattr(n, "op", "Identity"),
                lambda g, n: None if n.name == "second" else "the first Relu stays")
    assert apply_rules(g, [rule])
    assert fired == ["second"]
    assert json.loads(g.metadata[DECLINED]) == [
        {"rule": "drop_second_relu", "node": "first", "reason": "the first Relu stays"}]
    assert "drop_second_relu at first: the first Relu stays" in explain_declined(g.metadata)
    apply_rules(g, [rule])  # running again adds nothing twice
    assert len(json.loads(g.metadata[DECLINED])) == 1


def test_nothing_declined_says_nothing() -> None:
    g = _graph()
    assert not apply_rules(g, [Rule("never", lambda g, n: False, lambda g, n: None)])
    assert DECLINED not in g.metadata and explain_declined(g.metadata) == ""
