"""The Verilog backend: IR -> synthesizable Verilog, simulated with Verilator.

`build(graph, opts, out_dir) -> dict` is the driver's entry; it hands the graph to the
design named by --engine (`ENGINES`: the tensor engine in `engine/` for systolic and
adder-tree arrays, hardwired-weight designs in `hardwired/`). Shared pieces live here for every design: `area.py` (Yosys cells and
LUTs), `tb/stream_harness.cpp` (the one C++ harness that streams inferences through any
design's stream ports; the build and the run are `runtime.verilator_build`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from compiler.errors import EtchError

if TYPE_CHECKING:
    from compiler.ir import Graph
    from compiler.options import CompileOptions

HARNESS = Path(__file__).resolve().parent / "tb" / "stream_harness.cpp"
# --engine -> the module whose build(graph, opts, out, progress) renders that design
# (None: not built)
ENGINES: dict[str, str | None] = {"systolic": "backends.verilog.engine",
                                  "adder-tree": "backends.verilog.engine",
                                  "hardwired": "backends.verilog.hardwired"}


def _design(opts: CompileOptions):
    module = ENGINES.get(opts.engine)
    if module is None:
        built = " or ".join(k for k, v in ENGINES.items() if v)
        raise EtchError(f"--engine {opts.engine}: that design is not built yet in this "
                        f"version of etch (choose {built})")
    return importlib.import_module(module)


def check(opts: CompileOptions) -> None:
    """The verilog options, before any pass runs (the design's own check included)."""
    design = _design(opts)
    if hasattr(design, "check"):
        design.check(opts)


def build(graph: Graph, opts: CompileOptions, out_dir: Path,
          progress: Callable[[str], None] | None = None) -> dict:
    """Build `graph` for the verilog target into `out_dir`; returns the manifest entries."""
    return _design(opts).build(graph, opts, out_dir, progress)
