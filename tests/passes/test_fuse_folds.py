"""FoldBatchNorm and FoldConstants: structure (before/expected) and numerics (before vs after)."""

from __future__ import annotations

import numpy as np
import pytest

from compiler.ir import Graph
from passes import fold_batchnorm, fold_constants
from passes.fold_batchnorm import FoldBatchNorm
from passes.fold_constants import FoldConstants
from tests.passes.fuse_helpers import (
    build,
    check_idempotent,
    check_same,
    f32,
    fusion_passes,
    node,
    only,
    run_passes,
    sample,
    step_ops,
)

C = 4  # output channels in every case


def bn_consts(rng: np.random.Generator, c: int = C) -> dict[str, np.ndarray]:
    return {"gamma": f32(rng, c, low=0.5), "beta": f32(rng, c), "mean": f32(rng, c),
            "var": f32(rng, c, low=0.5)}


def bn_fold(gamma, beta, mean, var, eps=1e-5):
    """(scale, shift) of an inference BN, in float64."""
    s = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    return s, beta - mean * s


BN = ["gamma", "beta", "mean", "var"]

# name -> (producer node, its input shapes, its constants); the producer writes %p with C
# output channels on axis 1.
PRODUCERS = {
    "conv": lambda rng: (node("Conv", ["x", "w"], "p", pads=[1, 1]),
                         {"x": (1, 3, 6)}, {"w": f32(rng, C, 3, 3)}),
    "conv_bias_depthwise": lambda rng: (
        node("Conv", ["x", "w", "b"], "p", group=C, kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        {"x": (1, C, 5, 5)}, {"w": f32(rng, C, 1, 3, 3), "b": f32(rng, C)}),
    "conv_transpose_groups": lambda rng: (
        node("ConvTranspose", ["x", "w", "b"], "p", group=2, strides=[2, 2]),
        {"x": (1, 4, 3, 3)}, {"w": f32(rng, 4, C // 2, 2, 2), "b": f32(rng, C)}),
    "gemm_transB": lambda rng: (node("Gemm", ["x", "w", "b"], "p", transB=1, alpha=0.5, beta=2.0),
                                {"x": (2, 5)}, {"w": f32(rng, C, 5), "b": f32(rng, C)}),
    "gemm": lambda rng: (node("Gemm", ["x", "w"], "p"), {"x": (2, 5)}, {"w": f32(rng, 5, C)}),
    "matmul_2d": lambda rng: (node("MatMul", ["x", "w"], "p"), {"x": (3, 5)},
                              {"w": f32(rng, 5, C)}),
}


def with_producer(name: str, rng: np.random.Generator, tail: list, consts: dict,
                  outputs: tuple[str, ...] = ("y",)) -> Graph:
    prod, inputs, prod_consts = PRODUCERS[name](rng)
    return build([prod, *tail], inputs, list(outputs), {**prod_consts, **consts})


@pytest.mark.parametrize("producer", sorted(PRODUCERS))
def test_batchnorm_folds_into_its_producer(producer: str, rng: np.random.Generator) -> None:
    consts = bn_consts(rng)
    g = with_producer(producer, rng, [node("BatchNormalization", ["p", *BN], "y")], consts)
    out = run_passes(g, [FoldBatchNorm()])
    assert set(out.op_counts()) <= {"Conv", "ConvTranspose", "Gemm"}, out.op_counts()
    assert len(out.nodes) == 1 and out.nodes[0].outputs == ["y"]
    check_same(g, out, sample(g, rng), rtol=1e-5)
    check_idempotent(out, [FoldBatchNorm()])


def test_conv_bn_relu_is_one_fused_conv_with_folded_weights(rng: np.random.Generator) -> None:
    consts = {"w": f32(rng, C, 3, 3, 3), **bn_consts(rng)}
    g = build([node("Conv", ["x", "w"], "c", pads=[1, 1, 1, 1]),
               node("BatchNormalization", ["c", *BN], "bn"), node("Relu", ["bn"], "y")],
              {"x": (1, 3, 8, 8)}, ["y"], consts)
    out = run_passes(g, fusion_passes())
    fused = only(out, "etch.Fused")
    assert out.op_counts() == {"etch.Fused": 1}
    assert fused.attrs["kernel"] == "Conv" and step_ops(fused) == ["Relu"]
    assert fused.attrs["num_kernel_inputs"] == 3 and fused.outputs == ["y"]
    s, t = bn_fold(*(consts[k] for k in BN))
    w, b = (out.const(i) for i in fused.inputs[1:3])
    np.testing.assert_allclose(w, consts["w"] * s[:, None, None, None], rtol=1e-6)
    np.testing.assert_allclose(b, t, rtol=1e-6, atol=1e-7)
    check_same(g, out, sample(g, rng), rtol=1e-5)
    check_idempotent(out, fusion_passes())


def test_standalone_batchnorm_becomes_mul_add_bit_for_bit(rng: np.random.Generator) -> None:
    g = build([node("Relu", ["x"], "r"), node("BatchNormalization", ["r", *BN], "y")],
              {"x": (2, C, 3, 3)}, ["y"], bn_consts(rng))
    out = run_passes(g, [FoldBatchNorm()])
    assert [n.op for n in out.nodes] == ["Relu", "Mul", "Add"]
    assert out.const(out.nodes[1].inputs[1]).shape == (C, 1, 1)
    check_same(g, out, sample(g, rng))


def test_batchnorm_is_not_folded_into_a_conv_read_twice(rng: np.random.Generator) -> None:
    consts = {"w": f32(rng, C, 3, 1, 1), **bn_consts(rng)}
    g = build([node("Conv", ["x", "w"], "c"), node("BatchNormalization", ["c", *BN], "y"),
               node("Relu", ["c"], "z")], {"x": (1, 3, 4, 4)}, ["y", "z"], consts)
    bn = only(g, "BatchNormalization")
    fold = fold_batchnorm.RULES[0]
    assert fold.pattern(g, bn)
    assert "2 readers" in fold.check(g, bn)
    out = run_passes(g, [FoldBatchNorm(), FoldConstants()])
    assert out.op_counts() == {"Conv": 1, "Mul": 1, "Add": 1, "Relu": 1}
    check_same(g, out, sample(g, rng))


@pytest.mark.parametrize("producer", sorted(PRODUCERS))
def test_constant_scale_and_bias_fold_into_weights(producer: str,
                                                   rng: np.random.Generator) -> None:
    rank = 2 if producer.startswith(("gemm", "matmul")) else 3 if producer == "conv" else 4
    shape = (C,) + (1,) * (rank - 2)
    consts = {"s": f32(rng, *shape, low=0.5), "t": f32(rng, *shape), "d": f32(rng, 1, low=1.0)}
    tail = [node("Mul", ["s", "p"], "m"), node("Div", ["m", "d"], "q"),
            node("Sub", ["q", "t"], "a"), node("Add", ["t", "a"], "y")]
    g = with_producer(producer, rng, tail, consts)
    out = run_passes(g, [FoldConstants()])
    assert len(out.nodes) == 1 and out.nodes[0].outputs == ["y"], out.op_counts()
    check_same(g, out, sample(g, rng), rtol=1e-5)
    check_idempotent(out, [FoldConstants()])


def test_gemm_add_relu_is_one_fused_gemm(rng: np.random.Generator) -> None:
    g = build([node("Gemm", ["x", "w"], "p", transB=1), node("Add", ["p", "b"], "a"),
               node("Relu", ["a"], "y")], {"x": (2, 8)}, ["y"],
              {"w": f32(rng, 6, 8), "b": f32(rng, 6)})
    out = run_passes(g, fusion_passes())
    fused = only(out, "etch.Fused")
    assert len(out.nodes) == 1
    assert (fused.attrs["kernel"], step_ops(fused)) == ("Gemm", ["Relu"])
    np.testing.assert_array_equal(out.const(fused.inputs[2]), g.const("b"))
    check_same(g, out, sample(g, rng))  # (x@w) + b in both: bit for bit


def test_2d_matmul_add_becomes_gemm_bit_for_bit(rng: np.random.Generator) -> None:
    g = build([node("MatMul", ["x", "w"], "p"), node("Add", ["p", "b"], "y")],
              {"x": (3, 8)}, ["y"], {"w": f32(rng, 8, 5), "b": f32(rng, 5)})
    out = run_passes(g, [FoldConstants()])
    assert [n.op for n in out.nodes] == ["Gemm"] and out.nodes[0].attrs == {}
    check_same(g, out, sample(g, rng))


def test_3d_matmul_keeps_its_bias_add_with_a_reason(rng: np.random.Generator) -> None:
    g = build([node("MatMul", ["x", "w"], "p"), node("Add", ["p", "b"], "y")],
              {"x": (2, 3, 8)}, ["y"], {"w": f32(rng, 8, 5), "b": f32(rng, 5)})
    add = only(g, "Add")
    assert "no bias input" in fold_constants.RULES[1].check(g, add)
    out = run_passes(g, fusion_passes())
    fused = only(out, "etch.Fused")
    assert (fused.attrs["kernel"], step_ops(fused)) == ("MatMul", ["Add"])
    check_same(g, out, sample(g, rng))


@pytest.mark.parametrize("shape, why", [((1, 1, 4, 4), "not per output channel"),
                                        ((2, C, 1, 1), "not per output channel")])
def test_constants_that_vary_off_the_channel_axis_stay(shape: tuple[int, ...], why: str,
                                                       rng: np.random.Generator) -> None:
    g = build([node("Conv", ["x", "w"], "p"), node("Mul", ["p", "s"], "y")],
              {"x": (1, 3, 4, 4)}, ["y"], {"w": f32(rng, C, 3, 1, 1), "s": f32(rng, *shape)})
    assert why in fold_constants.RULES[0].check(g, only(g, "Mul"))
    out, changed = FoldConstants().run(g)
    assert not changed and out.op_counts() == {"Conv": 1, "Mul": 1}
