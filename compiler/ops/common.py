"""Helpers shared by the op family modules: opset upgrades, axes, exact integer matmul.

Not an op family (it has no `OPS`); the families import from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ml_dtypes
import numpy as np
from onnx import helper

from compiler.errors import EtchError
from compiler.ir import Graph, Node

# Above this bound a float64 dot product of integers may round (2^53).
_F64_EXACT = float(1 << 53)


def attr_to_input(node: Node, graph: Graph, attr: str, index: int,
                  dtype: Any = np.int64) -> None:
    """Move attribute `attr` of `node` to input slot `index` as a new constant.

    The older-opset -> opset-21 upgrade shared by Squeeze, Unsqueeze, Split, Slice, Clip,
    Pad, Reduce*, TopK and Dropout. Does nothing when the attribute is absent.
    """
    if attr not in node.attrs:
        return
    value = np.asarray(node.attrs.pop(attr), dtype)
    const = graph.add_const(f"{node.name}__{attr}", value)
    set_input(node, index, const.name)


def set_input(node: Node, index: int, name: str) -> None:
    """Set input slot `index` of `node`, padding skipped optional slots with ''."""
    while len(node.inputs) <= index:
        node.inputs.append("")
    node.inputs[index] = name


def input_dtype(node: Node, graph: Graph, index: int = 0) -> np.dtype:
    """The numpy dtype of input `index` of `node` (already in the graph)."""
    return np.dtype(graph.values[node.inputs[index]].dtype)


def axis_of(axis: int, rank: int) -> int:
    """Normalise a possibly negative axis; raise EtchError when out of range."""
    if not -rank <= axis < max(rank, 1):
        raise EtchError(f"axis {axis} is out of range for rank {rank}")
    return axis % max(rank, 1)


def axes_of(axes: Sequence[int] | np.ndarray, rank: int) -> tuple[int, ...]:
    """Normalise a list of axes (negative allowed) to sorted, non-negative, unique axes."""
    out = sorted({axis_of(int(a), rank) for a in np.asarray(axes).reshape(-1)})
    return tuple(out)


def check_broadcasts_to(what: str, shape: Sequence[int], target: Sequence[int]) -> None:
    """EtchError unless `shape` broadcasts to `target` without changing it (ONNX's
    unidirectional broadcasting: a bias, a slope, a scale)."""
    shape, target = tuple(shape), tuple(target)
    if len(shape) > len(target) or any(
            d not in (1, t) for d, t in zip(shape[::-1], target[::-1])):
        raise EtchError(f"{what} has shape {list(shape)}, which does not broadcast to "
                        f"{list(target)}")


def check_channel_param(what: str, shape: Sequence[int], channels: int) -> None:
    """EtchError unless a per-channel parameter (a conv bias, a BatchNormalization mean)
    holds exactly `channels` values, as [C]."""
    if tuple(shape) != (channels,):
        raise EtchError(f"{what} has shape {list(shape)}; expected [{channels}], one per "
                        f"channel")


def np_dtype(onnx_type: int) -> np.dtype:
    """The numpy dtype of an ONNX TensorProto element type (ml_dtypes for bf16/fp8/int4)."""
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(int(onnx_type)))
    except (KeyError, ValueError, TypeError) as e:
        raise EtchError(f"ONNX element type {onnx_type} is not supported") from e


def int_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact integer matmul (int64 result) of integer arrays.

    Uses float64 BLAS when every partial sum is below 2^53 (then it is exact and fast),
    else numpy's int64 matmul (exact, slow).
    """
    a64, b64 = a.astype(np.int64), b.astype(np.int64)
    k = a64.shape[-1] if a64.ndim else 1
    amax = float(np.abs(a64).max(initial=0))
    bmax = float(np.abs(b64).max(initial=0))
    if k * amax * bmax < _F64_EXACT:
        return np.rint(np.matmul(a64.astype(np.float64), b64.astype(np.float64))).astype(np.int64)
    return np.matmul(a64, b64)


_SMALL_INTS = frozenset({"int4", "uint4", "int2", "uint2"})


def is_integer(dtype: np.dtype) -> bool:
    """True for numpy integer dtypes and ml_dtypes' int4/uint4/int2/uint2."""
    return dtype.kind in "iu" or dtype.name in _SMALL_INTS


def int_range(dtype: np.dtype) -> tuple[int, int]:
    """(min, max) of an integer dtype, ml_dtypes' small integers included."""
    info = ml_dtypes.iinfo(dtype) if dtype.name in _SMALL_INTS else np.iinfo(dtype)
    return int(info.min), int(info.max)
