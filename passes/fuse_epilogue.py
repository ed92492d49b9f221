"""FuseEpilogue: record fusion groups on the IR as `etch.Fused` nodes.

Rewrites:
- an anchor A (Conv, ConvTranspose, Gemm or MatMul) and the elementwise nodes after it ->
  etch.Fused(kernel=A.op, epilogue=steps), e.g. Relu(Add(Conv(x, w), r)) ->
  Fused(x, w, r; kernel=Conv, epilogue=[Add(y, 2), Relu(y)]);
- two or more elementwise nodes with no anchor -> etch.Fused(kernel="").

A group grows as in TVM's FuseOps: from its tail T to T's immediate post-dominator P
(networkx `immediate_dominators` on the reversed graph, from a virtual exit that every graph
output and every unread node feeds), taking every node on the paths T -> P, provided all of
them are `ops.ELEMENTWISE` ops whose one output has the group's shape and dtype and no
quantisation parameters. Post-dominance makes a group single-exit: its inner values are read
only inside it and are not graph outputs, and no operand it reads from outside depends on it,
so the fused node keeps the graph acyclic. Diamonds fuse too (the Erf GELU reads its input
twice; steps name earlier values as "y<j>", see `compiler.ops.etch_ops`).

Anchors are visited last first, so an Add joining two kernels (a residual) goes to the later
one (the second conv of a ResNet block); then unclaimed elementwise nodes seed anchorless
groups, first first. A lone anchor or elementwise node is left as it is.

Preconditions: a verified graph. Invariants: bit-identical results (etch.Fused runs the same
reference code in the same order); graph output names kept (the fused node writes the tail's
output); idempotent (an etch.Fused node neither anchors nor joins a group).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np

from compiler.ir import Graph, Node, Value
from compiler.ops import ELEMENTWISE, LINEAR
from passes.base import Pass

EXIT = "<exit>"  # the virtual sink of the post-dominator analysis
Arg = int | str


@dataclass
class Group:
    """A fusion group: the anchor (None for an elementwise chain) and its members in
    topological order (the anchor first); `stop` says why it did not grow further."""

    anchor: Node | None
    members: list[Node]
    stop: str


class Flow:
    """The node dependency graph with a virtual exit, and its immediate post-dominators."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.dag = graph.nx_graph()
        self.order = {n: k for k, n in enumerate(graph.nodes)}
        self.readers = graph.consumers()
        outputs = set(graph.outputs)
        for n in graph.nodes:
            if self.dag.out_degree(n) == 0 or outputs.intersection(n.outputs):
                self.dag.add_edge(n, EXIT)
        self.dag.add_node(EXIT)
        self.ipdom = nx.immediate_dominators(self.dag.reverse(copy=False), EXIT)

    def between(self, tail: Node, sink: Node) -> list[Node]:
        """The nodes on the paths from `tail` to `sink` (sink included), in order."""
        region = nx.descendants(self.dag, tail) & nx.ancestors(self.dag, sink)
        return sorted(region | {sink}, key=self.order.__getitem__)


# ---- checks: each returns the reason a node cannot be fused, or None ------------------------
def member_reason(graph: Graph, node: Node, like: Value, claimed: set[Node]) -> str | None:
    """Why `node` cannot be an epilogue step of a group whose values look like `like`."""
    if node in claimed:
        return f"{node.name} is already in another fusion group"
    if node.op not in ELEMENTWISE:
        return f"{node.name} ({node.op}) is not an elementwise op"
    out = graph.values[node.outputs[0]]
    if len(node.outputs) != 1 or out.shape != like.shape or out.dtype != like.dtype:
        return f"{node.name} ({node.op}) makes {out.dtype}{list(out.shape)}, not the " \
               f"group's {like.dtype}{list(like.shape)}"
    return _plain_reason(graph, node)


def anchor_reason(graph: Graph, node: Node) -> str | None:
    """Why `node` cannot anchor a fusion group."""
    if node.op not in LINEAR:
        return f"{node.name} ({node.op}) is not a kernel etch.Fused takes"
    return _plain_reason(graph, node)


def _plain_reason(graph: Graph, node: Node) -> str | None:
    """Reasons shared by anchors and steps: quantised output, tensor attributes, a gap."""
    if graph.values[node.outputs[0]].quant is not None:
        return f"{node.name}: %{node.outputs[0]} carries quantisation parameters"
    if any(isinstance(v, np.ndarray) for v in node.attrs.values()):
        return f"{node.name}: a tensor attribute cannot go into the JSON epilogue"
    if "" in _present(node.inputs):
        return f"{node.name}: an omitted optional input precedes a given one"
    return None


def _present(inputs: list[str]) -> list[str]:
    """The inputs without trailing omitted ones."""
    n = len(inputs)
    while n and not inputs[n - 1]:
        n -= 1
    return inputs[:n]


