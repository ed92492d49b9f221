"""etch.LutGemm's TVM kernels (backends/tvm/schedules/lut_*.py) against the reference.

With int8 tables every kernel is bit-exact with compiler/ops/etch_lut.py: the x86 kernels
(vpshufb on 64- and 32-byte vectors) on the host where it has the instructions, the
portable kernel anywhere, the NEON kernel (tbl) under qemu-aarch64. The assembly of every
ISA's kernel is checked by compiling for an explicit mcpu, so each is checked on any host;
the CUDA kernel is built (nvcc) and its source checked. Float tables: close to the reference.
"""

from __future__ import annotations

import platform
import re
import shutil
from collections.abc import Callable
from functools import cache

import numpy as np
import pytest
import tvm
from hypothesis import given, settings
from hypothesis import strategies as st
from tvm import relax

import compiler
from backends.tvm import edge, lower, schedules
from backends.tvm import target as targets
from backends.tvm.builder import vm_passes
from compiler import onnx_export, reference
from compiler.ir import Graph
from compiler.ops.etch_lut import LutLayout
from compiler.options import CompileOptions
from passes.lut_lowering import LutTarget
from runtime.host_cpu import host_features, runs_code_for
from tests.edge_tools import needs_edge
from tests.golden import assert_bitexact, assert_close
from tests.lut_cases import KINDS, bits_of, graph_of, make_case

FEATURES = host_features()  # as etch compile detects them
X86 = platform.machine() in ("x86_64", "AMD64")
# isa -> the mcpu its kernels are compiled for (runs where the host has the features)
MCPU = {"avx512vnni": "icelake-server", "avx512vbmi": "icelake-server", "avx512": "skylake-avx512", "avx2": "haswell",
        "generic": "x86-64"}
HOST_ISAS = ([isa for isa, need in (("avx512vnni", {"avx512vbmi", "avx512vnni"}),
                                    ("avx512vbmi", {"avx512vbmi"}), ("avx512", {"avx512bw"}),
                                    ("avx2", {"avx2"}))
              if need <= FEATURES and runs_code_for(MCPU[isa])]
             if X86 else []) + (["generic"] if X86 else [])
SCALES = ("float32", "float16", "uint8")
RULE = {"avx512vnni": "LutX86", "avx512vbmi": "LutX86", "avx512": "LutX86", "avx2": "LutX86", "generic": "LutPortable"}


def fixed_cases(isa: str, table: str = "int8") -> list[dict]:
    """Every code kind; K and N off the group and vector widths; per-block zero points;
    table blocks of 8 to 64 rows; 1 to 5 rows; float32, float16 and two-level (uint8 x
    float16) scales in turn."""
    rng = np.random.default_rng(7)
    specs = [("binary", 1, 37, 19, None, False), ("u1", 3, 64, 70, 32, False),
             ("ternary", 2, 96, 33, 16, False), ("s2", 5, 200, 130, 8, False),
             ("u2", 4, 64, 64, 32, True), ("u3", 2, 41, 77, None, False),
             ("s3", 1, 128, 40, 64, False), ("u4", 3, 256, 50, 64, True),
             ("s4", 8, 72, 29, None, False)]
    cases = [make_case(kind, m, k, n, group, table, rng, zero,
                       _target_layout(isa, bits_of(kind), n, table), SCALES[i % 3])
             for i, (kind, m, k, n, group, zero) in enumerate(specs)]
    for case in cases[::2]:  # the target's prefetch on every other case (none on the rest)
        case["attrs"]["prefetch"] = LutTarget(isa).prefetch(LutLayout.of(case["attrs"]))
    return cases


def _target_layout(isa: str, bits: int, n: int, table: str) -> Callable[[int], LutLayout]:
    """The layout the pass would choose on `isa`, for a table block."""
    return lambda tblock: LutTarget(isa).layout(bits, n, table, tblock)


@cache
def _compiled(onnx_bytes: bytes, mcpu: str | None) -> tuple:
    graph = _graph_from(onnx_bytes)
    target_json, info = targets.cpu_target(CompileOptions(target="cpu", mcpu=mcpu))
    target = tvm.target.Target(target_json)
    mod = schedules.apply_rules(lower.to_irmodule(graph, pack=True, lanes=info.lanes), target)
    return tvm.compile(mod, target=target, relax_pipeline=vm_passes()), \
        schedules.rule_names(mod), graph


