"""The float64 requantisation of the x86 integer kernels (`schedules.int_intrin.
requantize_f64`): the proof that decides where it is exact (`lower.int_epilogue.f64_exact`)
checked against brute force, and the kernels that take it, bit for bit against the
reference, with their assembly for explicit CPUs."""

from __future__ import annotations

import numpy as np
import pytest

from backends.tvm.lower.int_epilogue import f64_exact, float_multipliers, kernel_hints
from compiler import reference
from passes.fuse_integer import FuseInteger
from runtime.host_cpu import runs_code_for
from tests.backends import isa
from tests.backends.test_tvm_int import CONVS, IntGraph, _qconv_case, _with_steps, run_tvm

WIDE = (-(1 << 40), 1 << 40)  # no clamp: the rounding itself is compared


def _f64(t: np.ndarray, m0: int, shift: int, zp: int) -> np.ndarray:
    """What the kernels compute: t * (M0 2^-shift) in float64, rounded to nearest, ties to
    even (vcvtpd2dq), + zero point."""
    mf = float(float_multipliers(np.array(m0), np.array(shift)))
    return np.rint(t.astype(np.float64) * mf).astype(np.int64) + zp


def _agrees(bound: int, m0: int, shift: int, zp: int) -> bool:
    """Brute force: the float64 form equals the reference on every |t| <= bound."""
    for lo in range(-bound, bound + 1, 1 << 22):
        t = np.arange(lo, min(lo + (1 << 22), bound + 1), dtype=np.int64)
        if not np.array_equal(_f64(t, m0, shift, zp),
                              reference.requantize(t, m0, shift, zp, *WIDE)):
            return False
    return True


def test_proof_is_sound_against_brute_force() -> None:
    """Where f64_exact says exact, every accumulator within the bound agrees: small
    shifts (ties within reach: refused, and brute force finds them), large shifts, bounds
    up to 2^23 (M0 bound past 2^53: the product itself rounds)."""
    rng = np.random.default_rng(0)
    proven = refused_and_differs = 0
    cases = [(int(rng.integers(1, 1 << 12)), int(rng.integers(1 << 30, 1 << 31)),
              int(rng.integers(1, 24)), int(rng.integers(-128, 128))) for _ in range(300)]
    cases += [((1 << 23) - 5, int(rng.integers(1 << 30, 1 << 31)), s, 3) for s in (40, 47)]
    for bound, m0, shift, zp in cases:
        agrees = _agrees(bound, m0, shift, zp)
        if f64_exact(bound, m0, shift, zp):
            assert agrees, (bound, m0, shift, zp)
            proven += 1
        refused_and_differs += not agrees
    assert proven >= 100 and refused_and_differs >= 20, (proven, refused_and_differs)


def test_proof_refuses_near_ties_the_float_product_misrounds() -> None:
    """Accumulators just off a tie (t M0 = 2^(shift-1) + j mod 2^shift, |j| within the
    product's rounding error) that float64 does round the wrong way: the proof refuses a
    bound that reaches them, and accepts the same channel where its bound stays below."""
    rng = np.random.default_rng(1)
    shift, misrounded = 40, 0
    for _ in range(1000):
        m0 = int(rng.integers(1 << 30, 1 << 31)) | 1
        inverse = pow(m0, -1, 1 << shift)
        for j in range(-8, 9):
            t = ((1 << (shift - 1)) + j) * inverse % (1 << shift)
            t = t - (1 << shift) if t >= 1 << (shift - 1) else t
            if abs(t) >= 1 << 31:
                continue
            if _f64(np.array([t]), m0, shift, 0)[0] != \
                    reference.requantize(np.array([t]), m0, shift, 0, *WIDE)[0]:
                misrounded += 1
                assert not f64_exact(abs(t), m0, shift, 0)
    assert misrounded >= 10
    assert f64_exact(1 << 20, (1 << 31) - 1, 40, 5)


def test_proof_limits() -> None:
    """Refused: an exact tie in reach (t M0 / 2^31 = t / 2), a result past int32 with the
    zero point, a negative shift, shift 0 with products past int32; accepted: a zero
    multiplier, shift 0 inside int32."""
    assert not f64_exact(3, 1 << 30, 31, 0)
    assert not f64_exact(1 << 24, (1 << 31) - 1, 24, 0)
    assert not f64_exact(100, 1 << 30, -1, 0)
    assert f64_exact(1 << 24, 0, 0, 0)
    assert f64_exact(1000, 1 << 20, 0, 0) and not f64_exact(1 << 12, 1 << 20, 0, 0)


