"""The compute array the engine instantiates, by --engine and --pe.

The arrays themselves (systolic and adder tree; mac, booth and bit-serial PEs) are
`backends/verilog/arrays.py`'s (ARRAY_CONTRACT.md): module name, source files, latency and
interval per configuration. Where that module is absent, every kind falls back to the
engine's behavioural reference array `rtl/te_array_ref.v` (a plain MAC array with the same
interface), and the artifact says so.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

RTL = Path(__file__).resolve().parents[1] / "rtl"


@dataclass(frozen=True)
class ArrayKind:
    """What the engine needs of an array: its module and files, and its timing as functions
    of a tile's bit-plane mask (bit-serial arrays spend one cycle per plane)."""

    module: str
    files: tuple[Path, ...]
    latency: Callable[[int], int]    # cycles from a vector's handshake to its o_valid
    interval: Callable[[int], int]   # cycles per vector
    reference: bool = False
    params: str = ""                 # extra Verilog parameters: ", .NAME(value)..."


def reference_array() -> ArrayKind:
    return ArrayKind("te_array_ref", (RTL / "te_array_ref.v",), lambda mask: 1,
                     lambda mask: 1, reference=True)


def array_for(engine: str, pe: str, rows: int, cols: int, bits: int) -> ArrayKind:
    """The array for --engine/--pe at this size and weight width (`bits` planes)."""
    if importlib.util.find_spec("backends.verilog.arrays") is None:
        return reference_array()
    from backends.verilog import arrays

    kind = arrays.get(engine, pe)
    return ArrayKind(kind.module, tuple(kind.sources()),
                     lambda mask: kind.latency(rows, cols, bits, mask),
                     lambda mask: kind.interval(mask, bits))
