"""Quantised ops as ONNX (and ONNX Runtime) define them.

- QuantizeLinear: y = saturate(round_half_even(x / scale) + zero_point), per tensor, per
  axis, or blocked along `axis` (`block_size`, opset 21); the division in `precision`
  (opset 23), else in the scale's type; int8/uint8/int16/uint16/int4/uint4/int2/uint2
  outputs saturate to their range, float8/float6/float4 outputs convert as Cast does
  (`saturate`, compiler.ops.dtypes). The output type is the zero point's, else
  `output_dtype`, else uint8.
- DequantizeLinear: y = (x - zero_point) * scale in float32 (as ONNX Runtime), rounded to
  `output_dtype` (opset 23), else to the scale's type; a float8e8m0 (MX) scale needs
  `output_dtype`.
- MatMulInteger / ConvInteger: exact int32 accumulation of (a - a_zp)(b - b_zp).
- QLinearMatMul / QLinearConv: that accumulation (plus QLinearConv's int32 bias),
  requantised the way ONNX Runtime does: round_half_even(float32(acc) * M) + y_zp,
  saturated, with M = a_scale * b_scale / y_scale in float32 (per output column/channel).
  This is ONNX's float requantisation, not etch's fixed-point `reference.requantize`.
- com.microsoft.MatMulNBits: A @ dequant(B)^T (+ bias), B packed little-endian (low bits
  first) into uint8 as [N, n_blocks, blob_size]; zero points packed the same way per row
  (default 2^(bits-1)) or float; g_idx maps each k to its block.
"""

from __future__ import annotations

import numpy as np

from compiler.errors import EtchError
from compiler.ir import Value
from compiler.ops import OpDef
from compiler.ops.common import (
    axis_of,
    check_channel_param,
    int_matmul,
    int_range,
    is_integer,
    np_dtype,
)
from compiler.ops.conv import conv_nd
from compiler.ops.dtypes import arith_dtype, cast_to

Array = np.ndarray
Spec = list[tuple[tuple[int, ...], str]]


def _param(p: Array, shape: tuple[int, ...], axis: int, block_size: int) -> Array:
    """A scale/zero point shaped to broadcast against x: scalar, per `axis`, or blocked."""
    if p.size == 1:
        return p.reshape(())
    axis = axis_of(axis, len(shape))
    if block_size:
        if p.ndim != len(shape):
            raise EtchError(f"blocked quantisation parameter of shape {list(p.shape)} does "
                            f"not match the rank of input {list(shape)}")
        rep = np.repeat(p, block_size, axis=axis)
        return np.take(rep, np.arange(shape[axis]), axis=axis)
    dims = [1] * len(shape)
    dims[axis] = p.size
    return p.reshape(dims)


def _geometry(attrs: dict, x: Array) -> tuple[int, int]:
    """(axis, block_size); the axis is normalised only where a parameter is a vector."""
    return int(attrs.get("axis", 1)), int(attrs.get("block_size", 0))


def _out_dtype(attrs: dict, zp: Array | None) -> np.dtype:
    """QuantizeLinear's output type: the zero point's, else `output_dtype`, else uint8."""
    named = np_dtype(attrs["output_dtype"]) if attrs.get("output_dtype") else None
    if zp is not None and named is not None and named != zp.dtype:
        raise EtchError(f"QuantizeLinear output_dtype {named.name} differs from its zero "
                        f"point's type {zp.dtype.name}")
    if zp is not None:
        return zp.dtype
    return named if named is not None else np.dtype(np.uint8)


def saturate_int(v: Array, zp: Array | int, dtype: np.dtype) -> Array:
    """Integer values `v` (already rounded, any float/int dtype) + zp, clamped to dtype."""
    lo, hi = int_range(dtype)
    zp64 = np.asarray(zp).astype(np.int64) if is_integer(np.asarray(zp).dtype) else zp
    return np.clip(np.asarray(v, np.float64) + zp64, lo, hi).astype(dtype)


def _quantize(attrs: dict, x: Array, scale: Array, zp: Array | None = None) -> Array:
    axis, block = _geometry(attrs, x)
    dtype = _out_dtype(attrs, zp)
    # The division runs in `precision`, else in the scale's type (opset 23; ORT does too).
    prec = arith_dtype(np_dtype(attrs["precision"]) if attrs.get("precision") else scale.dtype)
    y = x.astype(prec) / _param(scale, x.shape, axis, block).astype(prec)
    if is_integer(dtype):
        z = 0 if zp is None else _param(zp, x.shape, axis, block)
        return saturate_int(np.rint(y), z, dtype)
    if zp is not None:  # float formats: the same formula, though the zero point is usually 0
        y = y + _param(zp, x.shape, axis, block).astype(prec)
    return cast_to(y, dtype, bool(attrs.get("saturate", 1)))


