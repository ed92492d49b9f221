"""`etch bench`'s parser takes every benchmark's own options (shared ones, such as --bits in
the arrays and verilog benchmarks, once)."""

from __future__ import annotations

from benchmarks import run


def test_every_benchmark_option_parses() -> None:
    a = run.parser().parse_args(["hardwired", "arrays", "--bits", "4", "--cells-upto", "600",
                                 "--scale", "64", "--sizes", "4x4"])
    assert a.names == ["hardwired", "arrays"] and a.bits == [4] and a.cells_upto == 600
    assert a.scale == [64] and a.sizes == ["4x4"]
