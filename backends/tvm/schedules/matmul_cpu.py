"""CPU schedule of a MatMul whose operands are both computed (`lower/linear.py` `batched`,
kind "batch_matmul": attention's QK^T and AV, a Gemm with a computed B).

Where the lowering packed B (`etch.mb`, `etch.nb`): per (batch, column block) the block's
panel [K, nb] is packed once, then mb x nb register tiles run down the rows (M padded to mb)
with the reduction unrolled (`cpu.unroll_reduction`), each tile's epilogue right after it.
Otherwise (no packing): an (m, n) tile with n as the vector axis where N allows.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

from backends.tvm.schedules import tiles
from backends.tvm.schedules.cpu import (
    KindRule,
    extent,
    finish_tile,
    lanes,
    maybe_parallel,
    unroll_reduction,
    vectorize_loop,
    work,
)


class BatchMatmul(KindRule):
    """Both operands computed. Where the lowering packed B (`etch.mb`, `etch.nb`: a "panel"
    block, M and N padded to the tile): per (batch, column block) the block's panel is packed
    once, then mb x nb tiles run down the rows (parallel over batch and column blocks), each
    with its epilogue. Otherwise: tile (m, n) with n as the vector axis where N allows."""

    kinds = ("batch_matmul",)

    def schedule(self, sch, func, target):
        if "etch.mb" in func.attrs:
            return _packed_batch_matmul(sch, func, target)
        anchor = sch.get_sblock("anchor")
        loops = sch.get_loops(anchor)
        *batch, m, n, k = loops
        width = lanes(target)
        nb = next((b for b in (2 * width, width) if extent(sch, n) % b == 0), 0)
        if nb == 0:
            nb = extent(sch, n) if extent(sch, n) <= 4 * width else 0
        if nb == 0:
            return False
        total = work(sch, loops)
        mb = tiles.dense_mb(extent(sch, m), nb, width)
        mo, mi = sch.split(m, [None, mb])
        no, ni = sch.split(n, [None, nb])
        sch.reorder(*batch, mo, no, k, mi, ni)
        outer = sch.fuse(*batch, mo, no)
        maybe_parallel(sch, outer, total)
        sch.reverse_compute_at(sch.get_sblock("epilogue"), outer)
        finish_tile(sch, anchor, k, mi, ni, True, width)
        return True


def _packed_batch_matmul(sch: s_tir.Schedule, func: tirx.PrimFunc, target: Target) -> bool:
    """`BatchMatmul` over a packed panel (the rule's docstring)."""
    mb, nb, width = int(func.attrs["etch.mb"]), int(func.attrs["etch.nb"]), lanes(target)
    anchor = sch.get_sblock("anchor")
    loops = sch.get_loops(anchor)
    *batch, m, n, k = loops
    if extent(sch, m) % mb or extent(sch, n) % nb:
        return False
    total = work(sch, loops)
    n_out = extent(sch, sch.get_loops(sch.get_sblock("epilogue"))[-1])
    mo, mi = sch.split(m, [None, mb])
    no, ni = sch.split(n, [None, nb])
    ko, ku = unroll_reduction(sch, k)
    sch.reorder(*batch, no, mo, ko, *([ku] if ku else []), mi, ni)
    outer = sch.fuse(*batch, no)
    maybe_parallel(sch, outer, total)
    panel = sch.get_sblock("panel")
    sch.compute_at(panel, outer)
    sch.reverse_compute_at(sch.get_sblock("epilogue"), mo)
    finish_tile(sch, anchor, ko, mi, ni, n_out % nb == 0, width)
    if ku is not None:
        sch.unroll(ku)
    vectorize_loop(sch, sch.get_loops(panel)[-1], width)
    return True


def rules() -> list[ScheduleRule]:
    return [BatchMatmul()]
