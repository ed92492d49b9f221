"""`etch inspect`: a model's inputs, outputs, ops, parameter count and target support.

Support is reported as the compiler will see each op: every node is run, on its own,
through the import-time passes every pipeline starts with (`pipeline.import_passes`:
QDQ, QLinear* and MatMulNBits absorbed into etch's ops, Identity bypassed), and a target
supports the op when it builds every op its nodes became ("part" when only some of the
nodes do). An op the passes rewrite says what it becomes.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from compiler import binding, onnx_import, pipeline
from compiler.ir import Graph, Node, Value

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


def report(model: str, input_shapes: Mapping[str, tuple[int, ...]],
           bind: str | None = None) -> str:
    """The report for `model`; `bind` (an .npz, as `etch compile --bind`) binds inputs."""
    graph = onnx_import.import_model(model, input_shapes, binding.values(bind))
    return render(graph)


def render(graph: Graph) -> str:
    source = graph.metadata.get("etch.source_opset", str(graph.opset))
    lines = [(f"model {graph.name}: opset {source}, {len(graph.nodes)} nodes, "
              f"{graph.param_count():,} parameters")]
    for kind, names in (("input", graph.inputs), ("output", graph.outputs)):
        for n in names:
            v = graph.values[n]
            lines.append(f"  {kind:<7}{n}: {v.dtype}[{'x'.join(map(str, v.shape))}]")
    lines += [f"  bound  {binding.describe(b)}" for b in binding.records(graph)]
    targets = list(SUPPORT)
    support = {t: supported_ops(t) for t in targets}
    seen = {op: [as_compiled(graph, n) for n in graph.nodes if n.op == op]
            for op in graph.op_counts()}
    width = max([24, *(len(op) + 1 for op in seen)])
    lines.append(f"  {'op':<{width}}{'count':>6}  " + "".join(f"{t:>9}" for t in targets))
    for op, k in sorted(graph.op_counts().items()):
        marks = "".join(f"{_mark(seen[op], support[t]):>9}" for t in targets)
        lines.append(f"  {op:<{width}}{k:>6}  {marks}{_becomes(op, seen[op])}")
    return "\n".join(lines)


def _becomes(op: str, became: list[frozenset[str]]) -> str:
    """"  -> MatMul + etch.Dequant" when the import-time passes rewrite `op` ("|" between
    different outcomes for different nodes), else ""."""
    forms = sorted({" + ".join(sorted(b)) or "nothing (bypassed)" for b in became})
    return "" if forms == [op] else f"  -> {' | '.join(forms)}"


def as_compiled(graph: Graph, node: Node) -> frozenset[str]:
    """The ops `node` becomes once the import-time passes have run on it alone (its constant
    inputs kept constant): what a backend is asked to build for it."""
    sub = Graph(graph.name)
    for name in dict.fromkeys(i for i in node.inputs if i):
        v = graph.values[name]
        sub.add_value(Value(v.name, v.shape, v.dtype, v.data, v.quant))
        if not v.is_const:
            sub.inputs.append(name)
    for name in (o for o in node.outputs if o):
        v = graph.values[name]
        sub.add_value(Value(v.name, v.shape, v.dtype, v.data, v.quant))
        sub.outputs.append(name)
    sub.add_node(Node(node.op, list(node.inputs), list(node.outputs), dict(node.attrs),
                      node.name))
    for p in pipeline.import_passes():
        sub, _ = p.run(sub)
    return frozenset(n.op for n in sub.nodes)


def _mark(became: list[frozenset[str]], ops: frozenset[str] | None) -> str:
    """yes / no / part (some nodes of the op build, some do not) / n/a (no backend)."""
    if ops is None:
        return "n/a"
    ok = [b <= ops for b in became]
    return "yes" if all(ok) else ("part" if any(ok) else "no")
