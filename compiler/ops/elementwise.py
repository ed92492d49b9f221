"""Elementwise ops: numpy broadcasting semantics, as ONNX defines them.

Results keep the input dtype (float32 stays float32, as in ONNX Runtime); transcendental
functions numpy lacks (erf) are computed in float64 and rounded once to the input dtype
(erf by scipy.special.erf, vectorised; float64 inputs keep math.erf's exact values).
Clip's opset < 11 `min`/`max` attributes become inputs at import (the opset-21 form).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import scipy.special

from compiler.ir import Graph, Node
from compiler.ops import OpDef
from compiler.ops.common import attr_to_input, check_broadcasts_to, input_dtype, np_dtype
from compiler.ops.dtypes import cast_to

Array = np.ndarray
_ERF = np.frompyfunc(math.erf, 1, 1)


def erf(x: Array) -> Array:
    """The error function, rounded to x's dtype (numpy has no erf ufunc). Narrower floats
    use scipy's float64 erf (within an ulp of math.erf's, so the same once rounded; see
    tests/unit/test_erf.py) -- float32 through scipy's own float32 loop, which gives the
    same bits without the float64 copies (3x faster: GELU in vit_b16's calibration);
    float64 keeps math.erf element by element."""
    x = np.asarray(x)
    if x.dtype == np.float64:
        return np.asarray(_ERF(x), np.float64)
    if x.dtype == np.float32:
        return scipy.special.erf(x)
    return scipy.special.erf(x.astype(np.float64)).astype(x.dtype)


def _same(fn: Callable[[Array], Array]) -> Callable[..., Array]:
    """A one-input op `fn`, cast back to the input dtype."""
    def run(attrs: dict, x: Array) -> Array:
        return np.asarray(fn(x)).astype(x.dtype, copy=False)
    return run


def _sigmoid(x: Array) -> Array:
    e = np.exp(-np.abs(x))  # never overflows
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _softplus(x: Array) -> Array:
    return np.logaddexp(np.zeros((), x.dtype), x)


UNARY: dict[str, Callable[[Array], Array]] = {
    "Sqrt": np.sqrt, "Exp": np.exp, "Log": np.log, "Tanh": np.tanh, "Neg": np.negative,
    "Abs": np.abs, "Floor": np.floor, "Ceil": np.ceil, "Round": np.round, "Sign": np.sign,
    "Sin": np.sin, "Cos": np.cos, "Erf": erf, "Sigmoid": _sigmoid, "Softplus": _softplus,
    "Reciprocal": lambda x: np.divide(1, x), "Softsign": lambda x: x / (1 + np.abs(x)),
    "Mish": lambda x: x * np.tanh(_softplus(x)),
}


def _relu(attrs: dict, x: Array) -> Array:
    return np.maximum(x, np.zeros((), x.dtype))


def _leaky_relu(attrs: dict, x: Array) -> Array:
    return np.where(x >= 0, x, attrs.get("alpha", 0.01) * x).astype(x.dtype)


def _prelu(attrs: dict, x: Array, slope: Array) -> Array:
    check_broadcasts_to("PRelu slope", slope.shape, x.shape)  # numpy would widen x
    return np.where(x < 0, slope * x, x).astype(x.dtype)


def _elu(attrs: dict, x: Array) -> Array:
    return np.where(x >= 0, x, attrs.get("alpha", 1.0) * np.expm1(x)).astype(x.dtype)


def _selu(attrs: dict, x: Array) -> Array:
    alpha = attrs.get("alpha", 1.67326319217681884765625)
    gamma = attrs.get("gamma", 1.05070102214813232421875)
    return (gamma * np.where(x > 0, x, alpha * np.expm1(x))).astype(x.dtype)


def _thresholded_relu(attrs: dict, x: Array) -> Array:
    return np.where(x > attrs.get("alpha", 1.0), x, 0).astype(x.dtype)


def _hard_sigmoid(attrs: dict, x: Array) -> Array:
    y = attrs.get("alpha", 0.2) * x + attrs.get("beta", 0.5)
    return np.clip(y, 0, 1).astype(x.dtype)


def _hard_swish(attrs: dict, x: Array) -> Array:
    return (x * np.clip(x * np.float32(1 / 6) + 0.5, 0, 1)).astype(x.dtype)


def _gelu(attrs: dict, x: Array) -> Array:
    x64 = x.astype(np.float64)
    if attrs.get("approximate", "none") == "tanh":
        inner = math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64 ** 3)
        return (0.5 * x64 * (1 + np.tanh(inner))).astype(x.dtype)
    return (0.5 * x64 * (1 + erf(x64 / math.sqrt(2)))).astype(x.dtype)


def _clip(attrs: dict, x: Array, lo: Array | None = None, hi: Array | None = None) -> Array:
    y = x if lo is None else np.maximum(x, lo)
    return (y if hi is None else np.minimum(y, hi)).astype(x.dtype, copy=False)


def _upgrade_clip(node: Node, opset: int, graph: Graph) -> None:
    if opset < 11:  # min/max were attributes
        dtype = input_dtype(node, graph)
        attr_to_input(node, graph, "min", 1, dtype)
        attr_to_input(node, graph, "max", 2, dtype)


# ---- binary and variadic ------------------------------------------------------------------
def _int_div(a: Array, b: Array) -> Array:
    """C-style integer division (truncates toward zero), as ONNX Runtime computes it."""
    q = np.abs(a) // np.abs(b)
    return np.where((a < 0) != (b < 0), -q, q)


def _div(attrs: dict, a: Array, b: Array) -> Array:
    if a.dtype.kind in "iu":
        return _int_div(a, b).astype(a.dtype)
    return np.divide(a, b).astype(a.dtype, copy=False)


def _mod(attrs: dict, a: Array, b: Array) -> Array:
    fn = np.fmod if attrs.get("fmod", 0) else np.mod
    return fn(a, b).astype(a.dtype, copy=False)


def _pow(attrs: dict, a: Array, b: Array) -> Array:
    return np.power(a, b).astype(a.dtype, copy=False)


def _binary(fn: Callable[[Array, Array], Array]) -> Callable[..., Array]:
    """A two-input op that keeps the first input's dtype."""
    def run(attrs: dict, a: Array, b: Array) -> Array:
        return np.asarray(fn(a, b)).astype(a.dtype, copy=False)
    return run


def _predicate(fn: Callable[[Array, Array], Array]) -> Callable[..., Array]:
    """A two-input op with a bool result (comparisons, logic)."""
    def run(attrs: dict, a: Array, b: Array) -> Array:
        return np.asarray(fn(a, b), dtype=bool)
    return run


def _variadic(fn: Callable[[Array, Array], Array]) -> Callable[..., Array]:
    """Sum/Max/Min over any number of broadcast inputs."""
    def run(attrs: dict, *xs: Array) -> Array:
        return np.asarray(functools.reduce(fn, xs)).astype(xs[0].dtype, copy=False)
    return run


def _mean(attrs: dict, *xs: Array) -> Array:
    total = functools.reduce(np.add, xs)
    return np.divide(total, len(xs)).astype(xs[0].dtype, copy=False)


def _where(attrs: dict, cond: Array, a: Array, b: Array) -> Array:
    return np.where(cond, a, b).astype(a.dtype, copy=False)


# ---- types (conversion rules: compiler.ops.dtypes) --------------------------------------
def _cast(attrs: dict, x: Array) -> Array:
    return cast_to(x, np_dtype(attrs["to"]), bool(attrs.get("saturate", 1)),
                   attrs.get("round_mode", "up"))


def _cast_like(attrs: dict, x: Array, like: Array) -> Array:
    return cast_to(x, like.dtype, bool(attrs.get("saturate", 1)), attrs.get("round_mode", "up"))


def _identity(attrs: dict, x: Array) -> Array:
    return x


OPS: dict[str, OpDef] = {name: OpDef(name, _same(fn)) for name, fn in UNARY.items()}
OPS["Not"] = OpDef("Not", lambda attrs, x: np.logical_not(x))
OPS["IsNaN"] = OpDef("IsNaN", lambda attrs, x: np.isnan(x))
OPS.update({
    "Relu": OpDef("Relu", _relu),
    "LeakyRelu": OpDef("LeakyRelu", _leaky_relu),
    "PRelu": OpDef("PRelu", _prelu),
    "Elu": OpDef("Elu", _elu),
    "Selu": OpDef("Selu", _selu),
    "ThresholdedRelu": OpDef("ThresholdedRelu", _thresholded_relu),
    "HardSigmoid": OpDef("HardSigmoid", _hard_sigmoid),
    "HardSwish": OpDef("HardSwish", _hard_swish),
    "Gelu": OpDef("Gelu", _gelu),
    "Clip": OpDef("Clip", _clip, upgrade=_upgrade_clip),
    "Add": OpDef("Add", _binary(np.add)),
    "Sub": OpDef("Sub", _binary(np.subtract)),
    "Mul": OpDef("Mul", _binary(np.multiply)),
    "Div": OpDef("Div", _div),
    "Mod": OpDef("Mod", _mod),
    "Pow": OpDef("Pow", _pow),
    "Equal": OpDef("Equal", _predicate(np.equal)),
    "Less": OpDef("Less", _predicate(np.less)),
    "Greater": OpDef("Greater", _predicate(np.greater)),
    "LessOrEqual": OpDef("LessOrEqual", _predicate(np.less_equal)),
    "GreaterOrEqual": OpDef("GreaterOrEqual", _predicate(np.greater_equal)),
    "And": OpDef("And", _predicate(np.logical_and)),
    "Or": OpDef("Or", _predicate(np.logical_or)),
    "Xor": OpDef("Xor", _predicate(np.logical_xor)),
    "Sum": OpDef("Sum", _variadic(np.add)),
    "Max": OpDef("Max", _variadic(np.maximum)),
    "Min": OpDef("Min", _variadic(np.minimum)),
    "Mean": OpDef("Mean", _mean),
    "Where": OpDef("Where", _where),
    "Cast": OpDef("Cast", _cast),
    "CastLike": OpDef("CastLike", _cast_like),
    "Identity": OpDef("Identity", _identity),
})