def _in_range(case: IntGraph, oc: int) -> IntGraph:
    """`case`'s anchor requantised with multipliers that keep most outputs inside int8 (so
    the rounding, not the clamp, decides them)."""
    acc = case.g.outputs.pop()
    return case.outputs(case.requantize(acc, oc, scale=3e-4))


F64_CONVS = ["tail_tiles", "rows_of_40", "dense_stride2", "dense_5x5", "stem_stride2"]


@pytest.mark.parametrize("name", F64_CONVS + ["pointwise", "channels_7x7"])
def test_which_kernels_requantise_in_float64(name: str) -> None:
    """At 16 lanes the conv kernels with 16 or more dot steps per output (output rows, flat
    and dense positions, the 7x7 stem) requantise in float64 (vcvtpd2dq); a 1x1 conv of 16
    channels (4 steps) and the channel-vector kernel keep the integer form, as does every
    8-lane build (no rounding in the instruction)."""
    oc = CONVS[name][2]
    graph, _ = FuseInteger().run(_in_range(_qconv_case(name, requant=False), oc).g)
    for mcpu, f64 in (("znver4", name in F64_CONVS), ("skylake-avx512", name in F64_CONVS),
                      ("haswell", False)):
        asm = isa.compile_graph(graph, mcpu)
        [kernel] = asm.of_kind("qconv2d")
        assert ("vcvtpd2dq" in asm.kernels[kernel]) == f64, (mcpu, asm.attrs[kernel])


@pytest.mark.parametrize("name", F64_CONVS)
@pytest.mark.parametrize("mcpu", [None, "skylake-avx512"])
def test_float64_requantisation_runs_exactly(name: str, mcpu: str | None) -> None:
    """Those kernels against the reference, bit for bit, with outputs mostly inside int8,
    alone and with a residual add or a table after them, where this CPU runs that code."""
    if mcpu is not None and not runs_code_for(mcpu):
        pytest.skip(f"this CPU does not run code built for {mcpu}")
    oc = CONVS[name][2]
    assert run_tvm(_in_range(_qconv_case(name, requant=False), oc), mcpu=mcpu) == {"QConv": 1}
    for steps in ("residual_a", "table"):
        case = _with_steps(_in_range(_qconv_case(name, requant=False), oc), steps)
        assert run_tvm(case, mcpu=mcpu) == {"QConv": 1}


def _qgemm(k: int) -> IntGraph:
    case = IntGraph(12)
    a = case.ints("a", "uint8", (5, k))
    w = case.const("w", case.rng.integers(-127, 128, (k, 48)).astype(np.int8))
    bias = case.const("bias", case.rng.integers(-900, 900, 48).astype(np.int32))
    zero = case.const("a_zero", np.array(130, "uint8"))
    acc = case.op("etch.QGemm", [a, w, bias, zero], "acc")
    return case.outputs(case.requantize(acc, 48, axis=-1, scale=1e-4))


def test_qgemm_requantises_in_float64_exactly() -> None:
    """The dense kernel with K = 200 (50 steps) takes the float64 form at 16 lanes, K = 40
    (10 steps) not; both match the reference."""
    for k, f64 in ((200, True), (40, False)):
        graph, _ = FuseInteger().run(_qgemm(k).g)
        asm = isa.compile_graph(graph, "znver4")
        [kernel] = asm.of_kind("qdense")
        assert ("vcvtpd2dq" in asm.kernels[kernel]) == f64
        assert run_tvm(_qgemm(k)) == {"QDense": 1}


def test_hints_record_the_proof() -> None:
    """kernel_hints: req_f64 where every channel is proven, not where one channel's bound
    reaches a tie."""
    from backends.tvm.lower.int_epilogue import IntEpilogue

    epi = IntEpilogue("int8", requant={"zero_point": 0, "qmin": -128, "qmax": 127},
                      numbers=[0])
    epi.multipliers = (np.array([(1 << 30) + 1, 1500000001]), np.array([40, 41]))
    assert kernel_hints(epi, np.array([1000, 1 << 20]))["req_f64"] == 1
    epi.multipliers = (np.array([1 << 30, 1 << 30]), np.array([40, 31]))
    assert kernel_hints(epi, np.array([1000, 1000]))["req_f64"] == 0
