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
