"""LutLowering: quantised MatMul/Gemm/1x1 Conv -> etch.LutGemm, with the layout, table block
and table mode on the node, and the dequantising kernel kept (with a reason) where a
look-up loses. Float tables compute the dequantised product to float rounding (checked
against the same graph without --lut, and against ONNX Runtime on MatMulNBits models)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler import pipeline, reference
from compiler.errors import EtchError
from compiler.ir import Graph
from compiler.onnx_import import import_model
from compiler.options import CompileOptions
from models import gemv
from models.nbits import quantize_nbits
from passes.lut_lowering import LutLowering, LutTarget, explain, scale_storage, table_block
from tests.golden import assert_close, run_ort


def model(nodes: list, inputs: list, outputs: list, inits: dict) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "m", inputs, outputs,
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def vi(name: str, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def weights(*shape: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * 0.1).astype(np.float32)


def matmul_model(m: int, k: int, n: int) -> onnx.ModelProto:
    return model([helper.make_node("MatMul", ["x", "w"], ["y"])], [vi("x", [m, k])],
                 [vi("y", [m, n])], {"w": weights(k, n)})


def compiled(proto: onnx.ModelProto, **opts) -> Graph:
    o = CompileOptions(target="ref", **opts)
    o.validate()
    graph, _ = pipeline.run(import_model(proto), o)
    return graph


def report(graph: Graph) -> list[dict]:
    return json.loads(graph.metadata["etch.lut"])


def feeds(graph: Graph, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(graph.values[n].shape).astype(np.float32)
            for n in graph.inputs}


def same_as_dequant(proto: onnx.ModelProto, rtol: float = 2e-5, **opts) -> Graph:
    """Compile with --lut --lut-table float and without --lut; the outputs agree to float
    rounding. Returns the LUT graph."""
    lut = compiled(proto, lut=True, lut_table="float", **opts)
    plain = compiled(proto, **opts)
    x = feeds(plain)
    want = reference.run(plain, x)
    scale = max(float(np.abs(v).max()) for v in want.values())
    assert_close(reference.run(lut, x), want, rtol=rtol, atol=rtol * scale)
    return lut


@pytest.mark.parametrize("bits,ternary", [(1, False), (2, False), (3, False), (4, False),
                                          (None, True)])
def test_matmul_becomes_lut_gemm(bits: int | None, ternary: bool) -> None:
    lut = same_as_dequant(matmul_model(3, 64, 40), bits=bits, ternary=ternary, group_size=32)
    ops = lut.op_counts()
    assert ops.get("etch.LutGemm") == 1 and "etch.Dequant" not in ops and "MatMul" not in ops
    node = next(n for n in lut.nodes if n.op == "etch.LutGemm")
    assert node.attrs["tblock"] == 32 and node.attrs["table"] == "float"
    assert node.attrs["bits"] == (2 if ternary else bits)
    assert node.attrs["mu"] == (2 if bits == 1 else 1)
    # QuantizeWeights' scales are float16 values: stored in two bytes, the same product
    assert node.attrs["scale_dtype"] == "float16" and lut.const(node.inputs[2]).dtype == \
        np.float16
    [entry] = report(lut)
    assert entry["kernel"] == "lut" and entry["rows"] == 3 and entry["scales"] == "float16"


def test_per_channel_weights_and_k_not_a_multiple_of_8() -> None:
    lut = same_as_dequant(matmul_model(2, 37, 19), bits=2)
    node = next(n for n in lut.nodes if n.op == "etch.LutGemm")
    assert node.attrs["k"] == 37 and node.attrs["group"] == node.attrs["tblock"] == 40


def test_gemm_trans_b_alpha_beta_bias() -> None:
    node = helper.make_node("Gemm", ["x", "w", "c"], ["y"], transB=1, alpha=0.5, beta=2.0)
    proto = model([node], [vi("x", [4, 48])], [vi("y", [4, 24])],
                  {"w": weights(24, 48), "c": weights(24, seed=3)})
    lut = same_as_dequant(proto, bits=4, group_size=16)
    assert lut.op_counts() == {"etch.LutGemm": 1, "Add": 1}


def test_pointwise_conv_and_a_3x3_conv() -> None:
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"]),
             helper.make_node("Conv", ["h", "w3"], ["y"], pads=[1, 1, 1, 1])]
    proto = model(nodes, [vi("x", [1, 16, 4, 4])], [vi("y", [1, 8, 4, 4])],
                  {"w1": weights(24, 16, 1, 1), "b1": weights(24, seed=2),
                   "w3": weights(8, 24, 3, 3, seed=4)})
    lut = same_as_dequant(proto, bits=3, fuse=False)
    kernels = {r["layer"]: r for r in report(lut)}
    assert [r["kernel"] for r in kernels.values()] == ["lut", "dequant"]
    assert "im2col" in list(kernels.values())[1]["reason"]
    assert lut.op_counts()["Transpose"] == 2


def test_large_batch_keeps_the_dequantising_kernel() -> None:
    lut = compiled(matmul_model(128, 64, 32), bits=2, lut=True)  # ref: the generic target
    assert "etch.LutGemm" not in lut.op_counts()
    [entry] = report(lut)
    assert entry["kernel"] == "dequant" and "128 rows > 16 (generic)" in entry["reason"]
    for isa, rows, reason in (("neon", 16, "16 rows <= 16"),
                              ("neon", 17, "17 rows > 16 (neon)"),
                              ("avx512", 4096, ("4096 rows: no row limit on avx512 (the look-up "
                                               "kernel measured ahead of the dequantising one "
                                               "at every batch tried, up to 4096 rows)")),
                              ("avx512vbmi", 5000, "5000 rows: no row limit on avx512vbmi"),
                              ("avx2", 2049, ("2049 rows: no row limit on avx2 (the look-up "
                                             "kernel measured ahead"))):  # no crossover on x86
        graph = compiled(matmul_model(rows, 64, 32), bits=2)
        [entry] = report(LutLowering("int8", LutTarget(isa)).run(graph)[0])
        assert entry["kernel"] == ("dequant" if ">" in reason else "lut"), (isa, rows)
        assert entry["reason"].startswith(reason), entry["reason"]


def test_per_input_channel_scales_say_why() -> None:
    lut = compiled(matmul_model(2, 64, 32), bits=2, lut=True, per="ic")
    [entry] = report(lut)
    assert entry["kernel"] == "dequant" and "AdaDim" in entry["reason"]


@pytest.mark.parametrize("bits,block", [(4, 32), (2, 16), (4, 128)])
def test_matmul_nbits_matches_onnx_runtime(bits: int, block: int) -> None:
    proto = quantize_nbits(gemv.build_gemv(256, 48, 1).model, bits=bits, block_size=block)
    graph = compiled(proto, lut=True, lut_table="float")
    assert graph.op_counts() == {"etch.LutGemm": 1}
    node = graph.nodes[0]
    assert len(node.inputs) == 4 and node.attrs["group"] == block  # per-block zero points
    assert node.attrs["scale_dtype"] == "float32"  # ORT's scales: not float16 values
    x = feeds(graph)
    want = run_ort(proto, x)
    assert_close(reference.run(graph, x), want, rtol=1e-4, atol=1e-5 * float(
        np.abs(want["output"]).max()))


def test_idempotent_and_keeps_the_report() -> None:
    lut = compiled(matmul_model(2, 64, 32), bits=2, lut=True)
    again, changed = LutLowering("int8", LutTarget("avx2")).run(lut)
    assert not changed and again.op_counts() == lut.op_counts()


def test_lut_needs_quantised_weights() -> None:
    with pytest.raises(EtchError, match="--lut: no layer"):
        compiled(matmul_model(2, 64, 32), lut=True)


@pytest.mark.parametrize("opts,msg", [({"lut": True, "int": True}, "--int"),
                                      ({"lut_table": "float"}, "add --lut"),
                                      ({"lut": True, "bits": 8}, "1-4-bit")])
def test_bad_option_combinations(opts: dict, msg: str) -> None:
    with pytest.raises(EtchError, match=msg):
        compiled(matmul_model(2, 64, 32), **opts)


@pytest.mark.parametrize("isa,v,slots,planes", [("avx512", 64, 2, 1), ("avx2", 32, 1, 3),
                                                ("neon", 16, 1, 3), ("cuda", 32, 1, 2)])
def test_layout_follows_the_target(isa: str, v: int, slots: int, planes: int) -> None:
    bits = {"avx512": 2, "avx2": 3, "neon": 3, "cuda": 2}[isa]
    lay = LutTarget(isa).layout(bits, 4096)
    assert (lay.vector_bytes, lay.slots, lay.plane_vectors) == (v, slots, planes)


@pytest.mark.parametrize("isa,bits,tblock,chunk_slots", [
    ("avx512vbmi", 1, 32, 2), ("avx512vbmi", 3, 64, 2), ("avx512vbmi", 1, 8, 1),
    ("avx512vbmi", 2, 32, 1), ("avx512vbmi", 4, 32, 1), ("avx512", 1, 32, 1),
    ("avx2", 1, 32, 1)])
def test_vbmi_pairs_chunks_for_one_plane_layouts(isa: str, bits: int, tblock: int,
                                                 chunk_slots: int) -> None:
    """With vpermb (VBMI) and table blocks of 16 rows, the 1- and 3-bit layouts put two
    chunk pairs of a column in adjacent bytes (no unpacking); elsewhere they do not."""
    lay = LutTarget(isa).layout(bits, 4096, "int8", tblock)
    assert lay.chunk_slots == chunk_slots
    assert LutTarget(isa).layout(bits, 4096, "float", tblock).chunk_slots == 1
    graph = compiled(matmul_model(2, 128, 64), bits=bits, group_size=32)
    lut, _ = LutLowering("int8", LutTarget(isa)).run(graph)
    [entry] = report(lut)
    paired = isa == "avx512vbmi" and bits in (1, 3)  # the graph's table block is 32
    assert ("vpermb" in entry["instruction"]) == paired
    assert ("2 chunk pairs/column" in entry["layout"]) == paired


@pytest.mark.parametrize("isa,bits,tblock,chunk_slots,planes", [
    ("avx512vnni", 1, 32, 4, 1), ("avx512vnni", 2, 32, 4, 2), ("avx512vnni", 3, 64, 4, 3),
    ("avx512vnni", 4, 32, 4, 4), ("avx512vnni", 1, 16, 2, 1), ("avx512vnni", 2, 16, 1, 1),
    ("avx512vnni", 4, 8, 1, 1)])
def test_vnni_puts_four_chunk_pairs_in_a_column_dword(isa: str, bits: int, tblock: int,
                                                      chunk_slots: int, planes: int) -> None:
    """With vpermb and vpdpbusd (VBMI + VNNI) and table blocks of 32 rows, every bit width
    is one plane per vector with four chunk pairs of a column in its int32 lane; with blocks
    of 16 rows, the VBMI layouts."""
    lay = LutTarget(isa).layout(bits, 4096, "int8", tblock)
    assert (lay.chunk_slots, lay.plane_vectors) == (chunk_slots, planes)
    if chunk_slots == 4:  # 1-bit: 128 columns, like the other layouts; more planes: 64
        assert lay.tile_cols == (128 if planes == 1 else 64)
    graph = compiled(matmul_model(2, 128, 64), bits=bits, group_size=32)
    [entry] = report(LutLowering("int8", LutTarget(isa)).run(graph)[0])
    assert entry["instruction"] == "vpermb + vpdpbusd zmm"
    assert "4 chunk pairs/column" in entry["layout"]


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_a_one_row_gemv_streams_with_the_vbmi_layouts(bits: int) -> None:
    """A one-row GEMV (decode) reads each weight once per call, from memory: with 2-4 bits
    it takes the VBMI layouts (measured faster cold), 1-bit keeps its one-plane vpdpbusd
    layout (faster both ways); --explain says why. Two rows keep the vpdpbusd layouts."""
    target = LutTarget("avx512vnni")
    streamed = bits > 1
    assert target.layout(bits, 4096, "int8", 32, rows=1).chunk_slots == \
        (4 if not streamed else 2 if bits == 3 else 1)
    assert target.layout(bits, 4096, "int8", 32, rows=2).chunk_slots == 4
    graph = compiled(matmul_model(1, 128, 64), bits=bits, group_size=32)
    lut, _ = LutLowering("int8", target).run(graph)
    [node] = [nd for nd in lut.nodes if nd.op == "etch.LutGemm"]
    assert (node.attrs.get("chunk_slots", 1) == 4) == (not streamed)
    assert node.attrs["prefetch"] == (8192 if streamed else 16384)
    line = explain(lut.metadata)[1]
    assert ("one row streams its weights (decode)" in line) == streamed, line
    assert "cold (weights from DRAM) the vpshufb layout" not in line
    assert not LutTarget("avx512vbmi").streams(bits, 1)  # only where there is a choice
    dot = target.layout(bits, 4096, "int8", 32, rows=2)
    assert target.prefetch(dot, resident=True) == 0  # warm: the hints cost more than they bring
    assert target.prefetch(dot) == 16384


@pytest.mark.parametrize("mcpu,cold_vbmi", [("znver4", True), ("znver5", True),
                                             ("sapphirerapids", False),
                                             ("icelake-server", False), ("rocketlake", False)])
def test_a_one_row_gemv_streams_with_the_vbmi_layouts_only_where_they_stream_faster(
        mcpu: str, cold_vbmi: bool) -> None:
    """The VBMI layouts were measured faster cold on AMD Zen 4 only; on an Intel Xeon the
    vpdpbusd layouts were faster cold too (2-bit 421 vs 471 us), so a one-row GEMV compiled
    for an Intel core keeps them, and --explain says why."""
    target = pipeline.lut_target(CompileOptions(target="cpu", mcpu=mcpu))
    assert (target.isa, target.cold_vbmi) == ("avx512vnni", cold_vbmi)
    assert target.layout(2, 4096, "int8", 32, rows=1).chunk_slots == (1 if cold_vbmi else 4)
    graph = compiled(matmul_model(1, 128, 64), bits=2, group_size=32)
    lut, _ = LutLowering("int8", target).run(graph)
    [node] = [nd for nd in lut.nodes if nd.op == "etch.LutGemm"]
    assert (node.attrs.get("chunk_slots", 1) == 4) == (not cold_vbmi)
    line = explain(lut.metadata)[1]
    assert ("one row streams its weights (decode)" in line) == cold_vbmi, line
    assert ("vpdpbusd layout measured faster cold too" in line) == (not cold_vbmi), line


@pytest.mark.parametrize("cache_mib,resident", [(None, False), (2, False), (64, True)])
def test_a_one_row_gemv_whose_model_fits_the_cache_keeps_the_vpdpbusd_layouts(
        cache_mib: int | None, resident: bool) -> None:
    """A one-row GEMV streams its weights only if the model's look-up weights do not stay
    in the cache between calls: 4096 x 1024 at 2 bits (1.25 MiB with its scales) fits half
    of a 64 MiB cache (warm: the vpdpbusd layouts, measured faster there), not of 2 MiB nor
    of a cache not known (cross-compiling: the cold-faster VBMI layouts). --explain says
    which and why."""
    target = LutTarget("avx512vnni", cache_bytes=None if cache_mib is None else cache_mib << 20)
    graph = compiled(matmul_model(1, 4096, 1024), bits=2, group_size=32)
    lut, _ = LutLowering("int8", target).run(graph)
    [node] = [nd for nd in lut.nodes if nd.op == "etch.LutGemm"]
    assert (node.attrs.get("chunk_slots", 1) == 4) == resident
    # warm, the multi-plane vpdpbusd layouts take no prefetch; streamed, the VBMI ones do
    assert node.attrs["prefetch"] == (0 if resident else 8192)
    line = explain(lut.metadata)[1]
    assert "the model's look-up weights (1.2 MiB)" in line, line
    assert ("one row, but the model's look-up weights" in line) == resident, line
    assert ("one row streams its weights (decode)" in line) == (not resident), line
    assert ("not known" in line) == (cache_mib is None), line


def test_the_host_cache_counts_only_when_compiling_for_the_host() -> None:
    from runtime.host_cpu import last_level_cache_bytes

    host = pipeline.lut_target(CompileOptions(target="cpu"))
    assert host.cache_bytes == last_level_cache_bytes()
    assert pipeline.lut_target(CompileOptions(target="cpu", mcpu="znver4")).cache_bytes is None
    assert pipeline.lut_target(CompileOptions(target="edge")).cache_bytes is None


@pytest.mark.parametrize("mcpu, bits, isa", [
    ("sapphirerapids", None, "avx512vnni"), ("icelake-server", None, "avx512vnni"),
    ("znver4", None, "avx512vnni"), ("cannonlake", None, "avx512vbmi"),
    ("skylake-avx512", None, "avx512"),
    ("sapphirerapids", 256, "avx2"),
    ("znver3", None, "avx2"), ("generic", None, "generic")])
def test_lut_target_follows_cpu_and_vector_bits(mcpu: str, bits: int | None, isa: str) -> None:
    """The cpu target's LUT instruction set is its CPU's and its vector width's: --vector-bits
    256 on an AVX-512 CPU gets the 256-bit (AVX2) layouts, whatever the host is."""
    opts = CompileOptions(target="cpu", mcpu=mcpu, vector_bits=bits)
    assert pipeline.lut_target(opts).isa == isa


@pytest.mark.parametrize("isa,ahead", [("avx512vnni", 16384), ("avx512vbmi", 8192),
                                       ("avx2", 8192), ("neon", 8192), ("cuda", 0),
                                       ("generic", 0)])
def test_prefetch_distance_is_the_targets(isa: str, ahead: int) -> None:
    """The pass records how far ahead the kernel prefetches (vector look-up kernels on x86
    and NEON; 16 KiB for the vpermb + vpdpbusd layouts, measured colder-faster), and
    --explain says so; CUDA and the portable loops take no hint."""
    lut, _ = LutLowering("int8", LutTarget(isa)).run(compiled(matmul_model(2, 128, 64), bits=2))
    [node] = [nd for nd in lut.nodes if nd.op == "etch.LutGemm"]
    assert node.attrs["prefetch"] == ahead
    assert (node.attrs.get("chunk_slots", 1) == 4) == (isa == "avx512vnni")
    line = explain(lut.metadata)[1]
    assert ("prefetch" in line) == bool(ahead), line
    if ahead:
        assert f"prefetch {ahead // 1024} KiB ahead" in line, line
    # the multi-plane vpdpbusd layouts' measured cold/warm trade is stated, not silent
    assert ("cold (weights from DRAM) the vpshufb layout" in line) == (isa == "avx512vnni")


def test_scale_storage_is_float16_only_where_exact() -> None:
    exact = np.array([[0.5, 2.0**-14, 65504.0, 0.0, 0.1]], np.float32).astype(np.float16)
    assert scale_storage(exact.astype(np.float32)) == "float16"
    assert scale_storage(exact.astype(np.float32), alpha=0.5) == "float16"
    assert scale_storage(exact.astype(np.float32), alpha=3.3) == "float32"
    assert scale_storage(np.array([[0.1]], np.float32)) == "float32"   # not a float16 value
    assert scale_storage(np.array([[1e5]], np.float32)) == "float32"   # past float16's range
    assert scale_storage(np.array([[2.0**-30]], np.float32)) == "float32"  # underflows


def test_table_block() -> None:
    assert [table_block(g, 4096) for g in (16, 32, 48, 128, 4096)] == [16, 32, 48, 64, 64]
    assert table_block(37, 37) == 40


@pytest.mark.parametrize("dtype,bits", [(TensorProto.INT4, 4), (TensorProto.INT2, 2),
                                        (TensorProto.UINT4, 4)])
def test_blocked_dequantize_linear_weights(dtype: int, bits: int) -> None:
    """int4/int2/uint4 codes in DequantizeLinear (blocks of 32 along K): AbsorbQdq keeps
    them, LutLowering takes them at their own width."""
    rng = np.random.default_rng(bits)
    k, n = 64, 24
    lo, hi = (0, (1 << bits) - 1) if dtype == TensorProto.UINT4 else \
        (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    q = helper.make_tensor("q", dtype, [k, n], rng.integers(lo, hi + 1, k * n).tolist())
    s = numpy_helper.from_array(rng.uniform(0.01, 0.1, (k // 32, n)).astype(np.float32), "s")
    nodes = [helper.make_node("DequantizeLinear", ["q", "s"], ["w"], axis=0, block_size=32),
             helper.make_node("MatMul", ["x", "w"], ["y"])]
    g = helper.make_graph(nodes, "m", [vi("x", [2, k])], [vi("y", [2, n])], [q, s])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    lut = same_as_dequant(proto)
    node = next(nd for nd in lut.nodes if nd.op == "etch.LutGemm")
    assert node.attrs["bits"] == bits and node.attrs["group"] == 32


@pytest.mark.parametrize("bits,ternary", [(1, False), (2, False), (3, False), (None, True)])
def test_two_level_scales_stored_as_uint8_and_float16(bits: int | None, ternary: bool) -> None:
    """--scale-format u8: QuantizeWeights' two-level scales become uint8 block scales and
    float16 super-block scales (input 5), computing the same product as the Dequant path."""
    from passes.quantizer import SUPER_BLOCK

    lut = same_as_dequant(matmul_model(3, 512, 40), bits=bits, ternary=ternary, group_size=32,
                          scale_format="u8")
    node = next(n for n in lut.nodes if n.op == "etch.LutGemm")
    assert node.attrs["scale_dtype"] == "uint8" and node.attrs["super_block"] == SUPER_BLOCK
    assert lut.const(node.inputs[2]).dtype == np.uint8 and node.inputs[3] == ""
    sup = lut.const(node.inputs[4])
    assert sup.dtype == np.float16 and sup.shape[1] == 512 // 32 // SUPER_BLOCK
    assert lut.const(node.inputs[2]).max() == 255  # each super-block's largest block
    [entry] = report(lut)
    assert entry["scales"] == f"uint8 x float16/{SUPER_BLOCK}" and "scales_note" not in entry


@pytest.mark.parametrize("isa,steps", [("avx512vnni", 128), ("avx512vbmi", None),
                                       ("avx2", None), ("neon", None)])
def test_shared_table_scales_on_the_dot_layouts(isa: str, steps: int | None) -> None:
    """int8 tables with two-level scales on the vpermb + vpdpbusd layouts share a table
    scale per super-block (`table_steps`, etch_lut step 5), the largest the integer bound
    allows; `--explain` says so; other layouts (and float tables) keep a scale per block.
    The result stays within the int8 tables' error of the exact product."""
    graph = compiled(matmul_model(2, 512, 64), bits=2, group_size=32, scale_format="u8")
    lut, _ = LutLowering("int8", LutTarget(isa), "u8").run(graph)
    node = next(n for n in lut.nodes if n.op == "etch.LutGemm")
    assert node.attrs.get("table_steps") == steps
    [entry] = report(lut)
    assert entry.get("table_steps") == steps
    line = "\n".join(explain(lut.metadata))
    assert (f"tables scaled per super-block in {steps} steps" in line) == (steps is not None)
    x = feeds(graph)
    want, got = reference.run(graph, x)["y"], reference.run(lut, x)["y"]
    assert np.sqrt(((got - want) ** 2).mean() / (want ** 2).mean()) < 0.015
    floats, _ = LutLowering("float", LutTarget(isa), "u8").run(graph)
    assert all("table_steps" not in n.attrs for n in floats.nodes)


