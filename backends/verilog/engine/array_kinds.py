"""The compute array the engine instantiates, by --engine and --pe.

The arrays themselves (systolic and adder tree; mac, booth and bit-serial PEs) are
`backends/verilog/arrays.py`'s (ARRAY_CONTRACT.md): module name, source files, latency and
interval per configuration. Where that module is absent, every kind falls back to the
engine's behavioural reference array `rtl/te_array_ref.v` (a plain MAC array with the same
interface), and the artifact says so.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

RTL = Path(__file__).resolve().parents[1] / "rtl"


@dataclass(frozen=True)
class ArrayKind:
    """What the engine needs of an array: its module and files, and its timing."""

    module: str
    files: tuple[Path, ...]
    latency: int          # cycles from a vector's handshake to its o_valid
    bitserial: bool       # one vector per popcount(mask) cycles instead of one per cycle
    params: str = ""      # extra Verilog parameters, rendered as ", .NAME(value)..."
    reference: bool = False

    def interval(self, mask: int) -> int:
        """Cycles per activation vector for a tile with this bit-plane mask."""
        return max(1, (mask).bit_count()) if self.bitserial else 1


def reference_array() -> ArrayKind:
    return ArrayKind("te_array_ref", (RTL / "te_array_ref.v",), latency=1, bitserial=False,
                     reference=True)


def array_for(engine: str, pe: str, rows: int, cols: int, bits: int) -> ArrayKind:
    """The array for --engine/--pe at this size and weight width."""
    if importlib.util.find_spec("backends.verilog.arrays") is None:
        return reference_array()
    from backends.verilog import arrays

    return arrays.engine_array(engine, pe, rows, cols, bits)
