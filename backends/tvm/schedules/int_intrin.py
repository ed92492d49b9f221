"""x86 tensor intrinsics for the integer kernels: C[NL] int32 += sum_k<4 A[k] u8 * B[NL, 4] s8.

All of them are exact (the integer path is bit-exact by contract):
- "vnni": one vpdpbusd (AVX-512 VNNI, or AVX-VNNI at 256 bits): four u8*s8 products summed
  into each int32 lane without an int16 step.
- "madd": vpmaddubsw + vpmaddwd(ones) (AVX2 / AVX-512BW). vpmaddubsw saturates its int16
  pair sums u0 w0 + u1 w1, so it is chosen only when the constant weights prove that no pair
  can leave int16 (`lower.int_gemm.pair_safe`, e.g. weights of 7 bits or fewer).
- "split": for any int8 weights without VNNI: the activations are split into nibbles,
  u = 16 hi + lo, and each nibble goes through vpmaddubsw (pair sums <= 2 * 15 * 128: never
  saturate); vpmaddwd weighs the hi sums by 16 and the lo sums by 1. Twice "madd"'s work.

`intrinsic(kind, nl)` registers the pair (description, implementation) with s_tir's
TensorIntrin table on first use and returns its name.
"""

from __future__ import annotations

from typing import Callable

from tvm import tirx
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

PMADDUBSW = {8: ("llvm.x86.avx2.pmadd.ub.sw", "int16x16"),
             16: ("llvm.x86.avx512.pmaddubs.w.512", "int16x32")}
PMADDWD = {8: "llvm.x86.avx2.pmadd.wd", 16: "llvm.x86.avx512.pmaddw.d.512"}
VPDPBUSD = {8: "llvm.x86.avx512.vpdpbusd.256", 16: "llvm.x86.avx512.vpdpbusd.512"}


def _desc(nl: int) -> tirx.PrimFunc:
    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), "uint8", offset_factor=1)
        B = T.match_buffer(b, (nl, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (nl,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:nl], A[0:4], B[0:nl, 0:4])
            T.writes(C[0:nl])
            for i, k in T.grid(nl, 4):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")
    return desc


def _impl(nl: int, body: Callable) -> tirx.PrimFunc:
    """An implementation whose vector arithmetic is `body(a_u8, b_i8) -> int32xNL`."""
    u8, i8, i32 = f"uint8x{4 * nl}", f"int8x{4 * nl}", f"int32x{nl}"

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), "uint8", offset_factor=1)
        B = T.match_buffer(b, (nl, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (nl,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:nl], A[0:4], B[0:nl, 0:4])
            T.writes(C[0:nl])
            a32 = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
            a_bc = T.reinterpret(T.broadcast(a32, nl), dtype=u8)
            C[T.ramp(0, 1, nl)] = body(C.vload([0], i32), a_bc, B.vload([0, 0], i8))
    return impl


def _pmaddubsw(nl: int, a: tirx.Expr, b: tirx.Expr) -> tirx.Expr:
    name, dtype = PMADDUBSW[nl]
    return T.call_llvm_pure_intrin(dtype, name, a, b)


def _pmaddwd(nl: int, x: tirx.Expr, weight: int) -> tirx.Expr:
    ones = T.broadcast(T.int16(weight), 2 * nl)
    return T.call_llvm_pure_intrin(f"int32x{nl}", PMADDWD[nl], x, ones)


def _madd(nl: int) -> Callable:
    return lambda c, a, b: c + _pmaddwd(nl, _pmaddubsw(nl, a, b), 1)


def _split(nl: int) -> Callable:
    def body(c: tirx.Expr, a: tirx.Expr, b: tirx.Expr) -> tirx.Expr:
        mask = T.broadcast(T.uint8(15), 4 * nl)
        lo = T.bitwise_and(a, mask)
        hi = T.bitwise_and(T.shift_right(a, T.broadcast(T.uint8(4), 4 * nl)), mask)
        return c + _pmaddwd(nl, _pmaddubsw(nl, hi, b), 16) + \
            _pmaddwd(nl, _pmaddubsw(nl, lo, b), 1)
    return body


def _vnni(nl: int) -> Callable:
    def body(c: tirx.Expr, a: tirx.Expr, b: tirx.Expr) -> tirx.Expr:
        i32 = f"int32x{nl}"
        return T.call_llvm_pure_intrin(i32, VPDPBUSD[nl], c, T.reinterpret(a, dtype=i32),
                                       T.reinterpret(b, dtype=i32))
    return body


BODIES = {"vnni": _vnni, "madd": _madd, "split": _split}


def intrinsic(kind: str, nl: int) -> str:
    """The registered name of intrinsic `kind` ("vnni", "madd", "split") at nl lanes."""
    name = f"etch_dot_{nl}x4_u8i8i32_{kind}"
    if TensorIntrin.get(name, allow_missing=True) is None:
        TensorIntrin.register(name, _desc(nl), _impl(nl, BODIES[kind](nl)))
    return name


def choose(features: set[str], nl: int, pair_safe: bool) -> str | None:
    """The intrinsic kind for a CPU with LLVM `features`, or None (no x86 int8 dot)."""
    wide = nl == 16
    if "avx512vnni" in features and (not wide or "avx512f" in features) and \
            (wide or "avx512vl" in features):
        return "vnni"
    if not wide and "avxvnni" in features:
        return "vnni"
    if wide and "avx512bw" not in features or not wide and "avx2" not in features:
        return None
    return "madd" if pair_safe else "split"
