"""On every default zoo model, the fusion pipeline keeps the reference outputs (rtol 1e-4),
drops the node count (a single-MatMul gemv model has nothing to fuse) and is idempotent.

Models come from `models.zoo.build` into the shared cache ($ETCH_CACHE or .cache/models), so
they are built once per machine, not once per test run."""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler import pipeline, reference
from compiler.onnx_import import import_model
from compiler.options import CompileOptions
from models import zoo
from passes.cleanup import Cleanup
from tests.passes.fuse_helpers import check_idempotent, check_same, fusion_passes

NAMES = zoo.select(None, include_large=False)


@pytest.fixture(scope="module")
def paths() -> dict[str, Path]:
    return zoo.build(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_fusion_keeps_zoo_outputs_and_drops_nodes(name: str, paths: dict[str, Path]) -> None:
    inputs, _ = zoo.load_sample(name)
    graph = import_model(str(paths[name]))
    unfused, _ = Cleanup().run(graph)
    fused, records = pipeline.run(graph, CompileOptions(target="ref"))
    assert [r.name for r in records][-1] == "fuse_epilogue"
    check_same(unfused, fused, inputs, rtol=1e-4)
    check_idempotent(fused, fusion_passes())
    if len(unfused.nodes) > 1:
        assert len(fused.nodes) < len(unfused.nodes)
        assert "etch.Fused" in fused.op_counts()
    assert reference.run(fused, inputs).keys() == set(graph.outputs)
