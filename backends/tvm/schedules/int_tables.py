"""The x86 kernel of etch.ChannelTable (`lower/int_eltwise.lower_channel_table`, kind
"injective"): per channel plane (the elements between two channel steps, contiguous: H * W
for NCHW), the channel's 256-entry table is four 64-byte registers and every 64 inputs are
two vpermi2b (entries 0-127 and 128-255 by the index's low 7 bits) and a byte select by
its top bit (AVX512-VBMI, as `int_intrin.table_vector` for the fused epilogues). A plane's
last vector is moved back to end at the plane's end (it rewrites a few bytes with the same
values); a plane under 64 bytes is looked up byte by byte. Was: the generic kernel's gather,
one scalar load per byte.
"""

from __future__ import annotations

from tvm import tirx
from tvm.script.ir_builder import IRBuilder
from tvm.tirx.script.builder import ir as T

from backends.tvm.schedules.int_intrin import VPERMI2B
from backends.tvm.schedules.int_kernels import PARALLEL_MIN_WORK, _args, _finish, _shape

LANES = 64
I8 = f"int8x{LANES}"


def channel_axis(func: tirx.PrimFunc) -> int | None:
    """The channel axis of an etch.ChannelTable kernel on int8/uint8 bytes, else None."""
    if str(func.attrs.get("etch.op", "")) != "etch.ChannelTable":
        return None
    x, table, out = func.params
    ok = x.dtype in ("int8", "uint8") and out.dtype in ("int8", "uint8") and \
        table.dtype == out.dtype and len(table.shape) == 2
    return int(func.attrs["etch.axis"]) if ok else None


def channel_table_kernel(func: tirx.PrimFunc, axis: int) -> tirx.PrimFunc:
    with IRBuilder() as ib, T.prim_func():
        T.func_name("main")
        x, table, out = _args(func)
        shape = _shape(out)
        channels = shape[axis]
        plane = 1
        for d in shape[axis + 1:]:
            plane *= d
        planes = 1
        for d in shape[:axis + 1]:
            planes *= d
        zeros = [0] * (len(shape) - 1)
        flip = x.dtype == "int8"  # int8 x - (-128) = the byte with its top bit flipped

        def at(flat: tirx.Expr, lanes: int = 1) -> list:
            return [*zeros, flat if lanes == 1 else tirx.Ramp(flat, 1, lanes)]

        with T.sblock("root"):
            loop = T.parallel if planes * plane >= PARALLEL_MIN_WORK and planes > 1 \
                else T.serial
            with loop(0, planes) as p:
                c = p % channels
                if plane >= LANES:
                    part = [tirx.reinterpret(I8, tirx.BufferLoad(
                        table, [c, tirx.Ramp(LANES * k, 1, LANES)])) for k in range(4)]
                    with T.serial(0, -(-plane // LANES)) as v:
                        start = p * plane + tirx.min(v * LANES, plane - LANES)
                        idx = tirx.reinterpret(I8, tirx.BufferLoad(x, at(start, LANES)))
                        if flip:
                            idx = tirx.bitwise_xor(idx, tirx.Broadcast(
                                tirx.const(-128, "int8"), LANES))
                        low = tirx.call_llvm_pure_intrin(I8, VPERMI2B, part[0], idx, part[1])
                        high = tirx.call_llvm_pure_intrin(I8, VPERMI2B, part[2], idx, part[3])
                        both = tirx.Select(idx < tirx.Broadcast(tirx.const(0, "int8"), LANES),
                                           high, low)
                        T.buffer_store(out, tirx.reinterpret(f"{out.dtype}x{LANES}", both),
                                       at(start, LANES))
                else:
                    lo = -128 if flip else 0
                    with T.serial(0, plane) as j:
                        i = tirx.BufferLoad(x, at(p * plane + j)).astype("int32") - lo
                        T.buffer_store(out, tirx.BufferLoad(table, [c, i]),
                                       at(p * plane + j))
    return _finish(ib, func)
