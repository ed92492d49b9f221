"""The kernel of an int8/uint8 Concat (`lower/tensor.lower_concat`'s "injective" kernel): in
row-major order each input is, per index of the dims before the axis, one contiguous run
of the output, so the kernel is block copies of whole vectors (the last vector of a run
moved back to end at the run's end: it rewrites a few bytes with the same values; a run
shorter than a vector is copied byte by byte). Was: one element per step with a select
per input (squeezenet1_1's fire-module outputs: rows of 27 or 55 bytes, not vectorised).
"""

from __future__ import annotations

from tvm import tirx
from tvm.script.ir_builder import IRBuilder
from tvm.tirx.script.builder import ir as T

from backends.tvm.schedules.int_kernels import PARALLEL_MIN_WORK, _args, _finish, _shape

LANES = 64  # bytes per copied vector
DTYPES = ("int8", "uint8")


def _prod(dims: tuple) -> int:
    out = 1
    for d in dims:
        out *= d
    return out


def concat_axis(func: tirx.PrimFunc) -> int | None:
    """The axis of a Concat kernel this module renders (integer bytes, inputs differing
    from the output in one dim only), else None; 0 for a single input (a copy)."""
    if str(func.attrs.get("etch.op", "")) != "Concat":
        return None
    *ins, out = func.params
    shapes = [_shape(b) for b in ins]
    oshape = _shape(out)
    if any(b.dtype != out.dtype for b in ins) or out.dtype not in DTYPES or not oshape or \
            any(len(s) != len(oshape) for s in shapes):
        return None
    axes = {d for s in shapes for d in range(len(oshape)) if s[d] != oshape[d]}
    if len(axes) > 1:
        return None
    axis = axes.pop() if axes else 0
    return axis if sum(s[axis] for s in shapes) == oshape[axis] else None


def concat_kernel(func: tirx.PrimFunc, axis: int) -> tirx.PrimFunc:
    with IRBuilder() as ib, T.prim_func():
        T.func_name("main")
        *ins, out = _args(func)
        oshape = _shape(out)
        outer, after = _prod(oshape[:axis]), _prod(oshape[axis + 1:])
        row = oshape[axis] * after  # output elements per outer index
        zeros = [0] * (len(oshape) - 1)  # flat offsets in the last index

        def at(flat: tirx.Expr, lanes: int = 1) -> list:
            return [*zeros, flat if lanes == 1 else tirx.Ramp(flat, 1, lanes)]

        with T.sblock("root"):
            start = 0
            for x in ins:
                run = _shape(x)[axis] * after
                lanes = LANES if run >= LANES else 0
                nvec = -(-run // LANES) if lanes else 0
                big = outer * run >= PARALLEL_MIN_WORK
                if lanes:
                    loop = T.parallel if big and outer * nvec > 1 else T.serial
                    with loop(0, outer * nvec) as t:
                        o, v = t // nvec, t % nvec
                        j = tirx.min(v * LANES, run - LANES)
                        T.buffer_store(out, tirx.BufferLoad(x, at(o * run + j, LANES)),
                                       at(o * row + start + j, LANES))
                else:
                    with T.serial(0, outer) as o, T.serial(0, run) as j:
                        T.buffer_store(out, tirx.BufferLoad(x, at(o * run + j)),
                                       at(o * row + start + j))
                start += run
    return _finish(ib, func)
