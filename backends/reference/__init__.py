"""The `ref` target: the optimised graph saved as ONNX (etch ops in the `etch` domain), run
by the numpy reference interpreter. It is the golden model in artifact form."""

from __future__ import annotations

from pathlib import Path

from compiler import onnx_export
from compiler.ir import Graph
from compiler.options import CompileOptions


def build(graph: Graph, opts: CompileOptions, out: Path) -> dict:
    onnx_export.save(graph, str(out / "graph.onnx"))
    return {"runtime": "reference", "graph": "graph.onnx"}
