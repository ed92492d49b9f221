"""Cycle and area estimates of the tensor engine, from the plan alone (no simulation).

Cycles follow the controller's timing (rtl/te_ctrl.v, te_seq.v, te_feed.v, te_pool.v,
te_io.v), per segment and layer; tests check them against Verilator's per-layer counts.
With a tile's vector interval I (1, or the bit-serial array's processed bit-planes) and the
array's latency L (of the previous tile: the array drains it before the next tile loads):
- a PASS of M vectors takes D + R + (M - 1) * I cycles from its acceptance to the next
  pass's, D = max(2, L_previous + 1), D = 2 for a layer's first pass (the array is idle);
- a layer adds one cycle per CFG and its SYNC drains the pipeline: L + 12 cycles after
  the last vector (array, accumulator 2 stages, output unit 8, controller);
- a POOL layer streams one window element per cycle (stalling while a result word leaves
  in LANES/COLS beats), then drains;
- IN moves one byte per cycle, OUT one per three.
The cell estimate is per-PE and per-lane costs fitted to Yosys's generic synthesis of the
same RTL (the memories count as SRAM bits, not cells).
"""

from __future__ import annotations

from backends.verilog.engine import isa, program
from backends.verilog.engine.array_kinds import ArrayKind

SYNC_DRAIN = 12      # cycles after the last vector: accumulator, output unit, controller
POOL_DRAIN = 12
IO_OVERHEAD = 2      # the IN/OUT kick and the idle check


def gemm_cycles(rec: dict, rows: int, array: ArrayKind) -> int:
    ow = rec["geom"]["ow"]
    total, drain = 0, 1  # the array is idle when a layer starts
    for _, nrows in rec["chunks"]:
        for kept in rec["passes"]:
            for _, _, mask in kept:
                total += max(2, drain + 1) + rows + (nrows * ow - 1) * array.interval(mask)
                drain = array.latency(mask)
    return total + drain + SYNC_DRAIN


def pool_cycles(rec: dict, lanes: int, cols: int) -> int:
    g = rec["geom"]
    window = g["kh"] * g["kw"]
    windows = -(-rec["src"]["chans"] // lanes) * g["oh"] * g["ow"]
    per = max(window, lanes // cols)
    return window + (windows - 1) * per + lanes // cols + POOL_DRAIN


def layer_cycles(rec: dict, config: dict, array: ArrayKind, cfg_words: int) -> int:
    if rec["kind"] == "gemm":
        body = gemm_cycles(rec, config["rows"], array)
    else:
        body = pool_cycles(rec, config["lanes"], config["cols"])
    return cfg_words + body


def io_cycles(tensors: list[dict], per_byte: int) -> int:
    return sum(IO_OVERHEAD + per_byte * _numel(t["shape"]) for t in tensors)


def cycles(meta: dict, recs: dict[str, dict], config: dict, array: ArrayKind) -> list[dict]:
    """Per segment: {"total", "layers": {id: cycles}, "labels": {id: name}, "io"}."""
    out = []
    for s in meta["segments"]:
        state: dict[str, int] = {}
        layers, labels = {}, {}
        for name in s["layers"]:
            rec = recs[name]
            csr = program.layer_csrs(rec, config["lanes"])
            changed = {k: v for k, v in csr.items() if state.get(k) != v}
            state.update(csr)
            layers[rec["id"]] = layer_cycles(rec, config, array,
                                             len(isa.cfg_words(changed, rec["id"])))
            labels[rec["id"]] = name
        io = io_cycles(s["inputs"], 1) + io_cycles(s["outputs"], 3) + 1  # + END
        out.append({"total": io + sum(layers.values()), "io": io, "layers": layers,
                    "labels": labels})
    return out


# ---- area ----------------------------------------------------------------------------------
# Generic Yosys cells (the flow of backends/verilog/area.py), fitted to this RTL and to the
# arrays' own numbers (benchmarks/results/arrays.json, 8x8): cells per PE at 2, 4 and 8-bit
# weights (interpolated between), by module name; a requantiser costs ~K_REQ cells per bit
# of its multiplier (IW x 31). Tests compare the total with Yosys within a tolerance.
PE_CELLS = {
    "te_array_systolic_mac": (179, 350, 704), "te_array_addertree_mac": (129, 283, 602),
    "te_array_systolic_booth": (178, 286, 519), "te_array_addertree_booth": (101, 205, 411),
    "te_array_systolic_bitserial": (143, 143, 143),
    "te_array_addertree_bitserial": (107, 107, 107),
    "te_array_ref": (180, 300, 590),
}
K_REQ = 8.2


def pe_cells(module: str, ww: int) -> float:
    c2, c4, c8 = PE_CELLS.get(module, PE_CELLS["te_array_ref"])
    if ww <= 4:
        return c2 + (c4 - c2) * (max(ww, 1) - 2) / 2
    return c4 + (c8 - c4) * (ww - 4) / 4


def cells(config: dict, array: ArrayKind) -> dict:
    """Estimated generic cells: array, output unit, the rest (memories excluded)."""
    r, c, lanes, accw = config["rows"], config["cols"], config["lanes"], config["accw"]
    req = K_REQ * accw * 31
    qadd = K_REQ * 31 * (11 + 11 + 33) + 600 if config["qadd"] else 0
    est = {"array": int(r * c * pe_cells(array.module, config["ww"])),
           "output_unit": int(c * (req + qadd + 360)),
           "control": int(5000 + lanes * accw * 31 + c * accw * 8 + 150 * r + 1200)}
    est["total"] = sum(est.values())
    return est


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n
