"""Reductions: Reduce{Mean,Sum,Max,Min,Prod,L1,L2,SumSquare,LogSum,LogSumExp}, ArgMax/ArgMin.

Canonical form (opset 18): `axes` is an optional second input (a `shape_input`), with
`keepdims` and `noop_with_empty_axes`; older opsets' `axes` attribute becomes that input at
import. Results keep the input dtype (integer means truncate, as ONNX Runtime does). An
empty reduction gives the identity of the reduction (-inf for Max, +inf for Min, 0, 1).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from compiler.ir import Graph, Node
from compiler.ops import OpDef
from compiler.ops.common import attr_to_input, axes_of, axis_of, int_range, is_integer

Array = np.ndarray
Axes = tuple[int, ...]


def _extreme(dtype: np.dtype, high: bool) -> float | int | bool:
    """The identity of Min (high) or Max over `dtype`."""
    if dtype.kind == "b":
        return high
    if is_integer(dtype):
        lo, hi = int_range(dtype)
        return hi if high else lo
    return np.inf if high else -np.inf


def _sum(x: Array, axes: Axes, keep: bool) -> Array:
    return np.sum(x, axis=axes, dtype=x.dtype, keepdims=keep)


def _mean(x: Array, axes: Axes, keep: bool) -> Array:
    if x.dtype.kind in "iu":
        return np.trunc(np.mean(x, axis=axes, keepdims=keep))
    return np.mean(x, axis=axes, dtype=x.dtype, keepdims=keep)


def _max(x: Array, axes: Axes, keep: bool) -> Array:
    return np.max(x, axis=axes, keepdims=keep, initial=_extreme(x.dtype, False))


def _min(x: Array, axes: Axes, keep: bool) -> Array:
    return np.min(x, axis=axes, keepdims=keep, initial=_extreme(x.dtype, True))


def _log_sum_exp(x: Array, axes: Axes, keep: bool) -> Array:
    m = np.max(x, axis=axes, keepdims=True, initial=-np.inf)
    m = np.where(np.isfinite(m), m, 0)
    s = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
    return s if keep else np.squeeze(s, axis=axes)


REDUCERS: dict[str, Callable[[Array, Axes, bool], Array]] = {
    "ReduceSum": _sum,
    "ReduceMean": _mean,
    "ReduceMax": _max,
    "ReduceMin": _min,
    "ReduceProd": lambda x, a, k: np.prod(x, axis=a, dtype=x.dtype, keepdims=k),
    "ReduceL1": lambda x, a, k: _sum(np.abs(x), a, k),
    "ReduceL2": lambda x, a, k: np.sqrt(_sum(np.square(x), a, k)),
    "ReduceSumSquare": lambda x, a, k: _sum(np.square(x), a, k),
    "ReduceLogSum": lambda x, a, k: np.log(_sum(x, a, k)),
    "ReduceLogSumExp": _log_sum_exp,
}


def _reduce(fn: Callable[[Array, Axes, bool], Array]) -> Callable[..., Array]:
    def run(attrs: dict, x: Array, axes: Array | None = None) -> Array:
        if axes is None or np.asarray(axes).size == 0:
            if attrs.get("noop_with_empty_axes", 0):
                return x
            axes_ = tuple(range(x.ndim))
        else:
            axes_ = axes_of(axes, x.ndim)
        return np.asarray(fn(x, axes_, bool(attrs.get("keepdims", 1)))).astype(x.dtype)
    return run


def _upgrade_reduce(node: Node, opset: int, graph: Graph) -> None:
    """The `axes` attribute (ReduceSum < 13, the others < 18) becomes input 1."""
    attr_to_input(node, graph, "axes", 1)


def _arg(pick: Callable[..., Array]) -> Callable[..., Array]:
    def run(attrs: dict, x: Array) -> Array:
        axis = axis_of(attrs.get("axis", 0), x.ndim)
        if attrs.get("select_last_index", 0):
            idx = x.shape[axis] - 1 - pick(np.flip(x, axis), axis=axis)
        else:
            idx = pick(x, axis=axis)
        idx = np.asarray(idx, np.int64)
        return np.expand_dims(idx, axis) if attrs.get("keepdims", 1) else idx
    return run


OPS: dict[str, OpDef] = {
    name: OpDef(name, _reduce(fn), upgrade=_upgrade_reduce, shape_inputs=(1,))
    for name, fn in REDUCERS.items()
}
OPS["ArgMax"] = OpDef("ArgMax", _arg(np.argmax))
OPS["ArgMin"] = OpDef("ArgMin", _arg(np.argmin))
