"""x86 int8 dot-product steps: C[NL] int32 += sum_k<4 A[k] u8 * B[NL, 4] s8, as vector TIR.

`dot(kind, nl)` returns `step(c, a, b) -> c'` where c is int32xNL, a the 4 activation bytes
broadcast to uint8x4NL and b the NL x 4 weights as int8x4NL. Every kind is exact (the
integer path is bit-exact by contract):
- "vnni": one vpdpbusd (AVX-512 VNNI, or AVX-VNNI at 256 bits): four u8*s8 products summed
  into each int32 lane without an int16 step.
- "madd": vpmaddubsw + vpmaddwd(1) (AVX2 / AVX-512BW). vpmaddubsw saturates its int16
  pair sums u0 w0 + u1 w1, so it is chosen only when the constant weights prove that no pair
  can leave int16 (`lower.int_gemm.pair_safe`, e.g. weights of 7 bits or fewer).
- "split": any int8 weights without VNNI: the activations are split into nibbles,
  u = 16 hi + lo; each nibble goes through vpmaddubsw (pair sums <= 2 * 15 * 128: never
  saturate) and vpmaddwd weighs the hi sums by 16, the lo sums by 1. Twice "madd"'s work.
"""

from __future__ import annotations

from collections.abc import Callable

from tvm import tirx

from backends.tvm.lower.int_eltwise import qadd_linear, step_number

Expr = tirx.Expr
PMADDUBSW = {8: "llvm.x86.avx2.pmadd.ub.sw", 16: "llvm.x86.avx512.pmaddubs.w.512"}
PMADDWD = {8: "llvm.x86.avx2.pmadd.wd", 16: "llvm.x86.avx512.pmaddw.d.512"}
VPDPBUSD = {8: "llvm.x86.avx512.vpdpbusd.256", 16: "llvm.x86.avx512.vpdpbusd.512"}
VPDPWSSD = {8: "llvm.x86.avx512.vpdpwssd.256", 16: "llvm.x86.avx512.vpdpwssd.512"}


def _splat(value: int | Expr, dtype: str, lanes: int) -> Expr:
    """`value` (an int, or a scalar Expr: a number read from the kernel's operand) in
    `lanes` lanes of `dtype`."""
    scalar = tirx.const(value, dtype) if isinstance(value, int) else value.astype(dtype)
    return tirx.Broadcast(scalar, lanes)


def _pmaddubsw(nl: int, a: Expr, b: Expr) -> Expr:
    return tirx.call_llvm_pure_intrin(f"int16x{2 * nl}", PMADDUBSW[nl], a, b)


def _pmaddwd(nl: int, x: Expr, weight: int) -> Expr:
    return tirx.call_llvm_pure_intrin(f"int32x{nl}", PMADDWD[nl], x,
                                      _splat(weight, "int16", 2 * nl))


def _madd(nl: int) -> Callable:
    return lambda c, a, b: c + _pmaddwd(nl, _pmaddubsw(nl, a, b), 1)


def _split(nl: int) -> Callable:
    def step(c: Expr, a: Expr, b: Expr) -> Expr:
        mask = _splat(15, "uint8", 4 * nl)
        lo = tirx.bitwise_and(a, mask)
        hi = tirx.bitwise_and(tirx.shift_right(a, _splat(4, "uint8", 4 * nl)), mask)
        return c + _pmaddwd(nl, _pmaddubsw(nl, hi, b), 16) + \
            _pmaddwd(nl, _pmaddubsw(nl, lo, b), 1)
    return step


def _vnni(nl: int) -> Callable:
    # LLVM 20+ declares the byte operands as <4nl x i8> (older LLVM: <nl x i32>)
    return lambda c, a, b: tirx.call_llvm_pure_intrin(f"int32x{nl}", VPDPBUSD[nl], c, a, b)


STEPS = {"vnni": _vnni, "madd": _madd, "split": _split}


def dot(kind: str, nl: int) -> Callable[[Expr, Expr, Expr], Expr]:
    """The vector step of intrinsic `kind` ("vnni", "madd", "split") at nl int32 lanes."""
    return STEPS[kind](nl)


