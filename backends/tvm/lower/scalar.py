"""Elementwise ops as scalar TIR expressions, shared by standalone elementwise kernels and the
epilogues of `etch.Fused` kernels (so one definition serves both).

`SCALAR[op](attrs, args, dtype) -> PrimExpr`: `args` are the op's inputs already loaded at one
output position (missing optional inputs are None), `dtype` the output dtype. Semantics are
ONNX's: integer Div truncates, Mod follows the divisor's sign unless fmod=1, comparisons give
bool. exp/erf/tanh/sigmoid use the vectorisable forms of `fastmath`, and every float
max/min/clamp (Relu, Clip, Max, Min, HardSigmoid, HardSwish) its NaN-propagating
`fmax`/`fmin`/`clamp`, so NaN stays NaN as in ONNX Runtime.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import onnx
from tvm import tirx

from backends.tvm.lower import fastmath
from backends.tvm.lower.fastmath import dtype_of
from backends.tvm.lower.narrow import is_narrow, to_narrow
from compiler.errors import EtchError

Expr = tirx.Expr
ScalarFn = Callable[[dict, list[Expr | None], str], Expr]


def _c(v: float, like: Expr) -> Expr:
    return tirx.const(v, dtype_of(like))


def _is_float(x: Expr) -> bool:
    return dtype_of(x).startswith(("float", "bfloat"))


def _imm(x: Expr | None) -> float | None:
    """The value of a constant scalar operand, or None."""
    return float(x.value) if isinstance(x, (tirx.FloatImm, tirx.IntImm)) else None


def _clip(attrs: dict, a: list, dtype: str) -> Expr:
    x, lo, hi = a[0], (a[1:2] or [None])[0], (a[2:3] or [None])[0]
    lo = lo if lo is not None else (_c(attrs["min"], x) if "min" in attrs else None)
    hi = hi if hi is not None else (_c(attrs["max"], x) if "max" in attrs else None)
    if lo is not None:
        x = fastmath.fmax(x, lo.astype(dtype_of(x)))
    if hi is not None:
        x = fastmath.fmin(x, hi.astype(dtype_of(x)))
    return x


def _gelu(attrs: dict, a: list, dtype: str) -> Expr:
    x = a[0]
    if attrs.get("approximate", "none") == "tanh":
        inner = _c(math.sqrt(2.0 / math.pi), x) * (x + _c(0.044715, x) * x * x * x)
        return _c(0.5, x) * x * (_c(1.0, x) + fastmath.tanh(inner))
    return _c(0.5, x) * x * (_c(1.0, x) + fastmath.erf(x * _c(1.0 / math.sqrt(2.0), x)))


def _div(attrs: dict, a: list, dtype: str) -> Expr:
    x, y = a
    return x / y if _is_float(x) else tirx.truncdiv(x, y)


def _mod(attrs: dict, a: list, dtype: str) -> Expr:
    x, y = a
    if _is_float(x):
        r = _fmod(x, y)
        if attrs.get("fmod", 0):
            return r
        # numpy's remainder: fmod, moved into the divisor's sign (exact, unlike x - floor(x/y)
        # * y, and right for an infinite divisor: -1 mod inf = inf)
        zero = _c(0, x)
        return tirx.Select(tirx.all(r != zero, _xor(r < zero, y < zero)), r + y, r)
    return tirx.truncmod(x, y) if attrs.get("fmod", 0) else tirx.floormod(x, y)


def _xor(x: Expr, y: Expr) -> Expr:
    # bool != bool reaches LLVM as a float compare on i1 vectors: spell Xor with And/Or.
    return tirx.all(tirx.any(x, y), tirx.Not(tirx.all(x, y)))


def _fmod(x: Expr, y: Expr) -> Expr:
    """C's fmod (exact): TIR's fmod has no llvm lowering in TVM 0.27, so call libm's; a
    float16 remainder is exact in float32."""
    dtype = dtype_of(x)
    if dtype == "float64":
        return tirx.call_pure_extern("float64", "fmod", x, y)
    r = tirx.call_pure_extern("float32", "fmodf", x.astype("float32"), y.astype("float32"))
    return r if dtype == "float32" else r.astype(dtype)


def _pow(attrs: dict, a: list, dtype: str) -> Expr:
    x, y = a
    e = _imm(y)
    special = {1.0: lambda: x, 2.0: lambda: x * x, 3.0: lambda: x * x * x,
               0.5: lambda: tirx.sqrt(x), -1.0: lambda: _c(1.0, x) / x}
    if e is not None and e in special and _is_float(x):
        return special[e]()
    if _is_float(x):
        return tirx.power(x, y.astype(dtype_of(x)))
    if _is_float(y):  # numpy: the power in float64, truncated to the base's type
        return tirx.power(x.astype("float64"), y.astype("float64")).astype(dtype_of(x))
    return _int_pow(x, y.astype(dtype_of(x)), e)


# Integer powers with a constant exponent up to this are unrolled into multiplies; others
# need the staged kernel of `integer_pow` (a computed exponent, squared bit by bit).
UNROLLED_POW = 64


def _int_pow(x: Expr, y: Expr, e: float | None) -> Expr:
    """Integer x ** e for a constant e in [0, UNROLLED_POW], exact (wrapping like numpy), or
    for a negative e the truncated real power (1 or -1 for |x| = 1, else 0)."""
    if e is None or e > UNROLLED_POW:
        raise EtchError("integer Pow with a computed or large exponent runs as its own kernel, "
                        "not inside a fused epilogue")
    if e < 0:
        one = _c(1, x)
        sign = -one if int(e) % 2 else one
        return tirx.Select(x == one, one, tirx.Select(x == -one, sign, _c(0, x)))
    acc = _c(1, x)
    for _ in range(int(e)):  # x is a load: repeating it keeps the expression linear
        acc = acc * x
    return acc


def _elu(attrs: dict, a: list, dtype: str) -> Expr:
    x = a[0]
    neg = _c(attrs.get("alpha", 1.0), x) * (fastmath.exp(x) - _c(1.0, x))
    return tirx.Select(x > _c(0, x), x, neg)


def _selu(attrs: dict, a: list, dtype: str) -> Expr:
    x = a[0]
    alpha = attrs.get("alpha", 1.67326319217681884765625)
    gamma = _c(attrs.get("gamma", 1.05070102214813232421875), x)
    neg = _c(alpha, x) * (fastmath.exp(x) - _c(1.0, x))
    return gamma * tirx.Select(x > _c(0, x), x, neg)


def _hard_sigmoid(attrs: dict, a: list, dtype: str) -> Expr:
    x = a[0]
    y = _c(attrs.get("alpha", 0.2), x) * x + _c(attrs.get("beta", 0.5), x)
    return fastmath.clamp(y, _c(0, x), _c(1, x))


def _hard_swish(attrs: dict, a: list, dtype: str) -> Expr:
    x = a[0]
    return x * fastmath.clamp(x / _c(6, x) + _c(0.5, x), _c(0, x), _c(1, x))


def _sign(attrs: dict, a: list, dtype: str) -> Expr:
    x = a[0]
    # x itself where it is neither > 0 nor < 0: zero, or NaN (which Sign keeps)
    return tirx.Select(x > _c(0, x), _c(1, x), tirx.Select(x < _c(0, x), _c(-1, x), x))


def _softplus(x: Expr) -> Expr:
    return tirx.log(_c(1, x) + fastmath.exp(x))


def _mish(x: Expr) -> Expr:
    """x * tanh(softplus(x)), softplus bound once: fastmath's NaN-keeping clamps repeat their
    operand, and tanh over an inlined exp made a tree TVM's simplifier took ~40 s on."""
    sp = tirx.Var("softplus", dtype_of(x))
    return tirx.Let(sp, _softplus(x), x * fastmath.tanh(sp))


