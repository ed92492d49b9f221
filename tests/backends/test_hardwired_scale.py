"""Hardwired designs at scale: Verilator options chosen by size, and the scale study's own
checks (its reference, its stages end to end on a small layer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backends.verilog import HARNESS
from backends.verilog.hardwired import design
from backends.verilog.hardwired.evaluate import evaluate
from backends.verilog.hardwired.layer import datapath
from benchmarks import hardwired_scale
from compiler.errors import EtchError
from runtime import verilator_build as vb
from tests.backends.test_hardwired_rtl import make_spec, reference, stream

SPLIT = ("--output-split-cfuncs", str(design.SPLIT_STATEMENTS))


def small(tmp_path: Path) -> tuple[design.Design, list]:
    specs = [make_spec(np.random.default_rng(11), "fc", 24, 12, 4, True, False)]
    return design.write(specs, tmp_path), specs


def test_options_follow_the_datapath_size(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    d, _ = small(tmp_path)
    monkeypatch.setattr(design, "SPLIT_NODES", d.nodes)
    monkeypatch.setattr(design, "LINT_O0_NODES", d.nodes)
    assert d.build_args == () and d.lint_args == ()
    monkeypatch.setattr(design, "SPLIT_NODES", d.nodes - 1)
    monkeypatch.setattr(design, "LINT_O0_NODES", d.nodes - 1)
    assert d.build_args == SPLIT and d.lint_args == ("-O0",)


@pytest.mark.verilator
def test_lint_without_optimisations_still_warns(tmp_path: Path) -> None:
    d, _ = small(tmp_path)
    vb.lint(d.files, d.top, ("-O0",))
    dp = next(f for f in d.files if f.name.endswith("_dp.v"))
    text = dp.read_text()
    body = text.index(");\n") + 3  # after the port list: a wire nobody reads, too narrow
    dp.write_text(text[:body] + "    wire [2:0] etch_unread = 4'd9;\n" + text[body:])
    with pytest.raises(EtchError, match="WIDTH|UNUSED"):
        vb.lint(d.files, d.top, ("-O0",))


@pytest.mark.verilator
@pytest.mark.slow
def test_split_functions_simulate_the_same(tmp_path: Path) -> None:
    """The size-chosen build (C++ functions split) against the plain one: same outputs,
    bit for bit, both equal to the integer reference."""
    d, specs = small(tmp_path)
    x = np.random.default_rng(2).integers(-128, 128, (50, specs[0].k))
    outs = []
    for extra in ((), SPLIT):
        exe = vb.build(vb.BuildSpec(tuple(d.files), d.top, extra=extra), HARNESS)
        y, _ = vb.simulate(exe, stream(d), x.astype(np.int8).view(np.uint8), max_cycles=5_000)
        outs.append(y)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[1].view(np.int8), reference(specs, x))


@pytest.mark.parametrize("style,serial", hardwired_scale.STYLES)
def test_scale_reference_is_the_layer(style: str, serial: bool) -> None:
    """The study's reference (what the simulated outputs are checked against) equals the
    exact netlist of its layer."""
    n = 16
    x = np.random.default_rng(0).integers(0, 256, (20, n), dtype=np.uint8)
    sp = hardwired_scale._spec(n, style, serial)
    if serial:  # bit-serial datapaths are timed (HORNER): the bit-parallel twin is exact
        sp = hardwired_scale._spec(n, style, False)
    ins = {"x": x.view(np.int8).astype(np.int64), "v": np.ones((20, 1), np.int64),
           "ph": np.zeros((20, 1), np.int64), "bt": np.zeros((20, 1), np.int64)}
    got = evaluate(datapath(sp), ins)["y"]
    np.testing.assert_array_equal(got, hardwired_scale.reference(n, style, serial, x))


def test_scale_check_rejects_a_wrong_output() -> None:
    x = np.random.default_rng(1).integers(0, 256, (3, 16), dtype=np.uint8)
    y = hardwired_scale.reference(16, "csd", False, x).astype(np.int8).view(np.uint8)
    assert hardwired_scale.check(16, "csd", False, x, y) == 48
    y = y.copy()
    y[2, 5] ^= 1
    with pytest.raises(EtchError, match="1 of 48 simulated outputs differ"):
        hardwired_scale.check(16, "csd", False, x, y)


@pytest.mark.verilator
@pytest.mark.slow
def test_scale_study_checks_the_simulation() -> None:
    """Every stage of the study on a 16x16 layer, the simulated outputs checked."""
    row = hardwired_scale.study([16], lambda s: None, ["csd"])[0]
    assert all("error" not in row[s] for s in hardwired_scale.STAGES), row
    assert row["sim"]["checked"] == hardwired_scale.BATCH * 16
