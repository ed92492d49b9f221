"""The integer graph's row ops: integer LayerNormalization and Softmax on int8/uint8 codes.

Both are deterministic integer arithmetic, exact in int64, so every backend gets the same
bits whatever order it sums in. The compile-time constants (the integer gains, the exp
table, the shifts) are chosen by `passes.int_layernorm` / `passes.int_softmax`, which also
say what real function each approximates. `compiler.reference.isqrt` and
`compiler.reference.div_round` (round half away from zero) are the two primitives.

- `etch.QLayerNorm(x, gain, bias)` int8/uint8, over the dims [axis:] (n elements a row):

      S = sum q,  SS = sum q^2                       (q = x's codes, exact)
      num_i = n * q_i - S
      D = max(isqrt(((n * SS - S^2) << 2 * sqrt_bits) + eps), 1)
      y_i = clamp(div_round(num_i * gain_i + bias_i * D, D << shift) + zero_point, qmin, qmax)

  gain and bias are integers broadcast to x.shape[axis:] (per channel). With x = s (q - z),
  gain = round(gamma 2^(sqrt_bits + shift) / s_y), bias = round(beta 2^shift / s_y) and
  eps = round(n^2 4^sqrt_bits epsilon / s^2), y is LayerNormalization's output at scale s_y:
  num / sqrt(n SS - S^2 + n^2 epsilon / s^2) = (x - mean) / sqrt(var + epsilon). A row of
  equal codes (variance 0) has num = 0 and gives round(beta / s_y) (D >= 1 guards epsilon 0).
  Attrs: axis, sqrt_bits, eps, shift, zero_point, qmin, qmax, to.
- `etch.QSoftmax(x, table, mask?)` int8/uint8, along `axis`:

      m = max_j q_j,  e_i = table[q_i - m + 255],  Z = sum_j e_j
      y_i = clamp(div_round(e_i * mult, Z << shift) + zero_point, qmin, qmax)

  With a mask (uint8, broadcast to x, nonzero = masked: a causal attention mask), the max
  and the table read only the kept entries and a masked entry's e_i is 0; a row with no
  kept entry keeps every entry (a mask constant along the row shifts nothing).

  table holds 256 non-negative integers, table[255] > 0 (so Z > 0): with x = s (q - z),
  table[255 + d] = round(2^k exp(s d)) for d in [-255, 0] and mult = round(2^shift / s_y),
  y is Softmax's output at scale s_y. Attrs: axis, mult, shift, zero_point, qmin, qmax, to.

Every int64 intermediate is bounded before it is computed (EtchError when a bound could be
exceeded: the pass chose constants outside the op's contract), never a wrap-around.
"""

from __future__ import annotations

import numpy as np

from compiler import reference
from compiler.errors import EtchError
from compiler.ir import Value
from compiler.ops import OpDef
from compiler.ops.common import axis_of, check_broadcasts_to

Array = np.ndarray
Spec = list[tuple[tuple[int, ...], str]]
INT63 = 1 << 63
# q - m + 255 indexes the table: q - m is in [-255, 0] for int8 and uint8 codes
TABLE_SIZE = 256


def layer_norm_bounds(n: int, sqrt_bits: int, eps: int, gain: Array, bias: Array,
                      shift: int) -> tuple[int, int]:
    """(the largest |num * gain + bias * D|, the largest D << shift) over every int8/uint8
    row of n codes (Python ints: exact). Both must stay below 2^63, R below 2^62."""
    v_max = (n * n * 255 * 255) // 4  # n SS - S^2 = n^2 var, var <= (255 / 2)^2
    r_max = (v_max << (2 * sqrt_bits)) + eps
    if r_max >= reference.INT62:
        raise EtchError(f"etch.QLayerNorm: n={n}, sqrt_bits={sqrt_bits}, eps={eps} let "
                        f"n SS - S^2 << 2 sqrt_bits exceed 2^62")
    d_max = int(reference.isqrt(np.int64(r_max)))
    g = int(np.abs(np.asarray(gain, np.int64)).max(initial=0))
    b = int(np.abs(np.asarray(bias, np.int64)).max(initial=0))
    num_max = max(n - 1, 0) * 255
    return num_max * g + b * max(d_max, 1) + (max(d_max, 1) << shift), max(d_max, 1) << shift


