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
    return write_artifact(plan_graph(g, array), out, CompileOptions(target="verilog",
                                                                   array=array))


def write_artifact(gp: Graph, out: Path, opts: CompileOptions) -> Path:
    """Planned graph `gp` rendered and built into artifact `out` (the driver's last step)."""
    from backends.verilog import engine
    from compiler import driver

    out.mkdir(parents=True, exist_ok=True)
    entries = engine.build(gp, opts, out)
    manifest = driver._manifest(gp, opts, [], driver._io_meta(gp, gp.inputs), entries, out,
                                0.0)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return out


def shared_config(graphs: list[Graph]) -> dict:
    """One engine configuration for several planned graphs (same array): every depth and
    width the largest of theirs, the program memory the longest program. A deeper memory
    or a wider datapath changes no result and no cycle, so the graphs share one build."""
    configs = []
    for g in graphs:
        meta, recs = engine_meta(g)
        progs = [program.segment_program(s, [recs[n] for n in s["layers"]], meta["config"])
                 for s in meta["segments"]]
        configs.append({**meta["config"], "idepth": max(len(p) for p in progs)})
    return {k: max(c[k] for c in configs) if isinstance(v, int) else v
            for k, v in configs[0].items()}


def with_config(g: Graph, config: dict) -> Graph:
    """Planned graph `g` with its engine configuration replaced by `config`."""
    out = g.copy()
    meta = json.loads(out.metadata["etch.engine"])
    out.metadata["etch.engine"] = json.dumps({**meta, "config": config}, sort_keys=True)
    return out


def assert_bit_exact_and_as_estimated(path: Path, batch: list[dict[str, np.ndarray]]) -> None:
    """Simulate verilog artifact `path` on `batch`: every output equals the integer
    reference's, and every segment's simulated cycles, per layer and in total, equal the
    compiler's estimate (the first inference starts one cycle early, out of reset)."""
    import runtime

    ex = runtime.load(path)
    for x, got in zip(batch, ex.run_batch(batch)):
        want = reference.run(ex.graph, x)
        assert all(np.array_equal(got[k], want[k]) for k in want)
    manifest = json.loads((path / "manifest.json").read_text())
    for seg, est in zip(manifest["segments"], manifest["engine"]["cycles_estimate"]):
        stats = ex.stats[seg["name"]]
        n, got = stats["n"], dict(stats["layers"])
        assert n * est["io"] - got.pop("io") in (0, 1), seg["name"]
        assert got == {est["labels"][k]: n * v for k, v in est["layers"].items()}, seg["name"]
        assert n * est["total"] - stats["cycles"] in (0, 1), seg["name"]
