"""Elementwise ops: numpy broadcasting semantics, as ONNX defines them."""

from __future__ import annotations

import numpy as np

from compiler.ops import OpDef


def _relu(attrs: dict, x: np.ndarray) -> np.ndarray:
    return np.maximum(x, np.zeros((), x.dtype))


def _add(attrs: dict, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.add(a, b).astype(np.result_type(a, b), copy=False)


OPS: dict[str, OpDef] = {
    "Relu": OpDef("Relu", _relu),
    "Add": OpDef("Add", _add),
}
