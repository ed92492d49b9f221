"""Values of ONNX's narrow element types, made the way compiler/ops/dtypes.py makes them.

int4/uint4/int2/uint2 live in int8/uint8 and float8/float6/float4 in float32
(`support.STORAGE`), each value exactly. Only Cast, CastLike and QuantizeLinear make new
values of these types, so they alone round, with `to_narrow`:
- to an integer type: from a float, truncate toward zero (NaN is 0) and keep it if the type
  holds it, else 0 (ml_dtypes' conversion, which ONNX's test data use); from an integer,
  keep the low bits (ONNX: "discard higher bits");
- to a float type: round to nearest, ties to even, in float64 (one rounding from any input
  type): the spacing of values is 2**(e - mantissa bits) for x's binade e, and the
  subnormal spacing below the smallest normal. Out of range (and +-Inf): the largest finite
  value of that sign with `saturate` (always for float6/float4, which have no Inf or NaN),
  else Inf (float8 e5m2) or NaN. NaN stays NaN (float6/float4: 0).
"""

from __future__ import annotations

import ml_dtypes
from tvm import tirx

from backends.tvm.support import STORAGE
from compiler.errors import EtchError

Expr = tirx.Expr
_WITH_INF = frozenset({"float8_e5m2"})
_WITHOUT_NAN = frozenset({"float6_e2m3fn", "float6_e3m2fn", "float4_e2m1fn"})


def is_narrow(dtype: str) -> bool:
    return dtype in STORAGE


def to_narrow(v: Expr, dtype: str, saturate: bool = True, round_mode: str = "up") -> Expr:
    """`v` (any numeric TIR value) converted to narrow `dtype`, in its storage type."""
    src = str(v.ty.dtype)
    if dtype == "float8_e8m0fnu":
        return _to_e8m0(v.astype("float64"), saturate, round_mode).astype(STORAGE[dtype])
    if dtype.startswith(("int", "uint")):
        info = ml_dtypes.iinfo(dtype)
        if src.startswith(("float", "bfloat")):
            return _float_to_int(v, info.min, info.max, STORAGE[dtype])
        return _wrap(v, info.bits, info.min < 0, STORAGE[dtype])
    return _round_float(v.astype("float64"), dtype, saturate).astype(STORAGE[dtype])


def _float_to_int(v: Expr, lo: int, hi: int, store: str) -> Expr:
    t = tirx.trunc(v.astype("float64"))
    keep = tirx.all(t >= tirx.const(float(lo), "float64"), t <= tirx.const(float(hi), "float64"))
    return tirx.Select(keep, t, tirx.const(0.0, "float64")).astype(store)


def _wrap(v: Expr, bits: int, signed: bool, store: str) -> Expr:
    """The low `bits` bits of integer v, sign-extended when `signed`."""
    w = v.astype("int64")
    low = tirx.bitwise_and(w, tirx.const((1 << bits) - 1, "int64"))
    if signed:
        sign = tirx.const(1 << (bits - 1), "int64")
        low = tirx.bitwise_xor(low, sign) - sign
    return low.astype(store)


def _pow2(e: Expr) -> Expr:
    """2.0 ** e (an int64 within float64's normal exponents), exactly."""
    return tirx.reinterpret("float64", tirx.shift_left(e + tirx.const(1023, "int64"),
                                                       tirx.const(52, "int64")))


def _to_e8m0(x: Expr, saturate: bool, round_mode: str) -> Expr:
    """Cast-24's float8e8m0 (`compiler.ops.dtypes.to_float8e8m0`): x in [2^-127, 2^127] goes
    to the power of two at or below it, one up when its mantissa says so (up: any fraction;
    nearest: half or more; down: never); above is 2^127 and below (0, negatives) 2^-127 with
    `saturate`, else NaN; NaN is NaN."""
    if round_mode not in ("up", "down", "nearest"):
        raise EtchError(f"Cast round_mode must be up, down or nearest, got {round_mode!r}")
    f64, i64 = "float64", "int64"
    low, high = tirx.const(2.0 ** -127, f64), tirx.const(2.0 ** 127, f64)
    bits = tirx.reinterpret(i64, x)
    exp = tirx.bitwise_and(tirx.shift_right(bits, tirx.const(52, i64)), tirx.const(0x7FF, i64))
    frac = tirx.bitwise_and(bits, tirx.const((1 << 52) - 1, i64))
    step = {"up": frac != tirx.const(0, i64),
            "nearest": frac >= tirx.const(1 << 51, i64),
            "down": tirx.const(False, "bool")}[round_mode]
    e = exp - tirx.const(1023, i64) + tirx.Select(step, tirx.const(1, i64), tirx.const(0, i64))
    inside = _pow2(tirx.min(tirx.max(e, tirx.const(-127, i64)), tirx.const(127, i64)))
    nan = tirx.const(float("nan"), f64)
    outside = tirx.Select(x > high, high if saturate else nan, low if saturate else nan)
    value = tirx.Select(tirx.all(x >= low, x <= high), inside, outside)
    return tirx.Select(tirx.isnan(x), nan, value)


def _round_float(x: Expr, dtype: str, saturate: bool) -> Expr:
    info = ml_dtypes.finfo(dtype)
    f64 = "float64"
    biggest = tirx.const(float(info.max), f64)
    a = tirx.abs(x)
    field = tirx.bitwise_and(tirx.shift_right(tirx.reinterpret("int64", a),
                                              tirx.const(52, "int64")), tirx.const(0x7FF, "int64"))
    binade = tirx.max(field - tirx.const(1023, "int64"), tirx.const(int(info.minexp), "int64"))
    step = _pow2(tirx.min(binade, tirx.const(int(info.maxexp), "int64")) - int(info.nmant))
    r = tirx.nearbyint(a / step) * step
    over = tirx.any(tirx.isinf(x), r > biggest)
    if saturate or dtype in _WITHOUT_NAN:
        big = biggest
    else:
        big = tirx.const(float("inf") if dtype in _WITH_INF else float("nan"), f64)
    r = tirx.Select(over, big, r)
    nan = tirx.const(0.0 if dtype in _WITHOUT_NAN else float("nan"), f64)
    signed = tirx.Select(x < tirx.const(0.0, f64), -r, r)
    return tirx.Select(tirx.isnan(x), nan, signed)

