"""Two-level block scales (`--scale-format u8`, passes/quantizer.py `two_level`): every block
scale QuantizeWeights makes is an integer 1..255 times a float16 per row and super-block,
the codes are chosen against those scales, and the weight error stays that of float16
scales; LutLowering then stores exactly that factoring."""

from __future__ import annotations

import json

import numpy as np
import pytest

from compiler.ir import Graph
from passes.lut_lowering import two_level_storage
from passes.quantize_weights import QuantizeWeights
from passes.quantizer import SUPER_BLOCK, U8_MAX, super_scales, two_level
from tests.passes.fuse_helpers import build, f32, node


def mlp(rng: np.random.Generator, k: int = 512, n: int = 48) -> Graph:
    return build([node("MatMul", ["x", "w1"], "h"), node("Relu", ["h"], "r"),
                  node("Gemm", ["r", "w2"], "y", transB=1)], {"x": (4, k)}, ["y"],
                 {"w1": f32(rng, k, n), "w2": f32(rng, 10, n)})


def kn_scales(g: Graph) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(codes [K, N], scales [G, N], weight [K, N] as float64) of every etch.Dequant."""
    out = []
    for n in g.nodes:
        if n.op != "etch.Dequant":
            continue
        q, s = g.const(n.inputs[0]), g.const(n.inputs[1])
        if n.attrs["group_axis"] == 1:  # Gemm transB: [N, K]
            q, s = q.T, s.T
        out.append((q.astype(np.int64), s, np.repeat(s.astype(np.float64),
                                                     n.attrs["group_size"], 0)))
    return out


@pytest.mark.parametrize("bits,ternary,symmetric,method", [
    (2, False, True, "rtn"), (4, False, True, "rtn"), (1, False, True, "rtn"),
    (None, True, True, "rtn"), (2, False, False, "rtn"), (3, False, True, "gptq")])
def test_scales_factor_and_codes_follow_them(rng: np.random.Generator, bits: int | None,
                                             ternary: bool, symmetric: bool,
                                             method: str) -> None:
    g = mlp(rng)
    calib = {"x": rng.standard_normal((1024, 512)).astype(np.float32)} if method == "gptq" \
        else None
    kw = {"bits": bits, "ternary": ternary, "symmetric": symmetric, "group_size": 16,
          "method": method, "calib": calib}
    u8, _ = QuantizeWeights(**kw, scale_format="u8").run(g)
    half, _ = QuantizeWeights(**kw).run(g)
    for q, s, full in kn_scales(u8):
        two = two_level_storage(s)
        assert two is not None
        back = two[0].astype(np.float32) * np.repeat(two[1].astype(np.float32), SUPER_BLOCK,
                                                     0)[:len(s)]
        assert np.array_equal(back, s)
    if method == "rtn" and symmetric and not ternary and bits != 1:
        w = g.const("w1").astype(np.float64)
        q, _, full = kn_scales(u8)[0]
        lim = (1 << (bits - 1))
        assert np.array_equal(q, np.clip(np.rint(w / full), -lim, lim - 1))  # against s
    errs = [[e["error"] for e in json.loads(x.metadata["etch.quant.weights"])]
            for x in (u8, half)]
    assert all(a <= b * 1.02 + 1e-6 for a, b in zip(*errs)), errs
    assert {e["scales"] for e in json.loads(u8.metadata["etch.quant.weights"])} == \
        {"u8 x fp16"}


def test_super_scales_round_up_to_float16_and_use_the_full_range() -> None:
    s = np.array([[0.1, 0.37, 1e-3, 0.9, 0.2, 0.2, 0.2, 0.2, 5.0, 0.01]])
    d = super_scales(s)
    assert d.shape == (1, 2) and np.array_equal(d.astype(np.float16).astype(np.float64), d)
    assert np.all(d * U8_MAX >= [[0.9, 5.0]])
    t = two_level(s)
    assert t[0, 3] == d[0, 0] * U8_MAX and t[0, 8] == d[0, 1] * U8_MAX
    assert t[0, 2] == d[0, 0]  # a tiny block keeps the smallest integer, 1


def test_storage_refuses_what_does_not_factor() -> None:
    assert two_level_storage(np.array([[0.1], [0.3]], np.float32)) is None
    d = np.float32(np.float16(0.01))
    got = two_level_storage(np.array([[3 * d], [6 * d], [0]], np.float32))  # top q < 255
    assert got is not None
    u8, sup = got
    assert np.array_equal(u8.astype(np.float32) * sup.astype(np.float32)[0],
                          np.array([[3 * d], [6 * d], [0]], np.float32))
