"""CPU schedule of the GEMM convolution (`lower/conv_gemm.py`, kind "conv_gemm").

The anchor is [N, OCp, Pp] over the reduction R = C*KH*KW. Loops, outermost first:
(image, column block) fused and run in parallel when the kernel pays for it; the block's
"panel" [R, vw] built there (packed once, L2-resident, then read by every channel block);
the output-channel blocks; the reduction; the ocb x vw register tile (channels unrolled,
columns vectorised) with the epilogue computed right after it, while the tile is hot.
"""

from __future__ import annotations

from tvm.s_tir.dlight.base import ScheduleRule

from backends.tvm.schedules.cpu import (
    KindRule,
    _schedule_pad,
    extent,
    finish_tile,
    lanes,
    maybe_parallel,
    vectorize_loop,
    work,
)


class ConvGemm(KindRule):
    """The panel, register tile and epilogue of a GEMM convolution (module docstring)."""

    kinds = ("conv_gemm",)

    def schedule(self, sch, func, target):
        ocb, vw, width = int(func.attrs["etch.ocb"]), int(func.attrs["etch.vw"]), lanes(target)
        anchor = sch.get_sblock("anchor")
        n, o, p, rk = sch.get_loops(anchor)
        total = work(sch, [n, o, p, rk])
        epilogue = sch.get_sblock("epilogue")
        *_, e_o, e_p = sch.get_loops(epilogue)
        whole = extent(sch, e_p) % vw == 0 and extent(sch, e_o) % ocb == 0
        oo, oi = sch.split(o, [None, ocb])
        po, pi = sch.split(p, [None, vw])
        sch.reorder(n, po, oo, rk, oi, pi)
        outer = sch.fuse(n, po)
        maybe_parallel(sch, outer, total)
        panel = sch.get_sblock("panel")
        sch.compute_at(panel, outer)
        sch.reverse_compute_at(epilogue, oo)
        finish_tile(sch, anchor, rk, oi, pi, whole, width)
        vectorize_loop(sch, sch.get_loops(panel)[-1], min(width, vw))
        _schedule_pad(sch, width)
        return True


def rules() -> list[ScheduleRule]:
    return [ConvGemm()]
