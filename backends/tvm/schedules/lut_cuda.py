"""The CUDA kernel of etch.LutGemm and its schedule rule (first in `cuda.rules()`).

Two launches in one PrimFunc:
1. tables: one thread per (row, table block) builds the block's signed tables, quantises
   them (int8 mode) and writes Tq, ls and Z to global memory (`lut_kernels`' steps, scalar);
2. look-ups: a thread block per (column tile, row), a thread per column (the layout has one
   plane per 32-byte row: a warp reads 32 consecutive bytes). Per table block the threads
   copy the block's tables into shared memory, synchronise, and each looks up its column's
   nibbles there; the block's contribution is combined with __fmul_rn/__fadd_rn (nvcc would
   otherwise contract the reference's two roundings into one FMA).
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.script.ir_builder import IRBuilder
from tvm.target import Target
from tvm.tirx.script.builder import ir as T

from backends.tvm.schedules.lut_kernels import KIND, KernelArgs, LutSpec, offset
from compiler.ops.etch_lut import ENTRIES, G_ACT, TABLE_MAX

Expr = tirx.Expr
TABLE_THREADS = 64


def _f(v: float) -> Expr:
    return tirx.const(v, "float32")


def _rn(op: str, a: Expr, b: Expr) -> Expr:
    return tirx.call_pure_extern("float32", f"__f{op}_rn", a, b)


def _x(x: tirx.Buffer, row: Expr, k: Expr, k_real: int) -> Expr:
    return tirx.Select(k < k_real, tirx.BufferLoad(x, [row, tirx.min(k, k_real - 1)]), _f(0.0))


def _entry(x: tirx.Buffer, row: Expr, chunk: Expr, i: Expr, k: int) -> Expr:
    """T[row, chunk, i] = sum_t (2 bit_t(i) - 1) x[4 chunk + t], added in t order."""
    acc = None
    for t in range(G_ACT):
        v = _x(x, row, chunk * G_ACT + t, k)
        term = tirx.Select(tirx.bitwise_and(tirx.shift_right(i, t), 1) == 1, v, -v)
        acc = term if acc is None else _rn("add", acc, term)
    return acc


def _tables(spec: LutSpec, x: tirx.Buffer, bufs: tuple) -> None:
    total = spec.m * spec.p.blocks
    with T.launch_thread("blockIdx.x", -(-total // TABLE_THREADS)) as bx, \
            T.launch_thread("threadIdx.x", TABLE_THREADS) as tx:
        _table_thread(spec, x, bufs, bx * TABLE_THREADS + tx)


def _table_thread(spec: LutSpec, x: tirx.Buffer, bufs: tuple, mh: Expr) -> None:
    tab, ls, zs = bufs
    p = spec.p
    chunks, per, total = p.kp // G_ACT, p.tblock // G_ACT, spec.m * p.blocks
    with T.If(mh < total), T.Then():
        row, h = mh // p.blocks, mh % p.blocks
        amax = T.alloc_buffer((1,), "float32", scope="local")
        zsum = T.alloc_buffer((1,), zs.dtype, scope="local")
        T.buffer_store(amax, _f(0.0), [0])
        T.buffer_store(zsum, tirx.const(0, zs.dtype), [0])
        with T.serial(0, per) as jj, T.serial(0, ENTRIES) as i:
            e = _entry(x, row, h * per + jj, i, p.k)
            T.buffer_store(amax, tirx.max(tirx.BufferLoad(amax, [0]), tirx.abs(e)), [0])
        a = tirx.BufferLoad(amax, [0])
        inv = tirx.Select(a > _f(0.0), _f(float(TABLE_MAX)) / a, _f(0.0))
        with T.serial(0, per) as jj, T.serial(0, ENTRIES) as i:
            e = _entry(x, row, h * per + jj, i, p.k)
            at = (row * chunks + h * per + jj) * ENTRIES + i
            if spec.int8:
                lim = _f(float(TABLE_MAX))
                q = tirx.max(tirx.min(tirx.nearbyint(e * inv), lim), -lim).astype("int8")
                T.buffer_store(tab, q, [at])
                top = q.astype("int32")
            else:
                T.buffer_store(tab, e, [at])
                top = e
            with T.If(i == ENTRIES - 1), T.Then():
                T.buffer_store(zsum, tirx.BufferLoad(zsum, [0]) + top, [0])
        if ls is not None:
            T.buffer_store(ls, a / _f(float(2 * TABLE_MAX)), [mh])
        T.buffer_store(zs, tirx.BufferLoad(zsum, [0]), [mh])


def _lookups(spec: LutSpec, bufs: list, tables: tuple) -> None:
    p, lay = spec.p, spec.p.layout
    tc = lay.tile_cols
    with T.launch_thread("blockIdx.x", lay.padded_n(p.n) // tc) as t, \
            T.launch_thread("blockIdx.y", spec.m) as row, \
            T.launch_thread("threadIdx.x", tc) as c:
        _column(spec, bufs, tables, (t, row, c))


def _column(spec: LutSpec, bufs: list, tables: tuple, at: tuple) -> None:
    """One thread's column of one tile and row."""
    tab, ls, zs = tables
    t, row, c = at
    p, lay = spec.p, spec.p.layout
    args = KernelArgs.of(spec, bufs)
    w, zero, out = args.w, args.zero, args.out
    tc, chunks, per, kb_per = lay.tile_cols, p.kp // G_ACT, p.tblock // G_ACT, p.tblock // 8
    acc_t = "int32" if spec.int8 else "float32"
    shared = T.alloc_buffer((per * ENTRIES,), tab.dtype, scope="shared")
    y = T.alloc_buffer((1,), "float32", scope="local")
    acc = T.alloc_buffer((1,), acc_t, scope="local")
    T.buffer_store(y, _f(0.0), [0])
    with T.serial(0, p.blocks) as h:
        with T.serial(0, -(-per * ENTRIES // tc)) as i:
            e = i * tc + c
            with T.If(e < per * ENTRIES), T.Then():
                src = (row * chunks + h * per) * ENTRIES + e
                T.buffer_store(shared, tirx.BufferLoad(tab, [src]), [e])
        T.evaluate(tirx.call_intrin("int32", "tirx.tvm_storage_sync", "shared"))
        T.buffer_store(acc, tirx.const(0, acc_t), [0])
        with T.serial(0, kb_per) as kb, T.serial(0, lay.plane_vectors) as q:
            byte = tirx.BufferLoad(w, [t, h * kb_per + kb, 0, q, c]).astype("int32")
            looked = tirx.BufferLoad(shared, [2 * kb * ENTRIES + byte % 16]).astype(acc_t) + \
                tirx.BufferLoad(shared, [(2 * kb + 1) * ENTRIES + byte // 16]).astype(acc_t)
            weight = tirx.shift_left(tirx.const(p.mu, "int32"), q).astype(acc_t)
            T.buffer_store(acc, tirx.BufferLoad(acc, [0]) + looked * weight, [0])
        T.evaluate(tirx.call_intrin("int32", "tirx.tvm_storage_sync", "shared"))
        g = h // (p.group // p.tblock)
        d = tirx.BufferLoad(acc, [0]) + offset(spec, zero, t, g, c, 1).astype(acc_t) * \
            tirx.BufferLoad(zs, [row * p.blocks + h])
        s = args.scale_at(spec, t, g, c)
        f = tirx.BufferLoad(ls, [row * p.blocks + h]) if ls is not None else _f(0.5)
        part = _rn("mul", _rn("mul", d.astype("float32"), s), f)
        T.buffer_store(y, _rn("add", tirx.BufferLoad(y, [0]), part), [0])
    with T.If(t * tc + c < p.n), T.Then():
        T.buffer_store(out, tirx.BufferLoad(y, [0]), [row, t * tc + c])


def cuda_kernel(spec: LutSpec) -> tirx.PrimFunc:
    """Both launches for `spec` (layout: one plane per 32-byte vector, one vector a tile)."""
    p = spec.p
    with IRBuilder() as ib, T.prim_func():
        T.func_name("main")
        bufs = [T.arg(f"p{k}", T.buffer(shape, dt)) for k, (shape, dt) in
                enumerate(spec.shapes())]
        tab = T.alloc_buffer((spec.m * p.kp // G_ACT * ENTRIES,),
                             "int8" if spec.int8 else "float32")
        ls = T.alloc_buffer((spec.m * p.blocks,), "float32") if spec.int8 else None
        zs = T.alloc_buffer((spec.m * p.blocks,), "int32" if spec.int8 else "float32")
        _tables(spec, bufs[0], (tab, ls, zs))
        _lookups(spec, bufs, (tab, ls, zs))
    return ib.get()


def applies(spec: LutSpec) -> bool:
    lay = spec.p.layout
    return lay.slots == 1 and lay.chunk_slots == 1 and lay.tile_vectors == 1 and \
        lay.vector_bytes <= 1024 and not spec.p.table_steps  # step 5: not built here


class LutCuda(ScheduleRule):
    """etch.LutGemm on CUDA: the two-launch kernel above."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool = False):
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "cuda" or \
                not func.attrs or str(func.attrs.get("etch.kind", "")) != KIND:
            return None
        spec = LutSpec.of(func)
        if not applies(spec):
            return None
        kernel = cuda_kernel(spec)
        for key, val in func.attrs.items():
            kernel = kernel.with_attr(key, val)
        return s_tir.Schedule(kernel)


def rules() -> list[ScheduleRule]:
    return [LutCuda()]
