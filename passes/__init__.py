"""IR -> IR transformations, one per module, registered here by class.

A pass is a class with its options in the constructor and a pure `run(graph) -> (graph,
changed)`. Local rewrites are `Rule`s driven to a fixed point by `apply_rules`.
"""

from __future__ import annotations

from passes.base import Pass, Rule, apply_rules

__all__ = ["Pass", "Rule", "apply_rules"]
