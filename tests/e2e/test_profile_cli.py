"""`etch run --profile`: the per-kernel table of a cpu artifact, as a user runs it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import runtime
from models import zoo
from tests.golden import assert_close

ETCH = [sys.executable, "-m", "compiler.cli"]
NAME = "digits_cnn"


def etch(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([*ETCH, *map(str, args)], capture_output=True, text=True,
                          timeout=600, check=False)


def _one_line_error(r: subprocess.CompletedProcess, needle: str) -> None:
    assert r.returncode == 1, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("etch: error:") and needle in lines[0], \
        r.stderr


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(cpu artifact of digits_cnn, its sample inputs .npz)."""
    root = tmp_path_factory.mktemp("profile")
    r = etch("compile", zoo.model_path(NAME), "--target", "cpu", "-o", root / "art",
             "--threads", "1")
    assert r.returncode == 0, r.stderr
    inputs, _ = zoo.load_sample(NAME)
    np.savez(root / "in.npz", **inputs)
    return root / "art", root / "in.npz"


def test_profile_prints_every_kernel_slowest_first(artifact: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    art, inputs = artifact
    r = etch("run", art, "--inputs", inputs, "--out", tmp_path / "out.npz", "--profile", "3")
    assert r.returncode == 0, r.stderr
    _, expected = zoo.load_sample(NAME)
    assert_close(dict(np.load(tmp_path / "out.npz")), expected, rtol=1e-3, atol=1e-4)
    lines = r.stdout.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("profile: 3 runs, thread CPU time"))
    assert lines[head + 1].split() == ["kernel", "calls", "us/run", "%", "of", "run"]
    rows = [ln.split() for ln in lines[head + 2:-1]]
    names = [row[0] for row in rows]
    assert any(n.startswith(("conv", "winograd")) for n in names), names  # the model's convs
    assert any(n.startswith("dense") for n in names), names  # and its classifier
    us = [float(row[2]) for row in rows]
    assert us == sorted(us, reverse=True)
    assert all(float(row[1]) >= 1 for row in rows)
    share = sum(float(row[3]) for row in rows) + float(lines[-1].split()[-1])
    assert share == pytest.approx(100, abs=0.5)  # kernels + the time between them = the run
    assert re.match(r"\(VM and hook between calls\)", lines[-1])


def test_profile_api_counts_every_call(artifact: tuple[Path, Path]) -> None:
    art, _ = artifact
    inputs, _ = zoo.load_sample(NAME)
    ex = runtime.load(art)
    p = ex.profile(inputs, 2)
    assert p.runs == 2 and p.kernels
    assert all(k.calls == int(k.calls) and k.calls >= 1 for k in p.kernels)  # same each run
    assert sum(k.seconds for k in p.kernels) <= p.seconds
    # the hook is removed afterwards: a plain run still matches and profiles again alike
    assert_close(ex.run(inputs), zoo.load_sample(NAME)[1], rtol=1e-3, atol=1e-4)
    assert {k.name: k.calls for k in ex.profile(inputs, 1).kernels} == \
        {k.name: k.calls for k in p.kernels}


@pytest.mark.parametrize("runs", ["0", "-2"])
def test_profile_needs_a_run(artifact: tuple[Path, Path], tmp_path: Path, runs: str) -> None:
    art, inputs = artifact
    _one_line_error(etch("run", art, "--inputs", inputs, "--out", tmp_path / "o.npz",
                         "--profile", runs), "at least 1")
    assert not (tmp_path / "o.npz").exists()


def test_profile_refuses_a_reference_artifact(tmp_path: Path) -> None:
    r = etch("compile", zoo.model_path(NAME), "--target", "ref", "-o", tmp_path / "art")
    assert r.returncode == 0, r.stderr
    inputs, _ = zoo.load_sample(NAME)
    np.savez(tmp_path / "in.npz", **inputs)
    _one_line_error(etch("run", tmp_path / "art", "--inputs", tmp_path / "in.npz", "--out",
                         tmp_path / "o.npz", "--profile"), "cpu artifacts")
