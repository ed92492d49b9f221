"""`etch bench verilog`: the tensor engine per model and configuration, simulated.

Two sections, one JSON (results/verilog.json):
- digits: each digits model (`--models` for others) in every configuration (--engines x
  --pes x --bits x --arrays; default 2 x 3 x 3 at 8x8), the whole test split;
- utilisation: resnet_block at 8x8 and 16x16, both engines, mac PEs, 8-bit (`--util-models`,
  `--util-arrays`), `--inputs` seeded samples: the GEMM-heavy layers of a real network.
For each configuration the model is compiled with the real pipeline
(`compiler.compile(..., target="verilog")`) and its inputs (the whole digits test split, or
`--inputs N` seeded samples) stream through one Verilator simulation (`run_batch`):
- cycles per inference, simulated and as the compiler estimated;
- PE utilisation per layer: useful multiply-accumulates / (rows * cols * cycles);
- simulated inferences per second of wall time (the `run_batch` call), and inferences per
  second of the hardware at a nominal clock (`--clock-mhz`, default 200: an assumed
  FPGA-class clock, not a timing-closed one): clock / cycles per inference;
- top-1 accuracy (digits) and whether every output equals the integer reference;
- for bit-serial PEs, the cycles bit-plane skipping saves on the model's real weights
  (the estimate with each tile's plane mask vs with every plane);
- with `--area`, Yosys generic cells and 6-LUTs of the engine (memories as SRAM bits), for
  the first weight width and array of each engine/PE pair (Yosys takes minutes per design).
Goals printed with the table: utilisation > 80% on the GEMM-heavy layers (a layer whose
channels fill the array: input channels per group >= rows, output channels >= cols, and
>= 4 * rows vectors per weight tile) at batch 1; the 450-image digits split simulated in
under a minute of wall time.
Result: results/verilog.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

import runtime
from backends.verilog.engine import estimate
from backends.verilog.engine.array_kinds import array_for
from benchmarks.bench_tvm import cpu_name
from compiler import driver, onnx_import, reference
from models import accuracy, zoo

DIGITS = ["digits_mlp", "digits_cnn"]
CALIB_IMAGES = 200


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engines", nargs="+", default=["systolic", "adder-tree"])
    p.add_argument("--pes", nargs="+", default=["mac", "booth", "bitserial"])
    try:  # weight widths: `etch bench arrays` defines the same option (same default)
        p.add_argument("--bits", nargs="+", type=int, default=[8, 4, 2])
    except argparse.ArgumentError:
        pass
    p.add_argument("--arrays", nargs="+", default=["8x8"])
    p.add_argument("--inputs", type=int, default=4, help="samples of non-digits models")
    p.add_argument("--util-models", nargs="*", default=["resnet_block"])
    p.add_argument("--util-arrays", nargs="+", default=["8x8", "16x16"])
    p.add_argument("--area", action="store_true", help="Yosys cells and LUTs (slow)")
    p.add_argument("--clock-mhz", type=float, default=200.0,
                   help="nominal clock for hardware inferences per second")


def _arrays(specs: list[str]) -> list[tuple[int, int]]:
    return [(int(a.split("x")[0]), int(a.split("x")[1])) for a in specs]


def _opt(args: argparse.Namespace, key: str, default: list) -> list:
    return getattr(args, key, None) or default


def run(args: argparse.Namespace) -> dict:
    opt = functools.partial(_opt, args)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in opt("models", DIGITS):
            calib = _calib(name, Path(tmp))
            for engine in opt("engines", ["systolic", "adder-tree"]):
                for pe in opt("pes", ["mac", "booth", "bitserial"]):
                    for k, bits in enumerate(opt("bits", [8, 4, 2])):
                        for j, array in enumerate(_arrays(opt("arrays", ["8x8"]))):
                            area = getattr(args, "area", False) and k == j == 0 and \
                                name == opt("models", DIGITS)[-1]
                            rows.append(_config(name, calib, engine, pe, bits, array, args,
                                                area))
        for name in opt("util_models", []):
            calib = _calib(name, Path(tmp))
            for engine in ("systolic", "adder-tree"):
                for array in _arrays(opt("util_arrays", ["8x8", "16x16"])):
                    rows.append(_config(name, calib, engine, "mac", 8, array, args, False))
    return {"benchmark": "verilog", "cpu": cpu_name(), "cores": os.cpu_count(),
            "load_average": list(os.getloadavg()), "clock_mhz": _clock(args), "rows": rows,
            "goals": _goals(rows)}


def _clock(args: argparse.Namespace) -> float:
    return float(getattr(args, "clock_mhz", None) or 200.0)


def _samples(name: str, shape: tuple[int, ...], n: int, seed: int) -> np.ndarray:
    """n samples: digits images (training split for seed 0, test split otherwise), else
    seeded N(0, 1)."""
    if name in DIGITS:
        x_train, _, x_test, _ = zoo.digits_split()
        return zoo.digits_inputs(name, (x_train if seed == 0 else x_test)[:n])
    return np.random.default_rng(seed).normal(size=(n, *shape[1:])).astype(np.float32)


def _calib(name: str, tmp: Path) -> Path:
    g = onnx_import.import_model(str(zoo.model_path(name)))
    path = tmp / f"{name}.calib.npz"
    np.savez(path, **{g.inputs[0]: _samples(name, g.values[g.inputs[0]].shape, CALIB_IMAGES,
                                            0)})
    return path


def _config(name: str, calib: Path, engine: str, pe: str, bits: int,
            array: tuple[int, int], args: argparse.Namespace, area: bool) -> dict:
    t0 = time.perf_counter()
    print(f"  {name} {engine}/{pe} {bits}-bit {array[0]}x{array[1]} ...", flush=True)
    art = driver.compile(str(zoo.model_path(name)), "verilog", bits=bits, calib=str(calib),
                         engine=engine, pe=pe, array=array, area=area)
    compile_s = time.perf_counter() - t0
    ex = runtime.load(art.path)
    batch = _inputs(name, ex.graph, getattr(args, "inputs", 8))
    t0 = time.perf_counter()
    outs = ex.run_batch(batch)
    wall = time.perf_counter() - t0
    exact = all(all(np.array_equal(o[k], r[k]) for k in r)
                for o, r in zip(outs, (reference.run(ex.graph, x) for x in batch)))
    eng = art.manifest["engine"]
    if "area" in eng:  # the engine's area.json: per-module cells too
        eng = {**eng, "area": json.loads((art.path / "area.json").read_text())}
    row = {"model": name, "engine": engine, "pe": pe, "bits": bits,
           "array": f"{array[0]}x{array[1]}", "array_module": eng["array"],
           "exact": exact, "inferences": len(batch), "sim_seconds": round(wall, 3),
           "inferences_per_s": round(len(batch) / wall, 1), "compile_s": round(compile_s, 1),
           **_cycles(art, ex, array)}
    row["hw_inferences_per_s"] = round(_clock(args) * 1e6 / max(1.0, row["cycles"]), 1)
    if name in DIGITS:
        predicted = np.array([accuracy.logits_of(o).reshape(-1).argmax() for o in outs])
        row["accuracy"] = float(np.mean(predicted == zoo.digits_split()[3][:len(outs)]))
    if pe == "bitserial":
        row["plane_skipping"] = _skipping(art, array)
    if "area" in eng:
        a = eng["area"]
        row["area"] = {"cells": a["cells"], "luts": a["luts"], "estimate": eng[
            "cells_estimate"]["total"], "memory_bits": a["memory_bits"]["total"],
            "modules": {k: v["cells"] for k, v in a["modules"].items()}}
    return row


def _inputs(name: str, graph, n: int) -> list[dict]:
    key = graph.inputs[0]
    x = _samples(name, graph.values[key].shape, 450 if name in DIGITS else n, 1)
    return [{key: x[i:i + 1]} for i in range(len(x))]


def _cycles(art, ex, array: tuple[int, int]) -> dict:
    """Simulated and estimated cycles, and utilisation per layer."""
    est = art.manifest["engine"]["cycles_estimate"]
    recs = {}
    for n in ex.graph.nodes:
        rec = json.loads(n.attrs.get("engine", "{}"))
        if "kind" in rec:
            recs[rec["name"]] = rec
    sim = sum(s["cycles"] / max(1, s["n"]) for s in ex.stats.values())
    layers = []
    for seg in ex.stats.values():
        for name, c in seg["layers"].items():
            rec = recs.get(name)
            macs = rec["macs"] if rec and rec["kind"] == "gemm" else 0
            per = c / max(1, seg["n"])
            layers.append({"layer": name, "cycles": round(per, 1), "macs": macs,
                           "utilisation": round(macs / (array[0] * array[1] * per), 4)
                           if macs else None, "gemm_heavy": bool(rec and _heavy(rec, array))})
    return {"cycles": round(sim, 1), "cycles_estimate": sum(e["total"] for e in est),
            "layers": layers}


def _heavy(rec: dict, array: tuple[int, int]) -> bool:
    """A GEMM layer that can fill the array (see the module docstring)."""
    if rec["kind"] != "gemm":
        return False
    g = rec["geom"]
    cin_per_group = rec["macs"] // max(1, g["oh"] * g["ow"] * g["cout"] * g["kh"] * g["kw"])
    return (cin_per_group >= array[0] and g["cout"] >= array[1]
            and g["oh"] * g["ow"] >= 4 * array[0])


def _skipping(art, array: tuple[int, int]) -> dict:
    """Estimated cycles with each tile's plane mask vs with every plane processed."""
    meta = json.loads(art.graph.metadata["etch.engine"])
    config = art.manifest["engine"]["config"]
    recs = {}
    for n in art.graph.nodes:
        rec = json.loads(n.attrs.get("engine", "{}"))
        if "kind" in rec:
            recs[rec["name"]] = rec
    kind = array_for("systolic", "bitserial", *array, config["ww"])
    masked = sum(s["total"] for s in estimate.cycles(meta, recs, config, kind))
    full = {k: {**r, "passes": [[[t[0], t[1], (1 << r["bits"]) - 1] for t in p]
                                for p in r["passes"]]} if r["kind"] == "gemm" else r
            for k, r in recs.items()}
    every = sum(s["total"] for s in estimate.cycles(meta, full, config, kind))
    return {"cycles": masked, "cycles_all_planes": every,
            "saved": round(1 - masked / every, 4) if every else 0.0}


