"""etch's quantisation ops: the weight-only dequantiser and the integer graph's ops.

Every integer op computes in int64 and is exact; results are checked against their
container (an int32 accumulator that would overflow is an error, never a wrap-around).
Real values follow docs/ARCHITECTURE.md: a quantised tensor means x = s * (q - z).

- `etch.Dequant(q, scale, zero?)`  (weight-only path) float32
      y = (float32(q) - float32(zero_e)) * float32(scale_e)
  where p_e is p repeated `group_size` times along `group_axis` (when group_size > 0),
  then broadcast to q's shape. scale/zero have q's rank. Per output channel: scale
  [O, 1, 1, 1] (Conv) or [1, N] (MatMul [K, N]); groups of G along K: [O, C/G, 1, 1] with
  group_axis=1 or [K/G, N] with group_axis=0; per input channel (AdaDim): [1, C, 1, 1] or
  [K, 1] (groups of G output channels: [O/G, C, 1, 1], group_axis=0). Attrs: group_axis,
  group_size, bits, kind ("int", "binary", "ternary"; informational: q already holds the
  codes).
  With a fourth input `mult` (integer group multipliers, the integer path's groups), scale
  is per output channel and the group attrs apply to mult (and zero):
      y = (float32(q) - float32(zero_e)) * (float32(scale) * float32(mult_e)).
- `etch.QGemm(a, w, bias?, a_zero?, w_zero?, w_mult?)` int32
      y[..., n] = sum_k (a[..., k] - a_zero) * (w[..., k, n] - w_zero[n]) + bias[n]
  with ONNX MatMul broadcasting of the leading axes (w may be an activation: attention).
  With w_mult [K/G, N] (attr group_size G): groups of G along K are summed separately and
  weighted, y = sum_g w_mult[g, n] * sum_{k in g} (...) + bias[n]: weight scales
  s_w[g, n] = s_n * w_mult[g, n] factor into the per-channel s_n (requantised) and
  integers (k-quant style double quantisation of the group scales).
- `etch.QConv(x, w, bias?, x_zero?, w_zero?, w_mult?)` int32: Conv (attrs as ONNX Conv:
  group, strides, pads, dilations, auto_pad, kernel_shape) of (x - x_zero) with
  (w - w_zero[o]), padding with x_zero (the real zero), plus bias[o]; w_mult [O, C/g/G]
  weights groups of G input channels (within each conv group) as in QGemm.
- `etch.Requantize(acc, m0, shift)` int8/uint8: `compiler.reference.requantize(acc, m0,
  shift, zero_point, qmin, qmax)` with m0/shift scalars or vectors along `axis`.
  Attrs: axis, zero_point, qmin, qmax (ReLU/ReLU6/Clip are folded into these bounds),
  to ("int8" | "uint8").
- `etch.QAdd(a, b)` int8/uint8: TFLite's integer add, each step the one requantise formula:
      ra = requantize((a - a_zero) << left_shift, a_m0, a_shift, 0, INT32_MIN, INT32_MAX)
      rb = requantize((b - b_zero) << left_shift, b_m0, b_shift, 0, INT32_MIN, INT32_MAX)
      y  = requantize(ra + rb, m0, shift, zero_point, qmin, qmax)
  with numpy broadcasting of a and b. Attrs: the ints named above and `to`. Optional attr
  `linear` = [k, ca, cb, c] (recorded by `passes/linear_qadd.py`, not part of the
  semantics): the same function over the inputs' 8-bit ranges as
      y = clamp((a ca + b cb + c) >> k, qmin, qmax)   (>> floors; every term in int32),
  proven on every (a, b) pair by `linear_qadd`; backends may compute that instead.
- `etch.QMul(a, b)` int8/uint8: the product of two integer activations (numpy broadcasting:
  squeeze-and-excitation's channel gate), one requantisation of the exact product:
      y = requantize((a - a_zero) * (b - b_zero), m0, shift, zero_point, qmin, qmax)
  where M0 / 2^shift = s_a s_b / s_y. Attrs: the ints named above and `to`.
- `etch.QSumPool(x, x_zero?)` int32: window sums of (x - x_zero) (AveragePool geometry
  attrs; `global`=1 sums over all spatial axes); padding adds 0. The division by the
  window size belongs to the next Requantize's multiplier.
- `etch.Table(x, table, *consts)`: y = table[x - lo], lo = -128 for int8 x, 0 for uint8;
  table has 256 entries (int8 or uint8, y's dtype). Attr `epilogue` (etch.Fused's step
  format over the inputs [real(x), *consts]) records the float function the table was
  built from, so an exporter can rebuild it; it does not take part in the semantics.
- `etch.ChannelTable(x, table, *consts)`: one 256-entry table per channel along attr `axis`:
  y[..., c, ...] = table[c, x[..., c, ...] - lo] (table [C, 256]); `epilogue` as etch.Table's
  (the float function, whose per-channel constants are among consts).
- `etch.Clamp(x)`: y = clip(x, lo, hi) in x's integer dtype (attrs lo, hi).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np

from compiler import reference
from compiler.errors import EtchError
from compiler.ir import Value
from compiler.ops import OpDef
from compiler.ops.common import check_broadcasts_to, check_channel_param, int_matmul
from compiler.ops.conv import Window, conv_nd, conv_window, gather_windows, pad_input, window
from compiler.ops.nn import matmul_shape

Array = np.ndarray
Spec = list[tuple[tuple[int, ...], str]]
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def expand_param(p: Array, group_axis: int, group_size: int) -> Array:
    """A scale/zero array repeated `group_size` times along `group_axis` (the group form
    of etch.Dequant); unchanged when group_size is 0."""
    return np.repeat(p, group_size, axis=group_axis) if group_size else p


def _dequant(attrs: dict, q: Array, scale: Array, zero: Array | None = None,
             mult: Array | None = None) -> Array:
    ga, gs = int(attrs.get("group_axis", 0)), int(attrs.get("group_size", 0))
    s = np.asarray(scale, np.float32)
    if mult is None:
        s = expand_param(s, ga, gs)
    else:
        s = s * expand_param(np.asarray(mult), ga, gs).astype(np.float32)
    x = q.astype(np.float32)
    if zero is not None:
        x -= expand_param(np.asarray(zero), ga, gs).astype(np.float32)
    x *= s  # float32 x float32, in place: scale and zero broadcast to the codes' shape
    return x


def _infer_dequant(attrs: dict, q: Value, *params: Value | None) -> Spec:
    """q's shape; EtchError unless scale/zero/mult, repeated along group_axis, broadcast to it."""
    ga, gs = int(attrs.get("group_axis", 0)), int(attrs.get("group_size", 0))
    for name, p in zip(("scale", "zero", "mult"), params):
        if p is None:
            continue
        if len(p.shape) != len(q.shape) and p.size != 1:
            raise EtchError(f"etch.Dequant {name} {list(p.shape)} must have the rank of the "
                            f"codes {list(q.shape)}")
        shape = list(p.shape)
        grouped = gs and (name != "scale" or len(params) < 3 or params[2] is None)
        if grouped and len(shape) == len(q.shape):
            shape[ga] *= gs
        check_broadcasts_to(f"etch.Dequant {name}", shape, q.shape)
    return [(q.shape, "float32")]


