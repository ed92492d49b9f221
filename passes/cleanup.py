"""Cleanup: remove what the graph no longer needs.

Rewrites:
- Identity(x) -> x, and inference-mode Dropout(x) -> x (when its mask output is unused:
  read by no node and not a graph output);
- nodes whose outputs nobody reads, and unused constants, are dropped.
Invariant: the function computed is unchanged, bit for bit.
"""

from __future__ import annotations

from compiler.ir import Graph, Node
from passes.base import Pass, Rule, apply_rules


def _is_passthrough(graph: Graph, node: Node) -> bool:
    if node.op == "Identity":
        return True
    if node.op != "Dropout" or not _inference(graph, node):
        return False
    mask = node.outputs[1] if len(node.outputs) > 1 else ""
    return not mask or (mask not in graph.consumers() and mask not in graph.outputs)


def _inference(graph: Graph, node: Node) -> bool:
    """Whether a Dropout is known to run in inference mode (training_mode absent or a
    constant false): with a computed training_mode it may be random, and stays."""
    flag = node.inputs[2] if len(node.inputs) > 2 else ""
    data = graph.const(flag) if flag else None
    return not flag or (data is not None and not bool(data.reshape(-1)[0]))


def _bypass(graph: Graph, node: Node) -> None:
    src, dst = node.inputs[0], node.outputs[0]
    graph.remove_node(node)
    if dst in graph.outputs:
        # Keep the output's name (users key their .npz files by it): rename the source.
        _rename_producer_output(graph, src, dst)
    else:
        graph.replace_uses(dst, src)


def _rename_producer_output(graph: Graph, src: str, dst: str) -> None:
    prod = graph.producers().get(src)
    if prod is None or src in graph.inputs or src in graph.outputs:
        graph.add_node(Node("Identity", [src], [dst], name=f"keep_{dst}"))
        return
    prod.outputs = [dst if o == src else o for o in prod.outputs]
    graph.replace_uses(src, dst)
    graph.values.pop(src, None)


def _not_kept(graph: Graph, node: Node) -> str | None:
    if node.name.startswith("keep_"):
        return "identity keeps an output name"
    return None


RULES = [Rule("bypass_identity", _is_passthrough, _bypass, _not_kept)]


class Cleanup(Pass):
    """Drop identities and dead code."""

    name = "cleanup"

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        graph = graph.copy()
        changed = apply_rules(graph, RULES)
        changed |= graph.prune() > 0
        return graph, changed
