"""The quantisation ops and quantisers: property tests against exact or float64 models."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from compiler import ops, reference
from compiler.ops.conv import conv_nd
from passes.gptq import gptq
from passes.int_lowering import act_params
from passes.quantizer import Scheme, dequantize, group_mult_max, output_error, rtn

REG = ops.registry()
SCHEMES = [Scheme(b) for b in range(2, 9)] + [Scheme(1, "binary"), Scheme(2, "ternary")] + \
    [Scheme(b, symmetric=False) for b in (2, 4, 8)]


def run(op: str, attrs: dict, *args: np.ndarray | None) -> np.ndarray:
    return ops.as_list(REG[op].run(attrs, *args))[0]


def ints(shape: tuple[int, ...], lo: int = -128, hi: int = 127, dtype: str = "int8") -> st:
    return hnp.arrays(dtype, shape, elements=st.integers(lo, hi))


@settings(max_examples=60, deadline=None)
@given(acc=ints((64,), -(1 << 31), (1 << 31) - 1, "int64"),
       real=st.floats(1e-9, 0.99, allow_nan=False), zero=st.integers(-128, 127))
def test_requantize_matches_float64(acc: np.ndarray, real: float, zero: int) -> None:
    """Exactly round-half-away(acc * M0 / 2^shift) (checked in rationals); against the float64
    real multiplier, within 1 LSB, and equal away from rounding ties (M0 has 31 bits)."""
    m0, shift = reference.quantize_multiplier(real)
    assert (1 << 30) <= m0 < (1 << 31)
    y = run("etch.Requantize", {"zero_point": zero, "qmin": -128, "qmax": 127}, acc, m0, shift)
    assert y.dtype == np.int8
    for a, got in zip(acc.tolist(), y.tolist()):
        r = Fraction(a * int(m0), 1 << int(shift))
        mag = math.floor(abs(r) + Fraction(1, 2))
        assert got == min(max((mag if r >= 0 else -mag) + zero, -128), 127)
    prod = acc * real
    ref = np.clip(np.sign(prod) * np.floor(np.abs(prod) + 0.5) + zero, -128, 127)
    assert np.abs(y - ref).max() <= 1
    tie = np.abs(np.abs(prod) % 1 - 0.5) < 1e-8 * np.abs(prod) + 1e-12
    assert np.array_equal(y[~tie], ref[~tie])


def test_requantize_rounds_half_away_from_zero() -> None:
    acc = np.array([1, 3, 5, -1, -3, -5], np.int64)
    m0, shift = reference.quantize_multiplier(0.5)
    y = run("etch.Requantize", {"qmin": -128, "qmax": 127}, acc, m0, shift)
    assert y.tolist() == [1, 2, 3, -1, -2, -3]


@settings(max_examples=40, deadline=None)
@given(a=ints((3, 5)), w=ints((5, 4)), za=st.integers(-128, 127),
       bias=ints((4,), -1000, 1000, "int32"))
def test_qgemm_is_int64_matmul(a: np.ndarray, w: np.ndarray, za: int, bias: np.ndarray) -> None:
    y = run("etch.QGemm", {}, a, w, bias, np.int8(za))
    want = (a.astype(np.int64) - za) @ w.astype(np.int64) + bias
    assert y.dtype == np.int32 and np.array_equal(y, want)


@settings(max_examples=30, deadline=None)
@given(a=ints((2, 3, 12)), w=ints((12, 4), -8, 7), mult=ints((3, 4), 1, 255, "int32"),
       za=st.integers(-128, 127))
def test_qgemm_group_multipliers(a: np.ndarray, w: np.ndarray, mult: np.ndarray,
                                 za: int) -> None:
    """With groups of 4 along K: sum_g mult[g, n] * (a_g - za) @ w_g, exactly."""
    y = run("etch.QGemm", {"group_size": 4}, a, w, None, np.int8(za), None, mult)
    want = sum(((a[..., 4 * g:4 * g + 4].astype(np.int64) - za) @ w[4 * g:4 * g + 4]) * mult[g]
               for g in range(3))
    assert np.array_equal(y, want)
    deq = run("etch.Dequant", {"group_axis": 0, "group_size": 4}, w, np.full((1, 4), 0.5,
                                                                            np.float32),
              None, mult)
    assert np.array_equal(deq, w * 0.5 * np.repeat(mult, 4, axis=0).astype(np.float32))


def test_group_multipliers_keep_the_accumulator_in_int32() -> None:
    for k in (9, 64, 1024, 4096):
        for scheme in SCHEMES:
            if scheme.symmetric:
                m = group_mult_max(k, scheme)
                assert 1 <= m <= 255
                assert k * 255 * max(-scheme.qmin, scheme.qmax) * m < (1 << 31)


@settings(max_examples=25, deadline=None)
@given(x=ints((1, 4, 5, 5)), w=ints((6, 2, 3, 3), -8, 7), zx=st.integers(-128, 127),
       stride=st.integers(1, 2))
def test_qconv_pads_with_the_zero_point(x: np.ndarray, w: np.ndarray, zx: int,
                                        stride: int) -> None:
    attrs = {"pads": [1, 1, 1, 1], "strides": [stride, stride], "group": 2}
    y = run("etch.QConv", attrs, x, w, None, np.int8(zx))
    want = conv_nd(attrs, x.astype(np.float64) - zx, w.astype(np.float64))
    assert y.dtype == np.int32 and np.array_equal(y, want.astype(np.int64))


@settings(max_examples=40, deadline=None)
@given(a=ints((16,)), b=ints((16,)), sa=st.floats(1e-3, 1.0), sb=st.floats(1e-3, 1.0),
       sy=st.floats(1e-3, 2.0), za=st.integers(-20, 20), zb=st.integers(-20, 20),
       zy=st.integers(-20, 20))
def test_qadd_within_one_lsb_of_float(a: np.ndarray, b: np.ndarray, sa: float, sb: float,
                                      sy: float, za: int, zb: int, zy: int) -> None:
    twice = 2 * max(sa, sb)
    (am, ash), (bm, bsh), (m0, sh) = (reference.quantize_multiplier(r) for r in
                                      (sa / twice, sb / twice, twice / ((1 << 20) * sy)))
    attrs = {"a_zero": za, "b_zero": zb, "zero_point": zy, "qmin": -128, "qmax": 127,
             "a_m0": int(am), "a_shift": int(ash), "b_m0": int(bm), "b_shift": int(bsh),
             "m0": int(m0), "shift": int(sh)}
    y = run("etch.QAdd", attrs, a, b).astype(np.int64)
    real = sa * (a.astype(np.float64) - za) + sb * (b.astype(np.float64) - zb)
    want = np.clip(np.rint(real / sy) + zy, -128, 127)
    assert np.abs(y - want).max() <= 1


def test_qsumpool_and_table_and_clamp() -> None:
    x = np.arange(-8, 8, dtype=np.int8).reshape(1, 1, 4, 4)
    assert run("etch.QSumPool", {"global": 1}, x, np.int8(-8)).item() == int((x + 8).sum())
    win = run("etch.QSumPool", {"kernel_shape": [2, 2], "strides": [2, 2]}, x, np.int8(0))
    assert win.shape == (1, 1, 2, 2) and win[0, 0, 0, 0] == -8 - 7 - 4 - 3
    table = np.arange(256).astype(np.uint8)[::-1].copy()
    t = run("etch.Table", {}, np.array([-128, 0, 127], np.int8), table)
    assert t.tolist() == [255, 127, 0]
    c = run("etch.Clamp", {"lo": -3, "hi": 2}, np.array([-5, 0, 5], np.int8))
    assert c.tolist() == [-3, 0, 2] and c.dtype == np.int8


def test_dequant_groups_repeat_along_the_group_axis() -> None:
    q = np.arange(8, dtype=np.int8).reshape(4, 2)
    scale = np.array([[1.0, 2.0], [10.0, 20.0]], np.float32)  # groups of 2 rows
    y = run("etch.Dequant", {"group_axis": 0, "group_size": 2}, q, scale,
            np.ones((2, 1), np.int8))
    assert np.array_equal(y, (q - 1) * np.repeat(scale, 2, axis=0))


@settings(max_examples=30, deadline=None)
@given(w=hnp.arrays(np.float64, (8, 32), elements=st.floats(-4, 4)),
       k=st.sampled_from(range(len(SCHEMES))), layout=st.sampled_from([(1, 32), (1, 8),
                                                                           (8, 1), (2, 1)]))
def test_rtn_round_trip_bounds(w: np.ndarray, k: int, layout: tuple[int, int]) -> None:
    """Codes stay in range; every unclipped weight is within half a step of its value; the
    clip search never does worse than plain absmax scaling."""
    scheme, (rg, cg) = SCHEMES[k], layout
    q, s, z = rtn(w, scheme, rg, cg)
    assert q.min() >= scheme.qmin and q.max() <= scheme.qmax
    w_hat = dequantize(q, s, z, rg, cg)
    plain = dequantize(*rtn(w, scheme, rg, cg, search=False), rg, cg)
    assert np.square(w_hat - w).sum() <= np.square(plain - w).sum() * (1 + 1e-9) + 1e-12
    if scheme.kind == "binary":
        return
    step = np.repeat(np.repeat(s, rg, axis=0), cg, axis=1)
    inside = (q > scheme.qmin) & (q < scheme.qmax)
    assert np.all(np.abs(w_hat - w)[inside] <= step[inside] / 2 * (1 + 1e-9))


@settings(max_examples=40, deadline=None)
@given(lo=st.floats(-100, 0), hi=st.floats(0, 100))
def test_activation_params_cover_the_range_and_zero(lo: float, hi: float) -> None:
    s, z = act_params(lo, hi)
    assert -128 <= z <= 127 and s > 0
    assert s * (-128 - z) <= lo + s and s * (127 - z) >= hi - s  # the range is covered
    assert np.isclose(s * (z - z), 0.0)  # zero is exact


def test_gptq_beats_rtn_on_correlated_inputs(rng: np.random.Generator) -> None:
    x = rng.normal(size=(512, 64)) @ rng.normal(size=(64, 64)) * 0.3 + rng.normal(size=(512, 64))
    h = x.T @ x
    w = rng.normal(size=(32, 64))
    for scheme in (Scheme(3), Scheme(4), Scheme(2, "ternary")):
        for rg, cg in ((1, 64), (1, 16), (32, 1)):
            q, s, z = rtn(w, scheme, rg, cg)
            e_rtn = output_error(w[None], dequantize(q, s, z, rg, cg)[None], h[None])
            q, s, z = gptq(w[None], h[None], scheme, rg, cg)
            e_gptq = output_error(w[None], dequantize(q[0], s[0], z[0], rg, cg)[None], h[None])
            assert e_gptq < 0.9 * e_rtn, (scheme, rg, cg)