def _graph_from(onnx_bytes: bytes) -> Graph:
    from compiler.onnx_import import import_model

    return import_model(onnx_bytes)


def run_host(graph: Graph, feeds: dict, mcpu: str | None) -> tuple[dict, dict]:
    """Build (cached by the graph's bytes and the CPU) and run on the host."""
    ex, rules, g = _compiled(onnx_export.export_model(graph).SerializeToString(), mcpu)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(feeds[n]) for n in g.inputs])
    outs = [out] if len(g.outputs) == 1 else list(out)
    return {n: o.numpy() for n, o in zip(g.outputs, outs)}, rules


@pytest.mark.parametrize("isa", HOST_ISAS)
def test_every_code_kind_bit_exact(isa: str) -> None:
    graph, feeds = graph_of(fixed_cases(isa))
    got, rules = run_host(graph, feeds, MCPU[isa])
    assert_bitexact(got, reference.run(graph, feeds))
    assert set(rules) == {RULE[isa]}


@pytest.mark.parametrize("isa", HOST_ISAS)
@settings(max_examples=6, deadline=None)
@given(kind=st.sampled_from(KINDS), m=st.integers(1, 6), k=st.integers(1, 160),
       n=st.integers(1, 140), grouped=st.booleans(), zero=st.booleans(),
       seed=st.integers(0, 2**31), scales=st.sampled_from(SCALES),
       prefetch=st.sampled_from([0, 64, 8192, 16384]))
