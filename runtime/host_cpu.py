"""The CPU this process runs on, in the terms a cpu artifact records (`cpu`, `cpu_features`).

`VECTOR_FEATURES` are the LLVM features etch chooses kernels by, each with its /proc/cpuinfo
flag. `host_cpu()` is LLVM's name for this CPU and the features `etch compile` builds for
(`backends.tvm.target`): LLVM knows the features of a CPU *model* (named from CPUID), and a
virtual machine may hide some of them (AVX-512 masked by the hypervisor), so the model's
features are intersected with the flags the kernel reports. That errs on the safe side (a
CPU LLVM names after an older model gets that model's features).

`runnable_features()` answers another question, whether this CPU executes a feature's
instructions: numpy's own CPUID reading where numpy names the feature (it also checks that
the OS saves the registers), else /proc/cpuinfo. `check_runs_here(manifest)` refuses, in one
line, a cpu artifact built for a feature this CPU lacks (one compiled on another machine, or
with `--mcpu`), which would otherwise stop at an illegal instruction in its first kernel.

Kernels are not chosen by every instruction LLVM may emit: `ISA_FEATURES` are the others a
CPU model brings (AMD's SSE4A, whose `insertq` LLVM uses for byte shuffles when building for
`znver4`; BMI, F16C, the AVX-512 extensions beyond VECTOR_FEATURES, AMX). They are masked
like the vector features where the host lacks them (`model_isa`, `host_cpu`), recorded in the
manifest (`cpu_isa`), checked before a run (`check_runs_here`, by /proc/cpuinfo) and by
`runs_code_for(mcpu)`, which says whether code built for a CPU model runs on this one: a
`znver4` build on an Intel CPU with every one of znver4's vector features still stops at
the first `insertq`.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from compiler.errors import EtchError

# LLVM feature name -> /proc/cpuinfo flag, for the features kernels are chosen by.
VECTOR_FEATURES = {"sse4.2": "sse4_2", "avx": "avx", "avx2": "avx2", "fma": "fma",
                   "avx512f": "avx512f", "avx512bw": "avx512bw", "avx512vl": "avx512vl",
                   "avx512vnni": "avx512_vnni", "avx512vbmi": "avx512vbmi", "avxvnni": "avx_vnni",
                   "neon": "asimd", "dotprod": "asimddp"}

# LLVM feature name -> /proc/cpuinfo flag, for the other instruction-set extensions a CPU
# model lets LLVM emit (x86; aarch64 models' extras are covered by VECTOR_FEATURES' checks).
ISA_FEATURES = {"sse3": "pni", "ssse3": "ssse3", "sse4.1": "sse4_1", "sse4a": "sse4a",
                "popcnt": "popcnt", "lzcnt": "abm", "bmi": "bmi1", "bmi2": "bmi2",
                "movbe": "movbe", "adx": "adx", "f16c": "f16c", "fma4": "fma4", "xop": "xop",
                "tbm": "tbm", "pclmul": "pclmulqdq", "aes": "aes", "sha": "sha_ni",
                "avx512cd": "avx512cd", "avx512dq": "avx512dq", "avx512ifma": "avx512ifma",
                "avx512vbmi2": "avx512_vbmi2", "avx512bitalg": "avx512_bitalg",
                "avx512vpopcntdq": "avx512_vpopcntdq", "avx512bf16": "avx512_bf16",
                "avx512fp16": "avx512_fp16", "gfni": "gfni", "vaes": "vaes",
                "vpclmulqdq": "vpclmulqdq", "amx-tile": "amx_tile", "amx-int8": "amx_int8",
                "amx-bf16": "amx_bf16", "avxifma": "avx_ifma", "avxvnniint8": "avx_vnni_int8"}


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


@cache
def _model(mcpu: str) -> frozenset[str]:
    """Every LLVM feature of CPU model `mcpu` (asked of LLVM once per name); EtchError for
    a name LLVM lacks."""
    from tvm import target
    from tvm.target import codegen

    try:
        model = codegen.llvm_get_cpu_features(target.Target({"kind": "llvm", "mcpu": mcpu}))
    except Exception as e:  # TVM raises its own error type for an unknown CPU name
        raise EtchError(f"--mcpu {mcpu!r} is not a CPU LLVM knows: {e}") from e
    return frozenset(str(f) for f in model)


def model_features(mcpu: str) -> set[str]:
    """The VECTOR_FEATURES of LLVM's CPU model `mcpu`; EtchError for a name LLVM lacks."""
    return set(VECTOR_FEATURES) & _model(mcpu)


def model_isa(mcpu: str) -> set[str]:
    """The ISA_FEATURES of LLVM's CPU model `mcpu`."""
    return set(ISA_FEATURES) & _model(mcpu)


