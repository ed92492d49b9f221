"""The reference target runs every op that has a reference implementation."""

from compiler import ops

SUPPORTED_OPS = frozenset(ops.registry())
