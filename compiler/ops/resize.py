"""Resize (and the legacy Upsample): nearest and (bi/tri)linear, as ONNX defines them.

Interpolation is separable: one pass per resized axis (innermost first), each output
position a weighted sum of input taps: nearest (one tap), linear (two taps, source clamped
to the input, as ONNX Runtime does) and cubic (four taps, Keys' kernel with cubic_coeff_a,
exclude_outside). All coordinate transformations of opset 21 are supported, with `axes`,
keep_aspect_ratio_policy and tf_crop_and_resize's roi/extrapolation_value; antialias is
not (EtchError).
Upgrades: opset-10 Resize and Upsample (opset 9, scales input) become the opset-21 Resize
with `asymmetric` coordinates and `floor` rounding, their old semantics.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from compiler.errors import EtchError
from compiler.ir import Graph, Node
from compiler.ops import OpDef
from compiler.ops.common import axis_of

Array = np.ndarray

# x: output coordinates; s: scale; n_in: input length; out: the output length as a float
# (input length * scale: ONNX's `output_width`). align_corners divides by the integer output
# length (`length_resized`), as the spec text and ONNX Runtime do.
_COORDS: dict[str, Callable[..., Array]] = {
    "half_pixel": lambda x, s, n_in, out: (x + 0.5) / s - 0.5,
    "pytorch_half_pixel": lambda x, s, n_in, out: (x + 0.5) / s - 0.5 if out > 1 else 0 * x,
    "align_corners": lambda x, s, n_in, out:
        x * (n_in - 1) / (len(x) - 1) if len(x) > 1 else 0 * x,
    "asymmetric": lambda x, s, n_in, out: x / s,
    "tf_half_pixel_for_nn": lambda x, s, n_in, out: (x + 0.5) / s,
    "half_pixel_symmetric": lambda x, s, n_in, out:
        n_in / 2 * (1 - len(x) / out) + (x + 0.5) / s - 0.5,
}

_ROUND: dict[str, Callable[[Array], Array]] = {
    "round_prefer_floor": lambda c: np.where(c - np.floor(c) == 0.5, np.floor(c), np.round(c)),
    "round_prefer_ceil": lambda c: np.where(c - np.floor(c) == 0.5, np.ceil(c), np.round(c)),
    "floor": np.floor,
    "ceil": np.ceil,
}


def _targets(attrs: dict, shape: tuple[int, ...], scales: Array | None,
             sizes: Array | None) -> tuple[list[int], list[float]]:
    """Per-axis output sizes and scales (1 for axes not resized)."""
    axes = [axis_of(a, len(shape)) for a in attrs.get("axes") or range(len(shape))]
    out, sc = list(shape), [1.0] * len(shape)
    if sizes is not None and np.asarray(sizes).size:
        want = [int(v) for v in np.asarray(sizes).reshape(-1)]
        ratios = [w / shape[a] for a, w in zip(axes, want)]
        policy = attrs.get("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            r = min(ratios) if policy == "not_larger" else max(ratios)
            ratios, want = [r] * len(axes), [math.floor(r * shape[a] + 0.5) for a in axes]
        for a, w, r in zip(axes, want, ratios):
            out[a], sc[a] = w, r
    elif scales is not None and np.asarray(scales).size:
        for a, s in zip(axes, np.asarray(scales, np.float64).reshape(-1)):
            out[a], sc[a] = math.floor(shape[a] * s), float(s)
    else:
        raise EtchError("Resize needs scales or sizes")
    return out, sc


def _source(attrs: dict, n_in: int, n_out: int, scale: float,
            roi: tuple[float, float] | None) -> Array:
    """Source coordinate of every output position along one axis."""
    mode = attrs.get("coordinate_transformation_mode", "half_pixel")
    x = np.arange(n_out, dtype=np.float64)
    out = n_in * scale
    if mode == "tf_crop_and_resize":
        lo, hi = roi if roi is not None else (0.0, 1.0)
        if out == 1:
            return np.full(n_out, (lo + hi) / 2 * (n_in - 1))
        return lo * (n_in - 1) + x * (hi - lo) * (n_in - 1) / (out - 1)
    if mode not in _COORDS:
        raise EtchError(f"Resize coordinate_transformation_mode {mode!r} is not supported")
    return np.asarray(_COORDS[mode](x, scale, n_in, out), np.float64)


def _nearest(attrs: dict, src: Array, n_in: int) -> tuple[Array, Array]:
    idx = _ROUND[attrs.get("nearest_mode", "round_prefer_floor")](src)
    return np.clip(idx, 0, n_in - 1).astype(np.int64)[:, None], np.ones((len(src), 1))


def _linear(attrs: dict, src: Array, n_in: int) -> tuple[Array, Array]:
    src = np.clip(src, 0, n_in - 1)
    lo = np.floor(src)
    frac = src - lo
    taps = np.stack([lo, np.minimum(lo + 1, n_in - 1)], axis=1).astype(np.int64)
    return taps, np.stack([1 - frac, frac], axis=1)


def _cubic(attrs: dict, src: Array, n_in: int) -> tuple[Array, Array]:
    """Keys' cubic convolution (coefficient a); taps past the edge repeat the edge, or are
    dropped and the weights renormalised with exclude_outside."""
    a = attrs.get("cubic_coeff_a", -0.75)
    base = np.floor(src)
    d = np.abs(src[:, None] - (base[:, None] + np.arange(-1, 3)))
    w = np.where(d <= 1, ((a + 2) * d - (a + 3)) * d * d + 1,
                 np.where(d < 2, ((d - 5) * d + 8) * d * a - 4 * a, 0.0))
    taps = base[:, None].astype(np.int64) + np.arange(-1, 3)
    if attrs.get("exclude_outside", 0):
        w = np.where((taps < 0) | (taps >= n_in), 0.0, w)
        w = w / w.sum(axis=1, keepdims=True)
    return np.clip(taps, 0, n_in - 1), w


_KERNELS = {"nearest": _nearest, "linear": _linear, "cubic": _cubic}


@dataclass(frozen=True)
class AxisPlan:
    """One resized axis: y[..., j, ...] = sum_t weights[j, t] * x[..., taps[j, t], ...], and
    `extrapolation_value` where `outside[j]` (tf_crop_and_resize; else None)."""

    axis: int
    taps: Array      # int64 [n_out, T]
    weights: Array   # float64 [n_out, T]
    outside: Array | None


def plan(attrs: dict, shape: tuple[int, ...], roi: Array | None, scales: Array | None,
         sizes: Array | None) -> list[AxisPlan]:
    """The axes to resize, innermost first (as ONNX's reference nests them), with their taps
    and weights: the whole of Resize's arithmetic once roi/scales/sizes are known (the
    reference below and the TVM backend both apply it)."""
    mode = attrs.get("mode", "nearest")
    if mode not in _KERNELS or attrs.get("antialias", 0):
        raise EtchError(f"Resize mode {mode!r} with antialias={attrs.get('antialias', 0)} is "
                        f"not supported (etch has nearest, linear and cubic)")
    out, sc = _targets(attrs, shape, scales, sizes)
    rois = _rois(attrs, len(shape), roi)
    plans = []
    for axis in reversed(range(len(shape))):
        if out[axis] != shape[axis] or sc[axis] != 1.0 or rois[axis] is not None:
            n_in = shape[axis]
            src = _source(attrs, n_in, out[axis], sc[axis], rois[axis])
            taps, w = _KERNELS[mode](attrs, src, n_in)
            crop = attrs.get("coordinate_transformation_mode") == "tf_crop_and_resize"
            plans.append(AxisPlan(axis, taps, w, (src < 0) | (src > n_in - 1) if crop
                                  else None))
    return plans


def _resize_axis(attrs: dict, x: Array, p: AxisPlan) -> Array:
    """Interpolate along one axis as `p` says."""
    moved = np.moveaxis(x, p.axis, -1)
    y = (moved[..., p.taps] * p.weights.astype(x.dtype if x.dtype.kind == "f"
                                                else np.float64)).sum(-1)
    if p.outside is not None:
        y[..., p.outside] = attrs.get("extrapolation_value", 0.0)
    return np.moveaxis(y, -1, p.axis)


def _rois(attrs: dict, rank: int, roi: Array | None) -> list[tuple[float, float] | None]:
    """Per-axis (start, end) of tf_crop_and_resize's roi input."""
    rois: list[tuple[float, float] | None] = [None] * rank
    if roi is None or np.asarray(roi).size == 0:
        return rois
    axes = [axis_of(a, rank) for a in attrs.get("axes") or range(rank)]
    r = np.asarray(roi, np.float64).reshape(-1)
    for k, a in enumerate(axes):
        rois[a] = (float(r[k]), float(r[k + len(axes)]))
    return rois


