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

A load whose lanes read each of a few consecutive elements d times in turn (index
`base + ramp(0, 1, lanes) // d`: the Winograd epilogue's output row, where d = m outputs
of a tile read its one value per tile, `lower/winograd.py`) becomes the one short vector of
those lanes / d elements and a shuffle repeating each (`_repeating`): TVM's code generator
scalarised it (one extract and insert per lane). It reads exactly the elements the load
did.
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
    if not isinstance(index, tirx.Ramp):
        return _repeating(load, index)
    if not isinstance(index.stride, tirx.IntImm) \
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


def _repeating(load: ir.expr.TensorLoad, index: tirx.Expr) -> tirx.Expr:
    """`load` as one load of lanes / d consecutive elements and a shuffle repeating each d
    times, where `index` is a sum of broadcast scalars and one ramp(b, 1, lanes) // d (b a
    multiple of d; a short tail of lanes may end part way through an element's run); else
    `load` as it is."""
    terms, stack = [], [index]
    while stack:
        e = stack.pop()
        if isinstance(e, tirx.Add):
            stack += [e.a, e.b]
        else:
            terms.append(e)
    scalars = [t.value for t in terms if isinstance(t, tirx.Broadcast)]
    rest = [t for t in terms if not isinstance(t, tirx.Broadcast)]
    if len(rest) != 1 or not isinstance(rest[0], tirx.FloorDiv):
        return load
    ramp, d = rest[0].a, rest[0].b
    if not (isinstance(ramp, tirx.Ramp) and isinstance(d, tirx.Broadcast)
            and all(isinstance(x, tirx.IntImm) for x in (ramp.base, ramp.stride, d.value))
            and isinstance(ramp.lanes, tirx.IntImm)):
        return load
    lanes, step, b0 = int(ramp.lanes.value), int(d.value.value), int(ramp.base.value)
    if int(ramp.stride.value) != 1 or step < 2 or b0 % step:
        return load
    start = b0 // step
    for x in scalars:
        start = start + x
    count = -(-lanes // step)  # elements read: lane k reads start + k // step
    if count == 1:
        return tirx.Broadcast(tirx.BufferLoad(load.source, [start]), lanes)
    short = tirx.BufferLoad(load.source, [tirx.Ramp(start, 1, count)])
    # a shuffle has at most as many lanes as its inputs: the short vector repeated (one
    # load for LLVM), each lane picking from the first
    return tirx.Shuffle([short] * -(-lanes // count),
                        [tirx.const(k // step, "int32") for k in range(lanes)])


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
