"""runtime.files: an artifact's files are hashed once per load, before any is opened."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

import compiler
import runtime
from compiler.errors import EtchError
from runtime import files


def _model():
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_each_file_is_hashed_once_per_load(tmp_path: Path, monkeypatch) -> None:
    art = compiler.compile(_model(), target="ref")
    calls: list[Path] = []
    real = files.sha256
    monkeypatch.setattr(files, "sha256", lambda p: calls.append(p) or real(p))
    art.run({"x": np.ones((1, 4), np.float32)})
    assert calls == []  # the compile's own artifact: its digests were just computed
    saved = art.save(tmp_path / "a")
    runtime.load(saved).run({"x": np.ones((1, 4), np.float32)})
    assert sorted(p.name for p in calls) == ["graph.onnx"]


def test_a_manifest_cannot_point_outside_its_artifact(tmp_path: Path) -> None:
    saved = compiler.compile(_model(), target="ref").save(tmp_path / "a")
    manifest = runtime.read_manifest(saved)
    for files_table in ({"../outside.onnx": "0" * 64}, {"/etc/passwd": "0" * 64}):
        with pytest.raises(EtchError, match="outside the artifact"):
            files.verify(saved, {**manifest, "graph": next(iter(files_table)),
                                 "files": files_table})
    with pytest.raises(EtchError, match="not among its files"):
        files.verify(saved, {**manifest, "graph": "other.onnx"})
