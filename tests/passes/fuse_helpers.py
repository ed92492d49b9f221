"""Helpers for the fusion-pass tests: tiny ONNX models, running passes, comparing outputs."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compiler import reference
from compiler.ir import Graph, Node
from compiler.onnx_import import import_model
from passes.base import Pass
from passes.cleanup import Cleanup
from passes.fold_batchnorm import FoldBatchNorm
from passes.fold_constants import FoldConstants
from passes.fuse_epilogue import FuseEpilogue
from tests.golden import assert_bitexact, assert_close


def fusion_passes() -> list[Pass]:
    """The fusion part of the cpu/cuda/edge/ref pipeline, in its order."""
    return [FoldBatchNorm(), FoldConstants(), FuseEpilogue()]


def build(nodes: list[onnx.NodeProto], inputs: dict[str, tuple[int, ...]], outputs: list[str],
          consts: dict[str, np.ndarray] | None = None, opset: int = 17) -> Graph:
    """Import a float32 ONNX graph made of `nodes` (constants become initialisers)."""
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in (consts or {}).items()]
    graph = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(s)) for k, s in inputs.items()],
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, None) for k in outputs], inits)
    return import_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]))


def node(op: str, inputs: list[str], output: str, **attrs: object) -> onnx.NodeProto:
    return helper.make_node(op, inputs, [output], name=f"{op}_{output}", **attrs)


def f32(rng: np.random.Generator, *shape: int, low: float | None = None) -> np.ndarray:
    """Normal samples, or uniform in [low, low + 1) (variances, BN scales)."""
    if low is not None:
        return rng.uniform(low, low + 1.0, shape).astype(np.float32)
    return rng.normal(size=shape).astype(np.float32)


def sample(graph: Graph, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {i: f32(rng, *graph.values[i].shape) for i in graph.inputs}


def run_passes(graph: Graph, passes: list[Pass]) -> Graph:
    """Run `passes` in order, verifying the IR after each."""
    for p in [Cleanup(), *passes]:
        graph, _ = p.run(graph)
        graph.verify()
    return graph


def check_same(before: Graph, after: Graph, inputs: dict[str, np.ndarray],
               rtol: float | None = None) -> None:
    """Reference outputs agree: bit for bit, or to `rtol` (folds change rounding). With
    `rtol`, atol is rtol times the output's largest magnitude: a sum that cancels to near
    zero keeps the absolute rounding error of its terms, not a relative one."""
    want, got = reference.run(before, inputs), reference.run(after, inputs)
    assert after.outputs == before.outputs
    if rtol is None:
        assert_bitexact(got, want)
        return
    for name, value in want.items():
        atol = rtol * float(np.max(np.abs(value), initial=0.0))
        assert_close({name: got[name]}, {name: value}, rtol=rtol, atol=atol)


def check_idempotent(graph: Graph, passes: list[Pass]) -> None:
    """Running each pass again changes nothing."""
    for p in passes:
        again, changed = p.run(graph)
        assert not changed, f"{p} changed the graph on a second run"
        assert str(again) == str(graph)


def only(graph: Graph, op: str) -> Node:
    """The one node of `op` in `graph`."""
    found = [n for n in graph.nodes if n.op == op]
    assert len(found) == 1, f"expected one {op}, got {graph.op_counts()}"
    return found[0]


def steps(fused: Node) -> list[dict]:
    return json.loads(fused.attrs["epilogue"])


def step_ops(fused: Node) -> list[str]:
    return [s["op"] for s in steps(fused)]
