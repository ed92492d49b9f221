"""TVM targets as JSON dicts, and the host CPU's vector features.

`cpu_target(opts)` -> {"kind": "llvm", "mcpu": ..., "num-cores": ...}: the CPU is detected
with LLVM (`llvm_get_system_cpu`) unless `--mcpu` names one. LLVM knows the features of a CPU
*model*; a virtual machine may hide some of them (AVX-512 masked by the hypervisor), so when the
CPU is detected we intersect with the flags the kernel reports in /proc/cpuinfo and switch the
missing ones off with `mattr`. An explicit `--mcpu` is taken as it is: its features are the CPU
model's, whatever the host has, so a build for another machine gets that machine's kernels.
Lowering and schedule rules both take the vector width from the target's features
(`float_lanes`). `cuda_target(opts)` -> {"kind": "cuda", "arch": "sm_80",
"host": <llvm>}: it builds with nvcc and needs no GPU.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from compiler.errors import EtchError
from compiler.options import CompileOptions

# LLVM feature name -> /proc/cpuinfo flag, for the features kernels are chosen by.
VECTOR_FEATURES = {"sse4.2": "sse4_2", "avx": "avx", "avx2": "avx2", "fma": "fma",
                   "avx512f": "avx512f", "avx512bw": "avx512bw", "avx512vl": "avx512vl",
                   "avx512vnni": "avx512_vnni", "avxvnni": "avx_vnni",
                   "neon": "asimd", "dotprod": "asimddp"}
DEFAULT_CUDA_ARCH = "sm_80"


def float_lanes(features: Iterable[str]) -> int:
    """float32 lanes of the kernels' vectors on a target with LLVM `features`: 16 with
    AVX-512, 8 with AVX/AVX2, else 4 (SSE, NEON)."""
    features = set(features)
    if "avx512f" in features:
        return 16
    return 8 if features & {"avx", "avx2"} else 4


@dataclass(frozen=True)
class CpuInfo:
    """What the schedules need to know about the CPU: its name, features and vector width."""

    mcpu: str
    features: tuple[str, ...]
    threads: int

    @property
    def lanes(self) -> int:
        """float32 lanes of the kernels' vectors (`float_lanes` of the features)."""
        return float_lanes(self.features)


def default_threads() -> int:
    """The CPUs this process may run on (what `--threads` defaults to)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def host_flags() -> set[str] | None:
    """The CPU flags /proc/cpuinfo reports, or None where there is no such file."""
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return None
    for line in path.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return None


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
    """The CPU to compile for and the `mattr` entries that switch off masked features."""
    from tvm import target as tvm_target
    from tvm.target import codegen

    mcpu = opts.mcpu or codegen.llvm_get_system_cpu()
    try:
        model = codegen.llvm_get_cpu_features(tvm_target.Target({"kind": "llvm", "mcpu": mcpu}))
    except Exception as e:  # TVM raises its own error type for an unknown CPU name
        raise EtchError(f"--mcpu {mcpu!r} is not a CPU LLVM knows: {e}") from e
    features = {f for f in VECTOR_FEATURES if f in model}
    mattr: list[str] = []
    flags = host_flags() if opts.mcpu is None else None
    if flags is not None:
        masked = {f for f in features if VECTOR_FEATURES[f] not in flags}
        features -= masked
        mattr = sorted(f"-{f}" for f in masked)
    threads = opts.threads or default_threads()
    return CpuInfo(mcpu, tuple(sorted(features)), threads), mattr


def cpu_target(opts: CompileOptions) -> tuple[dict, CpuInfo]:
    """The llvm target dict for `opts` and the CPU description behind it."""
    info, mattr = cpu_info(opts)
    target: dict = {"kind": "llvm", "mcpu": info.mcpu, "num-cores": info.threads}
    if mattr:
        target["mattr"] = mattr
    return target, info


def cuda_target(opts: CompileOptions) -> dict:
    """The cuda target dict (default arch sm_80; --mcpu sm_XX overrides), host llvm."""
    arch = opts.mcpu if opts.mcpu and opts.mcpu.startswith("sm_") else DEFAULT_CUDA_ARCH
    return {"kind": "cuda", "arch": arch, "host": {"kind": "llvm"}}
