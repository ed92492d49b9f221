"""The host's CPU as etch sees it, checked on whichever CPU runs the tests.

On any host these are ordinary tests; under `python -m tests.isa_emulation` (qemu-user, an
emulated AVX2-only CPU, whose /proc/cpuinfo is still the real host's) they show that the
CLI a user runs (a new process) builds its kernels for the emulated CPU and records it in
the manifest, that those kernels run there (an AVX-512 instruction in them would be
SIGILL), and that an artifact built for AVX-512 is refused there in one line.
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
from runtime import host_cpu
from tests.golden import assert_bitexact, assert_close


def _etch(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "compiler.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=1800, check=False)


def _detected() -> targets.CpuInfo:
    return targets.cpu_info(CompileOptions(target="cpu"))[0]


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
    """Built with `--mcpu sapphirerapids` (AVX-512 + VNNI, AMX): it runs where the CPU has
    those features and is refused in one line where it has not (on an AVX2-only CPU its first
    kernel would be an illegal instruction)."""
    name = "digits_mlp"
    inputs, expected = zoo.load_sample(name)
    np.savez(tmp_path / "in.npz", **inputs)
    r = _etch("compile", zoo.model_path(name), "--target", "cpu", "--mcpu", "sapphirerapids",
              "-o", tmp_path / "art")
    assert r.returncode == 0, r.stderr
    manifest = _manifest(tmp_path / "art")
    r = _etch("run", tmp_path / "art", "--inputs", tmp_path / "in.npz", "--out",
              tmp_path / "out.npz")
    # both kinds count: a Zen 5 has every vector feature of sapphirerapids (AVX-VNNI too)
    # but not its AMX or AVX512-FP16, which LLVM may emit for that model
    lacking = (sorted(set(manifest["cpu_features"]) - host_cpu.runnable_features())
               + host_cpu.lacking_isa(manifest["cpu_isa"]))
    if not lacking:
        assert r.returncode == 0, r.stderr
        with np.load(tmp_path / "out.npz") as got:
            assert_close(dict(got), expected, rtol=1e-3, atol=1e-4)
        return
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert lines[0].startswith("etch: error:") and ", ".join(lacking) in lines[0]