def choose(features: set[str], nl: int, pair_safe: bool) -> str | None:
    """The step for a CPU with LLVM `features` at nl lanes (16: 512-bit vectors), or None
    where it has no x86 int8 dot product of that width."""
    if nl == 16:
        if "avx512vnni" in features:
            return "vnni"
        if "avx512bw" not in features:
            return None
    else:
        if "avxvnni" in features or {"avx512vnni", "avx512vl"} <= features:
            return "vnni"
        if "avx2" not in features:
            return None
    return "madd" if pair_safe else "split"


PSLLVQ = {8: "llvm.x86.avx2.psllv.q.256", 16: "llvm.x86.avx512.psllv.q.512"}
PSRLVQ = {8: "llvm.x86.avx2.psrlv.q.256", 16: "llvm.x86.avx512.psrlv.q.512"}


def requantize_vector(t: Expr, m0: Expr, shift: Expr, zp: int | Expr, qmin: int, qmax: int,
                      nl: int = 8) -> Expr:
    """`compiler.reference.requantize` of the int32 x nl accumulators t (nl 8: AVX2, 16:
    AVX-512) with int32 x nl m0 and shift (the zero point an int or a scalar Expr), for
    magnitudes below 2^24 (`lower.int_gemm.
    kernel_hints`' req_vec): clamped int32 x nl.

    |t| is vpabsd (INT32_MIN's magnitude 2^31 is exact as unsigned); |t| * M0 is vpmuludq on
    the even and the odd lanes; the rounding term 2^(shift-1) is vpsllvq of 1 (a count of -1
    gives 0, the formula's shift = 0 case); the magnitude is shifted with vpsrlvq, narrowed
    to int32 (it fits), given t's sign (vpsignd on AVX2; a masked negation at 16 lanes, where
    there is no vpsignd; t = 0 has magnitude 0), + zero point, clamped. Equal to the
    reference for every input within the bound."""
    half_lanes = nl // 2
    i32, i64 = f"int32x{nl}", f"int64x{half_lanes}"
    magnitude = tirx.call_llvm_pure_intrin(i32, "llvm.abs", t, tirx.const(False, "bool"))

    def odd(x: Expr) -> Expr:  # the odd int32 lanes, moved to the even ones
        wide = tirx.reinterpret(i64, x)
        return tirx.reinterpret(i32, tirx.shift_right(wide, _splat(32, "int64", half_lanes)))

    def low(x: Expr) -> Expr:  # the even int32 lanes, zero-extended to int64
        return tirx.bitwise_and(tirx.reinterpret(i64, x),
                                _splat(0xFFFFFFFF, "int64", half_lanes))

    def half(x: Expr) -> Expr:  # (2^(shift-1) + |t| M0) >> shift on the even lanes of x
        prod = low(x[0]) * low(x[1])  # LLVM: vpmuludq
        sh = low(x[2])
        rounding = tirx.call_llvm_pure_intrin(i64, PSLLVQ[nl], _splat(1, "int64", half_lanes),
                                              sh - _splat(1, "int64", half_lanes))
        return tirx.call_llvm_pure_intrin(i64, PSRLVQ[nl], prod + rounding, sh)

    even = half((magnitude, m0, shift))
    high = half((odd(magnitude), odd(m0), odd(shift)))
    mag = tirx.bitwise_or(tirx.reinterpret(i32, even), tirx.reinterpret(
        i32, tirx.shift_left(high, _splat(32, "int64", half_lanes))))
    if nl == 8:
        signed = tirx.call_llvm_pure_intrin(i32, "llvm.x86.avx2.psign.d", mag, t)
    else:
        signed = tirx.Select(t < _splat(0, "int32", nl), _splat(0, "int32", nl) - mag, mag)
    y = signed + _splat(zp, "int32", nl)
    return tirx.min(tirx.max(y, _splat(qmin, "int32", nl)), _splat(qmax, "int32", nl))


CVTPD2DQ = "llvm.x86.avx512.mask.cvtpd2dq.512"
ROUND_NEAREST = 8  # _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC: in the instruction


