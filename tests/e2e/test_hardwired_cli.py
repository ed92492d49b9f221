"""`--engine hardwired` from the command line: compile, simulate, compare with the integer
reference, and the one-line errors of the hardwired options."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models import zoo

ETCH = [sys.executable, "-m", "compiler.cli"]
HW = ["--target", "verilog", "--engine", "hardwired"]


def etch(*args: object, timeout: int = 1200) -> subprocess.CompletedProcess:
    return subprocess.run([*ETCH, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, check=False)


def one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 1, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("etch: error:"), r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("hwcli")
    x_train, _, x_test, _ = zoo.digits_split()
    np.savez(d / "calib.npz", input=zoo.digits_inputs("digits_mlp", x_train[:64]))
    np.savez(d / "in.npz", input=zoo.digits_inputs("digits_mlp", x_test[:1]))
    return d


@pytest.mark.verilator
def test_compile_sim_matches_reference(data: Path) -> None:
    model = zoo.model_path("digits_mlp")
    q = ["--bits", "4", "--calib", data / "calib.npz"]
    r = etch("compile", model, *HW, *q, "-o", data / "hw", "--pipeline", "2")
    assert r.returncode == 0, r.stderr
    assert etch("compile", model, "--target", "ref", "--int", *q, "-o",
                data / "ref").returncode == 0
    r = etch("sim", data / "hw", "--inputs", data / "in.npz", "--out", data / "hw.npz")
    assert r.returncode == 0, r.stderr
    assert etch("run", data / "ref", "--inputs", data / "in.npz", "--out",
                data / "ref.npz").returncode == 0
    np.testing.assert_array_equal(np.load(data / "hw.npz")["logits"],
                                  np.load(data / "ref.npz")["logits"])
    manifest = json.loads((data / "hw" / "manifest.json").read_text())
    layers = manifest["hardwired"]["segments"][0]["layers"]
    assert [lay["pipeline"] for lay in layers] == [2, 2, 2]
    assert all(0 < lay["adders_per_weight"] < 2 for lay in layers)
    head = (data / "hw" / "rtl" / "seg0" / "hw_node_linear_dp.v").read_text().splitlines()
    assert head[0].startswith("// etch ") and head[1].startswith("// source: node_linear")


@pytest.mark.parametrize("args,needle", [
    (["--max-cells", "1000"], "over --max-cells 1,000"),
    (["--fold", "0"], "--fold 0"),
    (["--pipeline", "-1"], "--pipeline -1"),
    (["--pe", "booth"], "no multipliers"),
])
def test_hardwired_option_errors(data: Path, args: list, needle: str) -> None:
    out = data / "bad"
    r = etch("compile", zoo.model_path("digits_mlp"), *HW, "--bits", "4", "--calib",
             data / "calib.npz", "-o", out, *args)
    one_line_error(r, needle)
    assert not out.exists()


def test_hardwired_options_need_the_hardwired_engine(data: Path) -> None:
    r = etch("compile", zoo.model_path("digits_mlp"), "--target", "cpu", "--neuron", "csd")
    one_line_error(r, "--engine hardwired")


@pytest.mark.verilator
def test_compare_tensor_engine_and_hardwired(data: Path) -> None:
    """`etch compare` builds the tensor engine and a hardwired design of the same weights,
    simulates both bit-exact and reports cycles (estimated cells: no Yosys here)."""
    out = data / "cmp"
    r = etch("compare", zoo.model_path("digits_mlp"), "--bits", "4", "--calib",
             data / "calib.npz", "--no-area", "--config", "engine systolic 8x8", "--config",
             "hardwired csd", "-o", out)
    assert r.returncode == 0, r.stderr
    rows = {c["config"]: c for c in json.loads(out.with_suffix(".json").read_text())["configs"]}
    eng, hw = rows["engine systolic 8x8"], rows["hardwired csd"]
    assert eng["bit_exact"] and hw["bit_exact"], rows
    assert hw["cycles_per_inference"] < 2 < eng["cycles_per_inference"]
    assert hw["cells"] > eng["cells"] > 0 and 0 < hw["adders_per_weight"] < 2
    assert out.with_suffix(".png").stat().st_size > 0 and "hardwired csd" in r.stdout
