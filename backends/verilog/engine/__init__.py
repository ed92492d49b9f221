"""The tensor engine backend (`--target verilog --engine systolic|adder-tree`).

`build(graph, opts, out)` renders what passes/plan_engine.py recorded on the IR:
- `rtl/`: the hand-written engine modules, the array, the ISA package and the generated
  top level (`te_top.v`);
- `mem/segK/`: each segment's program and memory images ($readmemh files, named to the
  simulator by plusargs, so one simulator build serves every model and segment with the
  same engine configuration);
- `tb/stream_harness.cpp`, `graph.onnx` (the integer graph with the plan: host nodes run
  from it), `area.json` with --area;
and returns the manifest entries (runtime "verilator", the executor's `segments`, the
engine configuration, the placement, the cycle and area estimates). The generated RTL is
linted (verilator -Wall) and the simulator built (cached by content) before it returns.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from backends.verilog import HARNESS
from backends.verilog.engine import estimate, memories, program, top
from backends.verilog.engine.array_kinds import ArrayKind, array_for
from backends.verilog.engine.isa import FIELDS
from compiler import onnx_export
from compiler.errors import EtchError
from compiler.ir import Graph
from compiler.options import CompileOptions
from passes.plan_engine import check_array
from runtime import verilator_build as vb

Progress = Callable[[str], None]


def safe_name(name: str) -> str:
    """A model-derived name usable in Verilog comments, C++ and file names."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:64] or "model"


def plan_of(graph: Graph) -> tuple[dict, dict[str, dict]]:
    """(the `etch.engine` metadata, layer records by anchor name)."""
    if "etch.engine" not in graph.metadata:
        raise EtchError("internal: the verilog backend needs the plan_engine pass's plan")
    meta = json.loads(graph.metadata["etch.engine"])
    recs = {}
    for n in graph.nodes:
        rec = json.loads(n.attrs["engine"]) if "engine" in n.attrs else {}
        if "kind" in rec:
            recs[rec["name"]] = rec
    return meta, recs


def full_config(meta: dict, array: ArrayKind, programs: list[list[int]]) -> dict:
    """The plan's configuration plus what rendering decides: program depth (the longest
    program, or the plan's `idepth` where larger: a configuration shared by several models),
    field widths and the array module."""
    depth = max([meta["config"].get("idepth", 1), *(len(p) for p in programs)])
    return {**meta["config"], "idepth": depth,
            "gw": FIELDS["PASS"]["iy0"].width, "xa": FIELDS["PASS"]["row0"].width,
            "array_module": array.module, "array_params": array.params}


def check(opts: CompileOptions) -> None:
    """--array and --engine/--pe, before the passes run."""
    check_array(opts.array)
    c = opts.array
    array_for(opts.engine, opts.pe, c[0], c[1], 8)


def build(graph: Graph, opts: CompileOptions, out: Path,
          progress: Progress | None = None) -> dict:
    say = progress or (lambda s: None)
    meta, recs = plan_of(graph)
    if not meta["segments"]:
        why = "; ".join(f"{k}: {v}" for k, v in sorted(meta["host"].items())[:3])
        raise EtchError(f"no layer of {safe_name(graph.name)} runs on the tensor engine"
                        + (f" ({why})" if why else ""))
    c = meta["config"]
    array = array_for(opts.engine, opts.pe, c["rows"], c["cols"], c["ww"])
    cells = estimate.cells(c, array)
    if opts.max_cells is not None and cells["total"] > opts.max_cells:
        raise EtchError(f"the {c['rows']}x{c['cols']} {opts.engine}/{opts.pe} engine is "
                        f"estimated at {cells['total']:,} cells, over --max-cells "
                        f"{opts.max_cells:,}; use a smaller --array")
    segs = meta["segments"]
    layers = [[recs[name] for name in s["layers"]] for s in segs]
    programs = [program.segment_program(s, ls, c) for s, ls in zip(segs, layers)]
    config = full_config(meta, array, programs)
    model = safe_name(graph.name)
    say("render rtl")
    files = top.write_rtl(out / "rtl", config, list(array.files))
    for k, (s, ls, prog) in enumerate(zip(segs, layers, programs)):
        images = memories.build_images(graph, ls, s, config, prog)
        hdr = top.header(f"{model} segment {k} memory", {"segment": k, **config})
        for name, text in memories.files(images, config, hdr).items():
            (out / "mem" / s["name"]).mkdir(parents=True, exist_ok=True)
            (out / "mem" / s["name"] / name).write_text(text)
    (out / "tb").mkdir()
    shutil.copy(HARNESS, out / "tb" / HARNESS.name)
    onnx_export.save(graph, str(out / "graph.onnx"))
    rtl = [out / "rtl" / f for f in files]
    say("verilator lint")
    vb.lint(rtl, top.TOP)
    cycles = estimate.cycles(meta, recs, config, array)
    seg_specs = [_segment_spec(s, files, config, cycles[k]) for k, s in enumerate(segs)]
    say("verilator build")
    vb.build(_build_spec(rtl, seg_specs[0]), out / "tb" / HARNESS.name, progress=say)
    entries = {"runtime": "verilator", "graph": "graph.onnx", "segments": seg_specs,
               "explain": explain_lines(meta, recs, config, array, cycles, cells),
               "engine": {"config": config, "array": array.module,
                          "array_reference": array.reference, "cells_estimate": cells,
                          "cycles_estimate": cycles, "host": meta["host"]}}
    if opts.area:
        from backends.verilog.engine.area import engine_area

        say("yosys area")
        area = engine_area(rtl, config)
        (out / "area.json").write_text(json.dumps(area, indent=1, sort_keys=True))
        entries["engine"]["area"] = {k: area[k] for k in ("cells", "luts", "memory_bits")}
    return entries


