"""The cpu kernels' TIR pipeline: TVM's own, then `strided_loads`.

A vectorised loop that reads every s-th element (a pool window's columns at stride 2,
`lower/pool._row_pool`) becomes a load of a strided ramp, which TVM's LLVM code generator
scalarises: one scalar load and one insert per lane. `strided_loads` rewrites such a load
(constant stride 2 to 4) into loads of whole vectors covering the elements from the first
to the last one read, and one shuffle of them, which LLVM compiles to vector permutes
(`vpermt2ps` on AVX-512). It reads no element outside the original load's first and last,
so it is safe wherever that load was. Only whole power-of-two vectors of 8 or more lanes:
a row's short tail (7 or 13 lanes of a pool's row) is left to LLVM, whose own code
measured twice as fast there (the shuffle's loads straddled the vectors the row had just
stored, a store-forwarding stall).
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import ir, tirx
from tvm.s_tir import pipeline as s_tir_pipeline
from tvm.tirx import compilation_pipeline

PIPELINE = "etch_cpu"
MAX_STRIDE = 4  # a wider stride spans more vectors than the lanes it gathers


def contiguous(load: ir.expr.TensorLoad) -> tirx.Expr:
    """`load` as whole-vector loads and a shuffle, where it reads a constant-stride ramp."""
    if len(load.indices) != 1:
        return load
    index = load.indices[0]
    if not isinstance(index, tirx.Ramp) or not isinstance(index.stride, tirx.IntImm) \
            or not isinstance(index.lanes, tirx.IntImm):
        return load
    stride, lanes = int(index.stride.value), int(index.lanes.value)
    if not 2 <= stride <= MAX_STRIDE or lanes < 8 or lanes & (lanes - 1):
        return load  # a row's short tail: LLVM's own code (see the module docstring)
    span = stride * (lanes - 1) + 1  # first to last element read
    chunks = -(-span // lanes)
    starts = [m * lanes for m in range(chunks - 1)] + [span - lanes]  # the last ends at span
    vectors = [tirx.BufferLoad(load.source, [tirx.Ramp(index.base + start, 1, lanes)])
               for start in starts]
    picks = []
    for k in range(lanes):
        at = k * stride
        m = min(at // lanes, chunks - 1)
        picks.append(tirx.const(m * lanes + at - starts[m], "int32"))
    return tirx.Shuffle(vectors, picks)


@tirx.transform.prim_func_pass(opt_level=0, name="etch.StridedLoads")
def strided_loads(func: tirx.PrimFunc, mod: ir.IRModule, ctx: tvm.transform.PassContext
                  ) -> tirx.PrimFunc:
    """Every constant-stride vector load of `func` as contiguous loads and a shuffle."""
    return tvm_ffi.structural_map(func, [(ir.expr.TensorLoad, contiguous)])


def _pipeline() -> tuple[tvm.transform.Pass, object, object]:
    from backends.tvm import prefetch  # its pass runs here too

    passes, host, device = s_tir_pipeline.default_s_tir_pipeline()
    return (tvm.transform.Sequential([passes, strided_loads, prefetch.prefetch], name=PIPELINE),
            host, device)


compilation_pipeline.register_tir_pipeline(PIPELINE, _pipeline)
