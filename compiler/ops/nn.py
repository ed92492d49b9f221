"""Neural-network ops: Gemm, MatMul, Conv, pooling, normalisation."""

from __future__ import annotations

import numpy as np

from compiler.ops import OpDef


def _matmul(attrs: dict, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.matmul(a, b)


def _gemm(attrs: dict, a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None) -> np.ndarray:
    a = a.T if attrs.get("transA", 0) else a
    b = b.T if attrs.get("transB", 0) else b
    y = attrs.get("alpha", 1.0) * (a @ b)
    if c is not None:
        y = y + attrs.get("beta", 1.0) * c
    return y.astype(a.dtype, copy=False)


OPS: dict[str, OpDef] = {
    "MatMul": OpDef("MatMul", _matmul),
    "Gemm": OpDef("Gemm", _gemm),
}
