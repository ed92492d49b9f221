"""Hostile and unusual input through the CLI, as a user meets it: no silent wrong results,
no crashes, no lost files; one `etch: error:` line and exit status 1 for user errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.e2e.test_cli import _assert_one_line_error, _mlp, etch  # noqa: F401

vi = helper.make_tensor_value_info


def _save(path: Path, nodes: list, inputs: list, outputs: list, inits: list = ()) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _gemm(path: Path) -> Path:
    """y = x @ w^T + b with w [16, 8]: x must be [N, 8]."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b")]
    return _save(path, [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)],
                 [vi("x", TensorProto.FLOAT, ["N", 8])], [vi("y", TensorProto.FLOAT, None)],
                 inits)


def _run(art: Path, tmp_path: Path, **inputs: np.ndarray) -> dict[str, np.ndarray]:
    np.savez(tmp_path / "in.npz", **inputs)
    r = etch("run", art, "--inputs", tmp_path / "in.npz", "--out", tmp_path / "out.npz")
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "out.npz") as out:
        return {k: out[k] for k in out.files}


@pytest.mark.parametrize("shape", ["x=1x4", "x=1x9"])
def test_input_shape_contradicting_a_weight_is_refused(tmp_path: Path, shape: str) -> None:
    r = etch("compile", _gemm(tmp_path / "m.onnx"), "-t", "cpu", "--input-shape", shape,
             "-o", tmp_path / "a")
    _assert_one_line_error(r, "Gemm", "K = 8")
    assert not (tmp_path / "a").exists()


def test_ref_output_that_is_an_input(tmp_path: Path) -> None:
    model = _save(tmp_path / "m.onnx", [helper.make_node("Relu", ["x"], ["y"])],
                  [vi("x", TensorProto.FLOAT, [2])],
                  [vi("x", TensorProto.FLOAT, [2]), vi("y", TensorProto.FLOAT, [2])])
    assert etch("compile", model, "-t", "ref", "-o", tmp_path / "a").returncode == 0
    x = np.array([-1, 2], np.float32)
    out = _run(tmp_path / "a", tmp_path, x=x)
    np.testing.assert_array_equal(out["x"], x)
    np.testing.assert_array_equal(out["y"], [0, 2])


def test_ref_constant_output_beside_a_const_named_initializer(tmp_path: Path) -> None:
    """The exporter named the constant output's initializer `k__const`, which the model
    already used: two initializers with one name, and y read the wrong one."""
    t = numpy_helper.from_array
    model = _save(tmp_path / "m.onnx",
                  [helper.make_node("Add", ["x", "k__const"], ["y"]),
                   helper.make_node("Identity", ["k0"], ["k"]),
                   helper.make_node("Mul", ["x", "c"], ["z"])],
                  [vi("x", TensorProto.FLOAT, [2])],
                  [vi(o, TensorProto.FLOAT, [2]) for o in ("k", "y", "c", "z")],
                  [t(np.array([1, 2], np.float32), "k__const"),
                   t(np.array([5, 6], np.float32), "k0"), t(np.array([3, 4], np.float32), "c")])
    assert etch("compile", model, "-t", "ref", "-o", tmp_path / "a").returncode == 0
    out = _run(tmp_path / "a", tmp_path, x=np.array([-1, 2], np.float32))
    np.testing.assert_array_equal(out["k"], [5, 6])
    np.testing.assert_array_equal(out["y"], [0, 4])
    np.testing.assert_array_equal(out["c"], [3, 4])  # a constant output also read by a node
    np.testing.assert_array_equal(out["z"], [-3, 8])
    names = [i.name for i in onnx.load(tmp_path / "a" / "graph.onnx").graph.initializer]
    assert len(names) == len(set(names))

