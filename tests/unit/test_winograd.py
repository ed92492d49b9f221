"""compiler/winograd.py: the F(2, 3) and F(4, 3) matrices compute 3x3 correlation exactly in
exact arithmetic, and the float32 algorithm stays within the stated tolerance of direct
convolution (the bound the TVM kernels are held to)."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import winograd
from compiler.ops import registry


def _direct(x: np.ndarray, w: np.ndarray, pads: tuple[int, int, int, int]) -> np.ndarray:
    y = registry()["Conv"].run({"pads": list(pads[:2]) + list(pads[2:])}, x, w)
    return y[0] if isinstance(y, (list, tuple)) else y


@pytest.mark.parametrize("m", winograd.TILES)
def test_one_tile_is_exact_in_float64(m: int, rng) -> None:
    at, bt, g = winograd.matrices(m)
    d, k = rng.normal(size=(m + 2, m + 2)), rng.normal(size=(3, 3))
    got = at @ ((g @ k @ g.T) * (bt @ d @ bt.T)) @ at.T
    want = np.array([[np.sum(d[i:i + 3, j:j + 3] * k) for j in range(m)] for i in range(m)])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("m", winograd.TILES)
@pytest.mark.parametrize("shape,pads", [((1, 64, 13, 11), (1, 1, 1, 1)),
                                        ((2, 256, 7, 9), (1, 1, 1, 1)),
                                        ((1, 16, 10, 12), (0, 2, 1, 0))])
def test_float32_within_tolerance_of_direct(m: int, shape, pads, rng) -> None:
    x = rng.normal(size=shape).astype(np.float32)
    w = (rng.normal(size=(8, shape[1], 3, 3)) / np.sqrt(9 * shape[1])).astype(np.float32)
    want = _direct(x, w, pads)
    got = winograd.conv2d(x, w, m, pads)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= winograd.TOLERANCE[m] * np.abs(want).max()


def test_only_f2_and_f4() -> None:
    with pytest.raises(ValueError, match="F\\(6, 3\\)"):
        winograd.matrices(6)
