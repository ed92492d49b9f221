"""The hardwired-weight backend (`--target verilog --engine hardwired`).

`build(graph, opts, out)` renders what passes/plan_hardwired.py recorded: for each segment,
its layers (`from_ir.layer_spec`) become datapath netlists and Verilog (`design.write`):
`rtl/<segment>/*.v`, linted with `verilator -Wall`, the simulator built (cached by content);
`tb/stream_harness.cpp`, `graph.onnx` (host nodes run from it) and, with --area, `area.json`
(Yosys). Returns the manifest entries: runtime "verilator", the executor's `segments`, and
`hardwired`: per segment and layer the decisions, cycles per inference, latency, adder and
cell counts.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from backends.verilog import HARNESS
from backends.verilog.hardwired import design
from backends.verilog.hardwired.from_ir import layer_spec
from compiler import onnx_export
from compiler.errors import EtchError
from compiler.ir import Graph
from compiler.options import CompileOptions
from runtime import verilator_build as vb

Progress = Callable[[str], None]
TOP = "etch_hw_top"


def plan_of(graph: Graph) -> dict:
    if "etch.hardwired" not in graph.metadata:
        raise EtchError("internal: the hardwired backend needs the plan_hardwired pass's plan")
    return json.loads(graph.metadata["etch.hardwired"])


def build(graph: Graph, opts: CompileOptions, out: Path, progress: Progress | None = None) -> dict:
    say = progress or (lambda s: None)
    plan = plan_of(graph)
    if not plan["segments"]:
        reasons = "; ".join(f"{k}: {v}" for k, v in sorted(plan["host"].items())[:3])
        raise EtchError(f"no layer of {graph.name} can be hardwired ({reasons or 'no QGemm'})")
    nodes = {n.name: n for n in graph.nodes}
    (out / "tb").mkdir(parents=True)
    harness = out / "tb" / HARNESS.name
    shutil.copy(HARNESS, harness)
    segs, report, areas = [], [], {}
    for seg in plan["segments"]:
        specs = [layer_spec(graph, nodes[a]) for a in seg["layers"]]
        d = design.write(specs, out / "rtl" / seg["name"], TOP, progress=say)
        say(f"verilator lint {seg['name']}")
        vb.lint_split(d.files, d.top, d.parts, d.lint_args, build_extra=d.build_args)
        entry = _segment_entry(seg, d, out)
        say(f"verilator build {seg['name']}")
        vb.build(_build_spec(entry, out), harness, progress=say)
        segs.append(entry)
        report.append(_report(seg, d))
        if opts.area:
            from backends.verilog.area import synth_area

            say(f"yosys area {seg['name']}")
            areas[seg["name"]] = synth_area(d.files, d.top)
    onnx_export.save(graph, str(out / "graph.onnx"))
    entries = {"runtime": "verilator", "graph": "graph.onnx", "segments": segs,
               "explain": explain_lines(report, plan["host"]),
               "hardwired": {"segments": report, "host": plan["host"],
                             "cells_planned": plan["cells"]}}
    if areas:
        (out / "area.json").write_text(json.dumps(areas, indent=1, sort_keys=True))
        entries["hardwired"]["area"] = {k: {"cells": a["cells"], "luts": a["luts"]}
                                        for k, a in areas.items()}
    return entries


def _segment_entry(seg: dict, d: design.Design, out: Path) -> dict:
    return {"name": seg["name"], "nodes": seg["nodes"], "top": d.top,
            "sources": [str(f.relative_to(out)) for f in d.files],
            "inputs": [seg["input"]], "outputs": [seg["output"]],
            "stream": {"in_bytes": d.in_bytes, "in_beat": d.in_beat,
                       "out_bytes": d.out_bytes, "out_beat": d.out_beat},
            "max_cycles": d.steps + d.latency + 16, "stats": False,
            "build": {"hierarchical": d.hierarchical, "opt": d.build_opt,
                      "args": list(d.build_args),
                      "parts": [[m, str(f.relative_to(out))] for m, f in d.parts]}}


def _build_spec(entry: dict, out: Path) -> vb.BuildSpec:
    b = entry["build"]
    return vb.BuildSpec(tuple(out / f for f in entry["sources"]), entry["top"],
                        hierarchical=b["hierarchical"], opt=b["opt"], extra=tuple(b["args"]),
                        parts=tuple((m, out / f) for m, f in b.get("parts", ())))


def _report(seg: dict, d: design.Design) -> dict:
    layers = []
    for b in d.layers:
        s, cost = b.spec, b.cost()
        nonzero = int(np.count_nonzero(s.w))
        layers.append({"name": s.name, "k": s.k, "n": s.n, "neuron": s.neuron,
                       "fold": s.fold, "serial": s.serial, "pipeline": s.pipeline,
                       "steps": s.steps, "latency": b.latency, "nonzero_weights": nonzero,
                       "adders_per_weight": round(cost.adders / max(nonzero, 1), 4),
                       **cost.to_json()})
    return {"name": seg["name"], "cycles_per_inference": d.steps, "latency": d.latency,
            "layers": layers, "cells_estimate": sum(x["cells"] for x in layers)}


def explain_lines(report: list[dict], host: dict[str, str]) -> list[str]:
    """The hardwired design in words, for `etch compile --explain`."""
    lines = ["hardwired design:",
             (f"  {'layer':<28}{'KxN':>11}{'neuron':>9}{'fold':>6}{'serial':>8}{'adders':>9}"
             f"{'adders/w':>10}{'est. cells':>12}")]
    for seg in report:
        for lay in seg["layers"]:
            lines.append(f"  {lay['name'][:27]:<28}{lay['k']:>5}x{lay['n']:<5}"
                         f"{lay['neuron']:>9}{lay['fold']:>6}{str(lay['serial']).lower():>8}"
                         f"{lay['adders']:>9}{lay['adders_per_weight']:>10}{lay['cells']:>12,}")
        lines.append(f"  {seg['name']}: {seg['cycles_per_inference']} cycles per inference, "
                     f"latency {seg['latency']} cycles")
    lines += [f"  host: {name}: {why}" for name, why in sorted(host.items())]
    return lines
