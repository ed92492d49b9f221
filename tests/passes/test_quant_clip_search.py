"""The clip searches choose exactly what the plain loops over the ratio grid chose.

`fit` (weight error) and `_block_output_fit` (output error d H d^T) compute the dequantisation
error in float64 in place, without `codes`' int64 round trips; both are checked here against
the implementation before that change, ties and convolution groups included; round to
nearest of a float32 matrix equals that of its float64 copy.
"""

from __future__ import annotations

import numpy as np
import pytest

from passes import quantizer
from passes.quantizer import Scheme, codes, ratios


def _reference_output_fit(b: np.ndarray, h: np.ndarray, scheme: Scheme,
                          g: int) -> tuple[np.ndarray, np.ndarray]:
    best = None
    for r in ratios(scheme):
        s, z = quantizer._candidate(b, r, scheme)
        d = (codes(b, s[:, None], z[:, None], scheme) - z[:, None]) * s[:, None] - b
        dg = d.reshape(g, -1, d.shape[1])
        e = np.einsum("gpk,gpk->gp", dg @ h, dg).reshape(-1)
        if best is None:
            best = (s, z, e)
            continue
        better = e < best[2]
        best = (np.where(better, s, best[0]), np.where(better, z, best[1]),
                np.minimum(e, best[2]))
    return best[0], best[1]


def _reference_fit(blocks: np.ndarray, scheme: Scheme) -> tuple[np.ndarray, np.ndarray]:
    best_s, best_z = quantizer._candidate(blocks, 1.0, scheme)
    q = codes(blocks, best_s[:, None], best_z[:, None], scheme)
    best_e = np.square((q - best_z[:, None]) * best_s[:, None] - blocks).sum(axis=1)
    for r in ratios(scheme)[1:]:
        s, z = quantizer._candidate(blocks, r, scheme)
        q = codes(blocks, s[:, None], z[:, None], scheme)
        e = np.square((q - z[:, None]) * s[:, None] - blocks).sum(axis=1)
        better = e < best_e
        best_s, best_z = np.where(better, s, best_s), np.where(better, z, best_z)
        best_e = np.minimum(e, best_e)
    return best_s, best_z


def _hessian(rng: np.random.Generator, g: int, e: int, rows: int = 96) -> np.ndarray:
    """Correlated inputs with a common offset (as after a LayerNorm or a ReLU)."""
    x = rng.normal(0, 1, (g, rows, e)) + rng.normal(0.5, 1, (g, rows, 1))
    return np.einsum("grk,grl->gkl", x, x)


SCHEMES = [Scheme(8), Scheme(4), Scheme(3, "int", False), Scheme(2, "ternary"),
           Scheme(4, half_scales=True)]


@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: s.describe())
@pytest.mark.parametrize("g", [1, 4])
def test_output_search_matches_float64_loop(scheme: Scheme, g: int) -> None:
    rng = np.random.default_rng(g * 7 + scheme.bits)
    n, e = 64 * g, 48
    b = rng.normal(0, 0.05, (n, e))
    b[::9] *= rng.uniform(0.5, 8.0, (len(b[::9]), 1))  # rows of several magnitudes
    b[5] = 0.0  # every ratio ties: the first (no clip) is kept
    b[6, :] = 0.01  # a constant row: many ratios give equal errors
    h = _hessian(rng, g, e)
    want = _reference_output_fit(b, h, scheme, g)
    got = quantizer._block_output_fit(b, h, scheme, g)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("scheme", SCHEMES + [Scheme(1, "binary")], ids=lambda s: s.describe())
def test_weight_search_matches_float64_loop(scheme: Scheme) -> None:
    rng = np.random.default_rng(scheme.bits)
    blocks = rng.normal(0, 0.05, (200, 64))
    blocks[3] = 0.0
    got, want = quantizer.fit(blocks, scheme), _reference_fit(blocks, scheme)
    if scheme.kind == "binary":
        want = (np.where(np.abs(blocks).mean(1) > 0, np.abs(blocks).mean(1), 1.0), want[1])
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("scheme", [Scheme(8), Scheme(4, symmetric=False),
                                    Scheme(2, kind="ternary")])
@pytest.mark.parametrize("chunk", [1, 300, 1 << 16])
def test_fit_in_row_chunks_chooses_what_the_whole_matrix_search_chose(
        scheme: Scheme, chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """`fit` searches rows in chunks (one row, 300 elements' worth, the default): the same
    scales and zeros, bit for bit, as one search over all rows, ties included."""
    rng = np.random.default_rng(chunk)
    b = rng.standard_normal((203, 97)) * rng.uniform(0.01, 3, (203, 1))
    b[::5] = np.round(b[::5] * 4) / 4
    whole = quantizer._fit_rows(b, scheme, True)
    monkeypatch.setattr(quantizer, "FIT_CHUNK", chunk)
    got = quantizer.fit(b, scheme)
    assert all(np.array_equal(x, y) for x, y in zip(got, whole))


@pytest.mark.parametrize("scheme", [Scheme(8), Scheme(4, symmetric=False), Scheme(3),
                                    Scheme(2, kind="ternary"), Scheme(1, "binary")],
                         ids=lambda s: s.describe())
@pytest.mark.parametrize("blocks", [(1, 97), (1, 32), (4, 1)])
def test_rtn_of_a_float32_matrix_equals_rtn_of_its_float64_copy(
        scheme: Scheme, blocks: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    """Round to nearest and the weight error take the float32 matrix (`_quantise` leaves a
    large layer's float64 copy out) and give bit for bit what its float64 copy gives: codes,
    scales, zeros and error, in row chunks (CODES_CHUNK and FIT_CHUNK made small) too."""
    rng = np.random.default_rng(blocks[1])
    m32 = (rng.standard_normal((64, 97 if blocks[1] == 97 else 128))
           * rng.uniform(0.01, 3, (64, 1))).astype(np.float32)
    m32[7] = 0.0
    rg, cg = blocks
    for codes_chunk, fit_chunk in [(1 << 20, 1 << 16), (300, 200)]:
        monkeypatch.setattr(quantizer, "CODES_CHUNK", codes_chunk)
        monkeypatch.setattr(quantizer, "FIT_CHUNK", fit_chunk)
        got = quantizer.rtn(m32, scheme, rg, cg)
        want = quantizer.rtn(m32.astype(np.float64), scheme, rg, cg)
        assert got[0].dtype == np.int16
        assert all(np.array_equal(x, y) for x, y in zip(got, want))
        assert quantizer.weight_error(m32, *got, rg, cg) == \
            quantizer.weight_error(m32.astype(np.float64), *want, rg, cg)
