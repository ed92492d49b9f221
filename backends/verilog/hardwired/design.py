"""A hardwired design on disk: layers -> datapath netlists -> Verilog files.

`write(specs, out_dir)` renders each layer's datapath (`printer`), its stream wrapper
(`templates/hw_layer.v.j2` around the hand-written `rtl/hw_ctrl.v`) and the top that chains
the layers (`templates/hw_top.v.j2`), and returns a `Design`: the files, the top module and
its stream shape. Every file starts with a header naming the etch version, the source node
and a hash of the parameters it was generated from; names from the model are sanitised
before they reach Verilog. Output bytes depend only on the specs.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import numpy as np

from backends.verilog.hardwired import columns, pipeline, printer
from backends.verilog.hardwired import layer as layer_mod
from backends.verilog.hardwired.estimate import netlist_cost
from backends.verilog.hardwired.layer import CODE_BITS, PART_NODES, LayerSpec
from backends.verilog.hardwired.netlist import Netlist
from compiler import __version__
from passes.hardwired_cost import Cost

VERILOG = Path(__file__).resolve().parents[1]
SYNTH_PART = 400  # datapaths above this are printed as modules of about this many nodes
# Verilator options chosen by size (the simulation is the same bit for bit). A combinational
# datapath becomes one C++ function per evaluation region, and g++ time grows faster than
# linearly in a function's size (a 64x64 int4 layer: one 10k-line function, 63 of the
# build's 80 CPU s at -O1); above SPLIT_NODES its functions are cut every SPLIT_STATEMENTS
# statements (the build: 16 CPU s). Lint runs every Verilator pass, optimisations included;
# above LINT_O0_NODES it runs without them (-O0: the same checks, ~40% less CPU).
SPLIT_NODES = 1_000
SPLIT_STATEMENTS = 500
LINT_O0_NODES = 1_000
CTRL = VERILOG / "rtl" / "hw_ctrl.v"


def sanitize(name: str, prefix: str = "hw_") -> str:
    """A Verilog identifier from a model name: [A-Za-z0-9_] only, prefixed, not too long."""
    s = re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_") or "layer"
    return (prefix + s)[:60]


def comment_safe(text: str) -> str:
    """Text that can sit in a // comment: printable, no line breaks."""
    return re.sub(r"[^A-Za-z0-9_.,:;=/+ -]", "_", text)[:200]


def spec_hash(spec: LayerSpec) -> str:
    h = hashlib.sha256()
    for a in (spec.w, spec.bias, spec.m0, spec.shift):
        arr = np.ascontiguousarray(a, dtype=np.int64)
        h.update(str(arr.shape).encode() + arr.tobytes())
    h.update(repr((spec.zp, spec.qmin, spec.qmax, spec.in_signed, spec.out_signed, spec.table,
                   spec.table_base, spec.neuron, spec.fold, spec.serial,
                   spec.pipeline)).encode())
    return h.hexdigest()[:16]


def header(what: str, source: str, params: str) -> str:
    return (f"// etch {__version__} --engine hardwired: {comment_safe(what)}\n"
            f"// source: {comment_safe(source)}\n// parameters: {params}")


@dataclass
class Built:
    """One layer as generated: its spec, module names, pipelined datapath, latency; a
    layer split by output columns (`columns.split`) has no whole netlist but `parts`."""

    spec: LayerSpec
    module: str
    netlist: Netlist | None
    latency: int
    parts: list[columns.PartInfo] = field(default_factory=list)

    @property
    def hierarchical(self) -> bool:
        """Whether the datapath is split into hier_block modules (built in parallel)."""
        return self.netlist is not None and len(self.netlist) > 2 * PART_NODES

    @property
    def nodes(self) -> int:
        return len(self.netlist) if self.netlist is not None else sum(
            p.nodes for p in self.parts)

    def cost(self) -> Cost:
        if self.netlist is not None:
            return netlist_cost(self.netlist)
        return sum((p.cost for p in self.parts), Cost())


@dataclass
class Design:
    files: list[Path]
    top: str
    layers: list[Built]
    in_bytes: int
    out_bytes: int
    out_beat: int
    params: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def in_beat(self) -> int:
        return self.in_bytes

    @property
    def steps(self) -> int:
        """Cycles per inference once the pipeline is full (the slowest layer's)."""
        return max(b.spec.steps for b in self.layers)

    @property
    def hierarchical(self) -> bool:
        return any(b.hierarchical for b in self.layers)

    @property
    def nodes(self) -> int:
        return sum(b.nodes for b in self.layers)

    @property
    def parts(self) -> list[tuple[str, Path]]:
        """(module, file) of the column parts: self-contained modules that Verilator
        builds and lints one by one (`runtime.verilator_parts`)."""
        return [(p.module, p.file) for b in self.layers for p in b.parts]

    @property
    def largest_unit(self) -> int:
        """Nodes of the largest module Verilator sees alone (a part, or the whole)."""
        return max((p.nodes for b in self.layers for p in b.parts),
                   default=0) if self.parts else self.nodes

    @property
    def build_args(self) -> tuple[str, ...]:
        """More Verilator build arguments for this design's size (see SPLIT_NODES)."""
        if self.largest_unit <= SPLIT_NODES:
            return ()
        return ("--output-split-cfuncs", str(SPLIT_STATEMENTS))

    @property
    def build_opt(self) -> str:
        """g++ optimisation of the simulator: -O0 for a design of column parts (each part's
        straight-line C++ compiles ~30% faster; the simulation is a small part of a big
        layer's time), else -O1."""
        return "-O0" if self.parts else "-O1"

    @property
    def lint_args(self) -> tuple[str, ...]:
        """More `verilator --lint-only` arguments for this design's size (LINT_O0_NODES)."""
        return ("-O0",) if self.largest_unit > LINT_O0_NODES else ()

    @property
    def latency(self) -> int:
        """Cycles from an input beat to its output beat inclusive, no stalls: per layer its
        steps, its pipeline and the output buffer; n inferences take
        (n - 1) * steps + latency cycles."""
        return sum(b.spec.steps + b.latency + 1 for b in self.layers) + 1


