"""FuseEpilogue: which groups form, what the etch.Fused nodes say, and bit-exact numerics."""

from __future__ import annotations

import numpy as np

from compiler.options import CompileOptions
from compiler.pipeline import passes_for
from passes import fuse_epilogue
from passes.fuse_epilogue import FuseEpilogue
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
    steps,
)

SQRT2 = np.array(1.4142135381698608, np.float32)


def gelu_erf(x: str, out: str) -> list:
    """torch's exact GELU as the dynamo exporter writes it: x * 0.5 * (1 + erf(x / sqrt 2))."""
    return [node("Div", [x, "sqrt2"], f"{out}_d"), node("Erf", [f"{out}_d"], f"{out}_e"),
            node("Add", [f"{out}_e", "one"], f"{out}_a"), node("Mul", ["half", f"{out}_a"],
                                                                f"{out}_h"),
            node("Mul", [x, f"{out}_h"], out)]


GELU_CONSTS = {"sqrt2": SQRT2, "one": np.array(1, np.float32), "half": np.array(0.5, np.float32)}


def test_matmul_bias_erf_gelu_is_one_fused_matmul(rng: np.random.Generator) -> None:
    g = build([node("MatMul", ["x", "w"], "p"), node("Add", ["p", "b"], "h"),
               *gelu_erf("h", "y")], {"x": (1, 4, 8)}, ["y"],
              {"w": f32(rng, 8, 6), "b": f32(rng, 6), **GELU_CONSTS})
    out = run_passes(g, fusion_passes())
    fused = only(out, "etch.Fused")
    assert len(out.nodes) == 1 and fused.attrs["kernel"] == "MatMul"
    assert step_ops(fused) == ["Add", "Div", "Erf", "Add", "Mul", "Mul"]
    # The last Mul reads the biased value twice removed: step 0's result, "y1".
    assert steps(fused)[-1]["args"] == ["y1", "y"]
    check_same(g, out, sample(g, rng))
    check_idempotent(out, fusion_passes())


def test_residual_add_goes_into_the_second_conv(rng: np.random.Generator) -> None:
    consts = {"w1": f32(rng, 4, 4, 3, 3), "w2": f32(rng, 4, 4, 3, 3), "ws": f32(rng, 4, 4, 1, 1)}
    pads = {"pads": [1, 1, 1, 1]}
    g = build([node("Conv", ["x", "ws"], "s"),  # projection shortcut, first in order
               node("Conv", ["x", "w1"], "c1", **pads), node("Relu", ["c1"], "r1"),
               node("Conv", ["r1", "w2"], "c2", **pads), node("Add", ["c2", "s"], "a"),
               node("Relu", ["a"], "y")], {"x": (1, 4, 5, 5)}, ["y"], consts)
    out = run_passes(g, fusion_passes())
    assert out.op_counts() == {"Conv": 1, "etch.Fused": 2}
    second = next(n for n in out.nodes if n.outputs == ["y"])
    assert second.op == "etch.Fused" and second.inputs[:2] == ["r1", "w2"]
    assert steps(second) == [{"op": "Add", "args": ["y", 2], "attrs": {}},
                             {"op": "Relu", "args": ["y"], "attrs": {}}]
    assert second.inputs[2] == "s"
    check_same(g, out, sample(g, rng))
    check_idempotent(out, fusion_passes())


def test_elementwise_chain_is_one_anchorless_fused_node(rng: np.random.Generator) -> None:
    g = build([node("Mul", ["x", "c"], "m"), node("Add", ["m", "z"], "a"),
               node("Sigmoid", ["a"], "s"), node("Mul", ["a", "s"], "silu"),
               node("Clip", ["silu", "lo", "hi"], "y")],
              {"x": (2, 3), "z": (3,)}, ["y"],
              {"c": f32(rng, 1), "lo": np.float32(-1), "hi": np.float32(2)})
    out = run_passes(g, [FuseEpilogue()])
    fused = only(out, "etch.Fused")
    assert len(out.nodes) == 1
    assert (fused.attrs["kernel"], fused.attrs["num_kernel_inputs"]) == ("", 0)
    assert step_ops(fused) == ["Mul", "Add", "Sigmoid", "Mul", "Clip"]
    assert [s["args"] for s in steps(fused)] == [[0, 1], ["y", 2], ["y"], ["y2", "y"],
                                                 ["y", 3, 4]]
    assert fused.inputs == ["x", "c", "z", "lo", "hi"]
    check_same(g, out, sample(g, rng))
    check_idempotent(out, [FuseEpilogue()])


