"""The reference leaves out an optional output that nothing reads: MaxPool's Indices."""

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