def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(VERILOG / "templates")),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def build_layer(spec: LayerSpec, module: str) -> Built:
    net = layer_mod.datapath(spec)
    return Built(spec, module, net, pipeline.latency(net))


def split_layer(spec: LayerSpec, module: str, out_dir: Path,
                progress: Callable[[str], None] | None = None) -> Built | None:
    """The layer as column parts written to `out_dir` (None when it is not split: small,
    folded, pooled, or parts of unequal latency)."""
    cols = columns.column_ranges(spec)
    if cols is None:
        return None
    dp = f"{module}_dp"
    jobs = [columns.PartJob(columns.column_spec(spec, r), f"{dp}_p{i}", out_dir,
                            header(f"datapath part {i} (columns {r.start}..{r.stop - 1}) "
                                   f"of layer {spec.name}", spec.source,
                                   spec_hash(columns.column_spec(spec, r))), i == 0)
            for i, r in enumerate(cols)]
    parts = columns.make_parts(jobs, progress)
    if len({p.latency for p in parts}) != 1:
        return None
    return Built(spec, module, None, parts[0].latency, parts)


def write(specs: list[LayerSpec], out_dir: Path, top: str = "etch_hw_top",
          progress=None) -> Design:
    """Render the layers and their top into `out_dir`; returns the Design."""
    out_dir.mkdir(parents=True, exist_ok=True)
    env = _env()
    files = [out_dir / "hw_ctrl.v"]
    shutil.copyfile(CTRL, files[0])
    built, used = [], set()
    for spec in specs:
        module = sanitize(spec.name)
        while module in used or module == top:
            module += "_"
        used.add(module)
        if progress:
            progress(f"netlist {module}")
        b = split_layer(spec, module, out_dir, progress) or build_layer(spec, module)
        built.append(b)
        files += [p.file for p in b.parts] + _write_layer(env, b, out_dir, progress)
    params = hashlib.sha256("".join(spec_hash(s) for s in specs).encode()).hexdigest()[:16]
    files.append(_write_top(env, built, out_dir, top, params))
    last = built[-1].spec
    return Design(files, top, built, specs[0].k, last.n_out, last.fold * last.lanes, params)


def _write_layer(env: jinja2.Environment, b: Built, out_dir: Path, progress) -> list[Path]:
    spec, h = b.spec, spec_hash(b.spec)
    dp = f"{b.module}_dp"
    if progress:
        progress(f"print {dp} ({len(b.netlist)} nodes)")
    head = header(f"datapath of layer {spec.name}", spec.source, h)
    if b.netlist is None:  # column parts, already written: the datapath instantiates them
        texts = {dp: columns.render_wrapper(dp, head, spec, b.parts)}
    elif b.hierarchical:  # hier_block parts: Verilator builds them separately, in parallel
        texts = printer.render_parts(b.netlist, dp, head, b.netlist.partition(PART_NODES),
                                     hier=True)
    elif len(b.netlist) > SYNTH_PART:  # small modules: ABC maps them faster and better
        texts = printer.render_parts(b.netlist, dp, head, b.netlist.partition(SYNTH_PART))
    else:
        texts = {dp: printer.render(b.netlist, dp, head)}
    files = [out_dir / f"{dp}.v"]
    files[0].write_text(printer.one_file(texts, dp))
    dp_ports = _dp_ports(texts[dp])
    pw, bw = columns.control_widths(spec)
    wrapper = env.get_template("hw_layer.v.j2").render(
        header=header(f"layer {spec.name}", spec.source, h), module=b.module, datapath=dp,
        n_in=spec.k, phases=spec.fold, lanes=spec.lanes, bits=spec.bits, pw=pw, bw=bw,
        dxw=spec.k * (1 if spec.serial else CODE_BITS), dp_ports=dp_ports)
    path = out_dir / f"{b.module}.v"
    path.write_text(wrapper)
    return [*files, path]


def _dp_ports(text: str) -> list[tuple[str, str]]:
    """The datapath's port connections (port, wire), in the order of its module header:
    clock/enable/reset when it has registers; x is the control's dx."""
    return [(p, "dx" if p == "x" else p) for p in columns.port_names(text)]


def _write_top(env: jinja2.Environment, built: list[Built], out_dir: Path, top: str,
               params: str) -> Path:
    layers = []
    for b in built:
        s = b.spec
        layers.append({"module": b.module, "in_bits": s.k * 8,
                       "out_bits": s.fold * s.lanes * 8,
                       "padded": s.fold * s.lanes > s.n_out})
    text = env.get_template("hw_top.v.j2").render(
        header=header("top", ", ".join(b.spec.source or b.spec.name for b in built), params),
        module=top, layers=layers, in_bits=built[0].spec.k * 8,
        out_bits=layers[-1]["out_bits"])
    path = out_dir / f"{top}.v"
    path.write_text(text)
    return path
