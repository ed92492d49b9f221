"""`etch compile --bind VALUES.npz` as a user runs it: the bound inputs fold (their shapes
become static), leave the artifact's inputs, are recorded in the manifest and shown by
`--explain` and `etch inspect --bind`; `etch run` given a bound input refuses it in one line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.e2e.test_cli import _assert_one_line_error, etch

AXES = np.array([0, 2], np.int64)
X = np.arange(24, dtype=np.float32).reshape(2, 3, 4)


def _model(path: Path) -> Path:
    """y = ReduceSum(x, axes) (keepdims=0), z = Relu(x): `axes` decides y's shape."""
    nodes = [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0),
             helper.make_node("Relu", ["x"], ["z"])]
    graph = helper.make_graph(
        nodes, "reduce", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4]),
                          helper.make_tensor_value_info("axes", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 3, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bind")
    np.savez(d / "axes.npz", axes=AXES)
    np.savez(d / "x.npz", x=X)
    np.savez(d / "both.npz", x=X, axes=AXES)
    (d / "text.npz").write_text("not a zip")
    return {"model": _model(d / "reduce.onnx"), "dir": d,
            **{k: d / f"{k}.npz" for k in ("axes", "x", "both", "text")}}


@pytest.mark.parametrize("target", ["cpu", "ref"])
def test_compile_with_bind_runs_and_records(files: dict, target: str) -> None:
    art = files["dir"] / f"reduce.{target}.etch"
    r = etch("compile", files["model"], "-t", target, "--bind", files["axes"], "-o", art,
             "--explain")
    assert r.returncode == 0, r.stderr
    digest = hashlib.sha256(AXES.astype("<i8").tobytes()).hexdigest()
    assert f"bound input axes: int64[2] sha256 {digest[:16]}" in r.stdout
    manifest = json.loads((art / "manifest.json").read_text())
    assert [i["name"] for i in manifest["inputs"]] == ["x"]
    assert manifest["bound"] == [{"name": "axes", "shape": [2], "dtype": "int64",
                                  "sha256": digest}]
    out = files["dir"] / f"out.{target}.npz"
    r = etch("run", art, "--inputs", files["x"], "--out", out)
    assert r.returncode == 0, r.stderr
    with np.load(out) as got:
        np.testing.assert_allclose(got["y"], X.sum(axis=(0, 2)), rtol=1e-6)
        np.testing.assert_array_equal(got["z"], X)
    # a value for the bound input is refused, even one equal to the bound value
    r = etch("run", art, "--inputs", files["both"], "--out", out)
    _assert_one_line_error(r, "['axes'] were bound to constants at compile time (--bind",
                           "the artifact's inputs are ['x']")


def test_unbound_shape_deciding_input_points_at_bind(files: dict) -> None:
    r = etch("compile", files["model"], "-o", files["dir"] / "no.etch")
    _assert_one_line_error(r, "input 'axes' decides the output shape but is computed at run "
                              "time", "bind graph input(s) ['axes']", "--bind FILE.npz")
    assert not (files["dir"] / "no.etch").exists()


@pytest.mark.parametrize("which, needle", [
    ("x", "--bind axes: value has dtype float32"),  # written below with the wrong dtype
    ("text", "--bind {path}: cannot read .npz"),
    ("missing", "--bind {path}: cannot read .npz"),
    ("unknown", "--bind names unknown input(s) ['w']; the model's inputs are ['x', 'axes']"),
    ("shape", "--bind axes: value has shape [3], the model's input has [2]"),
])
def test_bad_bind_is_one_line(files: dict, which: str, needle: str) -> None:
    path = files["dir"] / f"bad-{which}.npz"
    if which == "x":
        np.savez(path, axes=AXES.astype(np.float32))
    elif which == "text":
        path = files["text"]
    elif which == "unknown":
        np.savez(path, w=AXES)
    elif which == "shape":
        np.savez(path, axes=np.array([0, 1, 2], np.int64))
    r = etch("compile", files["model"], "-t", "ref", "--bind", path, "-o",
             files["dir"] / "bad.etch")
    _assert_one_line_error(r, needle.format(path=path))


def test_inspect_shows_bound_inputs(files: dict) -> None:
    r = etch("inspect", files["model"], "--bind", files["axes"])
    assert r.returncode == 0, r.stderr
    assert "  input  x: float32[2x3x4]" in r.stdout
    assert "  bound  axes: int64[2] sha256 " in r.stdout
    assert "  output y: float32[3]" in r.stdout
