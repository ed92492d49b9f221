"""Property tests: on random elementwise DAGs (with or without a MatMul/Gemm anchor, with
barriers that cannot fuse), FuseEpilogue is bit-exact, keeps output names, only shrinks the
graph, and is idempotent; the fusion pipeline with random per-channel folds stays close."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.ir import Graph, Node, Value
from passes.fuse_epilogue import FuseEpilogue, plan
from tests.passes.fuse_helpers import check_idempotent, check_same, fusion_passes, run_passes

SHAPE = (2, 3)
UNARY = ["Relu", "Sigmoid", "Tanh", "Neg", "Abs", "Erf", "HardSwish", "LeakyRelu", "Softmax"]
BINARY = ["Add", "Sub", "Mul", "Div", "Max", "Min"]


def _add(g: Graph, op: str, inputs: list[str], shape: tuple[int, ...] = SHAPE) -> str:
    out = g.add_value(Value(g.fresh(f"v{len(g.nodes)}"), shape)).name
    attrs = {"alpha": 0.1} if op == "LeakyRelu" else {"axis": -1} if op == "Softmax" else {}
    g.add_node(Node(op, inputs, [out], attrs))
    return out


def _const(g: Graph, draw: st.DrawFn, shape: tuple[int, ...]) -> str:
    data = np.asarray(draw(st.lists(st.floats(-2, 2, width=32), min_size=int(np.prod(shape)),
                                    max_size=int(np.prod(shape)))), np.float32)
    return g.add_const("c", data.reshape(shape)).name


def _anchor(g: Graph, draw: st.DrawFn) -> str:
    g.add_value(Value("a", (2, 4)))
    g.inputs.append("a")
    w = _const(g, draw, (4, 3))
    return _add(g, draw(st.sampled_from(["MatMul", "Gemm"])), ["a", w])


@st.composite
def elementwise_graphs(draw: st.DrawFn) -> Graph:
    """A random DAG of elementwise ops over [2, 3] and [3] values (Softmax a barrier)."""
    g = Graph("random")
    for name, shape in (("x", SHAPE), ("z", (3,))):
        g.add_value(Value(name, shape))
        g.inputs.append(name)
    made = [_anchor(g, draw)] if draw(st.booleans()) else ["x"]
    for _ in range(draw(st.integers(1, 9))):
        op = draw(st.sampled_from(UNARY + BINARY))
        a = draw(st.sampled_from(made + ["z"]))  # [3]-shaped values broadcast later
        if op in BINARY:
            b = draw(st.sampled_from(made + ["z", "const"]))
            b = _const(g, draw, draw(st.sampled_from([(), (3,), SHAPE]))) if b == "const" else b
            a, b = (b, a) if draw(st.booleans()) else (a, b)
            shape = np.broadcast_shapes(g.values[a].shape, g.values[b].shape)
            made.append(_add(g, op, [a, b], shape))
        else:
            made.append(_add(g, op, [a], g.values[a].shape))
    extra = draw(st.lists(st.sampled_from(made), max_size=2))
    g.outputs = list(dict.fromkeys([made[-1], *extra]))
    g.prune()
    g.verify()
    return g


def _inputs(g: Graph, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {i: rng.normal(size=g.values[i].shape).astype(np.float32) for i in g.inputs}


@settings(max_examples=150, deadline=None)
@given(elementwise_graphs(), st.integers(0, 2**16))
def test_fusing_random_elementwise_dags_is_exact_and_idempotent(g: Graph, seed: int) -> None:
    for group in plan(g):  # one iteration space per group: every member's output shape
        assert len({g.values[n.outputs[0]].shape for n in group.members}) == 1
    out, changed = FuseEpilogue().run(g)
    out.verify()
    assert out.outputs == g.outputs and out.inputs == g.inputs
    assert len(out.nodes) <= len(g.nodes) and changed == (len(out.nodes) < len(g.nodes))
    with np.errstate(all="ignore"):
        check_same(g, out, _inputs(g, seed))
    check_idempotent(out, [FuseEpilogue()])
    assert all(n.attrs["epilogue"] != "[]" for n in out.nodes if n.op == "etch.Fused")


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.sampled_from(["Mul", "Div", "Add", "Sub", "BatchNormalization"]),
       st.integers(0, 2**16))
def test_per_channel_folds_keep_the_function(cout: int, op: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    g = Graph("fold")
    g.add_value(Value("x", (1, 2, 4, 4)))
    g.inputs, g.outputs = ["x"], ["y"]
    w = g.add_const("w", rng.normal(size=(cout, 2, 3, 3)).astype(np.float32)).name
    conv = _add(g, "Conv", ["x", w], (1, cout, 2, 2))
    params = [rng.uniform(0.5, 1.5, (cout, 1, 1)).astype(np.float32) for _ in range(4)]
    names = [g.add_const("p", p.reshape(-1) if op == "BatchNormalization" else p).name
             for p in params]
    args = [conv, *names] if op == "BatchNormalization" else [conv, names[0]]
    g.add_value(Value("y", (1, cout, 2, 2)))
    g.add_node(Node(op, args, ["y"]))
    out = run_passes(g, fusion_passes())
    assert [n.op for n in out.nodes] == ["Conv"]
    check_same(g, out, _inputs(g, seed), rtol=1e-5)
