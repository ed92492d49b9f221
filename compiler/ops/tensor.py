"""Data-movement ops: Concat, Split, Slice, Gather, GatherElements, Tile, Pad, Trilu,
CumSum, TopK, Einsum, OneHot.

Upgrades to the opset-21 form: Split's `split` (opset < 13), Slice's starts/ends/axes
(opset < 10), Pad's pads/value (opset < 11) and TopK's k (opset < 10) move from attributes
to inputs; an equal Split without `split` gets `num_outputs` (opset 18) from its outputs.
"""

from __future__ import annotations

import numpy as np

from compiler.errors import EtchError
from compiler.ir import Graph, Node
from compiler.ops import OpDef
from compiler.ops.common import attr_to_input, axis_of, input_dtype

Array = np.ndarray


def _ints(a: Array | None) -> list[int]:
    return [] if a is None else [int(v) for v in np.asarray(a).reshape(-1)]


def _concat(attrs: dict, *xs: Array) -> Array:
    return np.concatenate(xs, axis=axis_of(attrs["axis"], xs[0].ndim))


# ---- Split --------------------------------------------------------------------------------
def _split(attrs: dict, x: Array, split: Array | None = None) -> tuple[Array, ...]:
    axis = axis_of(attrs.get("axis", 0), x.ndim)
    dim = x.shape[axis]
    if split is not None:
        sizes = _ints(split)
    else:  # opset 18: chunks of ceil(dim / n), the last one smaller
        n = int(attrs["num_outputs"])
        chunk = -(-dim // n)
        sizes = [chunk] * (n - 1) + [dim - chunk * (n - 1)]
    if sum(sizes) != dim or min(sizes, default=0) < 0:
        raise EtchError(f"Split sizes {sizes} do not add up to the axis length {dim}")
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


def _upgrade_split(node: Node, opset: int, graph: Graph) -> None:
    if opset < 13:
        attr_to_input(node, graph, "split", 1)
    has_split = len(node.inputs) > 1 and node.inputs[1]
    if not has_split and "num_outputs" not in node.attrs:
        node.attrs["num_outputs"] = len(node.outputs)


# ---- Slice --------------------------------------------------------------------------------
def _slice_of(dim: int, start: int, end: int, step: int) -> slice:
    """The ONNX-clamped python slice of one axis."""
    if step == 0:
        raise EtchError("Slice step must not be 0")
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        return slice(min(max(start, 0), dim), min(max(end, 0), dim), step)
    if dim == 0:
        return slice(0, 0)
    start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    return slice(start, None if end < 0 else end, step)


def _slice(attrs: dict, x: Array, starts: Array, ends: Array, axes: Array | None = None,
           steps: Array | None = None) -> Array:
    starts_, ends_ = _ints(starts), _ints(ends)
    axes_ = [axis_of(a, x.ndim) for a in _ints(axes)] if axes is not None else \
        list(range(len(starts_)))
    steps_ = _ints(steps) if steps is not None else [1] * len(starts_)
    index = [slice(None)] * x.ndim
    for a, st, en, sp in zip(axes_, starts_, ends_, steps_):
        index[a] = _slice_of(x.shape[a], st, en, sp)
    return x[tuple(index)]


def _upgrade_slice(node: Node, opset: int, graph: Graph) -> None:
    if opset < 10:
        for k, name in enumerate(("starts", "ends", "axes"), start=1):
            attr_to_input(node, graph, name, k)


# ---- gathering ----------------------------------------------------------------------------
def _wrap(indices: Array, dim: int) -> Array:
    idx = np.asarray(indices).astype(np.int64)
    if np.any((idx < -dim) | (idx >= dim)):
        raise EtchError(f"gather index out of range for an axis of length {dim}")
    return np.where(idx < 0, idx + dim, idx)


def _gather(attrs: dict, x: Array, indices: Array) -> Array:
    axis = axis_of(attrs.get("axis", 0), x.ndim)
    return np.take(x, _wrap(indices, x.shape[axis]), axis=axis)


def _gather_elements(attrs: dict, x: Array, indices: Array) -> Array:
    axis = axis_of(attrs.get("axis", 0), x.ndim)
    return np.take_along_axis(x, _wrap(indices, x.shape[axis]), axis=axis)


def _one_hot(attrs: dict, indices: Array, depth: Array, values: Array) -> Array:
    d = int(np.asarray(depth).reshape(-1)[0])
    idx = np.asarray(indices).astype(np.int64)
    idx = np.where(idx < 0, idx + d, idx)
    hot = idx[..., None] == np.arange(d)
    axis = axis_of(attrs.get("axis", -1), idx.ndim + 1)
    return np.moveaxis(np.where(hot, values[1], values[0]), -1, axis).astype(values.dtype)


def _tile(attrs: dict, x: Array, repeats: Array) -> Array:
    return np.tile(x, _ints(repeats))


# ---- Pad ----------------------------------------------------------------------------------
def _pad(attrs: dict, x: Array, pads: Array, value: Array | None = None,
         axes: Array | None = None) -> Array:
    axes_ = [axis_of(a, x.ndim) for a in _ints(axes)] if axes is not None else range(x.ndim)
    p, k = _ints(pads), len(axes_)
    width = [(0, 0)] * x.ndim
    for i, a in enumerate(axes_):
        width[a] = (p[i], p[i + k])
    # Negative pads crop.
    x = x[tuple(slice(max(-b, 0), x.shape[a] + e if e < 0 else None)
                for a, (b, e) in enumerate(width))]
    width = [(max(b, 0), max(e, 0)) for b, e in width]
    mode = attrs.get("mode", "constant")
    if mode == "constant":
        fill = 0 if value is None else np.asarray(value).reshape(-1)[0]
        return np.pad(x, width, constant_values=np.asarray(fill, x.dtype))
    if mode not in ("reflect", "edge", "wrap"):
        raise EtchError(f"Pad mode {mode!r} is not supported")
    return np.pad(x, width, mode=mode)


def _upgrade_pad(node: Node, opset: int, graph: Graph) -> None:
    if opset < 11:
        attr_to_input(node, graph, "pads", 1)
        attr_to_input(node, graph, "value", 2, input_dtype(node, graph))


# ---- misc ---------------------------------------------------------------------------------
def _trilu(attrs: dict, x: Array, k: Array | None = None) -> Array:
    shift = 0 if k is None else int(np.asarray(k).reshape(-1)[0])
    return np.triu(x, shift) if attrs.get("upper", 1) else np.tril(x, shift)


def _cumsum(attrs: dict, x: Array, axis: Array) -> Array:
    a = axis_of(int(np.asarray(axis).reshape(-1)[0]), x.ndim)
    y = np.flip(x, a) if attrs.get("reverse", 0) else x
    c = np.cumsum(y, axis=a, dtype=x.dtype)
    if attrs.get("exclusive", 0):
        c = np.concatenate([np.zeros_like(np.take(c, [0], axis=a)),
                            np.take(c, np.arange(c.shape[a] - 1), axis=a)], axis=a)
    return np.flip(c, a) if attrs.get("reverse", 0) else c


def _topk(attrs: dict, x: Array, k: Array) -> tuple[Array, Array]:
    """Values and int64 indices of the k largest (smallest) along axis; ties keep the lower
    index first, as ONNX specifies."""
    count = int(np.asarray(k).reshape(-1)[0])
    axis = axis_of(attrs.get("axis", -1), x.ndim)
    if attrs.get("largest", 1):
        order = np.flip(np.argsort(np.flip(x, axis), axis=axis, kind="stable"), axis)
        order = x.shape[axis] - 1 - order
    else:
        order = np.argsort(x, axis=axis, kind="stable")
    idx = np.take(order, np.arange(count), axis=axis)
    return np.take_along_axis(x, idx, axis=axis), idx.astype(np.int64)


def _upgrade_topk(node: Node, opset: int, graph: Graph) -> None:
    if opset < 10:
        node.attrs["k"] = [node.attrs["k"]]
        attr_to_input(node, graph, "k", 1)


def _einsum(attrs: dict, *xs: Array) -> Array:
    dtype = xs[0].dtype
    if dtype.kind == "V":  # bfloat16: numpy's einsum needs a native dtype
        xs = tuple(x.astype(np.float32) for x in xs)
    return np.einsum(attrs["equation"].replace(" ", ""), *xs).astype(dtype, copy=False)


OPS: dict[str, OpDef] = {
    "Concat": OpDef("Concat", _concat),
    "Split": OpDef("Split", _split, upgrade=_upgrade_split, shape_inputs=(1,)),
    "Slice": OpDef("Slice", _slice, upgrade=_upgrade_slice, shape_inputs=(1, 2, 3, 4)),
    "Gather": OpDef("Gather", _gather),
    "GatherElements": OpDef("GatherElements", _gather_elements),
    "OneHot": OpDef("OneHot", _one_hot, shape_inputs=(1,)),
    "Tile": OpDef("Tile", _tile, shape_inputs=(1,)),
    "Pad": OpDef("Pad", _pad, upgrade=_upgrade_pad, shape_inputs=(1, 3)),
    "Trilu": OpDef("Trilu", _trilu),
    "CumSum": OpDef("CumSum", _cumsum),
    "TopK": OpDef("TopK", _topk, upgrade=_upgrade_topk, shape_inputs=(1,)),
    "Einsum": OpDef("Einsum", _einsum),
}
