"""The residual add of a fused integer group in int32 lanes (`int_intrin.qadd_vector`), used
by the x86 kernels where `int_epilogue.qadd_lanes_exact` proves it exact: checked against
the reference's etch.QAdd on every (a, b) pair of 8-bit inputs, at 8 and 16 lanes, and the
check's refusals where a lane would overflow. Runs only the widths the host can execute
(the kernels' assembly on named ISAs is checked in test_tvm_int.py)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import tirx
from tvm.script.ir_builder import IRBuilder
from tvm.tirx.script.builder import ir as T

from backends.tvm.lower.int_epilogue import qadd_lanes_exact
from backends.tvm.schedules.int_intrin import qadd_vector
from compiler.ops import etch_int
from compiler.reference import quantize_multiplier
from runtime import host_cpu

FLAGS = host_cpu.host_flags() or set()
WIDTHS = {8: ("haswell", "avx2"), 16: ("skylake-avx512", "avx512bw")}


def qadd_attrs(sa: float, sb: float, s: float, za: int, zb: int, z: int,
               bounds: tuple[int, int]) -> dict:
    """etch.QAdd attrs as `passes/int_rules.py` makes them (TFLite's integer add)."""
    twice = 2.0 * max(sa, sb)
    (am, ash), (bm, bsh) = quantize_multiplier(sa / twice), quantize_multiplier(sb / twice)
    m0, shift = quantize_multiplier(twice / ((1 << 20) * s))
    return {"a_zero": za, "b_zero": zb, "a_m0": int(am), "a_shift": int(ash), "b_m0": int(bm),
            "b_shift": int(bsh), "m0": int(m0), "shift": int(shift), "left_shift": 20,
            "zero_point": z, "qmin": bounds[0], "qmax": bounds[1],
            "to": "uint8" if bounds[1] > 127 else "int8", "side": 0}


def _kernel(step: dict, nl: int, size: int) -> tirx.PrimFunc:
    with IRBuilder() as ib, T.prim_func():
        T.func_name("main")
        a = T.arg("a", T.buffer((size,), "int32"))
        b = T.arg("b", T.buffer((size,), "int32"))
        out = T.arg("out", T.buffer((size,), "int32"))
        with T.serial(0, size // nl) as t:
            idx = [tirx.Ramp(t * nl, 1, nl)]
            T.buffer_store(out, qadd_vector(tirx.BufferLoad(a, idx), tirx.BufferLoad(b, idx),
                                            step, nl), idx)
    return ib.get()


def _run_lanes(step: dict, nl: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    mcpu, _ = WIDTHS[nl]
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu})
    lib = tvm.compile(tvm.IRModule({"main": _kernel(step, nl, a.size)}), target=target)
    out = tvm.runtime.tensor(np.zeros(a.size, np.int32))
    lib["main"](tvm.runtime.tensor(a), tvm.runtime.tensor(b), out)
    return out.numpy()


CASES = [  # (sa, sb, s, za, zb, z, a_dtype, b_dtype, bounds)
    (0.02, 0.03, 0.04, 0, -3, -128, "uint8", "int8", (-128, 127)),
    (0.5, 0.01, 0.3, 128, 5, 0, "uint8", "uint8", (0, 255)),
    (1e-3, 1e-3, 2e-3, -10, 10, 7, "int8", "int8", (-128, 127)),
    (0.07, 0.002, 0.01, 3, 0, -128, "int8", "uint8", (-128, 0)),
]


@pytest.mark.parametrize("nl", sorted(WIDTHS))
@pytest.mark.parametrize("case", range(len(CASES)))
def test_qadd_lanes_match_the_reference_on_every_pair(nl: int, case: int) -> None:
    if WIDTHS[nl][1] not in FLAGS:
        pytest.skip(f"the host cannot run {nl}-lane AVX kernels")
    *scales, adt, bdt, bounds = CASES[case]
    step = qadd_attrs(*scales, bounds)
    ra, rb = (np.arange(-128, 128) if dt == "int8" else np.arange(256) for dt in (adt, bdt))
    assert qadd_lanes_exact(step, (int(ra[0]), int(ra[-1])), (int(rb[0]), int(rb[-1])))
    a, b = (v.reshape(-1).astype(np.int32) for v in np.meshgrid(ra, rb, indexing="ij"))
    want = etch_int._qadd(step, a, b).astype(np.int32)
    np.testing.assert_array_equal(_run_lanes(step, nl, a, b), want)


def test_lanes_refused_where_a_lane_could_overflow() -> None:
    step = qadd_attrs(0.02, 0.03, 0.04, 0, 0, 0, (-128, 127))
    assert qadd_lanes_exact(step, (-128, 127), (-128, 127))
    # a side whose magnitude reaches 2^31: the reference clamps it, lanes would wrap
    assert not qadd_lanes_exact({**step, "a_shift": 21}, (-128, 127), (-128, 127))
    # a side shift below the left shift: not the same rational in int32 lanes
    assert not qadd_lanes_exact({**step, "b_shift": 19}, (-128, 127), (-128, 127))
    # an output scale so small that the requantised sum leaves int32
    big = qadd_attrs(0.02, 0.03, 1e-9, 0, 0, 0, (-128, 127))
    assert not qadd_lanes_exact(big, (-128, 127), (-128, 127))
    # an accumulator-sized input range (not an 8-bit residual): the sides overflow
    assert not qadd_lanes_exact(step, (-(1 << 30), 1 << 30), (-128, 127))


# ---- LinearQAdd's straight-line form ------------------------------------------------------
LINEAR_CASES = [  # scales as calibration makes them (float32 max / 127: no short ratios,
    # whose exact .5 ties the reference breaks by its rounding of each side), both 8-bit types
    (0.0213476, 0.0370981, 0.0452213, 0, -3, -128, "uint8", "int8", (-128, 127)),
    (0.0417352, 0.0238806, 0.0587917, -19, 4, -128, "int8", "int8", (-128, 127)),
    (0.00731174, 0.0105213, 0.0149337, 128, 5, 0, "uint8", "uint8", (0, 255)),
    (0.0713, 0.0021, 0.0103, 3, 0, -128, "int8", "uint8", (-128, 0)),
]


def _ranges(adt: str, bdt: str) -> tuple[np.ndarray, np.ndarray]:
    return tuple(np.arange(-128, 128) if dt == "int8" else np.arange(256) for dt in (adt, bdt))


@pytest.mark.parametrize("nl", sorted(WIDTHS))
@pytest.mark.parametrize("case", range(len(LINEAR_CASES)))
def test_linear_qadd_lanes_match_the_reference_on_every_pair(nl: int, case: int) -> None:
    """The recorded [k, ca, cb, c] in int32 lanes equals the reference's three-step add on
    every pair (the proof is re-checked here by running the kernel, not trusted)."""
    if WIDTHS[nl][1] not in FLAGS:
        pytest.skip(f"the host cannot run {nl}-lane AVX kernels")
    *scales, adt, bdt, bounds = LINEAR_CASES[case]
    step = qadd_attrs(*scales, bounds)
    ra, rb = _ranges(adt, bdt)
    form = etch_int.linear_qadd(step, (int(ra[0]), int(ra[-1])), (int(rb[0]), int(rb[-1])))
    assert form is not None and 10 <= form[0] <= 30
    a, b = (v.reshape(-1).astype(np.int32) for v in np.meshgrid(ra, rb, indexing="ij"))
    want = etch_int._qadd(step, a, b).astype(np.int32)
    np.testing.assert_array_equal(_run_lanes({**step, "linear": form}, nl, a, b), want)


def test_linear_qadd_found_for_most_calibrated_scales() -> None:
    """On scales drawn like calibration's (log-uniform, no exact ratios) a straight line is
    proven for nearly every add; each one found is exact on all pairs."""
    rng = np.random.default_rng(5)
    found = 0
    for _ in range(40):
        sa, sb, s = np.exp(rng.uniform(np.log(1e-3), np.log(0.2), 3))
        za, zb, z = (int(v) for v in rng.integers(-30, 30, 3))
        step = qadd_attrs(sa, sb, max(s, 0.6 * max(sa, sb)), za, zb, z, (-128, 127))
        form = etch_int.linear_qadd(step, (-128, 127), (-128, 127))
        if form is None:
            continue
        found += 1
        k, ca, cb, c = form
        a, b = np.meshgrid(np.arange(-128, 128), np.arange(-128, 128), indexing="ij")
        line = np.clip((a.astype(np.int64) * ca + c + b * cb) >> k, -128, 127)
        np.testing.assert_array_equal(line, etch_int._qadd({**step, "to": "int64"}, a, b))
    assert found >= 36


def test_linear_qadd_refused_where_no_line_is_exact() -> None:
    # short ratios (0.02 / 0.04 = 1/2): exact .5 ties the reference breaks by its rounding of
    # each side, in both directions
    assert etch_int.linear_qadd(qadd_attrs(0.02, 0.03, 0.04, 0, -3, -128, (-128, 127)),
                                (0, 255), (-128, 127)) is None
    # an output scale so small that the sum leaves int32 before any useful precision
    assert etch_int.linear_qadd(qadd_attrs(0.02, 0.03, 1e-9, 0, 0, 0, (-128, 127)),
                                (-128, 127), (-128, 127)) is None
    # inputs wider than 8 bits are not checked exhaustively
    assert etch_int.linear_qadd(qadd_attrs(0.02, 0.03, 0.05, 0, 0, 0, (-128, 127)),
                                (-1000, 1000), (-128, 127)) is None
