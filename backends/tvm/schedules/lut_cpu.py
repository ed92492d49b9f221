"""CPU (llvm) schedule rules for etch.LutGemm (`etch.kind` "lut_gemm").

The lowering emits the portable kernel; these rules, first in `cpu.rules()`, replace it with
the vector table kernel the target has (same parameters, same result):
- LutX86: vpshufb on 64-byte vectors where the code layout was made for AVX-512BW, on
  32-byte vectors for AVX2 (`lut_x86.py`);
- LutNeon: tbl on aarch64 (`lut_neon.py`);
- LutPortable: anything else (float tables, a CPU without the layout's instruction): the
  portable kernel as it is, marked scheduled (its loops are already the schedule).
Which one ran is recorded per kernel in the manifest's "schedules".
"""

from __future__ import annotations

from collections.abc import Callable

from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target, codegen

from backends.tvm.schedules import lut_neon, lut_x86
from backends.tvm.schedules.lut_kernels import KIND, LutSpec


def _lut_func(func: tirx.PrimFunc, target: Target) -> LutSpec | None:
    if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm" or not func.attrs:
        return None
    return LutSpec.of(func) if str(func.attrs.get("etch.kind", "")) == KIND else None


def _finish(func: tirx.PrimFunc, kernel: tirx.PrimFunc) -> s_tir.Schedule:
    """The kernel with the replaced function's attributes (its symbol name among them)."""
    for key, val in func.attrs.items():
        kernel = kernel.with_attr(key, val)
    return s_tir.Schedule(kernel)


class _VectorRule(ScheduleRule):
    applies: Callable[[LutSpec, set[str]], bool]
    kernel: Callable[[LutSpec], tirx.PrimFunc]

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool = False):
        spec = _lut_func(func, target)
        if spec is None:
            return None
        if not type(self).applies(spec, set(codegen.llvm_get_cpu_features(target))):
            return None
        return _finish(func, type(self).kernel(spec))


class LutX86(_VectorRule):
    applies = lut_x86.applies
    kernel = lut_x86.x86_kernel


class LutNeon(_VectorRule):
    applies = lut_neon.applies
    kernel = lut_neon.neon_kernel


class LutPortable(ScheduleRule):
    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool = False):
        return None if _lut_func(func, target) is None else s_tir.Schedule(func)


def rules() -> list[ScheduleRule]:
    return [LutX86(), LutNeon(), LutPortable()]
