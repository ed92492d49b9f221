"""Float GEMM and row kernels of the cpu target on transformer-shaped (odd) sizes.

`linear.dense` and `linear.batched` tile every matrix mb x nb (`tiles.dense_tile`): M padded
to the rows (vit_b16's 197 tokens are prime), N to the vector block, the batched B packed into
a panel inside the kernel; softmax over a row no vector divides runs whole vectors plus a
tail. Results match ONNX Runtime (rtol 1e-3) on shapes where M is not a multiple of the tile,
N not a multiple of the vector and K odd; the compiled kernels are packed FMAs on zmm for an
AVX-512 CPU and on ymm for an AVX2 CPU, or at 256 bits on the AVX-512 CPU (named, not the
host).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import compiler
from backends.tvm import target as targets
from backends.tvm.schedules import tiles
from compiler import onnx_import, pipeline
from compiler.options import CompileOptions
from tests.backends import isa, tvm_cases
from tests.golden import assert_close, run_ort

RTOL, ATOL = 1e-3, 1e-4


def transformer_ops() -> tvm_cases.Case:
    """Dense and attention-style MatMuls, Gemm with a computed transposed B, softmax rows."""
    m = tvm_cases.ModelBuilder("transformer_ops", seed=3)
    x = m.input("x", m.rng.standard_normal((1, 13, 37)).astype(np.float32))
    long_k = m.input("xl", m.rng.standard_normal((11, 515)).astype(np.float32))
    q = m.input("q", m.rng.standard_normal((2, 3, 13, 9)).astype(np.float32))
    k = m.input("k", m.rng.standard_normal((2, 3, 9, 21)).astype(np.float32))
    v = m.input("v", m.rng.standard_normal((1, 3, 21, 35)).astype(np.float32))
    bt = m.input("bt", m.rng.standard_normal((19, 37)).astype(np.float32))
    m.op("MatMul", [x, m.weight("w0", 37, 70)], "dense_odd")           # 13 x 37 x 70
    m.op("MatMul", [long_k, m.weight("w1", 515, 64, scale=0.05)], "dense_long")  # K >= 512
    m.op("MatMul", [m.input("row", m.rng.standard_normal((1, 37)).astype(np.float32)),
                    m.weight("w2", 37, 70)], "gemv")                    # one row: wide blocks
    scores = m.op("MatMul", [q, k], "scores")                          # [2, 3, 13, 21]
    probs = m.op("Softmax", [scores], "probs", axis=-1)                # rows of 21
    m.op("MatMul", [probs, v], "context")                              # B broadcast over batch
    m.op("Gemm", [m.op("Reshape", [x, m.const("s", np.array([13, 37]))], "x2", output=False),
                  bt], "gemm_tb", transB=1)                            # computed B^T
    m.op("Softmax", [m.input("att", m.rng.standard_normal((2, 5, 197)).astype(np.float32) * 4)],
         "softmax_197", axis=-1)
    return m.build()


@pytest.fixture(scope="module")
def case() -> tvm_cases.Case:
    return transformer_ops()


def test_transformer_ops_match_ort(case) -> None:
    model, inputs = case
    art = compiler.compile(model, target="cpu")
    assert_close(art.run(inputs), run_ort(model, inputs), rtol=RTOL, atol=ATOL)


def test_transformer_ops_match_ort_at_256_bits(case) -> None:
    """The 256-bit tiles (an AVX2 host's, or --vector-bits 256 on AVX-512) compute the same
    (a host with narrower vectors runs its own width again)."""
    model, inputs = case
    bits = min(256, 32 * targets.cpu_target(CompileOptions())[1].lanes)
    art = compiler.compile(model, target="cpu", vector_bits=bits)
    assert_close(art.run(inputs), run_ort(model, inputs), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("m,n,k,lanes,want", [
    (197, 768, 768, 16, (6, 64)),    # vit_b16 dense, AVX-512: 6 rows x 4 zmm, 197 -> 198
    (197, 768, 64, 16, (6, 32)),     # short reduction: gemm_tile's 6 x 2 (tile under 1 KiB)
    (197, 3072, 768, 8, (6, 16)),    # AVX2: 6 x 2 ymm
    (1576, 768, 768, 16, (6, 64)),   # batch 8
    (8, 256, 1024, 16, (4, 64)),     # 8 tokens: 4 rows, not 6 padded to 12
    (1, 768, 768, 16, (1, 128)),     # GEMV: dense_nb's wide blocks
    (3, 70, 37, 16, (4, 32)),        # fewer rows than the tile: padded to an even count
])
def test_dense_tile(m: int, n: int, k: int, lanes: int, want: tuple) -> None:
    mb, nb = tiles.dense_tile(m, n, k, lanes)
    assert (mb, nb) == want
    assert mb * -(-nb // lanes) <= 24  # accumulators leave registers for the operands


def _assembly(isa_name: str, vector_bits: int | None = None) -> isa.Assembly:
    model, _ = transformer_ops()
    graph, _ = pipeline.run(onnx_import.import_model(model), CompileOptions())
    return isa.compile_graph(graph, isa_name, vector_bits=vector_bits)


@pytest.mark.parametrize("isa_name,bits,reg", [("avx512", None, "zmm"), ("avx2", None, "ymm"),
                                               ("avx512", 256, "ymm")])
def test_gemm_and_softmax_kernels_are_vector_code(isa_name: str, bits: int | None,
                                                  reg: str) -> None:
    asm = _assembly(isa_name, bits)
    gemms = asm.of_kind("dense", "batch_matmul")
    assert len(gemms) == 6, sorted(gemms)
    assert "Fallback" not in asm.rules
    for kernel, code in gemms.items():  # FMAs at the target's width, never wider
        assert re.search(rf"vfmadd\w*ps\s+[^\n]*%{reg}", code), f"{kernel}: no {reg} FMA"
        if reg == "ymm":
            assert not re.search(r"vfmadd\w*ps\s+[^\n]*%zmm", code), kernel
    batched = asm.of_kind("batch_matmul")
    assert all("mb" in asm.attrs[k] for k in batched)  # packed-panel form on the cpu
    softmax = [c for k, c in asm.of_kind("softmax").items() if k.endswith("softmax_197")]
    assert len(softmax) == 1  # its exp polynomial on whole vectors of the row
    assert re.search(rf"vfmadd\w*ps\s+[^\n]*%{reg}", softmax[0])