def host_cpu() -> tuple[str, set[str]]:
    """(LLVM's name for this CPU, the VECTOR_FEATURES it has)."""
    from tvm.target import codegen

    mcpu = str(codegen.llvm_get_system_cpu())
    features, flags = model_features(mcpu), host_flags()
    if flags is not None:
        features = {f for f in features if VECTOR_FEATURES[f] in flags}
    return mcpu, features


def lacking_isa(features: set[str] | list[str]) -> list[str]:
    """The ISA_FEATURES among `features` that /proc/cpuinfo does not list (none where there
    is no such file)."""
    flags = host_flags()
    if flags is None:
        return []
    return sorted(f for f in features if f in ISA_FEATURES and ISA_FEATURES[f] not in flags)


def runs_code_for(mcpu: str) -> bool:
    """Whether code LLVM builds for CPU model `mcpu` runs on this CPU: it executes the
    model's vector features and its other instruction-set extensions (what tests ask before
    running a kernel built for an explicit `--mcpu`)."""
    return model_features(mcpu) <= runnable_features() and not lacking_isa(model_isa(mcpu))


def host_features() -> set[str]:
    """The VECTOR_FEATURES of this CPU, as `etch compile` detects them (not /proc/cpuinfo
    alone: under a user-mode emulator such as qemu-user that is the real host's file, while
    LLVM reads the emulated CPU's CPUID)."""
    return host_cpu()[1]


CACHES = Path("/sys/devices/system/cpu/cpu0/cache")


def last_level_cache_bytes(root: Path = CACHES) -> int | None:
    """The largest data or unified cache of CPU 0 (sysfs `root`; the L3 of a server core),
    or None where sysfs does not say."""
    sizes = _cache_sizes(root)
    return max(sizes.values()) if sizes else None


def l2_cache_bytes(root: Path = CACHES) -> int | None:
    """CPU 0's level-2 data or unified cache (sysfs `root`), or None where sysfs does not
    say."""
    return _cache_sizes(root).get(2)


def _cache_sizes(root: Path) -> dict[int, int]:
    """level -> bytes of CPU 0's data and unified caches (the largest per level)."""
    sizes: dict[int, int] = {}
    for index in root.glob("index*"):
        try:
            if (index / "type").read_text().strip() == "Instruction":
                continue
            text = (index / "size").read_text().strip().upper()
        except OSError:
            continue
        try:
            level = int((index / "level").read_text().strip())
        except (OSError, ValueError):
            level = 0  # unknown: counts for the largest cache only
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            sizes[level] = max(sizes.get(level, 0), int(digits) * scale)
    return sizes


# etch's feature name -> numpy's, where numpy reads it (numpy.lib has no public API for this)
NUMPY_NAMES = {"sse4.2": "SSE42", "avx": "AVX", "avx2": "AVX2", "fma": "FMA3",
               "avx512f": "AVX512F", "avx512bw": "AVX512BW", "avx512vl": "AVX512VL",
               "avx512vnni": "AVX512VNNI", "avx512vbmi": "AVX512VBMI", "neon": "ASIMD",
               "dotprod": "ASIMDDP"}


def _numpy_cpu() -> dict[str, bool]:
    """numpy's CPUID reading ({} where this numpy does not expose it)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__
        except ImportError:
            return {}
    return dict(__cpu_features__)


def runnable_features() -> set[str]:
    """The VECTOR_FEATURES whose instructions this CPU executes: numpy's CPUID reading, else
    /proc/cpuinfo, else LLVM's model of the host CPU."""
    has, flags = _numpy_cpu(), host_flags()
    model = host_cpu()[1] if flags is None else set()
    return {f for f, flag in VECTOR_FEATURES.items()
            if (has[NUMPY_NAMES[f]] if NUMPY_NAMES.get(f) in has else
                flag in flags if flags is not None else f in model)}


def check_runs_here(manifest: dict) -> None:
    """EtchError unless this CPU executes every vector feature and other instruction-set
    extension the cpu artifact was built for (names this etch does not know are not
    checked)."""
    built, isa = manifest.get("cpu_features"), manifest.get("cpu_isa")
    lacking = []
    if isinstance(built, list):
        here = runnable_features()
        lacking = sorted(f for f in built if f in VECTOR_FEATURES and f not in here)
    if isinstance(isa, list):
        lacking += lacking_isa([f for f in isa if isinstance(f, str)])
    if lacking:
        mcpu = host_cpu()[0]
        raise EtchError(f"this artifact was built for the {manifest.get('cpu')} CPU and uses "
                        f"{', '.join(lacking)}, which this CPU ({mcpu}) lacks; compile it on "
                        f"this machine (or with --mcpu {mcpu})")
