"""Big layers as column parts: blocks of output neurons, each its own datapath module.

A fully parallel layer (fold 1, no pooling, residual add or bypassed inputs) with more than
SPLIT_WEIGHTS weights is split by output columns into parts of about PART_WEIGHTS weights.
A part is the whole datapath of its columns (`layer.datapath` of the column slice: CSE
within the part, its neurons' output units), so parts share nothing but the input vector:
no value crosses between them, each is a self-contained module in its own file, and the
layer's datapath module only instantiates them and concatenates their outputs (part 0
also carries the step's valid/phase/bit). Verilator builds and lints each part alone
(`runtime.verilator_parts`), so every stage grows with the number of parts rather than
with the square of the design, and parts are generated in parallel processes.

Sharing stops at part boundaries: a part's CSE sees only its columns (more adders per
weight than one CSE over the whole matrix; the scale study reports them). Parts of one
layer have the same latency (the same pipeline depth); when they would not, the layer is
built whole.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from backends.verilog.hardwired import layer as layer_mod
from backends.verilog.hardwired import pipeline, printer
from backends.verilog.hardwired.estimate import netlist_cost
from backends.verilog.hardwired.layer import CODE_BITS, LayerSpec
from passes.hardwired_cost import Cost

SPLIT_WEIGHTS = 65_536   # layers with more weights are split by columns
PART_WEIGHTS = 32_768    # weights per part (at least one column)
STEP_OUTPUTS = ("v_o", "ph_o", "bt_o")
INDENT = printer.INDENT


@dataclass(frozen=True)
class PartJob:
    spec: LayerSpec   # the layer restricted to the part's columns
    module: str
    out_dir: Path
    header: str
    first: bool       # carries the step outputs (v_o, ph_o, bt_o)


@dataclass(frozen=True)
class PartInfo:
    module: str
    file: Path
    columns: int
    nodes: int
    latency: int
    cost: Cost
    ports: tuple[str, ...]


def splittable(spec: LayerSpec) -> bool:
    return (spec.fold == 1 and not (spec.pool or spec.residual or spec.bypass)
            and spec.k * spec.n > SPLIT_WEIGHTS)


def column_ranges(spec: LayerSpec) -> list[range] | None:
    """The parts' output columns, None when the layer is built whole."""
    if not splittable(spec):
        return None
    cols = max(1, PART_WEIGHTS // spec.k)
    return [range(c, min(c + cols, spec.n)) for c in range(0, spec.n, cols)]


def column_spec(spec: LayerSpec, cols: range) -> LayerSpec:
    """The layer restricted to output columns `cols`."""
    sl = slice(cols.start, cols.stop)
    return dataclasses.replace(spec, name=f"{spec.name}_c{cols.start}", w=spec.w[:, sl],
                               bias=spec.bias[sl], m0=spec.m0[sl], shift=spec.shift[sl])


def make_part(job: PartJob) -> PartInfo:
    """Build, render and write one part (run in a worker process)."""
    net = layer_mod.datapath(job.spec)
    if not job.first:
        for name in STEP_OUTPUTS:
            net.outputs.pop(name)
            net.out_nodes.pop(name)
    text = printer.render(net, job.module, job.header)
    path = job.out_dir / f"{job.module}.v"
    path.write_text(text)
    return PartInfo(job.module, path, job.spec.n, len(net), pipeline.latency(net),
                    netlist_cost(net), tuple(port_names(text)))


def make_parts(jobs: list[PartJob],
               progress: Callable[[str], None] | None = None) -> list[PartInfo]:
    """Every part, in parallel worker processes (one per CPU), in the order of `jobs`."""
    workers = min(len(jobs), len(os.sched_getaffinity(0)))
    if workers <= 1:
        return [make_part(j) for j in jobs]
    out = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for i, info in enumerate(pool.map(make_part, jobs)):
            out.append(info)
            if progress:
                progress(f"netlist parts: {i + 1}/{len(jobs)}")
    return out


HEADER_PORT = re.compile(r"^\s*(?:input|output)\s+(?:wire|reg)?\s*(?:\[[^\]]+\])?\s*(\w+)")


def port_names(text: str) -> list[str]:
    """The port names of the first module in `text`, in header order."""
    head = re.sub(r"/\*.*?\*/", "", text[text.index("module "):text.index(");")])
    body = head[head.index("(") + 1:]
    return [m.group(1) for line in body.split(",") if (m := HEADER_PORT.match(line.strip()))]


def control_widths(spec: LayerSpec) -> tuple[int, int]:
    """Widths of the phase and bit inputs (as `layer.datapath` declares them)."""
    return max(1, (spec.fold - 1).bit_length()), max(1, (spec.bits - 1).bit_length())


def render_wrapper(module: str, header: str, spec: LayerSpec, parts: list[PartInfo]) -> str:
    """The layer's datapath: the parts side by side on one input vector."""
    pw, bw = control_widths(spec)
    used = {p for part in parts for p in part.ports}
    xw = spec.k * (1 if spec.serial else CODE_BITS)
    ports = [f"input  wire {p}" for p in ("clk", "en", "rst") if p in used]
    ports.append(f"input  wire [{xw - 1}:0] x")
    ports += [_unused(f"input  wire [{w - 1}:0] {p}") for p, w in (("v", 1), ("ph", pw),
                                                                      ("bt", bw))]
    if "xh" in used:
        ports.append(f"input  wire [{spec.k * CODE_BITS - 1}:0] xh")
    ports.append(f"output wire [{spec.n * CODE_BITS - 1}:0] y")
    ports += [f"output wire [{w - 1}:0] {p}" for p, w in (("v_o", 1), ("ph_o", pw),
                                                          ("bt_o", bw))]
    lines = [header.rstrip(), "`default_nettype none", f"module {module} ("]
    lines += [f"{INDENT}{p}{',' if i + 1 < len(ports) else ''}" for i, p in enumerate(ports)]
    lines.append(");")
    lo = 0
    for i, part in enumerate(parts):
        hi = lo + part.columns * CODE_BITS
        conns = [f".{p}({f'y[{hi - 1}:{lo}]' if p == 'y' else p})" for p in part.ports]
        lines.append(f"{INDENT}{part.module} u_p{i} ({', '.join(conns)});")
        lo = hi
    lines += ["endmodule", "`default_nettype wire", ""]
    return "\n".join(lines)


def _unused(decl: str) -> str:
    return f"/* verilator lint_off UNUSEDSIGNAL */ {decl} /* verilator lint_on UNUSEDSIGNAL */"
