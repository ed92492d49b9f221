"""The accuracy goals on the digits test split (slow: 450 images per setting)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compiler import driver, reference
from models import accuracy, zoo
from models.digits import digits_inputs, digits_split
from tests.passes.test_quant_import import ort_static_qdq


def _logits(run: accuracy.Runner, name: str) -> np.ndarray:
    """[450, classes]: the logits of every image of the test split, one image a run."""
    x = digits_inputs(name, digits_split()[2])
    return np.stack([accuracy.logits_of(run({"input": x[i:i + 1]})).reshape(-1)
                     for i in range(len(x))])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_w4a8_within_a_point_of_float_and_w8a8_not_worse_than_ort(name: str,
                                                                   tmp_path: Path) -> None:
    """W4A8 within a point of float's accuracy; W8A8 damages float's answers no more than ORT's
    static W8A8 (per-channel QDQ, the same 64 calibration images) does: it keeps as many of
    the images float gets right, and its logits are as close to float's. (Raw accuracy is
    the wrong measure for the latter: on 450 images either model's rounding may flip an image
    float gets wrong into a right one -- ORT's does on digits_mlp, whose W8A8 scores one image
    above float -- which is luck, not calibration.)"""
    path = str(zoo.model_path(name))
    np.savez(tmp_path / "calib.npz", input=zoo.digits_inputs(name, zoo.digits_split()[0][:64]))

    def logits(**options: object) -> np.ndarray:
        graph = driver.compile(path, "ref", calib=str(tmp_path / "calib.npz"), **options).graph
        return _logits(lambda feeds: reference.run(graph, feeds), name)

    ort_qdq = tmp_path / "ort.onnx"
    ort_qdq.write_bytes(ort_static_qdq(name, tmp_path).SerializeToString())
    labels = digits_split()[3]
    float_, w4a8, w8a8 = logits(), logits(bits=4, int=True), logits(bits=8, int=True)
    ort = _logits(accuracy.ort_runner(ort_qdq), name)
    right = float_.argmax(1) == labels

    def accuracy_of(y: np.ndarray) -> float:
        return float(np.mean(y.argmax(1) == labels))

    def kept(y: np.ndarray) -> int:  # images float gets right that `y` still gets right
        return int(np.sum(y.argmax(1)[right] == labels[right]))

    def error(y: np.ndarray) -> float:
        return float(np.linalg.norm(y - float_) / np.linalg.norm(float_))

    assert accuracy_of(w4a8) >= accuracy_of(float_) - 0.01
    assert kept(w8a8) >= kept(ort), (kept(w8a8), kept(ort), int(right.sum()))
    assert error(w8a8) <= error(ort), (error(w8a8), error(ort))
