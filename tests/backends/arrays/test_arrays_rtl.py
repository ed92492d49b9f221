"""The compute arrays in Verilator: random weight tiles and vectors against each kind's numpy
model, bit for bit, and every vector's cycles against the latency/interval formulas of
`backends.verilog.arrays`. One simulator build holds every kind (module-scoped fixture,
content-hash cached); wide shape sweeps are `slow`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backends.verilog import arrays
from runtime import verilator_build as vb
from tests.backends.arrays import harness as h

pytestmark = pytest.mark.verilator
KINDS = tuple(arrays.KINDS)
IDS = [f"{e}-{p}" for e, p in KINDS]
DEFAULT = h.Config(KINDS, rows=5, cols=3)


@pytest.fixture(scope="module")
def design() -> tuple[h.Config, Path]:
    return DEFAULT, h.build(DEFAULT)


def _random_program(cfg: h.Config, pe: str, rng: np.random.Generator, tiles: int,
                    max_m: int = 12) -> list[h.Tile]:
    """Tiles of random bit widths, vector counts, gaps and (bit-serial) plane masks."""
    out = []
    for i in range(tiles):
        bits = cfg.ww if i == 0 else int(rng.integers(1, cfg.ww + 1))
        t = h.random_tile(cfg, rng, int(rng.integers(1, max_m + 1)), bits,
                          gaps=bool(rng.integers(0, 2)))
        t.w[rng.random(t.w.shape) < 0.3] = 0           # zero planes appear at small sizes
        extra = int(rng.integers(0, 256)) & int(rng.integers(0, 256))
        t.mask = arrays.plane_mask(t.w, bits) | extra if pe == "bitserial" else extra
        out.append(t)
    return out


def check(cfg: h.Config, kind: tuple[str, str], tiles: list[h.Tile], res: h.Result,
          timing: bool = True) -> None:
    """Values equal the model; with `timing`, cycles equal the formulas."""
    arr = arrays.get(*kind)
    want = np.concatenate([arr.model(t.a, t.w, t.bits, t.mask, cfg.ww) for t in tiles])
    np.testing.assert_array_equal(res.o, want)
    assert not res.busy_error, "busy was not exactly 'a vector is in flight'"
    if not timing:
        return
    k = 0
    for i, t in enumerate(tiles):
        lat = arr.latency(cfg.rows, cfg.cols, t.bits, t.mask)
        ival = arr.interval(t.mask, t.bits)
        gaps = t.gaps + [0] * len(t.a)
        assert list(res.t_out[k:k + len(t.a)] - res.t_accept[k:k + len(t.a)]) == \
            [lat] * len(t.a), f"tile {i}: latency != {lat}"
        steps = np.diff(res.t_accept[k:k + len(t.a)])
        assert list(steps) == [max(ival, g + 1) for g in gaps[1:len(t.a)]], \
            f"tile {i}: interval != {ival}"
        if k:  # a tile loads when the array drained (the cycle after o_valid), a row a cycle
            assert res.t_accept[k] == res.t_out[k - 1] + 1 + cfg.rows + gaps[0]
        k += len(t.a)


def lint(cfg: h.Config, kind: tuple[str, str]) -> None:
    """`verilator --lint-only -Wall` of the array alone, with cfg's parameters."""
    arr = arrays.get(*kind)
    args = arr.parameters(cfg.rows, cfg.cols, cfg.aw, cfg.ww, cfg.psum)
    vb.lint(arr.sources(), arr.module, extra=[f"-G{k}={v}" for k, v in args.items()])


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_lint_clean(kind: tuple[str, str]) -> None:
    """Small shapes here (Verilator takes seconds per column of a 16-row Booth adder tree);
    the slow sweep lints every shape it simulates, 16x16 included."""
    for rows, cols, pw in ((1, 1, 0), (5, 3, 12), (4, 8, 0)):
        lint(h.Config(KINDS, rows, cols, pw=pw), kind)


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_random_tiles_exact_and_on_time(design: tuple[h.Config, Path],
                                        kind: tuple[str, str]) -> None:
    cfg, exe = design
    rng = np.random.default_rng(KINDS.index(kind))
    tiles = _random_program(cfg, kind[1], rng, tiles=6)
    check(cfg, kind, tiles, h.run(cfg, exe, kind, tiles))


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_back_pressure_keeps_order(design: tuple[h.Config, Path],
                                   kind: tuple[str, str]) -> None:
    """Harness stalls on both sides: results stay exact and in order."""
    cfg, exe = design
    rng = np.random.default_rng(7)
    tiles = _random_program(cfg, kind[1], rng, tiles=3)
    check(cfg, kind, tiles, h.run(cfg, exe, kind, tiles, stall=35, seed=3), timing=False)


def test_extreme_values(design: tuple[h.Config, Path]) -> None:
    """The corners of the signed ranges (-2^(AW-1) x -2^(WW-1) in every row: the largest sum)."""
    cfg, exe = design
    lo_a, lo_w = -(1 << (cfg.aw - 1)), -(1 << (cfg.ww - 1))
    a = np.array([[lo_a] * cfg.rows, [lo_a + 1] * cfg.rows, [-lo_a - 1] * cfg.rows])
    w = np.full((cfg.rows, cfg.cols), lo_w)
    w[:, -1] = -lo_w - 1
    for kind in KINDS:
        tiles = [h.Tile(w, a, cfg.ww, None)]
        check(cfg, kind, tiles, h.run(cfg, exe, kind, tiles))


@pytest.mark.slow
@pytest.mark.parametrize("rows,cols,aw,ww,pw", [
    (1, 1, 9, 8, 0), (2, 7, 9, 8, 0), (8, 8, 9, 8, 0), (16, 16, 9, 8, 0),
    (8, 4, 9, 8, 13),      # tight bound: 2-bit weights, 8 rows of |a| <= 255
    (7, 5, 5, 4, 0), (4, 3, 9, 3, 0), (3, 2, 8, 6, 0)])
def test_shape_sweep(rows: int, cols: int, aw: int, ww: int, pw: int) -> None:
    cfg = h.Config(KINDS, rows, cols, aw, ww, pw)
    exe = h.build(cfg)
    rng = np.random.default_rng(rows * 100 + cols)
    for kind in KINDS:
        lint(cfg, kind)
        tiles = _random_program(cfg, kind[1], rng, tiles=5, max_m=40)
        if pw:  # weights within the bound the tight width was sized for
            for t in tiles:
                t.w = np.clip(t.w, -2, 1)
                t.bits = max(t.bits, 2)
                t.mask = arrays.plane_mask(t.w, t.bits) if kind[1] == "bitserial" else None
                t.a = np.clip(t.a, -255, 255)
        check(cfg, kind, tiles, h.run(cfg, exe, kind, tiles))
