"""The reference Erf: scipy's vectorised erf gives math.erf's values once rounded."""

from __future__ import annotations

import math

import numpy as np

from compiler.ops.elementwise import erf


def _math_erf(x: np.ndarray) -> np.ndarray:
    ref = np.array([math.erf(v) for v in x.astype(np.float64).ravel()])
    return ref.reshape(x.shape).astype(x.dtype)


def _float32_samples() -> np.ndarray:
    """Every float32 in [-4, 4] on a dense grid, random bit patterns, and the edges."""
    rng = np.random.default_rng(0)
    grid = np.linspace(-4.0, 4.0, 400_001, dtype=np.float32)
    bits = rng.integers(0, 1 << 32, 400_000, dtype=np.uint64).astype(np.uint32)
    rand = bits.view(np.float32)
    rand = rand[np.isfinite(rand)]
    edges = np.array([0.0, -0.0, 1e-45, -1e-45, 1e-38, 3.9, 3.92, 10.0, -10.0,
                      np.finfo(np.float32).max, np.inf, -np.inf], np.float32)
    return np.concatenate([grid, rand, edges])


def test_float32_erf_matches_math_erf_bit_for_bit() -> None:
    x = _float32_samples()
    got, want = erf(x), _math_erf(x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_float16_erf_matches_math_erf() -> None:
    x = np.linspace(-5, 5, 20_001).astype(np.float16)
    np.testing.assert_array_equal(erf(x), _math_erf(x))


def test_float64_erf_is_math_erf() -> None:
    x = np.random.default_rng(1).normal(0, 2, 10_000)
    np.testing.assert_array_equal(erf(x), _math_erf(x))


def test_erf_nan_and_shape() -> None:
    x = np.array([[np.nan, 0.5], [-0.5, 2.0]], np.float32)
    got = erf(x)
    assert got.shape == (2, 2) and np.isnan(got[0, 0])
    np.testing.assert_array_equal(got[1], _math_erf(x[1]))