def _dequantize(attrs: dict, x: Array, scale: Array, zp: Array | None = None) -> Array:
    """(x - zp) * scale in float32 (float64 for a float64 scale), rounded once to the output
    type: `output_dtype` (opset 23), else the scale's type. (The spec says the output type
    sets the multiplication's precision; ONNX Runtime and ONNX's reference multiply in
    float32 and round once, and etch matches them.)"""
    axis, block = _geometry(attrs, x)
    out = np_dtype(attrs["output_dtype"]) if attrs.get("output_dtype") else scale.dtype
    if arith_dtype(out) != out:  # e.g. a float8e8m0 (MX) scale without output_dtype
        raise EtchError(f"DequantizeLinear with a {scale.dtype.name} scale needs output_dtype "
                        f"float, float16 or bfloat16 (got {out.name})")
    work = np.dtype(np.float64 if np.float64 in (scale.dtype, out) else np.float32)
    s = _param(scale, x.shape, axis, block).astype(work)
    if is_integer(x.dtype):
        z = 0 if zp is None else _param(zp, x.shape, axis, block).astype(np.int64)
        diff = x.astype(np.int64) - z
    else:  # float8/float6/float4 codes: the same formula, though the zero point is usually 0
        z = 0 if zp is None else _param(zp, x.shape, axis, block).astype(work)
        diff = x.astype(work) - z
    return (diff.astype(work) * s).astype(out)


def _dynamic_quantize(attrs: dict, x: Array) -> tuple[Array, Array, Array]:
    """uint8 y, scale, zero point from the range of x and 0, in float32 as ORT computes."""
    lo = np.minimum(x.min(initial=np.float32(0)), np.float32(0)).astype(np.float32)
    hi = np.maximum(x.max(initial=np.float32(0)), np.float32(0)).astype(np.float32)
    scale = (hi - lo) / np.float32(255) if hi > lo else np.float32(1)
    zp = saturate_int(np.rint(np.float32(0) - lo / scale), 0, np.dtype(np.uint8))
    y = saturate_int(np.rint(x / scale), zp, np.dtype(np.uint8))
    return y, np.asarray(scale, np.float32), np.asarray(zp, np.uint8)


# ---- integer matmul / conv ----------------------------------------------------------------
def _centred(x: Array, zp: Array | None, per_row: bool) -> Array:
    """x - zp in int64; a vector zero point is per row of x (per_row) or per column."""
    x64 = x.astype(np.int64)
    if zp is None:
        return x64
    z = zp.astype(np.int64)
    if z.size == 1:
        return x64 - z.reshape(())
    return x64 - (z.reshape(-1, 1) if per_row else z.reshape(-1))


def _matmul_integer(attrs: dict, a: Array, b: Array, a_zp: Array | None = None,
                    b_zp: Array | None = None) -> Array:
    return int_matmul(_centred(a, a_zp, True), _centred(b, b_zp, False)).astype(np.int32)


def _conv_acc(attrs: dict, x: Array, w: Array, x_zp: Array | None,
              w_zp: Array | None) -> Array:
    xc = _centred(x, x_zp, False)
    wc = w.astype(np.int64)
    if w_zp is not None:
        wc = wc - w_zp.astype(np.int64).reshape((-1,) + (1,) * (w.ndim - 1))
    return conv_nd(attrs, xc, wc, matmul=int_matmul)


def _conv_integer(attrs: dict, x: Array, w: Array, x_zp: Array | None = None,
                  w_zp: Array | None = None) -> Array:
    return _conv_acc(attrs, x, w, x_zp, w_zp).astype(np.int32)


def requantize_float(acc: Array, multiplier: Array, zp: Array, dtype: np.dtype) -> Array:
    """ONNX Runtime's requantisation of an int32 accumulator (QLinear* ops)."""
    return saturate_int(np.rint(acc.astype(np.float32) * multiplier), zp, dtype)


def _multiplier(in_scale: Array, w_scale: Array, out_scale: Array) -> Array:
    return (in_scale.astype(np.float32) * w_scale.astype(np.float32)) / np.float32(out_scale)


def _qlinear_matmul(attrs: dict, a: Array, a_scale: Array, a_zp: Array, b: Array,
                    b_scale: Array, b_zp: Array, y_scale: Array, y_zp: Array) -> Array:
    acc = int_matmul(_centred(a, a_zp, True), _centred(b, b_zp, False))
    sa = a_scale.reshape(-1, 1) if a_scale.size > 1 else a_scale.reshape(())
    m = _multiplier(sa, b_scale.reshape(-1), y_scale.reshape(()))
    return requantize_float(acc, m, y_zp.reshape(()), y_zp.dtype)


