"""The integer row ops' reference semantics (compiler/ops/etch_qnorm.py): the exact primitives
(`reference.isqrt`, `reference.div_round`), hand-computed etch.QLayerNorm / etch.QSoftmax
cases and their extremes (a constant row, n = 1, the largest variance, masks), an
independent big-integer model of both, and the real function the passes' constants make
them approximate (within half an output step of float64 LayerNorm / Softmax)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from compiler import ops, reference
from compiler.errors import EtchError
from passes.int_layernorm import integer_params, sqrt_bits
from passes.int_softmax import exp_table, multiplier

QLN = ops.registry()["etch.QLayerNorm"].run
QSM = ops.registry()["etch.QSoftmax"].run


def _ln_attrs(k: int = 0, eps: int = 0, shift: int = 0, zero: int = 0) -> dict:
    return {"axis": -1, "sqrt_bits": k, "eps": eps, "shift": shift, "zero_point": zero,
            "qmin": -128, "qmax": 127}


def _sm_attrs(mult: int, shift: int = 0, zero: int = 0, axis: int = -1) -> dict:
    return {"axis": axis, "mult": mult, "shift": shift, "zero_point": zero, "qmin": -128,
            "qmax": 127}


def _round_half_away(f: Fraction) -> int:
    mag = math.floor(abs(f) + Fraction(1, 2))
    return -mag if f < 0 else mag


# ---- primitives --------------------------------------------------------------------------
def test_isqrt_is_exact_at_squares_and_their_neighbours() -> None:
    rng = np.random.default_rng(0)
    roots = np.concatenate([np.arange(0, 70), rng.integers(0, (1 << 31) - 1, 2000),
                            [(1 << 26) + 1, (1 << 31) - 1, 3037000499 // 2]]).astype(np.int64)
    r = np.concatenate([roots * roots, roots * roots - 1, roots * roots + 1,
                        rng.integers(0, 1 << 62, 2000), [(1 << 62) - 1, (1 << 53) + 1]])
    r = r[(r >= 0) & (r < 1 << 62)]
    got = reference.isqrt(r)
    assert [int(v) for v in got] == [math.isqrt(int(v)) for v in r]


def test_isqrt_refuses_what_it_cannot_hold() -> None:
    with pytest.raises(EtchError, match="isqrt"):
        reference.isqrt(np.array([1 << 62]))
    with pytest.raises(EtchError, match="isqrt"):
        reference.isqrt(np.array([-1]))


def test_div_round_rounds_half_away_from_zero() -> None:
    a = np.array([7, -7, 5, -5, 6, -6, 0, 1, -1, 3, -3])
    b = np.array([2, 2, 2, 2, 4, 4, 3, 3, 3, 3, 3])
    assert reference.div_round(a, b).tolist() == [4, -4, 3, -3, 2, -2, 0, 0, 0, 1, -1]
    rng = np.random.default_rng(1)
    a, b = rng.integers(-(1 << 60), 1 << 60, 500), rng.integers(1, 1 << 40, 500)
    assert [int(v) for v in reference.div_round(a, b)] == \
        [_round_half_away(Fraction(int(x), int(y))) for x, y in zip(a, b)]


# ---- etch.QLayerNorm by hand -------------------------------------------------------------
def test_layer_norm_by_hand() -> None:
    """q = 1..4: S = 10, SS = 30, n SS - S^2 = 20, D = isqrt(20) = 4, num = 4q - 10."""
    q = np.array([[1, 2, 3, 4]], np.int8)
    ten, zero = np.full(4, 10, np.int32), np.zeros(4, np.int32)
    assert QLN(_ln_attrs(), q, ten, zero).tolist() == [[-15, -5, 5, 15]]
    # a bias of 3 enters as 3 * D: (-60 + 12) / 4 = -12, ...
    assert QLN(_ln_attrs(), q, ten, np.full(4, 3, np.int32)).tolist() == [[-12, -2, 8, 18]]
    # num * 3 / 4 = -4.5, -1.5, 1.5, 4.5: halves round away from zero
    assert QLN(_ln_attrs(), q, np.full(4, 3, np.int32), zero).tolist() == [[-5, -2, 2, 5]]
    # one fraction bit: D = isqrt(20 << 2) = 8, shift 1 divides by 16; + zero point, clamped
    y = QLN(_ln_attrs(k=1, shift=1, zero=100), q, np.full(4, 64, np.int32), zero)
    assert y.tolist() == [[76, 92, 108, 124]]
    y = QLN(_ln_attrs(k=1, shift=1, zero=120), q, np.full(4, 64, np.int32), zero)
    assert y.tolist() == [[96, 112, 127, 127]]


def test_layer_norm_of_a_constant_row_and_of_one_element_is_the_bias() -> None:
    bias = np.array([-300, -5, 0, 6, 7, 300], np.int32)
    for eps in (0, 1000):
        q = np.full((2, 6), -128, np.int8)
        q[1] = 127
        y = QLN(_ln_attrs(eps=eps, shift=1), q, np.full(6, 1 << 20, np.int32), bias)
        # round(bias / 2): -150, -2.5 -> -3, 0, 3, 3.5 -> 4, 150 (clamped to int8)
        assert y.tolist() == [[-128, -3, 0, 3, 4, 127]] * 2
    one = np.array([[-128], [0], [127]], np.int8)
    y = QLN(_ln_attrs(k=16, eps=123456, shift=3), one, np.array([999], np.int32),
            np.array([-20], np.int32))
    assert y.ravel().tolist() == [-3, -3, -3]


def test_layer_norm_overflow_is_an_error_not_a_wrap_around() -> None:
    q = np.zeros((1, 768), np.int8)
    big = np.full(768, (1 << 31) - 1, np.int32)
    with pytest.raises(EtchError, match="overflow"):
        QLN(_ln_attrs(k=9, shift=40), q, big, big)
    with pytest.raises(EtchError, match="2\\^62"):
        QLN(_ln_attrs(k=20), q, big, big)


def _big_int_layer_norm(q: np.ndarray, gain: np.ndarray, bias: np.ndarray, k: int, eps: int,
                        shift: int, zero: int) -> list[list[int]]:
    """etch.QLayerNorm in Python integers (math.isqrt, Fractions): no int64 anywhere."""
    out = []
    for row in q.astype(int).tolist():
        n, s, ss = len(row), sum(row), sum(v * v for v in row)
        d = max(math.isqrt(((n * ss - s * s) << 2 * k) + eps), 1)
        out.append([min(max(_round_half_away(Fraction((n * v - s) * int(g) + int(b) * d,
                                                      d << shift)) + zero, -128), 127)
                    for v, g, b in zip(row, gain, bias)])
    return out


@pytest.mark.parametrize("n", [1, 2, 7, 64, 768])
def test_layer_norm_matches_big_integers_and_float_within_half_a_step(n: int) -> None:
    """Random rows, a constant row and the largest variance (alternating -128/127), with
    the constants the pass chooses: exactly the big-integer model, and within half an
    output step (plus the constants' rounding) of float64 LayerNorm of the real values."""
    rng = np.random.default_rng(n)
    q = np.clip(rng.normal(0, 40, (6, n)), -128, 127).astype(np.int8)
    q[0], q[1] = 17, np.where(np.arange(n) % 2, 127, -128)
    s_x, z_x, epsilon = 0.04, -3, 1e-5
    gamma, beta = rng.normal(1, 0.5, n), rng.normal(0, 0.3, n)
    x = s_x * (q.astype(np.float64) - z_x)
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    real = (x - mean) / np.sqrt(var + epsilon) * gamma + beta
    s_y = float(np.abs(real).max()) / 120
    k, eps = sqrt_bits(n, epsilon, s_x)
    shift, gain, bias = integer_params(gamma, beta, s_y, n, k, eps)
    y = QLN(_ln_attrs(k, eps, shift, 2), q, gain, bias)
    assert y.tolist() == _big_int_layer_norm(q, gain, bias, k, eps, shift, 2)
    assert np.abs(y - (real / s_y + 2)).max() <= 0.5 + 1e-3


# ---- etch.QSoftmax by hand ---------------------------------------------------------------
def _table() -> np.ndarray:
    """e = 8, 4, 2, 1 for d = 0, -1, -2, -3; 0 below."""
    t = np.zeros(256, np.int32)
    t[252:] = [1, 2, 4, 8]
    return t


def test_softmax_by_hand() -> None:
    q = np.array([[0, -1, -2]], np.int8)  # e = 8, 4, 2; Z = 14
    assert QSM(_sm_attrs(14), q, _table()).tolist() == [[8, 4, 2]]
    # 800 / 14 = 57.1, 400 / 14 = 28.6, 200 / 14 = 14.3; zero point -128
    assert QSM(_sm_attrs(100, zero=-128), q, _table()).tolist() == [[-71, -99, -114]]
    # shift 2 divides by 4 Z: 1600 / 56 = 28.6 -> 29, 14.3 -> 14, 7.1 -> 7
    assert QSM(_sm_attrs(200, shift=2), q, _table()).tolist() == [[29, 14, 7]]
    # the max decides the table's origin: shifting every code changes nothing
    assert QSM(_sm_attrs(14), (q + 100).astype(np.int8), _table()).tolist() == [[8, 4, 2]]
    # along axis 0 of a column
    assert QSM(_sm_attrs(14, axis=0), q.T.copy(), _table()).ravel().tolist() == [8, 4, 2]


def test_softmax_extremes() -> None:
    t = exp_table(0.05)
    assert t[-1] == 1 << 20 and t[0] == round((1 << 20) * math.exp(-0.05 * 255))
    one = np.array([[-128], [127]], np.int8)  # n = 1: probability 1
    assert QSM(_sm_attrs(255, zero=-128), one, t).ravel().tolist() == [127, 127]
    t = exp_table(0.005)  # d = -255 reads the table's first entry, e^-1.275
    wide = np.array([[127, -128]], np.int8)
    y = QSM(_sm_attrs(127), wide, t)
    z = int(t[-1]) + int(t[0])
    assert y.tolist() == [[round(127 * (1 << 20) / z), round(127 * int(t[0]) / z)]] \
        == [[99, 28]]
    u = np.array([[255, 0]], np.uint8)
    assert QSM(_sm_attrs(127), u, t).tolist() == y.tolist()


def test_softmax_masks() -> None:
    q = np.array([[0, -1, -2], [-1, 0, -4], [5, 6, 7]], np.int8)
    mask = np.array([[0, 1, 0], [0, 1, 0], [1, 1, 1]], np.uint8)
    # row 0: e = 8, 0, 2; row 1: the max (0) is masked, m = -1: e = 8, 0, 1 (d = -3);
    # row 2: every entry masked: all kept, e = 2, 4, 8
    y = QSM(_sm_attrs(90), q, _table(), mask)
    assert y.tolist() == [[72, 0, 18], [80, 0, 10], [13, 26, 51]]
    # a mask broadcast along the rows
    row = np.array([0, 0, 1], np.uint8)
    assert QSM(_sm_attrs(12), q[:1], _table(), row).tolist() == [[8, 4, 0]]


def test_softmax_overflow_and_bad_tables_are_errors() -> None:
    q = np.zeros((1, 4), np.int8)
    with pytest.raises(EtchError, match="overflow"):
        QSM(_sm_attrs(1 << 30, shift=60), q, exp_table(0.1))
    with pytest.raises(EtchError, match="256 non-negative"):
        QSM(_sm_attrs(1), q, np.zeros(256, np.int32))


@pytest.mark.parametrize("n", [1, 8, 197])
def test_softmax_is_within_half_a_step_of_float(n: int) -> None:
    rng = np.random.default_rng(n)
    q = np.clip(rng.normal(0, 50, (8, n)), -128, 127).astype(np.int8)
    q[0] = 3
    s_x = 0.07
    x = s_x * q.astype(np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    real = e / e.sum(-1, keepdims=True)
    s_y = float(real.max()) / 255
    shift, mult = multiplier(exp_table(s_x), n, s_y)
    y = QSM(_sm_attrs(mult, shift, -128), q, exp_table(s_x))
    # the table's 20 bits add at most n / 2^21 of Z
    assert np.abs(y - (real / s_y - 128)).max() <= 0.5 + 255 * n * 2.0 ** -20
