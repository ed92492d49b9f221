"""ONNX element types in numpy: Cast's conversion rules and the formats arithmetic runs in.

ml_dtypes stores the types numpy lacks (bfloat16, float8 e4m3fn/e4m3fnuz/e5m2/e5m2fnuz,
float8 e8m0, float6 e2m3/e3m2, float4 e2m1, int4/uint4, int2/uint2); its conversions are
round-to-nearest-even and are what ONNX's own test data use, with these ONNX rules on top:
- float8 (not e8m0), `saturate=1` (the default): out-of-range values and +-Inf become the
  largest finite value of that sign, NaN stays NaN (Cast-24's table; ONNX Runtime and ONNX's
  reference already saturated +-Inf for the fnuz types at opsets 19-23, whose table said
  NaN, so every opset is read this way); `saturate=0`: ml_dtypes' overflow (Inf or NaN);
- float8 e8m0 (powers of two 2^-127..2^127, code 255 is NaN): `round_mode` up (default),
  down or nearest (ties up) picks the exponent of x in [2^-127, 2^127]; above (+Inf too)
  becomes 2^127 with `saturate`, below (0 too) 2^-127, else either is NaN (Cast-24's
  table). ONNX leaves negative inputs unspecified; they count as below, as in ONNX Runtime;
- float4/float6 have no Inf or NaN: they always saturate (ml_dtypes; `saturate` has no
  effect, as ONNX says);
- float -> integer truncates toward zero (C; ONNX's int4/int2 test data too, where ONNX
  Runtime rounds), NaN -> 0, out of range is undefined in ONNX; integer -> narrower integer
  wraps (ONNX: "discard higher bits"), int4/int2 included.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
from onnx import numpy_helper

from compiler.errors import EtchError

Array = np.ndarray

_E8M0_MAX_CODE, _E8M0_NAN = 254, 255
_E8M0_BIAS = 127
_E8M0_MIN, _E8M0_MAX = 2.0 ** -127, 2.0 ** 127
ROUND_MODES = ("up", "down", "nearest")
# numpy does arithmetic in these; other formats compute in float32 (ONNX's reference too).
_ARITH = frozenset({"float16", "bfloat16", "float32", "float64"})


def is_float(dtype: np.dtype) -> bool:
    """True for numpy floats and ml_dtypes' float formats (bfloat16, float8/6/4)."""
    if dtype.kind == "f":
        return True
    try:
        ml_dtypes.finfo(dtype)
    except ValueError:
        return False
    return True


def arith_dtype(dtype: np.dtype) -> np.dtype:
    """The float dtype arithmetic in `dtype` runs in: itself for float16/bfloat16/float32/
    float64, float32 for formats without arithmetic (float8, float6, float4, integers)."""
    return dtype if dtype.name in _ARITH else np.dtype(np.float32)


def to_float8e8m0(x: Array, saturate: bool = True, round_mode: str = "up") -> Array:
    """Cast-24's conversion to float8e8m0, exact for any real input (computed in float64)."""
    if round_mode not in ROUND_MODES:
        raise EtchError(f"Cast round_mode must be one of {', '.join(ROUND_MODES)}, "
                        f"got {round_mode!r}")
    v = np.asarray(x, np.float64)
    inside = (v >= _E8M0_MIN) & (v <= _E8M0_MAX)  # False for NaN
    mant, exp = np.frexp(np.where(inside, v, 1.0))  # v = mant * 2^exp, mant in [0.5, 1)
    frac = 2 * mant - 1  # v / 2^floor(log2 v) - 1, in [0, 1)
    step = {"up": frac > 0, "down": np.zeros(frac.shape, bool), "nearest": frac >= 0.5}[round_mode]
    code = exp.astype(np.int64) - 1 + step + _E8M0_BIAS  # <= 254: v <= 2^127
    low, high = (0, _E8M0_MAX_CODE) if saturate else (_E8M0_NAN, _E8M0_NAN)
    outside = np.where(np.isnan(v), _E8M0_NAN, np.where(v > _E8M0_MAX, high, low))
    return np.where(inside, code, outside).astype(np.uint8).view(ml_dtypes.float8_e8m0fnu)


def cast_to(x: Array, to: np.dtype, saturate: bool = True, round_mode: str = "up") -> Array:
    """ONNX Cast of `x` to numpy dtype `to` (the rules in this module's docstring)."""
    if to.kind in "OSU" or x.dtype.kind in "OSU":
        raise EtchError(f"Cast between strings and numbers is not supported ({x.dtype} -> {to})")
    if to.name == "float8_e8m0fnu":
        return to_float8e8m0(x, saturate, round_mode)
    if to.name.startswith("float8") and saturate:
        # float64 holds every input format exactly (ints up to 2^53): one rounding only.
        return numpy_helper.saturate_cast(x.astype(np.float64), to)
    if to == np.bool_:
        return x.astype(np.float64) != 0 if x.dtype.kind == "V" else x.astype(bool)
    if is_float(x.dtype) and not is_float(to):
        x = np.trunc(np.nan_to_num(x.astype(np.float64)))  # ml_dtypes' int4 would round
    return x.astype(to)
