"""The Verilog backend: IR -> synthesizable Verilog, simulated with Verilator.

`build(graph, opts, out_dir) -> dict` is the driver's entry. Shared pieces live here for
every engine: `area.py` (Yosys cells and LUTs), `tb/stream_harness.cpp` (the one C++
harness that streams inferences through any design's stream ports; the build and the run
are `runtime.verilator_build`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from compiler.errors import EtchError

if TYPE_CHECKING:
    from compiler.ir import Graph
    from compiler.options import CompileOptions

HARNESS = Path(__file__).resolve().parent / "tb" / "stream_harness.cpp"


def build(graph: Graph, opts: CompileOptions, out_dir: Path) -> dict:
    """Build `graph` for the verilog target into `out_dir`; returns the manifest entries."""
    raise EtchError("--target verilog: the tensor engine is not built yet in this version")