def requantize_f64(t: Expr, mf: Expr, zp: int | Expr, qmin: int, qmax: int) -> Expr:
    """`compiler.reference.requantize` of 16 int32 accumulators t in float64, where
    `lower.int_epilogue.f64_exact` proved it exact for every accumulator the kernel can
    produce: each half of t widened to float64 (vcvtdq2pd), times mf = M0 2^-shift
    (float64x16, vmulpd), rounded to the nearest int32, ties to even (vcvtpd2dq with the
    rounding in the instruction: no MXCSR dependence; the proof excludes ties), + zero
    point, clamped. Eight instructions for 16 values where `requantize_vector`'s 64-bit
    integer multiplies take ~18."""
    halves = []
    for h in range(2):
        lanes = [tirx.const(8 * h + i, "int32") for i in range(8)]
        product = tirx.Shuffle([t], lanes).astype("float64x8") * tirx.Shuffle([mf], lanes)
        halves.append(tirx.call_llvm_pure_intrin(
            "int32x8", CVTPD2DQ, product, _splat(0, "int32", 8), tirx.const(-1, "int8"),
            tirx.const(ROUND_NEAREST, "int32")))
    y = tirx.Shuffle(halves, [tirx.const(i, "int32") for i in range(16)]) + \
        _splat(zp, "int32", 16)
    return tirx.min(tirx.max(y, _splat(qmin, "int32", 16)), _splat(qmax, "int32", 16))


def qadd_vector(xa: Expr, xb: Expr, step: dict, nl: int) -> Expr:
    """etch.QAdd (`compiler.ops.etch_int`'s formula) of two int32 x nl vectors, with the
    attrs `step`, in int32 lanes: each side ((x - z) << L) requantised by (M0, s) is
    (x - z) requantised by (M0, s - L), the sum requantised to the output. Exact where
    `lower.int_epilogue.qadd_lanes_exact` holds (the kernels use it only there). With a
    proven straight-line form (`linear`, passes/linear_qadd.py): `int_eltwise.qadd_linear`
    in int32 lanes."""
    if "linear" in step:
        return qadd_linear(xa, xb, step, lambda v: _splat(v, "int32", nl))
    left = int(step.get("left_shift", 20))

    def splat(v: int | Expr) -> Expr:  # an attribute's int or a number from the operand
        return _splat(step_number(v), "int32", nl)

    def side(x: Expr, p: str) -> Expr:
        return requantize_vector(x - splat(step[f"{p}_zero"]), splat(step[f"{p}_m0"]),
                                 splat(step[f"{p}_shift"]) - splat(left), 0, -(1 << 31),
                                 (1 << 31) - 1, nl)

    return requantize_vector(side(xa, "a") + side(xb, "b"), splat(step["m0"]),
                             splat(step["shift"]), step_number(step.get("zero_point", 0)),
                             int(step["qmin"]), int(step["qmax"]), nl)


VPERMI2B = "llvm.x86.avx512.vpermi2var.qi.512"
TABLE_VBMI = "vpermi2b"  # `etch.table_lookup`: the 256-entry table in four zmm registers


def table_vector(y: Expr, table: tirx.Buffer, lo: int, nl: int = 16) -> Expr:
    """table[y - lo] for the int32 x nl requantised values y (each in [lo, lo + 255]), as
    the table's type x nl, without a gather (AVX512-VBMI): the 256 entries are four 64-byte
    vectors; vpermi2b looks up the index's low 7 bits in two of them (entries 0-127, and
    128-255), and the index's top bit picks one of the two results. The index bytes fill
    the low nl lanes of a 64-byte vector (the other lanes repeat them; unused)."""
    i8 = "int8x64"
    idx = (y - _splat(lo, "int32", nl)).astype(f"uint8x{nl}")
    idx = tirx.reinterpret(i8, tirx.Shuffle([idx] * (64 // nl), [tirx.const(k, "int32")
                                                                  for k in range(64)]))
    part = [tirx.reinterpret(i8, tirx.BufferLoad(table, [tirx.Ramp(64 * k, 1, 64)]))
            for k in range(4)]
    low = tirx.call_llvm_pure_intrin(i8, VPERMI2B, part[0], idx, part[1])
    high = tirx.call_llvm_pure_intrin(i8, VPERMI2B, part[2], idx, part[3])
    both = tirx.Select(idx < _splat(0, "int8", 64), high, low)
    picked = tirx.Shuffle([both], [tirx.const(k, "int32") for k in range(nl)])
    return tirx.reinterpret(f"{table.dtype}x{nl}", picked)
