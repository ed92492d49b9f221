"""Single-MatMul models with LLM layer shapes, written directly with onnx.helper.

`input [B, K] @ weight [K, N] -> output [B, N]`, float32, weight ~ N(0, 0.02) from a seed that
depends only on (K, N), so the batch-1 and batch-8 models of a shape share their weights.
Written without torch because the largest weights are 180 MB.
"""

from __future__ import annotations

import numpy as np

from models.built import OPSET, BuiltModel

SHAPES: tuple[tuple[int, int], ...] = ((1024, 1024), (4096, 4096), (4096, 11008), (11008, 4096))
BATCHES: tuple[int, ...] = (1, 8)
SMALL_SHAPES: frozenset[tuple[int, int]] = frozenset({(1024, 1024)})
WEIGHT_STD = 0.02
IR_VERSION = 8  # the IR version that introduced opset 17


def gemv_name(k: int, n: int, batch: int) -> str:
    """Registry name of a shape, e.g. gemv_k4096_n4096_b1."""
    return f"gemv_k{k}_n{n}_b{batch}"


def gemv_weight(k: int, n: int) -> np.ndarray:
    """The seeded [k, n] float32 weight, N(0, WEIGHT_STD)."""
    rng = np.random.default_rng([k, n])
    weight = rng.standard_normal((k, n), dtype=np.float32)
    weight *= np.float32(WEIGHT_STD)
    return weight


def build_gemv(k: int, n: int, batch: int) -> BuiltModel:
    """The MatMul model for (k, n, batch) and a seeded N(0, 1) sample input."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "weight"], ["output"], name="matmul")],
        gemv_name(k, n, batch),
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, k])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, n])],
        initializer=[numpy_helper.from_array(gemv_weight(k, n), "weight")],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="etch.models",
        ir_version=IR_VERSION,
    )
    onnx.checker.check_model(model)
    sample = np.random.default_rng([k, n, batch]).standard_normal((batch, k), dtype=np.float32)
    return BuiltModel(model, {"input": sample}, None, "onnx.helper")
