"""FoldBatchNorm: inference BatchNormalization becomes weights, or a Mul and an Add.

BN(x) = s * x + t per channel (axis 1), with s = gamma / sqrt(var + eps), t = beta - mean * s.
Rewrites:
- BN(L(x, W, b)) for L = Conv | ConvTranspose | Gemm | MatMul -> L(x, W * s, (b - mean) * s
  + beta), W scaled per output channel (a 2-D MatMul gains a bias and becomes a Gemm);
- any other BN(x) -> Add(Mul(x, s), t), with s and t constants shaped [C, 1, ..., 1].

Preconditions: the BN's gamma, beta, mean and var are constants (else it is left alone) and
it is in inference mode (the importer refuses training mode). The fold also needs
`fold_constants.affine_reason` to pass: L's output is read by the BN alone and is not a
graph output, its weight and bias are float constants, and L's output-channel axis is the
BN's channel axis 1 (a MatMul of rank 3 or more is lowered to Mul/Add instead).
Invariants: graph output names are kept. The fold computes W * s and the bias in float64
and rounds once (float32 results differ from the unfused graph by rounding only); the
Mul/Add form is bit-identical to BatchNormalization's reference (same float32 s and t).
"""

from __future__ import annotations

import numpy as np

from compiler.ir import Graph, Node, Value
from compiler.ops import LINEAR
from passes.base import Pass, Rule, apply_rules
from passes.fold_constants import absorb, affine_reason, channel_axis, fold_affine


def _params(graph: Graph, bn: Node) -> list[np.ndarray] | None:
    """gamma, beta, mean, var of a BN node, or None when any is not a constant."""
    params = [graph.const(name) for name in bn.inputs[1:5]]
    return None if len(params) < 4 or any(p is None for p in params) else params


def _eps(bn: Node) -> float:
    return float(bn.attrs.get("epsilon", 1e-5))


def _linear_producer(graph: Graph, bn: Node) -> Node | None:
    p = graph.producers().get(bn.inputs[0])
    return p if p is not None and p.op in LINEAR else None


def _fold_check(graph: Graph, bn: Node) -> str | None:
    lin = _linear_producer(graph, bn)
    if _params(graph, bn) is None:
        return f"{bn.name}: BatchNormalization parameters are not constants"
    if channel_axis(graph, lin) != 1:
        return f"{bn.name}: {lin.name} ({lin.op}) has its output channels on another axis"
    return affine_reason(graph, lin, scale=True, shift=True)


def _fold(graph: Graph, bn: Node) -> None:
    gamma, beta, mean, var = (p.astype(np.float64) for p in _params(graph, bn))
    s = gamma / np.sqrt(var + _eps(bn))
    lin = _linear_producer(graph, bn)
    fold_affine(graph, lin, s, beta - mean * s)
    absorb(graph, lin, bn)


def _lower_check(graph: Graph, bn: Node) -> str | None:
    if _params(graph, bn) is None:
        return f"{bn.name}: BatchNormalization parameters are not constants"
    if len(graph.values[bn.inputs[0]].shape) < 2:
        return f"{bn.name}: input has no channel axis"
    return None


def _lower(graph: Graph, bn: Node) -> None:
    gamma, beta, mean, var = _params(graph, bn)
    # The same float32 arithmetic as BatchNormalization's reference: bit-identical.
    s = gamma / np.sqrt(var + np.asarray(_eps(bn), var.dtype))
    t = beta - mean * s
    x = graph.values[bn.inputs[0]]
    shape = (-1,) + (1,) * (len(x.shape) - 2)
    scale = graph.add_const(f"{bn.name}_scale", s.reshape(shape))
    shift = graph.add_const(f"{bn.name}_shift", t.reshape(shape))
    scaled = graph.add_value(Value(graph.fresh(f"{bn.name}_scaled"), x.shape, x.dtype))
    at = graph.nodes.index(bn)
    graph.remove_node(bn)
    graph.add_node(Node("Mul", [x.name, scale.name], [scaled.name], name=f"{bn.name}_mul"), at)
    graph.add_node(Node("Add", [scaled.name, shift.name], bn.outputs[:1],
                        name=f"{bn.name}_add"), at + 1)


RULES = [
    Rule("fold_batchnorm",
         lambda g, n: n.op == "BatchNormalization" and _linear_producer(g, n) is not None,
         _fold, _fold_check),
    Rule("lower_batchnorm", lambda g, n: n.op == "BatchNormalization", _lower, _lower_check),
]


class FoldBatchNorm(Pass):
    """Fold inference BatchNormalization into the linear op before it, else lower it."""

    name = "fold_batchnorm"

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        graph = graph.copy()
        changed = apply_rules(graph, RULES)
        graph.prune()  # drops the BN parameters and replaced weights
        return graph, changed
