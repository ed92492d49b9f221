"""Zoo models through `--engine hardwired`: the simulated design equals the integer
reference bit for bit. The default run checks two configurations on part of the digits
test split; the slow run covers 8, 4, 2-bit and ternary weights, both neuron styles,
parallel and folded, on the whole split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import compiler
import runtime
from models import zoo

pytestmark = pytest.mark.verilator

BITS = {"8": {"bits": 8}, "4": {"bits": 4}, "2": {"bits": 2}, "t": {"ternary": True}}
FAST = [("4", "csd", 1, "mac"), ("t", "grouped", 4, "bitserial")]
SLOW = [(b, n, f, "mac") for b in BITS for n in ("csd", "grouped") for f in (1, 4)
        if (b, n, f, "mac") not in FAST]


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    x_train, _, x_test, _ = zoo.digits_split()
    calib = tmp_path_factory.mktemp("calib") / "calib.npz"
    np.savez(calib, input=zoo.digits_inputs("digits_mlp", x_train[:64]))
    return calib, zoo.digits_inputs("digits_mlp", x_test)


def run_all(art: compiler.driver.Artifact | runtime.Executor, xs: np.ndarray) -> np.ndarray:
    ex = runtime.load(art.path) if hasattr(art, "path") else art
    outs = ex.run_batch([{"input": xs[i:i + 1]} for i in range(len(xs))])
    return np.concatenate([o["logits"] for o in outs])


def check(digits: tuple, bits: str, neuron: str, fold: int, pe: str, n: int | None) -> dict:
    calib, xs = digits
    xs = xs[:n] if n else xs
    model = str(zoo.model_path("digits_mlp"))
    q = {**BITS[bits], "int": True, "calib": str(calib)}
    hw = compiler.compile(model, "verilog", engine="hardwired", neuron=neuron, fold=fold,
                          pe=pe, **{k: v for k, v in q.items() if k != "int"})
    ref = compiler.compile(model, "ref", **q)
    np.testing.assert_array_equal(run_all(hw, xs), run_all(ref, xs))
    return hw.manifest


@pytest.mark.parametrize("bits,neuron,fold,pe", FAST)
def test_digits_mlp_bit_exact(digits: tuple, bits: str, neuron: str, fold: int,
                              pe: str) -> None:
    manifest = check(digits, bits, neuron, fold, pe, 96)
    seg = manifest["hardwired"]["segments"][0]
    assert [lay["neuron"] for lay in seg["layers"]] == [neuron] * 3
    steps = max(min(fold, lay["n"]) for lay in seg["layers"]) * (8 if pe == "bitserial" else 1)
    assert seg["cycles_per_inference"] == steps
    assert json.loads(json.dumps(manifest))["segments"][0]["stream"]["in_bytes"] == 64


@pytest.mark.slow
@pytest.mark.parametrize("bits,neuron,fold,pe", SLOW)
def test_digits_mlp_bit_exact_whole_split(digits: tuple, bits: str, neuron: str, fold: int,
                                         pe: str) -> None:
    check(digits, bits, neuron, fold, pe, None)
