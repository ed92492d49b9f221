"""Render a segment's plan (from passes/plan_engine.py) as the controller's program.

The program of one segment, run once per inference:

    IN (each input tensor)
    per layer: CFG (the configuration registers that change) ; PASS... or POOL ; SYNC
    OUT (each output tensor) ; END

A GEMM layer is one PASS per (output-row chunk, output-channel tile, kept weight tile), in
that loop order; the feeder's start coordinates of each pass follow from the layer's
geometry (see `rtl/te_feed.v`). The first layer of the program writes every register it
uses (the registers keep the last inference's values when the program restarts).
"""

from __future__ import annotations

from backends.verilog.engine import isa

FULL_RANGE = (-128, 255)  # the final clamp stage is not used: clamps are folded earlier


def layer_csrs(rec: dict, lanes: int) -> dict[str, int]:
    """Configuration register values for one layer record."""
    g = rec["geom"]
    src = rec["src"]
    csr = {"SRC_H": g["h"], "SRC_W": g["w"], "ROW_STEP": g["sy"] * g["w"], "SX": g["sx"],
           "SY": g["sy"], "OW": g["ow"], "A_ZERO": rec["a_zero"],
           "A_SIGNED": int(src["signed"])}
    if rec["kind"] != "gemm":
        dst = rec["dst"]
        csr.update({"P_ROW0": src["base"] - g["pt"] * g["w"], "P_SRC_S": src["spatial"],
                    "P_CB": -(-src["chans"] // lanes), "P_KH": g["kh"], "P_KW": g["kw"],
                    "P_DY": g["dy"], "P_DX": g["dx"], "P_PADT": g["pt"], "P_PADL": g["pl"],
                    "P_OH": g["oh"], "P_ROW_DY": g["dy"] * g["w"], "P_DST": dst["base"],
                    "P_DST_S": dst["spatial"], "P_PARAM": rec["param"],
                    "P_MODE": isa.POOL_MAX if rec["mode"] == "max" else isa.POOL_SUM})
    csr.update(epilogue_csrs(rec))
    return csr


def epilogue_csrs(rec: dict) -> dict[str, int]:
    """The output unit's registers: requantise (or bypass), table, QAdd, final clamp."""
    epi = rec["epilogue"]
    req, tab, qadd = epi["requant"], epi["table"], epi["qadd"]
    csr = {"REQ_EN": int(req is not None), "CL_LO": FULL_RANGE[0], "CL_HI": FULL_RANGE[1]}
    if req is not None:
        csr.update({"ZP": req["zp"], "QMIN": req["qmin"], "QMAX": req["qmax"]})
    else:
        csr.update({"ZP": 0, "QMIN": epi["bypass"][0], "QMAX": epi["bypass"][1]})
    csr.update({"TAB_EN": int(tab is not None),
                "TAB_BASE": 256 * tab["index"] if tab else 0,
                "TAB_IN_SIGNED": int(tab["in_signed"]) if tab else 0,
                "TAB_OUT_SIGNED": int(epi["out_signed"]) if tab else 0,
                "QADD_EN": int(qadd is not None)})
    if qadd is None:
        return {**csr, **{k: 0 for k in ("RES_DELTA", "RES_SIGNED", "QA_ZERO", "QA_M0",
                                          "QA_SHIFT", "QB_ZERO", "QB_M0", "QB_SHIFT",
                                          "QO_M0", "QO_SHIFT", "QO_ZP", "QO_MIN", "QO_MAX")}}
    ls = qadd["left_shift"]
    return {**csr, "RES_DELTA": rec["res"]["base"] - rec["dst"]["base"],
            "RES_SIGNED": int(qadd["r_signed"]), "QA_ZERO": qadd["y_zero"],
            "QA_M0": qadd["y_m0"], "QA_SHIFT": qadd["y_shift"] - ls,
            "QB_ZERO": qadd["r_zero"], "QB_M0": qadd["r_m0"], "QB_SHIFT": qadd["r_shift"] - ls,
            "QO_M0": qadd["m0"], "QO_SHIFT": qadd["shift"], "QO_ZP": qadd["zp"],
            "QO_MIN": qadd["qmin"], "QO_MAX": qadd["qmax"]}


def gemm_passes(rec: dict, rows: int, cols: int, lanes: int) -> list[int]:
    """PASS instructions of a GEMM layer record."""
    g, src, dst = rec["geom"], rec["src"], rec["dst"]
    words = []
    for oy0, nrows in rec["chunks"]:
        for n, kept in enumerate(rec["passes"]):
            out_cb, dsel = divmod(n * cols, lanes)
            for i, (k, wrow, mask) in enumerate(kept):
                ky, kx, j = rec["ktiles"][k]
                cb, sub = divmod(j * rows, lanes)
                iy0 = oy0 * g["sy"] - g["pt"] + ky * g["dy"]
                words.append(isa.encode(
                    "PASS", rec["id"], first=int(i == 0), last=int(i == len(kept) - 1),
                    wrow=wrow, wbits=rec["bits"], mask=mask,
                    row0=src["base"] + cb * src["spatial"] + iy0 * g["w"], iy0=iy0,
                    ix0=-g["pl"] + kx * g["dx"], count=nrows * g["ow"], sub=sub // rows,
                    param=rec["param"] + n, dst=dst["base"] + out_cb * dst["spatial"]
                    + oy0 * g["ow"], dsel=dsel // cols))
    return words


def _tensor(op: str, t: dict) -> int:
    return isa.encode(op, 0, base=t["base"], chans=t["chans"], spatial=t["spatial"],
                      outer=int(t["outer"]))


def segment_program(summary: dict, layers: list[dict], config: dict) -> list[int]:
    """The instruction words of one segment."""
    rows, cols, lanes = config["rows"], config["cols"], config["lanes"]
    words = [_tensor("IN", t) for t in summary["inputs"]]
    state: dict[str, int] = {}
    for rec in layers:
        csr = layer_csrs(rec, lanes)
        changed = {k: v for k, v in csr.items() if state.get(k) != v}
        words += isa.cfg_words(changed, rec["id"])
        state.update(csr)
        if rec["kind"] == "gemm":
            words += gemm_passes(rec, rows, cols, lanes)
        else:
            words.append(isa.encode("POOL", rec["id"]))
        words.append(isa.encode("SYNC", rec["id"]))
    words += [_tensor("OUT", t) for t in summary["outputs"]]
    words.append(isa.encode("END", 0))
    return words
