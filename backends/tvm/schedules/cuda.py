"""CUDA schedule rules: dlight's GPU rules, in dlight's own order, ending with its Fallback,
which binds every loop nest to blocks and threads (a CUDA build rejects a PrimFunc that has
none). The kernels are lowered without CPU weight packing (see `lower.to_irmodule`), so
dlight's matmul and GEMV pattern matchers see plain [K, N] weights.
"""

from __future__ import annotations

from tvm.s_tir import dlight
from tvm.s_tir.dlight.base import ScheduleRule


def rules() -> list[ScheduleRule]:
    from backends.tvm.schedules import lut_cuda  # etch.LutGemm's table kernel

    gpu = dlight.gpu
    return [*lut_cuda.rules(), gpu.Matmul(), gpu.GEMV(), gpu.Reduction(), gpu.GeneralReduction(), gpu.Fallback()]
