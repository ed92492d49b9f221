"""Yosys area of a tensor engine: logic cells and LUTs, with the memories as SRAM bits.

The engine's buffers (weights, activations, accumulators, parameters, tables, program)
are `te_ram` instances, which an ASIC or FPGA flow maps to SRAM or block RAM, not to
gates. Synthesising them as flip-flops would bury the logic under storage, so the area
flow reads a black-box `te_ram` in place of the behavioural one and reports the storage
separately, in bits, from the configuration.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from backends.verilog.area import synth_area
from backends.verilog.engine import top

BLACKBOX = """(* blackbox *)
module te_ram #(
    parameter integer WIDTH = 8, parameter integer DEPTH = 16, parameter integer LANES = 1,
    parameter integer NRD = 1, parameter integer ABITS = (DEPTH > 1) ? $clog2(DEPTH) : 1,
    parameter INIT = ""
) (
    input wire clk, input wire [NRD-1:0] re, input wire [NRD*ABITS-1:0] raddr,
    output wire [NRD*WIDTH-1:0] rdata, input wire [LANES-1:0] wlane,
    input wire [ABITS-1:0] waddr, input wire [WIDTH-1:0] wdata
);
endmodule
"""


def memory_bits(config: dict) -> dict[str, int]:
    """Storage of each buffer, in bits."""
    c, mw = config["cols"], 31
    bits = {"activations": config["adepth"] * config["lanes"] * 8,
            "weights": config["wdepth"] * c * config["ww"],
            "accumulators": config["accd"] * c * config["accw"],
            "bias": config["pdepth"] * c * config["bw"],
            "requant": config["pdepth"] * c * (mw + config["sw"]),
            "program": config["idepth"] * 192,
            "tables": config["ntab"] * 256 * 8 * c}
    bits["total"] = sum(bits.values())
    return bits


def engine_area(rtl: list[Path], config: dict) -> dict:
    """`synth_area` of the engine with its memories as black boxes, plus their bits."""
    with tempfile.TemporaryDirectory(prefix="etch-area-") as tmp:
        stub = Path(tmp) / "te_ram.v"
        stub.write_text(BLACKBOX)
        files = [stub if f.name == "te_ram.v" else f for f in rtl]
        area = synth_area(files, top.TOP, flatten=False)  # one LUT map per module: minutes
    area["memory_bits"] = memory_bits(config)
    area["cells"] -= sum(k for t, k in area["cells_by_type"].items() if "te_ram" in t)
    return area