def to_int32(acc: Array, what: str) -> Array:
    """int64 -> int32, raising EtchError when a value does not fit (an accumulator bug)."""
    if acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
        raise EtchError(f"{what}: int32 accumulator overflow (range {acc.min()}..{acc.max()})")
    return acc.astype(np.int32)


def _centred(x: Array, zero: Array | None) -> Array:
    x64 = x.astype(np.int64)
    return x64 if zero is None else x64 - np.asarray(zero, np.int64)


def _infer_qgemm(attrs: dict, a: Value, w: Value, bias: Value | None = None,
                 *rest: Value | None) -> Spec:
    shape = matmul_shape(a.shape, w.shape)
    if bias is not None:
        check_broadcasts_to("etch.QGemm bias", bias.shape, shape[-1:])
    return [(shape, "int32")]


def _qgemm(attrs: dict, a: Array, w: Array, bias: Array | None = None,
           a_zero: Array | None = None, w_zero: Array | None = None,
           w_mult: Array | None = None) -> Array:
    ac, wc = _centred(a, a_zero), _centred(w, w_zero)
    if w_mult is None:
        acc = int_matmul(ac, wc)
    else:  # per-group partial sums [n_g, ..., N], weighted by the group multipliers
        gs = int(attrs["group_size"])
        n_g = ac.shape[-1] // gs
        ag = np.moveaxis(ac.reshape(ac.shape[:-1] + (n_g, gs)), -2, 0)
        wg = wc.reshape((n_g,) + (1,) * (ac.ndim - 2) + (gs, wc.shape[-1]))
        m = w_mult.astype(np.int64).reshape((n_g,) + (1,) * (ac.ndim - 1) + (-1,))
        acc = (int_matmul(ag, wg) * m).sum(axis=0)
    if bias is not None:
        acc = acc + bias.astype(np.int64)
    return to_int32(acc, "etch.QGemm")


