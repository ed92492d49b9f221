"""Convolutions: Conv, ConvTranspose (and the window helpers pooling and QLinearConv share).

Conv is im2col + matmul in the input dtype (float32 BLAS for float32, as ONNX Runtime's
MLAS does), N-D (1-D, 2-D, 3-D, ...), with groups, strides, dilations, explicit pads and
auto_pad SAME_UPPER / SAME_LOWER / VALID. ConvTranspose is matmul + col2im (scatter-add)
with output_padding and output_shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from compiler.errors import EtchError
from compiler.ir import Value
from compiler.ops import OpDef
from compiler.ops.common import check_channel_param

Array = np.ndarray
IM2COL_ELEMENTS = 1 << 24  # patch elements of a batch convolved at once (`conv_nd`)
Ints = tuple[int, ...]
Spec = list[tuple[Ints, str]]


@dataclass(frozen=True)
class Window:
    """Sliding-window geometry along the spatial axes: pads are (begin..., end...)."""

    kernel: Ints
    strides: Ints
    dilations: Ints
    begin: Ints
    end: Ints
    out: Ints

    @property
    def extent(self) -> Ints:
        """Effective (dilated) kernel size per axis."""
        return tuple((k - 1) * d + 1 for k, d in zip(self.kernel, self.dilations))


def _same_pads(size: int, k: int, s: int, upper: bool) -> tuple[int, int]:
    total = max(0, (math.ceil(size / s) - 1) * s + k - size)
    small = total // 2
    return (small, total - small) if upper else (total - small, small)


def window(attrs: dict, spatial: Ints, kernel: Ints, ceil_mode: bool = False) -> Window:
    """Output geometry of a conv/pool window over `spatial` (ONNX and ONNX Runtime rules).

    With ceil_mode, a last window that would start in the end padding is dropped."""
    n = len(spatial)
    strides = tuple(attrs.get("strides") or [1] * n)
    dilations = tuple(attrs.get("dilations") or [1] * n)
    pads = list(attrs.get("pads") or [0] * (2 * n))
    if (len(kernel), len(strides), len(dilations), len(pads)) != (n, n, n, 2 * n):
        raise EtchError(f"window attributes do not match {n} spatial dims: kernel "
                        f"{list(kernel)}, strides {list(strides)}, dilations "
                        f"{list(dilations)}, pads {pads}")
    extent = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    auto = attrs.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pairs = [_same_pads(x, e, s, auto == "SAME_UPPER")
                 for x, e, s in zip(spatial, extent, strides)]
        begin, end = tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)
    elif auto == "VALID":
        begin = end = (0,) * n
    else:
        begin, end = tuple(pads[:n]), tuple(pads[n:])
    out = []
    for x, e, s, b, en in zip(spatial, extent, strides, begin, end):
        span = x + b + en - e
        o = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (o - 1) * s >= x + b:
            o -= 1
        out.append(o)
    if any(o <= 0 for o in out):
        raise EtchError(f"window {list(kernel)} over input {list(spatial)} gives an empty "
                        f"output {out}")
    return Window(tuple(kernel), strides, dilations, begin, end, tuple(out))


def pad_input(x: Array, w: Window, value: float = 0) -> Array:
    """Pad the spatial axes of [N, C, *spatial] so every window lies inside."""
    pads = [(0, 0), (0, 0)]
    for size, e, s, b, en, o in zip(x.shape[2:], w.extent, w.strides, w.begin, w.end, w.out):
        pads.append((b, max(en, (o - 1) * s + e - size - b)))
    return np.pad(x, pads, constant_values=np.asarray(value, x.dtype))


def gather_windows(xp: Array, w: Window) -> Array:
    """[N, C, *padded] -> [N, C, *kernel, *out]: every window's elements (im2col)."""
    cols = np.empty(xp.shape[:2] + w.kernel + w.out, xp.dtype)
    for idx in np.ndindex(*w.kernel):
        sl = tuple(slice(i * d, i * d + s * (o - 1) + 1, s)
                   for i, d, s, o in zip(idx, w.dilations, w.strides, w.out))
        cols[(slice(None), slice(None)) + idx] = xp[(slice(None), slice(None)) + sl]
    return cols


