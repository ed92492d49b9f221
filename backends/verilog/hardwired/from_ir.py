"""The LayerSpec of a planned hardwired stage, read from the integer graph.

`passes/plan_hardwired.py` recorded the stage (anchor, steps, input layout, bypass) and its
decisions (neuron style, fold, serial, pipeline); this reads the constants the stage
computes with and renders nothing:

    acc[n]  = sum_k (x[k] - x_zero) * M[k, n] + bias[n]       M: `hardwired_stages.linear_map`
            = sum_k x[k] * M[k, n] + (bias[n] - x_zero * sum_k M[k, n])
    y[n]    = clamp(rha(acc[n] * M0[n] / 2^shift[n]) + zp, qmin, qmax)
then each Clamp tightens the bounds before it (clip(clip(v, a, b), c, d) = clip(v, clip(a,
c, d), clip(b, c, d)); after a table it clips the table's entries; it commutes with max
pooling), MaxPool takes the max over its windows, QAdd adds the residual from the stage's
input vector. Per-channel constants are repeated over the output's spatial positions.
"""

from __future__ import annotations

import json

import numpy as np

from backends.verilog.hardwired.layer import LayerSpec
from compiler.errors import EtchError
from compiler.ir import Graph, Node
from passes.hardwired_stages import CHANNEL_AXIS, linear_map, pool_groups


def _const(graph: Graph, node: Node, i: int) -> np.ndarray | None:
    if len(node.inputs) <= i or not node.inputs[i]:
        return None
    return graph.const(node.inputs[i])


def along(p: np.ndarray | None, shape: tuple[int, ...], axis: int | None) -> np.ndarray:
    """A scalar or per-channel parameter repeated over `shape`, flattened (C order)."""
    if p is None:
        return np.zeros(int(np.prod(shape)), np.int64)
    p = np.asarray(p, np.int64).reshape(-1)
    if p.size == 1 or axis is None:
        return np.full(int(np.prod(shape)), int(p[0]), np.int64)
    view = [1] * len(shape)
    view[axis % len(shape)] = p.size
    return np.broadcast_to(p.reshape(view), shape).reshape(-1).copy()


def layer_spec(graph: Graph, anchor: Node) -> LayerSpec:
    """The spec of the stage anchored at `anchor`."""
    plan = json.loads(anchor.attrs["hardwired"])
    nodes = {n.name: n for n in graph.nodes}
    members = [nodes[m] for m in plan["members"]]
    steps = members[members.index(anchor) + 1:]
    acc_shape = tuple(graph.values[anchor.outputs[0]].shape)
    axis = CHANNEL_AXIS[anchor.op]
    m = linear_map(graph, anchor)
    layout = {t: (off, size) for (t, size), off in
              zip(plan["layout"], np.cumsum([0] + [s for _, s in plan["layout"]]))}
    w = np.zeros((sum(s for _, s in plan["layout"]), m.shape[1]), np.int64)
    w[:m.shape[0]] = m
    zero_i = 1 if anchor.op == "etch.QSumPool" else 3
    z = _const(graph, anchor, zero_i)
    z = 0 if z is None else int(np.asarray(z).reshape(-1)[0])
    bias = along(None if anchor.op == "etch.QSumPool" else _const(graph, anchor, 2), acc_shape,
                 axis) - z * m.sum(axis=0)
    rq = steps[0]
    rq_axis = rq.attrs.get("axis")
    out = _Steps(int(rq.attrs["qmin"]), int(rq.attrs["qmax"]), rq.attrs.get("to", "int8"))
    for step in steps[1:]:
        out.take(graph, step, layout)
    return LayerSpec(
        name=anchor.name, w=w, bias=bias,
        m0=along(graph.const(rq.inputs[1]), acc_shape, rq_axis),
        shift=along(graph.const(rq.inputs[2]), acc_shape, rq_axis),
        zp=int(rq.attrs.get("zero_point", 0)), qmin=out.lo, qmax=out.hi,
        in_signed=graph.values[plan["input"]].dtype == "int8",
        out_signed=out.dtype == "int8",
        table=None if out.table is None else tuple(int(v) for v in out.table),
        table_base=out.base, neuron=plan["neuron"], fold=int(plan["fold"]),
        serial=bool(plan["serial"]), pipeline=int(plan["pipeline"]), pool=out.pool,
        residual=out.residual,
        bypass=tuple(i for t in plan["bypass"] for i in range(*_span(layout[t]))),
        source=", ".join(plan["members"]))


def _span(entry: tuple[int, int]) -> tuple[int, int]:
    off, size = entry
    return int(off), int(off + size)


class _Steps:
    """The output-unit steps after the Requantize, folded into bounds, table, pool and
    residual."""

    def __init__(self, lo: int, hi: int, dtype: str) -> None:
        self.lo, self.hi, self.dtype = lo, hi, dtype
        self.table: np.ndarray | None = None
        self.base = 0
        self.pool: tuple[tuple[int, ...], ...] | None = None
        self.residual: dict | None = None

    def take(self, graph: Graph, step: Node, layout: dict) -> None:
        if step.op == "etch.Clamp":
            self._clamp(int(step.attrs["lo"]), int(step.attrs["hi"]))
        elif step.op == "etch.Table":
            self.base = -128 if self.dtype == "int8" else 0
            self.table = np.asarray(graph.const(step.inputs[1]), np.int64)
            self.dtype = str(graph.const(step.inputs[1]).dtype)
        elif step.op == "MaxPool":
            self.pool = pool_groups(step, tuple(graph.values[step.inputs[0]].shape))
        elif step.op == "etch.QAdd":
            self._qadd(step, layout)
        else:
            raise EtchError(f"internal: hardwired stage step {step.name} is a {step.op}")

    def _clamp(self, c: int, d: int) -> None:
        if self.residual is not None:
            r = self.residual
            r["qmin"], r["qmax"] = min(max(r["qmin"], c), d), min(max(r["qmax"], c), d)
        elif self.table is not None:
            self.table = np.clip(self.table, c, d)
        else:  # before or after max pooling: clamping commutes with max
            self.lo, self.hi = min(max(self.lo, c), d), min(max(self.hi, c), d)

    def _qadd(self, step: Node, layout: dict) -> None:
        ins = list(step.inputs)
        other = next(i for i in ins if i in layout)
        y_side = 1 - ins.index(other)
        keys = ("a_zero", "b_zero", "a_m0", "b_m0", "a_shift", "b_shift", "left_shift", "m0",
                "shift", "zero_point", "qmin", "qmax")
        self.residual = {k: int(step.attrs[k]) for k in keys if k in step.attrs}
        self.residual.update({"y_side": y_side, "offset": int(layout[other][0])})
        self.dtype = step.attrs.get("to", "int8")