def test_two_level_scales_fall_back_saying_why() -> None:
    """Imported MatMulNBits scales are arbitrary floats: float32 storage, and the report
    says why; per-channel scales have nothing to split."""
    proto = quantize_nbits(gemv.build_gemv(256, 48, 1).model, bits=4, block_size=32)
    graph = LutLowering("int8", LutTarget("avx2"), "u8").run(compiled(proto))[0]
    [entry] = report(graph)
    assert entry["scales"] == "float32" and "not u8 x float16" in entry["scales_note"]
    per_channel = compiled(matmul_model(2, 64, 32), bits=2)
    [entry] = report(LutLowering("int8", LutTarget("avx2"), "u8").run(per_channel)[0])
    assert entry["scales"] == "float16" and "one scale per column" in entry["scales_note"]


@pytest.mark.parametrize("opts,msg", [({"bits": 2, "scale_format": "u8"}, "--group-size"),
                                      ({"bits": 4, "int": True, "group_size": 32,
                                        "scale_format": "u8"}, "without --int"),
                                      ({"scale_format": "u8", "group_size": 32}, "--bits"),
                                      ({"scale_format": "e4m3"}, "fp16 or u8")])
def test_bad_scale_format_options(opts: dict, msg: str) -> None:
    with pytest.raises(EtchError, match=msg):
        compiled(matmul_model(2, 64, 32), **opts)
