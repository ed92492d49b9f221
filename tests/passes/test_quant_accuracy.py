"""The accuracy goals on the digits test split (slow: 450 images per setting)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compiler import driver, reference
from models import accuracy, zoo
from tests.passes.test_quant_import import ort_static_qdq


@pytest.mark.slow
@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_w4a8_within_a_point_of_float_and_w8a8_not_worse_than_ort(name: str,
                                                                   tmp_path: Path) -> None:
    path = str(zoo.model_path(name))
    np.savez(tmp_path / "calib.npz", input=zoo.digits_inputs(name, zoo.digits_split()[0][:64]))

    def acc(**options: object) -> float:
        graph = driver.compile(path, "ref", calib=str(tmp_path / "calib.npz"), **options).graph
        return accuracy.evaluate(lambda feeds: reference.run(graph, feeds), name)

    ort_qdq = tmp_path / "ort.onnx"
    ort_qdq.write_bytes(ort_static_qdq(name, tmp_path).SerializeToString())
    float_acc = acc()
    assert acc(bits=4, int=True) >= float_acc - 0.01
    assert acc(bits=8, int=True) >= accuracy.evaluate(accuracy.ort_runner(ort_qdq), name)