def test_random_shapes_bit_exact(isa: str, kind: str, m: int, k: int, n: int, grouped: bool,
                                 zero: bool, seed: int, scales: str, prefetch: int) -> None:
    rng = np.random.default_rng(seed)
    group = int(rng.choice([8, 16, 32, 64])) if grouped else None
    k = -(-k // group) * group if group else k
    case = make_case(kind, m, k, n, group, "int8", rng, zero and kind[0] == "u",
                     _target_layout(isa, bits_of(kind), n, "int8"),
                     scales, int(rng.integers(1, 5)))
    case["attrs"]["prefetch"] = prefetch
    graph, feeds = graph_of([case])
    got, _ = run_host(graph, feeds, MCPU[isa])
    assert_bitexact(got, reference.run(graph, feeds))


@pytest.mark.parametrize("isa", HOST_ISAS)
def test_batches_up_to_the_row_limit_bit_exact(isa: str) -> None:
    """Batches of 67-256 rows (the pass picks the look-up kernel at every batch on x86),
    odd ones (register tiles of 1-3 rows) among them."""
    rng = np.random.default_rng(3)
    cases = [make_case(kind, m, 96, 70, 32, "int8", rng, False,
                       _target_layout(isa, bits_of(kind), 70, "int8"), "uint8")
             for kind, m in (("u2", 256), ("u4", 130), ("u1", 129), ("ternary", 67))]
    for case in cases:
        case["attrs"]["prefetch"] = LutTarget(isa).prefetch(LutLayout.of(case["attrs"]))
    graph, feeds = graph_of(cases)
    got, _ = run_host(graph, feeds, MCPU[isa])
    assert_bitexact(got, reference.run(graph, feeds))


@pytest.mark.parametrize("isa", HOST_ISAS)
def test_two_level_scales_bit_exact(isa: str) -> None:
    """uint8 x float16 scales (D times the uint8 scale in int32, d widened once per
    super-block) with the zero term folded into the accumulators (uniform zero points) and
    added after widening (per-block zero points, the 4-bit pair-summed layout), super-blocks
    of 1-4 blocks ending mid-tile; zero scales among them."""
    rng = np.random.default_rng(11)
    cases = []
    for kind, m, k, n, group, zero, sb in (("u2", 4, 256, 130, 32, True, 3),
                                           ("s2", 1, 320, 64, 32, False, 4),
                                           ("u1", 3, 128, 70, 16, True, 2),
                                           ("ternary", 2, 96, 33, 16, False, 1),
                                           ("u4", 5, 192, 50, 64, False, 2),
                                           ("s3", 4, 128, 40, 32, False, 3)):
        case = make_case(kind, m, k, n, group, "int8", rng, zero,
                         _target_layout(isa, bits_of(kind), n, "int8"), "uint8", sb)
        case["inputs"][2][:, ::3] = 0  # zero block scales: +0 where f32(D) * 0 is -0
        cases.append(case)
    graph, feeds = graph_of(cases)
    got, _ = run_host(graph, feeds, MCPU[isa])
    assert_bitexact(got, reference.run(graph, feeds))


@pytest.mark.parametrize("isa", HOST_ISAS)
def test_float_tables_to_float_rounding(isa: str) -> None:
    graph, feeds = graph_of(fixed_cases(isa, "float"))
    got, rules = run_host(graph, feeds, MCPU[isa])
    want = reference.run(graph, feeds)
    for name, y in want.items():
        assert_close({name: got[name]}, {name: y}, rtol=1e-5, atol=1e-5 * np.abs(y).max())
    assert set(rules) == {RULE[isa]}  # vpermps on x86


# ---- assembly, for explicit CPUs (any host) -------------------------------------------------
def _asm(graph: Graph, target_json: dict) -> str:
    """The assembly of the graph's kernels, scheduled and compiled for the target."""
    target = tvm.target.Target(target_json)
    mod = schedules.apply_rules(lower.to_irmodule(graph, pack=True, lanes=8), target)
    kernels = {g.name_hint: f for g, f in mod.functions_items()
               if isinstance(f, tvm.tirx.PrimFunc)}
    lib = tvm.compile(tvm.IRModule({name: f.with_attr("global_symbol", name)
                                    for name, f in kernels.items()}), target=target)
    return lib.mod.inspect_source("asm")


@pytest.mark.parametrize("isa,mcpu,patterns", [
    ("avx512vnni", "icelake-server", [r"vpermb\s+%zmm", r"vpdpbusd\s+%zmm", r"vpmaddwd\s+%zmm",
                           r"vpsrlw\s+\$4, %zmm"]),
    ("avx512vnni", "znver4", [r"vpermb\s+%zmm", r"vpdpbusd\s+%zmm", r"vpmaddwd\s+%zmm",
                           r"vpsrlw\s+\$4, %zmm"]),
    ("avx512vbmi", "icelake-server", [r"vpshufb\s+%zmm", r"vpermb\s+%zmm", r"vpmaddubsw\s+%zmm"]),
    ("avx512vbmi", "znver4", [r"vpshufb\s+%zmm", r"vpermb\s+%zmm", r"vpmaddubsw\s+%zmm"]),
    ("avx512", "skylake-avx512", [r"vpshufb\s+%zmm", r"vpmaddubsw\s+%zmm"]),
    ("avx512", "znver4", [r"vpshufb\s+%zmm", r"vpmaddubsw\s+%zmm"]),
    ("avx2", "haswell", [r"vpshufb\s+%ymm", r"vpmaddubsw\s+%ymm"]),
    ("avx2", "znver3", [r"vpshufb\s+%ymm", r"vpmaddubsw\s+%ymm"]),
])
def test_x86_assembly_has_the_lookup(isa: str, mcpu: str, patterns: list[str]) -> None:
    graph, _ = graph_of(fixed_cases(isa)[:6])
    asm = _asm(graph, {"kind": "llvm", "mcpu": mcpu})
    # float16 scales widened by F16C; codes and scales hinted into L2 8 KiB ahead
    for pattern in patterns + [r"vcvtph2ps\s", r"prefetcht1\s"]:
        assert re.search(pattern, asm), pattern
    assert "__TVMBackendAllocWorkspace" in asm  # the tables, built in every call


def _dot_cases() -> list[dict]:
    """The chunk_slots 4 layouts (1-4 plane vectors, tiles of 1-8 vectors): uniform and
    per-block zero points, float32, float16 and two-level scales, 1-5 rows (register tiles
    of 1-4 rows), with and without prefetch; table blocks of 32 and 64 rows."""
    rng = np.random.default_rng(5)
    cases = []
    for i, (kind, m, k, n, group, zero, nv, scales) in enumerate((
            ("u1", 1, 256, 200, 32, False, 8, "uint8"), ("binary", 3, 128, 70, 64, False, 2,
                                                         "float16"),
            ("u2", 4, 192, 130, 32, True, 8, "float32"), ("ternary", 2, 64, 33, 32, False, 1,
                                                          "uint8"),
            ("u3", 5, 128, 50, 64, True, 3, "uint8"), ("s4", 1, 96, 40, 32, False, 4, "uint8"),
            ("u4", 2, 64, 16, 32, True, 8, "float16"), ("s2", 1, 320, 64, 32, False, 4,
                                                        "uint8"),
            # binary with two-level scales: the uint8 scales are vpdpbusd's byte weights
            ("binary", 1, 512, 256, 32, False, 8, "uint8"),
            ("binary", 4, 256, 70, 64, False, 2, "uint8"))):
        bits = bits_of(kind)
        case = make_case(kind, m, k, n, group, "int8", rng, zero,
                         LutLayout(bits, 64, 1, bits, nv, 4), scales, 1 + i % 3)
        if scales == "uint8":
            case["inputs"][2][:, ::5] = 0  # zero block scales among them
        case["attrs"]["prefetch"] = 8192 * (i % 2)
        cases.append(case)
    return cases


@pytest.mark.parametrize("mcpu,rule,needs", [
    ("icelake-server", "LutX86", {"avx512vbmi", "avx512vnni"}),
    ("znver4", "LutX86", {"avx512vbmi", "avx512vnni"}),
    ("cannonlake", "LutPortable", {"avx512vbmi"}), ("x86-64", "LutPortable", set())])
def test_dot_layout_bit_exact(mcpu: str, rule: str, needs: set[str]) -> None:
    """vpermb + vpdpbusd (chunk_slots 4: AVX-512 VBMI and VNNI) where the CPU has both, the
    portable loops elsewhere (VBMI without VNNI, plain x86-64): bit-exact with the reference
    (the tables stored even chunks first: `Tables.stored`); run where the host has the
    instructions (all of that CPU's: a znver4 build uses AMD's SSE4A `insertq`, which an
    Intel CPU with the same vector features lacks), else the assembly is checked."""
    graph, feeds = graph_of(_dot_cases())
    if not X86 or not needs <= FEATURES or not runs_code_for(mcpu):  # cannot run here
        asm = _asm(graph, {"kind": "llvm", "mcpu": mcpu})
        dot = re.search(r"vpdpbusd\s+%zmm", asm) and re.search(r"vpermb\s+%zmm", asm)
        assert bool(dot) == (rule == "LutX86")
        return
    got, rules = run_host(graph, feeds, mcpu)
    assert set(rules) == {rule}
    assert_bitexact(got, reference.run(graph, feeds))


def _shared_cases() -> list[dict]:
    """Shared table scales (`table_steps`, etch_lut step 5) on the chunk_slots 4 layouts:
    every code kind, 1-5 rows, uniform and per-block zero points (few steps), super-blocks
    of 1-8 blocks ending mid-tile or partial at the end, zero block scales, with and
    without prefetch; and the integer bound's worst case: every table entry +-127, every
    code its largest, every uint8 scale 255."""
    rng = np.random.default_rng(13)
    cases = []
    for i, (kind, m, k, n, zero, nv, sb) in enumerate((
            ("u2", 1, 1024, 256, False, 4, 8), ("u4", 3, 768, 130, False, 4, 2),
            ("binary", 1, 512, 256, False, 8, 2), ("s2", 2, 320, 64, True, 4, 3),
            ("u3", 5, 200, 50, False, 2, 2), ("ternary", 4, 1024, 70, False, 1, 8),
            ("s4", 2, 96, 40, True, 4, 1), ("u1", 1, 256, 200, False, 8, 5))):
        bits = bits_of(kind)
        case = make_case(kind, m, k, n, 32, "int8", rng, zero,
                         LutLayout(bits, 64, 1, bits, nv, 4), "uint8", sb, -1)
        case["inputs"][2][:, ::5] = 0
        case["attrs"]["prefetch"] = 8192 * (i % 2)
        cases.append(case)
    worst = make_case("u4", 1, 512, 64, 32, "int8", rng, False, LutLayout(4, 64, 1, 4, 4, 4),
                      "uint8", 8, -1)
    worst["inputs"][0][:] = 1.0  # tables of +-4: every entry +-127 after quantisation
    worst["inputs"][1][:] = 255  # every code 15
    worst["inputs"][2][:] = 255
    cases.append(worst)
    return cases


@pytest.mark.parametrize("mcpu,rule,needs", [
    ("znver4", "LutX86", {"avx512vbmi", "avx512vnni"}),
    ("icelake-server", "LutX86", {"avx512vbmi", "avx512vnni"}),
    ("x86-64", "LutPortable", set())])
def test_shared_table_scales_bit_exact(mcpu: str, rule: str, needs: set[str]) -> None:
    """Step 5 in the vpermb + vpdpbusd kernel (per block one vpmullw of the widened scales
    and one vpdpwssd into the super-block's int32 sums; the float steps once per
    super-block) and in the portable one: bit-exact with the reference where the host
    runs it, else the assembly is checked."""
    cases = _shared_cases()
    assert all(c["attrs"]["table_steps"] >= 2 for c in cases)
    graph, feeds = graph_of(cases)
    if not X86 or not needs <= FEATURES or not runs_code_for(mcpu):  # cannot run here
        asm = _asm(graph, {"kind": "llvm", "mcpu": mcpu})
        assert bool(re.search(r"vpdpwssd\s+%zmm", asm)) == (rule == "LutX86")
        return
    got, rules = run_host(graph, feeds, mcpu)
    assert set(rules) == {rule}
    assert_bitexact(got, reference.run(graph, feeds))
    if rule == "LutX86":
        asm = _asm(graph, {"kind": "llvm", "mcpu": mcpu})
        assert re.search(r"vpdpwssd\s+%zmm", asm) and re.search(r"vpmullw\s+%zmm", asm)


@pytest.mark.parametrize("isa,mcpu,pattern", [
    ("avx512", "skylake-avx512", r"vperm(ps|d)\s+%zmm"),  # LLVM may pick the integer form
    ("avx2", "haswell", r"vperm(ps|d)\s+%ymm")])
def test_x86_float_tables_use_vpermps(isa: str, mcpu: str, pattern: str) -> None:
    graph, _ = graph_of(fixed_cases(isa, "float")[:4])
    assert re.search(pattern, _asm(graph, {"kind": "llvm", "mcpu": mcpu}))


@pytest.mark.parametrize("mcpu", ["cortex-a72", "neoverse-n1"])
def test_neon_assembly_has_tbl(mcpu: str) -> None:
    graph, _ = graph_of(fixed_cases("neon")[:6])
    asm = _asm(graph, edge.edge_target(mcpu))
    assert re.search(r"\btbl\s+v\d+\.16b", asm)
    assert re.search(r"\bsaddl2?\s+v\d+\.8h", asm)
    assert re.search(r"\bfcvtl2?\s+v\d+\.4s", asm)  # float16 scales
    assert re.search(r"\bprfm\s+pldl2keep, \[x\d+", asm)  # the codes, 8 KiB ahead


def test_no_prefetch_without_the_attribute() -> None:
    """The hint is the node's: cases without `prefetch` compile to no prefetch at all."""
    cases = fixed_cases("avx512")[1::2]
    assert all("prefetch" not in c["attrs"] for c in cases)
    graph, _ = graph_of(cases)
    assert "prefetch" not in _asm(graph, {"kind": "llvm", "mcpu": "skylake-avx512"})


# ---- aarch64 under qemu ------------------------------------------------------------------------
@needs_edge
def test_neon_kernels_bit_exact_under_qemu() -> None:
    graph, feeds = graph_of(fixed_cases("neon"))
    art = compiler.compile(onnx_export.export_model(graph), "edge")
    assert_bitexact(art.run(feeds), reference.run(graph, feeds))


# ---- cuda (built, not run) -----------------------------------------------------------------
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="building cuda needs nvcc")
def test_cuda_kernel_builds_with_shared_tables() -> None:
    graph, _ = graph_of(fixed_cases("cuda")[:4])
    target = tvm.target.Target({"kind": "cuda", "arch": "sm_80", "host": {"kind": "llvm"}})
    mod = schedules.apply_rules(lower.to_irmodule(graph, pack=False, lanes=1), target)
    assert schedules.rule_names(mod) == {"LutCuda": 4}
    ex = tvm.compile(mod, target=target, relax_pipeline=vm_passes())
    mods, src = list(ex.mod.imports), ""
    while mods:  # the cuda module hangs under the host (llvm) module
        m = mods.pop()
        mods += list(m.imports)
        src += m.inspect_source() if m.kind == "cuda" else ""
    assert "__shared__" in src and "__syncthreads" in src and "__fmul_rn" in src
    names = set(re.findall(r"__global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\(", src))
    assert len(names) == 8  # a table launch and a look-up launch per kernel
