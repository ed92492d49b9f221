"""CPU schedule of the GEMM convolution (`lower/conv_gemm.py`, kind "conv_gemm").

The anchor is [N, OCp, Pp] over the reduction R = C*KH*KW. Loops, outermost first: (image,
chunk of `etch.chunk` column blocks), where the chunk's "panel" [chunk, R, vw] is packed
(sized by the lowering to stay in L2); the output-channel blocks, in parallel when the
kernel pays for it; the chunk's column blocks, so each weight block [R, ocb] is read from
memory once per chunk and then from cache (a 7x7 layer has one chunk: its weights, the
largest operand, are streamed once); the reduction; the ocb x vw register tile (channels
unrolled, columns vectorised) with the epilogue computed right after it, while it is hot.
"""

from __future__ import annotations

from tvm.s_tir.dlight.base import ScheduleRule

from backends.tvm.schedules.cpu import (
    PARALLEL_PAD_ELEMENTS,
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
        chunk = int(func.attrs["etch.chunk"])
        anchor = sch.get_sblock("anchor")
        n, o, p, rk = sch.get_loops(anchor)
        total = work(sch, [n, o, p, rk])
        epilogue = sch.get_sblock("epilogue")
        *_, e_o, e_p = sch.get_loops(epilogue)
        whole = extent(sch, e_p) % vw == 0 and extent(sch, e_o) % ocb == 0
        oo, oi = sch.split(o, [None, ocb])
        po, pi = sch.split(p, [None, vw])
        pc, pb = sch.split(po, [None, chunk])
        sch.reorder(n, pc, oo, pb, rk, oi, pi)
        panel = sch.get_sblock("panel")
        sch.compute_at(panel, sch.fuse(n, pc))
        maybe_parallel(sch, oo, total)
        sch.reverse_compute_at(epilogue, pb)
        finish_tile(sch, anchor, rk, oi, pi, whole, width)
        panel_loops = sch.get_loops(panel)
        maybe_parallel(sch, panel_loops[1], work(sch, panel_loops[1:]), PARALLEL_PAD_ELEMENTS)
        vectorize_loop(sch, panel_loops[-1], min(width, vw))
        _schedule_pad(sch, width)
        return True


def rules() -> list[ScheduleRule]:
    return [ConvGemm()]