def _resize(attrs: dict, x: Array, roi: Array | None = None, scales: Array | None = None,
            sizes: Array | None = None) -> Array:
    y = x
    for p in plan(attrs, x.shape, roi, scales, sizes):
        y = _resize_axis(attrs, y, p)
    return y.astype(x.dtype, copy=False)


_LEGACY = {"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}


def _upsample(attrs: dict, x: Array, scales: Array) -> Array:
    """Upsample-9 (and Resize-10): (X, scales), asymmetric coordinates, floor rounding."""
    mode = "linear" if attrs.get("mode") in ("linear", "bilinear") else "nearest"
    return _resize({**_LEGACY, "mode": mode}, x, None, scales)


def _upgrade_resize(node: Node, opset: int, graph: Graph) -> None:
    """Upsample and Resize-10 become Resize(X, '', scales) with their legacy semantics."""
    if node.op == "Upsample" or opset < 11:
        node.op = "Resize"
        node.inputs = [node.inputs[0], "", node.inputs[1] if len(node.inputs) > 1 else ""]
        node.attrs = {**_LEGACY, "mode": "linear" if node.attrs.get("mode") in
                      ("linear", "bilinear") else "nearest"}


OPS: dict[str, OpDef] = {
    "Resize": OpDef("Resize", _resize, upgrade=_upgrade_resize, shape_inputs=(2, 3)),
    "Upsample": OpDef("Upsample", _upsample, upgrade=_upgrade_resize, shape_inputs=(1,)),
}
