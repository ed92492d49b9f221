"""The pass protocol and the rule driver.

`Rule(name, pattern, check, rewrite)`: `pattern(graph, node)` says whether the node has the
right shape of neighbourhood, `check(graph, node)` returns None when the rule applies or a
reason why not (kept for `--explain`), `rewrite(graph, node)` edits the graph in place.
`apply_rules` runs a list of rules over the nodes to a fixed point, with an iteration cap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from compiler.errors import EtchError
from compiler.ir import Graph, Node


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
    """Apply rules until none fires; returns whether anything changed."""
    changed = False
    for _ in range(max_iters):
        fired = _fire_once(graph, rules)
        if not fired:
            return changed
        changed = True
    raise EtchError(f"rewrite rules did not reach a fixed point in {max_iters} iterations")


def _fire_once(graph: Graph, rules: list[Rule]) -> bool:
    for node in list(graph.nodes):
        for rule in rules:
            if rule.pattern(graph, node) and rule.check(graph, node) is None:
                rule.rewrite(graph, node)
                graph.toposort()
                return True
    return False
