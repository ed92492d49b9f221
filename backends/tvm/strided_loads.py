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

A load of stride a multiple of its 8 or 16 lanes whose start is known modulo the lanes (a
column of a row-major block: a channel-vector GEMM's epilogue reading its P x ocv
accumulators channel by channel, `conv_gemm_cpu.transposed_epilogue`) becomes the aligned
row vectors holding its values and one shuffle (`_transposing`): the block's columns read
the same rows, which LLVM loads once and transposes with permutes, where it had made a
gather or a scalar load and insert per lane. Measured on Zen 5 (one thread), 1568 x 16
accumulators written out transposed with a bias and Relu: 8.3 us gathered, 3.2 with a
vector of strided loads, 2.3 as rows and a transpose.
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import ir, sym, tirx
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
    if lanes in (8, 16) and stride >= lanes and stride % lanes == 0:
        return _transposing(load, index.base, stride, lanes)
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


def _transposing(load: ir.expr.TensorLoad, base: tirx.Expr, stride: int, lanes: int
                 ) -> tirx.Expr:
    """A column of a row-major block (a transposing epilogue's read: `lanes` values
    `stride` apart, stride a multiple of lanes) as the block's row vectors and a shuffle:
    lane k is lane r of the aligned vector at base - r + k * stride, where r = base mod
    lanes is a known constant. The rows do not depend on r, so the `lanes` columns of one
    block (an unrolled loop over r) read the same rows, which LLVM loads once and transposes
    with permutes instead of one scalar load and insert per value. Each row is the aligned
    vector holding a value the load reads, inside a buffer of whole vectors: it reads
    nothing outside the buffer. Else (r unknown, a ragged buffer) `load` as it is."""
    size = 1
    for d in load.source.shape:
        if not isinstance(d, tirx.IntImm):
            return load
        size *= int(d)
    ana = sym.Analyzer()
    mod = ana.modular_set(base)
    coeff, residue = int(mod.coeff), int(mod.base)
    if coeff % lanes or size % lanes:
        return load
    r = residue % lanes
    start = ana.simplify(base - r)
    rows = [tirx.BufferLoad(load.source, [tirx.Ramp(start + k * stride, 1, lanes)])
            for k in range(lanes)]
    return tirx.Shuffle(rows, [tirx.const(k * lanes + r, "int32") for k in range(lanes)])


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
