"""Area of the tensor engine's compute arrays: Yosys cells and LUTs of every array kind.

For each engine (systolic, adder-tree), PE kind (mac, booth, bitserial), array size and
weight width, the array's RTL (`backends/verilog/arrays.py`) is synthesised by the shared
Yosys flow (`backends/verilog/area.py`), with AW = 9-bit activations and PW the exact
partial-sum bound for full-range operands:
- cells: generic gate-level cells of `synth -hieropt` (hierarchy kept, constants propagated
  across module ports; every instance counted), the flow `--area` uses;
- flat cells: generic cells of `synth -flatten` (optimised across module boundaries, e.g.
  partial sums narrowed row by row down a mac column; slow: 16x16 takes minutes);
- LUTs: `synth -hieropt -lut 6`, every module mapped once and counted per instance;
- per MAC/cycle: cells / (rows * cols / interval), interval = 1 for mac and booth, = the
  weight bits for bitserial (every plane processed; plane skipping only helps more).
mac and booth are bit-parallel, so an array for b-bit weights has WW = b; bitserial has one
WW = 8 datapath for every width (its point), synthesised once per size.
Goals (issue 10): bit-serial PE >= 3x smaller than the 8-bit bit-parallel (mac) PE (the PE
module, or an adder-tree column / rows; and the whole array, sequencer and shift-accumulators
included, per PE); booth
>= 1.2x better than mac in cells per MAC/cycle in the systolic array and >= 1.3x in the adder
tree. Ratios are reported for both cell counts; Yosys maps the mac's `*` to its own
multiplier (partial products summed by `maccmap`'s carry-save tree and one adder).
Result: results/arrays.json.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from backends.verilog import arrays
from backends.verilog.area import flat_cells, synth_area
from benchmarks.bench_tvm import cpu_name
from compiler.errors import EtchError

AW = 9
SIZES = ("4x4", "8x8", "16x16")
BITS = (8, 4, 2)
GOALS = {"bitserial_pe": 3.0, "bitserial_array": 3.0, "booth_systolic": 1.2,
         "booth_adder-tree": 1.3}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", nargs="+", default=list(SIZES), help="array sizes RxC")
    p.add_argument("--bits", nargs="+", type=int, default=list(BITS), help="weight widths")
    p.add_argument("--flat", choices=("none", "8", "all"), default="8",
                   help="flattened synthesis too: none, the 8-bit designs, or all (slow)")
    p.add_argument("--jobs", type=int, default=2, help="Yosys processes at once")


@dataclass(frozen=True)
class Design:
    """One synthesised array."""

    engine: str
    pe: str
    rows: int
    cols: int
    ww: int
    pw: int

    @property
    def kind(self) -> arrays.ArrayKind:
        return arrays.get(self.engine, self.pe)


def _size(text: str) -> tuple[int, int]:
    try:
        r, c = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise EtchError(f"array size must be RxC, got {text!r}") from None
    if min(r, c) < 1:
        raise EtchError(f"array size must be positive, got {text!r}")
    return r, c


def _design(engine: str, pe: str, rows: int, cols: int, bits: int) -> Design:
    ww = arrays.MAX_BITS if pe == "bitserial" else bits
    return Design(engine, pe, rows, cols, ww,
                  arrays.psum_width(rows, 1 << (AW - 1), 1 << (ww - 1)))


def _measure(d: Design, flat: bool) -> dict:
    t0 = time.perf_counter()
    params = d.kind.parameters(d.rows, d.cols, AW, d.ww, d.pw)
    area = synth_area(d.kind.sources(), d.kind.module, params=params, flatten=False)
    out = {**asdict(d), "cells": area["cells"], "ffs": area["ffs"], "luts": area["luts"],
           "pe_cells": _pe_cells(d, area["modules"])}
    if flat:
        out["flat_cells"] = flat_cells(d.kind.sources(), d.kind.module, params)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def _pe_cells(d: Design, modules: dict) -> float:
    """Cells of one PE: the systolic PE module, or an adder-tree column / rows."""
    name, per = (f"te_pe_{d.pe}", 1) if d.engine == "systolic" else (f"te_dot_{d.pe}", d.rows)
    found = [m["total"] for k, m in modules.items() if k.split("$")[0].split("(")[0] == name]
    if len(found) != 1:
        raise EtchError(f"expected one {name} module in the synthesis of {d}, found {found}")
    return round(found[0] / per, 1)


def run(args: argparse.Namespace) -> dict:
    sizes = [_size(s) for s in getattr(args, "sizes", SIZES)]
    bits = list(getattr(args, "bits", BITS))
    if any(not 1 <= b <= arrays.MAX_BITS for b in bits):
        raise EtchError(f"weight bits must be 1..{arrays.MAX_BITS}, got {bits}")
    flat = getattr(args, "flat", "8")
    points = [(e, p, r, c, b) for r, c in sizes for b in bits for e, p in arrays.KINDS]
    designs = list(dict.fromkeys(_design(*pt) for pt in points))
    with ThreadPoolExecutor(max_workers=max(1, getattr(args, "jobs", 2))) as pool:
        measured = list(pool.map(
            lambda d: _measure(d, flat == "all" or (flat == "8" and d.ww == 8)), designs))
    by_design = dict(zip(designs, measured))
    rows = [_point(by_design[_design(*pt)], *pt) for pt in points]
    return {"machine": cpu_name(), "cores": len(os.sched_getaffinity(0)), "aw": AW,
            "flow": "yosys generic synth -hieropt (cells), synth -flatten (flat cells), "
                    "synth -hieropt -lut 6 (LUTs)",
            "designs": measured, "points": rows, "goals": _goals(rows, sizes)}


def _point(m: dict, engine: str, pe: str, rows: int, cols: int, bits: int) -> dict:
    macs = rows * cols / arrays.get(engine, pe).interval(None, bits)
    out = {"engine": engine, "pe": pe, "rows": rows, "cols": cols, "bits": bits,
           "ww": m["ww"], "pw": m["pw"], "cells": m["cells"], "luts": m["luts"],
           "flat_cells": m.get("flat_cells"), "pe_cells": m["pe_cells"],
           "macs_per_cycle": macs, "cells_per_mac": round(m["cells"] / macs, 1),
           "luts_per_mac": round(m["luts"] / macs, 1)}
    if m.get("flat_cells") is not None:
        out["flat_cells_per_mac"] = round(m["flat_cells"] / macs, 1)
    return out


def _goals(rows: list[dict], sizes: list[tuple[int, int]]) -> list[dict]:
    """Each goal per size, from the 8-bit points (skipped when 8 bits were not measured)."""
    at = {(p["engine"], p["pe"], p["rows"], p["cols"], p["bits"]): p for p in rows}
    goals = []
    for r, c in sizes:
        def pt(e: str, pe: str, r: int = r, c: int = c) -> dict | None:
            return at.get((e, pe, r, c, 8))

        for eng in ("systolic", "adder-tree"):
            mac, ser, booth = pt(eng, "mac"), pt(eng, "bitserial"), pt(eng, "booth")
            if not (mac and ser and booth):
                continue
            goals.append(_goal("bitserial_pe", eng, r, c, "PE cells, mac / bitserial",
                               mac["pe_cells"] / ser["pe_cells"], None))
            goals.append(_goal("bitserial_array", eng, r, c, "array cells, mac / bitserial",
                               mac["cells"] / ser["cells"], _ratio(mac, ser, "flat_cells")))
            goals.append(_goal(f"booth_{eng}", eng, r, c, "cells per MAC/cycle, mac / booth",
                               mac["cells_per_mac"] / booth["cells_per_mac"],
                               _ratio(mac, booth, "flat_cells_per_mac")))
    return goals


def _ratio(a: dict, b: dict, key: str) -> float | None:
    return a[key] / b[key] if a.get(key) and b.get(key) else None


def _goal(name: str, engine: str, rows: int, cols: int, what: str, ratio: float,
          flat: float | None) -> dict:
    target = GOALS[name]
    met = ratio >= target and (flat is None or flat >= target)
    return {"goal": name, "engine": engine, "size": f"{rows}x{cols}", "measure": what,
            "ratio": round(ratio, 2), "flat_ratio": None if flat is None else round(flat, 2),
            "target": target, "met": met}


def table(result: dict) -> str:
    """Per design point: cells, flat cells, LUTs, per MAC/cycle; then the goals."""
    head = (f"tensor-engine arrays, Yosys area (AW={result['aw']}, exact PW) -- "
            f"{result['machine']}, {result['cores']} cores")
    cols = (f"{'engine':<11}{'pe':<10}{'size':>6}{'bits':>5}{'WW':>3}{'PW':>3}{'cells':>8}"
            f"{'flat':>8}{'LUT6':>7}{'MAC/cyc':>8}{'cells/MAC':>10}{'flat/MAC':>9}"
            f"{'LUT/MAC':>8}{'PE cells':>9}")
    lines = [head, result["flow"], cols, "-" * len(cols)]
    for p in result["points"]:
        flat, fpm = p.get("flat_cells"), p.get("flat_cells_per_mac")
        lines.append(
            f"{p['engine']:<11}{p['pe']:<10}{p['rows']:>3}x{p['cols']:<2}{p['bits']:>5}"
            f"{p['ww']:>3}{p['pw']:>3}{p['cells']:>8}{flat if flat else '-':>8}{p['luts']:>7}"
            f"{p['macs_per_cycle']:>8.1f}{p['cells_per_mac']:>10.1f}{fpm if fpm else '-':>9}"
            f"{p['luts_per_mac']:>8.1f}{p['pe_cells']:>9.1f}")
    lines += ["", (f"{'goal':<18}{'engine':<11}{'size':>6}  {'measure':<34}{'ratio':>6}"
                   f"{'flat':>6}{'target':>7}  met")]
    for g in result["goals"]:
        flat = f"{g['flat_ratio']:.2f}" if g["flat_ratio"] is not None else "-"
        lines.append(f"{g['goal']:<18}{g['engine']:<11}{g['size']:>6}  {g['measure']:<34}"
                     f"{g['ratio']:>6.2f}{flat:>6}{g['target']:>7.1f}  "
                     f"{'yes' if g['met'] else 'NO'}")
    return "\n".join(lines)
