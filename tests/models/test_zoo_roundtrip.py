"""Every zoo model: the reference interpreter matches ONNX Runtime, and import -> export
gives a model ONNX Runtime runs to the same bits as the original."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import onnx_export, onnx_import, reference
from models import zoo
from tests.golden import assert_bitexact, assert_close, run_ort

DEFAULT = [name for name, spec in zoo.MODELS.items() if not spec.large]


@pytest.mark.parametrize("name", DEFAULT)
def test_reference_matches_ort_and_round_trip_is_exact(name: str) -> None:
    path = zoo.model_path(name)
    sample = dict(np.load(zoo.cache_file(name, "inputs.npz")))
    expected = run_ort(onnx_import.load_model(str(path)), sample)
    graph = onnx_import.import_model(str(path))
    assert_close(reference.run(graph, sample), expected, rtol=1e-4, atol=1e-5)
    assert_bitexact(run_ort(onnx_export.export_model(graph), sample), expected)
