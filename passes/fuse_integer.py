"""FuseInteger: record the integer graph's output-unit groups as `etch.QFused` nodes.

Rewrites (compiler/ops/etch_qfused.py defines the op and its step format):
- A(...) -> etch.Requantize -> [etch.Table] -> [etch.QAdd(., r)]  with A an accumulating
  anchor (etch.QGemm, etch.QConv, etch.QSumPool) -> one etch.QFused(kernel=A, steps), e.g.
      QAdd(Requantize(QConv(x, w, b, z), m0, sh), r)
      -> QFused(x, w, b, z, m0, sh, r; kernel=etch.QConv,
                epilogue=[Requantize(y, 4, 5), QAdd(y, 6)]);
- an etch.Clamp after any of those steps joins the group as the clamp of the step before
  it: Requantize/QAdd get qmin' = clip(qmin, lo, hi), qmax' = clip(qmax, lo, hi) (a clamp of
  a clamp is the clamp to the clipped bounds); a table gets its entries clipped.
The chain grows while the running value has exactly one reader and is not a graph output,
each step kind at most once and in the output unit's order (rules as data: `STEP_RULES`).
A QAdd whose inputs both end groups goes to the later anchor in node order (anchors are
visited last first): the earlier group's output is then the residual, already in memory.

Preconditions: a verified integer graph (QuantizeActivations' output). The anchor's
accumulator must have the Requantize as its only reader, with constant m0/shift, per tensor
or along the anchor's output channels; `fusion_reason` says why an anchor forms no group.
Invariants: bit-identical results (etch.QFused runs the members' reference code in the
same order, and merged clamps are exact); graph output names kept (the QFused node writes
the last member's output, and is named like its anchor, so kernel names do not change);
idempotent (an etch.QFused node is no anchor). graph.metadata["etch.int_groups"] lists
the groups by pattern and the anchors left alone with the reason, for `--explain`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compiler.ir import Graph, Node
from compiler.ops.etch_ops import fused_steps
from compiler.ops.etch_qfused import ANCHORS, encode
from passes.base import Pass

Attrs = dict[str, Any]


@dataclass
class Chain:
    """A group being grown: its member nodes, the steps recorded so far (args as value names,
    "y" for the running value), and the running value."""

    anchor: Node
    members: list[Node]
    steps: list[Attrs] = field(default_factory=list)
    y: str = ""
    replaced: list[str] = field(default_factory=list)  # constants merged clamps replaced

    def has(self, op: str) -> bool:
        return any(s["op"] == op for s in self.steps)


@dataclass(frozen=True)
class StepRule:
    """How a reader of the running value joins the group: `check` returns why it cannot
    (None: it can), `take` records it in the chain (it may add constants to the graph)."""

    op: str
    check: Callable[[Graph, Node, Chain], str | None]
    take: Callable[[Graph, Node, Chain], None]


# ---- the anchor and its Requantize -------------------------------------------------------------
def fusion_reason(graph: Graph, anchor: Node,
                  consumers: dict[str, list[Node]] | None = None) -> str | None:
    """Why `anchor` forms no group (None when it does)."""
    if anchor.op not in ANCHORS:
        return f"{anchor.name} ({anchor.op}) is not an accumulating integer op"
    acc = anchor.outputs[0]
    readers = (graph.consumers() if consumers is None else consumers).get(acc, [])
    if acc in graph.outputs:
        return f"{anchor.name}: its accumulator %{acc} is a graph output"
    if len(readers) != 1 or readers[0].op != "etch.Requantize":
        return f"{anchor.name}: %{acc} is not read by exactly one etch.Requantize"
    req = readers[0]
    if req.inputs[0] != acc or acc in req.inputs[1:]:
        return f"{anchor.name}: {req.name} reads %{acc} as a multiplier"
    return _requant_reason(graph, anchor, req)


def _requant_reason(graph: Graph, anchor: Node, req: Node) -> str | None:
    params = [graph.values[name] for name in req.inputs[1:3]]
    if not all(p.is_const for p in params):
        return f"{req.name}: m0/shift are not constants"
    if all(p.size == 1 for p in params):
        return None
    rank = len(graph.values[anchor.outputs[0]].shape)
    axis = req.attrs.get("axis")
    if axis is None or int(axis) % rank != ANCHORS[anchor.op] % rank:
        return f"{req.name} requantises along axis {axis}, not the output channels of " \
               f"{anchor.name}"
    return None


def _start(anchor: Node, readers: dict[str, list[Node]]) -> Chain:
    req = readers[anchor.outputs[0]][0]
    step = {"op": req.op, "args": ["y", *req.inputs[1:3]], "attrs": _attrs(req)}
    return Chain(anchor, [anchor, req], [step], req.outputs[0])


def _attrs(node: Node) -> Attrs:
    """A member's attributes as a step records them (placement is the fused node's)."""
    return {k: v for k, v in node.attrs.items() if k != "placement"}


# ---- the step rules --------------------------------------------------------------------------
def _clamp_check(graph: Graph, node: Node, chain: Chain) -> str | None:
    return None if node.inputs[0] == chain.y else f"{node.name} does not clamp the group value"


def _clamp_take(graph: Graph, node: Node, chain: Chain) -> None:
    lo, hi = int(node.attrs["lo"]), int(node.attrs["hi"])
    last = chain.steps[-1]
    if last["op"] == "etch.Table":
        table = graph.values[last["args"][1]]
        clipped = np.clip(table.data, lo, hi).astype(table.data.dtype)
        chain.replaced.append(table.name)
        last["args"][1] = graph.add_const(f"{table.name}_clamped", clipped).name
        return
    bounds = last["attrs"]
    bounds["qmin"] = int(np.clip(int(bounds["qmin"]), lo, hi))
    bounds["qmax"] = int(np.clip(int(bounds["qmax"]), lo, hi))


def _table_check(graph: Graph, node: Node, chain: Chain) -> str | None:
    if chain.has("etch.Table") or chain.has("etch.QAdd"):
        return f"{node.name}: the output unit has one table, before its residual add"
    if node.inputs[0] != chain.y or chain.y in node.inputs[1:]:
        return f"{node.name} does not look up the group value"
    if not graph.values[node.inputs[1]].is_const:
        return f"{node.name}: its table is computed"
    return None


def _table_take(graph: Graph, node: Node, chain: Chain) -> None:
    chain.steps.append({"op": node.op, "args": ["y", *node.inputs[1:]], "attrs": _attrs(node)})


def _qadd_check(graph: Graph, node: Node, chain: Chain) -> str | None:
    if chain.has("etch.QAdd"):
        return f"{node.name}: the output unit has one residual add"
    if node.inputs.count(chain.y) != 1:
        return f"{node.name} does not add a residual to the group value"
    shape = graph.values[chain.y].shape
    other = node.inputs[1 - node.inputs.index(chain.y)]
    if graph.values[other].shape != shape or graph.values[node.outputs[0]].shape != shape:
        return f"{node.name}: the residual %{other} is broadcast"
    return None


def _qadd_take(graph: Graph, node: Node, chain: Chain) -> None:
    args = ["y" if i == chain.y else i for i in node.inputs]
    chain.steps.append({"op": node.op, "args": args, "attrs": _attrs(node)})


STEP_RULES: dict[str, StepRule] = {r.op: r for r in (
    StepRule("etch.Clamp", _clamp_check, _clamp_take),
    StepRule("etch.Table", _table_check, _table_take),
    StepRule("etch.QAdd", _qadd_check, _qadd_take),
)}


# ---- growing and building groups -----------------------------------------------------------------
def grow(graph: Graph, chain: Chain, claimed: set[Node],
         readers: dict[str, list[Node]]) -> Chain:
    """Take readers of the running value while a step rule admits them."""
    while chain.y not in graph.outputs and len(readers.get(chain.y, [])) == 1:
        node = readers[chain.y][0]
        rule = STEP_RULES.get(node.op)
        if node in claimed or rule is None or rule.check(graph, node, chain) is not None:
            break
        rule.take(graph, node, chain)
        chain.members.append(node)
        chain.y = node.outputs[0]
    return chain


def qfused_node(chain: Chain) -> Node:
    """The etch.QFused node computing `chain` (anchor inputs, then the step operands)."""
    anchor = chain.anchor
    inputs = list(anchor.inputs)
    while inputs and not inputs[-1]:
        inputs.pop()
    k, operands, steps = len(inputs), [], []
    for step in chain.steps:
        args = []
        for a in step["args"]:
            if a != "y" and a not in operands:
                operands.append(a)
            args.append("y" if a == "y" else k + operands.index(a))
        steps.append({**step, "args": args})
    attrs = encode(anchor.op, _attrs(anchor), k, steps)
    if "placement" in anchor.attrs:
        attrs["placement"] = anchor.attrs["placement"]
    return Node("etch.QFused", inputs + operands, [chain.y], attrs, anchor.name)


def _replace(graph: Graph, chain: Chain) -> None:
    node = qfused_node(chain)
    graph.nodes.insert(graph.nodes.index(chain.members[-1]), node)
    for member in chain.members:
        graph.remove_node(member)
        if member.outputs[0] != chain.y:
            graph.values.pop(member.outputs[0], None)


def _drop_unread(graph: Graph, names: set[str]) -> None:
    """Drop the constants in `names` that no node reads any more (replaced tables)."""
    read = {i for n in graph.nodes for i in n.inputs} | set(graph.outputs)
    for name in names - read:
        graph.values.pop(name, None)


class FuseInteger(Pass):
    """Fuse each integer accumulation with its requantisation, table and residual add."""

    name = "fuse_integer"

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        graph = graph.copy()
        readers = graph.consumers()
        claimed: set[Node] = set()
        chains, left = [], []
        for anchor in [n for n in reversed(graph.nodes) if n.op in ANCHORS]:
            reason = fusion_reason(graph, anchor, readers)
            if reason is not None:
                left.append([anchor.name, reason])
                continue
            chain = grow(graph, _start(anchor, readers), claimed, readers)
            claimed.update(chain.members)
            chains.append(chain)
        for chain in chains:
            _replace(graph, chain)
        _drop_unread(graph, {name for c in chains for name in c.replaced})
        graph.toposort()
        report = _report(graph, left)
        if report["groups"] or left:
            graph.metadata["etch.int_groups"] = json.dumps(report, sort_keys=True)
        return graph, bool(chains)


def _report(graph: Graph, left: list[list[str]]) -> dict:
    """The groups in `graph` by pattern (those of earlier runs too), and the anchors left."""
    counts: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "etch.QFused":
            ops = [node.attrs["kernel"]] + [s["op"] for s in fused_steps(node.attrs)]
            key = " > ".join(op.removeprefix("etch.") for op in ops)
            counts[key] = counts.get(key, 0) + 1
    return {"groups": counts, "ungrouped": sorted(left)}
