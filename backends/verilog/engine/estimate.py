"""Cycle and area estimates of the tensor engine, from the plan alone (no simulation).

Cycles follow the controller's timing (rtl/te_ctrl.v, te_seq.v, te_feed.v, te_pool.v,
te_io.v), per segment and layer; tests check them against Verilator's per-layer counts.
With the array's latency L and a tile's vector interval I (1, or the bit-serial array's
set bit-planes):
- a PASS of M vectors takes D + R + (M - 1) * I cycles from its acceptance to the next
  pass's, D = max(2, L + 1) (the tile load waits for the array to drain);
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


def pass_cycles(m: int, rows: int, interval: int, array: ArrayKind) -> int:
    return max(2, array.latency + 1) + rows + (m - 1) * interval


def gemm_cycles(rec: dict, rows: int, array: ArrayKind) -> int:
    ow = rec["geom"]["ow"]
    total = 0
    for _, nrows in rec["chunks"]:
        for kept in rec["passes"]:
            for _, _, mask in kept:
                total += pass_cycles(nrows * ow, rows, array.interval(mask), array)
    return total + array.latency + SYNC_DRAIN


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
# generic Yosys cells: a signed a x w multiplier ~ K_MUL * a * w, an adder ~ K_ADD per bit,
# a flip-flop 1; fitted on this RTL (tests compare with Yosys within a tolerance)
K_MUL, K_ADD = 5.6, 7.0


def cells(config: dict, array: ArrayKind) -> dict:
    """Estimated generic cells: array, output unit, the rest (memories excluded)."""
    r, c = config["rows"], config["cols"]
    aw, ww, pw, accw = config["aw"], config["ww"], config["pw"], config["accw"]
    pe = K_MUL * aw * ww + K_ADD * pw + ww
    lane_req = K_MUL * accw * 31 + K_ADD * (accw + 31) + 10
    lane_qadd = (K_MUL * 11 * 31 * 2 + K_MUL * 33 * 31 + 100) if config["qadd"] else 0
    lane = lane_req + lane_qadd + K_ADD * accw * 2 + 6 * 10
    control = 4000 + config["lanes"] * (K_ADD * accw + 40)
    est = {"array": int(r * c * pe), "output_unit": int(c * lane), "control": int(control)}
    est["total"] = sum(est.values())
    return est


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n