def _qlinear_conv(attrs: dict, x: Array, x_scale: Array, x_zp: Array, w: Array,
                  w_scale: Array, w_zp: Array, y_scale: Array, y_zp: Array,
                  bias: Array | None = None) -> Array:
    if bias is not None:
        check_channel_param("QLinearConv bias", bias.shape, w.shape[0])
    acc = _conv_acc(attrs, x, w, x_zp, w_zp)
    channel = (1, -1) + (1,) * (x.ndim - 2)
    if bias is not None:
        acc = acc + bias.astype(np.int64).reshape(channel)
    m = _multiplier(x_scale.reshape(()), w_scale.reshape(channel), y_scale.reshape(()))
    return requantize_float(acc, m, y_zp.reshape(()), y_zp.dtype)


# ---- com.microsoft.MatMulNBits ------------------------------------------------------------
def unpack_bits(packed: Array, bits: int) -> Array:
    """uint8 [..., B] -> codes [..., B * 8 / bits], low bits first within each byte."""
    shifts = np.arange(0, 8, bits, dtype=np.uint8)
    codes = (packed[..., None] >> shifts) & np.uint8((1 << bits) - 1)
    return codes.reshape(packed.shape[:-1] + (-1,))


def nbits_weight(attrs: dict, b: Array, scales: Array, zero_points: Array | None = None,
                 g_idx: Array | None = None, dtype: np.dtype | None = None) -> Array:
    """The dequantised [N, K] weight of a MatMulNBits node."""
    k, n, bits, bs = int(attrs["K"]), int(attrs["N"]), int(attrs.get("bits", 4)), \
        int(attrs["block_size"])
    n_blocks = -(-k // bs)
    dtype = np.dtype(np.float32) if dtype is None else dtype
    q = unpack_bits(b.reshape(n, -1), bits)[:, :k].astype(dtype)
    block = np.arange(k) // bs if g_idx is None else g_idx.astype(np.int64)
    s = scales.reshape(n, n_blocks)[:, block].astype(dtype)
    if zero_points is None:
        z = np.asarray(1 << (bits - 1), dtype)
    elif zero_points.dtype == np.uint8:
        z = unpack_bits(zero_points.reshape(n, -1), bits)[:, :n_blocks][:, block].astype(dtype)
    else:
        z = zero_points.reshape(n, n_blocks)[:, block].astype(dtype)
    return (q - z) * s


def _matmul_nbits(attrs: dict, a: Array, b: Array, scales: Array,
                  zero_points: Array | None = None, g_idx: Array | None = None,
                  bias: Array | None = None) -> Array:
    w = nbits_weight(attrs, b, scales, zero_points, g_idx, a.dtype)
    y = np.matmul(a, w.T)
    return (y if bias is None else y + bias).astype(a.dtype, copy=False)


def _infer_nbits(attrs: dict, a: Value, b: Value, scales: Value,
                 *rest: Value | None) -> Spec:
    """[..., N]; EtchError unless A's last dim is K and B, scales hold N x ceil(K / block)."""
    k, n, bs = int(attrs["K"]), int(attrs["N"]), int(attrs["block_size"])
    if not a.shape or a.shape[-1] != k:
        raise EtchError(f"MatMulNBits: A {list(a.shape)} must end in K = {k}")
    blocks = -(-k // bs) if bs > 0 else 0
    blob = bs * int(attrs.get("bits", 4)) // 8
    if b.size != n * blocks * blob or scales.size != n * blocks:
        raise EtchError(f"MatMulNBits: B {list(b.shape)} and scales {list(scales.shape)} do not "
                        f"hold N = {n} rows of {blocks} blocks of {bs}")
    return [(tuple(a.shape[:-1]) + (int(attrs["N"]),), a.dtype)]


OPS: dict[str, OpDef] = {
    "QuantizeLinear": OpDef("QuantizeLinear", _quantize),
    "DequantizeLinear": OpDef("DequantizeLinear", _dequantize),
    "DynamicQuantizeLinear": OpDef("DynamicQuantizeLinear", _dynamic_quantize),
    "MatMulInteger": OpDef("MatMulInteger", _matmul_integer),
    "ConvInteger": OpDef("ConvInteger", _conv_integer),
    "QLinearMatMul": OpDef("QLinearMatMul", _qlinear_matmul),
    "QLinearConv": OpDef("QLinearConv", _qlinear_conv),
    "com.microsoft.MatMulNBits": OpDef("com.microsoft.MatMulNBits", _matmul_nbits,
                                       infer=_infer_nbits),
}
