"""Shape ops: Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Expand, Shape, Size,
ConstantOfShape, Range, DepthToSpace, SpaceToDepth.

Inputs that decide the output shape (Reshape's shape, Expand's shape, the axes of
Squeeze/Unsqueeze, ConstantOfShape's input, Range's arguments) are `shape_inputs`: they
must be constants after import. Squeeze/Unsqueeze opset < 13 `axes` attributes become
inputs at import.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from compiler.errors import EtchError
from compiler.ir import Graph, Node
from compiler.ops import OpDef
from compiler.ops.common import attr_to_input, axes_of, np_dtype

Array = np.ndarray


def _reshape(attrs: dict, x: Array, shape: Array) -> Array:
    dims = [int(d) for d in np.asarray(shape).reshape(-1)]
    if not attrs.get("allowzero", 0):  # 0 copies the input dim
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


def _flatten(attrs: dict, x: Array) -> Array:
    axis = attrs.get("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis  # -r..r
    rows = int(np.prod(x.shape[:axis], dtype=np.int64))
    return x.reshape(rows, int(np.prod(x.shape[axis:], dtype=np.int64)))


def _squeeze(attrs: dict, x: Array, axes: Array | None = None) -> Array:
    if axes is None:
        return np.squeeze(x)
    return np.squeeze(x, axis=axes_of(axes, x.ndim))


def _unsqueeze(attrs: dict, x: Array, axes: Array) -> Array:
    rank = x.ndim + np.asarray(axes).size
    return np.expand_dims(x, axes_of(axes, rank))


def _upgrade_axes(node: Node, opset: int, graph: Graph) -> None:
    if opset < 13:  # Squeeze/Unsqueeze axes were an attribute
        attr_to_input(node, graph, "axes", 1)


def _transpose(attrs: dict, x: Array) -> Array:
    perm = attrs.get("perm")
    return np.transpose(x, None if perm is None else [int(p) for p in perm])


def _expand(attrs: dict, x: Array, shape: Array) -> Array:
    target = np.broadcast_shapes(x.shape, tuple(int(d) for d in np.asarray(shape).reshape(-1)))
    return np.broadcast_to(x, target).copy()


def _shape(attrs: dict, x: Array) -> Array:
    return np.array(x.shape[attrs.get("start", 0):attrs.get("end")], np.int64)


def _size(attrs: dict, x: Array) -> Array:
    return np.array(x.size, np.int64)


def _constant_of_shape(attrs: dict, shape: Array) -> Array:
    value = np.asarray(attrs.get("value", np.zeros(1, np.float32)))
    dims = tuple(int(d) for d in np.asarray(shape).reshape(-1))
    return np.full(dims, value.reshape(-1)[0], value.dtype)


def _range(attrs: dict, start: Array, limit: Array, delta: Array) -> Array:
    """start + i * delta for i < ceil((limit - start) / delta), in the input type; float16
    and bfloat16 compute in `stash_type` (opset 27: float or double, float by default, as
    ORT did before), then round to the input type."""
    dtype = work = start.dtype
    if dtype.name in ("float16", "bfloat16"):
        stash = int(attrs.get("stash_type", TensorProto.FLOAT))
        if stash not in (TensorProto.FLOAT, TensorProto.DOUBLE):
            raise EtchError(f"Range stash_type {stash}: etch computes float16/bfloat16 "
                            f"ranges in float (1) or double (11)")
        work = np_dtype(stash)
    s, end, d = (np.asarray(a).astype(work) for a in (start, limit, delta))
    count = max(int(np.ceil((end - s) / d)), 0)
    return (s + np.arange(count).astype(work) * d).astype(dtype)


def _depth_to_space(attrs: dict, x: Array) -> Array:
    bs = int(attrs["blocksize"])
    n, c, h, w = x.shape
    if attrs.get("mode", "DCR") == "CRD":
        y = x.reshape(n, c // bs**2, bs, bs, h, w).transpose(0, 1, 4, 2, 5, 3)
    else:
        y = x.reshape(n, bs, bs, c // bs**2, h, w).transpose(0, 3, 4, 1, 5, 2)
    return y.reshape(n, c // bs**2, h * bs, w * bs)


def _space_to_depth(attrs: dict, x: Array) -> Array:
    bs = int(attrs["blocksize"])
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // bs, bs, w // bs, bs)
    y = y.transpose((0, 1, 3, 5, 2, 4) if attrs.get("mode", "DCR") == "CRD" else (0, 3, 5, 1, 2, 4))
    return y.reshape(n, c * bs * bs, h // bs, w // bs)


OPS: dict[str, OpDef] = {
    "Reshape": OpDef("Reshape", _reshape, shape_inputs=(1,)),
    "Flatten": OpDef("Flatten", _flatten),
    "Squeeze": OpDef("Squeeze", _squeeze, upgrade=_upgrade_axes, shape_inputs=(1,)),
    "Unsqueeze": OpDef("Unsqueeze", _unsqueeze, upgrade=_upgrade_axes, shape_inputs=(1,)),
    "Transpose": OpDef("Transpose", _transpose),
    "Expand": OpDef("Expand", _expand, shape_inputs=(1,)),
    "Shape": OpDef("Shape", _shape),
    "Size": OpDef("Size", _size),
    "ConstantOfShape": OpDef("ConstantOfShape", _constant_of_shape, shape_inputs=(0,)),
    "Range": OpDef("Range", _range, shape_inputs=(0, 1, 2)),
    "DepthToSpace": OpDef("DepthToSpace", _depth_to_space),
    "SpaceToDepth": OpDef("SpaceToDepth", _space_to_depth),
}
