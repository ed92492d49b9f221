"""etch.QLayerNorm and etch.QSoftmax on the TVM backend (backends/tvm/lower/int_norm.py) equal
the reference bit for bit: random rows of several shapes and axes, int8 and uint8 codes,
constant rows and the largest variance, int32 and int64 row sums, masks (causal,
broadcast, a fully masked row), with the constants the passes choose."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import te

from backends.tvm.lower.int_norm import div_round, isqrt
from compiler import reference
from passes.int_layernorm import integer_params, sqrt_bits
from passes.int_softmax import exp_table, multiplier
from tests.backends.test_tvm_int import IntGraph, run_tvm


def _primitive(fn, *arrays: np.ndarray) -> np.ndarray:
    """fn over int64 vectors, compiled for the host."""
    n = arrays[0].size
    ins = [te.placeholder((n,), "int64") for _ in arrays]
    out = te.compute((n,), lambda i: fn(*(t(i) for t in ins)))
    f = tvm.compile(tvm.IRModule({"main": te.create_prim_func([*ins, out])}),
                    target=tvm.target.Target({"kind": "llvm"}))
    got = tvm.runtime.tensor(np.zeros(n, np.int64))
    f(*(tvm.runtime.tensor(a) for a in arrays), got)
    return got.numpy()


def test_isqrt_and_div_round_primitives_match_the_reference() -> None:
    """isqrt exact below 2^62; div_round exact for quotients below 2^51 (ties included) and
    saturating like the reference above (an 8-bit result cannot tell them apart)."""
    rng = np.random.default_rng(0)
    roots = rng.integers(0, 1 << 31, 300)
    r = np.concatenate([roots * roots, roots * roots - 1, rng.integers(0, 1 << 62, 300)])
    r = np.maximum(r, 0)
    np.testing.assert_array_equal(_primitive(isqrt, r), reference.isqrt(r))
    b = rng.integers(1, 1 << 40, 600)
    a = rng.integers(-(1 << 50), 1 << 50, 600) * rng.integers(1, 1 << 11, 600)
    a[:4], b[:4] = [7, -7, 5, -5], 2  # ties
    a[4:8], b[4:8] = [(1 << 62) - 1, -(1 << 62), 1 << 61, 3], [1, 3, 7, 1 << 40]
    got, want = _primitive(div_round, a, b), reference.div_round(a, b)
    small = np.abs(want) < 1 << 51
    np.testing.assert_array_equal(got[small], want[small])
    np.testing.assert_array_equal(np.clip(got, -512, 512), np.clip(want, -512, 512))


def test_div_round_by_a_reciprocal_matches_the_reference() -> None:
    """The row kernels' form: one float64 reciprocal of the divisor per row, a product per
    element, the exact remainder's correction: exact for quotients below 2^50 (ties, the
    8-bit outputs' range and far beyond), saturating like the reference above."""
    rng = np.random.default_rng(1)
    b = np.concatenate([rng.integers(1, 1 << 40, 500), rng.integers(1, 1 << 62, 100),
                        [3, 7, 1 << 61, (1 << 62) - 1]])
    q = np.concatenate([rng.integers(-300, 300, 300), rng.integers(-(1 << 20), 1 << 20, 304)])
    a = np.clip(q.astype(np.float64) * b, -(2.0 ** 62), 2.0 ** 62).astype(np.int64) + \
        rng.integers(-3, 4, q.size)
    a[:4], b[:4] = [7, -7, 5, -5], 2  # ties
    got = _primitive(lambda x, y: div_round(x, y, 1.0 / y.astype("float64")), a, b)
    want = reference.div_round(a, b)
    small = np.abs(want) < 1 << 50
    np.testing.assert_array_equal(got[small], want[small])
    np.testing.assert_array_equal(np.clip(got, -512, 512), np.clip(want, -512, 512))


def _layer_norm(case: IntGraph, x: str, axis: int, s_x: float, s_y: float,
                out: str = "y") -> str:
    shape = case.g.values[x].shape
    inner = shape[axis:]
    n = int(np.prod(inner))
    gamma, beta = case.rng.normal(1, 0.5, inner), case.rng.normal(0, 0.5, inner)
    k, eps = sqrt_bits(n, 1e-5, s_x)
    shift, gain, bias = integer_params(gamma, beta, s_y, n, k, eps)
    return case.op("etch.QLayerNorm", [x, case.const("gain", gain), case.const("bias", bias)],
                   out, axis=axis, sqrt_bits=k, eps=eps, shift=shift, zero_point=-3,
                   qmin=-128, qmax=127, to="int8")


@pytest.mark.parametrize("shape,axis,dtype", [
    ((3, 5, 64), -1, "int8"), ((2, 7), 1, "int8"), ((2, 3, 4, 8), 2, "int8"),
    ((4, 197, 48), 2, "uint8"), ((5, 1), -1, "int8"), ((1, 2, 131072), -1, "int8"),
])
def test_layer_norm_matches_the_reference(shape: tuple, axis: int, dtype: str) -> None:
    """The last case's rows overflow int32 sums of squares: int64 row sums."""
    case = IntGraph(sum(shape))
    x = case.ints("x", dtype, shape)
    data = case.feeds[x].reshape(-1, int(np.prod(shape[axis:])))
    info = np.iinfo(dtype)
    data[0] = info.min + 5  # a constant row: the bias
    if len(data) > 1:
        data[1] = np.where(np.arange(data.shape[1]) % 2, info.max, info.min)
    run_tvm(case.outputs(_layer_norm(case, x, axis, 0.03, 0.05)))


def _softmax(case: IntGraph, x: str, axis: int, s_x: float, mask: str | None = None) -> str:
    n = case.g.values[x].shape[axis]
    table = exp_table(s_x)
    shift, mult = multiplier(table, n, 0.6 / 255)
    inputs = [x, case.const("table", table)] + ([mask] if mask else [])
    return case.op("etch.QSoftmax", inputs, "y", axis=axis, mult=mult, shift=shift,
                   zero_point=-128, qmin=-128, qmax=127, to="int8")


@pytest.mark.parametrize("shape,axis,dtype", [
    ((2, 3, 17), -1, "int8"), ((2, 5, 3), 1, "int8"), ((4, 197), 1, "uint8"),
    ((3, 1), 1, "int8"), ((2, 4, 64, 64), 3, "int8"),
])
def test_softmax_matches_the_reference(shape: tuple, axis: int, dtype: str) -> None:
    case = IntGraph(len(shape) + shape[axis])
    x = case.ints("x", dtype, shape)
    run_tvm(case.outputs(_softmax(case, x, axis, 0.04)))


def test_masked_softmax_matches_the_reference() -> None:
    """A causal mask broadcast over batch and heads, one row fully masked."""
    case = IntGraph(3)
    x = case.ints("x", "int8", (2, 3, 8, 8))
    mask = np.triu(np.ones((8, 8), np.uint8), 1)
    mask[5] = 1
    run_tvm(case.outputs(_softmax(case, x, 3, 0.1, case.const("mask", mask))))


def test_softmax_sums_in_int64_when_a_row_could_overflow_int32() -> None:
    case = IntGraph(4)
    x = case.ints("x", "int8", (2, 4096), lo=100)  # 4096 * 2^20 >= 2^31
    run_tvm(case.outputs(_softmax(case, x, 1, 0.001)))
