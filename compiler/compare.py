"""`etch compare MODEL.onnx`: the tensor engine against hardwired designs, same model and
weights.

Each configuration (`CONFIGS`: tensor-engine arrays, hardwired neuron styles, folded and
bit-serial hardwired designs) is compiled for `--target verilog` with `--area` (Yosys cells
and 6-LUTs; with `--no-area` the backends' cell estimates instead), then simulated on a batch of the calibration inputs for its cycles per
inference (total cycles of the batch over its size: the steady-state rate). Reported per
configuration: cells, LUTs, cycles per inference, inferences per second at a nominal clock,
adders per nonzero weight (hardwired), and whether the simulation matched the integer
reference bit for bit. Writes a table (stdout), JSON and a PNG of area against throughput.
A configuration that cannot be built is reported with its reason; the others still run.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from compiler.errors import EtchError

CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("engine systolic 8x8", {"engine": "systolic", "array": (8, 8)}),
    ("engine adder-tree 8x8", {"engine": "adder-tree", "array": (8, 8)}),
    ("hardwired csd", {"engine": "hardwired", "neuron": "csd"}),
    ("hardwired grouped", {"engine": "hardwired", "neuron": "grouped"}),
    ("hardwired fold 4", {"engine": "hardwired", "neuron": "auto", "fold": 4}),
    ("hardwired bit-serial", {"engine": "hardwired", "neuron": "auto", "pe": "bitserial"}),
]
BATCH = 16


def calibration(model: str, calib: str | None) -> str:
    """The calibration .npz: given, or the zoo's MODEL.inputs.npz beside the model."""
    if calib:
        return calib
    beside = Path(model).with_suffix(".inputs.npz")
    if beside.is_file():
        return str(beside)
    raise EtchError("etch compare builds integer designs and needs calibration inputs: pass "
                    "--calib DATA.npz")


