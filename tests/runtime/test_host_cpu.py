"""runtime/host_cpu.py: the CPU's features as etch detects them, and the check that keeps a
cpu artifact built for features this CPU lacks from running into an illegal instruction."""

from __future__ import annotations

import pytest

from backends.tvm import target as targets
from compiler.errors import EtchError
from compiler.options import CompileOptions
from runtime import host_cpu

ZEN3 = ("znver3", {"sse4.2", "avx", "avx2", "fma"})


def test_host_features_are_what_compile_builds_for() -> None:
    info = targets.cpu_info(CompileOptions(target="cpu"))[0]
    mcpu, features = host_cpu.host_cpu()
    assert (mcpu, features) == (info.mcpu, set(info.features))
    assert features <= host_cpu.model_features(mcpu)
    flags = host_cpu.host_flags()
    if flags is not None:
        assert all(host_cpu.VECTOR_FEATURES[f] in flags for f in features)


def test_a_masked_feature_is_not_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    """A VM that hides AVX-512 from /proc/cpuinfo: LLVM's model has it, the host has not."""
    monkeypatch.setattr(host_cpu, "host_flags", lambda: {"sse4_2", "avx", "avx2", "fma"})
    _, features = host_cpu.host_cpu()
    assert not {f for f in features if f.startswith("avx512")}


def test_the_cpu_runs_what_compile_detects() -> None:
    """Detection errs on the safe side: every feature it builds for, the CPU executes (by
    numpy's CPUID reading: under qemu-user, the emulated CPU's, while /proc/cpuinfo is the
    real host's)."""
    assert host_cpu.host_cpu()[1] <= host_cpu.runnable_features()


def test_runnable_features_fall_back_to_cpuinfo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_cpu, "_numpy_cpu", dict)
    monkeypatch.setattr(host_cpu, "host_flags", lambda: {"sse4_2", "avx", "avx2", "fma"})
    assert host_cpu.runnable_features() == {"sse4.2", "avx", "avx2", "fma"}
    monkeypatch.setattr(host_cpu, "_numpy_cpu", lambda: {"AVX2": False, "AVX512F": True})
    assert host_cpu.runnable_features() == {"sse4.2", "avx", "avx512f", "fma"}


def test_an_artifact_for_the_host_runs_here() -> None:
    mcpu, features = host_cpu.host_cpu()
    host_cpu.check_runs_here({"cpu": mcpu, "cpu_features": sorted(features)})
    host_cpu.check_runs_here({"cpu": mcpu})  # no features recorded: nothing to check


def test_an_avx512_artifact_on_an_avx2_cpu_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_cpu, "host_cpu", lambda: ZEN3)
    monkeypatch.setattr(host_cpu, "runnable_features", lambda: ZEN3[1])
    manifest = {"cpu": "sapphirerapids", "cpu_features": ["avx", "avx2", "avx512bw", "avx512f",
                                                          "avx512vnni", "fma", "sse4.2"]}
    with pytest.raises(EtchError) as err:
        host_cpu.check_runs_here(manifest)
    message = str(err.value)
    assert "\n" not in message and "sapphirerapids" in message and "--mcpu znver3" in message
    assert "avx512bw, avx512f, avx512vnni" in message and "avx2" not in message
    # a feature name this etch does not know is not checked
    host_cpu.check_runs_here({"cpu": "future", "cpu_features": ["avx2", "apx"]})


def test_last_level_cache_is_the_largest_data_cache(tmp_path) -> None:
    """sysfs's caches of CPU 0: the largest data or unified one (instruction caches do not
    hold weights), and the level-2 one; None where sysfs says nothing."""
    for name, kind, size, level in [("index0", "Data", "48K", 1),
                                    ("index1", "Instruction", "64M", 1),
                                    ("index2", "Unified", "2048K", 2),
                                    ("index3", "Unified", "32M", 3)]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "type").write_text(kind + "\n")
        (tmp_path / name / "size").write_text(size + "\n")
        (tmp_path / name / "level").write_text(f"{level}\n")
    assert host_cpu.last_level_cache_bytes(tmp_path) == 32 << 20
    assert host_cpu.l2_cache_bytes(tmp_path) == 2 << 20
    (tmp_path / "index3" / "level").unlink()  # a level sysfs does not give: largest only
    assert host_cpu.last_level_cache_bytes(tmp_path) == 32 << 20
    assert host_cpu.l2_cache_bytes(tmp_path) == 2 << 20
    assert host_cpu.last_level_cache_bytes(tmp_path / "missing") is None
    assert host_cpu.l2_cache_bytes(tmp_path / "missing") is None


INTEL_FLAGS = {"sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512vbmi",
               "avx512_vnni", "pni", "ssse3", "sse4_1", "popcnt", "abm", "bmi1", "bmi2", "f16c",
               "movbe", "pclmulqdq"}


def test_code_for_an_amd_model_needs_sse4a(monkeypatch: pytest.MonkeyPatch) -> None:
    """An Intel CPU with every vector feature of znver4 still lacks AMD's SSE4A, whose
    `insertq` LLVM emits for znver4 (it stopped the test suite with SIGILL on such a host):
    code for znver4 does not run there, an artifact recording it is refused in one line, and
    a host-detected build switches the missing extensions off."""
    monkeypatch.setattr(host_cpu, "host_flags", lambda: set(INTEL_FLAGS))
    monkeypatch.setattr(host_cpu, "_numpy_cpu", dict)
    assert "sse4a" in host_cpu.model_isa("znver4")
    assert not host_cpu.runs_code_for("znver4")
    assert host_cpu.runs_code_for("haswell")
    with pytest.raises(EtchError) as err:
        host_cpu.check_runs_here({"cpu": "znver4", "cpu_features": ["avx2"],
                                  "cpu_isa": ["bmi2", "sse4a"]})
    assert "\n" not in str(err.value) and "uses sse4a," in str(err.value)
    monkeypatch.setattr("tvm.target.codegen.llvm_get_system_cpu", lambda: "znver4")
    info, mattr = targets.cpu_info(CompileOptions(target="cpu"))
    assert "-sse4a" in mattr and "sse4a" not in info.isa and "bmi2" in info.isa


def test_a_host_build_records_its_isa_and_runs_here() -> None:
    info, _ = targets.cpu_info(CompileOptions(target="cpu"))
    assert set(info.isa) <= host_cpu.model_isa(info.mcpu)
    host_cpu.check_runs_here({"cpu": info.mcpu, "cpu_features": list(info.features),
                              "cpu_isa": list(info.isa)})