def conv_window(attrs: dict, x_shape: Ints, w_shape: Ints) -> Window:
    check_conv(attrs, x_shape, w_shape)
    return window(attrs, x_shape[2:], tuple(w_shape[2:]))


def check_conv(attrs: dict, x_shape: Ints, w_shape: Ints, transpose: bool = False) -> None:
    """EtchError unless x [N, C, *S] and weight w agree: the same rank (>= 3), kernel_shape
    (when given) equal to w's spatial dims, and channels that match the groups: Conv's w is
    [M, C/group, *K] with M divisible by group; ConvTranspose's is [C, M/group, *K]."""
    op = "ConvTranspose" if transpose else "Conv"
    g = int(attrs.get("group", 1))
    if len(x_shape) < 3 or len(w_shape) != len(x_shape):
        raise EtchError(f"{op}: input {list(x_shape)} and weight {list(w_shape)} must both "
                        f"be [N, C, spatial...] of the same rank")
    kernel = attrs.get("kernel_shape")
    if kernel and tuple(kernel) != tuple(w_shape[2:]):
        raise EtchError(f"{op}: kernel_shape {list(kernel)} does not match the weight "
                        f"{list(w_shape)}")
    c = x_shape[1]
    if g < 1 or (transpose and (c != w_shape[0] or c % g)) or (
            not transpose and (c != w_shape[1] * g or w_shape[0] % g)):
        want = f"{w_shape[0]}" if transpose else f"{w_shape[1]} x {g} groups"
        raise EtchError(f"{op}: input {list(x_shape)} has {c} channels; weight "
                        f"{list(w_shape)} expects {want}")


