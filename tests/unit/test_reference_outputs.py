"""The reference leaves out an optional output that nothing reads (MaxPool's Indices), and
without keep drops each value once its last reader has run."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import reference
from compiler.ir import Node
from compiler.ops import pool


@pytest.mark.parametrize("outputs,indices", [(["y"], False), (["y", ""], False),
                                             (["y", "i"], True)])
def test_max_pool_computes_indices_only_when_read(monkeypatch: pytest.MonkeyPatch,
                                                  outputs: list[str], indices: bool) -> None:
    calls = []
    real = pool._indices
    monkeypatch.setattr(pool, "_indices", lambda *a: calls.append(1) or real(*a))
    x = np.random.default_rng(0).standard_normal((1, 2, 6, 6)).astype(np.float32)
    node = Node("MaxPool", ["x"], outputs, {"kernel_shape": [2, 2], "strides": [2, 2]}, "p")
    got = reference.run_node(node, [x])
    want = x.reshape(1, 2, 3, 2, 3, 2).max(axis=(3, 5))
    assert np.array_equal(got[0], want)
    assert bool(calls) == indices and len(got) == 1 + indices
    if indices:  # flat positions of the maxima in the input, N and C included
        assert np.array_equal(x.reshape(-1)[got[1]], want)


def _chain() -> tuple[object, dict[str, np.ndarray]]:
    """x -> a = Relu(x) -> b = Neg(a) -> y = Add(a, b), z = Exp(b) (two outputs)."""
    from onnx import TensorProto, helper

    from compiler.onnx_import import import_model

    mk = helper.make_node
    nodes = [mk("Relu", ["x"], ["a"]), mk("Neg", ["a"], ["b"]), mk("Add", ["a", "b"], ["y"]),
             mk("Exp", ["b"], ["z"])]
    value = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "chain", [value("x", TensorProto.FLOAT, [2, 3])],
                              [value("y", TensorProto.FLOAT, None),
                               value("z", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    return import_model(model), {"x": x}


def test_run_drops_values_after_their_last_reader() -> None:
    """Without keep, an intermediate is released once its last reader has run (so a large
    model's calibration holds only its live values); visit sees each value as it is made;
    outputs match keep=True's."""
    import weakref

    graph, feed = _chain()
    seen, alive = [], {}

    def visit(name: str, value: np.ndarray) -> None:
        seen.append(name)
        if name in ("a", "b"):
            alive[name] = weakref.ref(value)
        if name == "z":  # made after Add, the last reader of a
            assert alive["a"]() is None and alive["b"]() is not None

    out = reference.run(graph, feed, visit=visit)
    assert all(ref() is None for ref in alive.values())  # b after Exp
    full = reference.run(graph, feed, keep=True)
    assert {"x", "a", "b", "y", "z"} <= set(seen)
    assert set(out) == {"y", "z"}
    for name in ("y", "z"):
        assert np.array_equal(out[name], full[name])
    assert {"a", "b"} <= set(full)
