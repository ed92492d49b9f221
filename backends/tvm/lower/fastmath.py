"""Vectorisable float32 exp/erf/tanh/sigmoid written as TIR expressions.

On llvm, TIR's `exp` and `erf` become calls to libm's `expf`/`erff`, which LLVM cannot
vectorise: a vectorised loop turns back into a scalar call per element. These are the
polynomial forms TVM's TOPI uses for `fast_exp`/`fast_erf` (Cephes' exp with range reduction
to [-ln2/2, ln2/2]; Eigen's rational erf on [-4, 4]); both are within a few float32 ulps of
the exact functions over their ranges (tanh is Eigen's rational form), which is well inside the rtol 1e-3 golden tolerance.

NaN: TIR's `max`/`min` return their second operand when either is NaN (LLVM renders them
as compare-and-select), so `max(x, 0)` turns a NaN into 0. ONNX Runtime and the reference
keep NaN through Relu, Clip, Max, Min and the clamps below; `fmax`/`fmin`/`clamp` are the
NaN-propagating forms every float clamp in the lowering uses, and `max_reducer`/`min_reducer`
the reductions' (the reference's numpy max propagates NaN; ONNX Runtime's MLAS reductions
keep or drop it depending on where in the vector it sits) (a compare-and-select that
returns the NaN operand; on x86 LLVM still emits one `vmaxps`/`vminps` for a constant bound).
"""

from __future__ import annotations

from collections.abc import Callable

import tvm
from tvm import te, tirx

_EXP_P = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
          1.6666665459e-1, 5.0000001201e-1)
_ERF_ALPHA = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
              -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
              -1.60960333262415e-02)
_ERF_BETA = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
             -7.37332916720468e-03, -1.42647390514189e-02)
_TANH_ALPHA = (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11,
               5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04,
               4.89352455891786e-03)
_TANH_BETA = (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03,
              4.89352518554385e-03)


def dtype_of(x: tirx.Expr) -> str:
    """The dtype of a TIR expression (TVM 0.27 keeps it in the expression's type)."""
    return str(x.ty.dtype)


def _f(v: float) -> tirx.Expr:
    return tirx.const(v, "float32")


def _is_float(x: tirx.Expr) -> bool:
    return dtype_of(x).startswith(("float", "bfloat"))


def _nan_free(x: tirx.Expr) -> bool:
    """True when x is a constant that is not NaN (no NaN test needed for it)."""
    return isinstance(x, (tirx.FloatImm, tirx.IntImm)) and x.value == x.value


def _isnan(y: tirx.Expr) -> tirx.Expr:
    """isnan(y) from y's bits: |bits| above the infinity's (bfloat16: of its exact float32
    value). TIR's `isnan` call has no vector form (TVM's vectoriser scalarised every loop
    with one, a max pool's NaN-keeping max, which LLVM re-vectorised with gathers and
    scatters), and y != y is no test in TIR: the simplifier folds it, and LLVM gets the
    ordered `fcmp one`, false for a NaN. The bit test is three vector integer ops."""
    y = y.astype("float32") if dtype_of(y) == "bfloat16" else y
    bits = tvm.DataType(dtype_of(y)).bits
    exponent = {16: 5, 32: 8, 64: 11}[bits]
    itype = f"int{bits}"
    magnitude = tirx.bitwise_and(tirx.reinterpret(itype, y),
                                 tirx.const((1 << (bits - 1)) - 1, itype))
    return magnitude > tirx.const(((1 << exponent) - 1) << (bits - 1 - exponent), itype)


def fmax(x: tirx.Expr, y: tirx.Expr) -> tirx.Expr:
    """max(x, y), NaN when x or y is NaN (integers: TIR's max)."""
    if not _is_float(x):
        return tirx.max(x, y)
    if _nan_free(y):
        return tirx.Select(x < y, y, x)
    if _nan_free(x):
        return tirx.Select(y < x, x, y)
    return tirx.Select(tirx.any(x < y, _isnan(y)), y, x)


def fmin(x: tirx.Expr, y: tirx.Expr) -> tirx.Expr:
    """min(x, y), NaN when x or y is NaN (integers: TIR's min)."""
    if not _is_float(x):
        return tirx.min(x, y)
    if _nan_free(y):
        return tirx.Select(y < x, y, x)
    if _nan_free(x):
        return tirx.Select(x < y, x, y)
    return tirx.Select(tirx.any(y < x, _isnan(y)), y, x)


def clamp(x: tirx.Expr, lo: tirx.Expr, hi: tirx.Expr) -> tirx.Expr:
    """min(max(x, lo), hi), keeping a NaN x."""
    return fmin(fmax(x, lo), hi)


def max_reducer(dtype: object) -> Callable:
    """The reducer of ReduceMax/MaxPool/GlobalMaxPool/Softmax's row max: te.max, with
    `fmax` as its combiner for floats (a NaN anywhere in the window gives NaN, as numpy)."""
    if not str(dtype).startswith(("float", "bfloat")):  # a str or a TVM dtype
        return te.max
    return te.comm_reducer(fmax, tirx.min_value, name="nan_max")


def min_reducer(dtype: object) -> Callable:
    """te.min, NaN-propagating for floats (see `max_reducer`)."""
    if not str(dtype).startswith(("float", "bfloat")):
        return te.min
    return te.comm_reducer(fmin, tirx.max_value, name="nan_min")


def _horner(x: tirx.Expr, coeffs: tuple[float, ...]) -> tirx.Expr:
    acc = _f(coeffs[0])
    for c in coeffs[1:]:
        acc = acc * x + _f(c)
    return acc


def exp(x: tirx.Expr) -> tirx.Expr:
    """e^x for float32 x (non-float dtypes fall back to TIR's exp)."""
    if dtype_of(x) != "float32":
        return tirx.exp(x)
    x = clamp(x, _f(-88.3762626647949), _f(88.3762626647950))
    n = tirx.floor(x * _f(1.44269504088896341) + _f(0.5))
    r = x - n * _f(0.693147180559945)
    poly = _horner(r, _EXP_P) * r * r + r + _f(1.0)
    two_n = tirx.reinterpret("float32", (n.astype("int32") + 127) << 23)
    return poly * two_n


def erf(x: tirx.Expr) -> tirx.Expr:
    """erf(x) for float32 x."""
    if dtype_of(x) != "float32":
        return tirx.erf(x)
    x = clamp(x, _f(-4.0), _f(4.0))
    x2 = x * x
    return x * _horner(x2, _ERF_ALPHA) / _horner(x2, _ERF_BETA)


def sigmoid(x: tirx.Expr) -> tirx.Expr:
    one = tirx.const(1.0, dtype_of(x))
    return one / (one + exp(-x))


def tanh(x: tirx.Expr) -> tirx.Expr:
    """tanh(x) for float32 x: Eigen's rational form on [-7.9, 7.9] (max error 3e-7), which
    unlike 1 - 2/(e^2x + 1) keeps its relative accuracy near 0."""
    if dtype_of(x) != "float32":
        return tirx.tanh(x)
    x = clamp(x, _f(-7.90531110763549805), _f(7.90531110763549805))
    x2 = x * x
    return x * _horner(x2, _TANH_ALPHA) / _horner(x2, _TANH_BETA)
