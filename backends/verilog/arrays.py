"""The tensor engine's compute arrays, as the compiler sees them (the engine imports only this).

Per (engine, pe) kind, an `ArrayKind` gives the Verilog module and its source files under
`rtl/`, the parameters to instantiate it with, its cycle formulas and its numpy model:
- `latency(rows, cols, bits, mask)`: cycles from `a_valid & a_ready` to `o_valid`;
- `interval(mask, bits)`: cycles between two accepted vectors when the input never waits;
- `model(a, w, bits, mask)`: the exact result the RTL computes (`array_models`).
Every module has the interface of `/work/wt/ARRAY_CONTRACT.md` and is named
`te_array_<engine>_<pe>` (engine `adder-tree` -> `addertree`); its header documents the same
formulas, and the Verilator tests check simulated cycles against these functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backends.verilog import array_models
from compiler.errors import EtchError

RTL = Path(__file__).resolve().parent / "rtl"
ENGINES = ("systolic", "adder-tree")
PES = ("mac", "booth", "bitserial")
MAX_BITS = 8  # the w_bits / w_plane_mask ports have room for 8 planes


@dataclass(frozen=True)
class ArrayKind:
    """One compute array: module, sources, cycle formulas, numpy model."""

    engine: str                              # "systolic" | "adder-tree"
    pe: str                                  # "mac" | "booth" | "bitserial"
    files: tuple[str, ...]                   # under rtl/, the array module first
    fill: Callable[[int, int], int]          # latency of one pass (rows, cols) -> cycles

    @property
    def module(self) -> str:
        return f"te_array_{self.engine.replace('-', '')}_{self.pe}"

    def sources(self) -> list[Path]:
        """The Verilog files that define the array and its submodules."""
        return [RTL / f for f in self.files]

    def parameters(self, rows: int, cols: int, aw: int, ww: int, pw: int) -> dict[str, int]:
        """The module's Verilog parameters, in declaration order; EtchError when out of range
        (a bit-serial weight has at most MAX_BITS planes: w_bits and w_plane_mask)."""
        if min(rows, cols, ww) < 1 or min(aw, pw) < 2 or ww > MAX_BITS:
            raise EtchError(f"{self.module}: unsupported array parameters rows={rows} "
                            f"cols={cols} aw={aw} ww={ww} pw={pw} (need rows, cols >= 1, "
                            f"1 <= ww <= {MAX_BITS}, aw, pw >= 2)")
        return {"ROWS": rows, "COLS": cols, "AW": aw, "WW": ww, "PW": pw}

    def interval(self, mask: int | None = None, bits: int = MAX_BITS) -> int:
        """Cycles per vector: 1, or for `bitserial` one per processed plane (at least 1)."""
        if self.pe != "bitserial":
            return 1
        return max(1, len(array_models.planes_used(mask, bits)))

    def latency(self, rows: int, cols: int, bits: int = MAX_BITS, mask: int | None = None
                ) -> int:
        """Cycles from a vector's `a_valid & a_ready` to its `o_valid`."""
        return self.fill(rows, cols) + self.interval(mask, bits) - 1

    def model(self, a: np.ndarray, w: np.ndarray, bits: int = MAX_BITS,
              mask: int | None = None, ww: int = MAX_BITS) -> np.ndarray:
        """What the array outputs for activations a [M, rows] and a weight tile w [rows, cols]."""
        if self.pe == "booth":
            return array_models.booth(a, w, ww)
        if self.pe == "bitserial":  # the sequencer reads w_bits > WW as WW
            return array_models.bitserial(a, w, min(bits, ww), mask)
        return array_models.mac(a, w)


_BOOTH = ("te_booth_enc.v", "te_booth_pp.v", "te_booth_const.v", "te_csa_tree.v")
_SERIAL = ("te_bitserial_seq.v", "te_shift_acc.v")
KINDS: dict[tuple[str, str], ArrayKind] = {
    (k.engine, k.pe): k for k in (
        ArrayKind("systolic", "mac", ("te_array_systolic_mac.v", "te_pe_mac.v", "te_delay.v"),
                  lambda r, c: r + c),
        ArrayKind("adder-tree", "mac", ("te_array_addertree_mac.v", "te_dot_mac.v"),
                  lambda r, c: 2),
        ArrayKind("systolic", "booth", ("te_array_systolic_booth.v", "te_pe_booth.v",
                                        *_BOOTH, "te_delay.v"), lambda r, c: r + c),
        ArrayKind("adder-tree", "booth", ("te_array_addertree_booth.v", "te_dot_booth.v",
                                          *_BOOTH), lambda r, c: 2),
        ArrayKind("systolic", "bitserial", ("te_array_systolic_bitserial.v",
                                            "te_pe_bitserial.v", *_SERIAL, "te_delay.v"),
                  lambda r, c: r + c + 1),
        ArrayKind("adder-tree", "bitserial", ("te_array_addertree_bitserial.v",
                                              "te_dot_bitserial.v", *_SERIAL), lambda r, c: 2),
    )
}


def get(engine: str, pe: str) -> ArrayKind:
    """The array for `--engine ENGINE --pe PE`; EtchError for an unknown pair."""
    kind = KINDS.get((engine, pe))
    if kind is None:
        raise EtchError(f"no tensor-engine array for --engine {engine} --pe {pe}; known: "
                        + ", ".join(f"{e}/{p}" for e, p in KINDS))
    return kind


def psum_width(rows: int, a_max: int, w_max: int) -> int:
    """Bits of a signed partial sum of `rows` products |a| <= a_max, |w| <= w_max (exact)."""
    return max(1, rows * a_max * w_max).bit_length() + 1


def plane_mask(w: np.ndarray, bits: int) -> int:
    """w_plane_mask for a weight tile: its nonzero bit planes (`bits`-bit two's complement)."""
    return array_models.plane_mask(w, bits)