def test_a_value_with_two_readers_is_not_fused_into(rng: np.random.Generator) -> None:
    g = build([node("Conv", ["x", "w"], "c"), node("Relu", ["c"], "y"),
               node("Sigmoid", ["c"], "z")], {"x": (1, 3, 4, 4)}, ["y", "z"],
              {"w": f32(rng, 4, 3, 1, 1)})
    reason = fuse_epilogue.fusion_reason(g, only(g, "Conv"))
    assert reason is not None and "2 readers" in reason
    out, changed = FuseEpilogue().run(g)
    assert not changed and out.op_counts() == g.op_counts()


def test_readers_that_rejoin_past_a_non_elementwise_op_stop_the_group(
        rng: np.random.Generator) -> None:
    g = build([node("Gemm", ["x", "w"], "p"), node("Relu", ["p"], "r"),
               node("Softmax", ["p"], "s"), node("Add", ["r", "s"], "y")],
              {"x": (2, 5)}, ["y"], {"w": f32(rng, 5, 3)})
    reason = fuse_epilogue.fusion_reason(g, only(g, "Gemm"))
    assert "rejoin at" in reason and "Softmax" in reason
    out = run_passes(g, fusion_passes())
    # The Gemm stays alone; Relu and Add still fuse, as an anchorless chain reading %p.
    assert [n.op for n in out.nodes] == ["Gemm", "Softmax", "etch.Fused"]
    fused = only(out, "etch.Fused")
    assert (fused.attrs["kernel"], step_ops(fused)) == ("", ["Relu", "Add"])
    check_same(g, out, sample(g, rng))


def test_graph_outputs_and_broadcasts_end_a_group(rng: np.random.Generator) -> None:
    g = build([node("MatMul", ["x", "w"], "p"), node("Relu", ["p"], "r"),
               node("Neg", ["r"], "n"), node("Add", ["n", "big"], "y")],
              {"x": (1, 5)}, ["r", "y"], {"w": f32(rng, 5, 3), "big": f32(rng, 4, 3)})
    out = run_passes(g, [FuseEpilogue()])
    fused = only(out, "etch.Fused")
    assert fused.outputs == ["r"] and step_ops(fused) == ["Relu"]  # %r is a graph output
    assert [n.op for n in out.nodes] == ["etch.Fused", "Neg", "Add"]  # Add broadcasts to [4,3]
    assert "graph output" in fuse_epilogue.fusion_reason(out, fused)
    check_same(g, out, sample(g, rng))


def test_pipeline_fuses_for_tvm_and_ref_targets_only() -> None:
    names = {t: [p.label for p in passes_for(CompileOptions(target=t))]
             for t in ("cpu", "cuda", "edge", "ref", "verilog")}
    fused = ["cleanup", "absorb_qdq", "fold_batchnorm", "fold_constants", "pool_first",
             "fuse_epilogue"]
    assert all(names[t] == fused for t in ("cuda", "edge", "ref"))
    assert names["cpu"] == fused + ["split_batch", "choose_conv_algorithm", "fuse_prologue"]
    assert "fuse_epilogue" not in names["verilog"]
    no_fuse = [p.label for p in passes_for(CompileOptions(target="cpu", fuse=False))]
    assert "fuse_epilogue" not in no_fuse and "fold_batchnorm" not in no_fuse
    assert "fuse_prologue" not in no_fuse and "pool_first" not in no_fuse
    assert "pool_first" not in [p.label for p in passes_for(CompileOptions(target="cpu",
                                                                           int=True))]
