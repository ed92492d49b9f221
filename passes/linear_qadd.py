"""LinearQAdd: record, on every integer residual add, a straight-line form of it where one
is proven exact.

etch.QAdd is TFLite's integer add (compiler/ops/etch_int.py): each side requantised to a
common int32 scale, the sum requantised to the output, three 64-bit multiply-and-round
steps per element. With 8-bit inputs it is a function on at most 256 x 256 pairs, so
`etch_int.linear_qadd` can check a cheaper formula on all of them:
    y = clamp((a ca + b cb + c) >> k, qmin, qmax)   in int32
(two 32-bit multiplies, two adds, a shift and a clamp). Where one candidate matches on every
pair this pass records it as the step's attr `linear` = [k, ca, cb, c]; backends may
compute that instead of the three requantisations (the x86 integer kernels do). Where none
matches (inputs of another type, exact ties the reference breaks by its rounding of each
side, a sum that leaves int32) nothing is recorded and backends keep the reference formula.

The input ranges: a QAdd inside an etch.QFused group reads the running value, inside the
group's requantisation bounds [qmin, qmax] (the full 8-bit type after a table), and the
residual anywhere in its type; a standalone etch.QAdd reads both inputs anywhere in their
types. Any `linear` already present is recomputed (a pass never trusts a stale proof).

Preconditions: a verified integer graph (after FuseInteger). Invariants: bit-identical
results (the recorded form equals the formula on the whole input domain); the graph's
nodes and values are unchanged but for the attr; idempotent. graph.metadata
["etch.qadd_linear"] counts the adds with and without a straight-line form, for --explain.
"""

from __future__ import annotations

import json

from compiler.ir import Graph, Node
from compiler.ops.etch_int import linear_qadd
from compiler.ops.etch_ops import fused_steps
from passes.base import Pass

TYPE_RANGES = {"int8": (-128, 127), "uint8": (0, 255)}


class LinearQAdd(Pass):
    name = "linear_qadd"

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        changed, proven, general = False, 0, 0
        for node in graph.nodes:
            if node.op == "etch.QFused":
                found, moved = _fused(graph, node)
            elif node.op == "etch.QAdd":
                found, moved = _standalone(graph, node)
            else:
                continue
            if found is None:
                continue
            proven += found
            general += not found
            changed |= moved
        if proven or general:
            graph.metadata["etch.qadd_linear"] = json.dumps(
                {"linear": proven, "general": general}, sort_keys=True)
        return graph, changed


def _record(attrs: dict, a_range: tuple | None, b_range: tuple | None) -> tuple[bool, bool]:
    """Put the proven form (or nothing) into `attrs`; (found, attrs changed)."""
    old = attrs.pop("linear", None)
    form = None if a_range is None or b_range is None else \
        linear_qadd(attrs, a_range, b_range)
    if form is not None:
        attrs["linear"] = form
    return form is not None, (None if old is None else list(old)) != form


def _type_range(graph: Graph, name: str) -> tuple[int, int] | None:
    value = graph.values.get(name)
    return None if value is None else TYPE_RANGES.get(value.dtype)


def _standalone(graph: Graph, node: Node) -> tuple[bool, bool]:
    return _record(node.attrs, _type_range(graph, node.inputs[0]),
                   _type_range(graph, node.inputs[1]))


def _fused(graph: Graph, node: Node) -> tuple[bool | None, bool]:
    """The QAdd step of a QFused group (None: the group has none)."""
    steps = fused_steps(node.attrs)
    ops = [s["op"] for s in steps]
    if "etch.QAdd" not in ops:
        return None, False
    step = steps[ops.index("etch.QAdd")]
    requant = steps[0]["attrs"]
    if "etch.Table" in ops:
        y = TYPE_RANGES.get(requant.get("to", "int8"))
    else:
        y = (int(requant["qmin"]), int(requant["qmax"]))
    other = next(a for a in step["args"] if a != "y")
    r = _type_range(graph, node.inputs[other])
    ranges = (y, r) if step["args"][0] == "y" else (r, y)
    found, moved = _record(step["attrs"], *ranges)
    if moved:
        node.attrs["epilogue"] = json.dumps(steps, sort_keys=True)
    return found, moved
