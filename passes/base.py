"""The pass protocol and the rule driver.

`Rule(name, pattern, check, rewrite)`: `pattern(graph, node)` says whether the node has the
right shape of neighbourhood, `check(graph, node)` returns None when the rule applies or a
reason why not, `rewrite(graph, node)` edits the graph in place. `apply_rules` runs a list
of rules over the nodes to a fixed point, with an iteration cap, and keeps the reasons the
checks gave at the fixed point (a pattern that matched but did not apply) in
`graph.metadata[DECLINED]` (JSON list of {rule, node, reason}), which the manifest's
reports carry and `etch compile --explain` prints.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from compiler.errors import EtchError
from compiler.ir import Graph, Node

DECLINED = "etch.rules.declined"  # graph.metadata key of the declined rules


class Pass:
    """Base class: subclasses set `name` (defaults to the class name) and implement `run`."""

    name: str = ""

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name or type(self).__name__

    @property
    def label(self) -> str:
        return self.name or type(self).__name__


@dataclass(frozen=True)
class Rule:
    """A local rewrite: pattern, check (None = applies, str = reason it does not), rewrite."""

    name: str
    pattern: Callable[[Graph, Node], bool]
    rewrite: Callable[[Graph, Node], None]
    check: Callable[[Graph, Node], str | None] = lambda g, n: None


def apply_rules(graph: Graph, rules: list[Rule], max_iters: int = 1000) -> bool:
    """Apply rules until none fires; returns whether anything changed. The reasons of the
    checks that declined at the fixed point are added to graph.metadata[DECLINED]."""
    changed = False
    for _ in range(max_iters):
        declined: list[dict[str, str]] = []
        if not _fire_once(graph, rules, declined):
            _keep_declined(graph, declined)
            return changed
        changed = True
    raise EtchError(f"rewrite rules did not reach a fixed point in {max_iters} iterations")


def _fire_once(graph: Graph, rules: list[Rule], declined: list[dict[str, str]]) -> bool:
    """Fire the first rule that applies; list in `declined` the matches whose check said no."""
    for node in list(graph.nodes):
        for rule in rules:
            if not rule.pattern(graph, node):
                continue
            reason = rule.check(graph, node)
            if reason is None:
                rule.rewrite(graph, node)
                graph.toposort()
                return True
            declined.append({"rule": rule.name, "node": node.name, "reason": reason})
    return False


def _keep_declined(graph: Graph, declined: list[dict[str, str]]) -> None:
    if not declined:
        return
    kept = json.loads(graph.metadata.get(DECLINED, "[]"))
    kept += [d for d in declined if d not in kept]
    graph.metadata[DECLINED] = json.dumps(kept)


def explain_declined(metadata: Mapping[str, str]) -> str:
    """The declined rules of `metadata`, one line each, for --explain ("" when none)."""
    declined = json.loads(metadata.get(DECLINED, "[]"))
    lines = [f"  {d['rule']} at {d['node']}: {d['reason']}" for d in declined]
    return "\n".join(["rules that matched but did not apply:", *lines] if lines else [])
