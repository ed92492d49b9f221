"""Yosys area of the arrays (the shared flow of backends/verilog/area.py) and the arrays
benchmark's bookkeeping. The goals themselves are measured by `etch bench arrays`."""

from __future__ import annotations

import pytest

from backends.verilog import arrays
from backends.verilog.area import flat_cells, synth_area
from benchmarks import bench_arrays


def _area(engine: str, pe: str, rows: int, cols: int, **kw: object) -> dict:
    kind = arrays.get(engine, pe)
    params = kind.parameters(rows, cols, 9, 8, arrays.psum_width(rows, 256, 128))
    return synth_area(kind.sources(), kind.module, params=params, **kw)


def _module(area: dict, name: str) -> dict:
    found = [m for k, m in area["modules"].items() if k.split("$")[0].split("(")[0] == name]
    assert len(found) == 1, area["modules"]
    return found[0]


def test_per_module_totals_count_every_instance() -> None:
    area = _area("systolic", "mac", 2, 3, flatten=False)
    pe = _module(area, "te_pe_mac")
    top = _module(area, "te_array_systolic_mac")
    assert pe["count"] == 6 and top["count"] == 1
    assert top["total"] == area["cells"] > 6 * pe["total"]
    assert area["luts"] > 0 and area["lut_flow"] == "hier"
    assert _area("systolic", "mac", 2, 3, luts=False)["luts"] is None


def test_constants_reach_submodules() -> None:
    """A Booth PE's compressor tree sees its operands' constant-zero bits (synth -hieropt):
    the hierarchical count stays within a few percent of the flattened one."""
    kind = arrays.get("systolic", "booth")
    files = [f for f in kind.sources() if "array" not in f.name and "delay" not in f.name]
    params = {"AW": 9, "ND": 4, "PW": 20}
    hier = synth_area(files, "te_pe_booth", params=params, luts=False)["cells"]
    assert abs(hier - flat_cells(files, "te_pe_booth", params)) < 0.05 * hier


def test_bench_goals_from_points() -> None:
    def point(engine: str, pe: str, cells: int, pe_cells: float) -> dict:
        macs = 16 / (8 if pe == "bitserial" else 1)
        return {"engine": engine, "pe": pe, "rows": 4, "cols": 4, "bits": 8, "cells": cells,
                "pe_cells": pe_cells, "cells_per_mac": cells / macs,
                "flat_cells": cells - 10, "flat_cells_per_mac": (cells - 10) / macs}

    pts = [point(e, "mac", 1300, 80.0) for e in arrays.ENGINES]
    pts += [point("systolic", "booth", 1000, 60.0), point("adder-tree", "booth", 1010, 60.0)]
    pts += [point(e, "bitserial", 400, 20.0) for e in arrays.ENGINES]
    goals = {(g["goal"], g["engine"]): g for g in bench_arrays._goals(pts, [(4, 4)])}
    assert goals[("bitserial_pe", "systolic")]["ratio"] == 4.0
    assert goals[("bitserial_array", "adder-tree")]["ratio"] == pytest.approx(3.25)
    assert goals[("booth_systolic", "systolic")]["met"]              # 1.30 >= 1.2
    assert not goals[("booth_adder-tree", "adder-tree")]["met"]      # 1.29 < 1.3
