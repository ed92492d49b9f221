"""Repeated kernels are built once (`backends.tvm.dedupe`): layers with the same shapes and
epilogue share one compiled function, each still called with its own weights."""

from __future__ import annotations

import numpy as np
import pytest

import compiler
from tests.backends.tvm_cases import Case, ModelBuilder
from tests.golden import assert_bitexact, assert_close, run_ort


def _stack() -> Case:
    """Three 3x3 conv + ReLU layers of one shape (different weights), then a conv without
    ReLU and a 1x1 conv: two repeats of the first kernel, the others distinct."""
    b = ModelBuilder("stack")
    x = b.input("x", np.random.default_rng(1).standard_normal((1, 8, 12, 12)).astype(np.float32))
    for k in range(3):
        y = b.op("Conv", [x, b.weight(f"w{k}", 8, 8, 3, 3), b.weight(f"b{k}", 8)], f"c{k}",
                 output=False, pads=[1, 1, 1, 1])
        x = b.op("Relu", [y], f"r{k}", output=False)
    x = b.op("Conv", [x, b.weight("w3", 8, 8, 3, 3)], "c3", output=False, pads=[1, 1, 1, 1])
    b.op("Conv", [x, b.weight("w4", 4, 8, 1, 1)], "y")
    return b.build()


def test_repeated_float_kernels_are_built_once() -> None:
    model, feeds = _stack()
    art = compiler.compile(model, target="cpu")
    assert art.manifest["repeated_kernels"] == 2
    assert_close(art.run(feeds), run_ort(model, feeds), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mcpu", [None, "haswell"])
def test_repeated_integer_kernels_are_built_once(mcpu: str | None, tmp_path) -> None:
    model, feeds = _stack()
    calib = tmp_path / "calib.npz"
    np.savez(calib, **feeds)
    opts = {"bits": 8, "int": True, "calib": str(calib)}
    cpu = compiler.compile(model, target="cpu", mcpu=mcpu, **opts)
    ref = compiler.compile(model, target="ref", **opts)
    assert cpu.manifest["repeated_kernels"] >= 1
    noisy = {"x": feeds["x"] + np.float32(0.5)}
    for x in (feeds, noisy):
        assert_bitexact(cpu.run(x), ref.run(x))
