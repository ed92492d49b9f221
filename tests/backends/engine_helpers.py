"""Helpers for the tensor-engine tests: zoo models as integer graphs, planned for an engine
configuration, run through the engine's functional model or compiled for --target verilog.

Integer graphs and compiled artifacts are cached per process (keyed by their settings),
and the Verilator builds by content hash (`runtime.verilator_build`), so tests share them.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

import compiler
from backends.verilog.engine import memories, model, program
from compiler import onnx_import, pipeline, reference
from compiler.driver import Artifact
from compiler.ir import Graph
from compiler.options import CompileOptions
from models import zoo
from passes.fuse_integer import FuseInteger
from passes.plan_engine import PlanEngine
from tests.passes.quant_helpers import inputs_for

CACHE = Path(__file__).resolve().parents[2] / ".cache" / "tests"


@functools.cache
def calib_path(name: str) -> Path:
    """A calibration .npz for zoo model `name` (64 samples; digits: the training split)."""
    g = onnx_import.import_model(str(zoo.model_path(name)))
    path = CACHE / f"calib_{name}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{g.inputs[0]: inputs_for(name, g, 64)})
    return path


@functools.cache
def integer_graph(name: str, bits: int = 8) -> Graph:
    """Zoo model `name` at `bits`-bit weights as the verilog pipeline hands it to
    PlanEngine (integer graph, fusion groups recorded)."""
    opts = CompileOptions(target="verilog", bits=bits, calib=str(calib_path(name)))
    passes = [p for p in pipeline.passes_for(opts) if not isinstance(p, PlanEngine)]
    g, _ = pipeline.run(onnx_import.import_model(str(zoo.model_path(name))), opts, passes)
    return g


def plan_graph(g: Graph, array: tuple[int, int] = (8, 8), acc_entries: int = 256) -> Graph:
    """A hand-made integer graph through the verilog pipeline's last two passes."""
    fused, _ = FuseInteger().run(g)
    return PlanEngine("systolic", "mac", array, acc_entries).run(fused)[0]


def planned(name: str, bits: int = 8, array: tuple[int, int] = (8, 8),
            acc_entries: int = 256) -> Graph:
    g, _ = PlanEngine("systolic", "mac", array, acc_entries).run(integer_graph(name, bits))
    return g


def samples(name: str, n: int) -> list[dict[str, np.ndarray]]:
    """n single inputs of `name`: digits test images, else seeded N(0, 1)."""
    g = integer_graph(name)
    x = inputs_for(name, g, n, offset=-1)
    return [{g.inputs[0]: x[i:i + 1]} for i in range(n)]


def engine_meta(g: Graph) -> tuple[dict, dict[str, dict]]:
    meta = json.loads(g.metadata["etch.engine"])
    recs = {}
    for n in g.nodes:
        rec = json.loads(n.attrs.get("engine", "{}"))
        if "kind" in rec:
            recs[rec["name"]] = rec
    return meta, recs


def model_mismatches(g: Graph, inputs: list[dict[str, np.ndarray]]) -> list[str]:
    """Run every segment of planned graph `g` in the engine's functional model on the
    reference's segment inputs; the segment outputs that differ from the reference."""
    meta, recs = engine_meta(g)
    config = meta["config"]
    bad = []
    for seg in meta["segments"]:
        layers = [recs[name] for name in seg["layers"]]
        prog = program.segment_program(seg, layers, config)
        images = memories.build_images(g, layers, seg, config, prog)
        sizes = {"adepth": seg["words"], "accd": config["accd"]}
        engine = model.EngineModel({**config, **sizes}, images)
        for x in inputs:
            env = reference.run(g, x, keep=True)
            data = b"".join(np.ascontiguousarray(env[t["name"]]).tobytes()
                            for t in seg["inputs"])
            out = engine.run(data)
            want = b"".join(np.ascontiguousarray(env[t["name"]]).tobytes()
                            for t in seg["outputs"])
            if out != want:
                bad.append(seg["name"])
    return bad


@functools.cache
def verilog(name: str, bits: int = 8, engine: str = "systolic", pe: str = "mac",
            array: tuple[int, int] = (8, 8)) -> Artifact:
    """`name` compiled for --target verilog (the simulator built, cached by content)."""
    return compiler.compile(str(zoo.model_path(name)), "verilog", bits=bits,
                            calib=str(calib_path(name)), engine=engine, pe=pe, array=array)


def graph_artifact(g: Graph, out: Path, array: tuple[int, int] = (8, 4)) -> Path:
    """An integer graph (placements set) planned and built for --target verilog without
    the import and quantisation passes: the driver's last two steps, for test graphs."""
    from backends.verilog import engine
    from compiler import driver

    opts = CompileOptions(target="verilog", array=array)
    gp = plan_graph(g, array)
    out.mkdir(parents=True, exist_ok=True)
    entries = engine.build(gp, opts, out)
    manifest = driver._manifest(gp, opts, [], driver._io_meta(gp, gp.inputs), entries, out,
                                0.0)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return out
