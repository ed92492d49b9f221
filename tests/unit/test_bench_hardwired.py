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


def test_da4ml_pipeline_interval_bug_and_the_traced_design() -> None:
    """da4ml 0.6's `cmvm.solve` pipeline declares stage-1 inputs with stage 0's intervals
    before its output shifts: its own fixed-width interpreter reads -1280 back as -256
    (its Python model is right). The traced design the bench uses is exact."""
    import da4ml

    w = np.array([[3, -5], [7, 2]])
    x = np.array([[-128, -128], [127, 127], [-128, 127], [5, -9]])
    pipe = bh.da4ml_solve_pipeline(w)
    assert [float(v) for v in pipe(x[0])] == [-1280.0, 384.0]
    wrong = bh.da4ml_predict(pipe, x)
    assert da4ml.__version__ != "0.6.0" or wrong[0].tolist() == [-256.0, 384.0]
    for m in (w, np.array([[-1, -1], [-1, -1]]), np.array([[-1], [-1]])):
        np.testing.assert_array_equal(bh.da4ml_predict(bh.da4ml_solve(m), x), x @ m)


def test_both_designs_compute_the_product_in_yosys(tmp_path, rng: np.random.Generator) -> None:
    """The check the bench runs on every synthesised matrix: Yosys `eval` of etch's and
    da4ml's unmodified Verilog (its traced design) equals x @ W, also where its
    `cmvm.solve` pipeline wraps; a wrong W is caught."""
    w = rng.integers(-8, 8, (5, 3))
    net, _, _ = bh.etch_netlist(w, "cse")
    (tmp_path / "e").mkdir()
    files = bh.etch_files(net, tmp_path / "e", 8)
    assert bh.computes_product(files, "cmvm", w, [32] * 3)
    assert not bh.computes_product(files, "cmvm", w + np.eye(5, 3, dtype=np.int64), [32] * 3)
    for i, wd in enumerate((np.array([[3, -5], [7, 2]]), np.array([[-1, -1], [-1, -1]]))):
        (tmp_path / f"d{i}").mkdir()
        stats, dfiles = bh.da4ml_design(wd, tmp_path / f"d{i}")
        assert stats["in_bits"] == 8
        assert bh.computes_product(dfiles, "datop", wd, stats["out_widths"],
                                   in_bits=stats["in_bits"],
                                   out_frac=stats["out_fractional_bits"])


def test_a_partial_run_keeps_the_rest_of_the_results() -> None:
    """A scale-only run of a few sizes replaces those rows and keeps the previous matrices
    and the rows it did not measure: the table grows to 1024x1024 a size at a time."""
    old = {"machine": {"load": 9}, "part_nodes": 8, "matrices": [{"matrix": "m"}],
           "matrices_note": "n",
           "scale": [{"n": 64, "style": "csd", "v": 1}, {"n": 512, "style": "csd", "v": 1},
                     {"n": 64, "style": "grouped/bitserial", "v": 1}]}
    new = {"machine": {"load": 1}, "part_nodes": 8, "matrices": [],
           "scale": [{"n": 1024, "style": "csd", "v": 2}, {"n": 512, "style": "csd", "v": 2}]}
    got = bh.merge(new, old, no_matrices=True)
    assert got["matrices"] == [{"matrix": "m"}] and got["matrices_note"] == "n"
    assert got["machine"] == {"load": 1}
    assert [(r["style"], r["n"], r["v"]) for r in got["scale"]] == [
        ("csd", 64, 1), ("csd", 512, 2), ("csd", 1024, 2), ("grouped/bitserial", 64, 1)]
    assert bh.merge(new, old, no_matrices=False)["matrices"] == []


def test_a_matrix_run_keeps_the_scale_study_and_only_replaces_its_rows() -> None:
    """A matrix run without the scale study keeps the previous scale rows; an `--only` run
    replaces the matrices it measured, in their place, and keeps the others."""
    old = {"machine": {"load": 9}, "part_nodes": 8,
           "matrices": [{"matrix": "a", "v": 1}, {"matrix": "b", "v": 1}],
           "scale": [{"n": 1024, "style": "csd", "v": 1}]}
    full = {"machine": {"load": 1}, "part_nodes": 8, "matrices": [{"matrix": "a", "v": 2}]}
    got = bh.merge(full, old, no_matrices=False)
    assert got["matrices"] == [{"matrix": "a", "v": 2}]
    assert got["scale"] == [{"n": 1024, "style": "csd", "v": 1}]
    part = {"machine": {"load": 1}, "part_nodes": 8,
            "matrices": [{"matrix": "b", "v": 2}, {"matrix": "c", "v": 2}]}
    got = bh.merge(part, old, no_matrices=False, only=["b", "c"])
    assert [(r["matrix"], r["v"]) for r in got["matrices"]] == [("a", 1), ("b", 2), ("c", 2)]
    assert got["scale"] == old["scale"]
