"""The host's CPU as etch sees it, checked on whichever CPU runs the tests.

On any host these are ordinary tests; under `python -m tests.isa_emulation` (qemu-user, an
emulated AVX2-only CPU, whose /proc/cpuinfo is still the real host's) they show that the
detection picks the emulated CPU's features, that the CLI a user runs builds its kernels for
them and records them in the manifest, and that those kernels run there: an AVX-512
instruction in them would be SIGILL.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

import compiler
import runtime
from backends.tvm import target as targets
from compiler.options import CompileOptions
from models import zoo
from tests.golden import assert_bitexact, assert_close

# etch's feature name -> numpy's name for it (numpy reads CPUID and the OS's XCR0 itself)
NUMPY_NAMES = {"sse4.2": "SSE42", "avx": "AVX", "avx2": "AVX2", "fma": "FMA3",
               "avx512f": "AVX512F", "avx512bw": "AVX512BW", "avx512vl": "AVX512VL",
               "avx512vnni": "AVX512VNNI", "avx512vbmi": "AVX512VBMI", "neon": "ASIMD",
               "dotprod": "ASIMDDP"}


def _etch(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "compiler.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=1800, check=False)


def _detected() -> targets.CpuInfo:
    return targets.cpu_info(CompileOptions(target="cpu"))[0]


def _detected_features() -> set[str]:
    return set(_detected().features)


def _cpu_has() -> dict[str, bool]:
    """numpy's own view of the CPU (a CPUID reading independent of LLVM and /proc); a
    feature numpy does not name counts as present."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__
    return dict(__cpu_features__)


def test_detected_features_are_ones_the_cpu_has() -> None:
    info, has = _detected(), _cpu_has()
    lacking = [f for f in info.features if not has.get(NUMPY_NAMES[f], True)]
    assert not lacking, f"{info.mcpu}: etch builds for {lacking}, which this CPU lacks"
    widest = 512 if has.get("AVX512F") else 256 if has.get("AVX") else 128
    assert info.vector_bits <= widest


def _manifest(art: Path) -> dict:
    return json.loads((art / "manifest.json").read_text())


def test_cli_float_build_is_for_the_detected_cpu(tmp_path: Path) -> None:
    """`etch compile` (a new process) builds for the CPU the tests run on and records it;
    the library runs here and matches ONNX Runtime."""
    name = "digits_cnn"
    r = _etch("compile", zoo.model_path(name), "--target", "cpu", "-o", tmp_path / "art")
    assert r.returncode == 0, r.stderr
    info, m = _detected(), _manifest(tmp_path / "art")
    assert (m["cpu"], m["cpu_features"], m["vector_bits"]) == (
        info.mcpu, list(info.features), info.vector_bits)
    inputs, expected = zoo.load_sample(name)
    assert_close(runtime.load(tmp_path / "art").run(inputs), expected, rtol=1e-3, atol=1e-4)


def test_cli_int8_build_runs_bit_exact(tmp_path: Path) -> None:
    """`etch compile --int` and `etch run`, as a user runs them: the int8 kernels of the
    detected CPU (vpmaddubsw on AVX2, vpdpbusd on VNNI), bit-exact with the reference."""
    name = "digits_mlp"
    inputs, _ = zoo.load_sample(name)
    [(key, x)] = inputs.items()
    rng = np.random.default_rng(0)
    calib = np.concatenate([x, x + rng.normal(0, 0.1, (7, *x.shape[1:])).astype(np.float32)])
    np.savez(tmp_path / "calib.npz", **{key: calib})
    np.savez(tmp_path / "in.npz", **inputs)
    opts = ["--bits", "8", "--int", "--calib", tmp_path / "calib.npz"]
    r = _etch("compile", zoo.model_path(name), "--target", "cpu", "-o", tmp_path / "art", *opts)
    assert r.returncode == 0, r.stderr
    m = _manifest(tmp_path / "art")
    assert m["cpu_features"] == list(_detected().features)
    if "avx2" in m["cpu_features"]:
        assert "QDense" in m["schedules"], m["schedules"]
    r = _etch("run", tmp_path / "art", "--inputs", tmp_path / "in.npz", "--out",
              tmp_path / "out.npz")
    assert r.returncode == 0, r.stderr
    ref = compiler.compile(str(zoo.model_path(name)), target="ref", bits=8, int=True,
                           calib=str(tmp_path / "calib.npz"))
    with np.load(tmp_path / "out.npz") as got:
        assert_bitexact(dict(got), ref.run(inputs))


def test_cli_refuses_an_artifact_for_features_this_cpu_lacks(tmp_path: Path) -> None:
    """Built with `--mcpu sapphirerapids` (AVX-512 + VNNI): it runs where the CPU has those
    features and is refused in one line where it has not (on an AVX2-only CPU its first
    kernel would be an illegal instruction)."""
    name = "digits_mlp"
    inputs, expected = zoo.load_sample(name)
    np.savez(tmp_path / "in.npz", **inputs)
    r = _etch("compile", zoo.model_path(name), "--target", "cpu", "--mcpu", "sapphirerapids",
              "-o", tmp_path / "art")
    assert r.returncode == 0, r.stderr
    built = set(_manifest(tmp_path / "art")["cpu_features"])
    r = _etch("run", tmp_path / "art", "--inputs", tmp_path / "in.npz", "--out",
              tmp_path / "out.npz")
    lacking = sorted(built - _detected_features())
    if not lacking:
        assert r.returncode == 0, r.stderr
        with np.load(tmp_path / "out.npz") as got:
            assert_close(dict(got), expected, rtol=1e-3, atol=1e-4)
        return
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert lines[0].startswith("etch: error:") and ", ".join(lacking) in lines[0]