def _cast(x: Expr, dtype: str) -> Expr:
    """ONNX Cast to `dtype` (CastLike's second input only gives the type)."""
    return tirx.NE(x, _c(0, x)) if dtype == "bool" else x.astype(dtype)


def _cast_to(attrs: dict, x: Expr, dtype: str) -> Expr:
    """Cast to `to` (an ONNX type), which may be a narrow type held in `dtype`."""
    to = attrs.get("to")
    name = onnx.helper.tensor_dtype_to_np_dtype(int(to)).name if to is not None else dtype
    if is_narrow(name):
        return to_narrow(x, name, bool(attrs.get("saturate", 1)), attrs.get("round_mode", "up"))
    return _cast(x, dtype)


def _nary(fn: Callable[[Expr, Expr], Expr]) -> ScalarFn:
    """Variadic ops (Sum, Max, Min): fold left over the inputs."""
    def run(attrs: dict, a: list, dtype: str) -> Expr:
        acc = a[0]
        for x in a[1:]:
            acc = fn(acc, x)
        return acc
    return run


def _mean(attrs: dict, a: list, dtype: str) -> Expr:
    return _nary(lambda x, y: x + y)(attrs, a, dtype) / _c(len(a), a[0])


def _unary(fn: Callable[[Expr], Expr]) -> ScalarFn:
    return lambda attrs, a, dtype: fn(a[0])


