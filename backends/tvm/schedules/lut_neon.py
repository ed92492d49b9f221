"""The aarch64 look-up step of etch.LutGemm: NEON `tbl` on 16-byte vectors, for int8 tables
(`lut_tile.py` has the loop around it).

Layout (chosen by passes/lut_lowering.py): one plane per 16-byte code vector (plane vector
q holds plane q of 16 columns); the low nibbles are chunk 2kb, the high nibbles chunk
2kb + 1. Per vector:
    lo = w & 15, hi = w >> 4             (and, ushr)
    la = tbl(T[2kb], lo), lb = tbl(T[2kb + 1], hi)
    acc += (sext(la) + sext(lb)) * mu 2^q  (saddl/saddl2, then shl/mla into int16x8 x 2)
NEON has no pairwise multiply-add of bytes by per-byte weights, so the planes take one
vector each and the widening add sums the two chunks of a column.
"""

from __future__ import annotations

from tvm import tirx

from backends.tvm.schedules.lut_kernels import LutSpec, build, splat
from backends.tvm.schedules.lut_tile import (
    VectorTile,
    fits_int16,
    nibbles,
    table16,
    vector_body,
)
from compiler.ops.etch_lut import ENTRIES

Expr = tirx.Expr
TBL = "llvm.aarch64.neon.tbl1"


class NeonTile(VectorTile):
    """tbl + widening-add look-ups (see the module docstring)."""

    nacc = 1
    acc_lanes = ENTRIES
    max_acc = 4  # int16x16 accumulators: two of the 32 q registers each

    def plane(self, acc, wv: Expr, at: tuple, row0: Expr) -> None:
        v, q, kbyte = at
        i8, i16 = f"int8x{ENTRIES}", f"int16x{ENTRIES}"
        lo, hi = nibbles(wv, ENTRIES)
        weight = splat(self.spec.p.mu << q, "int16", ENTRIES)
        for r in range(self.mb):
            base = self.table_at(row0 + r, kbyte)
            la = tirx.call_llvm_pure_intrin(i8, TBL, table16(self.tb.tab, base), lo)
            lb = tirx.call_llvm_pure_intrin(i8, TBL, table16(self.tb.tab, base + ENTRIES), hi)
            self.add(acc, r, v, 0, (la.astype(i16) + lb.astype(i16)) * weight)

    def widened(self, acc, r: Expr, v: Expr) -> Expr:
        return tirx.BufferLoad(acc, [self.acc_at(r, v, 0)]).astype(f"int32x{ENTRIES}")


def applies(spec: LutSpec, features: set[str]) -> bool:
    lay = spec.p.layout
    return "neon" in features and lay.vector_bytes == ENTRIES and lay.slots == 1 and \
        lay.chunk_slots == 1 and spec.int8 and fits_int16(spec)


def neon_kernel(spec: LutSpec) -> tirx.PrimFunc:
    return build(spec, lambda s, bufs, tb: vector_body(s, NeonTile(s, bufs, tb)))
