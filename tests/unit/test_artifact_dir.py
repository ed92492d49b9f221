"""compiler.artifact_dir: what may be replaced, and saves that are interrupted."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from compiler import artifact_dir
from compiler.errors import EtchError


def _artifact(path: Path, payload: str = "one") -> Path:
    path.mkdir(parents=True)
    (path / "graph.onnx").write_text(payload)
    (path / "manifest.json").write_text(json.dumps({"files": {"graph.onnx": "0" * 64}}))
    return path


def test_what_counts_as_an_artifact(tmp_path: Path) -> None:
    assert artifact_dir.not_an_artifact(tmp_path / "absent") is None
    (tmp_path / "empty").mkdir()
    assert artifact_dir.not_an_artifact(tmp_path / "empty") is None
    assert artifact_dir.not_an_artifact(_artifact(tmp_path / "art")) is None
    (tmp_path / "file").write_text("x")
    assert "not a directory" in artifact_dir.not_an_artifact(tmp_path / "file")
    other = _artifact(tmp_path / "other")
    (other / "sub").mkdir()
    (other / "sub" / "mine.txt").write_text("x")
    assert "sub/mine.txt" in artifact_dir.not_an_artifact(other)
    linked = _artifact(tmp_path / "linked")
    (linked / "data").symlink_to(tmp_path / "file")
    assert "data" in artifact_dir.not_an_artifact(linked)
    web = tmp_path / "web"
    web.mkdir()
    (web / "manifest.json").write_text('{"name": "app"}')
    assert "manifest" in artifact_dir.not_an_artifact(web)


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_interrupted_copy_keeps_the_old_artifact(tmp_path: Path, monkeypatch) -> None:
    dest = _artifact(tmp_path / "out" / "a", "old")
    src = _artifact(tmp_path / "src", "new")
    real = shutil.copytree

    def copy_then_interrupt(a: Path, b: Path, **kw: object) -> None:
        real(a, b, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(artifact_dir.shutil, "copytree", copy_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        artifact_dir.save(src, dest)
    assert (dest / "graph.onnx").read_text() == "old"
    assert _leftovers(tmp_path / "out") == []


def test_signal_during_the_swap_is_delivered_after_it(tmp_path: Path, monkeypatch) -> None:
    dest = _artifact(tmp_path / "out" / "a", "old")
    src = _artifact(tmp_path / "src", "new")
    real = os.replace

    def replace_with_a_signal(a: str, b: str) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C between the two renames
        real(a, b)

    monkeypatch.setattr(artifact_dir.os, "replace", replace_with_a_signal)
    # a shell starts background jobs with SIGINT ignored (`make test &`): Python's handler
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            artifact_dir.save(src, dest)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert (dest / "graph.onnx").read_text() == "new"
    assert _leftovers(tmp_path / "out") == []


def test_refusal_leaves_the_directory_alone(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "manifest.json").write_text('{"files": {}}')
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(EtchError, match="thesis.tex"):
        artifact_dir.save(_artifact(tmp_path / "src"), mine)
    assert (mine / "thesis.tex").read_text() == "years of work"