def explain_lines(meta: dict, recs: dict[str, dict], config: dict, array: ArrayKind,
                  cycles: list[dict], cells: dict) -> list[str]:
    """The engine and its plan in words, for `etch compile --explain`."""
    c = config
    lines = [(f"tensor engine: {c['engine']}/{c['pe']} {c['rows']}x{c['cols']} "
             f"({array.module}{', behavioural reference' if array.reference else ''}); "
             f"widths a {c['aw']} w {c['ww']} tile sum {c['pw']} accumulator {c['accw']} "
             f"bias {c['bw']}; ~{cells['total']:,} cells estimated"),
             f"{'layer':<28}{'kind':>6}{'tiles':>7}{'passes':>8}{'est. cycles':>13}"]
    for seg, est in zip(meta["segments"], cycles):
        lines.append(f"{seg['name']}: in {', '.join(t['name'] for t in seg['inputs'])}; "
                     f"out {', '.join(t['name'] for t in seg['outputs'])}; "
                     f"{est['total']:,} cycles per inference")
        for name in seg["layers"]:
            r = recs[name]
            tiles = sum(len(p) for p in r.get("passes", []))
            passes = tiles * len(r.get("chunks", [[0, 0]]))
            lines.append(f"  {name:<26}{r['kind']:>6}{tiles:>7}{passes:>8}"
                         f"{est['layers'][r['id']]:>13,}")
    lines += [f"host: {name} ({why})" for name, why in sorted(meta["host"].items())]
    return lines


def _segment_spec(s: dict, files: list[str], config: dict, cycles: dict) -> dict:
    io = [{"name": t["name"], "shape": t["shape"], "dtype": t["dtype"]} for t in s["inputs"]]
    oo = [{"name": t["name"], "shape": t["shape"], "dtype": t["dtype"]} for t in s["outputs"]]
    nbytes = [sum(_numel(t["shape"]) for t in ts) for ts in (s["inputs"], s["outputs"])]
    mem = f"mem/{s['name']}"
    plus = [f"+etch_{m}={mem}/{m}.hex" for m in ("prog", "wmem", "bias", "req")]
    if config["ntab"]:
        plus.append(f"+etch_tab={mem}/tab.hex")
    labels = {"0": "io", **{str(k): v for k, v in cycles["labels"].items()}}
    return {"name": s["name"], "nodes": s["nodes"], "top": top.TOP,
            "sources": [f"rtl/{f}" for f in files], "inputs": io, "outputs": oo,
            "stream": {"in_bytes": nbytes[0], "in_beat": 1, "out_bytes": nbytes[1],
                       "out_beat": 1},
            "max_cycles": 4 * cycles["total"] + 10_000, "stats": True, "layers": labels,
            "plusargs": plus, "build": {"hierarchical": False, "opt": "-O1", "args": []}}


def _build_spec(rtl: list[Path], spec: dict) -> vb.BuildSpec:
    return vb.BuildSpec(tuple(rtl), spec["top"], stats=True)


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n
