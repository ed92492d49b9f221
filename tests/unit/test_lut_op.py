"""etch.LutGemm's reference (compiler/ops/etch_lut.py): the look-up algorithm equals the
dequantise-and-multiply product to float rounding with float tables, and stays within the
proven table-quantisation bound with int8 tables; every layout packs and unpacks losslessly.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.errors import EtchError
from compiler.ops.etch_lut import LutLayout, Params, lut_gemm, quantise_shared, quantise_tables
from tests.lut_cases import KINDS, LAYOUTS, bits_of, make_case


def magnitude(case: dict) -> np.ndarray:
    """The size of the sums the tables add (signed tables cancel: their rounding is relative
    to sum |x| times the weights' range, not to sum |x w|), per output [M, N]."""
    a = case["attrs"]
    p = Params.of(a)
    x = np.zeros((case["inputs"][0].shape[0], p.kp))
    x[:, :p.k] = np.abs(case["inputs"][0])
    c = np.abs(p.offsets(case["zero"], case["scale"].shape))
    per = np.abs(case["scale"]) * (p.mu * ((1 << p.layout.bits) - 1) + c)  # [G, N_p]
    return (x @ np.repeat(per, p.group, 0))[:, :p.n]


def bound(case: dict) -> np.ndarray:
    """The int8 tables' worst case per output: per block, |scale| * ls * tblock / 8 *
    (mu (2^b - 1) + |c|) (each table entry within half a step, ls, of the exact entry);
    with shared table scales (step 5) block h's half step is L k_h of its super-block."""
    a = case["attrs"]
    p = Params.of(a)
    x = np.zeros((case["inputs"][0].shape[0], p.kp), np.float32)
    x[:, :p.k] = case["inputs"][0]
    from compiler.ops.etch_lut import build_tables

    if p.table_steps:
        _, top, k = quantise_shared(build_tables(x), p.tblock, p.period, p.table_steps)
        ls = np.repeat(top, p.period, axis=1)[:, :k.shape[1]] * k                 # [M, H]
    else:
        _, ls = quantise_tables(build_tables(x), p.tblock)                     # [M, H]
    c = np.abs(np.repeat(p.offsets(case["zero"], case["scale"].shape), p.group // p.tblock, 0))
    s = np.repeat(np.abs(case["scale"]).astype(np.float64), p.group // p.tblock, 0)
    per = s * (p.mu * ((1 << p.layout.bits) - 1) + c) * p.tblock / 8      # [H, N_p]
    return (ls.astype(np.float64) @ per)[:, :p.n]


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(KINDS), m=st.integers(1, 3), k=st.integers(1, 70),
       n=st.integers(1, 40), grouped=st.booleans(), seed=st.integers(0, 2**31),
       zero_tensor=st.booleans())
def test_float_tables_equal_the_dequantised_product(kind, m, k, n, grouped, seed,
                                                    zero_tensor) -> None:
    rng = np.random.default_rng(seed)
    group = 8 * int(rng.integers(1, 4)) if grouped else None
    k = -(-k // group) * group if group else k
    case = make_case(kind, m, k, n, group, "float", rng, zero_tensor and kind[0] == "u")
    y = lut_gemm(case["attrs"], *case["inputs"])
    want = case["inputs"][0].astype(np.float64) @ case["w"]
    tol = 1e-6 * magnitude(case) + 1e-30
    assert y.dtype == np.float32 and y.shape == (m, n)
    assert np.all(np.abs(y - want) <= tol), np.max(np.abs(y - want) / tol)


@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(KINDS), m=st.integers(1, 3), k=st.integers(1, 200),
       n=st.integers(1, 40), group=st.sampled_from([8, 16, 32]), seed=st.integers(0, 2**31),
       super_block=st.integers(1, 5), zero_tensor=st.booleans())
def test_two_level_scales_equal_the_dequantised_product(kind, m, k, n, group, seed,
                                                        super_block, zero_tensor) -> None:
    """uint8 block scales times float16 super-block scales: the exact float32 product is the
    block's scale (float tables: the dequantised product to float rounding)."""
    rng = np.random.default_rng(seed)
    k = -(-k // group) * group
    case = make_case(kind, m, k, n, group, "float", rng, zero_tensor and kind[0] == "u",
                     scale_dtype="uint8", super_block=super_block)
    assert case["inputs"][2].dtype == np.uint8 and case["sup"].dtype == np.float16
    y = lut_gemm(case["attrs"], *case["inputs"][:4], *([None] * (4 - len(case["inputs"]))),
                 case["sup"])
    want = case["inputs"][0].astype(np.float64) @ case["w"]
    tol = 1e-6 * magnitude(case) + 1e-30
    assert np.all(np.abs(y - want) <= tol), np.max(np.abs(y - want) / tol)
    with pytest.raises(EtchError, match="super-block"):
        lut_gemm(case["attrs"], *case["inputs"])


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(KINDS), m=st.integers(1, 3), k=st.integers(1, 90),
       n=st.integers(1, 40), seed=st.integers(0, 2**31), zero_tensor=st.booleans())
def test_int8_tables_within_the_quantisation_bound(kind, m, k, n, seed, zero_tensor) -> None:
    rng = np.random.default_rng(seed)
    case = make_case(kind, m, k, n, None, "int8", rng, zero_tensor and kind[0] == "u")
    y = lut_gemm(case["attrs"], *case["inputs"]).astype(np.float64)
    want = case["inputs"][0].astype(np.float64) @ case["w"]
    slack = 1e-6 * magnitude(case)
    assert np.all(np.abs(y - want) <= bound(case) * (1 + 1e-6) + slack + 1e-30)


def test_int8_tables_relative_error_on_gaussian_activations() -> None:
    """T-MAC's signed tables, 32-row table blocks: about 1% RMS on Gaussian inputs."""
    rng = np.random.default_rng(5)
    for kind in ("u2", "u4", "s3", "ternary"):
        case = make_case(kind, 2, 512, 128, 32, "int8", rng)
        y = lut_gemm(case["attrs"], *case["inputs"]).astype(np.float64)
        want = case["inputs"][0].astype(np.float64) @ case["w"]
        rel = np.sqrt(((y - want) ** 2).mean() / (want ** 2).mean())
        assert rel < 0.015, (kind, rel)


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(KINDS), m=st.integers(1, 3), k=st.integers(1, 300),
       n=st.integers(1, 40), group=st.sampled_from([16, 32]), seed=st.integers(0, 2**31),
       super_block=st.integers(1, 5), zero_tensor=st.booleans())
def test_shared_table_scales_within_their_bound(kind, m, k, n, group, seed, super_block,
                                                 zero_tensor) -> None:
    """Step 5 (`table_steps`): each block quantised with k_h of the super-block's steps,
    the sums exact in integers: within the bound of the blocks' own steps, and each
    block's step within 1 + 1/k_h of the step its own largest entry would give."""
    from compiler.ops.etch_lut import build_tables, max_table_steps

    rng = np.random.default_rng(seed)
    k = -(-k // group) * group
    zt = zero_tensor and kind[0] == "u"
    case = make_case(kind, m, k, n, group, "int8", rng, zt, LutLayout(bits_of(kind), 64, 1,
                     bits_of(kind), 1, 4 if group % 32 == 0 else 2), "uint8", super_block, -1)
    p = Params.of(case["attrs"])
    assert p.table_steps == max_table_steps(p, zt) >= 2
    assert p.period * (p.tblock // 4) * 127 * (p.mu * ((1 << p.layout.bits) - 1) + 255 * zt +
                                               abs(p.mu * ((1 << p.layout.bits) - 1) -
                                                   2 * p.zero)) * 255 * p.table_steps < 2**31
    y = lut_gemm(case["attrs"], *case["inputs"][:4], *([None] * (4 - len(case["inputs"]))),
                 case["sup"]).astype(np.float64)
    want = case["inputs"][0].astype(np.float64) @ case["w"]
    slack = 1e-6 * magnitude(case)
    assert np.all(np.abs(y - want) <= bound(case) * (1 + 1e-6) + slack + 1e-30)
    x = np.zeros((m, p.kp), np.float32)
    x[:, :p.k] = case["inputs"][0]
    t = build_tables(x)
    _, ls, steps = quantise_shared(t, p.tblock, p.period, p.table_steps)
    amax = np.abs(t).reshape(m, p.blocks, -1).max(axis=2)
    step = 2 * np.repeat(ls, p.period, axis=1)[:, :p.blocks] * steps        # block's step
    top = np.repeat(ls, p.period, axis=1)[:, :p.blocks] * 2 * p.table_steps  # super's step
    assert np.all(step * 127 >= amax * (1 - 1e-6))
    assert np.all(step * 127 <= amax * (1 + 1e-6) + top * 127 / p.table_steps * (1 + 1e-6))


def test_shared_table_scales_keep_the_int8_error() -> None:
    """On Gaussian activations the shared scales cost next to nothing: within 10% of the
    per-block tables' RMS error (and under 1%)."""
    for kind in ("u2", "u4", "binary", "ternary"):
        errs = []
        for steps in (0, -1):
            case = make_case(kind, 2, 1024, 256, 32, "int8", np.random.default_rng(1), False,
                             LutLayout(bits_of(kind), 64, 1, bits_of(kind), 4, 4), "uint8", 8,
                             steps)
            y = lut_gemm(case["attrs"], *case["inputs"], None, case["sup"]).astype(np.float64)
            want = case["inputs"][0].astype(np.float64) @ case["w"]
            errs.append(np.sqrt(((y - want) ** 2).mean() / (want ** 2).mean()))
        assert errs[1] < min(1.1 * errs[0], 0.01), (kind, errs)


@pytest.mark.parametrize("v,slots,q,e,bits", [(v, s, q, e, b) for v, s, q, e in LAYOUTS
                                                for b in (1, 2, 3, 4) if s * q >= b])
def test_layout_round_trip(v: int, slots: int, q: int, e: int, bits: int) -> None:
    rng = np.random.default_rng(bits)
    layout = LutLayout(bits, v, slots, q, 2, e)
    u = rng.integers(0, 1 << bits, (96, 37)).astype(np.uint8)
    w = layout.pack(u)
    assert w.shape == layout.shape(96, 37) and w.dtype == np.uint8
    nib = layout.nibbles(w)
    planes = np.stack([(nib[:bits] >> t) & 1 for t in range(4)], axis=2)  # [b, K/4, 4, N]
    u_back = (planes.reshape(bits, 96, -1).astype(np.int64)
              << np.arange(bits)[:, None, None]).sum(axis=0)
    np.testing.assert_array_equal(u_back[:, :37], u)
    assert not nib[bits:].any() and not u_back[:, 37:].any()


def test_layout_puts_a_columns_planes_in_adjacent_bytes() -> None:
    layout = LutLayout(2, 32, 2, 1, 1)
    u = np.zeros((8, 16), np.uint8)
    u[0, 3] = 0b10  # column 3, row 0 (chunk 0, bit 0 of the nibble): plane 1 only
    u[4, 3] = 0b01  # row 4 is chunk 1: the high nibble, plane 0
    w = layout.pack(u)
    assert w[0, 0, 0, 0, 6] == 0x10 and w[0, 0, 0, 0, 7] == 0x01
    assert np.count_nonzero(w) == 2


def test_chunk_slots_put_two_chunk_pairs_of_a_column_in_adjacent_bytes() -> None:
    layout = LutLayout(1, 64, 1, 1, 1, chunk_slots=2)
    u = np.zeros((32, 40), np.uint8)
    u[16 + 1, 5] = 1   # byte position 1: chunk 4 (low nibble of byte 2c), bit 1
    u[16 + 13, 5] = 1  # chunk 7: the high nibble of byte 2c + 1, bit 1
    w = layout.pack(u)
    assert w.shape == (2, 2, 1, 1, 64) and w[0, 1, 0, 0, 10] == 0x02
    assert w[0, 1, 0, 0, 11] == 0x20 and np.count_nonzero(w) == 2


@pytest.mark.parametrize("bad", [{"table_steps": 16}, {"tblock": 12}, {"group": 40},
                                 {"table": "int4"}, {"scale_dtype": "uint8", "super_block": 2,
                                                     "table_steps": 129},
                                 {"slots": 3}, {"bits": 5}, {"mu": 3}, {"vector_bytes": 8},
                                 {"chunk_slots": 3}, {"chunk_slots": 2, "tblock": 8,
                                                      "group": 64},
                                 {"scale_dtype": "bfloat16"},
                                 {"scale_dtype": "uint8", "super_block": 0},
                                 {"prefetch": -64}, {"prefetch": 1 << 20}])
def test_malformed_attributes_are_refused(bad: dict) -> None:
    attrs = {"k": 64, "n": 8, "mu": 1, "zero": 2, "group": 64, "tblock": 32, "table": "int8",
             **LutLayout(2, 32, 2, 1, 1).attrs()}
    with pytest.raises(EtchError, match="etch.LutGemm"):
        Params.of({**attrs, **bad})
