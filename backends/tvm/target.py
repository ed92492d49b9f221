"""TVM targets as JSON dicts, and the host CPU's vector features.

`cpu_target(opts)` -> {"kind": "llvm", "mcpu": ..., "num-cores": ...}: the CPU is detected
with LLVM (`llvm_get_system_cpu`) unless `--mcpu` names one. LLVM knows the features of a CPU
*model*; a virtual machine may hide some of them (AVX-512 masked by the hypervisor), so when the
CPU is detected we intersect with the flags the kernel reports in /proc/cpuinfo and switch the
missing ones off with `mattr` (`runtime.host_cpu`, which the runtime checks artifacts with). An
explicit `--mcpu` is taken as it is: its features are the CPU model's, whatever the host has,
so a build for another machine gets that machine's kernels.

The vector width is part of the target too: TVM's `vector-width` attribute, which `cpu_target`
sets to etch's choice (`--vector-bits`, by default `DEFAULT_AVX512_BITS` on AVX-512, else the
CPU's widest), so the target JSON in the manifest says which width was built. Lowering,
schedule rules and int8 kernels all read it from the target (`vector_bits`, `float_lanes`);
a target without the attribute (the edge one) gets its CPU's widest vectors.

`cuda_target(opts)` -> {"kind": "cuda", "arch": "sm_80", "host": <llvm>}: it builds with nvcc
and needs no GPU.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from compiler.errors import EtchError
from compiler.options import CompileOptions
from runtime import host_cpu
from runtime.host_cpu import (
    ISA_FEATURES,
    VECTOR_FEATURES,
    model_features,
    model_isa,
)

DEFAULT_CUDA_ARCH = "sm_80"


# etch's vector width on AVX-512 CPUs. Measured on an AVX-512 + VNNI Xeon, one thread, CPU
# time per kernel, every kernel of a model built at 512 and at 256 bits and timed in turns
# (`--vector-bits`): conv kernels whose tile fills a zmm register 1.3-1.5x faster at 512
# (twice the columns per FMA; 32 registers keep 8 output channels in the tile), transformer
# dense kernels 1.4-1.6x, GEMV at batch 8 1.16x; narrow tiles (< 16 columns: they stay in
# ymm/xmm registers at either width), GEMV at batch 1 (memory-bound) and the digits models
# alike. Sums over a model's kernels: resnet_block 1.47x, mobilenet 1.29x, tiny_encoder 1.40x,
# tiny_decoder 1.55x, digits 1.0x. Row kernels over short rows are the exception and run at
# 256 bits (`schedules.tiles.row_lanes`). The width is TVM's own target attribute
# `vector-width` (what dlight's CPU rules read too); LLVM's `prefer-256-bit` tuning on Intel
# cores is left alone: it steers only LLVM's own auto-vectoriser, which at 512 bits turned a
# stride-2 padded copy into gathers and made that depthwise kernel 3.5x slower.
DEFAULT_AVX512_BITS = 512


def widest_bits(features: Iterable[str]) -> int:
    """The widest vectors of a CPU with LLVM `features`: 512 (AVX-512), 256 (AVX/AVX2),
    else 128 (SSE, NEON)."""
    features = set(features)
    if "avx512f" in features:
        return 512
    return 256 if features & {"avx", "avx2"} else 128


def vector_bits(features: Iterable[str], declared: int | None = None) -> int:
    """The width of the kernels' vectors: the target's declared `vector-width` where it has
    one (never wider than the CPU's), else the CPU's widest."""
    widest = widest_bits(features)
    return min(int(declared), widest) if declared else widest


def float_lanes(features: Iterable[str], declared: int | None = None) -> int:
    """float32 lanes of one vector at `vector_bits(features, declared)`."""
    return vector_bits(features, declared) // 32


def choose_width(mcpu: str, features: Iterable[str], requested: int | None) -> int:
    """The vector width to build for: `requested` bits, else `DEFAULT_AVX512_BITS` on
    AVX-512, else the CPU's only width. EtchError for a width the CPU does not have."""
    widest = widest_bits(features)
    bits = requested or (DEFAULT_AVX512_BITS if widest == 512 else widest)
    allowed = (256, 512) if widest == 512 else (widest,)
    if bits not in allowed:
        raise EtchError(f"--vector-bits {bits}: the {mcpu} CPU takes "
                        f"{' or '.join(map(str, allowed))}")
    return bits


# CPUs that run AVX-512 as two 256-bit halves (AMD Zen 4): one 512-bit FMA a cycle, where
# Zen 5 and Intel's server cores run two. Their pointwise GEMMs take a tile of one vector of
# positions (`passes/choose_conv_algorithm.GEMM_VECTORS`).
HALF_RATE_512 = frozenset({"znver4"})


@dataclass(frozen=True)
class CpuInfo:
    """What the schedules need to know about the CPU: its name, features and vector width."""

    mcpu: str
    features: tuple[str, ...]
    threads: int
    vector_bits: int  # the kernels' vector width (the target's `vector-width`)
    isa: tuple[str, ...] = ()  # the other instruction-set extensions (`host_cpu.ISA_FEATURES`)

    @property
    def lanes(self) -> int:
        """float32 lanes of the kernels' vectors."""
        return self.vector_bits // 32

    @property
    def half_rate_512(self) -> bool:
        """Whether it builds 512-bit kernels for a CPU that runs one 512-bit FMA a cycle
        (`HALF_RATE_512`)."""
        return self.vector_bits == 512 and self.mcpu in HALF_RATE_512


def default_threads() -> int:
    """The CPUs this process may run on (what `--threads` defaults to)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_options(opts: CompileOptions) -> None:
    """EtchError for an --mcpu the target cannot build for, before any pass runs: cpu and
    edge take a CPU LLVM knows for their triple (the host's, aarch64-linux-gnu), cuda an
    sm_XX architecture. (LLVM itself only warns, ten lines, and builds for a generic CPU.)"""
    if opts.mcpu is None:
        return
    if opts.target == "cuda":
        if not re.fullmatch(r"sm_\d+", opts.mcpu):
            raise EtchError(f"--mcpu {opts.mcpu!r}: the cuda target takes a GPU architecture "
                            f"sm_XX (e.g. {DEFAULT_CUDA_ARCH})")
        return
    from tvm.target import codegen

    from backends.tvm.edge import MTRIPLE

    check_mcpu(opts.mcpu, MTRIPLE if opts.target == "edge" else codegen.llvm_get_system_triple())


def check_mcpu(mcpu: str, triple: str) -> None:
    """EtchError unless LLVM knows CPU `mcpu` for target `triple` (suggesting close names)."""
    import tvm
    from tvm.target import codegen

    if codegen.llvm_is_valid_cpu(mcpu, triple):
        return
    known = codegen.llvm_get_cpu_archlist(tvm.target.Target({"kind": "llvm", "mtriple": triple}))
    close = difflib.get_close_matches(mcpu, [str(k) for k in known], n=4)
    hint = f"; did you mean {', '.join(close)}?" if close else f" ({len(known)} CPUs known)"
    raise EtchError(f"--mcpu {mcpu!r} is not a CPU LLVM knows for {triple}{hint}")


def cpu_info(opts: CompileOptions) -> tuple[CpuInfo, list[str]]:
    """The CPU to compile for (with the vector width, `choose_width`) and the `mattr`
    entries that switch off masked features."""
    from tvm.target import codegen

    mcpu = opts.mcpu or str(codegen.llvm_get_system_cpu())
    features, isa = model_features(mcpu), model_isa(mcpu)
    mattr: list[str] = []
    # through the module: one place to stand in another host (tests)
    flags = host_cpu.host_flags() if opts.mcpu is None else None
    if flags is not None:
        masked = {f for f in features if VECTOR_FEATURES[f] not in flags}
        masked |= {f for f in isa if ISA_FEATURES[f] not in flags}
        features, isa = features - masked, isa - masked
        mattr = sorted(f"-{f}" for f in masked)
    bits = choose_width(mcpu, features, opts.vector_bits)
    threads = opts.threads or default_threads()
    return CpuInfo(mcpu, tuple(sorted(features)), threads, bits, tuple(sorted(isa))), mattr


def cpu_target(opts: CompileOptions) -> tuple[dict, CpuInfo]:
    """The llvm target dict for `opts` and the CPU description behind it."""
    info, mattr = cpu_info(opts)
    target: dict = {"kind": "llvm", "mcpu": info.mcpu, "num-cores": info.threads,
                    "vector-width": info.vector_bits}
    if mattr:
        target["mattr"] = mattr
    return target, info


def cuda_target(opts: CompileOptions) -> dict:
    """The cuda target dict (default arch sm_80; --mcpu sm_XX overrides), host llvm. The
    48 KiB of shared memory is what every sm_XX gives a block without opting in (dlight's
    GEMV rule sizes its tiles by it and warns when the target does not say)."""
    arch = opts.mcpu if opts.mcpu and opts.mcpu.startswith("sm_") else DEFAULT_CUDA_ARCH
    return {"kind": "cuda", "arch": arch, "max_shared_memory_per_block": 48 * 1024,
            "host": {"kind": "llvm"}}
