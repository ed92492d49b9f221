"""The contents of a segment's memories, rendered from its plan, and their hex files.

- weights: one row per word (COLS codes of WW bits, column c at bits [c*WW +: WW]); a
  kept tile of a layer is ROWS consecutive rows from the row its plan records;
- bias: one word per parameter index, COLS lanes of BW bits (the layer's int32 bias of
  the tile's output channels; 0 past the last channel);
- req: one word per parameter index, COLS lanes of M0 (31 bits) then shift (SW bits);
- tables: 256 bytes per table, entry e for the input byte e (int8 inputs: e = x + 128),
  the layer's tables composed and its following clamp folded in;
- prog: the instruction words.
Every file starts with a `//` header line ($readmemh skips comments).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backends.verilog.engine import isa
from compiler.ir import Graph
from passes.engine_tiling import Geometry, dense_weight, tile_of

MW = 31


@dataclass
class Images:
    """Integer contents of one segment's memories (lanes as columns)."""

    weights: np.ndarray     # [rows, COLS] codes
    bias: np.ndarray        # [params, COLS]
    m0: np.ndarray          # [params, COLS]
    shift: np.ndarray       # [params, COLS]
    tables: np.ndarray      # [ntab * 256] values (int8 or uint8 as ints)
    prog: list[int]


def build_images(graph: Graph, layers: list[dict], summary: dict, config: dict,
                 prog: list[int]) -> Images:
    """Fill the memories of one segment from its layer records."""
    rows, cols = config["rows"], config["cols"]
    im = Images(np.zeros((summary["weight_rows"], cols), np.int64),
                np.zeros((summary["params"], cols), np.int64),
                np.zeros((summary["params"], cols), np.int64),
                np.zeros((summary["params"], cols), np.int64),
                np.zeros(summary["tables"] * 256, np.int64), prog)
    for rec in layers:
        if rec["kind"] == "gemm":
            _weights(graph, rec, rows, cols, im)
        _params(graph, rec, cols, im)
        if rec["epilogue"]["table"]:
            _table(graph, rec["epilogue"], im)
    return im


def _weights(graph: Graph, rec: dict, rows: int, cols: int, im: Images) -> None:
    dense = dense_weight(graph.values[rec["weight"]].data, rec["op"], rec["groups"],
                         Geometry(**rec["geom"]))
    for n, kept in enumerate(rec["passes"]):
        for k, wrow, _ in kept:
            ky, kx, j = rec["ktiles"][k]
            im.weights[wrow:wrow + rows] = tile_of(dense, ky, kx, j, n, rows, cols)


def _lanes(values: np.ndarray, n: int, cols: int) -> np.ndarray:
    """Per-channel values (or one per-tensor value) as the lanes of output tile n."""
    v = np.asarray(values, np.int64).reshape(-1)
    out = np.zeros(cols, np.int64)
    if v.size == 1:
        out[:] = v[0]
        return out
    part = v[n * cols:(n + 1) * cols]
    out[:part.size] = part
    return out


def _params(graph: Graph, rec: dict, cols: int, im: Images) -> None:
    req = rec["epilogue"]["requant"]
    if req is None:
        return
    m0, shift = graph.values[req["m0"]].data, graph.values[req["shift"]].data
    tiles = len(rec["passes"]) if rec["kind"] == "gemm" else 1
    for n in range(tiles):
        p = rec["param"] + n
        im.m0[p], im.shift[p] = _lanes(m0, n, cols), _lanes(shift, n, cols)
        if rec.get("bias"):
            im.bias[p] = _lanes(graph.values[rec["bias"]].data, n, cols)


def compose_table(graph: Graph, epi: dict) -> np.ndarray:
    """256 entries: the layer's tables applied in order to each input byte, clamped."""
    t = epi["table"]
    lo = -128 if t["in_signed"] else 0
    v = np.arange(256, dtype=np.int64) + lo
    for name in t["values"]:
        v = graph.values[name].data.astype(np.int64)[v - lo]
        lo = -128 if graph.values[name].dtype == "int8" else 0
    return np.clip(v, *t["clamp"])


def _table(graph: Graph, epi: dict, im: Images) -> None:
    k = epi["table"]["index"]
    im.tables[k * 256:(k + 1) * 256] = compose_table(graph, epi)


def hex_lines(header: str, words: list[int] | np.ndarray, bits: int) -> str:
    """A $readmemh file: the header comment, then one word per line."""
    digits = max(1, -(-bits // 4))
    mask = (1 << bits) - 1
    return "".join([f"// {header}\n"] + [f"{int(w) & mask:0{digits}x}\n" for w in words])


def pack_lanes(lanes: np.ndarray, width: int) -> list[int]:
    """Rows of lane values -> words, lane c at bits [c*width +: width]."""
    mask = (1 << width) - 1
    return [sum((int(x) & mask) << (c * width) for c, x in enumerate(row)) for row in lanes]


def files(im: Images, config: dict, header: str) -> dict[str, str]:
    """Hex file name -> text for one segment."""
    cols, sw = config["cols"], config["sw"]
    req = np.asarray(im.m0) + (np.asarray(im.shift) << MW)
    out = {"prog.hex": hex_lines(header, im.prog, isa.IW),
           "wmem.hex": hex_lines(header, pack_lanes(im.weights, config["ww"]),
                                 cols * config["ww"]),
           "bias.hex": hex_lines(header, pack_lanes(im.bias, config["bw"]),
                                 cols * config["bw"]),
           "req.hex": hex_lines(header, pack_lanes(req, MW + sw), cols * (MW + sw))}
    if config["ntab"]:
        out["tab.hex"] = hex_lines(header, im.tables, 8)
    return out