def _binary(fn: Callable[[Expr, Expr], Expr]) -> ScalarFn:
    return lambda attrs, a, dtype: fn(a[0], a[1])


SCALAR: dict[str, ScalarFn] = {
    "Relu": _unary(lambda x: fastmath.fmax(x, _c(0, x))),
    "LeakyRelu": lambda attrs, a, dt: tirx.Select(a[0] >= _c(0, a[0]), a[0],
                                                  a[0] * _c(attrs.get("alpha", 0.01), a[0])),
    "PRelu": _binary(lambda x, s: tirx.Select(x >= _c(0, x), x, x * s)),
    "Sigmoid": _unary(fastmath.sigmoid),
    "Tanh": _unary(fastmath.tanh),
    "Exp": _unary(fastmath.exp),
    "Log": _unary(tirx.log),
    "Sqrt": _unary(tirx.sqrt),
    "Erf": _unary(fastmath.erf),
    "Neg": _unary(lambda x: -x),
    "Abs": _unary(tirx.abs),
    "Reciprocal": _unary(lambda x: _c(1, x) / x),
    "Floor": _unary(tirx.floor),
    "Ceil": _unary(tirx.ceil),
    "Round": _unary(tirx.nearbyint),  # ONNX rounds half to even
    "Sign": _sign,
    "Softplus": _unary(lambda x: _softplus(x)),
    "Not": _unary(tirx.bitwise_not),
    "Identity": _unary(lambda x: x),
    "Dropout": _unary(lambda x: x),  # inference: identity
    "Cast": lambda attrs, a, dtype: _cast_to(attrs, a[0], dtype),
    "Clip": _clip,
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": _hard_swish,
    "Gelu": _gelu,
    "Elu": _elu,
    "Selu": _selu,
    "Add": _binary(lambda x, y: x + y),
    "Sub": _binary(lambda x, y: x - y),
    "Mul": _binary(lambda x, y: x * y),
    "Div": _div,
    "Mod": _mod,
    "Pow": _pow,
    "Max": _nary(fastmath.fmax),
    "Min": _nary(fastmath.fmin),
    "Sum": _nary(lambda x, y: x + y),
    "Mean": _mean,
    "Equal": _binary(tirx.EQ),
    "Less": _binary(lambda x, y: x < y),
    "Greater": _binary(lambda x, y: x > y),
    "LessOrEqual": _binary(lambda x, y: x <= y),
    "GreaterOrEqual": _binary(lambda x, y: x >= y),
    "And": _binary(tirx.all),
    "Or": _binary(tirx.any),
    "Xor": _binary(lambda x, y: _xor(x, y)),
    "Where": lambda attrs, a, dtype: tirx.Select(a[0], a[1], a[2]),
    "Sin": _unary(tirx.sin),
    "Cos": _unary(tirx.cos),
    "Softsign": _unary(lambda x: x / (_c(1, x) + tirx.abs(x))),
    "Mish": _unary(lambda x: _mish(x)),
    "ThresholdedRelu": lambda attrs, a, dt: tirx.Select(
        a[0] > _c(attrs.get("alpha", 1.0), a[0]), a[0], _c(0, a[0])),
    "IsNaN": _unary(tirx.isnan),
    "CastLike": lambda attrs, a, dtype: _cast(a[0], dtype),
}
