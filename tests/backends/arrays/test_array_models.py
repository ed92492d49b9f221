"""The arrays' numpy models and formulas (no simulator): each PE kind's decomposition equals
a @ w, bit-plane skipping is exact exactly when the mask covers the nonzero planes, and the
registry answers what the engine's compiler asks."""

from __future__ import annotations

import numpy as np
import pytest

from backends.verilog import array_models as am
from backends.verilog import arrays
from compiler.errors import EtchError


@pytest.mark.parametrize("ww", [1, 2, 3, 4, 7, 8])
def test_booth_digits_rebuild_every_weight(ww: int) -> None:
    w = np.arange(-(1 << (ww - 1)), 1 << (ww - 1))
    d = am.booth_digits(w, ww)
    assert d.shape[0] == (ww + 1) // 2 and d.min() >= -2 and d.max() <= 2
    np.testing.assert_array_equal(sum(dj * 4**j for j, dj in enumerate(d)), w)


@pytest.mark.parametrize("bits", range(1, 9))
def test_bit_planes_top_plane_is_negative(bits: int) -> None:
    w = np.arange(-(1 << (bits - 1)), 1 << (bits - 1))
    planes = am.bit_planes(w, bits)
    rebuilt = sum(am.plane_weight(p, bits) * planes[p] for p in range(bits))
    np.testing.assert_array_equal(rebuilt, w)


@pytest.mark.parametrize("seed", range(5))
def test_models_equal_matmul(seed: int) -> None:
    rng = np.random.default_rng(seed)
    bits = int(rng.integers(1, 9))
    a = rng.integers(-256, 256, (7, 6))
    w = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), (6, 5))
    w[rng.random(w.shape) < 0.5] = 0
    want = a @ w
    for kind in arrays.KINDS.values():
        mask = arrays.plane_mask(w, bits) if kind.pe == "bitserial" else None
        np.testing.assert_array_equal(kind.model(a, w, bits, mask), want)


def test_skipping_a_nonzero_plane_changes_the_result() -> None:
    """The mask is trusted: the model (like the RTL) drops a skipped plane's contribution."""
    a = np.array([[3, -2]])
    w = np.array([[1], [2]])                               # planes 0 and 1 nonzero
    assert arrays.plane_mask(w, 4) == 0b0011
    assert am.bitserial(a, w, 4, 0b0011)[0, 0] == a @ w
    assert am.bitserial(a, w, 4, 0b0001)[0, 0] == 3        # plane 1 (2 * -2) skipped
    assert am.bitserial(a, np.array([[-8], [0]]), 4, 0b1000)[0, 0] == -24  # sign plane


def test_intervals_and_latencies() -> None:
    for kind in arrays.KINDS.values():
        serial = kind.pe == "bitserial"
        assert kind.interval(0b1011_0000, 8) == (3 if serial else 1)
        assert kind.interval(0b1011_0000, 4) == 1              # planes >= bits are not run
        assert kind.interval(0, 8) == 1                        # an all-zero tile: one pass
        assert kind.interval(None, 8) == (8 if serial else 1)
        fill = kind.latency(8, 8, 8, 0b1)
        assert kind.latency(8, 8, 8, 0b111) == fill + (2 if serial else 0)
        assert kind.latency(16, 16) >= kind.latency(8, 8) >= 1


def test_registry() -> None:
    kind = arrays.get("adder-tree", "mac")
    assert kind.module == "te_array_addertree_mac"
    assert all(p.is_file() for p in kind.sources())
    assert list(kind.parameters(4, 8, 9, 8, 20)) == ["ROWS", "COLS", "AW", "WW", "PW"]
    with pytest.raises(EtchError, match="no tensor-engine array for --engine systolic --pe x"):
        arrays.get("systolic", "x")


@pytest.mark.parametrize("rows,a_max,w_max", [(1, 1, 1), (8, 255, 127), (8, 256, 128),
                                              (5, 255, 2), (16, 255, 1)])
def test_psum_width_is_the_exact_bound(rows: int, a_max: int, w_max: int) -> None:
    pw = arrays.psum_width(rows, a_max, w_max)
    biggest = rows * a_max * w_max
    assert -(1 << (pw - 1)) <= -biggest and biggest <= (1 << (pw - 1)) - 1
    assert biggest > (1 << (pw - 2)) - 1                       # one bit fewer would not do
