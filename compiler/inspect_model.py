"""`etch inspect`: a model's inputs, outputs, ops, parameter count and target support."""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from compiler import onnx_import
from compiler.ir import Graph

# target -> module declaring SUPPORTED_OPS (a frozenset of IR op names) for that backend.
SUPPORT = {"cpu": "backends.tvm.support", "cuda": "backends.tvm.support",
           "edge": "backends.tvm.support", "verilog": "backends.verilog.support",
           "ref": "backends.reference.support"}


def supported_ops(target: str) -> frozenset[str] | None:
    """The ops `target` can build, or None when that backend does not declare them yet."""
    try:
        return importlib.import_module(SUPPORT[target]).SUPPORTED_OPS
    except ModuleNotFoundError:
        return None


def report(model: str, input_shapes: Mapping[str, tuple[int, ...]]) -> str:
    graph = onnx_import.import_model(model, input_shapes)
    return render(graph)


def render(graph: Graph) -> str:
    source = graph.metadata.get("etch.source_opset", str(graph.opset))
    lines = [(f"model {graph.name}: opset {source}, {len(graph.nodes)} nodes, "
              f"{graph.param_count():,} parameters")]
    for kind, names in (("input", graph.inputs), ("output", graph.outputs)):
        for n in names:
            v = graph.values[n]
            lines.append(f"  {kind:<7}{n}: {v.dtype}[{'x'.join(map(str, v.shape))}]")
    targets = list(SUPPORT)
    support = {t: supported_ops(t) for t in targets}
    lines.append(f"  {'op':<24}{'count':>6}  " + "".join(f"{t:>9}" for t in targets))
    for op, k in sorted(graph.op_counts().items()):
        marks = "".join(f"{_mark(op, support[t]):>9}" for t in targets)
        lines.append(f"  {op:<24}{k:>6}  {marks}")
    return "\n".join(lines)


def _mark(op: str, ops: frozenset[str] | None) -> str:
    if ops is None:
        return "n/a"
    return "yes" if op in ops else "no"
