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


def _blocks() -> Case:
    """Three transformer-like blocks of one shape: x + x W (a residual add) -> LayerNorm, then
    attention scores softmax(x x^T) x. Calibration gives every block its own scales, so the
    blocks differ only in numbers: zero points, requantisation multipliers, the residual
    add's and the LayerNorm's and Softmax's constants."""
    b = ModelBuilder("blocks")
    rng = np.random.default_rng(3)
    x = b.input("x", rng.standard_normal((1, 16, 32)).astype(np.float32))
    for k in range(3):
        h = b.op("MatMul", [x, b.weight(f"w{k}", 32, 32, scale=0.2 + 0.3 * k)], f"h{k}",
                 output=False)
        r = b.op("Add", [x, h], f"r{k}", output=False)
        ln = b.op("LayerNormalization", [r, b.const(f"g{k}", np.full(32, 1.0 + k, np.float32)),
                                         b.const(f"b{k}", np.full(32, 0.1 * k, np.float32))],
                  f"n{k}", output=False, axis=-1)
        t = b.op("Transpose", [ln], f"t{k}", output=False, perm=[0, 2, 1])
        s = b.op("MatMul", [ln, t], f"s{k}", output=False)
        p = b.op("Softmax", [s], f"p{k}", output=False, axis=-1)
        x = b.op("MatMul", [p, ln], f"a{k}", output=k == 2)
    return b.build()


def test_blocks_differing_only_in_numbers_share_kernels(tmp_path) -> None:
    """Each integer kernel reads its group's numbers (zero point, the residual add's, the
    LayerNorm's and Softmax's) from an operand (`LowerCtx.scalars`,
    `int_epilogue.epilogue_numbers`), so the three blocks compile to one set of kernels, and
    each block still computes with its own numbers: bit for bit the reference."""
    model, feeds = _blocks()
    calib = tmp_path / "calib.npz"
    np.savez(calib, **feeds)
    opts = {"bits": 8, "int": True, "calib": str(calib)}
    cpu = compiler.compile(model, target="cpu", **opts)
    ref = compiler.compile(model, target="ref", **opts)
    kinds = {}
    for node in cpu.graph.nodes:
        kinds[node.op] = kinds.get(node.op, 0) + 1
    assert kinds.get("etch.QLayerNorm") == 3 and kinds.get("etch.QSoftmax") == 3, kinds
    # every block's kernels repeat the first block's: two of every three are dropped
    assert cpu.manifest["repeated_kernels"] >= 2 * 5, cpu.manifest["repeated_kernels"]
    noisy = {"x": feeds["x"] * np.float32(1.5)}
    for x in (feeds, noisy):
        assert_bitexact(cpu.run(x), ref.run(x))
