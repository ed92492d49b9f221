"""The TVM backend: IR graph -> Relax/TIR -> model.so for cpu (llvm), cuda and edge.

`build(graph, opts, out_dir) -> dict` is the driver's entry (see `builder.py`). This package
file imports nothing heavy, because `etch inspect` imports `backends.tvm.support`.

Layout: `lower/` (graph -> Relax module, one TE kernel per node, the op table),
`schedules/` (rules per target), `target.py` (target dicts, CPU features), `builder.py`
(pipeline and export), `tune.py` (optional MetaSchedule), `edge*.py` (aarch64).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from compiler.ir import Graph
    from compiler.options import CompileOptions


def check(opts: CompileOptions) -> None:
    """EtchError for options this backend cannot honour (an unknown --mcpu), checked before
    the passes run."""
    from backends.tvm.target import check_options

    check_options(opts)


def build(graph: Graph, opts: CompileOptions, out_dir: Path) -> dict:
    """Build `graph` for opts.target into `out_dir`; returns the manifest entries."""
    from backends.tvm.builder import build as build_target

    return build_target(graph, opts, Path(out_dir))
