"""`etch bench hardwired`'s matrix part without Yosys: the zoo layers are found (the bench
once found none when the integer graph started grouping anchors into etch.QFused), and one
row measures every method on the same matrix."""

from __future__ import annotations

import numpy as np

from benchmarks import bench_hardwired as bh


def test_zoo_matrices_finds_every_dense_layer() -> None:
    mats = bh.zoo_matrices(["digits_mlp"])
    assert [(label, w.shape) for label, w in mats] == [
        ("digits_mlp/node_linear", (64, 64)), ("digits_mlp/node_linear_1", (64, 32)),
        ("digits_mlp/node_linear_2", (32, 10))]
    assert all(w.dtype.kind == "i" and np.abs(w).max() <= 8 for _, w in mats)


def test_measure_row_and_table(rng: np.random.Generator) -> None:
    w = rng.integers(-8, 8, (12, 9))
    row = bh.measure("rand", w, False, lambda _: None)
    assert row["cse"]["adders"] < row["plain"]["adders"]
    assert row["da4ml"]["adders"] > 0 and "cells" not in row["cse"]
    text = bh.table({"machine": bh.machine(), "part_nodes": 8, "matrices": [row]})
    assert "on 0 of 0 synthesised" in text and "fewer adders than plain CSD" in text


def test_shift_adder_fix_widens_the_sum_only() -> None:
    """da4ml's shift_adder reads accum[BW_OUT-1:0] past its width (undefined top bits);
    the fix sizes the sum to at least BW_OUT and changes nothing else."""
    from pathlib import Path

    import da4ml.codegen.rtl.verilog as dv

    text = (Path(dv.__file__).parent / "source" / "shift_adder.v").read_text()
    fixed = bh.fix_shift_adder(text)
    assert "localparam BW_ADD = (BW_ADD0 > BW_OUT) ? BW_ADD0 : BW_OUT;" in fixed
    assert fixed.replace("BW_ADD0", "BW_ADD").count("\n") == text.count("\n") + 1


def test_both_designs_compute_the_product_in_yosys(tmp_path, rng: np.random.Generator) -> None:
    """The check the bench runs on every synthesised matrix: Yosys `eval` of etch's and
    (with the shift_adder fix) da4ml's Verilog equals x @ W; a wrong W is caught."""
    w = rng.integers(-8, 8, (5, 3))
    net, _, _ = bh.etch_netlist(w, "cse")
    (tmp_path / "e").mkdir()
    files = bh.etch_files(net, tmp_path / "e", 8)
    assert bh.computes_product(files, "cmvm", w, [32] * 3)
    assert not bh.computes_product(files, "cmvm", w + np.eye(5, 3, dtype=np.int64), [32] * 3)
    (tmp_path / "d").mkdir()
    stats, dfiles = bh.da4ml_design(np.array([[3, -5], [7, 2]]), tmp_path / "d")
    assert bh.computes_product(dfiles, "datop", np.array([[3, -5], [7, 2]]),
                               stats["out_widths"])
