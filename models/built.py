"""The value every model builder returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

OPSET = 17  # every model in the zoo is opset-17 ONNX


@dataclass(frozen=True)
class BuiltModel:
    """An exported model with one sample input and what the source framework computed for it.

    model: the ONNX model (opset 17, all weights inside).
    inputs: sample input keyed by graph input name (for digits models, the first test image).
    expected: the source framework's output for `inputs`, keyed by output name (None where
        there is no other framework, e.g. models written directly with onnx.helper).
    exporter: "dynamo", "torchscript" or "onnx.helper".
    metadata: extra facts to record, e.g. {"accuracy": 0.97} for trained models.
    """

    model: onnx.ModelProto
    inputs: dict[str, np.ndarray]
    expected: dict[str, np.ndarray] | None
    exporter: str
    metadata: dict[str, float] = field(default_factory=dict)