def conv_nd(attrs: dict, x: Array, w: Array, matmul=np.matmul) -> Array:
    """Grouped N-D convolution without bias: [N, C, *S] * [M, C/G, *K] -> [N, M, *O].

    `matmul` lets integer convolutions supply an exact integer product. A batch whose
    patches (im2col) would pass IM2COL_ELEMENTS is convolved one image at a time: the
    same products (matmul multiplies each image's matrices on its own either way) without
    the whole batch's patch matrix (vgg16's first layers at batch 8: 1.8 GB in float64)."""
    g = int(attrs.get("group", 1))
    win = conv_window(attrs, x.shape, w.shape)
    n, m = x.shape[0], w.shape[0]
    per_image = int(np.prod(w.shape[1:])) * g * int(np.prod(win.out))
    if n > 1 and n * per_image > IM2COL_ELEMENTS:  # one image's patches at a time
        return np.concatenate([conv_nd(attrs, x[i:i + 1], w, matmul) for i in range(n)])
    cols = gather_windows(pad_input(x, win), win)
    cols = cols.reshape(n, g, -1, int(np.prod(win.out)))
    y = matmul(w.reshape(g, m // g, -1), cols)  # [N, G, M/G, prod(out)]
    return y.reshape((n, m) + win.out)


def _conv(attrs: dict, x: Array, w: Array, b: Array | None = None) -> Array:
    y = conv_nd(attrs, x, w)
    if b is not None:
        y = y + b.reshape((1, -1) + (1,) * (x.ndim - 2))
    return y.astype(x.dtype, copy=False)


def _infer_conv(attrs: dict, x: Value, w: Value, b: Value | None = None) -> Spec:
    win = conv_window(attrs, x.shape, w.shape)
    if b is not None:
        check_channel_param("Conv bias", b.shape, w.shape[0])
    return [((x.shape[0], w.shape[0]) + win.out, x.dtype)]


# ---- ConvTranspose ------------------------------------------------------------------------
def _transpose_pads(attrs: dict, spatial: Ints, extent: Ints) -> tuple[Ints, Ints, Ints]:
    """(begin pads, end pads, output size) of ConvTranspose, per the ONNX spec."""
    n = len(spatial)
    strides = attrs.get("strides") or [1] * n
    adj = attrs.get("output_padding") or [0] * n
    full = [s * (x - 1) + a + e for x, s, a, e in zip(spatial, strides, adj, extent)]
    auto = attrs.get("auto_pad", "NOTSET")
    out = attrs.get("output_shape")
    if out is None and auto in ("SAME_UPPER", "SAME_LOWER"):
        out = [x * s for x, s in zip(spatial, strides)]
    if out is None:
        pads = list(attrs.get("pads") or [0] * (2 * n))
        size = tuple(f - b - e for f, b, e in zip(full, pads[:n], pads[n:]))
        return tuple(pads[:n]), tuple(pads[n:]), size
    out = list(out)[-n:]
    total = [max(0, f - o) for f, o in zip(full, out)]
    if auto == "SAME_UPPER":
        begin = tuple(t // 2 for t in total)
    else:
        begin = tuple(t - t // 2 for t in total)
    return begin, tuple(t - b for t, b in zip(total, begin)), tuple(out)


def conv_transpose_geometry(attrs: dict, x_shape: Ints, w_shape: Ints) -> tuple:
    check_conv(attrs, x_shape, w_shape, transpose=True)
    kernel = tuple(w_shape[2:])
    n = len(kernel)
    dil = tuple(attrs.get("dilations") or [1] * n)
    extent = tuple((k - 1) * d + 1 for k, d in zip(kernel, dil))
    begin, _, out = _transpose_pads(attrs, x_shape[2:], extent)
    return kernel, dil, begin, out


def _conv_transpose(attrs: dict, x: Array, w: Array, b: Array | None = None) -> Array:
    g = int(attrs.get("group", 1))
    kernel, dil, begin, out = conv_transpose_geometry(attrs, x.shape, w.shape)
    strides = tuple(attrs.get("strides") or [1] * len(kernel))
    n, c, spatial = x.shape[0], x.shape[1], x.shape[2:]
    m = w.shape[1] * g
    # cols[n, g, (m/g, *kernel), prod(spatial)] = W_g^T @ X_g
    xg = x.reshape(n, g, c // g, -1)
    wg = w.reshape(g, c // g, -1).transpose(0, 2, 1)
    cols = np.matmul(wg, xg).reshape((n, m) + kernel + spatial)
    size = [max(bg + o, s * (i - 1) + (k - 1) * d + 1)
            for bg, o, s, i, k, d in zip(begin, out, strides, spatial, kernel, dil)]
    buf = np.zeros((n, m) + tuple(size), x.dtype)
    for idx in np.ndindex(*kernel):
        sl = tuple(slice(i * d, i * d + s * (x_len - 1) + 1, s)
                   for i, d, s, x_len in zip(idx, dil, strides, spatial))
        buf[(slice(None), slice(None)) + sl] += cols[(slice(None), slice(None)) + idx]
    y = buf[(slice(None), slice(None)) + tuple(slice(bg, bg + o) for bg, o in zip(begin, out))]
    if b is not None:
        y = y + b.reshape((1, -1) + (1,) * len(kernel))
    return y.astype(x.dtype, copy=False)


def _infer_conv_transpose(attrs: dict, x: Value, w: Value, b: Value | None = None) -> Spec:
    _, _, _, out = conv_transpose_geometry(attrs, x.shape, w.shape)
    if b is not None:
        check_channel_param("ConvTranspose bias", b.shape, w.shape[1] * int(attrs.get("group", 1)))
    return [((x.shape[0], w.shape[1] * int(attrs.get("group", 1))) + tuple(out), x.dtype)]


OPS: dict[str, OpDef] = {
    "Conv": OpDef("Conv", _conv, infer=_infer_conv),
    "ConvTranspose": OpDef("ConvTranspose", _conv_transpose, infer=_infer_conv_transpose),
}