def _batch(calib: str, graph_inputs: list[dict]) -> list[dict[str, np.ndarray]]:
    with np.load(calib) as data:
        arrays = {i["name"]: data[i["name"]] for i in graph_inputs}
    n = min(BATCH, *(len(a) for a in arrays.values()))
    per = [i["shape"][0] for i in graph_inputs]
    return [{name: a[k * p:(k + 1) * p] for (name, a), p in zip(arrays.items(), per)}
            for k in range(max(1, n // max(per)))]


def _area(manifest: dict) -> dict:
    """Cells and LUTs of a verilog artifact's designs (Yosys, summed over segments), or with
    no Yosys run the backend's cell estimate (`cells_from`: "yosys" or "estimate")."""
    if "hardwired" in manifest:
        hw = manifest["hardwired"]
        if "area" not in hw:
            return {"cells": hw["cells_planned"], "luts": None, "cells_from": "estimate"}
        areas = hw["area"].values()
        return {"cells": sum(a["cells"] for a in areas), "luts": sum(a["luts"] for a in areas),
                "cells_from": "yosys"}
    eng = manifest.get("engine", {})
    if "area" not in eng:
        return {"cells": eng.get("cells_estimate", {}).get("total"), "luts": None,
                "cells_from": "estimate"}
    return {"cells": eng["area"].get("cells"), "luts": eng["area"].get("luts"),
            "cells_from": "yosys"}


def _adders_per_weight(manifest: dict) -> float | None:
    layers = [lay for s in manifest.get("hardwired", {}).get("segments", [])
              for lay in s["layers"]]
    if not layers:
        return None
    return round(sum(lay["adders"] for lay in layers)
                 / max(sum(lay["nonzero_weights"] for lay in layers), 1), 3)


def measure(model: str, label: str, config: dict, quant: dict, calib: str, clock_mhz: float,
            reference: Any, say: Callable[[str], None], area: bool = True) -> dict:
    """Compile, synthesise and simulate one configuration."""
    import runtime
    from compiler import driver

    row: dict[str, Any] = {"config": label, "options": {k: list(v) if isinstance(v, tuple)
                                                         else v for k, v in config.items()}}
    try:
        say(f"{label}: compile")
        art = driver.compile(model, "verilog", area=area, calib=calib, **quant, **config)
    except EtchError as e:
        return {**row, "error": str(e)}
    ex = runtime.load(art.path)
    batch = _batch(calib, art.manifest["inputs"])
    say(f"{label}: simulate {len(batch)}")
    outs = ex.run_batch(batch)
    refs = [reference.run(b) for b in batch]
    exact = all(np.array_equal(o[k], r[k]) for o, r in zip(outs, refs) for k in r)
    cycles = sum(s["cycles"] for s in ex.stats.values()) / len(batch)
    row.update(_area(art.manifest))
    row.update({"cycles_per_inference": round(cycles, 2),
                "inferences_per_s": round(clock_mhz * 1e6 / cycles) if cycles else None,
                "adders_per_weight": _adders_per_weight(art.manifest), "bit_exact": exact})
    return row


def run(model: str, bits: int | None, ternary: bool, calib: str | None, clock_mhz: float,
        out: Path, say: Callable[[str], None], configs: list[str] | None = None,
        area: bool = True) -> dict:
    from compiler import driver

    calib = calibration(model, calib)
    quant = {"ternary": True} if ternary else {"bits": bits or 8}
    reference = driver.compile(model, "ref", int=True, calib=calib, **quant)
    chosen = [(lab, c) for lab, c in CONFIGS if not configs or lab in configs]
    rows = [measure(model, lab, c, quant, calib, clock_mhz, reference, say, area)
            for lab, c in chosen]
    result = {"model": Path(model).name, "quant": quant, "clock_mhz": clock_mhz,
              "configs": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_json(out.with_suffix(".json"), result)
    plot(result, out.with_suffix(".png"))
    return result


def _write_json(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def plot(result: dict, path: Path) -> None:
    """Area (cells) against throughput (inferences/s), one point per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in result["configs"]:
        if r.get("cells") and r.get("inferences_per_s"):
            marker = "o" if r["options"]["engine"] == "hardwired" else "s"
            ax.scatter(r["inferences_per_s"], r["cells"], marker=marker)
            ax.annotate(r["config"], (r["inferences_per_s"], r["cells"]), fontsize=8,
                        xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"inferences/s at {result['clock_mhz']:g} MHz")
    est = any(r.get("cells_from") == "estimate" for r in result["configs"])
    ax.set_ylabel("estimated cells" if est else "Yosys generic cells")
    ax.set_title(f"{result['model']}: area vs throughput ({_quant_label(result['quant'])})")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def _quant_label(q: dict) -> str:
    return "ternary" if q.get("ternary") else f"W{q['bits']}A8"


def table(result: dict) -> str:
    lines = [(f"etch compare {result['model']} ({_quant_label(result['quant'])}, nominal clock "
             f"{result['clock_mhz']:g} MHz)"),
             (f"{'configuration':<24}{'cells':>10}{'LUTs':>9}{'cycles/inf':>11}"
             f"{'inf/s':>12}{'adders/w':>9}{'exact':>7}")]
    for r in result["configs"]:
        if "error" in r:
            lines.append(f"{r['config']:<24}  not built: {r['error'][:90]}")
            continue
        apw = f"{r['adders_per_weight']:.2f}" if r["adders_per_weight"] is not None else "-"
        cells = f"{r['cells'] or 0:,}" + ("~" if r.get("cells_from") == "estimate" else "")
        luts = f"{r['luts']:,}" if r.get("luts") is not None else "-"
        lines.append(f"{r['config']:<24}{cells:>10}{luts:>9}"
                     f"{r['cycles_per_inference']:>11.2f}{r['inferences_per_s'] or 0:>12,}"
                     f"{apw:>9}{'yes' if r['bit_exact'] else 'NO':>7}")
    if any(r.get("cells_from") == "estimate" for r in result["configs"]):
        lines.append("~ estimated cells (--no-area: no Yosys run)")
    return "\n".join(lines)