# ---- growing groups ---------------------------------------------------------------------------
def grow(flow: Flow, seed: Node, anchored: bool, claimed: set[Node]) -> Group:
    """The largest group that starts at `seed` and takes only unclaimed nodes."""
    like = flow.graph.values[seed.outputs[0]]
    members, tail = [seed], seed
    while True:
        region, stop = _next_region(flow, tail, like, claimed)
        if stop is not None:
            return Group(seed if anchored else None, members, stop)
        members += region
        tail = region[-1]


def _next_region(flow: Flow, tail: Node, like: Value,
                 claimed: set[Node]) -> tuple[list[Node], str | None]:
    sink = flow.ipdom.get(tail, EXIT)
    if sink == EXIT:
        return [], _exit_reason(flow, tail)
    region = flow.between(tail, sink)
    for node in region:
        reason = member_reason(flow.graph, node, like, claimed)
        if reason is not None:
            return [], _readers_note(flow, tail, sink) + reason
    return region, None


def _reader_names(flow: Flow, tail: Node) -> list[str]:
    return sorted({n.name for n in flow.readers.get(tail.outputs[0], [])})


def _exit_reason(flow: Flow, tail: Node) -> str:
    out = tail.outputs[0]
    readers = _reader_names(flow, tail)
    if out in flow.graph.outputs:
        return f"%{out} is a graph output"
    if len(readers) > 1:
        return f"%{out} has {len(readers)} readers ({', '.join(readers)}) that do not rejoin"
    return f"%{out} is not read"


def _readers_note(flow: Flow, tail: Node, sink: Node) -> str:
    readers = _reader_names(flow, tail)
    if len(readers) < 2:
        return ""
    return f"%{tail.outputs[0]} has {len(readers)} readers ({', '.join(readers)}) that " \
           f"rejoin at {sink.name}, but "


def fusion_reason(graph: Graph, node: Node) -> str | None:
    """Why no elementwise node can be fused after `node` (None when one can)."""
    flow = Flow(graph)
    _, stop = _next_region(flow, node, graph.values[node.outputs[0]], set())
    return stop


def plan(graph: Graph) -> list[Group]:
    """The fusion groups of `graph` (two or more members each), disjoint."""
    flow, claimed, groups = Flow(graph), set(), []
    anchors = [n for n in reversed(graph.nodes) if anchor_reason(graph, n) is None]
    for anchor in anchors:
        groups += _claim(grow(flow, anchor, True, claimed), claimed)
    for node in graph.nodes:
        like = graph.values[node.outputs[0]] if node.outputs else None
        if like is not None and member_reason(graph, node, like, claimed) is None:
            groups += _claim(grow(flow, node, False, claimed), claimed)
    return groups


def _claim(group: Group, claimed: set[Node]) -> list[Group]:
    if len(group.members) < 2:
        return []
    claimed.update(group.members)
    return [group]


# ---- building the etch.Fused node ---------------------------------------------------------------
def fused_node(group: Group, name: str) -> Node:
    """The etch.Fused node that computes `group` (its inputs: kernel's, then operands)."""
    anchor = group.anchor
    inputs = _present(anchor.inputs) if anchor else []
    pos = {anchor.outputs[0]: 0} if anchor else {}  # value -> j, its "y<j>"
    steps = []
    for i, node in enumerate(group.members[1:] if anchor else group.members):
        args = [_arg(value, pos, i, inputs) for value in _present(node.inputs)]
        steps.append({"op": node.op, "args": args, "attrs": _jsonable(node.attrs)})
        pos[node.outputs[0]] = i + 1
    attrs = {
        "kernel": anchor.op if anchor else "",
        "kernel_attrs": _dumps(_jsonable(anchor.attrs) if anchor else {}),
        "num_kernel_inputs": len(_present(anchor.inputs)) if anchor else 0,
        "epilogue": _dumps(steps),
    }
    return Node("etch.Fused", inputs, [group.members[-1].outputs[0]], attrs, name)


def _arg(value: str, pos: dict[str, int], step: int, inputs: list[str]) -> Arg:
    """How step `step` names `value`: "y" (the running value), "y<j>", or an input index."""
    if value in pos:
        return "y" if pos[value] == step else f"y{pos[value]}"
    if value not in inputs:
        inputs.append(value)
    return inputs.index(value)


def _jsonable(attrs: dict[str, Any]) -> dict[str, Any]:
    """Attributes as plain JSON types (numpy scalars to Python, tuples to lists)."""
    return json.loads(_dumps(attrs))


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=lambda v: v.item())


def _fuse(graph: Graph, group: Group, used_names: set[str]) -> None:
    seed = group.members[0]
    name = f"fused_{seed.name}"
    while name in used_names:
        name += "_"
    used_names.add(name)
    node = fused_node(group, name)
    graph.add_node(node, graph.nodes.index(group.members[-1]))
    for member in group.members:
        graph.remove_node(member)
        if member is not group.members[-1]:
            graph.values.pop(member.outputs[0], None)


class FuseEpilogue(Pass):
    """Fuse elementwise epilogues into their kernels, and elementwise chains together."""

    name = "fuse_epilogue"

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        graph = graph.copy()
        groups = plan(graph)
        used = {n.name for n in graph.nodes}
        for group in groups:
            _fuse(graph, group, used)
        return graph, bool(groups)
