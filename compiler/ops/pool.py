"""Pooling: MaxPool (with Indices), AveragePool, GlobalAveragePool, GlobalMaxPool, LpPool.

Windows follow `conv.window` (pads, auto_pad, strides, dilations, ceil_mode). AveragePool
divides by the number of window elements inside the input (count_include_pad=0) or inside
the padded input (count_include_pad=1); elements of a ceil_mode window past the end
padding are never counted, as in ONNX Runtime.
"""

from __future__ import annotations

import numpy as np

from compiler.ir import Value
from compiler.ops import OpDef
from compiler.ops.conv import Window, gather_windows, pad_input, window

Array = np.ndarray
Spec = list[tuple[tuple[int, ...], str]]


def _window(attrs: dict, shape: tuple[int, ...]) -> Window:
    return window(attrs, shape[2:], tuple(attrs["kernel_shape"]), bool(attrs.get("ceil_mode", 0)))


def _flat_windows(x: Array, w: Window, fill: float) -> Array:
    """[N, C, *out, prod(kernel)]: the window elements, padding filled with `fill`."""
    cols = gather_windows(pad_input(x, w, fill), w)
    k = len(w.kernel)
    cols = cols.reshape(x.shape[:2] + (-1,) + w.out)
    return np.moveaxis(cols, 2, 2 + k)


def _lowest(dtype: np.dtype) -> float:
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


def _max_pool(attrs: dict, x: Array, read: tuple[bool, ...] = (True, True)
              ) -> tuple[Array, ...]:
    """(Y, Indices); Y alone where the node's Indices output is not read (`read`)."""
    w = _window(attrs, x.shape)
    cols = _flat_windows(x, w, _lowest(x.dtype))
    if len(read) < 2 or not read[1]:
        return (cols.max(axis=-1),)
    arg = cols.argmax(axis=-1)
    return cols.max(axis=-1), _indices(attrs, x.shape, w, arg)


def _indices(attrs: dict, shape: tuple[int, ...], w: Window, arg: Array) -> Array:
    """MaxPool's Indices output: flat positions in the unpadded input (row-major, or
    column-major over the spatial axes with storage_order=1), N and C included."""
    k_idx = np.unravel_index(arg, w.kernel)
    spatial = shape[2:]
    coords = []
    for ax, (ki, s, d, b) in enumerate(zip(k_idx, w.strides, w.dilations, w.begin)):
        o = np.arange(w.out[ax]).reshape([-1 if i == ax else 1 for i in range(len(w.out))])
        coords.append(o * s - b + ki * d)
    order = "F" if attrs.get("storage_order", 0) else "C"
    flat = np.ravel_multi_index(tuple(coords), spatial, mode="clip", order=order)
    nc = np.arange(shape[0] * shape[1]).reshape(shape[0], shape[1], *[1] * len(spatial))
    return (flat + nc * int(np.prod(spatial))).astype(np.int64)


def _avg_pool(attrs: dict, x: Array) -> Array:
    w = _window(attrs, x.shape)
    total = _flat_windows(x, w, 0).sum(axis=-1)
    inside = np.ones((1, 1) + x.shape[2:], x.dtype)
    if attrs.get("count_include_pad", 0):  # count the pads but not the ceil_mode overhang
        inside = np.pad(inside, [(0, 0), (0, 0)] + list(zip(w.begin, w.end)), constant_values=1)
        w = Window(w.kernel, w.strides, w.dilations, (0,) * len(w.out), (0,) * len(w.out), w.out)
    count = _flat_windows(inside, w, 0).sum(axis=-1)
    return (total / count).astype(x.dtype)


def _lp_pool(attrs: dict, x: Array) -> Array:
    p = attrs.get("p", 2)
    w = _window(attrs, x.shape)
    total = (np.abs(_flat_windows(x, w, 0)) ** p).sum(axis=-1)
    return (total ** (1.0 / p)).astype(x.dtype)


def _infer_pool(attrs: dict, x: Value) -> Spec:
    return [((x.shape[0], x.shape[1]) + _window(attrs, x.shape).out, x.dtype)]


def _infer_max_pool(attrs: dict, x: Value) -> Spec:
    (shape, dtype), = _infer_pool(attrs, x)
    return [(shape, dtype), (shape, "int64")]


def _global_avg(attrs: dict, x: Array) -> Array:
    return x.mean(axis=tuple(range(2, x.ndim)), keepdims=True).astype(x.dtype)


def _global_max(attrs: dict, x: Array) -> Array:
    return x.max(axis=tuple(range(2, x.ndim)), keepdims=True)


OPS: dict[str, OpDef] = {
    "MaxPool": OpDef("MaxPool", _max_pool, infer=_infer_max_pool, reads_outputs=True),
    "AveragePool": OpDef("AveragePool", _avg_pool, infer=_infer_pool),
    "LpPool": OpDef("LpPool", _lp_pool, infer=_infer_pool),
    "GlobalAveragePool": OpDef("GlobalAveragePool", _global_avg),
    "GlobalMaxPool": OpDef("GlobalMaxPool", _global_max),
}
