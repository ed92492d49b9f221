"""Hardwired stages in the integer graph: what `plan_hardwired` can turn into logic.

A *stage* is a linear anchor and the output-unit steps after it:

    [views] -> etch.QGemm | etch.QConv | etch.QSumPool -> etch.Requantize
            -> (etch.Clamp | etch.Table)* -> [MaxPool] -> [etch.QAdd(., r)] -> [etch.Clamp]

Each anchor computes acc = M (x - x_zero) + bias for one activation tensor x (batch 1): the
matrix M [numel(x), numel(acc)] is taken from the anchor's own reference semantics applied
to one-hot inputs (so convolutions of any geometry, grouped or depthwise, and sum pools are
exact by construction: padding contributes x_zero - x_zero = 0). Max pooling groups come the
same way (the reference MaxPool of one-hot +1/-1 tensors); views (Reshape, Flatten,
Squeeze, Unsqueeze) are free, since they keep the C-order bytes.

`stages(graph, host)` returns the stages in graph order; anchors that cannot be hardwired
get a reason in `host`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from compiler import reference
from compiler.ir import Graph, Node

ANCHORS = ("etch.QGemm", "etch.QConv", "etch.QSumPool")
VIEWS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity")
CODES = ("int8", "uint8")
CHANNEL_AXIS = {"etch.QGemm": -1, "etch.QConv": 1, "etch.QSumPool": 1}


@dataclass
class Stage:
    anchor: Node
    members: list[Node]           # views first, then the anchor and its steps
    input: str                    # the tensor the stage reads (before views)
    output: str                   # the tensor it writes
    matrix: np.ndarray            # [numel(input), numel(acc)]
    residual: str | None = None   # the QAdd's other operand
    plan: dict = field(default_factory=dict)

    @property
    def steps(self) -> list[Node]:
        return self.members[self.members.index(self.anchor) + 1:]


def linear_map(graph: Graph, anchor: Node) -> np.ndarray:
    """M with acc = (x - x_zero) @ M + bias, from the anchor's reference on one-hot x."""
    x = graph.values[anchor.inputs[0]]
    k = int(np.prod(x.shape))
    eye = np.eye(k, dtype=np.int64).astype(x.dtype).reshape((k,) + tuple(x.shape[1:]))
    if anchor.op == "etch.QGemm":
        eye = eye.reshape(k, x.shape[-1]) if len(x.shape) == 2 else eye
    args: list[np.ndarray | None] = [eye]
    for i, name in enumerate(anchor.inputs[1:], start=1):
        keep = name and (anchor.op != "etch.QSumPool") and i not in (2, 3)  # no bias/x_zero
        args.append(graph.const(name) if keep else None)
    acc = reference.run_node(anchor, args)[0]
    return acc.reshape(k, -1).astype(np.int64)


def pool_groups(node: Node, shape: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """For each MaxPool output element, the input elements of its window."""
    k = int(np.prod(shape))
    probe = -np.ones((k, k), np.float32) + 2 * np.eye(k, dtype=np.float32)
    out = reference.run_node(node, [probe.reshape((k,) + tuple(shape[1:]))])[0]
    member = out.reshape(k, -1) > 0
    return tuple(tuple(np.flatnonzero(member[:, j]).tolist()) for j in range(member.shape[1]))


def stages(graph: Graph, host: dict[str, str]) -> list[Stage]:
    readers = graph.consumers()
    producers = graph.producers()
    out = []
    for node in graph.nodes:
        if node.op not in ANCHORS or node.attrs.get("placement") != "accel":
            continue
        reason = anchor_reason(graph, node, readers)
        if reason:
            host[node.name] = reason
            continue
        views, source = _views_before(graph, node.inputs[0], producers, readers)
        members = [*views, node, *_grow(graph, node, readers)]
        residual = next((i for m in members if m.op == "etch.QAdd" for i in m.inputs
                         if i != _value_into(members, m)), None)
        out.append(Stage(node, members, source, members[-1].outputs[0],
                         linear_map(graph, node), residual))
    return out


def anchor_reason(graph: Graph, node: Node, readers: dict[str, list[Node]]) -> str | None:
    """Why an anchor cannot be hardwired, or None."""
    x = graph.values[node.inputs[0]]
    if x.dtype not in CODES or not x.shape or x.shape[0] != 1:
        return f"activation {x.dtype}{list(x.shape)} is not one int8/uint8 sample"
    if node.op == "etch.QGemm" and int(np.prod(x.shape[:-1])) != 1:
        return "activation has more than one row"
    for i, name in enumerate(node.inputs[1:], start=1):
        if name and graph.const(name) is None:
            return "weights, bias or zero points are not constants"
    if int(np.prod(x.shape)) > 4096:
        return f"input of {int(np.prod(x.shape))} codes is too wide to unroll"
    nxt = readers.get(node.outputs[0], [])
    if len(nxt) != 1 or nxt[0].op != "etch.Requantize" or node.outputs[0] in graph.outputs:
        return "the accumulator is not read by exactly one Requantize"
    rq = nxt[0]
    if any(graph.const(i) is None for i in rq.inputs[1:3]):
        return "requantisation constants are not constants"
    if rq.attrs.get("to", "int8") not in CODES:
        return "requantises to a type other than int8/uint8"
    return None


def _views_before(graph: Graph, value: str, producers: dict[str, Node],
                  readers: dict[str, list[Node]]) -> tuple[list[Node], str]:
    """The view nodes between the anchor and the tensor they view (outermost first)."""
    views: list[Node] = []
    while True:
        p = producers.get(value)
        if (p is None or p.op not in VIEWS or p.attrs.get("placement") != "accel"
                or len(readers.get(value, [])) != 1 or value in graph.outputs):
            return views[::-1], value
        views.append(p)
        value = p.inputs[0]


# the steps a stage may take after its Requantize, in order: (op, may repeat)
STEP_ORDER = ("etch.Clamp", "etch.Table", "MaxPool", "etch.QAdd")


def _grow(graph: Graph, anchor: Node, readers: dict[str, list[Node]]) -> list[Node]:
    steps = [readers[anchor.outputs[0]][0]]
    rank = 0
    while True:
        y = steps[-1].outputs[0]
        nxt = readers.get(y, [])
        if y in graph.outputs or len(nxt) != 1 or nxt[0].attrs.get("placement") != "accel":
            return steps
        n = nxt[0]
        r = _rank(graph, n, rank)
        if r is None:
            return steps
        steps.append(n)
        rank = r


def _rank(graph: Graph, n: Node, rank: int) -> int | None:
    """The step's place in STEP_ORDER if it may follow a step of place `rank`, else None.
    A Clamp may follow anything (it merges into the bounds before it); a Table only
    before pooling; MaxPool and QAdd once each, in that order."""
    if n.op == "etch.Clamp":
        return rank
    if n.op == "etch.Table" and graph.const(n.inputs[1]) is not None and rank <= 1:
        return 1
    if n.op == "MaxPool" and rank <= 1 and graph.values[n.inputs[0]].dtype in CODES:
        return 2
    if n.op == "etch.QAdd" and rank <= 2:
        return 3
    return None


def _value_into(members: list[Node], node: Node) -> str:
    """The member output that `node` reads (the stage's running value)."""
    outs = {m.outputs[0] for m in members[:members.index(node)]}
    return next(i for i in node.inputs if i in outs)