def _qconv(attrs: dict, x: Array, w: Array, bias: Array | None = None,
           x_zero: Array | None = None, w_zero: Array | None = None,
           w_mult: Array | None = None) -> Array:
    wz = None if w_zero is None else np.asarray(w_zero).reshape((-1,) + (1,) * (w.ndim - 1))
    xc, wc = _centred(x, x_zero), _centred(w, wz)
    if w_mult is None:
        acc = conv_nd(attrs, xc, wc, matmul=int_matmul)
    else:
        acc = _grouped_qconv(attrs, xc, wc, w_mult.astype(np.int64))
    if bias is not None:
        acc = acc + bias.astype(np.int64).reshape((1, -1) + (1,) * (x.ndim - 2))
    return to_int32(acc, "etch.QConv")


def _grouped_qconv(attrs: dict, xc: Array, wc: Array, mult: Array) -> Array:
    """sum_j mult[o, j] * conv(x over channel group j, w[:, j]): channel group j of conv
    group c is input channels c*C/g + j*G .. c*C/g + (j+1)*G - 1."""
    gs, groups = int(attrs["group_size"]), int(attrs.get("group", 1))
    per = wc.shape[1]
    acc = 0
    for j in range(per // gs):
        idx = [c * per + j * gs + t for c in range(groups) for t in range(gs)]
        part = conv_nd(attrs, xc[:, idx], wc[:, j * gs:(j + 1) * gs], matmul=int_matmul)
        acc = acc + part * mult[:, j].reshape((1, -1) + (1,) * (xc.ndim - 2))
    return acc


def _infer_qconv(attrs: dict, x: Value, w: Value, bias: Value | None = None,
                 *rest: Value | None) -> Spec:
    win = conv_window(attrs, x.shape, w.shape)
    if bias is not None:
        check_channel_param("etch.QConv bias", bias.shape, w.shape[0])
    return [((x.shape[0], w.shape[0]) + win.out, "int32")]


def along(p: Array, rank: int, axis: int | None) -> Array:
    """A scalar or 1-D per-channel parameter shaped to broadcast along `axis`."""
    p = np.asarray(p)
    if p.size == 1 or axis is None:
        return p.reshape(()) if p.size == 1 else p
    shape = [1] * rank
    shape[axis % rank] = p.size
    return p.reshape(shape)


def _requantize(attrs: dict, acc: Array, m0: Array, shift: Array) -> Array:
    axis = attrs.get("axis")
    y = reference.requantize(acc, along(m0, acc.ndim, axis), along(shift, acc.ndim, axis),
                             int(attrs.get("zero_point", 0)), int(attrs["qmin"]),
                             int(attrs["qmax"]))
    return y.astype(attrs.get("to", "int8"))


def _infer_requantize(attrs: dict, acc: Value, *params: Value | None) -> Spec:
    """acc's shape; EtchError unless m0/shift are scalars or one per channel along axis."""
    axis = attrs.get("axis")
    for name, p in zip(("m0", "shift"), params):
        if p is not None and p.size != 1 and (
                axis is None or not acc.shape or p.size != acc.shape[axis % len(acc.shape)]):
            raise EtchError(f"etch.Requantize {name} holds {p.size} values; expected 1 or one "
                            f"per channel of axis {axis} of {list(acc.shape)}")
    return [(acc.shape, attrs.get("to", "int8"))]


def _qadd(attrs: dict, a: Array, b: Array) -> Array:
    shift_l = int(attrs.get("left_shift", 20))

    def side(x: Array, p: str) -> Array:
        x64 = (x.astype(np.int64) - int(attrs[f"{p}_zero"])) << shift_l
        return reference.requantize(x64, attrs[f"{p}_m0"], attrs[f"{p}_shift"], 0,
                                    INT32_MIN, INT32_MAX)

    y = reference.requantize(side(a, "a") + side(b, "b"), attrs["m0"], attrs["shift"],
                             int(attrs.get("zero_point", 0)), int(attrs["qmin"]),
                             int(attrs["qmax"]))
    return y.astype(attrs.get("to", "int8"))


def _qmul(attrs: dict, a: Array, b: Array) -> Array:
    prod = (a.astype(np.int64) - int(attrs["a_zero"])) * (b.astype(np.int64) - int(attrs["b_zero"]))
    y = reference.requantize(prod, attrs["m0"], attrs["shift"], int(attrs.get("zero_point", 0)),
                             int(attrs["qmin"]), int(attrs["qmax"]))
    return y.astype(attrs.get("to", "int8"))


LINEAR_NUDGES = ((0, 0, 0), (1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1),
                 (0, 0, -1), (1, 1, 0), (-1, -1, 0), (1, -1, 0), (-1, 1, 0), (0, 0, 2),
                 (0, 0, -2), (0, 0, 4), (0, 0, -4))
LINEAR_SHIFTS = 3  # the largest shifts k tried (each fitting int32)


def linear_qadd(attrs: dict, a_range: tuple[int, int], b_range: tuple[int, int]
                ) -> list[int] | None:
    """[k, ca, cb, c] with clamp((a ca + b cb + c) >> k, qmin, qmax) == etch.QAdd(a, b) for
    every integer a in a_range and b in b_range (inclusive; at most 256 values each), every
    product, partial sum and sum inside int32; None where no candidate is exact.

    The candidates: the real slopes of the two sides through the output scale (a_m0 2^L m0 /
    2^(a_shift + shift), the same for b) rounded to k fractional bits, the zero points and
    the rounding half folded into c, for the LINEAR_SHIFTS largest k that fit int32, each
    nudged by one or two units (the reference rounds each side before the sum, so the exact
    function can sit a hair off the straight line). Each candidate is checked against the
    reference on all pairs: what is recorded is proven, not estimated."""
    (a_lo, a_hi), (b_lo, b_hi) = a_range, b_range
    if not (0 < a_hi - a_lo + 1 <= 256 and 0 < b_hi - b_lo + 1 <= 256):
        return None
    a = np.arange(a_lo, a_hi + 1, dtype=np.int64)[:, None]
    b = np.arange(b_lo, b_hi + 1, dtype=np.int64)[None, :]
    want = _qadd({**attrs, "to": "int64"}, a, b).astype(np.int64)
    left, sh = int(attrs.get("left_shift", 20)), int(attrs["shift"])
    slopes = [Fraction(int(attrs[f"{p}_m0"]) * int(attrs["m0"]) << left,
                       1 << (int(attrs[f"{p}_shift"]) + sh)) for p in "ab"]
    za, zb, zp = (int(attrs.get(k, 0)) for k in ("a_zero", "b_zero", "zero_point"))
    qmin, qmax = int(attrs["qmin"]), int(attrs["qmax"])
    tried = 0
    for k in range(30, 0, -1):
        ca, cb = (round(s * (1 << k)) for s in slopes)
        c = -za * ca - zb * cb + (zp << k) + (1 << (k - 1))
        fits = [_fits_int32(ca + da, cb + db, c + dc, a_range, b_range)
                for da, db, dc in LINEAR_NUDGES]
        if not any(fits):
            continue
        for (da, db, dc), ok in zip(LINEAR_NUDGES, fits):
            if ok and np.array_equal(
                    np.clip((a * (ca + da) + b * (cb + db) + c + dc) >> k, qmin, qmax), want):
                return [k, ca + da, cb + db, c + dc]
        tried += 1
        if tried == LINEAR_SHIFTS:
            return None
    return None


def _fits_int32(ca: int, cb: int, c: int, a_range: tuple[int, int],
                b_range: tuple[int, int]) -> bool:
    """Whether a ca, a ca + c and a ca + c + b cb stay inside int32 on the box (linear:
    the extremes are at its corners)."""
    for a in a_range:
        for b in b_range:
            for t in (a * ca, a * ca + c, b * cb, a * ca + c + b * cb):
                if not INT32_MIN <= t <= INT32_MAX:
                    return False
    return True


def _infer_qadd(attrs: dict, a: Value, b: Value) -> Spec:
    return [(tuple(np.broadcast_shapes(a.shape, b.shape)), attrs.get("to", "int8"))]


def pool_window(attrs: dict, shape: tuple[int, ...]) -> Window:
    """The window of an etch.QSumPool (global: one window over all spatial axes)."""
    if attrs.get("global", 0):
        return window({}, shape[2:], tuple(shape[2:]))
    return window(attrs, shape[2:], tuple(attrs["kernel_shape"]), bool(attrs.get("ceil_mode", 0)))


def _qsumpool(attrs: dict, x: Array, x_zero: Array | None = None) -> Array:
    w = pool_window(attrs, x.shape)
    cols = gather_windows(pad_input(_centred(x, x_zero), w, 0), w)
    acc = cols.reshape(x.shape[:2] + (-1,) + w.out).sum(axis=2)
    return to_int32(acc, "etch.QSumPool")


def _infer_qsumpool(attrs: dict, x: Value, *rest: Value | None) -> Spec:
    return [((x.shape[0], x.shape[1]) + pool_window(attrs, x.shape).out, "int32")]


def _table(attrs: dict, x: Array, table: Array, *consts: Array) -> Array:
    if table.shape != (256,):
        raise EtchError(f"etch.Table: the table has shape {table.shape}, expected (256,)")
    lo = -128 if x.dtype == np.int8 else 0
    return table[x.astype(np.int64) - lo]


def _infer_table(attrs: dict, x: Value, table: Value, *rest: Value | None) -> Spec:
    if table.shape != (256,) or x.dtype not in ("int8", "uint8"):
        raise EtchError(f"etch.Table maps int8/uint8 through 256 entries; got {x.dtype} x and "
                        f"a table of shape {list(table.shape)}")
    return [(x.shape, table.dtype)]


def _channel_table(attrs: dict, x: Array, table: Array, *consts: Array) -> Array:
    axis = int(attrs["axis"]) % x.ndim
    if table.shape != (x.shape[axis], 256):
        raise EtchError(f"etch.ChannelTable: the table has shape {table.shape}, expected "
                        f"({x.shape[axis]}, 256)")
    lo = -128 if x.dtype == np.int8 else 0
    channel = np.arange(x.shape[axis]).reshape([-1 if d == axis else 1 for d in range(x.ndim)])
    return table[channel, x.astype(np.int64) - lo]


def _infer_channel_table(attrs: dict, x: Value, table: Value, *rest: Value | None) -> Spec:
    axis = attrs.get("axis")
    ok = x.dtype in ("int8", "uint8") and axis is not None and x.shape and \
        -len(x.shape) <= int(axis) < len(x.shape) and \
        table.shape == (x.shape[int(axis) % len(x.shape)], 256)
    if not ok:
        raise EtchError(f"etch.ChannelTable maps int8/uint8 through 256 entries per channel "
                        f"of axis {axis}; got {x.dtype} x of shape {list(x.shape)} and a "
                        f"table of shape {list(table.shape)}")
    return [(x.shape, table.dtype)]


def _clamp(attrs: dict, x: Array) -> Array:
    return np.clip(x, int(attrs["lo"]), int(attrs["hi"])).astype(x.dtype)


def _same(attrs: dict, x: Value, *rest: Any) -> Spec:
    return [(x.shape, x.dtype)]


OPS: dict[str, OpDef] = {
    "etch.Dequant": OpDef("etch.Dequant", _dequant, infer=_infer_dequant),
    "etch.QGemm": OpDef("etch.QGemm", _qgemm, infer=_infer_qgemm),
    "etch.QConv": OpDef("etch.QConv", _qconv, infer=_infer_qconv),
    "etch.Requantize": OpDef("etch.Requantize", _requantize, infer=_infer_requantize),
    "etch.QAdd": OpDef("etch.QAdd", _qadd, infer=_infer_qadd),
    "etch.QMul": OpDef("etch.QMul", _qmul, infer=_infer_qadd),
    "etch.QSumPool": OpDef("etch.QSumPool", _qsumpool, infer=_infer_qsumpool),
    "etch.Table": OpDef("etch.Table", _table, infer=_infer_table),
    "etch.ChannelTable": OpDef("etch.ChannelTable", _channel_table, infer=_infer_channel_table),
    "etch.Clamp": OpDef("etch.Clamp", _clamp, infer=_same),
}