def _goals(rows: list[dict]) -> dict:
    heavy = [layer["utilisation"] for r in rows for layer in r["layers"]
             if layer["gemm_heavy"] and int(r["array"].split("x")[0]) <= 16]
    split = [r["sim_seconds"] for r in rows if r["model"] in DIGITS and r["inferences"] == 450]
    return {"min_gemm_heavy_utilisation": min(heavy) if heavy else None,
            "utilisation_over_80": bool(heavy) and min(heavy) > 0.8,
            "digits_split_max_seconds": max(split) if split else None,
            "digits_split_under_60s": bool(split) and max(split) < 60,
            "all_exact": all(r["exact"] for r in rows)}


def table(result: dict) -> str:
    head = (f"{'model':<13}{'engine/pe':<21}{'bits':>4}{'array':>7}{'cycles':>10}{'est':>10}"
            f"{'inf/s':>9}{'hw inf/s':>10}{'acc':>7}{'exact':>6}{'util*':>7}{'skip':>6}"
            f"{'cells':>9}{'LUTs':>8}")
    load = ", ".join(f"{x:.1f}" for x in result["load_average"])
    lines = [(f"etch bench verilog -- {result['cpu']}, {result['cores']} cores, load average "
              f"{load} (1/5/15 min, at the end); hw inf/s at a nominal "
              f"{result['clock_mhz']:g} MHz"), head]
    for r in result["rows"]:
        heavy = [x["utilisation"] for x in r["layers"] if x["gemm_heavy"]]
        area = r.get("area", {})
        lines.append(
            f"{r['model']:<13}{r['engine'] + '/' + r['pe']:<21}{r['bits']:>4}{r['array']:>7}"
            f"{r['cycles']:>10,.0f}{r['cycles_estimate']:>10,}{r['inferences_per_s']:>9,.0f}"
            f"{r['hw_inferences_per_s']:>10,.0f}"
            f"{r.get('accuracy', float('nan')):>7.4f}{'yes' if r['exact'] else 'NO':>6}"
            f"{min(heavy) if heavy else float('nan'):>7.2f}"
            f"{r.get('plane_skipping', {}).get('saved', float('nan')):>6.2f}"
            f"{area.get('cells', 0):>9,}{area.get('luts', 0):>8,}")
    g = result["goals"]
    lines.append(f"util* = lowest PE utilisation over GEMM-heavy layers (goal > 0.80: "
                 f"{g['min_gemm_heavy_utilisation']}); digits split simulated in "
                 f"{g['digits_split_max_seconds']} s at most (goal < 60); every output "
                 f"bit-exact: {g['all_exact']}")
    return "\n".join(lines)
