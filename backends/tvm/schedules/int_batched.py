"""The x86 kernel of "qbatch" (`lower/int_gemm.qbatch`): int8 x int8 batched matmul of two
activations, [B, M, K] x [B, K, N] (attention's QK^T and AV), built with TVM's IRBuilder.

Per batch, the run-time operand b is packed as "qdense" packs its constant weights,
[N/nl, K/4, nl, 4] in the s8 domain (4 rows of nl columns interleaved by one shuffle), the
activations a are copied into the u8 domain with K padded to whole quads, and the two
zero-point corrections are computed once: -zs * sum_k u per row, -zu * sum_k s per column.
Then tiles of mb rows x nv vectors run the dense micro-kernel (`int_kernels`): the
accumulators start at the two corrections, take one dot-product step per quad of K and go
through the group's epilogue (+ bias = K zu zs + the op's bias, requantise, post steps).
Same parameters and result as the TE kernel; exact (the bounds are `int_gemm.batch_fits`).
"""

from __future__ import annotations

from tvm import tirx
from tvm.script.ir_builder import IRBuilder
from tvm.tirx.script.builder import ir as T

from backends.tvm.lower.int_gemm import KI, to_s8, to_u8
from backends.tvm.schedules.int_kernels import (  # the dense kernel's parts
    PARALLEL_MIN_WORK,
    Dot,
    _args,
    _broadcast4,
    _dense_store,
    _Epilogue,
    _finish,
    _shape,
    _step,
    _vec,
    clamp_row,
)

Expr = tirx.Expr


def _attr(func: tirx.PrimFunc, name: str) -> int:
    return int(func.attrs[f"etch.{name}"])


def batched_kernel(func: tirx.PrimFunc, dot: Dot, mb: int, nv: int) -> tirx.PrimFunc:
    """[B, M, K] x [B, K, N] -> [B, M, N]: per batch (the parallel loop), pack, then tiles
    of mb rows x nv vectors over N padded to whole tiles."""
    with IRBuilder() as ib, T.prim_func():
        T.func_name("main")
        a, b, numbers, *params, out = _args(func)  # numbers: za, zb, zu, zs, K zu zs
        (batch, m, k), n = _shape(a), _shape(b)[2]
        nl = _attr(func, "nl")
        nvec = -(-n // nl)
        kb, nvp = -(-k // KI), -(-nvec // nv) * nv
        rows = -(-m // mb)
        epi = _Epilogue(func, params, out.dtype, nl)
        work = batch * m * n * k
        loop = T.parallel if work >= PARALLEL_MIN_WORK and batch > 1 else T.serial
        with loop(0, batch) as bi:
            wp = T.alloc_buffer((nvp, kb, nl * KI), "int8")
            cs = T.alloc_buffer((nvp * nl,), "int32")
            ap = T.alloc_buffer((m, kb * KI), "uint8")
            rs = T.alloc_buffer((m,), "int32")
            zu, zs = (T.bind(tirx.BufferLoad(numbers, [j]).astype("int32")) for j in (2, 3))
            _pack_b(b, bi, wp, cs, (k, n, nl), zu)
            _pack_a(a, bi, ap, rs, (m, k, kb), zs)
            with T.serial(0, nvp // nv * rows) as t:
                nbo, mo = t // rows, t % rows
                acc = T.alloc_buffer((mb, nv * nl), "int32")
                with T.unroll(0, mb) as mi, T.unroll(0, nv) as v:
                    row = clamp_row(mo * mb + mi, m, mb)
                    col = _vec(cs, [(nbo * nv + v) * nl], nl)
                    T.buffer_store(acc, tirx.Broadcast(tirx.BufferLoad(rs, [row]), nl) + col,
                                   [mi, tirx.Ramp(v * nl, 1, nl)])
                with T.serial(0, kb) as ko, T.unroll(0, mb) as mi:
                    a4 = _broadcast4(ap, [clamp_row(mo * mb + mi, m, mb), ko * KI], nl)
                    with T.unroll(0, nv) as v:
                        _step(acc, mi, v, nl, a4, _vec(wp, [nbo * nv + v, ko, 0], KI * nl), dot)
                _dense_store(out, acc, epi, (mo * mb, nbo * nv * nl), (mb, nv, nl, n, m),
                            lambda r, c: [bi, r, c])
    return _finish(ib, func)


def _pack_b(b: tirx.Buffer, bi: Expr, wp: tirx.Buffer, cs: tirx.Buffer, sizes: tuple,
            zu: Expr) -> None:
    """wp[j, q, 4 l + c] = s8(b[bi, 4 q + c, j nl + l]) (0 past K and N): per quad of rows,
    nl columns of each of the 4 rows interleaved; cs[col] = -zu * sum_k s8(b[bi, k, col])."""
    k, n, nl = sizes
    nvp, kb = (int(d) for d in wp.shape[:2])
    zero = tirx.const(0, "int8")
    with T.serial(0, nvp) as j:
        with T.serial(0, nl) as lane:
            T.buffer_store(cs, tirx.const(0, "int32"), [j * nl + lane])
        with T.serial(0, kb) as q:
            for c in range(KI):
                kk = q * KI + c
                with T.serial(0, nl) as lane:
                    col = j * nl + lane
                    ok = tirx.all(kk < k, col < n)
                    v = tirx.Select(ok, to_s8(tirx.BufferLoad(
                        b, [bi, tirx.min(kk, k - 1), tirx.min(col, n - 1)])), zero)
                    T.buffer_store(wp, v, [j, q, lane * KI + c])
                    T.buffer_store(cs, tirx.BufferLoad(cs, [col]) + v.astype("int32"), [col])
        with T.vectorized(0, nl) as lane:
            T.buffer_store(cs, tirx.BufferLoad(cs, [j * nl + lane]) * -zu, [j * nl + lane])


def _pack_a(a: tirx.Buffer, bi: Expr, ap: tirx.Buffer, rs: tirx.Buffer, sizes: tuple,
            zs: Expr) -> None:
    """ap[i, kk] = u8(a[bi, i, kk]) (0 past K); rs[i] = -zs * sum_k u8(a[bi, i, k])."""
    m, k, kb = sizes
    with T.serial(0, m) as i:
        T.buffer_store(rs, tirx.const(0, "int32"), [i])
        with T.serial(0, k) as kk:
            u = to_u8(tirx.BufferLoad(a, [bi, i, kk]))
            T.buffer_store(ap, u, [i, kk])
            T.buffer_store(rs, tirx.BufferLoad(rs, [i]) + u.astype("int32"), [i])
        with T.serial(k, kb * KI) as kk:
            T.buffer_store(ap, tirx.const(0, "uint8"), [i, kk])
        T.buffer_store(rs, tirx.BufferLoad(rs, [i]) * -zs, [i])
