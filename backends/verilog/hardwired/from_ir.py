"""The LayerSpec of a planned hardwired layer, read from the integer graph.

`passes/plan_hardwired.py` recorded the layer (anchor QGemm, its Requantize, Clamp and Table
members) and its decisions (neuron style, fold, serial, pipeline); this reads the constants
the layer computes with and renders nothing:

    acc[n]  = sum_k (a[k] - a_zero) * (w[k, n] - w_zero[n]) + bias[n]
            = sum_k a[k] * W[k, n] + (bias[n] - a_zero * sum_k W[k, n])
    y[n]    = clamp(rha(acc[n] * M0[n] / 2^shift[n]) + zp, qmin, qmax)
then each Clamp tightens [qmin, qmax] (clip(clip(v, a, b), c, d) = clip(v, clip(a, c, d),
clip(b, c, d))) or, after a table, clips the table's entries.
"""

from __future__ import annotations

import json

import numpy as np

from backends.verilog.hardwired.layer import LayerSpec
from compiler.errors import EtchError
from compiler.ir import Graph, Node
from passes.plan_hardwired import effective_weights


def _const(graph: Graph, node: Node, i: int) -> np.ndarray | None:
    if len(node.inputs) <= i or not node.inputs[i]:
        return None
    return graph.const(node.inputs[i])


def _per_channel(p: np.ndarray, n: int) -> np.ndarray:
    p = np.asarray(p, np.int64).reshape(-1)
    return np.broadcast_to(p, (n,)).copy() if p.size == 1 else p


def layer_spec(graph: Graph, anchor: Node) -> LayerSpec:
    """The spec of the layer anchored at `anchor` (a planned etch.QGemm)."""
    plan = json.loads(anchor.attrs["hardwired"])
    nodes = {n.name: n for n in graph.nodes}
    members = [nodes[m] for m in plan["members"]]
    w = effective_weights(graph, anchor)
    n = w.shape[1]
    bias = _const(graph, anchor, 2)
    bias = np.zeros(n, np.int64) if bias is None else np.asarray(bias, np.int64).reshape(-1)
    a_zero = _const(graph, anchor, 3)
    z = 0 if a_zero is None else int(np.asarray(a_zero).reshape(-1)[0])
    rq = members[1]
    m0 = _per_channel(graph.const(rq.inputs[1]), n)
    shift = _per_channel(graph.const(rq.inputs[2]), n)
    lo, hi = int(rq.attrs["qmin"]), int(rq.attrs["qmax"])
    table, base, out_dtype = None, 0, rq.attrs.get("to", "int8")
    for m in members[2:]:
        if m.op == "etch.Clamp" and table is None:
            c, d = int(m.attrs["lo"]), int(m.attrs["hi"])
            lo, hi = min(max(lo, c), d), min(max(hi, c), d)
        elif m.op == "etch.Clamp":
            table = np.clip(table, int(m.attrs["lo"]), int(m.attrs["hi"]))
        elif m.op == "etch.Table":
            base = -128 if out_dtype == "int8" else 0
            table = np.asarray(graph.const(m.inputs[1]), np.int64)
            out_dtype = str(graph.const(m.inputs[1]).dtype)
        else:
            raise EtchError(f"internal: hardwired layer member {m.name} is a {m.op}")
    return LayerSpec(
        name=anchor.name, w=w, bias=bias - z * w.sum(axis=0), m0=m0, shift=shift,
        zp=int(rq.attrs.get("zero_point", 0)), qmin=lo, qmax=hi,
        in_signed=graph.values[anchor.inputs[0]].dtype == "int8",
        out_signed=out_dtype == "int8",
        table=None if table is None else tuple(int(v) for v in table), table_base=base,
        neuron=plan["neuron"], fold=int(plan["fold"]), serial=bool(plan["serial"]),
        pipeline=int(plan["pipeline"]), source=", ".join(plan["members"]))
