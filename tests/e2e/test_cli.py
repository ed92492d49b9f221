"""The CLI as a user runs it: subprocess calls, good and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ETCH = [sys.executable, "-m", "compiler.cli"]


def etch(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*ETCH, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=300, check=False)


def _mlp(path: Path, batch: int | str = 1, op: str = "Relu") -> Path:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node(op, ["h"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [batch, 4])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, None)], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _assert_one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("etch: error:"), r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize("sub", ["", "compile", "run", "sim", "inspect", "models", "bench",
                                 "demo"])
def test_help(sub: str) -> None:
    r = etch(*([sub] if sub else []), "--help")
    assert r.returncode == 0 and "usage: etch" in r.stdout


def test_compile_and_run_ref(tmp_path: Path) -> None:
    model = _mlp(tmp_path / "m.onnx")
    x = np.random.default_rng(1).standard_normal((1, 4)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    r = etch("compile", model, "--target", "ref", "-o", tmp_path / "art", "--explain")
    assert r.returncode == 0, r.stderr
    assert "cleanup" in r.stdout
    r = etch("run", tmp_path / "art", "--inputs", tmp_path / "in.npz", "--out",
             tmp_path / "out.npz")
    assert r.returncode == 0, r.stderr
    w = onnx.numpy_helper.to_array(onnx.load(model).graph.initializer[0])
    np.testing.assert_allclose(np.load(tmp_path / "out.npz")["y"], np.maximum(x @ w, 0),
                               rtol=1e-6)


def test_truncated_model_leaves_nothing(tmp_path: Path) -> None:
    model = _mlp(tmp_path / "m.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(model.read_bytes()[:50])
    r = etch("compile", bad, "--target", "ref", "-o", tmp_path / "art")
    _assert_one_line_error(r, "bad.onnx")
    assert not (tmp_path / "art").exists()


def test_missing_file() -> None:
    _assert_one_line_error(etch("compile", "/nonexistent/model.onnx"), "no such model file")


def test_unsupported_op_is_named(tmp_path: Path) -> None:
    model = _mlp(tmp_path / "m.onnx", op="NoSuchOp")
    _assert_one_line_error(etch("compile", model, "--target", "ref"), "NoSuchOp")


def test_dynamic_dim_needs_input_shape(tmp_path: Path) -> None:
    model = _mlp(tmp_path / "m.onnx", batch="N")
    _assert_one_line_error(etch("compile", model, "-t", "ref", "-o", tmp_path / "a"),
                           "--input-shape")
    r = etch("compile", model, "-t", "ref", "-o", tmp_path / "a", "--input-shape", "x=3x4")
    assert r.returncode == 0, r.stderr
    _assert_one_line_error(etch("compile", model, "-t", "ref", "--input-shape", "x=3by4"),
                           "--input-shape")
    _assert_one_line_error(etch("compile", model, "-t", "ref", "--input-shape", "z=1x4"),
                           "unknown input")


@pytest.mark.parametrize("inputs,needle", [
    ({"x": np.zeros((2, 4), np.float32)}, "shape"),
    ({"x": np.zeros((1, 4), np.float64)}, "dtype"),
    ({"q": np.zeros((1, 4), np.float32)}, "unknown input"),
    ({}, "missing input"),
])
def test_run_bad_inputs(tmp_path: Path, inputs: dict, needle: str) -> None:
    model = _mlp(tmp_path / "m.onnx")
    assert etch("compile", model, "-t", "ref", "-o", tmp_path / "art").returncode == 0
    np.savez(tmp_path / "in.npz", **inputs)
    r = etch("run", tmp_path / "art", "--inputs", tmp_path / "in.npz", "--out",
             tmp_path / "o.npz")
    _assert_one_line_error(r, needle)
    assert not (tmp_path / "o.npz").exists()


def test_run_not_an_artifact(tmp_path: Path) -> None:
    np.savez(tmp_path / "in.npz", x=np.zeros((1, 4), np.float32))
    r = etch("run", tmp_path, "--inputs", tmp_path / "in.npz", "--out", tmp_path / "o.npz")
    _assert_one_line_error(r, "not an etch artifact")


def test_inputs_file_unreadable(tmp_path: Path) -> None:
    model = _mlp(tmp_path / "m.onnx")
    assert etch("compile", model, "-t", "ref", "-o", tmp_path / "art").returncode == 0
    (tmp_path / "in.npz").write_text("not a zip")
    r = etch("run", tmp_path / "art", "--inputs", tmp_path / "in.npz", "--out",
             tmp_path / "o.npz")
    _assert_one_line_error(r, "in.npz")


def test_debug_shows_traceback(tmp_path: Path) -> None:
    r = etch("--debug", "compile", "/nonexistent/model.onnx")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_sim_refuses_non_verilog(tmp_path: Path) -> None:
    model = _mlp(tmp_path / "m.onnx")
    assert etch("compile", model, "-t", "ref", "-o", tmp_path / "art").returncode == 0
    np.savez(tmp_path / "in.npz", x=np.zeros((1, 4), np.float32))
    r = etch("sim", tmp_path / "art", "--inputs", tmp_path / "in.npz", "--out",
             tmp_path / "o.npz")
    _assert_one_line_error(r, "verilog")


def test_overwrite_refuses_foreign_directory(tmp_path: Path) -> None:
    model = _mlp(tmp_path / "m.onnx")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("keep me")
    _assert_one_line_error(etch("compile", model, "-t", "ref", "-o", tmp_path / "mine"),
                           "not an etch artifact")
    assert (tmp_path / "mine" / "precious.txt").read_text() == "keep me"


def test_inspect(tmp_path: Path) -> None:
    r = etch("inspect", _mlp(tmp_path / "m.onnx"))
    assert r.returncode == 0, r.stderr
    assert "MatMul" in r.stdout and "12 parameters" in r.stdout


@pytest.mark.parametrize("args,needle", [
    (["--target", "verilog"], "--calib"),  # the integer graph needs calibration
    (["--bits", "4", "--lut", "--int"], "--lut"),  # LUT GEMM is the float-activation path
    (["--bits", "9"], "--bits 9"),
    (["--quant", "gptq", "--bits", "4"], "--calib"),
    (["--target", "cpu", "--mcpu", "znver3", "--vector-bits", "512"], "znver3 CPU takes 256"),
    (["--target", "edge", "--vector-bits", "256"], "edge target takes 128"),
])
def test_unavailable_settings_are_one_clear_error(tmp_path: Path, args: list, needle: str) -> None:
    model = _mlp(tmp_path / "m.onnx")
    _assert_one_line_error(etch("compile", model, *args, "-o", tmp_path / "a"), needle)
    assert not (tmp_path / "a").exists()


def test_vector_bits_choose_the_width_of_a_named_cpu(tmp_path: Path) -> None:
    model = _mlp(tmp_path / "m.onnx")
    r = etch("compile", model, "--target", "cpu", "--mcpu", "znver4", "--vector-bits", "256",
             "-o", tmp_path / "a")
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert (manifest["vector_bits"], manifest["tvm_target"]["vector-width"]) == (256, 256)
