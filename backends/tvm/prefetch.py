"""The cpu kernels' software prefetch of a streamed operand's next block (`etch.prefetch`).

A GEMM whose weight block is read once from memory and then reused from cache (the
channel-vector pointwise convolution: each reduction chunk of a channel block's weights is
read by the first position block from DRAM, then by the others from L1) stalls on that first
read where the model's weights do not stay in the last-level cache (resnet50's 100 MB): the
hardware prefetchers stop at every 4 KiB page. The schedule annotates the loop over the
position blocks with `etch.prefetch` = [weight buffer name, elements of one chunk]; this
pass, run after TVM's lowering, puts at the top of that loop's body prefetches of the next
chunk's lines (the chunk that follows the current one in memory), spread over the loop's
iterations: iteration i hints its share of the lines, so the next chunk arrives while this
one is computed. The current chunk's first element is the weight load's index with every
loop inside the annotated one (and the annotated loop itself) at its first value.
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import ir, tirx

KEY = "etch.prefetch"
LINE = 64  # bytes a prefetch brings in


def _nodes(stmt, kind: type) -> list:
    """Every node of type `kind` in `stmt`."""
    found = []

    def visit(node):
        found.append(node)
        return node

    tvm_ffi.structural_map(stmt, [(kind, visit)])
    return found


def annotate(sch, loop, buffer: str, elements: int) -> None:
    """Have `loop` prefetch the `elements` of `buffer` (a parameter, read in its body) that
    follow, in memory, those its body reads first, spread over its iterations."""
    sch.annotate(loop, KEY, [buffer, elements])


def _prefetched(loop: tirx.For) -> tirx.For:
    """`loop` with its share of the next chunk's prefetches at the top of its body (the
    loop unchanged where its body reads no one-dimensional `buffer`)."""
    name, chunk = loop.annotations[KEY]
    name, chunk = str(name), int(chunk)
    rest = {k: v for k, v in loop.annotations.items() if k != KEY}
    loads = [ld for ld in _nodes(loop.body, ir.expr.TensorLoad)
             if ld.source.name == name and len(ld.indices) == 1]
    if not loads:
        return tirx.For(loop.loop_var, loop.min, loop.extent, loop.kind, loop.body,
                        loop.thread_binding, rest)
    flat, index = loads[0].source, loads[0].indices[0]
    if isinstance(index, tirx.Ramp):
        index = index.base
    dtype = index.ty.dtype
    start = {f.loop_var: f.min for f in [loop, *_nodes(loop.body, tirx.For)]}  # each at its first
    first = tvm_ffi.structural_map(index, [(ir.expr.Var, lambda v: start.get(v, v))])
    size = 1
    for d in flat.shape:
        size *= int(d)
    item = tvm.DataType(str(flat.dtype)).bits // 8
    lines = -(-chunk * item // LINE)
    per = -(-lines // int(loop.extent))  # lines an iteration
    step = tirx.Cast(dtype, loop.loop_var - loop.min) if loop.loop_var.ty.dtype != dtype \
        else loop.loop_var - loop.min
    calls = []
    for j in range(per):
        at = tirx.min(first + chunk + (step * per + j) * (LINE // item),
                      tirx.const(size - 1, dtype))
        calls.append(tirx.Evaluate(tirx.call_llvm_intrin(
            "void", "llvm.prefetch", tirx.address_of(tirx.BufferLoad(flat, [at])),
            tirx.const(0, "int32"), tirx.const(3, "int32"), tirx.const(1, "int32"))))
    return tirx.For(loop.loop_var, loop.min, loop.extent, loop.kind,
                    tirx.SeqStmt([*calls, loop.body]), loop.thread_binding, rest)


@tirx.transform.prim_func_pass(opt_level=0, name="etch.Prefetch")
def prefetch(func: tirx.PrimFunc, mod: ir.IRModule, ctx: tvm.transform.PassContext
             ) -> tirx.PrimFunc:
    """Every loop annotated `etch.prefetch` with its next chunk's prefetches."""
    def visit(loop):
        if KEY in loop.annotations:
            return _prefetched(loop)
        return loop

    return tvm_ffi.structural_map(func, [(tirx.For, visit)])
