"""The op table: every op's shape rule and reference semantics, in one place.

Each family module (`elementwise`, `nn`, `conv`, `pool`, `shape`, `tensor`, `resize`,
`reduce`, `quant`, `etch_ops`, `etch_int`, `etch_qfused`, `etch_qnorm`, `etch_lut`) exports
`OPS: dict[str, OpDef]`; this module merges them into `registry()`. Op names are ONNX's
where ONNX has the op; etch's own ops are `etch.<Name>`; other domains are `<domain>.<Name>`
(e.g. `com.microsoft.MatMulNBits`).
Helpers the families share (opset upgrades, axes, exact integer matmul) live in `common`.

An op's `run(attrs, *inputs) -> array | tuple[array, ...]` is its reference semantics; for
integer ops it is the integer semantics of docs/ARCHITECTURE.md ("Numerics"). Omitted optional
inputs arrive as None.
`infer(attrs, *input_specs) -> list[(shape, dtype)]` is the shape rule; when an op has none,
the shape rule is the reference run on zero-filled inputs (constants keep their data), which
is exact because etch only admits ops whose output shapes depend on shapes and constants.
`upgrade(node, opset, graph)` rewrites an older-opset form of the op into the canonical
(opset 21) form at import: e.g. `Squeeze(axes=[0])` -> `Squeeze(x, axes_const)`.

`run` implements each op as ONNX defines it up to `REVIEWED_OPSET`: every change of a listed
op in opsets 22..REVIEWED_OPSET was read and implemented. None needed an upgrade hook: each
added element types (bfloat16, float8/float6/float4, float8e8m0, int4/int2, ...) or an
attribute whose default is the old behaviour (Cast-24 `round_mode`, QuantizeLinear-23
`precision`, DequantizeLinear-23 `output_dtype`, Range-27 `stash_type`, SpaceToDepth-28
`mode`), or defined what older opsets left open or refused (Mod-28: fmod=0 on floats is
floor division), or reworded a rule that ONNX's reference and ONNX Runtime already applied at
older opsets (Cast-24: +-Inf saturates to the fnuz float8 types; the pools' ceil_mode
windows in opset 22). The importer refuses an op whose version at the model's opset is newer
than `REVIEWED_OPSET` until it is reviewed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Run = Callable[..., Any]

# The ONNX opset up to which every op's changes are implemented (see the docstring).
REVIEWED_OPSET = 28


@dataclass(frozen=True)
class OpDef:
    """One op: its name, reference semantics, optional explicit shape rule and upgrader."""

    name: str
    run: Run
    infer: Callable[..., list[tuple[tuple[int, ...], str]]] | None = None
    upgrade: Callable[..., None] | None = None
    # Inputs whose *values* (not only shapes) decide output shapes; must be constants.
    shape_inputs: tuple[int, ...] = ()
    # `run` takes `read=`, one flag per output of the node (False: nothing reads it, "" in
    # ONNX), and may leave an unread optional output out (MaxPool's Indices).
    reads_outputs: bool = False


def _merge() -> dict[str, OpDef]:
    from compiler.ops import (
        conv,
        elementwise,
        etch_int,
        etch_lut,
        etch_ops,
        etch_qfused,
        etch_qnorm,
        nn,
        pool,
        quant,
        reduce,
        resize,
        shape,
        tensor,
    )

    table: dict[str, OpDef] = {}
    families = (elementwise, nn, conv, pool, shape, tensor, resize, reduce, quant, etch_ops,
                etch_int, etch_qfused, etch_qnorm, etch_lut)
    for family in families:
        for name, opdef in family.OPS.items():
            assert name not in table, f"op {name} defined twice"
            table[name] = opdef
    return table


@functools.cache
def registry() -> dict[str, OpDef]:
    """The merged op table (built on first use; treat it as read-only)."""
    return _merge()


def get(op: str) -> OpDef | None:
    return registry().get(op)


def as_list(out: Any) -> list[np.ndarray]:
    """Normalise an op's return (array or tuple of arrays) to a list of arrays."""
    if isinstance(out, (tuple, list)):
        return [np.asarray(o) for o in out]
    return [np.asarray(out)]


# Named op sets, used by passes and backends (tinygrad's GroupOp idea).
UNARY_ELEMENTWISE = frozenset({
    "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Exp", "Log", "Sqrt", "Erf", "Neg", "Abs",
    "Reciprocal", "Clip", "HardSigmoid", "HardSwish", "Gelu", "Identity", "Cast", "Floor",
    "Ceil", "Round", "Sign", "Softplus", "Elu", "Selu", "Not",
})
BINARY_ELEMENTWISE = frozenset({
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Equal", "Less", "Greater",
    "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Mod", "PRelu",
})
ELEMENTWISE = UNARY_ELEMENTWISE | BINARY_ELEMENTWISE | {"Where", "Sum"}
ACTIVATIONS = frozenset({"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "HardSigmoid",
                         "HardSwish", "Gelu", "Erf", "Softplus", "Elu", "Selu"})
REDUCTION = frozenset({"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd",
                       "GlobalAveragePool", "GlobalMaxPool", "Softmax", "LogSoftmax"})
LINEAR = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
SHAPE_ONLY = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"})