def _layer_norm(attrs: dict, x: Array, gain: Array, bias: Array) -> Array:
    axis = axis_of(attrs.get("axis", -1), x.ndim)
    axes = tuple(range(axis, x.ndim))
    n = int(np.prod(x.shape[axis:]))
    k, eps, shift = int(attrs["sqrt_bits"]), int(attrs["eps"]), int(attrs["shift"])
    if max(layer_norm_bounds(n, k, eps, gain, bias, shift)) >= INT63:
        raise EtchError("etch.QLayerNorm: gain/bias/shift let an int64 intermediate overflow")
    q = x.astype(np.int64)
    s = q.sum(axis=axes, keepdims=True)
    ss = (q * q).sum(axis=axes, keepdims=True)
    d = np.maximum(reference.isqrt(((n * ss - s * s) << (2 * k)) + eps), 1)
    num = n * q - s
    y = reference.div_round(num * gain.astype(np.int64) + bias.astype(np.int64) * d,
                            d << shift)
    y = np.clip(y + int(attrs.get("zero_point", 0)), int(attrs["qmin"]), int(attrs["qmax"]))
    return y.astype(attrs.get("to", "int8"))


def _infer_layer_norm(attrs: dict, x: Value, gain: Value, bias: Value) -> Spec:
    axis = axis_of(attrs.get("axis", -1), len(x.shape))
    check_broadcasts_to("etch.QLayerNorm gain", gain.shape, x.shape[axis:])
    check_broadcasts_to("etch.QLayerNorm bias", bias.shape, x.shape[axis:])
    _check_codes("etch.QLayerNorm", x)
    return [(x.shape, attrs.get("to", "int8"))]


def softmax_bounds(n: int, table: Array, mult: int, shift: int) -> int:
    """The largest int64 intermediate of etch.QSoftmax over rows of n codes (a Python int)."""
    t_max = int(np.asarray(table, np.int64).max(initial=0))
    return max(t_max * abs(mult) + ((n * t_max) << shift >> 1), (n * t_max) << shift)


def _softmax(attrs: dict, x: Array, table: Array, mask: Array | None = None) -> Array:
    axis = axis_of(attrs.get("axis", -1), x.ndim)
    mult, shift = int(attrs["mult"]), int(attrs["shift"])
    _check_table(table)
    if softmax_bounds(x.shape[axis], table, mult, shift) >= INT63:
        raise EtchError("etch.QSoftmax: table/mult/shift let an int64 intermediate overflow")
    q = x.astype(np.int64)
    keep = np.ones(x.shape, bool) if mask is None else np.broadcast_to(mask == 0, x.shape)
    keep = keep | ~keep.any(axis=axis, keepdims=True)
    m = np.where(keep, q, -TABLE_SIZE).max(axis=axis, keepdims=True)
    idx = np.clip(q - m + (TABLE_SIZE - 1), 0, TABLE_SIZE - 1)
    e = np.where(keep, table.astype(np.int64)[idx], 0)
    z = e.sum(axis=axis, keepdims=True)
    y = reference.div_round(e * mult, z << shift)
    y = np.clip(y + int(attrs.get("zero_point", 0)), int(attrs["qmin"]), int(attrs["qmax"]))
    return y.astype(attrs.get("to", "int8"))


def _check_table(table: Array) -> None:
    if table.shape != (TABLE_SIZE,) or np.asarray(table).min() < 0 or table[-1] <= 0:
        raise EtchError(f"etch.QSoftmax: the table must hold {TABLE_SIZE} non-negative "
                        f"integers with a positive last entry (shape {list(table.shape)})")


def _infer_softmax(attrs: dict, x: Value, table: Value, mask: Value | None = None) -> Spec:
    axis_of(attrs.get("axis", -1), len(x.shape))
    _check_codes("etch.QSoftmax", x)
    if mask is not None:
        check_broadcasts_to("etch.QSoftmax mask", mask.shape, x.shape)
    if table.shape != (TABLE_SIZE,):
        raise EtchError(f"etch.QSoftmax: the table has shape {list(table.shape)}, expected "
                        f"[{TABLE_SIZE}]")
    return [(x.shape, attrs.get("to", "int8"))]


def _check_codes(op: str, x: Value) -> None:
    if x.dtype not in ("int8", "uint8"):
        raise EtchError(f"{op} reads int8/uint8 codes; got {x.dtype}")


OPS: dict[str, OpDef] = {
    "etch.QLayerNorm": OpDef("etch.QLayerNorm", _layer_norm, infer=_infer_layer_norm),
    "etch.QSoftmax": OpDef("etch.QSoftmax", _softmax, infer=_infer_softmax),
}
